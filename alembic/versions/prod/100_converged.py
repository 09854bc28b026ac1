"""The convergence point: from here on, prod's schema equals the other environment's.

Environment: prod (an anchor with the same revision id exists in every
environment folder)
Why: both histories end here, so every later revision is written once, in
alembic/versions/shared/, with down_revision = "100_converged", and applies
to every environment. tests/test_migrations.py proves the schemas at this
point are identical (pg_dump --schema-only of both databases).
Locks: none; this revision changes nothing.
Downgrade verified: a no-op both ways.

Revision ID: 100_converged
Revises: 007_prod_unread_count_privileges
"""

from typing import Sequence, Union
from chat_migrations.runtime.promises import Promises

revision: str = "100_converged"
down_revision: Union[str, Sequence[str], None] = "007_prod_unread_count_privileges"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()
# An anchor: it promises nothing of its own.
promises = Promises()


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
