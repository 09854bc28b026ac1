"""A nullable column added by a revision, and removed by its downgrade only if the upgrade added it.

ADD COLUMN of a nullable column with no default is a catalog change (no
rewrite, no scan) under a brief ACCESS EXCLUSIVE lock. Before it, the revision
records whether the column was already there (``snapshots.record_added_column_sql``);
one of the same type is kept, and kept by the downgrade; one of another type
stops the revision, nothing changed. An upgrade interrupted after the column
committed (a later concurrent step of the same revision commits it) leaves it
behind with its snapshot: runtime/leftovers removes it before any other
upgrade or downgrade, the rerun of the same revision reuses it.
"""

from __future__ import annotations

from alembic import op

from chat_migrations.runtime import lock_retries, snapshots
from chat_migrations.runtime.lock_declarations import ACCESS_EXCLUSIVE, DeclaredLock, Hold, declare


def add_column_sql(revision: str, table: str, column: str, type_: str, comment: str | None = None) -> str:
    """A DO block adding ``column`` (nullable, no default) where missing; ``type_`` as format_type prints it.

    The catalog is read first, under no lock on the table: a column that is
    there already requests no lock at all.
    """
    described = (
        f"\n        COMMENT ON COLUMN {table}.{column} IS\n            {snapshots.literal(comment)};" if comment else ""
    )
    return f"""DO $column$
DECLARE
    existing text;
BEGIN
    SELECT format_type(atttypid, atttypmod) INTO existing FROM pg_attribute
     WHERE attrelid = '{table}'::regclass AND attname = {snapshots.literal(column)} AND attnum > 0 AND NOT attisdropped;
    IF existing IS NULL THEN
        ALTER TABLE {table} ADD COLUMN {column} {type_};{described}
    ELSIF existing <> {snapshots.literal(type_)} THEN
        RAISE EXCEPTION '{revision}: {table}.{column} exists as %, not {type_}: rename it by hand first; nothing was changed',
            existing;
    END IF;
END
$column$"""


def drop_added_column_sql(revision: str, table: str, column: str) -> str:
    """A DO block dropping ``column`` unless ``revision`` recorded that it existed before."""
    return f"""
DO $column$
BEGIN
    IF NOT {snapshots.added_column_existed_sql(revision, table, column)} THEN
        ALTER TABLE {table} DROP COLUMN IF EXISTS {column};
    END IF;
END
$column$"""


def add_column(revision: str, table: str, column: str, type_: str, comment: str | None = None) -> None:
    """In the revision's transaction: record whether the column exists, then add it where missing."""
    op.execute(snapshots.record_added_column_sql(revision, table, column))
    lock_retries.execute(
        declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.BRIEF)) + add_column_sql(revision, table, column, type_, comment),
        table=table,
    )


def drop_column(revision: str, table: str, column: str) -> None:
    """add_column's downgrade, in the revision's transaction: drop the column if the upgrade added it, forget the record."""
    lock_retries.execute(
        declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.BRIEF)) + drop_added_column_sql(revision, table, column).lstrip("\n"),
        table=table,
    )
    op.execute(snapshots.forget_sql(revision, snapshots.ADDED_COLUMN, f"{table}.{column}"))
