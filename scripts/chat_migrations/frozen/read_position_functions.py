"""get_unread_count by read position, as revision 104 defines it: frozen once shipped.

104 creates it; 105 restores it on downgrade where nothing was recorded. One
copy, imported by both, so no revision executes another's file.
"""

from chat_migrations.frozen import caller_checked_functions as checked

GET_UNREAD_COUNT = checked.GET_UNREAD_COUNT


def _count_after(position: str) -> str:
    return f"""
        SELECT count(*) INTO v_unread
          FROM public.chat_messages m
         WHERE m.chat_id = p_chat_id{position}
           AND m.sender_id IS DISTINCT FROM p_user_id
           AND m.deleted_at IS NULL;"""


# SECURITY INVOKER as at 103: the policies let a participant read the chat.
GET_UNREAD_COUNT_BY_SEQ = f"""
CREATE OR REPLACE FUNCTION public.get_unread_count(p_chat_id uuid, p_user_id uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $function$
DECLARE
    v_last_read_seq bigint;
    v_last_read_at timestamptz;
    v_unread bigint;
BEGIN{checked.caller_check("get_unread_count", acts_as_user_argument=True)}
    SELECT p.last_read_seq, p.last_read_at INTO v_last_read_seq, v_last_read_at
      FROM public.chat_participants p
     WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
    -- One statement per kind of position, each comparing columns with plain
    -- variables only: leakproof, so under RLS even the generic plan PL/pgSQL
    -- caches after five calls reads only the unread end of the chat (no
    -- coalesce() in a condition: PostgreSQL does not treat it as leakproof).
    IF v_last_read_seq IS NOT NULL THEN{_count_after(chr(10) + "           AND m.seq > v_last_read_seq")}
    ELSIF v_last_read_at IS NOT NULL THEN{_count_after(chr(10) + "           AND m.created_at > v_last_read_at")}
    ELSE{_count_after("")}
    END IF;
    RETURN v_unread;
END;
$function$;{checked.grants_and_comment(GET_UNREAD_COUNT,
    "Messages from others in a chat after the reader's last_read_seq (before their first mark as read since "
    "revision 104: newer than last_read_at), not deleted (badge counts). The caller asks only for themselves "
    "(p_user_id = auth.uid()) in a chat they participate in.")}"""
