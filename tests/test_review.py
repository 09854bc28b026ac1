"""scripts/review: every revision, its locks and caller changes, without a database; hazards exit 1.

The real command runs in a subprocess with no connection string at all. The
hazards are shown on a throwaway copy of the project (a git repository of its
own) with one more shared revision, so ``--base`` is exercised on real git
history too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chat_migrations.checks import catalog
from chat_migrations.review import report
from chat_migrations.runtime.environments import REPO_ROOT, load_environments

from .conftest import ENVIRONMENTS, revisions_in_order
from .test_validate import assert_same_shape, documented_json

# No database: not even a variable that could name one.
NO_DATABASE = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "NO_COLOR": "1"}


def review(*args: str, project: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """The review command of ``project`` (this checkout, or a copy), run from outside it."""
    if project == REPO_ROOT:
        command = [str(REPO_ROOT / "scripts" / "review")]
        env = {**NO_DATABASE, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    else:
        command = [sys.executable, "-m", "chat_migrations.cli", "review"]
        env = {**NO_DATABASE, "PYTHONPATH": str(project / "scripts")}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd="/")


@pytest.fixture(scope="module")
def whole_history() -> subprocess.CompletedProcess:
    return review()


def test_review_prints_every_revision_of_both_environments_with_locks_and_caller_changes(whole_history):
    result = whole_history
    assert result.returncode == report.EXIT_OK, result.stdout + result.stderr
    text = result.stdout
    assert "**No hazards.**" in text
    for environment in ENVIRONMENTS:
        history = revisions_in_order(environment)
        assert f"## {environment}: {history[0]} → {history[-1]}" in text
        sections = text.split(f"## {environment}: ", 1)[1].split("\n## ", 1)[0]
        for revision in history[1:]:  # the baseline is stamped, never run
            assert f"### {environment} · {revision}" in sections
    prod = text.split("### prod · 102_unread_count_index", 1)[1].split("\n### ", 1)[0]
    # The concurrent build: its lock and how long it holds it.
    assert "SHARE UPDATE EXCLUSIVE on public.chat_messages, while it builds; reads and writes go on | scan |" in prod
    # Caller changes, computed from the baseline's grants: prod's 007 takes EXECUTE from anon.
    prod_007 = text.split("### prod · 007_prod_unread_count_privileges", 1)[1].split("\n### ", 1)[0]
    assert "- anon may no longer execute public.get_unread_count(uuid, uuid)" in prod_007
    # Staging had no get_unread_count: its 002 creates it, so authenticated gains it.
    staging_002 = text.split("### staging · 002_function_updates_staging", 1)[1].split("\n### ", 1)[0]
    assert "- authenticated may now execute public.get_unread_count(uuid, uuid)" in staging_002
    # A NOT NULL the online DDL proves with a validated CHECK holds ACCESS EXCLUSIVE only briefly.
    prod_001 = text.split("### prod · 001_schema_alignment", 1)[1].split("\n### ", 1)[0]
    assert "ALTER COLUMN chat_id SET" in prod_001 and "| catalog-only |" in prod_001


def test_the_json_parses_and_has_the_documented_shape():
    result = review("--format", "json")
    assert result.returncode == report.EXIT_OK, result.stderr
    document = json.loads(result.stdout)
    assert_same_shape(document, documented_json("## review"))
    assert document["command"] == "review" and document["exit_code"] == 0 and document["hazards"] == 0
    assert [e["name"] for e in document["environments"]] == list(load_environments())
    for environment in document["environments"]:
        assert [r["revision"] for r in environment["revisions"]] == revisions_in_order(environment["name"])[1:]
        for revision in environment["revisions"]:
            assert revision["upgrade"] and revision["downgrade"], revision["revision"]
            held = {lock["held"] for s in revision["upgrade"] + revision["downgrade"] for lock in s["locks"]}
            assert held <= {"catalog-only", "scan", "until commit", "rows"}


# --- a throwaway project with one more revision ------------------------------------------

REVISION = '''"""{title}

Environment: both (shared)
Why: a test of scripts/review.
Locks: whatever the statement takes.
Downgrade verified: never; a test.
"""

from alembic import op

from chat_migrations.runtime.promises import Promises

revision = "{revision}"
down_revision = "{head}"
branch_labels = None
depends_on = None
promises = Promises()


def upgrade() -> None:
    op.execute("{upgrade}")


def downgrade() -> None:
    {downgrade}
'''


def git(project: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's code and revisions, committed to a git repository of its own."""
    project = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "alembic", project / "alembic", ignore=ignore)
    shutil.copytree(REPO_ROOT / "scripts" / "chat_migrations", project / "scripts" / "chat_migrations", ignore=ignore)
    shutil.copy(REPO_ROOT / "alembic.ini", project)
    (project / ".ci").mkdir()
    shutil.copy(REPO_ROOT / ".ci" / "squawk.toml", project / ".ci")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "the project")
    return project


def add_revision(project: Path, revision: str, upgrade: str, downgrade: str, title: str = "A test revision.") -> Path:
    path = project / "alembic" / "versions" / "shared" / f"{revision}.py"
    path.write_text(REVISION.format(title=title, revision=revision, head=catalog.head_revision("prod"),
                                    upgrade=upgrade, downgrade=downgrade))
    return path


SAFE_DOWNGRADE = 'op.execute("COMMENT ON TABLE public.chats IS NULL")'


@pytest.mark.parametrize(
    ("upgrade", "downgrade", "hazard", "detail"),
    [
        # A CHECK added without NOT VALID scans every row under its ACCESS EXCLUSIVE lock.
        ("ALTER TABLE public.chat_messages ADD CONSTRAINT seq_positive CHECK (seq > 0)",
         'op.execute("ALTER TABLE public.chat_messages DROP CONSTRAINT seq_positive")',
         "ACCESS EXCLUSIVE held across a scan (upgrade)",
         ("ADD CONSTRAINT seq_positive CHECK (seq", "public.chat_messages is held ACCESS EXCLUSIVE while it is scanned")),
        # VALIDATE scans under SHARE UPDATE EXCLUSIVE, but an earlier LOCK in the same transaction holds more.
        ("LOCK TABLE public.chat_messages IN ACCESS EXCLUSIVE MODE; "
         "ALTER TABLE public.chat_messages VALIDATE CONSTRAINT chat_messages_status_check", "pass",
         "ACCESS EXCLUSIVE held across a scan (upgrade)",
         ("VALIDATE CONSTRAINT chat_messages_stat", "public.chat_messages is held ACCESS EXCLUSIVE while it is scanned")),
        # A volatile default rewrites every row: no rule classifies it.
        ("ALTER TABLE public.chat_messages ADD COLUMN x int DEFAULT random()",
         'op.execute("ALTER TABLE public.chat_messages DROP COLUMN x")',
         "a lock it cannot classify (upgrade)",
         ("ALTER TABLE public.chat_messages ADD COLUMN x int DEFAULT random()",)),
        ("ALTER TABLE public.chat_messages ALTER COLUMN message_text TYPE varchar(500)",
         'op.execute("ALTER TABLE public.chat_messages ALTER COLUMN message_text TYPE text")',
         "a lock it cannot classify (upgrade)",
         ("ALTER TABLE public.chat_messages ALTER COLUMN message_text TYPE varchar",)),
        ("COMMENT ON TABLE public.chats IS 'conversations'", "pass",
         "no recorded downgrade (downgrade)",
         ("downgrade() in alembic/versions/shared/999_review_test.py does nothing",)),
        ("ALTER TABLE public.chat_messages DROP COLUMN media_urls",
         'op.execute("ALTER TABLE public.chat_messages ADD COLUMN media_urls text[]")',
         "a step that cannot be rolled back (upgrade)",
         ("drops column public.chat_messages.media_urls with its values: no downgrade brings them back",)),
    ],
    ids=["validated-check", "lock-then-validate", "volatile-default", "alter-type", "pass-downgrade", "drops-a-column"],
)
def test_a_revision_with_a_hazard_makes_the_review_exit_1_naming_it(project, upgrade, downgrade, hazard, detail):
    add_revision(project, "999_review_test", upgrade, downgrade)
    result = review("-n", "prod", "--base", "HEAD", project=project)  # the uncommitted revision is the branch's
    assert result.returncode == report.EXIT_HAZARD, result.stdout + result.stderr
    listed = [line for line in result.stdout.splitlines() if line.startswith(f"- prod `999_review_test`: {hazard}: ")]
    assert len(listed) == 1 and all(part in listed[0] for part in detail), result.stdout


def test_a_revision_without_a_hazard_exits_0(project):
    add_revision(project, "999_review_test", "COMMENT ON TABLE public.chats IS 'conversations'", SAFE_DOWNGRADE)
    result = review("-n", "prod", "--base", "HEAD", project=project)
    assert result.returncode == report.EXIT_OK, result.stdout + result.stderr
    assert "**No hazards.**" in result.stdout and "### prod · 999_review_test" in result.stdout


def test_base_limits_the_listing_to_the_revisions_added_since_that_ref(project):
    add_revision(project, "999_review_test", "COMMENT ON TABLE public.chats IS 'conversations'", SAFE_DOWNGRADE)
    git(project, "checkout", "-q", "-b", "feature")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "a revision")
    main_moved = project / "alembic" / "versions" / "prod" / "001_schema_alignment.py"
    git(project, "checkout", "-q", "main")
    main_moved.write_text(main_moved.read_text() + "\n# changed on main after the branch\n")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "main moves on")
    git(project, "checkout", "-q", "feature")

    result = review("--base", "main", "--format", "json", project=project)
    assert result.returncode == report.EXIT_OK, result.stderr
    document = json.loads(result.stdout)
    # Since the merge base: the branch's revision only, in both environments; main's own change is not the branch's.
    assert {e["name"]: [(r["revision"], r["change"]) for r in e["revisions"]] for e in document["environments"]} == {
        environment: [("999_review_test", "added")] for environment in ENVIRONMENTS
    }
    assert document["base"]["ref"] == "main" and document["base"]["merge_base"] == git(project, "merge-base", "main", "HEAD").strip()
    revision = document["environments"][0]["revisions"][0]
    assert revision["what"] == "A test revision." and revision["why"] == "a test of scripts/review."
    assert any("COMMENT ON TABLE public.chats" in s["statement"] for s in revision["upgrade"])

    # A shipped revision the branch edits is listed as modified.
    shipped = project / "alembic" / "versions" / "shared" / "101_serialised_message_seq.py"
    shipped.write_text(shipped.read_text() + "\n# edited\n")
    listed = json.loads(review("-n", "staging", "--base", "main", "--format", "json", project=project).stdout)
    assert [(r["revision"], r["change"]) for r in listed["environments"][0]["revisions"]] == [
        ("101_serialised_message_seq", "modified"), ("999_review_test", "added"),
    ]

    # Nothing added since the branch's own tip.
    shipped.write_text(shipped.read_text().replace("\n# edited\n", ""))
    nothing = review("--base", "HEAD", project=project)
    assert nothing.returncode == report.EXIT_OK and "No revision of this environment is added or changed." in nothing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--base", "no-such-ref"), "review: --base no-such-ref: not a commit of this repository (fetch it first: git fetch origin)"),
        (("-n", "preview"), "review: unknown environment 'preview': pass -n prod or -n staging"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = review(*args, "--format", "json")
    assert result.returncode == report.EXIT_CANNOT_RUN
    assert result.stderr.strip().splitlines() == [message]
    assert json.loads(result.stdout) == {"command": "review", "exit_code": 2, "error": message.removeprefix("review: ")}
