"""scripts/smoke -n prod|staging [--json]: the plan's manual frontend checks, as a real participant, leaving no trace.

The plan's "Manual Testing (Frontend)" (conversation loading, sending and its
seq, status progression sent -> delivered -> read, realtime, reply threading)
as a command, run right after a deploy. It picks a participant of an existing
chat with two or more participants (and the chat's other participant), acts
as them the way Supabase's API does, and as ``anon``:

 conversations             the conversation list shows exactly the user's chats,
                           each with its last message (and unread count), as a
                           plain query says
 send                      a message gets the chat's next seq and status sent;
                           get_latest_seq returns it
 reply                     the other participant's reply gets the next seq and
                           reply_to_message_id; the user can read it (Realtime's
                           postgres_changes delivers what RLS lets them read)
 unread_count              get_unread_count equals a plain count in every chat of
                           the user, the reply counted
 status_progression        mark_messages_as_delivered, then mark_messages_as_read:
                           updated_count equals the rows changed, status only
                           moves forward on the others' messages, last_read_at
                           moves, the unread count falls to the plain count
 refuse_other_user         another user's id: not sent as them, not marked or
                           counted for them, their message not edited
 refuse_non_participant    a chat the user is not in: not read, not joined, not
                           sent to, not marked or counted
 refuse_anon               anon reads nothing, sends nothing, calls no function
 realtime                  the messaging tables are in supabase_realtime, which
                           publishes INSERT, UPDATE and DELETE, with REPLICA
                           IDENTITY FULL (the old row in UPDATE/DELETE payloads)
 no_trace                  after the rollback: the messages sent are gone, every
                           row changed is back, the chat's latest seq is back;
                           no write called nextval (checked before writing)

It works at every revision of the history: the functions differ (staging's
mark_messages_as_read returns void and get_unread_count is missing before
002; the caller checks and anon's loss of EXECUTE come with 103). A step that
holds only from a revision on is skipped on a database below it, naming the
revision: the check is then ``partial`` (some steps skipped) or ``skip``
(all), never a silent pass.

Leaving no trace: everything it writes is in one transaction, rolled back at
the end; each API call is a subtransaction of it (a refused call is rolled
back on its own, as PostgREST rolls back a failed request). The seq the
trigger computes (max + 1) and the advisory lock it takes live in that
transaction. Sequences are not transactional, so it refuses to run (exit 2)
when a write would call nextval (a column default or identity of the tables
it writes), or fire a trigger the plan does not know (its effects outside the
database could not be rolled back). Logical decoding never sees a rolled-back
transaction: Realtime subscribers are sent nothing. Everything else runs
read-only (checks_cli.read_only_connection). Inside the write transaction
now() is one instant, so every message it sends is created at the same time.

Exit 0: no check failed; 1: a check failed (each failed step says what was
expected and what was seen); 2: it could not run (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import psycopg2
from psycopg2.extras import RealDictCursor

from chat_migrations.checks import catalog, checks_cli
from chat_migrations.checks.checks_cli import Finding, Target, count_of
from chat_migrations.errors import CannotRun
from chat_migrations.runtime.session import first_line
from chat_migrations.checks.guarantees import REALTIME_PUBLICATION
from chat_migrations.runtime import promises as p
from chat_migrations.schema import history

# --- how Supabase's API runs a call (tests/supabase_api.py uses the same) ----------------------

API_ROLES = ("anon", "authenticated", "service_role")
# PostgREST's search_path for a request: the exposed schema, then Supabase's extra one.
API_SEARCH_PATH = "public, extensions"

# What PostgREST runs first in every request, transaction-local: the JWT's
# role and claims. Older PostgREST (before v10) set one setting per claim, and
# Supabase's auth.uid() reads request.jwt.claim.sub first: set (or cleared) too.
CALLER_SQL = (
    "SELECT set_config('role', %(role)s, true), set_config('request.jwt.claims', %(claims)s, true), "
    "set_config('request.jwt.claim.sub', %(sub)s, true), set_config('request.jwt.claim.role', %(role)s, true), "
    "set_config('search_path', %(search_path)s, true)"
)
# Back to the login role between calls, for the plain counts.
OWNER_SQL = (
    "SELECT set_config('role', 'none', true), set_config('request.jwt.claims', '', true), "
    "set_config('request.jwt.claim.sub', '', true), set_config('request.jwt.claim.role', '', true), "
    "set_config('search_path', 'pg_catalog', true)"
)


def caller_settings(role: str, user_id: str | None) -> dict[str, str]:
    """CALLER_SQL's parameters for a JWT of ``role`` (with ``sub`` = user_id when signed in)."""
    if role not in API_ROLES:
        raise ValueError(f"not an API role: {role!r}")
    claims = {"role": role, **({"sub": user_id} if user_id else {})}
    return {"role": role, "claims": json.dumps(claims), "sub": user_id or "", "search_path": API_SEARCH_PATH}


def rpc_sql(function: str, arguments) -> str:
    """supabase.rpc(function, arguments): the function called with named arguments."""
    named = ", ".join(f"{name} := %({name})s" for name in arguments)
    return f"SELECT * FROM public.{function}({named})"


def insert_message_sql(columns, on_conflict: str = "") -> str:
    """supabase.from('chat_messages').insert({...}).select(): INSERT ... RETURNING *."""
    names = ", ".join(columns)
    values = ", ".join(f"%({column})s" for column in columns)
    return f"INSERT INTO public.chat_messages ({names}) VALUES ({values}) {on_conflict} RETURNING *"


def conversations_sql(*, with_unread: bool = True) -> str:
    """The conversation list: each of the caller's chats (RLS), its last message and unread count (%(me)s)."""
    unread = ", public.get_unread_count(c.id, %(me)s) AS unread" if with_unread else ""
    return f"""
            SELECT c.id AS chat_id, last.seq AS last_seq, last.message_text AS last_text{unread}
              FROM public.chats c
              LEFT JOIN LATERAL (
                    SELECT m.seq, m.message_text FROM public.chat_messages m
                     WHERE m.chat_id = c.id AND m.deleted_at IS NULL
                     ORDER BY m.seq DESC LIMIT 1) last ON true
             ORDER BY c.id
            """


# --- where a behaviour begins: read from what the revisions promise ------------------------------


def _function(state: p.State, name: str) -> p.Function | None:
    return next((f for f in state.of(p.Function) if f.signature.startswith(f"public.{name}(")), None)


def _has_unread_function(state: p.State) -> bool:
    return _function(state, "get_unread_count") is not None


def _read_returns_count(state: p.State) -> bool:
    function = _function(state, "mark_messages_as_read")
    return function is not None and function.result == "TABLE(updated_count bigint)"


def _caller_checks(state: p.State) -> bool:
    """Another user's id, a chat the caller is not in, anon: refused by the functions themselves."""
    function = _function(state, "mark_messages_as_read")
    return bool(function and function.caller_checked)


def _anon_unread_refused(state: p.State) -> bool:
    unread = _function(state, "get_unread_count")
    item = state.get(("execute", unread.signature, "anon")) if unread else None
    return isinstance(item, p.Execute) and not item.allowed


def _own_messages_only(state: p.State) -> bool:
    """The revisions define chat_messages' policies (a sender updates only their own messages)."""
    return state.get(("policies", MESSAGES)) is not None


# A refusal: SQLSTATE insufficient_privilege (PostgREST answers 401/403), from a
# missing privilege, a row-level security policy or a caller check.
REFUSED = "42501"
# Errors that say nothing about the frontend contract: the smoke could not run.
_CANNOT_RUN_SQLSTATES = ("55P03", "57014", "40P01", "40001")

MESSAGES, PARTICIPANTS = "public.chat_messages", "public.chat_participants"
WRITTEN_TABLES = (MESSAGES, PARTICIPANTS)
SMOKE_TEXT = "scripts/smoke: a check message, rolled back, never committed"
STATUS_LABELS = {"pass": "pass", "fail": "FAIL", "partial": "partial", "skip": "skip"}


@dataclass
class Outcome:
    """What one API call returned: its rows, or the error it raised."""

    rows: list[dict] | None
    error: psycopg2.Error | None = None

    @property
    def refused(self) -> bool:
        return self.error is not None and self.error.pgcode == REFUSED

    def describe(self) -> str:
        if self.error is not None:
            return f"error {self.error.pgcode}: {first_line(self.error)}"
        return json.dumps(self.rows, default=str)

    def value(self, column: str):
        """The single row's ``column`` (supabase.rpc(...).data for a scalar function)."""
        return self.rows[0].get(column) if self.rows and len(self.rows) == 1 else None


class Api:
    """Calls as Supabase's API makes them, each a subtransaction of the smoke's one transaction."""

    def __init__(self, cursor):
        self.cur = cursor

    def call(self, role: str, user_id: str | None, sql: str, params=None) -> Outcome:
        self.cur.execute("SAVEPOINT smoke_api_call")
        try:
            self.cur.execute(CALLER_SQL, caller_settings(role, user_id))
            self.cur.execute(sql, params)
            rows = [dict(row) for row in self.cur.fetchall()] if self.cur.description else []
        except psycopg2.Error as error:
            # As PostgREST rolls back a failed request; the settings go with it.
            self.cur.execute("ROLLBACK TO SAVEPOINT smoke_api_call")
            self.cur.execute("RELEASE SAVEPOINT smoke_api_call")
            if error.pgcode in _CANNOT_RUN_SQLSTATES:
                raise CannotRun(f"stopped by the database: {first_line(error)}") from None
            return Outcome(None, error)
        self.cur.execute("RELEASE SAVEPOINT smoke_api_call")
        self.cur.execute(OWNER_SQL)
        return Outcome(rows)

    def rpc(self, role: str, user_id: str | None, function: str, **arguments) -> Outcome:
        return self.call(role, user_id, rpc_sql(function, arguments), arguments)

    def send(self, role: str, user_id: str | None, chat_id: str, *, sender: str | None = None, **columns) -> Outcome:
        """A message into ``chat_id``, from ``sender`` (the caller unless given)."""
        row = {"chat_id": chat_id, "sender_id": sender or user_id, "message_text": SMOKE_TEXT,
               "client_generated_id": str(uuid.uuid4()), **columns}
        return self.call(role, user_id, insert_message_sql(row), row)

    # As the login role (the owner): the plain counts the API's answers are compared with.
    def rows(self, sql: str, params=None) -> list[dict]:
        self.cur.execute(sql, params)
        return [dict(row) for row in self.cur.fetchall()]

    def scalar(self, sql: str, params=None):
        self.cur.execute(sql, params)
        row = self.cur.fetchone()
        return None if row is None else next(iter(row.values()))


# --- steps and checks ---------------------------------------------------------------------------


@dataclass
class Steps:
    """One check's steps: each passes, fails (expected vs seen) or is skipped (with the reason)."""

    items: list[dict[str, str]] = field(default_factory=list)

    def expect(self, step: str, ok: bool, expected: Any, seen: Any) -> bool:
        self.items.append({"step": step, "status": "pass" if ok else "fail", "expected": str(expected), "seen": str(seen)})
        return ok

    def skip(self, step: str, reason: str) -> None:
        self.items.append({"step": step, "status": "skip", "reason": reason})

    def refused(self, step: str, outcome: Outcome) -> bool:
        return self.expect(step, outcome.refused, f"refused ({REFUSED} insufficient_privilege)", outcome.describe())

    def finding(self, name: str, title: str, proved: str, method: str = "api") -> Finding:
        failed = [s for s in self.items if s["status"] == "fail"]
        skipped = [s for s in self.items if s["status"] == "skip"]
        problems = [f"{s['step']}: expected {s['expected']}, seen {s['seen']}" for s in failed]
        problems += [f"{s['step']}: skipped: {s['reason']}" for s in skipped]
        if failed:
            status = "fail"
            summary = f"{len(failed)} of {count_of(len(self.items), 'step')} failed: {', '.join(s['step'] for s in failed)}"
        elif skipped and len(skipped) == len(self.items):
            status, summary = "skip", f"skipped: {skipped[0]['reason']}"
        elif skipped:
            status, summary = "partial", f"{proved}; {count_of(len(skipped), 'step')} skipped at this revision"
        else:
            status, summary = "pass", proved
        return Finding(name, title, status, method, summary, problems, data={"steps": self.items})


@dataclass
class Cast:
    """Who the smoke acts as: a participant, the chat's other participant, and a chat the user is not in."""

    chat: str
    user: str
    other: str
    outside_chat: str
    outside_exists: bool

    def describe(self) -> dict[str, Any]:
        return {"chat": self.chat, "user": self.user, "other_user": self.other,
                "not_member_chat": self.outside_chat, "not_member_chat_exists": self.outside_exists}


@dataclass
class Run:
    """What the checks share: the calls, where the database is in its history, and what they left."""

    api: Api
    environment: str
    current: str
    states: list[p.State]  # what the revisions promise at each revision of the chain, baseline first
    cast: Cast
    sent: dict | None = None
    reply: dict | None = None
    latest_before: int = 0
    # {message id: status} before the smoke changed it, and the user's last_read_at before.
    changed: dict[str, str] = field(default_factory=dict)
    last_read_before: Any = None
    checked_before_writing: str = ""

    @property
    def state(self) -> p.State:
        """What the revisions promise at the current revision."""
        return next(state for state in self.states if state.revision == self.current)

    def missing(self, holds: Callable[[p.State], bool], what: str) -> str | None:
        """Why a step cannot apply here (``what`` holds where ``holds`` says the promises give it), or None."""
        if holds(self.state):
            return None
        since = next((state.revision for state in self.states if holds(state)), None)
        return f"{what} from {since} on; the database is at {self.current}"


def _plain_unread(run: Run, chat: str) -> int:
    """The messages of others, not deleted, newer than the user's last_read_at: counted plainly."""
    return run.api.scalar(
        "SELECT count(*) FROM public.chat_messages m WHERE m.chat_id = %(chat)s "
        "AND m.sender_id IS DISTINCT FROM %(me)s AND m.deleted_at IS NULL "
        "AND m.created_at > coalesce((SELECT p.last_read_at FROM public.chat_participants p "
        "WHERE p.chat_id = %(chat)s AND p.user_id = %(me)s), '-infinity'::timestamptz)",
        {"chat": chat, "me": run.cast.user},
    )


def _statuses(run: Run) -> dict[str, str]:
    return {r["id"]: r["status"] for r in run.api.rows(
        "SELECT id::text, status FROM public.chat_messages WHERE chat_id = %s", (run.cast.chat,))}


def _last_read_at(run: Run):
    return run.api.scalar(
        "SELECT last_read_at FROM public.chat_participants WHERE chat_id = %s AND user_id = %s",
        (run.cast.chat, run.cast.user),
    )


def _unread_reason(run: Run) -> str | None:
    return run.missing(_has_unread_function, "get_unread_count exists")


def check_conversations(run: Run) -> Finding:
    steps, me = Steps(), run.cast.user
    no_unread = _unread_reason(run)
    listed = run.api.call("authenticated", me, conversations_sql(with_unread=no_unread is None), {"me": me})
    expected = {r["chat_id"]: r for r in run.api.rows(
        "SELECT p.chat_id::text, last.seq AS last_seq, last.message_text AS last_text FROM public.chat_participants p "
        "LEFT JOIN LATERAL (SELECT m.seq, m.message_text FROM public.chat_messages m WHERE m.chat_id = p.chat_id "
        "AND m.deleted_at IS NULL ORDER BY m.seq DESC LIMIT 1) last ON true WHERE p.user_id = %s", (me,))}
    if not steps.expect("load", listed.error is None, "the user's conversations", listed.describe()):
        return steps.finding("conversations", "the conversation list", "")
    seen = {str(r["chat_id"]): r for r in listed.rows}
    steps.expect("only the user's chats", set(seen) == set(expected),
                 f"{count_of(len(expected), 'chat')} (the user's participant rows)", _set_difference(seen, expected))
    last = [c for c in expected if c in seen and (seen[c]["last_seq"], seen[c]["last_text"])
            != (expected[c]["last_seq"], expected[c]["last_text"])]
    steps.expect("last message of each", not last, "the newest message not deleted, by seq",
                 f"differs in chat {last[0]}: seq {seen[last[0]]['last_seq']} instead of {expected[last[0]]['last_seq']}"
                 if last else "as expected")
    if no_unread:
        steps.skip("unread count of each", no_unread)
    else:
        wrong = [(c, seen[c]["unread"], _plain_unread(run, c)) for c in expected if c in seen]
        wrong = [w for w in wrong if w[1] != w[2]]
        steps.expect("unread count of each", not wrong, "the plain count of each chat",
                     f"chat {wrong[0][0]}: {wrong[0][1]} instead of {wrong[0][2]}" if wrong else "as expected")
    return steps.finding(
        "conversations", "the conversation list",
        f"{count_of(len(expected), 'conversation')}, each with its last message"
        + ("" if no_unread else " and unread count"),
    )


def _set_difference(seen: dict, expected: dict) -> str:
    extra, missing = sorted(set(seen) - set(expected)), sorted(set(expected) - set(seen))
    if not extra and not missing:
        return f"{count_of(len(seen), 'chat')}"
    return "; ".join(p for p in (f"also chats {', '.join(extra)}" if extra else "",
                                 f"not chats {', '.join(missing)}" if missing else "") if p)


def _inserted(outcome: Outcome) -> str:
    if outcome.error is None and len(outcome.rows) == 1:
        return f"message {outcome.rows[0]['id']}"
    return outcome.describe()


def check_send(run: Run) -> Finding:
    steps, chat, me = Steps(), run.cast.chat, run.cast.user
    run.latest_before = run.api.scalar("SELECT coalesce(max(seq), 0) FROM public.chat_messages WHERE chat_id = %s", (chat,))
    run.last_read_before = _last_read_at(run)
    sent = run.api.send("authenticated", me, chat)
    if steps.expect("insert", sent.error is None and len(sent.rows) == 1, "the new row returned", _inserted(sent)):
        run.sent = sent.rows[0]
        steps.expect("seq", run.sent["seq"] == run.latest_before + 1, f"{run.latest_before + 1} (the chat's next)",
                     run.sent["seq"])
        steps.expect("status", run.sent["status"] == "sent", "sent", run.sent["status"])
        latest = run.api.rpc("authenticated", me, "get_latest_seq", p_chat_id=chat)
        steps.expect("get_latest_seq", latest.value("get_latest_seq") == run.sent["seq"], run.sent["seq"], latest.describe())
    return steps.finding("send", "send a message", f"seq {run.latest_before + 1}, status sent, get_latest_seq agrees")


def check_reply(run: Run) -> Finding:
    steps, chat = Steps(), run.cast.chat
    if run.sent is None:
        steps.skip("reply", "no message to reply to: send failed")
        return steps.finding("reply", "reply to it", "")
    reply = run.api.send("authenticated", run.cast.other, chat, reply_to_message_id=run.sent["id"])
    if steps.expect("insert", reply.error is None and len(reply.rows) == 1, "the reply returned", _inserted(reply)):
        run.reply = reply.rows[0]
        after = run.sent["seq"] + 1 if isinstance(run.sent["seq"], int) else "a seq (the message it replies to has none)"
        steps.expect("seq", run.reply["seq"] == after, after, run.reply["seq"])
        steps.expect("reply_to_message_id", str(run.reply["reply_to_message_id"]) == str(run.sent["id"]),
                     run.sent["id"], run.reply["reply_to_message_id"])
        # Realtime's postgres_changes sends a subscriber only the rows its RLS lets it read.
        read = run.api.call("authenticated", run.cast.user,
                            "SELECT id, reply_to_message_id FROM public.chat_messages WHERE id = %s", (run.reply["id"],))
        steps.expect("the user reads it", read.rows is not None and len(read.rows) == 1, "1 row", read.describe())
        listed = run.api.call("authenticated", run.cast.user, conversations_sql(with_unread=False), {"me": run.cast.user})
        row = next((r for r in listed.rows or [] if str(r["chat_id"]) == chat), None)
        steps.expect("last message in the list", row is not None and row["last_seq"] == run.reply["seq"],
                     f"seq {run.reply['seq']}", row and f"seq {row['last_seq']}")
    return steps.finding("reply", "reply to it", "the next seq, reply_to_message_id set, read by the user")


def check_unread_count(run: Run) -> Finding:
    steps, me = Steps(), run.cast.user
    reason = _unread_reason(run)
    if reason:
        steps.skip("get_unread_count", reason)
        return steps.finding("unread_count", "unread count against a plain count", "")
    chats = [r["chat_id"] for r in run.api.rows("SELECT chat_id::text FROM public.chat_participants WHERE user_id = %s", (me,))]
    counted, wrong = {}, []
    for chat in chats:
        counted[chat] = run.api.rpc("authenticated", me, "get_unread_count", p_chat_id=chat, p_user_id=me)
        plain = _plain_unread(run, chat)
        if counted[chat].value("get_unread_count") != plain:
            wrong.append(f"chat {chat}: {counted[chat].describe()} instead of {plain}")
    steps.expect("every chat of the user", not wrong, "the plain count of each", wrong[0] if wrong else "as expected")
    if run.reply is not None and run.cast.chat in counted:
        # Sent after the user last read the chat (now() is the transaction's start): it is unread.
        unread_reply = run.api.scalar(
            "SELECT %(created)s > coalesce(%(read)s, '-infinity'::timestamptz)",
            {"created": run.reply["created_at"], "read": run.last_read_before},
        )
        if unread_reply:
            value = counted[run.cast.chat].value("get_unread_count")
            steps.expect("the reply is counted", isinstance(value, int) and value >= 1,
                         "at least 1 in the chat (the reply)", counted[run.cast.chat].describe())
    return steps.finding("unread_count", "unread count against a plain count",
                         f"{count_of(len(chats), 'chat')}: get_unread_count equals the plain count")


def _mark(run: Run, steps: Steps, function: str, *, counts: bool) -> dict[str, str] | None:
    """Call a mark function as the user; check updated_count against the rows whose status changed."""
    before = _statuses(run)
    outcome = run.api.rpc("authenticated", run.cast.user, function, p_chat_id=run.cast.chat, p_user_id=run.cast.user)
    if not steps.expect(function, outcome.error is None, "it runs", outcome.describe()):
        return None
    after = _statuses(run)
    changed = {m: (before[m], after[m]) for m in after if m in before and after[m] != before[m]}
    for message, (status, _) in changed.items():
        run.changed.setdefault(message, status)
    if counts:
        steps.expect(f"{function} updated_count", outcome.value("updated_count") == len(changed),
                     f"{len(changed)} (the rows it changed)", outcome.describe())
    else:
        steps.skip(f"{function} updated_count", run.missing(_read_returns_count, "it returns updated_count"))
    return {m: f"{old} -> {new}" for m, (old, new) in changed.items()}


def check_status_progression(run: Run) -> Finding:
    steps = Steps()
    if run.reply is None:
        steps.skip("status", "no reply to mark: send or reply failed")
        return steps.finding("status_progression", "status moves forward", "")
    own, reply = str(run.sent["id"]), str(run.reply["id"])
    delivered = _mark(run, steps, "mark_messages_as_delivered", counts=True)
    if delivered is not None:
        steps.expect("the reply is delivered", delivered.get(reply) == "sent -> delivered", "sent -> delivered",
                     delivered.get(reply, "unchanged"))
        backwards = {m: c for m, c in delivered.items() if c != "sent -> delivered"}
        steps.expect("only sent -> delivered", not backwards, "no other change", backwards or "none")
    counts = run.missing(_read_returns_count, "it returns updated_count") is None
    read = _mark(run, steps, "mark_messages_as_read", counts=counts)
    if read is not None:
        steps.expect("the reply is read", read.get(reply) == "delivered -> read", "delivered -> read", read.get(reply, "unchanged"))
        # A change is a different status, so one that ends at read moved forward.
        other = {m: c for m, c in read.items() if not c.endswith(" -> read")}
        steps.expect("only forward to read", not other, "every change ends at read", other or "as expected")
        last_read = _last_read_at(run)
        steps.expect("last_read_at moves forward",
                     last_read is not None and (run.last_read_before is None or last_read >= run.last_read_before),
                     f"later than {run.last_read_before}", last_read)
    again = _mark(run, steps, "mark_messages_as_delivered", counts=True)
    if again is not None:
        steps.expect("never back: delivered after read", not again, "nothing changes", again or "nothing")
    own_status = _statuses(run).get(own)
    steps.expect("the user's own message untouched", own_status == "sent", "sent", own_status)
    reason = _unread_reason(run)
    if reason:
        steps.skip("unread after read", reason)
    else:
        counted = run.api.rpc("authenticated", run.cast.user, "get_unread_count",
                              p_chat_id=run.cast.chat, p_user_id=run.cast.user)
        plain = _plain_unread(run, run.cast.chat)
        steps.expect("unread after read", counted.value("get_unread_count") == plain, plain, counted.describe())
    return steps.finding("status_progression", "status moves forward",
                         "sent -> delivered -> read, updated_count = rows changed, never back")


def _caller_refusals(run: Run, steps: Steps, role: str, user: str | None, chat: str, acting_for: str, *,
                     anon_unread: bool = False, latest_seq: bool = False) -> None:
    """The caller-checked functions, called by ``role``/``user`` on ``chat`` for ``acting_for``: each refused.

    ``anon_unread``: anon's get_unread_count is refused where its EXECUTE is revoked (before the caller checks).
    """
    calls = {function: {"p_chat_id": chat, "p_user_id": acting_for}
             for function in ("mark_messages_as_read", "mark_messages_as_delivered", "get_unread_count")}
    if latest_seq:
        calls["get_latest_seq"] = {"p_chat_id": chat}
    for function, arguments in calls.items():
        why = run.missing(_caller_checks, "refused")
        if function == "get_unread_count":
            why = _unread_reason(run) or (run.missing(_anon_unread_refused, "refused") if anon_unread else why)
        if why:
            steps.skip(function, why)
        else:
            steps.refused(function, run.api.rpc(role, user, function, **arguments))


def check_refuse_other_user(run: Run) -> Finding:
    steps, me, other, chat = Steps(), run.cast.user, run.cast.other, run.cast.chat
    before, last_read = _statuses(run), _last_read_at(run)
    steps.refused("send as them", run.api.send("authenticated", me, chat, sender=other))
    _caller_refusals(run, steps, "authenticated", me, chat, other)
    reason = run.missing(_own_messages_only, "a sender edits only their own messages")
    if reason or run.reply is None:
        steps.skip("edit their message", reason or "no message of theirs to edit: reply failed")
    else:
        edited = run.api.call("authenticated", me, "UPDATE public.chat_messages SET message_text = 'edited' "
                              "WHERE id = %s RETURNING id", (run.reply["id"],))
        steps.expect("edit their message", edited.refused or edited.rows == [], "refused or no row changed", edited.describe())
    _nothing_changed(run, steps, before, last_read)
    return steps.finding("refuse_other_user", "refused: acting as another user", "every attempt refused, nothing changed")


def _nothing_changed(run: Run, steps: Steps, before: dict[str, str], last_read) -> None:
    after = _statuses(run)
    differ = sorted(m for m in before if after.get(m) != before[m])
    added = sorted(set(after) - set(before))
    now_read = _last_read_at(run)
    seen = "; ".join(filter(None, [
        f"statuses changed: {', '.join(differ)}" if differ else "",
        f"messages added: {', '.join(added)}" if added else "",
        f"last_read_at {last_read} -> {now_read}" if now_read != last_read else "",
    ]))
    steps.expect("nothing changed", not seen, "the chat as before", seen or "as before")


def check_refuse_non_participant(run: Run) -> Finding:
    steps, me, outside = Steps(), run.cast.user, run.cast.outside_chat
    has = run.api.scalar("SELECT count(*) FROM public.chat_messages WHERE chat_id = %s", (outside,))
    read = run.api.call("authenticated", me, "SELECT id FROM public.chat_messages WHERE chat_id = %s LIMIT 1", (outside,))
    steps.expect("read its messages", read.refused or read.rows == [], f"nothing (it has {count_of(has, 'message')})",
                 read.describe())
    chat = run.api.call("authenticated", me, "SELECT id FROM public.chats WHERE id = %s", (outside,))
    steps.expect("read the chat", chat.refused or chat.rows == [], "nothing", chat.describe())
    if run.cast.outside_exists:
        joined = run.api.call("authenticated", me, "INSERT INTO public.chat_participants (chat_id, user_id) "
                              "VALUES (%s, %s) RETURNING id", (outside, me))
        steps.refused("join it", joined)
        steps.refused("send to it", run.api.send("authenticated", me, outside))
    else:
        steps.skip("join it", "the user is in every chat: tried on a chat id that does not exist")
        steps.skip("send to it", "the user is in every chat: tried on a chat id that does not exist")
    _caller_refusals(run, steps, "authenticated", me, outside, me, latest_seq=True)
    return steps.finding("refuse_non_participant", "refused: a chat the user is not in",
                         "not read, joined, sent to, marked or counted")


def check_refuse_anon(run: Run) -> Finding:
    steps, chat, me = Steps(), run.cast.chat, run.cast.user
    before, last_read = _statuses(run), _last_read_at(run)
    read = run.api.call("anon", None, "SELECT id FROM public.chat_messages WHERE chat_id = %s LIMIT 1", (chat,))
    steps.expect("read messages", read.refused or read.rows == [], "refused or nothing", read.describe())
    steps.refused("send", run.api.send("anon", None, chat, sender=me))
    _caller_refusals(run, steps, "anon", None, chat, me, anon_unread=True, latest_seq=True)
    _nothing_changed(run, steps, before, last_read)
    return steps.finding("refuse_anon", "refused: anon", "reads nothing, sends nothing, calls no function")


def check_realtime(run: Run) -> Finding:
    steps = Steps()
    publication = run.api.rows(
        "SELECT pubinsert, pubupdate, pubdelete FROM pg_catalog.pg_publication WHERE pubname = %s",
        (REALTIME_PUBLICATION,),
    )
    if steps.expect("publication", len(publication) == 1, REALTIME_PUBLICATION, "present" if publication else "missing"):
        actions = [a.upper() for a in ("insert", "update", "delete") if publication[0][f"pub{a}"]]
        steps.expect("publishes", len(actions) == 3, "INSERT, UPDATE, DELETE", ", ".join(actions) or "nothing")
    tables = [table.name for table in run.state.tables if table.realtime]
    for table in tables:
        schema, name = table.split(".")
        row = run.api.rows(
            "SELECT c.relreplident::text AS identity, EXISTS (SELECT FROM pg_catalog.pg_publication_tables t "
            "WHERE t.pubname = %s AND t.schemaname = %s AND t.tablename = %s) AS published "
            "FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(%s)",
            (REALTIME_PUBLICATION, schema, name, table),
        )
        if not steps.expect(f"{table} exists", bool(row), "the table", "missing" if not row else "present"):
            continue
        steps.expect(f"{table} published", row[0]["published"], f"in {REALTIME_PUBLICATION}",
                     "in it" if row[0]["published"] else "not in it")
        steps.expect(f"{table} replica identity", row[0]["identity"] == "f", "FULL (the old row in UPDATE/DELETE)",
                     {"d": "DEFAULT", "n": "NOTHING", "i": "INDEX", "f": "FULL"}.get(row[0]["identity"]))
    return steps.finding(
        "realtime", "Realtime publication and replica identity",
        f"{', '.join(tables)} in {REALTIME_PUBLICATION}, REPLICA IDENTITY FULL",
        method="catalog",
    )


CHECKS: tuple[Callable[[Run], Finding], ...] = (
    check_conversations,
    check_send,
    check_reply,
    check_unread_count,
    check_status_progression,
    check_refuse_other_user,
    check_refuse_non_participant,
    check_refuse_anon,
    check_realtime,
)


# --- choosing whom to act as, and what a write would leave ---------------------------------------


def pick_cast(api: Api) -> Cast:
    """The first chat (by id) with two participants, preferring one with messages; an index walk, not a scan."""
    for with_messages in (True, False):
        has_messages = ("AND EXISTS (SELECT FROM public.chat_messages m WHERE m.chat_id = p.chat_id)"
                        if with_messages else "")
        rows = api.rows(
            "SELECT p.chat_id::text AS chat, p.user_id::text AS user, o.user_id::text AS other "
            "FROM public.chat_participants p JOIN LATERAL (SELECT q.user_id FROM public.chat_participants q "
            "WHERE q.chat_id = p.chat_id AND q.user_id IS NOT NULL AND q.user_id <> p.user_id "
            "ORDER BY q.user_id LIMIT 1) o ON true "
            f"WHERE p.chat_id IS NOT NULL AND p.user_id IS NOT NULL {has_messages} "
            "ORDER BY p.chat_id, p.user_id LIMIT 1"
        )
        if rows:
            break
    else:
        raise CannotRun("no chat has two or more participants: there is nobody to act as (the smoke uses live data only)")
    chat, user, other = rows[0]["chat"], rows[0]["user"], rows[0]["other"]
    outside = api.scalar(
        "SELECT c.id::text FROM public.chats c WHERE NOT EXISTS (SELECT FROM public.chat_participants p "
        "WHERE p.chat_id = c.id AND p.user_id = %s) ORDER BY c.id LIMIT 1", (user,),
    )
    return Cast(chat, user, other, outside or str(uuid.uuid4()), outside is not None)


def refuse_traces(api: Api, state: p.State) -> str:
    """Stop (exit 2) before writing when a write would leave what no rollback undoes; say what was checked."""
    tables = list(WRITTEN_TABLES)
    sequences = api.rows(
        "SELECT DISTINCT d.refobjid::regclass::text AS sequence, a.attrelid::regclass::text || '.' || a.attname AS used_by "
        "FROM pg_catalog.pg_attrdef ad JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum "
        "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = ad.oid "
        "AND d.refclassid = 'pg_catalog.pg_class'::regclass "
        "JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' "
        "WHERE ad.adrelid = ANY(CAST(%(tables)s AS regclass[])) "
        "UNION SELECT d.objid::regclass::text, a.attrelid::regclass::text || '.' || a.attname "
        "FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'i' "
        "AND d.refobjid = ANY(CAST(%(tables)s AS regclass[])) ORDER BY 1, 2",
        {"tables": tables},
    )
    if sequences:
        used = ", ".join(f"{r['sequence']} ({r['used_by']})" for r in sequences)
        raise CannotRun(f"writing would advance sequence {used}, which no rollback undoes: the smoke leaves no trace, "
                        "so it does not write")
    known = {trigger.key[1] for trigger in state.of(p.Trigger)}
    triggers = [r["name"] for r in api.rows(
        "SELECT t.tgrelid::regclass::text || '.' || t.tgname AS name FROM pg_catalog.pg_trigger t "
        "WHERE t.tgrelid = ANY(CAST(%(tables)s AS regclass[])) AND NOT t.tgisinternal AND t.tgenabled <> 'D' ORDER BY 1",
        {"tables": tables},
    ) if r["name"] not in known]
    if triggers:
        raise CannotRun(f"writing would fire trigger {', '.join(triggers)}, which the revisions do not promise: what it "
                        "does outside the database would not be rolled back, so the smoke does not write")
    return f"no column default or identity of {', '.join(tables)} calls nextval; no trigger but the promised ones fires"


def check_no_trace(run: Run) -> Finding:
    """After the rollback, in a read-only transaction of its own."""
    steps, api = Steps(), run.api
    ours = [str(m["id"]) for m in (run.sent, run.reply) if m]
    left = api.rows("SELECT id::text FROM public.chat_messages WHERE id = ANY(CAST(%s AS uuid[]))", (ours,))
    steps.expect("messages sent", not left, f"gone ({count_of(len(ours), 'message')} sent)",
                 f"still there: {', '.join(r['id'] for r in left)}" if left else "gone")
    statuses = _statuses(run)
    # The rows that were there before and that the smoke changed (its own messages are gone, above).
    changed = {m: s for m, s in run.changed.items() if m not in ours}
    back = {m: f"{statuses.get(m)} instead of {s}" for m, s in changed.items() if statuses.get(m) != s}
    steps.expect("statuses changed", not back, f"back as before ({count_of(len(changed), 'message')})",
                 back or "as before")
    steps.expect("last_read_at", _last_read_at(run) == run.last_read_before, run.last_read_before, _last_read_at(run))
    latest = api.scalar("SELECT coalesce(max(seq), 0) FROM public.chat_messages WHERE chat_id = %s", (run.cast.chat,))
    steps.expect("latest seq", latest == run.latest_before, run.latest_before,
                 latest if latest == run.latest_before else f"{latest} (a message committed since by a real user shows too)")
    # Sequences are not transactional: refuse_traces made sure no write calls nextval.
    steps.expect("sequences", bool(run.checked_before_writing), "no nextval (checked before writing)",
                 run.checked_before_writing)
    return steps.finding("no_trace", "everything rolled back",
                         "the messages gone, every changed row and the seq as before, no sequence used", method="index")


# --- the report ---------------------------------------------------------------------------------


@dataclass
class SmokeReport(checks_cli.FindingsReport):
    identity: str
    revision: dict[str, str | None]
    cast: Cast
    failing_status: ClassVar[str] = "fail"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.describe(),
            "identity": self.identity,
            "revision": self.revision,
            "acting_as": self.cast.describe(),
            "passed": not self.failing,
            **self.checks_json(),
        }

    def render(self) -> str:
        outside = self.cast.outside_chat + ("" if self.cast.outside_exists else " (no such chat: the user is in every chat)")
        header = [
            f"smoke {self.target.label}: {self.target.masked_url}",
            f"identity: {self.identity}",
            f"revision: {self.revision['current']} (head {self.revision['head']})",
            f"acting as: user {self.cast.user} in chat {self.cast.chat}, with user {self.cast.other}; "
            f"a chat they are not in: {outside}",
            "everything written was in one transaction, rolled back",
        ]
        counts = {status: [f.name for f in self.findings if f.status == status] for status in STATUS_LABELS}
        if counts["fail"]:
            verdict = f"FAILED: {len(counts['fail'])} of {len(self.findings)} checks failed: {', '.join(counts['fail'])}"
        else:
            verdict = f"OK: no check failed ({len(counts['pass'])} of {len(self.findings)} pass"
            for status in ("partial", "skip"):
                if counts[status]:
                    verdict += f"; {status}: {', '.join(counts[status])}"
            verdict += ")"
        return self.render_findings(header, STATUS_LABELS, verdict)


def promised_states(environment: str, current: str | None) -> list[p.State]:
    if current is None:
        raise CannotRun(f"the database was never adopted (no revision recorded): adopt it first (README, adopting)")
    if current not in history.revisions(environment):
        raise CannotRun(f"the database is at {current}, not a revision of {environment}'s history in this checkout")
    return history.states(environment)


def smoke(target: Target) -> SmokeReport:
    environment = target.environment.name
    with checks_cli.read_only_connection(target, "chat-migrations:smoke") as conn:
        proof = checks_cli.verify_identity(target, conn)
        current, head = catalog.current_revision(conn), catalog.head_revision(environment)
        conn.rollback()
        states = promised_states(environment, current)
        dbapi = conn.connection.dbapi_connection
        try:
            with dbapi.cursor(cursor_factory=RealDictCursor) as cur:
                api = Api(cur)
                cast = pick_cast(api)
                state = next(state for state in states if state.revision == current)
                checked = refuse_traces(api, state)
                dbapi.rollback()
                run = Run(api, environment, current, states, cast, checked_before_writing=checked)
                findings = _in_rolled_back_transaction(dbapi, run)
                findings.append(checks_cli.timed(check_no_trace, run))
        except psycopg2.Error as error:
            raise CannotRun(f"stopped by the database: {first_line(error)}") from None
        finally:
            dbapi.rollback()
    return SmokeReport(target, findings, proof, {"current": current, "head": head}, cast)


def _in_rolled_back_transaction(dbapi, run: Run) -> list[Finding]:
    cur = run.api.cur
    # The session is READ ONLY (checks_cli); this one transaction may write, and is rolled back.
    # Short timeouts: senders to the chosen chat wait for its seq lock until the rollback.
    cur.execute("SET TRANSACTION READ WRITE")
    cur.execute("SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '30s'; "
                "SET LOCAL idle_in_transaction_session_timeout = '30s'")
    try:
        return [checks_cli.timed(check, run) for check in CHECKS]
    finally:
        dbapi.rollback()


def build_parser() -> argparse.ArgumentParser:
    return checks_cli.command_parser(
        "smoke",
        "The frontend's calls, as a real participant of an existing chat and as anon, "
        "in a transaction that is rolled back.",
        "Exit 0: no check failed; 1: a check failed; 2: could not run.",
    )


def main(argv: list[str] | None = None, *, urls: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return checks_cli.run_command("smoke", lambda: smoke(checks_cli.environment_target(args.name, urls)), args.json)


if __name__ == "__main__":
    sys.exit(main())
