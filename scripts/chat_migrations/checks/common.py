"""What validate and preflight both check, and how they look rows up.

One place for the row lookups (a sample of ids, then a count) and the checks
both commands run before and after a migration, so neither command reaches
into the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import text
from sqlalchemy.engine import Connection

from chat_migrations.checks import checks_cli, guarantees
from chat_migrations.checks.catalog import Catalog
from chat_migrations.checks.checks_cli import Finding, count_of
from chat_migrations.runtime import promises
from chat_migrations.runtime.sqlnames import identifier
from chat_migrations.schema import history

SAMPLE_IDS = 5


@dataclass
class CheckContext:
    """One read-only look at a database: what validate's and preflight's checks receive.

    ``judged_at``: the revision whose promised state the checks judge (head
    when None; validate --at-current-revision passes the current one).
    """

    conn: Connection
    catalog: Catalog
    environment: str
    current_revision: str | None
    head_revision: str
    thorough: bool = False
    judged_at: str | None = None

    @cached_property
    def known_revision(self) -> bool:
        return self.current_revision is not None and self.current_revision in history.revisions(self.environment)

    @cached_property
    def state(self) -> promises.State:
        """What the revisions promise at ``judged_at`` (chat_migrations.schema.history): at a revision this
        checkout does not know, what they promise at every revision."""
        if self.judged_at is not None and self.judged_at not in history.revisions(self.environment):
            return history.common_to_every_revision(self.environment)
        return history.promised(self.environment, self.judged_at)

    @cached_property
    def head_state(self) -> promises.State:
        return history.promised(self.environment)

    @cached_property
    def unmet(self) -> list[guarantees.Unmet]:
        """Every promise of ``state`` this database does not keep."""
        return guarantees.unmet(self.conn, self.catalog, self.state)

    def unmet_of(self, *kinds: type) -> list[guarantees.Unmet]:
        return [u for u in self.unmet if isinstance(u.item, kinds)]

    @cached_property
    def applied(self) -> set[str]:
        """The revisions at or below the current one, for chat_migrations.runtime.leftovers.

        Never adopted: none. At a revision this checkout does not know: every
        revision of the history, so that only what is a leftover at any
        revision is reported (the revision check names the unknown revision).
        """
        if self.current_revision is None:
            return set()
        if not self.known_revision:
            return history.revisions(self.environment)
        return {s.revision for s in history.chain(self.environment, self.current_revision)}

    @cached_property
    def index_definitions(self) -> dict[str, str]:
        return guarantees.live_index_definitions(
            self.conn, [index.qualified_name for index in self.head_state.of(promises.Index)])


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
    """No row points to a missing parent, and no mandatory reference is NULL (the promised foreign keys)."""
    methods, problems, proofs = [], [], 0
    for fk in ctx.state.of(promises.ForeignKey):
        if fk.table not in ctx.catalog.tables:
            continue
        actual = ctx.catalog.columns.get(f"{fk.table}.{fk.column}")
        if actual is None:
            continue  # foreign_keys and not_null name it
        if guarantees.mandatory(ctx.state, ctx.catalog, fk):
            if not actual["nullable"] and not ctx.thorough:
                proofs += 1
            else:
                methods.append(null_lookup_method(ctx.catalog, fk.table, fk.column))
                count, ids = offending_rows(ctx.conn, fk.table, f"t.{identifier(fk.column)} IS NULL")
                if count:
                    problems.append(f"{fk.table}: {describe_rows(count, ids)} with {fk.column} NULL (no {fk.referred} row)")
        if guarantees.enforced_foreign_key(ctx.catalog, fk) and not ctx.thorough:
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


def _dangling_condition(fk: promises.ForeignKey) -> str:
    return (
        f"t.{identifier(fk.column)} IS NOT NULL AND NOT EXISTS (SELECT FROM {identifier(fk.referred)} AS parent "
        f"WHERE parent.{identifier(fk.referred_column)} = t.{identifier(fk.column)})"
    )
