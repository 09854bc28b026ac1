"""`alembic stamp REV` believes nothing: it compares the live schema with what REV promises, and refuses
(one line, nothing written) unless the database holds it.

Run as postgres through the real alembic command line, on observed databases
(at their baseline) and on databases at head.
"""

from __future__ import annotations

import pytest

from chat_migrations.schema import history


def stamp(db, revision: str):
    return db.alembic("-n", db.environment, "stamp", revision, check=False)


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_stamp_head_on_a_database_at_its_baseline_is_refused_and_writes_nothing(make_database, environment):
    db = make_database(environment)  # observed, stamped at its baseline
    before, schema = db.revision(), db.schema()
    result = stamp(db, "head")
    assert result.returncode != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"cannot stamp {environment} at {history.head_revision(environment)}: the database does not hold what " \
           "the revisions promise there" in lines[0]
    assert "nothing was changed" in lines[0]
    assert db.revision() == before and db.schema() == schema


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_every_revision_after_the_baseline_is_refused_on_the_baseline(make_database, environment):
    db = make_database(environment)
    after_baseline = [s.revision for s in history.chain(environment)[1:]]
    # 100_converged promises nothing of its own, but everything below it still holds: refused all the same.
    refused = [revision for revision in after_baseline if stamp(db, revision).returncode != 0]
    assert refused == after_baseline
    assert db.revision() == history.base_revision(environment)


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_stamp_of_the_revision_the_database_holds_is_accepted(make_database, environment):
    db = make_database(environment, "head")
    db.execute("DELETE FROM migration_meta.alembic_version")  # the bookkeeping lost, the schema kept
    result = stamp(db, "head")
    assert result.returncode == 0, result.stderr
    assert db.revision() == history.head_revision(environment)


def test_one_broken_promise_is_enough_to_refuse_and_is_named(make_database):
    db = make_database("prod", "head")
    db.execute("DELETE FROM migration_meta.alembic_version")
    db.execute("REVOKE UPDATE (last_read_at) ON public.chat_participants FROM authenticated")
    result = stamp(db, "head")
    assert result.returncode != 0
    assert "authenticated's UPDATE on columns of public.chat_participants: missing on last_read_at" in result.output
    assert db.revision() is None


def test_a_downgrade_after_a_refused_stamp_does_not_write_the_later_revisions_functions(make_database):
    # Before: stamp head on a baseline was accepted, and downgrade -1 then wrote 103's functions onto it.
    db = make_database("staging")
    schema = db.schema()
    assert stamp(db, "head").returncode != 0
    assert db.alembic("-n", "staging", "downgrade", "-1", check=False).returncode != 0  # refused below the baseline
    assert db.schema() == schema
