"""NOT NULL on chat_messages.chat_id and sender_id in prod (beyond the plan).

Environment: prod
Why: the plan's comparison table shows chat_messages.chat_id and sender_id
NOT NULL in staging but nullable in prod, and none of its phases closes that
drift. A message without a chat or a sender cannot be shown or secured by RLS.
Where a live prod has sender_id REFERENCES auth.users ON DELETE SET NULL
(deleting an account keeps its messages, sender unknown), NOT NULL would make
deleting any user who ever sent a message fail, which worked before. The
careful choice keeps that column nullable: CASCADE instead would delete other
participants' conversation history, and NO ACTION would block account
deletion. not_null.set_not_null skips such a column (and logs it);
preflight names the conflict and validate accepts it. Tested by deleting a
user through auth.users before and after (tests/test_live_variants.py).
Locks: as 001's NOT NULL (its docstring
has the detail): the ACCESS EXCLUSIVE steps (catalog only) wait at most
lock_timeout (500 ms by default) with retries, and run only where the
catalog, read first under no table lock, shows something to change; VALIDATE
waits up to one hour under SHARE UPDATE EXCLUSIVE, which blocks no query.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade).

Revision ID: 005_prod_message_keys_not_null
Revises: 001_schema_alignment
"""

from typing import Sequence, Union

from chat_migrations.runtime import not_null, requirements
from chat_migrations.runtime.promises import Column, Promises

revision: str = "005_prod_message_keys_not_null"
down_revision: Union[str, Sequence[str], None] = "001_schema_alignment"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ("public.chat_messages",)

requires = requirements.Requirements(columns={"public.chat_messages": ("chat_id", "sender_id")})

promises = Promises((
    Column("public.chat_messages", "chat_id", "uuid", not_null=True),
    Column("public.chat_messages", "sender_id", "uuid", not_null=True),
))


def upgrade() -> None:
    not_null.set_not_null(revision, "public.chat_messages", "chat_id", "sender_id")


def downgrade() -> None:
    not_null.drop_not_null(revision, "public.chat_messages", "chat_id", "sender_id")
