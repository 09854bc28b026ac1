"""The migration itself, driven through the real alembic CLI on real databases.

Exactness is proved by comparing pg_dump --schema-only, never by exit codes.
"""

from __future__ import annotations


import pytest

from chat_migrations.harness import alembic_cli
from chat_migrations.frozen import baseline
from chat_migrations.runtime.environments import REPO_ROOT

from .conftest import assert_same_schema, head_of, project_with_shared_revision, revisions_in_order


@pytest.mark.slow
def test_every_downgrade_step_restores_the_schema_before_its_upgrade(make_database, environment):
    db = make_database(environment, "platform")
    history = revisions_in_order(environment)
    dumps = [db.schema()]
    for revision in history:
        db.alembic("-n", environment, "upgrade", revision)
        assert db.revision() == revision
        dumps.append(db.schema())
    for step in range(len(history), 0, -1):
        db.alembic("-n", environment, "downgrade", "-1")
        assert db.revision() == (history[step - 2] if step > 1 else None)
        assert_same_schema(db.schema(), dumps[step - 1], f"{environment} after downgrading {history[step - 1]}")
    db.alembic("-n", environment, "upgrade", "head")
    assert_same_schema(db.schema(), dumps[-1], f"{environment} upgraded again")


def test_baseline_revision_creates_exactly_the_observed_database(make_database, environment):
    built_by_alembic = make_database(environment, "platform")
    built_by_alembic.alembic("-n", environment, "upgrade", f"000_{environment}_baseline")
    adopted = make_database(environment, "observed")
    assert_same_schema(built_by_alembic.schema(), adopted.schema(), f"{environment} baseline")


def test_environments_converge_to_identical_schemas_at_head(make_database):
    staging = make_database("staging")
    prod = make_database("prod")
    assert staging.schema() != prod.schema(), "the observed environments should start out drifted"
    staging.alembic("-n", "staging", "upgrade", "head")
    prod.alembic("-n", "prod", "upgrade", "head")
    assert_same_schema(staging.schema(), prod.schema(), "staging vs prod at head")
    # And the same schema as a database built from nothing.
    fresh = make_database("prod", "platform")
    fresh.alembic("-n", "prod", "upgrade", "head")
    assert_same_schema(fresh.schema(), prod.schema(), "fresh prod vs adopted prod at head")


def test_alembic_check_finds_no_difference_from_the_models_at_head(make_database, environment):
    db = make_database(environment)
    db.alembic("-n", environment, "upgrade", "head")
    result = db.alembic("-n", environment, "check")
    assert "No new upgrade operations detected" in result.output


def test_alembic_check_reports_a_database_that_is_behind(make_database, environment):
    db = make_database(environment)
    result = db.alembic("-n", environment, "check", check=False)
    assert result.returncode != 0
    assert "not up to date" in result.output


def test_rows_survive_the_upgrade_and_the_rollback(make_database, environment):
    db = make_database(environment)
    before = db.checksums()
    assert before["public.chat_messages"][0] == 183
    db.alembic("-n", environment, "upgrade", "head")
    # (104's last_read_seq is NULL in every existing row: checksums leave NULLs out.)
    assert db.checksums() == before
    assert db.query("SELECT count(*) FROM public.chat_participants WHERE last_read_seq IS NOT NULL") == [(0,)]
    db.alembic("-n", environment, "downgrade", f"000_{environment}_baseline")
    assert db.checksums() == before


def test_adopted_database_is_stamped_at_its_baseline_and_upgrades(make_database, environment):
    db = make_database(environment)  # created without Alembic, then `alembic stamp <baseline>`
    assert db.revision() == f"000_{environment}_baseline"
    current = db.alembic("-n", environment, "current")
    assert f"000_{environment}_baseline" in current.stdout
    db.alembic("-n", environment, "upgrade", "head")
    assert db.revision() == head_of(environment)


def test_stamping_a_database_created_without_alembic(cluster, make_database, environment):
    db = make_database(environment, "platform")
    db.execute(baseline.create_sql(environment))
    before = db.schema()
    db.alembic("-n", environment, "stamp", f"000_{environment}_baseline")
    assert db.revision() == f"000_{environment}_baseline"
    assert_same_schema(db.schema(), before, "stamp must not change the schema")


def test_downgrading_past_the_baseline_refuses_while_the_tables_hold_rows(make_database, environment):
    db = make_database(environment)  # an adopted database, with its rows
    before = (db.schema(), db.checksums())
    result = db.alembic("-n", environment, "downgrade", "base", check=False)
    assert result.returncode != 0
    assert "refusing to downgrade past the baseline: the chat tables hold rows" in result.output
    assert (db.schema(), db.checksums()) == before
    assert db.revision() == f"000_{environment}_baseline"


def test_downgrade_base_from_head_refuses_before_its_first_step(make_database, environment, psql):
    # It used to roll back every revision above the baseline, then refuse at the baseline.
    db = make_database(environment, "head")
    before = (db.schema(), db.checksums(), db.revision())
    result = db.alembic("-n", environment, "downgrade", "base", check=False)
    assert result.returncode == 255
    lines = [line for line in result.output.splitlines() if line.startswith("FAILED:")]
    assert len(lines) == 1 and "refusing to downgrade past the baseline" in lines[0] and "nothing was changed" in lines[0]
    assert "Running downgrade" not in result.output
    assert (db.schema(), db.checksums(), db.revision()) == before
    # The reviewed script refuses at its first statement after the guard, too.
    script = db.alembic("-n", environment, "downgrade", f"{head_of(environment)}:base", "--sql").stdout
    refused = psql(db, script, check=False)
    assert refused.returncode != 0 and "refusing to downgrade past the baseline" in refused.stderr
    assert (db.schema(), db.checksums(), db.revision()) == before


def test_prod_rollback_keeps_the_sender_index_that_existed_before(make_database):
    db = make_database("prod")
    db.alembic("-n", "prod", "upgrade", "head")
    db.alembic("-n", "prod", "downgrade", "000_prod_baseline")
    assert db.scalar("SELECT to_regclass('public.idx_chat_messages_sender_id') IS NOT NULL")


def test_prod_rollback_removes_the_sender_index_when_the_upgrade_created_it(make_database):
    # The plan's summary claims prod lacked this index; on such a database the
    # upgrade creates it and the rollback must remove it again.
    db = make_database("prod")
    db.execute("DROP INDEX public.idx_chat_messages_sender_id")
    before = db.schema()
    db.alembic("-n", "prod", "upgrade", "001_schema_alignment")
    assert db.scalar("SELECT to_regclass('public.idx_chat_messages_sender_id') IS NOT NULL")
    db.alembic("-n", "prod", "downgrade", "-1")
    assert_same_schema(db.schema(), before, "prod without the index, rolled back")


def test_return_type_change_keeps_owner_grants_and_comment(make_database):
    db = make_database("staging")
    # The team's own owner role, which postgres belongs to (created by the platform's superuser).
    db.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_owner') THEN CREATE ROLE chat_owner; "
        "END IF; END $$; GRANT chat_owner TO postgres; GRANT USAGE, CREATE ON SCHEMA public TO chat_owner",
        admin=True,
    )
    db.execute(
        """
        ALTER FUNCTION public.mark_messages_as_read(uuid, uuid) OWNER TO chat_owner;
        REVOKE ALL ON FUNCTION public.mark_messages_as_read(uuid, uuid) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION public.mark_messages_as_read(uuid, uuid) TO anon WITH GRANT OPTION;
        COMMENT ON FUNCTION public.mark_messages_as_read(uuid, uuid) IS 'staging''s own words';
        """
    )
    state = """
        SELECT pg_get_userbyid(proowner), proacl::text, obj_description(oid, 'pg_proc'),
               pg_get_function_result(oid)
          FROM pg_proc WHERE oid = 'public.mark_messages_as_read(uuid, uuid)'::regprocedure
    """
    owner, acl, comment, result = db.query(state)[0]
    assert result == "void"
    before = db.schema()
    db.alembic("-n", "staging", "upgrade", "002_function_updates_staging")
    assert db.query(state)[0] == (owner, acl, comment, "TABLE(updated_count bigint)")
    db.alembic("-n", "staging", "downgrade", "-1")
    assert_same_schema(db.schema(), before, "staging with its own grants, rolled back")


SHARED_REVISION = '''
"""A shared revision written once for every environment (test only)."""

from alembic import op

from chat_migrations.runtime.promises import Column, Promises

revision = "999_test_shared"
down_revision = "CURRENT_HEAD"
branch_labels = None
depends_on = None
promises = Promises((Column("public.chat_messages", "edited_at", "timestamp with time zone", not_null=False),))


def upgrade() -> None:
    op.execute("ALTER TABLE public.chat_messages ADD COLUMN edited_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE public.chat_messages DROP COLUMN edited_at")
'''


def test_a_shared_revision_after_the_convergence_point_applies_and_rolls_back_on_both(tmp_path, make_database):
    # Written once, after whatever the shared history's head is now.
    shared_head = head_of("prod")
    assert shared_head == head_of("staging")
    ini = project_with_shared_revision(
        tmp_path, "999_test_shared", SHARED_REVISION.replace("CURRENT_HEAD", shared_head)
    )
    for environment in ("staging", "prod"):
        db = make_database(environment)
        db.alembic("-n", environment, "upgrade", "head")
        converged = db.schema()
        db.alembic("-c", ini, "-n", environment, "upgrade", "head")
        assert db.revision() == "999_test_shared"
        assert db.scalar(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'chat_messages' AND column_name = 'edited_at'"
        ) == 1
        heads = db.alembic("-c", ini, "-n", environment, "heads").stdout
        assert heads.split()[0] == "999_test_shared"
        db.alembic("-c", ini, "-n", environment, "downgrade", "-1")
        assert_same_schema(db.schema(), converged, f"{environment} after the shared revision's downgrade")


def test_each_environment_has_a_single_head_after_the_convergence_point(environment):
    heads = alembic_cli.run("-n", environment, "heads").stdout.strip().splitlines()
    assert len(heads) == 1 and heads[0].endswith("(head)")
    history = revisions_in_order(environment)
    assert history[0] == f"000_{environment}_baseline" and "100_converged" in history


def test_every_revision_documents_environment_locks_and_downgrade_testing():
    for path in sorted((REPO_ROOT / "alembic" / "versions").rglob("*.py")):
        docstring = path.read_text().split('"""')[1]
        for heading in ("Environment:", "Why:", "Locks:", "Downgrade verified:"):
            assert heading in docstring, f"{path.relative_to(REPO_ROOT)} lacks '{heading}'"


def test_offline_sql_applies_on_the_right_database(make_database, psql):
    db = make_database("prod")
    script = db.alembic("-n", "prod", "upgrade", "000_prod_baseline:head", "--sql").stdout
    assert script.lstrip().startswith("DO $guard$")
    psql(db, script)
    assert db.revision() == head_of("prod")
    online = make_database("prod")
    online.alembic("-n", "prod", "upgrade", "head")
    assert_same_schema(db.schema(), online.schema(), "--sql output applied with psql vs alembic upgrade")


def test_offline_sql_stops_at_the_guard_on_the_wrong_database(make_database, psql):
    staging = make_database("staging")
    before = staging.schema()
    script = alembic_cli.run("-n", "prod", "upgrade", "000_prod_baseline:head", "--sql").stdout
    result = psql(staging, script, check=False)
    assert result.returncode != 0
    assert "wrong database: this script is for prod" in result.stderr
    assert "marked as 'staging'" in result.stderr
    assert staging.revision() == "000_staging_baseline"
    assert_same_schema(staging.schema(), before, "staging after the refused prod script")


def test_revision_files_are_named_after_their_ids():
    for path in (REPO_ROOT / "alembic" / "versions").rglob("*.py"):
        assert f'revision: str = "{path.stem}"' in path.read_text(), path.name


def test_plan_phase_revisions_exist_with_the_plan_file_names():
    versions = REPO_ROOT / "alembic" / "versions"
    assert (versions / "prod" / "001_schema_alignment.py").exists()
    assert (versions / "staging" / "002_function_updates_staging.py").exists()
    assert (versions / "staging" / "003_index_alignment.py").exists()

