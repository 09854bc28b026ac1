"""A client that calls the database the way Supabase's API (PostgREST) does for the frontend.

Every request is one committed transaction, switched to the JWT's role with
the caller's claims in ``request.jwt.claims`` (which ``auth.uid()`` reads);
it never acts as the table owner. How a call is made (the settings, the
statements supabase-js produces: ``insert`` (INSERT ... RETURNING),
``upsert`` with ``ignoreDuplicates`` (INSERT ... ON CONFLICT DO NOTHING
RETURNING), ``rpc`` (``SELECT * FROM fn(arg := value)``), the conversation
list) is scripts/smoke's (chat_migrations.checks.smoke), so the tests and the
command call the database the same way. Test data is created as the owner
with new_users / new_chat.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager

from psycopg2.extras import RealDictCursor

from chat_migrations.checks.smoke import (
    CALLER_SQL, caller_settings, conversations_sql, insert_message_sql, rpc_sql,
)


class Frontend:
    """One signed-in user of the chat app (or anon, or service_role), with its own connection."""

    def __init__(self, db, user_id: str | None, role: str = "authenticated", *, observed: bool = False):
        caller_settings(role, user_id)  # refuses a role the API never switches to, before connecting
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
        with self.connection.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute("BEGIN")
            try:
                cur.execute(CALLER_SQL, caller_settings(self.role, self.user_id))
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
        return self.query(rpc_sql(function, arguments), arguments)

    def send(self, chat_id: str, text: str, **columns) -> dict:
        """supabase.from('chat_messages').insert({...}).select().single()"""
        row = {"chat_id": chat_id, "sender_id": self.user_id, "message_text": text, **columns}
        return self.query(insert_message_sql(row), row)[0]

    def send_idempotently(self, chat_id: str, text: str, client_generated_id: str) -> list[dict]:
        """upsert({...}, {onConflict: 'client_generated_id', ignoreDuplicates: true}).select()"""
        row = {"chat_id": chat_id, "sender_id": self.user_id, "message_text": text,
               "client_generated_id": client_generated_id}
        return self.query(insert_message_sql(row, "ON CONFLICT (client_generated_id) DO NOTHING"), row)

    def conversations(self) -> list[dict]:
        """The conversation list: each of the user's chats, its last message and unread count."""
        return self.query(conversations_sql(), {"me": self.user_id})


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
