"""101_serialised_message_seq: assign_message_seq gives gapless seqs, in commit order, under concurrency.

Environment: both (shared, after 100_converged)
Why: the plan's "Message ordering inconsistencies - Expected seq column
behavior". The observed trigger computes max(seq) + 1 without serialising:
under READ COMMITTED two messages sent to one chat at the same time read the
same max, and the second fails on uq_chat_messages_chat_id_seq (the
frontend's send errors). The new body takes a transaction-scoped advisory
lock per chat before reading max(seq) in a statement of its own (a new
snapshot after the lock), so senders to one chat take turns until they
commit: every insert succeeds, seqs are unique, gapless and in commit order.
Senders to different chats do not wait for each other. A seq sent by the
client is ignored (it could open a gap). search_path is pinned (Supabase lint
function_search_path_mutable). CREATE OR REPLACE keeps the trigger, owner and
comment; the previous definition and ACL are recorded first. PUBLIC and the
API roles (anon, authenticated, service_role) lose EXECUTE on it: a trigger
function is never called by a user, and Supabase's default privileges had
granted it to all of them.
Locks: none on tables (CREATE OR REPLACE FUNCTION updates its catalog row).
One transaction. At run time the trigger serialises senders per chat only.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade, both environments); the downgrade restores the definition,
owner, ACL (in its order) and comment recorded by the upgrade.

Revision ID: 101_serialised_message_seq
Revises: 100_converged
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations.runtime import api_access, requirements, snapshots
from chat_migrations.frozen import converged
from chat_migrations.runtime.promises import Function, Promises

revision: str = "101_serialised_message_seq"
down_revision: Union[str, Sequence[str], None] = "100_converged"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()  # the trigger's function only

ASSIGN_MESSAGE_SEQ = "public.assign_message_seq()"

requires = requirements.Requirements(
    columns={"public.chat_messages": ("chat_id", "seq")},
    functions={ASSIGN_MESSAGE_SEQ: ("", "trigger")},
)

access = api_access.Access(
    functions={ASSIGN_MESSAGE_SEQ: {"PUBLIC": False, "anon": False, "authenticated": False, "service_role": False}},
    behaviour={
        ASSIGN_MESSAGE_SEQ: "every insert gets the next seq of its chat, gapless and in commit order; "
        "a seq sent by the client is ignored; concurrent senders to one chat no longer fail",
    },
)

promises = Promises((Function(ASSIGN_MESSAGE_SEQ, "", "trigger", security_definer=False, search_path='""'),)) \
    + access.promises()

ASSIGN_MESSAGE_SEQ_SERIALISED = f"""
CREATE OR REPLACE FUNCTION public.assign_message_seq()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $function$
BEGIN
    -- Senders to one chat take turns until they commit, so seqs are gapless and
    -- in commit order. The two-key form (table, chat) never meets the
    -- migration's one-key session lock.
    PERFORM pg_advisory_xact_lock(TG_RELID::integer, hashtext(NEW.chat_id::text));
    -- A statement of its own: under READ COMMITTED it takes a new snapshot after
    -- the lock is granted, so it sees the previous sender's committed message.
    SELECT coalesce(max(m.seq), 0) + 1 INTO NEW.seq
      FROM public.chat_messages m
     WHERE m.chat_id = NEW.chat_id;
    RETURN NEW;
END;
$function$;
COMMENT ON FUNCTION public.assign_message_seq() IS
    'Gives each new message the next seq of its chat (gapless, in commit order); a seq sent by the client is ignored.';
{access.grants_sql()}"""


def upgrade() -> None:
    op.execute(snapshots.redefine_function_sql(revision, ASSIGN_MESSAGE_SEQ, ASSIGN_MESSAGE_SEQ_SERIALISED))


def downgrade() -> None:
    op.execute(
        snapshots.restore_function_sql(revision, ASSIGN_MESSAGE_SEQ, converged.previous_definition(ASSIGN_MESSAGE_SEQ))
    )
