"""Ctrl-C while ``alembic`` starts: one line, no traceback. Installed into the venv by scripts/_venv.sh.

Alembic's console script imports alembic and SQLAlchemy (0.5 s idle, 3 s
under load) before env.py, the project's first code, runs; a SIGINT in that
time printed a KeyboardInterrupt traceback. Python runs the ``import`` lines
of site-packages/*.pth at every start-up (the ``site`` module, documented),
before the script's own imports. For an alembic process only, this installs
a handler that ends it with one line, until env.py installs its own
(chat_migrations.runtime.interrupts); from then on it acts as Python's default.
Nothing has connected before env.py runs, so nothing was changed.
"""

# _signal, not signal: the C module is built in, so the handler is in place before any other import.
import _signal
import os
import sys

MESSAGE = b"FAILED: interrupted while alembic was starting; nothing was changed\n"


def is_alembic(argv: list[str]) -> bool:
    """``alembic ...`` (the console script) or ``python -m alembic ...``."""
    return (len(argv) > 1 and os.path.basename(argv[1]) == "alembic") or argv[1:3] == ["-m", "alembic"]


def _interrupted(signum, frame):
    if "chat_migrations.runtime.interrupts" in sys.modules:  # env.py has begun: its handling applies
        return _signal.default_int_handler(signum, frame)
    os.write(2, MESSAGE)
    os._exit(255)


if is_alembic(getattr(sys, "orig_argv", [])) and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted)
