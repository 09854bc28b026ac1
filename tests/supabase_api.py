"""A client that calls the database the way Supabase's API (PostgREST) does for the frontend.

Every request is one transaction, switched to the JWT's role with ``SET LOCAL
ROLE`` and with the caller's claims in ``request.jwt.claims`` (which
``auth.uid()`` reads); it never acts as the table owner. The statements are
the ones supabase-js produces: ``insert`` (INSERT ... RETURNING), ``upsert``
with ``ignoreDuplicates`` (INSERT ... ON CONFLICT DO NOTHING RETURNING) and
``rpc`` (``SELECT * FROM fn(arg := value)``). Test data is created as the owner
with new_users / new_chat.
"""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager

from psycopg2.extras import RealDictCursor

API_ROLES = ("anon", "authenticated", "service_role")


class Frontend:
    """One signed-in user of the chat app (or anon, or service_role), with its own connection."""

    def __init__(self, db, user_id: str | None, role: str = "authenticated", *, observed: bool = False):
        if role not in API_ROLES:
            raise ValueError(f"not an API role: {role!r}")
        self.user_id = user_id
        self.role = role
        # autocommit: each request opens its own transaction. PostgREST logs in as
        # authenticator; the session user only matters to a test that watches the
        # plans with auto_explain (observed), which only a superuser may load.
        self.connection = db.admin_connect() if observed else db.connect()

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def request(self):
        """One API request: a transaction as the JWT's role with the caller's claims."""
        claims = {"role": self.role, **({"sub": self.user_id} if self.user_id else {})}
        with self.connection.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute("BEGIN")
            try:
                cur.execute(f"SET LOCAL ROLE {self.role}")
                cur.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def query(self, sql: str, params=None) -> list[dict]:
        with self.request() as cur:
            cur.execute(sql, params)
            return [dict(row) for row in cur.fetchall()] if cur.description else []

    def rpc(self, function: str, **arguments) -> list[dict]:
        """supabase.rpc(function, arguments): named arguments, the result as rows."""
        named = ", ".join(f"{name} := %({name})s" for name in arguments)
        return self.query(f"SELECT * FROM public.{function}({named})", arguments)

    def send(self, chat_id: str, text: str, **columns) -> dict:
        """supabase.from('chat_messages').insert({...}).select().single()"""
        row = {"chat_id": chat_id, "sender_id": self.user_id, "message_text": text, **columns}
        return self.query(_insert_message_sql(row), row)[0]

    def send_idempotently(self, chat_id: str, text: str, client_generated_id: str) -> list[dict]:
        """upsert({...}, {onConflict: 'client_generated_id', ignoreDuplicates: true}).select()"""
        row = {"chat_id": chat_id, "sender_id": self.user_id, "message_text": text,
               "client_generated_id": client_generated_id}
        return self.query(_insert_message_sql(row, "ON CONFLICT (client_generated_id) DO NOTHING"), row)

    def conversations(self) -> list[dict]:
        """The conversation list: each of the user's chats, its last message and unread count."""
        return self.query(
            """
            SELECT c.id AS chat_id, last.seq AS last_seq, last.message_text AS last_text,
                   public.get_unread_count(c.id, %(me)s) AS unread
              FROM public.chats c
              LEFT JOIN LATERAL (
                    SELECT m.seq, m.message_text FROM public.chat_messages m
                     WHERE m.chat_id = c.id AND m.deleted_at IS NULL
                     ORDER BY m.seq DESC LIMIT 1) last ON true
             ORDER BY c.id
            """,
            {"me": self.user_id},
        )


def _insert_message_sql(row: dict, on_conflict: str = "") -> str:
    columns = ", ".join(row)
    values = ", ".join(f"%({column})s" for column in row)
    return f"INSERT INTO public.chat_messages ({columns}) VALUES ({values}) {on_conflict} RETURNING *"


def new_users(db, count: int) -> list[str]:
    users = [str(uuid.uuid4()) for _ in range(count)]
    db.execute(
        "INSERT INTO auth.users (id, email) SELECT u::uuid, u || '@example.test' FROM unnest(%s::text[]) u",
        (users,),
    )
    return users


def new_chat(db, members: list[str]) -> str:
    chat = str(uuid.uuid4())
    db.execute("INSERT INTO public.chats (id, created_by, is_group) VALUES (%s, %s, %s)", (chat, members[0], len(members) > 2))
    db.execute(
        "INSERT INTO public.chat_participants (chat_id, user_id) SELECT %s, u::uuid FROM unnest(%s::text[]) u",
        (chat, members),
    )
    return chat
