"""What ``alembic stamp REV`` checks before it writes: the database holds what REV promises.

A stamp writes a revision into the bookkeeping and changes nothing else:
every later upgrade and downgrade then trusts it. So env.py refuses a stamp
(one line, nothing written) unless the live schema keeps every promise of
the chain up to REV (chat_migrations.checks.guarantees); at the baseline,
adopt's comparison decides (scripts/adopt), which judges the same promises
and says what the revisions handle.
"""

from __future__ import annotations

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from chat_migrations.checks import guarantees
from chat_migrations.checks.adopt import catalog_search_path
from chat_migrations.checks.catalog import read_catalog
from chat_migrations.schema import history

SHOWN = 3


def target(script: ScriptDirectory, revision: str | None) -> str | None:
    """The revision ``stamp`` was asked for, resolved (``head``, an id or a prefix); None for ``base``."""
    if not revision or revision == "base":
        return None
    try:
        found = script.get_revisions(revision)
    except CommandError:
        return None  # alembic itself says what is wrong with it, before anything is written
    return found[0].revision if len(found) == 1 and found[0] is not None else None


def refusal(conn: Connection, environment: str, revision: str) -> str | None:
    """Why this database may not be stamped at ``revision`` (None: it holds every promise up to it)."""
    with catalog_search_path(conn):
        unmet = guarantees.unmet(conn, read_catalog(conn), history.promised(environment, revision))
    if not unmet:
        return None
    shown = "; ".join(u.problem for u in unmet[:SHOWN]) + (f"; and {len(unmet) - SHOWN} more" if len(unmet) > SHOWN else "")
    return (
        f"cannot stamp {environment} at {revision}: the database does not hold what the revisions promise there "
        f"({len(unmet)} difference{'s' if len(unmet) != 1 else ''}: {shown}); stamp the revision it does hold "
        f"(scripts/adopt -n {environment} checks the baseline) and upgrade from there"
    )
