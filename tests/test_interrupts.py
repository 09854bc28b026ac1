"""An upgrade interrupted at any statement leaves the database rerunnable and exactly rollbackable.

For every statement the migration sends between the baseline and head, in
both environments, the run is interrupted just before it: by SIGINT (what
Ctrl-C does) and by another session terminating the migration's backend.
Then, on one copy, the same upgrade runs again and must reach exactly the
schema a clean upgrade gives; on another copy, the rollback to the baseline
must give back exactly the schema from before (pg_dump compared), with no
snapshot rows, helper checks or half-built indexes left. The interrupted run
itself must end with one FAILED line that says where the database stands.

The runs are the real alembic command line, in this process (alembic.config.main)
so that a few hundred of them stay cheap; the fault comes from
chat_migrations.runtime.faults.
"""

from __future__ import annotations

import pytest

from chat_migrations.harness import alembic_cli
from chat_migrations.runtime import faults
from chat_migrations.schema import history

from .conftest import ENVIRONMENTS, assert_same_schema


def alembic(db, *args: str, fault: str | None = None) -> tuple[int, str]:
    result = alembic_cli.run_in_process(
        "-n", db.environment, *args, urls={db.environment: db.url}, check=False,
        extra_env={faults.VARIABLE: fault} if fault else None,
    )
    return result.returncode, result.output


def snapshots(db) -> list:
    return db.query(
        "SELECT revision, object_kind, object_name, snapshot::text FROM migration_meta.rollback_snapshots ORDER BY 1, 2, 3"
    )


def no_leftovers(db) -> None:
    assert db.scalar(
        "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%\\_not\\_null\\_migration'"
    ) == 0
    assert db.scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0


@pytest.mark.exhaustive
@pytest.mark.parametrize("kind", ["sigint", "terminate"])
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_an_upgrade_interrupted_at_any_statement_reruns_or_rolls_back_exactly(
    make_database, environment, kind
):
    observed = make_database(environment).schema()
    head_db = make_database(environment, "head")
    head, head_snapshots = head_db.schema(), snapshots(head_db)
    baseline = f"000_{environment}_baseline"
    statement = 0
    while True:
        statement += 1
        rerun = make_database(environment)
        code, output = alembic(rerun, "upgrade", "head", fault=f"{kind}:{statement}")
        if code == 0:
            break  # past the last statement: the upgrade ran whole
        failed = [line for line in output.splitlines() if line.startswith("FAILED:")]
        assert len(failed) == 1 and "Traceback" not in output, output
        # It says where the database stands, as it reads back, or that nothing was changed.
        assert f"{environment} is at {rerun.revision()}" in failed[0] or "nothing was changed" in failed[0], failed[0]
        rollback = make_database(environment, copy_of=rerun)  # the same interrupted state, twice

        code, output = alembic(rerun, "upgrade", "head")
        assert code == 0, f"rerun after a fault at statement {statement}:\n{output}"
        assert_same_schema(rerun.schema(), head, f"rerun after {kind} at statement {statement}")
        no_leftovers(rerun)
        # What the rerun recorded is what a clean upgrade records, so its rollback is exact too.
        assert snapshots(rerun) == head_snapshots, f"snapshots after {kind} at statement {statement}"

        code, output = alembic(rollback, "downgrade", baseline)
        assert code == 0, f"rollback after a fault at statement {statement}:\n{output}"
        assert_same_schema(rollback.schema(), observed, f"rollback after {kind} at statement {statement}")
        no_leftovers(rollback)
        assert snapshots(rollback) == []
        rerun.drop()
        rollback.drop()
    assert statement > 20, "the fault never struck: the run has fewer statements than expected"


@pytest.mark.parametrize("kind", ["sigint", "terminate"])
def test_the_newest_revision_interrupted_at_any_of_its_statements_reruns_or_rolls_back_exactly(make_database, kind):
    # The newest revision alone, on every run of the suite (the whole matrix is exhaustive): it is the one a
    # team just wrote, and the one whose leftovers a new kind of step (a storage parameter, say) brings.
    chain = [s.revision for s in history.chain("staging")]
    before_db = make_database("staging")
    alembic(before_db, "upgrade", chain[-2])
    before, before_snapshots = before_db.schema(), snapshots(before_db)
    clean = make_database("staging", copy_of=before_db)
    alembic(clean, "upgrade", "head")
    after, after_snapshots = clean.schema(), snapshots(clean)
    statement = 0
    while True:
        statement += 1
        rerun = make_database("staging", copy_of=before_db)
        code, output = alembic(rerun, "upgrade", "head", fault=f"{kind}:{statement}")
        if code == 0:
            break
        rollback = make_database("staging", copy_of=rerun)
        code, output = alembic(rerun, "upgrade", "head")
        assert code == 0, output
        assert_same_schema(rerun.schema(), after, f"rerun after {kind} at statement {statement}")
        assert snapshots(rerun) == after_snapshots, f"snapshots after {kind} at statement {statement}"
        code, output = alembic(rollback, "downgrade", chain[-2])
        assert code == 0, output
        assert_same_schema(rollback.schema(), before, f"rollback after {kind} at statement {statement}")
        assert snapshots(rollback) == before_snapshots
        rerun.drop()
        rollback.drop()
    assert statement > 3
