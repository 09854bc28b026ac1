"""The messaging functions with a caller check, as the shared security revision shipped them: frozen.

mark_messages_as_delivered, mark_messages_as_read, get_unread_count and
get_latest_seq: search_path = '', a caller check (p_user_id = auth.uid() and
participation in the chat, else SQLSTATE 42501; roles that bypass RLS act for
anyone), EXECUTE for authenticated and service_role only. The revision that
installs them and a later one that reuses the caller check (and falls back to
these definitions when its downgrade has no snapshot) both import them from
here, so neither executes the other's file. Never edited once shipped.
"""

from __future__ import annotations

from chat_migrations.runtime import api_access, snapshots

MARK_MESSAGES_AS_DELIVERED = "public.mark_messages_as_delivered(uuid, uuid)"
MARK_MESSAGES_AS_READ = "public.mark_messages_as_read(uuid, uuid)"
GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"
GET_LATEST_SEQ = "public.get_latest_seq(uuid)"
FUNCTIONS = (MARK_MESSAGES_AS_DELIVERED, MARK_MESSAGES_AS_READ, GET_UNREAD_COUNT, GET_LATEST_SEQ)

# Who may execute them: of PUBLIC and the API roles, authenticated and service_role only.
CALLERS_ONLY = {"PUBLIC": False, "anon": False, "authenticated": True, "service_role": True}
_GRANTS = api_access.Access(functions={signature: CALLERS_ONLY for signature in FUNCTIONS})

HAS_UPDATED_AT = (
    "EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'public.chat_messages'::regclass "
    "AND attname = 'updated_at' AND NOT attisdropped)"
)


# The role that made the call: Supabase's API switches to the JWT's role with
# SET ROLE, which SECURITY DEFINER leaves visible in the "role" setting; a
# direct connection keeps its login role. Roles that bypass RLS (service_role,
# the owner, superusers) act for anyone, like the tables let them.
_CALLER_ACTS_FOR_ANYONE = """coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
                   WHERE r.rolname = coalesce(nullif(current_setting('role'), 'none'), session_user)), false)"""


def caller_check(function: str, *, acts_as_user_argument: bool) -> str:
    """PL/pgSQL: stop (SQLSTATE 42501, nothing changed) unless the caller may act here."""
    impersonation = f"""
        IF p_user_id IS DISTINCT FROM auth.uid() THEN
            RAISE EXCEPTION '{function}: p_user_id % is not the signed-in user (%); a caller can act only as themselves',
                p_user_id, coalesce(auth.uid()::text, 'none') USING ERRCODE = 'insufficient_privilege';
        END IF;""" if acts_as_user_argument else ""
    return f"""
    IF NOT {_CALLER_ACTS_FOR_ANYONE} THEN{impersonation}
        IF NOT EXISTS (SELECT FROM public.chat_participants p
                        WHERE p.chat_id = p_chat_id AND p.user_id = auth.uid()) THEN
            RAISE EXCEPTION '{function}: the signed-in user is not a participant of chat %', p_chat_id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;"""


def grants_and_comment(signature: str, comment: str) -> str:
    """SQL after a definition: EXECUTE for the callers only, and the function's comment."""
    return f"\n{_GRANTS.function_grants_sql(signature)}\nCOMMENT ON FUNCTION {signature} IS '{comment.replace(chr(39), chr(39) * 2)}';"


def _mark_messages_function(status: str, moves_from: str, then: str, comment: str, touch_updated_at: bool) -> str:
    """A mark function: the caller's check, then status moves forward on others' messages.

    SECURITY DEFINER: it changes messages the caller did not send, which RLS
    and the column privileges do not let a user do directly.
    """
    name = f"mark_messages_as_{status}"
    updated_at = ", updated_at = now()" if touch_updated_at else ""
    return f"""
CREATE OR REPLACE FUNCTION public.{name}(p_chat_id uuid, p_user_id uuid)
RETURNS TABLE(updated_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_updated bigint;
BEGIN{caller_check(name, acts_as_user_argument=True)}
    UPDATE public.chat_messages
       SET status = '{status}'{updated_at}
     WHERE chat_id = p_chat_id
       AND sender_id IS DISTINCT FROM p_user_id
       AND status IN ({moves_from})
       AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;{then}
    RETURN QUERY SELECT v_updated;
END;
$function$;{grants_and_comment(f"public.{name}(uuid, uuid)", comment)}"""


def _delivered(touch_updated_at: bool) -> str:
    return _mark_messages_function(
        "delivered", moves_from="'sent'", then="", touch_updated_at=touch_updated_at,
        comment="Marks the other participants' sent messages in a chat as delivered; returns how many changed. "
        "The caller acts only as themselves (p_user_id = auth.uid()) in a chat they participate in.",
    )


def _read(touch_updated_at: bool) -> str:
    return _mark_messages_function(
        "read", moves_from="'sent', 'delivered'", touch_updated_at=touch_updated_at,
        then="""
    UPDATE public.chat_participants
       SET last_read_at = now()
     WHERE chat_id = p_chat_id AND user_id = p_user_id;""",
        comment="Marks the other participants' messages in a chat as read and moves the reader's last_read_at; "
        "returns how many messages changed. The caller acts only as themselves (p_user_id = auth.uid()) "
        "in a chat they participate in.",
    )


# SECURITY INVOKER: RLS already lets a participant read the chat's messages and
# their own participant row, so the function needs no privilege of its own.
GET_UNREAD_COUNT_CHECKED = f"""
CREATE OR REPLACE FUNCTION public.get_unread_count(p_chat_id uuid, p_user_id uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $function$
DECLARE
    v_last_read_at timestamptz;
    v_unread bigint;
BEGIN{caller_check("get_unread_count", acts_as_user_argument=True)}
    SELECT p.last_read_at INTO v_last_read_at
      FROM public.chat_participants p
     WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
    -- Its own statement, so it is planned with the reader's actual last_read_at
    -- and reads only the unread end of idx_chat_messages_chat_created.
    SELECT count(*) INTO v_unread
      FROM public.chat_messages m
     WHERE m.chat_id = p_chat_id
       AND m.created_at > coalesce(v_last_read_at, '-infinity'::timestamptz)
       AND m.sender_id IS DISTINCT FROM p_user_id
       AND m.deleted_at IS NULL;
    RETURN v_unread;
END;
$function$;{grants_and_comment(GET_UNREAD_COUNT,
    "Messages from others in a chat newer than the reader's last_read_at, not deleted (badge counts). "
    "The caller asks only for themselves (p_user_id = auth.uid()) in a chat they participate in.")}"""

GET_LATEST_SEQ_CHECKED = f"""
CREATE OR REPLACE FUNCTION public.get_latest_seq(p_chat_id uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $function$
BEGIN{caller_check("get_latest_seq", acts_as_user_argument=False)}
    RETURN (SELECT coalesce(max(m.seq), 0) FROM public.chat_messages m WHERE m.chat_id = p_chat_id);
END;
$function$;{grants_and_comment(GET_LATEST_SEQ,
    "The highest seq of a chat (deleted messages keep theirs), 0 for none. "
    "Only for a chat the caller participates in.")}"""

DEFINITIONS = {
    MARK_MESSAGES_AS_DELIVERED: snapshots.Choice(HAS_UPDATED_AT, _delivered(True), _delivered(False)),
    MARK_MESSAGES_AS_READ: snapshots.Choice(HAS_UPDATED_AT, _read(True), _read(False)),
    GET_UNREAD_COUNT: GET_UNREAD_COUNT_CHECKED,
    GET_LATEST_SEQ: GET_LATEST_SEQ_CHECKED,
}
