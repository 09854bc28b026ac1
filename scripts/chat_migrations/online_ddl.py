"""DDL that a busy production table survives, for use inside revisions.

Every helper works online (against a live connection) and offline (``--sql``
renders the same steps as a script):

* a lock-taking statement waits at most the session's lock_timeout and is
  retried a bounded number of times with a growing pause, so application
  queries never queue for long behind it; when the budget is spent the
  migration stops and names the sessions holding the table;
* indexes on existing tables are built and dropped CONCURRENTLY, outside the
  transaction, and an INVALID index left by an interrupted build is rebuilt;
* NOT NULL is added as CHECK ... NOT VALID, VALIDATE, SET NOT NULL (proved
  from the check, no second scan), DROP CHECK; rows that violate it stop the
  upgrade with their count and a few ids, and nothing is changed.
"""

from __future__ import annotations

import time

from alembic import op
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from . import snapshots

LOCK_NOT_AVAILABLE = "55P03"
LOCK_ATTEMPTS = 12
# Pause between attempts grows from 100 ms to 3 s: about 20 s waiting in all.
FIRST_PAUSE_SECONDS = 0.1
MAX_PAUSE_SECONDS = 3.0
# An index build reads the whole table; 0 would mean no limit. Unit: ms (1 h).
INDEX_BUILD_STATEMENT_TIMEOUT_MS = 3_600_000
# VALIDATE CONSTRAINT scans the table under a lock that blocks no reads or writes (1 h).
VALIDATE_STATEMENT_TIMEOUT_MS = 3_600_000


class LockBudgetSpent(Exception):
    """A lock-taking step gave up; nothing of that step was applied."""


def _offline() -> bool:
    return op.get_context().as_sql


def execute(sql: str, *, table: str, in_transaction: bool = True) -> None:
    """Run one lock-taking statement with bounded lock waits.

    In a transaction each attempt runs under a savepoint so a lock timeout
    rolls back only that attempt.
    """
    if _offline():
        op.execute(sql)
        return
    connection = op.get_bind()
    pause = FIRST_PAUSE_SECONDS
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        savepoint = connection.begin_nested() if in_transaction else None
        try:
            connection.exec_driver_sql(sql)
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            if savepoint is not None:
                savepoint.rollback()
            if attempt == LOCK_ATTEMPTS:
                raise LockBudgetSpent(
                    f"gave up after {LOCK_ATTEMPTS} lock attempts on {table}: "
                    f"{lock_holders(connection, table)}; nothing of this step was applied, rerun when it is gone"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)
        else:
            if savepoint is not None:
                savepoint.commit()
            return


def lock_holders(connection, table: str) -> str:
    rows = connection.execute(
        text(
            """
            SELECT DISTINCT a.pid, coalesce(nullif(a.application_name, ''), '?') AS app, a.state,
                   date_trunc('second', now() - coalesce(a.xact_start, a.query_start)) AS open_for
              FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.relation = to_regclass(:table) AND l.granted AND a.pid <> pg_backend_pid()
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


def _statement_timeout(milliseconds: int | None) -> None:
    """Raise the session's statement_timeout for one long step (None: back to the default)."""
    value = "DEFAULT" if milliseconds is None else f"{milliseconds}"
    op.execute(f"SET statement_timeout = {value}")


# --- indexes -----------------------------------------------------------------


def create_index_concurrently(revision: str, index: str, table: str, columns: str) -> None:
    """Build ``index`` without blocking writes; remembers whether it already existed."""
    op.execute(snapshots.record_index_sql(revision, f"public.{index}"))
    with op.get_context().autocommit_block():
        # CONCURRENTLY cannot run inside a transaction block.
        if not _offline() and _index_state(index) == "invalid":
            # IF NOT EXISTS would skip the INVALID leftover of an interrupted build.
            execute(f"DROP INDEX CONCURRENTLY IF EXISTS public.{index}", table=table, in_transaction=False)
        _statement_timeout(INDEX_BUILD_STATEMENT_TIMEOUT_MS)
        execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} USING btree ({columns})",
            table=table,
            in_transaction=False,
        )
        _statement_timeout(None)
        op.execute(_fail_if_invalid_sql(index))


def drop_index_concurrently(revision: str, index: str, table: str) -> None:
    """Drop ``index`` unless it existed before ``revision`` created it."""
    name = f"public.{index}"
    if _offline():
        # A script cannot branch around DROP INDEX CONCURRENTLY (not allowed in
        # a DO block), so the rendered rollback drops it plainly, in one short
        # ACCESS EXCLUSIVE catalog change, and only if the upgrade created it.
        op.execute(
            f"DO $drop$ BEGIN IF NOT coalesce(({snapshots.index_existed_before_sql(revision, name)}), true) "
            f"THEN DROP INDEX IF EXISTS {name}; END IF; END $drop$"
        )
        op.execute(snapshots.forget_sql(revision, "index", name))
        return
    existed = op.get_bind().execute(text(snapshots.index_existed_before_sql(revision, name))).scalar()
    op.execute(snapshots.forget_sql(revision, "index", name))
    if existed is not False:
        # Existed before the upgrade, or no record of it (stamped database): keep it.
        return
    with op.get_context().autocommit_block():
        execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", table=table, in_transaction=False)


def _index_state(index: str) -> str:
    valid = (
        op.get_bind()
        .execute(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": f"public.{index}"},
        )
        .scalar()
    )
    return "missing" if valid is None else ("valid" if valid else "invalid")


def _fail_if_invalid_sql(index: str) -> str:
    return f"""DO $check$
BEGIN
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('public.{index}') AND NOT indisvalid) THEN
        RAISE EXCEPTION 'index public.{index} is INVALID (an interrupted concurrent build): run the upgrade again to rebuild it';
    END IF;
END
$check$"""


# --- NOT NULL ----------------------------------------------------------------


def set_not_null(revision: str, table: str, *columns: str) -> None:
    """Make ``columns`` of ``table`` NOT NULL with only brief ACCESS EXCLUSIVE locks.

    The helper CHECKs are added and validated in their own transactions (the
    validation scan holds only SHARE UPDATE EXCLUSIVE, which blocks no reads or
    writes); SET NOT NULL and the helpers' removal run in the revision's
    transaction. If any column has NULLs, every helper is removed again and the
    upgrade stops naming the rows: nothing is changed. A run interrupted
    half-way leaves at most validated helper checks, which the next run reuses.
    """
    checks = {column: _not_null_check_name(table, column) for column in columns}
    with op.get_context().autocommit_block():
        for column in columns:
            op.execute(snapshots.record_column_sql(revision, table, column))
        for column, check in checks.items():
            execute(_add_check_sql(table, column, check), table=table, in_transaction=False)
        op.execute("SELECT set_config('migration.not_null_violation', '', false)")
        _statement_timeout(VALIDATE_STATEMENT_TIMEOUT_MS)
        for column, check in checks.items():
            op.execute(_validate_sql(table, column, check))
        _statement_timeout(None)
        op.execute(_undo_on_violation_sql(revision, table, checks))
        op.execute(
            "DO $report$ BEGIN IF current_setting('migration.not_null_violation') <> '' THEN "
            "RAISE EXCEPTION 'cannot add NOT NULL:%; fix or delete those rows, then rerun. Nothing was changed', "
            "current_setting('migration.not_null_violation'); END IF; END $report$"
        )
    for column, check in checks.items():
        execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL", table=table)
        execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}", table=table)


def drop_not_null(revision: str, table: str, *columns: str) -> None:
    """Reverse of set_not_null: only columns that were nullable before become so again."""
    for column in columns:
        execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {_not_null_check_name(table, column)}", table=table)
        execute(
            f"DO $drop$ BEGIN IF {snapshots.column_was_nullable_sql(revision, table, column)} THEN "
            f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL; END IF; END $drop$",
            table=table,
        )
        op.execute(snapshots.forget_sql(revision, "column", f"{table}.{column}"))


def _not_null_check_name(table: str, column: str) -> str:
    return f"{table.split('.')[-1]}_{column}_not_null_migration"


def _add_check_sql(table: str, column: str, check: str) -> str:
    return f"""DO $add$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass AND conname = '{check}')
       AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = '{table}'::regclass
                      AND attname = '{column}' AND NOT attnotnull) THEN
        ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID;
    END IF;
END $add$"""


def _validate_sql(table: str, column: str, check: str) -> str:
    """VALIDATE one helper check; a violation is noted (count and first ids), not raised.

    Raising here would also undo the clean-up, so the violations collect in a
    session setting and a later statement removes the helpers and raises.
    """
    return f"""DO $validate$
DECLARE
    offending bigint;
    sample text;
BEGIN
    IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass AND conname = '{check}') THEN
        ALTER TABLE {table} VALIDATE CONSTRAINT {check};
    END IF;
EXCEPTION WHEN check_violation THEN
    SELECT count(*) INTO offending FROM {table} WHERE {column} IS NULL;
    SELECT string_agg(id::text, ', ') INTO sample
      FROM (SELECT id FROM {table} WHERE {column} IS NULL ORDER BY id LIMIT 5) AS first_rows;
    PERFORM set_config('migration.not_null_violation',
        current_setting('migration.not_null_violation')
        || format(' %s rows of {table} have {column} NULL (first ids: %s);', offending, sample), false);
END
$validate$"""


def _undo_on_violation_sql(revision: str, table: str, checks: dict[str, str]) -> str:
    """On a recorded violation: remove the helper checks and this run's records."""
    undo = " ".join(
        f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}; "
        f"{snapshots.forget_sql(revision, 'column', f'{table}.{column}')};"
        for column, check in checks.items()
    )
    return (
        "DO $cleanup$ BEGIN IF current_setting('migration.not_null_violation') <> '' THEN "
        f"{undo} END IF; END $cleanup$"
    )
