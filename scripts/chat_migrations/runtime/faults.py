"""A fault at a chosen statement of a migration run, for the tests that prove an interrupted run leaves no trace.

Off unless $CHAT_MIGRATIONS_FAULT is set (``sigint:N`` or ``terminate:N``):
before the N-th statement the migration connection sends while revisions run,
``sigint`` delivers SIGINT to this process (what Ctrl-C does) and
``terminate`` has another session end the migration's backend
(pg_terminate_backend, what a DBA or a failover does). The statement then
never runs, as if the fault struck between two statements.
"""

from __future__ import annotations

import os
import signal

from sqlalchemy import event

from chat_migrations.runtime import interrupts

VARIABLE = "CHAT_MIGRATIONS_FAULT"


def install(connection) -> None:
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    kind, _, number = spec.partition(":")
    target = int(number)
    seen = 0

    def before(conn, cursor, statement, parameters, context, executemany):
        nonlocal seen
        seen += 1
        if seen != target:
            return
        if kind == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            # The handler has noted it (before this line ran): stop before the statement, as Ctrl-C does there.
            interrupts.raise_if_received()
        elif kind == "terminate":
            import psycopg2  # only a test's fault needs a second connection

            pid = conn.connection.dbapi_connection.get_backend_pid()
            with psycopg2.connect(conn.engine.url.render_as_string(False).replace("+psycopg2", "")) as other:
                other.autocommit = True
                other.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
            other.close()

    event.listen(connection, "before_cursor_execute", before)
