"""Unread counts by seq (revisions 104, 105): correct under concurrency, and cheap for the real caller.

104 counts by seq (correct under a concurrent mark-as-read, O(unread)); 105
counts from the latest seq less the reader's own and the deleted messages
since the position (O(own + deleted)), and makes the marks HOT updates.

The callers are ``Frontend`` clients (role ``authenticated``, JWT claims, one
transaction per request, as PostgREST runs them). The plans are the ones
PostgreSQL really used inside the functions, reported by auto_explain with
ANALYZE and BUFFERS from the caller's session; ``plan_cache_mode =
force_generic_plan`` stands for a long-lived session (PostgREST's pooled
connections), where PL/pgSQL caches a generic plan after five executions.
Each case is run at 103 too, to show what 104 fixes.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time

import pytest

from chat_migrations.schema import messaging_functions

from .conftest import assert_same_schema, head_of
from .supabase_api import new_chat, new_users

BEFORE = "103_messaging_security"
BY_SEQ_ROW_BY_ROW = "104_read_position_by_seq"
SMALL, LARGE = 5_000, 50_000  # the chat grows tenfold...
UNREAD = 20  # ...with the unread count fixed
OTHER_CHATS = 200  # the reader who belongs to hundreds of chats
# 105's indexes for the reader's own and the deleted messages after the position.
COUNT_INDEXES = ("idx_chat_messages_sender_chat_seq", "idx_chat_messages_chat_deleted_seq")


def at(make_database, revision: str, environment: str = "prod"):
    if revision == "head":
        return make_database(environment, "head")
    db = make_database(environment)
    db.alembic("-n", environment, "upgrade", revision)
    return db


# --- correctness: the race -----------------------------------------------------------


@pytest.mark.parametrize(
    "revision, unread_after",
    [(BEFORE, 0), ("head", 1)],
    ids=["103: by created_at, counted read unseen", "104: by seq, still unread"],
)
def test_a_message_committed_after_a_concurrent_mark_as_read_stays_unread(make_database, frontend, revision, unread_after):
    db = at(make_database, revision)
    alice, bob = new_users(db, 2)
    chat = new_chat(db, [alice, bob])
    as_alice, as_bob = frontend(db, alice), frontend(db, bob)
    as_alice.send(chat, "seen")
    with as_alice.request() as cur:
        # Alice's send has begun (its created_at is her transaction's start) but not committed...
        cur.execute("INSERT INTO public.chat_messages (chat_id, sender_id, message_text) VALUES (%s, %s, 'late')",
                    (chat, alice))
        # ...when Bob, on his own connection, marks the chat read: he cannot see it.
        assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 1}]
    # Alice's message is committed now, unseen and still 'sent'.
    assert db.scalar("SELECT status FROM public.chat_messages WHERE chat_id = %s AND message_text = 'late'", (chat,)) == "sent"
    assert as_bob.rpc("get_unread_count", p_chat_id=chat, p_user_id=bob) == [{"get_unread_count": unread_after}]
    # Bob's next mark-as-read sees it and marks it read, at both revisions.
    assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 1}]
    assert as_bob.rpc("get_unread_count", p_chat_id=chat, p_user_id=bob) == [{"get_unread_count": 0}]


def test_the_read_position_moves_forward_only_and_counts_what_came_after(make_database, frontend):
    db = make_database("prod", "head")
    alice, bob = new_users(db, 2)
    chat = new_chat(db, [alice, bob])
    as_alice, as_bob = frontend(db, alice), frontend(db, bob)
    for text in ("one", "two"):
        as_alice.send(chat, text)
    position = "SELECT last_read_seq FROM public.chat_participants WHERE chat_id = %s AND user_id = %s"
    assert db.scalar(position, (chat, bob)) is None
    assert as_bob.rpc("mark_messages_as_delivered", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 2}]
    assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 2}]
    assert db.scalar(position, (chat, bob)) == 2
    as_bob.send(chat, "three")  # his own: never unread for him
    as_alice.send(chat, "four")
    assert as_bob.rpc("get_unread_count", p_chat_id=chat, p_user_id=bob) == [{"get_unread_count": 1}]
    # The participant may read their position (and only theirs).
    assert as_bob.query("SELECT last_read_seq FROM public.chat_participants") == [{"last_read_seq": 2}]
    # Never backwards, even if an older position is written by the owner.
    db.execute("UPDATE public.chat_participants SET last_read_seq = 1 WHERE chat_id = %s AND user_id = %s", (chat, bob))
    assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 1}]
    assert db.scalar(position, (chat, bob)) == 4
    assert as_bob.rpc("get_unread_count", p_chat_id=chat, p_user_id=bob) == [{"get_unread_count": 0}]


@pytest.mark.parametrize("revision", [BEFORE, "head"], ids=["at 103", "at 104"])
def test_after_a_position_by_time_mark_as_read_moves_every_status_forward_as_at_103(make_database, frontend, revision):
    """Read receipts: messages before a time position (a direct update of last_read_at) still end up read."""
    db = at(make_database, revision)
    alice, bob = new_users(db, 2)
    chat = new_chat(db, [alice, bob])
    as_alice, as_bob = frontend(db, alice), frontend(db, bob)
    last = [as_alice.send(chat, text)["created_at"] for text in ("one", "two")][-1]
    as_bob.query("UPDATE public.chat_participants SET last_read_at = %s WHERE chat_id = %s AND user_id = %s",
                 (last, chat, bob))
    assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 2}]
    assert db.query("SELECT DISTINCT status FROM public.chat_messages WHERE chat_id = %s", (chat,)) == [("read",)]


@pytest.mark.parametrize("revision", [BEFORE, "head"], ids=["at 103", "at 104"])
def test_a_direct_update_of_last_read_at_moves_the_badge_as_at_103(make_database, frontend, revision):
    """authenticated may UPDATE its own last_read_at; the badge follows it (created after it: unread), as at 103."""
    db = at(make_database, revision)
    alice, bob = new_users(db, 2)
    chat = new_chat(db, [alice, bob])
    as_alice, as_bob = frontend(db, alice), frontend(db, bob)
    sent = {text: as_alice.send(chat, text)["created_at"] for text in ("one", "two")}
    assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 2}]
    sent |= {text: as_alice.send(chat, text)["created_at"] for text in ("three", "four")}

    def unread() -> int:
        [[count]] = [row.values() for row in as_bob.rpc("get_unread_count", p_chat_id=chat, p_user_id=bob)]
        return count

    def read_up_to(moment) -> None:
        as_bob.query("UPDATE public.chat_participants SET last_read_at = %s WHERE chat_id = %s AND user_id = %s",
                     (moment, chat, bob))

    assert unread() == 2
    read_up_to(sent["three"])  # forward, directly: "four" is the only one created after it
    assert unread() == 1
    read_up_to(sent["one"])  # backwards: marked unread again
    assert unread() == 3
    read_up_to(sent["four"])
    assert unread() == 0
    read_up_to(sent["two"])
    assert unread() == 2
    # mark_messages_as_read takes over again, with the exact position (marking from
    # the chat's start once, as it does for a position from before 104).
    assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 2}]
    assert unread() == 0
    if revision == BEFORE:
        return
    position = "SELECT last_read_seq FROM public.chat_participants WHERE chat_id = %s AND user_id = %s"
    assert db.scalar(position, (chat, bob)) == 4
    # Its own update keeps the position even when the seq does not move (last_read_at does)...
    assert as_bob.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 0}]
    assert db.scalar(position, (chat, bob)) == 4
    # ...and does not mark the rest of its transaction: a direct update after it there still counts.
    with as_bob.request() as cur:
        cur.execute("SELECT * FROM public.mark_messages_as_read(p_chat_id := %s, p_user_id := %s)", (chat, bob))
        cur.execute("UPDATE public.chat_participants SET last_read_at = %s WHERE chat_id = %s AND user_id = %s",
                    (sent["two"], chat, bob))
    assert db.scalar(position, (chat, bob)) is None
    assert unread() == 2
    # An update that sets a position of its own with the time (the owner's, by hand) keeps that position.
    db.execute("UPDATE public.chat_participants SET last_read_at = now(), last_read_seq = 3 "
               "WHERE chat_id = %s AND user_id = %s", (chat, bob))
    assert db.scalar(position, (chat, bob)) == 3
    assert unread() == 1


# --- cost: the plans the real caller gets -------------------------------------------


def load_chat(db, writer: str, readers: list[str], messages: int) -> str:
    """A chat of ``messages`` from ``writer``; every reader has read all but the last UNREAD (by seq and by time)."""
    chat = new_chat(db, [writer, *readers])
    db.execute(
        """
        SET session_replication_role = replica;
        INSERT INTO public.chat_messages (chat_id, sender_id, message_text, seq, status, created_at)
        SELECT %(chat)s, %(writer)s, 'message ' || g, g, CASE WHEN g > %(read)s THEN 'sent' ELSE 'read' END,
               timestamptz '2025-01-01 00:00+00' + g * interval '1 second'
          FROM generate_series(1, %(count)s) g;
        UPDATE public.chat_participants
           SET last_read_at = timestamptz '2025-01-01 00:00+00' + %(read)s * interval '1 second'
         WHERE chat_id = %(chat)s AND user_id <> %(writer)s;
        """,
        {"chat": chat, "writer": writer, "count": messages, "read": messages - UNREAD},
        admin=True,  # test data with triggers off: a superuser's load, not the project's
    )
    if db.revision() != BEFORE:
        db.execute("UPDATE public.chat_participants SET last_read_seq = %s WHERE chat_id = %s AND user_id <> %s",
                   (messages - UNREAD, chat, writer))
    return chat


@pytest.fixture
def two_sizes(make_database, request):
    """A database at the revision asked for, with a small and a tenfold chat; readers in one chat and in 201."""
    db = at(make_database, request.param)
    writer, busy, single_small, single_large, *others = new_users(db, 4 + 3)
    chats = {
        SMALL: load_chat(db, writer, [busy, single_small], SMALL),
        LARGE: load_chat(db, writer, [busy, single_large], LARGE),
    }
    db.execute(
        "INSERT INTO public.chats (id, created_by) SELECT md5('other-chat-' || g)::uuid, %(me)s FROM generate_series(1, %(n)s) g;"
        "INSERT INTO public.chat_participants (chat_id, user_id) "
        "SELECT md5('other-chat-' || g)::uuid, u FROM generate_series(1, %(n)s) g, unnest(ARRAY[%(me)s, %(other)s]::uuid[]) u;",
        {"me": busy, "other": others[0], "n": OTHER_CHATS},
    )
    db.execute("ANALYZE public.chats, public.chat_participants, public.chat_messages")
    return db, chats, {"in 201 chats": {SMALL: busy, LARGE: busy}, "in one chat": {SMALL: single_small, LARGE: single_large}}


def watched(frontend, db, user: str, *, generic: bool):
    """A caller's session whose nested statements' plans auto_explain reports, with buffers."""
    client = frontend(db, user, observed=True)
    with client.connection.cursor() as cur:
        cur.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;"
            "SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; SET auto_explain.log_timing = off;"
            "SET auto_explain.log_format = json; SET auto_explain.log_level = notice"
            + ("; SET plan_cache_mode = force_generic_plan" if generic else "")
        )
    return client


def plans(notices: list[str], statement: str) -> list[dict]:
    """auto_explain's reports of the nested statements starting with ``statement``."""
    found = []
    for notice in notices:
        if "{" in notice:
            report = json.loads(notice[notice.index("{"):])
            if report["Query Text"].strip().startswith(statement):
                found.append(report)
    assert found, f"auto_explain reported no {statement!r}: {notices}"
    return found


def blocks(report: dict) -> int:
    plan = report["Plan"]
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def count_blocks(client, chat: str, calls: int = 8) -> tuple[list[int], set[str]]:
    """Buffers read by get_unread_count's count statement in each of ``calls`` calls in one session, and its indexes."""
    read, indexes = [], set()
    for _ in range(calls):
        client.connection.notices.clear()
        assert client.rpc("get_unread_count", p_chat_id=chat, p_user_id=client.user_id) == [{"get_unread_count": UNREAD}]
        counts = plans(client.connection.notices, "SELECT count(*)")  # one at 104, two at 105
        read.append(sum(map(blocks, counts)))
        for count in counts:
            scans = [n for n in nodes(count["Plan"]) if n.get("Relation Name") == "chat_messages" or "Index Name" in n]
            indexes |= {n.get("Index Name", n["Node Type"]) for n in scans if n["Node Type"] != "Bitmap Heap Scan"}
    return read, indexes


@pytest.mark.parametrize("two_sizes", [BEFORE, "head"], indirect=True, ids=["at 103", "at 104"])
def test_unread_count_buffers_stay_bounded_when_the_chat_grows_tenfold(two_sizes, frontend):
    db, chats, callers = two_sizes
    at_head = db.revision() == head_of("prod")
    # Fresh sessions whose plans come as PL/pgSQL picks them (custom first, generic
    # after five calls if cheaper), and long-lived ones with generic plans throughout.
    for generic, (caller, user_of) in itertools.product((False, True), callers.items()):
        measured = {size: count_blocks(watched(frontend, db, user_of[size], generic=generic), chats[size]) for size in chats}
        read = {size: blocks_read for size, (blocks_read, _) in measured.items()}
        small, large = max(read[SMALL]), max(read[LARGE])
        if at_head:
            # Range scans on indexes that lead with (chat_id, seq), or (sender_id, chat_id, seq) for one's own
            # (or prod's smaller (sender_id) when the planner expects the reader to have sent nothing, as here).
            used = {index for _, indexes in measured.values() for index in indexes}
            allowed = {*messaging_functions.SEQ_INDEXES, *COUNT_INDEXES, "idx_chat_messages_sender_id"}
            assert used and used <= allowed, f"{caller}: {used}"
            # A few more index pages on the way down, never the chat: 20 unread are about 20 heap rows.
            assert large <= small + 5, f"{caller}: {read}"
            assert large < 60, f"{caller}: {read}"
        elif generic:
            # 103's generic plan filters the whole chat: its buffers grow with it.
            assert large > 5 * small, f"{caller}: {read}"


@pytest.mark.parametrize("two_sizes", ["head"], indirect=True, ids=["at 104"])
def test_reads_and_marks_cost_what_they_touch_not_the_chat(two_sizes, frontend):
    db, chats, callers = two_sizes
    cost = {}
    for size, chat in chats.items():
        user = callers["in 201 chats"][size]
        client = watched(frontend, db, user, generic=True)
        # The frontend's per-chat reads, prepared as PostgREST prepares them, planned generically.
        with client.request() as cur:
            cur.execute("PREPARE latest_page(uuid) AS SELECT id, seq, sender_id, message_text, status, created_at "
                        "FROM public.chat_messages WHERE chat_id = $1 AND deleted_at IS NULL ORDER BY seq DESC LIMIT 50")
            cur.execute("PREPARE unread_list(uuid, bigint) AS SELECT id, seq, message_text FROM public.chat_messages "
                        "WHERE chat_id = $1 AND seq > $2 AND deleted_at IS NULL ORDER BY seq")
            cur.execute("SELECT last_read_seq FROM public.chat_participants WHERE chat_id = %s", (chat,))
            position = cur.fetchone()["last_read_seq"]
            for name, arguments in (("latest_page", (chat,)), ("unread_list", (chat, position))):
                cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({', '.join(['%s'] * len(arguments))})",
                            arguments)
                [[report]] = cur.fetchone().values()
                cost[(name, size)] = blocks(report)
                assert report["Plan"]["Actual Rows"] == (50 if name == "latest_page" else UNREAD)
        client.connection.notices.clear()
        assert client.rpc("mark_messages_as_delivered", p_chat_id=chat, p_user_id=user) == [{"updated_count": UNREAD}]
        assert client.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=user) == [{"updated_count": UNREAD}]
        updates = plans(client.connection.notices, "UPDATE public.chat_messages")
        # What each UPDATE reads to find its rows (the scan under it): writing the same number
        # of rows costs index maintenance that varies with free space (HOT updates), not size.
        scans = [{"Plan": update["Plan"]["Plans"][0]} for update in updates]
        cost[("mark_messages_as_delivered", size)], cost[("mark_messages_as_read", size)] = map(blocks, scans)
        assert client.rpc("get_unread_count", p_chat_id=chat, p_user_id=user) == [{"get_unread_count": 0}]
    for name in ("latest_page", "unread_list", "mark_messages_as_delivered", "mark_messages_as_read"):
        assert cost[(name, LARGE)] <= cost[(name, SMALL)] + 5, cost


# --- 105: the count from the latest seq, the marks as HOT updates ------------------------

# What 104 counts, row by row, under RLS as the reader; in one statement with get_unread_count, so
# both read the same snapshot (the function is STABLE: its statements share the caller's).
ROW_BY_ROW = """
    SELECT public.get_unread_count(%(chat)s, %(me)s) AS counted,
           (SELECT count(*) FROM public.chat_messages m
              JOIN public.chat_participants p ON p.chat_id = m.chat_id AND p.user_id = %(me)s
             WHERE m.chat_id = %(chat)s AND m.seq > p.last_read_seq
               AND m.sender_id IS DISTINCT FROM %(me)s AND m.deleted_at IS NULL) AS expected"""


def test_the_count_is_exact_under_concurrent_sends_deletes_and_marks(make_database, frontend):
    db = make_database("prod", "head")
    alice, bob, carol = new_users(db, 3)
    chat = new_chat(db, [alice, bob, carol])
    frontend(db, alice).send(chat, "first")
    assert frontend(db, bob).rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 1}]
    stop, failures, checked = threading.Event(), [], []
    rng = random.Random(19)

    def send(client):
        client.send(chat, "hello")

    def delete(client):
        client.query("UPDATE public.chat_messages SET deleted_at = now() WHERE id = (SELECT id FROM public.chat_messages "
                     "WHERE chat_id = %(chat)s AND sender_id = %(me)s AND deleted_at IS NULL ORDER BY seq DESC LIMIT 1)",
                     {"chat": chat, "me": client.user_id})

    def mark(client):
        client.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=client.user_id)

    def check(client):
        [row] = client.query(ROW_BY_ROW, {"chat": chat, "me": bob})
        checked.append(row)
        if row["counted"] != row["expected"]:
            failures.append(row)

    # Each on its own connection (its own Frontend), all at once: senders (Bob's own
    # messages too), deleters of their own messages, Bob marking and Bob counting.
    work = [(send, alice), (send, carol), (send, bob), (delete, alice), (delete, bob), (mark, bob),
            (check, bob), (check, bob)]

    def run(step, user):
        client = frontend(db, user)
        try:
            while not stop.is_set():
                step(client)
                time.sleep(rng.random() / 200)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=item) for item in work]
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]
    assert len(checked) >= 40 and {row["expected"] for row in checked} != {0}, checked[-5:]
    check(frontend(db, bob))
    assert not failures, failures


def load_unread(db, reader: str, unread: int) -> str:
    """A chat whose reader has ``unread`` unread messages, then 5 of their own and 5 deleted ones, by seq."""
    writer, = new_users(db, 1)
    chat = new_chat(db, [writer, reader])
    total = 1_000 + unread + 10
    db.execute(
        """
        SET session_replication_role = replica;
        INSERT INTO public.chat_messages (chat_id, sender_id, message_text, seq, status, deleted_at)
        SELECT %(chat)s, CASE WHEN g > %(total)s - 10 AND g %% 2 = 0 THEN %(reader)s::uuid ELSE %(writer)s::uuid END,
               'message ' || g, g, 'sent',
               CASE WHEN g > %(total)s - 10 AND g %% 2 = 1 THEN now() END
          FROM generate_series(1, %(total)s) g;
        """,
        {"chat": chat, "writer": writer, "reader": reader, "total": total},
        admin=True,  # test data with triggers off: a superuser's load, not the project's
    )
    db.execute("UPDATE public.chat_participants SET last_read_seq = %s WHERE chat_id = %s AND user_id = %s",
               (total - unread - 10, chat, reader))
    return chat


def message_blocks(client, chat: str, expected: int, calls: int = 8) -> list[int]:
    """Buffers read by get_unread_count's statements on chat_messages, in each of ``calls`` calls."""
    read = []
    for _ in range(calls):
        client.connection.notices.clear()
        assert client.rpc("get_unread_count", p_chat_id=chat, p_user_id=client.user_id) == [{"get_unread_count": expected}]
        reports = [json.loads(n[n.index("{"):]) for n in client.connection.notices if "{" in n]
        read.append(sum(blocks(r) for r in reports if "public.chat_messages" in r["Query Text"]))
    return read


@pytest.mark.parametrize("revision", [BY_SEQ_ROW_BY_ROW, "head"], ids=["at 104", "at 105"])
def test_unread_count_buffers_do_not_grow_with_the_unread_count(make_database, frontend, revision):
    db = at(make_database, revision)
    reader, = new_users(db, 1)
    chats = {unread: load_unread(db, reader, unread) for unread in (10, 10_000)}
    db.execute("ANALYZE public.chat_messages")
    read = {}
    for generic in (False, True):
        client = watched(frontend, db, reader, generic=generic)
        read[generic] = {unread: max(message_blocks(client, chat, unread)) for unread, chat in chats.items()}
    for generic, by_unread in read.items():
        if revision == "head":
            # The latest seq and the 5 own and 5 deleted since the position: the same pages whatever the unread.
            assert by_unread[10_000] <= by_unread[10] + 5 and by_unread[10_000] < 60, read
        else:
            # 104 reads every unread message.
            assert by_unread[10_000] > 10 * by_unread[10], read


@pytest.mark.parametrize("revision", [BY_SEQ_ROW_BY_ROW, "head"], ids=["at 104", "at 105"])
def test_a_mark_as_read_updates_through_the_seq_range_and_in_place_at_105(make_database, frontend, revision):
    """The marks' rows change no indexed column at 105 and new pages have room: every update is HOT."""
    db = at(make_database, revision)
    reader, = new_users(db, 1)
    chat = load_unread(db, reader, 1_000)
    client = watched(frontend, db, reader, generic=True)
    with client.request() as cur:
        cur.execute("SELECT * FROM public.mark_messages_as_read(%s, %s)", (chat, reader))
        assert cur.fetchall() == [{"updated_count": 1_000}]
        cur.execute("SELECT pg_stat_get_xact_tuples_updated(c) AS updated, pg_stat_get_xact_tuples_hot_updated(c) AS hot "
                    "FROM CAST('public.chat_messages' AS regclass) c")
        counters = cur.fetchone()
    [update] = plans(client.connection.notices, "UPDATE public.chat_messages")
    [scan] = [n for n in nodes(update["Plan"]) if "Index Name" in n]
    assert scan["Index Name"] in messaging_functions.SEQ_INDEXES and "seq" in scan["Index Cond"], update
    assert counters["updated"] == 1_000
    if revision == "head":
        assert counters["hot"] == 1_000, counters
        assert db.scalar("SELECT to_regclass('public.idx_chat_messages_status')") is None
    else:
        assert counters["hot"] == 0, counters  # idx_chat_messages_status: status is indexed


def test_the_conversation_list_counts_as_before(make_database, frontend):
    """The frontend's conversation list (scripts/smoke's): same rows and counts at 104 and 105."""
    listed = {}
    for revision in (BY_SEQ_ROW_BY_ROW, "head"):
        db = at(make_database, revision)
        alice, bob = new_users(db, 2)
        chats = [new_chat(db, [alice, bob]) for _ in range(3)]
        as_alice, as_bob = frontend(db, alice), frontend(db, bob)
        for number, chat in enumerate(chats):
            for text in range(number + 2):
                as_alice.send(chat, f"{text}")
        as_bob.send(chats[0], "mine")
        as_bob.rpc("mark_messages_as_read", p_chat_id=chats[1], p_user_id=bob)
        as_alice.send(chats[1], "after the mark")
        as_alice.query("UPDATE public.chat_messages SET deleted_at = now() WHERE chat_id = %s AND message_text = '0'",
                       (chats[2],))
        order = {chat: position for position, chat in enumerate(chats)}
        listed[revision] = sorted(((order[r["chat_id"]], r["last_text"], r["unread"]) for r in as_bob.conversations()))
    assert listed["head"] == listed[BY_SEQ_ROW_BY_ROW] == [(0, "mine", 2), (1, "after the mark", 1), (2, "3", 3)]


# --- the downgrade ---------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_downgrade_to_103_restores_its_schema_exactly_with_or_without_snapshots(make_database, environment):
    expected = at(make_database, BEFORE, environment).schema()
    for snapshots_kept in (True, False):
        db = make_database(environment, "head")
        if not snapshots_kept:
            db.execute("DELETE FROM migration_meta.rollback_snapshots WHERE revision = '104_read_position_by_seq'")
        assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'trg_follow_direct_last_read_at'") == 1
        db.alembic("-n", environment, "downgrade", BEFORE)
        # The trigger and its function are gone (the dump compare says so too).
        assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'trg_follow_direct_last_read_at'") == 0
        assert db.scalar("SELECT to_regprocedure('public.follow_direct_last_read_at()')") is None
        assert_same_schema(db.schema(), expected, f"{environment} at 103 (snapshots kept: {snapshots_kept})")


def test_a_last_read_seq_column_that_was_there_is_kept_by_the_downgrade(make_database):
    db = at(make_database, BEFORE)
    db.execute("ALTER TABLE public.chat_participants ADD COLUMN last_read_seq bigint")
    before = db.schema()
    db.alembic("-n", "prod", "upgrade", "head")
    db.alembic("-n", "prod", "downgrade", BEFORE)
    assert_same_schema(db.schema(), before, "prod with its own last_read_seq")


def test_a_last_read_seq_of_another_type_stops_the_upgrade_before_anything_changes(make_database):
    db = at(make_database, BEFORE)
    db.execute("ALTER TABLE public.chat_participants ADD COLUMN last_read_seq text")
    before = db.schema()
    result = db.alembic("-n", "prod", "upgrade", "head", check=False)
    assert result.returncode != 0 and "exists as text, not bigint" in result.output
    assert db.revision() == BEFORE
    assert_same_schema(db.schema(), before, "prod refused at 104")


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_downgrade_to_104_restores_its_schema_exactly_with_or_without_snapshots(make_database, environment):
    expected = at(make_database, BY_SEQ_ROW_BY_ROW, environment).schema()
    for snapshots_kept in (True, False):
        db = make_database(environment, "head")
        assert db.scalar("SELECT to_regclass('public.idx_chat_messages_status')") is None
        if not snapshots_kept:
            db.execute("DELETE FROM migration_meta.rollback_snapshots WHERE revision = '105_constant_time_badges'")
        db.alembic("-n", environment, "downgrade", BY_SEQ_ROW_BY_ROW)
        if not snapshots_kept:
            # A stamped database: online_ddl keeps an index no snapshot says the upgrade built.
            for index in COUNT_INDEXES:
                assert db.scalar("SELECT to_regclass(%s)", (f"public.{index}",)) is not None
                db.execute(f"DROP INDEX public.{index}")
        assert_same_schema(db.schema(), expected, f"{environment} at 104 (snapshots kept: {snapshots_kept})")
