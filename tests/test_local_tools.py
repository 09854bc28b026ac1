"""The README's local commands do what the README says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from chat_migrations.checks import catalog, validate
from chat_migrations.harness import alembic_cli
from chat_migrations.harness.cluster import PLATFORMS
from chat_migrations.runtime.environments import REPO_ROOT

from .test_validate import run_script
from .conftest import PLATFORM


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, **kwargs)


@pytest.mark.platform
def test_the_local_job_converges_both_environments_and_rolls_prod_back_exactly():
    result = run("scripts/local-job", "--platform", PLATFORM, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "staging vs prod (before the migration): different" in out
    assert "staging vs prod (at head): identical" in out
    assert "$ alembic -n prod downgrade -1" in out
    assert "prod rolled back vs prod before the migration: identical" in out
    assert "server stopped and removed" in out
    assert f"{PLATFORM} platform" in out.split("\n== creating", 1)[0]
    # The operator checks around the migration: drift before and none after, preflight ready,
    # validate passing on both at head and failing, naming what is missing, on prod rolled back.
    before, after = out.split("$ scripts/drift staging prod --differences-only")[1:3]
    assert "**Drift:" in before and (
        "| `chat_participants.chat_id` | uuid, NOT NULL | uuid, NULL | Mismatch (nullable); explained: prod is not at head "
        "yet: 001_schema_alignment, pending there, sets it NOT NULL |") in before
    assert "**No drift**" in after
    assert "READY: no blockers" in out.split("$ scripts/preflight -n prod")[1]
    validations = out.split("$ scripts/validate -n ")[1:]
    assert [v.split("\n", 1)[0] for v in validations] == ["staging", "prod", "prod"]
    assert all(f"OK: all {len(validate.CHECKS)} checks pass" in v and "(exit 0" in v for v in validations[:2])
    rolled_back = validations[2]
    assert "FAILED:" in rolled_back and "(exit 1, as expected: prod was rolled back to its baseline)" in rolled_back
    assert "at revision 000_prod_baseline; prod's head is" in rolled_back
    assert "public.chat_participants.chat_id is nullable; the head schema has it NOT NULL" in rolled_back
    # smoke after validate: passing on both at head, and on prod rolled back with the 103 refusals skipped.
    smokes = out.split("$ scripts/smoke -n ")[1:]
    assert [s.split("\n", 1)[0] for s in smokes] == ["staging", "prod", "prod"]
    assert all("OK: no check failed (10 of 10 pass)" in s for s in smokes[:2])
    assert "smoke: rows and schemas unchanged in both" in smokes[1]
    assert "revision: 000_prod_baseline" in smokes[2] and "partial: refuse_other_user" in smokes[2]
    assert "skipped: refused from 103_messaging_security on" in smokes[2] and "(exit 0" in smokes[2]


@pytest.mark.platform
def test_local_db_prints_exports_that_the_alembic_commands_use():
    # Under /tmp itself: pytest's tmp_path is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="local-db-test-"))
    started = run("scripts/local-db", "start", "--dir", str(root), "--platform", PLATFORM)
    try:
        assert started.returncode == 0, started.stderr
        urls = dict(re.findall(r"^export (\w+)='([^']+)'$", started.stdout, re.MULTILINE))
        assert set(urls) == {"STAGING_DATABASE_URL", "PROD_DATABASE_URL"}
        current = alembic_cli.run("-n", "prod", "current", urls={"prod": urls["PROD_DATABASE_URL"]})
        assert "000_prod_baseline" in current.stdout
        engine = create_engine(urls["STAGING_DATABASE_URL"])
        with engine.connect() as conn:
            assert catalog.platform_defaults(conn) == PLATFORM
        engine.dispose()
        again = run("scripts/local-db", "start", "--dir", str(root), "--platform", PLATFORM)
        assert again.returncode == 0 and again.stdout == started.stdout
        # The running server is the other platform's: refused, one line, nothing changed.
        [other] = [platform for platform in PLATFORMS if platform != PLATFORM]
        refused = run("scripts/local-db", "start", "--dir", str(root), "--platform", other)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.strip().count("\n") == 0 and "scripts/local-db stop" in refused.stderr
        assert run("scripts/local-db", "status", "--dir", str(root)).returncode == 0
    finally:
        stopped = run("scripts/local-db", "stop", "--dir", str(root))
    assert stopped.returncode == 0
    assert not root.exists()
    assert run("scripts/local-db", "status", "--dir", str(root)).returncode == 1


def test_local_db_stop_cleans_a_crashed_server_so_start_works_again():
    root = Path(tempfile.mkdtemp(prefix="local-db-test-"))
    try:
        assert run("scripts/local-db", "start", "--dir", str(root)).returncode == 0
        # A crash (or a reboot): the server is gone, its files and postmaster.pid stay.
        pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if run("scripts/local-db", "status", "--dir", str(root)).returncode == 1:
                break
            time.sleep(0.1)
        stopped = run("scripts/local-db", "stop", "--dir", str(root))
        assert stopped.returncode == 0 and "removed its leftover files" in stopped.stderr
        assert not root.exists()
        again = run("scripts/local-db", "start", "--dir", str(root))
        assert again.returncode == 0, again.stderr
    finally:
        run("scripts/local-db", "stop", "--dir", str(root))
    assert not root.exists()


def test_local_db_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("scripts/local-db", "start", "--dir", str(tmp_path))
    assert result.returncode == 2 and "not a local-db server" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_local_db_keeps_its_server_in_the_checkout_by_default():
    from chat_migrations.harness import local_db

    assert local_db.DEFAULT_DIR == REPO_ROOT / ".local-db" or "LOCAL_DB_DIR" in os.environ
    assert ".local-db" in (REPO_ROOT / ".gitignore").read_text()


def test_after_activating_the_venv_alembic_works_from_any_directory(tmp_path):
    # alembic's own message outside the checkout was "No 'script_location' key found".
    result = subprocess.run(
        ["bash", "-c", f"source '{REPO_ROOT}/.venv/bin/activate' && cd '{tmp_path}' && alembic -n prod history"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "000_prod_baseline" in result.stdout


def test_local_db_unstamped_gives_lookalikes_to_adopt_and_stamp_by_hand():
    # Before: the lookalikes came stamped, so the runbook's steps 3 and 5 could not be tried.
    root = Path(tempfile.mkdtemp(prefix="local-db-test-"))
    started = run("scripts/local-db", "start", "--unstamped", "--dir", str(root))
    try:
        assert started.returncode == 0, started.stderr
        assert "not yet adopted" in started.stderr
        urls = dict(re.findall(r"^export (\w+)='([^']+)'$", started.stdout, re.MULTILINE))
        prod = {"prod": urls["PROD_DATABASE_URL"]}
        current = alembic_cli.run("-n", "prod", "current", urls=prod, check=False)
        assert current.returncode != 0 and "it has no marker" in current.output  # not adopted yet
        adopted = run_script("adopt", "-n", "prod", urls=prod)  # step 3
        assert adopted.returncode == 0, adopted.stdout + adopted.stderr
        verdict = adopted.stdout.rstrip().splitlines()[-1]
        assert verdict.startswith("ADOPTABLE: alembic -n prod -x mark_as=prod stamp 000_prod_baseline")
        alembic_cli.run("-n", "prod", "-x", "mark_as=prod", "stamp", "000_prod_baseline", urls=prod)  # step 5
        assert "000_prod_baseline" in alembic_cli.run("-n", "prod", "current", urls=prod).stdout
    finally:
        run("scripts/local-db", "stop", "--dir", str(root))


def test_the_empty_directory_alembic_runs_in_is_removed_when_the_process_ends():
    # One per test process, hundreds per suite run: each must go with its process.
    made = subprocess.run(
        [sys.executable, "-c", "from chat_migrations.harness import alembic_cli; "
         "d = alembic_cli._empty_directory(); assert d.is_dir(); print(d)"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "scripts")},
    )
    assert not Path(made.stdout.strip()).exists()
