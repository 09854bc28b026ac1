"""002_function_updates_staging: mark_messages_as_read returns updated_count; add get_unread_count.

Environment: staging
Why: the plan's Phase 2. Staging's mark_messages_as_read returns void where
prod (and the frontend's "X messages marked as read") expects
TABLE(updated_count bigint); get_unread_count is missing in staging. Both are
created with prod's definitions so the environments converge. A return type
cannot be changed in place, so the function is dropped and created again;
its owner, grants and comment are carried over unchanged. get_unread_count is
new here, so its EXECUTE grants are set here too (least privilege from the
first revision that creates a thing): authenticated and service_role only.
Supabase's default privileges would otherwise let anon run this SECURITY
DEFINER function, and the plan never says anon may count anyone's unread
messages.
Live variants: the plan never names chat_messages.updated_at; the functions
touch it only where the column exists. A get_unread_count that already
exists in staging (another definition) is replaced, and restored on
downgrade.
Locks: catalog rows of the two functions only; no table lock. One transaction.
Downgrade verified: tests/test_migrations.py (dump before upgrade equals dump
after downgrade, on the baseline and on live variants, tests/test_live_variants.py);
the downgrade restores the definition, owner, ACL (in its order) and comment
recorded by the upgrade on this database.

Revision ID: 002_function_updates_staging
Revises: 000_staging_baseline
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations.runtime import api_access, requirements, snapshots
from chat_migrations.frozen import baseline
from chat_migrations.runtime.promises import Function, OptionalColumn, Promises

revision: str = "002_function_updates_staging"
down_revision: Union[str, Sequence[str], None] = "000_staging_baseline"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = ()  # functions only

MARK_MESSAGES_AS_READ = "public.mark_messages_as_read(uuid, uuid)"
GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"

requires = requirements.Requirements(
    columns={
        "public.chat_messages": ("chat_id", "sender_id", "status", "deleted_at", "created_at"),
        "public.chat_participants": ("chat_id", "user_id", "last_read_at"),
    },
    # Both are dropped and created whatever was there.
    provides=(MARK_MESSAGES_AS_READ, GET_UNREAD_COUNT),
)

access = api_access.Access(
    functions={GET_UNREAD_COUNT: {"PUBLIC": False, "anon": False, "authenticated": True, "service_role": True}},
    behaviour={MARK_MESSAGES_AS_READ: "returns TABLE(updated_count bigint) instead of void (same arguments)"},
)

promises = Promises((
    OptionalColumn("public.chat_messages", "updated_at"),  # set only where it exists
    Function(MARK_MESSAGES_AS_READ, "p_chat_id uuid, p_user_id uuid", "TABLE(updated_count bigint)"),
    Function(GET_UNREAD_COUNT, "p_chat_id uuid, p_user_id uuid", "bigint"),
)) + access.promises()

HAS_UPDATED_AT = (
    "EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'public.chat_messages'::regclass "
    "AND attname = 'updated_at' AND NOT attisdropped)"
)


def _mark_messages_as_read(touch_updated_at: bool) -> str:
    updated_at = ", updated_at = now()" if touch_updated_at else ""
    return f"""
CREATE FUNCTION public.mark_messages_as_read(p_chat_id uuid, p_user_id uuid)
RETURNS TABLE(updated_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
AS $function$
DECLARE
    v_updated bigint;
BEGIN
    UPDATE public.chat_messages
       SET status = 'read'{updated_at}
     WHERE chat_id = p_chat_id
       AND sender_id IS DISTINCT FROM p_user_id
       AND status <> 'read'
       AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    UPDATE public.chat_participants
       SET last_read_at = now()
     WHERE chat_id = p_chat_id AND user_id = p_user_id;
    RETURN QUERY SELECT v_updated;
END;
$function$;"""


GET_UNREAD_COUNT_FUNCTION = f"""
CREATE FUNCTION public.get_unread_count(p_chat_id uuid, p_user_id uuid)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
AS $function$
    SELECT count(*)
      FROM public.chat_messages m
     WHERE m.chat_id = p_chat_id
       AND m.sender_id IS DISTINCT FROM p_user_id
       AND m.deleted_at IS NULL
       AND m.created_at > coalesce(
            (SELECT p.last_read_at FROM public.chat_participants p
              WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id),
            '-infinity'::timestamptz);
$function$;
{access.grants_sql()}
COMMENT ON FUNCTION public.get_unread_count(uuid, uuid) IS
    'Messages from others in a chat newer than the reader''s last_read_at (badge counts).';"""


def upgrade() -> None:
    op.execute(
        snapshots.replace_function_sql(
            revision,
            MARK_MESSAGES_AS_READ,
            snapshots.Choice(HAS_UPDATED_AT, _mark_messages_as_read(True), _mark_messages_as_read(False)),
            keep_privileges=True,
        )
    )
    op.execute(snapshots.replace_function_sql(revision, GET_UNREAD_COUNT, GET_UNREAD_COUNT_FUNCTION, keep_privileges=False))


def downgrade() -> None:
    op.execute(snapshots.restore_function_sql(revision, GET_UNREAD_COUNT, snapshots.ABSENT))
    # Without a snapshot (stamped past this revision): staging's baseline function.
    op.execute(
        snapshots.restore_function_sql(
            revision, MARK_MESSAGES_AS_READ, baseline.MARK_MESSAGES_AS_READ_VOID + baseline.MARK_MESSAGES_AS_READ_GRANTS
        )
    )
