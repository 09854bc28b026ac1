"""The ``alembic --sql`` scripts themselves: SQL any client runs as-is, exact both ways.

tests/test_exact_rollback.py applies the whole upgrade from the baseline and
its rollback with psql; these tests add what an operator meets besides: a
script that is plain SQL (the SQL editor has no psql meta-commands), a
rollback script run on a database the pipeline upgraded online, an upgrade
from a later starting revision, and the guard of the rollback script.
"""

from __future__ import annotations

import pytest

from chat_migrations.harness import alembic_cli
from chat_migrations.review import lock_classes

from .conftest import ENVIRONMENTS, assert_same_schema, revisions_in_order


def offline_script(environment: str, direction: str, span: str) -> str:
    return alembic_cli.run("-n", environment, direction, span, "--sql").stdout


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_offline_scripts_are_plain_sql_with_the_guard_first_and_concurrent_builds_outside_transactions(environment, direction):
    base = revisions_in_order(environment)[0]
    script = offline_script(environment, direction, f"{base}:head" if direction == "upgrade" else f"head:{base}")
    statements = [lock_classes.leading_comments(s)[1] for s in lock_classes.split_statements(script)]
    assert statements[0].startswith("DO $guard$")
    code = lock_classes.code_only(script)
    meta_commands = [line for line in code.splitlines() if line.lstrip().startswith("\\")]
    assert not meta_commands, f"psql meta-commands, which the SQL editor rejects: {meta_commands}"
    in_transaction = False
    for statement in statements:
        word = statement.split()[0].upper() if statement else ""
        if word in ("BEGIN", "COMMIT"):
            in_transaction = word == "BEGIN"
        elif lock_classes.classify(statement).run_alone:
            assert not in_transaction, f"inside BEGIN ... COMMIT: {statement}"
    assert not in_transaction, "the script ends inside a transaction"


def test_offline_rollback_of_a_database_the_pipeline_upgraded_online_is_exact(make_database, environment, psql):
    db = make_database(environment)
    original = db.schema()
    base = revisions_in_order(environment)[0]
    db.alembic("-n", environment, "upgrade", "head")
    psql(db, offline_script(environment, "downgrade", f"head:{base}"))
    assert db.revision() == base
    assert_same_schema(db.schema(), original, f"{environment} upgraded online, rolled back by the --sql script")


def test_offline_upgrade_from_a_later_revision_equals_the_online_upgrade(make_database, environment, psql):
    history = revisions_in_order(environment)
    start = history[len(history) // 2]
    db = make_database(environment)
    db.alembic("-n", environment, "upgrade", start)
    before = db.schema()
    psql(db, offline_script(environment, "upgrade", f"{start}:head"))
    online = make_database(environment)
    online.alembic("-n", environment, "upgrade", "head")
    assert db.revision() == online.revision() == history[-1]
    assert_same_schema(db.schema(), online.schema(), f"{environment} upgraded by the script from {start}")
    psql(db, offline_script(environment, "downgrade", f"head:{start}"))
    assert db.revision() == start
    assert_same_schema(db.schema(), before, f"{environment} rolled back by the script to {start}")


def test_offline_rollback_stops_at_the_guard_on_the_other_environments_database(make_database, environment, psql):
    other = next(e for e in ENVIRONMENTS if e != environment)
    target = make_database(other)
    target.alembic("-n", other, "upgrade", "head")
    before, revision = target.schema(), target.revision()
    base = revisions_in_order(environment)[0]
    result = psql(target, offline_script(environment, "downgrade", f"head:{base}"), check=False)
    assert result.returncode != 0
    assert f"this script is for {environment}" in result.stderr and f"marked as '{other}'" in result.stderr
    assert target.revision() == revision
    assert_same_schema(target.schema(), before, f"{other} after {environment}'s rollback script was refused")
