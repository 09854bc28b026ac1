"""Fixtures: one real PostgreSQL per test session, a fresh database per test.

The server is the project's own throwaway cluster (chat_migrations.harness.cluster),
built the way Supabase builds a project: the superuser ``supabase_admin``
only builds the platform; every migration, check and test query runs as the
NOSUPERUSER ``postgres`` with its password, as on hosted Supabase.
pytest-postgresql's process fixture cannot start PostgreSQL as root, which is
how CI runs. Per-test databases are cloned (as ``postgres``, their owner) by
pytest-postgresql's DatabaseJanitor from templates built once per session, when first needed:

* ``platform``: only the Supabase platform (an empty project);
* ``observed-<env>``: the environment as the plan observed it, written by
  ``postgres`` without Alembic, seeded with rows, marked, then stamped at its
  baseline (an adopted live database);
* ``head-<env>``: that database upgraded to head.

The platform is Supabase as projects had it until 2026 (``default-privileges``)
unless $CHAT_PLATFORM says ``explicit-grants`` (every project since 30 Oct
2026): then the observed schemas keep the grants they were created with and
nothing new gets any by default. Tests marked ``platform`` are the ones CI runs
on both (docs/testing.md).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path
from dataclasses import dataclass

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from chat_migrations.harness import alembic_cli, seed
from chat_migrations.frozen import baseline
from chat_migrations.checks import catalog
from chat_migrations.harness.cluster import ADMIN, OWNER, Cluster, check_platform, pg_bindir, DEFAULT_PLATFORM
from chat_migrations.runtime.environments import get_environment, libpq_command
from chat_migrations.runtime.environments import REPO_ROOT
from chat_migrations.harness.fingerprints import data_checksums, first_difference, schema_dump

ENVIRONMENTS = baseline.ENVIRONMENTS
_counter = itertools.count()
# The Supabase the session's server builds (scripts/supabase_platform/).
PLATFORM = check_platform(os.environ.get("CHAT_PLATFORM") or DEFAULT_PLATFORM)


def pytest_configure(config) -> None:
    # Registered here, not in pyproject.toml, next to the choice it is about.
    config.addinivalue_line(
        "markers",
        "platform: touches privileges, functions, smoke, rollback exactness or caller changes; "
        ".ci/run runs them on both Supabase platforms (CHAT_PLATFORM)",
    )


def pytest_report_header() -> str:
    return f"Supabase platform: {PLATFORM} (CHAT_PLATFORM)"


@pytest.fixture(scope="session")
def cluster():
    server = Cluster.start(platform=PLATFORM)
    try:
        yield server
    finally:
        server.stop(remove=True)


@dataclass
class Database:
    """A per-test database: its name, URL, and the environment it is marked as."""

    cluster: Cluster
    name: str
    environment: str | None

    @property
    def url(self) -> str:
        return self.cluster.url(self.name)

    def connect(self):
        """As postgres, the role the project runs as."""
        return self.cluster.connect(self.name)

    def admin_connect(self):
        """As the platform's superuser: for what only the platform (or another actor) does."""
        return self.cluster.admin_connect(self.name)

    def query(self, sql: str, params=None, *, admin: bool = False):
        conn = self.admin_connect() if admin else self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def scalar(self, sql: str, params=None, *, admin: bool = False):
        rows = self.query(sql, params, admin=admin)
        return rows[0][0] if rows else None

    def execute(self, sql: str, params=None, *, admin: bool = False) -> None:
        self.query(sql, params, admin=admin)

    def schema(self) -> str:
        return schema_dump(self.url)

    def drop(self) -> None:
        self.cluster.drop_database(self.name)

    def checksums(self):
        conn = self.connect()
        try:
            return data_checksums(conn)
        finally:
            conn.close()

    def revision(self):
        return self.scalar(
            "SELECT string_agg(version_num, ',') FROM migration_meta.alembic_version"
            if self.scalar("SELECT to_regclass('migration_meta.alembic_version') IS NOT NULL")
            else "SELECT NULL"
        )

    def alembic(self, *args: str, check: bool = True, other: "Database | None" = None, **kwargs):
        """Run the alembic CLI (in this process) with this database as its environment's URL."""
        urls = {self.environment: self.url}
        if other is not None:
            urls[other.environment] = other.url
        return alembic_cli.run_in_process(*args, urls=urls, check=check, **kwargs)


def build_observed(cluster: Cluster, name: str, environment: str, *, platform: str | None = None) -> None:
    """The environment as observed (on ``platform``, the session's by default), seeded, marked, stamped at its baseline."""
    cluster.create_observed_database(name, environment, platform=platform)
    cluster.execute(name, seed.seed_sql())
    alembic_cli.run_in_process(
        "-n", environment, "-x", f"mark_as={environment}", "stamp", f"000_{environment}_baseline",
        urls={environment: cluster.url(name)},
    )


class Templates(dict):
    """{kind: template name}, each template built the first time a test asks for it.

    A worker (pytest-xdist) builds only the templates its own tests clone,
    not every one of them.
    """

    def __init__(self, cluster: Cluster):
        super().__init__()
        self.cluster = cluster

    def __missing__(self, kind: str) -> str:
        if kind == "platform":
            name = "tpl_platform"
            self.cluster.create_platform_database(name)
        elif kind.startswith("observed-"):
            env = kind.removeprefix("observed-")
            name = f"tpl_observed_{env}"
            build_observed(self.cluster, name, env)
        elif kind.startswith("head-"):
            env = kind.removeprefix("head-")
            name = f"tpl_head_{env}"
            self.cluster.create_database(name, template=self[f"observed-{env}"])
            alembic_cli.run_in_process("-n", env, "upgrade", "head", urls={env: self.cluster.url(name)})
        else:
            raise KeyError(kind)
        # Nothing left for autovacuum to do there: a worker on a template stops a clone,
        # and only the platform's superuser may end one.
        self.cluster.execute(name, "VACUUM ANALYZE", admin=True)
        self[kind] = name
        return name


@pytest.fixture(scope="session")
def templates(cluster):
    """Template databases ("platform", "observed-<env>", "head-<env>"), built once, when first needed."""
    return Templates(cluster)


@pytest.fixture
def make_database(cluster, templates):
    """make_database(env, kind="platform"|"observed"|"head", marked=True) -> Database, dropped after the test."""
    janitors = []

    def make(environment: str, kind: str = "observed", *, marked: bool = True, copy_of: Database | None = None) -> Database:
        """A fresh database of ``kind`` (or a copy of ``copy_of``, which nobody may be connected to)."""
        template = copy_of.name if copy_of else templates["platform" if kind == "platform" else f"{kind}-{environment}"]
        name = f"t{next(_counter)}_{environment}_{kind}"
        # Making and dropping databases is the platform's work (its superuser may end an
        # autovacuum worker on the template, which postgres may not); the database is postgres's.
        janitor = DatabaseJanitor(
            user=ADMIN, host=str(cluster.socket_dir), port=cluster.port, dbname=name, template_dbname=template,
        )
        janitor.init()
        cluster.execute("postgres", f'ALTER DATABASE "{name}" OWNER TO {OWNER}', admin=True)
        janitors.append(janitor)
        if copy_of is None and kind == "platform" and marked:
            cluster.mark(name, get_environment(environment))
        elif copy_of is None and kind != "platform" and not marked:
            cluster.execute(name, "DELETE FROM migration_meta.database_identity")
        return Database(cluster, name, environment)

    yield make
    for janitor in janitors:
        janitor.drop()


@pytest.fixture(params=ENVIRONMENTS)
def environment(request) -> str:
    return request.param


@pytest.fixture
def head(make_database, environment):
    """The environment's observed database (seeded), at head."""
    return make_database(environment, "head")


@pytest.fixture
def frontend():
    """frontend(db, user_id, role="authenticated") -> a supabase_api.Frontend, closed after the test."""
    from .supabase_api import Frontend

    opened = []

    def connect(db, user_id, role="authenticated", *, observed=False):
        client = Frontend(db, user_id, role, observed=observed)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


def head_of(environment: str) -> str:
    """The environment's head revision (the last shared revision once there are any)."""
    return catalog.head_revision(environment)


def revisions_in_order(environment: str) -> list[str]:
    """The environment's history, base first, as `alembic -n <environment>` loads it."""
    return [script.revision for script in catalog.script_directory(environment).walk_revisions()][::-1]


def assert_same_schema(actual: str, expected: str, what: str) -> None:
    difference = first_difference(expected, actual, ("expected", "actual"))
    assert not difference, f"{what}: schemas differ\n{difference}"


@pytest.fixture
def psql(cluster):
    """psql(db, script, check=True): run a script as an operator would, stopping at the first error."""

    def run(db, script: str, check: bool = True):
        dbname, environment = libpq_command(db.url)
        result = subprocess.run(
            [str(pg_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname],
            input=script, capture_output=True, text=True, env=environment,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


def project_with_shared_revision(folder: Path, revision_id: str, source: str, *, only_this_one: bool = False) -> str:
    """A copy of the project with one more shared revision; returns its alembic.ini for ``-c``."""
    project = folder / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "alembic.ini", project)
    shutil.copytree(REPO_ROOT / "alembic", project / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
    shared = project / "alembic" / "versions" / "shared"
    if only_this_one:
        for existing in shared.glob("*.py"):
            existing.unlink()
    (shared / f"{revision_id}.py").write_text(source)
    return str(project / "alembic.ini")
