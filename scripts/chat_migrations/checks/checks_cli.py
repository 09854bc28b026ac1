"""What scripts/validate, scripts/preflight and scripts/drift share.

* Targets: an environment (``-n prod``), whose URL is read exactly as Alembic
  reads it, or for drift a connection URL.
* A read-only connection: the session is made READ ONLY before it runs
  anything, so "never writes" is enforced by the server, not by care. Its
  search_path is ``pg_catalog`` so catalog functions print every name
  schema-qualified, the same way on every database.
* Exit codes: 0 when everything holds, 1 when something does not, 2 when the
  command could not run (bad input, unreachable server, wrong password, wrong
  database), always with a one-line reason and the password masked.
* Output: a human table by default, one JSON document with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Protocol

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from chat_migrations.runtime import identity
from chat_migrations.runtime.session import first_line
from chat_migrations.runtime.environments import ConfigurationError, Environment, get_environment, load_environments, mask_url, parse_url, redact
from chat_migrations.errors import ChatMigrationsError, CannotRun

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2

# A check never queues for long behind a migration's lock (it would fail with
# exit 2 instead), and never runs unbounded on a large table.
CHECK_LOCK_TIMEOUT = "5s"
CHECK_STATEMENT_TIMEOUT = "15min"

# How much each way of proving a check costs, cheapest first.
METHODS = ("catalog", "index", "scan")


@dataclass(frozen=True)
class Target:
    """A database to inspect: an environment's, or one named by its URL."""

    label: str
    url: str  # may hold a password: print masked_url only
    environment: Environment | None = None

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "environment": self.environment and self.environment.name, "database": self.masked_url}


def environment_target(name: str | None, urls: dict[str, str] | None = None) -> Target:
    """The environment's database; ``urls`` ({environment: url}) stands in for the variables (tests, jobs)."""
    env = get_environment(name)
    url = (urls or {}).get(env.name) or env.database_url()
    return Target(env.name, url, env)


def target_from_argument(value: str, urls: dict[str, str] | None = None) -> Target:
    """An environment name, or a postgresql:// URL (labelled by its database name)."""
    if "://" in value:
        return Target(parse_url(value).database or value, value)
    environments = load_environments()
    if value not in environments:
        raise ConfigurationError(
            f"{value!r} is neither an environment ({' or '.join(environments)}) nor a postgresql:// URL"
        )
    return environment_target(value, urls)


@contextmanager
def read_only_connection(target: Target, application: str) -> Iterator[Connection]:
    """A connection whose every transaction is READ ONLY (server-enforced).

    For an environment, a URL naming the other environment's Supabase project
    is refused before connecting (identity.WrongDatabase).
    """
    url = parse_url(target.url)
    if target.environment is not None:
        identity.check_url(target.environment, load_environments(), url)
    engine = create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": 10, "application_name": application}
    )
    event.listen(engine, "connect", _make_session_read_only, insert=True)
    try:
        try:
            conn = engine.connect()
        except OperationalError as error:
            whose = f"{target.environment.name}'s database" if target.environment else "database"
            raise CannotRun(f"cannot connect to {whose} {target.masked_url}: {first_line(error)}") from None
        with conn:
            yield conn
    finally:
        engine.dispose()


def _make_session_read_only(dbapi_connection, _record) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; "
            f"SET lock_timeout = '{CHECK_LOCK_TIMEOUT}'; SET statement_timeout = '{CHECK_STATEMENT_TIMEOUT}'; "
            "SET search_path = pg_catalog"
        )
    dbapi_connection.commit()


def verify_identity(target: Target, conn: Connection) -> str:
    """How the database proved it is the target's (raises identity.WrongDatabase when it is not)."""
    env = target.environment
    if env is None:
        return "given by URL: no environment guard"
    url = parse_url(target.url)
    marker_missing = identity.verify(env, load_environments(), url, conn)
    conn.rollback()
    if marker_missing:
        return (
            f"Supabase project {env.supabase_project_ref} (from the URL); the marker "
            f"{identity.MARKER} is written by the first stamp or upgrade"
        )
    return identity.describe_marker(env.name)


# --- results and output --------------------------------------------------------


@dataclass
class Finding:
    """One check's outcome; ``problems`` name the objects, one line each."""

    name: str
    title: str
    status: str
    method: str
    summary: str
    problems: list[str] = field(default_factory=list)
    fix: str | None = None
    data: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def count_of(count: int, noun: str) -> str:
    """"1 index", "2 indexes", "3 statements"."""
    plural = noun + ("es" if noun.endswith(("x", "s")) else "s")
    return f"{count} {noun if count == 1 else plural}"


def costliest(methods) -> str:
    return max(methods, key=METHODS.index, default="catalog")


def timed(function: Callable[..., Finding], *args) -> Finding:
    started = time.monotonic()
    finding = function(*args)
    finding.seconds = round(time.monotonic() - started, 3)
    return finding


@dataclass
class FindingsReport:
    """A command's findings about one target; it fails when any has ``failing_status``."""

    target: Target
    findings: list[Finding]
    failing_status: ClassVar[str] = "fail"

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.findings if f.status == self.failing_status]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failing else EXIT_OK

    def checks_json(self) -> dict[str, Any]:
        return {"checks": [finding.to_json() for finding in self.findings]}

    def render_findings(self, header: list[str], status_labels: dict[str, str], verdict: str) -> str:
        return "\n".join([*header, "", render_findings(self.findings, status_labels), "", verdict])


class Report(Protocol):
    exit_code: int

    def to_json(self) -> dict[str, Any]: ...

    def render(self) -> str: ...


def run_command(command: str, build_report: Callable[[], Report], as_json: bool) -> int:
    """Build the report and print it; any reason it could not be built is exit 2, one line."""
    try:
        report = build_report()
    except ChatMigrationsError as error:
        return _cannot_run(command, str(error), as_json)
    except DBAPIError as error:
        return _cannot_run(command, f"stopped by the database: {first_line(error)}", as_json)
    try:
        if as_json:
            print(json.dumps({"command": command, "exit_code": report.exit_code, **report.to_json()}, indent=2, default=str))
        else:
            print(report.render())
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`| head`); the verdict is still the exit code.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return report.exit_code


def _cannot_run(command: str, reason: str, as_json: bool) -> int:
    reason = redact(reason)
    if as_json:
        print(json.dumps({"command": command, "exit_code": EXIT_CANNOT_RUN, "error": reason}, indent=2))
    print(f"ERROR: {command} could not run: {reason}", file=sys.stderr)
    return EXIT_CANNOT_RUN


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table; the last column is left ragged."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_findings(findings: list[Finding], status_labels: dict[str, str]) -> str:
    """The findings as a table, then each problem and fix on its own line."""
    rows = [
        [f.name, f.method, status_labels.get(f.status, f.status), f"{f.seconds:.2f}s", f.summary]
        for f in findings
    ]
    out = [text_table(["CHECK", "METHOD", "RESULT", "TIME", "SUMMARY"], rows)]
    for f in findings:
        if f.problems or f.fix:
            out.append("")
            out.append(f"{f.name} ({status_labels.get(f.status, f.status)}):")
            out.extend(f"  - {problem}" for problem in f.problems)
            if f.fix:
                out.append(f"  fix: {f.fix}")
    return "\n".join(out)


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document (shape: docs/json-shapes.md) instead of a table")


def command_parser(command: str, description: str, exit_codes: str, *, environment: bool = True) -> argparse.ArgumentParser:
    """The parser every read-only command starts from: its usage, exit codes, ``-n ENV`` and ``--json``."""
    parser = argparse.ArgumentParser(prog=f"scripts/{command}", description=description, epilog=exit_codes)
    if environment:
        parser.add_argument("-n", "--name", metavar="ENVIRONMENT", help="the environment (an alembic.ini section)")
    add_json_flag(parser)
    return parser
