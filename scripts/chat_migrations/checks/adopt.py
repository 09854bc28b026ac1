"""scripts/adopt -n ENV [--json]: may this live database be stamped at its environment's baseline?

The live projects were not created by Alembic. ``alembic -n ENV stamp
000_ENV_baseline`` records that the database *is* that baseline without
looking; every revision after it then assumes so. This command looks first,
read-only: it reads the live catalog (chat_migrations.checks.catalog) and compares
it, section by section, with the catalog of a database built from the
baseline (committed as ``baselines/<env>.json``), then judges every
difference by what the environment's revisions declare and do:

* blocking: a revision would fail on it, or the converged schema would not
  work (no seqs, no unique keys); each comes with its fix;
* handled: the revisions take care of it (they redefine, converge or restore
  it), so stamping is safe;
* harmless: nothing the revisions do depends on it.

Exit 0 when nothing blocks (or the database is already adopted), 1 when
something does, 2 when it could not run. ``blocking()`` is what env.py asks
before a stamp at the baseline.

``python -m chat_migrations.harness.baselines`` rebuilds the JSON files on a
throwaway Supabase-like server (maintainers only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import text
from sqlalchemy.engine import Connection

from chat_migrations.frozen import baseline, converged
from chat_migrations.checks import checks_cli, drift, guarantees
from chat_migrations.runtime import promises as p
from chat_migrations.runtime import requirements
from chat_migrations.schema import history as chain
from chat_migrations.checks.catalog import Catalog, current_revision, platform_defaults, read_catalog, script_directory
from chat_migrations.checks.checks_cli import Target
from chat_migrations.errors import IdentityUnproven
from chat_migrations.runtime.sqlnames import identifier

BASELINES_DIR = Path(__file__).resolve().parents[1] / "frozen" / "baselines"
HARMLESS, HANDLED, BLOCKING, INFORMATION = "harmless", "handled", "blocking", "information"
CLASSES = (HARMLESS, HANDLED, BLOCKING, INFORMATION)

SECTIONS = ("tables", "columns", "constraints", "indexes", "functions", "triggers", "policies", "grants")
# What is compared per section: scripts/drift's attributes (its three per-table
# sections are one section here), so adopt and drift agree on "the same schema".
_DRIFT = {section.name: section for section in drift.SECTIONS}
_ATTRIBUTES = {
    "tables": sum((_DRIFT[name].attributes for name in ("rls", "replica_identity", "publications")), ()),
    **{name: _DRIFT[name].attributes for name in SECTIONS if name != "tables"},
}
# Volatile: they differ between two databases with the same schema.
_VOLATILE_TABLE_FIELDS = ("estimated_rows", "total_bytes")
# PostgreSQL 17 added the MAINTAIN table privilege, so a table's "ALL" (the
# owner's default ACL, Supabase's default privileges) holds one more privilege
# there than on 15 and 16. It is left out of every picture, so the committed
# baselines (built on 15) compare equal on any server version.
_VERSION_DEPENDENT_PRIVILEGES = ("MAINTAIN", "MAINTAIN (grantable)")



# --- the pictures ----------------------------------------------------------------------


def picture(catalog: Catalog) -> dict[str, Any]:
    """The catalog without what differs between equal schemas (server version, sizes, row estimates)."""
    data = dataclasses.asdict(catalog)
    for key in ("server_version", "server_version_num"):
        data.pop(key)
    for table in data["tables"].values():
        for key in _VOLATILE_TABLE_FIELDS:
            table.pop(key, None)
    grants = {}
    for key, grant in data["grants"].items():
        kept = [p for p in grant["privileges"].split(", ") if p not in _VERSION_DEPENDENT_PRIVILEGES]
        if kept:
            grants[key] = {"privileges": ", ".join(kept)}
    data["grants"] = grants
    return data


def serialize(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, indent=1) + "\n"


def baseline_file(environment: str) -> Path:
    return BASELINES_DIR / f"{environment}.json"


def expected_picture(environment: str) -> dict[str, Any]:
    path = baseline_file(environment)
    if not path.exists():
        raise checks_cli.CannotRun(
            f"no baseline catalog for {environment} ({path}): python -m chat_migrations.harness.baselines"
        )
    return json.loads(path.read_text())


def _as_catalog(data: dict[str, Any]) -> Catalog:
    return Catalog(server_version="", server_version_num=0, **{section: data[section] for section in SECTIONS})


@contextmanager
def catalog_search_path(conn: Connection) -> Iterator[None]:
    """read_catalog's expressions are schema-qualified only with search_path = pg_catalog.

    checks_cli sets it for its sessions; a caller's own connection (env.py's)
    gets it for this transaction only, then back as it was. On an error the
    caller rolls back, which undoes the local setting anyway.
    """
    previous = conn.execute(text("SELECT current_setting('search_path')")).scalar()
    conn.execute(text("SELECT set_config('search_path', 'pg_catalog', true)"))
    yield
    conn.execute(text("SELECT set_config('search_path', :previous, true)"), {"previous": previous})



# --- what the revisions declare ----------------------------------------------------------


@dataclass(frozen=True)
class History:
    """What an environment's revisions declare: what each needs of the live database (``requires``,
    ``affected_tables``) and what each promises (``promises``, folded)."""

    environment: str
    revisions: tuple[str, ...]
    owned: dict[str, list[str]]                       # table -> revisions that alter it (as its owner)
    required_columns: dict[str, list[str]]            # "public.t.c" -> revisions that require it
    in_place: dict[str, list[tuple[str, str, str]]]   # signature -> (revision, arguments, result)
    baseline: p.State                                 # what the baseline promises
    head: p.State                                     # what the chain promises at head (and who declares it)

    def after_baseline(self, key: tuple) -> list[str]:
        """The revisions after the baseline that declare the object ``key`` names (they make, build or set it)."""
        return self.head.by(key, after=self.revisions[0])


def history(environment: str) -> History:
    scripts = chain.chain(environment)
    owned: dict[str, list[str]] = {}
    required_columns: dict[str, list[str]] = {}
    in_place: dict[str, list[tuple[str, str, str]]] = {}
    # What env.py checks before an upgrade from the baseline (the baseline itself
    # needs nothing): less a function an earlier revision drops and creates.
    for revision, needs in requirements.pending_checks(scripts[1:]):
        for table in needs.owned_tables:
            owned.setdefault(table, []).append(revision)
        for table, columns in needs.columns.items():
            for column in columns:
                required_columns.setdefault(f"{table}.{column}", []).append(revision)
        for signature, (arguments, result) in needs.functions.items():
            in_place.setdefault(signature, []).append((revision, arguments, result))
    return History(
        environment, tuple(s.revision for s in scripts), owned, required_columns, in_place,
        chain.promised(environment, scripts[0].revision), chain.promised(environment),
    )


# --- comparing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """One object that differs from the baseline, before it is judged."""

    section: str
    object: str                  # the baseline's name, or the live one for an extra object
    kind: str                    # missing | extra | different
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None
    changed: tuple[str, ...] = ()
    live_name: str | None = None  # matched under another name (constraints, indexes)

    @property
    def table(self) -> str:
        """public.<table> of a per-table object (columns ... policies), of a table itself, or of a grant's table."""
        if self.section == "tables":
            return self.object
        if self.section == "grants":
            target = self.object.rsplit(" to ", 1)[0]
            if target.startswith("column "):
                return target.removeprefix("column ").rsplit(".", 1)[0]
            return target.removeprefix("table ")
        return self.object.rsplit(".", 1)[0]

    @property
    def entry(self) -> dict[str, Any]:
        return self.actual if self.actual is not None else self.expected


@dataclass(frozen=True)
class Difference:
    section: str
    object: str
    kind: str
    detail: str
    classification: str
    why: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _scoped(section: str, data: dict[str, Any], functions: set[str]) -> dict[str, dict[str, Any]]:
    """The chat objects of a section: functions and their grants only where they concern the chat tables."""
    entries = data[section]
    if section == "functions":
        return {key: value for key, value in entries.items() if key in functions}
    if section == "grants":
        return {
            key: value for key, value in entries.items()
            if key.startswith(("table ", "column ")) or key.removeprefix("function ").rsplit(" to ", 1)[0] in functions
        }
    return entries


def _table_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


# How unmatched constraints and indexes pair up: the same definition under
# another name (a rename), else the same keys under another name and definition.
# A constraint's index pairs only with another constraint's (a plain unique
# index is not the constraint, however alike).
_SAME_DEFINITION = {
    "constraints": lambda e: (e["kind"], e["definition"]),
    "indexes": lambda e: e["definition"],
}
_SAME_KEYS = {
    "constraints": lambda e: (e["kind"], tuple(e["columns"])),
    "indexes": lambda e: tuple(e["keys"]),
}


def _pairs(section: str, expected: dict, live: dict) -> dict[str, str]:
    """{baseline name: live name} for the unmatched objects that are the same one under another name."""
    unmatched_live = sorted(live.keys() - expected.keys())
    pairs: dict[str, str] = {}
    for similar in (_SAME_DEFINITION[section], _SAME_KEYS[section]):
        for key in sorted(expected.keys() - live.keys() - pairs.keys()):
            match = next(
                (other for other in unmatched_live
                 if _table_of(other) == _table_of(key) and similar(live[other]) == similar(expected[key])
                 and bool(live[other].get("constraint")) == bool(expected[key].get("constraint"))),
                None,
            )
            if match is not None:
                pairs[key] = match
                unmatched_live.remove(match)
    return pairs


def _changed(section: str, expected: dict[str, Any], actual: dict[str, Any]) -> tuple[str, ...]:
    return tuple(attr for attr in _ATTRIBUTES[section] if expected.get(attr) != actual.get(attr))


def deltas(expected: dict[str, Any], live: dict[str, Any]) -> list[Delta]:
    """Every object that differs, section by section; objects of a missing table count once, as the table."""
    functions = drift.messaging_functions(_as_catalog(expected), _as_catalog(live))
    missing_tables = set(expected["tables"]) - set(live["tables"])
    found: list[Delta] = []
    for section in SECTIONS:
        want, have = _scoped(section, expected, functions), _scoped(section, live, functions)
        pairs = _pairs(section, want, have) if section in _SAME_DEFINITION else {}
        for key in sorted(want.keys() | (have.keys() - set(pairs.values()))):
            if key in pairs:
                live_key = pairs[key]
                changed = _changed(section, want[key], have[live_key])
                found.append(Delta(section, key, "different", want[key], have[live_key], changed, live_key.rsplit(".", 1)[1]))
            elif key not in have:
                found.append(Delta(section, key, "missing", want[key], None))
            elif key not in want:
                found.append(Delta(section, key, "extra", None, have[key]))
            elif changed := _changed(section, want[key], have[key]):
                found.append(Delta(section, key, "different", want[key], have[key], changed))
    return [
        d for d in found
        if not (d.section != "tables" and d.table in missing_tables)
        # A constraint's index is judged with its constraint, unless both sides have it by name.
        and not (d.section == "indexes" and d.entry["constraint"] and (d.kind != "different" or d.live_name))
    ]


# --- judging -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    history: History
    expected: dict[str, Any]
    live: dict[str, Any]
    user: str
    acts_as: frozenset[str]  # roles the connecting role is a member of: it may alter what they own

    @cached_property
    def live_catalog(self) -> Catalog:
        return _as_catalog(self.live)


Facts = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """A difference the rule ``applies`` to (returning the facts its texts name) gets this class, why and fix."""

    classification: str
    applies: Callable[[Delta, Context], Facts | None]
    why: str
    fix: str | Callable[[Delta, Context, Facts], str] | None = None


def _names(revisions) -> str:
    return ", ".join(revisions)


def _made_not_null_by(ctx: Context, column: str) -> list[str]:
    """The revisions after the baseline that promise ``column`` (public.t.c) NOT NULL."""
    promised = ctx.history.head.get(("column", column))
    if not (isinstance(promised, p.Column) and promised.not_null):
        return []
    return ctx.history.after_baseline(("column", column))


# -- blocking


def _table_missing(d: Delta, ctx: Context) -> Facts | None:
    return {} if d.section == "tables" and d.kind == "missing" else None


def _owner_out_of_reach(d: Delta, ctx: Context) -> Facts | None:
    """Altering a table (affected_tables) or replacing a function takes its owner's rights (requirements)."""
    revisions = (ctx.history.owned.get(d.object) if d.section == "tables"
                 else ctx.history.after_baseline(("function", d.object)))
    if revisions and d.actual is not None and "owner" in d.changed and d.actual["owner"] not in ctx.acts_as:
        return {"owner": d.actual["owner"], "what": "TABLE" if d.section == "tables" else "FUNCTION",
                "revisions": _names(revisions)}
    return None


def _required_column(d: Delta, ctx: Context) -> Facts | None:
    """A column a revision requires, or the baseline promises, missing or of another type: nothing handles it."""
    if d.section != "columns" or not (d.kind == "missing" or "type" in d.changed):
        return None
    revisions = ctx.history.required_columns.get(d.object, [])
    promised = ctx.history.baseline.get(("column", d.object))
    if not revisions and not isinstance(promised, p.Column):
        return None
    by = f"required by {_names(revisions)}" if revisions else f"promised by {ctx.history.revisions[0]}"
    return {"by": by, "type": d.expected["type"]}


def _required_signature(d: Delta, ctx: Context) -> Facts | None:
    if d.section != "functions" or d.actual is None:
        return None
    unmet = [
        (revision, arguments, result) for revision, arguments, result in ctx.history.in_place.get(d.object, ())
        if (d.actual["arguments"], d.actual["returns"]) != (arguments, result)
    ]
    if not unmet:
        return None
    _, arguments, result = unmet[0]
    name = d.object.split("(")[0].rsplit(".", 1)[1]
    return {"revisions": _names(r for r, _, _ in unmet), "arguments": arguments, "result": result,
            "function_sql": _functionidentifier(d.object), "renamed": identifier(f"{name}_before_adoption")}


def _promised_trigger_of(ctx: Context, function: str) -> p.Trigger | None:
    """The baseline's promised trigger that runs ``function`` (a signature), if any."""
    name = function.split("(")[0]
    return next((t for t in ctx.history.baseline.of(p.Trigger) if t.function == name), None)


def _trigger_gone_effect(trigger: p.Trigger, ctx: Context) -> str:
    later = ctx.history.after_baseline(("function", f"{trigger.function}()"))
    replaced = f", and {_names(later)} only replace{'s' if len(later) == 1 else ''} the function's body" if later else ""
    return (f"{trigger.because or 'what it does would stop'}: the {trigger.timing} {' OR '.join(trigger.events)} "
            f"trigger {trigger.name} running {trigger.function}() does it{replaced}")


def _seq_assignment_gone(d: Delta, ctx: Context) -> Facts | None:
    """A trigger the baseline promises (the seq trigger), or its function, gone or changed."""
    if d.section == "functions" and d.kind == "missing" and (trigger := _promised_trigger_of(ctx, d.object)):
        return {"effect": _trigger_gone_effect(trigger, ctx)}
    wanted = ctx.history.baseline.get(("trigger", d.object))
    if d.section != "triggers" or not isinstance(wanted, p.Trigger) or d.kind == "extra":
        return None
    if d.actual is not None and all(d.actual[key] == value for key, value in wanted.expected().items()):
        return None
    stand_in = _seq_trigger_under_another_name(ctx, d.object) if d.actual is None else None
    if stand_in:
        return {"effect": f"{stand_in} does its work under another name, but scripts/validate expects this one",
                "stand_in": stand_in}
    return {"effect": _trigger_gone_effect(wanted, ctx)}


def _seq_trigger_under_another_name(ctx: Context, trigger: str) -> str | None:
    wanted = ctx.history.baseline.get(("trigger", trigger)).expected()
    for key, other in sorted(ctx.live["triggers"].items()):
        if _table_of(key) == _table_of(trigger) and all(other[k] == v for k, v in wanted.items()):
            return key.rsplit(".", 1)[1]
    return None


def _baseline_unique_key(d: Delta, ctx: Context) -> tuple[str, p.Unique] | None:
    """(constraint name, the promised key) where ``d`` is a baseline unique constraint or its index."""
    if d.expected is None or d.section not in ("constraints", "indexes"):
        return None
    name = d.object.rsplit(".", 1)[1] if d.section == "constraints" else d.expected["constraint"]
    constraint = ctx.expected["constraints"].get(f"{d.table}.{name}")
    if constraint is None or constraint["kind"] not in ("unique", "primary key"):
        return None
    key = next((k for k in ctx.history.baseline.of(p.Unique)
                if k.table == d.table and sorted(k.columns) == sorted(constraint["columns"])), None)
    return (name, key) if key is not None else None


def _unique_key_gone(d: Delta, ctx: Context) -> Facts | None:
    """A promised unique key that nothing here guarantees: no valid constraint or unique index on its columns."""
    found = _baseline_unique_key(d, ctx)
    if found is None or guarantees.unique_met_by(ctx.live_catalog, found[1]):
        return None
    name, key = found
    return {"need": key.because or "the revisions and the frontend rely on it", "name": name,
            "columns": list(key.columns), "columns_text": ", ".join(key.columns), "key": key}


def _unique_key_kept(d: Delta, ctx: Context) -> Facts | None:
    """A baseline unique constraint absent or changed here, whose guarantee another form keeps."""
    found = _baseline_unique_key(d, ctx)
    by = guarantees.unique_met_by(ctx.live_catalog, found[1]) if found else None
    if not by or (d.live_name and d.live_name == by):
        return None
    return {"by": by, "key": found[1].describe()}


# -- handled


def _redefined_function(d: Delta, ctx: Context) -> Facts | None:
    revisions = ctx.history.after_baseline(("function", d.object))
    if d.section != "functions" or not revisions:
        return None
    how = {
        "missing": "created, and removed again on downgrade",
        "extra": "replaced, and this definition restored on downgrade",
        "different": "redefined (body, security, search_path; the owner is kept), and this definition restored "
                     "on downgrade",
    }[d.kind]
    return {"revisions": _names(revisions), "how": how}


def _replaced_policies(d: Delta, ctx: Context) -> Facts | None:
    revisions = ctx.history.after_baseline(("policies", d.table))
    return {"revisions": _names(revisions)} if d.section == "policies" and revisions else None


def _granted(d: Delta, ctx: Context) -> Facts | None:
    if d.section != "grants":
        return None
    target, role = d.object.rsplit(" to ", 1)
    key = ("execute", target.removeprefix("function "), role) if target.startswith("function ") \
        else ("table privileges", d.table, role)
    revisions = ctx.history.after_baseline(key)
    return {"revisions": _names(revisions), "role": role} if revisions else None


def _built_index(d: Delta, ctx: Context) -> Facts | None:
    renamed = d.live_name and "definition" not in d.changed  # harmless: see _renamed
    revisions = ctx.history.after_baseline(("index", d.object)) if d.section == "indexes" else []
    return {"revisions": _names(revisions)} if revisions and not renamed else None


def _nullability_set(d: Delta, ctx: Context) -> Facts | None:
    revisions = _made_not_null_by(ctx, d.object) if d.section == "columns" else []
    if d.changed == ("nullable",) and revisions:
        return {"revisions": _names(revisions)}
    return None


def _set_null_key(d: Delta, ctx: Context) -> Facts | None:
    """A foreign key that writes NULL into a key a revision makes NOT NULL (guarantees.set_null_conflict)."""
    if d.section != "constraints" or d.actual is None or d.actual["kind"] != "foreign key":
        return None
    live_name = d.live_name or d.object.rsplit(".", 1)[1]
    for column in d.actual["columns"]:
        revisions = _made_not_null_by(ctx, f"{d.table}.{column}")
        conflict = guarantees.set_null_conflict(ctx.live_catalog, d.table, column)
        if revisions and conflict and conflict[0] == live_name:
            name, key = conflict
            return {"revisions": _names(revisions), "column": f"{d.table}.{column}",
                    "reason": f"{name} is ON DELETE {key['on_delete']}"}
    return None


# -- information


def _not_null_meets_set_null(d: Delta, ctx: Context) -> Facts | None:
    """A live foreign key ON DELETE SET NULL on a column the database has NOT NULL."""
    if d.section != "constraints" or d.actual is None or d.actual["kind"] != "foreign key":
        return None
    if (d.actual.get("on_delete") or "").upper() != "SET NULL":
        return None
    for column in d.actual["columns"]:
        live = ctx.live["columns"].get(f"{d.table}.{column}")
        if live is not None and not live["nullable"]:
            return {"column": f"{d.table}.{column}", "name": d.live_name or d.object.rsplit(".", 1)[1],
                    "referred": d.actual["referred"], "table_sql": identifier(d.table), "column_sql": identifier(column)}
    return None


# -- harmless


def _renamed(d: Delta, ctx: Context) -> Facts | None:
    if d.live_name is None or "definition" in d.changed:
        return None
    built = ctx.history.after_baseline(("index", d.object))
    effect = (
        f"{d.object.rsplit('.', 1)[1]} is built beside it by {_names(built)}: a second index on the same keys, "
        "to drop by hand later" if built else "the revisions never name it"
    )
    return {"effect": effect}


def _not_null_key_left(d: Delta, ctx: Context) -> Facts | None:
    """A key promised NOT NULL at head that is nullable here, where no revision after the baseline sets it."""
    promised = ctx.history.head.get(("column", d.object))
    if d.section != "columns" or not (isinstance(promised, p.Column) and promised.not_null) \
            or d.actual is None or not d.actual["nullable"]:
        return None
    column = d.object.rsplit(".", 1)[1]
    if _made_not_null_by(ctx, d.object) or guarantees.set_null_conflict(ctx.live_catalog, d.table, column):
        return None  # set NOT NULL by a revision, or nullable by design
    return {"environment": ctx.history.environment}


def _checked_by_revisions(d: Delta, ctx: Context) -> Facts | None:
    revisions = ctx.history.after_baseline(("optional column", d.object)) if d.section == "columns" else []
    return {"revisions": _names(revisions)} if d.kind == "missing" and revisions else None


def _table_settings(d: Delta, ctx: Context) -> Facts | None:
    """RLS, replica identity, publications, an owner the revisions can act as: none of them is changed."""
    if d.section != "tables":
        return None
    effects = ["the revisions change none of these"]
    if {"replica_identity", "publications"} & set(d.changed):
        effects.append("scripts/validate's realtime check will report replica identity and publication until fixed")
    if "rls_enabled" in d.changed and not d.actual["rls_enabled"]:
        effects.append("with row level security off, the policies (103's too) do not apply")
    return {"effects": "; ".join(effects)}


def _anything(d: Delta, ctx: Context) -> Facts | None:
    return {}


# -- fixes


def _column_fix(d: Delta, ctx: Context, facts: Facts) -> str:
    table, column, want = identifier(d.table), identifier(d.object.rsplit(".", 1)[1]), d.expected
    if d.kind == "missing":
        clauses = [want["type"]] + ([] if want["nullable"] else ["NOT NULL"])
        if want["default"] is not None:
            clauses.append(f"DEFAULT {want['default']}")
        return f"ALTER TABLE {table} ADD COLUMN {column} {' '.join(clauses)};"
    return f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {want['type']} USING {column}::{want['type']};"


def _seq_fix(d: Delta, ctx: Context, facts: Facts) -> str:
    if d.section == "functions":
        # The baseline's own definition (frozen), which the revisions after it replace.
        return converged.previous_definition(d.object)
    definition = d.expected["definition"] + ";"
    name, table = identifier(d.object.rsplit(".", 1)[1]), identifier(d.table)
    if facts.get("stand_in"):
        return f"ALTER TRIGGER {identifier(facts['stand_in'])} ON {table} RENAME TO {name};"
    if d.actual is None:
        return definition
    if d.changed == ("enabled",):
        return f"ALTER TABLE {table} ENABLE TRIGGER {name};"
    return f"DROP TRIGGER {name} ON {table}; {definition}"


def _unique_fix(d: Delta, ctx: Context, facts: Facts) -> str:
    """What gives the key's guarantee: an INVALID index rebuilt, or a unique index built beside what is there."""
    forms = guarantees.unique_forms(ctx.live_catalog, facts["key"])
    invalid = next((form["index"] for _, form in forms if not form["index_valid"]), None)
    schema = d.table.split(".")[0]
    if invalid:  # the key is there, its index INVALID (an interrupted build)
        return f"REINDEX INDEX CONCURRENTLY {identifier(f'{schema}.{invalid}')};"
    columns = ", ".join(identifier(c) for c in facts["columns"])
    name = _free_index_name(ctx, facts["name"])
    return (f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {identifier(name)} ON {identifier(d.table)} ({columns});  "
            "-- the build fails while duplicates exist: remove them first")


def _free_index_name(ctx: Context, name: str) -> str:
    """``name``, or a name like it that no index or constraint here has (the live one may hold the name)."""
    taken = {key.rsplit(".", 1)[1] for section in ("indexes", "constraints") for key in ctx.live[section]}
    candidate, number = name, 1
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    return candidate


def _owner_fix(d: Delta, ctx: Context, facts: Facts) -> str:
    name = identifier(d.object) if d.section == "tables" else _functionidentifier(d.object)
    return f"ALTER {facts['what']} {name} OWNER TO {identifier(ctx.user)};  -- as {facts['owner']} or a superuser"


# The classification, first match wins: blocking rules first, the catch-all last.
RULES: tuple[Rule, ...] = (
    # --- blocking: a revision would fail on it, or the converged schema would not work ---
    Rule(BLOCKING, _table_missing,
         "every revision works on the chat tables: a database without this one is not the baseline",
         "restore {object} as chat_migrations/baseline.py creates it, or adopt the right database"),
    Rule(BLOCKING, _owner_out_of_reach,
         "{revisions} change it as {user}, who is not a member of its owner {owner}: "
         "the upgrade would refuse (only its owner may)", _owner_fix),
    Rule(BLOCKING, _required_column,
         "{by}, of the baseline's type {type}: the revisions' SQL assumes that type, and none of them "
         "converts it", _column_fix),
    Rule(BLOCKING, _required_signature,
         "required by {revisions} as ({arguments}) returning {result} (the upgrade would refuse): "
         "CREATE OR REPLACE cannot rename the arguments the frontend calls by name, nor change the result",
         "ALTER FUNCTION {function_sql} RENAME TO {renamed};  -- set it aside (the revisions then create "
         "{object} as ({arguments}) returning {result}), and tell the frontend"),
    Rule(BLOCKING, _seq_assignment_gone, "{effect}", _seq_fix),
    Rule(BLOCKING, _unique_key_gone,
         "no valid unique constraint or unique index on ({columns_text}) under any name: {need}", _unique_fix),
    # --- information: a contradiction the database already has, with its consequence ---
    Rule(INFORMATION, _not_null_meets_set_null,
         "{column} is NOT NULL and {name} is ON DELETE SET NULL: deleting a {referred} row it points to fails "
         "today (not-null violation), before any migration; no revision changes that",
         "to let those deletes succeed: ALTER TABLE {table_sql} ALTER COLUMN {column_sql} DROP NOT NULL; "
         "or change the foreign key's ON DELETE"),
    # --- harmless: the guarantee holds in another form ---
    Rule(HARMLESS, _unique_key_kept,
         "{key} is guaranteed here by {by} (it rejects duplicates and serves ON CONFLICT on those columns), "
         "which is what the revisions and the frontend rely on"),
    # --- handled: the revisions take care of it, and put it back on downgrade ---
    Rule(HANDLED, _redefined_function, "{how} by {revisions}"),
    Rule(HANDLED, _replaced_policies,
         "every policy of {table} is replaced by {revisions}, and these are restored on downgrade"),
    Rule(HANDLED, _granted, "{role}'s privileges on it are set by {revisions}, and restored on downgrade"),
    Rule(HANDLED, _built_index,
         "built or converged concurrently by {revisions}, and rebuilt as it was on downgrade"),
    Rule(HANDLED, _nullability_set,
         "set NOT NULL by {revisions} where it is not (refused, unchanged, while rows hold NULL), "
         "and put back as it was on downgrade"),
    Rule(HANDLED, _set_null_key,
         "the key stays nullable: NOT NULL would make deleting the referenced row fail ({reason}), "
         "so {column} is left nullable by {revisions}"),
    # --- harmless: nothing the revisions do depends on it ---
    Rule(HARMLESS, _renamed, "the same definition under another name ({live_name}); {effect}"),
    Rule(HARMLESS, _not_null_key_left,
         "no revision of {environment}'s history sets it NOT NULL (its baseline has it so): the revisions work "
         "either way, but scripts/validate's not_null check will report it at head until it is set by hand"),
    Rule(HARMLESS, _checked_by_revisions,
         "no revision requires it: the revisions that touch it ({revisions}) check for it, "
         "and touch it only where it exists"),
    Rule(HARMLESS, _table_settings, "{effects}"),
    Rule(HARMLESS, _anything, "nothing the revisions do depends on it; they leave it as it is"),
)


def judge(d: Delta, ctx: Context) -> Difference:
    for rule in RULES:
        facts = rule.applies(d, ctx)
        if facts is None:
            continue
        facts = {"object": d.object, "table": d.table, "user": ctx.user, "live_name": d.live_name, **facts}
        why = rule.why.format(**facts)
        fix = rule.fix(d, ctx, facts) if callable(rule.fix) else (rule.fix.format(**facts) if rule.fix else None)
        return Difference(d.section, d.object, d.kind, describe(d), rule.classification, why, fix)
    raise AssertionError("the last rule applies to everything")


def describe(d: Delta) -> str:
    if d.kind == "missing":
        return f"not here; the baseline has {_cell(d.section, d.expected)}"
    if d.kind == "extra":
        return f"not in the baseline; here {_cell(d.section, d.actual)}"
    parts = [f"here named {d.live_name}"] if d.live_name else []
    for attr in d.changed:
        if attr == "body_digest":
            parts.append("body differs")
        else:
            was, now = _value(d.expected.get(attr)), _value(d.actual.get(attr))
            parts.append(f"{attr.replace('_', ' ')}: baseline {was}, here {now}")
    return "; ".join(parts) or "same definition"


def _cell(section: str, entry: dict[str, Any]) -> str:
    if section == "tables":
        rls, identity, publications = (_DRIFT[name].cell(entry) for name in ("rls", "replica_identity", "publications"))
        return f"RLS {rls}, replica identity {identity}, publications {publications}"
    return _DRIFT[section].cell(entry)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return "none" if value is None else str(value)


def _functionidentifier(signature: str) -> str:
    name, arguments = signature.split("(", 1)
    return f"{identifier(name)}({arguments}"


def compare(conn: Connection, environment: str) -> list[Difference]:
    """Every difference between the live chat objects and the environment's baseline, judged."""
    expected = expected_picture(environment)
    with catalog_search_path(conn):
        live = picture(read_catalog(conn))
        user = conn.execute(text("SELECT current_user")).scalar()
        members_of = text("SELECT rolname FROM pg_roles WHERE pg_has_role(oid, 'MEMBER')")
        acts_as = frozenset(conn.execute(members_of).scalars())
    ctx = Context(history(environment), expected, live, user, acts_as)
    return [judge(d, ctx) for d in deltas(expected, live)]


def blocking(conn: Connection, environment: str) -> list[Difference]:
    """The differences that stop a stamp at the baseline (env.py refuses while there are any)."""
    return [d for d in compare(conn, environment) if d.classification == BLOCKING]


def baseline_revision(environment: str) -> str:
    return script_directory(environment).get_base()


def blocked_message(environment: str, blockers: list[Difference]) -> str:
    """One line naming the blockers: the verdict here, and env.py's refusal of the stamp."""
    names = ", ".join(f"{d.section} {d.object} ({d.kind})" for d in blockers)
    return (
        f"cannot adopt at {baseline_revision(environment)}: {len(blockers)} blocking "
        f"difference{'s' if len(blockers) != 1 else ''} from the baseline: {names}; "
        f"scripts/adopt -n {environment} lists each with its fix"
    )


# --- the command -------------------------------------------------------------------------


@dataclass
class AdoptReport:
    target: Target
    identity: str
    adopted_at: str | None
    differences: list[Difference]
    # Information: which Supabase platform's default privileges the database has (docs/supabase-platform.md).
    platform: str = ""

    @property
    def environment(self) -> str:
        return self.target.environment.name

    @property
    def blockers(self) -> list[Difference]:
        return [d for d in self.differences if d.classification == BLOCKING]

    @property
    def exit_code(self) -> int:
        return checks_cli.EXIT_FAILED if self.blockers else checks_cli.EXIT_OK

    def summary(self) -> dict[str, int]:
        return {c: sum(d.classification == c for d in self.differences) for c in CLASSES}

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.describe(),
            "adoptable": self.adopted_at is None and not self.blockers,
            "adopted_at": self.adopted_at,
            "platform_defaults": self.platform,
            "baseline": baseline_revision(self.environment),
            "summary": self.summary(),
            "differences": [d.to_json() for d in self.differences],
        }

    def verdict(self) -> str:
        env, base = self.environment, baseline_revision(self.environment)
        if self.adopted_at is not None:
            return f"already adopted at {self.adopted_at}; nothing to do"
        if self.blockers:
            return f"BLOCKED: {blocked_message(env, self.blockers)}"
        counts = self.summary()
        mark = f" -x mark_as={env}" if self.identity == UNPROVEN else ""
        return (f"ADOPTABLE: alembic -n {env}{mark} stamp {base} "
                f"({counts[HARMLESS]} harmless, {counts[HANDLED]} handled by the revisions)")

    def render(self) -> str:
        out = [
            f"adopt {self.target.label}: {self.target.masked_url}",
            f"identity: {self.identity}",
            f"platform: {self.platform} (information: the revisions grant explicitly, so they hold on either)",
            f"baseline: {baseline_revision(self.environment)} (baselines/{baseline_file(self.environment).name})",
            "",
        ]
        if self.adopted_at is None:
            rows = [[d.section, d.object, d.classification, f"{d.kind}: {d.detail}. {d.why}"] for d in self.differences]
            out.append(checks_cli.text_table(["SECTION", "OBJECT", "CLASS", "DETAIL"], rows)
                       if rows else "no differences from the baseline")
            for d in self.blockers:
                out += ["", f"{d.section} {d.object} (blocking): {d.detail}", f"  why: {d.why}", f"  fix: {d.fix}"]
            out.append("")
        out.append(self.verdict())
        return "\n".join(out)


# A server without a Supabase project (local, self-hosted): nothing proves the identity until the stamp's
# -x mark_as does. adopt only reads, so it compares anyway, and its verdict names that stamp.
UNPROVEN = "not proved (no Supabase project in the URL, no marker): the stamp proves it with -x mark_as"


def adopt(target: Target) -> AdoptReport:
    with checks_cli.read_only_connection(target, "chat-migrations:adopt") as conn:
        try:
            proof = checks_cli.verify_identity(target, conn)
        except IdentityUnproven:
            conn.rollback()
            proof = UNPROVEN
        revision = current_revision(conn)
        differences = [] if revision is not None else compare(conn, target.environment.name)
        platform = platform_defaults(conn)
        conn.rollback()
    return AdoptReport(target, proof, revision, differences, platform)


def build_parser() -> argparse.ArgumentParser:
    parser = checks_cli.command_parser(
        "adopt",
        "Compare, read-only, a database Alembic did not create with the baseline it would be stamped at.",
        "Exit 0: adoptable (or already adopted); 1: blocking differences; 2: could not run.",
    )
    return parser


def main(argv: list[str] | None = None, *, urls: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return checks_cli.run_command("adopt", lambda: adopt(checks_cli.environment_target(args.name, urls)), args.json)


if __name__ == "__main__":
    sys.exit(main())
