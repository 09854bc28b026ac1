"""The wrong-database guard: staging's revisions never touch prod, or the reverse.

A database's identity is established without superuser rights, two ways:

* a Supabase URL names its project: ``db.<ref>.supabase.co`` as the host, or
  ``postgres.<ref>`` as the user name behind the pooler; each environment's
  ``supabase_project_ref`` is configured in its alembic.ini section;
* a marker on the database itself, the per-database setting
  ``migration.environment`` (``ALTER DATABASE ... SET``), which any role can
  read with ``current_setting`` and which a SQL script can check, so the
  reviewed ``--sql`` output carries the same guard.

A database confirmed by its URL gets the marker written on the first run that
changes something, so scripts rendered for it later are guarded too.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from .environments import Environment

MARKER_SETTING = "migration.environment"

_SUPABASE_HOST = re.compile(r"(?:db\.)?(?P<ref>[a-z0-9]{20})\.supabase\.(?:co|com|net|in)")
_POOLER_USER = re.compile(r"[^.]+\.(?P<ref>[a-z0-9]{20})")


class WrongDatabase(Exception):
    """The database is not the chosen environment's: nothing was changed."""


def supabase_ref_of(url: URL) -> str | None:
    host_match = _SUPABASE_HOST.fullmatch(url.host or "")
    if host_match:
        return host_match.group("ref")
    user_match = _POOLER_USER.fullmatch(url.username or "")
    return user_match.group("ref") if user_match else None


def check_url(env: Environment, environments: dict[str, Environment], url: URL) -> bool:
    """True when the URL names env's own Supabase project; raises when it names another."""
    ref = supabase_ref_of(url)
    if ref is None:
        return False
    if ref == env.supabase_project_ref:
        return True
    owner = next((e.name for e in environments.values() if e.supabase_project_ref == ref), None)
    expected = env.supabase_project_ref or "none configured"
    if owner:
        raise WrongDatabase(
            f"wrong database: chose {env.name} (Supabase project {expected}) "
            f"but the URL is {owner}'s database (project {ref}); nothing was changed"
        )
    raise WrongDatabase(
        f"wrong database: chose {env.name} (Supabase project {expected}) but the URL "
        f"names project {ref}, which no environment in alembic.ini claims; nothing was changed"
    )


def read_marker(connection: Connection) -> str | None:
    value = connection.execute(
        text("SELECT current_setting(:name, true)"), {"name": MARKER_SETTING}
    ).scalar()
    return value or None


def verify(
    env: Environment, environments: dict[str, Environment], url: URL, connection: Connection
) -> bool:
    """Raise WrongDatabase unless this is env's database.

    Returns True when the marker is missing but the URL proved the identity,
    i.e. the marker should be written.
    """
    confirmed_by_url = check_url(env, environments, url)
    marker = read_marker(connection)
    if marker == env.name:
        return False
    if marker is not None:
        raise WrongDatabase(
            f"wrong database: chose {env.name} but this database is marked "
            f"{MARKER_SETTING}={marker!r}; nothing was changed"
        )
    if confirmed_by_url:
        return True
    database = connection.execute(text("SELECT current_database()")).scalar()
    raise WrongDatabase(
        f"cannot tell which environment database {database!r} is: its URL names no Supabase "
        f"project and it has no marker; if it really is {env.name}'s, mark it once with "
        f"ALTER DATABASE {database} SET {MARKER_SETTING} = '{env.name}'"
    )


def mark_database_sql(env_name: str) -> str:
    return (
        "DO $mark$ BEGIN EXECUTE format('ALTER DATABASE %I SET "
        f"{MARKER_SETTING} = %L', current_database(), '{env_name}'); END $mark$"
    )


def offline_guard_sql(env: Environment) -> str:
    """The guard as SQL, the first statement of every rendered script."""
    ref = f" (Supabase project {env.supabase_project_ref})" if env.supabase_project_ref else ""
    return f"""DO $guard$
BEGIN
    IF coalesce(current_setting('{MARKER_SETTING}', true), '') <> '{env.name}' THEN
        RAISE EXCEPTION 'wrong database: this script is for {env.name}{ref} but this database is marked %; nothing was changed',
            coalesce(nullif(current_setting('{MARKER_SETTING}', true), ''), 'with no environment (run the online alembic command once, or ALTER DATABASE ... SET {MARKER_SETTING})');
    END IF;
END
$guard$"""
