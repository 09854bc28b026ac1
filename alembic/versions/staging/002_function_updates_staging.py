"""002_function_updates_staging: mark_messages_as_read returns updated_count; add get_unread_count.

Environment: staging
Why: the plan's Phase 2. Staging's mark_messages_as_read returns void where
prod (and the frontend's "X messages marked as read") expects
TABLE(updated_count bigint); get_unread_count is missing in staging. Both are
created with prod's exact definitions so the environments converge.
A return type cannot be changed in place, so the function is dropped and
created again; its owner, grants and comment are carried over unchanged.
Locks: catalog rows of the two functions only; no table lock. One transaction.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade); the downgrade restores the definition, owner, ACL and
comment recorded by the upgrade on this database.

Revision ID: 002_function_updates_staging
Revises: 000_staging_baseline
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations import baseline, snapshots

revision: str = "002_function_updates_staging"
down_revision: Union[str, Sequence[str], None] = "000_staging_baseline"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()  # functions only


def upgrade() -> None:
    op.execute(
        snapshots.replace_function_sql(
            revision,
            baseline.MARK_MESSAGES_AS_READ,
            baseline.MARK_MESSAGES_AS_READ_RETURNING_COUNT,
            keep_privileges=True,
        )
    )
    op.execute(
        snapshots.replace_function_sql(
            revision, baseline.GET_UNREAD_COUNT, baseline.GET_UNREAD_COUNT_FUNCTION, keep_privileges=False
        )
    )


def downgrade() -> None:
    op.execute(snapshots.restore_function_sql(revision, baseline.GET_UNREAD_COUNT, snapshots.ABSENT))
    op.execute(
        snapshots.restore_function_sql(
            revision,
            baseline.MARK_MESSAGES_AS_READ,
            baseline.MARK_MESSAGES_AS_READ_VOID + baseline.MARK_MESSAGES_AS_READ_GRANTS,
        )
    )
