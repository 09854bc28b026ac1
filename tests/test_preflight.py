"""scripts/preflight: what would stop `upgrade head` is reported before anything runs, with its fix."""

from __future__ import annotations

import psycopg2
import pytest

from chat_migrations import catalog, preflight

from .test_validate import assert_same_shape, documented_json, run_check


def preflight_json(capsys, db, *extra: str):
    return run_check(capsys, preflight, "-n", db.environment, "--json", *extra, urls={db.environment: db.url})


def pending_after(environment: str, revision: str) -> list[str]:
    script = catalog.script_directory(environment)
    return [r.revision for r in reversed(list(script.iterate_revisions("head", revision)))]


@pytest.fixture
def session_on():
    """session_on(db, *statements) -> an open connection that ran them and stays in its transaction."""
    connections = []

    def open_session(db, *statements: str):
        conn = psycopg2.connect(db.url)
        connections.append(conn)
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        return conn

    yield open_session
    for conn in connections:
        conn.close()


def test_an_observed_prod_is_ready_and_shows_what_will_run(capsys, make_database):
    db = make_database("prod")
    run = preflight_json(capsys, db)
    assert run.code == 0, run.out
    assert run.json["ready"] is True
    assert [p["revision"] for p in run.json["revision"]["pending"]] == pending_after("prod", "000_prod_baseline")
    assert run.json["revision"]["pending"][0] == {
        "revision": "001_schema_alignment", "affected_tables": ["public.chat_participants", "public.chat_messages"],
    }
    sizes = {t["table"]: t for t in run.check("table_sizes")["data"]["tables"]}
    assert {"public.chat_participants", "public.chat_messages"} <= set(sizes)
    assert sizes["public.chat_messages"]["total_bytes"] > 0
    violations = run.check("not_null_violations")
    assert violations["status"] == "ok" and violations["method"] == "index"
    assert {c["column"] for c in violations["data"]["columns"]} >= {
        "public.chat_participants.chat_id", "public.chat_participants.user_id",
        "public.chat_messages.chat_id", "public.chat_messages.sender_id",
    }
    assert run.check("server_version")["summary"].startswith("PostgreSQL 15")
    assert run.check("identity")["summary"] == "marked migration.environment='prod'"
    human = run_check(capsys, preflight, "-n", "prod", urls={"prod": db.url})
    assert human.out.rstrip().endswith("READY: no blockers (0 warnings)")


def test_nulls_that_a_new_not_null_forbids_are_a_blocker_with_their_ids(capsys, make_database):
    db = make_database("prod")
    row = db.scalar(
        "INSERT INTO public.chat_participants (chat_id, user_id) SELECT NULL, id FROM auth.users LIMIT 1 RETURNING id::text"
    )
    run = preflight_json(capsys, db)
    assert run.code == 1 and run.json["ready"] is False
    violations = run.check("not_null_violations")
    assert violations["status"] == "blocker"
    assert violations["problems"] == [f"public.chat_participants.chat_id: 1 row (ids: {row}) with NULL"]
    assert "fill in or delete those rows" in violations["fix"]
    # The same row is an orphan, which is a warning only.
    assert run.check("orphans")["status"] == "warning"
    human = run_check(capsys, preflight, "-n", "prod", urls={"prod": db.url})
    assert "BLOCKED: 1 blocker: not_null_violations" in human.out and row in human.out


def test_at_head_there_is_nothing_to_upgrade(capsys, make_database):
    run = preflight_json(capsys, make_database("staging", "head"))
    assert run.code == 0
    assert run.json["revision"]["pending"] == []
    assert run.check("revisions")["summary"] == f"at head {catalog.head_revision('staging')}: nothing to upgrade"
    assert run.check("not_null_violations")["summary"] == "nothing pending"


def test_an_invalid_index_is_a_blocker_naming_its_rebuild(capsys, make_database):
    db = make_database("staging")
    db.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.idx_chat_messages_status'::regclass")
    check = preflight_json(capsys, db).check("invalid_indexes")
    assert check["status"] == "blocker"
    assert "index idx_chat_messages_status on public.chat_messages is INVALID" in check["problems"][0]
    assert check["fix"] == "REINDEX INDEX CONCURRENTLY public.idx_chat_messages_status"


def test_an_old_transaction_holding_a_messaging_table_blocks_and_others_warn(capsys, make_database, session_on):
    db = make_database("prod")
    holder = session_on(db, "SET application_name = 'app-holding-messages'", "SELECT count(*) FROM public.chat_messages")
    idle = session_on(db, "SET application_name = 'app-idle'", "SELECT now()")
    run = preflight_json(capsys, db, "--long-transaction-seconds", "0")
    assert run.code == 1
    holders = run.check("lock_holders")
    assert holders["status"] == "blocker"
    assert len(holders["problems"]) == 1
    assert f"pid {holder.get_backend_pid()} (app-holding-messages, idle in transaction" in holders["problems"][0]
    assert "public.chat_messages AccessShareLock" in holders["problems"][0]
    assert "pg_terminate_backend" in holders["fix"]
    long_running = run.check("long_transactions")
    assert long_running["status"] == "warning"
    assert any(p.startswith(f"pid {idle.get_backend_pid()} (app-idle, idle in transaction") for p in long_running["problems"])
    assert not any(str(holder.get_backend_pid()) in p for p in long_running["problems"])


def test_a_running_migration_is_a_blocker(capsys, make_database, session_on):
    db = make_database("prod")
    runner = session_on(db, "SELECT pg_advisory_lock(hashtextextended('chat_migrations', 0))")
    check = preflight_json(capsys, db).check("another_migration")
    assert check["status"] == "blocker"
    assert check["problems"][0].startswith(f"pid {runner.get_backend_pid()} ")


def test_the_other_environments_database_is_a_blocker_and_nothing_else_is_read(capsys, make_database):
    staging = make_database("staging")
    run = run_check(capsys, preflight, "-n", "prod", "--json", urls={"prod": staging.url})
    assert run.code == 1
    assert [c["name"] for c in run.json["checks"]] == ["identity"]
    assert "chose prod but this database is marked migration.environment='staging'" in run.check("identity")["problems"][0]
    assert run.check("identity")["fix"] == "point PROD_DATABASE_URL at prod's database"


def test_a_database_never_adopted_is_a_blocker_naming_stamp(capsys, make_database):
    db = make_database("prod", "platform")
    check = preflight_json(capsys, db).check("revisions")
    assert check["status"] == "blocker"
    assert "alembic -n prod stamp" in check["fix"]


def test_the_json_shape_is_the_documented_one(capsys, make_database):
    run = preflight_json(capsys, make_database("prod"))
    assert run.json["command"] == "preflight" and run.json["exit_code"] == run.code
    assert_same_shape(run.json, documented_json("`scripts/preflight -n prod --json`"))
