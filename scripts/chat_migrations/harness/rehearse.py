"""scripts/rehearse -n ENV [--from-url URL] [--sample-rows N] [--keep]: the migration, rehearsed on a clone.

The plan's "rollback tested on a staging clone", as a command. It reads the
environment's database (never writes it), rebuilds its schema in a
throwaway local PostgreSQL, and there drives the real commands in order:

  dump        pg_dump --schema-only of public and migration_meta, plus the rows
              of migration_meta.alembic_version and rollback_snapshots
  restore     the Supabase platform stand-in, the source's roles, the dump, the
              environment marker, and optionally sampled rows of the messaging tables
  preflight   scripts/preflight -n ENV
  upgrade     alembic -n ENV upgrade head
  validate    scripts/validate -n ENV
  downgrade   alembic -n ENV downgrade <the source's revision>
  compare     the clone's schema dump equals the one taken right after the restore
  upgrade     alembic -n ENV upgrade head, again

The commands reach the clone through the environment's URL variable
(PROD_DATABASE_URL, ...), which is pointed at it; the source's URL is never
given to them. The source is read through a session the server holds READ
ONLY (pg_dump's own transaction is read only too, and PGOPTIONS makes it the
session default).

Platform schemas of a real Supabase project (auth, storage, realtime,
extensions, ...) are not copied: scripts/supabase_platform/ builds
what the chat schema uses. A schema that uses more fails the restore with
the statement that needs it.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psycopg2
from psycopg2 import sql
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from chat_migrations import cli
from chat_migrations.harness import alembic_cli
from chat_migrations.checks import checks_cli
from chat_migrations.runtime import identity
from chat_migrations.checks.checks_cli import Target
from chat_migrations.harness.cluster import DEFAULT_PLATFORM, PLATFORMS, Cluster, pg_bindir
from chat_migrations.runtime.environments import Environment, libpq_command, mask_url
from chat_migrations.harness.fingerprints import first_difference, schema_dump
from chat_migrations.runtime.session import BOOKKEEPING_SCHEMA, first_line
from chat_migrations.errors import ChatMigrationsError, SetupFailed

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = checks_cli.EXIT_OK, checks_cli.EXIT_FAILED, checks_cli.EXIT_CANNOT_RUN

BOOKKEEPING_TABLES = (f"{BOOKKEEPING_SCHEMA}.alembic_version", f"{BOOKKEEPING_SCHEMA}.rollback_snapshots", f"{BOOKKEEPING_SCHEMA}.database_identity")
READ_ONLY_SESSION = "-c default_transaction_read_only=on"
OUTPUT_TAIL_LINES = 12
DUMP = "dump the source (schema, bookkeeping rows)"


class StepFailed(Exception):
    """A rehearsal step did not hold; the message says why."""


@dataclass
class StepResult:
    name: str
    seconds: float = 0.0
    outcome: str = "not run"  # PASS, FAIL, or "not run"
    detail: str = ""


@dataclass
class Rehearsal:
    """One rehearsal of ``environment``'s migration on a clone of ``source``, on ``cluster``."""

    environment: Environment
    source: Target
    cluster: Cluster
    database: str
    sample_rows: int | None = None
    say: Callable[[str], None] = print
    results: list[StepResult] = field(default_factory=list)
    start_revision: str | None = None

    @property
    def clone_url(self) -> str:
        return self.cluster.passfile_url(self.database)

    @property
    def _restore_step(self) -> str:
        return f"restore into a throwaway database ({self.database})"

    # -- the steps -------------------------------------------------------------------

    def run(self) -> int:
        """All steps in order; the exit code (0 every step passed, 1 one failed, 2 no clone to run them on)."""
        self.say(f"rehearsing {self.environment.name}'s migration from {self.source.masked_url}")
        with tempfile.TemporaryDirectory(prefix="rehearse-") as folder:
            return self._run_in(Path(folder))

    def _run_in(self, workdir: Path) -> int:
        """run(), with ``workdir`` for the dumps."""
        # (name, action, whether the steps after it need it to have passed)
        steps: list[tuple[str, Callable[[], str], bool]] = [
            ("preflight", lambda: self._check("preflight"), False),
            ("upgrade head", lambda: self._alembic("upgrade", "head"), True),
            ("validate", lambda: self._check("validate"), False),
            ("downgrade to the source's revision", lambda: self._alembic("downgrade", self.start_revision), True),
            ("compare with the schema before the upgrade", lambda: self._compare(original), True),
            ("upgrade head again", lambda: self._alembic("upgrade", "head"), True),
        ]
        try:
            original = self._setup(workdir)
        except SetupFailed as problem:
            self.results[-1].outcome, self.results[-1].detail = "FAIL", str(problem)
            self.say(f"  FAIL: {problem}")
            if self.results[-1].name == DUMP:
                self.results.append(StepResult(self._restore_step, detail="nothing to restore"))
            self.results += [StepResult(name, detail=NO_CLONE) for name, _, _ in steps]
            return EXIT_CANNOT_RUN
        stopped = False
        for name, action, later_steps_need_it in steps:
            if stopped:
                self.results.append(StepResult(name, detail="an earlier step failed"))
            elif not self._step(name, action) and later_steps_need_it:
                stopped = True
        return EXIT_OK if all(r.outcome == "PASS" for r in self.results) else EXIT_FAILED

    def _setup(self, workdir: Path) -> str:
        """Dump the source and restore it as the clone; the clone's schema dump, for the comparison."""
        try:
            return self._dump_and_restore(workdir)
        except ChatMigrationsError as problem:
            raise SetupFailed(str(problem)) from None
        except (DBAPIError, psycopg2.Error, RuntimeError) as problem:
            raise SetupFailed(first_line(problem)) from None

    def _dump_and_restore(self, workdir: Path) -> str:
        self._begin(DUMP)
        with self._timed():
            roles, publications, self.start_revision = self._read_source()
            schema_file, data_file = workdir / "schema.dump", workdir / "bookkeeping.dump"
            self._pg_dump(schema_file, "--schema-only", "--schema=public", f"--schema={BOOKKEEPING_SCHEMA}")
            self._pg_dump(data_file, "--data-only", *(f"--table={table}" for table in BOOKKEEPING_TABLES))
        self._begin(self._restore_step)
        with self._timed():
            self._create_roles(roles)
            self.cluster.create_platform_database(self.database)
            self._pg_restore(schema_file, workdir)
            self._pg_restore(data_file, workdir)
            self._mark_if_unmarked()
            self._add_to_publications(publications)
            if self.sample_rows:
                self._copy_sample(self.sample_rows)
            original = schema_dump(self.clone_url)
        return original

    def _begin(self, name: str) -> None:
        self.results.append(StepResult(name))
        self.say(f"\n== {name}")

    @contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.results[-1].seconds = time.monotonic() - started
        self.results[-1].outcome = "PASS"

    def _step(self, name: str, action: Callable[[], str]) -> bool:
        self._begin(name)
        try:
            with self._timed():
                self.results[-1].detail = action()
        except StepFailed as failure:
            self.results[-1].outcome, self.results[-1].detail = "FAIL", str(failure)
            self.say(f"  FAIL: {str(failure).splitlines()[0]}")
            return False
        self.say(f"  PASS ({self.results[-1].seconds:.1f}s)")
        return True

    def _alembic(self, *args: str) -> str:
        process = alembic_cli.start("-n", self.environment.name, *args, urls={self.environment.name: self.clone_url})
        return self._finish(process, f"alembic -n {self.environment.name} {' '.join(args)}")

    def _check(self, command: str) -> str:
        """scripts/preflight or scripts/validate against the clone, in this process (only the clone's URL)."""
        output = io.StringIO()
        with redirect_stdout(output), redirect_stderr(output):
            code = cli.command(command).main(["-n", self.environment.name], urls={self.environment.name: self.clone_url})
        return self._echo(f"scripts/{command} -n {self.environment.name}", output.getvalue().splitlines(), code)

    def _finish(self, process: subprocess.Popen, label: str) -> str:
        """Echo a subprocess's output as it comes; raise StepFailed on a non-zero exit."""
        lines = []
        self.say(f"  $ {label}")
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            self.say(f"    {lines[-1]}")
        return self._echo(label, lines, process.wait(), echoed=True)

    def _echo(self, label: str, lines: list[str], code: int, *, echoed: bool = False) -> str:
        if not echoed:
            self.say(f"  $ {label}")
            for line in lines:
                self.say(f"    {line}")
        if code != 0:
            tail = "\n".join(lines[-OUTPUT_TAIL_LINES:])
            raise StepFailed(f"{label} exited {code}\n{tail}")
        return f"{label}: exit 0"

    def _compare(self, original: str) -> str:
        difference = first_difference(original, schema_dump(self.clone_url), ("before the upgrade", "after the downgrade"))
        if difference:
            raise StepFailed(f"the rollback is not exact; first difference:\n{difference}")
        return "identical"

    # -- the source (read only) -------------------------------------------------------

    @contextmanager
    def _source(self) -> Iterator:
        with checks_cli.read_only_connection(self.source, "chat-migrations:rehearse") as connection:
            yield connection

    def _read_source(self) -> tuple[list[str], list[tuple[str, str]], str]:
        """The source's roles, its publications' public tables, and its revision."""
        with self._source() as connection:
            self.say(f"  identity: {checks_cli.verify_identity(self.source, connection)}")
            if connection.execute(text(f"SELECT to_regclass('{BOOKKEEPING_TABLES[0]}')")).scalar() is None:
                raise SetupFailed(
                    f"the source has no {BOOKKEEPING_TABLES[0]}: it was never adopted (README, Adopting a live database)"
                )
            revisions = connection.execute(text(f"SELECT version_num FROM {BOOKKEEPING_TABLES[0]}")).scalars().all()
            if len(revisions) != 1:
                raise SetupFailed(f"the source records {len(revisions)} revisions ({', '.join(revisions)}); expected one")
            roles = connection.execute(text("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_'")).scalars().all()
            # pg_dump --schema leaves publications out, and with them which tables Realtime publishes.
            publications = connection.execute(
                text("SELECT pubname, format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_publication_tables "
                     "WHERE schemaname = 'public' ORDER BY 1, 2")
            ).all()
        self.say(f"  at revision {revisions[0]}")
        return roles, [tuple(row) for row in publications], revisions[0]

    def _pg_dump(self, output: Path, *options: str) -> None:
        dbname, environment = libpq_command(self.source.url)
        result = subprocess.run(
            [str(pg_bindir() / "pg_dump"), "--format=custom", *options, "--file", str(output), "--dbname", dbname],
            capture_output=True, text=True, env={**environment, "PGOPTIONS": READ_ONLY_SESSION},
        )
        if result.returncode != 0:
            raise SetupFailed(f"pg_dump failed: {_first_error(result.stderr)}")

    def _copy_sample(self, rows: int) -> None:
        """Up to ``rows`` messages, their chats, those chats' participants, and stand-in users for them."""
        with self._source() as source, _clone_cursor(self.cluster, self.database) as clone:
            cursor = source.connection.dbapi_connection.cursor()
            clone.execute("SET session_replication_role = replica")  # keep seq as it is: no trigger runs
            for table, query in _sample_queries(rows):
                buffer = tempfile.TemporaryFile("w+")
                cursor.copy_expert(f"COPY ({query}) TO STDOUT", buffer)
                buffer.seek(0)
                clone.copy_expert(f"COPY {table} FROM STDIN", buffer)
            clone.execute(_SAMPLE_FIXUP_SQL)
            clone.execute("SET session_replication_role = DEFAULT")
            clone.execute("ANALYZE public.chats, public.chat_participants, public.chat_messages")
            clone.execute("SELECT count(*) FROM public.chat_messages")
            self.say(f"  sampled {clone.fetchone()[0]} messages")

    # -- the clone ---------------------------------------------------------------------

    def _create_roles(self, roles: list[str]) -> None:
        """Every role of the source, as a NOLOGIN role, so owners and grants restore as they are."""
        with _clone_cursor(self.cluster, "postgres") as cursor:
            cursor.execute("SELECT rolname FROM pg_roles")
            existing = {row[0] for row in cursor.fetchall()}
            for role in sorted(set(roles) - existing):
                cursor.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))

    def _mark_if_unmarked(self) -> None:
        """A source adopted through its Supabase URL carries its marker; a clone must carry one too."""
        with _clone_cursor(self.cluster, self.database) as cursor:
            cursor.execute(f"SELECT count(*) FROM {identity.MARKER}")
            if cursor.fetchone()[0] == 0:
                cursor.execute(identity.mark_sql(self.environment))

    def _add_to_publications(self, publications: list[tuple[str, str]]) -> None:
        with _clone_cursor(self.cluster, self.database) as cursor:
            for publication, table in publications:
                cursor.execute("SELECT FROM pg_publication WHERE pubname = %s", (publication,))
                if cursor.rowcount == 0:
                    cursor.execute(sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(publication)))
                cursor.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}").format(sql.Identifier(publication), sql.SQL(table)))

    def _pg_restore(self, dump: Path, workdir: Path) -> None:
        """Restore a custom-format dump into the clone, stopping at the first error.

        The clone already has the public schema (every database does), so the
        dump's own CREATE SCHEMA public is left out.
        """
        contents = _run([str(pg_bindir() / "pg_restore"), "--list", str(dump)], f"reading {dump.name}")
        listing = workdir / f"{dump.stem}.list"
        listing.write_text("".join(line for line in contents.splitlines(keepends=True) if not _PUBLIC_SCHEMA_ENTRY.match(line)))
        _run(
            [str(pg_bindir() / "pg_restore"), "--exit-on-error", "--use-list", str(listing), "--dbname",
             self.cluster.admin_url(self.database), str(dump)],
            f"restoring {dump.name} (a platform object the schema uses may be missing from scripts/supabase_platform/)",
        )

    def report(self) -> str:
        rows = [[r.name, f"{r.seconds:.1f}s" if r.outcome != "not run" else "", r.outcome, _summary(r)] for r in self.results]
        lines = ["", f"REHEARSAL of {self.environment.name} from {self.source.masked_url}", checks_cli.text_table(["STEP", "TIME", "RESULT", "DETAIL"], rows)]
        for result in self.results:
            if result.outcome == "FAIL" and "\n" in result.detail:
                lines += ["", f"{result.name} (FAIL):", *("  " + line for line in result.detail.splitlines())]
        total = sum(r.seconds for r in self.results)
        passed = all(r.outcome == "PASS" for r in self.results)
        failed = [r for r in self.results if r.outcome == "FAIL"]
        if failed and any(r.detail == NO_CLONE for r in self.results):
            # Exit 2: the one line says why, not only which step.
            verdict = f"CANNOT RUN: {failed[0].name} failed, no step ran: {_summary(failed[0])}"
        else:
            verdict = "OK: every step passed" if passed else "FAILED: " + ", ".join(r.name for r in failed)
        lines += ["", f"{verdict} ({total:.1f}s)"]
        return "\n".join(lines)


NO_CLONE = "no clone to run it on"


def _summary(result: StepResult) -> str:
    return result.detail.splitlines()[0] if result.detail else ""


_PUBLIC_SCHEMA_ENTRY = re.compile(r"^\d+; \d+ \d+ SCHEMA - public ")


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupFailed(f"{what} failed: {_first_error(result.stderr)}")
    return result.stdout


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error:" in line]
    return (errors or lines or ["no output"])[0]


@contextmanager
def _clone_cursor(cluster: Cluster, database: str):
    # Building the clone is the platform's work (roles, publications, rows as they
    # are with triggers off): the superuser's. The rehearsed commands run as postgres.
    connection = cluster.admin_connect(database)
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def _sample_queries(rows: int) -> list[tuple[str, str]]:
    messages = f"SELECT * FROM public.chat_messages ORDER BY id LIMIT {rows}"
    chats = f"SELECT chat_id FROM ({messages}) AS m WHERE chat_id IS NOT NULL"
    return [
        ("public.chats", f"SELECT * FROM public.chats WHERE id IN ({chats})"),
        ("public.chat_participants", f"SELECT * FROM public.chat_participants WHERE chat_id IN ({chats})"),
        ("public.chat_messages", messages),
    ]


# The sample must satisfy the foreign keys the migration validates: users exist
# in the auth stand-in, and a reply to a message outside the sample points nowhere.
_SAMPLE_FIXUP_SQL = """
INSERT INTO auth.users (id)
SELECT user_id FROM public.chat_participants WHERE user_id IS NOT NULL
UNION SELECT sender_id FROM public.chat_messages WHERE sender_id IS NOT NULL
UNION SELECT created_by FROM public.chats WHERE created_by IS NOT NULL
ON CONFLICT (id) DO NOTHING;
UPDATE public.chat_messages m SET reply_to_message_id = NULL
 WHERE reply_to_message_id IS NOT NULL
   AND NOT EXISTS (SELECT FROM public.chat_messages r WHERE r.id = m.reply_to_message_id);
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/rehearse",
        description="Rehearse the migration on a throwaway clone of an environment's schema: "
        "preflight, upgrade, validate, downgrade, compare, upgrade again.",
        epilog="Exit codes: 0 every step passed; 1 a step failed; 2 the clone could not be built (bad input, "
        "source unreachable or not adopted, pg_dump or restore failed). The source is only read.",
    )
    parser.add_argument("-n", "--name", required=True, metavar="ENV", help="the environment (an alembic.ini section)")
    parser.add_argument("--from-url", metavar="URL", help="read this database instead of the environment's URL variable")
    parser.add_argument("--sample-rows", type=int, metavar="N", help="also copy up to N messages with their chats and participants")
    parser.add_argument("--platform", choices=PLATFORMS, default=DEFAULT_PLATFORM,
                        help=f"which Supabase the clone's server is built as, as the source is (default {DEFAULT_PLATFORM})")
    parser.add_argument("--keep", action="store_true", help="leave the throwaway server running and print how to reach it")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sample_rows is not None and args.sample_rows < 1:
        parser.error("--sample-rows must be at least 1")
    try:
        source = checks_cli.environment_target(args.name, {args.name: args.from_url} if args.from_url else None)
        cluster = Cluster.start(platform=args.platform)
    except ChatMigrationsError as problem:
        print(f"rehearse: {problem}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    assert source.environment is not None
    rehearsal = Rehearsal(source.environment, source, cluster, database=f"rehearsal_{args.name}", sample_rows=args.sample_rows)
    try:
        code = rehearsal.run()
        print(rehearsal.report())
    finally:
        if args.keep:
            (cluster.root / "port").write_text(str(cluster.port))  # what scripts/local-db stop reads
            print(f"\nkept: export {source.environment.url_env}='{mask_url(rehearsal.clone_url)}'")
            print(f"stop it with: scripts/local-db stop --dir {cluster.root}")
        else:
            cluster.stop(remove=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
