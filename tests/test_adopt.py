"""scripts/adopt: a live database is compared with its baseline before `alembic stamp`, and judged.

Every variant is an observed database (the baseline written by postgres,
seeded) whose alembic_version row is deleted, so it looks like a live project
Alembic never touched, then changed with SQL as postgres. Each asserts the
whole set of differences with their classes, the exit code, and that the
command changed nothing.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass

import pglast
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from chat_migrations.checks import adopt, catalog, checks_cli
from chat_migrations.harness import alembic_cli
from chat_migrations.frozen import baseline
from chat_migrations.runtime import requirements
from chat_migrations.runtime.environments import REPO_ROOT

from . import test_validate

DIFFERENCE_KEYS = {"section", "object", "kind", "detail", "classification", "why", "fix"}


class Run(test_validate.Run):
    def differences(self) -> set[tuple[str, str, str, str]]:
        return {(d["section"], d["object"], d["kind"], d["classification"]) for d in self.json["differences"]}

    def difference(self, section: str, obj: str) -> dict:
        return next(d for d in self.json["differences"] if (d["section"], d["object"]) == (section, obj))


def run_adopt(capsys, *args: str, urls: dict[str, str] | None = None) -> Run:
    """adopt.main in this process, as `scripts/adopt ARGS` would run it."""
    code = adopt.main(list(args), urls=urls or {})
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def adopt_json(capsys, db) -> Run:
    return run_adopt(capsys, "-n", db.environment, "--json", urls={db.environment: db.url})


def unadopted(make_database, environment: str, sql: str | None = None):
    """An observed (seeded, marked) database Alembic never recorded a revision in, changed by ``sql``."""
    db = make_database(environment)
    db.execute("DELETE FROM migration_meta.alembic_version")
    if sql:
        db.execute(sql)
    return db


# --- the committed baselines ------------------------------------------------------------------


@pytest.mark.parametrize("environment", baseline.ENVIRONMENTS)
def test_the_committed_baseline_is_the_catalog_of_a_freshly_built_baseline_database(make_database, environment):
    # Built as cluster.create_observed_database builds it: the platform, then
    # baseline.create_sql as postgres. adopt.picture leaves out what differs
    # between server versions (MAINTAIN, PostgreSQL 17's table privilege), so
    # this holds on the version the suite runs on, whichever it is.
    db = make_database(environment, "platform", marked=False)
    db.execute(baseline.create_sql(environment))
    with checks_cli.read_only_connection(checks_cli.Target(db.name, db.url), "test") as conn:
        fresh = adopt.serialize(adopt.picture(catalog.read_catalog(conn)))
    committed = adopt.baseline_file(environment).read_text()
    assert committed == fresh, (
        f"{adopt.baseline_file(environment)} is stale: python -m chat_migrations.harness.baselines"
    )


# --- adoptable as observed -------------------------------------------------------------------


@pytest.mark.parametrize("environment", baseline.ENVIRONMENTS)
def test_an_unadopted_observed_database_has_no_differences(capsys, make_database, environment):
    db = unadopted(make_database, environment)
    run = adopt_json(capsys, db)
    assert run.code == 0, run.out
    assert run.json["differences"] == [] and run.json["adoptable"] is True
    human = run_adopt(capsys, "-n", environment, urls={environment: db.url})
    assert human.code == 0
    assert "no differences from the baseline" in human.out
    assert human.out.rstrip().endswith(
        f"ADOPTABLE: alembic -n {environment} stamp 000_{environment}_baseline (0 harmless, 0 handled by the revisions)"
    )


# --- live variants ---------------------------------------------------------------------------

# Every function body that sets updated_at, rewritten without it (as a team
# would before dropping the column).
WITHOUT_UPDATED_AT = """
DO $rewrite$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace AND p.prosrc LIKE '%updated_at = now()%' LOOP
        EXECUTE replace(pg_get_functiondef(f.oid), ', updated_at = now()', '');
    END LOOP;
END
$rewrite$;
ALTER TABLE public.chat_messages DROP COLUMN updated_at;
"""

MESSAGES = "public.chat_messages"


@dataclass
class Variant:
    environment: str
    sql: str
    code: int
    differences: set[tuple[str, str, str, str]]
    # (section, object) of the difference the variant is about, and words its why or fix must hold.
    about: tuple[str, str]
    why_says: str = ""
    fix_says: str | None = None
    # Whether env.py's check of the revisions' requirements would refuse the upgrade after the stamp.
    upgrade_refuses: bool = False


VARIANTS = {
    "extra column": Variant(
        "prod", f"ALTER TABLE {MESSAGES} ADD COLUMN edited boolean", 0,
        {("columns", f"{MESSAGES}.edited", "extra", "harmless")},
        ("columns", f"{MESSAGES}.edited"), "nothing the revisions do depends on it",
    ),
    "updated_at dropped, prod": Variant(
        "prod", WITHOUT_UPDATED_AT, 0,
        {
            ("columns", f"{MESSAGES}.updated_at", "missing", "harmless"),
            ("functions", "public.mark_messages_as_read(uuid, uuid)", "different", "handled"),
            ("functions", "public.mark_messages_as_delivered(uuid, uuid)", "different", "handled"),
        },
        ("columns", f"{MESSAGES}.updated_at"),
        "no revision requires it: the revisions that touch it (103_messaging_security, 104_read_position_by_seq) check for it",
    ),
    "updated_at dropped, staging": Variant(
        "staging", WITHOUT_UPDATED_AT, 0,
        {
            ("columns", f"{MESSAGES}.updated_at", "missing", "harmless"),
            ("functions", "public.mark_messages_as_read(uuid, uuid)", "different", "handled"),
            ("functions", "public.mark_messages_as_delivered(uuid, uuid)", "different", "handled"),
        },
        ("columns", f"{MESSAGES}.updated_at"),
        "the revisions that touch it (002_function_updates_staging, 103_messaging_security, 104_read_position_by_seq) check for it",
    ),
    "partial reply index": Variant(
        "prod",
        "DROP INDEX public.idx_chat_messages_reply_to; CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages "
        "(reply_to_message_id) WHERE reply_to_message_id IS NOT NULL",
        0,
        {("indexes", f"{MESSAGES}.idx_chat_messages_reply_to", "different", "handled")},
        ("indexes", f"{MESSAGES}.idx_chat_messages_reply_to"),
        "built or converged concurrently by 006_prod_reply_index_definition",
    ),
    "sender key sets NULL": Variant(
        "prod",
        f"ALTER TABLE {MESSAGES} DROP CONSTRAINT chat_messages_sender_id_fkey, ADD CONSTRAINT chat_messages_sender_id_fkey "
        "FOREIGN KEY (sender_id) REFERENCES auth.users (id) ON DELETE SET NULL",
        0,
        {("constraints", f"{MESSAGES}.chat_messages_sender_id_fkey", "different", "handled")},
        ("constraints", f"{MESSAGES}.chat_messages_sender_id_fkey"),
        "the key stays nullable: NOT NULL would make deleting the referenced row fail",
    ),
    "extra policy": Variant(
        "prod",
        f"CREATE POLICY chat_messages_delete_own ON {MESSAGES} FOR DELETE TO authenticated USING (sender_id = auth.uid())",
        0,
        {("policies", f"{MESSAGES}.chat_messages_delete_own", "extra", "handled")},
        ("policies", f"{MESSAGES}.chat_messages_delete_own"),
        "every policy of public.chat_messages is replaced by 103_messaging_security",
    ),
    "index renamed": Variant(
        "staging", "ALTER INDEX public.idx_chat_messages_status RENAME TO chat_messages_status_idx", 0,
        {("indexes", f"{MESSAGES}.idx_chat_messages_status", "different", "harmless")},
        ("indexes", f"{MESSAGES}.idx_chat_messages_status"),
        "the same definition under another name (chat_messages_status_idx)",
    ),
    "seq key renamed": Variant(
        "prod", f"ALTER TABLE {MESSAGES} RENAME CONSTRAINT uq_chat_messages_chat_id_seq TO chat_messages_chat_id_seq_key", 0,
        {("constraints", f"{MESSAGES}.uq_chat_messages_chat_id_seq", "different", "harmless")},
        ("constraints", f"{MESSAGES}.uq_chat_messages_chat_id_seq"),
        "the same definition under another name (chat_messages_chat_id_seq_key)",
    ),
    "created_at dropped": Variant(
        "prod", f"ALTER TABLE {MESSAGES} DROP COLUMN created_at", 1,
        {("columns", f"{MESSAGES}.created_at", "missing", "blocking")},
        ("columns", f"{MESSAGES}.created_at"), "required by 102_unread_count_index, 103_messaging_security",
        f"ALTER TABLE {MESSAGES} ADD COLUMN created_at timestamp with time zone NOT NULL DEFAULT now();",
        upgrade_refuses=True,
    ),
    "seq key dropped": Variant(
        "staging", f"ALTER TABLE {MESSAGES} DROP CONSTRAINT uq_chat_messages_chat_id_seq", 1,
        {("constraints", f"{MESSAGES}.uq_chat_messages_chat_id_seq", "missing", "blocking")},
        ("constraints", f"{MESSAGES}.uq_chat_messages_chat_id_seq"),
        "no valid unique constraint or unique index on (chat_id, seq) under any name",
        f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_chat_messages_chat_id_seq ON {MESSAGES} (chat_id, seq);",
    ),
    "seq key as a unique index": Variant(
        # The guarantee, in another form: a valid unique index rejects duplicates and serves ON CONFLICT.
        "prod", f"ALTER TABLE {MESSAGES} DROP CONSTRAINT uq_chat_messages_chat_id_seq; "
                f"CREATE UNIQUE INDEX chat_messages_chat_seq_idx ON {MESSAGES} (chat_id, seq)", 0,
        {("constraints", f"{MESSAGES}.uq_chat_messages_chat_id_seq", "missing", "harmless"),
         ("indexes", f"{MESSAGES}.chat_messages_chat_seq_idx", "extra", "harmless")},
        ("constraints", f"{MESSAGES}.uq_chat_messages_chat_id_seq"),
        "unique key (chat_id, seq) on public.chat_messages is guaranteed here by chat_messages_chat_seq_idx",
    ),
    "client id column of another type": Variant(
        # Not handled by any revision: blocking, never harmless (the revisions' SQL assumes uuid).
        "staging", f"ALTER TABLE {MESSAGES} ALTER COLUMN client_generated_id TYPE text", 1,
        {("columns", f"{MESSAGES}.client_generated_id", "different", "blocking")},
        ("columns", f"{MESSAGES}.client_generated_id"), "promised by 000_staging_baseline, of the baseline's type uuid",
        f"ALTER TABLE {MESSAGES} ALTER COLUMN client_generated_id TYPE uuid USING client_generated_id::uuid;",
    ),
    "sender key NOT NULL meets ON DELETE SET NULL": Variant(
        # A contradiction the database already has: information, with its consequence.
        "staging",
        f"ALTER TABLE {MESSAGES} DROP CONSTRAINT chat_messages_sender_id_fkey, ADD CONSTRAINT chat_messages_sender_id_fkey "
        "FOREIGN KEY (sender_id) REFERENCES auth.users (id) ON DELETE SET NULL",
        0,
        {("constraints", f"{MESSAGES}.chat_messages_sender_id_fkey", "different", "information")},
        ("constraints", f"{MESSAGES}.chat_messages_sender_id_fkey"),
        "deleting a auth.users row it points to fails today (not-null violation), before any migration",
        f"ALTER TABLE {MESSAGES} ALTER COLUMN sender_id DROP NOT NULL",
    ),
    "unread count arguments renamed": Variant(
        "prod",
        """DROP FUNCTION public.get_unread_count(uuid, uuid);
        CREATE FUNCTION public.get_unread_count(chat_id uuid, user_id uuid) RETURNS bigint
        LANGUAGE sql STABLE SECURITY DEFINER AS $$
            SELECT count(*) FROM public.chat_messages m WHERE m.chat_id = $1 AND m.sender_id IS DISTINCT FROM $2
        $$""",
        1,
        {("functions", "public.get_unread_count(uuid, uuid)", "different", "blocking")},
        ("functions", "public.get_unread_count(uuid, uuid)"),
        "as (p_chat_id uuid, p_user_id uuid) returning bigint (the upgrade would refuse)",
        "ALTER FUNCTION public.get_unread_count(uuid, uuid) RENAME TO get_unread_count_before_adoption;",
        upgrade_refuses=True,
    ),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_a_live_variant_is_judged_and_left_unchanged(capsys, make_database, name):
    variant = VARIANTS[name]
    db = unadopted(make_database, variant.environment, variant.sql)
    before = db.schema()
    run = adopt_json(capsys, db)
    assert run.code == variant.code, run.out
    assert run.json["exit_code"] == run.code and run.json["adoptable"] is (run.code == 0)
    assert run.differences() == variant.differences
    difference = run.difference(*variant.about)
    assert variant.why_says in difference["why"]
    if variant.fix_says is None:
        assert difference["fix"] is None
    else:
        assert variant.fix_says in difference["fix"]
    assert db.schema() == before, "adopt changed the database"
    assert db.revision() is None
    assert bool(unmet_requirements(db)) is variant.upgrade_refuses


@contextmanager
def plain_connection(db):
    """A SQLAlchemy connection as postgres with the default search_path, like env.py's."""
    engine = create_engine(db.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def unmet_requirements(db) -> list[str]:
    """What env.py's requirements check would refuse an upgrade from the baseline for, on this database."""
    scripts = list(catalog.script_directory(db.environment).walk_revisions())[::-1][1:]
    with plain_connection(db) as conn:
        return [row[0] for row in conn.execute(text(requirements.problems_query(requirements.pending_checks(scripts))))]


def test_the_fix_for_a_missing_required_column_makes_the_database_adoptable(capsys, make_database):
    db = unadopted(make_database, "prod", f"ALTER TABLE {MESSAGES} DROP COLUMN created_at")
    fix = adopt_json(capsys, db).difference("columns", f"{MESSAGES}.created_at")["fix"]
    db.execute(fix)
    run = adopt_json(capsys, db)
    assert run.code == 0 and run.json["differences"] == [], run.out


# What a run of adopt's fixes must start from: every blocking variant, and the lookalike.
FIXABLE = {
    **{name: variant.sql for name, variant in VARIANTS.items() if variant.code == 1},
    "seq trigger and its function dropped": "DROP FUNCTION public.assign_message_seq() CASCADE",
    "seq trigger disabled": f"ALTER TABLE {MESSAGES} DISABLE TRIGGER trg_assign_message_seq",
    "client ids unique per sender under the baseline's index name, seq key a unique index": (
        f"ALTER TABLE {MESSAGES} DROP CONSTRAINT uq_chat_messages_client_generated, "
        "DROP CONSTRAINT uq_chat_messages_chat_id_seq; "
        f"CREATE UNIQUE INDEX uq_chat_messages_client_generated ON {MESSAGES} (sender_id, client_generated_id) "
        "WHERE client_generated_id IS NOT NULL; "
        f"CREATE UNIQUE INDEX uq_chat_messages_chat_id_seq ON {MESSAGES} (chat_id, seq)"
    ),
}
VARIANTS_ENVIRONMENT = {name: variant.environment for name, variant in VARIANTS.items()}


@pytest.mark.parametrize("name", FIXABLE)
def test_every_fix_adopt_prints_runs_and_then_adopt_and_stamp_pass(capsys, make_database, name):
    db = unadopted(make_database, VARIANTS_ENVIRONMENT.get(name, "prod"), FIXABLE[name])
    run = adopt_json(capsys, db)
    assert run.code == 1, run.out
    fixes = [d["fix"] for d in run.json["differences"] if d["classification"] == "blocking"]
    assert fixes and all(fixes), run.out
    for fix in fixes:
        # Each as printed, in order, as postgres; CONCURRENTLY needs a statement of its own.
        for statement in pglast.split(fix):
            db.execute(statement)
    after = adopt_json(capsys, db)
    assert after.code == 0, after.out
    assert not [d for d in after.json["differences"] if d["classification"] == "blocking"]
    db.alembic("-n", db.environment, "stamp", adopt.baseline_revision(db.environment))
    assert db.revision() == adopt.baseline_revision(db.environment)


def test_a_table_owner_the_migrating_role_cannot_act_as_blocks(capsys, make_database):
    db = unadopted(make_database, "staging")
    db.execute("DO $r$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'adopt_table_owner') THEN "
               "CREATE ROLE adopt_table_owner; END IF; END $r$; ALTER TABLE public.chats OWNER TO adopt_table_owner", admin=True)
    run = adopt_json(capsys, db)
    assert run.code == 1
    difference = run.difference("tables", "public.chats")
    assert difference["classification"] == "blocking"
    assert "103_messaging_security change it as postgres, who is not a member of its owner adopt_table_owner" in difference["why"]
    assert difference["fix"].startswith("ALTER TABLE public.chats OWNER TO postgres;  -- as adopt_table_owner")
    # Its grants moved with the ownership: no revision relies on the owner's own.
    assert {d["classification"] for d in run.json["differences"] if d["section"] == "grants"} == {"harmless"}
    assert any("owned by adopt_table_owner" in problem for problem in unmet_requirements(db))


# --- the report ----------------------------------------------------------------------------


def test_the_human_report_lists_the_differences_then_each_blocker_with_its_fix(capsys, make_database):
    db = unadopted(make_database, "prod", f"ALTER TABLE {MESSAGES} DROP COLUMN created_at; "
                                          f"ALTER TABLE {MESSAGES} ADD COLUMN edited boolean")
    run = run_adopt(capsys, "-n", "prod", urls={"prod": db.url})
    assert run.code == 1 and run.err == ""
    lines = run.out.splitlines()
    header = next(line for line in lines if line.startswith("SECTION"))
    assert header.split() == ["SECTION", "OBJECT", "CLASS", "DETAIL"]
    assert any(line.split()[:3] == ["columns", f"{MESSAGES}.edited", "harmless"] for line in lines)
    assert f"columns {MESSAGES}.created_at (blocking): not here; the baseline has timestamp with time zone, " \
           "NOT NULL, default now()" in run.out
    assert f"  fix: ALTER TABLE {MESSAGES} ADD COLUMN created_at timestamp with time zone NOT NULL DEFAULT now();" in lines
    assert lines[-1].startswith(f"BLOCKED: cannot adopt at 000_prod_baseline: 1 blocking difference from the baseline: "
                                f"columns {MESSAGES}.created_at (missing)")


def test_the_json_document(capsys, make_database):
    db = unadopted(make_database, "prod", f"ALTER TABLE {MESSAGES} ADD COLUMN edited boolean")
    document = adopt_json(capsys, db).json
    assert set(document) == {"command", "exit_code", "target", "adoptable", "adopted_at", "platform_defaults",
                             "baseline", "summary", "differences"}
    assert document["platform_defaults"] in ("default-privileges", "explicit-grants")
    assert (document["command"], document["exit_code"], document["adoptable"]) == ("adopt", 0, True)
    assert document["target"] == {"label": "prod", "environment": "prod", "database": db.url.replace(
        db.cluster.password, "***")}
    assert (document["baseline"], document["adopted_at"]) == ("000_prod_baseline", None)
    assert document["summary"] == {"harmless": 1, "handled": 0, "blocking": 0, "information": 0}
    assert [set(d) for d in document["differences"]] == [DIFFERENCE_KEYS]


def test_an_adopted_database_is_left_alone_without_comparing(capsys, make_database):
    db = make_database("prod")  # stamped at 000_prod_baseline
    db.execute(f"ALTER TABLE {MESSAGES} DROP COLUMN created_at")  # would block, were it compared
    run = run_adopt(capsys, "-n", "prod", urls={"prod": db.url})
    assert run.code == 0
    assert run.out.rstrip().endswith("already adopted at 000_prod_baseline; nothing to do")
    assert "SECTION" not in run.out
    document = adopt_json(capsys, db).json
    assert (document["adopted_at"], document["differences"], document["exit_code"]) == ("000_prod_baseline", [], 0)


def test_a_missing_url_is_exit_2_with_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("PROD_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env.local here
    run = run_adopt(capsys, "-n", "prod")
    assert run.code == 2 and run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: adopt could not run: PROD_DATABASE_URL is not set")


def test_the_script_runs_the_module(tmp_path):
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "adopt"), "-n", "prod", "--json"],
        env=alembic_cli.environment_with({}), cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert (set(document), document["exit_code"]) == ({"command", "exit_code", "error"}, 2)
    assert result.stderr.startswith("ERROR: adopt could not run: PROD_DATABASE_URL is not set")


# --- what env.py asks before a stamp ------------------------------------------------------------


def test_compare_and_blocking_work_on_a_plain_connection_and_leave_its_search_path(make_database):
    clean = unadopted(make_database, "prod")
    broken = unadopted(make_database, "prod", f"ALTER TABLE {MESSAGES} DROP COLUMN created_at")
    with plain_connection(clean) as conn:
        path = conn.execute(text("SHOW search_path")).scalar()
        # With the default search_path the server would print policies and
        # triggers unqualified: they would all differ from the baseline.
        assert adopt.compare(conn, "prod") == []
        assert conn.execute(text("SHOW search_path")).scalar() == path
    with plain_connection(broken) as conn:
        assert [d.object for d in adopt.blocking(conn, "prod")] == [f"{MESSAGES}.created_at"]
    assert "scripts/adopt -n prod lists each with its fix" in adopt.blocked_message(
        "prod", [adopt.Difference("columns", "x", "missing", "", "blocking", "")])


# --- a server without a Supabase project (issue 18) ------------------------------------------------


def test_adopt_works_on_a_server_without_a_supabase_project_and_names_the_stamp_that_marks_it(capsys, make_database):
    # Before: adopt said to stamp with -x mark_as, and that stamp, when blocked, said to run adopt.
    db = make_database("prod", marked=False)
    db.execute("DELETE FROM migration_meta.alembic_version; DROP TRIGGER trg_assign_message_seq ON public.chat_messages")
    urls = {"prod": db.url}
    blocked = db.alembic("-n", "prod", "-x", "mark_as=prod", "stamp", "000_prod_baseline", check=False)
    assert blocked.returncode != 0 and "scripts/adopt -n prod lists each with its fix" in blocked.output
    run = run_adopt(capsys, "-n", "prod", urls=urls)
    assert run.code == 1, run.out + run.err
    assert f"identity: {adopt.UNPROVEN}" in run.out
    assert "fix: CREATE TRIGGER trg_assign_message_seq" in run.out
    db.execute("CREATE TRIGGER trg_assign_message_seq BEFORE INSERT ON public.chat_messages "
               "FOR EACH ROW EXECUTE FUNCTION public.assign_message_seq()")
    run = run_adopt(capsys, "-n", "prod", urls=urls)
    assert run.code == 0
    verdict = run.out.rstrip().splitlines()[-1]
    assert verdict.startswith("ADOPTABLE: alembic -n prod -x mark_as=prod stamp 000_prod_baseline ")
    db.alembic("-n", "prod", "-x", "mark_as=prod", "stamp", "000_prod_baseline")  # what it names works
    assert db.revision() == "000_prod_baseline"
    assert run_adopt(capsys, "-n", "prod", urls=urls).out.rstrip().endswith("already adopted at 000_prod_baseline; nothing to do")
