"""The messaging functions and policies the frontend calls, as they are at head.

One shared place for the SQL of the shared revisions 101-103, the tests and
drift checks. The frontend calls the functions through Supabase's API
(``/rest/v1/rpc/<name>``), which runs each call as the JWT's role
(``authenticated``, ``service_role``) with the caller's claims in
``request.jwt.claims``; ``auth.uid()`` reads the caller's id from them.

The contract (README, "The messaging functions: contract and security"):

* names, arguments and return types are unchanged: the frontend calls
  ``mark_messages_as_read(p_chat_id, p_user_id)`` and reads ``updated_count``;
* a caller acts only as themselves and only in chats they participate in:
  otherwise the function changes nothing and raises SQLSTATE 42501
  (insufficient_privilege; PostgREST answers 403) naming the reason;
  ``service_role`` and the owner (roles that bypass RLS anyway) act for anyone;
* every function pins ``search_path = ''`` and names every object with its
  schema; none is executable by ``anon`` or ``PUBLIC``;
* ``seq`` is the server's: every insert takes the next seq of its chat, one
  sender per chat at a time until commit, so seqs are gapless and in commit
  order; a value sent by the client is ignored.
"""

from __future__ import annotations

import re

from . import baseline

ASSIGN_MESSAGE_SEQ = "public.assign_message_seq()"
MARK_MESSAGES_AS_DELIVERED = "public.mark_messages_as_delivered(uuid, uuid)"
MARK_MESSAGES_AS_READ = baseline.MARK_MESSAGES_AS_READ
GET_UNREAD_COUNT = baseline.GET_UNREAD_COUNT
GET_LATEST_SEQ = "public.get_latest_seq(uuid)"

# What the frontend calls through /rest/v1/rpc (the trigger function is not callable).
API_FUNCTIONS = (MARK_MESSAGES_AS_DELIVERED, MARK_MESSAGES_AS_READ, GET_UNREAD_COUNT, GET_LATEST_SEQ)

# SECURITY DEFINER functions authenticated may execute, and why that is safe
# (Supabase lint 0029 flags every such function; these check the caller first).
CALLER_CHECKED_SECURITY_DEFINER = {
    MARK_MESSAGES_AS_DELIVERED: (
        "changes the status of other participants' messages, which RLS must not let a user do directly; "
        "it first requires p_user_id = auth.uid() and that the caller participates in p_chat_id, "
        "and only moves status forward"
    ),
    MARK_MESSAGES_AS_READ: (
        "changes the status of other participants' messages and the caller's own last_read_at; "
        "it first requires p_user_id = auth.uid() and that the caller participates in p_chat_id, "
        "and only moves status forward"
    ),
}

# The index that keeps get_unread_count from reading the whole chat (revision 102).
UNREAD_INDEX = "idx_chat_messages_chat_created"
UNREAD_INDEX_COLUMNS = "chat_id, created_at"


# The downgrades' fallbacks for a database stamped past a revision (no
# snapshot): the state at 100_converged, read from the frozen baseline, whose
# prod functions and the policies of both environments are the converged ones.
_CONVERGED = baseline.create_sql("prod")


def previous_definition(signature: str) -> str:
    """The function at 100_converged with its grants and comment, as CREATE OR REPLACE.

    CREATE OR REPLACE so that a trigger depending on the function stays in
    place; a function without a comment then gets none explicitly.
    """
    name = re.escape(signature.split("(")[0])
    definition = re.search(rf"^CREATE FUNCTION {name}\(.*?^\$function\$;", _CONVERGED, re.S | re.M)
    if definition is None:
        raise ValueError(f"{signature} is not a function of the baseline")
    grants = re.findall(rf"^GRANT EXECUTE ON FUNCTION {name}\(.*?;$", _CONVERGED, re.M)
    comment = re.search(rf"^COMMENT ON FUNCTION {name}\(.*?;$", _CONVERGED, re.S | re.M)
    return "\n".join([
        definition.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1),
        *grants,
        comment.group(0) if comment else f"COMMENT ON FUNCTION {signature} IS NULL;",
    ])


def previous_table_access(table: str) -> str:
    """The table's policies at 100_converged, and UPDATE on the whole table for authenticated again."""
    policies = re.findall(rf"^CREATE POLICY \w+ ON {re.escape(table)} .*?;$", _CONVERGED, re.S | re.M)
    if not policies:
        raise ValueError(f"{table} has no policies in the baseline")
    whole_table_update = (
        [f"REVOKE UPDATE ON {table} FROM authenticated;", f"GRANT UPDATE ON {table} TO authenticated;"]
        if table in UPDATABLE_COLUMNS
        else []
    )
    return "\n".join([*policies, *whole_table_update])


# --- the seq trigger (revision 101) -------------------------------------------

ASSIGN_MESSAGE_SEQ_SERIALISED = """
CREATE OR REPLACE FUNCTION public.assign_message_seq()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $function$
BEGIN
    -- Senders to one chat take turns until they commit, so seqs are gapless and
    -- in commit order. The two-key form (table, chat) never meets the
    -- migration's one-key session lock.
    PERFORM pg_advisory_xact_lock(TG_RELID::integer, hashtext(NEW.chat_id::text));
    -- A statement of its own: under READ COMMITTED it takes a new snapshot after
    -- the lock is granted, so it sees the previous sender's committed message.
    SELECT coalesce(max(m.seq), 0) + 1 INTO NEW.seq
      FROM public.chat_messages m
     WHERE m.chat_id = NEW.chat_id;
    RETURN NEW;
END;
$function$;
COMMENT ON FUNCTION public.assign_message_seq() IS
    'Gives each new message the next seq of its chat (gapless, in commit order); a seq sent by the client is ignored.';"""


# --- the API functions (revision 103) -----------------------------------------

# The role that made the call: Supabase's API switches to the JWT's role with
# SET ROLE, which SECURITY DEFINER leaves visible in the "role" setting; a
# direct connection keeps its login role. Roles that bypass RLS (service_role,
# the owner, superusers) act for anyone, like the tables let them.
_CALLER_ACTS_FOR_ANYONE = """coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
                   WHERE r.rolname = coalesce(nullif(current_setting('role'), 'none'), session_user)), false)"""


def _caller_check(function: str, *, acts_as_user_argument: bool) -> str:
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


def _api_grants(signature: str, comment: str) -> str:
    # anon by name too: Supabase's default privileges grant it EXECUTE directly.
    return f"""
REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION {signature} TO authenticated, service_role;
COMMENT ON FUNCTION {signature} IS '{comment.replace("'", "''")}';"""


def _mark_messages_function(status: str, moves_from: str, then: str, comment: str) -> str:
    """A mark function: the caller's check, then status moves forward on others' messages.

    SECURITY DEFINER: it changes messages the caller did not send, which RLS
    and the column privileges do not let a user do directly.
    """
    name = f"mark_messages_as_{status}"
    return f"""
CREATE OR REPLACE FUNCTION public.{name}(p_chat_id uuid, p_user_id uuid)
RETURNS TABLE(updated_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_updated bigint;
BEGIN{_caller_check(name, acts_as_user_argument=True)}
    UPDATE public.chat_messages
       SET status = '{status}', updated_at = now()
     WHERE chat_id = p_chat_id
       AND sender_id IS DISTINCT FROM p_user_id
       AND status IN ({moves_from})
       AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;{then}
    RETURN QUERY SELECT v_updated;
END;
$function$;{_api_grants(f"public.{name}(uuid, uuid)", comment)}"""


MARK_MESSAGES_AS_DELIVERED_CHECKED = _mark_messages_function(
    "delivered",
    moves_from="'sent'",
    then="",
    comment="Marks the other participants' sent messages in a chat as delivered; returns how many changed. "
    "The caller acts only as themselves (p_user_id = auth.uid()) in a chat they participate in.",
)

MARK_MESSAGES_AS_READ_CHECKED = _mark_messages_function(
    "read",
    moves_from="'sent', 'delivered'",
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
BEGIN{_caller_check("get_unread_count", acts_as_user_argument=True)}
    SELECT p.last_read_at INTO v_last_read_at
      FROM public.chat_participants p
     WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
    -- Its own statement, so it is planned with the reader's actual last_read_at
    -- and reads only the unread end of {UNREAD_INDEX}.
    SELECT count(*) INTO v_unread
      FROM public.chat_messages m
     WHERE m.chat_id = p_chat_id
       AND m.created_at > coalesce(v_last_read_at, '-infinity'::timestamptz)
       AND m.sender_id IS DISTINCT FROM p_user_id
       AND m.deleted_at IS NULL;
    RETURN v_unread;
END;
$function$;{_api_grants(GET_UNREAD_COUNT,
    "Messages from others in a chat newer than the reader's last_read_at, not deleted (badge counts). "
    "The caller asks only for themselves (p_user_id = auth.uid()) in a chat they participate in.")}"""

GET_LATEST_SEQ_CHECKED = f"""
CREATE OR REPLACE FUNCTION public.get_latest_seq(p_chat_id uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $function$
BEGIN{_caller_check("get_latest_seq", acts_as_user_argument=False)}
    RETURN (SELECT coalesce(max(m.seq), 0) FROM public.chat_messages m WHERE m.chat_id = p_chat_id);
END;
$function$;{_api_grants(GET_LATEST_SEQ,
    "The highest seq of a chat (deleted messages keep theirs), 0 for none. "
    "Only for a chat the caller participates in.")}"""

CHECKED_DEFINITIONS = {
    MARK_MESSAGES_AS_DELIVERED: MARK_MESSAGES_AS_DELIVERED_CHECKED,
    MARK_MESSAGES_AS_READ: MARK_MESSAGES_AS_READ_CHECKED,
    GET_UNREAD_COUNT: GET_UNREAD_COUNT_CHECKED,
    GET_LATEST_SEQ: GET_LATEST_SEQ_CHECKED,
}


# --- policies and column privileges (revision 103) -----------------------------

# The caller's chats, computed once per query: the (select auth.uid()) form
# Supabase recommends is evaluated once, not per row (lint 0003).
_CALLERS_CHATS = "(SELECT p.chat_id FROM public.chat_participants p WHERE p.user_id = (SELECT auth.uid()))"
_CALLER = "(SELECT auth.uid())"

# One permissive policy per table, command and role (lint 0006); no write policy is `true`.
POLICIES_SQL = f"""
CREATE POLICY chats_select_participant ON public.chats FOR SELECT TO authenticated
    USING (id IN {_CALLERS_CHATS});
CREATE POLICY chats_insert_creator ON public.chats FOR INSERT TO authenticated
    WITH CHECK (created_by = {_CALLER});
CREATE POLICY chat_participants_select_own ON public.chat_participants FOR SELECT TO authenticated
    USING (user_id = {_CALLER});
CREATE POLICY chat_participants_update_own ON public.chat_participants FOR UPDATE TO authenticated
    USING (user_id = {_CALLER}) WITH CHECK (user_id = {_CALLER});
CREATE POLICY chat_messages_select_participant ON public.chat_messages FOR SELECT TO authenticated
    USING (chat_id IN {_CALLERS_CHATS});
CREATE POLICY chat_messages_insert_participant ON public.chat_messages FOR INSERT TO authenticated
    WITH CHECK (sender_id = {_CALLER} AND chat_id IN {_CALLERS_CHATS});
CREATE POLICY chat_messages_update_own ON public.chat_messages FOR UPDATE TO authenticated
    USING (sender_id = {_CALLER} AND chat_id IN {_CALLERS_CHATS}) WITH CHECK (sender_id = {_CALLER});"""

# RLS chooses the rows a user may update, column privileges the columns: a
# sender edits or soft-deletes their own message; seq, status, chat, sender
# and timestamps of creation belong to the server and the functions above. A
# participant moves only their own last_read_at (not chat_id: that would join
# any chat).
UPDATABLE_COLUMNS = {
    "public.chat_messages": ("message_text", "media_urls", "updated_at", "deleted_at"),
    "public.chat_participants": ("last_read_at",),
}

COLUMN_PRIVILEGES_SQL = "\n".join(
    f"REVOKE UPDATE ON {table} FROM authenticated;\n"
    f"GRANT UPDATE ({', '.join(columns)}) ON {table} TO authenticated;"
    for table, columns in UPDATABLE_COLUMNS.items()
)
