"""scripts/drift A B [--json] [--differences-only]: the plan's comparison tables, from the live catalogs.

A and B are environment names (their URLs read as Alembic reads them, and
the same identity guard) or postgresql:// URLs. Both catalogs are read
(chat_migrations.checks.catalog, read-only) and every messaging object is compared:
columns, constraints, indexes, functions, triggers, replica identity,
publication membership, RLS, policies and grants. Each row is Match,
Mismatch (naming the attributes that differ) or Missing (present on one side
only).

Each difference is then classed by ``explain`` (the one place that knows why
two databases of this project may differ):

* explained: the project made it on purpose, or will make it go away. A key
  the revisions keep nullable because its foreign key is ON DELETE SET NULL
  on that side, and that foreign key itself (README, "Where NOT NULL meets ON
  DELETE SET NULL"); what a revision still pending on that side builds or
  sets NOT NULL;
* harmless: something only one side has that nothing names (an extra
  nullable column, an extra non-unique index), as adopt calls it;
* unexplained: everything else.

Exit 0 when nothing is unexplained (the explained and harmless differences
are listed), 1 when something is, 2 when it could not run.

What differs between any two databases without being drift is left out by
construction: OIDs are never read, lists are sorted, function bodies are
compared by a digest of their whitespace-normalized text, and expressions come
from the server's own deparser.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable

from chat_migrations.checks import checks_cli, guarantees
from chat_migrations.checks.catalog import Catalog, read_catalog
from chat_migrations.checks.checks_cli import Target
from chat_migrations.frozen import baseline
from chat_migrations.runtime import bookkeeping, promises
from chat_migrations.schema import history, models

MATCH, MISMATCH, MISSING = "Match", "Mismatch", "Missing"
EXPLAINED, HARMLESS, UNEXPLAINED = "explained", "harmless", "unexplained"


def _column_cell(v: dict[str, Any]) -> str:
    cell = f"{v['type']}, {'NULL' if v['nullable'] else 'NOT NULL'}"
    if v.get("default") is not None:
        cell += f", default {v['default']}"
    if v.get("identity"):
        cell += f", identity {v['identity']}"
    if v.get("generated"):
        cell += f", generated {v['generated']}"
    return cell


def _constraint_cell(v: dict[str, Any]) -> str:
    cell = v["definition"] + ("" if v["validated"] else " NOT VALID")
    return cell + (" (triggers disabled)" if v.get("triggers_enabled") is False else "")


def _function_cell(v: dict[str, Any]) -> str:
    security = " SECURITY DEFINER" if v["security_definer"] else ""
    return (
        f"({v['arguments']}) → {v['returns']}; {v['language']} {v['volatility'].upper()}{security}; "
        f"search_path {v['search_path'] if v['search_path'] is not None else 'not set'}; "
        f"owner {v['owner']}; body {v['body_digest']}"
    )


def _policy_cell(v: dict[str, Any]) -> str:
    cell = f"{v['command']} {v['permissive']} to {', '.join(v['roles'])}"
    if v["using"]:
        cell += f" USING {v['using']}"
    if v["with_check"]:
        cell += f" WITH CHECK {v['with_check']}"
    return cell


def _rls_cell(v: dict[str, Any]) -> str:
    state = "enabled" if v["rls_enabled"] else "disabled"
    return f"{state}{', forced' if v['rls_forced'] else ''} (owner {v['owner']})"


@dataclass(frozen=True)
class Section:
    """One comparison table: which catalog entries, which attributes, how a cell reads."""

    name: str
    title: str
    entries: Callable[[Catalog], dict[str, dict[str, Any]]]
    attributes: tuple[str, ...]
    cell: Callable[[dict[str, Any]], str]


SECTIONS = (
    Section("columns", "Columns", lambda c: c.columns, ("type", "nullable", "default", "identity", "generated"), _column_cell),
    Section("constraints", "Constraints", lambda c: c.constraints, ("definition", "validated", "triggers_enabled"), _constraint_cell),
    Section("indexes", "Indexes", lambda c: c.indexes, ("definition", "valid"),
            lambda v: v["definition"] + ("" if v["valid"] else " INVALID")),
    Section("functions", "Functions", lambda c: c.functions,
            ("arguments", "returns", "language", "volatility", "security_definer", "search_path", "body_digest", "owner"),
            _function_cell),
    Section("triggers", "Triggers", lambda c: c.triggers, ("definition", "enabled"),
            lambda v: v["definition"] + ("" if v["enabled"] == "enabled" else f" [{v['enabled']}]")),
    Section("replica_identity", "Replica identity", lambda c: c.tables, ("replica_identity",),
            lambda v: v["replica_identity"].upper()),
    Section("publications", "Publication membership", lambda c: c.tables, ("publications",),
            lambda v: ", ".join(v["publications"]) or "(none)"),
    Section("rls", "Row level security", lambda c: c.tables, ("rls_enabled", "rls_forced", "owner"), _rls_cell),
    Section("policies", "Policies", lambda c: c.policies, ("command", "permissive", "roles", "using", "with_check"), _policy_cell),
    Section("grants", "Grants", lambda c: c.grants, ("privileges",), lambda v: v["privileges"]),
)


@dataclass
class Row:
    section: str
    object: str
    a: dict[str, Any] | None
    b: dict[str, Any] | None
    cells: tuple[str | None, str | None]

    @property
    def differences(self) -> list[str]:
        if self.a is None or self.b is None:
            return []
        return [key for key in self.a if self.a[key] != self.b.get(key)]

    # Set by classify(): None for a Match, else EXPLAINED, HARMLESS or UNEXPLAINED, and why.
    verdict: str | None = None
    why: str | None = None

    @property
    def status(self) -> str:
        if self.a is None or self.b is None:
            return MISSING
        return MISMATCH if self.differences else MATCH

    def to_json(self, labels: tuple[str, str]) -> dict[str, Any]:
        missing_in = None
        if self.status == MISSING:
            missing_in = labels[0] if self.a is None else labels[1]
        return {
            "section": self.section, "object": self.object, "status": self.status,
            "differences": self.differences, "missing_in": missing_in, "a": self.a, "b": self.b,
            "class": self.verdict, "why": self.why,
        }


def messaging_functions(a: Catalog, b: Catalog) -> set[str]:
    """Signatures of the functions that concern the messaging tables in either database."""
    return {key for cat in (a, b) for key, f in cat.functions.items() if f["touches_messaging"]}


def _function_keys(catalog: Catalog, wanted: set[str]) -> dict[str, str]:
    """Compare functions by name (so a changed argument list is a Mismatch), by signature when overloaded."""
    names = [catalog.functions[s]["name"] for s in wanted if s in catalog.functions]
    return {
        signature: (signature.split("(")[0] if names.count(catalog.functions[signature]["name"]) == 1 else signature)
        for signature in wanted if signature in catalog.functions
    }


def _entries(section: Section, catalog: Catalog, functions: set[str]) -> dict[str, dict[str, Any]]:
    entries = section.entries(catalog)
    if section.name == "functions":
        return {key: entries[signature] for signature, key in _function_keys(catalog, functions).items()}
    if section.name == "grants":
        # Table grants, and those of the messaging functions only.
        return {
            key: value for key, value in entries.items()
            if key.startswith(("table ", "column ")) or key.removeprefix("function ").rsplit(" to ", 1)[0] in functions
        }
    return entries


def compare(a: Catalog, b: Catalog) -> list[Row]:
    functions = messaging_functions(a, b)
    rows = []
    for section in SECTIONS:
        left, right = _entries(section, a, functions), _entries(section, b, functions)
        for key in sorted(left.keys() | right.keys()):
            values = [
                None if side.get(key) is None else {attr: side[key].get(attr) for attr in section.attributes}
                for side in (left, right)
            ]
            cells = tuple(None if side.get(key) is None else section.cell(side[key]) for side in (left, right))
            rows.append(Row(section.name, key, values[0], values[1], cells))
    return rows


# --- why two databases differ --------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One compared database: its label, its catalog, and what the revisions not applied there yet declare."""

    label: str
    catalog: Catalog
    pending: tuple[tuple[str, promises.Promises], ...] = ()  # (revision, its promises), in upgrade order

    def pending_declaring(self, key: tuple) -> list[tuple[str, promises.Item]]:
        return [(revision, item) for revision, declared in self.pending for item in declared.items if item.key == key]


def explain(row: Row, a: Side, b: Side) -> tuple[str, str] | None:
    """(EXPLAINED or HARMLESS, why) for a difference the project accounts for; None when unexplained.

    The one place drift judges a difference: from the head schema
    (schema.models), the guarantees' ON DELETE SET NULL rule, and what the
    revisions still pending on a side declare (their ``promises``).
    """
    for rule in _RULES:
        verdict = rule(row, a, b)
        if verdict:
            return verdict
    return None


def _split(key: str) -> tuple[str, str]:
    table, name = key.rsplit(".", 1)
    return table, name


@functools.lru_cache(maxsize=None)
def _head(kind: str) -> frozenset[str]:
    """The head schema's "columns", "not null" columns or "indexes" (either environment's: they converge)."""
    heads = [t for environment in baseline.ENVIRONMENTS
             for t in models.at_head(environment).tables.values() if t.schema is None]
    return frozenset({
        "columns": (f"public.{t.name}.{c.name}" for t in heads for c in t.columns),
        "not null": (f"public.{t.name}.{c.name}" for t in heads for c in t.columns if not c.nullable),
        "indexes": (f"public.{t.name}.{i.name}" for t in heads for i in t.indexes),
    }[kind])


_SET_NULL_RULE = 'README, "Where NOT NULL meets ON DELETE SET NULL"'


def _set_null_key(row: Row, a: Side, b: Side) -> tuple[str, str] | None:
    """A NOT NULL column of the head schema left nullable on the side whose foreign key sets it NULL."""
    if row.section != "columns" or row.differences != ["nullable"] or row.object not in _head("not null"):
        return None
    nullable = a if row.a["nullable"] else b
    conflict = guarantees.set_null_conflict(nullable.catalog, *_split(row.object))
    if conflict is None:
        return None
    return EXPLAINED, f"{nullable.label} keeps it nullable on purpose: {guarantees.set_null_reason(*conflict)} ({_SET_NULL_RULE})"


def _set_null_foreign_key(row: Row, a: Side, b: Side) -> tuple[str, str] | None:
    """The foreign key that keeps a NOT NULL column of the head schema nullable on one side."""
    if row.section != "constraints" or (row.status == MISMATCH and row.differences != ["definition"]):
        return None
    table, name = _split(row.object)
    for side, values in ((a, row.a), (b, row.b)):
        constraint = side.catalog.constraints.get(row.object) if values is not None else None
        if not constraint or constraint["kind"] != "foreign key":
            continue
        for column in constraint["columns"]:
            conflict = guarantees.set_null_conflict(side.catalog, table, column)
            if f"{table}.{column}" in _head("not null") and conflict and conflict[0] == name:
                return EXPLAINED, (
                    f"{side.label}'s {name} is ON DELETE {constraint['on_delete']}: the project keeps it, and "
                    f"{table}.{column} nullable with it ({_SET_NULL_RULE})"
                )
    return None


def _pending_revision(row: Row, a: Side, b: Side) -> tuple[str, str] | None:
    """What a revision not yet applied on one side declares there: a NOT NULL key, an index."""
    if row.section == "columns" and row.differences == ["nullable"]:
        side = a if row.a["nullable"] else b
        found = [(r, item) for r, item in side.pending_declaring(("column", row.object)) if item.not_null]
        what = "sets it NOT NULL"
    elif row.section == "indexes":
        candidates = [s for s, values in ((a, row.a), (b, row.b)) if values is None or row.status == MISMATCH]
        side, found = next(((s, f) for s in candidates if (f := s.pending_declaring(("index", row.object)))), (None, []))
        what = f"builds it as {found[0][1].definition}" if found else ""
    else:
        return None
    if not found:
        return None
    return EXPLAINED, f"{side.label} is not at head yet: {found[0][0]}, pending there, {what}"


def _only_one_side_has_it(row: Row, a: Side, b: Side) -> tuple[str, str] | None:
    """An extra nullable column or non-unique index that neither the head schema nor any caller names."""
    if row.status != MISSING:
        return None
    side, values = (a, row.a) if row.b is None else (b, row.b)
    if row.section == "columns" and row.object not in _head("columns") and (values["nullable"] or values["default"] is not None):
        return HARMLESS, f"only {side.label} has it: nothing names it, and an insert that leaves it out works"
    if row.section == "indexes" and row.object not in _head("indexes") and " UNIQUE " not in f" {values['definition']} ":
        return HARMLESS, f"only {side.label} has it: an extra non-unique index changes no result, only plans and write cost"
    return None


_RULES = (_set_null_key, _set_null_foreign_key, _pending_revision, _only_one_side_has_it)


def classify(rows: list[Row], a: Side, b: Side) -> list[Row]:
    for row in rows:
        if row.status != MATCH:
            row.verdict, row.why = explain(row, a, b) or (UNEXPLAINED, None)
    return rows


# --- the report ------------------------------------------------------------------------


@dataclass
class DriftReport:
    a: Target
    b: Target
    identities: tuple[str, str]
    rows: list[Row]
    differences_only: bool = False

    @property
    def labels(self) -> tuple[str, str]:
        if self.a.label == self.b.label:
            return f"A: {self.a.label}", f"B: {self.b.label}"
        return self.a.label, self.b.label

    @property
    def drifted(self) -> list[Row]:
        return [row for row in self.rows if row.status != MATCH]

    @property
    def unexplained(self) -> list[Row]:
        return [row for row in self.drifted if row.verdict == UNEXPLAINED]

    @property
    def exit_code(self) -> int:
        return checks_cli.EXIT_FAILED if self.unexplained else checks_cli.EXIT_OK

    def counts(self) -> dict[str, int]:
        statuses = [row.status for row in self.rows]
        verdicts = [row.verdict for row in self.drifted]
        return {
            "compared": len(statuses), **{s.lower(): statuses.count(s) for s in (MATCH, MISMATCH, MISSING)},
            **{v: verdicts.count(v) for v in (EXPLAINED, HARMLESS, UNEXPLAINED)},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {**self.a.describe(), "identity": self.identities[0]},
            "b": {**self.b.describe(), "identity": self.identities[1]},
            "drift": bool(self.unexplained),
            "summary": self.counts(),
            "rows": [row.to_json(self.labels) for row in self.rows if not self.differences_only or row.status != MATCH],
        }

    def render(self) -> str:
        counts = self.counts()
        a_label, b_label = self.labels
        out = [
            f"# Schema drift: {a_label} vs {b_label}",
            "",
            f"- {a_label}: {self.a.masked_url} ({self.identities[0]})",
            f"- {b_label}: {self.b.masked_url} ({self.identities[1]})",
            "",
            (
                f"**Drift: {counts['unexplained']} unexplained** ({counts['mismatch']} mismatched and "
                f"{counts['missing']} missing of {counts['compared']} compared objects; "
                f"{counts['explained']} explained, {counts['harmless']} harmless)."
                if self.unexplained else
                f"**No drift**: all {counts['compared']} compared objects match."
                if not self.drifted else
                f"**No unexplained drift**: {counts['explained']} explained and {counts['harmless']} harmless "
                f"of {counts['compared']} compared objects; the rest match."
            ),
        ]
        for section in SECTIONS:
            rows = [r for r in self.rows if r.section == section.name and (not self.differences_only or r.status != MATCH)]
            if not rows:
                continue
            out += ["", f"## {section.title}", "", f"| Object | {_md(a_label)} | {_md(b_label)} | Status |", "|---|---|---|---|"]
            for row in rows:
                cells = [_md(cell) if cell is not None else "—" for cell in row.cells]
                out.append(f"| `{_md(row.object.replace('public.', '', 1))}` | {cells[0]} | {cells[1]} | {_status_cell(row, (a_label, b_label))} |")
        return "\n".join(out)


def _status_cell(row: Row, labels: tuple[str, str]) -> str:
    if row.status == MISMATCH:
        cell = f"Mismatch ({', '.join(row.differences)})"
    elif row.status == MISSING:
        cell = f"Missing in {_md(labels[0] if row.a is None else labels[1])}"
    else:
        return MATCH
    return cell if row.verdict == UNEXPLAINED else f"{cell}; {row.verdict}: {_md(row.why)}"


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def read_target(target: Target, label: str) -> tuple[str, Side]:
    with checks_cli.read_only_connection(target, "chat-migrations:drift") as conn:
        proof = checks_cli.verify_identity(target, conn)
        catalog = read_catalog(conn)
        revision = bookkeeping.current_revision(conn)
        conn.rollback()
    return proof, Side(label, catalog, _pending(target, revision))


def _pending(target: Target, revision: str | None) -> tuple[tuple[str, promises.Promises], ...]:
    """What the revisions after the target's declare (none known for a URL or an unadopted database)."""
    if target.environment is None or revision is None:
        return ()
    environment = target.environment.name
    if revision not in history.revisions(environment):
        return ()
    return tuple((script.revision, history.declaration(script)) for script in history.pending(environment, revision))


def drift(a: Target, b: Target, *, differences_only: bool = False) -> DriftReport:
    report = DriftReport(a, b, ("", ""), [], differences_only)
    proof_a, side_a = read_target(a, report.labels[0])
    proof_b, side_b = read_target(b, report.labels[1])
    report.identities = (proof_a, proof_b)
    report.rows = classify(compare(side_a.catalog, side_b.catalog), side_a, side_b)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = checks_cli.command_parser(
        "drift",
        "Compare the messaging schema of two databases, as the plan's comparison tables.",
        "A and B: an environment name (prod, staging) or a postgresql:// URL. "
        "Exit 0: no difference, or only explained and harmless ones (listed); 1: an unexplained difference; "
        "2: could not run.",
        environment=False,
    )
    parser.add_argument("a", metavar="A")
    parser.add_argument("b", metavar="B")
    parser.add_argument("--differences-only", action="store_true", help="leave the matching rows out")
    return parser


def main(argv: list[str] | None = None, *, urls: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return checks_cli.run_command(
        "drift",
        lambda: drift(
            checks_cli.target_from_argument(args.a, urls),
            checks_cli.target_from_argument(args.b, urls),
            differences_only=args.differences_only,
        ),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
