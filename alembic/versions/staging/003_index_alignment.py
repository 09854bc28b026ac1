"""003_index_alignment: idx_chat_messages_reply_to in staging.

Environment: staging
Why: the plan's Phase 3; reply-thread queries in staging have no index on
reply_to_message_id (prod has it). It is also the index of a foreign key.
Locks: CREATE INDEX CONCURRENTLY (SHARE UPDATE EXCLUSIVE; reads and writes
continue) outside the transaction; an INVALID leftover of an interrupted build
is dropped concurrently and rebuilt. An index of that name with another
definition (drift by definition, e.g. a partial index) is rebuilt
concurrently under a temporary name and swapped in (a rename, SHARE UPDATE
EXCLUSIVE); the downgrade rebuilds the recorded definition the same way.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade); DROP INDEX CONCURRENTLY, and only if the upgrade created it.

Revision ID: 003_index_alignment
Revises: 002_function_updates_staging
"""

from typing import Sequence, Union

from chat_migrations.runtime import indexes, requirements
from chat_migrations.runtime.promises import Index, Promises

revision: str = "003_index_alignment"
down_revision: Union[str, Sequence[str], None] = "002_function_updates_staging"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ("public.chat_messages",)

requires = requirements.Requirements(columns={"public.chat_messages": ("reply_to_message_id",)})

promises = Promises((Index("idx_chat_messages_reply_to", "public.chat_messages", "reply_to_message_id"),))


def upgrade() -> None:
    indexes.create_index_concurrently(
        revision, "idx_chat_messages_reply_to", "public.chat_messages", "reply_to_message_id"
    )


def downgrade() -> None:
    indexes.drop_index_concurrently(revision, "idx_chat_messages_reply_to", "public.chat_messages")
