"""001_schema_alignment: NOT NULL on chat_participants keys; sender_id index parity.

Environment: prod
Why: the plan's Phase 1. chat_participants.chat_id and user_id are nullable in
prod (NOT NULL in staging), which lets orphaned participants exist.
idx_chat_messages_sender_id already exists in prod (appendix evidence): the
CREATE ... IF NOT EXISTS is a parity no-op there, and unlike the plan's
rollback.sql the downgrade never drops an index that existed before the
upgrade (it records whether it did). An index of that name with another
definition is drift: it is rebuilt concurrently and swapped in, and the
downgrade rebuilds the recorded one. A key whose foreign key is ON DELETE SET
NULL stays nullable (NOT NULL would make that delete fail; README, "Where NOT
NULL meets ON DELETE SET NULL"), and preflight names it.
Locks: NOT NULL via CHECK NOT VALID (ACCESS EXCLUSIVE, catalog only), VALIDATE
(SHARE UPDATE EXCLUSIVE while scanning; reads and writes continue), SET NOT NULL
proved from the check (ACCESS EXCLUSIVE, no scan). Index built CONCURRENTLY
(SHARE UPDATE EXCLUSIVE) outside the transaction. Every lock wait is bounded
by lock_timeout with retries.
Downgrade verified: tests/test_migrations.py compares pg_dump --schema-only
after the downgrade with the dump taken before the upgrade, on the baseline and
on a database where the index did not exist.

Revision ID: 001_schema_alignment
Revises: 000_prod_baseline
"""

from typing import Sequence, Union

from chat_migrations.runtime import indexes, not_null, requirements

revision: str = "001_schema_alignment"
down_revision: Union[str, Sequence[str], None] = "000_prod_baseline"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ("public.chat_participants", "public.chat_messages")

requires = requirements.Requirements(
    columns={"public.chat_participants": ("chat_id", "user_id"), "public.chat_messages": ("sender_id",)}
)


KEYS = {"public.chat_participants": ("chat_id", "user_id")}


def upgrade() -> None:
    # Rows that violate stop the revision first; the concurrent step comes next,
    # because stepping out of the transaction commits what came before it; the
    # SET NOT NULL comes last and commits with the revision.
    not_null.prepare_not_null(revision, KEYS)
    indexes.create_index_concurrently(
        revision, "idx_chat_messages_sender_id", "public.chat_messages", "sender_id"
    )
    not_null.finish_not_null(KEYS)


def downgrade() -> None:
    indexes.drop_index_concurrently(revision, "idx_chat_messages_sender_id", "public.chat_messages")
    not_null.drop_not_null(revision, "public.chat_participants", "chat_id", "user_id")
