"""A throwaway PostgreSQL server, and Supabase-lookalike databases on it.

Used by scripts/local-db, scripts/local-job and the tests. PostgreSQL refuses
to run as root, so as root the server runs as the ``postgres`` OS user (or
$LOCAL_PG_OS_USER). Connections over its Unix socket are trusted (it is a
throwaway, local server); TCP connections need the superuser's password,
which is random per cluster and never written outside the data directory.
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

from . import baseline, identity
from .environments import REPO_ROOT

PLATFORM_SQL = REPO_ROOT / "scripts" / "supabase_platform.sql"
SUPERUSER = "postgres"


class ClusterError(Exception):
    pass


def pg_bindir() -> Path:
    """Where initdb/pg_ctl/pg_dump live: $PG_BINDIR, else the newest Debian install, else PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if installed:
        return installed[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise ClusterError("PostgreSQL server binaries not found: install them or set PG_BINDIR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    """A running server: its data directory, socket directory and port."""

    root: Path
    port: int
    password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def url(self, database: str, *, tcp: bool = False, password: str | None = None) -> str:
        """A libpq URL; over the socket it carries no password at all."""
        if tcp:
            secret = self.password if password is None else password
            return f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def connect(self, database: str = "postgres"):
        conn = psycopg2.connect(
            dbname=database, user=SUPERUSER, host=str(self.socket_dir), port=self.port
        )
        conn.autocommit = True
        return conn

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def start(cls, root: Path | None = None) -> "Cluster":
        root = Path(root or tempfile.mkdtemp(prefix="chatdb-"))
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(root=root, port=free_port(), password=secrets.token_urlsafe(18))
        try:
            cluster._init()
            cluster._pg_ctl("start", "-w", "-t", "60", "-l", str(root / "server.log"), "-o", cluster._server_options())
        except ClusterError:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cluster

    def stop(self, *, remove: bool = True) -> None:
        if (self.data_dir / "postmaster.pid").exists():
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
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._own(self.root)
        if server_os_user() and subprocess.run(_as_server_user(["test", "-r", str(pwfile)])).returncode != 0:
            raise ClusterError(
                f"the server's OS user {server_os_user()} cannot reach {self.root}: "
                "choose a directory whose parents it can enter (under /tmp, say)"
            )
        self._run(
            str(pg_bindir() / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        pwfile.unlink()

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

    def create_database(self, name: str, *, template: str | None = None, marker: str | None = None) -> None:
        conn = self.connect()
        with conn.cursor() as cur:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            cur.execute(query)
            if marker:
                cur.execute(
                    sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                        sql.Identifier(name), sql.Identifier(*identity.MARKER_SETTING.split(".")),
                        sql.Literal(marker),
                    )
                )
        conn.close()

    def drop_database(self, name: str) -> None:
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.close()

    def execute(self, database: str, statements: str) -> None:
        conn = self.connect(database)
        with conn.cursor() as cur:
            cur.execute(statements)
        conn.close()

    def create_platform_database(self, name: str, *, marker: str | None = None) -> None:
        """A database that looks like a fresh Supabase project: platform objects, no chat schema."""
        self.create_database(name, marker=marker)
        self.execute(name, PLATFORM_SQL.read_text())

    def create_observed_database(self, name: str, environment: str) -> None:
        """The environment as the plan observed it, built without Alembic (like the live one)."""
        self.create_platform_database(name, marker=environment)
        self.execute(name, baseline.create_sql(environment))


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
