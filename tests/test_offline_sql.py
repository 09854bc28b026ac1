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


# --- where the database stands (issue 18) ---------------------------------------------------


def test_a_rollback_script_run_a_second_time_is_refused_and_changes_nothing(make_database, environment, psql):
    # Before: the second run replayed the frozen baseline's functions, policies and grants over it, exit 0.
    db = make_database(environment)
    history = revisions_in_order(environment)
    db.alembic("-n", environment, "upgrade", "head")
    rollback = offline_script(environment, "downgrade", f"head:{history[0]}")
    psql(db, rollback)
    before, recorded = db.schema(), db.scalar("SELECT count(*) FROM migration_meta.rollback_snapshots")
    result = psql(db, rollback, check=False)
    assert result.returncode != 0
    assert f"expected {environment} at {history[-1]} (where this script starts), found {history[0]}" in result.stderr
    assert "nothing was changed" in result.stderr
    assert db.revision() == history[0]
    assert db.scalar("SELECT count(*) FROM migration_meta.rollback_snapshots") == recorded
    assert_same_schema(db.schema(), before, f"{environment} after its rollback script ran a second time")


def test_an_upgrade_script_from_another_revision_is_refused_before_its_first_change(make_database, environment, psql):
    history = revisions_in_order(environment)
    db = make_database(environment)  # at the baseline
    before = db.schema()
    result = psql(db, offline_script(environment, "upgrade", f"{history[1]}:head"), check=False)
    assert result.returncode != 0
    assert f"expected {environment} at {history[1]} (where this script starts), found {history[0]}" in result.stderr
    assert db.revision() == history[0]
    assert_same_schema(db.schema(), before, f"{environment} after a script for another starting revision")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_upgrade_sql_without_a_range_is_refused_before_anything_is_printed(environment):
    # Before: it printed the baseline's CREATE TABLEs, to run on a live database.
    baseline = revisions_in_order(environment)[0]
    result = alembic_cli.run("-n", environment, "upgrade", "head", "--sql", check=False)
    # alembic prints its FAILED line on stdout: that line is all there is.
    assert result.returncode != 0
    (line,) = result.stdout.splitlines()
    assert line.startswith("FAILED: ")
    assert f"alembic -n {environment} upgrade {baseline}:head --sql" in line and "nothing was printed" in line
    # Asked for on purpose, from nothing: the script checks that nothing is recorded.
    script = offline_script(environment, "upgrade", "base:head")
    assert f"expected {environment} with no revision recorded" in script and "CREATE TABLE public.chats" in script


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_range_starting_at_the_other_environments_baseline_is_refused_before_anything_is_printed(environment):
    # Before: it printed the guard and the bookkeeping, then failed.
    other = next(e for e in ENVIRONMENTS if e != environment)
    other_baseline = revisions_in_order(other)[0]
    for direction, span in (("upgrade", f"{other_baseline}:head"), ("downgrade", f"{other_baseline}:base")):
        result = alembic_cli.run("-n", environment, direction, span, "--sql", check=False)
        (line,) = result.stdout.splitlines()
        assert result.returncode != 0 and line.startswith("FAILED: "), span
        assert f"range starts at '{other_baseline}', which is not a revision of {environment}" in line


def test_an_upgrade_script_refuses_up_front_an_index_only_the_online_command_converges(make_database, psql):
    # Before: 001 and 005 committed, and the script stopped in the middle, at 006's own check.
    prod = make_database("prod")
    prod.execute(
        "DROP INDEX public.idx_chat_messages_reply_to; "
        "CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages (reply_to_message_id) "
        "WHERE reply_to_message_id IS NOT NULL"
    )
    before = prod.schema()
    result = psql(prod, offline_script("prod", "upgrade", "000_prod_baseline:head"), check=False)
    assert result.returncode != 0
    assert "index public.idx_chat_messages_reply_to is CREATE INDEX" in result.stderr
    assert "run alembic -n prod upgrade 006_prod_reply_index_definition (without --sql)" in result.stderr
    assert "alembic -n prod upgrade 006_prod_reply_index_definition:head --sql" in result.stderr
    assert prod.revision() == "000_prod_baseline"
    assert_same_schema(prod.schema(), before, "prod with a partial reply index after the refused script")
    # What it names works: online up to 006 converges the index, then the script from there.
    prod.alembic("-n", "prod", "upgrade", "006_prod_reply_index_definition")
    psql(prod, offline_script("prod", "upgrade", "006_prod_reply_index_definition:head"))
    assert prod.revision() == revisions_in_order("prod")[-1]
