"""NOT NULL on the chat keys in staging too, where a live staging has them nullable (beyond the plan).

Environment: staging
Why: the plan observed staging's chat_participants.chat_id/user_id and
chat_messages.chat_id/sender_id NOT NULL, and none of its phases touches them
there; a live staging that differs (a key left nullable) would reach head
with a schema validate refuses and prod does not have. On the observed
staging every key is NOT NULL already and this revision changes nothing (it
records that, so its downgrade changes nothing either). A key whose foreign
key is ON DELETE SET NULL stays nullable, as in prod's 001 and 005.
Locks: only for a nullable key, none on the observed staging; as 001's NOT NULL (its docstring
has the detail): the ACCESS EXCLUSIVE steps (catalog only) wait at most
lock_timeout (500 ms by default) with retries, and run only where the
catalog, read first under no table lock, shows something to change; VALIDATE
waits up to one hour under SHARE UPDATE EXCLUSIVE, which blocks no query.
Until issue 19 the helper check's DROP ran as ALTER TABLE ... DROP
CONSTRAINT IF EXISTS, which requests ACCESS EXCLUSIVE even when nothing
exists: on keys already NOT NULL it queued behind the application's
transactions and retried; it now runs only where the check exists.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade) and tests/test_live_variants.py (a staging with a nullable key).

Revision ID: 006_staging_keys_not_null
Revises: 005_staging_sender_index
"""

from typing import Sequence, Union

from chat_migrations.runtime import not_null, requirements
from chat_migrations.runtime.promises import Column, Promises

revision: str = "006_staging_keys_not_null"
down_revision: Union[str, Sequence[str], None] = "005_staging_sender_index"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ("public.chat_participants", "public.chat_messages")

requires = requirements.Requirements(
    columns={"public.chat_participants": ("chat_id", "user_id"), "public.chat_messages": ("chat_id", "sender_id")}
)

# Each stays nullable where its foreign key sets it NULL on delete (see the docstring).
promises = Promises(tuple(
    Column(table, column, "uuid", not_null=True)
    for table, columns in (("public.chat_participants", ("chat_id", "user_id")),
                           ("public.chat_messages", ("chat_id", "sender_id")))
    for column in columns
))


def upgrade() -> None:
    # One step for both tables: rows violating either stop it before any SET NOT NULL.
    not_null.set_not_null_on(
        revision, {"public.chat_participants": ("chat_id", "user_id"), "public.chat_messages": ("chat_id", "sender_id")}
    )


def downgrade() -> None:
    not_null.drop_not_null(revision, "public.chat_messages", "chat_id", "sender_id")
    not_null.drop_not_null(revision, "public.chat_participants", "chat_id", "user_id")
