"""What a statement declares: the locks it takes and whether it must run alone.

Each helper of lock_retries, indexes and not_null knows the locks of the
statements it composes, and which of them PostgreSQL refuses inside a
transaction block. It says so in comment lines before the statement (in the
--sql output too), which scripts/render-sql takes as they are instead of
deriving them from the SQL:

  -- lock: SHARE UPDATE EXCLUSIVE on table public.chat_messages (build)
  -- run alone
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"

LOCK_DECLARATION = "-- lock: "
RUN_ALONE_DECLARATION = "-- run alone"


class Hold(enum.Enum):
    """How long a declared lock is held, and what it lets through."""

    BRIEF = "brief"  # a catalog change
    NOT_VALID = "not valid"  # a constraint added without checking the existing rows
    SCAN = "scan"  # while it scans the table; reads and writes go on
    SET_NOT_NULL = "set not null"  # brief when a validated CHECK proves it, else while it scans
    BUILD = "build"  # a concurrent index build; reads and writes go on
    TRANSACTION = "transaction"  # until the transaction ends


@dataclass(frozen=True)
class DeclaredLock:
    mode: str  # ACCESS_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE
    relation: str  # schema.name
    hold: Hold
    index: bool = False  # ``relation`` is an index: the lock is on its table

    def comment(self) -> str:
        kind = "index" if self.index else "table"
        return f"{LOCK_DECLARATION}{self.mode} on {kind} {self.relation} ({self.hold.value})"


@dataclass(frozen=True)
class Declaration:
    locks: tuple[DeclaredLock, ...]
    run_alone: bool


def declare(*locks: DeclaredLock, run_alone: bool = False) -> str:
    """Comment lines before a statement: the locks it takes and whether it must run outside a transaction."""
    lines = [lock.comment() for lock in locks] + ([RUN_ALONE_DECLARATION] if run_alone else [])
    return "".join(line + "\n" for line in lines)


def read_declarations(comments: list[str]) -> tuple[Declaration | None, list[str]]:
    """What ``declare`` wrote among a statement's comment lines (None: nothing), and the other lines."""
    locks, run_alone, others = [], False, []
    for line in comments:
        if line == RUN_ALONE_DECLARATION:
            run_alone = True
        elif line.startswith(LOCK_DECLARATION):
            target, _, hold = line.removeprefix(LOCK_DECLARATION).removesuffix(")").rpartition(" (")
            mode, _, relation = target.partition(" on ")
            kind, _, name = relation.partition(" ")
            locks.append(DeclaredLock(mode, name, Hold(hold), index=kind == "index"))
        else:
            others.append(line)
    if not locks and not run_alone:
        return None, others
    return Declaration(tuple(locks), run_alone), others
