"""102_unread_count_index: idx_chat_messages_chat_created, so get_unread_count reads only the unread messages.

Environment: both (shared, after 100_converged)
Why: the plan's "Efficient unread counts ... Indexed query with timestamp
comparison" and issue 5. get_unread_count counts a chat's messages newer than
the reader's last_read_at; no index has (chat_id, created_at), so it read
every message of the chat. With this index (and the function of 103, planned
with the actual last_read_at) it reads only the unread end of the chat.
Locks: CREATE INDEX CONCURRENTLY (SHARE UPDATE EXCLUSIVE; reads and writes
continue) outside the transaction; an INVALID leftover of an interrupted build
is dropped concurrently and rebuilt. An index of that name with another
definition is rebuilt concurrently under a temporary name and swapped in
(a rename, SHARE UPDATE EXCLUSIVE); the downgrade rebuilds the recorded one.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade, both environments); DROP INDEX CONCURRENTLY, only if the
upgrade created it.

Revision ID: 102_unread_count_index
Revises: 101_serialised_message_seq
"""

from typing import Sequence, Union

from chat_migrations.runtime import indexes, requirements
from chat_migrations.runtime.promises import Index, Promises

revision: str = "102_unread_count_index"
down_revision: Union[str, Sequence[str], None] = "101_serialised_message_seq"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ("public.chat_messages",)

requires = requirements.Requirements(columns={"public.chat_messages": ("chat_id", "created_at")})

promises = Promises((Index("idx_chat_messages_chat_created", "public.chat_messages", "chat_id, created_at"),))


def upgrade() -> None:
    indexes.create_index_concurrently(
        revision, "idx_chat_messages_chat_created", "public.chat_messages", "chat_id, created_at"
    )


def downgrade() -> None:
    indexes.drop_index_concurrently(revision, "idx_chat_messages_chat_created", "public.chat_messages")
