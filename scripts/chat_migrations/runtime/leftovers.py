"""What an interrupted revision leaves behind, found and removed.

A revision runs in one transaction, except the steps that cannot: concurrent
index builds and the add-and-validate half of NOT NULL commit on their own,
and so do the snapshot rows recorded before them. An upgrade interrupted
there (Ctrl-C, a terminated backend, a lost connection) is not recorded in
alembic_version, but leaves:

* the snapshot rows of a revision that is not applied;
* an index that revision was building (valid or INVALID) where none existed
  before, or the ``*_migration_new`` index of a definition being converged;
* validated helper checks ``<table>_<column>_not_null_migration``;
* a column the revision added (``columns.add_column``), committed when a
  later concurrent step of the same revision stepped out of its transaction.

The next upgrade that runs the same revision reuses them (first record wins,
a valid helper check is not validated again, an INVALID index is rebuilt), so
they are kept for it; any other upgrade or downgrade removes them before its
first step, so a rollback leaves no trace. validate and preflight report them
(``find``). All of it runs while the migration's advisory lock is held, so
no revision of another runner is in progress.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from chat_migrations.runtime import bookkeeping, indexes, lock_retries, not_null, snapshots

log = logging.getLogger("chat_migrations")

HELPER_CHECK_SUFFIX = not_null.HELPER_CHECK_SUFFIX
REBUILD_SUFFIX = indexes.REBUILD_SUFFIX

# A concurrent drop waits for every transaction using the table; it blocks none. Unit: ms (1 h).
_DROP_TIMEOUT_MS = 3_600_000


@dataclass(frozen=True)
class Leftover:
    revision: str | None  # None: no snapshot names its revision
    kind: str  # "snapshot", "index", "redefined index", "not null", "check", "added column"
    name: str  # snapshot: kind/object; an index: schema.index; not null, added column: table.column; check: table.constraint
    table: str | None = None  # check, not null: the table; redefined index: the definition to put back

    def describe(self) -> str:
        owner = f"revision {self.revision}" if self.revision else "an interrupted revision"
        what = {
            "snapshot": f"rollback snapshot {self.name}",
            "index": f"index {self.name}",
            "redefined index": f"index {self.name}, whose recorded definition is not back",
            "not null": f"NOT NULL on {self.name}",
            "check": f"helper check {self.name}",
            "added column": f"column {self.name}",
        }[self.kind]
        return f"{what}, left by {owner}, which is not applied"


def find(conn: Connection, applied: set[str], tables: tuple[str, ...] | None = None) -> list[Leftover]:
    """Leftovers of revisions that are not applied (read-only).

    Helper checks are looked for on ``tables`` (schema.table names; env.py
    passes the chat tables, the only ones a revision adds them to); None: on
    any table outside the system schemas.
    """
    found: list[Leftover] = []
    snapshot_rows = []
    if conn.execute(text(f"SELECT to_regclass('{bookkeeping.SNAPSHOTS}') IS NOT NULL")).scalar():
        snapshot_rows = conn.execute(
            text(f"SELECT revision, object_kind, object_name, snapshot FROM {bookkeeping.SNAPSHOTS} ORDER BY 1, 2, 3")
        ).all()
    stale = [row for row in snapshot_rows if row.revision not in applied]
    owners_of_columns = {row.object_name: row.revision for row in stale if row.object_kind == "column"}
    for row in stale:
        found.append(Leftover(row.revision, "snapshot", f"{row.object_kind}/{row.object_name}"))
        if row.object_kind == "index":
            current = conn.execute(
                text("SELECT pg_get_indexdef(to_regclass(:name))"), {"name": row.object_name}
            ).scalar()
            if current is not None and not row.snapshot.get("existed"):
                found.append(Leftover(row.revision, "index", row.object_name))
            elif row.snapshot.get("existed") and current != row.snapshot.get("definition"):
                # A definition being converged: the old one was dropped, or not yet put back.
                found.append(Leftover(row.revision, "redefined index", row.object_name, row.snapshot["definition"]))
            rebuild = row.object_name + REBUILD_SUFFIX
            if conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": rebuild}).scalar():
                found.append(Leftover(row.revision, "index", rebuild))
        elif row.object_kind == "column" and not row.snapshot.get("not_null"):
            table, column = row.object_name.rsplit(".", 1)
            # The revision's transaction committed its SET NOT NULL when a concurrent
            # step of the same revision began, and was interrupted after that.
            if conn.execute(
                text("SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = :c"),
                {"t": table, "c": column},
            ).scalar():
                found.append(Leftover(row.revision, "not null", row.object_name, table))
        elif row.object_kind == snapshots.ADDED_COLUMN and not row.snapshot.get("existed"):
            table, column = row.object_name.rsplit(".", 1)
            if conn.execute(
                text("SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = :c "
                     "AND attnum > 0 AND NOT attisdropped)"),
                {"t": table, "c": column},
            ).scalar():
                found.append(Leftover(row.revision, "added column", row.object_name, table))
    checks = conn.execute(
        text(
            """
            SELECT n.nspname || '.' || c.relname AS table_name, con.conname
              FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE (CAST(:tables AS text[]) IS NULL OR n.nspname || '.' || c.relname = ANY(CAST(:tables AS text[])))
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND con.conname LIKE :pattern
             ORDER BY 1, 2
            """
        ),
        {"tables": None if tables is None else list(tables), "pattern": f"%{HELPER_CHECK_SUFFIX}"},
    ).all()
    for table, check in checks:
        column = check.removeprefix(table.split(".")[1] + "_").removesuffix(HELPER_CHECK_SUFFIX)
        found.append(Leftover(owners_of_columns.get(f"{table}.{column}"), "check", f"{table}.{check}", table))
    return found


def removable(conn: Connection, *, applied: set[str], keep: set[str], tables: tuple[str, ...]) -> list[Leftover]:
    """The leftovers of revisions neither applied nor about to be upgraded (``keep``), which reuse theirs."""
    return [item for item in find(conn, applied, tables) if item.revision not in keep]


def remove(conn: Connection, removable: list[Leftover], *, autocommit_block, settings) -> None:
    """Undo ``removable``; ``autocommit_block`` is the migration context's (concurrent drops run outside a
    transaction), ``settings`` the run's (session.Settings: the lock and statement timeouts to restore)."""
    # Before the first revision no transaction is alembic's: end the one these reads began.
    if conn.in_transaction():
        conn.commit()
    with autocommit_block():
        conn.execute(text(f"SET statement_timeout = {_DROP_TIMEOUT_MS}"))
        for item in removable:
            log.info("removing %s", item.describe())
            if item.kind == "index":
                conn.execute(text(f"SET lock_timeout = {_DROP_TIMEOUT_MS}"))
                conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {_quoted(item.name)}"))
            elif item.kind == "redefined index":
                indexes.converge_index(item.name.split(".", 1)[1], item.table)
            elif item.kind in ("not null", "check", "added column"):
                # Catalog changes under ACCESS EXCLUSIVE: short waits and retries, like every migration lock.
                conn.execute(text(f"SET lock_timeout = {settings.lock_timeout_ms}"))
                table, name = item.name.rsplit(".", 1)
                action = {
                    "not null": f'ALTER COLUMN "{name}" DROP NOT NULL',
                    "check": f'DROP CONSTRAINT IF EXISTS "{name}"',
                    "added column": f'DROP COLUMN IF EXISTS "{name}"',
                }[item.kind]
                lock_retries.execute(f"ALTER TABLE {_quoted(table)} {action}", table=table, in_transaction=False)
        stale_revisions = sorted({item.revision for item in removable if item.kind == "snapshot"})
        if stale_revisions:
            conn.execute(text(f"DELETE FROM {bookkeeping.SNAPSHOTS} WHERE revision = ANY(:r)"), {"r": stale_revisions})
        conn.execute(text(f"SET lock_timeout = {settings.lock_timeout_ms}"))
        conn.execute(text(f"SET statement_timeout = {settings.statement_timeout_ms}"))


def _quoted(qualified_name: str) -> str:
    return ".".join(f'"{part}"' for part in qualified_name.split("."))
