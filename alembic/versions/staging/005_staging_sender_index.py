"""idx_chat_messages_sender_id in staging (beyond the plan).

Environment: staging
Why: the plan lists idx_chat_messages_sender_id as missing in staging but only
"adds" it in prod (where it already existed), so staging never gets it. It
also indexes the sender_id foreign key.
Locks: CREATE INDEX CONCURRENTLY (SHARE UPDATE EXCLUSIVE) outside the
transaction; an INVALID leftover is rebuilt, and an index of that name with
another definition is rebuilt concurrently and swapped in (the downgrade
rebuilds the recorded definition the same way).
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade); DROP INDEX CONCURRENTLY, only if the upgrade created it.

Revision ID: 005_staging_sender_index
Revises: 003_index_alignment
"""

from typing import Sequence, Union

from chat_migrations.runtime import indexes, requirements
from chat_migrations.runtime.promises import Index, Promises

revision: str = "005_staging_sender_index"
down_revision: Union[str, Sequence[str], None] = "003_index_alignment"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ("public.chat_messages",)

requires = requirements.Requirements(columns={"public.chat_messages": ("sender_id",)})

promises = Promises((Index("idx_chat_messages_sender_id", "public.chat_messages", "sender_id"),))


def upgrade() -> None:
    indexes.create_index_concurrently(
        revision, "idx_chat_messages_sender_id", "public.chat_messages", "sender_id"
    )


def downgrade() -> None:
    indexes.drop_index_concurrently(revision, "idx_chat_messages_sender_id", "public.chat_messages")
