"""idx_chat_messages_reply_to in prod with the converged definition (beyond the plan).

Environment: prod
Why: the plan says prod already has idx_chat_messages_reply_to, and checks
it by name only. A live prod can have it under that name with another
definition (a partial index, WHERE reply_to_message_id IS NOT NULL): staging
then gets a full index from 003 and the environments never converge. This
revision makes prod's index the one 003 builds in staging. Where it already
is, nothing is built.
Locks: only where the definition differs: CREATE INDEX CONCURRENTLY of the
wanted definition under a temporary name (SHARE UPDATE EXCLUSIVE; reads and
writes continue), DROP INDEX CONCURRENTLY of the old one, and a rename
(SHARE UPDATE EXCLUSIVE), all outside the transaction.
Downgrade verified: tests/test_live_variants.py (pg_dump after the downgrade
equals the dump before the upgrade on a prod with a partial index); the
downgrade rebuilds the recorded definition the same way, and keeps an index
that was already as wanted.

Revision ID: 006_prod_reply_index_definition
Revises: 005_prod_message_keys_not_null
"""

from typing import Sequence, Union

from chat_migrations.runtime import indexes, requirements
from chat_migrations.runtime.promises import Index, Promises

revision: str = "006_prod_reply_index_definition"
down_revision: Union[str, Sequence[str], None] = "005_prod_message_keys_not_null"
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
