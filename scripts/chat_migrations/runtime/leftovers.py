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
  later concurrent step of the same revision stepped out of its transaction;
* a function it created or replaced (``snapshots.replace_function_sql`` and
  friends), committed the same way: put back as its snapshot recorded it;
* a table storage parameter it set (snapshot kind ``reloption``, e.g.
  fillfactor): put back as recorded.

The next upgrade that runs the same revision reuses them (first record wins,
a valid helper check is not validated again, an INVALID index is rebuilt), so
they are kept for it; any other upgrade or downgrade removes them before its
first step, so a rollback leaves no trace. validate and preflight report them
(``find``). All of it runs while the migration's advisory lock is held, so
no revision of another runner is in progress.
"""

from __future__ import annotations

import json
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
    kind: str  # "snapshot", "index", "redefined index", "not null", "check", "added column", "function", "reloption"
    name: str  # snapshot: kind/object; an index: schema.index; not null, added column: table.column; check: table.constraint
    table: str | None = None  # check, not null: the table; redefined index: the definition to put back; reloption: the snapshot (JSON)

    def describe(self) -> str:
        owner = f"revision {self.revision}" if self.revision else "an interrupted revision"
        what = {
            "snapshot": f"rollback snapshot {self.name}",
            "index": f"index {self.name}",
            "redefined index": f"index {self.name}, whose recorded definition is not back",
            "not null": f"NOT NULL on {self.name}",
            "check": f"helper check {self.name}",
            "added column": f"column {self.name}",
            "function": f"function {self.name}, not as its snapshot recorded it",
            "reloption": f"storage parameters of {self.name}, not as its snapshot recorded them",
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
    for row in stale:
        if row.object_kind == "function" and _function_differs(conn, row.object_name, row.snapshot):
            found.append(Leftover(row.revision, "function", row.object_name))
        elif row.object_kind == "reloption" and _reloptions_differ(conn, row.object_name, row.snapshot):
            found.append(Leftover(row.revision, "reloption", row.object_name, json.dumps(row.snapshot)))
    for table, check in checks:
        column = check.removeprefix(table.split(".")[1] + "_").removesuffix(HELPER_CHECK_SUFFIX)
        found.append(Leftover(owners_of_columns.get(f"{table}.{column}"), "check", f"{table}.{check}", table))
    return found


def _function_differs(conn: Connection, signature: str, snapshot: dict) -> bool:
    """Whether the function is not as ``snapshot`` recorded it (created, dropped or redefined since)."""
    current = conn.execute(
        text("SELECT pg_get_functiondef(to_regprocedure(:s)) WHERE to_regprocedure(:s) IS NOT NULL"), {"s": signature}
    ).scalar()
    if not snapshot.get("existed"):
        return current is not None
    return current != snapshot.get("definition")


def _reloption_sql(table: str, option: str) -> str:
    return (f"SELECT option_value FROM pg_options_to_table((SELECT reloptions FROM pg_class "
            f"WHERE oid = to_regclass('{table}'))) WHERE option_name = '{option}'")


def _reloptions_differ(conn: Connection, table: str, snapshot: dict) -> bool:
    """Whether a storage parameter the snapshot recorded (``{"fillfactor": "100" or null}``) has another value now."""
    return any(conn.execute(text(_reloption_sql(table, option))).scalar() != value
               for option, value in snapshot.items())


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
            elif item.kind == "function":
                # Its definition, owner, ACL and comment as recorded (or gone, if it did not exist);
                # the snapshot rows go with the others below.
                with conn.connection.dbapi_connection.cursor() as cursor:  # no parameters: its % are SQL's
                    cursor.execute(snapshots.restore_function_sql(item.revision, item.name, None, forget=False))
            elif item.kind == "reloption":
                # SET/RESET of a storage parameter: SHARE UPDATE EXCLUSIVE, catalog only.
                conn.execute(text(f"SET lock_timeout = {settings.lock_timeout_ms}"))
                recorded = json.loads(item.table)
                changes = ", ".join(f"{option} = {int(value)}" for option, value in recorded.items() if value is not None)
                resets = ", ".join(option for option, value in recorded.items() if value is None)
                for action in filter(None, [f"SET ({changes})" if changes else "", f"RESET ({resets})" if resets else ""]):
                    lock_retries.execute(f"ALTER TABLE {_quoted(item.name)} {action}", table=item.name,
                                         in_transaction=False)
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
