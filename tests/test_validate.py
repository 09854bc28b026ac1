"""scripts/validate: every check fails, naming the object, on a database that breaks exactly it.

It judges what the revisions promise (their declarations, folded along the chain), so what they
never promised (a constraint's name, an extra index, a default, an ON DELETE
action) passes, and what the plan does not know is reported as information.

Also the plumbing the three operator checks share (chat_migrations.checks.checks_cli):
the read-only session enforced by the server, exit code 2 with one line and
the password masked, and the JSON shape the README documents. The helpers
and fixtures here are imported by test_preflight.py and test_drift.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from chat_migrations.harness import alembic_cli, bulk_load
from chat_migrations.checks import catalog, checks_cli, drift, preflight, validate
from chat_migrations.runtime.promises import Index
from chat_migrations.schema import history
from chat_migrations.runtime import identity
from chat_migrations.harness.cluster import free_port
from chat_migrations.runtime.environments import REPO_ROOT

from .conftest import Database

CHECK_NAMES = [
    "revision", "not_null", "columns", "seq", "functions", "indexes", "realtime",
    "orphans", "duplicate_seq", "unique_constraints", "foreign_keys",
    "privileges", "policies", "leftovers", "unknown_objects",
]


# --- shared helpers and fixtures (imported by the other operator-check tests) ------------


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        return json.loads(self.out)

    def check(self, name: str) -> dict:
        return next(c for c in self.json["checks"] if c["name"] == name)

    def failing(self, status: str = "fail") -> set[str]:
        return {c["name"] for c in self.json["checks"] if c["status"] == status}


def run_check(capsys, command, *args: str, urls: dict[str, str] | None = None) -> Run:
    """Run an operator check's main() in this process, as ``scripts/<command> ARGS`` would."""
    code = command.main(list(args), urls=urls or {})
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def run_script(name: str, *args: str, urls: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    """The real scripts/<name>, with only ``urls`` as its connection strings, outside the checkout."""
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / name), *args],
        env=alembic_cli.environment_with(urls), cwd=cwd or "/", capture_output=True, text=True,
    )


def documented_json(marker: str) -> dict:
    """The first JSON example after ``marker`` in docs/json-shapes.md."""
    page = (REPO_ROOT / "docs" / "json-shapes.md").read_text()
    assert marker in page, f"docs/json-shapes.md does not mention {marker!r}"
    block = re.search(r"```json\n(.*?)\n```", page.split(marker, 1)[1], re.S)
    assert block, f"docs/json-shapes.md gives no JSON example after {marker!r}"
    return json.loads(block.group(1))


def assert_same_shape(actual, documented, path: str = "$") -> None:
    """Same keys at every level (null on either side matches anything; lists by their first item)."""
    if actual is None or documented is None:
        return
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{path}: expected an object"
        assert set(actual) == set(documented), f"{path}: keys {sorted(actual)} != documented {sorted(documented)}"
        for key in documented:
            assert_same_shape(actual[key], documented[key], f"{path}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{path}: expected a list"
        if actual and documented:
            assert_same_shape(actual[0], documented[0], f"{path}[0]")


def validate_json(capsys, db: Database, *extra: str) -> Run:
    return run_check(capsys, validate, "-n", db.environment, "--json", *extra, urls={db.environment: db.url})


def previous_revision(environment: str) -> str:
    return catalog.script_directory(environment).get_revision(catalog.head_revision(environment)).down_revision


# --- the converged head, and rolled-back databases -------------------------------------------


def test_the_converged_head_passes_every_check(capsys, make_database, environment):
    db = make_database(environment, "head")
    run = validate_json(capsys, db)
    assert run.code == 0, run.out
    assert [c["name"] for c in run.json["checks"]] == CHECK_NAMES
    assert run.failing() == set()
    assert run.check("unknown_objects")["status"] == "pass", "the head holds nothing the plan does not know"
    assert run.json["revision"] == {"current": catalog.head_revision(environment), "head": catalog.head_revision(environment)}
    # The expensive data checks are proved from the catalog at head, except seq (nullable: a scan).
    methods = {c["name"]: c["method"] for c in run.json["checks"]}
    assert methods["duplicate_seq"] == methods["orphans"] == "catalog"
    assert methods["seq"] == "scan"


def test_the_human_table_names_each_check_its_method_and_the_verdict(capsys, make_database):
    db = make_database("prod", "head")
    run = run_check(capsys, validate, "-n", "prod", urls={"prod": db.url})
    assert run.code == 0
    assert re.search(r"^seq\s+scan\s+pass\s", run.out, re.M)
    assert re.search(r"^duplicate_seq\s+catalog\s+pass\s", run.out, re.M)
    assert run.out.rstrip().endswith(f"OK: all {len(CHECK_NAMES)} checks pass")


def test_prod_rolled_back_to_its_baseline_fails_naming_revision_and_columns(capsys, make_database):
    db = make_database("prod")  # the observed prod: what a full rollback restores
    run = validate_json(capsys, db)
    assert run.code == 1
    assert {"revision", "not_null"} <= run.failing()
    head = catalog.head_revision("prod")
    assert run.check("revision")["problems"] == [f"at revision 000_prod_baseline; prod's head is {head}"]
    assert set(run.check("not_null")["problems"]) == {
        f"public.{column} is nullable; the head schema has it NOT NULL"
        for column in ("chat_participants.chat_id", "chat_participants.user_id", "chat_messages.chat_id", "chat_messages.sender_id")
    }
    human = run_check(capsys, validate, "-n", "prod", urls={"prod": db.url})
    assert "FAILED:" in human.out and "revision, not_null" in human.out


def test_staging_at_its_baseline_fails_naming_functions_and_indexes(capsys, make_database):
    run = validate_json(capsys, make_database("staging"))
    assert run.code == 1
    functions = "\n".join(run.check("functions")["problems"])
    assert "function public.get_unread_count(uuid, uuid) is missing" in functions
    assert "function public.mark_messages_as_read(uuid, uuid) returns void; expected TABLE(updated_count bigint)" in functions
    indexes = "\n".join(run.check("indexes")["problems"])
    assert "index idx_chat_messages_sender_id on public.chat_messages (sender_id) is missing" in indexes
    assert "index idx_chat_messages_reply_to on public.chat_messages (reply_to_message_id) is missing" in indexes


# --- one check broken at a time ----------------------------------------------------------------

ONE_MESSAGE = "(SELECT id FROM public.chat_messages ORDER BY id LIMIT 1)"

BROKEN = {
    "not_null": (
        "ALTER TABLE public.chat_participants ALTER COLUMN user_id DROP NOT NULL",
        "public.chat_participants.user_id is nullable; the head schema has it NOT NULL",
    ),
    "seq": (
        f"UPDATE public.chat_messages SET seq = NULL WHERE id = {ONE_MESSAGE}",
        "public.chat_messages: 1 row (ids: {first_message}) without a seq",
    ),
    "functions-missing": (
        "DROP FUNCTION public.get_unread_count(uuid, uuid)",
        "function public.get_unread_count(uuid, uuid) is missing",
    ),
    "functions-return-type": (
        "DROP FUNCTION public.mark_messages_as_read(uuid, uuid); "
        "CREATE FUNCTION public.mark_messages_as_read(p_chat_id uuid, p_user_id uuid) RETURNS void LANGUAGE sql AS 'SELECT'; "
        # Supabase's default privileges let anon run a new function: that is the privileges check's.
        "REVOKE EXECUTE ON FUNCTION public.mark_messages_as_read(uuid, uuid) FROM PUBLIC, anon",
        "function public.mark_messages_as_read(uuid, uuid) returns void; expected TABLE(updated_count bigint)",
    ),
    "functions-trigger-disabled": (
        "ALTER TABLE public.chat_messages DISABLE TRIGGER trg_assign_message_seq",
        "trigger public.chat_messages.trg_assign_message_seq: enabled is 'disabled', expected 'enabled'",
    ),
    "functions-trigger-missing": (
        "DROP TRIGGER trg_assign_message_seq ON public.chat_messages",
        "trigger public.chat_messages.trg_assign_message_seq is missing",
    ),
    "indexes-missing": (
        "DROP INDEX public.idx_chat_messages_reply_to",
        "index idx_chat_messages_reply_to on public.chat_messages (reply_to_message_id) is missing",
    ),
    "indexes-other-definition": (
        # The expected name, another definition: drift, named by its definition.
        "DROP INDEX public.idx_chat_messages_reply_to; CREATE INDEX idx_chat_messages_reply_to "
        "ON public.chat_messages (reply_to_message_id) WHERE reply_to_message_id IS NOT NULL",
        "index idx_chat_messages_reply_to is CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages "
        "USING btree (reply_to_message_id) WHERE (reply_to_message_id IS NOT NULL); the revisions build "
        "CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages USING btree (reply_to_message_id)",
    ),
    "indexes-invalid": (
        # What an interrupted CREATE INDEX CONCURRENTLY leaves behind.
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.idx_chat_messages_chat_id_seq_desc'::regclass",
        "index idx_chat_messages_chat_id_seq_desc on public.chat_messages is INVALID",
    ),
    "realtime-replica-identity": (
        "ALTER TABLE public.chat_messages REPLICA IDENTITY DEFAULT",
        "public.chat_messages has REPLICA IDENTITY DEFAULT; Realtime needs FULL",
    ),
    "realtime-publication": (
        "ALTER PUBLICATION supabase_realtime DROP TABLE public.chat_participants",
        "public.chat_participants is not in publication supabase_realtime",
    ),
    "unique_constraints-missing": (
        "ALTER TABLE public.chat_messages DROP CONSTRAINT uq_chat_messages_client_generated",
        "unique key (client_generated_id) on public.chat_messages is missing",
    ),
    "unique_constraints-invalid-index": (
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.uq_chat_messages_chat_id_seq'::regclass",
        "index uq_chat_messages_chat_id_seq on public.chat_messages is INVALID",
    ),
    "foreign_keys-missing": (
        "ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey",
        "foreign key (sender_id) on public.chat_messages → auth.users is missing",
    ),
    "foreign_keys-not-valid": (
        "ALTER TABLE public.chat_participants DROP CONSTRAINT chat_participants_chat_id_fkey; "
        "ALTER TABLE public.chat_participants ADD CONSTRAINT chat_participants_chat_id_fkey "
        "FOREIGN KEY (chat_id) REFERENCES public.chats (id) ON DELETE CASCADE NOT VALID",
        "foreign key chat_participants_chat_id_fkey on public.chat_participants is NOT VALID",
    ),
    "privileges-anon-truncate": (
        "GRANT TRUNCATE ON public.chat_messages TO anon",
        "anon on public.chat_messages: holds TRUNCATE the revisions do not grant",
    ),
    "privileges-anon-column": (
        "GRANT UPDATE (message_text) ON public.chat_messages TO anon",
        "anon's UPDATE on columns of public.chat_messages: granted on message_text, which the revisions do not grant",
    ),
    "privileges-anon-execute-through-public": (
        "GRANT EXECUTE ON FUNCTION public.get_latest_seq(uuid) TO PUBLIC",
        "PUBLIC may execute public.get_latest_seq(uuid): every role may, anon included",
    ),
    "privileges-authenticated-delete": (
        "GRANT DELETE ON public.chat_participants TO authenticated",
        "authenticated on public.chat_participants: holds DELETE the revisions do not grant",
    ),
    "privileges-column-revoked": (
        # A column grant the revisions make, gone: invisible to table-level privileges.
        "REVOKE UPDATE (last_read_at) ON public.chat_participants FROM authenticated",
        "authenticated's UPDATE on columns of public.chat_participants: missing on last_read_at",
    ),
    "privileges-anon-inherits": (
        # Nothing granted to anon itself, yet it holds SELECT through a role it inherits.
        "CREATE ROLE chat_readers NOLOGIN; GRANT SELECT ON public.chats TO chat_readers; GRANT chat_readers TO anon",
        "anon holds SELECT on public.chats through PUBLIC, a column grant or a role it inherits",
    ),
    "policies-extra": (
        # 103 promises exactly its policies: a further permissive one would widen what a caller reads.
        "CREATE POLICY chat_messages_select_own ON public.chat_messages FOR SELECT TO authenticated "
        "USING (sender_id = (SELECT auth.uid()))",
        "policies of public.chat_messages: extra chat_messages_select_own",
    ),
    "policies-dropped": (
        "DROP POLICY chat_messages_update_own ON public.chat_messages",
        "policies of public.chat_messages: missing chat_messages_update_own",
    ),
    "policies-rls-off": (
        "ALTER TABLE public.chats DISABLE ROW LEVEL SECURITY",
        "public.chats has row level security off: no policy applies",
    ),
    "columns-type": (
        "ALTER TABLE public.chat_messages ALTER COLUMN client_generated_id TYPE text",
        "column public.chat_messages.client_generated_id is text; the revisions need uuid",
    ),
    "functions-security": (
        "ALTER FUNCTION public.get_unread_count(uuid, uuid) SECURITY DEFINER",
        "function public.get_unread_count(uuid, uuid) is SECURITY DEFINER, expected INVOKER",
    ),
    "leftovers-helper-check": (
        # What an interrupted set_not_null leaves: its helper check.
        "ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_chat_id_not_null_migration "
        "CHECK (chat_id IS NOT NULL) NOT VALID",
        "helper check public.chat_messages.chat_messages_chat_id_not_null_migration, left by an interrupted revision",
    ),
    "revision": (
        "UPDATE migration_meta.alembic_version SET version_num = '{previous}'",
        "at revision {previous}; prod's head is {head}",
    ),
}
# Only the platform's superuser can fake an interrupted concurrent build (pg_index is the catalog's).
AS_ADMIN = {"indexes-invalid", "unique_constraints-invalid-index"}
# Recorded one revision too low, the head revision's rollback snapshots are of a revision not applied.
ALSO_FAILS = {"revision": {"leftovers"}}


@pytest.mark.parametrize("case", BROKEN)
def test_breaking_one_thing_fails_exactly_its_check_naming_the_object(capsys, make_database, case):
    db = make_database("prod", "head")
    values = {
        "previous": previous_revision("prod"),
        "head": catalog.head_revision("prod"),
        "first_message": db.scalar(f"SELECT {ONE_MESSAGE}::text"),
    }
    breakage, message = (part.format(**values) for part in BROKEN[case])
    db.execute(breakage, admin=case in AS_ADMIN)
    run = validate_json(capsys, db)
    check = case.split("-")[0]
    assert run.code == 1
    assert run.failing() == {check} | ALSO_FAILS.get(case, set()), run.out
    assert any(message in problem for problem in run.check(check)["problems"]), run.check(check)
    human = run_check(capsys, validate, "-n", "prod", urls={"prod": db.url})
    assert message in human.out and f"checks failed: {check}" in human.out


# What no revision promises: each passes, and what the plan does not know is information.
NOT_PROMISED = {
    "constraint-renamed": (
        "ALTER TABLE public.chat_messages RENAME CONSTRAINT uq_chat_messages_client_generated "
        "TO chat_messages_client_generated_id_key",
        ("constraint", "public.chat_messages.chat_messages_client_generated_id_key"),
    ),
    "primary-key-renamed": (
        "ALTER TABLE public.chats RENAME CONSTRAINT chats_pkey TO chats_id_pk",
        ("constraint", "public.chats.chats_id_pk"),
    ),
    "extra-index": (
        "CREATE INDEX idx_chat_messages_text ON public.chat_messages (message_text)",
        ("index", "public.chat_messages.idx_chat_messages_text"),
    ),
    "column-default": ("ALTER TABLE public.chat_messages ALTER COLUMN status SET DEFAULT 'delivered'", None),
    "foreign-key-action": (
        # Another name and another ON DELETE on a key of the contract, and another action where models.py says SET NULL.
        "ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_chat_id_fkey; "
        "ALTER TABLE public.chat_messages ADD CONSTRAINT fk_messages_chat "
        "FOREIGN KEY (chat_id) REFERENCES public.chats (id) ON DELETE RESTRICT; "
        "ALTER TABLE public.chats DROP CONSTRAINT chats_created_by_fkey; "
        "ALTER TABLE public.chats ADD CONSTRAINT chats_created_by_fkey "
        "FOREIGN KEY (created_by) REFERENCES auth.users (id) ON DELETE CASCADE",
        ("constraint", "public.chat_messages.fk_messages_chat"),
    ),
    "extra-column": (
        "ALTER TABLE public.chat_messages ADD COLUMN edited_by uuid",
        ("column", "public.chat_messages.edited_by"),
    ),
}


@pytest.mark.parametrize("case", NOT_PROMISED)
def test_what_no_revision_promises_passes_and_the_unknown_is_information(capsys, make_database, case):
    db = make_database("prod", "head")
    change, unknown = NOT_PROMISED[case]
    db.execute(change)
    run = validate_json(capsys, db)
    assert run.code == 0, run.out
    assert run.failing() == set()
    reported = run.check("unknown_objects")
    if unknown is None:
        assert reported["status"] == "pass", reported
        return
    assert reported["status"] == "info"
    kind, name = unknown
    assert [(o["kind"], o["name"]) for o in reported["data"]["objects"]] == [unknown]
    assert any(problem.startswith(f"{kind} {name} ") for problem in reported["problems"])
    human = run_check(capsys, validate, "-n", "prod", urls={"prod": db.url})
    assert human.out.rstrip().endswith(f"OK: all {len(CHECK_NAMES)} checks pass (information: unknown_objects)")


def test_a_key_that_on_delete_set_null_writes_stays_nullable_and_passes_saying_why(capsys, make_database):
    db = make_database("prod", "head")
    db.execute(
        "ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey; "
        "ALTER TABLE public.chat_messages ALTER COLUMN sender_id DROP NOT NULL; "
        "ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_sender_id_fkey "
        "FOREIGN KEY (sender_id) REFERENCES auth.users (id) ON DELETE SET NULL; "
        f"UPDATE public.chat_messages SET sender_id = NULL WHERE id = {ONE_MESSAGE}"  # a deleted account's message
    )
    run = validate_json(capsys, db)
    assert run.code == 0, run.out
    not_null = run.check("not_null")
    assert not_null["status"] == "pass" and not_null["problems"] == []
    assert "public.chat_messages.sender_id stays nullable: foreign key chat_messages_sender_id_fkey is ON DELETE SET NULL" \
        in not_null["summary"]
    assert run.check("orphans")["status"] == "pass", "a NULL the foreign key writes is not an orphan"
    # Without the foreign key's SET NULL, the same nullable key fails.
    db.execute(
        "ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey; "
        "ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_sender_id_fkey "
        "FOREIGN KEY (sender_id) REFERENCES auth.users (id) ON DELETE CASCADE"
    )
    run = validate_json(capsys, db)
    assert run.failing() == {"not_null", "orphans"}
    assert run.check("not_null")["problems"] == [
        "public.chat_messages.sender_id is nullable; the head schema has it NOT NULL"
    ]


def test_the_promised_indexes_are_the_definitions_the_revisions_build(head, environment):
    # Read from the declarations, compared with what the revisions built: no list kept here.
    promised = {index.qualified_name: index.definition for index in history.promised(environment).of(Index)}
    assert promised
    built = dict(head.query("SELECT name, pg_get_indexdef(to_regclass(name)) FROM unnest(%s::text[]) AS name",
                            (sorted(promised),)))
    assert built == promised


def test_an_invalid_unique_index_makes_duplicate_seq_scan_instead_of_trusting_it(capsys, make_database):
    db = make_database("prod", "head")
    db.execute(BROKEN["unique_constraints-invalid-index"][0], admin=True)
    check = validate_json(capsys, db).check("duplicate_seq")
    assert (check["status"], check["method"]) == ("pass", "scan")


def test_duplicate_seq_in_a_chat_is_found_and_named(capsys, make_database):
    db = make_database("prod", "head")
    chat, first, second = db.query(
        "SELECT chat_id::text, min(seq), max(seq) FROM public.chat_messages GROUP BY chat_id HAVING count(*) > 1 LIMIT 1"
    )[0]
    db.execute("ALTER TABLE public.chat_messages DROP CONSTRAINT uq_chat_messages_chat_id_seq")
    db.execute(f"UPDATE public.chat_messages SET seq = {first} WHERE chat_id = '{chat}' AND seq = {second}")
    run = validate_json(capsys, db)
    # Without its unique constraint nothing else proves uniqueness, so both fail.
    assert run.failing() == {"duplicate_seq", "unique_constraints"}
    assert run.check("duplicate_seq")["problems"] == [f"public.chat_messages: chat_id {chat} has seq {first} on 2 messages"]


def test_orphans_behind_a_missing_foreign_key_are_found_by_scanning(capsys, make_database):
    db = make_database("prod", "head")
    db.execute("ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_reply_to_message_id_fkey")
    orphan = db.scalar(
        f"UPDATE public.chat_messages SET reply_to_message_id = gen_random_uuid() WHERE id = {ONE_MESSAGE} RETURNING id::text"
    )
    run = validate_json(capsys, db)
    assert run.failing() == {"orphans", "foreign_keys"}
    assert run.check("orphans")["method"] == "scan"
    assert run.check("orphans")["problems"] == [
        f"public.chat_messages: 1 row (ids: {orphan}) with a reply_to_message_id that no public.chat_messages row has"
    ]


def test_participants_without_a_chat_are_orphans(capsys, make_database):
    db = make_database("prod")  # baseline: chat_participants.chat_id is still nullable
    orphan = db.scalar(
        "INSERT INTO public.chat_participants (chat_id, user_id) SELECT NULL, id FROM auth.users LIMIT 1 RETURNING id::text"
    )
    problems = validate_json(capsys, db).check("orphans")["problems"]
    assert problems == [f"public.chat_participants: 1 row (ids: {orphan}) with chat_id NULL (no public.chats row)"]


def test_thorough_scans_what_bypassed_constraint_triggers_let_in(capsys, make_database):
    db = make_database("prod", "head")
    orphan = db.scalar(
        "SET session_replication_role = replica; "  # as a restore or a careless bulk load would
        "INSERT INTO public.chat_participants (chat_id, user_id) SELECT gen_random_uuid(), id FROM auth.users LIMIT 1 "
        "RETURNING id::text",
        admin=True,  # another actor: postgres may not bypass the triggers
    )
    assert validate_json(capsys, db).failing() == set(), "the catalog proof trusts the valid foreign key"
    run = validate_json(capsys, db, "--thorough")
    assert run.failing() == {"orphans"}
    assert run.check("orphans")["problems"] == [
        f"public.chat_participants: 1 row (ids: {orphan}) with a chat_id that no public.chats row has"
    ]


# --- plumbing shared by the three commands -----------------------------------------------------


def test_the_session_is_read_only_enforced_by_the_server(make_database):
    db = make_database("prod")
    target = checks_cli.environment_target("prod", {"prod": db.url})
    with checks_cli.read_only_connection(target, "test") as conn:
        with pytest.raises(DBAPIError) as refused:
            conn.execute(text("CREATE TABLE public.written_by_a_check (id int)"))
        assert refused.value.orig.pgcode == "25006"  # read_only_sql_transaction


def test_the_checks_change_nothing(capsys, make_database):
    db = make_database("prod")
    other = make_database("staging")
    before = (db.schema(), db.checksums(), db.revision())
    urls = {"prod": db.url, "staging": other.url}
    run_check(capsys, validate, "-n", "prod", "--thorough", urls=urls)
    run_check(capsys, preflight, "-n", "prod", urls=urls)
    run_check(capsys, drift, "staging", "prod", urls=urls)
    assert (db.schema(), db.checksums(), db.revision()) == before
    assert db.scalar(f"SELECT environment FROM {identity.MARKER}") == "prod"


COMMANDS = {"validate": ("-n", "prod"), "preflight": ("-n", "prod"), "drift": ("prod", "staging")}


def assert_cannot_run(result, reason: str, secret: str | None = None) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: ") and reason in lines[0], result.stderr
    if secret:
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_url_is_exit_2_naming_the_variable(command, tmp_path):
    result = run_script(command, *COMMANDS[command], cwd=tmp_path)
    assert_cannot_run(result, "PROD_DATABASE_URL is not set")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_server_is_exit_2_with_the_password_masked(command):
    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{free_port()}/postgres"
    result = run_script(command, *COMMANDS[command], urls={"prod": url, "staging": url})
    assert_cannot_run(result, "cannot connect to prod's database postgresql://postgres:***@127.0.0.1", "hunter2-secret")


def test_a_wrong_password_is_exit_2_in_json_too(capsys, cluster, make_database):
    db = make_database("prod")
    url = cluster.url(db.name, password="not-the-password")
    run = run_check(capsys, validate, "-n", "prod", "--json", urls={"prod": url})
    assert run.code == 2
    assert run.json["exit_code"] == 2 and "password authentication failed" in run.json["error"]
    assert "not-the-password" not in run.out + run.err
    assert_same_shape(run.json, documented_json("cannot run (exit 2)"))


def test_validate_on_the_other_environments_database_is_exit_2(capsys, make_database):
    staging = make_database("staging")
    run = run_check(capsys, validate, "-n", "prod", urls={"prod": staging.url})
    assert run.code == 2
    assert "wrong database: chose prod but this database is marked as 'staging'" in run.err


def test_no_environment_is_exit_2_naming_the_choices(capsys):
    run = run_check(capsys, validate)
    assert run.code == 2 and "no environment chosen: pass -n prod or -n staging" in run.err


def test_the_script_reads_the_url_from_env_local(tmp_path, make_database):
    db = make_database("prod")
    (tmp_path / ".env.local").write_text(f"PROD_DATABASE_URL='{db.url}'\n")
    result = run_script("validate", "-n", "prod", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # the observed prod is not at head
    assert json.loads(result.stdout)["target"]["environment"] == "prod"


def test_the_json_shape_is_the_documented_one(capsys, make_database):
    run = validate_json(capsys, make_database("prod"))
    assert run.json["command"] == "validate" and run.json["exit_code"] == run.code == 1
    assert_same_shape(run.json, documented_json("`scripts/validate -n prod --json`"))


# --- the bulk loader that the benchmarks use ---------------------------------------------------


def test_bulk_loaded_data_is_valid_and_shaped_like_a_chat_product(capsys, make_database):
    db = make_database("prod", "head")
    before = db.scalar("SELECT count(*) FROM public.chat_messages")
    summary = bulk_load.load(db.url, messages=5000, chats=60, users=40)
    assert (summary.messages, summary.chats) == (5000, 60)
    assert db.scalar("SELECT count(*) FROM public.chat_messages") == before + 5000
    sizes = [row[0] for row in db.query("SELECT count(*) FROM public.chat_messages GROUP BY chat_id ORDER BY 1 DESC")]
    assert sizes[0] > 20 * sizes[len(sizes) // 2], "a few large chats, many small ones"
    # seq is 1..n in every chat, and the data has replies, deletions and unread positions.
    assert db.scalar("SELECT count(*) FROM (SELECT chat_id FROM public.chat_messages GROUP BY chat_id "
                     "HAVING min(seq) <> 1 OR max(seq) <> count(*)) AS gaps") == 0
    assert db.scalar("SELECT count(*) FROM public.chat_messages WHERE reply_to_message_id IS NOT NULL") > 100
    assert db.scalar("SELECT count(*) FROM public.chat_messages WHERE deleted_at IS NOT NULL") > 5
    assert db.scalar("SELECT count(*) FROM public.chat_participants WHERE last_read_at IS NULL") > 0
    # The loader skips per-row constraint checks; a thorough validate proves the rows anyway.
    run = validate_json(capsys, db, "--thorough")
    assert run.code == 0, run.out
    with pytest.raises(bulk_load.LoadError, match="already holds bulk-loaded rows"):
        bulk_load.load(db.url, messages=5000, chats=60, users=40)


def test_after_a_rollback_validate_at_the_current_revision_judges_what_that_revision_promises(capsys, make_database):
    db = make_database("prod", "head")
    db.alembic("-n", "prod", "downgrade", "-1")
    at_head = validate_json(capsys, db)
    assert at_head.code == 1
    run = validate_json(capsys, db, "--at-current-revision")
    assert run.code == 0, run.json
    assert run.json["judged_at"] == previous_revision("prod")
    assert [c["name"] for c in run.json["checks"]] == CHECK_NAMES
    # What the previous revision promises is judged too: its functions' security, for one.
    db.execute("ALTER FUNCTION public.get_latest_seq(uuid) SECURITY DEFINER")
    broken = validate_json(capsys, db, "--at-current-revision")
    assert broken.failing() == {"functions"}, broken.out


def test_at_the_current_revision_an_invalid_index_or_an_unknown_revision_still_fails(capsys, make_database):
    db = make_database("staging", "head")
    db.alembic("-n", "staging", "downgrade", "-1")
    db.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.idx_chat_messages_reply_to'::regclass",
               admin=True)
    db.execute("UPDATE migration_meta.alembic_version SET version_num = 'not_a_revision'")
    run = validate_json(capsys, db, "--at-current-revision")
    assert run.code == 1
    failed = {c["name"]: c["problems"] for c in run.json["checks"] if c["status"] == "fail"}
    assert set(failed) == {"revision", "indexes"}
    assert "which staging's history does not contain" in failed["revision"][0]
    assert "idx_chat_messages_reply_to" in failed["indexes"][0] and "INVALID" in failed["indexes"][0]
