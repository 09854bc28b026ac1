"""Loaded only when alembic runs without -n, or with a -n that names no environment.

It stops the command before anything else happens, naming the environments
that exist.
"""

import sys

from alembic.util import CommandError

from chat_migrations.runtime.environments import ConfigurationError, get_environment


def _requested_environment() -> str | None:
    args = sys.argv[1:]
    for position, arg in enumerate(args):
        if arg in ("-n", "--name") and position + 1 < len(args):
            return args[position + 1]
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
    return None


try:
    get_environment(_requested_environment())
except ConfigurationError as refusal:
    raise CommandError(str(refusal)) from None
