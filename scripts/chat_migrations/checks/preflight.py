"""scripts/preflight -n prod|staging [--json]: what must hold before ``alembic upgrade head``.

Read-only, and reported before anything runs:

 identity             the same wrong-database guard as env.py (never writes the marker)
 server_version       PostgreSQL 12+ (SET NOT NULL proved by a validated CHECK)
 revisions            current revision, head, and the revisions still to run
 another_migration    a runner already holding the migration's advisory lock
 requirements         what the pending revisions need from this database
                      (``requires``: columns, functions they replace in place);
                      unmet, the upgrade refuses before changing anything
 table_sizes          size and estimated rows of the tables the pending revisions touch
 not_null_violations  rows with NULL in a key a pending revision makes NOT NULL
                      (only the keys a pending revision promises NOT NULL,
                      never a column no revision touches)
 set_null_conflicts   keys whose foreign key sets them NULL on delete: they stay
                      nullable (NOT NULL would make that delete fail), or are
                      NOT NULL already and that delete fails today
 orphans              rows that point to a missing chat, user or message
 invalid_indexes      INVALID indexes on the messaging tables (one a pending
                      revision rebuilds is information, not a blocker)
 index_definitions    an index a revision builds, present under its name with
                      another definition: the pending revision rebuilds it
                      concurrently (online only; a --sql script refuses it)
 leftovers            what an interrupted revision left (chat_migrations.runtime.leftovers)
 lock_holders         sessions holding locks on the messaging tables in a
                      transaction older than the migration's lock-wait budget
 long_transactions    other old transactions (CREATE INDEX CONCURRENTLY waits for them)
 caller_changes       for each pending revision, what changes for anon,
                      authenticated and service_role: privileges gained and
                      lost, policies dropped, added and rewritten, functions
                      whose behaviour changes (the frontend team reads this)

Blockers exit 1 and name the fix; warnings and information do not block.
Preflight is a courtesy: the upgrade itself refuses, changing nothing, when
the data violates a constraint it adds (not_null.set_not_null) or a
requirement is unmet (env.py, chat_migrations.runtime.requirements).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from sqlalchemy import text

from chat_migrations.runtime import api_access, identity, leftovers, lock_retries, requirements, session
from chat_migrations.checks import checks_cli, common
from chat_migrations.schema import history
from chat_migrations.checks import guarantees
from chat_migrations.runtime import promises
from chat_migrations.checks import catalog as catalog_module
from chat_migrations.checks.catalog import qualified
from chat_migrations.checks.checks_cli import Finding, Target, count_of
from chat_migrations.runtime.sqlnames import identifier
from chat_migrations.schema import tables as chat_tables
from chat_migrations.checks.common import CheckContext

MINIMUM_SERVER_VERSION_NUM = 120000
STATUS_LABELS = {"ok": "ok", "info": "info", "warning": "WARNING", "blocker": "BLOCKER"}


def lock_wait_budget_seconds() -> float:
    """The migration's lock-wait budget at its default settings (what an operator gets without -x)."""
    return lock_retries.lock_wait_budget_seconds(session.Settings())


@dataclass
class Context(CheckContext):
    pending: list[Any] = field(default_factory=list)  # alembic Script objects, oldest first
    long_transaction_seconds: float = 0.0

    @property
    def pending_revisions(self) -> set[str]:
        return {r.revision for r in self.pending}

    def pending_declaring(self, key: tuple) -> list[str]:
        """The pending revisions that declare the object ``key`` names (they make or rebuild it)."""
        return [r for r in self.head_state.by(key) if r in self.pending_revisions]


def _pending_revisions(environment: str, current: str | None) -> list[Any]:
    if current is None or current not in history.revisions(environment):
        return []
    return history.pending(environment, current)


def affected_tables(revision) -> tuple[str, ...] | None:
    return getattr(revision.module, "affected_tables", None)


# --- the checks ------------------------------------------------------------------------


def check_server_version(ctx: Context) -> Finding:
    version = ctx.catalog.server_version
    if ctx.catalog.server_version_num < MINIMUM_SERVER_VERSION_NUM:
        return Finding(
            "server_version", "server version", "blocker", "catalog", f"PostgreSQL {version}",
            [f"PostgreSQL {version} is older than 12: SET NOT NULL would scan the table under an exclusive lock"],
            fix="upgrade the server to PostgreSQL 12 or later",
        )
    return Finding("server_version", "server version", "info", "catalog", f"PostgreSQL {version}")


def check_revisions(ctx: Context) -> Finding:
    current, head = ctx.current_revision, ctx.head_revision
    data = {
        "current": current,
        "head": head,
        "pending": [{"revision": r.revision, "affected_tables": list(affected_tables(r) or ())} for r in ctx.pending],
    }
    finding = Finding("revisions", "pending revisions", "info", "catalog", "", data=data)
    if current is None:
        finding.status, finding.summary = "blocker", "no revision recorded: the database was never adopted"
        finding.problems.append(f"{catalog_module.VERSION_TABLE} is missing or empty")
        finding.fix = (
            f"compare it with its baseline (scripts/adopt -n {ctx.environment}), then adopt it: "
            f"alembic -n {ctx.environment} stamp {history.base_revision(ctx.environment)} (README, \"Adopting a live database\")"
        )
    elif not ctx.known_revision:
        finding.status = "blocker"
        finding.summary = f"at {current}, which {ctx.environment}'s history does not contain"
        finding.problems.append(f"the database is at revision {current}; this checkout's head is {head}")
        finding.fix = "run preflight from the checkout that migrated this database, or check the -n environment"
    elif not ctx.pending:
        finding.summary = f"at head {head}: nothing to upgrade"
    else:
        names = ", ".join(r.revision for r in ctx.pending)
        finding.summary = f"{current} → {head}: {len(ctx.pending)} to run ({names})"
        undeclared = [r.revision for r in ctx.pending if affected_tables(r) is None]
        if undeclared:
            finding.status = "warning"
            finding.problems.append(f"revisions without affected_tables (sizes unknown): {', '.join(undeclared)}")
    return finding


def check_another_migration(ctx: Context) -> Finding:
    holder = ctx.conn.execute(text(session.ADVISORY_LOCK_HOLDER_SQL)).first()
    if holder is None:
        return Finding("another_migration", "no other migration running", "ok", "catalog", "no runner holds the migration lock")
    return Finding(
        "another_migration", "no other migration running", "blocker", "catalog", "another migration is running",
        [f"pid {holder.pid} ({holder.app}, connected for {holder.connected_for}) holds the migration's advisory lock"],
        fix="wait for it to finish; a second upgrade would wait 30 s and stop",
    )


def check_requirements(ctx: Context) -> Finding:
    """What the pending revisions declare they need (``requires``), checked with the query env.py runs."""
    title = "what the pending revisions need from this database"
    checks = requirements.pending_checks(ctx.pending)
    query = requirements.problems_query(checks)
    if not ctx.pending:
        return Finding("requirements", title, "ok", "catalog", "nothing pending")
    if query is None:
        return Finding("requirements", title, "ok", "catalog", "the pending revisions declare no requirement")
    unmet = [row[0] for row in ctx.conn.execute(text(query))]
    declared = [revision for revision, _ in checks]
    if not unmet:
        return Finding("requirements", title, "ok", "catalog",
                       f"every requirement of the {count_of(len(declared), 'pending revision')} "
                       "declaring one holds")
    return Finding(
        "requirements", title, "blocker", "catalog", f"{count_of(len(unmet), 'unmet requirement')}",
        unmet,
        fix="the upgrade refuses, changing nothing, until these hold: restore what the live schema lacks "
        "(or differs in), or tell the project, whose revisions assume it",
    )


def check_table_sizes(ctx: Context) -> Finding:
    tables = sorted({t for r in ctx.pending for t in affected_tables(r) or ()})
    sizes = []
    for table in tables:
        entry = ctx.catalog.tables.get(table)
        if entry is not None:
            sizes.append({"table": table, "estimated_rows": entry["estimated_rows"], "total_bytes": entry["total_bytes"]})
    if not tables:
        summary = "no pending revision touches an existing table"
    else:
        summary = "; ".join(f"{s['table']} {_pretty_bytes(s['total_bytes'])}, {_rows(s)}" for s in sizes)
        summary = summary or "the affected tables do not exist yet"
    return Finding("table_sizes", "tables the pending revisions touch", "info", "catalog", summary, data={"tables": sizes})


def _rows(size: dict[str, Any]) -> str:
    if size["estimated_rows"] is None:
        return "rows not estimated yet (never analyzed)"
    return f"~{size['estimated_rows']:,} rows"


def _pretty_bytes(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("kB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}"


def check_not_null_violations(ctx: Context) -> Finding:
    """Keys nullable now that a pending revision makes NOT NULL: their NULL rows stop the upgrade.

    Only the contract's keys, and only where a pending revision makes them so:
    a key whose foreign key sets it NULL on delete stays nullable (set_null_conflicts).
    """
    title = "rows violating a NOT NULL the upgrade adds"
    if not ctx.pending:
        return Finding("not_null_violations", title, "ok", "catalog", "nothing pending")
    keys = [
        key for key in ctx.head_state.not_null_keys
        if ctx.pending_declaring(key.key)
        and (ctx.catalog.columns.get(key.qualified) or {}).get("nullable")
        and guarantees.set_null_conflict(ctx.catalog, key.table, key.name) is None
    ]
    if not keys:
        return Finding("not_null_violations", title, "ok", "catalog", "no column becomes NOT NULL")
    methods, problems, data = [], [], []
    for key in keys:
        methods.append(common.null_lookup_method(ctx.catalog, key.table, key.name))
        count, ids = common.offending_rows(ctx.conn, key.table, f"t.{identifier(key.name)} IS NULL")
        data.append({"column": key.qualified, "null_rows": count, "sample_ids": ids})
        if count:
            problems.append(f"{key.qualified}: {common.describe_rows(count, ids)} with NULL")
    names = ", ".join(key.qualified.removeprefix("public.") for key in keys)
    finding = Finding(
        "not_null_violations", title, "blocker" if problems else "ok", checks_cli.costliest(methods),
        f"{len(problems)} of {len(keys)} columns have NULLs" if problems
        else f"{len(keys)} columns become NOT NULL ({names}): no NULLs",
        problems, data={"columns": data},
    )
    if problems:
        finding.fix = "fill in or delete those rows (the upgrade refuses, changing nothing, until they are gone)"
    return finding


def check_set_null_conflicts(ctx: Context) -> Finding:
    """Where NOT NULL meets ON DELETE SET NULL: named, whatever is pending."""
    title = "NOT NULL keys whose foreign key sets them NULL"
    problems, data = [], []
    for key in ctx.head_state.not_null_keys:
        column = ctx.catalog.columns.get(key.qualified)
        conflict = guarantees.set_null_conflict(ctx.catalog, key.table, key.name) if column else None
        if conflict is None:
            continue
        name, constraint = conflict
        if column["nullable"]:
            making = sorted(ctx.pending_declaring(key.key))
            skipped = f"{', '.join(making)} leaves it nullable" if making else "the revisions keep it nullable"
            problems.append(f"{key.qualified} stays nullable ({skipped}): {guarantees.set_null_reason(name, constraint)}")
        else:
            problems.append(
                f"{key.qualified} is NOT NULL and foreign key {name} is ON DELETE {constraint['on_delete']}: "
                f"deleting a {constraint['referred']} row fails today (not-null violation); no revision changes that"
            )
        data.append({"column": key.qualified, "foreign_key": name, "on_delete": constraint["on_delete"],
                     "referred": constraint["referred"], "nullable": column["nullable"]})
    if not problems:
        return Finding("set_null_conflicts", title, "ok", "catalog",
                       "no NOT NULL key has a foreign key that sets it NULL", data={"keys": []})
    return Finding(
        "set_null_conflicts", title, "warning", "catalog",
        f"{count_of(len(problems), 'key')} where NOT NULL meets ON DELETE SET NULL", problems,
        fix="keeping the key nullable is the careful choice (CASCADE would delete other people's history, "
        "NO ACTION would block the delete); to have it NOT NULL, change the foreign key's ON DELETE first",
        data={"keys": data},
    )


def check_orphans(ctx: Context) -> Finding:
    finding = common.check_orphans(ctx)
    if finding.problems:
        finding.status = "warning"
        finding.fix = "delete or repair those rows: the app cannot show them and RLS cannot protect them"
    else:
        finding.status = "ok"
    return finding


def _rebuilt_by(ctx: Context, index_key: str) -> list[str]:
    """The pending revisions that build (and so converge or rebuild) this index (index_key: public.<table>.<name>)."""
    return ctx.pending_declaring(("index", index_key))


def check_invalid_indexes(ctx: Context) -> Finding:
    invalid = sorted(name for name, index in ctx.catalog.indexes.items() if not index["valid"])
    if not invalid:
        return Finding("invalid_indexes", "no INVALID indexes", "ok", "catalog", f"{len(ctx.catalog.indexes)} indexes valid")
    rebuilt = {name: _rebuilt_by(ctx, name) for name in invalid if _rebuilt_by(ctx, name)}
    blocking = [name for name in invalid if name not in rebuilt]
    problems = [common.invalid_index_problem(name) for name in blocking] + [
        f"index {name.rsplit('.', 1)[1]} on {name.rsplit('.', 1)[0]} is INVALID: {', '.join(by)} drops and "
        "rebuilds it concurrently" for name, by in rebuilt.items()
    ]
    if not blocking:
        return Finding("invalid_indexes", "no INVALID indexes", "info", "catalog",
                       f"{len(rebuilt)} INVALID indexes, rebuilt by the pending revisions", problems)
    return Finding(
        "invalid_indexes", "no INVALID indexes", "blocker", "catalog", f"{len(invalid)} INVALID indexes", problems,
        fix="; ".join(f"REINDEX INDEX CONCURRENTLY {name.rsplit('.', 2)[0]}.{name.rsplit('.', 1)[1]}" for name in blocking),
    )


def check_index_definitions(ctx: Context) -> Finding:
    """An index the revisions build, present under its name with another definition (drift)."""
    title = "indexes the revisions build, by definition"
    problems, data = [], []
    for index in ctx.head_state.of(promises.Index):
        actual = ctx.index_definitions.get(index.qualified_name)
        if actual is None or actual == index.definition:
            continue
        by = _rebuilt_by(ctx, index.key[1])
        if by:
            what = (
                f"{', '.join(by)} rebuilds it concurrently as {index.definition} (the online command converges it; "
                "a --sql script refuses it, changing nothing)"
            )
        else:
            what = f"no pending revision rebuilds it: validate reports it until it is {index.definition}"
        problems.append(f"index {index.name} is {actual}: {what}")
        data.append({"index": index.key[1], "definition": actual, "expected": index.definition, "rebuilt_by": by})
    if not problems:
        return Finding("index_definitions", title, "ok", "catalog",
                       "every index the revisions build is absent or as they build it", data={"indexes": []})
    return Finding("index_definitions", title, "info", "catalog",
                   f"{count_of(len(problems), 'index')} under the expected name with another definition",
                   problems, data={"indexes": data})


def check_leftovers(ctx: Context) -> Finding:
    found = leftovers.find(ctx.conn, ctx.applied, chat_tables.QUALIFIED)
    if not found:
        return Finding("leftovers", "nothing left by an interrupted revision", "ok", "catalog",
                       "no leftovers of an interrupted revision")
    return Finding(
        "leftovers", "nothing left by an interrupted revision", "warning", "catalog",
        f"{count_of(len(found), 'leftover')} of an interrupted revision",
        [item.describe() for item in found],
        fix=(f"the next upgrade completes them; alembic -n {ctx.environment} upgrade "
             f"{ctx.current_revision or 'head'} removes them at any revision"),
    )


def caller_changes(catalog: catalog_module.Catalog, scripts) -> list[dict[str, str]]:
    """What each of ``scripts`` (in upgrade order) changes for the API roles, from the state ``catalog`` records.

    Also scripts/review's, from the baseline's committed catalog (chat_migrations.review.callers).
    """
    grants = api_access.current_grants(catalog.grants)
    policies: dict[str, set[str]] = {}
    for key in catalog.policies:
        table, name = key.rsplit(".", 1)
        policies.setdefault(table, set()).add(name)
    columns: dict[str, set[str]] = {}
    for key in catalog.columns:
        table, column = key.rsplit(".", 1)
        columns.setdefault(table, set()).add(column)
    changes = []
    for script in scripts:
        declared = history.declaration(script)
        # A column the revision adds is there for its own column grants.
        for item in declared.items:
            if isinstance(item, promises.Column):
                columns.setdefault(item.table, set()).add(item.name)
        changes += [{"revision": script.revision, "change": line}
                    for line in api_access.changes(script.revision, declared, grants, policies, columns)]
    return changes


def check_caller_changes(ctx: Context) -> Finding:
    """What each pending revision changes for the API roles on this database, in upgrade order."""
    changes = caller_changes(ctx.catalog, ctx.pending)
    summary = (
        f"{count_of(len(changes), 'change')} for the API roles" if changes else "no change for the API roles"
    )
    return Finding("caller_changes", "what changes for anon, authenticated and service_role", "info", "catalog",
                   summary, [c["change"] for c in changes], data={"changes": changes})


def _sessions(ctx: Context) -> list[dict[str, Any]]:
    """Other sessions with an open transaction, and the locks they hold on the messaging tables."""
    return [
        dict(row) for row in ctx.conn.execute(
            text(
                """
                SELECT a.pid, coalesce(nullif(a.application_name, ''), a.backend_type) AS app, a.state,
                       a.backend_type, extract(epoch FROM now() - a.xact_start)::int AS transaction_seconds,
                       array(SELECT DISTINCT l.relation::regclass::text || ' ' || l.mode FROM pg_locks l
                              WHERE l.pid = a.pid AND l.granted
                                AND l.relation = ANY(array(SELECT to_regclass(t) FROM unnest(CAST(:tables AS text[])) t))
                              ORDER BY 1) AS locks
                  FROM pg_stat_activity a
                 WHERE a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL AND a.datname = current_database()
                 ORDER BY a.xact_start
                """
            ),
            {"tables": [qualified(t) for t in catalog_module.TABLES]},
        ).mappings()
    ]


def _describe_session(s: dict[str, Any]) -> str:
    held = f", holds {', '.join(s['locks'])}" if s["locks"] else ""
    return f"pid {s['pid']} ({s['app']}, {s['state'] or 'state hidden'}, transaction open {s['transaction_seconds']} s{held})"


def _old_transactions(ctx: Context, *, holding: bool) -> list[dict[str, Any]]:
    """Transactions older than the threshold that hold a lock on a messaging table (or do not).

    Autovacuum counts as not holding: it cancels itself when a lock is wanted.
    """
    return [
        s for s in _sessions(ctx)
        if s["transaction_seconds"] >= ctx.long_transaction_seconds
        and holding == bool(s["locks"] and s["backend_type"] != "autovacuum worker")
    ]


def _sessions_finding(name: str, title: str, sessions, status: str, clear: str, found: str, fix: str) -> Finding:
    if not sessions:
        return Finding(name, title, "ok", "catalog", clear)
    return Finding(name, title, status, "catalog", found, [_describe_session(s) for s in sessions], fix=fix)


def check_lock_holders(ctx: Context) -> Finding:
    old = _old_transactions(ctx, holding=True)
    return _sessions_finding(
        "lock_holders", "no old transaction holds the messaging tables", old, "blocker",
        f"no lock on the messaging tables held longer than {ctx.long_transaction_seconds:.0f} s",
        f"{len(old)} sessions hold locks on the messaging tables",
        f"let them finish or end them (SELECT pg_terminate_backend(pid)); the upgrade gives up after "
        f"~{lock_wait_budget_seconds():.0f} s of lock waits per step",
    )


def check_long_transactions(ctx: Context) -> Finding:
    old = _old_transactions(ctx, holding=False)
    return _sessions_finding(
        "long_transactions", "no other long transactions", old, "warning",
        f"no transaction open longer than {ctx.long_transaction_seconds:.0f} s",
        f"{len(old)} transactions open for a long time",
        "CREATE INDEX CONCURRENTLY waits for every older transaction to end; consider ending them first",
    )


CHECKS: tuple[Callable[[Context], Finding], ...] = (
    check_server_version,
    check_revisions,
    check_another_migration,
    check_requirements,
    check_table_sizes,
    check_not_null_violations,
    check_set_null_conflicts,
    check_orphans,
    check_invalid_indexes,
    check_index_definitions,
    check_leftovers,
    check_lock_holders,
    check_long_transactions,
    check_caller_changes,
)


# --- the report -------------------------------------------------------------------------


@dataclass
class PreflightReport(checks_cli.FindingsReport):
    revision: dict[str, Any]
    failing_status: ClassVar[str] = "blocker"

    @property
    def blockers(self) -> list[Finding]:
        return self.failing

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target.describe(), "revision": self.revision, "ready": not self.blockers, **self.checks_json()}

    def render(self) -> str:
        warnings = len([f for f in self.findings if f.status == "warning"])
        if self.blockers:
            names = ", ".join(f.name for f in self.blockers)
            verdict = f"BLOCKED: {count_of(len(self.blockers), 'blocker')}: {names}"
        else:
            verdict = f"READY: no blockers ({count_of(warnings, 'warning')})"
        return self.render_findings([f"preflight {self.target.label}: {self.target.masked_url}"], STATUS_LABELS, verdict)


def preflight(target: Target, *, long_transaction_seconds: float | None = None) -> PreflightReport:
    environment = target.environment.name
    head = catalog_module.head_revision(environment)
    if long_transaction_seconds is None:
        long_transaction_seconds = lock_wait_budget_seconds()
    try:
        with checks_cli.read_only_connection(target, "chat-migrations:preflight") as conn:
            proof = checks_cli.verify_identity(target, conn)
            identity_ok = Finding("identity", "the environment's database", "ok", "catalog", proof)
            current = catalog_module.current_revision(conn)
            ctx = Context(
                conn, catalog_module.read_catalog(conn), environment, current, head,
                pending=_pending_revisions(environment, current), long_transaction_seconds=long_transaction_seconds,
            )
            findings = [identity_ok] + [checks_cli.timed(check, ctx) for check in CHECKS]
            conn.rollback()
    except identity.WrongDatabase as refusal:
        # Nothing else is worth reading on another environment's database.
        wrong = Finding("identity", "the environment's database", "blocker", "catalog", "wrong database",
                        [str(refusal)], fix=f"point {target.environment.url_env} at {environment}'s database")
        return PreflightReport(target, [wrong], {"current": None, "head": head, "pending": []})
    revision = next(f.data for f in findings if f.name == "revisions")
    return PreflightReport(target, findings, revision)


def build_parser() -> argparse.ArgumentParser:
    parser = checks_cli.command_parser(
        "preflight",
        "Report, read-only, what must hold before `alembic -n ENV upgrade head`.",
        "Exit 0: no blockers (warnings allowed); 1: blockers, each with its fix; 2: could not run.",
    )
    parser.add_argument(
        "--long-transaction-seconds", type=float, metavar="S",
        help=f"how old a transaction must be to be reported (default: the migration's lock-wait budget, "
        f"{lock_wait_budget_seconds():.0f} s)",
    )
    return parser


def main(argv: list[str] | None = None, *, urls: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return checks_cli.run_command(
        "preflight",
        lambda: preflight(
            checks_cli.environment_target(args.name, urls), long_transaction_seconds=args.long_transaction_seconds
        ),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
