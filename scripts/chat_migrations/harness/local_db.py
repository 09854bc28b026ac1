"""scripts/local-db start|stop|status: a lookalike server left running for trying commands by hand.

The server lives in a folder of this checkout (``.local-db/``, git-ignored),
so two checkouts or two users of one machine never replace each other's
server; ``--dir`` or $LOCAL_DB_DIR choose another. ``--platform`` chooses which
Supabase it looks like (docs/supabase-platform.md). The printed URLs keep the
password in the server's own password file, so they are safe to print.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from chat_migrations.harness import lookalikes
from chat_migrations.harness.cluster import DEFAULT_PLATFORM, PLATFORMS, Cluster
from chat_migrations.runtime.environments import REPO_ROOT
from chat_migrations.errors import ChatMigrationsError

DEFAULT_DIR = Path(os.environ.get("LOCAL_DB_DIR") or REPO_ROOT / ".local-db")
PORT_FILE = "port"
PLATFORM_FILE = "platform"


def _saved(root: Path) -> Cluster | None:
    """The server running in ``root``, if one is."""
    state = root / PORT_FILE
    if not state.is_file() or not (root / "data" / "postmaster.pid").exists():
        return None
    cluster = Cluster.attach(root, int(state.read_text()))
    return cluster if cluster.running() else None


def _ours(root: Path) -> bool:
    """A folder this command made (a server's files), as opposed to anything else someone keeps there."""
    return (root / PORT_FILE).is_file() or (root / "data" / "PG_VERSION").is_file()


def _remove_leftover(root: Path) -> None:
    """What a server that is no longer running left: its files (a crash, a reboot, a killed stop)."""
    if (root / PORT_FILE).is_file() and (root / "data").is_dir():
        Cluster(root=root, port=int((root / PORT_FILE).read_text()), password="").stop(remove=False)
    shutil.rmtree(root)


def start(root: Path, *, unstamped: bool = False, platform: str = DEFAULT_PLATFORM) -> int:
    cluster = _saved(root)
    if cluster is not None:
        running_as = (root / PLATFORM_FILE).read_text().strip() if (root / PLATFORM_FILE).is_file() else DEFAULT_PLATFORM
        if running_as != platform:
            print(f"local-db: the server in {root} is the {running_as} platform, not {platform}; "
                  "stop it first (scripts/local-db stop) or choose another --dir", file=sys.stderr)
            return 2
    if cluster is None:
        if root.exists() and any(root.iterdir()):
            if not _ours(root):
                print(f"local-db: {root} holds files that are not a local-db server; choose another --dir", file=sys.stderr)
                return 2
            _remove_leftover(root)
            print(f"# removed a stopped server's leftover files in {root}", file=sys.stderr)
        cluster = Cluster.start(root, platform=platform)
        (root / PORT_FILE).write_text(str(cluster.port))
        (root / PLATFORM_FILE).write_text(platform)
        urls = lookalikes.create(cluster, stamped=not unstamped)
        state = ("not yet adopted (no revision, no marker): try scripts/adopt, then "
                 "alembic -n ENV -x mark_as=ENV stamp <baseline>") if unstamped else "at their baselines"
        print(f"# started PostgreSQL on port {cluster.port} in {root} ({platform} platform); "
              f"staging and prod lookalikes {state}", file=sys.stderr)
    else:
        urls = {env: cluster.passfile_url(db) for env, db in lookalikes.DATABASES.items()}
        print(f"# already running on port {cluster.port} in {root}, its lookalikes as they are"
              + ("; scripts/local-db stop first for fresh unstamped ones" if unstamped else ""), file=sys.stderr)
    print(lookalikes.export_lines(urls))
    return 0


def stop(root: Path) -> int:
    cluster = _saved(root)
    if cluster is not None:
        cluster.stop(remove=True)
        print(f"# stopped and removed {root}", file=sys.stderr)
        return 0
    if root.exists() and _ours(root):
        _remove_leftover(root)
        print(f"# nothing was running in {root}; removed its leftover files", file=sys.stderr)
        return 0
    print(f"local-db: nothing running in {root}", file=sys.stderr)
    return 0


def status(root: Path) -> int:
    cluster = _saved(root)
    if cluster is None:
        print(f"not running ({root})")
        return 1
    print(f"running on port {cluster.port} in {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/local-db",
        description="Start a throwaway PostgreSQL with staging and prod lookalikes and print their URLs.",
        epilog="Use it as: eval \"$(scripts/local-db start)\"; alembic -n staging current",
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"where the server lives (default {DEFAULT_DIR}, or $LOCAL_DB_DIR)")
    parser.add_argument("--unstamped", action="store_true",
                        help="start: lookalikes not yet adopted (no revision, no marker), to try the runbook's steps 3 and 5")
    parser.add_argument("--platform", choices=PLATFORMS, default=DEFAULT_PLATFORM,
                        help=f"start: which Supabase the lookalikes are built as (default {DEFAULT_PLATFORM})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.unstamped and args.command != "start":
            parser.error("--unstamped goes with start")
        if args.command == "start":
            return start(args.dir.resolve(), unstamped=args.unstamped, platform=args.platform)
        return {"stop": stop, "status": status}[args.command](args.dir.resolve())
    except ChatMigrationsError as error:
        print(f"local-db: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
