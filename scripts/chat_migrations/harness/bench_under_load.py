"""scripts/benchmark-under-load: the migration on production-sized data, under application traffic.

A benchmark, not a test: it takes many minutes and its numbers depend on the
machine. It loads both lookalikes with ``--messages`` messages (chats of very
different sizes, participants with read positions), runs an application
workload against both from several connections (as Supabase's API does: role
``authenticated`` with the caller's JWT claims), and while it runs drives the
real CLI: ``alembic upgrade head`` on staging and prod, then ``downgrade`` of
both back to their baselines. It records the application's latency (p50, p99,
max) and errors before, during and after, each revision's time, and the floor:
the plan's plain DDL on an idle copy of the same data.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from chat_migrations.harness import alembic_cli, bulk_load
from chat_migrations.frozen import baseline
from chat_migrations.harness.cluster import Cluster
from chat_migrations.schema import history

WORKLOAD = ("send", "mark_read", "unread_count", "latest_page")
# The plan's statements, run plainly (blocking DDL) on an idle copy: the floor of the revisions doing the same.
PLAIN_DDL = {
    "prod": {
        "participants' keys NOT NULL, sender index": "ALTER TABLE public.chat_participants ALTER COLUMN chat_id SET NOT NULL, "
        "ALTER COLUMN user_id SET NOT NULL; CREATE INDEX IF NOT EXISTS idx_chat_messages_sender_id "
        "ON public.chat_messages (sender_id)",
        "messages' keys NOT NULL": "ALTER TABLE public.chat_messages ALTER COLUMN chat_id SET NOT NULL, "
        "ALTER COLUMN sender_id SET NOT NULL",
    },
    "staging": {
        "mark_messages_as_read returns a count, get_unread_count": f"DROP FUNCTION {baseline.MARK_MESSAGES_AS_READ};"
        f"{baseline.MARK_MESSAGES_AS_READ_RETURNING_COUNT}{baseline.MARK_MESSAGES_AS_READ_GRANTS}"
        f"{baseline.GET_UNREAD_COUNT_FUNCTION}",
        "reply index": "CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages (reply_to_message_id)",
        "sender index": "CREATE INDEX idx_chat_messages_sender_id ON public.chat_messages (sender_id)",
    },
}


@dataclass
class Sample:
    at: float
    environment: str
    operation: str
    latency: float
    error: str | None = None


@dataclass
class Recorder:
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)


class ApplicationWorker(threading.Thread):
    """One client connection doing what the frontend does, in a loop, as a participant."""

    def __init__(self, url: str, environment: str, participants, recorder: Recorder, stop: threading.Event, seed: int,
                 *, interval: float | None = None):
        super().__init__(daemon=True)
        self.url, self.environment, self.participants = url, environment, participants
        self.recorder, self.stop_event, self.rng = recorder, stop, random.Random(seed)
        # Paced: one request every ``interval`` seconds (a fixed rate, well below
        # saturation); a request that overruns its slot delays only the next one.
        # None: back to back (saturating on purpose).
        self.interval = interval

    def _pace(self, slot: float) -> float:
        if self.interval is None:
            return slot
        slot += self.interval
        pause = slot - time.monotonic()
        if pause > 0:
            self.stop_event.wait(pause)
        else:
            slot = time.monotonic()
        return slot

    def run(self) -> None:
        conn = None
        slot = time.monotonic() + self.rng.random() * (self.interval or 0)
        while not self.stop_event.is_set():
            slot = self._pace(slot)
            if self.stop_event.is_set():
                break
            if conn is None:
                try:
                    conn = psycopg2.connect(self.url, application_name="app")
                except psycopg2.OperationalError as problem:
                    self._record(time.monotonic(), "connect", problem)
                    time.sleep(0.2)
                    continue
            chat_id, user_id = self.rng.choice(self.participants)
            operation = self.rng.choices(WORKLOAD, weights=(3, 2, 3, 4))[0]
            started = time.monotonic()
            try:
                with conn.cursor() as cur:
                    cur.execute("SET LOCAL ROLE authenticated")
                    cur.execute(
                        "SELECT set_config('request.jwt.claims', %s, true)",
                        (json.dumps({"sub": user_id, "role": "authenticated"}),),
                    )
                    self._operate(cur, operation, chat_id, user_id)
                conn.commit()
                self._record(started, operation, None)
            except psycopg2.OperationalError as problem:
                # The connection is gone (a restart, a terminated backend): count it, reconnect.
                self._record(started, operation, problem)
                conn.close()
                conn = None
            except psycopg2.Error as problem:
                conn.rollback()
                self._record(started, operation, problem)
        if conn is not None:
            conn.close()

    def _record(self, started: float, operation: str, problem: Exception | None) -> None:
        error = None
        if problem is not None:
            detail = getattr(problem, "pgerror", None) or str(problem)
            error = f"{type(problem).__name__}: {detail.strip().splitlines()[0] if detail.strip() else ''}"
        self.recorder.add(Sample(started, self.environment, operation, time.monotonic() - started, error))

    @staticmethod
    def _operate(cur, operation: str, chat_id: str, user_id: str) -> None:
        if operation == "send":
            cur.execute(
                "INSERT INTO public.chat_messages (chat_id, sender_id, message_text, client_generated_id) "
                "VALUES (%s, %s, 'benchmark message', %s)",
                (chat_id, user_id, str(uuid.uuid4())),
            )
        elif operation == "mark_read":
            cur.execute("SELECT public.mark_messages_as_read(%s, %s)", (chat_id, user_id))
        elif operation == "unread_count":
            # Staging has no get_unread_count before 002: the frontend's fallback is a plain count.
            cur.execute("SELECT to_regprocedure('public.get_unread_count(uuid, uuid)') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute("SELECT public.get_unread_count(%s, %s)", (chat_id, user_id))
            else:
                cur.execute(
                    "SELECT count(*) FROM public.chat_messages WHERE chat_id = %s AND sender_id <> %s "
                    "AND deleted_at IS NULL AND status <> 'read'",
                    (chat_id, user_id),
                )
        else:
            cur.execute(
                "SELECT id, seq, sender_id, message_text, status, created_at FROM public.chat_messages "
                "WHERE chat_id = %s AND deleted_at IS NULL ORDER BY seq DESC LIMIT 50",
                (chat_id,),
            )
        cur.fetchall() if cur.description else None


class LockWaitSampler(threading.Thread):
    """Samples, every ``period`` seconds, the application's requests waiting for a lock held by the migration.

    A request (an ``app`` backend with wait_event_type Lock) counts as waiting
    on the migration when pg_blocking_pids names a session whose
    application_name starts with one of ``migration_prefixes`` (``alembic:``
    for the project's CLI, ``plan:`` for the plan's files): it holds the lock,
    or queued for it ahead of the request. The wait of one request lasts from
    the first sample that saw it to the last, plus one period.
    """

    QUERY = """
        SELECT a.pid, a.query_start, a.datname,
               coalesce((SELECT string_agg(b.application_name, ',') FROM pg_stat_activity b
                          WHERE b.pid = ANY(pg_blocking_pids(a.pid))), '') AS blockers
          FROM pg_stat_activity a
         WHERE a.application_name = 'app' AND a.wait_event_type = 'Lock'
    """

    def __init__(self, connect, stop: threading.Event, *, period: float = 0.02,
                 migration_prefixes: tuple[str, ...] = ("alembic:", "plan:")):
        super().__init__(daemon=True)
        self.connect, self.stop_event, self.period, self.prefixes = connect, stop, period, migration_prefixes
        self.waits: dict[tuple, list] = {}  # (pid, query_start) -> [first seen, last seen, database, on migration]
        self.lock = threading.Lock()

    def run(self) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                while not self.stop_event.wait(self.period):
                    cur.execute(self.QUERY)
                    now = time.monotonic()
                    with self.lock:
                        for pid, query_start, database, blockers in cur.fetchall():
                            on_migration = any(b.startswith(self.prefixes) for b in blockers.split(",") if b)
                            entry = self.waits.setdefault((pid, query_start), [now, now, database, False])
                            entry[1] = now
                            entry[3] = entry[3] or on_migration
        finally:
            conn.close()

    def _waits_on_migration(self, start: float, end: float, database: str | None) -> list[float]:
        with self.lock:
            return [last - first + self.period for first, last, db, on_migration in self.waits.values()
                    if on_migration and start <= first < end and (database is None or db == database)]

    def longest_wait(self, start: float, end: float, database: str | None = None) -> float:
        """The longest wait (s) of one request on the migration, among the waits that began in [start, end)."""
        return round(max(self._waits_on_migration(start, end, database), default=0.0), 3)

    def requests_waited(self, start: float, end: float, database: str | None = None) -> int:
        """How many requests waited on the migration (seen by at least one sample), among those that began to
        wait in [start, end)."""
        return len(self._waits_on_migration(start, end, database))


def sample_participants(url: str, count: int = 5000) -> list[tuple[str, str]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT chat_id::text, user_id::text FROM public.chat_participants "
                "WHERE chat_id IS NOT NULL AND user_id IS NOT NULL ORDER BY random() LIMIT %s",
                (count,),
            )
            return cur.fetchall()
    finally:
        conn.close()


def summarize(samples: list[Sample]) -> dict:
    latencies = sorted(s.latency * 1000 for s in samples if s.error is None)
    errors = [s for s in samples if s.error is not None]
    if not latencies:
        return {"operations": len(samples), "errors": len(errors)}
    return {
        "operations": len(samples),
        "errors": len(errors),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "max_ms": round(latencies[-1], 1),
        "error_kinds": sorted({e.error for e in errors})[:5],
    }


def run_alembic(urls, *args) -> tuple[float, float, dict[str, float], str]:
    started = time.monotonic()
    result = alembic_cli.run(*args, urls=urls, check=False)
    ended = time.monotonic()
    if result.returncode != 0:
        raise RuntimeError(f"alembic {' '.join(args)} failed:\n{result.output}")
    steps = {f"{m.group(1)} {m.group(2)}": float(m.group(3)) for m in re.finditer(r"(upgrade|downgrade) (\S+) took ([\d.]+)s", result.output)}
    return started, ended, steps, result.output


def floor_times(cluster: Cluster, environment: str, source: str) -> dict[str, float]:
    """The plan's plain DDL on an idle copy of the same data, one statement group per change."""
    copy = f"floor_{environment}"
    cluster.drop_database(copy)
    cluster.create_database(copy, template=source)
    times = {}
    conn = cluster.connect(copy)
    try:
        for change, sql in PLAIN_DDL[environment].items():
            started = time.monotonic()
            with conn.cursor() as cur:
                cur.execute(sql)
            times[change] = round(time.monotonic() - started, 2)
    finally:
        conn.close()
        cluster.drop_database(copy)
    return times


def plot(samples: list[Sample], windows: list[tuple[str, float, float]], origin: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(12, 5))
    for environment, colour in (("staging", "tab:blue"), ("prod", "tab:orange")):
        points = [(s.at - origin, s.latency * 1000) for s in samples if s.environment == environment and s.error is None]
        axes.scatter([p[0] for p in points], [p[1] for p in points], s=2, alpha=0.35, color=colour, label=f"{environment} queries")
    failed = [(s.at - origin, s.latency * 1000) for s in samples if s.error is not None]
    if failed:
        axes.scatter([p[0] for p in failed], [p[1] for p in failed], s=12, marker="x", color="red", label="errors")
    for label, start, end in windows:
        axes.axvspan(start - origin, end - origin, alpha=0.12, color="grey")
        axes.text(start - origin, axes.get_ylim()[1] * 0.9, label, rotation=90, fontsize=7, va="top")
    axes.set_yscale("log")
    axes.set_xlabel("seconds since the workload started")
    axes.set_ylabel("application query latency (ms, log)")
    axes.set_title("Application latency while the migration runs (grey: alembic commands)")
    axes.legend(loc="upper right", markerscale=4)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/benchmark-under-load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000_000, help="messages per environment (default 10,000,000)")
    parser.add_argument("--workers", type=int, default=4, help="application connections per environment (default 4)")
    parser.add_argument("--quiet-seconds", type=float, default=30.0, help="traffic before and after the migration (default 30)")
    parser.add_argument("--output", type=Path, default=Path("benchmark-under-load"), help="folder for results.json and latency.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)

    cluster = Cluster.start()
    print(f"server on port {cluster.port}, data in {cluster.root}", flush=True)
    recorder, stop, workers = Recorder(), threading.Event(), []
    try:
        databases = {env: f"bench_{env}" for env in ("staging", "prod")}
        urls = {}
        for env, database in databases.items():
            started = time.monotonic()
            cluster.create_observed_database(database, env)
            urls[env] = cluster.passfile_url(database)
            bulk_load.load(urls[env], messages=args.messages)
            alembic_cli.run("-n", env, "-x", f"mark_as={env}", "stamp", history.base_revision(env), urls={env: urls[env]})
            print(f"loaded {env}: {args.messages:,} messages in {time.monotonic() - started:.0f}s", flush=True)
        floors = {env: floor_times(cluster, env, database) for env, database in databases.items()}
        print(f"floor (plain DDL, idle copy): {floors}", flush=True)

        workers = [
            ApplicationWorker(urls[env], env, sample_participants(urls[env]), recorder, stop, seed=n)
            for env in databases
            for n in range(args.workers)
        ]
        origin = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(args.quiet_seconds)
        migration_started = time.monotonic()
        windows, revision_times = [], {}
        for direction in ("upgrade", "downgrade"):
            for env in ("staging", "prod"):
                target = "head" if direction == "upgrade" else history.base_revision(env)
                start, end, steps, _ = run_alembic({env: urls[env]}, "-n", env, direction, target)
                windows.append((f"{env} {direction}", start, end))
                revision_times.update({f"{env}: {step}": seconds for step, seconds in steps.items()})
                print(f"{env} {direction} {target}: {end - start:.1f}s {steps}", flush=True)
        migration_ended = time.monotonic()
        time.sleep(args.quiet_seconds)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)

        phases = {
            "before": [s for s in recorder.samples if s.at < migration_started],
            "during": [s for s in recorder.samples if migration_started <= s.at < migration_ended],
            "after": [s for s in recorder.samples if s.at >= migration_ended],
        }
        results = {
            "messages_per_environment": args.messages,
            "workers_per_environment": args.workers,
            "latency": {phase: summarize(samples) for phase, samples in phases.items()},
            "latency_by_operation_during": {
                op: summarize([s for s in phases["during"] if s.operation == op]) for op in WORKLOAD
            },
            "revision_seconds_under_load": revision_times,
            "floor_seconds_plain_ddl_idle": floors,
            "alembic_windows_seconds": [(label, round(s - origin, 1), round(e - origin, 1)) for label, s, e in windows],
        }
        (args.output / "results.json").write_text(json.dumps(results, indent=2))
        plot(recorder.samples, windows, origin, args.output / "latency.png")
        print(json.dumps(results, indent=2))
        return 0
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        cluster.stop(remove=True)


if __name__ == "__main__":
    sys.exit(main())
