"""The migration connection: who it is, how long it may wait, and that it runs alone.

env.py hands every online command to ``migration_connection``; it connects,
checks the database's identity before anything else, sets the session's
timeouts, takes the advisory lock that keeps two runners from interleaving, and
creates the bookkeeping schema when the command is going to write.

The run's ``Settings`` travel as Alembic carries per-run values: env.py parses
them from ``-x`` and passes them here, and to the revisions' helpers through
``context.configure(chat_settings=...)`` (``op.get_context().opts``). What the
head schema knows (the chat tables, how adoption compares) is passed in by
env.py too, so this module never imports it.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from chat_migrations.runtime import bookkeeping, identity, interrupts
from chat_migrations.runtime.environments import ConfigurationError, Environment, mask_url, parse_url
from chat_migrations.errors import MigrationRefused

log = logging.getLogger("chat_migrations")

BOOKKEEPING_SCHEMA = bookkeeping.SCHEMA
BOOKKEEPING_SQL = bookkeeping.CREATE_SQL

# One key for every runner of this project on a database.
ADVISORY_LOCK_SQL_KEY = "hashtextextended('chat_migrations', 0)"


@dataclass(frozen=True)
class Settings:
    """How long the migration may wait, tunable per run with alembic's ``-x key=value``."""

    # A waiting DDL statement blocks every query queued behind it, so a
    # migration never waits long for a lock: it gives up quickly and retries.
    lock_timeout_ms: int = 500
    lock_attempts: int = 12
    # Default per statement; a step that legitimately runs longer raises its own.
    statement_timeout_ms: int = 60_000
    # How long a second runner waits for the first before giving up.
    advisory_lock_wait_s: float = 30.0
    # How often a long index build reports its progress.
    progress_interval_s: float = 5.0
    # The operator's word that a database nothing else identifies is this
    # environment's (a local or self-hosted server): the marker is written.
    mark_as: str | None = None

    X_ARGUMENTS = {
        "lock_timeout": ("lock_timeout_ms", "a duration such as 500ms or 2s"),
        "lock_attempts": ("lock_attempts", "a whole number of at least 1"),
        "statement_timeout": ("statement_timeout_ms", "a duration such as 60s"),
        "advisory_lock_wait": ("advisory_lock_wait_s", "a duration such as 30s"),
        "progress_interval": ("progress_interval_s", "a duration such as 5s"),
        "mark_as": ("mark_as", "the name of the chosen environment"),
    }

    @classmethod
    def from_x_arguments(cls, arguments: dict[str, str]) -> "Settings":
        values = {}
        for key, raw in arguments.items():
            if key not in cls.X_ARGUMENTS:
                known = ", ".join(sorted(cls.X_ARGUMENTS))
                raise ConfigurationError(f"unknown -x {key}: the known settings are {known}")
            field, expected = cls.X_ARGUMENTS[key]
            try:
                values[field] = _parse_setting(field, raw)
            except ValueError:
                raise ConfigurationError(f"-x {key}={raw}: expected {expected}") from None
        return cls(**values)


def _parse_setting(field: str, raw: str):
    if field == "mark_as":
        if not re.fullmatch(r"[A-Za-z0-9_-]+", raw):
            raise ValueError(raw)
        return raw
    if field == "lock_attempts":
        value = int(raw)
        if value < 1:
            raise ValueError(raw)
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min)?\s*", raw)
    if not match:
        raise ValueError(raw)
    number, unit = float(match.group(1)), match.group(2) or ("ms" if field.endswith("_ms") else "s")
    seconds = number * {"ms": 0.001, "s": 1, "min": 60}[unit]
    return int(seconds * 1000) if field.endswith("_ms") else seconds




# Commands that only read: they write neither the marker nor the bookkeeping schema.
READ_ONLY_COMMANDS = frozenset({"current", "check", "heads", "history", "show", "branches", "revision"})


@contextmanager
def migration_connection(
    env: Environment,
    environments: dict[str, Environment],
    *,
    command: str,
    settings: Settings,
    chat_tables: tuple[str, ...],
    adoption_refusal: Callable[[Connection, str], str | None],
    connectable: Connection | Engine | None = None,
) -> Iterator[Connection]:
    """A guarded, time-limited connection holding the migration lock.

    ``command`` is the alembic command (upgrade, downgrade, stamp, current,
    ...). ``chat_tables`` are the tables whose presence means a live database
    (adopted with stamp, never upgraded from nothing); ``adoption_refusal(conn,
    environment)`` says why such a database may not be stamped (None: it may).
    ``connectable`` (a Connection or Engine that tests hand in through
    ``config.attributes["connection"]``) is used as given; otherwise the
    environment's URL is read and connected to.
    """
    run = _Run(env, environments, command, settings, chat_tables, adoption_refusal)
    if isinstance(connectable, Connection):
        yield from _prepared(run, connectable.engine.url, connectable)
        return
    if isinstance(connectable, Engine):
        engine, url = connectable, connectable.url
    else:
        url = parse_url(env.database_url(), source=env.url_env)
        # Refuse a URL that names the other environment before connecting at all.
        identity.check_url(env, environments, url)
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        try:
            conn = engine.connect()
        except OperationalError as exc:
            raise MigrationRefused(
                f"cannot connect to {env.name}'s database {mask_url(url.render_as_string(False))}: "
                f"{first_line(exc)}"
            ) from None
        with conn:
            yield from _prepared(run, url, conn)
    finally:
        if engine is not connectable:
            engine.dispose()


@dataclass(frozen=True)
class _Run:
    env: Environment
    environments: dict[str, Environment]
    command: str
    settings: Settings
    chat_tables: tuple[str, ...]
    adoption_refusal: Callable[[Connection, str], str | None]


def _prepared(run: _Run, url, conn: Connection) -> Iterator[Connection]:
    # Ctrl-C from the first statement on: noted, the statement cancelled, raised at the next boundary.
    with interrupts.cancelling(conn):
        yield from _guarded(run, url, conn)


def _guarded(run: _Run, url, conn: Connection) -> Iterator[Connection]:
    env, settings = run.env, run.settings
    mutating = run.command not in READ_ONLY_COMMANDS
    try:
        needs_marker = identity.verify(env, run.environments, url, conn, mark_as=settings.mark_as)
        conn.execute(text(f"SET application_name = 'alembic:{env.name}'"))
        conn.execute(text(f"SET lock_timeout = {settings.lock_timeout_ms}"))
        conn.execute(text(f"SET statement_timeout = {settings.statement_timeout_ms}"))
        conn.commit()
        _take_advisory_lock(conn, env, settings)
        if mutating:
            if run.command in ("upgrade", "downgrade"):
                _refuse_unadopted(conn, run)
            elif run.command == "stamp":
                _refuse_adopting_what_differs(conn, run)
            conn.execute(text(BOOKKEEPING_SQL))
            if needs_marker:
                conn.execute(text(identity.mark_sql(env)))
            conn.commit()
    except BaseException:
        _release(conn)
        raise
    try:
        yield conn
    finally:
        _release(conn)


def _quietly(step) -> None:
    """A clean-up step that must not hide the error that brought us here."""
    try:
        step()
    except Exception:  # the connection may be broken or mid-query; closing it ends the session
        pass


def _release(conn: Connection) -> None:
    # After an interrupt or a terminated backend the connection may be unusable;
    # the session lock goes with the session, so closing is enough then.
    _quietly(conn.rollback)
    try:
        conn.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_SQL_KEY})"))
        conn.commit()
    except Exception:
        _quietly(conn.invalidate)


def _refuse_unadopted(conn: Connection, run: _Run) -> None:
    """A live database holding the chat tables is adopted with stamp, never upgraded from nothing."""
    env = run.env
    if bookkeeping.current_revision(conn) is not None:
        return
    present = _chat_tables(conn, run.chat_tables)
    if present:
        baseline = bookkeeping.base_revision(env.name)
        raise MigrationRefused(
            f"{env.name}'s database holds {', '.join(present)} but was never adopted (no revision in "
            f"{bookkeeping.VERSION_TABLE}): adopt it first: scripts/adopt -n {env.name} compares it with "
            f"its baseline, then alembic -n {env.name} stamp {baseline} (README, \"Adopting a live database\"); "
            "nothing was changed"
        )


def _refuse_adopting_what_differs(conn: Connection, run: _Run) -> None:
    """A stamp says the database holds what a revision promises: refused, before anything is written,
    where it does not (at the baseline: scripts/adopt lists each blocking difference with its fix)."""
    refusal = run.adoption_refusal(conn, run.env.name)
    conn.rollback()
    if refusal:
        raise MigrationRefused(refusal + "; nothing was changed")


def _chat_tables(conn: Connection, chat_tables: tuple[str, ...]) -> list[str]:
    return [
        name for name in chat_tables
        if conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": name}).scalar()
    ]


# conn.info key: (seconds, holder) when this runner waited for another's migration lock.
WAITED_FOR_LOCK = "chat_migrations.waited_for_lock"


def _take_advisory_lock(conn: Connection, env: Environment, settings: Settings) -> None:
    started = time.monotonic()
    deadline = started + settings.advisory_lock_wait_s
    next_report = started
    holder = None
    while True:
        got = conn.execute(text(f"SELECT pg_try_advisory_lock({ADVISORY_LOCK_SQL_KEY})")).scalar()
        conn.commit()
        if got:
            if holder is not None:  # the run's summary says how long it waited, and for whom
                conn.info[WAITED_FOR_LOCK] = (time.monotonic() - started, holder)
            return
        now = time.monotonic()
        holder = advisory_lock_holder(conn) if holder is None or now >= next_report else holder
        if now >= deadline:
            raise MigrationRefused(
                f"another migration is running on {env.name}'s database "
                f"({holder}); waited {settings.advisory_lock_wait_s:g}s, nothing was changed"
            )
        if now >= next_report:
            log.info(
                "waiting for the migration lock on %s's database, held by %s: %.0fs of %gs",
                env.name, holder, now - started, settings.advisory_lock_wait_s,
            )
            next_report = now + 5
        time.sleep(0.5)


# Who holds the migration's advisory lock (session.py and preflight both ask).
ADVISORY_LOCK_HOLDER_SQL = f"""
    SELECT a.pid, coalesce(nullif(a.application_name, ''), '?') AS app,
           date_trunc('second', clock_timestamp() - a.backend_start) AS connected_for
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND ((l.classid::bigint << 32) | l.objid::bigint) = {ADVISORY_LOCK_SQL_KEY}
       AND a.pid <> pg_backend_pid()"""


def advisory_lock_holder(conn: Connection) -> str:
    row = conn.execute(text(ADVISORY_LOCK_HOLDER_SQL)).first()
    conn.commit()
    if row is None:
        return "holder not visible to this role"
    return f"pid {row.pid}, application {row.app}, connected for {row.connected_for}"


def first_line(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's decoration."""
    message = str(exc.orig) if getattr(exc, "orig", None) is not None else str(exc)
    lines = [" ".join(line.split()) for line in message.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
