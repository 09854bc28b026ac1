"""What a revision leaves Supabase's API roles holding, declared once: the revision's grants and preflight's report.

On older projects, Supabase's default privileges give ``anon``,
``authenticated`` and ``service_role`` ALL on every new table and function in
``public``; projects created since 30 May 2026, and all of them since 30 Oct
2026, give new objects nothing (what existed keeps its grants). RLS does not
cover TRUNCATE, TRIGGER or REFERENCES, and a SECURITY DEFINER function runs
for whoever may execute it. A revision that changes who may do what
declares the end state for the roles it names (``Access``); ``grants_sql``
turns that into REVOKE/GRANT statements (run inside the revision), and
scripts/preflight diffs it against the live catalog before the release, so
the frontend team reads what they gain and lose (``changes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chat_migrations.runtime.snapshots import literal

API_ROLES = ("anon", "authenticated", "service_role")


@dataclass(frozen=True)
class Access:
    """tables: {table: {role: privileges}}, a privilege being "SELECT" or "UPDATE (col, ...)".

    Column privileges name every column a role may update; one the database
    does not have is skipped (``updated_at`` is not the plan's). functions:
    {signature: {role: may execute}}. policies: {table: names}: the revision
    replaces every policy of the table with these. behaviour: {signature:
    what changes for a caller}.
    """

    tables: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    functions: dict[str, dict[str, bool]] = field(default_factory=dict)
    policies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    behaviour: dict[str, str] = field(default_factory=dict)

    def grants_sql(self) -> str:
        """REVOKE everything from each named role, then GRANT what it is left with."""
        return "\n".join([self.table_grants_sql(), *map(self.function_grants_sql, self.functions)]).strip()

    def table_grants_sql(self) -> str:
        statements = []
        for table, roles in self.tables.items():
            for role, privileges in roles.items():
                statements.append(f"REVOKE ALL ON TABLE {table} FROM {role};")
                whole = [p for p in privileges if "(" not in p]
                if whole:
                    statements.append(f"GRANT {', '.join(whole)} ON TABLE {table} TO {role};")
                for privilege in (p for p in privileges if "(" in p):
                    statements.append(_column_grant_sql(table, role, privilege))
        return "\n".join(statements)

    def function_grants_sql(self, signature: str) -> str:
        roles = self.functions[signature]
        denied = [role for role, allowed in roles.items() if not allowed]
        allowed = [role for role, may in roles.items() if may]
        statements = []
        if denied:
            statements.append(f"REVOKE EXECUTE ON FUNCTION {signature} FROM {', '.join(denied)};")
        if allowed:
            statements.append(f"GRANT EXECUTE ON FUNCTION {signature} TO {', '.join(allowed)};")
        return "\n".join(statements)


def _column_grant_sql(table: str, role: str, privilege: str) -> str:
    kind, columns = privilege.split("(", 1)
    names = [name.strip() for name in columns.rstrip(")").split(",")]
    wanted = ", ".join(literal(name) for name in names)
    return f"""DO $columns$
DECLARE
    present text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO present
      FROM pg_attribute a WHERE a.attrelid = {literal(table)}::regclass
       AND a.attname IN ({wanted}) AND a.attnum > 0 AND NOT a.attisdropped;
    IF present IS NOT NULL THEN
        EXECUTE format('GRANT {kind.strip()} (%s) ON TABLE {table} TO {role}', present);
    END IF;
END
$columns$;"""


# --- what preflight says -------------------------------------------------------------------------


def _privileges(value: str | None) -> set[str]:
    return {p.strip() for p in (value or "").split(",") if p.strip()}


def changes(revision: str, access: Access, grants: dict[str, set[str]], policies: dict[str, set[str]]) -> list[str]:
    """Lines naming what ``revision`` changes for the API roles, against the state it will find.

    ``grants`` maps "table public.x to anon" / "function public.f(uuid) to anon"
    to privileges and ``policies`` maps a table to its policy names; both are
    updated to the state after the revision, so the next revision is diffed
    against it.
    """
    lines = []
    for table, roles in access.tables.items():
        for role, privileges in roles.items():
            key = f"table {table} to {role}"
            before, after = grants.get(key, set()), set(privileges)
            lost, gained = sorted(before - after), sorted(after - before)
            if lost or gained:
                lines.append(
                    f"{revision}: {role} on {table}: "
                    + "; ".join(part for part in (
                        f"loses {', '.join(lost)}" if lost else "", f"gains {', '.join(gained)}" if gained else "",
                    ) if part)
                )
            grants[key] = after
    for signature, roles in access.functions.items():
        for role, allowed in roles.items():
            key = f"function {signature} to {role}"
            had = "EXECUTE" in grants.get(key, set())
            if had != allowed:
                lines.append(f"{revision}: {role} {'may now execute' if allowed else 'may no longer execute'} {signature}")
            grants[key] = {"EXECUTE"} if allowed else set()
    for table, names in access.policies.items():
        before = policies.get(table, set())
        dropped, added, replaced = sorted(before - set(names)), sorted(set(names) - before), sorted(before & set(names))
        if dropped:
            lines.append(f"{revision}: policies dropped on {table}: {', '.join(dropped)}")
        if added:
            lines.append(f"{revision}: policies added on {table}: {', '.join(added)}")
        if replaced:
            lines.append(f"{revision}: policies rewritten on {table}: {', '.join(replaced)}")
        policies[table] = set(names)
    for signature, what in access.behaviour.items():
        lines.append(f"{revision}: {signature}: {what}")
    return lines


def current_grants(catalog_grants: dict[str, dict]) -> dict[str, set[str]]:
    """The catalog's grants ("<object> to <role>": {"privileges": "A, B"}) as sets, grant options dropped."""
    return {
        key: {p.replace(" (grantable)", "") for p in _privileges(value["privileges"])}
        for key, value in catalog_grants.items()
    }
