"""The migration connection: who it is, how long it may wait, and that it runs alone.

env.py hands every online command to ``migration_connection``; it connects,
checks the database's identity before anything else, sets the session's
timeouts, takes the advisory lock that keeps two runners from interleaving, and
creates the bookkeeping schema when the command is going to write.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from . import identity
from .environments import ConfigurationError, Environment, mask_url, parse_url

BOOKKEEPING_SCHEMA = "migration_meta"

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

    X_ARGUMENTS = {
        "lock_timeout": ("lock_timeout_ms", "a duration such as 500ms or 2s"),
        "lock_attempts": ("lock_attempts", "a whole number of at least 1"),
        "statement_timeout": ("statement_timeout_ms", "a duration such as 60s"),
        "advisory_lock_wait": ("advisory_lock_wait_s", "a duration such as 30s"),
        "progress_interval": ("progress_interval_s", "a duration such as 5s"),
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


# Set by env.py for the running command; the revisions' helpers read it.
settings = Settings()


BOOKKEEPING_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {BOOKKEEPING_SCHEMA};
COMMENT ON SCHEMA {BOOKKEEPING_SCHEMA} IS
    'Alembic bookkeeping for the chat migrations: alembic_version and the state each revision recorded so its downgrade can restore it';
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.rollback_snapshots (
    revision text NOT NULL,
    object_kind text NOT NULL,
    object_name text NOT NULL,
    snapshot jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (revision, object_kind, object_name)
)"""


class MigrationRefused(Exception):
    """The run stopped before changing anything (one line, safe to print)."""


@contextmanager
def migration_connection(
    env: Environment,
    environments: dict[str, Environment],
    *,
    mutating: bool,
    connectable: Connection | Engine | None = None,
) -> Iterator[Connection]:
    """A guarded, time-limited connection holding the migration lock.

    ``connectable`` (a Connection or Engine that tests hand in through
    ``config.attributes["connection"]``) is used as given; otherwise the
    environment's URL is read and connected to.
    """
    if isinstance(connectable, Connection):
        yield from _prepared(env, environments, connectable.engine.url, connectable, mutating)
        return
    if isinstance(connectable, Engine):
        engine, url = connectable, connectable.url
    else:
        url = parse_url(env.database_url())
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
            yield from _prepared(env, environments, url, conn, mutating)
    finally:
        if engine is not connectable:
            engine.dispose()


def _prepared(env, environments, url, conn: Connection, mutating: bool) -> Iterator[Connection]:
    try:
        needs_marker = identity.verify(env, environments, url, conn)
        conn.execute(text(f"SET application_name = 'alembic:{env.name}'"))
        conn.execute(text(f"SET lock_timeout = {settings.lock_timeout_ms}"))
        conn.execute(text(f"SET statement_timeout = {settings.statement_timeout_ms}"))
        conn.commit()
        _take_advisory_lock(conn, env)
        if mutating:
            if needs_marker:
                conn.execute(text(identity.mark_database_sql(env.name)))
            conn.execute(text(BOOKKEEPING_SQL))
            conn.commit()
    except identity.WrongDatabase:
        conn.rollback()
        raise
    try:
        yield conn
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_SQL_KEY})"))
        conn.commit()


def _take_advisory_lock(conn: Connection, env: Environment) -> None:
    deadline = time.monotonic() + settings.advisory_lock_wait_s
    while True:
        got = conn.execute(text(f"SELECT pg_try_advisory_lock({ADVISORY_LOCK_SQL_KEY})")).scalar()
        conn.commit()
        if got:
            return
        if time.monotonic() >= deadline:
            raise MigrationRefused(
                f"another migration is running on {env.name}'s database "
                f"({_advisory_lock_holder(conn)}); waited {settings.advisory_lock_wait_s:g}s, nothing was changed"
            )
        time.sleep(0.5)


def _advisory_lock_holder(conn: Connection) -> str:
    row = conn.execute(
        text(
            f"""
            SELECT a.pid, a.application_name, date_trunc('second', clock_timestamp() - a.backend_start)
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND ((l.classid::bigint << 32) | l.objid::bigint) = {ADVISORY_LOCK_SQL_KEY}
            """
        )
    ).first()
    conn.commit()
    if row is None:
        return "holder not visible to this role"
    return f"pid {row[0]}, application {row[1] or '?'}, connected for {row[2]}"


def first_line(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's decoration."""
    message = str(exc.orig) if getattr(exc, "orig", None) is not None else str(exc)
    lines = [" ".join(line.split()) for line in message.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
