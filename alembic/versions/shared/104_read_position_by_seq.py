"""104_read_position_by_seq: a read position by seq; badge counts and mark functions O(unread) for the real caller.

Environment: both (shared, after 103_messaging_security)
Why: issue 12, and the plan's "Efficient unread counts ... Impact: ~50-80 %
faster", which 102 and 103 delivered only in a fresh session and as the
owner's planner sees it. Two defects of 103's functions:
* Cost. PL/pgSQL switches a statement to a cached generic plan after its
  first five executions in a session (PostgREST's pooled connections make
  every caller a long-lived session). In the generic plan of get_unread_count
  the condition ``created_at > coalesce($n, '-infinity')`` is not leakproof
  (PostgreSQL treats COALESCE as possibly leaky), and under RLS a qual that
  is not leakproof cannot become an index condition ahead of the policy's:
  the plan read the whole chat through idx_chat_messages_chat_created on
  chat_id alone and filtered it (issue 12: 300 ms on a 1M chat whatever the
  unread count; 0.5 ms as the owner). The policies' subquery is not the
  cause: it runs once per query as a hashed subplan over the caller's own
  participant rows (O(caller's chats), 7 buffers for 300 chats). The mark
  functions updated by ``status`` over the whole chat: O(chat) per call.
* Correctness. The read position was ``last_read_at = now()``, the mark
  transaction's start time, compared with ``created_at``, the sender's
  transaction start time. A message whose transaction started before a
  concurrent mark-as-read but committed after it has ``created_at`` below
  the new ``last_read_at``: it was counted as read without being seen.
This revision:
* adds ``chat_participants.last_read_seq bigint`` (nullable, no default: a
  catalog change, no rewrite): the highest seq the reader has read;
* redefines mark_messages_as_read (same name, arguments, result): it reads
  the chat's highest seq first, in a statement of its own; since 101 seqs are
  gapless and in commit order per chat, every message up to it is committed
  and visible to the next statement, and one committed later gets a higher
  seq. It marks read only the others' messages after the caller's previous
  seq position up to that seq (from the chat's start where there is none
  yet, as 103 did), and moves last_read_seq there (never backwards) and
  last_read_at to now() as before;
* redefines mark_messages_as_delivered: only the others' messages after the
  caller's read position (the ones before it are read already);
* redefines get_unread_count: messages from others after last_read_seq, one
  statement per kind of read position, each comparing columns with plain
  parameters only (leakproof), so the generic plan is an index range scan on
  (chat_id, seq). A participant who has not marked a chat read since this
  revision (last_read_seq NULL) is counted by last_read_at as before,
  exactly as at 103, until their next mark_messages_as_read;
* keeps every security property of 103: the caller checks (103's, from
  frozen/caller_checked_functions), search_path = '', EXECUTE for authenticated and
  service_role only, get_unread_count SECURITY INVOKER under the policies,
  the mark functions SECURITY DEFINER. authenticated's table SELECT covers
  the new column; it gets no UPDATE on it (the mark function moves it).
* keeps 103's direct read position: authenticated may still UPDATE its own
  last_read_at, and the badge follows it as at 103 (messages created after
  it are unread). A BEFORE UPDATE OF last_read_at trigger on
  chat_participants (trg_follow_direct_last_read_at, function
  public.follow_direct_last_read_at(), SECURITY INVOKER, search_path = '',
  EXECUTE revoked from PUBLIC and the API roles as 101 does: a trigger needs
  none) clears last_read_seq when an update changes last_read_at, leaves
  last_read_seq as it was, and is not mark_messages_as_read's own update
  (which sets the transaction-local chat_migrations.marking_read just
  before it and clears it just after); get_unread_count then counts by
  last_read_at until the next mark_messages_as_read, which then marks from
  the chat's start as 103 did (once: it leaves a seq position), so no message
  before a time position keeps a status behind it. Setting the marker by hand only keeps
  one's own seq position (the policy limits updates to one's own rows).
Live variants: a last_read_seq column that already exists as bigint is kept
(and kept by the downgrade); of another type, the upgrade stops, nothing
changed. updated_at is set by the mark functions only where it exists (103's
choice).
Locks: ACCESS EXCLUSIVE on chat_participants for ADD COLUMN (catalog only,
no scan) and CREATE TRIGGER (SHARE ROW EXCLUSIVE, covered), taken first with
lock_retries.lock_tables, waiting at most
lock_timeout and retried (the revision starts over, holding nothing between
attempts). Only where the column or the trigger is missing: the catalog is
read first, under no table lock, and a table that has both gets no lock
(tests/test_needless_locks.py); the trigger is created only where missing. Function definitions are catalog rows. The upgrade is one
transaction. The downgrade is two: the trigger (DROP TRIGGER: ACCESS EXCLUSIVE) and
the functions (under the same lock, taken first), then
DROP COLUMN (ACCESS EXCLUSIVE again, retried), so that a call of 104's
get_unread_count in flight at the first commit never meets a dropped column
(measured: in one transaction, such a call failed under load).
Downgrade verified: tests/test_unread_by_seq.py (dump at 103 equals dump
after 104's downgrade, both environments, and with the snapshots deleted;
the trigger and its function are gone) and
tests/test_exact_rollback.py (step by step on hand-written databases, and
through the --sql scripts); it restores the recorded functions (definition,
owner, ACL in its order, comment) and drops the column only if the upgrade
added it; the trigger function is dropped (restored, had one of its name
existed). Without snapshots (a database stamped at 104) it puts back 103's
definitions and drops the trigger and its function.

Revision ID: 104_read_position_by_seq
Revises: 103_messaging_security
"""

from typing import Sequence, Union

from alembic import op

from chat_migrations.frozen import caller_checked_functions as checked
from chat_migrations.frozen import read_position_functions as read_position
from chat_migrations.runtime import api_access, columns, lock_retries, requirements, snapshots
from chat_migrations.runtime.promises import Column, Function, OptionalColumn, Promises, Trigger

revision: str = "104_read_position_by_seq"
down_revision: Union[str, Sequence[str], None] = "103_messaging_security"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
PARTICIPANTS = "public.chat_participants"
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = (PARTICIPANTS,)

MARK_MESSAGES_AS_DELIVERED = "public.mark_messages_as_delivered(uuid, uuid)"
MARK_MESSAGES_AS_READ = "public.mark_messages_as_read(uuid, uuid)"
GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"
READ_SEQ_COLUMN = f"{PARTICIPANTS}.last_read_seq"
FOLLOW_LAST_READ_AT = "public.follow_direct_last_read_at()"
FOLLOW_TRIGGER = "trg_follow_direct_last_read_at"
# Set (transaction-local) by mark_messages_as_read around its own update of the reader's row only.
MARKING_READ = "chat_migrations.marking_read"


requires = requirements.Requirements(
    columns={
        PARTICIPANTS: ("chat_id", "user_id", "last_read_at"),
        "public.chat_messages": ("chat_id", "seq", "sender_id", "status", "deleted_at", "created_at"),
    },
    functions={
        MARK_MESSAGES_AS_DELIVERED: ("p_chat_id uuid, p_user_id uuid", "TABLE(updated_count bigint)"),
        MARK_MESSAGES_AS_READ: ("p_chat_id uuid, p_user_id uuid", "TABLE(updated_count bigint)"),
        GET_UNREAD_COUNT: ("p_chat_id uuid, p_user_id uuid", "bigint"),
    },
)

access = api_access.Access(
    # A trigger's function: nobody calls it (a trigger needs no EXECUTE of the user who fires it).
    functions={FOLLOW_LAST_READ_AT: {"PUBLIC": False, "anon": False, "authenticated": False, "service_role": False}},
    behaviour={
        GET_UNREAD_COUNT: "counts the others' messages after the reader's last_read_seq (by last_read_at until "
        "their first mark_messages_as_read after this revision); a message committed after a concurrent "
        "mark-as-read is counted unread; O(unread) in long-lived sessions",
        MARK_MESSAGES_AS_READ: "marks read the others' messages up to the chat's newest committed seq and moves "
        "last_read_seq there (and last_read_at to now()); O(messages since the caller's last read)",
        MARK_MESSAGES_AS_DELIVERED: "only the others' messages after the caller's read position; "
        "O(messages since the caller's last read)",
        PARTICIPANTS: "new column last_read_seq (readable by the participant, moved only by mark_messages_as_read); "
        "a direct UPDATE of last_read_at (authenticated may still make one) clears it, so the badge counts by "
        "last_read_at again, as at 103, until the next mark_messages_as_read",
        FOLLOW_LAST_READ_AT: "the BEFORE UPDATE OF last_read_at trigger's function on chat_participants; "
        "nobody may execute it",
    },
)

# Redefined with 103's names, arguments, results and security; the column, its trigger and the trigger's function are new.
promises = Promises((
    Column(PARTICIPANTS, "last_read_seq", "bigint", not_null=False),
    OptionalColumn("public.chat_messages", "updated_at"),  # set only where it exists
    Function(MARK_MESSAGES_AS_DELIVERED, "p_chat_id uuid, p_user_id uuid", "TABLE(updated_count bigint)",
             security_definer=True, search_path='""', caller_checked=True),
    Function(MARK_MESSAGES_AS_READ, "p_chat_id uuid, p_user_id uuid", "TABLE(updated_count bigint)",
             security_definer=True, search_path='""', caller_checked=True),
    Function(GET_UNREAD_COUNT, "p_chat_id uuid, p_user_id uuid", "bigint", security_definer=False, search_path='""',
             caller_checked=True),
    Function(FOLLOW_LAST_READ_AT, "", "trigger", security_definer=False, search_path='""'),
    Trigger(PARTICIPANTS, FOLLOW_TRIGGER, "BEFORE", ("UPDATE",), FOLLOW_LAST_READ_AT.split("(")[0]),
)) + access.promises()

# --- the column --------------------------------------------------------------------

COLUMN_KIND = snapshots.ADDED_COLUMN

ADD_COLUMN_SQL = f"""{snapshots.record_added_column_sql(revision, PARTICIPANTS, "last_read_seq")};
{columns.add_column_sql(revision, PARTICIPANTS, "last_read_seq", "bigint", comment=(
    "The highest seq of the chat this participant has read (mark_messages_as_read); "
    "NULL: not since revision 104, last_read_at counts."))}"""

DROP_COLUMN_SQL = columns.drop_added_column_sql(revision, PARTICIPANTS, "last_read_seq")


# --- the functions -----------------------------------------------------------------

# PL/pgSQL: the caller's read position as a seq (v_from, exclusive) and the chat's
# newest committed seq (v_latest). Inside the SECURITY DEFINER mark functions: no
# RLS, and every comparison is a column against a plain variable, so the generic
# plans are index range scans on (chat_id, seq) (uq_chat_messages_chat_id_seq).
_READ_POSITION = """
    SELECT p.last_read_seq, p.last_read_at INTO v_last_read_seq, v_last_read_at
      FROM public.chat_participants p
     WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
    -- A statement of its own: seqs are gapless and in commit order per chat (101),
    -- so every message up to v_latest is committed and visible to the statements
    -- below, and one committed after this point gets a higher seq.
    SELECT max(m.seq) INTO v_latest FROM public.chat_messages m WHERE m.chat_id = p_chat_id;
    IF v_last_read_seq IS NOT NULL THEN
        v_from := v_last_read_seq;
    ELSE
        -- No seq position (none yet since 104, or a direct update of last_read_at):
        -- from the chat's start, as 103 marked, so that no message before a time
        -- position keeps a status behind it. Once: the call leaves a seq position.
        v_from := 0;
    END IF;"""

_POSITION_VARIABLES = """
    v_last_read_seq bigint;
    v_last_read_at timestamptz;
    v_latest bigint;
    v_from bigint;
    v_updated bigint;"""


def _mark_messages_function(status: str, moves_from: str, up_to_latest: bool, then: str, comment: str,
                            touch_updated_at: bool) -> str:
    """A mark function: 103's caller check, the read position, then status moves forward on others' messages after it."""
    name = f"mark_messages_as_{status}"
    updated_at = ", updated_at = now()" if touch_updated_at else ""
    upper = "\n       AND seq <= v_latest" if up_to_latest else ""
    return f"""
CREATE OR REPLACE FUNCTION public.{name}(p_chat_id uuid, p_user_id uuid)
RETURNS TABLE(updated_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE{_POSITION_VARIABLES}
BEGIN{checked.caller_check(name, acts_as_user_argument=True)}{_READ_POSITION}
    UPDATE public.chat_messages
       SET status = '{status}'{updated_at}
     WHERE chat_id = p_chat_id
       AND seq > v_from{upper}
       AND sender_id IS DISTINCT FROM p_user_id
       AND status IN ({moves_from})
       AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;{then}
    RETURN QUERY SELECT v_updated;
END;
$function$;{checked.grants_and_comment(f"public.{name}(uuid, uuid)", comment)}"""


def _delivered(touch_updated_at: bool) -> str:
    return _mark_messages_function(
        "delivered", moves_from="'sent'", up_to_latest=False, then="", touch_updated_at=touch_updated_at,
        comment="Marks the other participants' sent messages after the caller's read position as delivered; "
        "returns how many changed. The caller acts only as themselves (p_user_id = auth.uid()) in a chat "
        "they participate in.",
    )


def _read(touch_updated_at: bool) -> str:
    return _mark_messages_function(
        "read", moves_from="'sent', 'delivered'", up_to_latest=True, touch_updated_at=touch_updated_at,
        then=f"""
    -- Its own update of the reader's row: the trigger {FOLLOW_TRIGGER} keeps the seq
    -- position for it (a direct change of last_read_at clears the position).
    PERFORM set_config('{MARKING_READ}', 'on', true);
    UPDATE public.chat_participants
       SET last_read_at = now(), last_read_seq = greatest(last_read_seq, v_latest)
     WHERE chat_id = p_chat_id AND user_id = p_user_id;
    PERFORM set_config('{MARKING_READ}', '', true);""",
        comment="Marks the other participants' messages in a chat read up to its newest committed seq and moves "
        "the reader's last_read_seq there (and last_read_at to now()); returns how many messages changed. "
        "The caller acts only as themselves (p_user_id = auth.uid()) in a chat they participate in.",
    )


# get_unread_count by read position: chat_migrations.frozen.read_position_functions (105 falls back to it).
GET_UNREAD_COUNT_BY_SEQ = read_position.GET_UNREAD_COUNT_BY_SEQ

# --- a direct UPDATE of last_read_at counts, as at 103 ---------------------------------

# SECURITY INVOKER: it only changes the row being updated (NEW), whoever updates it.
# An update that changes last_read_at and leaves last_read_seq as it was, other than
# mark_messages_as_read's own, is a read position by time again: get_unread_count counts
# by last_read_at until the next mark_messages_as_read. Only a session that can run SQL
# can set the marker itself, and then only keeps its own position by seq (the policy lets
# a participant update only their own rows).
FOLLOW_LAST_READ_AT_SQL = f"""
CREATE OR REPLACE FUNCTION {FOLLOW_LAST_READ_AT}
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $function$
BEGIN
    IF NEW.last_read_seq IS NOT DISTINCT FROM OLD.last_read_seq
       AND current_setting('{MARKING_READ}', true) IS DISTINCT FROM 'on' THEN
        NEW.last_read_seq := NULL;
    END IF;
    RETURN NEW;
END;
$function$;
COMMENT ON FUNCTION {FOLLOW_LAST_READ_AT} IS
    'A direct change of last_read_at (not mark_messages_as_read''s) clears last_read_seq: the badge counts by last_read_at, as before revision 104.';
{access.function_grants_sql(FOLLOW_LAST_READ_AT)}"""

HAS_FOLLOW_TRIGGER = (
    f"EXISTS (SELECT FROM pg_trigger WHERE tgrelid = '{PARTICIPANTS}'::regclass AND tgname = '{FOLLOW_TRIGGER}')"
)
HAS_READ_SEQ_COLUMN = (
    f"EXISTS (SELECT FROM pg_attribute WHERE attrelid = '{PARTICIPANTS}'::regclass AND attname = 'last_read_seq' "
    "AND attnum > 0 AND NOT attisdropped)"
)
# Nothing to change on the table: the column and the trigger are there (the functions need no table lock).
TABLE_AS_104_LEAVES_IT = f"{HAS_READ_SEQ_COLUMN} AND {HAS_FOLLOW_TRIGGER}"

# SHARE ROW EXCLUSIVE on the table, inside lock_tables' ACCESS EXCLUSIVE (taken first);
# only where the trigger is missing, so a rerun on a table that has it requests no lock.
CREATE_TRIGGER_SQL = f"""DO $trigger$ BEGIN IF NOT {HAS_FOLLOW_TRIGGER} THEN
    CREATE TRIGGER {FOLLOW_TRIGGER} BEFORE UPDATE OF last_read_at ON {PARTICIPANTS}
    FOR EACH ROW WHEN (OLD.last_read_at IS DISTINCT FROM NEW.last_read_at)
    EXECUTE FUNCTION {FOLLOW_LAST_READ_AT};
END IF; END $trigger$"""

# ACCESS EXCLUSIVE on the table, inside lock_tables' (taken first).
DROP_TRIGGER_SQL = f"DROP TRIGGER IF EXISTS {FOLLOW_TRIGGER} ON {PARTICIPANTS}"

DEFINITIONS = {
    MARK_MESSAGES_AS_DELIVERED: snapshots.Choice(checked.HAS_UPDATED_AT, _delivered(True), _delivered(False)),
    MARK_MESSAGES_AS_READ: snapshots.Choice(checked.HAS_UPDATED_AT, _read(True), _read(False)),
    GET_UNREAD_COUNT: GET_UNREAD_COUNT_BY_SEQ,
}


def _restore_function_sql(signature: str) -> str:
    """The recorded function back (its fallback 103's definition), the snapshot kept until the column is gone.

    Kept: a downgrade interrupted before its last transaction restores from
    the snapshot again (exactly), not from 103's definitions. A Choice (103's
    mark functions touch updated_at only where it exists) is chosen by the
    database, as 103's upgrade chose it.
    """
    # 104's own trigger function did not exist at 103.
    fallback = snapshots.ABSENT if signature == FOLLOW_LAST_READ_AT else checked.DEFINITIONS[signature]
    return snapshots.restore_function_sql(revision, signature, fallback, forget=False)


def upgrade() -> None:
    lock_retries.lock_tables(PARTICIPANTS, unless=TABLE_AS_104_LEAVES_IT)
    op.execute(ADD_COLUMN_SQL)
    for signature, definition in DEFINITIONS.items():
        op.execute(snapshots.redefine_function_sql(revision, signature, definition))
    op.execute(snapshots.redefine_function_sql(revision, FOLLOW_LAST_READ_AT, FOLLOW_LAST_READ_AT_SQL))
    op.execute(CREATE_TRIGGER_SQL)


def downgrade() -> None:
    # First transaction: the trigger and its function gone, 103's functions back,
    # which no longer read last_read_seq.
    lock_retries.lock_tables(PARTICIPANTS)
    op.execute(DROP_TRIGGER_SQL)
    op.execute(_restore_function_sql(FOLLOW_LAST_READ_AT))
    for signature in reversed(DEFINITIONS):
        op.execute(_restore_function_sql(signature))
    # Then the column, in a transaction of its own: a call of 104's function that
    # began before the first commit already holds its lock on chat_participants
    # (its caller check reads it), so the drop waits for it; dropped in the same
    # transaction, such a call would fail on the missing column.
    with op.get_context().autocommit_block():
        lock_retries.execute(DROP_COLUMN_SQL, table=PARTICIPANTS, in_transaction=False)
    # Last, with alembic's version update: the snapshots. Until then a rerun restores from them.
    for signature in (FOLLOW_LAST_READ_AT, *reversed(DEFINITIONS)):
        op.execute(snapshots.forget_sql(revision, "function", signature))
    op.execute(snapshots.forget_sql(revision, COLUMN_KIND, READ_SEQ_COLUMN))
