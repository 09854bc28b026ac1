"""Ctrl-C to a real `alembic` process, at random moments: it always stops, says the truth, and leaves nothing.

The in-process fault hook (test_interrupts.py) interrupts between two
statements. Here a real SIGINT goes to the process group of a real
``alembic upgrade head`` (what a terminal's Ctrl-C does), 0-50 ms after a
randomly chosen "Running upgrade" line, while an application writer keeps
short transactions open on chat_messages, so lock waits and concurrent
index builds are in progress when it lands. Every delivered interrupt must
end non-zero with one FAILED line that names the revision the database
reads back, with nothing left to clean: validate --at-current-revision
passes at once, and the same upgrade then completes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from chat_migrations.checks import validate
from chat_migrations.harness import alembic_cli
from chat_migrations.runtime.environments import ALEMBIC_INI, REPO_ROOT

from .conftest import ENVIRONMENTS, head_of

SEED = int(os.environ.get("CTRL_C_SEED", random.randrange(1_000_000)))


class Writer:
    """The application: short transactions writing chat_messages, one after another, until stopped."""

    def __init__(self, db, rng: random.Random):
        self.conn = db.connect()
        self.rng = rng
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SET application_name = 'app-writer'")
            self.conn.commit()
            while not self.stop.is_set():
                try:
                    cur.execute("LOCK TABLE public.chat_messages IN ROW EXCLUSIVE MODE")  # as an INSERT holds it
                    time.sleep(self.rng.uniform(0, 0.08))
                    self.conn.commit()
                except Exception:  # a table being altered under it: the application retries
                    self.conn.rollback()
                time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        self.conn.close()


def interrupt_at_random(db, environment: str, rng: random.Random) -> tuple[bool, int, str]:
    """(delivered, exit code, output) of an upgrade to head interrupted after a random 'Running upgrade' line."""
    migration = alembic_cli.start("-n", environment, "upgrade", "head", urls={environment: db.url}, own_group=True)
    # One of the 9 revisions from either baseline; now and then later, to land between or after them.
    target = rng.randrange(9)
    delay = rng.uniform(0, 0.05) if rng.random() < 0.8 else rng.uniform(0.05, 0.5)
    seen, lines, delivered = 0, [], False
    for line in migration.stdout:
        lines.append(line)
        if "Running upgrade" in line:
            if seen == target:
                time.sleep(delay)
                try:
                    os.killpg(migration.pid, signal.SIGINT)
                    delivered = migration.poll() is None or migration.returncode != 0
                except ProcessLookupError:
                    delivered = False
                break
            seen += 1
    rest, _ = migration.communicate(timeout=180)
    return delivered, migration.returncode, "".join(lines) + rest


def run_trials(make_database, environment: str, trials: int, capsys) -> dict[str, int]:
    rng = random.Random(SEED)
    tally = {"during a revision": 0, "between or after revisions": 0, "after the process ended": 0}
    for trial in range(trials):
        db = make_database(environment)
        with Writer(db, rng):
            delivered, code, output = interrupt_at_random(db, environment, rng)
        context = f"seed {SEED}, trial {trial}:\n{output}"
        failed = [line for line in output.splitlines() if line.startswith("FAILED:")]
        assert "Traceback" not in output, context
        if not delivered or (code == 0 and not failed):
            # The signal came after the last line alembic writes: the upgrade is whole and says so.
            assert code == 0 and f"→ {head_of(environment)}" in output, context
            tally["after the process ended"] += 1
        else:
            assert code == 255 and len(failed) == 1, context
            line = failed[0]
            # Where it stands, as the database reads back, and nothing left behind.
            assert f"{environment} is at {db.revision()}" in line or "nothing was changed" in line, context
            assert "nothing is left to clean" in line or "removed what it left" in line \
                or "nothing was changed" in line, context
            tally["during a revision" if " during " in line else "between or after revisions"] += 1
        code = validate.main(["-n", environment, "--at-current-revision"], urls={environment: db.url})
        assert code == 0, f"validate after the interrupt, {context}\n{capsys.readouterr()}"
        capsys.readouterr()
        db.alembic("-n", environment, "upgrade", "head")
        assert db.revision() == head_of(environment), context
        db.drop()
    print(f"Ctrl-C trials on {environment} (seed {SEED}): {tally}")
    return tally


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_ctrl_c_at_random_moments_of_an_upgrade_is_truthful_and_leaves_nothing(make_database, environment, capsys):
    run_trials(make_database, environment, 3, capsys)


@pytest.mark.exhaustive
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_ctrl_c_many_times_at_random_moments(make_database, environment, capsys):
    tally = run_trials(make_database, environment, 25, capsys)
    assert tally["during a revision"] >= 5, tally


def test_ctrl_c_while_alembic_starts_is_one_line_without_a_traceback(tmp_path, make_database):
    """The venv's start-up hook (scripts/site, installed by scripts/_venv.sh) covers alembic's own imports."""
    db = make_database("prod")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    # The project's venv, as this test runs in it, under the hook, as _venv.sh installs it.
    # (A path a .pth adds is no site directory: the editable install's own .pth is not read from it,
    # so the project's scripts/ goes in too.)
    (site_packages / "zz_project_venv.pth").write_text(
        "\n".join([*(path for path in sys.path if path.endswith("site-packages")), str(REPO_ROOT / "scripts")]) + "\n")
    for hook in (REPO_ROOT / "scripts" / "site").iterdir():
        (site_packages / hook.name).write_text(hook.read_text())
    command = [str(venv / "bin" / "python"), "-m", "alembic", "-c", str(ALEMBIC_INI), "-n", "prod", "current"]
    environment = alembic_cli.environment_with({"prod": db.url})
    # How long the command takes on this machine now (the quickest of three: a busy moment would place
    # every signal after the command ended): the signals land within its start-up, past the
    # interpreter's own (a few percent of it, before the hook runs: there the default action ends it).
    durations = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, check=True)
        durations.append(time.monotonic() - started)
    duration = min(durations)
    rng = random.Random(SEED)
    starting, outcomes = 0, []
    for trial in range(12):
        if trial >= 6 and starting:
            break
        process = subprocess.Popen(
            alembic_cli.as_terminal_job(command), env=environment, cwd=tmp_path, process_group=0,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        time.sleep(rng.uniform(0.1, 0.5) * duration)
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, f"seed {SEED}:\n{output}"
        failed = [line for line in output.splitlines() if line.startswith("FAILED:")]
        if process.returncode == 0:  # it landed as the process exited, its answer given: ignored then
            assert not failed and "000_prod_baseline" in output, f"seed {SEED}:\n{output}"
            outcomes.append("exited 0")
            continue
        assert process.returncode == 255 and len(failed) == 1, f"seed {SEED}:\n{output}"
        starting += "while alembic was starting" in failed[0]
        outcomes.append(failed[0])
    assert starting >= 1, f"seed {SEED}, command {duration:.2f} s: {outcomes}"


def test_the_start_up_hook_is_installed_only_into_the_checkouts_own_venv():
    script = (REPO_ROOT / "scripts" / "_venv.sh").read_text()
    assert '[ ! -L "$VENV" ]' in script and "00_chat_migrations_sigint.pth" in script
    assert (REPO_ROOT / "scripts" / "site" / "00_chat_migrations_sigint.pth").read_text().startswith("import ")


def test_an_upgrade_at_head_says_there_was_nothing_to_do_and_a_past_target_says_so(make_database):
    db = make_database("prod", "head")
    assert f"nothing to do: prod is at {head_of('prod')}, already at head" in db.alembic("-n", "prod", "upgrade", "head").output
    past = db.alembic("-n", "prod", "upgrade", "100_converged").output
    assert f"nothing to do: prod is at {head_of('prod')}, already past 100_converged" in past
    down = db.alembic("-n", "prod", "downgrade", "-1").output
    assert f"downgraded prod {head_of('prod')} → " in down and ": 1 revision in " in down



def test_upgrade_to_the_revision_it_is_at_removes_an_interrupted_revisions_helper_check_even_at_the_baseline(
    make_database,
):
    # What an upgrade interrupted inside 001's NOT NULL step leaves: its snapshot and a validated helper check.
    db = make_database("prod")
    db.execute("INSERT INTO migration_meta.rollback_snapshots (revision, object_kind, object_name, snapshot) "
               "VALUES ('001_schema_alignment', 'column', 'public.chat_participants.chat_id', '{\"not_null\": false}')")
    db.execute("ALTER TABLE public.chat_participants ADD CONSTRAINT chat_participants_chat_id_not_null_migration "
               "CHECK (chat_id IS NOT NULL)")
    # The command a stop line names when it could not clean: at the baseline, where downgrade -1 is refused.
    result = db.alembic("-n", "prod", "upgrade", "000_prod_baseline")
    assert "nothing to do: prod is at 000_prod_baseline" in result.output, result.output
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE conname LIKE '%%\\_not\\_null\\_migration'") == 0
    assert db.scalar("SELECT count(*) FROM migration_meta.rollback_snapshots") == 0
