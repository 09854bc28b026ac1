"""103_messaging_security: callers act only as themselves in their chats; search_path pinned; RLS in Supabase's form.

Environment: both (shared, after 100_converged)
Why: issue 5 ("Security") and the plan's "Error loading conversations"
symptoms. The observed functions are SECURITY DEFINER without a search_path,
executable by anon (through PUBLIC), and trust p_user_id: any signed-in user
could mark any chat read for anyone. The policies call auth.uid() per row, and
chat_messages' UPDATE policy lets any participant change any message of the
chat (status, seq, text) while chat_participants' lets a user move their row
into any chat. This revision:
* redefines mark_messages_as_delivered, mark_messages_as_read,
  get_unread_count and get_latest_seq with the same names, arguments and
  return types: search_path = '', a caller check (p_user_id = auth.uid() and
  participation in p_chat_id, else SQLSTATE 42501 and nothing changed;
  service_role acts for anyone), EXECUTE revoked from PUBLIC and anon. The two
  mark functions stay SECURITY DEFINER (they change other participants'
  messages); the two readers become SECURITY INVOKER (RLS lets a participant
  read what they count);
* replaces every policy of the three tables with one permissive policy per
  command in the (select auth.uid()) form; a sender updates only their own
  messages;
* limits UPDATE for authenticated to the columns a user may change
  (chat_messages: message_text, media_urls, updated_at, deleted_at;
  chat_participants: last_read_at).
Policies, RLS switches and ACLs of the tables, and each function's definition,
owner, ACL and comment are recorded first.
Locks: first ACCESS EXCLUSIVE on the three tables in one LOCK statement, in
the application's lock order (online_ddl.lock_tables), waiting at most
lock_timeout; a timeout rolls the revision back and starts it over
(online_ddl.run_with_lock_retries), holding nothing between attempts. Then
only catalog changes (policies, functions, grants) until the commit, a few
milliseconds. One transaction.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade, both environments); the downgrade restores the recorded
policies and ACLs (in their order) and the recorded functions.

Revision ID: 103_messaging_security
Revises: 102_unread_count_index
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations import messaging_functions, online_ddl, policy_snapshots, snapshots
from chat_migrations.fingerprints import MESSAGING_TABLES

revision: str = "103_messaging_security"
down_revision: Union[str, Sequence[str], None] = "102_unread_count_index"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = MESSAGING_TABLES

TABLES = MESSAGING_TABLES


def upgrade() -> None:
    online_ddl.lock_tables(*TABLES)
    for table in TABLES:
        op.execute(policy_snapshots.record_table_access_sql(revision, table))
    drops = "".join(policy_snapshots.drop_policies_sql(table) for table in TABLES)
    op.execute(
        f"DO $policies$\nDECLARE\n    existing_policy record;\nBEGIN{drops}\n"
        f"{messaging_functions.POLICIES_SQL}\nEND\n$policies$"
    )
    op.execute(messaging_functions.COLUMN_PRIVILEGES_SQL)
    for signature, definition in messaging_functions.CHECKED_DEFINITIONS.items():
        op.execute(snapshots.redefine_function_sql(revision, signature, definition))


def downgrade() -> None:
    online_ddl.lock_tables(*TABLES)
    fallbacks = {table: messaging_functions.previous_table_access(table) for table in TABLES}
    op.execute(policy_snapshots.restore_table_access_sql(revision, fallbacks))
    for signature in reversed(messaging_functions.CHECKED_DEFINITIONS):
        op.execute(
            snapshots.restore_function_sql(revision, signature, messaging_functions.previous_definition(signature))
        )
