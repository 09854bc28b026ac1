"""scripts/rehearse: the migration rehearsed on a clone of a lookalike, which is only read."""

from __future__ import annotations

import itertools
import os
import subprocess

import pytest

from chat_migrations.checks import validate
from chat_migrations.harness import rehearse
from chat_migrations.checks.checks_cli import environment_target
from chat_migrations.runtime.environments import REPO_ROOT, load_environments

from .conftest import PLATFORM

REHEARSE = REPO_ROOT / "scripts" / "rehearse"
_clones = itertools.count()


def source_state(db):
    return db.schema(), db.revision(), db.checksums()


def without_database_urls() -> dict[str, str]:
    variables = dict(os.environ)
    for environment in load_environments().values():
        variables.pop(environment.url_env, None)
    return variables


@pytest.fixture
def rehearsal_on(cluster):
    """rehearsal_on(source_db, environment) -> a Rehearsal on the session's server; its clone is dropped after."""
    made = []

    def make(source, environment: str, **options) -> rehearse.Rehearsal:
        target = environment_target(environment, {environment: source.url})
        made.append(f"rehearsal_{next(_clones)}_{environment}")
        return rehearse.Rehearsal(target.environment, target, cluster, database=made[-1], say=lambda _: None, **options)

    yield make
    for database in made:
        cluster.drop_database(database)


def outcomes(rehearsal: rehearse.Rehearsal) -> dict[str, str]:
    return {result.name: result.outcome for result in rehearsal.results}


@pytest.mark.platform
def test_rehearsal_of_a_lookalike_passes_every_step_and_only_reads_the_source(make_database, tmp_path):
    source = make_database("prod")
    before = source_state(source)
    result = subprocess.run(
        [str(REHEARSE), "-n", "prod", "--from-url", source.url, "--sample-rows", "40", "--platform", PLATFORM],
        cwd=tmp_path, env=without_database_urls(), capture_output=True, text=True,
    )
    assert result.returncode == rehearse.EXIT_OK, result.stdout + result.stderr
    report = result.stdout.split("REHEARSAL of prod", 1)[1]
    for step in ("dump the source", "restore into", "preflight", "upgrade head", "validate",
                 "downgrade to the source's revision", "compare with the schema before the upgrade", "upgrade head again"):
        assert any(line.startswith(step) and "PASS" in line.split() for line in report.splitlines()), f"{step}:\n{report}"
    assert "alembic -n prod downgrade 000_prod_baseline: exit 0" in report
    assert "sampled 40 messages" in result.stdout
    assert "OK: every step passed" in report
    assert source_state(source) == before


def test_rows_that_block_the_upgrade_fail_the_rehearsal_where_they_block_it(make_database, rehearsal_on):
    source = make_database("prod")
    source.execute("UPDATE public.chat_participants SET user_id = NULL WHERE id = (SELECT id FROM public.chat_participants LIMIT 1)")
    before = source_state(source)
    rehearsal = rehearsal_on(source, "prod", sample_rows=1000)
    assert rehearsal.run() == rehearse.EXIT_FAILED
    assert outcomes(rehearsal) == {
        "dump the source (schema, bookkeeping rows)": "PASS",
        f"restore into a throwaway database ({rehearsal.database})": "PASS",
        "preflight": "FAIL",
        "upgrade head": "FAIL",
        "validate": "not run",
        "downgrade to the source's revision": "not run",
        "compare with the schema before the upgrade": "not run",
        "upgrade head again": "not run",
    }
    report = rehearsal.report()
    assert "have user_id NULL" in report and "FAILED: preflight, upgrade head" in report
    assert source_state(source) == before


def test_a_check_that_cannot_run_is_a_failed_step_not_a_skipped_one(make_database, rehearsal_on, monkeypatch):
    def cannot_run(argv, *, urls):
        print("validate: cannot run: the clone went away")
        return 2
    monkeypatch.setattr(validate, "main", cannot_run)
    rehearsal = rehearsal_on(make_database("staging"), "staging")
    assert rehearsal.run() == rehearse.EXIT_FAILED
    results = {r.name: r for r in rehearsal.results}
    assert results["validate"].outcome == "FAIL"
    assert "scripts/validate -n staging exited 2" in results["validate"].detail
    assert "the clone went away" in results["validate"].detail
    # validate only checks: the rollback rehearsal goes on without it.
    assert results["compare with the schema before the upgrade"].outcome == "PASS"


def test_a_rollback_that_is_not_exact_is_reported_with_its_first_difference(make_database, rehearsal_on):
    source = make_database("staging")
    rehearsal = rehearsal_on(source, "staging")
    assert rehearsal.run() == rehearse.EXIT_OK
    original = rehearse.schema_dump(rehearsal.clone_url)
    source_index = "CREATE INDEX idx_chat_messages_chat_id_seq_desc ON public.chat_messages USING btree (chat_id, seq DESC);"
    assert source_index in original
    with pytest.raises(rehearse.StepFailed) as failure:
        rehearsal._compare(original.replace(source_index, source_index.replace("seq DESC)", "seq DESC, id)")))
    assert "the rollback is not exact; first difference" in str(failure.value)
    assert ("-CREATE INDEX idx_chat_messages_chat_id_seq_desc ON public.chat_messages USING btree (chat_id, seq DESC, id);"
            in str(failure.value))


@pytest.mark.parametrize(
    ("kind", "environment", "message"),
    [
        ("platform", "prod", "never adopted"),
        ("observed", "staging", "wrong database: chose staging but this database is marked as 'prod'"),
    ],
)
def test_a_source_that_cannot_be_rehearsed_stops_before_any_step(make_database, rehearsal_on, kind, environment, message):
    source = make_database("prod", kind)
    rehearsal = rehearsal_on(source, environment)
    assert rehearsal.run() == rehearse.EXIT_CANNOT_RUN
    assert message in rehearsal.results[0].detail
    assert [r.outcome for r in rehearsal.results[2:]] == ["not run"] * 6
    # The last line says why, not only which step (before: "FAILED: dump the source ... (0.1s)").
    last = rehearsal.report().rstrip().splitlines()[-1]
    assert last.startswith(f"CANNOT RUN: {rehearsal.results[0].name} failed, no step ran: ") and message in last


def test_no_url_for_the_environment_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([str(REHEARSE), "-n", "prod"], cwd=tmp_path, env=without_database_urls(), capture_output=True, text=True)
    assert result.returncode == rehearse.EXIT_CANNOT_RUN
    assert result.stderr.strip() == (
        "rehearse: PROD_DATABASE_URL is not set: export it or put it in .env.local (the prod database's connection string)"
    )
