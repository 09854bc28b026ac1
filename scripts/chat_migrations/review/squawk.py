"""squawk on the offline SQL of a revision: one place for how the project runs it.

tests/test_lint.py (nothing found in any revision) and scripts/review (the
findings of each revision, for the pull request) both lint through here:
the project's ``.ci/squawk.toml``, Alembic's own ``alembic_version`` table
left out, and a statement's ``-- squawk-ignore <rule>`` lines honoured by
squawk itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from chat_migrations.runtime.environments import REPO_ROOT

SQUAWK_CONFIG = REPO_ROOT / ".ci" / "squawk.toml"
# Alembic's own bookkeeping table: its VARCHAR(32) is Alembic's, the table is created once, empty.
ALEMBIC_VERSION_TABLE = re.compile(r"CREATE TABLE migration_meta\.alembic_version \(.*?\);\n", re.DOTALL)


class SquawkMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Finding:
    file: str
    line: int  # 1-based
    rule: str
    message: str


def binary() -> str:
    """squawk from this Python's environment (the squawk-cli wheel), else from PATH."""
    found = shutil.which("squawk", path=str(Path(sys.executable).parent)) or shutil.which("squawk")
    if not found:
        raise SquawkMissing("squawk is not installed (pip install squawk-cli, or source scripts/_venv.sh)")
    return found


def lintable(sql: str) -> str:
    """The offline SQL as squawk should read it."""
    return ALEMBIC_VERSION_TABLE.sub("", sql)


def run(paths: list[Path]) -> subprocess.CompletedProcess:
    """squawk's own report (exit code and text), as a reviewer would run it."""
    return subprocess.run(
        [binary(), "--config", str(SQUAWK_CONFIG), *map(str, paths)],
        capture_output=True, text=True, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )


def findings(paths: list[Path]) -> list[Finding]:
    """Every finding squawk reports in ``paths``."""
    if not paths:
        return []
    result = subprocess.run(
        [binary(), "--config", str(SQUAWK_CONFIG), "--reporter", "json", *map(str, paths)],
        capture_output=True, text=True, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        reported = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise SquawkMissing(f"squawk failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[:200]}") from None
    return [Finding(Path(f["file"]).name, f["line"] + 1, f["rule_name"], f["message"]) for f in reported]
