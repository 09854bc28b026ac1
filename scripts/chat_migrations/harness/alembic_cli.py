"""Running the real ``alembic`` command line, as an operator would."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import alembic.config

from chat_migrations.runtime.environments import ALEMBIC_INI, load_environments


@functools.cache
def _empty_directory() -> Path:
    # Runs happen outside the checkout so a developer's .env.local is never read; removed when this process ends.
    directory = tempfile.TemporaryDirectory(prefix="alembic-cwd-")
    atexit.register(directory.cleanup)
    return Path(directory.name)


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


def _arguments(args) -> list[str]:
    """alembic's arguments, with this checkout's alembic.ini unless ``-c`` names another."""
    return [*([] if "-c" in args else ["-c", str(ALEMBIC_INI)]), *args]


def _invocation(args, urls, extra_env):
    return [sys.executable, "-m", "alembic", *_arguments(args)], environment_with(urls, extra_env)


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


def run_in_process(
    *args: str,
    urls: dict[str, str] | None = None,
    check: bool = True,
    extra_env: dict | None = None,
    cwd: Path | None = None,
) -> Result:
    """run(), through the same command line (``alembic.config.main``), in this process.

    For the test suite, which runs alembic a few hundred times: it saves a
    Python start-up and the imports per run. Everything run() isolates is
    isolated the same way, for the length of the call: only ``urls`` as
    connection strings, ``extra_env`` set, an empty working directory. Not
    for threads: the environment and working directory are the process's.
    What needs a process of its own (a signal, a second runner) uses start().
    """
    saved_environment, saved_directory = dict(os.environ), os.getcwd()
    environment = environment_with(urls, extra_env)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(environment)
    try:
        os.chdir(cwd or _empty_directory())
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _config_printing_to(out):
            code = _exit_code(lambda: alembic.config.main(_arguments(args), prog="alembic"))
    finally:
        os.chdir(saved_directory)
        os.environ.clear()
        os.environ.update(saved_environment)
    result = Result(["alembic", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{' '.join(result.args)} exited {code}:\n{result.output}")
    return result


@contextlib.contextmanager
def _config_printing_to(stream):
    """What commands print (current, heads, history) goes to ``stream``.

    alembic's Config takes ``sys.stdout`` as it was when alembic was imported
    (a default argument), so redirecting sys.stdout alone does not reach it.
    """
    original = alembic.config.Config

    class Config(original):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("stdout", stream)
            super().__init__(*args, **kwargs)

    alembic.config.Config = Config
    try:
        yield
    finally:
        alembic.config.Config = original


def _exit_code(command) -> int:
    """What the process would have exited with: SystemExit's code, 1 for an uncaught exception."""
    try:
        command()
    except SystemExit as stop:
        if stop.code is None:
            return 0
        return stop.code % 256 if isinstance(stop.code, int) else 1
    except Exception:  # as an uncaught exception ends the CLI: traceback on stderr, exit 1
        traceback.print_exc()
        return 1
    return 0


# A terminal's foreground job starts with SIGINT at its default action. A process started under a
# shell's background job (`nohup ... &`, a CI runner) inherits it ignored, and exec keeps it ignored:
# this puts the default back, then becomes the command.
_DEFAULT_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


def as_terminal_job(command: list[str]) -> list[str]:
    """``command`` as a terminal would start it: SIGINT at its default action, whatever this process has."""
    return [sys.executable, "-c", _DEFAULT_SIGINT, *command]


def start(*args: str, urls: dict[str, str] | None = None, own_group: bool = False) -> subprocess.Popen:
    """``alembic ARGS`` in the background, like run(); read it with .communicate().

    ``own_group``: in a process group of its own, started as a terminal starts
    its foreground job, which os.killpg signals as a terminal's Ctrl-C does.
    """
    command, env = _invocation(args, urls, None)
    return subprocess.Popen(
        as_terminal_job(command) if own_group else command, cwd=_empty_directory(), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0 if own_group else None,
    )
