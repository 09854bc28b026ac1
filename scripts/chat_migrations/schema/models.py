"""The messaging tables as both environments have them at head.

Only ``alembic check`` (and autogenerate) read this: it proves a database at
head matches what the revisions are meant to produce. Functions, policies,
triggers and grants are outside what autogenerate compares; the schema-dump
tests and ``scripts/drift`` cover those.
"""

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    BigInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from chat_migrations.schema import tables

metadata = MetaData()

# auth.users belongs to the Supabase platform; declared only as a foreign-key target.
auth_users = Table("users", metadata, Column("id", Uuid, primary_key=True), schema="auth")

_now = text("now()")

chats = Table(
    "chats",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("title", Text),
    Column("is_group", Boolean, nullable=False, server_default=text("false")),
    Column("created_by", Uuid, ForeignKey("auth.users.id", ondelete="SET NULL")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Index("idx_chats_created_by", "created_by"),
)

chat_participants = Table(
    "chat_participants",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("joined_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("last_read_at", DateTime(timezone=True)),
    # Revision 104: the read position by seq (per chat, in commit order), moved by mark_messages_as_read.
    Column("last_read_seq", BigInteger, comment=(
        "The highest seq of the chat this participant has read (mark_messages_as_read); "
        "NULL: not since revision 104, last_read_at counts."
    )),
    UniqueConstraint("chat_id", "user_id", name="uq_chat_participants_chat_user"),
    Index("idx_chat_participants_last_read", "user_id", "last_read_at"),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    Column("sender_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("message_text", Text),
    Column("seq", BigInteger),
    Column("client_generated_id", Uuid),
    Column("status", Text, nullable=False, server_default=text("'sent'::text")),
    Column("reply_to_message_id", Uuid, ForeignKey("chat_messages.id", ondelete="SET NULL")),
    Column("media_urls", ARRAY(Text)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("deleted_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('sent', 'delivered', 'read')", name="chat_messages_status_check"),
    UniqueConstraint("chat_id", "seq", name="uq_chat_messages_chat_id_seq"),
    UniqueConstraint("client_generated_id", name="uq_chat_messages_client_generated"),
    Index("idx_chat_messages_sender_id", "sender_id"),
    Index("idx_chat_messages_reply_to", "reply_to_message_id"),
    # Revision 102: get_unread_count reads only the unread end of a chat.
    Index("idx_chat_messages_chat_created", "chat_id", "created_at"),
    # Revision 105: the reader's own and the deleted messages after a read position (idx_chat_messages_status
    # is gone: a mark changes no indexed column).
    Index("idx_chat_messages_sender_chat_seq", "sender_id", "chat_id", "seq"),
    Index("idx_chat_messages_chat_deleted_seq", "chat_id", "seq", postgresql_where=text("deleted_at IS NOT NULL")),
)
# Declared apart because the column list is an expression (seq DESC).
Index("idx_chat_messages_chat_id_seq_desc", chat_messages.c.chat_id, chat_messages.c.seq.desc())

def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Compare only the messaging tables of the public schema."""
    if type_ == "table":
        return obj.schema in (None, tables.SCHEMA) and name in tables.NAMES
    return True
