"""scripts/preflight: what would stop `upgrade head` is reported before anything runs, with its fix.

And what the pending revisions will change, judged from what they promise
(their ``promises``, ``requires`` and ``affected_tables``), never from
models.py: no column is announced NOT NULL that no revision makes so.
"""

from __future__ import annotations

from chat_migrations.harness.cluster import pg_bindir
from chat_migrations.harness.postgres_binaries import version_of

import psycopg2
import pytest

from chat_migrations.checks import catalog, preflight
from chat_migrations.runtime import identity

from .test_validate import assert_same_shape, documented_json, run_check

# Runs on both Supabase platforms in CI (docs/testing.md).
pytestmark = pytest.mark.platform


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
    # Exactly the keys 001 and 005 make NOT NULL: nothing models.py has NOT NULL besides.
    assert [c["column"] for c in violations["data"]["columns"]] == [
        "public.chat_participants.chat_id", "public.chat_participants.user_id",
        "public.chat_messages.chat_id", "public.chat_messages.sender_id",
    ]
    assert {c["name"]: c["status"] for c in run.json["checks"] if c["name"] in (
        "requirements", "set_null_conflicts", "index_definitions", "leftovers")} == {
        "requirements": "ok", "set_null_conflicts": "ok", "index_definitions": "ok", "leftovers": "ok"}
    assert run.check("server_version")["summary"].startswith(f"PostgreSQL {version_of(pg_bindir())}")
    assert run.check("identity")["summary"] == identity.describe_marker("prod")
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
    assert run.check("caller_changes")["summary"] == "no change for the API roles"
    assert run.check("caller_changes")["data"] == {"changes": []}


def test_an_invalid_index_is_a_blocker_naming_its_rebuild(capsys, make_database):
    db = make_database("staging")
    db.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.idx_chat_messages_chat_id_seq_desc'::regclass",
               admin=True)  # what an interrupted concurrent build leaves; only the superuser can fake it
    check = preflight_json(capsys, db).check("invalid_indexes")
    assert check["status"] == "blocker"
    assert "index idx_chat_messages_chat_id_seq_desc on public.chat_messages is INVALID" in check["problems"][0]
    assert check["fix"] == "REINDEX INDEX CONCURRENTLY public.idx_chat_messages_chat_id_seq_desc"


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
    assert "chose prod but this database is marked as 'staging'" in run.check("identity")["problems"][0]
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


# --- what the revisions promise, on the variants a live database has ------------------------------


def test_a_column_no_revision_makes_not_null_is_never_named(capsys, make_database):
    db = make_database("prod")
    db.execute("ALTER TABLE public.chat_participants ALTER COLUMN joined_at DROP NOT NULL")
    # A live variant: joined_at nullable, with a NULL. No revision makes it NOT NULL, so nothing is said of it.
    db.execute("UPDATE public.chat_participants SET joined_at = NULL "
               "WHERE id = (SELECT min(id::text)::uuid FROM public.chat_participants)")
    run = preflight_json(capsys, db)
    assert run.code == 0, run.out
    assert "joined_at" not in run.out
    assert "joined_at" not in run_check(capsys, preflight, "-n", "prod", urls={"prod": db.url}).out


def test_a_key_on_delete_set_null_writes_is_named_and_its_nulls_block_nothing(capsys, make_database):
    db = make_database("prod")
    db.execute(
        "ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey; "
        "ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_sender_id_fkey "
        "FOREIGN KEY (sender_id) REFERENCES auth.users (id) ON DELETE SET NULL; "
        # a deleted account's message, as that foreign key leaves it
        "UPDATE public.chat_messages SET sender_id = NULL WHERE id = (SELECT min(id::text)::uuid FROM public.chat_messages)"
    )
    run = preflight_json(capsys, db)
    assert run.code == 0, run.out
    conflicts = run.check("set_null_conflicts")
    assert conflicts["status"] == "warning"
    assert conflicts["problems"] == [
        "public.chat_messages.sender_id stays nullable (005_prod_message_keys_not_null leaves it nullable): "
        "foreign key chat_messages_sender_id_fkey is ON DELETE SET NULL (→ auth.users): "
        "NOT NULL would make deleting a auth.users row fail"
    ]
    assert conflicts["data"]["keys"][0]["column"] == "public.chat_messages.sender_id"
    violations = run.check("not_null_violations")
    assert violations["status"] == "ok"
    assert "public.chat_messages.sender_id" not in {c["column"] for c in violations["data"]["columns"]}


def test_an_unmet_requirement_is_a_blocker_naming_the_revision_and_the_column(capsys, make_database):
    db = make_database("prod")
    for (index,) in db.query(
        "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'public.chat_messages'::regclass AND a.attname = 'created_at'"
    ):
        db.execute(f"DROP INDEX {index}")
    db.execute("ALTER TABLE public.chat_messages DROP COLUMN created_at")
    run = preflight_json(capsys, db)
    assert run.code == 1 and run.json["ready"] is False
    check = run.check("requirements")
    assert check["status"] == "blocker"
    assert "102_unread_count_index needs column public.chat_messages.created_at, which this database does not have" \
        in check["problems"]
    assert "the upgrade refuses, changing nothing" in check["fix"]
    human = run_check(capsys, preflight, "-n", "prod", urls={"prod": db.url})
    assert "BLOCKED: 1 blocker: requirements" in human.out


def test_an_index_of_a_revision_with_another_definition_is_information_naming_its_rebuild(capsys, make_database):
    db = make_database("prod")
    db.execute(
        "DROP INDEX public.idx_chat_messages_reply_to; CREATE INDEX idx_chat_messages_reply_to "
        "ON public.chat_messages (reply_to_message_id) WHERE reply_to_message_id IS NOT NULL"
    )
    run = preflight_json(capsys, db)
    assert run.code == 0
    check = run.check("index_definitions")
    assert check["status"] == "info"
    [problem] = check["problems"]
    assert problem.startswith("index idx_chat_messages_reply_to is CREATE INDEX idx_chat_messages_reply_to ON "
                              "public.chat_messages USING btree (reply_to_message_id) WHERE (reply_to_message_id IS NOT NULL)")
    assert "006_prod_reply_index_definition rebuilds it concurrently" in problem
    assert "--sql script refuses it" in problem


def test_an_invalid_index_a_pending_revision_rebuilds_blocks_nothing(capsys, make_database):
    db = make_database("prod")
    db.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.idx_chat_messages_reply_to'::regclass",
               admin=True)
    check = preflight_json(capsys, db).check("invalid_indexes")
    assert check["status"] == "info"
    assert "006_prod_reply_index_definition drops and rebuilds it concurrently" in check["problems"][0]


def test_leftovers_of_an_interrupted_revision_are_a_warning(capsys, make_database):
    db = make_database("prod")
    db.execute("ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_chat_id_not_null_migration "
               "CHECK (chat_id IS NOT NULL) NOT VALID")
    run = preflight_json(capsys, db)
    assert run.code == 0
    check = run.check("leftovers")
    assert check["status"] == "warning"
    assert check["problems"][0].startswith("helper check public.chat_messages.chat_messages_chat_id_not_null_migration")
    assert check["fix"] == "the next upgrade completes them; alembic -n prod upgrade 000_prod_baseline removes them at any revision"


def test_caller_changes_list_what_103_takes_from_anon_and_the_policies_it_drops(capsys, make_database):
    db = make_database("prod")
    db.execute("CREATE POLICY chat_messages_read_all ON public.chat_messages FOR SELECT TO anon USING (true)")
    run = preflight_json(capsys, db)
    check = run.check("caller_changes")
    assert check["status"] == "info"
    changes = check["data"]["changes"]
    assert check["summary"] == f"{len(changes)} changes for the API roles"
    assert check["problems"] == [c["change"] for c in changes]
    of_103 = [c["change"] for c in changes if c["revision"] == "103_messaging_security"]
    [anon] = [line for line in of_103 if line.startswith("103_messaging_security: anon on public.chat_messages: ")]
    assert anon.startswith("103_messaging_security: anon on public.chat_messages: loses ")
    assert {"TRUNCATE", "DELETE", "SELECT"} <= set(anon.split("loses ", 1)[1].split(", "))
    assert "103_messaging_security: policies dropped on public.chat_messages: chat_messages_read_all, " \
        "chat_messages_update_participant" in of_103
    assert "103_messaging_security: policies rewritten on public.chat_messages: chat_messages_insert_participant, " \
        "chat_messages_select_participant" in of_103
    assert "103_messaging_security: policies added on public.chat_messages: chat_messages_update_own" in of_103
    # In upgrade order: 007 takes get_unread_count from anon first, so 103 does not say it again.
    assert "007_prod_unread_count_privileges: anon may no longer execute public.get_unread_count(uuid, uuid)" \
        in check["problems"]
    assert not any("anon may no longer execute public.get_unread_count" in line for line in of_103)
    human = run_check(capsys, preflight, "-n", "prod", urls={"prod": db.url})
    assert anon in human.out


def test_on_staging_a_function_created_without_anon_gives_anon_nothing(capsys, make_database):
    run = preflight_json(capsys, make_database("staging"))
    changes = [c["change"] for c in run.check("caller_changes")["data"]["changes"]]
    assert "002_function_updates_staging: authenticated may now execute public.get_unread_count(uuid, uuid)" in changes
    assert not any("get_unread_count" in line and "may now execute" in line
                   and (": anon " in line or ": PUBLIC " in line) for line in changes), changes
