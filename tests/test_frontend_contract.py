"""The messaging functions and tables as the frontend calls them, on both environments at head.

Supabase's API (PostgREST) runs every request as one transaction, switched to
the JWT's role with ``SET LOCAL ROLE`` and with the caller's claims in
``request.jwt.claims``; ``auth.uid()`` reads them. ``Frontend`` does exactly
that, never acting as the table owner, and issues the statements supabase-js
produces: ``insert`` (INSERT ... RETURNING), ``upsert`` with
``ignoreDuplicates`` (INSERT ... ON CONFLICT DO NOTHING RETURNING), ``rpc``
(``SELECT * FROM fn(arg := value)``). Test data is created as the owner.
The client is tests/supabase_api.py; tests/test_security.py and
tests/test_concurrency.py use it too.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg2.errors
import pytest

from .supabase_api import new_chat, new_users

# Runs on both Supabase platforms in CI (docs/testing.md).
pytestmark = pytest.mark.platform


def statuses(db, chat_id: str) -> dict[str, str]:
    return dict(db.query("SELECT id::text, status FROM public.chat_messages WHERE chat_id = %s", (chat_id,)))


def last_read_at(db, chat_id: str, user_id: str):
    return db.scalar(
        "SELECT last_read_at FROM public.chat_participants WHERE chat_id = %s AND user_id = %s", (chat_id, user_id)
    )


def test_sending_assigns_the_next_seq_of_its_chat(head, frontend):
    alice, bob = new_users(head, 2)
    chat = new_chat(head, [alice, bob])
    as_alice, as_bob = frontend(head, alice), frontend(head, bob)
    assert as_alice.send(chat, "hi")["seq"] == 1
    assert as_bob.send(chat, "hello")["seq"] == 2
    # The seq is the server's: one sent by the client would open a gap.
    assert as_alice.send(chat, "jumping ahead", seq=99)["seq"] == 3
    assert as_bob.rpc("get_latest_seq", p_chat_id=chat) == [{"get_latest_seq": 3}]
    # Other chats keep their own sequence.
    other = new_chat(head, [alice, bob])
    assert as_alice.send(other, "elsewhere")["seq"] == 1


def test_resending_with_the_same_client_generated_id_adds_no_row_and_consumes_no_seq(head, frontend):
    alice, bob = new_users(head, 2)
    chat = new_chat(head, [alice, bob])
    as_alice = frontend(head, alice)
    client_id = str(uuid.uuid4())
    first = as_alice.send_idempotently(chat, "once", client_id)
    assert [row["seq"] for row in first] == [1]
    # The retry after a timeout: upsert with ignoreDuplicates returns nothing and adds nothing.
    assert as_alice.send_idempotently(chat, "once", client_id) == []
    # A plain insert of the same id fails (PostgREST: 409 Conflict) and adds nothing.
    with pytest.raises(psycopg2.errors.UniqueViolation):
        as_alice.send(chat, "once", client_generated_id=client_id)
    assert head.scalar("SELECT count(*) FROM public.chat_messages WHERE chat_id = %s", (chat,)) == 1
    # No seq was consumed by the refused resends.
    assert as_alice.send(chat, "next")["seq"] == 2


def test_status_only_moves_forward_and_updated_count_is_the_rows_changed(head, frontend):
    alice, bob = new_users(head, 2)
    chat = new_chat(head, [alice, bob])
    as_alice, as_bob = frontend(head, alice), frontend(head, bob)
    first, second = as_alice.send(chat, "one"), as_alice.send(chat, "two")
    deleted = as_alice.send(chat, "oops")
    as_alice.query("UPDATE public.chat_messages SET deleted_at = now() WHERE id = %s", (deleted["id"],))
    bobs_own = as_bob.send(chat, "mine")

    def changed_by(call) -> tuple[list[dict], set[str]]:
        before = statuses(head, chat)
        result = call()
        after = statuses(head, chat)
        return result, {message for message in after if after[message] != before[message]}

    result, changed = changed_by(lambda: as_bob.rpc("mark_messages_as_delivered", p_chat_id=chat, p_user_id=bob))
    assert result == [{"updated_count": 2}] and changed == {first["id"], second["id"]}
    assert statuses(head, chat)[deleted["id"]] == "sent" and statuses(head, chat)[bobs_own["id"]] == "sent"
    assert as_bob.rpc("mark_messages_as_delivered", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 0}]

    assert last_read_at(head, chat, bob) is None
    result, changed = changed_by(lambda: as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob))
    assert result == [{"updated_count": 2}] and changed == {first["id"], second["id"]}
    assert last_read_at(head, chat, bob) is not None

    # Never back: delivered after read changes nothing.
    result, changed = changed_by(lambda: as_bob.rpc("mark_messages_as_delivered", p_chat_id=chat, p_user_id=bob))
    assert result == [{"updated_count": 0}] and not changed
    assert {statuses(head, chat)[m["id"]] for m in (first, second)} == {"read"}

    # Straight from sent to read, and the reader's last_read_at moves forward.
    read_before = last_read_at(head, chat, alice)
    third = as_alice.send(chat, "three")
    result, changed = changed_by(lambda: as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob))
    assert result == [{"updated_count": 1}] and changed == {third["id"]}
    result, changed = changed_by(lambda: as_alice.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=alice))
    assert result == [{"updated_count": 1}] and changed == {bobs_own["id"]}
    assert read_before is None and last_read_at(head, chat, alice) is not None


def test_unread_count_and_latest_seq_agree_with_plain_counts_over_the_seeded_chats(head, frontend):
    messages = head.query(
        "SELECT chat_id::text, sender_id::text, seq, created_at, deleted_at, reply_to_message_id FROM public.chat_messages"
    )
    participants = head.query("SELECT chat_id::text, user_id::text, last_read_at FROM public.chat_participants")
    # The seed covers what the counts must get right: replies, deleted and own messages.
    assert any(m[5] for m in messages) and any(m[4] for m in messages)
    checked = 0
    for chat, user, read_at in participants:
        in_chat = [m for m in messages if m[0] == chat]
        if not in_chat:
            continue
        assert sorted(m[2] for m in in_chat) == list(range(1, len(in_chat) + 1)), "seqs are gapless"
        newer = read_at or datetime.min.replace(tzinfo=timezone.utc)
        unread = sum(1 for m in in_chat if m[1] != user and m[4] is None and m[3] > newer)
        as_user = frontend(head, user)
        assert as_user.rpc("get_unread_count", p_chat_id=chat, p_user_id=user) == [{"get_unread_count": unread}]
        assert as_user.rpc("get_latest_seq", p_chat_id=chat) == [{"get_latest_seq": len(in_chat)}]
        as_user.close()
        checked += 1
    assert checked >= 8


def test_unread_count_counts_replies_and_skips_deleted_and_own_messages(head, frontend):
    alice, bob = new_users(head, 2)
    chat = new_chat(head, [alice, bob])
    as_alice, as_bob = frontend(head, alice), frontend(head, bob)
    question = as_alice.send(chat, "lunch?")
    as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob)
    # Sent after Bob read: counted for Bob, whether a reply or not; never his own.
    as_alice.send(chat, "12:30?", reply_to_message_id=question["id"])
    withdrawn = as_alice.send(chat, "never mind")
    as_alice.query("UPDATE public.chat_messages SET deleted_at = now() WHERE id = %s", (withdrawn["id"],))
    as_bob.send(chat, "yes, 12:30")
    assert as_bob.rpc("get_unread_count", p_chat_id=chat, p_user_id=bob) == [{"get_unread_count": 1}]
    assert as_alice.rpc("get_unread_count", p_chat_id=chat, p_user_id=alice) == [{"get_unread_count": 1}]
    # The deleted message keeps its seq.
    assert as_bob.rpc("get_latest_seq", p_chat_id=chat) == [{"get_latest_seq": 4}]


def test_conversation_list_for_a_user_in_many_chats_shows_only_their_chats(head, frontend):
    me, *others = new_users(head, 6)
    read_at = datetime(2025, 10, 5, tzinfo=timezone.utc)
    expected = {}
    for number in range(40):
        partner = others[number % len(others)]
        chat = new_chat(head, [me, partner] + ([others[0]] if number % 7 == 0 and partner != others[0] else []))
        head.execute("UPDATE public.chat_participants SET last_read_at = %s WHERE chat_id = %s AND user_id = %s",
                     (read_at, chat, me))
        # number % 5 messages, alternating senders, a day apart around my last read.
        texts = [(me if i % 2 else partner, f"message {i} of chat {number}", read_at + timedelta(days=i - 1))
                 for i in range(number % 5)]
        for sender, text, created in texts:
            head.execute("INSERT INTO public.chat_messages (chat_id, sender_id, message_text, created_at) "
                         "VALUES (%s, %s, %s, %s)", (chat, sender, text, created))
        if number % 4 == 3:  # the newest message was deleted: the one before is the last shown
            head.execute("UPDATE public.chat_messages SET deleted_at = now() WHERE chat_id = %s AND seq = %s",
                         (chat, len(texts)))
            texts = texts[:-1]
        unread = sum(1 for sender, _, created in texts if sender != me and created > read_at)
        expected[chat] = {"chat_id": chat, "last_seq": len(texts) or None,
                          "last_text": texts[-1][1] if texts else None, "unread": unread}

    as_me = frontend(head, me)
    conversations = as_me.conversations()
    assert {row["chat_id"]: row for row in conversations} == expected
    assert any(row["unread"] for row in expected.values()) and any(row["last_seq"] is None for row in expected.values())
    # RLS: the seeded chats of other users stay invisible, in every table.
    assert head.scalar("SELECT count(*) FROM public.chats") > len(expected)
    assert {row["chat_id"] for row in as_me.query("SELECT DISTINCT chat_id::text FROM public.chat_messages")} <= set(expected)
    assert {row["user_id"] for row in as_me.query("SELECT user_id::text FROM public.chat_participants")} == {me}

