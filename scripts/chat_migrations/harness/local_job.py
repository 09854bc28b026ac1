"""scripts/local-job: the whole migration, end to end, on a throwaway server.

No configuration: it starts PostgreSQL, creates staging and prod lookalikes at
their observed pre-migration states (with rows), and drives the real alembic
CLI: upgrade both, prove the schemas match, roll prod back one step, upgrade
again, and stop the server. Around the migration it runs the operator checks
as a deploy pipeline would: drift before (there is some) and after (none),
preflight before the upgrade, validate and smoke on both at head (smoke leaves
the rows and the schema as they were), and on prod rolled back validate (it
fails, naming what is missing) and smoke (it passes as far as the baseline
goes). Exit 0 only if every step did what it should. ``--platform`` chooses
which Supabase the server is built as (docs/supabase-platform.md).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

from chat_migrations.schema import history
from chat_migrations.harness import alembic_cli, lookalikes
from chat_migrations.checks import drift, preflight, smoke, validate
from chat_migrations.harness.cluster import DEFAULT_PLATFORM, PLATFORMS, Cluster
from chat_migrations.harness.fingerprints import data_checksums, first_difference, schema_dump
from chat_migrations.errors import JobFailed


def _say(text: str) -> None:
    print(text, flush=True)


def _alembic(urls, *args: str) -> None:
    _say(f"\n$ alembic {' '.join(args)}")
    started = time.monotonic()
    result = alembic_cli.run(*args, urls=urls, check=False)
    for line in result.output.strip().splitlines():
        _say(f"    {line}")
    if result.returncode != 0:
        raise JobFailed(f"alembic {' '.join(args)} exited {result.returncode}")
    _say(f"    ({time.monotonic() - started:.1f}s)")


def _operator_check(urls, command, *args: str, expect: int, why: str) -> None:
    """Run scripts/<command> (in this process, with the lookalikes' URLs) and require its exit code."""
    _say(f"\n$ scripts/{command.__name__.rsplit('.', 1)[1]} {' '.join(args)}")
    output = io.StringIO()
    with redirect_stdout(output), redirect_stderr(output):
        code = command.main(list(args), urls=urls)
    for line in output.getvalue().strip().splitlines():
        _say(f"    {line}")
    if code != expect:
        raise JobFailed(f"scripts/{command.__name__.rsplit('.', 1)[1]} {' '.join(args)} exited {code}, expected {expect}")
    _say(f"    (exit {code}, as expected: {why})")


def _compare(label: str, left: str, right: str, *, expect_equal: bool) -> None:
    difference = first_difference(left, right, tuple(label.split(" vs ", 1)) if " vs " in label else ("left", "right"))
    if expect_equal and difference:
        raise JobFailed(f"{label}: schemas differ, first difference:\n{difference}")
    if not expect_equal and not difference:
        raise JobFailed(f"{label}: expected the schemas to differ")
    _say(f"  {label}: {'identical' if not difference else 'different'}")
    if difference:
        for line in difference.splitlines()[:14]:
            _say(f"      {line}")


def run_job(cluster: Cluster) -> None:
    _say("== creating staging and prod lookalikes at their observed states (stamped baselines)")
    urls = lookalikes.create(cluster)
    checksums_before = {env: _checksums(cluster, env) for env in urls}
    prod_before = schema_dump(urls["prod"])
    _compare("staging vs prod (before the migration)", schema_dump(urls["staging"]), schema_dump(urls["prod"]), expect_equal=False)
    _operator_check(urls, drift, "staging", "prod", "--differences-only", expect=1, why="the environments drifted")

    _say("\n== preflight, then upgrading both environments")
    _operator_check(urls, preflight, "-n", "prod", expect=0, why="nothing blocks prod's upgrade")
    _alembic(urls, "-n", "staging", "upgrade", "head")
    _alembic(urls, "-n", "prod", "upgrade", "head")
    converged = schema_dump(urls["prod"])
    _compare("staging vs prod (at head)", schema_dump(urls["staging"]), converged, expect_equal=True)
    for env in urls:
        if _checksums(cluster, env) != checksums_before[env]:
            raise JobFailed(f"{env}: rows changed during the upgrade")
    _say("  rows: unchanged in both (counts and checksums)")
    _operator_check(urls, drift, "staging", "prod", "--differences-only", expect=0, why="converged")
    for env in ("staging", "prod"):
        _operator_check(urls, validate, "-n", env, expect=0, why=f"{env} is the converged head")
    for env in ("staging", "prod"):
        _operator_check(urls, smoke, "-n", env, expect=0, why=f"the frontend's calls work on {env}")
        if _checksums(cluster, env) != checksums_before[env] or schema_dump(urls[env]) != converged:
            raise JobFailed(f"{env}: the smoke left a trace")
    _say("  smoke: rows and schemas unchanged in both")

    _say("\n== rolling prod back one step, then all the way to its baseline, and forward again")
    _alembic(urls, "-n", "prod", "downgrade", "-1")
    _alembic(urls, "-n", "prod", "current")
    _alembic(urls, "-n", "prod", "downgrade", history.base_revision("prod"))
    _compare("prod rolled back vs prod before the migration", schema_dump(urls["prod"]), prod_before, expect_equal=True)
    _operator_check(urls, validate, "-n", "prod", expect=1, why="prod was rolled back to its baseline")
    _operator_check(urls, smoke, "-n", "prod", expect=0, why="the baseline's calls work; its missing refusals are skipped")
    _alembic(urls, "-n", "prod", "upgrade", "head")
    _compare("prod upgraded again vs staging at head", schema_dump(urls["prod"]), converged, expect_equal=True)
    if _checksums(cluster, "prod") != checksums_before["prod"]:
        raise JobFailed("prod: rows changed during the rollback")
    _say("  rows: unchanged")


def _checksums(cluster: Cluster, env: str):
    conn = cluster.connect(lookalikes.DATABASES[env])
    try:
        return data_checksums(conn)
    finally:
        conn.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/local-job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=PLATFORMS, default=DEFAULT_PLATFORM,
                        help=f"which Supabase the throwaway server is built as (default {DEFAULT_PLATFORM})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _say("== starting a throwaway PostgreSQL")
    cluster = Cluster.start(platform=args.platform)
    _say(f"  port {cluster.port}, data in {cluster.root}, {args.platform} platform")
    try:
        run_job(cluster)
    except JobFailed as failure:
        _say(f"\nFAILED: {failure}")
        return 1
    finally:
        cluster.stop(remove=True)
        _say("\n== server stopped and removed")
    _say("\nOK: both environments converged, and prod's rollback was exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
