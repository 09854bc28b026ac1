"""get_unread_count in prod: EXECUTE for authenticated and service_role only (beyond the plan).

Environment: prod
Why: prod's get_unread_count is SECURITY DEFINER and trusts its arguments;
Supabase's default privileges gave anon (and PUBLIC) EXECUTE on it when it
was created, so anyone with the project's anon key can count any chat's
unread messages. Staging's 002 creates the function with these grants; this
is the same least privilege for prod, so both environments are identical at
100_converged. The caller check itself comes in 103, for both.
Locks: the function's catalog row only; no table lock. One transaction.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade); the downgrade puts back the function's recorded ACL, in its
order.

Revision ID: 007_prod_unread_count_privileges
Revises: 006_prod_reply_index_definition
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations.runtime import api_access, requirements, snapshots


revision: str = "007_prod_unread_count_privileges"
down_revision: Union[str, Sequence[str], None] = "006_prod_reply_index_definition"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()  # one function's privileges

GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"

requires = requirements.Requirements(functions={GET_UNREAD_COUNT: ("p_chat_id uuid, p_user_id uuid", "bigint")})

access = api_access.Access(
    functions={GET_UNREAD_COUNT: {"PUBLIC": False, "anon": False, "authenticated": True, "service_role": True}},
)

promises = access.promises()


def upgrade() -> None:
    op.execute(snapshots.record_function_sql(revision, GET_UNREAD_COUNT))
    op.execute(snapshots.if_function_exists_sql(GET_UNREAD_COUNT, access.grants_sql()))


def downgrade() -> None:
    op.execute(snapshots.restore_function_privileges_sql(revision, GET_UNREAD_COUNT))
