"""Faults a production migration must survive: each leaves nothing half-applied and nothing lost.

The migration runs as a real `alembic` process; the faults come from other
real sessions: a blocker holding a lock, pg_terminate_backend, a second runner.
"""

from __future__ import annotations

import threading
import signal
import time

import pytest

from chat_migrations.checks import validate
from chat_migrations.harness import alembic_cli

from .conftest import assert_same_schema, head_of, project_with_shared_revision

MIGRATION_APP = "alembic:{}"


class Session:
    """Another connection to the database: the application, or a blocker."""

    def __init__(self, db, application_name: str):
        self.conn = db.connect()
        self.conn.autocommit = False
        self.run(f"SET application_name = '{application_name}'")
        self.conn.commit()
        self.pid = self.conn.get_backend_pid()

    def run(self, sql: str, params=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


def wait_for(condition, what: str, timeout: float = 30.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def waiting_migration_pid(db, environment: str, wait_event_type: str = "Lock"):
    return db.scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = %s",
        (MIGRATION_APP.format(environment), wait_event_type),
    )


def failed_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("FAILED:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def reference_head_schema(make_database, environment: str) -> str:
    reference = make_database(environment)
    reference.alembic("-n", environment, "upgrade", "head")
    return reference.schema()


def hold_snapshot_row(db, revision: str, signature: str) -> Session:
    """A blocker owning an uncommitted snapshot row that the migration's own insert will wait on."""
    blocker = Session(db, "blocker")
    blocker.run(
        "INSERT INTO migration_meta.rollback_snapshots (revision, object_kind, object_name, snapshot) "
        "VALUES (%s, 'function', %s, '{}')",
        (revision, signature),
    )
    return blocker


def test_terminated_in_the_middle_of_a_transactional_step_changes_nothing_and_rerun_succeeds(make_database):
    db = make_database("staging")
    db.alembic("-n", "staging", "current")  # creates nothing: read-only
    db.alembic("-n", "staging", "stamp", "000_staging_baseline")  # bookkeeping schema exists
    before = db.schema()
    # 002 replaces mark_messages_as_read, then records get_unread_count: it
    # stops there, mid-transaction, behind the blocker's uncommitted row.
    blocker = hold_snapshot_row(db, "002_function_updates_staging", "public.get_unread_count(uuid, uuid)")
    migration = alembic_cli.start(
        "-n", "staging", "-x", "lock_timeout=60s", "upgrade", "head", urls={"staging": db.url}
    )
    try:
        pid = wait_for(lambda: waiting_migration_pid(db, "staging"), "the migration to wait mid-transaction")
        # The function was already replaced inside the migration's open transaction.
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        output, _ = migration.communicate(timeout=60)
    finally:
        blocker.close()
    assert migration.returncode != 0
    line = failed_line(output)
    assert "connection to the database was lost" in line and "rolled back" in line
    assert db.revision() == "000_staging_baseline"
    assert_same_schema(db.schema(), before, "staging after the terminated upgrade")
    db.alembic("-n", "staging", "upgrade", "head")
    assert_same_schema(db.schema(), reference_head_schema(make_database, "staging"), "staging after the rerun")


def test_terminated_during_a_concurrent_index_build_the_rerun_repairs_the_invalid_index(make_database):
    db = make_database("staging")
    db.alembic("-n", "staging", "upgrade", "002_function_updates_staging")
    # An open writing transaction makes CREATE INDEX CONCURRENTLY wait after it
    # has created the (still INVALID) index: terminated there, it leaves it behind.
    writer = Session(db, "app-writer")
    writer.run("UPDATE public.chat_messages SET updated_at = updated_at WHERE id = (SELECT min(id::text)::uuid FROM public.chat_messages)")
    migration = alembic_cli.start("-n", "staging", "upgrade", "003_index_alignment", urls={"staging": db.url})
    try:
        pid = wait_for(
            lambda: db.scalar(
                "SELECT pid FROM pg_stat_progress_create_index WHERE phase LIKE 'waiting for%%' "
                "AND index_relid = to_regclass('public.idx_chat_messages_reply_to')"
            ),
            "the concurrent build to wait for the writer",
        )
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        output, _ = migration.communicate(timeout=60)
    finally:
        writer.close()
    assert migration.returncode != 0, output
    assert db.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.idx_chat_messages_reply_to'::regclass") is False
    assert db.revision() == "002_function_updates_staging"

    rerun = db.alembic("-n", "staging", "upgrade", "head")
    assert "INVALID (an interrupted build): dropping it to build it again" in rerun.output
    assert db.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.idx_chat_messages_reply_to'::regclass") is True
    assert_same_schema(db.schema(), reference_head_schema(make_database, "staging"), "staging after the repair")


def test_a_long_transaction_holding_a_lock_makes_the_migration_give_up_without_stalling_the_application(make_database):
    db = make_database("prod")
    db.alembic("-n", "prod", "stamp", "000_prod_baseline")
    before = db.schema()
    report = Session(db, "nightly-report")
    report.run("SELECT count(*) FROM public.chat_participants")  # keeps ACCESS SHARE until it ends

    app = Session(db, "app")
    app.conn.autocommit = True
    latencies: list[float] = []
    stop = threading.Event()

    def application_traffic():
        while not stop.is_set():
            started = time.monotonic()
            app.run("SELECT count(*) FROM public.chat_participants")
            latencies.append(time.monotonic() - started)
            time.sleep(0.01)

    traffic = threading.Thread(target=application_traffic)
    traffic.start()
    try:
        result = db.alembic("-n", "prod", "-x", "lock_attempts=4", "upgrade", "head", check=False)
    finally:
        stop.set()
        traffic.join()
        app.close()
        report.close()

    line = failed_line(result.output)
    assert "gave up after 4 lock attempts of 500 ms on public.chat_participants" in line
    assert f"pid {report.pid} (nightly-report, idle in transaction, transaction open for" in line
    assert db.revision() == "000_prod_baseline"
    assert_same_schema(db.schema(), before, "prod after the migration gave up")
    # Queued behind the waiting ALTER, an application query waits at most one
    # lock_timeout (500 ms), never the whole retry budget.
    assert len(latencies) > 10
    assert max(latencies) < 1.5, f"application query stalled for {max(latencies):.2f}s"


def start_upgrade_held_mid_way(db):
    """A staging upgrade that waits inside 002 (behind a blocker's row) until the blocker closes."""
    db.alembic("-n", "staging", "stamp", "000_staging_baseline")
    blocker = hold_snapshot_row(db, "002_function_updates_staging", "public.get_unread_count(uuid, uuid)")
    first = alembic_cli.start("-n", "staging", "-x", "lock_timeout=60s", "upgrade", "head", urls={"staging": db.url})
    pid = wait_for(lambda: waiting_migration_pid(db, "staging"), "the first upgrade to be mid-way")
    return first, pid, blocker


def test_two_upgrades_at_once_never_interleave_the_second_waits_then_finds_nothing_to_do(make_database):
    db = make_database("staging")
    first, _, blocker = start_upgrade_held_mid_way(db)
    try:
        second = alembic_cli.start("-n", "staging", "upgrade", "head", urls={"staging": db.url})
        wait_for(
            lambda: db.scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = 'alembic:staging'"
            )
            or db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'alembic:staging'"
            ) >= 2,
            "the second upgrade to start",
        )
        assert db.revision() == "000_staging_baseline"
    finally:
        blocker.close()  # the first upgrade goes on
    first_output, _ = first.communicate(timeout=120)
    second_output, _ = second.communicate(timeout=120)
    assert first.returncode == 0, first_output
    assert second.returncode == 0, second_output
    assert "Running upgrade" in first_output and "Running upgrade" not in second_output
    # The second says it had nothing to do, how long it waited and for whom.
    assert f"nothing to do: staging is at {head_of('staging')}, already at head (after waiting " in second_output
    assert "s for the migration lock, held by pid " in second_output and "application alembic:staging" in second_output
    assert db.scalar("SELECT count(*) FROM migration_meta.alembic_version") == 1
    assert db.revision() == head_of("staging")
    assert_same_schema(db.schema(), reference_head_schema(make_database, "staging"), "staging after two upgrades")


def test_a_second_upgrade_that_cannot_wait_stops_naming_the_first(make_database):
    db = make_database("staging")
    first, first_pid, blocker = start_upgrade_held_mid_way(db)
    try:
        second = db.alembic("-n", "staging", "-x", "advisory_lock_wait=1s", "upgrade", "head", check=False)
    finally:
        blocker.close()
    first_output, _ = first.communicate(timeout=120)
    line = failed_line(second.output)
    assert f"another migration is running on staging's database (pid {first_pid}, application alembic:staging" in line
    assert "waited 1s, nothing was changed" in line
    # While it waited it said so, naming whom it waited for.
    assert f"waiting for the migration lock on staging's database, held by pid {first_pid}" in second.output
    assert first.returncode == 0, first_output
    assert db.revision() == head_of("staging")


def test_ctrl_c_during_an_upgrade_is_one_line_saying_what_was_rolled_back(make_database):
    db = make_database("staging")
    before = db.schema()
    migration, _, blocker = start_upgrade_held_mid_way(db)
    try:
        # What Ctrl-C sends, while the statement waits (up to its 60 s lock_timeout):
        # the wait is cancelled at once, not when it ends.
        started = time.monotonic()
        migration.send_signal(signal.SIGINT)
        output, _ = migration.communicate(timeout=30)
        assert time.monotonic() - started < 10, output
    finally:
        blocker.close()
    assert migration.returncode == 255, output
    line = failed_line(output)
    assert "interrupted during upgrade 002_function_updates_staging" in line and "rolled back" in line, line
    # Where it stands, as the database reads back, and that nothing is left to clean.
    assert "staging is at 000_staging_baseline, as before the run; nothing is left to clean" in line, line
    assert "KeyboardInterrupt" not in output and "PendingRollbackError" not in output and "ERROR [" not in output
    assert db.revision() == "000_staging_baseline"
    assert_same_schema(db.schema(), before, "staging after Ctrl-C")


def test_a_lock_retry_says_whom_it_waits_for_and_giving_up_leaves_nothing(make_database, capsys):
    db = make_database("prod")
    holder = Session(db, "nightly-report")
    holder.run("LOCK TABLE public.chat_participants IN ACCESS SHARE MODE")
    try:
        result = db.alembic("-n", "prod", "-x", "lock_timeout=100ms", "-x", "lock_attempts=2", "upgrade", "001_schema_alignment",
                            check=False)
    finally:
        holder.close()
    assert result.returncode == 255
    assert "not granted within 100 ms (blocked by pid" in result.output and "nightly-report" in result.output
    assert "trying again in" in result.output or "starting the revision over in" in result.output
    # It gave up: one line, where the database reads back, and what 001 had recorded already removed,
    # so validate passes at once (its snapshot rows were once left behind).
    line = failed_line(result.output)
    assert "gave up after 2 lock attempts" in line and "prod is at 000_prod_baseline, as before the run" in line, line
    assert "nothing is left to clean" in line or "removed what it left" in line, line
    capsys.readouterr()
    assert validate.main(["-n", "prod", "--at-current-revision"], urls={"prod": db.url}) == 0, capsys.readouterr()
    assert db.scalar("SELECT count(*) FROM migration_meta.rollback_snapshots") == 0


@pytest.mark.parametrize(
    "column, revision, refused_revision",
    [
        ("public.chat_participants.user_id", "000_prod_baseline", "001_schema_alignment"),
        ("public.chat_messages.sender_id", "001_schema_alignment", "005_prod_message_keys_not_null"),
    ],
)
def test_rows_violating_a_not_null_about_to_be_added_stop_the_upgrade_with_their_ids(
    make_database, column, revision, refused_revision
):
    db = make_database("prod")
    db.alembic("-n", "prod", "upgrade", revision)
    schema, table, name = column.split(".")
    offenders = [row[0] for row in db.query(f"SELECT id FROM {schema}.{table} ORDER BY id LIMIT 2")]
    db.execute(f"UPDATE {schema}.{table} SET {name} = NULL WHERE id = ANY(%s::uuid[])", ([str(i) for i in offenders],))
    before = db.schema()
    result = db.alembic("-n", "prod", "upgrade", "head", check=False)
    line = failed_line(result.output)
    assert f"2 rows of {schema}.{table} have {name} NULL (first ids: {offenders[0]}, {offenders[1]})" in line
    assert "Nothing was changed" in line
    assert db.revision() == revision
    assert_same_schema(db.schema(), before, "prod after the refused upgrade")
    assert db.scalar("SELECT count(*) FROM migration_meta.rollback_snapshots WHERE revision = %s", (refused_revision,)) == 0
    # Fixed data, and the same command goes through.
    db.execute(f"DELETE FROM {schema}.{table} WHERE id = ANY(%s::uuid[])", ([str(i) for i in offenders],))
    db.alembic("-n", "prod", "upgrade", "head")
    assert db.revision() == head_of("prod")


TWO_TABLE_REVISION = '''
"""Takes ACCESS EXCLUSIVE on two tables in one transaction, participants first (test only)."""

from chat_migrations.runtime import lock_retries

revision = "101_test_two_tables"
down_revision = "100_converged"
branch_labels = None
depends_on = None


def upgrade() -> None:
    LOCK_FIRST
    # Written with format('%I'), which the online path must pass through intact.
    lock_retries.execute("DO $d$ BEGIN EXECUTE format('ALTER TABLE %I.%I ALTER COLUMN last_read_at SET DEFAULT now()', "
                       "'public', 'chat_participants'); END $d$", table="public.chat_participants")
    lock_retries.execute("ALTER TABLE public.chat_messages ALTER COLUMN message_text SET DEFAULT ''",
                       table="public.chat_messages")


def downgrade() -> None:
    lock_retries.execute("ALTER TABLE public.chat_messages ALTER COLUMN message_text DROP DEFAULT",
                       table="public.chat_messages")
    lock_retries.execute("ALTER TABLE public.chat_participants ALTER COLUMN last_read_at DROP DEFAULT",
                       table="public.chat_participants")
'''


@pytest.mark.parametrize("locks_first", [False, True], ids=["table-by-table", "lock_tables"])
def test_a_lock_cycle_with_the_application_is_broken(tmp_path, make_database, locks_first):
    # The application holds chat_messages and then reads chat_participants (as
    # an RLS check does) while the migration holds chat_participants and wants
    # chat_messages. Retrying only the second statement would wait on the
    # application forever; starting the revision over releases chat_participants.
    # With lock_tables the migration waits for chat_messages first, holding
    # nothing, so there is no cycle at all.
    lock_first = 'lock_retries.lock_tables("public.chat_participants", "public.chat_messages")' if locks_first else ""
    ini = project_with_shared_revision(
        tmp_path, "101_test_two_tables", TWO_TABLE_REVISION.replace("LOCK_FIRST", lock_first), only_this_one=True
    )
    db = make_database("staging")
    db.alembic("-n", "staging", "upgrade", "100_converged")

    app = Session(db, "app-sender")
    app.run("LOCK TABLE public.chat_messages IN ROW EXCLUSIVE MODE")  # as an INSERT holds it
    migration = alembic_cli.start("-c", ini, "-n", "staging", "upgrade", "head", urls={"staging": db.url})
    app_error = None
    try:
        wait_for(
            lambda: db.scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = "
                "'alembic:staging' AND NOT l.granted AND l.relation = 'public.chat_messages'::regclass"
            ),
            "the migration to wait for chat_messages",
        )
        # Now the application needs chat_participants: a cycle.
        app.run("SELECT count(*) FROM public.chat_participants")
        app.conn.commit()
    except Exception as problem:  # the application must not be the victim
        app_error = problem
    finally:
        app.close()
    output, _ = migration.communicate(timeout=120)
    assert app_error is None, app_error
    assert migration.returncode == 0, output
    if locks_first:
        assert "starting the revision over" not in output
    else:
        assert "lock on public.chat_messages not granted" in output and "starting the revision over" in output
    assert db.revision() == "101_test_two_tables"
