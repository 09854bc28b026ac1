"""103_messaging_security: callers act only as themselves in their chats; least privilege; RLS in Supabase's form.

Environment: both (shared, after 100_converged)
Why: the plan's "Error loading conversations" symptoms and its promise of
"No RLS policy changes" that the observed schema cannot keep safely. The
observed functions are SECURITY DEFINER without a search_path, executable by
anon (Supabase's default privileges grant EXECUTE on every new function), and
trust p_user_id: any signed-in user could mark any chat read for anyone. The
same default privileges leave anon and authenticated ALL on the chat tables:
TRUNCATE (which RLS does not cover), TRIGGER, REFERENCES, DELETE. The
policies call auth.uid() per row, and chat_messages' UPDATE policy lets any
participant change any message of the chat. This revision:
* redefines mark_messages_as_delivered, mark_messages_as_read,
  get_unread_count and get_latest_seq with the same names, arguments and
  return types: search_path = '', a caller check (p_user_id = auth.uid() and
  participation in p_chat_id, else SQLSTATE 42501 and nothing changed;
  service_role acts for anyone); of PUBLIC and the API roles only
  authenticated and service_role may execute them. The two mark functions stay SECURITY DEFINER (they change other
  participants' messages); the two readers become SECURITY INVOKER;
* replaces every policy of the three tables with one permissive policy per
  command in the (select auth.uid()) form; a sender updates only their own
  messages;
* leaves anon nothing on the three tables, and authenticated only what the
  policies allow: SELECT on all three, INSERT on chats and chat_messages,
  UPDATE of the columns a user may change (chat_messages: message_text,
  media_urls, updated_at where it exists, deleted_at; chat_participants:
  last_read_at); no DELETE (no policy allows one), TRUNCATE, TRIGGER or
  REFERENCES. service_role keeps what it has.
Live variants: the plan never names chat_messages.updated_at; the mark
functions set it, and authenticated may update it, only where it exists.
Policies the project does not know are dropped too (a leftover permissive
policy would undo the restrictions); scripts/preflight lists them first.
Policies, RLS switches and ACLs of the tables, and each function's definition,
owner, ACL and comment are recorded first.
Locks: first ACCESS EXCLUSIVE on the three tables in one LOCK statement, in
the application's lock order (lock_retries.lock_tables), waiting at most
lock_timeout; a timeout rolls the revision back and starts it over
(lock_retries.run_with_lock_retries), holding nothing between attempts. Then
only catalog changes (policies, functions, grants) until the commit, a few
milliseconds. One transaction.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade, both environments, on the baselines and on live variants);
the downgrade restores the recorded policies and ACLs (in their order) and
the recorded functions.

Revision ID: 103_messaging_security
Revises: 102_unread_count_index
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations.runtime import api_access, lock_retries, policy_snapshots, requirements, snapshots
from chat_migrations.frozen import caller_checked_functions as checked, converged
from chat_migrations.runtime.promises import Function, OptionalColumn, Promises

revision: str = "103_messaging_security"
down_revision: Union[str, Sequence[str], None] = "102_unread_count_index"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
TABLES = ("public.chats", "public.chat_participants", "public.chat_messages")
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = TABLES

MARK_MESSAGES_AS_DELIVERED = checked.MARK_MESSAGES_AS_DELIVERED
MARK_MESSAGES_AS_READ = checked.MARK_MESSAGES_AS_READ
GET_UNREAD_COUNT = checked.GET_UNREAD_COUNT
GET_LATEST_SEQ = checked.GET_LATEST_SEQ
FUNCTIONS = checked.FUNCTIONS

requires = requirements.Requirements(
    columns={
        "public.chats": ("id", "created_by"),
        "public.chat_participants": ("chat_id", "user_id", "last_read_at"),
        "public.chat_messages": ("chat_id", "sender_id", "status", "deleted_at", "created_at", "message_text", "media_urls"),
    },
    # Replaced in place: the frontend calls them with these argument names.
    functions={
        MARK_MESSAGES_AS_DELIVERED: ("p_chat_id uuid, p_user_id uuid", "TABLE(updated_count bigint)"),
        MARK_MESSAGES_AS_READ: ("p_chat_id uuid, p_user_id uuid", "TABLE(updated_count bigint)"),
        GET_UNREAD_COUNT: ("p_chat_id uuid, p_user_id uuid", "bigint"),
        GET_LATEST_SEQ: ("p_chat_id uuid", "bigint"),
    },
)

_CALLERS_ONLY = checked.CALLERS_ONLY
_CALLER_CHECK = "refuses (42501, nothing changed) a p_user_id other than auth.uid() or a chat the caller is not in"

access = api_access.Access(
    tables={
        "public.chats": {"PUBLIC": (), "anon": (), "authenticated": ("SELECT", "INSERT")},
        "public.chat_participants": {"PUBLIC": (), "anon": (), "authenticated": ("SELECT", "UPDATE (last_read_at)")},
        "public.chat_messages": {
            "PUBLIC": (), "anon": (),
            "authenticated": ("SELECT", "INSERT", "UPDATE (message_text, media_urls, updated_at, deleted_at)"),
        },
    },
    functions={signature: _CALLERS_ONLY for signature in FUNCTIONS},
    policies={
        "public.chats": ("chats_select_participant", "chats_insert_creator"),
        "public.chat_participants": ("chat_participants_select_own", "chat_participants_update_own"),
        "public.chat_messages": (
            "chat_messages_select_participant", "chat_messages_insert_participant", "chat_messages_update_own",
        ),
    },
    behaviour={
        MARK_MESSAGES_AS_DELIVERED: _CALLER_CHECK,
        MARK_MESSAGES_AS_READ: _CALLER_CHECK,
        GET_UNREAD_COUNT: _CALLER_CHECK + "; runs as the caller (SECURITY INVOKER)",
        GET_LATEST_SEQ: "refuses (42501) a chat the caller is not in; runs as the caller",
        "public.chat_messages": "a sender may update only their own messages, and only the columns above",
    },
)

_CALLER_ARGUMENTS = "p_chat_id uuid, p_user_id uuid"
# The marks change other participants' messages (SECURITY DEFINER); the readers run as the caller.
promises = Promises((
    OptionalColumn("public.chat_messages", "updated_at"),  # set, and granted, only where it exists
    Function(MARK_MESSAGES_AS_DELIVERED, _CALLER_ARGUMENTS, "TABLE(updated_count bigint)",
             security_definer=True, search_path='""', caller_checked=True),
    Function(MARK_MESSAGES_AS_READ, _CALLER_ARGUMENTS, "TABLE(updated_count bigint)",
             security_definer=True, search_path='""', caller_checked=True),
    Function(GET_UNREAD_COUNT, _CALLER_ARGUMENTS, "bigint", security_definer=False, search_path='""', caller_checked=True),
    Function(GET_LATEST_SEQ, "p_chat_id uuid", "bigint", security_definer=False, search_path='""', caller_checked=True),
)) + access.promises()


HAS_UPDATED_AT = checked.HAS_UPDATED_AT

# The functions (caller check, search_path, comments and grants): chat_migrations.frozen.caller_checked_functions.
DEFINITIONS = checked.DEFINITIONS

# --- the policies ------------------------------------------------------------------

# The caller's chats, computed once per query: the (select auth.uid()) form
# Supabase recommends is evaluated once, not per row (lint 0003).
_CALLERS_CHATS = "(SELECT p.chat_id FROM public.chat_participants p WHERE p.user_id = (SELECT auth.uid()))"
_CALLER = "(SELECT auth.uid())"

# One permissive policy per table, command and role (lint 0006); no write policy is `true`.
POLICIES_SQL = f"""
CREATE POLICY chats_select_participant ON public.chats FOR SELECT TO authenticated
    USING (id IN {_CALLERS_CHATS});
CREATE POLICY chats_insert_creator ON public.chats FOR INSERT TO authenticated
    WITH CHECK (created_by = {_CALLER});
CREATE POLICY chat_participants_select_own ON public.chat_participants FOR SELECT TO authenticated
    USING (user_id = {_CALLER});
CREATE POLICY chat_participants_update_own ON public.chat_participants FOR UPDATE TO authenticated
    USING (user_id = {_CALLER}) WITH CHECK (user_id = {_CALLER});
CREATE POLICY chat_messages_select_participant ON public.chat_messages FOR SELECT TO authenticated
    USING (chat_id IN {_CALLERS_CHATS});
CREATE POLICY chat_messages_insert_participant ON public.chat_messages FOR INSERT TO authenticated
    WITH CHECK (sender_id = {_CALLER} AND chat_id IN {_CALLERS_CHATS});
CREATE POLICY chat_messages_update_own ON public.chat_messages FOR UPDATE TO authenticated
    USING (sender_id = {_CALLER} AND chat_id IN {_CALLERS_CHATS}) WITH CHECK (sender_id = {_CALLER});"""


def upgrade() -> None:
    lock_retries.lock_tables(*TABLES)
    for table in TABLES:
        op.execute(policy_snapshots.record_table_access_sql(revision, table))
    drops = "".join(policy_snapshots.drop_policies_sql(table) for table in TABLES)
    op.execute(f"DO $policies$\nDECLARE\n    existing_policy record;\nBEGIN{drops}\n{POLICIES_SQL}\nEND\n$policies$")
    op.execute(access.table_grants_sql())
    for signature, definition in DEFINITIONS.items():
        op.execute(snapshots.redefine_function_sql(revision, signature, definition))


def downgrade() -> None:
    lock_retries.lock_tables(*TABLES)
    fallbacks = {table: converged.previous_table_access(table) for table in TABLES}
    op.execute(policy_snapshots.restore_table_access_sql(revision, fallbacks))
    for signature in reversed(DEFINITIONS):
        op.execute(snapshots.restore_function_sql(revision, signature, converged.previous_definition(signature)))
