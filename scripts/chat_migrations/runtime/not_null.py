"""NOT NULL on a busy table with only brief ACCESS EXCLUSIVE locks.

Added as CHECK ... NOT VALID (brief), VALIDATE (a scan under SHARE UPDATE
EXCLUSIVE, which blocks no reads or writes), SET NOT NULL (proved from the
validated check, no second scan), DROP CHECK. Rows that violate it stop the
upgrade with their count and a few ids, and nothing is changed. A column
whose foreign key sets it NULL on delete stays nullable, and says so.
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy import text

from chat_migrations.runtime import snapshots
from chat_migrations.runtime.lock_declarations import (
    ACCESS_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    DeclaredLock,
    Hold,
    declare,
)
from chat_migrations.runtime.lock_retries import (
    NON_BLOCKING_LOCK_TIMEOUT_MS,
    VALIDATE_STATEMENT_TIMEOUT_MS,
    execute,
    offline,
    set_timeouts,
)

log = logging.getLogger("chat_migrations")

# The helper check a column gets until it is NOT NULL: <table>_<column>_not_null_migration.
HELPER_CHECK_SUFFIX = "_not_null_migration"


def set_not_null(revision: str, table: str, *columns: str) -> None:
    """Make ``columns`` of ``table`` NOT NULL with only brief ACCESS EXCLUSIVE locks (see set_not_null_on)."""
    set_not_null_on(revision, {table: columns})


def set_not_null_on(revision: str, columns_by_table: dict[str, tuple[str, ...]]) -> None:
    """Make the columns of several tables NOT NULL, as one step: call it once per revision.

    The helper CHECKs of every table are added and validated first, in their
    own transactions (the validation scan holds only SHARE UPDATE EXCLUSIVE,
    which blocks no reads or writes); then SET NOT NULL and the helpers'
    removal run in the revision's transaction. If any column has NULLs, every
    helper is removed again and the upgrade stops naming the rows before any
    SET NOT NULL: nothing is changed. (Two calls in one revision would commit
    the first's SET NOT NULL when the second steps out of the transaction.) A
    run interrupted half-way leaves at most validated helper checks, which the
    next run reuses.
    """
    prepare_not_null(revision, columns_by_table)
    finish_not_null(columns_by_table)


def _helper_checks(columns_by_table: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], str]:
    return {
        (table, column): _not_null_check_name(table, column)
        for table, columns in columns_by_table.items() for column in columns
    }


def prepare_not_null(revision: str, columns_by_table: dict[str, tuple[str, ...]]) -> None:
    """The first half of set_not_null_on: record, add and validate the helper checks, or refuse.

    Outside the revision's transaction. A revision with another concurrent step
    runs it between this and finish_not_null, so rows that violate stop the
    revision before that step changes anything, and the SET NOT NULL still
    commits with the revision.
    """
    checks = _helper_checks(columns_by_table)
    with op.get_context().autocommit_block():
        for table, column in checks:
            op.execute(snapshots.record_column_sql(revision, table, column))
        for (table, column), check in checks.items():
            execute(_add_check_sql(table, column, check), table=table, in_transaction=False)
        op.execute("SELECT set_config('migration.not_null_violation', '', false)")
        set_timeouts(statement_ms=VALIDATE_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
        for (table, column), check in checks.items():
            op.execute(_validate_sql(table, column, check))
        set_timeouts(statement_ms=None)
        for table in columns_by_table:
            op.execute(_undo_on_violation_sql(
                revision, table, {column: check for (t, column), check in checks.items() if t == table}
            ))
        op.execute(
            "DO $report$ BEGIN IF current_setting('migration.not_null_violation') <> '' THEN "
            "RAISE EXCEPTION 'cannot add NOT NULL:%; fix or delete those rows, then rerun. Nothing was changed', "
            "current_setting('migration.not_null_violation'); END IF; END $report$"
        )


def finish_not_null(columns_by_table: dict[str, tuple[str, ...]]) -> None:
    """The second half of set_not_null_on, in the revision's transaction: SET NOT NULL, proved by the checks."""
    checks = _helper_checks(columns_by_table)
    for (table, column), check in checks.items():
        # Only where the helper check was added and validated: a column left
        # nullable (a foreign key that sets it NULL) is never scanned for it.
        execute(
            declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.SET_NOT_NULL))
            + f"DO $set$ BEGIN IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass "
            f"AND conname = '{check}' AND convalidated) THEN "
            f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL; END IF; END $set$",
            table=table,
        )
        execute(_drop_helper_check_sql(table, check), table=table)
    if not offline():
        for table, column in checks:
            if op.get_bind().execute(text(f"SELECT {set_null_conflict_sql(table, column)}")).scalar():
                log.info(
                    "%s.%s stays nullable: a foreign key sets it NULL when its row is deleted "
                    "(NOT NULL would make that delete fail)", table, column,
                )


def set_null_conflict_sql(table: str, column: str) -> str:
    """SQL boolean: a foreign key on ``column`` sets it NULL on delete, so NOT NULL would break that delete.

    ON DELETE SET NULL (or SET DEFAULT with no default) writes NULL into the
    column when the referenced row goes: deleting a user through auth.users
    would fail with a not-null violation. The careful choice keeps the
    column nullable (and the rows: CASCADE instead would delete other
    people's conversation history), and says so.
    """
    return f"""EXISTS (SELECT FROM pg_constraint f JOIN pg_attribute a
                   ON a.attrelid = f.conrelid AND a.attnum = ANY(f.conkey)
                WHERE f.conrelid = '{table}'::regclass AND f.contype = 'f' AND a.attname = '{column}'
                  AND (f.confdeltype = 'n' OR (f.confdeltype = 'd' AND NOT a.atthasdef)))"""


def drop_not_null(revision: str, table: str, *columns: str) -> None:
    """Reverse of set_not_null: only columns that were nullable before become so again."""
    for column in columns:
        # A leftover helper check of an interrupted upgrade, if any.
        execute(_drop_helper_check_sql(table, _not_null_check_name(table, column)), table=table)
        execute(
            declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.BRIEF))
            + f"DO $drop$ BEGIN IF {snapshots.column_was_nullable_sql(revision, table, column)} "
            f"AND {_is_not_null_sql(table, column)} THEN "
            f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL; END IF; END $drop$",
            table=table,
        )
        op.execute(snapshots.forget_sql(revision, "column", f"{table}.{column}"))


def _drop_helper_check_sql(table: str, check: str) -> str:
    """Drop the helper check where it exists, and request no lock where it does not.

    ALTER TABLE ... DROP CONSTRAINT IF EXISTS takes ACCESS EXCLUSIVE before it
    looks: on a table whose key is already NOT NULL it would queue behind every
    open application transaction for nothing. The catalog is read first, with
    no lock on the table.
    """
    return declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.BRIEF)) + (
        f"DO $drop_check$ BEGIN IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass "
        f"AND conname = '{check}') THEN ALTER TABLE {table} DROP CONSTRAINT {check}; END IF; END $drop_check$"
    )


def _is_not_null_sql(table: str, column: str) -> str:
    """SQL boolean: the column is NOT NULL now (read from the catalog, no lock on the table)."""
    return (
        f"EXISTS (SELECT FROM pg_attribute WHERE attrelid = '{table}'::regclass "
        f"AND attname = '{column}' AND attnotnull)"
    )


def _not_null_check_name(table: str, column: str) -> str:
    return f"{table.split('.')[-1]}_{column}{HELPER_CHECK_SUFFIX}"


def _add_check_sql(table: str, column: str, check: str) -> str:
    return declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.NOT_VALID)) + f"""DO $add$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass AND conname = '{check}')
       AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = '{table}'::regclass
                      AND attname = '{column}' AND NOT attnotnull)
       AND NOT {set_null_conflict_sql(table, column)} THEN
        ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID;
    END IF;
END $add$"""


def _validate_sql(table: str, column: str, check: str) -> str:
    """VALIDATE one helper check; a violation is noted (count and first ids), not raised.

    Raising here would also undo the clean-up, so the violations collect in a
    session setting and a later statement removes the helpers and raises.
    """
    return declare(DeclaredLock(SHARE_UPDATE_EXCLUSIVE, table, Hold.SCAN)) + f"""DO $validate$
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
