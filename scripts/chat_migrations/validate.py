"""scripts/validate -n prod|staging [--json] [--thorough]: is this database the converged head?

The plan's 004_validation.sql as a command a deploy pipeline can trust. It
proves, read-only:

 revision            the database is at its environment's head revision
 not_null            every column the head schema has NOT NULL is NOT NULL
 seq                 every message has a seq
 functions           the messaging functions and the seq trigger exist with
                     the expected arguments and return types
 indexes             every index of the head schema exists with its keys, and
                     no index on the messaging tables is INVALID
 realtime            REPLICA IDENTITY FULL and supabase_realtime membership
 orphans             no participant or message points to a missing row
 duplicate_seq       no seq appears twice within a chat
 unique_constraints  the primary and unique keys exist, validated, on valid indexes
 foreign_keys        the foreign keys exist, validated, with their triggers enabled

Expectations come from the head schema (chat_migrations.models) wherever it
says them, so a new shared revision that updates models.py is followed
without touching this file; what models.py cannot say (functions, the
trigger, Realtime) is declared below.

Each check says how it was proved: ``catalog`` (no table data read),
``index`` (index lookups, proportional to the rows found) or ``scan`` (reads
the whole table). Data checks that a valid constraint already guarantees are
proved from the catalog; ``--thorough`` scans them anyway, which also catches
rows written while constraint triggers were bypassed (session_replication_role
= replica, DISABLE TRIGGER ALL).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from sqlalchemy import Table, UniqueConstraint, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from . import catalog as catalog_module
from . import checks_cli, models
from .catalog import Catalog, qualified
from .checks_cli import Finding, Target

# name -> return type, per argument-type signature (pg_get_function_result).
EXPECTED_FUNCTIONS: dict[str, str] = {
    "public.mark_messages_as_read(uuid, uuid)": "TABLE(updated_count bigint)",
    "public.mark_messages_as_delivered(uuid, uuid)": "TABLE(updated_count bigint)",
    "public.get_unread_count(uuid, uuid)": "bigint",
    "public.get_latest_seq(uuid)": "bigint",
    "public.assign_message_seq()": "trigger",
}
EXPECTED_TRIGGERS: dict[str, dict[str, Any]] = {
    "public.chat_messages.trg_assign_message_seq": {
        "timing": "BEFORE", "events": ["INSERT"], "level": "ROW",
        "function": "public.assign_message_seq", "enabled": "enabled",
    },
}
# Supabase Realtime sends the previous row with UPDATE and DELETE events only
# with REPLICA IDENTITY FULL, and streams only tables in its publication.
REALTIME_TABLES = ("chat_messages", "chat_participants")
REALTIME_PUBLICATION = "supabase_realtime"
# The seq is unique per chat: the key that proves it.
SEQ_TABLE, SEQ_COLUMN, SEQ_SCOPE = "chat_messages", "seq", ("chat_id", "seq")

SAMPLE_IDS = 5
STATUS_LABELS = {"pass": "pass", "fail": "FAIL"}


@dataclass
class Context:
    conn: Connection
    catalog: Catalog
    environment: str
    current_revision: str | None
    head_revision: str
    thorough: bool = False
    # After a rollback: any revision of the history, only the checks that hold at every revision.
    at_current_revision: bool = False


# --- the head schema, as models.py declares it -----------------------------------


def head_tables() -> list[Table]:
    return [models.metadata.tables[name] for name in catalog_module.TABLES]


def _referred(fk) -> str:
    table = fk.referred_table
    return f"{table.schema or catalog_module.SCHEMA}.{table.name}"


def model_index_keys(index) -> list[str]:
    """An Index's keys as the catalog prints them: 'seq DESC', without the table prefix."""
    dialect = postgresql.dialect()
    prefix = f"{index.table.name}."
    return [str(expression.compile(dialect=dialect)).replace(prefix, "") for expression in index.expressions]


# --- data queries -----------------------------------------------------------------


def offending_rows(conn: Connection, table: str, condition: str) -> tuple[int, list[str]]:
    """How many rows of ``table`` match ``condition``, and a few of their ids.

    The sample query stops at the first rows it finds; the count runs only when
    there are some, so a clean table is read once.
    """
    ids = conn.execute(
        text(f"SELECT t.id::text FROM {table} AS t WHERE {condition} LIMIT {SAMPLE_IDS}")
    ).scalars().all()
    if not ids:
        return 0, []
    count = conn.execute(text(f"SELECT count(*) FROM {table} AS t WHERE {condition}")).scalar()
    return count, sorted(ids)


def count_of(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def describe_rows(count: int, ids: list[str]) -> str:
    more = ", …" if count > len(ids) else ""
    return f"{count_of(count, 'row')} (ids: {', '.join(ids)}{more})"


def null_lookup_method(catalog: Catalog, table: str, column: str) -> str:
    return "index" if catalog.leading_index(table, column) else "scan"


# --- the checks --------------------------------------------------------------------


def check_revision(ctx: Context) -> Finding:
    current, head = ctx.current_revision, ctx.head_revision
    if ctx.at_current_revision:
        finding = Finding(
            "revision", "at a revision of the history", "pass", "catalog",
            f"at {current} of {ctx.environment}'s history (head {head})",
        )
        if current not in catalog_module.revisions(ctx.environment):
            finding.problems.append(
                f"at revision {current or 'none'}, which {ctx.environment}'s history does not contain"
            )
        return _settle(finding, f"not at a revision of {ctx.environment}'s history")
    finding = Finding("revision", "at the head revision", "pass", "catalog", f"at head {head}")
    if current is None:
        finding.problems.append(
            f"no revision recorded ({catalog_module.VERSION_TABLE} is missing or empty): the database "
            f"was never adopted; head is {head}"
        )
    elif current != head:
        known = current in catalog_module.revisions(ctx.environment)
        behind = "" if known else f", which {ctx.environment}'s history does not contain"
        finding.problems.append(f"at revision {current}{behind}; {ctx.environment}'s head is {head}")
    return _settle(finding, f"not at head {head}")


def check_not_null(ctx: Context) -> Finding:
    expected = [(table, column) for table in head_tables() for column in table.columns if not column.nullable]
    finding = Finding("not_null", "NOT NULL columns", "pass", "catalog", f"{len(expected)} columns NOT NULL")
    for table, column in expected:
        if _table_missing(ctx, table.name, finding):
            continue
        actual = ctx.catalog.columns.get(f"{qualified(table.name)}.{column.name}")
        if actual is None:
            finding.problems.append(f"{qualified(table.name)}.{column.name} is missing")
        elif actual["nullable"]:
            finding.problems.append(f"{qualified(table.name)}.{column.name} is nullable; the head schema has it NOT NULL")
    return _settle(finding, f"{len(finding.problems)} of {len(expected)} columns are not NOT NULL")


def check_seq(ctx: Context) -> Finding:
    table = qualified(SEQ_TABLE)
    column = ctx.catalog.columns.get(f"{table}.{SEQ_COLUMN}")
    if column is None:
        return Finding("seq", "every message has a seq", "fail", "catalog", f"{table}.{SEQ_COLUMN} is missing",
                       [f"{table}.{SEQ_COLUMN} is missing"])
    if not column["nullable"] and not ctx.thorough:
        return Finding("seq", "every message has a seq", "pass", "catalog", f"{table}.{SEQ_COLUMN} is NOT NULL")
    method = null_lookup_method(ctx.catalog, SEQ_TABLE, SEQ_COLUMN)
    count, ids = offending_rows(ctx.conn, table, f"t.{SEQ_COLUMN} IS NULL")
    finding = Finding("seq", "every message has a seq", "pass", method, "every message has a seq")
    if count:
        finding.problems.append(f"{table}: {describe_rows(count, ids)} without a seq")
    return _settle(finding, f"{count_of(count, 'message')} without a seq")


def check_functions(ctx: Context) -> Finding:
    functions, triggers = ctx.catalog.functions, ctx.catalog.triggers
    finding = Finding(
        "functions", "functions and the seq trigger", "pass", "catalog",
        f"{len(EXPECTED_FUNCTIONS)} functions and {len(EXPECTED_TRIGGERS)} trigger as expected",
    )
    for signature, returns in EXPECTED_FUNCTIONS.items():
        actual = functions.get(signature)
        if actual is None:
            name = signature.split("(")[0]
            others = [key for key in functions if key.split("(")[0] == name]
            found = f" (found {', '.join(sorted(others))})" if others else ""
            finding.problems.append(f"function {signature} is missing{found}")
        elif actual["returns"] != returns:
            finding.problems.append(f"function {signature} returns {actual['returns']}; expected {returns}")
    for name, expected in EXPECTED_TRIGGERS.items():
        actual = triggers.get(name)
        if actual is None:
            finding.problems.append(f"trigger {name} is missing")
            continue
        wrong = [f"{key} is {actual[key]!r}, expected {value!r}" for key, value in expected.items() if actual[key] != value]
        if wrong:
            finding.problems.append(f"trigger {name}: {'; '.join(wrong)}")
    return _settle(finding, count_of(len(finding.problems), "function or trigger problem"))


def check_indexes(ctx: Context) -> Finding:
    # Which indexes exist depends on the revision; that none is INVALID does not.
    expected = [] if ctx.at_current_revision else [(table, index) for table in head_tables() for index in table.indexes]
    finding = Finding("indexes", "indexes exist and are valid", "pass", "catalog", f"{len(expected)} indexes valid")
    for table, index in expected:
        if _table_missing(ctx, table.name, finding):
            continue
        actual = ctx.catalog.indexes.get(f"{qualified(table.name)}.{index.name}")
        keys = model_index_keys(index)
        if actual is None:
            finding.problems.append(f"index {index.name} on {qualified(table.name)} ({', '.join(keys)}) is missing")
            continue
        if actual["keys"] != keys or actual["unique"] != bool(index.unique):
            finding.problems.append(
                f"index {index.name} is {actual['definition']}; expected "
                f"{'UNIQUE ' if index.unique else ''}({', '.join(keys)})"
            )
    # Constraint indexes are judged by unique_constraints.
    for name, actual in sorted(ctx.catalog.indexes.items()):
        if not actual["valid"] and not actual["constraint"]:
            finding.problems.append(invalid_index_problem(name))
    return _settle(finding, count_of(len(finding.problems), "index problem"))


def invalid_index_problem(name: str) -> str:
    return (
        f"index {name.rsplit('.', 1)[1]} on {name.rsplit('.', 1)[0]} is INVALID (an interrupted concurrent "
        "build): it is maintained on every write but never used; rebuild it"
    )


def check_realtime(ctx: Context) -> Finding:
    finding = Finding(
        "realtime", "REPLICA IDENTITY FULL and publication", "pass", "catalog",
        f"{', '.join(REALTIME_TABLES)}: REPLICA IDENTITY FULL, in {REALTIME_PUBLICATION}",
    )
    for table in REALTIME_TABLES:
        actual = ctx.catalog.tables.get(qualified(table))
        if actual is None:
            finding.problems.append(f"table {qualified(table)} is missing")
            continue
        if actual["replica_identity"] != "full":
            finding.problems.append(
                f"{qualified(table)} has REPLICA IDENTITY {actual['replica_identity'].upper()}; Realtime needs FULL"
            )
        if REALTIME_PUBLICATION not in actual["publications"]:
            finding.problems.append(f"{qualified(table)} is not in publication {REALTIME_PUBLICATION}")
    return _settle(finding, count_of(len(finding.problems), "Realtime problem"))


def check_orphans(ctx: Context) -> Finding:
    """No row points to a missing parent, and no mandatory reference is NULL."""
    methods, problems, proofs = [], [], 0
    for table in head_tables():
        if qualified(table.name) not in ctx.catalog.tables:
            continue
        for fk in table.foreign_key_constraints:
            columns = [column.name for column in fk.columns]
            for column in fk.columns:
                if column.nullable:
                    continue
                actual = ctx.catalog.columns.get(f"{qualified(table.name)}.{column.name}")
                if actual is None or (not actual["nullable"] and not ctx.thorough):
                    proofs += 1
                    continue
                methods.append(null_lookup_method(ctx.catalog, table.name, column.name))
                count, ids = offending_rows(ctx.conn, qualified(table.name), f"t.{column.name} IS NULL")
                if count:
                    problems.append(
                        f"{qualified(table.name)}: {describe_rows(count, ids)} with {column.name} NULL "
                        f"(no {_referred(fk)} row)"
                    )
            if _enforced_foreign_key(ctx.catalog, table.name, columns, _referred(fk)) and not ctx.thorough:
                proofs += 1
                continue
            methods.append("scan")
            count, ids = offending_rows(ctx.conn, qualified(table.name), _dangling_condition(fk))
            if count:
                problems.append(
                    f"{qualified(table.name)}: {describe_rows(count, ids)} with a {', '.join(columns)} "
                    f"that no {_referred(fk)} row has"
                )
    summary = "no orphaned rows" + (f" ({proofs} proved by valid constraints)" if proofs else "")
    finding = Finding("orphans", "no orphaned participants or messages", "pass", checks_cli.costliest(methods or ["catalog"]),
                      summary, problems)
    return _settle(finding, count_of(len(problems), "kind") + " of orphaned rows")


def _dangling_condition(fk) -> str:
    pairs = [(element.parent.name, element.column.name) for element in fk.elements]
    not_null = " AND ".join(f"t.{child} IS NOT NULL" for child, _ in pairs)
    match = " AND ".join(f"parent.{parent} = t.{child}" for child, parent in pairs)
    return f"{not_null} AND NOT EXISTS (SELECT FROM {_referred(fk)} AS parent WHERE {match})"


def _enforced_foreign_key(catalog: Catalog, table: str, columns: list[str], referred: str) -> dict | None:
    """A validated foreign key on these columns whose triggers fire: dangling rows are impossible."""
    for key, constraint in catalog.constraints.items():
        if (
            key.startswith(f"{qualified(table)}.") and constraint["kind"] == "foreign key"
            and constraint["columns"] == columns and constraint["referred"] == referred
            and constraint["validated"] and constraint["triggers_enabled"]
        ):
            return constraint
    return None


def check_duplicate_seq(ctx: Context) -> Finding:
    table = qualified(SEQ_TABLE)
    key = _valid_unique_key(ctx.catalog, SEQ_TABLE, list(SEQ_SCOPE))
    title = "no duplicate seq within a chat"
    if key and not ctx.thorough:
        return Finding("duplicate_seq", title, "pass", "catalog", f"impossible: unique constraint {key} is valid")
    scope = ", ".join(SEQ_SCOPE)
    duplicates = ctx.conn.execute(
        text(
            f"SELECT {scope}, count(*) FROM {table} WHERE {SEQ_COLUMN} IS NOT NULL "
            f"GROUP BY {scope} HAVING count(*) > 1 ORDER BY {scope} LIMIT {SAMPLE_IDS}"
        )
    ).all()
    finding = Finding("duplicate_seq", title, "pass", "scan", "no seq appears twice in a chat")
    for *values, count in duplicates:
        where = ", ".join(f"{name} {value}" for name, value in zip(SEQ_SCOPE[:-1], values[:-1]))
        finding.problems.append(f"{table}: {where} has {SEQ_COLUMN} {values[-1]} on {count} messages")
    return _settle(finding, "duplicate seq values (first few listed)")


def _valid_unique_key(catalog: Catalog, table: str, columns: list[str]) -> str | None:
    for key, constraint in catalog.constraints.items():
        if (
            key.startswith(f"{qualified(table)}.") and constraint["kind"] in ("unique", "primary key")
            and constraint["columns"] == columns and constraint["validated"] and constraint["index_valid"]
        ):
            return key.rsplit(".", 1)[1]
    return None


def check_unique_constraints(ctx: Context) -> Finding:
    expected = []
    for table in head_tables():
        expected.append((table, "primary key", None, [c.name for c in table.primary_key.columns]))
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint):
                expected.append((table, "unique", constraint.name, [c.name for c in constraint.columns]))
    finding = Finding("unique_constraints", "primary and unique keys intact", "pass", "catalog",
                      f"{len(expected)} keys intact")
    for table, kind, name, columns in expected:
        if _table_missing(ctx, table.name, finding):
            continue
        found = {
            key.rsplit(".", 1)[1]: c for key, c in ctx.catalog.constraints.items()
            if key.startswith(f"{qualified(table.name)}.") and c["kind"] == kind and (name is None or key.endswith(f".{name}"))
        }
        label = f"{kind} {name or ''} ({', '.join(columns)}) on {qualified(table.name)}".replace("  ", " ")
        if not found:
            finding.problems.append(f"{label} is missing")
            continue
        constraint_name, actual = next(iter(found.items()))
        if actual["columns"] != columns:
            finding.problems.append(f"{kind} {constraint_name} is on ({', '.join(actual['columns'])}); expected ({', '.join(columns)})")
        if not actual["index_valid"]:
            finding.problems.append(invalid_index_problem(f"{qualified(table.name)}.{actual['index']}")
                                    + f"; {kind} {constraint_name} is not enforced")
    return _settle(finding, count_of(len(finding.problems), "key problem"))


def check_foreign_keys(ctx: Context) -> Finding:
    expected = [(table, fk) for table in head_tables() for fk in table.foreign_key_constraints]
    finding = Finding("foreign_keys", "foreign keys exist and are validated", "pass", "catalog",
                      f"{len(expected)} foreign keys validated")
    for table, fk in expected:
        if _table_missing(ctx, table.name, finding):
            continue
        columns = [column.name for column in fk.columns]
        label = f"foreign key ({', '.join(columns)}) on {qualified(table.name)} → {_referred(fk)}"
        candidates = {
            key.rsplit(".", 1)[1]: c for key, c in ctx.catalog.constraints.items()
            if key.startswith(f"{qualified(table.name)}.") and c["kind"] == "foreign key" and c["columns"] == columns
        }
        if not candidates:
            finding.problems.append(f"{label} is missing")
            continue
        name, actual = next(iter(sorted(candidates.items())))
        if actual["referred"] != _referred(fk):
            finding.problems.append(f"foreign key {name} references {actual['referred']}; expected {_referred(fk)}")
        if (actual["on_delete"] or "NO ACTION") != (fk.ondelete or "NO ACTION"):
            finding.problems.append(f"foreign key {name} is ON DELETE {actual['on_delete'] or 'NO ACTION'}; expected {fk.ondelete}")
        if not actual["validated"]:
            finding.problems.append(f"foreign key {name} on {qualified(table.name)} is NOT VALID: existing rows were never checked")
        if not actual["triggers_enabled"]:
            finding.problems.append(f"foreign key {name} on {qualified(table.name)} has its triggers disabled: it is not enforced")
    return _settle(finding, count_of(len(finding.problems), "foreign key problem"))


def _table_missing(ctx: Context, table: str, finding: Finding) -> bool:
    if qualified(table) in ctx.catalog.tables:
        return False
    problem = f"table {qualified(table)} is missing"
    if problem not in finding.problems:
        finding.problems.append(problem)
    return True


def _settle(finding: Finding, failed_summary: str) -> Finding:
    if finding.problems:
        finding.status, finding.summary = "fail", failed_summary
    return finding


CHECKS: tuple[Callable[[Context], Finding], ...] = (
    check_revision,
    check_not_null,
    check_seq,
    check_functions,
    check_indexes,
    check_realtime,
    check_orphans,
    check_duplicate_seq,
    check_unique_constraints,
    check_foreign_keys,
)
# The head schema's own shape: left out when validating at the current revision.
HEAD_ONLY_CHECKS = (check_not_null, check_functions)


# --- the report ----------------------------------------------------------------------


@dataclass
class ValidateReport(checks_cli.FindingsReport):
    identity: str
    revision: dict[str, str | None]
    thorough: bool
    left_out: list[str]
    failing_status: ClassVar[str] = "fail"

    @property
    def failed(self) -> list[Finding]:
        return self.failing

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.describe(),
            "identity": self.identity,
            "revision": self.revision,
            "thorough": self.thorough,
            "left_out": self.left_out,
            "passed": not self.failed,
            **self.checks_json(),
        }

    def render(self) -> str:
        header = [
            f"validate {self.target.label}: {self.target.masked_url}",
            f"identity: {self.identity}",
            f"revision: {self.revision['current'] or 'none'} (head {self.revision['head']})",
        ]
        if self.left_out:
            header.append(f"at the current revision: left out the head-only checks {', '.join(self.left_out)}")
        if self.failed:
            names = ", ".join(f.name for f in self.failed)
            verdict = f"FAILED: {len(self.failed)} of {len(self.findings)} checks failed: {names}"
        else:
            verdict = f"OK: all {len(self.findings)} checks pass"
        return self.render_findings(header, STATUS_LABELS, verdict)


def validate(target: Target, *, thorough: bool = False, at_current_revision: bool = False) -> ValidateReport:
    environment = target.environment.name
    checks = [c for c in CHECKS if not (at_current_revision and c in HEAD_ONLY_CHECKS)]
    left_out = [c.__name__.removeprefix("check_") for c in CHECKS if c not in checks]
    with checks_cli.read_only_connection(target, "chat-migrations:validate") as conn:
        proof = checks_cli.verify_identity(target, conn)
        ctx = Context(
            conn, catalog_module.read_catalog(conn), environment,
            catalog_module.current_revision(conn), catalog_module.head_revision(environment), thorough,
            at_current_revision,
        )
        findings = [checks_cli.timed(check, ctx) for check in checks]
        conn.rollback()
    revision = {"current": ctx.current_revision, "head": ctx.head_revision}
    return ValidateReport(target, findings, proof, revision, thorough, left_out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/validate",
        description="Prove, read-only, that the environment's database is the converged head schema.",
        epilog="Exit 0: every check passes; 1: a check fails; 2: could not run.",
    )
    parser.add_argument("-n", "--name", metavar="ENVIRONMENT", help="the environment (an alembic.ini section)")
    parser.add_argument("--thorough", action="store_true",
                        help="scan the data checks that valid constraints already prove")
    parser.add_argument("--at-current-revision", action="store_true",
                        help="after a rollback: accept any revision of the history and run only the checks "
                        "that hold at every revision (left out: not_null, functions, which indexes exist)")
    checks_cli.add_json_flag(parser)
    return parser


def main(argv: list[str] | None = None, *, urls: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return checks_cli.run_command(
        "validate",
        lambda: validate(
            checks_cli.environment_target(args.name, urls),
            thorough=args.thorough, at_current_revision=args.at_current_revision,
        ),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
