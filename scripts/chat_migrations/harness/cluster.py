"""A throwaway PostgreSQL server built the way Supabase builds a project, and lookalike databases on it.

Used by scripts/local-db, scripts/local-job, scripts/rehearse and the tests.
As on Supabase, the bootstrap superuser is ``supabase_admin``, which only
builds the platform (scripts/supabase_platform/: roles, default privileges,
GoTrue's auth schema, the realtime publication, PostgREST's event triggers);
as Supabase projects were until 2026 (``default-privileges``: what postgres
creates in public is granted to the API roles) or as all are since 30 Oct 2026
(``explicit-grants``: those defaults revoked after the schema a project already
had is loaded; see docs/supabase-platform.md);
everything the project does runs as ``postgres``, a NOSUPERUSER role that owns
its databases, and logs in with a password (scram-sha-256) over TCP, as a
Supabase connection string does. That password is random per cluster and
never written outside the data directory. Only ``supabase_admin`` is trusted,
over the Unix socket.

PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` OS user (or $LOCAL_PG_OS_USER).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from chat_migrations.checks.catalog import DEFAULT_PRIVILEGES, EXPLICIT_GRANTS
from chat_migrations.frozen import baseline
from chat_migrations.harness import postgres_binaries
from chat_migrations.runtime.environments import REPO_ROOT
from chat_migrations.errors import ClusterError

PLATFORM_DIR = REPO_ROOT / "scripts" / "supabase_platform"
PLATFORM_CLUSTER_SQL = PLATFORM_DIR / "cluster.sql"
PLATFORM_DATABASE_SQL = PLATFORM_DIR / "database.sql"
PLATFORM_EXPLICIT_GRANTS_SQL = PLATFORM_DIR / "explicit_grants.sql"
# The two ways a Supabase project's public schema treats what postgres creates
# (named as scripts/adopt reads them from a live database).
PLATFORMS = (DEFAULT_PRIVILEGES, EXPLICIT_GRANTS)
DEFAULT_PLATFORM = DEFAULT_PRIVILEGES
# The bootstrap superuser: builds the platform, never runs the project.
ADMIN = "supabase_admin"
# The role the project runs as, as on hosted Supabase.
OWNER = "postgres"


def pg_bindir() -> Path:
    """Where initdb/pg_ctl/pg_dump live ($PG_BINDIR, $PG_VERSION, else the newest installed)."""
    try:
        return postgres_binaries.bindir()
    except postgres_binaries.PostgresBinariesNotFound as missing:
        raise ClusterError(str(missing)) from None


def check_platform(platform: str) -> str:
    """The platform's name, or a ClusterError naming the ones that exist."""
    if platform not in PLATFORMS:
        raise ClusterError(f"unknown platform {platform!r}: choose one of {', '.join(PLATFORMS)}")
    return platform


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    """A running server: its data directory, socket directory and port, and the platform its databases get."""

    root: Path
    port: int
    password: str
    platform: str = DEFAULT_PLATFORM

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def url(self, database: str, *, password: str | None = None) -> str:
        """The URL the project uses: ``postgres`` with its password, over TCP, like a Supabase URL."""
        secret = self.password if password is None else password
        return f"postgresql://{OWNER}:{secret}@127.0.0.1:{self.port}/{database}"

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    def passfile_url(self, database: str) -> str:
        """The same, with the password in a libpq password file instead of the URL (safe to print)."""
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}?passfile={self.passfile}"

    def admin_url(self, database: str) -> str:
        """The superuser over the Unix socket (trusted, no password): for building the platform only."""
        return f"postgresql://{ADMIN}@/{database}?host={self.socket_dir}&port={self.port}"

    @classmethod
    def attach(cls, root: Path, port: int) -> "Cluster":
        """A server this project started earlier in ``root`` (scripts/local-db)."""
        password = cls(root=root, port=port, password="").passfile.read_text().strip().rsplit(":", 1)[1]
        return cls(root=root, port=port, password=password)

    def connect(self, database: str = "postgres"):
        """An autocommit connection as ``postgres``, the role the project runs as."""
        conn = psycopg2.connect(dbname=database, user=OWNER, password=self.password, host="127.0.0.1", port=self.port)
        conn.autocommit = True
        return conn

    def admin_connect(self, database: str = "postgres"):
        """An autocommit connection as the bootstrap superuser: only for building the platform."""
        conn = psycopg2.connect(dbname=database, user=ADMIN, host=str(self.socket_dir), port=self.port)
        conn.autocommit = True
        return conn

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def start(cls, root: Path | None = None, *, platform: str = DEFAULT_PLATFORM) -> "Cluster":
        check_platform(platform)
        root = Path(root or tempfile.mkdtemp(prefix="chatdb-"))
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(root=root, port=free_port(), password=secrets.token_urlsafe(18), platform=platform)
        try:
            cluster._init()
            cluster._pg_ctl("start", "-w", "-t", "60", "-l", str(root / "server.log"), "-o", cluster._server_options())
            cluster._bootstrap()
        except ClusterError:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cluster

    def running(self) -> bool:
        """pg_ctl status: a postmaster.pid left by a crash does not count."""
        return subprocess.run(
            _as_server_user([str(pg_bindir() / "pg_ctl"), "-D", str(self.data_dir), "status"]), capture_output=True
        ).returncode == 0

    def stop(self, *, remove: bool = True) -> None:
        if (self.data_dir / "postmaster.pid").exists() and self.running():
            self._pg_ctl("stop", "-m", "fast", "-w")
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def _server_options(self) -> str:
        # Durability off: a throwaway server trades crash safety for speed.
        return (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c wal_level=logical"
        )

    def _init(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        self._own(self.root)
        if server_os_user() and subprocess.run(_as_server_user(["test", "-x", str(self.socket_dir)])).returncode != 0:
            raise ClusterError(
                f"the server's OS user {server_os_user()} cannot reach {self.root}: "
                "choose a directory whose parents it can enter (under /tmp, say)"
            )
        self._run(
            str(pg_bindir() / "initdb"), "-D", str(self.data_dir), "-U", ADMIN,
            "--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        # Supabase: the bootstrap superuser is local only; everyone else logs in with a password.
        hba = (
            f"local all {ADMIN} trust\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        subprocess.run(_as_server_user(["tee", str(self.data_dir / "pg_hba.conf")]), input=hba, text=True,
                       capture_output=True, check=True)

    def _bootstrap(self) -> None:
        """The cluster-wide part of the platform, as supabase_admin; then postgres gets its password."""
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:{OWNER}:{self.password}\n")
        os.chmod(self.passfile, 0o600)
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(PLATFORM_CLUSTER_SQL.read_text())
                cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(OWNER), sql.Literal(self.password)))
                # The server's own database belongs to postgres, as on Supabase.
                cur.execute(sql.SQL("ALTER DATABASE postgres OWNER TO {}").format(sql.Identifier(OWNER)))
        finally:
            conn.close()

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(pg_bindir() / "pg_ctl"), "-D", str(self.data_dir), *args)

    def _run(self, *command: str) -> None:
        result = subprocess.run(_as_server_user(list(command)), capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"{Path(command[0]).name} failed: {(result.stderr or result.stdout).strip()}")

    def _own(self, path: Path) -> None:
        user = server_os_user()
        if user is None:
            return
        entry = pwd.getpwnam(user)
        for folder, _, files in os.walk(path):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)
        # The socket directory is reached through root's temp folder.
        os.chmod(path, 0o755)

    # -- databases ------------------------------------------------------------

    def create_database(self, name: str, *, template: str | None = None) -> None:
        """A database owned by postgres, created (as on Supabase) by the platform's superuser."""
        conn = self.admin_connect()
        with conn.cursor() as cur:
            query = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(OWNER))
            if template:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            cur.execute(query)
        conn.close()

    def drop_database(self, name: str) -> None:
        conn = self.admin_connect()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.close()

    def execute(self, database: str, statements: str, *, admin: bool = False) -> None:
        """Run statements as postgres (or, to build the platform, as the superuser)."""
        conn = self.admin_connect(database) if admin else self.connect(database)
        with conn.cursor() as cur:
            cur.execute(statements)
        conn.close()

    def create_platform_database(self, name: str, *, platform: str | None = None) -> None:
        """A database that looks like a fresh Supabase project of ``platform`` (the cluster's by
        default): platform objects, no chat schema."""
        self._create_with_defaults(name)
        self.apply_platform(name, platform)

    def create_observed_database(self, name: str, environment: str, *, platform: str | None = None) -> None:
        """The environment as the plan observed it, written by postgres the way a team writes it
        in the SQL editor (so Supabase's default privileges of then apply), without Alembic; then
        ``platform`` (the cluster's by default) as Supabase made it later: the objects keep their grants."""
        self._create_with_defaults(name)
        self.execute(name, baseline.create_sql(environment))
        self.apply_platform(name, platform)

    def apply_platform(self, name: str, platform: str | None = None) -> None:
        """What Supabase changed in an existing project: explicit-grants revokes the defaults."""
        if check_platform(platform or self.platform) == EXPLICIT_GRANTS:
            self.execute(name, PLATFORM_EXPLICIT_GRANTS_SQL.read_text(), admin=True)

    def _create_with_defaults(self, name: str) -> None:
        self.create_database(name)
        self.execute(name, PLATFORM_DATABASE_SQL.read_text(), admin=True)

    def mark(self, database: str, environment) -> None:
        """Write the database's identity marker as its owner (what `-x mark_as` does)."""
        from chat_migrations.runtime import bookkeeping, identity

        self.execute(database, f"{bookkeeping.CREATE_SQL};\n{identity.mark_sql(environment)}")


def server_os_user() -> str | None:
    """The OS user the server runs as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("LOCAL_PG_OS_USER", "postgres")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ClusterError(
            f"running as root and OS user {user!r} does not exist: PostgreSQL refuses to run as root; "
            "create that user or set LOCAL_PG_OS_USER"
        ) from None
    return user


def _as_server_user(command: list[str]) -> list[str]:
    user = server_os_user()
    return ["runuser", "-u", user, "--", *command] if user else command
