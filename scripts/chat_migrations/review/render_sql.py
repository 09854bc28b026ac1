"""scripts/render-sql: the reviewable SQL files, per environment, for the upgrade and the rollback.

For each revision after ``--from`` (default: the environment's baseline) it
renders what ``alembic -n ENV upgrade PREV:REV --sql`` prints (and, for the
rollback, ``downgrade REV:PREV --sql``, newest first), through Alembic's own
API in this process, and writes it into numbered files an operator can run in
order, with psql or in Supabase's SQL editor:

* the editor sends a pasted script as one query, which PostgreSQL runs as one
  transaction (COMMIT lines inside it end one and start the next), and which
  may not hold CREATE/DROP INDEX CONCURRENTLY at all. So every such statement
  gets a file of its own ("run alone"), and every other file starts with the
  wrong-database guard, then the check that the database is at the revision
  the file starts from (chat_migrations.runtime.offline);
* a file commits only at its COMMIT lines, in the editor and in psql alike
  (psql runs it with ``-v AUTOCOMMIT=off``; a file run without it stops at
  its third statement, before changing anything), so the online DDL's short
  transactions stay short;
* the session settings (lock and statement timeouts) in force where a file
  starts are set again at its start, since each file runs in a session of
  its own;
* a header names the environment, the revisions, how to run the file, and the
  locks each statement takes: as the online DDL declared them, else as
  PostgreSQL's parser reads them (chat_migrations.review.lock_classes).

Nothing is written unless every file rendered; a previous rendering in the
output folder is replaced.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from pglast import ast, parse_sql

from chat_migrations.checks import catalog
from chat_migrations.runtime import identity, offline
from chat_migrations.runtime.environments import (
    ALEMBIC_INI, Environment, get_environment, load_environments,
)
from chat_migrations.checks.checks_cli import count_of
from chat_migrations.review.lock_classes import (
    Classification, Transaction, classify, classify_with_comments, code_only, leading_comments, split_statements,
)
from chat_migrations.errors import ChatMigrationsError, RenderError

DEFAULT_OUT = Path("rendered-sql")
SUFFIX = ".sql"
RUN_ALONE_SUFFIX = ".run-alone.sql"

# Exit codes (README, "Reviewing SQL").
EXIT_OK = 0
EXIT_UNKNOWN_LOCKS = 1
EXIT_NOT_RENDERED = 2

# Set transaction-locally by a file's first transaction and checked by its next
# statement: psql in autocommit mode would have committed in between.
ONE_TRANSACTION_FLAG = "migration.render_sql_file"
ONE_TRANSACTION_FLAG_SQL = f"SELECT set_config('{ONE_TRANSACTION_FLAG}', 'open', true)"
ONE_TRANSACTION_CHECK_SQL = f"""DO $one_transaction$
BEGIN
    IF current_setting('{ONE_TRANSACTION_FLAG}', true) IS DISTINCT FROM 'open' THEN
        RAISE EXCEPTION 'this file commits only at its COMMIT lines: run it with psql -v AUTOCOMMIT=off, or paste it whole into the SQL editor; nothing was changed';
    END IF;
END
$one_transaction$"""

_SETS_CUSTOM = re.compile(r"set_config\s*\(\s*'(?P<name>[\w.]+)'", re.IGNORECASE)
# current_setting('prefix.name') without missing_ok: a custom setting, an error in a
# session that never set it (built-in settings always exist).
_READS_CUSTOM = re.compile(r"current_setting\s*\(\s*'(?P<name>\w+\.[\w.]+)'\s*\)", re.IGNORECASE)
# What a DO block's label shows: its first command, else its first RAISE (never text inside a string).
_FIRST_COMMAND = re.compile(r"\b(ALTER|CREATE|DROP|INSERT|UPDATE|DELETE|GRANT|REVOKE|LOCK|EXECUTE)\s", re.IGNORECASE)
_FIRST_RAISE = re.compile(r"\bRAISE\s", re.IGNORECASE)
_INDEX_NAME = re.compile(r"INDEX\s+CONCURRENTLY\s+(IF\s+(NOT\s+)?EXISTS\s+)?(?P<name>[\w.\"]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Step:
    """One revision applied (upgrade) or reverted (downgrade)."""

    direction: str  # "upgrade" or "downgrade"
    before: str  # the revision the database is at before this step
    after: str

    @property
    def revision(self) -> str:
        return self.after if self.direction == "upgrade" else self.before

    @property
    def alembic_args(self) -> tuple[str, ...]:
        return (self.direction, f"{self.before}:{self.after}", "--sql")


@dataclass
class Statement:
    sql: str
    comments: list[str]
    lock: Classification

    @property
    def is_session_setting(self) -> bool:
        return self.lock.setting is not None


@dataclass
class Part:
    """One output file: a guarded run of transactions, or one statement to run alone."""

    step: Step
    run_alone: bool
    units: list[list[Statement]] = field(default_factory=list)  # each unit ends with COMMIT
    settings: dict[str, str] = field(default_factory=dict)  # session settings in force at its start

    @property
    def statements(self) -> list[Statement]:
        return [statement for unit in self.units for statement in unit]


# --- revisions -----------------------------------------------------------------


def steps(env: Environment, start: str | None) -> tuple[list[Step], list[Step]]:
    """The upgrade steps from ``start`` (default: the first revision) to head, and the rollback's, newest first."""
    script = catalog.script_directory(env.name)
    heads = script.get_heads()
    if len(heads) != 1:
        raise RenderError(f"{env.name} has {len(heads)} heads ({', '.join(heads)}): merge them first")
    chain = [revision.revision for revision in script.walk_revisions("base", heads[0])][::-1]
    start = start or chain[0]
    if start not in chain:
        raise RenderError(f"--from {start}: not a revision of {env.name}'s history ({', '.join(chain)})")
    path = chain[chain.index(start) :]
    upgrades = [Step("upgrade", a, b) for a, b in zip(path, path[1:])]
    downgrades = [Step("downgrade", b, a) for a, b in reversed(list(zip(path, path[1:])))]
    return upgrades, downgrades


def offline_sql(env: Environment, step: Step) -> str:
    """What ``alembic -n ENV <step> --sql`` prints, rendered in this process."""
    output = io.StringIO()
    config = Config(str(ALEMBIC_INI), ini_section=env.name, output_buffer=output)
    # alembic.ini's logging is the CLI's: here it would print alembic's progress lines.
    config.attributes["configure_logger"] = False
    run = command.upgrade if step.direction == "upgrade" else command.downgrade
    try:
        run(config, f"{step.before}:{step.after}", sql=True)
    except CommandError as error:
        last = (str(error).strip().splitlines() or ["no output"])[-1]
        raise RenderError(f"alembic -n {env.name} {' '.join(step.alembic_args)} failed: {last}") from None
    return output.getvalue()


def rendered_statements(env: Environment, step: Step, sql: str | None = None) -> list[Statement]:
    """The statements ``alembic -n ENV <step> --sql`` prints (``sql``, if rendered already), each with its lock classification."""
    statements = []
    for chunk in split_statements(offline_sql(env, step) if sql is None else sql):
        comments, sql = leading_comments(chunk)
        if sql:
            lock, comments = classify_with_comments(comments, sql)
            statements.append(Statement(sql, comments, lock))
    guard = identity.offline_guard_sql(env)
    if not statements or _normalized(statements[0].sql) != _normalized(guard):
        raise RenderError(f"alembic -n {env.name} {' '.join(step.alembic_args)} does not start with the wrong-database guard")
    if len(statements) < 2 or not statements[1].sql.startswith(f"DO {offline.TAG}"):
        raise RenderError(f"alembic -n {env.name} {' '.join(step.alembic_args)} does not check the revision it starts from")
    return statements


def _normalized(sql: str) -> str:
    return " ".join(sql.split())


# --- cutting into files ----------------------------------------------------------


def parts(env: Environment, step: Step, statements: list[Statement]) -> list[Part]:
    """The step's statements cut into files: a new one at every statement that must run alone.

    A guarded file starts with the guards (the database's identity, then its
    revision: every file of a step runs where the step starts, since only its
    last file records the new revision); the session settings in force at its
    first real statement are set again there (leading SETs fold into them).
    """
    settings: dict[str, str] = {}
    guard, position, *rest = statements
    result: list[Part] = []
    current = Part(step, run_alone=False)
    pending: list[Statement] = [guard, position]  # join the next transaction
    transaction: list[Statement] | None = None
    carried_comments: list[str] = []

    def add_unit(unit: list[Statement]) -> None:
        nonlocal pending
        if not current.units:
            current.settings = dict(settings)
            unit = [s for s in unit if not s.is_session_setting]
        current.units.append(unit)
        pending = []

    for statement in rest:
        statement.comments[:0], carried_comments = carried_comments, []
        if statement.lock.transaction is not None:
            if statement.lock.transaction is Transaction.BEGIN:
                transaction = []
            else:
                if transaction:
                    add_unit(pending + transaction)
                transaction = None
            carried_comments = statement.comments
        elif transaction is not None:
            if statement.lock.run_alone:
                raise RenderError(f"{step.revision}: {label(statement.sql)} is inside a transaction block")
            transaction.append(statement)
        elif statement.lock.run_alone:
            # Timeouts set just for it are in `settings`: its header passes them on.
            _close(current, [s for s in pending if not s.is_session_setting], settings)
            result += [current, Part(step, run_alone=True, units=[[statement]], settings=dict(settings))]
            current = Part(step, run_alone=False)
            pending = [_statement(identity.offline_guard_sql(env)), _statement(position.sql)]
        elif statement.is_session_setting:
            _apply_setting(settings, statement.lock.setting)
            pending.append(statement)
        else:
            add_unit(pending + [statement])
    if transaction is not None:
        raise RenderError(f"{step.revision}: the --sql output ends inside a transaction")
    _close(current, pending, settings)
    return [part for part in [*result, current] if part.units]


def _close(part: Part, pending: list[Statement], settings: dict[str, str]) -> None:
    """Finish a guarded file: its own checks and settings after the guard, RESETs last."""
    if not part.units:
        return  # nothing but the guard and settings: no file
    if pending:
        part.units.append(pending)
    guard, position, *first = part.units[0]
    replay = [_statement(f"SET {name} = {value}") for name, value in part.settings.items()]
    part.units[0] = [guard, position, _statement(ONE_TRANSACTION_FLAG_SQL), _statement(ONE_TRANSACTION_CHECK_SQL), *replay, *first]
    # The SQL editor reuses its sessions: leave their timeouts as they were.
    touched = dict.fromkeys([*part.settings, *settings])
    if touched:
        part.units.append([_statement(f"RESET {name}") for name in touched])


def _statement(sql: str) -> Statement:
    return Statement(sql, [], classify(sql))


def _apply_setting(settings: dict[str, str], setting) -> None:
    if setting.value is None:
        settings.pop(setting.name, None)
    else:
        settings[setting.name] = setting.value


def check_custom_settings(name: str, part: Part) -> None:
    """A file runs in a session of its own: it may read only the custom settings it sets."""
    text = "\n".join(statement.sql for statement in part.statements)
    set_here = {m.group("name") for m in _SETS_CUSTOM.finditer(text)}
    set_here |= {s.lock.setting.name for s in part.statements if s.lock.setting and s.lock.setting.value is not None}
    for match in _READS_CUSTOM.finditer(text):
        setting = match.group("name")
        if setting not in set_here:
            raise RenderError(
                f"{name} reads the session setting {setting} that an earlier file sets; "
                "files run in separate sessions, so that revision cannot be split here"
            )


# --- writing -----------------------------------------------------------------------


@dataclass
class RenderedFile:
    name: str
    text: str
    part: Part

    @property
    def unknown_locks(self) -> int:
        return sum(not statement.lock.known for statement in self.part.statements)


def psql_arguments(*, run_alone: bool) -> list[str]:
    """psql's options for a rendered file: stop at the first error; commit only at COMMIT lines."""
    return ["-X", "-v", "ON_ERROR_STOP=1", *([] if run_alone else ["-v", "AUTOCOMMIT=off"])]


def psql_command(env: Environment, file_name: str, *, run_alone: bool) -> str:
    return f'psql "${env.url_env}" {" ".join(psql_arguments(run_alone=run_alone))} -f {file_name}'


def render_environment(env: Environment, start: str | None) -> list[RenderedFile]:
    upgrades, downgrades = steps(env, start)
    files: list[RenderedFile] = []
    for label, chain in (("upgrade", upgrades), ("rollback", downgrades)):
        planned = [(step, part) for step in chain for part in parts(env, step, rendered_statements(env, step))]
        width = max(2, len(str(len(planned))))
        names = [
            f"{label}-{index:0{width}d}-{step.revision}{RUN_ALONE_SUFFIX if part.run_alone else SUFFIX}"
            for index, (step, part) in enumerate(planned, 1)
        ]
        for index, (step, part) in enumerate(planned):
            check_custom_settings(names[index], part)
            siblings = [p for s, p in planned if s == step]
            number = next(n for n, sibling in enumerate(siblings, 1) if sibling is part)
            context = _Context(env, label, names, index, number, len(siblings))
            files.append(RenderedFile(names[index], _file_text(context, part), part))
    return files


@dataclass
class _Context:
    env: Environment
    label: str
    names: list[str]
    index: int
    part_number: int
    parts_of_step: int

    @property
    def name(self) -> str:
        return self.names[self.index]

    @property
    def previous(self) -> str | None:
        return self.names[self.index - 1] if self.index else None

    @property
    def following(self) -> str | None:
        return self.names[self.index + 1] if self.index + 1 < len(self.names) else None


def _file_text(context: _Context, part: Part) -> str:
    header = _run_alone_header(context, part) if part.run_alone else _guarded_header(context, part)
    body: list[str] = []
    number = 0
    for unit in part.units:
        for statement in unit:
            number += 1
            body.extend(statement.comments)
            body.append(f"-- [{number}] {statement.lock.describe()}")
            body.append(statement.sql.rstrip() + ";")
            body.append("")
        if not part.run_alone:
            body.extend(["COMMIT;", ""])
    return "\n".join(header + [""] + body).rstrip() + "\n"


def _title(context: _Context, part: Part) -> list[str]:
    step = part.step
    ref = f", Supabase project {context.env.supabase_project_ref}" if context.env.supabase_project_ref else ""
    lines = [
        "-- " + "=" * 76,
        f"-- {context.env.name}: {step.direction} {step.before} -> {step.after}"
        + (f"  (file {context.part_number} of {context.parts_of_step} for this revision)" if context.parts_of_step > 1 else ""),
        "-- " + "=" * 76,
        f"-- Environment: {context.env.name}{ref}.",
        f"-- Source: alembic -n {context.env.name} {' '.join(step.alembic_args)}, rendered by scripts/render-sql.",
        f"-- Order: file {context.index + 1} of {len(context.names)} of the {context.label};"
        + (f" after {context.previous}" if context.previous else " the first")
        + (f", before {context.following}." if context.following else ", the last."),
    ]
    return lines


def _guarded_header(context: _Context, part: Part) -> list[str]:
    env = context.env.name
    lines = _title(context, part) + [
        f"-- Guard: the first statement stops this file on any database not marked as {env!r}",
        f"--   ({identity.MARKER}), the second unless the database is at {part.step.before}",
        "--   (run twice, or out of order, it stops); nothing is changed there.",
        "-- Run it once, whole:",
        "--   SQL editor: paste the whole file and run it;",
        f"--   psql: {psql_command(context.env, context.name, run_alone=False)}",
        "-- Transactions: the statements up to each COMMIT line commit together, and",
        "--   locks are held only until that COMMIT. A failing statement rolls back its",
        "--   own transaction and stops the file; earlier transactions stay committed.",
        "--   Run in autocommit mode (plain psql), the file stops at statement [4] before",
        "--   changing anything.",
    ]
    if part.settings:
        lines.append("-- Session settings it starts with (in force here in the full script): "
                     + ", ".join(f"{k} = {v}" for k, v in part.settings.items()) + ".")
    lines.append("-- Locks, statement by statement:")
    number = 0
    for statement in part.statements:
        number += 1
        lines.append(f"--   [{number}] {label(statement.sql)}")
        lines.append(f"--         {statement.lock.describe()}")
    return lines


def _run_alone_header(context: _Context, part: Part) -> list[str]:
    (statement,) = part.statements
    settings = " ".join(f"-c {name}={value}" for name, value in part.settings.items())
    run_psql = (f"PGOPTIONS='{settings}' " if settings else "") + psql_command(context.env, context.name, run_alone=True)
    idempotent = re.search(r"\bIF\s+(NOT\s+)?EXISTS\b", statement.sql, re.IGNORECASE)
    index = _INDEX_NAME.search(statement.sql)
    lines = _title(context, part) + [
        "-- RUN ALONE: PostgreSQL refuses this statement inside a transaction block, and the",
        "--   SQL editor runs a pasted script as one transaction, so it has a file of its own.",
        f"-- Run it only on the database where {context.previous} just succeeded,",
        f"--   then go on with {context.following or 'nothing: it is the last file'}.",
        "--   SQL editor: paste this file alone and run it (it runs under the editor's own",
        "--     timeouts; on a large table prefer psql);",
        f"--   psql: {run_psql}",
    ]
    if settings:
        lines.append("--     (PGOPTIONS: the session settings the full script has in force here)")
    lines += [
        "-- No guard of its own: a guard would have to share its query. What protects it:",
        f"--   - {context.previous}, run just before on the same database, starts with the guard;",
        f"--   - {context.following or 'the next revision file'}, next, starts with the guard and checks the result;",
    ]
    if idempotent:
        lines.append("--   - it is written IF [NOT] EXISTS: running it again, or where it is done already, changes nothing.")
    else:
        lines.append("--   - it is NOT idempotent: a second run fails.")
    if index and statement.sql.upper().lstrip().startswith("CREATE"):
        lines.append(f"-- On another environment's database it would build {index.group('name')} there")
        lines.append(f"--   (blocking no reads or writes); DROP INDEX CONCURRENTLY {index.group('name')} removes it.")
    elif index:
        lines.append(f"-- On another environment's database it would drop that database's {index.group('name')}.")
    lines.append(f"-- Lock: {statement.lock.describe()}")
    return lines


def label(sql: str) -> str:
    """One line saying what a statement is: its start, or for a DO block the first command inside."""
    flat = " ".join(sql.split())
    if flat.upper().startswith("DO "):
        tag = flat.split()[1]
        (raw,) = parse_sql(sql)
        body = next(option.arg.sval for option in raw.stmt.args if option.defname == "as") if isinstance(raw.stmt, ast.DoStmt) else ""
        code = code_only(body)
        found = [(rank, match.start()) for rank, pattern in enumerate((_FIRST_COMMAND, _FIRST_RAISE)) if (match := pattern.search(code))]
        start = min(found)[1] if found else None
        flat = f"DO {tag}: " + (" ".join(body[start:].split()) if start is not None else "checks")
    return flat if len(flat) <= 72 else flat[:71] + "…"


# --- output folder -----------------------------------------------------------------


def write(out: Path, rendered: dict[str, list[RenderedFile]]) -> None:
    """Replace ``out/<env>/`` with the rendered files; refuse a folder holding anything else."""
    for env in rendered:
        target = out / env
        if target.exists():
            foreign = [p.name for p in target.iterdir() if not (p.is_file() and p.name.endswith(SUFFIX))] if target.is_dir() else [target.name]
            if foreign:
                raise RenderError(f"refusing to replace {target}: it holds files render-sql did not write ({', '.join(foreign[:3])})")
    out.mkdir(parents=True, exist_ok=True)
    fresh = {}
    for env, files in rendered.items():
        fresh[env] = Path(tempfile.mkdtemp(prefix=f".{env}-", dir=out))
        for file in files:
            (fresh[env] / file.name).write_text(file.text)
    for env, folder in fresh.items():
        target = out / env
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)


def add_environments_argument(parser: argparse.ArgumentParser) -> None:
    """-n ENV, repeatable, as render-sql and review take it (``environments``: None for every one)."""
    parser.add_argument("-n", "--name", dest="environments", action="append", metavar="ENV",
                        help="an environment of alembic.ini (repeatable; default: every one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/render-sql",
        description="Write the reviewable upgrade and rollback SQL files of each environment.",
        epilog="Exit codes: 0 written; 1 written, but some statement's locks are UNKNOWN (marked in the files); "
        "2 nothing written.",
    )
    add_environments_argument(parser)
    parser.add_argument("--from", dest="start", metavar="REV",
                        help="the revision the database is at (default: the environment's first revision, its baseline)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        names = args.environments or list(load_environments())
        environments = [get_environment(name) for name in names]
        rendered = {env.name: render_environment(env, args.start) for env in environments}
        write(args.out, rendered)
    except (ChatMigrationsError, CommandError, ValueError) as error:
        print(f"render-sql: {error}; nothing was written", file=sys.stderr)
        return EXIT_NOT_RENDERED
    unknown = 0
    for env, files in rendered.items():
        print(f"{args.out / env}/" + ("" if files else "  (nothing to render: no revision after the starting one)"))
        for file in files:
            kind = "run alone" if file.part.run_alone else "guarded"
            flag = f", {file.unknown_locks} UNKNOWN lock(s)" if file.unknown_locks else ""
            print(f"  {file.name}  ({kind}, {count_of(len(file.part.statements), 'statement')}{flag})")
            unknown += file.unknown_locks
    if unknown:
        print(f"render-sql: {count_of(unknown, 'statement')} without a lock classification: review them by hand", file=sys.stderr)
        return EXIT_UNKNOWN_LOCKS
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
