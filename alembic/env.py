"""Alembic environment for the chat database: one environment per alembic.ini section.

``alembic -n prod ...`` or ``alembic -n staging ...`` picks the environment
(``config.config_ini_section``). This file only chooses it, gets its guarded
connection (identity check, timeouts, advisory lock: chat_migrations.session),
and runs the revisions, one transaction per revision. ``-x key=value``
tunes the waits (README, "Lock discipline").
"""

import logging
import time
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from chat_migrations import identity, models, online_ddl, session
from chat_migrations.environments import ConfigurationError, get_environment, load_environments

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("chat_migrations")

REFUSALS = (
    ConfigurationError,
    identity.WrongDatabase,
    session.MigrationRefused,
    online_ddl.LockBudgetSpent,
)

COMMON_OPTIONS = dict(
    target_metadata=models.metadata,
    include_object=models.include_object,
    version_table_schema=session.BOOKKEEPING_SCHEMA,
    transaction_per_migration=True,
)


def run_migrations_offline(environment) -> None:
    """Render SQL (``--sql``): the guard and bookkeeping first, no connection."""
    context.configure(
        url="postgresql+psycopg2://",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **COMMON_OPTIONS,
    )
    with context.begin_transaction():
        context.execute(identity.offline_guard_sql(environment))
        context.execute(f"SET lock_timeout = {session.settings.lock_timeout_ms}")
        context.execute(f"SET statement_timeout = {session.settings.statement_timeout_ms}")
        context.execute(session.BOOKKEEPING_SQL)
        context.run_migrations()
        # Leave a pooled session (Supabase's SQL editor) as it was found.
        context.execute("RESET lock_timeout")
        context.execute("RESET statement_timeout")


def run_migrations_online(environment) -> None:
    """Run against the environment's database, after it proved its identity."""
    with session.migration_connection(
        environment,
        load_environments(),
        mutating=not _command_is_read_only(),
        connectable=config.attributes.get("connection"),
    ) as connection:
        timer = RevisionTimer()
        context.configure(connection=connection, on_version_apply=timer.step_done, **COMMON_OPTIONS)
        online_ddl.run_with_lock_retries(run_revisions)
        timer.report()


def run_revisions() -> None:
    with context.begin_transaction():
        context.run_migrations()


class RevisionTimer:
    """The elapsed time of each revision, reported when the command ends."""

    def __init__(self) -> None:
        self.mark = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def step_done(self, *, step, **_) -> None:
        now = time.monotonic()
        self.steps.append((f"{'upgrade' if step.is_upgrade else 'downgrade'} {step.up_revision_id}", now - self.mark))
        self.mark = now

    def report(self) -> None:
        for name, seconds in self.steps:
            log.info("%s took %.1fs", name, seconds)


def _command_is_read_only() -> bool:
    # `alembic current` and `check` must not write, not even the bookkeeping schema.
    command = getattr(config.cmd_opts, "cmd", None)
    return bool(command) and command[0].__name__ in {"current", "check"}


try:
    environment = get_environment(config.config_ini_section)
    session.settings = session.Settings.from_x_arguments(context.get_x_argument(as_dictionary=True))
    if context.is_offline_mode():
        run_migrations_offline(environment)
    else:
        run_migrations_online(environment)
except REFUSALS as refusal:
    raise CommandError(str(refusal)) from None
except DBAPIError as failure:
    # The revision's transaction was rolled back; say why in one line.
    reason = " ".join(str(failure.orig).split()) if failure.orig is not None else str(failure)
    raise CommandError(f"migration stopped, the revision in progress was not recorded: {reason}") from None
