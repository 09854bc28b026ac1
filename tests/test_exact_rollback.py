"""Rollback restores what was on *that* database, not what the project assumes was there.

The live environments' function bodies, owners, grants and comments may have
been written by hand and differ from the baselines. These databases are
created without Alembic, written differently, then stamped; after upgrade and
downgrade their pg_dump --schema-only equals the original.
"""

from __future__ import annotations

import pytest

from chat_migrations.runtime.promises import Index
from chat_migrations.schema import history
from chat_migrations.frozen import baseline

from .conftest import assert_same_schema, head_of

# Runs on both Supabase platforms in CI (docs/testing.md).
pytestmark = pytest.mark.platform

WRITE_EVERY_FUNCTION_DIFFERENTLY = """
DO $rewrite$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid, p.oid::regprocedure AS signature FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace LOOP
        -- The same function, typed differently in the SQL editor.
        EXECUTE replace(pg_get_functiondef(f.oid), E'AS $function$\\n',
                        E'AS $function$\\n-- edited by hand in the SQL editor, 2025-10-02\\n');
        EXECUTE format('ALTER FUNCTION %s OWNER TO chat_admin', f.signature);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO anon', f.signature);
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', f.signature, 'kept by hand: ' || f.signature);
    END LOOP;
END
$rewrite$;
"""


# The team's own owner role, which postgres belongs to: made once by the platform's superuser.
CHAT_ADMIN_ROLE = """
DO $role$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_admin') THEN CREATE ROLE chat_admin; END IF;
END $role$;
GRANT chat_admin TO postgres;
GRANT USAGE, CREATE ON SCHEMA public TO chat_admin;
"""


def hand_written_database(make_database, environment):
    db = make_database(environment, "platform")
    db.execute(CHAT_ADMIN_ROLE, admin=True)
    db.execute(baseline.create_sql(environment))
    db.execute(WRITE_EVERY_FUNCTION_DIFFERENTLY)
    db.alembic("-n", environment, "stamp", f"000_{environment}_baseline")
    return db


def test_rollback_restores_hand_written_functions_exactly(make_database, environment):
    db = hand_written_database(make_database, environment)
    original = db.schema()
    assert "edited by hand in the SQL editor" in original
    db.alembic("-n", environment, "upgrade", "head")
    db.alembic("-n", environment, "downgrade", f"000_{environment}_baseline")
    assert_same_schema(db.schema(), original, f"hand-written {environment} after upgrade and rollback")


def test_rollback_step_by_step_on_a_hand_written_database(make_database, environment):
    db = hand_written_database(make_database, environment)
    dumps = [db.schema()]
    while db.revision() != head_of(environment) and len(dumps) < 20:
        db.alembic("-n", environment, "upgrade", "+1")
        dumps.append(db.schema())
    for expected in reversed(dumps[:-1]):
        db.alembic("-n", environment, "downgrade", "-1")
        assert_same_schema(db.schema(), expected, f"hand-written {environment} at {db.revision()}")


def test_a_prod_index_defined_differently_is_kept_as_it_was(make_database):
    db = make_database("prod")
    db.execute("DROP INDEX public.idx_chat_messages_sender_id")
    db.execute("CREATE INDEX idx_chat_messages_sender_id ON public.chat_messages (sender_id, created_at)")
    original = db.schema()
    db.alembic("-n", "prod", "upgrade", "head")
    db.alembic("-n", "prod", "downgrade", "000_prod_baseline")
    assert_same_schema(db.schema(), original, "prod with its own sender index")


def test_offline_scripts_upgrade_and_roll_back_exactly_through_psql(make_database, environment, psql):
    db = make_database(environment)
    original = db.schema()
    start = f"000_{environment}_baseline"
    upgrade = db.alembic("-n", environment, "upgrade", f"{start}:head", "--sql").stdout
    downgrade = db.alembic("-n", environment, "downgrade", f"head:{start}", "--sql").stdout
    psql(db, upgrade)
    assert db.revision() == head_of(environment)
    online = make_database(environment)
    online.alembic("-n", environment, "upgrade", "head")
    assert_same_schema(db.schema(), online.schema(), f"{environment} upgraded by the --sql script")
    psql(db, downgrade)
    assert db.revision() == start
    assert_same_schema(db.schema(), original, f"{environment} rolled back by the --sql script")


def test_without_snapshots_a_downgrade_falls_back_to_the_projects_previous_definitions(make_database, environment):
    # A database stamped past the shared revisions has no snapshots: the
    # downgrade restores the project's known previous state (a trigger's
    # function in place, since it cannot be dropped).
    converged = make_database(environment)
    converged.alembic("-n", environment, "upgrade", "100_converged")
    db = make_database(environment, "head")
    db.execute("DELETE FROM migration_meta.rollback_snapshots")
    db.alembic("-n", environment, "downgrade", "100_converged")
    # An index nothing says the upgrade created is kept: never drop what may have been there.
    # Which ones: those the revisions after 100_converged promise (their declarations, not a list kept here).
    added = {index.qualified_name for index in history.promised(environment).of(Index)} - {
        index.qualified_name for index in history.promised(environment, "100_converged").of(Index)}
    assert added
    for name in sorted(added):
        assert db.scalar("SELECT to_regclass(%s) IS NOT NULL", (name,)), name
        db.execute(f"DROP INDEX {name}")
    assert_same_schema(db.schema(), converged.schema(), f"{environment} rolled back without snapshots")
