"""scripts/review: what each revision does to a live database, for the pull request; no database needed.

For each environment it reads every revision after the baseline (or, with
``--base REF``, only those whose files the branch adds or changes since its
merge base with REF) and prints:

* what the revision changes and why (its docstring's first line and "Why:");
* each statement of its upgrade and its downgrade, rendered by Alembic in this
  process (chat_migrations.review.render_sql), with the lock it takes and how
  long it holds it: catalog-only, scan, until commit, rows
  (chat_migrations.review.lock_classes);
* what changes for the API's callers (chat_migrations.review.callers);
* squawk's findings in that SQL (chat_migrations.review.squawk);
* the hazards: a statement whose lock it cannot classify, ACCESS EXCLUSIVE
  held across a scan (in one statement, or from an earlier statement of the
  same transaction), a step that cannot be rolled back (the upgrade discards
  a column or rows, or the downgrade does not render), and a revision with
  no recorded downgrade (an empty or ``pass`` downgrade after an upgrade that
  does something).

Markdown by default, ``--format json`` (docs/json-shapes.md). Exit 0 no
hazard, 1 a hazard, 2 it could not run (one line on stderr).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.script import Script
from alembic.util import CommandError

from chat_migrations.checks import catalog, checks_cli
from chat_migrations.errors import ChatMigrationsError
from chat_migrations.review import callers, lock_classes, render_sql, squawk
from chat_migrations.review.render_sql import Statement, Step
from chat_migrations.runtime.environments import REPO_ROOT, get_environment, load_environments

EXIT_OK, EXIT_HAZARD, EXIT_CANNOT_RUN = 0, 1, 2
VERSIONS = "alembic/versions"

UNKNOWN_LOCK = "unknown_lock"
EXCLUSIVE_ACROSS_SCAN = "access_exclusive_across_scan"
CANNOT_ROLL_BACK = "cannot_roll_back"
NO_DOWNGRADE = "no_downgrade"
HAZARD_KINDS = {
    UNKNOWN_LOCK: "a lock it cannot classify",
    EXCLUSIVE_ACROSS_SCAN: "ACCESS EXCLUSIVE held across a scan",
    CANNOT_ROLL_BACK: "a step that cannot be rolled back",
    NO_DOWNGRADE: "no recorded downgrade",
}
# Docstring sections (docs/revisions.md): "Why:" runs until the next one.
_SECTIONS = ("Environment:", "Why:", "Live variants:", "Locks:", "Downgrade verified:", "Revision ID:", "Revises:",
             "Create Date:")


class ReviewError(ChatMigrationsError):
    """The review could not run (one line)."""


@dataclass(frozen=True)
class Hazard:
    kind: str
    direction: str
    detail: str

    def describe(self) -> str:
        return f"{HAZARD_KINDS[self.kind]} ({self.direction}): {self.detail}"


@dataclass
class RevisionReview:
    revision: str
    path: str
    change: str | None  # with --base: "added" or "modified"
    what: str
    why: str
    upgrade: list[Statement] = field(default_factory=list)
    downgrade: list[Statement] = field(default_factory=list)
    caller_changes: list[str] = field(default_factory=list)
    squawk: list[dict[str, Any]] = field(default_factory=list)
    hazards: list[Hazard] = field(default_factory=list)


@dataclass
class EnvironmentReview:
    name: str
    baseline: str
    head: str
    revisions: list[RevisionReview]


# --- the branch ------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise ReviewError("--base needs git, which is not installed") from None
    if result.returncode != 0:
        raise ReviewError(f"git {' '.join(args)}: {(result.stderr.strip().splitlines() or ['failed'])[-1]}")
    return result.stdout


def changed_files(ref: str) -> tuple[str, dict[str, str]]:
    """The merge base with ``ref``, and the revision files added or changed since it (the working tree's, untracked included)."""
    try:
        _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except ReviewError:
        raise ReviewError(f"--base {ref}: not a commit of this repository (fetch it first: git fetch origin)") from None
    base = _git("merge-base", ref, "HEAD").strip()
    changes = {}
    for line in _git("diff", "--name-status", "--no-renames", base, "--", VERSIONS).splitlines():
        status, path = line.split("\t", 1)
        if status in ("A", "M"):
            changes[path] = "added" if status == "A" else "modified"
    for path in _git("ls-files", "--others", "--exclude-standard", "--", VERSIONS).splitlines():
        changes[path] = "added"
    return base, changes


# --- one revision ------------------------------------------------------------------


def docstring_parts(doc: str | None) -> tuple[str, str]:
    """(first line, the "Why:" paragraph as one line) of a revision's docstring."""
    lines = (doc or "").strip().splitlines()
    what = lines[0].strip() if lines else ""
    why: list[str] = []
    inside = False
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith(_SECTIONS):
            inside = stripped.startswith("Why:")
            stripped = stripped.removeprefix("Why:").strip() if inside else ""
        if inside and stripped:
            why.append(stripped)
    return what, " ".join(why)


def _does_nothing(function: ast.FunctionDef | None) -> bool:
    if function is None:
        return True
    return all(
        isinstance(node, ast.Pass) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        for node in function.body
    )


def downgrade_missing(path: Path) -> bool:
    """The module's downgrade() does nothing (or is missing) while its upgrade() does something."""
    functions = {node.name: node for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
    return _does_nothing(functions.get("downgrade")) and not _does_nothing(functions.get("upgrade"))


def statement_hazards(direction: str, statements: list[Statement]) -> list[Hazard]:
    """Unknown locks, and ACCESS EXCLUSIVE held (until its transaction ends) while a statement scans that table."""
    hazards = []
    exclusive: set[str] = set()  # tables held ACCESS EXCLUSIVE by the open transaction
    in_transaction = False
    for number, statement in enumerate(statements, 1):
        lock = statement.lock
        if lock.transaction is not None:
            in_transaction = lock.transaction is lock_classes.Transaction.BEGIN
            exclusive = set()
            continue
        if not lock.known:
            hazards.append(Hazard(UNKNOWN_LOCK, direction, f"[{number}] {render_sql.label(statement.sql)}"))
        held = exclusive | {l.target for l in lock.locks if l.mode == lock_classes.ACCESS_EXCLUSIVE}
        for scanned in dict.fromkeys(l.target for l in lock.locks if l.held == lock_classes.SCAN):
            if scanned in held:
                hazards.append(Hazard(EXCLUSIVE_ACROSS_SCAN, direction,
                                      f"[{number}] {render_sql.label(statement.sql)}: {scanned} is held ACCESS EXCLUSIVE "
                                      "while it is scanned; every read and write of it waits"))
        exclusive = held if in_transaction else set()
    return hazards


def review_revision(env, script: Script, previous: str, change: str | None, squawk_dir: Path) -> tuple[RevisionReview, dict[str, Path]]:
    what, why = docstring_parts(script.module.__doc__)
    path = Path(script.path).resolve()
    review = RevisionReview(script.revision, str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path),
                            change, what, why)
    files = {}
    for step in (Step("upgrade", previous, script.revision), Step("downgrade", script.revision, previous)):
        try:
            sql = render_sql.offline_sql(env, step)
            statements = render_sql.rendered_statements(env, step, sql)
        except (ChatMigrationsError, CommandError, ValueError) as error:
            kind = CANNOT_ROLL_BACK if step.direction == "downgrade" else UNKNOWN_LOCK
            review.hazards.append(Hazard(kind, step.direction, f"its SQL cannot be rendered: {error}"))
            continue
        setattr(review, step.direction, statements)
        review.hazards += statement_hazards(step.direction, statements)
        file = squawk_dir / f"{env.name}-{script.revision}-{step.direction}.sql"
        file.write_text(squawk.lintable(sql))
        files[step.direction] = file
    for number, statement in enumerate(review.upgrade, 1):
        for discarded in statement.lock.discards:
            review.hazards.append(Hazard(CANNOT_ROLL_BACK, "upgrade", f"[{number}] {discarded}: no downgrade brings them back"))
    if downgrade_missing(path):
        review.hazards.append(Hazard(NO_DOWNGRADE, "downgrade", f"downgrade() in {review.path} does nothing"))
    return review, files


# --- environments ---------------------------------------------------------------------


def review_environment(name: str, changes: dict[str, str] | None, squawk_dir: Path) -> EnvironmentReview:
    env = get_environment(name)
    upgrades, _ = render_sql.steps(env, None)
    directory = catalog.script_directory(name)
    baseline = upgrades[0].before if upgrades else directory.get_current_head()
    scripts = [directory.get_revision(step.after) for step in upgrades]
    caller_lines = callers.caller_changes(name, scripts)
    reviews, files = [], {}
    for step, script in zip(upgrades, scripts):
        relative = Path(script.path).resolve().relative_to(REPO_ROOT).as_posix()
        if changes is not None and relative not in changes:
            continue
        review, written = review_revision(env, script, step.before, changes.get(relative) if changes else None, squawk_dir)
        review.caller_changes = caller_lines[script.revision]
        reviews.append(review)
        files.update({path.name: (review, direction) for direction, path in written.items()})
    for finding in squawk.findings([squawk_dir / name for name in files]):
        review, direction = files[finding.file]
        review.squawk.append({"direction": direction, "line": finding.line, "rule": finding.rule, "message": finding.message})
    return EnvironmentReview(name, baseline, directory.get_current_head(), reviews)


# --- output -------------------------------------------------------------------------


def _statement_data(number: int, statement: Statement) -> dict[str, Any]:
    lock = statement.lock
    return {
        "number": number,
        "statement": render_sql.label(statement.sql),
        "lock": lock.describe(),
        "known": lock.known,
        "run_alone": lock.run_alone,
        "locks": [{"mode": l.mode, "target": l.target, "held": l.held, "duration": l.duration} for l in lock.locks],
        "discards": list(lock.discards),
    }


def as_json(environments: list[EnvironmentReview], base: dict[str, str] | None, exit_code: int) -> dict[str, Any]:
    return {
        "command": "review",
        "exit_code": exit_code,
        "base": base,
        "hazards": sum(len(r.hazards) for e in environments for r in e.revisions),
        "environments": [
            {
                "name": e.name,
                "baseline": e.baseline,
                "head": e.head,
                "revisions": [
                    {
                        "revision": r.revision,
                        "path": r.path,
                        "change": r.change,
                        "what": r.what,
                        "why": r.why,
                        "upgrade": [_statement_data(n, s) for n, s in enumerate(r.upgrade, 1)],
                        "downgrade": [_statement_data(n, s) for n, s in enumerate(r.downgrade, 1)],
                        "caller_changes": r.caller_changes,
                        "squawk": r.squawk,
                        "hazards": [{"kind": h.kind, "direction": h.direction, "detail": h.detail} for h in r.hazards],
                    }
                    for r in e.revisions
                ],
            }
            for e in environments
        ],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def _shown(statement: Statement) -> bool:
    """Worth a row: it locks a table outside the bookkeeping schema, cannot be classified, or discards something."""
    lock = statement.lock
    tables = [l for l in lock.locks if not l.target.startswith("migration_meta.")]
    return bool(tables) or not lock.known or bool(lock.discards)


def _statement_rows(statements: list[Statement]) -> list[str]:
    rows = ["| # | statement | lock | held |", "| --- | --- | --- | --- |"]
    others: dict[str, int] = {}
    for number, statement in enumerate(statements, 1):
        if not _shown(statement):
            note = statement.lock.note or "bookkeeping rows"
            others[note] = others.get(note, 0) + 1
            continue
        held = ", ".join(dict.fromkeys(l.held for l in statement.lock.locks)) or ("UNKNOWN" if not statement.lock.known else "-")
        rows.append(f"| {number} | `{_cell(render_sql.label(statement.sql))}` | {_cell(statement.lock.describe())} | {held} |")
    if len(rows) == 2:
        rows = ["No statement locks a chat table."]
    if others:
        counted = "; ".join(f"{note}: {count}" for note, count in sorted(others.items()))
        rows.append("")
        rows.append(f"{sum(others.values())} more statements take no lock on a chat table ({_cell(counted)}).")
    return rows


def as_markdown(environments: list[EnvironmentReview], base: dict[str, str] | None) -> str:
    hazards = [(e.name, r.revision, h) for e in environments for r in e.revisions for h in r.hazards]
    scope = (f"the revisions this branch adds or changes since `{base['ref']}` (merge base `{base['merge_base'][:12]}`)"
             if base else "every revision from each environment's baseline to head")
    lines = ["# Migration review", "", f"Reviewed: {scope}. Rendered offline by Alembic; no database was read.", ""]
    if hazards:
        lines.append(f"**{len(hazards)} hazard{'s' if len(hazards) != 1 else ''}:**")
        lines += [f"- {env} `{revision}`: {_cell(hazard.describe())}" for env, revision, hazard in hazards]
    else:
        lines.append("**No hazards.**")
    for e in environments:
        lines += ["", f"## {e.name}: {e.baseline} → {e.head}"]
        if not e.revisions:
            lines += ["", "No revision of this environment is added or changed." if base else "No revision after the baseline."]
        for r in e.revisions:
            lines += ["", f"### {e.name} · {r.revision}", "", f"`{r.path}`" + (f" ({r.change})" if r.change else ""), ""]
            lines.append(f"**What:** {r.what}")
            lines += ["", f"**Why:** {r.why or '(the docstring has no Why: section)'}", ""]
            lines.append("**Hazards:**" + (" none" if not r.hazards else ""))
            lines += [f"- {_cell(h.describe())}" for h in r.hazards]
            lines += ["", "**Upgrade: statements and locks**", ""] + _statement_rows(r.upgrade)
            lines += ["", "**Downgrade: statements and locks**", ""] + _statement_rows(r.downgrade)
            lines += ["", "**What changes for callers (anon, authenticated, service_role):**"
                      + (" nothing" if not r.caller_changes else "")]
            lines += [f"- {_cell(change)}" for change in r.caller_changes]
            lines += ["", "**squawk:**" + (" nothing found" if not r.squawk else "")]
            lines += [f"- {f['direction']} line {f['line']}: `{f['rule']}`: {_cell(f['message'])}" for f in r.squawk]
    return "\n".join(lines) + "\n"


# --- the command ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/review",
        description="What each revision changes, its statements and their locks, what changes for callers, "
        "squawk's findings and the hazards, per environment; no database needed.",
        epilog="Exit codes: 0 no hazard; 1 a hazard (listed first); 2 it could not run.",
    )
    render_sql.add_environments_argument(parser)
    parser.add_argument("--base", metavar="REF",
                        help="a git ref (a pull request's base, e.g. origin/main): review only the revisions "
                        "added or changed since the merge base with it")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown", help="output format (default: markdown)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        names = args.environments or list(load_environments())
        base, changes = None, None
        if args.base is not None:
            merge_base, changes = changed_files(args.base)
            base = {"ref": args.base, "merge_base": merge_base}
        with tempfile.TemporaryDirectory(prefix="review-") as folder:
            environments = [review_environment(name, changes, Path(folder)) for name in names]
    except (ChatMigrationsError, CommandError, ValueError, checks_cli.CannotRun, squawk.SquawkMissing) as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        print(f"review: {message}", file=sys.stderr)
        if args.format == "json":
            print(json.dumps({"command": "review", "exit_code": EXIT_CANNOT_RUN, "error": message}))
        return EXIT_CANNOT_RUN
    hazardous = any(r.hazards for e in environments for r in e.revisions)
    exit_code = EXIT_HAZARD if hazardous else EXIT_OK
    if args.format == "json":
        print(json.dumps(as_json(environments, base, exit_code), indent=1))
    else:
        print(as_markdown(environments, base), end="")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
