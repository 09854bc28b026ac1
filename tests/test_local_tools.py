"""The README's local commands do what the README says."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from chat_migrations import alembic_cli
from chat_migrations.environments import REPO_ROOT


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, **kwargs)


def test_the_local_job_converges_both_environments_and_rolls_prod_back_exactly():
    result = run("scripts/local-job", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "staging vs prod (before the migration): different" in out
    assert "staging vs prod (at head): identical" in out
    assert "$ alembic -n prod downgrade -1" in out
    assert "prod rolled back vs prod before the migration: identical" in out
    assert "server stopped and removed" in out


def test_local_db_prints_exports_that_the_alembic_commands_use():
    # Under /tmp itself: pytest's tmp_path is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="local-db-test-"))
    started = run("scripts/local-db", "start", "--dir", str(root))
    try:
        assert started.returncode == 0, started.stderr
        urls = dict(re.findall(r"^export (\w+)='([^']+)'$", started.stdout, re.MULTILINE))
        assert set(urls) == {"STAGING_DATABASE_URL", "PROD_DATABASE_URL"}
        current = alembic_cli.run("-n", "prod", "current", urls={"prod": urls["PROD_DATABASE_URL"]})
        assert "000_prod_baseline" in current.stdout
        again = run("scripts/local-db", "start", "--dir", str(root))
        assert again.returncode == 0 and again.stdout == started.stdout
        assert run("scripts/local-db", "status", "--dir", str(root)).returncode == 0
    finally:
        stopped = run("scripts/local-db", "stop", "--dir", str(root))
    assert stopped.returncode == 0
    assert not root.exists()
    assert run("scripts/local-db", "status", "--dir", str(root)).returncode == 1
