"""Choosing the environment, and refusing everything else with one clear line.

Each refusal: a non-zero exit, a single FAILED line that names the problem,
no password in the output, and nothing changed in any database.
"""

from __future__ import annotations

import pytest

from chat_migrations.harness import alembic_cli
from chat_migrations.runtime.environments import REPO_ROOT, mask_url

from .conftest import head_of

COMMANDS = [
    ("history",),
    ("heads",),
    ("current",),
    ("upgrade", "head"),
    ("downgrade", "-1"),
    ("stamp", "head"),
    ("check",),
    ("upgrade", "head", "--sql"),
]


def failed_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("FAILED:")]
    assert result.returncode != 0, result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output, result.output
    # Printed once: not also logged as "ERROR [alembic.util.messaging] ...", no PL/pgSQL CONTEXT tail.
    assert "ERROR [" not in result.output and "CONTEXT:" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_without_an_environment_every_command_stops_before_touching_a_database(make_database, command):
    db = make_database("prod")
    before = (db.schema(), db.revision())
    result = alembic_cli.run(*command, urls={"prod": db.url, "staging": db.url}, check=False)
    line = failed_line(result)
    assert "no environment chosen: pass -n prod or -n staging" in line
    assert (db.schema(), db.revision()) == before


@pytest.mark.parametrize("command", [("current",), ("history",), ("upgrade", "head")], ids=" ".join)
def test_an_unknown_environment_is_refused_naming_the_choices(command):
    # Run from the repository root, as an operator does (alembic.ini and pyproject.toml there).
    result = alembic_cli.run("-n", "production", *command, check=False, cwd=REPO_ROOT)
    assert "unknown environment 'production': pass -n prod or -n staging" in failed_line(result)


def test_the_chosen_environment_only_is_used(make_database):
    prod = make_database("prod")
    staging = make_database("staging")
    prod.alembic("-n", "prod", "upgrade", "head", other=staging)
    assert prod.revision() == head_of("prod")
    assert staging.revision() == "000_staging_baseline"


@pytest.mark.parametrize("command", [("current",), ("upgrade", "head"), ("downgrade", "-1"), ("stamp", "head")], ids=" ".join)
def test_prod_revisions_never_run_on_a_database_marked_staging(make_database, command):
    staging = make_database("staging")
    before = (staging.schema(), staging.revision())
    result = alembic_cli.run("-n", "prod", *command, urls={"prod": staging.url}, check=False)
    line = failed_line(result)
    assert "wrong database: chose prod but this database is marked as 'staging'" in line
    assert (staging.schema(), staging.revision()) == before


def test_staging_revisions_never_run_on_prod(make_database):
    prod = make_database("prod")
    before = (prod.schema(), prod.revision())
    line = failed_line(alembic_cli.run("-n", "staging", "upgrade", "head", urls={"staging": prod.url}, check=False))
    assert "chose staging" in line and "'prod'" in line
    assert (prod.schema(), prod.revision()) == before


def test_a_supabase_url_of_the_other_project_is_refused_before_connecting():
    # Host of staging's project, chosen as prod: refused without any network access.
    url = "postgresql://postgres:s3cret-pw@db.mohctrsopquwoyfweadl.supabase.co:5432/postgres"
    line = failed_line(alembic_cli.run("-n", "prod", "upgrade", "head", urls={"prod": url}, check=False))
    assert "chose prod (Supabase project rxlqtyfhsocxnsnnnlwl)" in line
    assert "staging's database (project mohctrsopquwoyfweadl)" in line


def test_a_pooler_user_name_of_the_other_project_is_refused():
    url = "postgresql://postgres.rxlqtyfhsocxnsnnnlwl:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres"
    line = failed_line(alembic_cli.run("-n", "staging", "current", urls={"staging": url}, check=False))
    assert "prod's database (project rxlqtyfhsocxnsnnnlwl)" in line


def test_a_database_identified_by_its_pooler_user_gets_the_marker(cluster, make_database):
    # Locally a login named like Supabase's pooler user stands in for the URL identity; like
    # the pooler, it acts as postgres (the platform's superuser creates it, as Supabase's does).
    db = make_database("staging", marked=False)
    pooler_user = "postgres.mohctrsopquwoyfweadl"
    db.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{pooler_user}') THEN "
        f"CREATE ROLE \"{pooler_user}\" LOGIN; END IF; END $$; "
        f"ALTER ROLE \"{pooler_user}\" PASSWORD '{cluster.password}'; GRANT postgres TO \"{pooler_user}\"; "
        f"ALTER ROLE \"{pooler_user}\" SET role = 'postgres'",
        admin=True,
    )
    url = cluster.url(db.name).replace("postgresql://postgres:", f"postgresql://{pooler_user}:")
    alembic_cli.run("-n", "staging", "upgrade", "head", urls={"staging": url})
    assert db.scalar("SELECT environment FROM migration_meta.database_identity") == "staging"
    assert db.revision() == head_of("staging")


def test_the_operator_marks_a_local_database_once_with_mark_as(make_database):
    db = make_database("prod", marked=False)
    refused = failed_line(db.alembic("-n", "prod", "-x", "mark_as=staging", "current", check=False))
    assert "does not name the chosen environment prod" in refused
    db.alembic("-n", "prod", "-x", "mark_as=prod", "upgrade", "head")
    assert db.scalar("SELECT environment FROM migration_meta.database_identity") == "prod"
    # Marked once: later commands need no -x.
    assert head_of("prod") in db.alembic("-n", "prod", "current").stdout


def test_the_marker_is_readable_by_any_role_and_written_without_superuser(make_database):
    db = make_database("prod")
    assert db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE anon")
            cur.execute("SELECT environment FROM migration_meta.database_identity")
            assert cur.fetchone()[0] == "prod"
            cur.execute("RESET ROLE")
    finally:
        conn.close()


def test_hosted_supabase_refuses_a_custom_database_setting_to_postgres(make_database):
    # Why the marker is a row and not ALTER DATABASE ... SET (the old marker): postgres may not.
    import psycopg2

    db = make_database("prod")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        db.execute(f"ALTER DATABASE {db.name} SET migration.environment = 'prod'")


def test_an_unmarked_local_database_is_refused_with_the_fix(make_database):
    db = make_database("prod", marked=False)
    before = db.schema()
    line = failed_line(db.alembic("-n", "prod", "upgrade", "head", check=False))
    assert "cannot tell which environment" in line
    assert "alembic -n prod -x mark_as=prod" in line
    assert db.schema() == before


def test_a_missing_url_names_the_variable(tmp_path):
    result = alembic_cli.run("-n", "prod", "current", check=False, cwd=tmp_path)
    assert "PROD_DATABASE_URL is not set" in failed_line(result)


def test_the_url_is_read_from_env_local(tmp_path, make_database):
    db = make_database("staging")
    (tmp_path / ".env.local").write_text(f"# local settings\nexport STAGING_DATABASE_URL='{db.url}'\n")
    result = alembic_cli.run("-n", "staging", "current", cwd=tmp_path)
    assert "000_staging_baseline" in result.stdout


def test_an_unreachable_server_is_one_line_with_the_password_masked(cluster):
    from chat_migrations.harness.cluster import free_port

    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{free_port()}/postgres"
    line = failed_line(alembic_cli.run("-n", "prod", "current", urls={"prod": url}, check=False))
    assert "cannot connect to prod's database" in line
    assert "postgres:***@127.0.0.1" in line
    assert "hunter2-secret" not in line


def test_a_wrong_password_is_one_line_with_the_password_masked(cluster, make_database):
    db = make_database("prod")
    url = cluster.url(db.name, password="not-the-password")
    result = alembic_cli.run("-n", "prod", "upgrade", "head", urls={"prod": url}, check=False)
    line = failed_line(result)
    assert "password authentication failed" in line
    assert "not-the-password" not in result.output
    assert db.revision() == "000_prod_baseline"


def test_the_right_password_over_tcp_works(cluster, make_database):
    db = make_database("prod")
    result = alembic_cli.run("-n", "prod", "current", urls={"prod": cluster.url(db.name)})
    assert cluster.password not in result.output
    assert "000_prod_baseline" in result.stdout


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://u:pw@h:5432/d", "postgresql://u:***@h:5432/d"),
        ("postgres://postgres.ref:p%40ss@pooler:5432/postgres", "postgresql://postgres.ref:***@pooler:5432/postgres"),
        ("postgresql://u@h/d?password=pw-secret&sslmode=require", "postgresql://u@h/d?sslmode=require&password=***"),
    ],
)
def test_mask_url_hides_every_password(url, masked):
    assert mask_url(url) == masked
