"""101_serialised_message_seq: assign_message_seq gives gapless seqs, in commit order, under concurrency.

Environment: both (shared, after 100_converged)
Why: the plan's "Message ordering inconsistencies - Expected seq column
behavior" and issue 5. The observed trigger computes max(seq) + 1 without
serialising: under READ COMMITTED two messages sent to one chat at the same
time read the same max, and the second fails on uq_chat_messages_chat_id_seq
(the frontend's send errors). The new body takes a transaction-scoped
advisory lock per chat before reading max(seq) in a statement of its own (a
new snapshot after the lock), so senders to one chat take turns until they
commit: every insert succeeds, seqs are unique, gapless and in commit order.
Senders to different chats do not wait for each other. A seq sent by the
client is ignored (it could open a gap). search_path is pinned (Supabase lint
function_search_path_mutable). CREATE OR REPLACE keeps the trigger, owner,
grants and comment; the previous definition is recorded first.
Locks: none on tables (CREATE OR REPLACE FUNCTION updates its catalog row).
One transaction. At run time the trigger serialises senders per chat only.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade, both environments); the downgrade restores the definition,
owner, ACL and comment recorded by the upgrade.

Revision ID: 101_serialised_message_seq
Revises: 100_converged
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations import messaging_functions, snapshots

revision: str = "101_serialised_message_seq"
down_revision: Union[str, Sequence[str], None] = "100_converged"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()  # the trigger's function only


def upgrade() -> None:
    op.execute(
        snapshots.redefine_function_sql(
            revision, messaging_functions.ASSIGN_MESSAGE_SEQ, messaging_functions.ASSIGN_MESSAGE_SEQ_SERIALISED
        )
    )


def downgrade() -> None:
    op.execute(
        snapshots.restore_function_sql(
            revision,
            messaging_functions.ASSIGN_MESSAGE_SEQ,
            messaging_functions.previous_definition(messaging_functions.ASSIGN_MESSAGE_SEQ),
        )
    )
