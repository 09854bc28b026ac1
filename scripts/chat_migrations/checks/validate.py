"""scripts/validate -n prod|staging [--json] [--thorough] [--at-current-revision]: is this the converged head?

The plan's 004_validation.sql as a command a deploy pipeline can trust. It
judges, read-only, what the revisions promise: the fold of the declarations
each revision makes in its own file (chat_migrations.schema.history), each
judged by its guarantee (chat_migrations.checks.guarantees), never models.py's
spelling of the rest:

 revision            the database is at its environment's head revision
 not_null            the keys the revisions promise NOT NULL are NOT NULL; a
                     key whose foreign key sets it NULL on delete stays
                     nullable by design and passes (the summary says why)
 columns             the promised columns exist with their types
 seq                 every message has a seq
 functions           the promised functions (arguments, result, security,
                     search_path) and triggers
 indexes             the indexes the revisions build exist with exactly the
                     definition they build (a partial index of that name
                     fails, naming its definition), and no index on the
                     messaging tables is INVALID
 realtime            REPLICA IDENTITY FULL and supabase_realtime membership
 orphans             no participant or message points to a missing row
 duplicate_seq       no seq appears twice within a chat
 unique_constraints  the promised keys hold by their columns (any name): a
                     validated constraint or a valid unique index
 foreign_keys        the foreign keys exist by column and referenced table
                     (any name, any ON DELETE action), validated, with their
                     triggers enabled
 privileges          each role holds exactly what the revisions grant it on
                     tables, columns and functions
 policies            RLS on, and each table's policies exactly the promised ones
 leftovers           nothing an interrupted revision left behind
                     (chat_migrations.runtime.leftovers)
 unknown_objects     columns, indexes, constraints, policies, functions and
                     triggers on the chat tables that neither the plan's
                     schema (models.py's names, the baseline's policies) nor
                     the revisions' promises know: reported, never judged

Statuses: ``pass``, ``fail``, and ``info`` (unknown_objects when it found
something: information only, it never fails the command). Exit 1 only when a
check has ``fail``.

Each check says how it was proved: ``catalog`` (no table data read),
``index`` (index lookups, proportional to the rows found) or ``scan`` (reads
the whole table). Data checks that a valid constraint already guarantees are
proved from the catalog; ``--thorough`` scans them anyway, which also catches
rows written while constraint triggers were bypassed (session_replication_role
= replica, DISABLE TRIGGER ALL).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from sqlalchemy import text

from chat_migrations.frozen import baseline
from chat_migrations.checks import checks_cli, guarantees
from chat_migrations.schema import history, models
from chat_migrations.runtime import leftovers
from chat_migrations.runtime import promises as p
from chat_migrations.checks import catalog as catalog_module
from chat_migrations.checks.catalog import Catalog, qualified
from chat_migrations.checks.checks_cli import Finding, Target, count_of
from chat_migrations.runtime.sqlnames import identifier
from chat_migrations.schema import tables as chat_tables
from chat_migrations.checks.common import (
    SAMPLE_IDS, CheckContext, check_orphans, settle, describe_rows, invalid_index_problem, null_lookup_method,
    offending_rows,
)

# The plan's own data checks: every message has a seq, unique within its chat.
SEQ_TABLE, SEQ_COLUMN = "chat_messages", "seq"
SEQ_KEY = p.Unique(qualified(SEQ_TABLE), ("chat_id", "seq"))
SEQ_SCOPE = SEQ_KEY.columns

STATUS_LABELS = {"pass": "pass", "fail": "FAIL", "info": "info"}


@dataclass
class Context(CheckContext):
    # After a rollback: any revision of the history, only the checks that hold at every revision.
    at_current_revision: bool = False


# --- data queries -----------------------------------------------------------------


# --- the checks --------------------------------------------------------------------


def check_revision(ctx: Context) -> Finding:
    current, head = ctx.current_revision, ctx.head_revision
    if ctx.at_current_revision:
        finding = Finding(
            "revision", "at a revision of the history", "pass", "catalog",
            f"at {current} of {ctx.environment}'s history (head {head})",
        )
        if not ctx.known_revision:
            finding.problems.append(
                f"at revision {current or 'none'}, which {ctx.environment}'s history does not contain"
            )
        return settle(finding, f"not at a revision of {ctx.environment}'s history")
    finding = Finding("revision", "at the head revision", "pass", "catalog", f"at head {head}")
    if current is None:
        finding.problems.append(
            f"no revision recorded ({catalog_module.VERSION_TABLE} is missing or empty): the database "
            f"was never adopted; head is {head}"
        )
    elif current != head:
        behind = "" if ctx.known_revision else f", which {ctx.environment}'s history does not contain"
        finding.problems.append(f"at revision {current}{behind}; {ctx.environment}'s head is {head}")
    return settle(finding, f"not at head {head}")


def check_not_null(ctx: Context) -> Finding:
    keys = ctx.state.not_null_keys
    finding = Finding("not_null", "NOT NULL keys", "pass", "catalog", f"{len(keys)} keys NOT NULL")
    by_design = []
    for key in keys:
        if _table_missing(ctx, key.table, finding):
            continue
        actual = ctx.catalog.columns.get(key.qualified)
        if actual is None:
            finding.problems.append(f"{key.qualified} is missing")
        elif actual["nullable"]:
            conflict = guarantees.set_null_conflict(ctx.catalog, key.table, key.name)
            if conflict:
                by_design.append(f"{key.qualified} stays nullable: {guarantees.set_null_reason(*conflict)}")
            else:
                finding.problems.append(f"{key.qualified} is nullable; the head schema has it NOT NULL")
    if by_design and not finding.problems:
        finding.summary = f"{len(keys) - len(by_design)} of {len(keys)} keys NOT NULL; " + "; ".join(by_design)
    finding.data = {"nullable_by_design": by_design} if by_design else None
    return settle(finding, f"{len(finding.problems)} of {len(keys)} keys are not NOT NULL")


def check_columns(ctx: Context) -> Finding:
    """The promised columns exist with their types (and nullability, where a revision leaves one nullable)."""
    columns = ctx.state.of(p.Column)
    finding = Finding("columns", "columns of the promised types", "pass", "catalog",
                      f"{len(columns)} columns as the revisions need them")
    for unmet in ctx.unmet_of(p.Column):
        if not (unmet.item.not_null and unmet.problem.endswith("the revisions make it NOT NULL")):
            _add(finding, unmet)  # a nullable NOT NULL key is check_not_null's
    return settle(finding, count_of(len(finding.problems), "column problem"))


def _add(finding: Finding, unmet: guarantees.Unmet) -> None:
    if unmet.problem not in finding.problems:
        finding.problems.append(unmet.problem)
    if unmet.fix:
        finding.fix = "; ".join(filter(None, [finding.fix, unmet.fix]))


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
    return settle(finding, f"{count_of(count, 'message')} without a seq")


def check_functions(ctx: Context) -> Finding:
    functions, triggers = ctx.state.of(p.Function), ctx.state.of(p.Trigger)
    finding = Finding(
        "functions", "functions and triggers", "pass", "catalog",
        f"{count_of(len(functions), 'function')} and {count_of(len(triggers), 'trigger')} as the revisions "
        "define them (signature, result, security, search_path)",
    )
    for unmet in ctx.unmet_of(p.Function, p.Trigger):
        _add(finding, unmet)
    return settle(finding, count_of(len(finding.problems), "function or trigger problem"))


def check_indexes(ctx: Context) -> Finding:
    expected = ctx.state.of(p.Index)
    summary = (f"{count_of(len(expected), 'index')} as the revisions build them; none INVALID" if expected
               else "no INVALID index")
    finding = Finding("indexes", "indexes exist and are valid", "pass", "catalog", summary)
    for unmet in ctx.unmet_of(p.Index):
        _add(finding, unmet)
    promised = {index.key[1] for index in expected}
    # Constraint indexes are judged by unique_constraints.
    for name, actual in sorted(ctx.catalog.indexes.items()):
        if not actual["valid"] and not actual["constraint"] and name not in promised:
            finding.problems.append(invalid_index_problem(name))
    return settle(finding, count_of(len(finding.problems), "index problem"))


def check_realtime(ctx: Context) -> Finding:
    tables = [table for table in ctx.state.tables if table.realtime]
    finding = Finding(
        "realtime", "REPLICA IDENTITY FULL and publication", "pass", "catalog",
        f"{', '.join(t.name.split('.')[-1] for t in tables) or 'no table'}: REPLICA IDENTITY FULL, "
        f"in {guarantees.REALTIME_PUBLICATION}",
    )
    for unmet in ctx.unmet_of(p.Table):
        if "row level security" not in unmet.problem:
            _add(finding, unmet)
    return settle(finding, count_of(len(finding.problems), "Realtime problem"))


def check_duplicate_seq(ctx: CheckContext) -> Finding:
    table = qualified(SEQ_TABLE)
    key = guarantees.unique_met_by(ctx.catalog, SEQ_KEY)
    title = "no duplicate seq within a chat"
    if key and not ctx.thorough:
        return Finding("duplicate_seq", title, "pass", "catalog", f"impossible: unique key {key} is valid")
    scope = ", ".join(map(identifier, SEQ_SCOPE))
    duplicates = ctx.conn.execute(
        text(
            f"SELECT {scope}, count(*) FROM {identifier(table)} WHERE {identifier(SEQ_COLUMN)} IS NOT NULL "
            f"GROUP BY {scope} HAVING count(*) > 1 ORDER BY {scope} LIMIT {SAMPLE_IDS}"
        )
    ).all()
    finding = Finding("duplicate_seq", title, "pass", "scan", "no seq appears twice in a chat")
    for *values, count in duplicates:
        where = ", ".join(f"{name} {value}" for name, value in zip(SEQ_SCOPE[:-1], values[:-1]))
        finding.problems.append(f"{table}: {where} has {SEQ_COLUMN} {values[-1]} on {count} messages")
    return settle(finding, "duplicate seq values (first few listed)")


def check_unique_constraints(ctx: Context) -> Finding:
    keys = ctx.state.of(p.Unique)
    finding = Finding("unique_constraints", "primary and unique keys intact", "pass", "catalog",
                      f"{len(keys)} keys intact")
    for unmet in ctx.unmet_of(p.Unique):
        _add(finding, unmet)
    return settle(finding, count_of(len(finding.problems), "key problem"))


def check_foreign_keys(ctx: Context) -> Finding:
    keys = ctx.state.of(p.ForeignKey)
    finding = Finding("foreign_keys", "foreign keys exist and are validated", "pass", "catalog",
                      f"{len(keys)} foreign keys validated")
    for unmet in ctx.unmet_of(p.ForeignKey):
        _add(finding, unmet)
    return settle(finding, count_of(len(finding.problems), "foreign key problem"))


# --- privileges and policies ----------------------------------------------------------


def check_privileges(ctx: Context) -> Finding:
    declared = ctx.state.of(p.TablePrivileges) + ctx.state.of(p.Execute)
    roles = sorted({item.role for item in declared})
    finding = Finding(
        "privileges", "the API roles hold what the revisions grant", "pass", "catalog",
        f"{count_of(len(declared), 'promise')} for {', '.join(roles)} on tables, columns and functions kept"
        if declared else "no privileges promised at this revision",
    )
    for unmet in ctx.unmet_of(p.TablePrivileges, p.Execute):
        _add(finding, unmet)
    return settle(finding, count_of(len(finding.problems), "privilege problem"))


def check_policies(ctx: Context) -> Finding:
    declared = ctx.state.of(p.Policies)
    finding = Finding("policies", "row level security and its policies", "pass", "catalog",
                      f"RLS on; the policies of {count_of(len(declared), 'table')} as the revisions define them"
                      if declared else "RLS on; no policies promised at this revision")
    for unmet in ctx.unmet_of(p.Policies):
        _add(finding, unmet)
    for unmet in ctx.unmet_of(p.Table):
        if "row level security" in unmet.problem:
            _add(finding, unmet)
    return settle(finding, count_of(len(finding.problems), "policy problem"))


# --- what an interrupted revision left, and what the plan does not know -----------------------


def check_leftovers(ctx: Context) -> Finding:
    found = leftovers.find(ctx.conn, ctx.applied, chat_tables.QUALIFIED)
    finding = Finding(
        "leftovers", "nothing left by an interrupted revision", "pass", "catalog",
        "no leftovers of an interrupted revision", [item.describe() for item in found],
    )
    if found:
        finding.fix = (
            f"alembic -n {ctx.environment} upgrade {ctx.current_revision or 'head'} removes them at any revision, "
            "the baseline included; rerunning the upgrade to head completes the interrupted revision instead"
        )
    return settle(finding, count_of(len(found), "leftover") + " of an interrupted revision")


_CREATE_POLICY = re.compile(r"CREATE POLICY (\w+) ON (\w+\.\w+)")


def known_names(environment: str) -> dict[str, set[str]]:
    """What the plan knows on the chat tables, keyed like the Catalog.

    Columns, indexes and constraints: the names of the tables at head
    (models.py's frozen tables with every column and index the revisions
    promise; only their names: types, defaults and actions are not judged), with PostgreSQL's default
    names for the keys it leaves unnamed (<table>_pkey, <table>_<column>_fkey).
    Policies: the baseline's (chat_migrations.frozen.baseline, frozen) and those
    the revisions promise. Functions, triggers and indexes: those the revisions
    promise at head (chat_migrations.schema.history).
    """
    columns, indexes, constraints = set(), set(), set()
    head = models.at_head(environment)
    for name in catalog_module.TABLES:
        table, prefix = head.tables[name], qualified(name)
        columns |= {f"{prefix}.{column.name}" for column in table.columns}
        indexes |= {f"{prefix}.{index.name}" for index in table.indexes}
        for constraint in table.constraints:
            if constraint.name:
                constraints.add(f"{prefix}.{constraint.name}")
        constraints.add(f"{prefix}.{name}_pkey")
        for fk in table.foreign_key_constraints:
            constraints.add(f"{prefix}.{name}_{'_'.join(c.name for c in fk.columns)}_fkey")
    state = history.promised(environment)
    columns |= {item.qualified for item in state.of(p.OptionalColumn)}
    policies = {f"{item.table}.{policy}" for item in state.of(p.Policies) for policy in item.names}
    if environment in baseline.ENVIRONMENTS:
        policies |= {f"{table}.{policy}" for policy, table in _CREATE_POLICY.findall(baseline.create_sql(environment))}
    return {
        "column": columns, "index": indexes, "constraint": constraints, "policy": policies,
        "function": {item.signature for item in state.of(p.Function)},
        "trigger": {item.key[1] for item in state.of(p.Trigger)},
    }


def _migration_helper(name: str) -> bool:
    """The migration's own temporary objects: the leftovers check reports them."""
    return name.endswith((leftovers.HELPER_CHECK_SUFFIX, leftovers.REBUILD_SUFFIX))


def unknown_objects(catalog: Catalog, environment: str) -> list[dict[str, str]]:
    known = known_names(environment)
    found = []

    def add(kind: str, name: str, detail: str) -> None:
        if name not in known[kind] and not _migration_helper(name):
            found.append({"kind": kind, "name": name, "detail": detail})

    for name, column in sorted(catalog.columns.items()):
        add("column", name, f"{column['type']}{'' if column['nullable'] else ' NOT NULL'}")
    for name, index in sorted(catalog.indexes.items()):
        if not index["constraint"]:  # a constraint's index is reported with its constraint
            add("index", name, index["definition"])
    for name, constraint in sorted(catalog.constraints.items()):
        add("constraint", name, constraint["definition"])
    for name, policy in sorted(catalog.policies.items()):
        add("policy", name, f"{policy['permissive'].lower()} FOR {policy['command']} TO {', '.join(policy['roles'])}")
    for name, function in sorted(catalog.functions.items()):
        if function["touches_messaging"]:
            add("function", name, f"returns {function['returns']}")
    for name, trigger in sorted(catalog.triggers.items()):
        add("trigger", name, trigger["definition"])
    return found


def check_unknown_objects(ctx: Context) -> Finding:
    found = unknown_objects(ctx.catalog, ctx.environment)
    finding = Finding(
        "unknown_objects", "objects the plan does not know", "pass", "catalog",
        "nothing on the chat tables that the plan does not know",
        [f"{o['kind']} {o['name']} ({o['detail']}): not the plan's; not judged" for o in found],
        data={"objects": found} if found else None,
    )
    if found:
        kinds = sorted({o["kind"] for o in found})
        finding.status = "info"
        finding.summary = (
            f"{count_of(len(found), 'object')} the plan does not know ({', '.join(kinds)}): information, not judged"
        )
    return finding


def _table_missing(ctx: CheckContext, table: str, finding: Finding) -> bool:
    """``table`` qualified (public.chat_messages)."""
    if table in ctx.catalog.tables:
        return False
    problem = f"table {table} is missing"
    if problem not in finding.problems:
        finding.problems.append(problem)
    return True


CHECKS: tuple[Callable[[Context], Finding], ...] = (
    check_revision,
    check_not_null,
    check_columns,
    check_seq,
    check_functions,
    check_indexes,
    check_realtime,
    check_orphans,
    check_duplicate_seq,
    check_unique_constraints,
    check_foreign_keys,
    check_privileges,
    check_policies,
    check_leftovers,
    check_unknown_objects,
)


# --- the report ----------------------------------------------------------------------


@dataclass
class ValidateReport(checks_cli.FindingsReport):
    identity: str
    revision: dict[str, str | None]
    thorough: bool
    judged_at: str | None
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
            "judged_at": self.judged_at,
            "passed": not self.failed,
            **self.checks_json(),
        }

    def render(self) -> str:
        header = [
            f"validate {self.target.label}: {self.target.masked_url}",
            f"identity: {self.identity}",
            f"revision: {self.revision['current'] or 'none'} (head {self.revision['head']})",
        ]
        if self.judged_at:
            header.append(f"judged against what the revisions promise at {self.judged_at}")
        if self.failed:
            names = ", ".join(f.name for f in self.failed)
            verdict = f"FAILED: {len(self.failed)} of {len(self.findings)} checks failed: {names}"
        else:
            verdict = f"OK: all {len(self.findings)} checks pass"
            informed = [f.name for f in self.findings if f.status == "info"]
            if informed:
                verdict += f" (information: {', '.join(informed)})"
        return self.render_findings(header, STATUS_LABELS, verdict)


def validate(target: Target, *, thorough: bool = False, at_current_revision: bool = False) -> ValidateReport:
    environment = target.environment.name
    with checks_cli.read_only_connection(target, "chat-migrations:validate") as conn:
        proof = checks_cli.verify_identity(target, conn)
        current = catalog_module.current_revision(conn)
        # At the current revision: what the chain promises there (at an unknown one, what it promises at every one).
        judged_at = current if at_current_revision else None
        ctx = Context(
            conn, catalog_module.read_catalog(conn), environment, current, history.head_revision(environment),
            thorough=thorough, judged_at=judged_at, at_current_revision=at_current_revision,
        )
        findings = [checks_cli.timed(check, ctx) for check in CHECKS]
        conn.rollback()
    revision = {"current": ctx.current_revision, "head": ctx.head_revision}
    return ValidateReport(target, findings, proof, revision, thorough, judged_at)


def build_parser() -> argparse.ArgumentParser:
    parser = checks_cli.command_parser(
        "validate",
        "Prove, read-only, that the environment's database is the converged head schema.",
        "Exit 0: every check passes; 1: a check fails; 2: could not run.",
    )
    parser.add_argument("--thorough", action="store_true",
                        help="scan the data checks that valid constraints already prove")
    parser.add_argument("--at-current-revision", action="store_true",
                        help="after a rollback: accept any revision of the history and judge the database "
                        "against what the revisions promise at that revision")
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
