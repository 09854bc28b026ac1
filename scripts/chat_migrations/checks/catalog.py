"""What a database holds of the messaging schema, read from its catalogs only.

``read_catalog`` returns one picture of the messaging objects that
scripts/validate compares with the head schema, scripts/preflight reads sizes
and validity from, and scripts/drift compares between two databases. It reads
no table data, so it takes the same time on ten rows as on ten million.

SQLAlchemy's inspector reads the tables' columns, constraints and indexes;
catalog SQL the rest (validity, functions, triggers, replica identity,
publications, RLS, policies, grants). Every value is normalized so that two
databases with the same schema give equal pictures: no OIDs, lists sorted,
whitespace in bodies and expressions collapsed, and the session's search_path
fixed (``pg_catalog`` only, see checks_cli) so names come out schema-qualified
the same way everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from chat_migrations.runtime import bookkeeping
from chat_migrations.schema import history, tables as chat_tables

SCHEMA = "public"
TABLES = chat_tables.NAMES

# A messaging function is one whose body names a messaging table, or the
# function of a trigger on one (word boundaries: \m and \M in PostgreSQL).
_TOUCHES_MESSAGING = r"\m(" + "|".join(TABLES) + r")\M"

_REPLICA_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}
_VOLATILITY = {"i": "immutable", "s": "stable", "v": "volatile"}
_TRIGGER_ENABLED = {"O": "enabled", "D": "disabled", "R": "replica only", "A": "always"}


def qualified(table: str) -> str:
    return f"{SCHEMA}.{table}"


def normalize_whitespace(value: str | None) -> str | None:
    return None if value is None else " ".join(value.split())


def body_digest(body: str | None) -> str | None:
    """A short digest of a function body that ignores differences in whitespace."""
    if body is None:
        return None
    return hashlib.sha256(normalize_whitespace(body).encode()).hexdigest()[:12]


@dataclass
class Catalog:
    """The messaging objects of one database, keyed by schema-qualified names.

    tables       public.<table>: owner, rls_enabled, rls_forced, replica_identity,
                 publications, estimated_rows, total_bytes
    columns      public.<table>.<column>: type, nullable, default (+ identity, generated)
    constraints  public.<table>.<name>: kind, columns, definition, validated (+ index,
                 index_valid for unique/primary key; referred, referred_columns,
                 on_delete, triggers_enabled for foreign keys)
    indexes      public.<table>.<name>: table, keys, unique, definition, valid, constraint
    functions    public.<name>(<argument types>): name, argument_types, arguments,
                 returns, language, volatility, security_definer, search_path,
                 body_digest, owner, touches_messaging
    triggers     public.<table>.<name>: table, definition, timing, events, level,
                 function, enabled
    policies     public.<table>.<name>: command, permissive, roles, using, with_check
    grants       "<table, column or function> to <role>": privileges ("column
                 public.<table>.<column> to <role>" for a column's own grants)
    """

    server_version: str
    server_version_num: int
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    constraints: dict[str, dict[str, Any]] = field(default_factory=dict)
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def indexes_of(self, table: str) -> list[dict[str, Any]]:
        return [index for index in self.indexes.values() if index["table"] == qualified(table)]

    def leading_index(self, table: str, column: str) -> str | None:
        """A valid index whose first key is ``column``: ``column IS NULL`` is then a lookup, not a scan."""
        for name, index in sorted(self.indexes.items()):
            if index["table"] == qualified(table) and index["valid"] and index["keys"][:1] == [column]:
                return name.rsplit(".", 1)[1]
        return None


def read_catalog(conn: Connection) -> Catalog:
    version, version_num = conn.execute(
        text("SELECT current_setting('server_version'), current_setting('server_version_num')::int")
    ).one()
    catalog = Catalog(server_version=version, server_version_num=version_num)
    present = [
        name for name in TABLES
        if conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": qualified(name)}).scalar()
    ]
    catalog.tables = _tables(conn, present)
    if present:
        _read_with_inspector(conn, present, catalog)
    catalog.triggers = _triggers(conn)
    catalog.functions = _functions(conn)
    catalog.policies = _policies(conn)
    catalog.grants = _grants(conn)
    return catalog


# --- revisions ---------------------------------------------------------------------

VERSION_TABLE = bookkeeping.VERSION_TABLE
current_revision = bookkeeping.current_revision
# The environment's chain, as ``alembic -n <environment>`` loads it (one place: chat_migrations.schema.history).
script_directory = history.script_directory
head_revision = history.head_revision
revisions = history.revisions


# --- tables, columns, constraints, indexes -----------------------------------


def _tables(conn: Connection, present: list[str]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        text(
            """
            SELECT c.relname, pg_get_userbyid(c.relowner) AS owner, c.relrowsecurity, c.relforcerowsecurity,
                   c.relreplident,
                   (SELECT i.indexrelid::regclass::text FROM pg_index i
                     WHERE i.indrelid = c.oid AND i.indisreplident) AS identity_index,
                   array(SELECT p.pubname::text FROM pg_publication_tables p
                          WHERE p.schemaname = n.nspname AND p.tablename = c.relname ORDER BY 1) AS publications,
                   -- reltuples is -1 until the table is first vacuumed or analyzed
                   CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS estimated_rows,
                   pg_total_relation_size(c.oid) AS total_bytes
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = :schema AND c.relname = ANY(:tables)
            """
        ),
        {"schema": SCHEMA, "tables": present},
    ).mappings()
    tables = {}
    for row in rows:
        identity = _REPLICA_IDENTITY[row["relreplident"]]
        if identity == "index":
            identity = f"index {row['identity_index']}"
        tables[qualified(row["relname"])] = {
            "owner": row["owner"],
            "rls_enabled": row["relrowsecurity"],
            "rls_forced": row["relforcerowsecurity"],
            "replica_identity": identity,
            "publications": list(row["publications"]),
            "estimated_rows": row["estimated_rows"],
            "total_bytes": row["total_bytes"],
        }
    return tables


def _read_with_inspector(conn: Connection, present: list[str], catalog: Catalog) -> None:
    inspector = inspect(conn)
    multi = dict(schema=SCHEMA, filter_names=present)
    extras = _constraint_extras(conn, present)
    for (_, table), columns in inspector.get_multi_columns(**multi).items():
        for column in columns:
            catalog.columns[f"{qualified(table)}.{column['name']}"] = _column(conn, column)
    for (_, table), pk in inspector.get_multi_pk_constraint(**multi).items():
        if pk.get("name"):
            _add_constraint(catalog, table, pk["name"], "primary key", pk["constrained_columns"],
                            f"PRIMARY KEY ({', '.join(pk['constrained_columns'])})", extras)
    for (_, table), uniques in inspector.get_multi_unique_constraints(**multi).items():
        for unique in uniques:
            options = unique.get("dialect_options", {})
            nulls = " NULLS NOT DISTINCT" if options.get("postgresql_nulls_not_distinct") else ""
            _add_constraint(catalog, table, unique["name"], "unique", unique["column_names"],
                            f"UNIQUE{nulls} ({', '.join(unique['column_names'])})", extras)
    for (_, table), foreign_keys in inspector.get_multi_foreign_keys(**multi).items():
        for fk in foreign_keys:
            _add_constraint(catalog, table, fk["name"], "foreign key", fk["constrained_columns"],
                            _foreign_key_definition(fk), extras)
            entry = catalog.constraints[f"{qualified(table)}.{fk['name']}"]
            entry["referred"] = f"{fk['referred_schema'] or SCHEMA}.{fk['referred_table']}"
            entry["referred_columns"] = list(fk["referred_columns"])
            entry["on_delete"] = (fk.get("options") or {}).get("ondelete")
    for (_, table), checks in inspector.get_multi_check_constraints(**multi).items():
        for check in checks:
            _add_constraint(catalog, table, check["name"], "check", [],
                            f"CHECK ({normalize_whitespace(check['sqltext'])})", extras)
    for (_, table), indexes in inspector.get_multi_indexes(**multi).items():
        for index in indexes:
            catalog.indexes[f"{qualified(table)}.{index['name']}"] = _index(table, index)
    # The inspector leaves out primary-key indexes; they are indexes all the same.
    for key, constraint in catalog.constraints.items():
        if constraint["kind"] == "primary key":
            table = key.rsplit(".", 1)[0]
            catalog.indexes[f"{table}.{constraint['index']}"] = {
                "table": table, "keys": list(constraint["columns"]), "unique": True,
                "definition": f"UNIQUE btree ({', '.join(constraint['columns'])})",
                "valid": constraint["index_valid"], "constraint": key.rsplit(".", 1)[1],
            }


def _column(conn: Connection, column: dict[str, Any]) -> dict[str, Any]:
    try:
        type_name = column["type"].compile(dialect=conn.dialect).lower()
    except Exception:  # a type SQLAlchemy cannot render (an extension's): its repr still compares
        type_name = repr(column["type"])
    entry = {"type": type_name, "nullable": column["nullable"], "default": column.get("default")}
    if column.get("identity"):
        entry["identity"] = "always" if column["identity"].get("always") else "by default"
    if column.get("computed"):
        entry["generated"] = normalize_whitespace(column["computed"]["sqltext"])
    return entry


def _foreign_key_definition(fk: dict[str, Any]) -> str:
    options = fk.get("options") or {}
    clauses = [
        f"FOREIGN KEY ({', '.join(fk['constrained_columns'])}) REFERENCES "
        f"{fk['referred_schema'] or SCHEMA}.{fk['referred_table']}({', '.join(fk['referred_columns'])})"
    ]
    if options.get("match"):
        clauses.append(f"MATCH {options['match']}")
    for action in ("onupdate", "ondelete"):
        if options.get(action):
            clauses.append(f"ON {action[2:].upper()} {options[action]}")
    if options.get("deferrable"):
        clauses.append("DEFERRABLE")
        if options.get("initially"):
            clauses.append(f"INITIALLY {options['initially']}")
    return " ".join(clauses)


def _constraint_extras(conn: Connection, present: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the inspector does not say: validated, the backing index and whether FK triggers fire."""
    rows = conn.execute(
        text(
            """
            SELECT c.relname AS table_name, con.conname, con.convalidated,
                   nullif(con.conindid, 0)::regclass::text AS index_name,
                   i.indisvalid AND i.indisready AND i.indislive AS index_valid,
                   NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgconstraint = con.oid AND t.tgenabled = 'D')
                       AS triggers_enabled
              FROM pg_constraint con
              JOIN pg_class c ON c.oid = con.conrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_index i ON i.indexrelid = con.conindid
             WHERE n.nspname = :schema AND c.relname = ANY(:tables)
            """
        ),
        {"schema": SCHEMA, "tables": present},
    ).mappings()
    return {(row["table_name"], row["conname"]): dict(row) for row in rows}


def _add_constraint(catalog, table, name, kind, columns, definition, extras) -> None:
    extra = extras.get((table, name), {})
    entry = {
        "kind": kind,
        "columns": list(columns),
        "definition": definition,
        "validated": bool(extra.get("convalidated", True)),
    }
    if kind in ("primary key", "unique"):
        entry["index"] = (extra.get("index_name") or "").removeprefix(f"{SCHEMA}.")
        entry["index_valid"] = bool(extra.get("index_valid"))
    if kind == "foreign key":
        entry["triggers_enabled"] = bool(extra.get("triggers_enabled", True))
    catalog.constraints[f"{qualified(table)}.{name}"] = entry


def _index(table: str, index: dict[str, Any]) -> dict[str, Any]:
    options = index.get("dialect_options", {})
    expressions = index.get("expressions") or index["column_names"]
    sorting = index.get("column_sorting", {})
    opclasses = options.get("postgresql_ops", {})
    keys = []
    for element in expressions:
        key = element
        if element in opclasses:
            key += f" {opclasses[element]}"
        for flag in sorting.get(element, ()):
            key += " " + flag.upper().replace("_", " ")
        keys.append(key)
    definition = f"{'UNIQUE ' if index['unique'] else ''}{options.get('postgresql_using', 'btree')} ({', '.join(keys)})"
    if options.get("postgresql_include"):
        definition += f" INCLUDE ({', '.join(options['postgresql_include'])})"
    if options.get("postgresql_nulls_not_distinct"):
        definition += " NULLS NOT DISTINCT"
    if options.get("postgresql_with"):
        definition += " WITH (" + ", ".join(f"{k}={v}" for k, v in sorted(options["postgresql_with"].items())) + ")"
    if options.get("postgresql_where"):
        definition += f" WHERE {normalize_whitespace(options['postgresql_where'])}"
    return {
        "table": qualified(table),
        "keys": keys,
        "unique": index["unique"],
        "definition": definition,
        "valid": not options.get("postgresql_invalid", False),
        "constraint": index.get("duplicates_constraint"),
    }


# --- functions, triggers, policies, grants ------------------------------------


def _functions(conn: Connection) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        text(
            """
            SELECT p.proname,
                   coalesce((SELECT string_agg(format_type(t.type, NULL), ', ' ORDER BY t.position)
                               FROM unnest(p.proargtypes) WITH ORDINALITY AS t(type, position)), '')
                       AS argument_types,
                   pg_get_function_arguments(p.oid) AS arguments,
                   pg_get_function_result(p.oid) AS returns,
                   l.lanname AS language, p.provolatile, p.prosecdef,
                   (SELECT substr(setting, length('search_path=') + 1) FROM unnest(p.proconfig) AS setting
                     WHERE setting LIKE 'search_path=%') AS search_path,
                   p.prosrc, pg_get_userbyid(p.proowner) AS owner,
                   p.prosrc ~ :touches OR EXISTS (
                       SELECT FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                        WHERE t.tgfoid = p.oid AND c.relnamespace = p.pronamespace AND c.relname = ANY(:tables)
                   ) AS touches_messaging
              FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
              JOIN pg_language l ON l.oid = p.prolang
             WHERE n.nspname = :schema AND p.prokind IN ('f', 'p')
            """
        ),
        {"schema": SCHEMA, "tables": list(TABLES), "touches": _TOUCHES_MESSAGING},
    ).mappings()
    functions = {}
    for row in rows:
        functions[f"{SCHEMA}.{row['proname']}({row['argument_types']})"] = {
            "name": row["proname"],
            "argument_types": row["argument_types"],
            "arguments": row["arguments"],
            "returns": row["returns"],
            "language": row["language"],
            "volatility": _VOLATILITY[row["provolatile"]],
            "security_definer": row["prosecdef"],
            "search_path": row["search_path"],
            "body_digest": body_digest(row["prosrc"]),
            "owner": row["owner"],
            "touches_messaging": row["touches_messaging"],
        }
    return functions


def _triggers(conn: Connection) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        text(
            """
            SELECT c.relname AS table_name, t.tgname, pg_get_triggerdef(t.oid) AS definition, t.tgtype,
                   t.tgenabled, fn.pronamespace::regnamespace::text || '.' || fn.proname AS function
              FROM pg_trigger t
              JOIN pg_class c ON c.oid = t.tgrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_proc fn ON fn.oid = t.tgfoid
             WHERE n.nspname = :schema AND c.relname = ANY(:tables) AND NOT t.tgisinternal
            """
        ),
        {"schema": SCHEMA, "tables": list(TABLES)},
    ).mappings()
    triggers = {}
    for row in rows:
        tgtype = row["tgtype"]
        # pg_trigger.tgtype bits (catalog/pg_trigger.h): 1 row, 2 before, 64 instead; 4/8/16/32 events.
        timing = "INSTEAD OF" if tgtype & 64 else ("BEFORE" if tgtype & 2 else "AFTER")
        events = [event for bit, event in ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE")) if tgtype & bit]
        triggers[f"{qualified(row['table_name'])}.{row['tgname']}"] = {
            "table": qualified(row["table_name"]),
            "definition": normalize_whitespace(row["definition"]),
            "timing": timing,
            "events": events,
            "level": "ROW" if tgtype & 1 else "STATEMENT",
            "function": row["function"],
            "enabled": _TRIGGER_ENABLED[row["tgenabled"]],
        }
    return triggers


def _policies(conn: Connection) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        text(
            """
            SELECT tablename, policyname, permissive, roles::text[] AS roles, cmd, qual, with_check
              FROM pg_policies WHERE schemaname = :schema AND tablename = ANY(:tables)
            """
        ),
        {"schema": SCHEMA, "tables": list(TABLES)},
    ).mappings()
    return {
        f"{qualified(row['tablename'])}.{row['policyname']}": {
            "command": row["cmd"],
            "permissive": row["permissive"],
            "roles": sorted(row["roles"]),
            "using": normalize_whitespace(row["qual"]),
            "with_check": normalize_whitespace(row["with_check"]),
        }
        for row in rows
    }


def _grants(conn: Connection) -> dict[str, dict[str, Any]]:
    """Privileges per object and grantee; a NULL ACL is read as the default one it stands for."""
    rows = conn.execute(
        text(
            """
            WITH objects AS (
                SELECT 'table ' || n.nspname || '.' || c.relname AS object,
                       coalesce(c.relacl, acldefault('r', c.relowner)) AS acl
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = :schema AND c.relname = ANY(:tables)
                UNION ALL
                -- Column privileges: a column's ACL is NULL unless something was granted on it.
                SELECT 'column ' || n.nspname || '.' || c.relname || '.' || a.attname, a.attacl
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  JOIN pg_attribute a ON a.attrelid = c.oid
                 WHERE n.nspname = :schema AND c.relname = ANY(:tables)
                   AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
                UNION ALL
                SELECT 'function ' || n.nspname || '.' || p.proname || '('
                           || coalesce((SELECT string_agg(format_type(t.type, NULL), ', ' ORDER BY t.position)
                                          FROM unnest(p.proargtypes) WITH ORDINALITY AS t(type, position)), '')
                           || ')',
                       coalesce(p.proacl, acldefault('f', p.proowner))
                  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = :schema AND p.prokind IN ('f', 'p')
            )
            SELECT o.object,
                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
                   -- DISTINCT: the same privilege granted by two grantors is one privilege here.
                   array_agg(DISTINCT a.privilege_type || CASE WHEN a.is_grantable THEN ' (grantable)' ELSE '' END)
                       AS privileges
              FROM objects o, aclexplode(o.acl) AS a
             GROUP BY 1, 2
            """
        ),
        {"schema": SCHEMA, "tables": list(TABLES)},
    ).mappings()
    return {f"{row['object']} to {row['grantee']}": {"privileges": ", ".join(sorted(row["privileges"]))} for row in rows}
