"""scripts/smoke: the plan's manual frontend checks pass at the baseline and at head, and leave no trace.

Each run acts as a real participant of a seeded chat through Supabase's roles
and claims (chat_migrations.checks.smoke, the same calls as tests/supabase_api.py).
What a revision below 103 cannot refuse is reported as skipped, naming the
revision; a broken contract fails the check, naming the step with what was
expected and seen; and before and after every run the schema dump, the rows
and every sequence of the database are the same.
"""

from __future__ import annotations

import re

import pytest

from chat_migrations.checks import smoke
from chat_migrations.harness.fingerprints import data_checksums
from chat_migrations.schema.tables import QUALIFIED as CHAT_TABLES

from .conftest import assert_same_schema
from .test_validate import run_check, run_script

CHECKS = [
    "conversations", "send", "reply", "unread_count", "status_progression",
    "refuse_other_user", "refuse_non_participant", "refuse_anon", "realtime", "no_trace",
]
REFUSALS = {"refuse_other_user", "refuse_non_participant", "refuse_anon"}

# (environment, revision): the statuses that are not "pass" there.
NOT_PASSING = {
    ("prod", "observed"): {name: "partial" for name in REFUSALS},
    ("staging", "observed"): {
        **{name: "partial" for name in REFUSALS},
        "conversations": "partial", "unread_count": "skip", "status_progression": "partial",
    },
    # get_unread_count and its updated_count-returning mark_messages_as_read arrive with 002.
    ("staging", "002_function_updates_staging"): {name: "partial" for name in REFUSALS},
    ("prod", "head"): {},
    ("staging", "head"): {},
}


def traces(db) -> tuple:
    """What the smoke must not change: the schema, the rows, every sequence (as the platform sees them)."""
    conn = db.connect()
    try:
        rows = data_checksums(conn, (*CHAT_TABLES, "auth.users"))
    finally:
        conn.close()
    sequences = db.query("SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences ORDER BY 1", admin=True)
    return db.schema(), rows, sequences


def assert_no_trace(before: tuple, db) -> None:
    schema, rows, sequences = traces(db)
    assert_same_schema(schema, before[0], "after the smoke")
    assert rows == before[1], "rows changed"
    assert sequences == before[2], "a sequence advanced"


def database_at(make_database, environment: str, revision: str):
    if revision in ("observed", "head"):
        return make_database(environment, revision)
    db = make_database(environment)
    db.alembic("-n", environment, "upgrade", revision)
    return db


@pytest.mark.parametrize("environment, revision", list(NOT_PASSING))
def test_smoke_passes_as_far_as_the_revision_goes_and_leaves_no_trace(make_database, capsys, environment, revision):
    db = database_at(make_database, environment, revision)
    before = traces(db)
    run = run_check(capsys, smoke, "-n", environment, "--json", urls={environment: db.url})
    assert run.code == 0, run.out + run.err
    statuses = {c["name"]: c["status"] for c in run.json["checks"]}
    assert list(statuses) == CHECKS
    assert {name: s for name, s in statuses.items() if s != "pass"} == NOT_PASSING[(environment, revision)]
    # A skipped step names the revision it holds from, and where the database is.
    for check in run.json["checks"]:
        for step in check["data"]["steps"]:
            if step["status"] == "skip":
                assert re.search(r" from \d{3}_\w+ on; the database is at \d{3}_\w+$", step["reason"]), step
    # It did write, as the participant, before rolling back.
    send = {s["step"]: s for s in run.check("send")["data"]["steps"]}
    assert send["seq"]["status"] == "pass" and int(send["seq"]["seen"]) >= 1
    assert run.json["acting_as"]["user"] != run.json["acting_as"]["other_user"]
    assert_no_trace(before, db)


def test_the_script_prints_the_checks_and_the_participant_never_the_password(make_database):
    db = make_database("prod", "head")
    result = run_script("smoke", "-n", "prod", urls={"prod": db.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: no check failed (10 of 10 pass)" in result.stdout
    assert "everything written was in one transaction, rolled back" in result.stdout
    assert db.cluster.password not in result.stdout + result.stderr and "postgres:***@" in result.stdout
    assert db.scalar("SELECT count(*) FROM public.chat_messages WHERE message_text = %s", (smoke.SMOKE_TEXT,)) == 0


BREAKAGES = {
    "anon may read messages": (
        "GRANT SELECT ON public.chat_messages TO anon;"
        "CREATE POLICY anon_reads ON public.chat_messages FOR SELECT TO anon USING (true)",
        "refuse_anon", "read messages", "refused or nothing",
    ),
    "a participant may edit anyone's message": (
        "CREATE POLICY edit_any ON public.chat_messages FOR UPDATE TO authenticated USING (true)",
        "refuse_other_user", "edit their message", "refused or no row changed",
    ),
    "the seq trigger is off": (
        "ALTER TABLE public.chat_messages DISABLE TRIGGER trg_assign_message_seq",
        "send", "seq", "(the chat's next)",
    ),
    "the unread count lies": (
        "CREATE OR REPLACE FUNCTION public.get_unread_count(p_chat_id uuid, p_user_id uuid) RETURNS bigint "
        "LANGUAGE sql STABLE SET search_path = '' AS 'SELECT 0::bigint'",
        "unread_count", "the reply is counted", "at least 1",
    ),
    "realtime gets no old row": (
        "ALTER TABLE public.chat_messages REPLICA IDENTITY DEFAULT",
        "realtime", "public.chat_messages replica identity", "FULL",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_contract_fails_the_check_naming_the_step_expected_and_seen(make_database, capsys, breakage):
    statement, check, step, expected = BREAKAGES[breakage]
    db = make_database("prod", "head")
    db.execute(statement)
    before = traces(db)
    run = run_check(capsys, smoke, "-n", "prod", "--json", urls={"prod": db.url})
    assert run.code == 1 and run.json["exit_code"] == 1 and not run.json["passed"]
    assert check in run.failing()
    [failed] = [s for s in run.check(check)["data"]["steps"] if s["step"] == step]
    assert failed["status"] == "fail" and expected in failed["expected"], failed
    assert any(p.startswith(f"{step}: expected ") and ", seen " in p for p in run.check(check)["problems"])
    # Even a failing smoke leaves nothing behind.
    assert "no_trace" not in run.failing()
    assert_no_trace(before, db)


CANNOT_RUN = {
    "nobody to act as": ("DELETE FROM public.chat_participants", "no chat has two or more participants"),
    "a write would advance a sequence": (
        "ALTER TABLE public.chat_messages ADD COLUMN number bigserial",
        "writing would advance sequence public.chat_messages_number_seq (public.chat_messages.number)",
    ),
    "a write would fire an unknown trigger": (
        "CREATE FUNCTION public.notify() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';"
        "CREATE TRIGGER push_notification AFTER INSERT ON public.chat_messages FOR EACH ROW EXECUTE FUNCTION public.notify()",
        "writing would fire trigger public.chat_messages.push_notification, which the revisions do not promise",
    ),
}


@pytest.mark.parametrize("case", list(CANNOT_RUN))
def test_smoke_that_cannot_run_without_a_trace_says_why_in_one_line_and_writes_nothing(make_database, capsys, case):
    statement, reason = CANNOT_RUN[case]
    db = make_database("staging", "head")
    db.execute(statement)
    before = traces(db)
    run = run_check(capsys, smoke, "-n", "staging", urls={"staging": db.url})
    assert run.code == 2 and run.out == ""
    assert run.err.startswith("ERROR: smoke could not run: ") and reason in run.err and run.err.count("\n") == 1, run.err
    assert_no_trace(before, db)


def test_smoke_on_a_database_never_adopted_cannot_run(make_database, capsys):
    db = make_database("prod", "platform")
    run = run_check(capsys, smoke, "-n", "prod", "--json", urls={"prod": db.url})
    assert run.code == 2 and run.json == {"command": "smoke", "exit_code": 2, "error": run.json["error"]}
    assert "never adopted" in run.json["error"]
