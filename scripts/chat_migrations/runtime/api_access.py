"""What a revision leaves Supabase's API roles holding, declared once: the revision's grants and preflight's report.

Supabase's default privileges give ``anon``, ``authenticated`` and
``service_role`` ALL on every new table and function in ``public``; RLS does
not cover TRUNCATE, TRIGGER or REFERENCES, and a SECURITY DEFINER function
runs for whoever may execute it. A revision that changes who may do what
declares the end state for the roles it names (``Access``); ``grants_sql``
turns that into REVOKE/GRANT statements (run inside the revision), and
scripts/preflight diffs it against the live catalog before the release, so
the frontend team reads what they gain and lose (``changes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chat_migrations.runtime import promises
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

    def promises(self) -> promises.Promises:
        """The state these grants and policies leave, and what changes for callers: the revision's declaration."""
        items = [
            *(promises.TablePrivileges(table, role, tuple(privileges))
              for table, roles in self.tables.items() for role, privileges in roles.items()),
            *(promises.Execute(signature, role, allowed)
              for signature, roles in self.functions.items() for role, allowed in roles.items()),
            *(promises.Policies(table, tuple(names)) for table, names in self.policies.items()),
        ]
        return promises.Promises(tuple(items), dict(self.behaviour))

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


# --- what changes for callers (preflight's caller report, scripts/review) ------------------------


def _privileges(value: str | None) -> set[str]:
    return {p.strip() for p in (value or "").split(",") if p.strip()}


def _expanded(privileges, columns: set[str] | None) -> set[str]:
    """Table privileges as they are; a column privilege per column ("UPDATE (a)"), of ``columns`` when known."""
    found = set()
    for privilege in privileges:
        if "(" not in privilege:
            found.add(privilege)
            continue
        kind, names = privilege.split("(", 1)
        for name in (n.strip() for n in names.rstrip(")").split(",")):
            if columns is None or name in columns:
                found.add(f"{kind.strip()} ({name})")
    return found


def changes(revision: str, declared: promises.Promises, grants: dict[str, set[str]], policies: dict[str, set[str]],
            columns: dict[str, set[str]] | None = None) -> list[str]:
    """Lines naming what ``revision`` changes for the API roles, against the state it will find.

    ``grants`` maps "table public.x to anon" to privileges, column privileges
    one per column ("UPDATE (last_read_at)"), and "function public.f(uuid)
    to anon" to {"EXECUTE"} or nothing; ``policies`` maps a table to its
    policy names; ``columns`` (when known) maps a table to the columns it
    has, so a column grant on a column that is not there is not promised.
    Both maps are updated to the state after the revision, so the next
    revision is diffed against it.
    """
    lines = []
    for item in declared.items:
        if isinstance(item, promises.TablePrivileges):
            key = f"table {item.table} to {item.role}"
            known = (columns or {}).get(item.table) if columns is not None else None
            before, after = grants.get(key, set()), _expanded(item.privileges, known)
            lost, gained = sorted(before - after), sorted(after - before)
            if lost or gained:
                lines.append(f"{revision}: {item.role} on {item.table}: " + "; ".join(part for part in (
                    f"loses {', '.join(lost)}" if lost else "", f"gains {', '.join(gained)}" if gained else "",
                ) if part))
            grants[key] = after
        elif isinstance(item, promises.Execute):
            key = f"function {item.signature} to {item.role}"
            if ("EXECUTE" in grants.get(key, set())) != item.allowed:
                lines.append(f"{revision}: {item.role} "
                             f"{'may now execute' if item.allowed else 'may no longer execute'} {item.signature}")
            grants[key] = {"EXECUTE"} if item.allowed else set()
        elif isinstance(item, promises.Policies):
            before, names = policies.get(item.table, set()), set(item.names)
            for verb, found in (("dropped", before - names), ("added", names - before), ("rewritten", before & names)):
                if found:
                    lines.append(f"{revision}: policies {verb} on {item.table}: {', '.join(sorted(found))}")
            policies[item.table] = names
    for target, what in declared.behaviour.items():
        lines.append(f"{revision}: {target}: {what}")
    return lines


def current_grants(catalog_grants: dict[str, dict]) -> dict[str, set[str]]:
    """The catalog's grants as ``changes`` reads them: grant options dropped, column grants folded into
    their table's entry one per column ("UPDATE (c)")."""
    found: dict[str, set[str]] = {}
    for key, value in catalog_grants.items():
        privileges = {p.replace(" (grantable)", "") for p in _privileges(value["privileges"])}
        target, role = key.rsplit(" to ", 1)
        if target.startswith("column "):
            table, column = target.removeprefix("column ").rsplit(".", 1)
            found.setdefault(f"table {table} to {role}", set()).update(f"{p} ({column})" for p in privileges)
        else:
            found.setdefault(key, set()).update(privileges)
    return found


def promised_grants(state: promises.State) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(grants, policies) as ``changes`` reads them, from what a chain promises (no database: scripts/review)."""
    grants: dict[str, set[str]] = {}
    for item in state.of(promises.TablePrivileges):
        grants[f"table {item.table} to {item.role}"] = _expanded(item.privileges, None)
    for item in state.of(promises.Execute):
        grants[f"function {item.signature} to {item.role}"] = {"EXECUTE"} if item.allowed else set()
    return grants, {item.table: set(item.names) for item in state.of(promises.Policies)}
