"""Every error the project raises for the operator, in one hierarchy.

Each message is one line, safe to print (no password), and says what to do.
A command catches ``ChatMigrationsError`` (and the driver's own errors) once,
instead of a list of its own; the subclasses say which part of the project
stopped, so a command can choose its exit code.
"""

from __future__ import annotations


class ChatMigrationsError(Exception):
    """The project stopped for a reason the operator can act on."""


# -- choosing and reaching the database ------------------------------------------
class ConfigurationError(ChatMigrationsError):
    """A problem the operator must fix before anything can run (one line)."""


class WrongDatabase(ChatMigrationsError):
    """The database is not the chosen environment's: nothing was changed."""


class IdentityUnproven(WrongDatabase):
    """Neither its URL nor a marker says which environment the database is (a server without a Supabase project)."""


# -- a migration run -------------------------------------------------------------
class MigrationRefused(ChatMigrationsError):
    """The run stopped before changing anything (one line, safe to print)."""


class LockBudgetSpent(ChatMigrationsError):
    """A lock-taking step gave up; nothing of the revision in progress was applied."""


# -- the read-only commands and SQL review --------------------------------------
class CannotRun(ChatMigrationsError):
    """The command could not do its job (exit 2); the message is one line, safe to print."""


class RenderError(ChatMigrationsError):
    """Nothing was written (one line)."""


# -- the harness -----------------------------------------------------------------
class ClusterError(ChatMigrationsError):
    """A throwaway server could not be started, reached or stopped."""


class PostgresBinariesNotFound(ChatMigrationsError):
    """No installed PostgreSQL fits the request; the message names the fix."""


class LoadError(ChatMigrationsError):
    """The load could not start (one line)."""


class SetupFailed(ChatMigrationsError):
    """The clone could not be built: the rehearsal did not run (one line)."""


class JobFailed(ChatMigrationsError):
    """A step of the local job did not hold."""
