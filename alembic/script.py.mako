"""${message}

Environment: <prod | staging | both (shared, in alembic/versions/shared, after the current shared head)>
Why: <the plan's section or issue this closes>
Locks: <each statement's lock and how long it is held; CONCURRENTLY steps run outside the transaction>
Downgrade verified: <how: tests/test_migrations.py compares pg_dump before upgrade and after downgrade>

Before merging (docs/writing-a-revision.md):
* declare in ``promises`` everything the revision leaves: the checks, smoke,
  adopt, stamp and the tests read it from there and nowhere else;
* the revision does not break the application version deployed right now
  (add before you use, stop using before you drop);
* no statement waits long for a lock or holds ACCESS EXCLUSIVE beyond a
  catalog change: use chat_migrations.runtime.indexes, .not_null, .columns
  and .lock_retries for indexes, NOT NULL, columns and any lock-taking
  statement;
* the downgrade restores what was there, recorded by the upgrade
  (chat_migrations.runtime.snapshots), not what we assume was there;
* grant explicitly: Supabase projects get no default privileges for the API
  roles on new objects (docs/supabase-platform.md).

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from typing import Sequence, Union

from alembic import op
${imports if imports else ""}
from chat_migrations.runtime import requirements
from chat_migrations.runtime.promises import Promises

revision: str = "${up_revision}"
down_revision: Union[str, Sequence[str], None] = ${'"%s"' % down_revision if isinstance(down_revision, str) else repr(down_revision)}
branch_labels: Union[str, Sequence[str], None] = ${repr(branch_labels)}
depends_on: Union[str, Sequence[str], None] = ${repr(depends_on)}
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()

# What it needs of the live database: checked before anything changes.
requires = requirements.Requirements()

# What it leaves: columns, keys, indexes, functions, triggers, policies, privileges, and what changes for callers.
promises = Promises()


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
