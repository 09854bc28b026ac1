"""105_constant_time_badges: badge counts that do not grow with unread, marks as HOT updates.

Environment: both (shared, after 104_read_position_by_seq)
Why: issue 19, items 2 and 3, measured as authenticated on a 1M-message chat:
* get_unread_count was O(unread) (2.0 ms at 0 unread, 193 ms at 100,000):
  104 counts the others' messages after the read position row by row. Since
  101 seqs are gapless and in commit order per chat, and since 104 the read
  position is a seq, the others' unread messages are
      (latest seq - position) - own messages after it - others' deleted after it,
  which costs O(own + deleted since the read position), not O(unread). The
  function reads the three in one snapshot (a STABLE function's statements
  share the caller's), so a send, delete or mark committing meanwhile is
  either wholly in or wholly out. Callers without a seq position (none yet,
  or a direct update of last_read_at) are counted as at 104.
* mark_messages_as_read rewrote every unread message with no HOT update
  (127-251 ms at 1,000 unread, 10-25 s at 100,000): idx_chat_messages_status
  indexes the column the marks change, so each update wrote a new entry in
  every index of the row; and a full page has no room for the new version
  on the same page anyway. No query of the project or the contract reads by
  status alone (the counts go by seq since 104, the marks by (chat_id, seq)).
This revision:
* builds idx_chat_messages_sender_chat_seq (sender_id, chat_id, seq), the
  caller's own messages after the position (sender first: with chat_id
  first, the marks' generic plan, which knows no chat, took it for a range
  on seq and read the whole chat: 1.4 s at 1,000 unread on a 1M chat), and
  idx_chat_messages_chat_deleted_seq (chat_id, seq) WHERE deleted_at IS NOT
  NULL, the deleted ones (neither names status: a mark stays HOT; setting
  deleted_at, rare, is not);
* redefines get_unread_count (same name, arguments, result, SECURITY
  INVOKER, 103's caller check, search_path = '', ACL and owner kept);
* drops idx_chat_messages_status, so that a mark changes no indexed column;
* sets chat_messages' fillfactor to 50 (where it is unset or higher): the
  marks update consecutive messages, a page at a time, so every row of a page
  needs room for its new version on that page. Pages written from now on keep
  half free (new messages take up to twice the heap); existing pages keep
  their packing until rewritten, and their marks, not HOT, still save the
  status index.
Cost: BENCHMARKS.md ("Badge counts, marks and the conversation list at
105"): on a 1M chat the count reads 21-26 buffers from 0 to 100,000
unread; a mark of 1,000 takes 22 ms (p50), of 100,000 0.59 s. Exact
for every caller; a message removed with DELETE (no API role may; the owner,
service_role or a cascade from auth.users) after a reader's position leaves
a gap in the seqs and that reader's badge one too high until their next
mark_messages_as_read.
Locks: CREATE INDEX CONCURRENTLY and DROP INDEX CONCURRENTLY (SHARE UPDATE
EXCLUSIVE: reads and writes go on), outside a transaction, each retried;
ALTER TABLE ... SET (fillfactor) takes SHARE UPDATE EXCLUSIVE, briefly
(catalog only, no rewrite), and none when the setting is already there;
the function is a catalog row.
Downgrade verified: tests/test_unread_by_seq.py (dump at 104 equals dump
after 105's downgrade, both environments; without snapshots, a database
stamped at 105, equal once the two new indexes are dropped by hand, which
online_ddl keeps when nothing says the upgrade built them) and
tests/test_render_sql.py (the --sql rendering): the recorded function
(definition, owner, ACL, comment; 104's without a snapshot), the recorded
fillfactor (RESET when there was none), the status index rebuilt
concurrently with its recorded definition (the converged one without a
snapshot), the two indexes dropped concurrently if the upgrade built them.

Revision ID: 105_constant_time_badges
Revises: 104_read_position_by_seq
"""

from typing import Sequence, Union

from alembic import op
from sqlalchemy import text

from chat_migrations.frozen import caller_checked_functions as checked
from chat_migrations.frozen import read_position_functions as read_position
from chat_migrations.runtime import api_access, indexes, lock_retries, requirements, snapshots
from chat_migrations.runtime.lock_declarations import SHARE_UPDATE_EXCLUSIVE, DeclaredLock, Hold, declare
from chat_migrations.runtime.promises import Function, Gone, Index, Promises

revision: str = "105_constant_time_badges"
down_revision: Union[str, Sequence[str], None] = "104_read_position_by_seq"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
MESSAGES = "public.chat_messages"
# Existing tables whose locks or size matter to this revision (scripts/preflight reports them).
affected_tables: tuple[str, ...] = (MESSAGES,)

GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"
OWN_INDEX = ("idx_chat_messages_sender_chat_seq", "sender_id, chat_id, seq", None)
DELETED_INDEX = ("idx_chat_messages_chat_deleted_seq", "chat_id, seq", "deleted_at IS NOT NULL")
STATUS_INDEX = "idx_chat_messages_status"
FILLFACTOR = 50
FILLFACTOR_KIND = "reloption"


requires = requirements.Requirements(
    columns={
        # last_read_seq is 104's (the check reads the database before any pending revision runs).
        "public.chat_participants": ("chat_id", "user_id", "last_read_at"),
        MESSAGES: ("chat_id", "seq", "sender_id", "deleted_at", "status"),
    },
    functions={GET_UNREAD_COUNT: ("p_chat_id uuid, p_user_id uuid", "bigint")},
)

access = api_access.Access(
    behaviour={
        GET_UNREAD_COUNT: "by seq: (latest seq - position) less the caller's own and the others' deleted messages "
        "after it, O(own + deleted since the position); by time as at 104",
        MESSAGES: "idx_chat_messages_status dropped (a mark is a HOT update); fillfactor 50 for new pages",
    },
)

# The count's own indexes; the status index no read needs any more is gone (marks update in place).
promises = Promises((
    Function(GET_UNREAD_COUNT, "p_chat_id uuid, p_user_id uuid", "bigint", security_definer=False, search_path='""',
             caller_checked=True),
    Index(OWN_INDEX[0], MESSAGES, OWN_INDEX[1]),
    Index(DELETED_INDEX[0], MESSAGES, DELETED_INDEX[1], where=DELETED_INDEX[2]),
    Gone(("index", f"{MESSAGES}.{STATUS_INDEX}")),
)) + access.promises()


def _count(what: str, condition: str) -> str:
    return f"""
        SELECT count(*) INTO {what}
          FROM public.chat_messages m
         WHERE m.chat_id = p_chat_id{condition};"""


# SECURITY INVOKER as at 103/104: the policies let a participant read the chat.
# Every condition compares a column with a plain variable (leakproof under RLS),
# so the generic plans are index range scans.
GET_UNREAD_COUNT_CONSTANT = f"""
CREATE OR REPLACE FUNCTION public.get_unread_count(p_chat_id uuid, p_user_id uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $function$
DECLARE
    v_last_read_seq bigint;
    v_last_read_at timestamptz;
    v_latest bigint;
    v_own bigint;
    v_deleted bigint;
    v_unread bigint;
BEGIN{checked.caller_check("get_unread_count", acts_as_user_argument=True)}
    SELECT p.last_read_seq, p.last_read_at INTO v_last_read_seq, v_last_read_at
      FROM public.chat_participants p
     WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
    IF v_last_read_seq IS NOT NULL THEN
        -- Seqs are gapless and in commit order (101): every seq up to the latest
        -- visible one is a visible message. A STABLE function's statements share
        -- one snapshot, so the three reads agree.
        SELECT max(m.seq) INTO v_latest FROM public.chat_messages m WHERE m.chat_id = p_chat_id;
        IF v_latest IS NULL OR v_latest <= v_last_read_seq THEN
            RETURN 0;
        END IF;{_count("v_own", '''
           AND m.sender_id = p_user_id
           AND m.seq > v_last_read_seq''')}{_count("v_deleted", '''
           AND m.seq > v_last_read_seq
           AND m.deleted_at IS NOT NULL
           AND m.sender_id IS DISTINCT FROM p_user_id''')}
        v_unread := (v_latest - v_last_read_seq) - v_own - v_deleted;
    ELSIF v_last_read_at IS NOT NULL THEN{_count("v_unread", '''
           AND m.created_at > v_last_read_at
           AND m.sender_id IS DISTINCT FROM p_user_id
           AND m.deleted_at IS NULL''')}
    ELSE{_count("v_unread", '''
           AND m.sender_id IS DISTINCT FROM p_user_id
           AND m.deleted_at IS NULL''')}
    END IF;
    RETURN v_unread;
END;
$function$;{checked.grants_and_comment(GET_UNREAD_COUNT,
    "Messages from others in a chat after the reader's last_read_seq (before their first mark as read since "
    "revision 104: newer than last_read_at), not deleted (badge counts); by seq it costs the reader's own and "
    "the deleted messages since the position, not the unread ones. The caller asks only for themselves "
    "(p_user_id = auth.uid()) in a chat they participate in.")}"""


# --- fillfactor ----------------------------------------------------------------------

_CURRENT_FILLFACTOR = (f"(SELECT option_value FROM pg_options_to_table((SELECT reloptions FROM pg_class "
                       f"WHERE oid = '{MESSAGES}'::regclass)) WHERE option_name = 'fillfactor')")

RECORD_FILLFACTOR_SQL = f"""
INSERT INTO {snapshots.SNAPSHOTS} (revision, object_kind, object_name, snapshot)
SELECT {snapshots.literal(revision)}, '{FILLFACTOR_KIND}', {snapshots.literal(MESSAGES)},
       jsonb_build_object('fillfactor', {_CURRENT_FILLFACTOR})
ON CONFLICT (revision, object_kind, object_name) DO NOTHING"""

# Only where it is unset or higher: a table already packed this loosely takes no lock.
SET_FILLFACTOR_SQL = f"""
DO $fillfactor$
BEGIN
    IF coalesce({_CURRENT_FILLFACTOR}::integer, 100) > {FILLFACTOR} THEN
        ALTER TABLE {MESSAGES} SET (fillfactor = {FILLFACTOR});
    END IF;
END
$fillfactor$"""

RESTORE_FILLFACTOR_SQL = f"""
DO $fillfactor$
DECLARE
    recorded jsonb := (SELECT snapshot FROM {snapshots.SNAPSHOTS} WHERE revision = {snapshots.literal(revision)}
                        AND object_kind = '{FILLFACTOR_KIND}' AND object_name = {snapshots.literal(MESSAGES)});
    wanted text := CASE WHEN recorded IS NULL THEN NULL ELSE recorded->>'fillfactor' END;
BEGIN
    -- No snapshot (stamped at 105): the converged schema has no fillfactor.
    IF {_CURRENT_FILLFACTOR} IS NOT DISTINCT FROM wanted THEN
        RETURN;
    ELSIF wanted IS NULL THEN
        ALTER TABLE {MESSAGES} RESET (fillfactor);
    ELSE
        EXECUTE format('ALTER TABLE {MESSAGES} SET (fillfactor = %s)', wanted::integer);
    END IF;
END
$fillfactor$"""


# --- indexes -------------------------------------------------------------------------


def _converge(index: str, definition: str) -> None:
    """Build ``definition`` concurrently: converge_index online; in --sql, CREATE INDEX CONCURRENTLY IF NOT EXISTS."""
    with op.get_context().autocommit_block():
        if op.get_context().as_sql:
            op.execute(declare(DeclaredLock(SHARE_UPDATE_EXCLUSIVE, MESSAGES,
                                                                  Hold.BUILD), run_alone=True)
                       + definition.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1))
        else:
            indexes.converge_index(index, definition)


def _build(index: str, columns: str, where: str | None) -> None:
    """A new index, online (create_index_concurrently, or as it does for a partial one, which it cannot name)."""
    if where is None:
        indexes.create_index_concurrently(revision, index, MESSAGES, columns)
        return
    op.execute(snapshots.record_index_sql(revision, f"public.{index}"))
    _converge(index, indexes.index_definition(index, MESSAGES, columns, where))


def _drop_status_index() -> None:
    name = f"public.{STATUS_INDEX}"
    op.execute(snapshots.record_index_sql(revision, name))
    with op.get_context().autocommit_block():
        lock_retries.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", table=MESSAGES, in_transaction=False)


def _restore_status_index() -> None:
    """Rebuilt concurrently with the definition recorded by the upgrade (the converged one without a snapshot)."""
    name = f"public.{STATUS_INDEX}"
    converged = indexes.index_definition(STATUS_INDEX, MESSAGES, "status")
    if op.get_context().as_sql:
        definition = converged
    else:
        recorded = op.get_bind().execute(text(snapshots.index_snapshot_sql(revision, name))).scalar()
        if recorded is not None and not recorded.get("existed"):
            definition = None
        else:
            definition = (recorded or {}).get("definition") or converged
    if definition is not None:
        _converge(STATUS_INDEX, definition)
    op.execute(snapshots.forget_sql(revision, "index", name))


def upgrade() -> None:
    # The indexes the new count reads, before it reads them.
    for index in (OWN_INDEX, DELETED_INDEX):
        _build(*index)
    op.execute(snapshots.redefine_function_sql(revision, GET_UNREAD_COUNT, GET_UNREAD_COUNT_CONSTANT))
    op.execute(RECORD_FILLFACTOR_SQL)
    lock_retries.execute(SET_FILLFACTOR_SQL, table=MESSAGES)
    _drop_status_index()


def downgrade() -> None:
    _restore_status_index()
    lock_retries.execute(RESTORE_FILLFACTOR_SQL, table=MESSAGES)
    op.execute(snapshots.forget_sql(revision, FILLFACTOR_KIND, MESSAGES))
    op.execute(snapshots.restore_function_sql(revision, GET_UNREAD_COUNT, read_position.GET_UNREAD_COUNT_BY_SEQ))
    # The function no longer reads them: dropped last.
    for index, _, _ in (DELETED_INDEX, OWN_INDEX):
        indexes.drop_index_concurrently(revision, index, MESSAGES)
