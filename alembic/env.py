"""Alembic environment for the chat database: one environment per alembic.ini section.

``alembic -n prod ...`` or ``alembic -n staging ...`` picks the environment
(``config.config_ini_section``). This file only chooses it, gets its guarded
connection (identity check, timeouts, advisory lock: chat_migrations.runtime.session),
looks at the plan of steps before the first one runs (a downgrade past the
baseline, requirements, leftovers of an interrupted run), and runs the
revisions, one transaction per revision. ``-x key=value`` tunes the waits
(README, "Lock discipline"). Every failure ends as one ``FAILED:`` line, secrets
redacted; every migrating command that succeeds ends with one summary line.

Ctrl-C is noted from the first line below (chat_migrations.runtime.interrupts),
never raised inside a library: the statement in progress is cancelled, the
next statement boundary stops the run, and the line says what the database
reads back as recorded and what was cleaned.
"""

# First, before the heavier imports: Ctrl-C is noted, not raised (runtime/interrupts.py).
from chat_migrations.runtime import interrupts

_previous_sigint = interrupts.start_noting()

import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from logging.config import fileConfig  # noqa: E402

from alembic import context  # noqa: E402
from alembic.operations import Operations  # noqa: E402
from alembic.util import CommandError  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402

from chat_migrations.errors import LockBudgetSpent  # noqa: E402
from chat_migrations.frozen import baseline  # noqa: E402
from chat_migrations.runtime import bookkeeping, faults, identity, leftovers, lock_retries, offline, requirements, session  # noqa: E402
from chat_migrations.schema import tables  # noqa: E402
from chat_migrations.runtime.environments import ConfigurationError, get_environment, load_environments, redact  # noqa: E402

config = context.config
# A caller rendering in its own process (scripts/render-sql) keeps its own logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("chat_migrations")

REFUSALS = (
    ConfigurationError,
    identity.WrongDatabase,
    session.MigrationRefused,
    LockBudgetSpent,
)

COMMON_OPTIONS = dict(
    version_table_schema=session.BOOKKEEPING_SCHEMA,
    transaction_per_migration=True,
)


def _head_models(environment: str) -> dict:
    """The tables at head, for alembic check and autogenerate; the other commands of the command line
    start without building them (called from Python, as pytest-alembic does, the command is unknown)."""
    if config.cmd_opts is not None and _command() not in ("check", "revision"):
        return {}
    from chat_migrations.schema import models

    return {"target_metadata": models.at_head(environment, context.script), "include_object": models.include_object}


def run_migrations_offline(environment, command: str, settings: session.Settings) -> None:
    """Render SQL (``--sql``): the guards and bookkeeping first, no connection."""
    context.configure(
        url="postgresql+psycopg2://",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        chat_settings=settings,
        **_head_models(environment.name),
        **COMMON_OPTIONS,
    )
    # Refused before anything is printed: no range, or one that starts outside this history.
    start = offline.starting_revision(context.script, environment.name, command, context.get_context().opts.get("starting_rev"))
    upgrades = offline.pending_upgrades(context.script, start, context.get_revision_argument()) if command == "upgrade" else []
    plan = Plan(command, settings)
    with context.begin_transaction():
        context.execute(identity.offline_guard_sql(environment))
        context.execute(offline.guard_sql(environment.name, start, upgrades=upgrades))
        context.execute(f"SET lock_timeout = {settings.lock_timeout_ms}")
        context.execute(f"SET statement_timeout = {settings.statement_timeout_ms}")
        context.execute(session.BOOKKEEPING_SQL)
        plan.before_first_offline(context.get_context())
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
        context.configure(connection=connection, chat_settings=settings, on_version_apply=[plan.applied],
                          **_head_models(environment.name), **COMMON_OPTIONS)
        faults.install(connection)
        try:
            plan.before_first(context.get_context())
            lock_retries.run_with_lock_retries(run_revisions, settings)
            # A Ctrl-C after the last statement of the last revision is still one.
            interrupts.raise_if_received()
            plan.finish()
        except Exception as failure:
            message = plan.failed(failure)
            if message is None:
                raise
            raise CommandError(message) from None
    plan.summarize()


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


class Step:
    """One revision the command runs: its name, and the revision the database is at once it is recorded."""

    def __init__(self, script, downgrade: bool) -> None:
        self.script, self.is_downgrade = script, downgrade
        self.name = f"{'downgrade' if downgrade else 'upgrade'} {script.revision}"
        self.after = script.down_revision if downgrade else script.revision  # None: base


class Plan:
    """The steps a command runs: read from the script directory and checked before the first, timed, and,
    when the run stops, told as the database reads back (Alembic's public API: ScriptDirectory.iterate_revisions
    for the steps, on_version_apply for each one applied)."""

    def __init__(self, command: str, settings: session.Settings) -> None:
        self.command = command
        self.settings = settings
        self.connection = None
        self.began = self.mark = time.monotonic()
        self.start: str | None = None  # the revision read before the first step ("" when none)
        self.end: str | None = None
        self.steps: list[Step] | None = None
        self.done: list[tuple[str, float]] = []
        self.revisions_began = False
        # What the leftovers removal set out to remove, while it does (it changes the database).
        self.cleaning: str | None = None
        self.waited: tuple[float, str] | None = None  # (seconds, holder) spent waiting for another runner

    # -- the steps -------------------------------------------------------------------------

    def _wanted(self) -> str:
        """The revision asked for, as alembic's command handed it to this environment (also when called
        from Python, as scripts/render-sql does, with no command line)."""
        asked = context.get_context().opts.get("destination_rev")
        if asked is None:
            try:  # as the environment was given it (pytest-alembic passes it only there)
                asked = context.get_revision_argument()
            except KeyError:  # run from Python with no destination (an inspection): nothing to plan
                asked = None
        return str(asked or getattr(config.cmd_opts, "revision", None) or "")

    def _compute(self, heads: tuple[str, ...], destination: str) -> list[Step]:
        """What alembic's upgrade/downgrade will run from ``heads``: the same traversal, through the public API."""
        script = context.script
        try:
            if self.command == "upgrade":
                found = reversed(list(script.iterate_revisions(destination, heads, implicit_base=True)))
                return [Step(item, downgrade=False) for item in found]
            found = script.iterate_revisions(heads, destination, select_for_downgrade=True)
            return [Step(item, downgrade=True) for item in found]
        except AssertionError:  # alembic asserts on some arguments (an empty revision) instead of saying why
            raise session.MigrationRefused(
                f"cannot {self.command} to {destination!r}: name a revision (head, -1, an id from "
                f"alembic -n {config.config_ini_section} history); nothing was changed"
            ) from None

    def before_first(self, ctx) -> None:
        """Online: where the database is, the steps from there, and the checks that must pass before the first."""
        heads = ctx.get_current_heads()
        self.start = ",".join(heads)
        self.waited = self.connection.info.get(session.WAITED_FOR_LOCK)
        wanted = self._wanted()
        if self.command not in ("upgrade", "downgrade") or (not wanted and config.cmd_opts is None):
            # Not a migration, or run from Python with no destination (an inspection): nothing to plan.
            self._end_reads()
            return
        try:
            self.steps = self._compute(heads, wanted)
        except session.MigrationRefused:
            raise
        except Exception:  # an unknown or unreachable revision: alembic's own run says so, before any step
            self._end_reads()
            return
        self._check(self.steps, ctx, heads)
        self._end_reads()
        self.revisions_began = True

    def _end_reads(self) -> None:
        # The reads began a transaction; each revision opens its own.
        if self.connection.in_transaction():
            self.connection.commit()

    def before_first_offline(self, ctx) -> None:
        """--sql: the checks go out as statements before the first step, after the guards env.py renders.

        The script starts where its range says (``get_current_heads`` reads
        it back offline), so the steps come from the script directory as
        online, before run_migrations().
        """
        if self.command not in ("upgrade", "downgrade"):
            return
        heads = ctx.get_current_heads()
        try:
            self.steps = self._compute(tuple(heads), self._destination_offline())
        except session.MigrationRefused:
            raise
        except Exception:  # an unknown or unreachable revision: alembic's own run says so
            self.steps = None
        if self.steps is not None:
            self._check(self.steps, ctx, heads)

    def _destination_offline(self) -> str:
        return self._wanted().rpartition(":")[2]

    def _check(self, steps: list[Step], ctx, heads) -> None:
        if any(step.is_downgrade and step.script.down_revision is None for step in steps):
            # Refused before the first step, not after undoing everything above the baseline.
            if ctx.as_sql:
                from chat_migrations.frozen import baseline

                ctx.impl.static_output(baseline.REFUSE_WITH_ROWS_SQL + ";\n")
            else:
                self._refuse_past_baseline_with_rows()
        upgrades = [step.script for step in steps if not step.is_downgrade]
        checks = requirements.pending_checks(upgrades)
        if ctx.as_sql:
            guard = requirements.guard_sql(checks)
            if guard:
                ctx.impl.static_output(guard + ";\n")
        elif checks and (query := requirements.problems_query(checks)):
            unmet = [row[0] for row in self.connection.execute(text(query))]
            if unmet:
                raise session.MigrationRefused(f"cannot upgrade: {'; '.join(unmet)}; nothing was changed")
        if not ctx.as_sql:
            # Another run's leftovers go first; those of a revision about to be upgraded are reused by it.
            self._remove_leftovers(keep={script.revision for script in upgrades}, heads=heads)

    def _applied_set(self, heads) -> set[str]:
        heads = tuple(head for head in heads if head)
        return {script.revision for script in context.script.iterate_revisions(heads, "base")} if heads else set()

    def _remove_leftovers(self, *, keep: set[str], heads) -> list[leftovers.Leftover]:
        removable = leftovers.removable(self.connection, applied=self._applied_set(heads), keep=keep,
                                        tables=tables.QUALIFIED)
        if removable:
            self.cleaning = "; ".join(item.describe() for item in removable)
            ctx = context.get_context()
            # Outside run_migrations(): the helpers it calls (lock_retries) reach the context through ``op``.
            with Operations.context(ctx):
                leftovers.remove(self.connection, removable, autocommit_block=ctx.autocommit_block,
                                 settings=self.settings)
            self.cleaning = None
        return removable

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

    # -- while it runs -----------------------------------------------------------------------

    def applied(self, *, ctx, step, heads, run_args) -> None:
        """on_version_apply: the step's version row is written; alembic commits it next."""
        name = f"{'upgrade' if step.is_upgrade else 'downgrade'} {step.up_revision_id}" \
            if step.is_migration else f"stamp {','.join(heads) or 'base'}"
        self.done.append((name, time.monotonic() - self.mark))
        self.mark = time.monotonic()

    def finish(self) -> None:
        """Read back where the database is, once the revisions are committed."""
        self.end = bookkeeping.current_revision(self.connection) or ""
        self._end_reads()

    # -- how it ended --------------------------------------------------------------------------

    def report(self) -> None:
        for name, seconds in self.done:
            log.info("%s took %.1fs", name, seconds)

    def summarize(self) -> None:
        """The one line a migrating command ends with: from, to, how many, how long (and any wait)."""
        if self.command not in ("upgrade", "downgrade", "stamp"):
            return
        self.report()
        env = config.config_ini_section
        start, end = self.start or "base", self.end or "base"
        revisions = [name for name, _ in self.done if not name.startswith("stamp")]
        if self.command == "stamp":
            line = f"stamped {env} {start} → {end} in {time.monotonic() - self.began:.1f}s"
        elif not revisions:
            line = f"nothing to do: {env} is at {end}{self._why_nothing(end)}"
        else:
            verb = "upgraded" if self.command == "upgrade" else "downgraded"
            count = f"{len(revisions)} revision{'s' if len(revisions) != 1 else ''}"
            line = f"{verb} {env} {start} → {end}: {count} in {time.monotonic() - self.began:.1f}s"
        if self.waited:
            line += f" (after waiting {self.waited[0]:.1f}s for the migration lock, held by {self.waited[1]})"
        log.info("%s", line)

    def _why_nothing(self, end: str) -> str:
        wanted = self._wanted()
        if self.command == "downgrade" or not end:
            return f", at or below {wanted}" if wanted else ""
        if wanted in ("head", "heads"):
            return ", already at head"
        try:
            target = context.script.get_revision(wanted)
        except Exception:
            return ""
        if target is None or target.revision == end:
            return ""
        return f", already past {target.revision}"

    def failed(self, failure: BaseException) -> str | None:
        """The one line for a run that stopped: why, where the database reads back, what is left to clean.

        None: not a stop this says anything about (alembic's own errors, a
        refusal before the first step); the caller raises it as it is.
        """
        interrupted = interrupts.received() or _caused_by(failure, (interrupts.Interrupted, KeyboardInterrupt))
        gave_up = _caused_by(failure, LockBudgetSpent)
        database_error = _caused_by(failure, DBAPIError)
        if not (interrupted or gave_up or database_error):
            return None
        if not interrupted and not self.revisions_began and not self.cleaning and not self.done:
            return None  # a refusal or a failed read before anything changed: said as it is
        with interrupts.paused(self.connection):
            now = self._read_back()
        in_progress = self._in_progress(now)
        during = f" during {in_progress.name}" if in_progress else ""
        if interrupted:
            said = f"interrupted{during}"
        elif gave_up:
            said = str(gave_up)
        else:
            reason = session.first_line(database_error)
            if database_error.connection_invalidated:
                reason = ("the connection to the database was lost: its backend was terminated, "
                          f"or the server went away ({reason})")
            said = f"{self.command} stopped{during}: {reason}"
        if in_progress and not gave_up:  # which says so itself
            said += ": it was rolled back and is not recorded"
        if in_progress and in_progress.is_downgrade:
            said += (" (its step outside a transaction, a concurrent index drop, may be done already: "
                     f"finish it with alembic -n {config.config_ini_section} downgrade {in_progress.after or 'base'})")
        return f"{said}; {self._where(now)}; {self._clean_after(now)}"

    def _reached(self, now: str | None) -> int | None:
        """How many of the steps the database records, read back (None: it does not match them)."""
        if now is None or self.steps is None:
            return None
        positions = [self.start or ""] + [step.after or "" for step in self.steps]
        return max((i for i, position in enumerate(positions) if position == now), default=None)

    def _in_progress(self, now: str | None) -> Step | None:
        reached = self._reached(now)
        if reached is None or not self.revisions_began or reached >= len(self.steps):
            return None
        return self.steps[reached]

    def _read_back(self) -> str | None:
        """The revision the database records now ("" none; None: it cannot be read)."""
        for attempt in (1, 2):  # a cancel sent at the moment of the interrupt may still strike the first read
            try:
                if self.connection.invalidated:
                    with self.connection.engine.connect() as other:
                        return bookkeeping.current_revision(other) or ""
                self.connection.rollback()
                revision = bookkeeping.current_revision(self.connection) or ""
                self.connection.commit()
                return revision
            except Exception:
                if attempt == 2:
                    return None
        return None

    def _where(self, now: str | None) -> str:
        env = config.config_ini_section
        if now is None:
            return f"where it stands could not be read back: see alembic -n {env} current"
        said = f"{env} is at {now or 'no revision'}"
        reached = self._reached(now)
        if reached:
            recorded = [step.name for step in self.steps[:reached]]
            said += f", recorded by this run: {', '.join(recorded)}"
            if reached == len(self.steps):
                said += " (all of its revisions)"
        elif reached == 0:
            said += ", as before the run"
        return said

    def _clean_after(self, now: str | None) -> str:
        """Remove what the stopped run left (not for an applied revision), while this session holds the lock."""
        env = config.config_ini_section
        command = f"alembic -n {env} upgrade {now or 'base'}"
        if now is None or self.connection.invalidated:
            return f"anything it left is removed by: {command} (it changes nothing else)"
        interrupts.rearm()  # a second Ctrl-C stops the clean-up, and is told
        try:
            removed = self._remove_leftovers(keep=set(), heads=tuple(now.split(",")))
        except Exception as problem:
            why = "a second Ctrl-C" if interrupts.received() else session.first_line(problem)
            left = self.cleaning or "what it left"
            return f"not removed ({why}): {left}: remove it with {command} (it changes nothing else)"
        if removed:
            return "removed what it left: " + "; ".join(item.describe() for item in removed)
        return "nothing is left to clean"


def _caused_by(failure: BaseException, kind):
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


def _interrupted_at_the_end(plan: Plan) -> str:
    return (f"interrupted as the run ended: {config.config_ini_section} is at {plan.end or 'no revision'}, "
            "every revision of this run recorded; nothing is left to clean")


plan: Plan | None = None
try:
    environment = get_environment(config.config_ini_section)
    settings = session.Settings.from_x_arguments(context.get_x_argument(as_dictionary=True))
    if context.is_offline_mode():
        run_migrations_offline(environment, _command(), settings)
    else:
        run_migrations_online(environment, _command(), settings)
        # After the connection is let go: a Ctrl-C then came after everything was recorded.
        interrupts.raise_if_received()
except REFUSALS as refusal:
    raise CommandError(redact(str(refusal))) from None
except CommandError as failure:
    raise CommandError(redact(str(failure))) from None
except (KeyboardInterrupt, interrupts.Interrupted):
    # Outside the revisions: before connecting, or once the connection was let go.
    if plan is None or plan.end is None:
        raise CommandError("interrupted before any revision ran; nothing was changed") from None
    raise CommandError(_interrupted_at_the_end(plan)) from None
except DBAPIError as failure:
    raise CommandError(redact(f"stopped before any revision ran, nothing was changed: {session.first_line(failure)}")) from None
finally:
    interrupts.stop_noting(_previous_sigint)
    # Until the process exits, a Ctrl-C still gets its one line (alembic's own process only).
    interrupts.after_the_run(
        None if sys.exc_info()[0] is not None or plan is None or plan.end is None else _interrupted_at_the_end(plan)
    )
