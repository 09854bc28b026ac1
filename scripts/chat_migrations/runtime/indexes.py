"""Indexes on existing tables, built and dropped CONCURRENTLY, and converged to one definition.

A build or drop runs outside the revision's transaction (PostgreSQL refuses
CONCURRENTLY inside one) and holds SHARE UPDATE EXCLUSIVE, which no
application query conflicts with: it waits for its lock up to an hour
(``lock_retries.NON_BLOCKING_LOCK_TIMEOUT_MS``) and blocks nothing meanwhile.
An INVALID index left by an interrupted build is dropped and built again; an
index of the same name with another definition is rebuilt beside it and
swapped in. What was there before is recorded, so the downgrade puts it back.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from alembic import op
from sqlalchemy import text

from chat_migrations.runtime import promises, snapshots
from chat_migrations.runtime.lock_declarations import ACCESS_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, DeclaredLock, Hold, declare
from chat_migrations.runtime.lock_retries import (
    INDEX_BUILD_STATEMENT_TIMEOUT_MS,
    NON_BLOCKING_LOCK_TIMEOUT_MS,
    execute,
    offline,
    run_settings,
    set_timeouts,
)

log = logging.getLogger("chat_migrations")

# The temporary name of an index being rebuilt with another definition.
REBUILD_SUFFIX = "_migration_new"


# One spelling for what a revision builds and what it promises (chat_migrations.runtime.promises).
index_definition = promises.index_definition


def create_index_concurrently(revision: str, index: str, table: str, columns: str, where: str | None = None) -> None:
    """Make ``index`` exist with this definition, without blocking writes; remembers what was there.

    Missing: built concurrently. INVALID (an interrupted build): dropped and
    built again (IF NOT EXISTS alone would skip it). Present with another
    definition (a partial index, other keys): that is drift, converged by a
    concurrent rebuild under a temporary name, a concurrent drop of the old
    one and a rename; the downgrade rebuilds the recorded definition the same
    way. Present with this definition: nothing to do.

    ``where``: a partial index's predicate, written as pg_get_indexdef prints
    it without its outer parentheses (``deleted_at IS NULL``), since that is
    what an existing index is compared with; a build whose definition reads
    back otherwise stops the revision and says how PostgreSQL prints it.
    """
    name = f"public.{index}"
    expected = index_definition(index, table, columns, where)
    if offline():
        # Before anything of the revision commits (stepping out of the transaction does).
        op.execute(_refuse_other_definition_sql(name, expected))
    op.execute(snapshots.record_index_sql(revision, name))
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        if offline():
            # A script cannot branch around DROP INDEX CONCURRENTLY, so its
            # repair drops the INVALID leftover plainly: ACCESS EXCLUSIVE for a
            # catalog change, under the run's short lock_timeout.
            op.execute(
                declare(DeclaredLock(ACCESS_EXCLUSIVE, name, Hold.BRIEF, index=True))
                + f"DO $repair$ BEGIN IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('{name}') "
                f"AND NOT indisvalid) THEN DROP INDEX {name}; END IF; END $repair$"
            )
            set_timeouts(statement_ms=INDEX_BUILD_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
            op.execute(
                declare(DeclaredLock(SHARE_UPDATE_EXCLUSIVE, table, Hold.BUILD), run_alone=True)
                + _concurrently(expected)
            )
            set_timeouts(statement_ms=None)
        else:
            converge_index(index, expected)
        op.execute(_fail_if_invalid_sql(name))


def converge_index(index: str, definition: str) -> None:
    """Online, in an autocommit block: make ``public.index`` valid with ``definition`` (pg_get_indexdef's form)."""
    name, temporary = f"public.{index}", index + REBUILD_SUFFIX
    state, current = _index_state(name)
    if state == "valid" and current == definition:
        log.info("%s already exists with this definition: nothing to build", name)
        return
    set_timeouts(statement_ms=INDEX_BUILD_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
    if state == "invalid":
        log.info("%s is INVALID (an interrupted build): dropping it to build it again", name)
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        state = "missing"
    if state == "missing" and _index_state(f"public.{temporary}") != ("valid", _renamed(definition, index, temporary)):
        with _index_build_progress(index):
            op.execute(_concurrently(definition))
    else:
        # Drift: same name, other definition. Build the wanted one beside it, then swap.
        if state == "valid":
            log.info("%s is %s; rebuilding it as %s", name, current, definition)
            if _index_state(f"public.{temporary}")[0] == "invalid":
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS public.{temporary}")
            with _index_build_progress(index):
                op.execute(_concurrently(_renamed(definition, index, temporary)))
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        # Renaming an index takes SHARE UPDATE EXCLUSIVE (PostgreSQL 12+): it blocks no query.
        execute(f"ALTER INDEX public.{temporary} RENAME TO {index}", table=name, in_transaction=False)
    set_timeouts(statement_ms=None)
    built = _index_state(name)[1]
    if built != definition:
        # Else every later run would take it for drift and rebuild it again.
        raise ValueError(
            f"{name} reads back as {built!r}, not {definition!r}: write the revision's columns and "
            "where= as PostgreSQL prints them"
        )


def _concurrently(definition: str) -> str:
    """pg_get_indexdef's CREATE INDEX as a concurrent build that skips an index of that name."""
    return definition.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1)


def _renamed(definition: str, index: str, new_name: str) -> str:
    return definition.replace(f"CREATE INDEX {index} ON", f"CREATE INDEX {new_name} ON", 1)


def _refuse_other_definition_sql(name: str, expected: str) -> str:
    """--sql: a script cannot rebuild an index concurrently on a condition; it stops instead, before building."""
    return f"""DO $definition$
BEGIN
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('{name}') AND indisvalid
               AND pg_get_indexdef(indexrelid) <> {snapshots.literal(expected)}) THEN
        RAISE EXCEPTION 'index {name} exists with another definition (%): the online command converges it '
            'with a concurrent rebuild; run alembic without --sql for this revision. Nothing of it was changed',
            pg_get_indexdef(to_regclass('{name}'));
    END IF;
END
$definition$"""


def drop_index_concurrently(revision: str, index: str, table: str) -> None:
    """Put back what ``revision`` found: drop an index it built, rebuild one it redefined, keep one that was there."""
    name = f"public.{index}"
    if offline():
        # A script cannot branch around DROP INDEX CONCURRENTLY (not allowed in
        # a DO block), so the rendered rollback drops it plainly, in one short
        # ACCESS EXCLUSIVE catalog change, and only if the upgrade created it.
        op.execute(_refuse_redefined_rollback_sql(revision, name))
        op.execute(
            declare(DeclaredLock(ACCESS_EXCLUSIVE, name, Hold.BRIEF, index=True))
            + f"DO $drop$ BEGIN IF NOT coalesce(({snapshots.index_existed_before_sql(revision, name)}), true) "
            f"THEN DROP INDEX IF EXISTS {name}; END IF; END $drop$"
        )
    else:
        recorded = op.get_bind().execute(text(snapshots.index_snapshot_sql(revision, name))).scalar()
        if recorded is not None and not recorded.get("existed"):
            with op.get_context().autocommit_block():
                set_timeouts(statement_ms=INDEX_BUILD_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                set_timeouts(statement_ms=None)
        elif recorded is not None and recorded.get("definition") and _index_state(name)[1] != recorded["definition"]:
            log.info("%s: rebuilding the definition it had before this revision: %s", name, recorded["definition"])
            with op.get_context().autocommit_block():
                converge_index(index, recorded["definition"])
        else:
            # Existed before the upgrade as it is, or no record of it (a stamped database): keep it.
            log.info("keeping %s: it existed before this revision's upgrade (or nothing recorded it)", name)
    # Forgotten only once the drop is done, so an interrupted downgrade reruns.
    op.execute(snapshots.forget_sql(revision, "index", name))


def _refuse_redefined_rollback_sql(revision: str, name: str) -> str:
    return f"""DO $definition$
BEGIN
    IF EXISTS (SELECT FROM {snapshots.SNAPSHOTS} WHERE revision = {snapshots.literal(revision)} AND object_kind = 'index'
               AND object_name = {snapshots.literal(name)} AND (snapshot->>'existed')::boolean
               AND snapshot->>'definition' IS DISTINCT FROM pg_get_indexdef(to_regclass({snapshots.literal(name)}))) THEN
        RAISE EXCEPTION 'index {name} had another definition before revision {revision}: the online downgrade '
            'rebuilds it concurrently; run alembic without --sql for this revision. Nothing of it was changed';
    END IF;
END
$definition$"""


def _index_state(name: str) -> tuple[str, str | None]:
    """("missing" | "invalid" | "valid", its definition)."""
    row = op.get_bind().execute(
        text("SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": name},
    ).first()
    if row is None:
        return "missing", None
    return ("valid" if row[0] else "invalid"), row[1]


def _fail_if_invalid_sql(name: str) -> str:
    return f"""DO $check$
BEGIN
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('{name}') AND NOT indisvalid) THEN
        RAISE EXCEPTION 'index {name} is INVALID (an interrupted concurrent build): run the upgrade again to rebuild it';
    END IF;
END
$check$"""


@contextmanager
def _index_build_progress(index: str):
    """Report pg_stat_progress_create_index of the build every few seconds, from a second connection."""
    if offline():
        yield
        return
    connection = op.get_bind()
    pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    stop = threading.Event()
    interval = run_settings().progress_interval_s
    reporter = threading.Thread(
        target=_report_progress, args=(connection.engine, pid, index, stop, interval), name=f"progress-{index}", daemon=True
    )
    started = time.monotonic()
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join(timeout=10)
    # Only once built: a build cancelled by Ctrl-C leaves an INVALID index, never "built".
    log.info("%s built in %.1fs", index, time.monotonic() - started)


def _report_progress(engine, pid: int, index: str, stop: threading.Event, interval: float) -> None:
    started = time.monotonic()
    try:
        with engine.connect() as watcher:
            while not stop.wait(interval):
                row = watcher.execute(
                    text(
                        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total, lockers_done, lockers_total "
                        "FROM pg_stat_progress_create_index WHERE pid = :pid"
                    ),
                    {"pid": pid},
                ).first()
                watcher.rollback()
                if row is not None:
                    log.info("%s: %s (%.0fs)", index, describe_progress(row), time.monotonic() - started)
    except Exception as problem:  # progress is a courtesy: never fail the build for it
        log.warning("progress of %s unavailable: %s", index, problem)


def describe_progress(row) -> str:
    phase, blocks_done, blocks_total, tuples_done, tuples_total, lockers_done, lockers_total = row
    parts = [phase]
    if blocks_total:
        parts.append(f"blocks {blocks_done}/{blocks_total} ({100 * blocks_done / blocks_total:.0f}%)")
    if tuples_total:
        parts.append(f"tuples {tuples_done}/{tuples_total} ({100 * tuples_done / tuples_total:.0f}%)")
    if lockers_total:
        parts.append(f"waiting for transactions {lockers_done}/{lockers_total}")
    return ", ".join(parts)
