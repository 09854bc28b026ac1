"""squawk finds nothing in the offline SQL of any revision, upgrade or downgrade, in either environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat_migrations.review import squawk
from chat_migrations.review.render_sql import Step, offline_sql
from chat_migrations.runtime.environments import load_environments

from .conftest import ENVIRONMENTS, revisions_in_order


def offline_scripts(environment: str, folder: Path) -> list[Path]:
    """Each revision's ``alembic upgrade/downgrade --sql``, rendered in this process (render-sql's renderer)."""
    history = revisions_in_order(environment)
    env = load_environments()[environment]
    scripts = []
    for previous, revision in zip(["base", *history], history):
        for step in (Step("upgrade", previous, revision), Step("downgrade", revision, previous)):
            direction = step.direction
            sql = offline_sql(env, step)
            path = folder / f"{environment}-{revision}-{direction}.sql"
            path.write_text(squawk.lintable(sql))
            scripts.append(path)
    return scripts


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_squawk_finds_nothing_in_any_revision(tmp_path, environment):
    scripts = offline_scripts(environment, tmp_path)
    result = squawk.run(scripts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_squawk_would_catch_an_unsafe_statement(tmp_path):
    # The lint is live: a plain index build on an existing table is reported.
    unsafe = tmp_path / "unsafe.sql"
    unsafe.write_text("SET lock_timeout = 500;\nSET statement_timeout = 500;\nCREATE INDEX i ON public.chat_messages (status);\n")
    result = squawk.run([unsafe])
    assert result.returncode != 0
    assert "require-concurrent-index-creation" in result.stdout + result.stderr
    # The review reads the same findings as data.
    assert "require-concurrent-index-creation" in {finding.rule for finding in squawk.findings([unsafe])}
