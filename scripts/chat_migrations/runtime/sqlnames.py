"""Identifiers into SQL text, quoted by PostgreSQL's rules (SQLAlchemy's preparer).

Names the project builds statements from are its own, but a live database can
hold a name that needs quotes (a mixed-case column, a reserved word), and an
unquoted one would then mean another object or fail to parse.
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql

_PREPARER = postgresql.dialect().identifier_preparer


def identifier(name: str) -> str:
    """``name`` quoted where it must be; a dotted name (schema.table) part by part."""
    return ".".join(_PREPARER.quote(part) for part in name.split("."))
