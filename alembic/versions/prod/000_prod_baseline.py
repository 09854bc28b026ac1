"""Baseline: production (Connect-Prod) as the migration plan observed it.

Environment: prod
Why: the plan's "Detailed Schema Comparison" and "Query Evidence". Prod has
chat_messages.chat_id/sender_id and chat_participants.chat_id/user_id
nullable, mark_messages_as_read returning TABLE(updated_count bigint),
get_unread_count, and both idx_chat_messages_sender_id and
idx_chat_messages_reply_to. The DDL lives in chat_migrations.frozen.baseline (frozen).
Locks: only on new objects (an empty database). The live database is never
upgraded through this revision: it is adopted with
``alembic -n prod stamp 000_prod_baseline`` (README, "Adopting a live database").
Downgrade verified: tests/test_migrations.py downgrades to base and compares
pg_dump with the platform-only database.

Revision ID: 000_prod_baseline
Revises:
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations.frozen import baseline


revision: str = "000_prod_baseline"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()  # creates them
# What a database at this baseline guarantees (chat_migrations.frozen.baseline.promises).
promises = baseline.promises("prod")


def upgrade() -> None:
    op.execute(baseline.create_sql("prod"))


def downgrade() -> None:
    op.execute(baseline.drop_sql("prod"))
