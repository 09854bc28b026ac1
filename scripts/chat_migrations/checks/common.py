"""What validate and preflight both check, and how they look rows up.

One place for the row lookups (a sample of ids, then a count) and the checks
both commands run before and after a migration, so neither command reaches
into the other.
"""

from __future__ import annotations

from sqlalchemy import text

from chat_migrations.checks import checks_cli
from chat_migrations.checks.catalog import Catalog
from chat_migrations.checks.checks_cli import Finding, count_of
from chat_migrations.runtime.sqlnames import identifier
from chat_migrations.schema import contract
from chat_migrations.schema.contract import CheckContext

SAMPLE_IDS = 5


def settle(finding: Finding, failed_summary: str) -> Finding:
    """The finding failed, with ``failed_summary``, if it found problems."""
    if finding.problems:
        finding.status, finding.summary = "fail", failed_summary
    return finding


def offending_rows(conn, table: str, condition: str) -> tuple[int, list[str]]:
    """How many rows of ``table`` match ``condition``, and a few of their ids.

    The sample query stops at the first rows it finds; the count runs only when
    there are some, so a clean table is read once.
    """
    ids = conn.execute(
        text(f"SELECT t.id::text FROM {identifier(table)} AS t WHERE {condition} LIMIT {SAMPLE_IDS}")
    ).scalars().all()
    if not ids:
        return 0, []
    count = conn.execute(text(f"SELECT count(*) FROM {identifier(table)} AS t WHERE {condition}")).scalar()
    return count, sorted(ids)


def describe_rows(count: int, ids: list[str]) -> str:
    more = ", …" if count > len(ids) else ""
    return f"{count_of(count, 'row')} (ids: {', '.join(ids)}{more})"


def null_lookup_method(catalog: Catalog, table: str, column: str) -> str:
    """``table`` bare (chat_messages) or qualified (public.chat_messages)."""
    return "index" if catalog.leading_index(table.split(".")[-1], column) else "scan"


def invalid_index_problem(name: str) -> str:
    return (
        f"index {name.rsplit('.', 1)[1]} on {name.rsplit('.', 1)[0]} is INVALID (an interrupted concurrent "
        "build): it is maintained on every write but never used; rebuild it"
    )


def check_orphans(ctx: CheckContext) -> Finding:
    """No row points to a missing parent, and no mandatory reference is NULL (the contract's foreign keys)."""
    methods, problems, proofs = [], [], 0
    for fk in contract.FOREIGN_KEYS:
        if fk.table not in ctx.catalog.tables:
            continue
        actual = ctx.catalog.columns.get(f"{fk.table}.{fk.column}")
        if actual is None:
            continue  # foreign_keys and not_null name it
        if contract.mandatory(ctx.catalog, fk):
            if not actual["nullable"] and not ctx.thorough:
                proofs += 1
            else:
                methods.append(null_lookup_method(ctx.catalog, fk.table, fk.column))
                count, ids = offending_rows(ctx.conn, fk.table, f"t.{identifier(fk.column)} IS NULL")
                if count:
                    problems.append(f"{fk.table}: {describe_rows(count, ids)} with {fk.column} NULL (no {fk.referred} row)")
        if contract.enforced_foreign_key(ctx.catalog, fk) and not ctx.thorough:
            proofs += 1
            continue
        methods.append("scan")
        count, ids = offending_rows(ctx.conn, fk.table, _dangling_condition(fk))
        if count:
            problems.append(
                f"{fk.table}: {describe_rows(count, ids)} with a {fk.column} that no {fk.referred} row has"
            )
    summary = "no orphaned rows" + (f" ({proofs} proved by valid constraints)" if proofs else "")
    finding = Finding("orphans", "no orphaned participants or messages", "pass", checks_cli.costliest(methods or ["catalog"]),
                      summary, problems)
    return settle(finding, count_of(len(problems), "kind") + " of orphaned rows")


def _dangling_condition(fk: contract.ForeignKey) -> str:
    return (
        f"t.{identifier(fk.column)} IS NOT NULL AND NOT EXISTS (SELECT FROM {identifier(fk.referred)} AS parent "
        f"WHERE parent.{identifier(fk.referred_column)} = t.{identifier(fk.column)})"
    )
