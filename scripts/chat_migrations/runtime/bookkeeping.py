"""The project's bookkeeping schema, ``migration_meta``: what Alembic and the revisions write beside the chat schema.

* ``alembic_version``: the revision the database is at (Alembic's own table);
* ``rollback_snapshots``: what each revision recorded so its downgrade can
  restore it (chat_migrations.runtime.snapshots);
* ``database_identity``: which environment this database belongs to, the
  marker the wrong-database guard reads (chat_migrations.runtime.identity).

It stays out of Supabase's API (only exposed schemas are served) and out of
every schema comparison. Any role may read the identity row, so the read-only
checks and a pasted SQL script can check it; only the owner writes it.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import text

SCHEMA = "migration_meta"
SNAPSHOTS = f"{SCHEMA}.rollback_snapshots"
IDENTITY = f"{SCHEMA}.database_identity"
VERSION_TABLE = f"{SCHEMA}.alembic_version"

CREATE_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
COMMENT ON SCHEMA {SCHEMA} IS
    'Alembic bookkeeping for the chat migrations: alembic_version, the state each revision recorded so its downgrade can restore it, and which environment this database is';
CREATE TABLE IF NOT EXISTS {SNAPSHOTS} (
    revision text NOT NULL,
    object_kind text NOT NULL,
    object_name text NOT NULL,
    snapshot jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (revision, object_kind, object_name)
);
-- One row: a database belongs to one environment.
CREATE TABLE IF NOT EXISTS {IDENTITY} (
    environment text NOT NULL,
    supabase_project_ref text,
    marked_at timestamptz NOT NULL DEFAULT now(),
    marked_by text NOT NULL DEFAULT current_user,
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row)
);
GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC;
GRANT SELECT ON {IDENTITY} TO PUBLIC"""



def current_revision(conn) -> str | None:
    """The revision recorded in the database, or None when it was never adopted."""
    if not conn.execute(text(f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL")).scalar():
        return None
    versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE} ORDER BY 1")).scalars().all()
    return ",".join(versions) or None


def script_directory(environment: str):
    """The environment's revisions, as ``alembic -n <environment>`` loads them (``ALEMBIC_CONFIG`` names
    another alembic.ini, as for alembic itself; each is read once per process)."""
    from chat_migrations.runtime.environments import alembic_ini

    return _script_directory(str(alembic_ini()), environment)


@lru_cache(maxsize=None)
def _script_directory(ini: str, environment: str):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(Config(ini, ini_section=environment))


def base_revision(environment: str) -> str:
    """The environment's baseline: the revision a live database is adopted at."""
    return script_directory(environment).get_base()
