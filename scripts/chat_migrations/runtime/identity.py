"""The wrong-database guard: staging's revisions never touch prod, or the reverse.

A database's identity is established without superuser rights, two ways:

* a Supabase URL names its project: ``db.<ref>.supabase.co`` as the host, or
  ``postgres.<ref>`` as the user name behind the pooler; each environment's
  ``supabase_project_ref`` is configured in its alembic.ini section;
* a marker in the database itself: the one row of
  ``migration_meta.database_identity``, which the database owner writes
  (hosted Supabase refuses ``ALTER DATABASE ... SET`` of a custom parameter
  to its customers, so a setting cannot be the marker), any role can read,
  and a SQL script can check, so the ``--sql`` output and every rendered file
  carry the same guard.

A database confirmed by its URL gets the marker written by the first command
that changes something, so scripts rendered for it later are guarded too. A
database neither can prove (a local or self-hosted server) is marked once by
the operator's explicit ``-x mark_as=<environment>``.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from chat_migrations.runtime import bookkeeping
from chat_migrations.runtime.environments import Environment
from chat_migrations.errors import IdentityUnproven, WrongDatabase

MARKER = bookkeeping.IDENTITY

_SUPABASE_HOST = re.compile(r"(?:db\.)?(?P<ref>[a-z0-9]{20})\.supabase\.(?:co|com|net|in)")
_POOLER_USER = re.compile(r"[^.]+\.(?P<ref>[a-z0-9]{20})")


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


# A plain SELECT would fail (and abort the transaction) where the schema does
# not exist yet; to_regclass tells first, in a statement of its own.
_MARKER_PRESENT_SQL = f"SELECT to_regclass('{MARKER}') IS NOT NULL"


def read_marker(connection: Connection) -> str | None:
    if not connection.execute(text(_MARKER_PRESENT_SQL)).scalar():
        return None
    return connection.execute(text(f"SELECT environment FROM {MARKER}")).scalar()


def verify(
    env: Environment,
    environments: dict[str, Environment],
    url: URL,
    connection: Connection,
    *,
    mark_as: str | None = None,
) -> bool:
    """Raise WrongDatabase unless this is env's database.

    Returns True when the marker is missing but the identity is proved (by
    the URL, or by the operator's ``mark_as`` naming this environment), i.e.
    the marker should be written by a command that changes something.
    """
    confirmed_by_url = check_url(env, environments, url)
    if mark_as is not None and mark_as != env.name:
        raise WrongDatabase(
            f"-x mark_as={mark_as} does not name the chosen environment {env.name}; nothing was changed"
        )
    marker = read_marker(connection)
    if marker == env.name:
        return False
    if marker is not None:
        raise WrongDatabase(
            f"wrong database: chose {env.name} but this database is marked as {marker!r} "
            f"({MARKER}); nothing was changed"
        )
    if confirmed_by_url or mark_as == env.name:
        return True
    database = connection.execute(text("SELECT current_database()")).scalar()
    raise IdentityUnproven(
        f"cannot tell which environment database {database!r} is: its URL names no Supabase "
        f"project and it has no marker ({MARKER}); if it really is {env.name}'s, say so once: "
        f"alembic -n {env.name} -x mark_as={env.name} stamp <revision> (or upgrade); nothing was changed"
    )


def mark_sql(env: Environment) -> str:
    """Write the marker (the bookkeeping schema must exist); a marker already there is kept."""
    ref = "NULL" if env.supabase_project_ref is None else f"'{env.supabase_project_ref}'"
    return (
        f"INSERT INTO {MARKER} (environment, supabase_project_ref) VALUES ('{env.name}', {ref}) "
        "ON CONFLICT (one_row) DO NOTHING"
    )


def describe_marker(env_name: str) -> str:
    return f"marked as {env_name!r} ({MARKER})"


def offline_guard_sql(env: Environment) -> str:
    """The guard as SQL, the first statement of every rendered script."""
    ref = f" (Supabase project {env.supabase_project_ref})" if env.supabase_project_ref else ""
    return f"""DO $guard$
DECLARE
    marked text;
BEGIN
    IF to_regclass('{MARKER}') IS NOT NULL THEN
        SELECT environment INTO marked FROM {MARKER};
    END IF;
    IF marked IS DISTINCT FROM '{env.name}' THEN
        RAISE EXCEPTION 'wrong database: this script is for {env.name}{ref} but this database is %; nothing was changed',
            coalesce('marked as ' || quote_literal(marked), 'not marked (run the online alembic command once: it writes {MARKER})');
    END IF;
END
$guard$"""
