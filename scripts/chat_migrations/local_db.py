"""scripts/local-db start|stop|status: a lookalike server left running for trying commands by hand."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import lookalikes
from .cluster import Cluster, ClusterError

DEFAULT_DIR = Path(os.environ.get("LOCAL_DB_DIR", "/tmp/chat-migrations-local-db"))


def _saved(root: Path) -> Cluster | None:
    state = root / "port"
    if not (root / "data" / "postmaster.pid").exists() or not state.exists():
        return None
    return Cluster(root=root, port=int(state.read_text()), password="")


def start(root: Path) -> int:
    cluster = _saved(root)
    if cluster is None:
        if root.exists() and any(root.iterdir()):
            print(f"local-db: {root} exists but holds no running server; run 'scripts/local-db stop' first", file=sys.stderr)
            return 2
        cluster = Cluster.start(root)
        (root / "port").write_text(str(cluster.port))
        urls = lookalikes.create(cluster)
        print(f"# started PostgreSQL on port {cluster.port} in {root}; staging and prod lookalikes at their baselines", file=sys.stderr)
    else:
        urls = {env: cluster.url(db) for env, db in lookalikes.DATABASES.items()}
        print(f"# already running on port {cluster.port} in {root}", file=sys.stderr)
    print(lookalikes.export_lines(urls))
    return 0


def stop(root: Path) -> int:
    cluster = _saved(root)
    if cluster is None:
        print(f"local-db: nothing running in {root}", file=sys.stderr)
        return 0
    cluster.stop(remove=True)
    print(f"# stopped and removed {root}", file=sys.stderr)
    return 0


def status(root: Path) -> int:
    cluster = _saved(root)
    if cluster is None:
        print(f"not running ({root})")
        return 1
    print(f"running on port {cluster.port} in {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/local-db",
        description="Start a throwaway PostgreSQL with staging and prod lookalikes and print their URLs.",
        epilog="Use it as: eval \"$(scripts/local-db start)\"; alembic -n staging current",
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"where the server lives (default {DEFAULT_DIR}, or $LOCAL_DB_DIR)")
    args = parser.parse_args(argv)
    try:
        return {"start": start, "stop": stop, "status": status}[args.command](args.dir)
    except ClusterError as error:
        print(f"local-db: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
