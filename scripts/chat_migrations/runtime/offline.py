"""Where an offline (``--sql``) script starts, and the guard that checks the database is there.

A script is written for one starting revision: run on a database elsewhere
(a second run of a rollback, a file skipped or run twice) it would replay its
revisions over a schema they do not fit, and psql would exit 0. So every
script, and every file scripts/render-sql writes, checks right after the
wrong-database guard that ``migration_meta.alembic_version`` holds the
revision it starts from, and stops before its first change otherwise.

The range is checked before anything is printed: ``upgrade head --sql``
without one would script the baseline's CREATE TABLEs (only ``base:head``
asks for that on purpose), and a start that is not a revision of this
environment (the other environment's baseline) would print half a script.

The same guard stops an upgrade script up front where a pending revision
would meet, under the name of an index it builds, a valid index of another
definition: online that revision converges it with a concurrent rebuild, which
a script cannot do (CREATE INDEX CONCURRENTLY is not allowed in a DO block),
and the revision's own check would otherwise stop the script in its middle,
after the revisions before it committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from chat_migrations.errors import MigrationRefused
from chat_migrations.runtime import bookkeeping, promises
from chat_migrations.runtime.snapshots import literal

# The guard's dollar tag: scripts/render-sql finds it after the wrong-database guard.
TAG = "$position$"


def starting_revision(script: ScriptDirectory, environment: str, command: str, named: str | None) -> str | None:
    """The revision id the script starts from (None: from nothing), or refuse before anything is printed.

    ``named`` is the start of the range the command was given: None without
    one, ``"base"`` when it asks to start from nothing.
    """
    baseline = script.get_base() or "base"
    if named is None:
        if command == "upgrade":
            raise MigrationRefused(
                f"upgrade --sql needs the revision the database is at: name the range, e.g. "
                f"alembic -n {environment} upgrade {baseline}:head --sql (base:head only for an empty database: "
                "it scripts the baseline's CREATE TABLEs); nothing was printed"
            )
        return None
    if named == "base":
        return None
    try:
        return script.get_revision(named).revision
    except (CommandError, AssertionError):
        history = [revision.revision for revision in script.walk_revisions("base", "heads")][::-1]
        raise MigrationRefused(
            f"--sql range starts at {named!r}, which is not a revision of {environment} "
            f"({', '.join(history)}): name the revision the database is at "
            f"(alembic -n {environment} current); nothing was printed"
        ) from None


def pending_upgrades(script: ScriptDirectory, start: str | None, destination: str) -> list[Script]:
    """The revisions an upgrade from ``start`` to ``destination`` runs, oldest first; none for a downgrade.

    Told by the revisions, not the command's name: called through alembic's
    API (scripts/render-sql), env.py does not know which command runs.
    """
    try:
        return list(script.iterate_revisions(destination, start or "base"))[::-1]
    except RevisionError:  # destination is not above start: a downgrade
        return []


def guard_sql(environment: str, start: str | None, *, upgrades: Iterable[Script] = ()) -> str:
    """The DO block that stops the script unless the database is at ``start`` (and no index needs converging)."""
    version = bookkeeping.VERSION_TABLE
    expected = f"at {start}" if start else "with no revision recorded"
    mismatch = f"found IS DISTINCT FROM {literal(start)}" if start else "found IS NOT NULL"
    lines = [
        f"DO {TAG}",
        "DECLARE",
        "    found text;",
        "    redefined text;",
        "    last_rebuilder text;",
        "BEGIN",
        f"    IF to_regclass({literal(version)}) IS NOT NULL THEN",
        f"        SELECT string_agg(version_num, ',' ORDER BY version_num) INTO found FROM {version};",
        "    END IF;",
        f"    IF {mismatch} THEN",
        f"        RAISE EXCEPTION 'expected {environment} {expected} (where this script starts), found %: see where it "
        f"stands (alembic -n {environment} current) and run the script or rendered file that starts there; "
        "nothing was changed',",
        "            coalesce(found, 'no revision recorded');",
        "    END IF;",
    ]
    rebuilt = _rebuilt(upgrades)
    if rebuilt:
        values = ",\n            ".join(
            f"({order}, {literal(index.qualified_name)}, {literal(index.definition)}, {literal(revision)})"
            for order, (index, revision) in enumerate(rebuilt)
        )
        lines += [
            "    SELECT string_agg(format('index %s is %s, which %s rebuilds concurrently', wanted.name,",
            "                             pg_get_indexdef(i.indexrelid), wanted.revision), '; ' ORDER BY wanted.n),",
            "           (array_agg(wanted.revision ORDER BY wanted.n DESC))[1]",
            "        INTO redefined, last_rebuilder",
            f"        FROM (VALUES {values}) AS wanted(n, name, definition, revision)",
            "        JOIN pg_index i ON i.indexrelid = to_regclass(wanted.name)",
            "        WHERE i.indisvalid AND pg_get_indexdef(i.indexrelid) <> wanted.definition;",
            "    IF redefined IS NOT NULL THEN",
            "        RAISE EXCEPTION '%: only the online command converges an index that exists with another definition; "
            f"run alembic -n {environment} upgrade % (without --sql), then the script from there "
            f"(alembic -n {environment} upgrade % --sql, or the rendered upgrade files after %''s); nothing was changed',",
            # Not "%:head" in the text: SQLAlchemy would read ":head" as a bind parameter.
            "            redefined, last_rebuilder, format('%s:%s', last_rebuilder, 'head'), last_rebuilder;",
            "    END IF;",
        ]
    lines += ["END", TAG]
    return "\n".join(lines)


def _rebuilt(upgrades: Iterable[Script]) -> list[tuple[promises.Index, str]]:
    """(index, the first pending revision that declares it), in upgrade order: the indexes the upgrade builds.

    Read from each revision's own ``promises``. A baseline builds from nothing
    (a live index of its name would stop its plain CREATE INDEX anyway).
    """
    found: dict[tuple, tuple[promises.Index, str]] = {}
    for script in upgrades:
        declared = getattr(script.module, "promises", None)
        if script.down_revision is None or declared is None:
            continue
        for item in declared.items:
            if isinstance(item, promises.Index) and item.key not in found:
                found[item.key] = (item, script.revision)
    return list(found.values())
