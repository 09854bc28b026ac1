"""scripts/benchmark-plan-vs-project: the plan's SQL files and the project's revisions, same data, same paced load.

A benchmark, not a test: its numbers depend on the machine. It loads the
staging and prod lookalikes once (``bulk_load``, ``--messages`` each) and
keeps them as templates; every scenario runs on fresh copies of them, under a
**paced** application load (``--rate`` requests per second per environment,
as ``authenticated`` with JWT claims: the workers of bench_under_load, paced),
with a sampler of the requests that wait for a lock held by the migration
(``pg_blocking_pids``). Subcommands, each printing Markdown for BENCHMARKS.md:

* ``compare``: (a) the plan's own SQL files as an operator pastes them into
  the SQL editor (each file one simple-query message: one implicit
  transaction), then its ``rollback.sql``; (b) ``alembic -n ENV upgrade
  100_converged`` and the downgrade to the baseline; (c) ``upgrade head`` and
  the downgrade. Wall time, application errors, p50/p99/max at rest and
  during the DDL, the longest wait of one request on the migration, ratios.
* ``deadlocks``: the plan's prod file repeated ``--trials`` times under load
  (the NOT NULL undone between trials, the index kept as prod had it),
  against the project's 001_schema_alignment upgrade and downgrade.
* ``queries``: the plan's three performance claims on staging, as
  ``authenticated`` in one long-lived session: at the baseline, after the
  plan's files, at head.
* ``index-floor``: CREATE INDEX against CREATE INDEX CONCURRENTLY on an idle
  copy, at the server's maintenance_work_mem (what the migration uses) and
  at ``--big-maintenance-work-mem``.
* ``unread``: issue 12's per-chat reads as the frontend makes them, on a
  database of its own (staging at head, no paced load, not the templates):
  one chat of ``--chat-messages`` messages among 200 users who each belong to
  ``--other-chats`` other chats too, and a 201st member who belongs to that
  chat only. For 0, 1,000 and 10,000 unread, for both callers, as
  ``authenticated`` with the JWT settings PostgREST makes (checks/smoke.py's
  CALLER_SQL), one transaction per request: get_unread_count, the latest
  page, the first page of unread and all unread, ``--calls`` calls in one
  long-lived session and ``--calls`` calls each on a new connection (the
  connection's setup not timed), and the buffers each touched under EXPLAIN
  (ANALYZE, BUFFERS) in the long-lived session. Then the same counts one
  revision down (103_messaging_security, by last_read_at).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import psycopg2
import psycopg2.errors

from chat_migrations.checks.smoke import CALLER_SQL, caller_settings, conversations_sql, rpc_sql
from chat_migrations.frozen import baseline
from chat_migrations.harness import alembic_cli, bulk_load
from chat_migrations.harness.bench_under_load import (
    WORKLOAD, ApplicationWorker, LockWaitSampler, Recorder, run_alembic, sample_participants, summarize,
)
from chat_migrations.harness.cluster import Cluster
from chat_migrations.schema import history

ENVIRONMENTS = ("staging", "prod")


# The revisions the benchmark times, read from the chains (no list of ids kept here).
def converged_revision() -> str:
    """Where the two environments' histories meet: the oldest revision both chains hold."""
    staging = {script.revision for script in history.chain("staging")}
    return next(script.revision for script in history.chain("prod") if script.revision in staging)


def first_revision_after_baseline(environment: str) -> str:
    """The environment's first phase of the plan (prod: the plan's 001)."""
    return history.chain(environment)[1].revision


def before_seq_read_positions() -> str:
    """The revision before the one that gave readers a seq read position (unread counts by time there)."""
    state = history.promised("staging")
    declaring = state.by(("column", "public.chat_participants.last_read_seq"))[0]
    return history.script_directory("staging").get_revision(declaring).down_revision

# The plan's files as its summary gives them (000_0ab04973857fefb3: "Migration
# Strategy" and "Rollback Plan"), in the order an operator runs them. Each is
# pasted whole into the SQL editor: one request, one implicit transaction.
PLAN_FILES = {
    "staging": {
        "002_function_updates_staging.sql": f"DROP FUNCTION IF EXISTS {baseline.MARK_MESSAGES_AS_READ};"
        f"{baseline.MARK_MESSAGES_AS_READ_RETURNING_COUNT}{baseline.MARK_MESSAGES_AS_READ_GRANTS}"
        f"{baseline.GET_UNREAD_COUNT_FUNCTION}",
        "003_index_alignment.sql": "CREATE INDEX IF NOT EXISTS idx_chat_messages_reply_to "
        "ON public.chat_messages (reply_to_message_id);",
    },
    "prod": {
        "001_schema_alignment.sql": "ALTER TABLE public.chat_participants ALTER COLUMN chat_id SET NOT NULL;\n"
        "ALTER TABLE public.chat_participants ALTER COLUMN user_id SET NOT NULL;\n"
        "CREATE INDEX IF NOT EXISTS idx_chat_messages_sender_id ON public.chat_messages (sender_id);",
    },
}
# rollback.sql, each environment's half (the plan: "Function rollback usually not needed").
PLAN_ROLLBACK = {
    "staging": "DROP INDEX IF EXISTS idx_chat_messages_reply_to;",
    "prod": "ALTER TABLE public.chat_participants ALTER COLUMN chat_id DROP NOT NULL;\n"
    "ALTER TABLE public.chat_participants ALTER COLUMN user_id DROP NOT NULL;\n"
    "DROP INDEX IF EXISTS idx_chat_messages_sender_id;",
}
# Between deadlock trials: back to prod as it was (its sender index existed before the plan).
UNDO_PROD_NOT_NULL = ("ALTER TABLE public.chat_participants ALTER COLUMN chat_id DROP NOT NULL, "
                      "ALTER COLUMN user_id DROP NOT NULL")


@dataclass
class Step:
    label: str
    environment: str
    start: float
    end: float
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Bench:
    """The server, the loaded templates, and fresh copies under paced load."""

    def __init__(self, messages: int, rate: float, workers: int):
        self.messages, self.rate, self.workers = messages, rate, workers
        self.cluster = Cluster.start()
        print(f"server on port {self.cluster.port}, data in {self.cluster.root}", file=sys.stderr, flush=True)
        self.templates = {}
        for env in ENVIRONMENTS:
            name = f"tpl_{env}"
            started = time.monotonic()
            self.cluster.create_observed_database(name, env)
            bulk_load.load(self.cluster.passfile_url(name), messages=messages)
            alembic_cli.run("-n", env, "-x", f"mark_as={env}", "stamp", history.base_revision(env),
                            urls={env: self.cluster.passfile_url(name)})
            self.templates[env] = name
            say(f"loaded {env}: {messages:,} messages in {time.monotonic() - started:.0f}s")
        self.participants = {env: sample_participants(self.cluster.url(name)) for env, name in self.templates.items()}

    def copies(self, tag: str) -> dict[str, str]:
        """Fresh copies of the loaded templates; returns {environment: database}."""
        names = {}
        for env, template in self.templates.items():
            name = f"{tag}_{env}"
            self.cluster.drop_database(name)
            self.cluster.create_database(name, template=template)
            names[env] = name
        return names

    def under_load(self, databases: dict[str, str], run, quiet: float) -> dict:
        """Paced traffic on ``databases``; ``quiet`` s at rest, then run() -> [Step], then ``quiet`` s more."""
        recorder, stop = Recorder(), threading.Event()
        interval = self.workers / self.rate
        workers = [
            ApplicationWorker(self.cluster.url(database), env, self.participants[env], recorder, stop, seed=n,
                              interval=interval)
            for env, database in databases.items() for n in range(self.workers)
        ]
        sampler = LockWaitSampler(lambda: self.cluster.admin_connect("postgres"), stop)
        for thread in (*workers, sampler):
            thread.start()
        try:
            time.sleep(quiet)
            began = time.monotonic()
            steps = run()
            ended = time.monotonic()
            time.sleep(quiet)
        finally:
            stop.set()
            for thread in (*workers, sampler):
                thread.join(timeout=60)
        return {"recorder": recorder, "sampler": sampler, "steps": steps, "began": began, "ended": ended}

    def paste(self, database: str, environment: str, label: str, sql: str) -> Step:
        """One file pasted into the SQL editor: one simple query, one implicit transaction, no timeouts."""
        conn = psycopg2.connect(self.cluster.url(database), application_name=f"plan:{environment}")
        conn.autocommit = True
        started, error = time.monotonic(), None
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        except psycopg2.Error as problem:
            error = f"{type(problem).__name__}: {str(problem).strip().splitlines()[0]}"
        finally:
            conn.close()
        return Step(label, environment, started, time.monotonic(), error)

    def alembic(self, database: str, environment: str, *args: str) -> Step:
        start, end, _, _ = run_alembic({environment: self.cluster.passfile_url(database)}, "-n", environment, *args)
        return Step(f"alembic {' '.join(args)}", environment, start, end)

    def stop(self) -> None:
        self.cluster.stop(remove=True)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _phase_summary(run: dict) -> dict:
    samples, steps, sampler = run["recorder"].samples, run["steps"], run["sampler"]
    during = [s for s in samples if any(step.start <= s.at < step.end for step in steps)]
    rest = [s for s in samples if s.at < run["began"]]
    return {
        "wall_seconds": round(sum(step.seconds for step in steps), 2),
        "at_rest": summarize(rest),
        "during": summarize(during),
        # Which request a slow maximum was (a mark of a big chat, a send waiting for a lock, ...).
        "during_by_operation": {op: summarize([s for s in during if s.operation == op]) for op in WORKLOAD},
        "errors_during": sum(1 for s in samples if s.error and run["began"] <= s.at < run["ended"] + 1),
        "error_kinds": sorted({s.error for s in samples if s.error})[:4],
        "longest_wait_on_migration_s": sampler.longest_wait(run["began"], run["ended"]),
        "requests_waited_on_migration": sampler.requests_waited(run["began"], run["ended"]),
        "steps": [(step.environment, step.label, round(step.seconds, 2), step.error) for step in steps],
    }


def compare(bench: Bench, quiet: float) -> dict:
    results = {}

    def plan(databases):
        steps = []
        for env in ENVIRONMENTS:
            for name, sql in PLAN_FILES[env].items():
                steps.append(bench.paste(databases[env], env, name, sql))
        for env in ENVIRONMENTS:
            steps.append(bench.paste(databases[env], env, "rollback.sql", PLAN_ROLLBACK[env]))
        return steps

    def project(target):
        def run(databases):
            steps = [bench.alembic(databases[env], env, "upgrade", target) for env in ENVIRONMENTS]
            steps += [bench.alembic(databases[env], env, "downgrade", history.base_revision(env)) for env in ENVIRONMENTS]
            return steps
        return run

    converged = converged_revision()
    for label, run in (("plan's files + rollback.sql", plan), (f"project: upgrade {converged} + downgrade",
                                                               project(converged)),
                       ("project: upgrade head + downgrade", project("head"))):
        databases = bench.copies("compare")
        say(f"compare: {label}")
        measured = bench.under_load(databases, lambda: run(databases), quiet)
        results[label] = _phase_summary(measured)
        say(json.dumps(results[label]))
    return results


def deadlocks(bench: Bench, trials: int, quiet: float) -> dict:
    results = {}
    prod = {"prod": bench.copies("deadlocks")["prod"]}

    def plan_trials():
        steps = []
        for _ in range(trials):
            steps.append(bench.paste(prod["prod"], "prod", "001_schema_alignment.sql",
                                     PLAN_FILES["prod"]["001_schema_alignment.sql"]))
            bench.paste(prod["prod"], "prod", "undo", UNDO_PROD_NOT_NULL)  # not the plan's: it keeps the index
            time.sleep(1)
        return steps

    first = first_revision_after_baseline("prod")

    def project_trials():
        steps = []
        for _ in range(trials):
            steps.append(bench.alembic(prod["prod"], "prod", "upgrade", first))
            bench.alembic(prod["prod"], "prod", "downgrade", history.base_revision("prod"))
            time.sleep(1)
        return steps

    for label, run in (("plan: 001_schema_alignment.sql", plan_trials),
                       (f"project: upgrade {first}", project_trials)):
        say(f"deadlocks: {label}")
        measured = bench.under_load({"prod": prod["prod"]}, run, quiet)
        samples = measured["recorder"].samples
        rows = []
        for step in measured["steps"]:
            inside = [s for s in samples if step.start <= s.at < step.end + 0.5]
            app_deadlocks = sum(1 for s in inside if s.error and "deadlock" in s.error)
            rows.append({
                "seconds": round(step.seconds, 2), "migration_error": step.error, "app_deadlocks": app_deadlocks,
                "app_errors": sum(1 for s in inside if s.error),
                "app_max_ms": max((s.latency * 1000 for s in inside if s.error is None), default=0.0),
                "longest_wait_s": measured["sampler"].longest_wait(step.start, step.end),
                "requests_waited": measured["sampler"].requests_waited(step.start, step.end),
            })
        results[label] = rows
        say(json.dumps(rows))
    return results


# The plan's three claims, as the frontend asks them (as the caller, through RLS).
CLAIMS = {
    "sender: messages from user X (claimed ~10-30 % faster)":
        "SELECT id, chat_id, message_text, created_at FROM public.chat_messages WHERE sender_id = %(me)s "
        "ORDER BY created_at DESC LIMIT 50",
    "reply thread: replies to a message (claimed ~15-40 % faster)":
        "SELECT id, sender_id, message_text, created_at FROM public.chat_messages WHERE reply_to_message_id = %(message)s "
        "ORDER BY created_at",
    "unread count (claimed ~50-80 % faster)": "UNREAD",
}
UNREAD_BEFORE_FUNCTION = ("SELECT count(*) FROM public.chat_messages WHERE chat_id = %(chat)s AND sender_id <> %(me)s "
                          "AND deleted_at IS NULL AND status <> 'read'")


def _callers(url: str) -> dict:
    """A member of the largest chat, a message of it with replies."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT chat_id FROM public.chat_messages GROUP BY chat_id ORDER BY count(*) DESC LIMIT 1")
            [chat] = cur.fetchone()
            cur.execute("SELECT user_id FROM public.chat_participants WHERE chat_id = %s AND last_read_at IS NOT NULL "
                        "ORDER BY user_id LIMIT 1", (chat,))
            [me] = cur.fetchone()
            cur.execute("SELECT reply_to_message_id FROM public.chat_messages WHERE chat_id = %s AND reply_to_message_id "
                        "IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", (chat,))
            [message] = cur.fetchone()
    finally:
        conn.close()
    return {"chat": str(chat), "me": str(me), "message": str(message)}


def _time_queries(url: str, who: dict, calls: int) -> dict:
    conn = psycopg2.connect(url, application_name="app")
    timings = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regprocedure('public.get_unread_count(uuid, uuid)') IS NOT NULL")
            [has_function] = cur.fetchone()
            conn.commit()
            for label, sql in CLAIMS.items():
                if sql == "UNREAD":
                    sql = ("SELECT public.get_unread_count(%(chat)s, %(me)s)" if has_function else UNREAD_BEFORE_FUNCTION)
                runs = []
                for _ in range(calls):
                    started = time.perf_counter()
                    cur.execute("SET LOCAL ROLE authenticated")
                    cur.execute("SELECT set_config('request.jwt.claims', %s, true)",
                                (json.dumps({"sub": who["me"], "role": "authenticated"}),))
                    cur.execute(sql, who)
                    cur.fetchall()
                    conn.commit()
                    runs.append((time.perf_counter() - started) * 1000)
                ordered = sorted(runs)
                timings[label] = {"p50_ms": round(statistics.median(ordered), 2),
                                  "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)}
    finally:
        conn.close()
    return timings


def _mark_read_as(url: str, who: dict) -> None:
    conn = psycopg2.connect(url, application_name="app")
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL ROLE authenticated")
            cur.execute("SELECT set_config('request.jwt.claims', %s, true)",
                        (json.dumps({"sub": who["me"], "role": "authenticated"}),))
            cur.execute("SELECT * FROM public.mark_messages_as_read(%(chat)s, %(me)s)", who)
        conn.commit()
    finally:
        conn.close()


def queries(bench: Bench, calls: int) -> dict:
    """Staging at its baseline and after the plan's files (one copy); at 103 and at head (another)."""
    plan_copy = bench.copies("queries_plan")["staging"]
    url = bench.cluster.url(plan_copy)
    who = _callers(url)
    results = {"baseline": _time_queries(url, who, calls)}
    for name, sql in PLAN_FILES["staging"].items():
        bench.paste(plan_copy, "staging", name, sql)
    bench.cluster.execute(plan_copy, "ANALYZE public.chat_messages")
    results["after the plan's files"] = _time_queries(url, who, calls)
    bench.cluster.drop_database(plan_copy)
    project_copy = bench.copies("queries_project")["staging"]
    url = bench.cluster.url(project_copy)
    before = before_seq_read_positions()
    bench.alembic(project_copy, "staging", "upgrade", before)
    results[f"at {before}"] = _time_queries(url, who, calls)
    bench.alembic(project_copy, "staging", "upgrade", "head")
    results["at head (read position by time)"] = _time_queries(url, who, calls)
    # The reader's first mark-as-read since 104 gives them a seq position: counted by seq from then on.
    _mark_read_as(url, who)
    results["at head, after the reader's mark_messages_as_read"] = _time_queries(url, who, calls)
    bench.cluster.drop_database(project_copy)
    return {"caller": who, "calls": calls, "results": results}


def index_floor(bench: Bench, big: str) -> dict:
    database = bench.copies("floor")["staging"]
    conn = bench.cluster.connect(database)
    rows = []
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW maintenance_work_mem")
            [default] = cur.fetchone()
            for setting in (default, big):
                for concurrently in ("", "CONCURRENTLY "):
                    cur.execute(f"SET maintenance_work_mem = '{setting}'")
                    started = time.monotonic()
                    cur.execute(f"CREATE INDEX {concurrently}idx_chat_messages_reply_to "
                                "ON public.chat_messages (reply_to_message_id)")
                    seconds = time.monotonic() - started
                    cur.execute("DROP INDEX public.idx_chat_messages_reply_to")
                    rows.append({"maintenance_work_mem": setting, "statement": f"CREATE INDEX {concurrently}".strip(),
                                 "seconds": round(seconds, 2)})
                    say(json.dumps(rows[-1]))
    finally:
        conn.close()
    return {"rows": rows}


# --- unread: issue 12's per-chat reads for the real caller ---------------------------

UNREAD_LEVELS = (0, 10, 1_000, 10_000, 100_000)
# Above this many unread only get_unread_count is timed (the unread list would be the whole tail).
UNREAD_ALL_READS_UP_TO = 10_000
# mark_messages_as_read: each sample marks that many fresh messages (status is the message's, not the
# reader's: a mark leaves nothing to mark for the next one), so fewer samples for the big ones.
MARK_SAMPLES = {0: 11, 1_000: 11, 10_000: 5, 100_000: 3}
UNREAD_MEMBERS = 200  # the big chat's members who also belong to the other chats
UNREAD_OTHER_CHAT_MESSAGES = 20
# What the frontend asks, as supabase-js sends it through PostgREST (one request each).
UNREAD_READS = {
    # The floor: a request that reads no table (settings, a round trip, the commit; a new backend's start-up).
    "floor: SELECT 1": "SELECT 1 WHERE %(p_chat_id)s::uuid IS NOT NULL",
    "get_unread_count": rpc_sql("get_unread_count", ("p_chat_id", "p_user_id")),
    "latest page (50)": "SELECT * FROM public.chat_messages WHERE chat_id = %(p_chat_id)s ORDER BY seq DESC LIMIT 50",
    "unread, first page (50)": "SELECT * FROM public.chat_messages WHERE chat_id = %(p_chat_id)s "
    "AND seq > %(after)s ORDER BY seq LIMIT 50",
    "unread, all": "SELECT * FROM public.chat_messages WHERE chat_id = %(p_chat_id)s AND seq > %(after)s ORDER BY seq",
}

_UB_USER = "md5('ubench-user-' || {})::uuid"
_UB_CHAT = "md5('ubench-chat-' || {})::uuid"

# As the cluster's admin, like bulk_load: set-based, triggers and FK checks off for
# this session (seq given 1..n, consistent by construction). Chat 0 is the big one;
# users 0..199 are in it and in every other chat; user 200 is in chat 0 only.
# Nobody's message is their reader's own: user 0 and user 200 never send.
_UNREAD_LOAD_SQL = f"""
SET session_replication_role = replica;
SET synchronous_commit = off;
INSERT INTO auth.users (id, email, created_at)
SELECT {_UB_USER.format("u")}, 'ubench-' || u || '@example.test', timestamptz '2024-12-01 00:00+00'
  FROM generate_series(0, %(members)s) AS u;
INSERT INTO public.chats (id, title, is_group, created_by, created_at, updated_at)
SELECT {_UB_CHAT.format("c")}, 'Group ' || c, true, {_UB_USER.format("1")},
       timestamptz '2025-01-01 00:00+00', timestamptz '2025-01-01 00:00+00'
  FROM generate_series(0, %(other_chats)s) AS c;
INSERT INTO public.chat_participants (id, chat_id, user_id, joined_at, last_read_at)
SELECT md5('ubench-participant-' || c || '-' || u)::uuid, {_UB_CHAT.format("c")}, {_UB_USER.format("u")},
       timestamptz '2025-01-01 00:00+00', NULL
  FROM generate_series(0, %(other_chats)s) AS c, generate_series(0, %(members)s) AS u
 WHERE u < %(members)s OR c = 0;
INSERT INTO public.chat_messages (id, chat_id, sender_id, message_text, seq, status, created_at, updated_at)
SELECT md5('ubench-message-' || c || '-' || s)::uuid, {_UB_CHAT.format("c")},
       {_UB_USER.format("1 + (s * 31 + c) %% (%(members)s - 1)")},
       'message ' || s || ' ' || left('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor', (s * 7) %% 80),
       s, CASE WHEN c = 0 AND s > %(chat_messages)s - 20000 THEN 'delivered' ELSE 'read' END,
       timestamptz '2025-01-01 00:00+00' + s * interval '37 seconds',
       timestamptz '2025-01-01 00:00+00' + s * interval '37 seconds'
  FROM generate_series(0, %(other_chats)s) AS c,
       generate_series(1, CASE WHEN c = 0 THEN %(chat_messages)s ELSE {UNREAD_OTHER_CHAT_MESSAGES} END) AS s;
SET session_replication_role = DEFAULT;
"""


def _unread_database(cluster: Cluster, name: str, chat_messages: int, other_chats: int) -> dict:
    """Staging at head with the big chat; returns the chat and the two callers."""
    started = time.monotonic()
    cluster.create_observed_database(name, "staging")
    urls = {"staging": cluster.passfile_url(name)}
    alembic_cli.run("-n", "staging", "-x", "mark_as=staging", "stamp", history.base_revision("staging"), urls=urls)
    alembic_cli.run("-n", "staging", "upgrade", "head", urls=urls)
    conn = cluster.admin_connect(name)
    try:
        with conn.cursor() as cur:
            cur.execute(_UNREAD_LOAD_SQL, {"members": UNREAD_MEMBERS, "other_chats": other_chats,
                                           "chat_messages": chat_messages})
            cur.execute("VACUUM ANALYZE auth.users, public.chats, public.chat_participants, public.chat_messages")
            cur.execute(f"SELECT {_UB_CHAT.format('0')}, {_UB_USER.format('0')}, {_UB_USER.format(UNREAD_MEMBERS)}, "
                        "pg_size_pretty(pg_total_relation_size('public.chat_messages')), "
                        "(SELECT count(*) FROM public.chat_messages)")
            chat, many, one, size, total = cur.fetchone()
    finally:
        conn.close()
    say(f"unread: {chat_messages:,}-message chat loaded at head in {time.monotonic() - started:.0f}s "
        f"({total:,} messages, chat_messages {size})")
    return {"chat": str(chat), "total_messages": total, "table_size": size,
            "callers": {f"member of {other_chats + 1} chats": str(many), "member of this chat only": str(one)}}


def _set_position(cluster: Cluster, database: str, data: dict, latest: int, unread: int, by_seq: bool) -> None:
    """Both callers have read all but the last ``unread`` messages (as mark_messages_as_read leaves it)."""
    position = latest - unread
    seq = ", last_read_seq = %(position)s" if by_seq else ""
    conn = cluster.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(f"""
                UPDATE public.chat_participants
                   SET last_read_at = (SELECT created_at FROM public.chat_messages
                                        WHERE chat_id = %(chat)s AND seq = %(position)s){seq}
                 WHERE chat_id = %(chat)s AND user_id = ANY(%(callers)s::uuid[])""",
                        {"chat": data["chat"], "position": position, "callers": list(data["callers"].values())})
    finally:
        conn.close()


def _percentiles(runs: list[float]) -> dict:
    ordered = sorted(runs)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
            "max_ms": round(ordered[-1], 3)}


def _request(conn, user: str, sql: str, params: dict, expect: int | None) -> float:
    """One PostgREST request: the caller's settings and the query in one transaction; its time in ms."""
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(CALLER_SQL, caller_settings("authenticated", user))
        cur.execute(sql, params)
        rows = cur.fetchall()
    conn.commit()
    elapsed = (time.perf_counter() - started) * 1000
    if expect is not None and rows != [(expect,)]:
        raise AssertionError(f"get_unread_count returned {rows}, expected {expect}")
    return elapsed


def _explain(conn, user: str, sql: str, params: dict) -> dict:
    """The same request under EXPLAIN (ANALYZE, BUFFERS): the buffers it touched (the function's statements
    included) and the server's execution time; in the long-lived session, after its plans are cached."""
    with conn.cursor() as cur:
        cur.execute(CALLER_SQL, caller_settings("authenticated", user))
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        [[plan]] = cur.fetchall()
    conn.commit()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]
    node = top["Plan"]
    return {"buffers": node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0),
            "execution_ms": round(top["Execution Time"], 3)}


def _time_reads(url: str, data: dict, unread: int, calls: int, reads: dict) -> dict:
    results = {}
    for caller, user in data["callers"].items():
        params = {"p_chat_id": data["chat"], "p_user_id": user, "after": data["latest"] - unread}
        for label, sql in reads.items():
            expect = unread if label == "get_unread_count" else None
            conn = psycopg2.connect(url, application_name="ubench-long-lived")
            try:
                long_lived = [_request(conn, user, sql, params, expect) for _ in range(calls)]
                explained = _explain(conn, user, sql, params)
            finally:
                conn.close()
            fresh = []
            for _ in range(calls):
                conn = psycopg2.connect(url, application_name="ubench-fresh")
                try:
                    fresh.append(_request(conn, user, sql, params, expect))
                finally:
                    conn.close()
            results[f"{caller} | {label}"] = {"long-lived session": _percentiles(long_lived),
                                              "new connection per call": _percentiles(fresh),
                                              "explain": explained}
            say(f"unread={unread:,} {caller} {label}: {json.dumps(results[f'{caller} | {label}'])}")
    return results


_MARK_LOAD_SQL = f"""
SET session_replication_role = replica;
INSERT INTO public.chat_messages (id, chat_id, sender_id, message_text, seq, status, created_at, updated_at)
SELECT gen_random_uuid(), %(chat)s, {_UB_USER.format("1 + s %% (%(members)s - 1)")}, 'fresh message ' || s, s, 'sent',
       clock_timestamp(), clock_timestamp()
  FROM generate_series(%(first)s, %(last)s) AS s;
SET session_replication_role = DEFAULT;
"""


def _time_marks(cluster: Cluster, database: str, url: str, data: dict) -> dict:
    """mark_messages_as_read as authenticated, in one long-lived session, for fresh unread messages.

    Each sample appends ``unread`` new 'sent' messages from the other members (as a
    superuser's load, like the chat's) after the caller's position (the chat's end, where
    _set_position or their previous mark left it) and marks; updated_count must equal
    ``unread``. The chat grows by every sample.
    """
    results = {}
    user = data["callers"]["member of this chat only"]
    admin = cluster.admin_connect(database)
    try:
        with admin.cursor() as cur:  # the load's delivered tail: 103 would mark it too
            cur.execute("UPDATE public.chat_messages SET status = 'read' WHERE chat_id = %s AND status <> 'read'",
                        (data["chat"],))
    finally:
        admin.close()
    conn = psycopg2.connect(url, application_name="ubench-marks")
    try:
        for unread, samples in MARK_SAMPLES.items():
            runs = []
            for _ in range(samples):
                admin = cluster.admin_connect(database)
                try:
                    with admin.cursor() as cur:
                        cur.execute(_MARK_LOAD_SQL, {"chat": data["chat"], "members": UNREAD_MEMBERS,
                                                     "first": data["latest"] + 1, "last": data["latest"] + unread})
                        cur.execute("ANALYZE public.chat_messages")
                finally:
                    admin.close()
                # The caller's position stays where their last mark left it, just before these: setting
                # last_read_at directly here would clear the seq position (104's trigger), and the mark
                # would start from the chat's beginning.
                data["latest"] += unread
                params = {"p_chat_id": data["chat"], "p_user_id": user}
                started = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute(CALLER_SQL, caller_settings("authenticated", user))
                    cur.execute(rpc_sql("mark_messages_as_read", ("p_chat_id", "p_user_id")), params)
                    rows = cur.fetchall()
                conn.commit()
                runs.append((time.perf_counter() - started) * 1000)
                if rows != [(unread,)]:
                    raise AssertionError(f"mark_messages_as_read returned {rows}, expected {unread}")
            results[f"{unread:,}"] = {**_percentiles(runs), "samples": samples}
            say(f"mark_messages_as_read, {unread:,} unread: {json.dumps(results[f'{unread:,}'])}")
    finally:
        conn.close()
    return results


# Not shipped: the list with every unread count in one set-based query, as a new name in the contract (a view
# or a set-returning function) would give it. The same arithmetic as get_unread_count by seq (its position
# and caller checks aside), measured to say what that contract change would buy.
SET_BASED_CONVERSATIONS_SQL = """
            SELECT c.id AS chat_id, last.seq AS last_seq, last.message_text AS last_text,
                   CASE WHEN p.last_read_seq IS NULL THEN by_time.n
                        WHEN latest.seq IS NULL OR latest.seq <= p.last_read_seq THEN 0
                        ELSE latest.seq - p.last_read_seq - own.n - deleted.n END AS unread
              FROM public.chat_participants p
              JOIN public.chats c ON c.id = p.chat_id
              LEFT JOIN LATERAL (
                    SELECT m.seq, m.message_text FROM public.chat_messages m
                     WHERE m.chat_id = c.id AND m.deleted_at IS NULL
                     ORDER BY m.seq DESC LIMIT 1) last ON true
              LEFT JOIN LATERAL (SELECT max(m.seq) AS seq FROM public.chat_messages m WHERE m.chat_id = c.id) latest ON true
              LEFT JOIN LATERAL (
                    SELECT count(*) AS n FROM public.chat_messages m
                     WHERE p.last_read_seq IS NOT NULL AND m.sender_id = p.user_id AND m.chat_id = c.id
                       AND m.seq > p.last_read_seq) own ON true
              LEFT JOIN LATERAL (
                    SELECT count(*) AS n FROM public.chat_messages m
                     WHERE p.last_read_seq IS NOT NULL AND m.chat_id = c.id AND m.seq > p.last_read_seq
                       AND m.deleted_at IS NOT NULL AND m.sender_id IS DISTINCT FROM p.user_id) deleted ON true
              LEFT JOIN LATERAL (
                    SELECT count(*) AS n FROM public.chat_messages m
                     WHERE p.last_read_seq IS NULL AND m.chat_id = c.id AND m.sender_id IS DISTINCT FROM p.user_id
                       AND m.deleted_at IS NULL AND (p.last_read_at IS NULL OR m.created_at > p.last_read_at)) by_time
                    ON true
             WHERE p.user_id = %(me)s
             ORDER BY c.id
            """


def _time_conversations(url: str, data: dict, calls: int, *, set_based: bool = False, jit: bool = True) -> dict:
    """The conversation list (checks.smoke.conversations_sql) for the caller in every chat, long-lived session;
    ``set_based``: the same rows from SET_BASED_CONVERSATIONS_SQL (checked equal first); ``jit`` False: with
    the session's jit off, as a function declared ``SET jit = off`` would run it (the set-based shape's cost
    estimate, inflated by the policies' subplans, is over jit_above_cost)."""
    user = data["callers"][next(iter(data["callers"]))]
    sql, params = (SET_BASED_CONVERSATIONS_SQL if set_based else conversations_sql()), {"me": user}
    conn = psycopg2.connect(url, application_name="ubench-conversations")
    try:
        with conn.cursor() as cur:
            # The set-based shape has no plan pinned: at 10M the planner can scan the whole table per chat.
            cur.execute(f"SET statement_timeout = '{SET_BASED_TIMEOUT_S}s'" if set_based else "SELECT 1")
            if not jit:
                cur.execute("SET jit = off")
        conn.commit()
        try:
            return _timed_conversations(conn, user, sql, params, calls, set_based)
        except psycopg2.errors.QueryCanceled:
            conn.rollback()
            say(f"conversation list (set-based): no answer within {SET_BASED_TIMEOUT_S} s")
            return {"timed_out_after_s": SET_BASED_TIMEOUT_S}
    finally:
        conn.close()


SET_BASED_TIMEOUT_S = 60  # seconds


def _timed_conversations(conn, user: str, sql: str, params: dict, calls: int, set_based: bool) -> dict:
    if set_based:
        rows = {}
        for query in (conversations_sql(), sql):
            with conn.cursor() as cur:
                cur.execute(CALLER_SQL, caller_settings("authenticated", user))
                cur.execute(query, params)
                rows[query] = cur.fetchall()
            conn.commit()
        if rows[sql] != rows[conversations_sql()]:
            issued, set_based_rows = rows[conversations_sql()], rows[sql]
            differing = [(a, b) for a, b in zip(issued, set_based_rows) if a != b][:3]
            raise AssertionError(f"the set-based conversation list differs from the one the frontend issues: "
                                 f"{len(issued)} and {len(set_based_rows)} rows, first differences {differing}")
    runs = [_request(conn, user, sql, params, None) for _ in range(calls)]
    explained = _explain(conn, user, sql, params)
    result = {**_percentiles(runs), "explain": explained}
    say(f"conversation list{' (set-based)' if set_based else ''}: {json.dumps(result)}")
    return result


def unread(cluster: Cluster, chat_sizes: list[int], other_chats: int, calls: int, before: bool) -> dict:
    everything = {}
    for chat_messages in chat_sizes:
        name = f"ubench_{chat_messages}"
        cluster.drop_database(name)
        data = _unread_database(cluster, name, chat_messages, other_chats)
        data["latest"] = chat_messages
        url = cluster.url(name)
        runs = {}
        count = {"get_unread_count": UNREAD_READS["get_unread_count"]}
        for level in UNREAD_LEVELS:
            _set_position(cluster, name, data, chat_messages, level, by_seq=True)
            reads = UNREAD_READS if level <= UNREAD_ALL_READS_UP_TO else count
            runs[f"head, {level:,} unread"] = _time_reads(url, data, level, calls, reads)
        _set_position(cluster, name, data, chat_messages, 0, by_seq=True)
        conversations = {"head": _time_conversations(url, data, calls),
                         "head, set-based (a contract change, not shipped)":
                             _time_conversations(url, data, calls, set_based=True),
                         "head, set-based, jit off (a contract change, not shipped)":
                             _time_conversations(url, data, calls, set_based=True, jit=False)}
        marks = {"head": _time_marks(cluster, name, url, data)}
        if before:
            earlier = before_seq_read_positions()
            alembic_cli.run("-n", "staging", "downgrade", earlier, urls={"staging": cluster.passfile_url(name)})
            for level in UNREAD_LEVELS:
                _set_position(cluster, name, data, data["latest"], level, by_seq=False)
                runs[f"{earlier}, {level:,} unread"] = _time_reads(url, data, level, calls, count)
            _set_position(cluster, name, data, data["latest"], 0, by_seq=False)
            conversations[earlier] = _time_conversations(url, data, calls)
            marks[earlier] = _time_marks(cluster, name, url, data)
        cluster.drop_database(name)
        everything[f"{chat_messages:,}"] = {**data, "calls": calls, "runs": runs, "marks": marks,
                                            "conversations": conversations}
    return everything


def print_unread(results: dict) -> None:
    for size, result in results.items():
        print(f"Chat of {size} messages ({result['total_messages']:,} messages in the database, chat_messages "
              f"{result['table_size']}), {result['calls']} calls per cell; p50 / p99 / max in ms:\n")
        print("| state | caller | read | long-lived session | new connection per call "
              "| buffers (server ms), long-lived |")
        print("| --- | --- | --- | --- | --- | --- |")
        for state, rows in result["runs"].items():
            for key, modes in rows.items():
                caller, read = key.split(" | ")
                cells = " | ".join(f"{m['p50_ms']} / {m['p99_ms']} / {m['max_ms']}"
                                   for mode, m in modes.items() if mode != "explain")
                explained = modes["explain"]
                print(f"| {state} | {caller} | {read} | {cells} | {explained['buffers']} "
                      f"({explained['execution_ms']}) |")
        print()
        print("mark_messages_as_read, fresh unread messages, long-lived session; p50 / max in ms (samples):\n")
        print("| revision | " + " | ".join(f"{n:,} unread" for n in MARK_SAMPLES) + " |")
        print("| --- |" + " --- |" * len(MARK_SAMPLES))
        for revision, marks in result["marks"].items():
            print(f"| {revision} | " + " | ".join(f"{m['p50_ms']} / {m['max_ms']} ({m['samples']})"
                                                   for m in marks.values()) + " |")
        print()
        print("The conversation list (each chat, its last message, get_unread_count), caller in every chat; "
              "p50 / p99 / max in ms, buffers (server ms):\n")
        for revision, c in result["conversations"].items():
            if "timed_out_after_s" in c:
                print(f"| {revision} | no answer within {c['timed_out_after_s']} s | |")
                continue
            print(f"| {revision} | {c['p50_ms']} / {c['p99_ms']} / {c['max_ms']} | {c['explain']['buffers']} "
                  f"({c['explain']['execution_ms']}) |")
        print()


def _ratio(a, b) -> str:
    return f"{a / b:.1f}×" if b else ("—" if not a else "∞")


def print_compare(results: dict) -> None:
    print("| run | wall (s) | app errors | at rest p50 / p99 / max (ms) | during DDL p50 / p99 / max (ms) "
          "| requests that waited on a migration lock | longest wait on the migration (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in results.items():
        rest, during = r["at_rest"], r["during"]
        print(f"| {label} | {r['wall_seconds']} | {r['errors_during']} | {rest.get('p50_ms')} / {rest.get('p99_ms')} / "
              f"{rest.get('max_ms')} | {during.get('p50_ms')} / {during.get('p99_ms')} / {during.get('max_ms')} "
              f"| {r['requests_waited_on_migration']} | {r['longest_wait_on_migration_s']} |")
    plan = next(iter(results.values()))
    for label, r in list(results.items())[1:]:
        print(f"\n{label} / plan: wall {_ratio(r['wall_seconds'], plan['wall_seconds'])}, "
              f"max during {_ratio(r['during'].get('max_ms', 0), plan['during'].get('max_ms', 0))}, "
              f"longest wait {_ratio(r['longest_wait_on_migration_s'], plan['longest_wait_on_migration_s'])}")
    print("\nSteps:")
    for label, r in results.items():
        print(f"- {label}: " + "; ".join(f"{env} {name} {seconds}s" + (f" ({error})" if error else "")
                                        for env, name, seconds, error in r["steps"]))


def print_deadlocks(results: dict) -> None:
    print("| run | trials | trials with aborted app transactions | app deadlocks | migration failed "
          "| longest wait on the migration (s) | app max (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, rows in results.items():
        print(f"| {label} | {len(rows)} | {sum(1 for r in rows if r['app_errors'])} | "
              f"{sum(r['app_deadlocks'] for r in rows)} | {sum(1 for r in rows if r['migration_error'])} | "
              f"{max((r['longest_wait_s'] for r in rows), default=0)} | "
              f"{round(max((r['app_max_ms'] for r in rows), default=0), 1)} |")


def print_queries(results: dict) -> None:
    states = list(results["results"])
    print("| query | " + " | ".join(f"{state} p50 (ms)" for state in states) + " | change, baseline → head |")
    print("| --- |" + " --- |" * (len(states) + 1))
    for label in CLAIMS:
        values = [results["results"][state][label]["p50_ms"] for state in states]
        change = (values[0] - values[-1]) / values[0] * 100 if values[0] else 0
        print(f"| {label} | " + " | ".join(str(v) for v in values) + f" | {change:+.0f} % faster |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/benchmark-plan-vs-project", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="+", choices=("compare", "deadlocks", "queries", "index-floor", "unread"))
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages per environment (default 1,000,000)")
    parser.add_argument("--rate", type=float, default=50.0, help="application requests per second per environment (50)")
    parser.add_argument("--workers", type=int, default=4, help="application connections per environment (4)")
    parser.add_argument("--quiet-seconds", type=float, default=20.0, help="traffic at rest before and after (20)")
    parser.add_argument("--trials", type=int, default=20, help="deadlocks: repetitions of each file (20)")
    parser.add_argument("--calls", type=int, default=200, help="queries, unread: calls per query and state (200)")
    parser.add_argument("--big-maintenance-work-mem", default="1GB", help="index-floor: the raised setting (1GB)")
    parser.add_argument("--chat-messages", type=int, nargs="+", default=[1_000_000],
                        help="unread: messages in the measured chat, one run per size (default 1,000,000)")
    parser.add_argument("--other-chats", type=int, default=300,
                        help="unread: other chats each of the 200 members belongs to (300)")
    parser.add_argument("--no-before", action="store_true",
                        help="unread: skip the counts at the revision before seq read positions")
    parser.add_argument("--json", type=argparse.FileType("w"), help="also write the raw results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    load = os.getloadavg()
    sizes = (f"unread: chats of {', '.join(f'{n:,}' for n in args.chat_messages)} messages, no other load"
             if set(args.what) == {"unread"} else
             f"{args.messages:,} messages per environment, {args.rate:g} requests/s per environment over "
             f"{args.workers} connections")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}. {sizes}.\n")
    # unread alone builds its own database: no templates to load.
    if set(args.what) == {"unread"}:
        bench, cluster = None, Cluster.start()
        say(f"server on port {cluster.port}, data in {cluster.root}")
    else:
        bench = Bench(args.messages, args.rate, args.workers)
        cluster = bench.cluster
    everything = {}
    try:
        for what in args.what:
            if what == "unread":
                everything[what] = unread(cluster, args.chat_messages, args.other_chats, args.calls,
                                          not args.no_before)
                print_unread(everything[what])
                load = os.getloadavg()
                print(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.\n")
            elif what == "compare":
                everything[what] = compare(bench, args.quiet_seconds)
                print_compare(everything[what])
            elif what == "deadlocks":
                everything[what] = deadlocks(bench, args.trials, args.quiet_seconds / 2)
                print_deadlocks(everything[what])
            elif what == "queries":
                everything[what] = queries(bench, args.calls)
                print_queries(everything[what])
            else:
                everything[what] = index_floor(bench, args.big_maintenance_work_mem)
                for row in everything[what]["rows"]:
                    print(f"| {row['statement']} | {row['maintenance_work_mem']} | {row['seconds']} |")
            print(flush=True)
    finally:
        if bench:
            bench.stop()
        else:
            cluster.stop(remove=True)
        if args.json:
            json.dump(everything, args.json, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
