"""Concurrent senders and a big chat, with real connections acting as the API's callers.

Each sender is its own connection through ``Frontend`` (role authenticated,
its JWT claims, READ COMMITTED as PostgREST runs). The plan of
get_unread_count is the one the function really uses, reported by
auto_explain from inside it.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg2.errors
import pytest

from chat_migrations.schema import messaging_functions

from .supabase_api import new_chat, new_users

SENDERS = 16
# How long each sender keeps its transaction open after its insert, in
# seconds: long enough for the others to queue behind it.
HOLD_SECONDS = 0.05
BIG_CHAT_MESSAGES = 50_000


def test_sixteen_senders_to_one_chat_all_succeed_with_gapless_seqs_in_commit_order(head, frontend):
    users = new_users(head, SENDERS)
    chat = new_chat(head, users)
    senders = [frontend(head, user) for user in users]
    reader = frontend(head, users[0])
    start = threading.Barrier(SENDERS)
    finished = threading.Event()
    seqs, failures, snapshots = {}, [], []

    def send(client):
        start.wait()
        try:
            with client.request() as cur:
                cur.execute(
                    "INSERT INTO public.chat_messages (chat_id, sender_id, message_text) VALUES (%s, %s, 'now') RETURNING seq",
                    (chat, client.user_id),
                )
                seqs[client.user_id] = cur.fetchone()["seq"]
                time.sleep(HOLD_SECONDS)
        except Exception as failure:  # noqa: BLE001  (reported below)
            failures.append(failure)

    def watch():
        # Commit order: whatever a reader sees at any moment is 1..n, never a hole
        # that a slower transaction fills in later.
        while not finished.is_set():
            rows = reader.query("SELECT seq FROM public.chat_messages WHERE chat_id = %s ORDER BY seq", (chat,))
            snapshots.append([row["seq"] for row in rows])

    threads = [threading.Thread(target=send, args=(client,)) for client in senders]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished.set()
    watcher.join()

    assert failures == []
    assert sorted(seqs.values()) == list(range(1, SENDERS + 1))
    for seen in snapshots:
        assert seen == list(range(1, len(seen) + 1)), f"a reader saw {seen}"
    assert len({len(seen) for seen in snapshots}) > 2, "the reader should have watched the chat fill up"


@pytest.mark.parametrize(
    "revision, second_seq",
    [("100_converged", "unique violation"), ("head", 2)],
    ids=["observed trigger: both read the same max(seq)", "serialised trigger: the second waits"],
)
def test_a_second_sender_during_an_open_send(make_database, frontend, revision, second_seq):
    db = make_database("prod")
    db.alembic("-n", "prod", "upgrade", revision)
    alice, bob = new_users(db, 2)
    chat = new_chat(db, [alice, bob])
    as_alice, as_bob = frontend(db, alice), frontend(db, bob)
    outcome = {}

    def bob_sends():
        try:
            outcome["seq"] = as_bob.send(chat, "me too")["seq"]
        except psycopg2.errors.UniqueViolation:
            outcome["seq"] = "unique violation"

    with as_alice.request() as cur:
        cur.execute("INSERT INTO public.chat_messages (chat_id, sender_id) VALUES (%s, %s) RETURNING seq", (chat, alice))
        assert cur.fetchone()["seq"] == 1
        second = threading.Thread(target=bob_sends)
        second.start()
        wait_until_blocked(db, as_bob.connection.get_backend_pid())
    second.join()
    assert outcome["seq"] == second_seq


def wait_until_blocked(db, pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while db.scalar("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)) != "Lock":
        assert time.monotonic() < deadline, f"backend {pid} never waited for a lock"
        time.sleep(0.01)


def test_get_unread_count_reads_only_the_unread_end_of_a_big_chat(make_database, frontend):
    db = make_database("prod", "head")
    writer, reader = new_users(db, 2)
    chat = new_chat(db, [writer, reader])
    # Loaded without triggers (seq given) to keep the test short; then statistics.
    db.execute(
        """
        SET session_replication_role = replica;
        INSERT INTO public.chat_messages (chat_id, sender_id, message_text, seq, created_at)
        SELECT %(chat)s, CASE WHEN g %% 2 = 0 THEN %(writer)s ELSE %(reader)s END::uuid, 'message ' || g, g,
               timestamptz '2025-01-01 00:00+00' + g * interval '1 minute'
          FROM generate_series(1, %(count)s) g;
        UPDATE public.chat_participants SET last_read_at = timestamptz '2025-01-01 00:00+00' + %(read)s * interval '1 minute'
         WHERE chat_id = %(chat)s AND user_id = %(reader)s;
        ANALYZE public.chat_messages;
        """,
        {"chat": chat, "writer": writer, "reader": reader, "count": BIG_CHAT_MESSAGES, "read": BIG_CHAT_MESSAGES - 20},
        admin=True,  # test data with triggers off: a superuser's load, not the project's
    )
    as_reader = frontend(db, reader, observed=True)
    with as_reader.connection.cursor() as cur:
        # auto_explain reports the plan of every statement inside the function to the client.
        cur.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;"
            "SET auto_explain.log_format = json; SET auto_explain.log_level = notice"
        )
    # Past the first five calls PL/pgSQL may switch to a generic plan: look at later ones too.
    for _ in range(8):
        as_reader.connection.notices.clear()
        assert as_reader.rpc("get_unread_count", p_chat_id=chat, p_user_id=reader) == [{"get_unread_count": 10}]
        plan = counting_plan(as_reader.connection.notices)
        scans = list(nodes(plan))
        assert not [n for n in scans if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "chat_messages"]
        used = {n.get("Index Name") for n in scans if n.get("Relation Name") == "chat_messages"}
        assert used == {messaging_functions.UNREAD_INDEX}, json.dumps(plan, indent=1)


def counting_plan(notices: list[str]) -> dict:
    """The plan of get_unread_count's count statement among auto_explain's notices."""
    for notice in notices:
        if "count(*)" in notice and "{" in notice:
            report = json.loads(notice[notice.index("{"):])
            if "FROM public.chat_messages" in report["Query Text"]:
                return report["Plan"]
    raise AssertionError(f"auto_explain reported no plan for the count: {notices}")


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)
