"""Both Supabases: projects as they were until 2026 (default privileges give the
API roles what postgres creates in public) and as every project is since 30 Oct
2026 (explicit-grants: no such defaults; what existed keeps its grants).

The session's server is built as $CHAT_PLATFORM; these tests build the other
platform's databases themselves where they compare the two, so each run
proves both.
"""

from __future__ import annotations

import itertools
import re

import pytest
from sqlalchemy import create_engine

from chat_migrations.checks import catalog
from chat_migrations.harness.cluster import DEFAULT_PRIVILEGES, EXPLICIT_GRANTS, PLATFORMS

from .conftest import PLATFORM, Database, assert_same_schema, build_observed
from .test_preflight import preflight_json

pytestmark = pytest.mark.platform

_names = itertools.count()

# Every privilege on every object of the chat schema and the bookkeeping: tables, sequences
# and views, their columns, functions, and the schemas themselves.
ACLS_SQL = """
SELECT 'relation ' || c.oid::regclass::text, c.relacl::text
  FROM pg_class c WHERE c.relnamespace IN ('public'::regnamespace, 'migration_meta'::regnamespace)
   AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
UNION ALL
SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname, a.attacl::text
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace IN ('public'::regnamespace, 'migration_meta'::regnamespace) AND a.attacl IS NOT NULL
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text, p.proacl::text
  FROM pg_proc p WHERE p.pronamespace IN ('public'::regnamespace, 'migration_meta'::regnamespace)
UNION ALL
SELECT 'schema ' || n.nspname, n.nspacl::text FROM pg_namespace n WHERE n.nspname IN ('public', 'migration_meta')
ORDER BY 1
"""


@pytest.fixture
def build(cluster, make_database):
    """build(env, platform, revision=None) -> the observed database on ``platform``, upgraded to ``revision``.

    The session's platform comes from its templates; the other one is built here.
    """
    made = []

    def make(environment: str, platform: str, revision: str | None = None) -> Database:
        if platform == PLATFORM and revision in (None, "head"):
            return make_database(environment, "head" if revision else "observed")
        name = f"p{next(_names)}_{environment}_{platform.replace('-', '_')}"
        build_observed(cluster, name, environment, platform=platform)
        made.append(name)
        db = Database(cluster, name, environment)
        if revision:
            db.alembic("-n", environment, "upgrade", revision)
        return db

    yield make
    for name in made:
        cluster.drop_database(name)


def acls(db: Database) -> list[tuple[str, list[str]]]:
    """Each object's privileges (aclitems, sorted: their order is how they were granted, not what they give)."""
    return [(obj, sorted((acl or "{}").strip("{}").split(","))) for obj, acl in db.query(ACLS_SQL)]


def defaults_of(db: Database) -> str:
    engine = create_engine(db.url)
    try:
        with engine.connect() as conn:
            return catalog.platform_defaults(conn)
    finally:
        engine.dispose()


def test_platform_defaults_names_the_platform_and_what_a_mixed_one_still_grants(build):
    old, new = build("staging", DEFAULT_PRIVILEGES), build("staging", EXPLICIT_GRANTS)
    assert defaults_of(old) == DEFAULT_PRIVILEGES
    assert defaults_of(new) == EXPLICIT_GRANTS
    # The opt-out half done: tables revoked, sequences and functions not.
    old.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated, service_role")
    assert defaults_of(old) == "mixed: sequences to anon, authenticated, service_role; functions to anon, authenticated, service_role"
    # A default privilege for postgres in every schema reaches public too.
    new.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT EXECUTE ON FUNCTIONS TO authenticated")
    assert defaults_of(new) == "mixed: functions to authenticated"
    # supabase_admin's defaults (which postgres cannot change) do not count: they reach only its own objects.
    assert "supabase_admin" in new.scalar(
        "SELECT string_agg(DISTINCT pg_get_userbyid(defaclrole), ',') FROM pg_default_acl"
        " WHERE defaclnamespace = 'public'::regnamespace")


def test_an_explicit_grants_project_keeps_the_grants_its_objects_had(build):
    old, new = build("prod", DEFAULT_PRIVILEGES), build("prod", EXPLICIT_GRANTS)
    assert acls(new) == acls(old)
    new.execute("CREATE TABLE public.created_later (id int)")
    assert new.scalar("SELECT relacl::text FROM pg_class WHERE oid = 'public.created_later'::regclass") is None


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_every_grant_at_head_comes_from_a_revision(build, environment):
    # The same history on both platforms ends with the same privileges on everything:
    # no grant at head is one a default privilege gave.
    old, new = (build(environment, platform, "head") for platform in PLATFORMS)
    assert acls(new) == acls(old)
    # The whole dump too (GRANTs in pg_dump's order), but for the platforms' own difference.
    assert_same_schema(without_default_privileges(new.schema()), without_default_privileges(old.schema()),
                       f"{environment} at head, explicit-grants vs default-privileges")


def without_default_privileges(dump: str) -> str:
    return "\n".join(line for line in dump.splitlines() if not line.startswith("ALTER DEFAULT PRIVILEGES "))


def test_002_downgrade_without_state_grants_what_the_baseline_had_on_both_platforms(build):
    for platform in PLATFORMS:
        observed = build("staging", platform)
        db = build("staging", platform, "head")
        # Stamped past 002: nothing recorded what mark_messages_as_read was.
        db.execute("DELETE FROM migration_meta.rollback_snapshots")
        db.alembic("-n", "staging", "downgrade", "000_staging_baseline")
        signature = "'public.mark_messages_as_read(uuid, uuid)'::regprocedure"
        acl = f"SELECT proacl::text FROM pg_proc WHERE oid = {signature}"
        assert db.scalar(acl) == observed.scalar(acl) == \
            "{=X/postgres,anon=X/postgres,authenticated=X/postgres,service_role=X/postgres,postgres=X/postgres}", platform


# --- preflight's caller changes, against what the upgrade really changes ------------------------

WHO = ("PUBLIC", "anon", "authenticated", "service_role")
PRIVILEGE = re.compile(r"[A-Z]+(?: \([^)]*\))?")

PRIVILEGES_SQL = """
SELECT 'table public.' || c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, NULL
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%(tables)s)
UNION ALL
SELECT 'table public.' || c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, col.attname
  FROM pg_class c JOIN pg_attribute col ON col.attrelid = c.oid, aclexplode(col.attacl) a
 WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%(tables)s)
UNION ALL
SELECT 'function public.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, NULL
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace = 'public'::regnamespace
"""


def privileges(db: Database) -> dict[tuple[str, str], set[tuple[str, str | None]]]:
    """{(object, role): {(privilege, column or None)}} for PUBLIC and the API roles, from the catalog."""
    held: dict[tuple[str, str], set] = {}
    for obj, role, privilege, column in db.query(PRIVILEGES_SQL, {"tables": list(catalog.TABLES)}):
        if role in WHO:
            held.setdefault((obj, role), set()).add((privilege, column))
    return held


def as_pairs(privilege: str, columns: set[str]) -> set[tuple[str, str | None]]:
    """"SELECT" -> {(SELECT, None)}; "UPDATE (a, b)" -> {(UPDATE, a), (UPDATE, b)} for the columns that exist."""
    kind, _, listed = privilege.partition(" (")
    if not listed:
        return {(kind, None)}
    return {(kind, name.strip()) for name in listed.rstrip(")").split(",") if name.strip() in columns}


def test_preflights_caller_changes_are_what_the_upgrade_really_changes(capsys, make_database, environment):
    db = make_database(environment)
    before = privileges(db)
    changes = [c["change"] for c in preflight_json(capsys, db).check("caller_changes")["data"]["changes"]]
    db.alembic("-n", environment, "upgrade", "head")
    after = privileges(db)
    columns = {f"table public.{table}": {name for (name,) in db.query(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (f"public.{table}",))} for table in catalog.TABLES}

    predicted = {key: set(value) for key, value in before.items()}
    named = set()
    for line in changes:
        revision, rest = line.split(": ", 1)
        if table := re.match(r"(\S+) on (public\.\w+): (.*)$", rest):
            role, obj, what = table.group(1), f"table {table.group(2)}", table.group(3)
            held = predicted.setdefault((obj, role), set())
            for part in what.split("; "):
                verb, listed = part.split(" ", 1)
                pairs = set().union(*(as_pairs(p, columns[obj]) for p in PRIVILEGE.findall(listed)))
                held.difference_update(pairs) if verb == "loses" else held.update(pairs)
            named.add((obj, role))
        elif function := re.match(r"(\S+) may (now|no longer) execute (.+)$", rest):
            role, obj = function.group(1), f"function {function.group(3)}"
            held = predicted.setdefault((obj, role), set())
            held.add(("EXECUTE", None)) if function.group(2) == "now" else held.discard(("EXECUTE", None))
            named.add((obj, role))
        # Policy and behaviour lines are not privileges.

    assert named, changes
    really_changed = {key for key in before.keys() | after.keys() if before.get(key, set()) != after.get(key, set())}
    for key in sorted(named | really_changed):
        assert predicted.get(key, set()) == after.get(key, set()), (key, changes)
