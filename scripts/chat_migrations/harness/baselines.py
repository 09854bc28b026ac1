"""Rebuild the baseline catalogs scripts/adopt compares with (maintainers only).

``python -m chat_migrations.harness.baselines`` builds each environment's
baseline on a throwaway Supabase-like server (chat_migrations.harness.cluster)
and writes its catalog picture to ``frozen/baselines/<env>.json``. Run it
when a new environment's baseline joins chat_migrations.frozen.baseline;
tests/test_adopt.py proves the committed files equal a fresh build.
"""

from __future__ import annotations

import sys
from pathlib import Path

from chat_migrations.checks import checks_cli
from chat_migrations.checks.adopt import BASELINES_DIR, picture, serialize
from chat_migrations.checks.catalog import read_catalog
from chat_migrations.checks.checks_cli import Target
from chat_migrations.frozen import baseline
from chat_migrations.harness.cluster import Cluster


def write_baselines(directory: Path = BASELINES_DIR) -> list[Path]:
    """Build each environment's baseline on a throwaway Supabase-like server and write its picture."""
    directory.mkdir(parents=True, exist_ok=True)
    server = Cluster.start()
    written = []
    try:
        for environment in baseline.ENVIRONMENTS:
            name = f"adopt_baseline_{environment}"
            server.create_observed_database(name, environment)
            with checks_cli.read_only_connection(Target(name, server.url(name)), "chat-migrations:adopt") as conn:
                data = picture(read_catalog(conn))
            path = directory / f"{environment}.json"
            path.write_text(serialize(data))
            written.append(path)
    finally:
        server.stop(remove=True)
    return written


def main() -> int:
    for path in write_baselines():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
