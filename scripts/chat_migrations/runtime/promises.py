"""What a revision promises a database holds once it has run: declared in the revision, folded along the chain.

Each revision file declares ``promises = promises.Promises(...)``: the objects
it creates or changes, each as the guarantee the application and the later
revisions rely on (a column of a type and nullability, a unique key by its
columns, an index by its whole definition, a function's signature, result,
security and search_path, a trigger, the policies of a table, what each API
role may do on a table or function). The promised state at any revision is
the fold of the declarations from the baseline up to it (``fold``): a later
declaration of the same object replaces the earlier one, ``Gone`` removes it.

Everything that judges a database reads the state from here: validate (at
head or at the current revision), preflight, adopt, stamp, smoke, drift and
the tests (chat_migrations.schema.history folds an environment's chain;
chat_migrations.checks.guarantees judges a live catalog against it). So a new
revision is one file: what it promises, it declares.

A promise is judged by the guarantee, not the form: a unique key is met by a
unique constraint or a valid unique index on the same columns, a foreign key
under any name and ON DELETE action, a NOT NULL key also by a column its
foreign key keeps nullable by design (ON DELETE SET NULL).

Frozen like the revisions: a declaration never changes once shipped; a later
revision declares its own change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Union

SCHEMA = "public"


@dataclass(frozen=True)
class Table:
    """The table exists; ``rls``: row level security is on; ``realtime``: Supabase Realtime streams it whole
    (REPLICA IDENTITY FULL, in the supabase_realtime publication)."""

    name: str
    rls: bool = True
    realtime: bool = False

    @property
    def key(self) -> tuple:
        return ("table", self.name)

    def describe(self) -> str:
        extras = [*(["RLS on"] if self.rls else []), *(["Realtime (replica identity full, supabase_realtime)"]
                                                        if self.realtime else [])]
        return f"table {self.name}" + (f" ({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class Column:
    """The column exists with this type (format_type's spelling).

    ``not_null``: True, NOT NULL, except where a foreign key on the column
    writes NULL into it on delete (ON DELETE SET NULL): NOT NULL there would
    make deleting the referenced row fail, so such a key stays nullable by
    design; False: nullable; None: either.
    """

    table: str
    name: str
    type: str
    not_null: bool | None = None
    # The column's COMMENT, where the revision sets one: alembic check compares it (the checks do not).
    comment: str | None = None

    @property
    def key(self) -> tuple:
        return ("column", f"{self.table}.{self.name}")

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.name}"

    def describe(self) -> str:
        nullability = {True: " NOT NULL (unless its foreign key is ON DELETE SET NULL)", False: " nullable",
                       None: ""}[self.not_null]
        return f"column {self.qualified} {self.type}{nullability}"


@dataclass(frozen=True)
class OptionalColumn:
    """A column the plan never names that the revisions use only where it exists (they check for it)."""

    table: str
    name: str

    @property
    def key(self) -> tuple:
        return ("optional column", f"{self.table}.{self.name}")

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.name}"

    def describe(self) -> str:
        return f"column {self.qualified}, used only where it exists"


@dataclass(frozen=True)
class Unique:
    """No two rows share these columns' values: a primary key, or (``primary`` False) any unique key.

    Met by a validated primary key or unique constraint on a valid index, or
    by a valid unique index (no WHERE, no expression) on the same columns in
    any order: each rejects duplicates and serves ON CONFLICT on them.
    ``because``: what relies on it (adopt names it when the key is missing).
    """

    table: str
    columns: tuple[str, ...]
    primary: bool = False
    because: str = ""

    @property
    def key(self) -> tuple:
        return ("unique", self.table, tuple(sorted(self.columns)))

    @property
    def kind(self) -> str:
        return "primary key" if self.primary else "unique key"

    def describe(self) -> str:
        return f"{self.kind} ({', '.join(self.columns)}) on {self.table}"


@dataclass(frozen=True)
class ForeignKey:
    """Every non-NULL value of ``column`` points at a row of ``referred``: validated, its triggers enabled,
    under any name and with any ON DELETE action."""

    table: str
    column: str
    referred: str
    referred_column: str = "id"

    @property
    def key(self) -> tuple:
        return ("foreign key", self.table, self.column, self.referred)

    def describe(self) -> str:
        return f"foreign key ({self.column}) on {self.table} → {self.referred}"


@dataclass(frozen=True)
class Index:
    """An index of this name with exactly this definition (``where``: a partial index's predicate, in
    pg_get_indexdef's spelling), valid."""

    name: str
    table: str
    columns: str
    where: str | None = None

    @property
    def key(self) -> tuple:
        return ("index", f"{self.table}.{self.name}")

    @property
    def qualified_name(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def definition(self) -> str:
        return index_definition(self.name, self.table, self.columns, self.where)

    def describe(self) -> str:
        return f"index {self.definition}"


def index_definition(index: str, table: str, columns: str, where: str | None = None) -> str:
    """The definition as pg_get_indexdef prints it, which is how an existing index is compared."""
    return f"CREATE INDEX {index} ON {table} USING btree ({columns})" + (f" WHERE ({where})" if where else "")


@dataclass(frozen=True)
class Function:
    """A function with this signature, argument list (names included: the frontend calls by name) and result.

    ``security_definer`` and ``search_path`` (proconfig's value, '' for an
    empty one, written ``""``) are promised when not None.
    """

    signature: str
    arguments: str
    result: str
    security_definer: bool | None = None
    search_path: str | None = None
    # True: it refuses (SQLSTATE 42501, nothing changed) a caller acting for another user or in a chat
    # they are not in; scripts/smoke proves it as the frontend calls it.
    caller_checked: bool | None = None

    @property
    def key(self) -> tuple:
        return ("function", self.signature)

    def describe(self) -> str:
        extras = []
        if self.security_definer is not None:
            extras.append("SECURITY DEFINER" if self.security_definer else "SECURITY INVOKER")
        if self.search_path is not None:
            extras.append(f"search_path = {self.search_path!r}")
        if self.caller_checked:
            extras.append("callers act only as themselves, in their own chats")
        return f"function {self.signature.split('(')[0]}({self.arguments}) returns {self.result}" + (
            f" ({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class Trigger:
    """A trigger on ``table`` running ``function`` (schema-qualified name), enabled."""

    table: str
    name: str
    timing: str
    events: tuple[str, ...]
    function: str
    level: str = "ROW"
    # The trigger's full definition, for the fix that creates it where it is missing.
    definition: str = ""
    # What stops without it (adopt names it when the trigger is missing).
    because: str = ""

    @property
    def key(self) -> tuple:
        return ("trigger", f"{self.table}.{self.name}")

    def expected(self) -> dict:
        """The attributes the catalog reads (chat_migrations.checks.catalog), as they must be."""
        return {"timing": self.timing, "events": list(self.events), "level": self.level,
                "function": self.function, "enabled": "enabled"}

    def describe(self) -> str:
        return (f"trigger {self.name} {self.timing} {' OR '.join(self.events)} ON {self.table} "
                f"FOR EACH {self.level} EXECUTE FUNCTION {self.function}()")


@dataclass(frozen=True)
class Policies:
    """The table's policies are exactly these (by name)."""

    table: str
    names: tuple[str, ...]

    @property
    def key(self) -> tuple:
        return ("policies", self.table)

    def describe(self) -> str:
        return f"policies of {self.table}: {', '.join(self.names) or 'none'}"


@dataclass(frozen=True)
class TablePrivileges:
    """What ``role`` is granted on ``table`` itself, exactly: table privileges ("SELECT") and column
    privileges ("UPDATE (a, b)": on those of the columns that exist, and no other)."""

    table: str
    role: str
    privileges: tuple[str, ...]

    @property
    def key(self) -> tuple:
        return ("table privileges", self.table, self.role)

    def table_level(self) -> set[str]:
        return {p for p in self.privileges if "(" not in p}

    def column_level(self) -> dict[str, set[str]]:
        """{privilege: columns} of the column grants."""
        found: dict[str, set[str]] = {}
        for privilege in self.privileges:
            if "(" in privilege:
                kind, columns = privilege.split("(", 1)
                found.setdefault(kind.strip(), set()).update(c.strip() for c in columns.rstrip(")").split(","))
        return found

    def describe(self) -> str:
        return f"{self.role} on {self.table}: {', '.join(self.privileges) or 'nothing'}"


@dataclass(frozen=True)
class Execute:
    """Whether ``role`` is granted EXECUTE on the function (directly; PUBLIC is a role here)."""

    signature: str
    role: str
    allowed: bool

    @property
    def key(self) -> tuple:
        return ("execute", self.signature, self.role)

    def describe(self) -> str:
        return f"{self.role} {'may' if self.allowed else 'may not'} execute {self.signature}"


@dataclass(frozen=True)
class Gone:
    """The object a ``key`` names is no longer promised (a revision dropped it)."""

    gone: tuple

    @property
    def key(self) -> tuple:
        return self.gone


Item = Union[Table, Column, OptionalColumn, Unique, ForeignKey, Index, Function, Trigger, Policies,
             TablePrivileges, Execute, Gone]


@dataclass(frozen=True)
class Promises:
    """One revision's declaration: the state it promises (``items``) and what changes for callers."""

    items: tuple[Item, ...] = ()
    # {object: what changes for a caller}: preflight's caller report and scripts/review.
    behaviour: dict[str, str] = field(default_factory=dict)

    def __add__(self, other: "Promises") -> "Promises":
        return Promises((*self.items, *other.items), {**self.behaviour, **other.behaviour})

    def keys(self) -> set[tuple]:
        return {item.key for item in self.items}


@dataclass
class State:
    """The fold of the declarations along a chain: what a database at ``revision`` holds."""

    revision: str | None
    items: dict[tuple, Item] = field(default_factory=dict)
    # Every revision that declared the object, oldest first (kept after a Gone).
    declared_by: dict[tuple, list[str]] = field(default_factory=dict)
    revisions: tuple[str, ...] = ()

    def of(self, kind: type) -> list:
        return [item for item in self.items.values() if isinstance(item, kind)]

    def get(self, key: tuple) -> Item | None:
        return self.items.get(key)

    def by(self, key: tuple, *, after: str | None = None) -> list[str]:
        """The revisions that declare ``key`` (those after ``after`` in the chain, when given)."""
        revisions = self.declared_by.get(key, [])
        if after is not None and after in self.revisions:
            later = set(self.revisions[self.revisions.index(after) + 1:])
            revisions = [r for r in revisions if r in later]
        return list(revisions)

    @property
    def tables(self) -> list[Table]:
        return self.of(Table)

    @property
    def not_null_keys(self) -> list[Column]:
        return [column for column in self.of(Column) if column.not_null]


def fold(steps: Iterable[tuple[str, Promises]]) -> State:
    """The state after ``steps`` ((revision, its promises), baseline first)."""
    state = State(None)
    revisions = []
    for revision, promises in steps:
        revisions.append(revision)
        for item in promises.items:
            state.declared_by.setdefault(item.key, []).append(revision)
            if isinstance(item, Gone):
                state.items.pop(item.key, None)
            else:
                state.items[item.key] = item
        state.revision = revision
    state.revisions = tuple(revisions)
    return state
