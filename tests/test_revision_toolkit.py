"""The helpers a next revision is made of: a nullable column and an online partial index.

A throwaway shared revision (written into a temporary copy of the project)
adds ``chat_messages.pinned_at`` with runtime/columns and builds a partial
index on it with runtime/indexes, then the tests run it against real
databases: built, rerun, converged from another definition, repaired from an
INVALID build, rendered with --sql, rolled back exactly, and interrupted after
its column committed (runtime/leftovers removes the column).
"""

from __future__ import annotations

import pytest

from chat_migrations.runtime import indexes

from .conftest import assert_same_schema, project_with_shared_revision

REVISION = "101_test_pinned_messages"
INDEX = "idx_chat_messages_pinned"
TABLE = "public.chat_messages"
PREDICATE = "pinned_at IS NOT NULL"

SOURCE = f'''
"""Pinned messages (test only): a nullable column and a partial index on it, built online."""

from chat_migrations.runtime import columns, indexes

revision = "{REVISION}"
down_revision = "100_converged"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns.add_column(revision, "{TABLE}", "pinned_at", "timestamp with time zone", comment="When it was pinned.")
    indexes.create_index_concurrently(revision, "{INDEX}", "{TABLE}", "chat_id, pinned_at", where="WHERE_CLAUSE")


def downgrade() -> None:
    indexes.drop_index_concurrently(revision, "{INDEX}", "{TABLE}")
    columns.drop_column(revision, "{TABLE}", "pinned_at")
'''

WANTED = indexes.index_definition(INDEX, TABLE, "chat_id, pinned_at", PREDICATE)


@pytest.fixture
def project(tmp_path):
    def write(where: str = PREDICATE) -> str:
        folder = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        return project_with_shared_revision(folder, REVISION, SOURCE.replace("WHERE_CLAUSE", where), only_this_one=True)

    return write


@pytest.fixture
def converged(make_database):
    db = make_database("staging")
    db.alembic("-n", "staging", "upgrade", "100_converged")
    return db


def run(db, ini: str, *args: str, check: bool = True, **kwargs):
    return db.alembic("-c", ini, "-n", "staging", *args, check=check, **kwargs)


def index_state(db):
    return db.query(f"SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = to_regclass('public.{INDEX}')")


def pinned_column(db):
    return db.query(
        "SELECT format_type(atttypid, atttypmod), attnotnull, col_description(attrelid, attnum) FROM pg_attribute "
        "WHERE attrelid = 'public.chat_messages'::regclass AND attname = 'pinned_at' AND NOT attisdropped"
    )


def test_the_column_and_the_partial_index_are_built_rerun_as_nothing_and_rolled_back_exactly(project, converged):
    ini, before = project(), converged.schema()
    run(converged, ini, "upgrade", "head")
    assert pinned_column(converged) == [("timestamp with time zone", False, "When it was pinned.")]
    assert index_state(converged) == [(True, WANTED)]
    assert "WHERE (pinned_at IS NOT NULL)" in WANTED

    # Run again on the state it left: the catalog says there is nothing to build or add.
    converged.execute("UPDATE migration_meta.alembic_version SET version_num = '100_converged'")
    again = run(converged, ini, "upgrade", "head")
    assert f"public.{INDEX} already exists with this definition: nothing to build" in again.output
    assert index_state(converged) == [(True, WANTED)]

    run(converged, ini, "downgrade", "100_converged")
    assert_same_schema(converged.schema(), before, "after the toolkit revision's downgrade")
    assert converged.scalar("SELECT count(*) FROM migration_meta.rollback_snapshots WHERE revision = %s", (REVISION,)) == 0


def test_a_column_that_was_there_is_kept_and_one_of_another_type_stops_the_revision(project, converged):
    ini = project()
    converged.execute("ALTER TABLE public.chat_messages ADD COLUMN pinned_at timestamp with time zone")
    before = converged.schema()
    run(converged, ini, "upgrade", "head")
    run(converged, ini, "downgrade", "100_converged")
    assert_same_schema(converged.schema(), before, "a column that existed before the revision")

    converged.execute("ALTER TABLE public.chat_messages ALTER COLUMN pinned_at TYPE text")
    refused = run(converged, ini, "upgrade", "head", check=False)
    assert refused.returncode != 0
    assert "public.chat_messages.pinned_at exists as text, not timestamp with time zone" in refused.output
    assert converged.revision() == "100_converged" and index_state(converged) == []


@pytest.mark.parametrize("existing", [
    "CREATE INDEX {name} ON public.chat_messages (chat_id)",  # not partial: drift by definition
    "CREATE INDEX {name} ON public.chat_messages (chat_id, pinned_at) WHERE pinned_at > '2020-01-01'",  # another predicate
])
def test_an_index_of_that_name_with_another_definition_is_converged_and_put_back(project, converged, existing):
    ini = project()
    converged.execute("ALTER TABLE public.chat_messages ADD COLUMN pinned_at timestamp with time zone")
    converged.execute(existing.format(name=INDEX))
    before, previous = converged.schema(), index_state(converged)
    run(converged, ini, "upgrade", "head")
    assert index_state(converged) == [(True, WANTED)]
    run(converged, ini, "downgrade", "100_converged")
    assert index_state(converged) == previous
    assert_same_schema(converged.schema(), before, "an index redefined by the revision, put back")


def test_an_invalid_partial_index_left_by_a_failed_build_is_rebuilt(project, converged):
    ini = project()
    converged.execute("ALTER TABLE public.chat_messages ADD COLUMN pinned_at timestamp with time zone")
    # A unique build over duplicates fails and leaves an INVALID index of that name behind.
    conn = converged.connect()
    conn.autocommit = True
    with pytest.raises(Exception), conn.cursor() as cur:
        cur.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON public.chat_messages (chat_id)")
    conn.close()
    assert [valid for valid, _ in index_state(converged)] == [False]
    result = run(converged, ini, "upgrade", "head")
    assert "is INVALID (an interrupted build): dropping it to build it again" in result.output
    assert index_state(converged) == [(True, WANTED)]


def test_the_sql_script_builds_the_partial_index_and_refuses_another_definition_first(project, converged):
    rendered = run(converged, project(), "upgrade", "100_converged:head", "--sql").output
    assert f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON {TABLE} USING btree (chat_id, pinned_at) " \
           f"WHERE ({PREDICATE})" in rendered
    assert f"pg_get_indexdef(indexrelid) <> '{WANTED}'" in rendered
    assert "ADD COLUMN pinned_at timestamp with time zone" in rendered


def test_a_predicate_not_written_as_postgresql_prints_it_stops_the_revision_saying_so(project, converged):
    result = run(converged, project("pinned_at is not null"), "upgrade", "head", check=False)
    assert result.returncode != 0
    assert "reads back as" in result.output and "WHERE (pinned_at IS NOT NULL)" in result.output
    assert converged.revision() == "100_converged"


def test_a_column_left_by_an_interrupted_upgrade_is_removed_by_the_next_rollback(project, converged, make_database):
    """Terminated after the column committed (the concurrent build steps out of the transaction, which commits
    it): the revision is not applied, but its column is there. Rolling back past 100_converged removes it."""
    ini = project()
    untouched = make_database("staging", copy_of=converged)
    run(untouched, ini, "downgrade", "-1")
    expected = untouched.schema()

    def interrupted_at(statement: int):
        db = make_database("staging", copy_of=converged)
        run(db, ini, "upgrade", "head", check=False, extra_env={"CHAT_MIGRATIONS_FAULT": f"terminate:{statement}"})
        return db

    # The first statement at which a fault finds the column committed (later ones do too, until the end).
    low, high = 1, 256
    while low < high:
        middle = (low + high) // 2
        db = interrupted_at(middle)
        committed = bool(pinned_column(db))
        db.drop()
        low, high = (low, middle) if committed else (middle + 1, high)
    db = interrupted_at(low)
    assert pinned_column(db) and db.revision() == "100_converged", "no fault left the column behind"

    preflight_view = db.query("SELECT object_kind FROM migration_meta.rollback_snapshots WHERE revision = %s", (REVISION,))
    assert ("added_column",) in preflight_view
    rollback = run(db, ini, "downgrade", "-1")
    assert f"removing column {TABLE}.pinned_at, left by revision {REVISION}" in rollback.output
    assert pinned_column(db) == []
    assert_same_schema(db.schema(), expected, "a rollback after an interrupted toolkit revision")


def test_a_snapshot_restored_without_forgetting_it_stays_until_forgotten_as_its_own_step(make_database):
    """restore_function_sql(forget=False) then forget_sql: a downgrade in several transactions restores from
    the snapshot again if it is interrupted between the two."""
    from chat_migrations.runtime import snapshots

    db = make_database("prod")
    signature = "public.get_unread_count(uuid, uuid)"
    recorded = "SELECT count(*) FROM migration_meta.rollback_snapshots WHERE revision = 'toolkit_test'"
    comment = "SELECT obj_description(to_regprocedure(%s), 'pg_proc')"
    original = db.scalar(comment, (signature,))
    db.execute(snapshots.record_function_sql("toolkit_test", signature))
    db.execute(f"COMMENT ON FUNCTION {signature} IS 'changed by the revision'")

    db.execute(snapshots.restore_function_sql("toolkit_test", signature, None, forget=False))
    assert db.scalar(comment, (signature,)) == original
    assert db.scalar(recorded) == 1
    db.execute(f"COMMENT ON FUNCTION {signature} IS 'changed again'")
    db.execute(snapshots.restore_function_sql("toolkit_test", signature, None, forget=False))  # a rerun
    assert db.scalar(comment, (signature,)) == original

    db.execute(snapshots.forget_sql("toolkit_test", "function", signature))
    assert db.scalar(recorded) == 0
