"""Lock-taking statements that application queries never queue behind for long.

A statement that needs a lock the application's queries conflict with
(ACCESS EXCLUSIVE for a catalog change) waits at most the run's short
lock_timeout (500 ms by default). Inside a revision's transaction a timed-out
attempt rolls the whole revision back and starts it over
(``run_with_lock_retries``), holding nothing between attempts; outside one the
statement alone is retried. The pause between attempts grows, and when the
budget is spent the migration stops and names the sessions holding the table.

Steps whose lock no application query conflicts with (SHARE UPDATE
EXCLUSIVE: concurrent index builds and drops, VALIDATE CONSTRAINT) are not
retried: they wait up to ``NON_BLOCKING_LOCK_TIMEOUT_MS`` (one hour), since
nothing queues behind them while they wait.
"""

from __future__ import annotations

import logging
import time

from alembic import op
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from chat_migrations.errors import LockBudgetSpent
from chat_migrations.runtime import session
from chat_migrations.runtime.lock_declarations import ACCESS_EXCLUSIVE, DeclaredLock, Hold, declare

__all__ = [
    "LockBudgetSpent", "LockNotGranted", "execute", "run_with_lock_retries", "lock_tables", "lock_holders",
    "lock_wait_budget_seconds", "offline", "run_settings", "set_timeouts",
]

log = logging.getLogger("chat_migrations")

LOCK_NOT_AVAILABLE = "55P03"
# Pause between lock attempts grows from 100 ms to 3 s: with the default 12
# attempts of 500 ms, about 25 s in all before giving up.
FIRST_PAUSE_SECONDS = 0.1
MAX_PAUSE_SECONDS = 3.0
# An index build reads the whole table. Unit: ms (1 h).
INDEX_BUILD_STATEMENT_TIMEOUT_MS = 3_600_000
# VALIDATE CONSTRAINT scans the table under a lock that blocks no reads or writes. Unit: ms (1 h).
VALIDATE_STATEMENT_TIMEOUT_MS = 3_600_000
# Concurrent index builds and drops, and VALIDATE CONSTRAINT, take SHARE UPDATE
# EXCLUSIVE, which no application query conflicts with, so nothing queues
# behind them while they wait. A short lock_timeout would only abort them (a
# build half-way, leaving an INVALID index; a validation whenever autovacuum
# holds the table), so they wait as long as the step may run. Unit: ms.
NON_BLOCKING_LOCK_TIMEOUT_MS = INDEX_BUILD_STATEMENT_TIMEOUT_MS


class LockNotGranted(Exception):
    """One lock attempt inside a revision's transaction timed out: the revision must start over.

    Retrying only the statement would keep the locks the transaction already
    holds; an application transaction waiting on one of those while holding
    the lock we want makes a cycle that no retry breaks. Rolling the whole
    revision back releases everything (GitLab's with_lock_retries does the same).
    """

    def __init__(self, table: str, holders: str):
        super().__init__(f"{table}: {holders}")
        self.table, self.holders = table, holders


def offline() -> bool:
    return op.get_context().as_sql


def run_settings() -> "session.Settings":
    """The running command's settings: env.py hands them to context.configure(chat_settings=...)."""
    return op.get_context().opts["chat_settings"]


def execute(sql: str, *, table: str, in_transaction: bool = True) -> None:
    """Run one lock-taking statement, waiting at most lock_timeout for its lock.

    In the revision's transaction a timed-out attempt raises LockNotGranted,
    and run_with_lock_retries starts the revision over. Outside a transaction
    (autocommit steps hold nothing else) the statement itself is retried.
    """
    if offline():
        op.execute(sql)
        return
    connection = op.get_bind()
    if in_transaction:
        # The savepoint keeps the transaction usable to ask who holds the table.
        savepoint = connection.begin_nested()
        try:
            connection.exec_driver_sql(_literal_percent(sql))
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            savepoint.rollback()
            raise LockNotGranted(table, lock_holders(connection, table)) from None
        savepoint.commit()
        return
    settings = run_settings()
    for pause in _pauses(settings):
        try:
            connection.exec_driver_sql(_literal_percent(sql))
            return
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            holders = lock_holders(connection, table)
            if pause is None:
                raise _budget_spent(table, holders, settings) from None
            log.info("lock on %s not granted within %d ms (%s): trying again in %.1fs",
                     table, settings.lock_timeout_ms, holders, pause)
            time.sleep(pause)


def _literal_percent(sql: str) -> str:
    # exec_driver_sql hands psycopg2 a parameter set, which makes it read "%" as a placeholder.
    return sql.replace("%", "%%")


def run_with_lock_retries(run_revisions, settings: "session.Settings") -> None:
    """Run the pending revisions; one whose lock attempt timed out is rolled back and run again.

    The revisions already applied stay applied (one transaction per
    revision), so each new attempt resumes at the one that could not get
    its lock. Steps outside its transaction are idempotent by design.
    """
    for pause in _pauses(settings):
        try:
            run_revisions()
            return
        except LockNotGranted as refused:
            if pause is None:
                raise _budget_spent(refused.table, refused.holders, settings) from None
            log.info("lock on %s not granted within %d ms (%s): starting the revision over in %.1fs",
                     refused.table, settings.lock_timeout_ms, refused.holders, pause)
            time.sleep(pause)


def _pauses(settings: "session.Settings"):
    """The pause after each failed attempt (None after the last): 100 ms doubling to 3 s."""
    pause = FIRST_PAUSE_SECONDS
    for _ in range(settings.lock_attempts - 1):
        yield pause
        pause = min(pause * 2, MAX_PAUSE_SECONDS)
    yield None


def lock_wait_budget_seconds(settings: "session.Settings") -> float:
    """How long a lock-taking step waits in all, attempts and pauses, before the migration gives up."""
    return settings.lock_attempts * settings.lock_timeout_ms / 1000 + sum(p for p in _pauses(settings) if p)


def _budget_spent(table: str, holders: str, settings: "session.Settings") -> LockBudgetSpent:
    return LockBudgetSpent(
        f"gave up after {settings.lock_attempts} lock attempts of {settings.lock_timeout_ms} ms "
        f"on {table}: {holders}; nothing of the revision in progress was applied, rerun when it is gone"
    )


# The order application statements lock the messaging tables: a statement
# names chat_messages or chats before its RLS policies read chat_participants.
APPLICATION_LOCK_ORDER = ("public.chat_messages", "public.chats", "public.chat_participants")


def lock_tables(*tables: str, unless: str | None = None) -> None:
    """Take ACCESS EXCLUSIVE on every table the revision's transaction will alter, first, in one statement.

    A revision that alters several tables one after another holds the first
    while it waits for the next, and application transactions that hold the
    next while they read the first make a cycle on every attempt. Taken
    together, in the application's order, before anything else, the locks
    are either all granted or none held while waiting.

    ``unless``: a SQL boolean read from the catalog (no table lock) that is
    true when the revision has nothing to change on these tables; then no
    lock is requested, so nothing queues behind open application transactions.
    """
    rank = {name: position for position, name in enumerate(APPLICATION_LOCK_ORDER)}
    ordered = sorted(tables, key=lambda name: rank.get(name, len(rank)))
    locks = [DeclaredLock(ACCESS_EXCLUSIVE, name, Hold.TRANSACTION) for name in ordered]
    statement = f"LOCK TABLE {', '.join(ordered)} IN ACCESS EXCLUSIVE MODE"
    if unless is not None:
        statement = f"DO $lock$ BEGIN IF NOT ({unless}) THEN {statement}; END IF; END $lock$"
    execute(declare(*locks) + statement, table=", ".join(ordered))


def lock_holders(connection, table: str) -> str:
    rows = connection.execute(
        text(
            """
            SELECT DISTINCT a.pid, coalesce(nullif(a.application_name, ''), '?') AS app, a.state,
                   date_trunc('second', clock_timestamp() - coalesce(a.xact_start, a.query_start)) AS open_for
              FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.relation = ANY(SELECT to_regclass(trim(name)) FROM unnest(string_to_array(:table, ',')) AS name)
               AND l.granted AND a.pid <> pg_backend_pid()
             ORDER BY open_for DESC NULLS LAST
            """
        ),
        {"table": table},
    ).all()
    if not rows:
        return "blocked by a session that has since gone"
    return "blocked by " + "; ".join(
        f"pid {r.pid} ({r.app}, {r.state}, transaction open for {r.open_for})" for r in rows
    )


def set_timeouts(*, statement_ms: int | None, lock_ms: int | None = None) -> None:
    """Raise the session's timeouts for one long step; None puts the run's setting back."""
    settings = run_settings()
    statement = settings.statement_timeout_ms if statement_ms is None else statement_ms
    lock = settings.lock_timeout_ms if lock_ms is None else lock_ms
    op.execute(f"SET statement_timeout = {statement}")
    op.execute(f"SET lock_timeout = {lock}")
