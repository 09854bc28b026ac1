"""scripts/benchmark-checks: how long validate, preflight and drift take on production-sized data.

A benchmark, not a test: it takes minutes and its numbers depend on the
machine. It starts a throwaway server, creates the staging and prod
lookalikes, loads ``--messages`` messages into prod (chat_migrations.harness.bulk_load),
and times each command as an operator runs it (the real scripts, a fresh
process each, so the times include Python's start-up), ``--repeat`` times:
on prod at its baseline, then after ``alembic upgrade head`` (also timed) at
head, with ``validate --thorough`` for the price of the scans that the catalog
proofs save. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import psycopg2

from chat_migrations.harness import alembic_cli, bulk_load, lookalikes
from chat_migrations.harness.cluster import Cluster
from chat_migrations.runtime.environments import REPO_ROOT, libpq_url


def _timed(command: list[str], urls: dict[str, str]) -> tuple[float, int]:
    started = time.monotonic()
    result = subprocess.run(command, env=alembic_cli.environment_with(urls), cwd="/", capture_output=True, text=True)
    return time.monotonic() - started, result.returncode


def _data_size(url: str) -> str:
    conn = psycopg2.connect(libpq_url(url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), pg_size_pretty(pg_total_relation_size('public.chat_messages')), "
                "pg_size_pretty(pg_database_size(current_database())) FROM public.chat_messages"
            )
            messages, table, database = cur.fetchone()
    finally:
        conn.close()
    return f"{messages:,} messages; chat_messages {table} with its indexes; database {database}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/benchmark-checks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000_000, help="messages loaded into prod (default 10,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command; the median is reported (default 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    cluster = Cluster.start()
    print(f"server on port {cluster.port}, data in {cluster.root}", file=sys.stderr, flush=True)
    rows = []
    try:
        urls = lookalikes.create(cluster)
        started = time.monotonic()
        bulk_load.load(urls["prod"], messages=args.messages, progress=lambda line: print(line, file=sys.stderr, flush=True))
        load_seconds = time.monotonic() - started
        size = _data_size(urls["prod"])

        def measure(state: str, *command: str) -> None:
            runs = [_timed([str(REPO_ROOT / "scripts" / command[0]), *command[1:]], urls) for _ in range(args.repeat)]
            seconds = statistics.median(t for t, _ in runs)
            rows.append((state, " ".join(command), runs[0][1], seconds, min(t for t, _ in runs)))
            print(f"{state}: {' '.join(command)} exit {runs[0][1]} in {seconds:.2f}s", file=sys.stderr, flush=True)

        measure("prod at baseline", "preflight", "-n", "prod")
        measure("prod at baseline", "validate", "-n", "prod")
        measure("prod at baseline", "drift", "staging", "prod")
        started = time.monotonic()
        alembic_cli.run("-n", "prod", "upgrade", "head", urls=urls)
        upgrade_seconds = time.monotonic() - started
        alembic_cli.run("-n", "staging", "upgrade", "head", urls=urls)
        measure("prod at head", "validate", "-n", "prod")
        measure("prod at head", "validate", "-n", "prod", "--thorough")
        measure("prod at head", "preflight", "-n", "prod")
        measure("both at head", "drift", "staging", "prod")
    finally:
        cluster.stop(remove=True)

    print(f"\nData: {size} (loaded in {load_seconds:.0f} s). Machine: {platform.platform()}, {os.cpu_count()} cores.")
    print(f"`alembic -n prod upgrade head` on that data: {upgrade_seconds:.1f} s.\n")
    print("| prod | command | exit | median (s) | fastest (s) |")
    print("|---|---|---|---|---|")
    for state, command, code, median, fastest in rows:
        print(f"| {state} | `scripts/{command}` | {code} | {median:.2f} | {fastest:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
