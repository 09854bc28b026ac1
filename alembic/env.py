"""Alembic environment for the chat database: one environment per alembic.ini section.

``alembic -n prod ...`` or ``alembic -n staging ...`` picks the environment
(``config.config_ini_section``). This file only chooses it, gets its guarded
connection (identity check, timeouts, advisory lock: chat_migrations.runtime.session),
looks at the plan of steps before the first one runs (a downgrade past the
baseline, leftovers of an interrupted run), and runs the revisions, one
transaction per revision. ``-x key=value`` tunes the waits (README, "Lock
discipline"). Every failure ends as one ``FAILED:`` line, secrets redacted.
"""

import logging
import time
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from chat_migrations.frozen import baseline
from chat_migrations.runtime import faults, identity, leftovers, lock_retries, offline, requirements, session
from chat_migrations.schema import models, tables
from chat_migrations.runtime.environments import ConfigurationError, get_environment, load_environments, redact

config = context.config
# A caller rendering in its own process (scripts/render-sql) keeps its own logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("chat_migrations")

REFUSALS = (
    ConfigurationError,
    identity.WrongDatabase,
    session.MigrationRefused,
    lock_retries.LockBudgetSpent,
)

COMMON_OPTIONS = dict(
    target_metadata=models.metadata,
    include_object=models.include_object,
    version_table_schema=session.BOOKKEEPING_SCHEMA,
    transaction_per_migration=True,
)


def run_migrations_offline(environment, command: str, settings: session.Settings) -> None:
    """Render SQL (``--sql``): the guards and bookkeeping first, no connection."""
    context.configure(
        url="postgresql+psycopg2://",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        chat_settings=settings,
        **COMMON_OPTIONS,
    )
    # Refused before anything is printed: no range, or one that starts outside this history.
    start = offline.starting_revision(context.script, environment.name, command, context.get_context().opts.get("starting_rev"))
    upgrades = offline.pending_upgrades(context.script, start, context.get_revision_argument()) if command == "upgrade" else []
    plan = Plan(command, settings)
    plan.watch(context.get_context())
    with context.begin_transaction():
        context.execute(identity.offline_guard_sql(environment))
        context.execute(offline.guard_sql(environment.name, start, upgrades=upgrades))
        context.execute(f"SET lock_timeout = {settings.lock_timeout_ms}")
        context.execute(f"SET statement_timeout = {settings.statement_timeout_ms}")
        context.execute(session.BOOKKEEPING_SQL)
        context.run_migrations()
        # Leave a pooled session (Supabase's SQL editor) as it was found.
        context.execute("RESET lock_timeout")
        context.execute("RESET statement_timeout")


def run_migrations_online(environment, command: str, settings: session.Settings) -> None:
    """Run against the environment's database, after it proved its identity."""
    global plan
    plan = Plan(command, settings)
    with session.migration_connection(
        environment, load_environments(), command=command, settings=settings, chat_tables=tables.QUALIFIED,
        adoption_refusal=_adoption_refusal, connectable=config.attributes.get("connection"),
    ) as connection:
        plan.connection = connection
        context.configure(connection=connection, chat_settings=settings, **COMMON_OPTIONS)
        plan.watch(context.get_context())
        faults.install(connection)
        with session.interruptible(connection) as interrupted:
            try:
                lock_retries.run_with_lock_retries(run_revisions, settings)
            except KeyboardInterrupt:
                raise CommandError(plan.interrupted()) from None
            except SQLAlchemyError as failure:
                # A statement cancelled by Ctrl-C, or the connection SQLAlchemy invalidated
                # when the interrupt struck mid-statement, is the interrupt, not a failure of its own.
                if interrupted.is_set() or _caused_by(failure, KeyboardInterrupt):
                    raise CommandError(plan.interrupted()) from None
                # A lost connection surfaces again when alembic lets go of it (PendingRollbackError).
                database_error = _caused_by(failure, DBAPIError)
                if database_error:
                    raise CommandError(plan.stopped(database_error)) from None
                raise
    plan.report()


def run_revisions() -> None:
    with context.begin_transaction():
        context.run_migrations()


def _adoption_refusal(connection, environment: str) -> str | None:
    """Why this database may not be stamped at the revision asked for: it does not hold what that revision promises.

    At the baseline, adopt's comparison (scripts/adopt); at any other
    revision, every promise of the chain up to it (chat_migrations.checks.guarantees).
    """
    # Only a stamp needs the comparison: imported here, so other commands start without it.
    from chat_migrations.checks import adopt, stamping

    # alembic's stamp takes its revisions as a list (cmd_opts.revisions).
    asked = getattr(config.cmd_opts, "revisions", None) or [getattr(config.cmd_opts, "revision", None)]
    target = stamping.target(context.script, asked[0] if len(asked) == 1 else None)
    if target is None:
        return None
    if target == context.script.get_base():
        blockers = adopt.blocking(connection, environment)
        return adopt.blocked_message(environment, blockers) if blockers else None
    return stamping.refusal(connection, environment, target)


class Plan:
    """The steps a command runs: checked before the first, timed, and named when one fails."""

    def __init__(self, command: str, settings: session.Settings) -> None:
        self.command = command
        self.settings = settings
        self.connection = None
        self.mark = time.monotonic()
        self.done: list[tuple[str, float]] = []
        self.running: str | None = None
        self.started_at: str | None = None
        # What the leftovers removal set out to remove, once it has (it changes the database).
        self.cleaned: str | None = None

    def watch(self, migration_context) -> None:
        # The work function yields the steps lazily, one before each runs.
        planned = migration_context._migrations_fn

        def steps(heads, ctx):
            self.started_at = self.started_at or ",".join(heads) or "base"
            try:
                steps = list(planned(heads, ctx))
            except AssertionError:  # alembic asserts on some arguments (an empty revision) instead of saying why
                wanted = getattr(config.cmd_opts, "revision", None)
                raise session.MigrationRefused(
                    f"cannot {self.command} to {wanted!r}: name a revision (head, -1, an id from "
                    f"alembic -n {config.config_ini_section} history); nothing was changed"
                ) from None
            self._before_first(steps, ctx, heads)
            for step in steps:
                self.running = self._name(step)
                yield step
                # Resumed only once alembic committed the step (on_version_apply runs before that).
                self.done.append((self.running, time.monotonic() - self.mark))
                self.mark = time.monotonic()
                self.running = None

        migration_context._migrations_fn = steps

    def _before_first(self, steps, ctx, heads) -> None:
        if any(step.is_downgrade and getattr(step, "revision", None) is not None
               and step.revision.down_revision is None for step in steps):
            # Refused before the first step, not after undoing everything above the baseline.
            if ctx.as_sql:
                ctx.impl.static_output(baseline.REFUSE_WITH_ROWS_SQL + ";\n")
            else:
                self._refuse_past_baseline_with_rows()
        upgrades = [step.revision for step in steps if not step.is_downgrade and hasattr(step, "revision")]
        checks = requirements.pending_checks(upgrades)
        if ctx.as_sql:
            guard = requirements.guard_sql(checks)
            if guard:
                ctx.impl.static_output(guard + ";\n")
        elif checks and (query := requirements.problems_query(checks)):
            # Read in the transaction alembic has open (it may hold the new version table).
            unmet = [row[0] for row in self.connection.execute(text(query))]
            if unmet:
                raise session.MigrationRefused(f"cannot upgrade: {'; '.join(unmet)}; nothing was changed")
        if self.connection is not None and self.command in ("upgrade", "downgrade"):
            upgraded = {step.revision.revision for step in steps if not step.is_downgrade and hasattr(step, "revision")}
            applied = {script.revision for script in context.script.iterate_revisions(heads, "base")} if heads else set()
            removable = leftovers.removable(self.connection, applied=applied, keep=upgraded, tables=tables.QUALIFIED)
            if removable:
                self.cleaned = "the leftovers of an interrupted revision (" + "; ".join(
                    item.describe() for item in removable) + ")"
                leftovers.remove(self.connection, removable, autocommit_block=ctx.autocommit_block, settings=self.settings)
                self.cleaned = None

    def _refuse_past_baseline_with_rows(self) -> None:
        holds_rows = self.connection.execute(
            text("SELECT EXISTS (SELECT FROM public.chats) OR EXISTS (SELECT FROM public.chat_participants) "
                 "OR EXISTS (SELECT FROM public.chat_messages)")
        ).scalar()
        if holds_rows:
            raise session.MigrationRefused(
                "refusing to downgrade past the baseline: the chat tables hold rows, and this would drop them "
                "with the whole chat schema (it is only for databases Alembic built from nothing); "
                "nothing was changed"
            )

    @staticmethod
    def _name(step) -> str:
        if hasattr(step, "revision"):
            return f"{'upgrade' if step.is_upgrade else 'downgrade'} {step.revision.revision}"
        return f"stamp {','.join(step.to_revisions) or 'base'}"

    def report(self) -> None:
        for name, seconds in self.done:
            log.info("%s took %.1fs", name, seconds)

    def _position(self) -> str:
        finished = f"; finished: {', '.join(name for name, _ in self.done)}" if self.done else ""
        return f"{finished}. See where it stands: alembic -n {config.config_ini_section} current"

    def _unfinished(self) -> str:
        if self.running.startswith("downgrade"):
            return (
                "(a step of it outside a transaction, a concurrent index drop, may be done already: "
                "rerun the same downgrade to finish it; an upgrade would not rebuild what it dropped)"
            )
        return "(any step of it outside a transaction is completed by the next upgrade of it, or removed by a downgrade)"

    def interrupted(self) -> str:
        self.report()
        if self.running:
            return (
                f"interrupted during {self.running}: its transaction was rolled back and it is not recorded "
                f"{self._unfinished()}{self._position()}"
            )
        if self.done:
            return f"interrupted after the revisions ran; they are recorded{self._position()}"
        if self.cleaned:
            return f"interrupted before any revision ran, while removing {self.cleaned}{self._position()}"
        return f"interrupted before any revision ran; nothing was changed{self._position()}"

    def stopped(self, failure: DBAPIError) -> str:
        self.report()
        reason = session.first_line(failure)
        if failure.connection_invalidated:
            reason = f"the connection to the database was lost: its backend was terminated, or the server went away ({reason})"
        if self.running:
            return (
                f"migration stopped during {self.running}: its transaction was rolled back and it is not "
                f"recorded {self._unfinished()}: {reason}{self._position()}"
            )
        if self.cleaned:
            return f"{self.command} stopped before any revision ran, while removing {self.cleaned}: {reason}{self._position()}"
        return f"{self.command} stopped before any revision ran, nothing was changed: {reason}"


def _caused_by(failure: BaseException, kind: type):
    """``failure`` or the first exception of ``kind`` it was raised while handling, else None."""
    seen = failure
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _command() -> str:
    command = getattr(config.cmd_opts, "cmd", None)
    return command[0].__name__ if command else "upgrade"


plan: Plan | None = None
try:
    environment = get_environment(config.config_ini_section)
    settings = session.Settings.from_x_arguments(context.get_x_argument(as_dictionary=True))
    if context.is_offline_mode():
        run_migrations_offline(environment, _command(), settings)
    else:
        run_migrations_online(environment, _command(), settings)
except REFUSALS as refusal:
    raise CommandError(redact(str(refusal))) from None
except CommandError as failure:
    raise CommandError(redact(str(failure))) from None
except KeyboardInterrupt:
    # Outside the revisions: before connecting, or while letting the database go after them.
    raise CommandError(plan.interrupted() if plan else "interrupted before connecting; nothing was changed") from None
except DBAPIError as failure:
    raise CommandError(redact(f"stopped before any revision ran, nothing was changed: {session.first_line(failure)}")) from None
