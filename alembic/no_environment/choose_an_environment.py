"""Loaded only when alembic runs without -n: stop before anything else happens."""

from alembic.util import CommandError

from chat_migrations.environments import get_environment

# Raises the one-line "no environment chosen: pass -n prod or -n staging".
try:
    get_environment(None)
except Exception as refusal:  # ConfigurationError; keep this module dependency-light
    raise CommandError(str(refusal)) from None
