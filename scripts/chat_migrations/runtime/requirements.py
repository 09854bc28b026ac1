"""What a revision needs from the live database, declared beside its SQL and checked before anything changes.

A live schema differs from the project's baselines in ways nobody wrote
down. A revision that depends on a column, or on a function it replaces in
place, says so in ``requires``; env.py checks the requirements of every
pending revision before the first one runs (online: one query; ``--sql``: a
guard statement at the top of the script), and scripts/preflight reports
them, so an upgrade refuses before changing anything instead of failing in
its middle. A column the plan never names (``updated_at``) is not required:
the revisions that touch it check for it themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from chat_migrations.runtime.snapshots import literal


@dataclass(frozen=True)
class Requirements:
    """columns: {table: (column, ...)} that must exist.

    functions: {signature: (arguments, result)}: if the function exists, its
    argument list (names included, as ``pg_get_function_arguments`` prints
    it) and result must be these, because the revision replaces it in place
    (CREATE OR REPLACE cannot rename an argument the frontend calls by name,
    nor change a result type).
    """

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    functions: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Functions this revision drops and creates whatever was there: a later
    # revision's requirement on them is met by this one.
    provides: tuple[str, ...] = ()

    # Tables the revision alters, indexes or re-polices (its affected_tables):
    # only their owner may, so the migration's role must be a member of it.
    owned_tables: tuple[str, ...] = ()

    def without(self, provided: set[str]) -> "Requirements":
        return replace(self, functions={s: f for s, f in self.functions.items() if s not in provided})

    def problems_sql(self, revision: str) -> str | None:
        """A SELECT of one text row per unmet requirement (none when all hold); read-only."""
        parts = []
        for table in self.owned_tables:
            parts.append(
                f"SELECT format('%s changes %s, which is owned by %s; the migration runs as %s, which is not a "
                f"member of it: run ALTER TABLE %s OWNER TO %s as %s (or GRANT %s TO %s)', {literal(revision)}, "
                f"{literal(table)}, o.rolname, current_user, {literal(table)}, current_user, o.rolname, o.rolname, current_user) "
                f"FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid = c.relowner "
                f"WHERE c.oid = to_regclass({literal(table)}) AND NOT pg_catalog.pg_has_role(c.relowner, 'MEMBER')"
            )
        # In declaration order: the rendered SQL must not depend on the hash seed.
        for signature in dict.fromkeys([*self.functions, *self.provides]):
            parts.append(
                f"SELECT format('%s replaces %s, which is owned by %s; the migration runs as %s, which is not a "
                f"member of it: run ALTER FUNCTION %s OWNER TO %s as %s', {literal(revision)}, {literal(signature)}, "
                f"o.rolname, current_user, {literal(signature)}, current_user, o.rolname) "
                f"FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles o ON o.oid = p.proowner "
                f"WHERE p.oid = to_regprocedure({literal(signature)}) AND NOT pg_catalog.pg_has_role(p.proowner, 'MEMBER')"
            )
        for table, columns in self.columns.items():
            for column in columns:
                parts.append(
                    f"SELECT {literal(f'{revision} needs column {table}.{column}, which this database does not have')} "
                    f"WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = to_regclass({literal(table)}) "
                    f"AND a.attname = {literal(column)} AND a.attnum > 0 AND NOT a.attisdropped)"
                )
        for signature, (arguments, result) in self.functions.items():
            parts.append(
                f"SELECT format('%s replaces %s in place, which needs (%s) returning %s; this database has (%s) "
                f"returning %s: rename or drop it by hand first, and tell the frontend', {literal(revision)}, "
                f"{literal(signature)}, {literal(arguments)}, {literal(result)}, "
                "pg_catalog.pg_get_function_arguments(p.oid), pg_catalog.pg_get_function_result(p.oid)) "
                f"FROM pg_catalog.pg_proc p WHERE p.oid = to_regprocedure({literal(signature)}) "
                f"AND (pg_catalog.pg_get_function_arguments(p.oid) <> {literal(arguments)} "
                f"OR pg_catalog.pg_get_function_result(p.oid) <> {literal(result)})"
            )
        return "\nUNION ALL\n".join(parts) or None


def pending_checks(revisions) -> list[tuple[str, Requirements]]:
    """(revision, its requirements) for revision scripts in upgrade order, less what an earlier one provides."""
    provided: set[str] = set()
    checks = []
    for script in revisions:
        if script.down_revision is None:
            # A baseline builds the schema from nothing: what follows it needs nothing of the database.
            return []
        requirements = getattr(script.module, "requires", None) or Requirements()
        owned = tuple(getattr(script.module, "affected_tables", None) or ())
        checks.append((script.revision, replace(requirements.without(provided), owned_tables=owned)))
        provided |= set(requirements.provides)
    return checks


def problems_query(checks: list[tuple[str, Requirements]]) -> str | None:
    queries = [q for revision, requirements in checks if (q := requirements.problems_sql(revision))]
    return "\nUNION ALL\n".join(f"({query})" for query in queries) or None


def guard_sql(checks: list[tuple[str, Requirements]]) -> str | None:
    """One statement that stops (nothing changed) when any pending revision's requirement fails."""
    queries = [q for revision, requirements in checks if (q := requirements.problems_sql(revision))]
    if not queries:
        return None
    union = "\nUNION ALL\n".join(f"({query})" for query in queries)
    return f"""DO $requirements$
DECLARE
    unmet text;
BEGIN
    SELECT string_agg(problem, '; ') INTO unmet FROM ({union}) AS unmet_requirements(problem);
    IF unmet IS NOT NULL THEN
        RAISE EXCEPTION 'cannot upgrade: %; nothing was changed', unmet;
    END IF;
END
$requirements$"""
