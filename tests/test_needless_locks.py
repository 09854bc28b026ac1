"""No revision takes a lock it does not need (issue 19, item 1).

On a database where a revision has nothing to change, it reads the catalog
(no lock on the chat tables) and requests no table lock, so it never queues
behind the application. Here the application is a real second connection
that updated a row of each chat table and keeps its transaction open: it
holds ROW EXCLUSIVE on both, which every ACCESS EXCLUSIVE request (even
``ALTER TABLE ... DROP CONSTRAINT IF EXISTS`` of nothing) waits behind.
"""

from __future__ import annotations

import pytest

from .conftest import revisions_in_order

# A revision that changes its tables whatever they hold: its upgrade needs its lock, so the
# question "nothing to change" has no database to ask it on.
ALWAYS_CHANGES = {
    # Drops and recreates every policy of the three tables and rewrites their ACLs, after
    # recording them under the lock it takes first (lock_retries.lock_tables).
    "103_messaging_security",
}

WRITER = "app-writer"


class Writer:
    """The application: one open transaction that updated a row of each chat table."""

    def __init__(self, db):
        self.conn = db.connect()
        self.conn.autocommit = False
        with self.conn.cursor() as cur:
            cur.execute(f"SET application_name = '{WRITER}'")
            cur.execute("UPDATE public.chat_messages SET message_text = message_text "
                        "WHERE ctid = (SELECT min(ctid) FROM public.chat_messages)")
            assert cur.rowcount == 1
            cur.execute("UPDATE public.chat_participants SET chat_id = chat_id "
                        "WHERE ctid = (SELECT min(ctid) FROM public.chat_participants)")
            assert cur.rowcount == 1

    def holds(self, db) -> set[tuple[str, str]]:
        return set(db.query(
            "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.application_name = %s AND l.granted "
            "AND c.relname IN ('chat_messages', 'chat_participants')", (WRITER,),
        ))

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


def test_a_revision_with_nothing_to_change_requests_no_lock_beside_an_open_writer(make_database, environment):
    """Each revision, upgraded through once, is run again on the state it left (its predecessor
    written back into alembic_version): with the writer open it must complete at its first lock
    attempt. One attempt is allowed (-x lock_attempts=1), so any lock request behind the writer
    fails the run at once and names the writer."""
    db = make_database(environment)
    history = revisions_in_order(environment)
    failures, checked = {}, []
    for previous, revision in zip(history, history[1:]):
        db.alembic("-n", environment, "upgrade", revision)
        if revision in ALWAYS_CHANGES:
            continue
        db.execute("UPDATE migration_meta.alembic_version SET version_num = %s", (previous,))
        writer = Writer(db)
        try:
            assert {("chat_messages", "RowExclusiveLock"), ("chat_participants", "RowExclusiveLock")} <= writer.holds(db)
            result = db.alembic("-n", environment, "-x", "lock_attempts=1", "upgrade", revision, check=False)
        finally:
            writer.close()
        checked.append(revision)
        if result.returncode != 0 or "not granted" in result.output or db.revision() != revision:
            lines = result.output.strip().splitlines()
            failures[revision] = [line for line in lines if "lock attempt" in line or "not granted" in line] or lines[-1:]
    assert len(checked) == len(history) - 1 - len(ALWAYS_CHANGES & set(history))
    assert failures == {}


def test_the_writer_does_stop_a_revision_that_has_something_to_change(make_database):
    """The same setting catches a lock request: staging's 006 on a key that is nullable waits behind the
    writer and gives up after its one attempt, naming it."""
    db = make_database("staging")
    db.alembic("-n", "staging", "upgrade", "005_staging_sender_index")
    db.execute("ALTER TABLE public.chat_messages ALTER COLUMN sender_id DROP NOT NULL", admin=True)
    writer = Writer(db)
    try:
        result = db.alembic("-n", "staging", "-x", "lock_attempts=1", "upgrade", "006_staging_keys_not_null", check=False)
    finally:
        writer.close()
    assert result.returncode != 0
    assert "gave up after 1 lock attempts of 500 ms on public.chat_messages" in result.output
    assert WRITER in result.output
    assert db.revision() == "005_staging_sender_index"
