"""Comparable pictures of a database: its schema dump and its data checksums.

"Downgrade leaves no trace" and "the environments converged" are proved by
comparing these, never by exit codes.
"""

from __future__ import annotations

import difflib
import re
import subprocess

from chat_migrations.harness.cluster import pg_bindir
from chat_migrations.runtime.environments import libpq_command
from chat_migrations.runtime.session import BOOKKEEPING_SCHEMA
from chat_migrations.runtime.sqlnames import identifier
from chat_migrations.schema.tables import QUALIFIED as CHAT_TABLES

# Lines that differ between any two dumps of equal schemas: pg_dump's version
# banner and the random key of its \restrict guard (PostgreSQL 15.14+).
_NOISE = re.compile(r"^(-- Dumped (from database|by pg_dump) version .*|\\(un)?restrict .*)$")

def schema_dump(url: str) -> str:
    """``pg_dump --schema-only`` without the bookkeeping schema and without noise."""
    dbname, environment = libpq_command(url)
    result = subprocess.run(
        [str(pg_bindir() / "pg_dump"), "--schema-only", f"--exclude-schema={BOOKKEEPING_SCHEMA}", "--dbname", dbname],
        capture_output=True, text=True, env=environment,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {result.stderr.strip()}")
    return "\n".join(line for line in result.stdout.splitlines() if not _NOISE.match(line)) + "\n"


def first_difference(before: str, after: str, labels: tuple[str, str] = ("before", "after"), context: int = 3) -> str:
    """The first hunk of a unified diff, or '' when the dumps are equal."""
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), *labels, n=context, lineterm=""))
    if not diff:
        return ""
    hunk_ends = [i for i, line in enumerate(diff) if line.startswith("@@")][1:2]
    return "\n".join(diff[: hunk_ends[0]] if hunk_ends else diff)


def data_checksums(connection, tables=CHAT_TABLES) -> dict[str, tuple[int, str]]:
    """Row count and md5 of every row, in id order, per table (psycopg2 connection).

    Each row is read as JSON without its NULL values, so a column a revision
    adds (NULL in every existing row, as 104's last_read_seq) does not count
    as a change of the rows; any value written, changed or cleared does.
    """
    sums = {}
    with connection.cursor() as cur:
        for table in tables:
            cur.execute(
                "SELECT count(*), md5(coalesce(string_agg(jsonb_strip_nulls(to_jsonb(t))::text, '|' ORDER BY t.id), '')) "
                f"FROM {identifier(table)} t"
            )
            sums[table] = tuple(cur.fetchone())
    return sums
