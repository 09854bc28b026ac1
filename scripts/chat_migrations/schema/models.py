"""The messaging tables as a database at head has them, for ``alembic check`` and autogenerate.

Two parts, one source each. The tables as the plan wrote them (columns,
defaults, keys, the indexes no revision declares) are frozen here. Every
column and index a revision declares (``promises``) comes from the fold of
the declarations at head (chat_migrations.schema.history), and an index a
revision declares gone is left out: a new revision that adds a column or an
index edits nothing here. Functions, policies, triggers and grants are
outside what autogenerate compares; validate and drift judge those.
"""

from __future__ import annotations

import functools

import pglast
from alembic.script import ScriptDirectory
from pglast.stream import RawStream
from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql.base import ischema_names

from chat_migrations.errors import ChatMigrationsError
from chat_migrations.runtime import promises
from chat_migrations.schema import history, tables

_now = text("now()")


def _frozen(metadata: MetaData) -> None:
    """The plan's tables, less what the revisions declare."""
    # auth.users belongs to the Supabase platform; declared only as a foreign-key target.
    Table("users", metadata, Column("id", Uuid, primary_key=True), schema="auth")
    Table(
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
    Table(
        "chat_participants",
        metadata,
        Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
        Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
        Column("user_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
        Column("joined_at", DateTime(timezone=True), nullable=False, server_default=_now),
        Column("last_read_at", DateTime(timezone=True)),
        # A revision's column, kept here for its COMMENT (declarations carry none; autogenerate compares them).
        Column("last_read_seq", column_type("bigint"), comment=(
            "The highest seq of the chat this participant has read (mark_messages_as_read); "
            "NULL: not since revision 104, last_read_at counts."
        )),
        UniqueConstraint("chat_id", "user_id", name="uq_chat_participants_chat_user"),
        Index("idx_chat_participants_last_read", "user_id", "last_read_at"),
    )
    messages = Table(
        "chat_messages",
        metadata,
        Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
        Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
        Column("sender_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
        Column("message_text", Text),
        Column("seq", column_type("bigint")),
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
    )
    # The plan's; declared apart because the column list is an expression (seq DESC).
    Index("idx_chat_messages_chat_id_seq_desc", messages.c.chat_id, messages.c.seq.desc())


def column_type(spelling: str):
    """The SQLAlchemy type of a promised column's type, in format_type's spelling ("bigint", "text[]")."""
    array = spelling.endswith("[]")
    base = spelling.removesuffix("[]")
    name = base.split("(", 1)[0].strip()
    kind = ischema_names.get(name)
    if kind is None:
        raise ChatMigrationsError(f"a promised column's type {spelling!r} has no SQLAlchemy type: spell it as "
                                  "format_type() prints it (docs/writing-a-revision.md)")
    arguments = [int(a) for a in base[len(name):].strip(" ()").split(",") if a.strip()] if "(" in base else []
    if "with time zone" in name:
        type_ = kind(*arguments, timezone=True)
    else:
        type_ = kind(*arguments)
    return ARRAY(type_) if array else type_


def _index(table: Table, index: promises.Index) -> Index:
    """The model of a promised index, from its whole definition (pglast reads the column list)."""
    statement = pglast.parse_sql(index.definition)[0].stmt
    elements = []
    for element in statement.indexParams:
        if element.name is None:
            elements.append(text(RawStream()(element.expr)))
            continue
        column = table.c[element.name]
        elements.append(column.desc() if element.ordering == pglast.enums.SortByDir.SORTBY_DESC else column)
    where = {"postgresql_where": text(RawStream()(statement.whereClause))} if statement.whereClause else {}
    return Index(index.name, *elements, **where)


def _local(qualified: str) -> str:
    return qualified.removeprefix(f"{tables.SCHEMA}.")


def at_head(environment: str, script: ScriptDirectory | None = None) -> MetaData:
    """The tables at ``environment``'s head (``script``: its revisions, as alembic loaded them; by default as
    ``alembic -n environment`` loads them, ALEMBIC_CONFIG followed): the frozen ones with every promised
    column and index."""
    # A revision that declares nothing is passed over here (alembic check then reports what it adds) and
    # refused by the checks and tests.
    state = history.promised(environment, script=script or history.script_directory(environment), strict=False)
    gone = frozenset(key[1] for key in state.declared_by if key[0] == "index" and key not in state.items)
    return _tables(tuple(state.of(promises.Column)), tuple(state.of(promises.Index)), gone)


@functools.lru_cache(maxsize=8)
def _tables(columns: tuple[promises.Column, ...], indexes: tuple[promises.Index, ...],
            gone: frozenset[str]) -> MetaData:
    """Built once per set of declarations (a suite runs alembic in-process thousands of times)."""
    metadata = MetaData()
    _frozen(metadata)
    for column in columns:
        table = metadata.tables[_local(column.table)]
        if column.name not in table.c:
            table.append_column(Column(column.name, column_type(column.type), nullable=column.not_null is not True,
                                       comment=column.comment))
    for table in metadata.tables.values():
        for index in list(table.indexes):
            if f"{tables.SCHEMA}.{table.name}.{index.name}" in gone:
                table.indexes.discard(index)
    for index in indexes:
        table = metadata.tables[_local(index.table)]
        if index.name not in {existing.name for existing in table.indexes}:
            _index(table, index)  # an Index built on a table's columns attaches itself to the table
    return metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Compare only the messaging tables of the public schema."""
    if type_ == "table":
        return obj.schema in (None, tables.SCHEMA) and name in tables.NAMES
    return True
