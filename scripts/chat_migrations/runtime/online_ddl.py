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

import enum
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from alembic import op
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from chat_migrations.runtime import leftovers, session, snapshots
from chat_migrations.errors import LockBudgetSpent

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


# --- what a statement declares ------------------------------------------------
#
# Each operation below knows the locks of the statements it composes, and which
# of them PostgreSQL refuses inside a transaction block. It says so in comment
# lines before the statement (in the --sql output too), which scripts/render-sql
# takes as they are instead of deriving them from the SQL:
#
#   -- lock: SHARE UPDATE EXCLUSIVE on table public.chat_messages (build)
#   -- run alone

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"

LOCK_DECLARATION = "-- lock: "
RUN_ALONE_DECLARATION = "-- run alone"


class Hold(enum.Enum):
    """How long a declared lock is held, and what it lets through."""

    BRIEF = "brief"  # a catalog change
    NOT_VALID = "not valid"  # a constraint added without checking the existing rows
    SCAN = "scan"  # while it scans the table; reads and writes go on
    SET_NOT_NULL = "set not null"  # brief when a validated CHECK proves it, else while it scans
    BUILD = "build"  # a concurrent index build; reads and writes go on
    TRANSACTION = "transaction"  # until the transaction ends


@dataclass(frozen=True)
class DeclaredLock:
    mode: str  # ACCESS_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE
    relation: str  # schema.name
    hold: Hold
    index: bool = False  # ``relation`` is an index: the lock is on its table

    def comment(self) -> str:
        kind = "index" if self.index else "table"
        return f"{LOCK_DECLARATION}{self.mode} on {kind} {self.relation} ({self.hold.value})"


@dataclass(frozen=True)
class Declaration:
    locks: tuple[DeclaredLock, ...]
    run_alone: bool


def declare(*locks: DeclaredLock, run_alone: bool = False) -> str:
    """Comment lines before a statement: the locks it takes and whether it must run outside a transaction."""
    lines = [lock.comment() for lock in locks] + ([RUN_ALONE_DECLARATION] if run_alone else [])
    return "".join(line + "\n" for line in lines)


def read_declarations(comments: list[str]) -> tuple[Declaration | None, list[str]]:
    """What ``declare`` wrote among a statement's comment lines (None: nothing), and the other lines."""
    locks, run_alone, others = [], False, []
    for line in comments:
        if line == RUN_ALONE_DECLARATION:
            run_alone = True
        elif line.startswith(LOCK_DECLARATION):
            target, _, hold = line.removeprefix(LOCK_DECLARATION).removesuffix(")").rpartition(" (")
            mode, _, relation = target.partition(" on ")
            kind, _, name = relation.partition(" ")
            locks.append(DeclaredLock(mode, name, Hold(hold), index=kind == "index"))
        else:
            others.append(line)
    if not locks and not run_alone:
        return None, others
    return Declaration(tuple(locks), run_alone), others


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


def _offline() -> bool:
    return op.get_context().as_sql


def _settings() -> "session.Settings":
    """The running command's settings: env.py hands them to context.configure(chat_settings=...)."""
    return op.get_context().opts["chat_settings"]


def execute(sql: str, *, table: str, in_transaction: bool = True) -> None:
    """Run one lock-taking statement, waiting at most lock_timeout for its lock.

    In the revision's transaction a timed-out attempt raises LockNotGranted,
    and run_with_lock_retries starts the revision over. Outside a transaction
    (autocommit steps hold nothing else) the statement itself is retried.
    """
    if _offline():
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
    settings = _settings()
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


def lock_tables(*tables: str) -> None:
    """Take ACCESS EXCLUSIVE on every table the revision's transaction will alter, first, in one statement.

    A revision that alters several tables one after another holds the first
    while it waits for the next, and application transactions that hold the
    next while they read the first make a cycle on every attempt. Taken
    together, in the application's order, before anything else, the locks
    are either all granted or none held while waiting.
    """
    rank = {name: position for position, name in enumerate(APPLICATION_LOCK_ORDER)}
    ordered = sorted(tables, key=lambda name: rank.get(name, len(rank)))
    locks = [DeclaredLock(ACCESS_EXCLUSIVE, name, Hold.TRANSACTION) for name in ordered]
    execute(declare(*locks) + f"LOCK TABLE {', '.join(ordered)} IN ACCESS EXCLUSIVE MODE", table=", ".join(ordered))


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


def _set_timeouts(*, statement_ms: int | None, lock_ms: int | None = None) -> None:
    """Raise the session's timeouts for one long step; None puts the run's setting back."""
    settings = _settings()
    statement = settings.statement_timeout_ms if statement_ms is None else statement_ms
    lock = settings.lock_timeout_ms if lock_ms is None else lock_ms
    op.execute(f"SET statement_timeout = {statement}")
    op.execute(f"SET lock_timeout = {lock}")


# --- indexes -----------------------------------------------------------------


def index_definition(index: str, table: str, columns: str, where: str | None = None) -> str:
    """The definition as pg_get_indexdef prints it, which is how an existing index is compared."""
    return f"CREATE INDEX {index} ON {table} USING btree ({columns})" + (f" WHERE ({where})" if where else "")


def create_index_concurrently(revision: str, index: str, table: str, columns: str) -> None:
    """Make ``index`` exist with this definition, without blocking writes; remembers what was there.

    Missing: built concurrently. INVALID (an interrupted build): dropped and
    built again (IF NOT EXISTS alone would skip it). Present with another
    definition (a partial index, other keys): that is drift, converged by a
    concurrent rebuild under a temporary name, a concurrent drop of the old
    one and a rename; the downgrade rebuilds the recorded definition the same
    way. Present with this definition: nothing to do.
    """
    name = f"public.{index}"
    expected = index_definition(index, table, columns)
    if _offline():
        # Before anything of the revision commits (stepping out of the transaction does).
        op.execute(_refuse_other_definition_sql(name, expected))
    op.execute(snapshots.record_index_sql(revision, name))
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        if _offline():
            # A script cannot branch around DROP INDEX CONCURRENTLY, so its
            # repair drops the INVALID leftover plainly: ACCESS EXCLUSIVE for a
            # catalog change, under the run's short lock_timeout.
            op.execute(
                declare(DeclaredLock(ACCESS_EXCLUSIVE, name, Hold.BRIEF, index=True))
                + f"DO $repair$ BEGIN IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('{name}') "
                f"AND NOT indisvalid) THEN DROP INDEX {name}; END IF; END $repair$"
            )
            _set_timeouts(statement_ms=INDEX_BUILD_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
            op.execute(
                declare(DeclaredLock(SHARE_UPDATE_EXCLUSIVE, table, Hold.BUILD), run_alone=True)
                + f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} USING btree ({columns})"
            )
            _set_timeouts(statement_ms=None)
        else:
            converge_index(index, expected)
        op.execute(_fail_if_invalid_sql(name))


def converge_index(index: str, definition: str) -> None:
    """Online, in an autocommit block: make ``public.index`` valid with ``definition`` (pg_get_indexdef's form)."""
    name, temporary = f"public.{index}", index + leftovers.REBUILD_SUFFIX
    state, current = _index_state(name)
    if state == "valid" and current == definition:
        log.info("%s already exists with this definition: nothing to build", name)
        return
    _set_timeouts(statement_ms=INDEX_BUILD_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
    if state == "invalid":
        log.info("%s is INVALID (an interrupted build): dropping it to build it again", name)
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        state = "missing"
    if state == "missing" and _index_state(f"public.{temporary}") != ("valid", _renamed(definition, index, temporary)):
        with _index_build_progress(index):
            op.execute(definition.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1))
    else:
        # Drift: same name, other definition. Build the wanted one beside it, then swap.
        if state == "valid":
            log.info("%s is %s; rebuilding it as %s", name, current, definition)
            if _index_state(f"public.{temporary}")[0] == "invalid":
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS public.{temporary}")
            with _index_build_progress(index):
                op.execute(
                    _renamed(definition, index, temporary).replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1)
                )
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        # Renaming an index takes SHARE UPDATE EXCLUSIVE (PostgreSQL 12+): it blocks no query.
        execute(f"ALTER INDEX public.{temporary} RENAME TO {index}", table=name, in_transaction=False)
    _set_timeouts(statement_ms=None)


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
    if _offline():
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
                _set_timeouts(statement_ms=INDEX_BUILD_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                _set_timeouts(statement_ms=None)
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
    if _offline():
        yield
        return
    connection = op.get_bind()
    pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    stop = threading.Event()
    interval = _settings().progress_interval_s
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


# --- NOT NULL ----------------------------------------------------------------


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
        _set_timeouts(statement_ms=VALIDATE_STATEMENT_TIMEOUT_MS, lock_ms=NON_BLOCKING_LOCK_TIMEOUT_MS)
        for (table, column), check in checks.items():
            op.execute(_validate_sql(table, column, check))
        _set_timeouts(statement_ms=None)
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
        execute(
            declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.BRIEF))
            + lint_exception("only the migration's own helper check, now replaced by NOT NULL", "ban-drop-constraint")
            + f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}",
            table=table,
        )
    if not _offline():
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
        execute(
            declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.BRIEF))
            + lint_exception("a leftover helper check of an interrupted upgrade, if any", "ban-drop-constraint")
            + f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {_not_null_check_name(table, column)}",
            table=table,
        )
        execute(
            declare(DeclaredLock(ACCESS_EXCLUSIVE, table, Hold.BRIEF))
            + f"DO $drop$ BEGIN IF {snapshots.column_was_nullable_sql(revision, table, column)} THEN "
            f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL; END IF; END $drop$",
            table=table,
        )
        op.execute(snapshots.forget_sql(revision, "column", f"{table}.{column}"))


def lint_exception(reason: str, *rules: str) -> str:
    """Comment lines telling squawk (tests/test_lint.py) why the next statement is safe."""
    return f"-- {reason}\n-- squawk-ignore {','.join(rules)}\n"


def _not_null_check_name(table: str, column: str) -> str:
    return f"{table.split('.')[-1]}_{column}_not_null_migration"


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
