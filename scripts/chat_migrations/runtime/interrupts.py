"""Ctrl-C during a migration run: noted at once, acted on at a statement boundary, never lost.

Python's default SIGINT handler raises KeyboardInterrupt wherever the
interpreter is, and psycopg2 swallows it when that is inside its
cursor.execute (while it decodes a result): the run then went on to head and
exited 0. So a run notes the signal instead of raising it (``noting``), and
``cancelling(conn)`` acts on it for the migration connection:

* a watcher thread, woken by signal.set_wakeup_fd, asks the server to cancel
  the statement in progress (psycopg2 waits in libpq, where no Python handler
  runs), so a long build or lock wait ends at once;
* every statement the connection sends checks the note before and after it,
  and so does every commit (SQLAlchemy's connection events), raising
  ``Interrupted`` there: inside a revision that is its transaction, which
  alembic rolls back. env.py checks once more after the last revision.

This module imports only the standard library at its top: env.py installs
the handler before its heavier imports.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

_received = threading.Event()
# Held while the watcher sends a cancel request.
_cancelling = threading.Lock()


class Interrupted(Exception):
    """SIGINT arrived: raised at the migration connection's next statement boundary."""


def _note(signum, frame) -> None:
    _received.set()


def received() -> bool:
    return _received.is_set()


def raise_if_received(*_event_arguments) -> None:
    if _received.is_set():
        raise Interrupted("interrupted")


def rearm() -> None:
    """Forget the interrupt already acted on, so a second Ctrl-C stops what runs next (the clean-up).

    A cancel request the watcher was still sending would strike the next
    statement instead of the one it was meant for: it is let finish first,
    and the server a moment to take it (an idle session ignores it).
    """
    with _cancelling:
        time.sleep(0.05)
    _received.clear()


def start_noting():
    """From now on SIGINT is noted, not raised; returns the handler to give back (None: not the main thread).

    Only the main thread can set a handler; elsewhere (a test runner's worker
    thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    _received.clear()
    return signal.signal(signal.SIGINT, _note)


def stop_noting(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def noting() -> Iterator[None]:
    """SIGINT is noted, not raised, until the block ends; then the previous handler is back."""
    previous = start_noting()
    try:
        yield
    finally:
        stop_noting(previous)


@contextmanager
def cancelling(conn) -> Iterator[None]:
    """While the block runs, SIGINT cancels ``conn``'s statement, and its next boundary raises Interrupted."""
    from sqlalchemy import event

    hooks = ("before_cursor_execute", "after_cursor_execute", "commit")
    for hook in hooks:
        event.listen(conn, hook, raise_if_received)
    watching = threading.current_thread() is threading.main_thread()
    if watching:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        previous = signal.set_wakeup_fd(write_end)
        dbapi_connection = conn.connection.dbapi_connection

        def watch() -> None:
            while True:
                byte = os.read(read_end, 1)
                if not byte or byte == b"\0":
                    return
                if byte[0] == signal.SIGINT:
                    _received.set()
                    with _cancelling, contextlib.suppress(Exception):
                        dbapi_connection.cancel()

        watcher = threading.Thread(target=watch, name="interrupt-watcher", daemon=True)
        watcher.start()
    try:
        yield
    finally:
        for hook in hooks:
            with contextlib.suppress(Exception):
                event.remove(conn, hook, raise_if_received)
        if watching:
            signal.set_wakeup_fd(previous)
            os.write(write_end, b"\0")
            watcher.join(timeout=5)
            os.close(write_end)
            os.close(read_end)


@contextmanager
def paused(conn) -> Iterator[None]:
    """The connection's statements do not check for an interrupt in the block (env.py reading back after one)."""
    from sqlalchemy import event

    hooks = [hook for hook in ("before_cursor_execute", "after_cursor_execute", "commit")
             if event.contains(conn, hook, raise_if_received)]
    for hook in hooks:
        event.remove(conn, hook, raise_if_received)
    try:
        yield
    finally:
        for hook in hooks:
            event.listen(conn, hook, raise_if_received)


def owns_process() -> bool:
    """This process is ``alembic ...`` or ``python -m alembic ...`` (not a test runner calling its main)."""
    argv = getattr(sys, "orig_argv", [])
    return (len(argv) > 1 and os.path.basename(argv[1]) == "alembic") or argv[1:3] == ["-m", "alembic"]


def after_the_run(line: str | None) -> None:
    """In alembic's own process, once env.py is done, until it exits: a Ctrl-C is told as ``line``, exit 255.

    None (the run failed, its FAILED line is on its way): the signal changes
    nothing and is ignored.
    """
    if not owns_process() or threading.current_thread() is not threading.main_thread():
        return
    # Python puts the default action back as it finalizes (a Ctrl-C then kills the process, exit -2);
    # an ignored signal it leaves alone: the run is whole and has said so by then.
    atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)
    if line is None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    message = f"FAILED: {line}\n".encode()

    def told(signum, frame):
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(2, message)
        os._exit(255)

    signal.signal(signal.SIGINT, told)
