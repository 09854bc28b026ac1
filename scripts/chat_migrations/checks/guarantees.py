"""Whether a live catalog keeps what the revisions promise (chat_migrations.runtime.promises).

A promise is judged by the guarantee it gives, not by the form that gives it:

* a unique key is met by a validated primary key or unique constraint on a
  valid index, or by a valid unique index (no WHERE, no expression) on the
  same columns in any order: each rejects duplicates and serves ON CONFLICT;
* a foreign key by any validated constraint with enabled triggers on that
  column to that table, under any name and with any ON DELETE action;
* a NOT NULL key also by a nullable column whose foreign key writes NULL into
  it on delete (ON DELETE SET NULL): NOT NULL there would make that delete
  fail, so the revisions keep it nullable by design;
* an index by its whole definition (pg_get_indexdef), valid;
* privileges by what is granted to the role on the object itself, table and
  column grants alike (a role promised nothing on a table is also checked
  for what it holds through PUBLIC or another role).

``unmet(conn, catalog, state)`` returns one ``Unmet`` per broken promise,
each with a fix that runs where one exists. validate, stamp, adopt and drift
read promises only through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import text
from sqlalchemy.engine import Connection

from chat_migrations.checks.catalog import Catalog
from chat_migrations.runtime import promises as p
from chat_migrations.runtime.sqlnames import identifier

REALTIME_PUBLICATION = "supabase_realtime"


@dataclass(frozen=True)
class Unmet:
    item: Any
    problem: str
    fix: str | None = None

    @property
    def kind(self) -> str:
        return self.item.key[0]


# --- keys and constraints --------------------------------------------------------------------


def constraints_of(catalog: Catalog, table: str, *kinds: str) -> list[tuple[str, dict[str, Any]]]:
    return sorted(
        (key.rsplit(".", 1)[1], c) for key, c in catalog.constraints.items()
        if key.rsplit(".", 1)[0] == table and c["kind"] in kinds
    )


def set_null_conflict(catalog: Catalog, table: str, column: str) -> tuple[str, dict[str, Any]] | None:
    """The foreign key that writes NULL into ``column`` when its referenced row is deleted, if any.

    ON DELETE SET NULL, or SET DEFAULT where the column has no default (the
    Catalog form of the NOT NULL helpers' own check).
    """
    column_entry = catalog.columns.get(f"{table}.{column}") or {}
    for name, constraint in constraints_of(catalog, table, "foreign key"):
        if column not in constraint["columns"]:
            continue
        action = (constraint.get("on_delete") or "NO ACTION").upper()
        if action == "SET NULL" or (action == "SET DEFAULT" and column_entry.get("default") is None):
            return name, constraint
    return None


def set_null_reason(name: str, constraint: dict[str, Any]) -> str:
    return (
        f"foreign key {name} is ON DELETE {constraint['on_delete']} (→ {constraint['referred']}): "
        f"NOT NULL would make deleting a {constraint['referred']} row fail"
    )


def unique_forms(catalog: Catalog, key: p.Unique) -> list[tuple[str, dict[str, Any]]]:
    """Everything on the table that is this key (same columns, any order, any name): constraints first.

    Entries: (name, {"form": "constraint"|"index", "valid": bool, "detail": ...}).
    """
    kinds = ("primary key",) if key.primary else ("unique", "primary key")
    found = []
    for name, c in constraints_of(catalog, key.table, *kinds):
        if sorted(c["columns"]) == sorted(key.columns):
            found.append((name, {"form": "constraint", "kind": c["kind"], "valid": c["validated"] and c["index_valid"],
                                 "validated": c["validated"], "index_valid": c["index_valid"], "index": c["index"]}))
    if not key.primary:
        for index_key, index in sorted(catalog.indexes.items()):
            if (index["table"] == key.table and index["unique"] and not index["constraint"]
                    and sorted(index["keys"]) == sorted(key.columns) and " WHERE " not in index["definition"]):
                found.append((index_key.rsplit(".", 1)[1], {"form": "index", "kind": "unique index",
                                                            "valid": index["valid"], "validated": True,
                                                            "index_valid": index["valid"],
                                                            "index": index_key.rsplit(".", 1)[1]}))
    return sorted(found, key=lambda item: (not item[1]["valid"], item[1]["form"] != "constraint", item[0]))


def unique_met_by(catalog: Catalog, key: p.Unique) -> str | None:
    """The name of what guarantees this key here (a valid constraint or unique index), else None."""
    for name, form in unique_forms(catalog, key):
        if form["valid"]:
            return name
    return None


def foreign_key_forms(catalog: Catalog, fk: p.ForeignKey) -> list[tuple[str, dict[str, Any]]]:
    """Foreign keys of any name and any ON DELETE action on this column to this table; enforced ones first."""
    found = [
        (name, c) for name, c in constraints_of(catalog, fk.table, "foreign key")
        if c["columns"] == [fk.column] and c["referred"] == fk.referred
    ]
    return sorted(found, key=lambda item: (not (item[1]["validated"] and item[1]["triggers_enabled"]), item[0]))


def enforced_foreign_key(catalog: Catalog, fk: p.ForeignKey) -> str | None:
    for name, constraint in foreign_key_forms(catalog, fk):
        if constraint["validated"] and constraint["triggers_enabled"]:
            return name
    return None


def mandatory(state: p.State, catalog: Catalog, fk: p.ForeignKey) -> bool:
    """Whether a NULL in the key is an orphan: a promised NOT NULL key, unless its foreign key sets it NULL."""
    column = state.get(("column", f"{fk.table}.{fk.column}"))
    promised = isinstance(column, p.Column) and bool(column.not_null)
    return promised and set_null_conflict(catalog, fk.table, fk.column) is None


# --- grants ----------------------------------------------------------------------------------


def _privileges(value: dict | None) -> set[str]:
    return {x.replace(" (grantable)", "") for x in (value or {}).get("privileges", "").split(", ") if x}


def granted(catalog: Catalog, target: str, role: str) -> set[str]:
    """What is granted to ``role`` on ``target`` ("table public.x", "function public.f(uuid)") itself."""
    return _privileges(catalog.grants.get(f"{target} to {role}"))


def column_grants(catalog: Catalog, table: str, role: str) -> dict[str, set[str]]:
    """{privilege: columns} granted to ``role`` on ``table``'s columns."""
    found: dict[str, set[str]] = {}
    prefix, suffix = f"column {table}.", f" to {role}"
    for key, value in catalog.grants.items():
        if key.startswith(prefix) and key.endswith(suffix):
            column = key[len(prefix):-len(suffix)]
            for privilege in _privileges(value):
                found.setdefault(privilege, set()).add(column)
    return found


def live_index_definitions(conn: Connection, names: Iterable[str]) -> dict[str, str]:
    """{public.<index>: pg_get_indexdef} for those of ``names`` that exist (read-only, catalog only)."""
    rows = conn.execute(
        text(
            "SELECT name, pg_catalog.pg_get_indexdef(to_regclass(name)) FROM unnest(CAST(:names AS text[])) AS name "
            "WHERE to_regclass(name) IS NOT NULL"
        ),
        {"names": sorted(set(names))},
    ).all()
    return dict(rows)


def _held_through_others(conn: Connection, table: str, role: str) -> list[str]:
    """Privileges ``role`` holds on ``table`` by any route (PUBLIC, inherited roles, columns)."""
    return list(conn.execute(
        text(
            "SELECT p FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) p "
            "WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :role) AND to_regclass(:table) IS NOT NULL "
            "AND (has_table_privilege(:role, to_regclass(:table), p) "
            "     OR (p IN ('SELECT','INSERT','UPDATE','REFERENCES') "
            "         AND has_any_column_privilege(:role, to_regclass(:table), p)))"
        ),
        {"role": role, "table": table},
    ).scalars())


# --- judging one promise ---------------------------------------------------------------------


@dataclass
class Live:
    """One read of a database for judging promises: the catalog, the roles, the promised indexes' definitions."""

    conn: Connection
    catalog: Catalog
    tables: frozenset[str]          # the tables the promises are about (a missing one is reported once per object)
    roles: frozenset[str]
    index_definitions: dict[str, str]

    @classmethod
    def read(cls, conn: Connection, catalog: Catalog, state: p.State) -> "Live":
        roles = frozenset(conn.execute(text("SELECT rolname::text FROM pg_roles")).scalars())
        definitions = live_index_definitions(conn, [index.qualified_name for index in state.of(p.Index)])
        return cls(conn, catalog, frozenset(t.name for t in state.tables), roles | {"PUBLIC"}, definitions)


def judge(live: Live, item) -> list[Unmet]:
    """The ways ``item`` is not kept here (empty: kept)."""
    table = item.name if isinstance(item, p.Table) else getattr(item, "table", None)
    if table is not None and table in live.tables and table not in live.catalog.tables:
        return [Unmet(item, f"table {table} is missing")]
    judge_kind = _JUDGES.get(type(item))
    return judge_kind(live, live.catalog, item) if judge_kind else []


def _table(live: Live, catalog: Catalog, item: p.Table) -> list[Unmet]:
    entry, found = catalog.tables[item.name], []
    if item.rls and not entry["rls_enabled"]:
        found.append(Unmet(item, f"{item.name} has row level security off: no policy applies",
                           f"ALTER TABLE {identifier(item.name)} ENABLE ROW LEVEL SECURITY;"))
    if item.realtime:
        if entry["replica_identity"] != "full":
            found.append(Unmet(item, f"{item.name} has REPLICA IDENTITY {entry['replica_identity'].upper()}; "
                                     "Realtime needs FULL",
                               f"ALTER TABLE {identifier(item.name)} REPLICA IDENTITY FULL;"))
        if REALTIME_PUBLICATION not in entry["publications"]:
            found.append(Unmet(item, f"{item.name} is not in publication {REALTIME_PUBLICATION}",
                               f"ALTER PUBLICATION {REALTIME_PUBLICATION} ADD TABLE {identifier(item.name)};"))
    return found


def _column(live: Live, catalog: Catalog, item: p.Column) -> list[Unmet]:
    entry = catalog.columns.get(item.qualified)
    if entry is None:
        return [Unmet(item, f"column {item.qualified} ({item.type}) is missing")]
    if entry["type"] != item.type:
        return [Unmet(item, f"column {item.qualified} is {entry['type']}; the revisions need {item.type}")]
    if item.not_null and entry["nullable"]:
        if set_null_conflict(catalog, item.table, item.name):
            return []  # nullable by design (README, "Where NOT NULL meets ON DELETE SET NULL")
        return [Unmet(item, f"{item.qualified} is nullable; the revisions make it NOT NULL")]
    if item.not_null is False and not entry["nullable"]:
        return [Unmet(item, f"{item.qualified} is NOT NULL; the revisions leave it nullable")]
    return []


def _unique(live: Live, catalog: Catalog, item: p.Unique) -> list[Unmet]:
    forms = unique_forms(catalog, item)
    if not forms:
        return [Unmet(item, f"{item.describe()} is missing")]
    name, form = forms[0]
    if form["valid"]:
        return []
    if not form["index_valid"]:
        return [Unmet(item, f"index {form['index']} on {item.table} is INVALID (an interrupted build); "
                            f"{form['kind']} {name} is not enforced",
                      f"REINDEX INDEX CONCURRENTLY {identifier('public.' + form['index'])};")]
    return [Unmet(item, f"{form['kind']} {name} on {item.table} is NOT VALID: existing rows were never checked")]


def _foreign_key(live: Live, catalog: Catalog, item: p.ForeignKey) -> list[Unmet]:
    forms = foreign_key_forms(catalog, item)
    if not forms:
        elsewhere = sorted(
            f"{key.rsplit('.', 1)[1]} → {c['referred']}" for key, c in catalog.constraints.items()
            if key.rsplit(".", 1)[0] == item.table and c["kind"] == "foreign key" and c["columns"] == [item.column]
        )
        found = f" (found {', '.join(elsewhere)})" if elsewhere else ""
        return [Unmet(item, f"{item.describe()} is missing{found}")]
    name, actual = forms[0]
    found = []
    if not actual["validated"]:
        found.append(Unmet(item, f"foreign key {name} on {item.table} is NOT VALID: existing rows were never checked",
                           f"ALTER TABLE {identifier(item.table)} VALIDATE CONSTRAINT {identifier(name)};"))
    if not actual["triggers_enabled"]:
        found.append(Unmet(item, f"foreign key {name} on {item.table} has its triggers disabled: it is not enforced"))
    return found


def _index(live: Live, catalog: Catalog, item: p.Index) -> list[Unmet]:
    actual = live.index_definitions.get(item.qualified_name)
    if actual is None:
        return [Unmet(item, f"index {item.name} on {item.table} ({item.columns}"
                            f"{' WHERE ' + item.where if item.where else ''}) is missing")]
    if actual != item.definition:
        return [Unmet(item, f"index {item.name} is {actual}; the revisions build {item.definition} "
                            "(an index of that name with another definition is drift: the revision that builds it "
                            "converges it)")]
    entry = catalog.indexes.get(f"{item.table}.{item.name}")
    if entry is not None and not entry["valid"]:
        return [Unmet(item, f"index {item.name} is INVALID (an interrupted build)",
                      f"REINDEX INDEX CONCURRENTLY {identifier(item.qualified_name)};")]
    return []


def _function(live: Live, catalog: Catalog, item: p.Function) -> list[Unmet]:
    entry = catalog.functions.get(item.signature)
    if entry is None:
        name = item.signature.split("(")[0]
        others = [key for key in catalog.functions if key.split("(")[0] == name]
        found = f" (found {', '.join(sorted(others))})" if others else ""
        return [Unmet(item, f"function {item.signature} is missing{found}")]
    wrong = []
    if entry["arguments"] != item.arguments:
        wrong.append(f"has arguments ({entry['arguments']}), expected ({item.arguments})")
    if entry["returns"] != item.result:
        wrong.append(f"returns {entry['returns']}; expected {item.result}")
    if item.security_definer is not None and entry["security_definer"] != item.security_definer:
        wrong.append("is SECURITY " + ("DEFINER" if entry["security_definer"] else "INVOKER") + ", expected "
                     + ("DEFINER" if item.security_definer else "INVOKER"))
    if item.search_path is not None and entry["search_path"] != item.search_path:
        wrong.append(f"has search_path {entry['search_path'] or 'not set'}, expected {item.search_path}")
    return [Unmet(item, f"function {item.signature} {'; '.join(wrong)}")] if wrong else []


def _trigger(live: Live, catalog: Catalog, item: p.Trigger) -> list[Unmet]:
    name = f"{item.table}.{item.name}"
    entry = catalog.triggers.get(name)
    if entry is None:
        return [Unmet(item, f"trigger {name} is missing", (item.definition + ";") if item.definition else None)]
    wrong = [f"{key} is {entry[key]!r}, expected {value!r}" for key, value in item.expected().items() if entry[key] != value]
    if wrong == ["enabled is " + repr(entry["enabled"]) + ", expected 'enabled'"]:
        return [Unmet(item, f"trigger {name}: {wrong[0]}",
                      f"ALTER TABLE {identifier(item.table)} ENABLE TRIGGER {identifier(item.name)};")]
    return [Unmet(item, f"trigger {name}: {'; '.join(wrong)}")] if wrong else []


def _policies(live: Live, catalog: Catalog, item: p.Policies) -> list[Unmet]:
    present = {key.rsplit(".", 1)[1] for key in catalog.policies if key.rsplit(".", 1)[0] == item.table}
    missing, extra = sorted(set(item.names) - present), sorted(present - set(item.names))
    parts = [*(["missing " + ", ".join(missing)] if missing else []), *(["extra " + ", ".join(extra)] if extra else [])]
    return [Unmet(item, f"policies of {item.table}: {'; '.join(parts)}")] if parts else []


def _privilege_difference(item: p.TablePrivileges, subject: str, held: set[str], wanted: set[str], *,
                          extra: str, missing: str, statement) -> list[Unmet]:
    """One finding where ``held`` is not ``wanted``: what is extra and what is missing (``extra``/``missing``
    format the names), and the REVOKE and GRANT that mend it (``statement(verb, names, preposition)``)."""
    if held == wanted:
        return []
    too_many, too_few = sorted(held - wanted), sorted(wanted - held)
    problem = "; ".join(filter(None, [extra.format(", ".join(too_many)) if too_many else "",
                                      missing.format(", ".join(too_few)) if too_few else ""]))
    fix = "; ".join(filter(None, [statement("REVOKE", too_many, "FROM") if too_many else "",
                                  statement("GRANT", too_few, "TO") if too_few else ""]))
    return [Unmet(item, f"{subject}: {problem}", fix)]


def _table_privileges(live: Live, catalog: Catalog, item: p.TablePrivileges) -> list[Unmet]:
    if item.role != "PUBLIC" and item.role not in live.roles:
        return []
    table = identifier(item.table)
    found = _privilege_difference(
        item, f"{item.role} on {item.table}",
        granted(catalog, f"table {item.table}", item.role) - {"MAINTAIN"}, item.table_level(),
        extra="holds {} the revisions do not grant", missing="lacks {}",
        statement=lambda verb, names, to: f"{verb} {', '.join(names)} ON TABLE {table} {to} {item.role};")
    present = {key.rsplit(".", 1)[1] for key in catalog.columns if key.rsplit(".", 1)[0] == item.table}
    wanted_columns = {k: v & present for k, v in item.column_level().items()}
    held_columns = column_grants(catalog, item.table, item.role)
    for privilege in sorted(wanted_columns.keys() | held_columns.keys()):
        found += _privilege_difference(
            item, f"{item.role}'s {privilege} on columns of {item.table}",
            held_columns.get(privilege, set()), wanted_columns.get(privilege, set()),
            extra="granted on {}, which the revisions do not grant", missing="missing on {}",
            statement=lambda verb, names, to, privilege=privilege: (
                f"{verb} {privilege} ({', '.join(map(identifier, names))}) ON TABLE {table} {to} {item.role};"))
    if not item.privileges and item.role != "PUBLIC" and not found:
        # Promised nothing: nothing through PUBLIC or another role either.
        through = _held_through_others(live.conn, item.table, item.role)
        if through:
            found.append(Unmet(item, f"{item.role} holds {', '.join(through)} on {item.table} through PUBLIC, a "
                                     "column grant or a role it inherits; the revisions leave it nothing"))
    return found


def _execute(live: Live, catalog: Catalog, item: p.Execute) -> list[Unmet]:
    if item.signature not in catalog.functions or (item.role != "PUBLIC" and item.role not in live.roles):
        return []
    held = "EXECUTE" in granted(catalog, f"function {item.signature}", item.role)
    if held == item.allowed:
        return []
    if item.allowed:
        return [Unmet(item, f"{item.role} may not execute {item.signature}; the revisions grant it",
                      f"GRANT EXECUTE ON FUNCTION {item.signature} TO {item.role};")]
    who = "every role may, anon included" if item.role == "PUBLIC" else "the revisions revoke it"
    return [Unmet(item, f"{item.role} may execute {item.signature}: {who}",
                  f"REVOKE EXECUTE ON FUNCTION {item.signature} FROM {item.role};")]


_JUDGES = {
    p.Table: _table, p.Column: _column, p.Unique: _unique, p.ForeignKey: _foreign_key, p.Index: _index,
    p.Function: _function, p.Trigger: _trigger, p.Policies: _policies, p.TablePrivileges: _table_privileges,
    p.Execute: _execute,
}


def unmet(conn: Connection, catalog: Catalog, state: p.State, kinds: tuple[type, ...] | None = None) -> list[Unmet]:
    """Every promise of ``state`` (of ``kinds``, when given) this database does not keep, in declaration order."""
    live = Live.read(conn, catalog, state)
    found: list[Unmet] = []
    for item in state.items.values():
        if kinds is None or isinstance(item, kinds):
            found += judge(live, item)
    return found
