"""The chat schema of each environment as the migration plan observed it.

Frozen: the baseline revisions, the local lookalikes and the tests build the
pre-migration databases from this module, so it describes the past and must
not change. Later changes are new revisions.

Where the plan contradicts itself, its detailed comparison tables and the
appendix's query evidence win over the summary (see README, "Baselines"):

* prod: chat_messages.chat_id / sender_id and chat_participants.chat_id /
  user_id nullable; mark_messages_as_read returns TABLE(updated_count bigint);
  get_unread_count exists; both idx_chat_messages_sender_id and
  idx_chat_messages_reply_to exist.
* staging: all four NOT NULL; mark_messages_as_read returns void; no
  get_unread_count; neither sender_id nor reply_to index.

What the plan leaves out (the chats table, created_at, foreign keys, RLS,
grants, publication) is filled in the way a Supabase chat schema has it.
"""

from __future__ import annotations

from chat_migrations.runtime import promises as declared

ENVIRONMENTS = ("prod", "staging")

MARK_MESSAGES_AS_READ = "public.mark_messages_as_read(uuid, uuid)"
GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"

_MARK_READ_COMMENT = (
    "COMMENT ON FUNCTION public.mark_messages_as_read(uuid, uuid) IS "
    "'Marks the other participants'' messages in a chat as read and moves the reader''s last_read_at.';"
)

# The body both environments share; only the return type differed.
_MARK_READ_UPDATES = """
    UPDATE public.chat_messages
       SET status = 'read', updated_at = now()
     WHERE chat_id = p_chat_id
       AND sender_id IS DISTINCT FROM p_user_id
       AND status <> 'read'
       AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    UPDATE public.chat_participants
       SET last_read_at = now()
     WHERE chat_id = p_chat_id AND user_id = p_user_id;"""

MARK_MESSAGES_AS_READ_RETURNING_COUNT = f"""
CREATE FUNCTION public.mark_messages_as_read(p_chat_id uuid, p_user_id uuid)
RETURNS TABLE(updated_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
AS $function$
DECLARE
    v_updated bigint;
BEGIN{_MARK_READ_UPDATES}
    RETURN QUERY SELECT v_updated;
END;
$function$;"""

MARK_MESSAGES_AS_READ_VOID = f"""
CREATE FUNCTION public.mark_messages_as_read(p_chat_id uuid, p_user_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
AS $function$
DECLARE
    v_updated bigint;
BEGIN{_MARK_READ_UPDATES}
END;
$function$;"""

MARK_MESSAGES_AS_READ_GRANTS = f"""
GRANT EXECUTE ON FUNCTION public.mark_messages_as_read(uuid, uuid) TO authenticated, service_role;
{_MARK_READ_COMMENT}"""

GET_UNREAD_COUNT_FUNCTION = """
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
GRANT EXECUTE ON FUNCTION public.get_unread_count(uuid, uuid) TO authenticated, service_role;
COMMENT ON FUNCTION public.get_unread_count(uuid, uuid) IS
    'Messages from others in a chat newer than the reader''s last_read_at (badge counts).';"""

_TABLES = """
CREATE TABLE public.chats (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title text,
    is_group boolean NOT NULL DEFAULT false,
    created_by uuid REFERENCES auth.users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_chats_created_by ON public.chats USING btree (created_by);

CREATE TABLE public.chat_participants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    chat_id uuid{participant_keys} REFERENCES public.chats (id) ON DELETE CASCADE,
    user_id uuid{participant_keys} REFERENCES auth.users (id) ON DELETE CASCADE,
    joined_at timestamptz NOT NULL DEFAULT now(),
    last_read_at timestamptz,
    CONSTRAINT uq_chat_participants_chat_user UNIQUE (chat_id, user_id)
);
CREATE INDEX idx_chat_participants_last_read ON public.chat_participants USING btree (user_id, last_read_at);

CREATE TABLE public.chat_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    chat_id uuid{message_keys} REFERENCES public.chats (id) ON DELETE CASCADE,
    sender_id uuid{message_keys} REFERENCES auth.users (id) ON DELETE CASCADE,
    message_text text,
    seq bigint,
    client_generated_id uuid,
    status text NOT NULL DEFAULT 'sent',
    reply_to_message_id uuid REFERENCES public.chat_messages (id) ON DELETE SET NULL,
    media_urls text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT chat_messages_status_check CHECK (status IN ('sent', 'delivered', 'read')),
    CONSTRAINT uq_chat_messages_chat_id_seq UNIQUE (chat_id, seq),
    CONSTRAINT uq_chat_messages_client_generated UNIQUE (client_generated_id)
);
CREATE INDEX idx_chat_messages_chat_id_seq_desc ON public.chat_messages USING btree (chat_id, seq DESC);
CREATE INDEX idx_chat_messages_status ON public.chat_messages USING btree (status);
"""

_PROD_ONLY_INDEXES = """
CREATE INDEX idx_chat_messages_sender_id ON public.chat_messages USING btree (sender_id);
CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages USING btree (reply_to_message_id);
"""

_SHARED_FUNCTIONS = """
CREATE FUNCTION public.assign_message_seq()
RETURNS trigger
LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW.seq IS NULL THEN
        SELECT coalesce(max(seq), 0) + 1 INTO NEW.seq
          FROM public.chat_messages
         WHERE chat_id = NEW.chat_id;
    END IF;
    RETURN NEW;
END;
$function$;
CREATE TRIGGER trg_assign_message_seq BEFORE INSERT ON public.chat_messages
    FOR EACH ROW EXECUTE FUNCTION public.assign_message_seq();

CREATE FUNCTION public.mark_messages_as_delivered(p_chat_id uuid, p_user_id uuid)
RETURNS TABLE(updated_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
AS $function$
DECLARE
    v_updated bigint;
BEGIN
    UPDATE public.chat_messages
       SET status = 'delivered', updated_at = now()
     WHERE chat_id = p_chat_id
       AND sender_id IS DISTINCT FROM p_user_id
       AND status = 'sent'
       AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    RETURN QUERY SELECT v_updated;
END;
$function$;
GRANT EXECUTE ON FUNCTION public.mark_messages_as_delivered(uuid, uuid) TO authenticated, service_role;

CREATE FUNCTION public.get_latest_seq(p_chat_id uuid)
RETURNS bigint
LANGUAGE sql STABLE
AS $function$
    SELECT coalesce(max(seq), 0) FROM public.chat_messages WHERE chat_id = p_chat_id;
$function$;
GRANT EXECUTE ON FUNCTION public.get_latest_seq(uuid) TO authenticated, service_role;
"""

_SECURITY_AND_REALTIME = """
ALTER TABLE public.chats ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_participants ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_messages ENABLE ROW LEVEL SECURITY;

CREATE POLICY chats_select_participant ON public.chats FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM public.chat_participants p
                    WHERE p.chat_id = chats.id AND p.user_id = auth.uid()));
CREATE POLICY chats_insert_creator ON public.chats FOR INSERT TO authenticated
    WITH CHECK (created_by = auth.uid());

CREATE POLICY chat_participants_select_own ON public.chat_participants FOR SELECT TO authenticated
    USING (user_id = auth.uid());
CREATE POLICY chat_participants_update_own ON public.chat_participants FOR UPDATE TO authenticated
    USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid());

CREATE POLICY chat_messages_select_participant ON public.chat_messages FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM public.chat_participants p
                    WHERE p.chat_id = chat_messages.chat_id AND p.user_id = auth.uid()));
CREATE POLICY chat_messages_insert_participant ON public.chat_messages FOR INSERT TO authenticated
    WITH CHECK (sender_id = auth.uid() AND EXISTS (SELECT 1 FROM public.chat_participants p
                    WHERE p.chat_id = chat_messages.chat_id AND p.user_id = auth.uid()));
CREATE POLICY chat_messages_update_participant ON public.chat_messages FOR UPDATE TO authenticated
    USING (EXISTS (SELECT 1 FROM public.chat_participants p
                    WHERE p.chat_id = chat_messages.chat_id AND p.user_id = auth.uid()));

GRANT SELECT, INSERT, UPDATE ON public.chats, public.chat_participants, public.chat_messages TO authenticated;
GRANT ALL ON public.chats, public.chat_participants, public.chat_messages TO service_role;

ALTER TABLE public.chat_messages REPLICA IDENTITY FULL;
ALTER TABLE public.chat_participants REPLICA IDENTITY FULL;
ALTER PUBLICATION supabase_realtime ADD TABLE public.chat_messages, public.chat_participants;
"""


def create_sql(environment: str) -> str:
    """DDL that turns an empty (platform-only) database into the observed environment."""
    _check(environment)
    prod = environment == "prod"
    nullable_in_prod = "" if prod else " NOT NULL"
    parts = [
        _TABLES.format(participant_keys=nullable_in_prod, message_keys=nullable_in_prod),
        _PROD_ONLY_INDEXES if prod else "",
        _SHARED_FUNCTIONS,
        MARK_MESSAGES_AS_READ_RETURNING_COUNT if prod else MARK_MESSAGES_AS_READ_VOID,
        MARK_MESSAGES_AS_READ_GRANTS,
        GET_UNREAD_COUNT_FUNCTION if prod else "",
        _SECURITY_AND_REALTIME,
    ]
    return "\n".join(part.strip("\n") for part in parts if part)


# Stops a downgrade past the baseline while the chat tables hold rows; env.py
# runs it before the first step of such a downgrade, so nothing is undone first.
REFUSE_WITH_ROWS_SQL = """DO $refuse$
BEGIN
    IF EXISTS (SELECT FROM public.chats) OR EXISTS (SELECT FROM public.chat_participants)
       OR EXISTS (SELECT FROM public.chat_messages) THEN
        RAISE EXCEPTION 'refusing to downgrade past the baseline: the chat tables hold rows, and this would drop them with the whole chat schema. Nothing was changed';
    END IF;
END
$refuse$"""


def drop_sql(environment: str) -> str:
    """The exact reverse of create_sql, back to a platform-only database.

    Only for a database that Alembic built from nothing: a live database was
    adopted with ``stamp`` and holds rows, so this refuses rather than drop
    the whole chat schema with its data.
    """
    _check(environment)
    functions = [
        "public.mark_messages_as_read(uuid, uuid)",
        "public.mark_messages_as_delivered(uuid, uuid)",
        "public.get_latest_seq(uuid)",
        "public.assign_message_seq()",
    ]
    if environment == "prod":
        functions.append(GET_UNREAD_COUNT)
    refuse = REFUSE_WITH_ROWS_SQL + ";"
    why = "-- an empty database built from nothing (checked above) goes back to nothing\n"
    # Dropping the tables takes their indexes, policies, trigger and publication membership.
    statements = [
        refuse,
        f"{why}-- squawk-ignore ban-drop-table\nDROP TABLE public.chat_messages, public.chat_participants, public.chats;",
    ]
    statements += [f"{why}-- squawk-ignore ban-drop-function\nDROP FUNCTION {signature};" for signature in functions]
    return "\n".join(statements)


def _check(environment: str) -> None:
    if environment not in ENVIRONMENTS:
        raise ValueError(f"no observed baseline for environment {environment!r}")


# --- what the baselines promise ------------------------------------------------------------

_CHATS, _PARTICIPANTS, _MESSAGES = "public.chats", "public.chat_participants", "public.chat_messages"
_TIMESTAMP = "timestamp with time zone"


def promises(environment: str):
    """What a database at the environment's baseline guarantees, and the revisions after it rely on.

    The plan's columns by type (the keys' nullability is left open: the
    revisions set it where it differs), the keys by their columns, the
    foreign keys, the seq trigger, the messaging functions by signature and
    result (the revisions replace them in place), the Realtime tables. Not
    promised: indexes, policies, grants, function bodies (the revisions
    converge or replace each of them), nor anything the plan never names.
    """
    p = declared
    _check(environment)
    columns = {
        _CHATS: {"id": "uuid", "created_by": "uuid"},
        _PARTICIPANTS: {"id": "uuid", "chat_id": "uuid", "user_id": "uuid", "joined_at": _TIMESTAMP,
                        "last_read_at": _TIMESTAMP},
        _MESSAGES: {"id": "uuid", "chat_id": "uuid", "sender_id": "uuid", "message_text": "text", "seq": "bigint",
                    "client_generated_id": "uuid", "status": "text", "reply_to_message_id": "uuid",
                    "media_urls": "text[]", "deleted_at": _TIMESTAMP, "created_at": _TIMESTAMP},
    }
    functions = [
        p.Function("public.assign_message_seq()", "", "trigger"),
        p.Function("public.get_latest_seq(uuid)", "p_chat_id uuid", "bigint"),
        p.Function("public.mark_messages_as_delivered(uuid, uuid)", "p_chat_id uuid, p_user_id uuid",
                   "TABLE(updated_count bigint)"),
        p.Function(MARK_MESSAGES_AS_READ, "p_chat_id uuid, p_user_id uuid",
                   "TABLE(updated_count bigint)" if environment == "prod" else "void"),
    ]
    if environment == "prod":
        functions.append(p.Function(GET_UNREAD_COUNT, "p_chat_id uuid, p_user_id uuid", "bigint"))
    items = [
        p.Table(_CHATS),
        p.Table(_PARTICIPANTS, realtime=True),
        p.Table(_MESSAGES, realtime=True),
        *(p.Column(table, name, type_) for table, names in columns.items() for name, type_ in names.items()),
        *(p.Unique(table, ("id",), primary=True) for table in (_CHATS, _PARTICIPANTS, _MESSAGES)),
        p.Unique(_PARTICIPANTS, ("chat_id", "user_id"), because="a user is a participant of a chat once"),
        p.Unique(_MESSAGES, ("chat_id", "seq"),
                 because="the seq trigger's gapless seqs and the frontend's ordering rely on it; "
                 "without it a duplicate seq goes unnoticed"),
        p.Unique(_MESSAGES, ("client_generated_id",),
                 because="the frontend resends with upsert(onConflict: 'client_generated_id'), which fails "
                 "without a unique key there"),
        p.ForeignKey(_PARTICIPANTS, "chat_id", _CHATS),
        p.ForeignKey(_PARTICIPANTS, "user_id", "auth.users"),
        p.ForeignKey(_MESSAGES, "chat_id", _CHATS),
        p.ForeignKey(_MESSAGES, "sender_id", "auth.users"),
        p.ForeignKey(_MESSAGES, "reply_to_message_id", _MESSAGES),
        *functions,
        p.Trigger(_MESSAGES, "trg_assign_message_seq", "BEFORE", ("INSERT",), "public.assign_message_seq",
                  definition="CREATE TRIGGER trg_assign_message_seq BEFORE INSERT ON public.chat_messages "
                  "FOR EACH ROW EXECUTE FUNCTION public.assign_message_seq()",
                  because="new messages would get no seq"),
    ]
    return p.Promises(tuple(items))
