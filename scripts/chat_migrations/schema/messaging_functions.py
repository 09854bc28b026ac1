"""The messaging functions' contract at head, for the checks and the tests (no revision imports this).

The frontend calls the functions through Supabase's API
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
  order; a value sent by the client is ignored;
* the read position is ``chat_participants.last_read_seq`` (revision 104):
  ``mark_messages_as_read`` marks the others' messages read up to the chat's
  newest committed seq and moves the position there, so a message committed
  after a concurrent mark-as-read is counted unread; ``get_unread_count``
  counts the others' messages after it (by ``last_read_at`` for a
  participant who has not marked the chat read since 104, or who changed
  ``last_read_at`` directly since their last mark: the trigger
  ``trg_follow_direct_last_read_at`` clears the position then, so such an
  update moves the badge as at 103);
* cost for the real caller (``authenticated``, through RLS, in a long-lived
  session whose plans are generic): ``get_unread_count`` by seq O(the
  reader's own and deleted messages since the position) since 105 (O(unread)
  at 104), the mark functions O(messages since the caller's last read), as
  HOT updates since 105, whatever the chat's size.

The SQL that makes it so is each revision's own (101, 102, 103, 104, 105).
"""

from __future__ import annotations

ASSIGN_MESSAGE_SEQ = "public.assign_message_seq()"
FOLLOW_DIRECT_LAST_READ_AT = "public.follow_direct_last_read_at()"  # 104's trigger function
MARK_MESSAGES_AS_DELIVERED = "public.mark_messages_as_delivered(uuid, uuid)"
MARK_MESSAGES_AS_READ = "public.mark_messages_as_read(uuid, uuid)"
GET_UNREAD_COUNT = "public.get_unread_count(uuid, uuid)"
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

# The index that keeps get_unread_count from reading the whole chat (revision 102):
# at head only for a read position by time (last_read_seq NULL).
UNREAD_INDEX = "idx_chat_messages_chat_created"
# The read position by seq (revision 104), and the indexes on (chat_id, seq) its range scans use.
READ_POSITION_COLUMN = "public.chat_participants.last_read_seq"
SEQ_INDEXES = ("uq_chat_messages_chat_id_seq", "idx_chat_messages_chat_id_seq_desc")
