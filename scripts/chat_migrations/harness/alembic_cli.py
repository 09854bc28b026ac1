"""Running the real ``alembic`` command line, as an operator would."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chat_migrations.runtime.environments import ALEMBIC_INI, load_environments


@functools.cache
def _empty_directory() -> Path:
    # Runs happen outside the checkout so a developer's .env.local is never read.
    return Path(tempfile.mkdtemp(prefix="alembic-cwd-"))


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def environment_with(urls: dict[str, str] | None, extra_env: dict | None = None) -> dict[str, str]:
    """This process's environment with only ``urls`` ({environment: url}) as connection strings."""
    env = dict(os.environ)
    environments = load_environments()
    for environment in environments.values():
        env.pop(environment.url_env, None)
    for name, url in (urls or {}).items():
        env[environments[name].url_env] = url
    env.update(extra_env or {})
    return env


def _invocation(args, urls, extra_env):
    config = [] if "-c" in args else ["-c", str(ALEMBIC_INI)]
    return [sys.executable, "-m", "alembic", *config, *args], environment_with(urls, extra_env)


def run(
    *args: str,
    urls: dict[str, str] | None = None,
    check: bool = True,
    extra_env: dict | None = None,
    cwd: Path | None = None,
) -> Result:
    """``alembic ARGS`` with ``urls`` ({environment: url}) as its connection strings.

    Only the given URLs are visible to the command: the caller's own
    *_DATABASE_URL variables are removed, and it runs in an empty directory
    (or ``cwd``), so it never reaches a database it was not given.
    """
    command, env = _invocation(args, urls, extra_env)
    completed = subprocess.run(command, cwd=cwd or _empty_directory(), env=env, capture_output=True, text=True)
    result = Result(["alembic", *args], completed.returncode, completed.stdout, completed.stderr)
    if check and completed.returncode != 0:
        raise AssertionError(f"{' '.join(result.args)} exited {completed.returncode}:\n{result.output}")
    return result


def start(*args: str, urls: dict[str, str] | None = None) -> subprocess.Popen:
    """``alembic ARGS`` in the background, like run(); read it with .communicate()."""
    command, env = _invocation(args, urls, None)
    return subprocess.Popen(
        command, cwd=_empty_directory(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
