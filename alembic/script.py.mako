"""${message}

Environment: <prod | staging | both (shared, after 100_converged)>
Why: <the plan's section or issue this closes>
Locks: <each statement's lock and for how long; CONCURRENTLY steps run outside the transaction>
Downgrade verified: <how: e.g. tests/test_migrations.py compares pg_dump before upgrade and after downgrade>

Before merging, every author checks:
* the revision does not break the application version deployed right now
  (add before you use, stop using before you drop);
* no statement waits long for a lock or holds ACCESS EXCLUSIVE beyond a
  catalog change: use chat_migrations.online_ddl for indexes, NOT NULL and
  any lock-taking statement;
* the downgrade restores what was there, recorded by the upgrade
  (chat_migrations.snapshots), not what we assume was there.

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from typing import Sequence, Union

from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: Union[str, Sequence[str], None] = ${repr(down_revision)}
branch_labels: Union[str, Sequence[str], None] = ${repr(branch_labels)}
depends_on: Union[str, Sequence[str], None] = ${repr(depends_on)}
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
