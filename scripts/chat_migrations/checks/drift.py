"""scripts/drift A B [--json] [--differences-only]: the plan's comparison tables, from the live catalogs.

A and B are environment names (their URLs read as Alembic reads them, and
the same identity guard) or postgresql:// URLs. Both catalogs are read
(chat_migrations.checks.catalog, read-only) and every messaging object is compared:
columns, constraints, indexes, functions, triggers, replica identity,
publication membership, RLS, policies and grants. Each row is Match,
Mismatch (naming the attributes that differ) or Missing (present on one side
only). Exit 0 when there is no drift, 1 when there is, 2 when it could not run.

What differs between any two databases without being drift is left out by
construction: OIDs are never read, lists are sorted, function bodies are
compared by a digest of their whitespace-normalized text, and expressions come
from the server's own deparser.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable

from chat_migrations.checks import checks_cli
from chat_migrations.checks.catalog import Catalog, read_catalog
from chat_migrations.checks.checks_cli import Target

MATCH, MISMATCH, MISSING = "Match", "Mismatch", "Missing"


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
    def exit_code(self) -> int:
        return checks_cli.EXIT_FAILED if self.drifted else checks_cli.EXIT_OK

    def counts(self) -> dict[str, int]:
        statuses = [row.status for row in self.rows]
        return {"compared": len(statuses), **{s.lower(): statuses.count(s) for s in (MATCH, MISMATCH, MISSING)}}

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {**self.a.describe(), "identity": self.identities[0]},
            "b": {**self.b.describe(), "identity": self.identities[1]},
            "drift": bool(self.drifted),
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
                f"**Drift: {counts['mismatch']} mismatched and {counts['missing']} missing** "
                f"of {counts['compared']} compared objects."
                if self.drifted else f"**No drift**: all {counts['compared']} compared objects match."
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
        return f"Mismatch ({', '.join(row.differences)})"
    if row.status == MISSING:
        return f"Missing in {_md(labels[0] if row.a is None else labels[1])}"
    return MATCH


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def read_target(target: Target) -> tuple[str, Catalog]:
    with checks_cli.read_only_connection(target, "chat-migrations:drift") as conn:
        proof = checks_cli.verify_identity(target, conn)
        catalog = read_catalog(conn)
        conn.rollback()
    return proof, catalog


def drift(a: Target, b: Target, *, differences_only: bool = False) -> DriftReport:
    proof_a, catalog_a = read_target(a)
    proof_b, catalog_b = read_target(b)
    return DriftReport(a, b, (proof_a, proof_b), compare(catalog_a, catalog_b), differences_only)


def build_parser() -> argparse.ArgumentParser:
    parser = checks_cli.command_parser(
        "drift",
        "Compare the messaging schema of two databases, as the plan's comparison tables.",
        "A and B: an environment name (prod, staging) or a postgresql:// URL. "
        "Exit 0: no drift; 1: drift; 2: could not run.",
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
