"""scripts/validate -n prod|staging [--json] [--thorough] [--at-current-revision]: is this the converged head?

The plan's 004_validation.sql as a command a deploy pipeline can trust. It
judges, read-only, what the revisions promise (chat_migrations.schema.contract),
never models.py's spelling of the rest:

 revision            the database is at its environment's head revision
 not_null            the four keys the revisions make NOT NULL are NOT NULL; a
                     key whose foreign key sets it NULL on delete stays
                     nullable by design and passes (the summary says why)
 seq                 every message has a seq
 functions           the messaging functions and the seq trigger exist with
                     the expected arguments and return types
 indexes             the indexes the revisions build exist with exactly the
                     definition they build (a partial index of that name
                     fails, naming its definition), and no index on the
                     messaging tables is INVALID
 realtime            REPLICA IDENTITY FULL and supabase_realtime membership
 orphans             no participant or message points to a missing row
 duplicate_seq       no seq appears twice within a chat
 unique_constraints  the primary and unique keys exist by their columns (any
                     name), validated, on valid indexes
 foreign_keys        the foreign keys exist by column and referenced table
                     (any name, any ON DELETE action), validated, with their
                     triggers enabled
 privileges          anon holds nothing on the chat tables and the API
                     functions; authenticated no TRUNCATE, TRIGGER,
                     REFERENCES, nor DELETE without a policy allowing it;
                     PUBLIC no EXECUTE on the API functions
 leftovers           nothing an interrupted revision left behind
                     (chat_migrations.runtime.leftovers)
 unknown_objects     columns, indexes, constraints, policies, functions and
                     triggers on the chat tables that neither the plan's
                     schema (models.py's names, the baseline's policies) nor
                     the contract knows: reported, never judged

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
from chat_migrations.checks import checks_cli
from chat_migrations.schema import contract, models
from chat_migrations.runtime import leftovers
from chat_migrations.checks import catalog as catalog_module
from chat_migrations.checks.catalog import Catalog, qualified
from chat_migrations.checks.checks_cli import Finding, Target, count_of
from chat_migrations.runtime.sqlnames import identifier
from chat_migrations.schema import tables as chat_tables
from chat_migrations.schema.contract import CheckContext
from chat_migrations.checks.common import SAMPLE_IDS, check_orphans, settle, describe_rows, invalid_index_problem, null_lookup_method, offending_rows

SEQ_TABLE, SEQ_COLUMN, SEQ_SCOPE = "chat_messages", "seq", contract.SEQ_KEY.columns

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
    keys = contract.NOT_NULL_KEYS
    finding = Finding("not_null", "NOT NULL keys", "pass", "catalog", f"{len(keys)} keys NOT NULL")
    by_design = []
    for key in keys:
        if _table_missing(ctx, key.table, finding):
            continue
        actual = ctx.catalog.columns.get(key.name)
        if actual is None:
            finding.problems.append(f"{key.name} is missing")
        elif actual["nullable"]:
            conflict = contract.set_null_conflict(ctx.catalog, key.table, key.column)
            if conflict:
                by_design.append(f"{key.name} stays nullable: {contract.set_null_reason(*conflict)}")
            else:
                finding.problems.append(f"{key.name} is nullable; the head schema has it NOT NULL")
    if by_design and not finding.problems:
        finding.summary = f"{len(keys) - len(by_design)} of {len(keys)} keys NOT NULL; " + "; ".join(by_design)
    finding.data = {"nullable_by_design": by_design} if by_design else None
    return settle(finding, f"{len(finding.problems)} of {len(keys)} keys are not NOT NULL")


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
    functions, triggers = ctx.catalog.functions, ctx.catalog.triggers
    finding = Finding(
        "functions", "functions and the seq trigger", "pass", "catalog",
        f"{len(contract.FUNCTIONS)} functions and {len(contract.TRIGGERS)} trigger as expected",
    )
    for signature, returns in contract.FUNCTIONS.items():
        actual = functions.get(signature)
        if actual is None:
            name = signature.split("(")[0]
            others = [key for key in functions if key.split("(")[0] == name]
            found = f" (found {', '.join(sorted(others))})" if others else ""
            finding.problems.append(f"function {signature} is missing{found}")
        elif actual["returns"] != returns:
            finding.problems.append(f"function {signature} returns {actual['returns']}; expected {returns}")
    for name, expected in contract.TRIGGERS.items():
        actual = triggers.get(name)
        if actual is None:
            finding.problems.append(f"trigger {name} is missing")
            continue
        wrong = [f"{key} is {actual[key]!r}, expected {value!r}" for key, value in expected.items() if actual[key] != value]
        if wrong:
            finding.problems.append(f"trigger {name}: {'; '.join(wrong)}")
    return settle(finding, count_of(len(finding.problems), "function or trigger problem"))


def check_indexes(ctx: Context) -> Finding:
    # Which indexes exist depends on the revision; that none is INVALID does not.
    expected = () if ctx.at_current_revision else contract.INDEXES
    summary = (
        f"{count_of(len(expected), 'index')} as the revisions build them; none INVALID" if expected
        else "no INVALID index (which indexes exist depends on the revision)"
    )
    finding = Finding("indexes", "indexes exist and are valid", "pass", "catalog", summary)
    for index in expected:
        if _table_missing(ctx, index.table, finding):
            continue
        actual = ctx.index_definitions.get(f"{catalog_module.SCHEMA}.{index.name}")
        if actual is None:
            finding.problems.append(f"index {index.name} on {index.table} ({index.columns}) is missing")
        elif actual != index.definition:
            finding.problems.append(
                f"index {index.name} is {actual}; the revisions build {index.definition} "
                "(an index of that name with another definition is drift: the revision that builds it converges it)"
            )
    # Constraint indexes are judged by unique_constraints.
    for name, actual in sorted(ctx.catalog.indexes.items()):
        if not actual["valid"] and not actual["constraint"]:
            finding.problems.append(invalid_index_problem(name))
    if ctx.at_current_revision:
        finding.summary = "no INVALID index"
    return settle(finding, count_of(len(finding.problems), "index problem"))


def check_realtime(ctx: Context) -> Finding:
    finding = Finding(
        "realtime", "REPLICA IDENTITY FULL and publication", "pass", "catalog",
        f"{', '.join(t.split('.')[-1] for t in contract.REALTIME_TABLES)}: REPLICA IDENTITY FULL, "
        f"in {contract.REALTIME_PUBLICATION}",
    )
    for table in contract.REALTIME_TABLES:
        actual = ctx.catalog.tables.get(table)
        if actual is None:
            finding.problems.append(f"table {table} is missing")
            continue
        if actual["replica_identity"] != "full":
            finding.problems.append(
                f"{table} has REPLICA IDENTITY {actual['replica_identity'].upper()}; Realtime needs FULL"
            )
        if contract.REALTIME_PUBLICATION not in actual["publications"]:
            finding.problems.append(f"{table} is not in publication {contract.REALTIME_PUBLICATION}")
    return settle(finding, count_of(len(finding.problems), "Realtime problem"))


def check_duplicate_seq(ctx: CheckContext) -> Finding:
    table = qualified(SEQ_TABLE)
    key = contract.valid_unique_key(ctx.catalog, contract.SEQ_KEY)
    title = "no duplicate seq within a chat"
    if key and not ctx.thorough:
        return Finding("duplicate_seq", title, "pass", "catalog", f"impossible: unique constraint {key} is valid")
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
    keys = contract.UNIQUE_KEYS
    finding = Finding("unique_constraints", "primary and unique keys intact", "pass", "catalog",
                      f"{len(keys)} keys intact")
    for key in keys:
        if _table_missing(ctx, key.table, finding):
            continue
        candidates = contract.unique_key_candidates(ctx.catalog, key)
        if not candidates:
            finding.problems.append(f"{key.label()} is missing")
            continue
        name, actual = candidates[0]
        if not actual["index_valid"]:
            finding.problems.append(
                invalid_index_problem(f"{key.table}.{actual['index']}") + f"; {key.kind} {name} is not enforced"
            )
        elif not actual["validated"]:
            finding.problems.append(f"{key.kind} {name} on {key.table} is NOT VALID: existing rows were never checked")
    return settle(finding, count_of(len(finding.problems), "key problem"))


def check_foreign_keys(ctx: Context) -> Finding:
    keys = contract.FOREIGN_KEYS
    finding = Finding("foreign_keys", "foreign keys exist and are validated", "pass", "catalog",
                      f"{len(keys)} foreign keys validated")
    for fk in keys:
        if _table_missing(ctx, fk.table, finding):
            continue
        candidates = contract.foreign_key_candidates(ctx.catalog, fk)
        if not candidates:
            elsewhere = sorted(
                f"{key.rsplit('.', 1)[1]} → {c['referred']}" for key, c in ctx.catalog.constraints.items()
                if key.rsplit(".", 1)[0] == fk.table and c["kind"] == "foreign key" and c["columns"] == [fk.column]
            )
            found = f" (found {', '.join(elsewhere)})" if elsewhere else ""
            finding.problems.append(f"{fk.label()} is missing{found}")
            continue
        name, actual = candidates[0]
        if not actual["validated"]:
            finding.problems.append(f"foreign key {name} on {fk.table} is NOT VALID: existing rows were never checked")
        if not actual["triggers_enabled"]:
            finding.problems.append(f"foreign key {name} on {fk.table} has its triggers disabled: it is not enforced")
    return settle(finding, count_of(len(finding.problems), "foreign key problem"))


# --- privileges ----------------------------------------------------------------------


def _roles_present(ctx: CheckContext, roles: tuple[str, ...]) -> list[str]:
    return list(ctx.conn.execute(
        text("SELECT rolname::text FROM pg_roles WHERE rolname = ANY(:roles) ORDER BY 1"), {"roles": list(roles)}
    ).scalars())


def held_table_privileges(ctx: CheckContext, role: str, tables: tuple[str, ...]) -> dict[str, list[str]]:
    """{table: privileges} the role holds, effectively: granted to it, to PUBLIC or to a role it inherits,
    on the table or on any of its columns (catalog only)."""
    rows = ctx.conn.execute(
        text(
            """
            SELECT t.name, p.privilege
              FROM unnest(CAST(:tables AS text[])) AS t(name), unnest(CAST(:privileges AS text[])) AS p(privilege)
             WHERE to_regclass(t.name) IS NOT NULL
               AND (has_table_privilege(:role, to_regclass(t.name), p.privilege)
                    OR (p.privilege = ANY(CAST(:column_privileges AS text[]))
                        AND has_any_column_privilege(:role, to_regclass(t.name), p.privilege)))
             ORDER BY 1, 2
            """
        ),
        {"tables": list(tables), "privileges": list(contract.TABLE_PRIVILEGES), "role": role,
         "column_privileges": list(contract.COLUMN_PRIVILEGES)},
    ).all()
    held: dict[str, list[str]] = {}
    for table, privilege in rows:
        held.setdefault(table, []).append(privilege)
    return held


def executable_functions(ctx: CheckContext, role: str, signatures: tuple[str, ...]) -> list[str]:
    return list(ctx.conn.execute(
        text(
            "SELECT f.signature FROM unnest(CAST(:functions AS text[])) AS f(signature) "
            "WHERE to_regprocedure(f.signature) IS NOT NULL "
            "AND has_function_privilege(:role, to_regprocedure(f.signature), 'EXECUTE') ORDER BY 1"
        ),
        {"functions": list(signatures), "role": role},
    ).scalars())


def _granted_to(ctx: CheckContext, obj: str, role: str) -> set[str]:
    value = ctx.catalog.grants.get(f"{obj} to {role}")
    return {p.replace(" (grantable)", "") for p in (value or {}).get("privileges", "").split(", ") if p}


def _through(ctx: CheckContext, obj: str, role: str, privileges: list[str]) -> str:
    """Where a privilege the role holds comes from, when not from a grant to the role itself."""
    direct = _granted_to(ctx, obj, role)
    if set(privileges) <= direct:
        return ""
    public = _granted_to(ctx, obj, "PUBLIC")
    if set(privileges) - direct <= public:
        return " (through PUBLIC)"
    return " (through a column grant or an inherited role)"


def check_privileges(ctx: Context) -> Finding:
    finding = Finding(
        "privileges", "least privilege for the API roles", "pass", "catalog",
        "anon holds nothing on the chat tables and functions; authenticated no TRUNCATE, TRIGGER, REFERENCES "
        "or DELETE without a policy; PUBLIC cannot execute the API functions",
    )
    fixes = []
    roles = _roles_present(ctx, ("anon", "authenticated"))
    if "anon" in roles:
        for table, privileges in held_table_privileges(ctx, "anon", contract.ANON_HOLDS_NOTHING_ON_TABLES).items():
            finding.problems.append(
                f"anon holds {', '.join(privileges)} on {table}{_through(ctx, f'table {table}', 'anon', privileges)}; "
                "at head anon holds nothing on the chat tables"
            )
            fixes.append(f"REVOKE ALL ON TABLE {identifier(table)} FROM anon")
        for signature in executable_functions(ctx, "anon", contract.ANON_HOLDS_NOTHING_ON_FUNCTIONS):
            finding.problems.append(
                f"anon may execute {signature}{_through(ctx, f'function {signature}', 'anon', ['EXECUTE'])}; "
                "at head it may not"
            )
            fixes.append(f"REVOKE EXECUTE ON FUNCTION {signature} FROM anon")
    if "authenticated" in roles:
        held = held_table_privileges(ctx, "authenticated", contract.TABLES)
        for table in contract.TABLES:
            never = [p for p in held.get(table, []) if p in contract.AUTHENTICATED_NEVER]
            delete = "DELETE" in held.get(table, []) and not contract.delete_policies(ctx.catalog, table)
            wrong = never + (["DELETE"] if delete else [])
            if wrong:
                why = "RLS does not cover TRUNCATE, TRIGGER or REFERENCES" if never else ""
                if delete:
                    why = "; ".join(filter(None, [why, "no policy allows DELETE"]))
                finding.problems.append(
                    f"authenticated holds {', '.join(sorted(wrong))} on {table}"
                    f"{_through(ctx, f'table {table}', 'authenticated', wrong)} ({why})"
                )
                fixes.append(f"REVOKE {', '.join(sorted(wrong))} ON TABLE {identifier(table)} FROM authenticated")
    for signature in contract.PUBLIC_NEVER_EXECUTES:
        if "EXECUTE" in _granted_to(ctx, f"function {signature}", "PUBLIC"):
            finding.problems.append(f"PUBLIC may execute {signature}: every role may, anon included")
            fixes.append(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
    if fixes:
        at_head = ctx.current_revision == ctx.head_revision
        finding.fix = "; ".join(dict.fromkeys(fixes)) if at_head else "upgrade to head: the revisions set these privileges"
    return settle(finding, count_of(len(finding.problems), "privilege problem") + ": more than the head's least privilege")


# --- what an interrupted revision left, and what the plan does not know -----------------------


def check_leftovers(ctx: Context) -> Finding:
    found = leftovers.find(ctx.conn, ctx.applied, chat_tables.QUALIFIED)
    finding = Finding(
        "leftovers", "nothing left by an interrupted revision", "pass", "catalog",
        "no leftovers of an interrupted revision", [item.describe() for item in found],
    )
    if found:
        finding.fix = (
            "run the upgrade again (it completes the revision) or a downgrade (it removes them); "
            "both clean up before their first step"
        )
    return settle(finding, count_of(len(found), "leftover") + " of an interrupted revision")


_CREATE_POLICY = re.compile(r"CREATE POLICY (\w+) ON (\w+\.\w+)")


def known_names(environment: str) -> dict[str, set[str]]:
    """What the plan knows on the chat tables, keyed like the Catalog.

    Columns, indexes and constraints: models.py's names (only its names: its
    types, defaults and actions are not judged), with PostgreSQL's default
    names for the keys it leaves unnamed (<table>_pkey, <table>_<column>_fkey).
    Policies: the baseline's (chat_migrations.frozen.baseline, frozen) and the
    contract's (those 103 creates). Functions and triggers: the contract's.
    """
    columns, indexes, constraints = set(), set(), set()
    for name in catalog_module.TABLES:
        table, prefix = models.metadata.tables[name], qualified(name)
        columns |= {f"{prefix}.{column.name}" for column in table.columns}
        indexes |= {f"{prefix}.{index.name}" for index in table.indexes}
        for constraint in table.constraints:
            if constraint.name:
                constraints.add(f"{prefix}.{constraint.name}")
        constraints.add(f"{prefix}.{name}_pkey")
        for fk in table.foreign_key_constraints:
            constraints.add(f"{prefix}.{name}_{'_'.join(c.name for c in fk.columns)}_fkey")
    indexes |= {index.key for index in contract.INDEXES}
    policies = {f"{table}.{policy}" for table, names in contract.POLICIES.items() for policy in names}
    if environment in baseline.ENVIRONMENTS:
        policies |= {f"{table}.{policy}" for policy, table in _CREATE_POLICY.findall(baseline.create_sql(environment))}
    return {
        "column": columns, "index": indexes, "constraint": constraints, "policy": policies,
        "function": set(contract.FUNCTIONS), "trigger": set(contract.TRIGGERS),
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
    check_seq,
    check_functions,
    check_indexes,
    check_realtime,
    check_orphans,
    check_duplicate_seq,
    check_unique_constraints,
    check_foreign_keys,
    check_privileges,
    check_leftovers,
    check_unknown_objects,
)
# The head schema's own shape: left out when validating at the current revision.
HEAD_ONLY_CHECKS = (check_not_null, check_functions, check_privileges)


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
            informed = [f.name for f in self.findings if f.status == "info"]
            if informed:
                verdict += f" (information: {', '.join(informed)})"
        return self.render_findings(header, STATUS_LABELS, verdict)


def validate(target: Target, *, thorough: bool = False, at_current_revision: bool = False) -> ValidateReport:
    environment = target.environment.name
    checks = [c for c in CHECKS if not (at_current_revision and c in HEAD_ONLY_CHECKS)]
    left_out = [c.__name__.removeprefix("check_") for c in CHECKS if c not in checks]
    with checks_cli.read_only_connection(target, "chat-migrations:validate") as conn:
        proof = checks_cli.verify_identity(target, conn)
        ctx = Context(
            conn, catalog_module.read_catalog(conn), environment,
            catalog_module.current_revision(conn), catalog_module.head_revision(environment),
            thorough=thorough, at_current_revision=at_current_revision,
        )
        findings = [checks_cli.timed(check, ctx) for check in checks]
        conn.rollback()
    revision = {"current": ctx.current_revision, "head": ctx.head_revision}
    return ValidateReport(target, findings, proof, revision, thorough, left_out)


def build_parser() -> argparse.ArgumentParser:
    parser = checks_cli.command_parser(
        "validate",
        "Prove, read-only, that the environment's database is the converged head schema.",
        "Exit 0: every check passes; 1: a check fails; 2: could not run.",
    )
    parser.add_argument("--thorough", action="store_true",
                        help="scan the data checks that valid constraints already prove")
    parser.add_argument("--at-current-revision", action="store_true",
                        help="after a rollback: accept any revision of the history and run only the checks "
                        "that hold at every revision (left out: not_null, functions, privileges, which indexes exist)")
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
