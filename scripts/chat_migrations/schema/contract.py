"""The head contract: what the revisions promise a database holds at head, declared once.

scripts/validate judges a live database against this, and scripts/preflight
reads from it what the pending revisions will change. It names only what the
revisions create or change (and the few properties of the baseline they rely
on), never how models.py happens to spell the rest: a constraint under
another name, an extra index, another column default or another ON DELETE
action is not a broken promise. What the plan does not know at all is
information (validate's ``unknown_objects``), not a failure.

* NOT NULL keys: the four keys 001 (prod) and 005 (prod) make NOT NULL
  (staging's baseline has them so). A key whose foreign key writes NULL into
  it (ON DELETE SET NULL, or SET DEFAULT with no column default) stays
  nullable: the revisions skip it (``not_null.set_null_conflict_sql``,
  mirrored here over the Catalog by ``set_null_conflict``).
* Indexes the revisions build, with the exact definition they converge to
  (``indexes.index_definition``, the one source for both).
* Unique keys and foreign keys by their columns (and referenced table), under
  any name and with any ON DELETE action.
* The functions (signature -> result), the seq trigger and 104's read-position
  trigger, the Realtime tables.
* Privileges at head: what anon, authenticated and PUBLIC never hold.

No revision imports this module: a revision says what it does itself, so a
later change here never rewrites an old revision. A new shared revision that
promises something new adds it here.

``CheckContext`` is the little both commands share: the read-only connection,
the catalog read once, and where the database is in its history.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from chat_migrations.checks import catalog as catalog_module
from chat_migrations.runtime import indexes, not_null
from chat_migrations.checks.catalog import Catalog

CHATS, PARTICIPANTS, MESSAGES = "public.chats", "public.chat_participants", "public.chat_messages"
TABLES = (CHATS, PARTICIPANTS, MESSAGES)
AUTH_USERS = "auth.users"


# --- NOT NULL keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotNullKey:
    table: str
    column: str
    # The revisions that make it NOT NULL (an environment whose baseline has it so has none).
    made_by: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


NOT_NULL_KEYS = (
    NotNullKey(PARTICIPANTS, "chat_id", ("001_schema_alignment", "006_staging_keys_not_null")),
    NotNullKey(PARTICIPANTS, "user_id", ("001_schema_alignment", "006_staging_keys_not_null")),
    NotNullKey(MESSAGES, "chat_id", ("005_prod_message_keys_not_null", "006_staging_keys_not_null")),
    NotNullKey(MESSAGES, "sender_id", ("005_prod_message_keys_not_null", "006_staging_keys_not_null")),
)


def set_null_conflict(catalog: Catalog, table: str, column: str) -> tuple[str, dict[str, Any]] | None:
    """The foreign key that writes NULL into ``column`` when its referenced row is deleted, if any.

    The Catalog form of not_null.set_null_conflict_sql: a foreign key whose
    columns include ``column`` with ON DELETE SET NULL, or SET DEFAULT where
    the column has no default. NOT NULL on such a column would make deleting
    the referenced row fail; the revisions keep it nullable.
    """
    column_entry = catalog.columns.get(f"{table}.{column}") or {}
    for name, constraint in _constraints_of(catalog, table, "foreign key"):
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


# --- indexes the revisions build -----------------------------------------------------------------


@dataclass(frozen=True)
class ContractIndex:
    name: str
    table: str
    columns: str
    built_by: tuple[str, ...]  # the revisions that build (and converge) it

    @property
    def definition(self) -> str:
        """pg_get_indexdef's form, exactly what the revisions compare and build."""
        return indexes.index_definition(self.name, self.table, self.columns)

    @property
    def key(self) -> str:
        """Its key in Catalog.indexes."""
        return f"{self.table}.{self.name}"


INDEXES = (
    ContractIndex("idx_chat_messages_sender_id", MESSAGES, "sender_id",
                  ("001_schema_alignment", "005_staging_sender_index")),
    ContractIndex("idx_chat_messages_reply_to", MESSAGES, "reply_to_message_id",
                  ("006_prod_reply_index_definition", "003_index_alignment")),
    ContractIndex("idx_chat_messages_chat_created", MESSAGES, "chat_id, created_at", ("102_unread_count_index",)),
)


def live_index_definitions(conn: Connection) -> dict[str, str]:
    """{public.<index>: pg_get_indexdef} for the contract's index names that exist (read-only, catalog only)."""
    rows = conn.execute(
        text(
            "SELECT name, pg_catalog.pg_get_indexdef(to_regclass(name)) FROM unnest(CAST(:names AS text[])) AS name "
            "WHERE to_regclass(name) IS NOT NULL"
        ),
        {"names": [f"{catalog_module.SCHEMA}.{index.name}" for index in INDEXES]},
    ).all()
    return dict(rows)


# --- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniqueKey:
    table: str
    columns: tuple[str, ...]
    primary: bool = False

    @property
    def kind(self) -> str:
        return "primary key" if self.primary else "unique key"

    def label(self) -> str:
        return f"{self.kind} ({', '.join(self.columns)}) on {self.table}"


UNIQUE_KEYS = (
    UniqueKey(CHATS, ("id",), primary=True),
    UniqueKey(PARTICIPANTS, ("id",), primary=True),
    UniqueKey(MESSAGES, ("id",), primary=True),
    UniqueKey(PARTICIPANTS, ("chat_id", "user_id")),
    UniqueKey(MESSAGES, ("chat_id", "seq")),
    UniqueKey(MESSAGES, ("client_generated_id",)),
)
# The seq is unique per chat: the key that proves it.
SEQ_KEY = UniqueKey(MESSAGES, ("chat_id", "seq"))


def unique_key_candidates(catalog: Catalog, key: UniqueKey) -> list[tuple[str, dict[str, Any]]]:
    """Constraints of any name that are this key (same columns, in any order); valid ones first."""
    kinds = ("primary key",) if key.primary else ("unique", "primary key")
    found = [
        (name, c) for name, c in _constraints_of(catalog, key.table, *kinds) if sorted(c["columns"]) == sorted(key.columns)
    ]
    return sorted(found, key=lambda item: (not (item[1]["validated"] and item[1]["index_valid"]), item[0]))


def valid_unique_key(catalog: Catalog, key: UniqueKey) -> str | None:
    """The name of a validated constraint on a valid index that is this key: duplicates are impossible."""
    for name, constraint in unique_key_candidates(catalog, key):
        if constraint["validated"] and constraint["index_valid"]:
            return name
    return None


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    referred: str
    referred_column: str = "id"

    def label(self) -> str:
        return f"foreign key ({self.column}) on {self.table} → {self.referred}"


FOREIGN_KEYS = (
    ForeignKey(PARTICIPANTS, "chat_id", CHATS),
    ForeignKey(PARTICIPANTS, "user_id", AUTH_USERS),
    ForeignKey(MESSAGES, "chat_id", CHATS),
    ForeignKey(MESSAGES, "sender_id", AUTH_USERS),
    ForeignKey(MESSAGES, "reply_to_message_id", MESSAGES),
)


def foreign_key_candidates(catalog: Catalog, fk: ForeignKey) -> list[tuple[str, dict[str, Any]]]:
    """Foreign keys of any name and any ON DELETE action on this column to this table; enforced ones first."""
    found = [
        (name, c) for name, c in _constraints_of(catalog, fk.table, "foreign key")
        if c["columns"] == [fk.column] and c["referred"] == fk.referred
    ]
    return sorted(found, key=lambda item: (not (item[1]["validated"] and item[1]["triggers_enabled"]), item[0]))


def enforced_foreign_key(catalog: Catalog, fk: ForeignKey) -> str | None:
    """A validated foreign key whose triggers fire: rows pointing nowhere are impossible."""
    for name, constraint in foreign_key_candidates(catalog, fk):
        if constraint["validated"] and constraint["triggers_enabled"]:
            return name
    return None


def mandatory(catalog: Catalog, fk: ForeignKey) -> bool:
    """Whether a NULL in the key is an orphan: a NOT NULL key, unless its foreign key sets it NULL by design."""
    is_key = any(key.table == fk.table and key.column == fk.column for key in NOT_NULL_KEYS)
    return is_key and set_null_conflict(catalog, fk.table, fk.column) is None


# --- functions, the trigger, Realtime ----------------------------------------------------------

# signature (argument types) -> return type (pg_get_function_result).
MARK_MESSAGES_AS_READ = "public.mark_messages_as_read(uuid, uuid)"
MARK_MESSAGES_AS_DELIVERED = "public.mark_messages_as_delivered(uuid, uuid)"
GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"
GET_LATEST_SEQ = "public.get_latest_seq(uuid)"
ASSIGN_MESSAGE_SEQ = "public.assign_message_seq()"
# Revision 104: a direct UPDATE of last_read_at clears last_read_seq (the badge follows it, as at 103).
FOLLOW_DIRECT_LAST_READ_AT = "public.follow_direct_last_read_at()"
TRIGGER_FUNCTIONS = (ASSIGN_MESSAGE_SEQ, FOLLOW_DIRECT_LAST_READ_AT)
API_FUNCTIONS = (MARK_MESSAGES_AS_READ, MARK_MESSAGES_AS_DELIVERED, GET_UNREAD_COUNT, GET_LATEST_SEQ)

FUNCTIONS: dict[str, str] = {
    MARK_MESSAGES_AS_READ: "TABLE(updated_count bigint)",
    MARK_MESSAGES_AS_DELIVERED: "TABLE(updated_count bigint)",
    GET_UNREAD_COUNT: "bigint",
    GET_LATEST_SEQ: "bigint",
    ASSIGN_MESSAGE_SEQ: "trigger",
    FOLLOW_DIRECT_LAST_READ_AT: "trigger",
}
TRIGGERS: dict[str, dict[str, Any]] = {
    "public.chat_messages.trg_assign_message_seq": {
        "timing": "BEFORE", "events": ["INSERT"], "level": "ROW",
        "function": "public.assign_message_seq", "enabled": "enabled",
    },
    "public.chat_participants.trg_follow_direct_last_read_at": {
        "timing": "BEFORE", "events": ["UPDATE"], "level": "ROW",
        "function": "public.follow_direct_last_read_at", "enabled": "enabled",
    },
}
# Supabase Realtime sends the previous row with UPDATE and DELETE events only
# with REPLICA IDENTITY FULL, and streams only tables in its publication.
REALTIME_TABLES = (MESSAGES, PARTICIPANTS)
REALTIME_PUBLICATION = "supabase_realtime"

# The policies 103 leaves on each table (it drops every other one).
POLICIES: dict[str, tuple[str, ...]] = {
    CHATS: ("chats_select_participant", "chats_insert_creator"),
    PARTICIPANTS: ("chat_participants_select_own", "chat_participants_update_own"),
    MESSAGES: ("chat_messages_select_participant", "chat_messages_insert_participant", "chat_messages_update_own"),
}


# --- privileges at head ------------------------------------------------------------------------

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# Granted per column too: has_any_column_privilege finds those.
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")

# anon holds nothing on the chat tables, the API functions and the trigger function.
ANON_HOLDS_NOTHING_ON_TABLES = TABLES
ANON_HOLDS_NOTHING_ON_FUNCTIONS = (*API_FUNCTIONS, *TRIGGER_FUNCTIONS)
# authenticated never holds these on the chat tables (RLS does not cover TRUNCATE, TRIGGER, REFERENCES).
AUTHENTICATED_NEVER = ("TRUNCATE", "TRIGGER", "REFERENCES")
# And DELETE only where a policy allows one (delete_policies): at head none does (POLICIES has no DELETE policy).
# Anyone holding EXECUTE through PUBLIC would undo the functions' grants.
PUBLIC_NEVER_EXECUTES = API_FUNCTIONS


def delete_policies(catalog: Catalog, table: str, role: str = "authenticated") -> list[str]:
    """Permissive policies that let ``role`` delete rows of ``table``."""
    return sorted(
        key.rsplit(".", 1)[1] for key, policy in catalog.policies.items()
        if key.rsplit(".", 1)[0] == table and policy["command"] in ("DELETE", "ALL")
        and policy["permissive"] == "PERMISSIVE" and ({role, "public"} & set(policy["roles"]))
    )


# --- what both commands share ------------------------------------------------------------------


@dataclass
class CheckContext:
    """One read-only look at a database: what validate's and preflight's checks receive."""

    conn: Connection
    catalog: Catalog
    environment: str
    current_revision: str | None
    head_revision: str
    thorough: bool = False

    @cached_property
    def known_revision(self) -> bool:
        return self.current_revision is not None and self.current_revision in catalog_module.revisions(self.environment)

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
            return catalog_module.revisions(self.environment)
        script = catalog_module.script_directory(self.environment)
        return {s.revision for s in script.iterate_revisions(self.current_revision, "base")}

    @cached_property
    def index_definitions(self) -> dict[str, str]:
        return live_index_definitions(self.conn)


def _constraints_of(catalog: Catalog, table: str, *kinds: str) -> list[tuple[str, dict[str, Any]]]:
    return sorted(
        (key.rsplit(".", 1)[1], c) for key, c in catalog.constraints.items()
        if key.rsplit(".", 1)[0] == table and c["kind"] in kinds
    )
