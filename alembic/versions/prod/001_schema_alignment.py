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
Locks: NOT NULL: ACCESS EXCLUSIVE steps (CHECK NOT VALID, SET NOT NULL proved from the check
with no scan, DROP of the helper check; catalog changes only) each wait at
most the run's lock_timeout (500 ms by default) and are retried
(lock_retries); each is requested only where it changes something: the
catalog is read first, under no table lock, so a key already NOT NULL (or
left nullable for its ON DELETE SET NULL) gets no table lock at all
(tests/test_needless_locks.py). VALIDATE (SHARE UPDATE EXCLUSIVE while
scanning) waits up to one hour for its lock and is not retried: no
application query conflicts with SHARE UPDATE EXCLUSIVE, so nothing queues
behind it while it waits (a short timeout would only abort it).
The index is built CONCURRENTLY outside the transaction, only where it is
missing, INVALID or defined otherwise (SHARE UPDATE EXCLUSIVE; reads and
writes continue): it too waits up to one hour, for its lock and for the
transactions already writing to the table, and blocks no query meanwhile.
Downgrade verified: tests/test_migrations.py compares pg_dump --schema-only
after the downgrade with the dump taken before the upgrade, on the baseline and
on a database where the index did not exist.

Revision ID: 001_schema_alignment
Revises: 000_prod_baseline
"""

from typing import Sequence, Union

from chat_migrations.runtime import indexes, not_null, requirements
from chat_migrations.runtime.promises import Column, Index, Promises

revision: str = "001_schema_alignment"
down_revision: Union[str, Sequence[str], None] = "000_prod_baseline"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ("public.chat_participants", "public.chat_messages")

requires = requirements.Requirements(
    columns={"public.chat_participants": ("chat_id", "user_id"), "public.chat_messages": ("sender_id",)}
)

# The keys stay nullable where a foreign key sets them NULL on delete (see the docstring).
promises = Promises((
    Column("public.chat_participants", "chat_id", "uuid", not_null=True),
    Column("public.chat_participants", "user_id", "uuid", not_null=True),
    Index("idx_chat_messages_sender_id", "public.chat_messages", "sender_id"),
))


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
