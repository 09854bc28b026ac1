"""Which locks a migration statement takes, read from its SQL text.

``scripts/render-sql`` annotates every statement of the reviewable scripts
with the result of ``classify``; this module is the one place that knows how
PostgreSQL statements map to table locks. It reads the statement the way a
reviewer would: the command at its start, and inside a ``DO`` block every
command the block runs (its own statements, and the SQL strings it
EXECUTEs). When in doubt it reports the stronger lock, and a statement it
cannot account for is marked unknown so that a person looks at it.

It also splits a script into statements (``split_statements``), honouring
quotes, dollar quotes and comments, so a ``;`` inside a function body or a
``DO`` block does not end a statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chat_migrations.runtime.session import BOOKKEEPING_SCHEMA

BOOKKEEPING_PREFIX = f"{BOOKKEEPING_SCHEMA}."

# --- lexing ------------------------------------------------------------------

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass(frozen=True)
class Segment:
    """A piece of a script: ``code``, a ``string`` literal, a quoted ``identifier``, a ``dollar``-quoted body or a ``comment``."""

    kind: str
    start: int  # offsets of the whole piece in the script, quotes included
    end: int
    text: str  # a string's value (quotes removed, '' undoubled), a body's content, else the source


def segments(sql: str) -> list[Segment]:
    """The script cut into code, quoted strings, dollar-quoted bodies and comments."""
    out: list[Segment] = []
    code_start = i = 0
    n = len(sql)

    def piece(kind: str, start: int, end: int, text: str | None = None) -> None:
        if code_start < start:
            out.append(Segment("code", code_start, start, sql[code_start:start]))
        out.append(Segment(kind, start, end, sql[start:end] if text is None else text))

    while i < n:
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            piece("comment", i, end)
        elif sql.startswith("/*", i):
            end = _comment_end(sql, i)
            piece("comment", i, end)
        elif sql[i] in "'\"":
            end = _quoted_end(sql, i)
            if sql[i] == "'":
                piece("string", i, end, sql[i + 1 : end - 1].replace("''", "'"))
            else:
                piece("identifier", i, end)
        elif sql[i] == "$" and (i == 0 or not _is_word(sql[i - 1])) and (match := _DOLLAR_TAG.match(sql, i)):
            body_end = sql.find(match.group(0), match.end())
            if body_end < 0:
                raise ValueError(f"unterminated dollar quote {match.group(0)} at line {_line(sql, i)}")
            end = body_end + len(match.group(0))
            piece("dollar", i, end, sql[match.end() : body_end])
        else:
            i += 1
            continue
        i = code_start = end
    if code_start < n:
        out.append(Segment("code", code_start, n, sql[code_start:]))
    return out


def _line(sql: str, offset: int) -> int:
    return sql.count("\n", 0, offset) + 1


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def _comment_end(sql: str, start: int) -> int:
    depth, j = 0, start
    while j < len(sql):
        if sql.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif sql.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    raise ValueError(f"unterminated /* comment at line {_line(sql, start)}")


def _quoted_end(sql: str, start: int) -> int:
    """Offset just past the quote closing the string or identifier opened at ``start``."""
    quote = sql[start]
    # E'...' strings take backslash escapes.
    backslash_escapes = quote == "'" and start > 0 and sql[start - 1] in "eE" and (start < 2 or not _is_word(sql[start - 2]))
    j = start + 1
    while j < len(sql):
        if backslash_escapes and sql[j] == "\\":
            j += 2
        elif sql[j] == quote:
            if sql.startswith(quote * 2, j):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    kind = "string" if quote == "'" else "quoted identifier"
    raise ValueError(f"unterminated {kind} at line {_line(sql, start)}")


def split_statements(script: str) -> list[str]:
    """The statements of a script, each without its terminating semicolon.

    Comment lines before a statement stay with it; a chunk holding only
    comments (after the last statement, say) is returned as it is.
    """
    statements, start = [], 0
    for segment in segments(script):
        if segment.kind != "code":
            continue
        for offset in range(segment.start, segment.end):
            if script[offset] == ";":
                statements.append(script[start:offset].strip())
                start = offset + 1
    statements.append(script[start:].strip())
    return [statement for statement in statements if statement]


def leading_comments(statement: str) -> tuple[list[str], str]:
    """The full-line comments before a statement, and the statement without them."""
    comments, lines = [], statement.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        line = lines.pop(0).strip()
        if line:
            comments.append(line)
    return comments, "\n".join(lines).strip()


# --- classification ----------------------------------------------------------

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE = "SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"

BRIEF = "brief (catalog change only)"
SCANS_ONLINE = "while it scans the table; reads and writes go on"


@dataclass(frozen=True)
class Lock:
    mode: str
    target: str
    duration: str

    def __str__(self) -> str:
        return f"{self.mode} on {self.target}, {self.duration}"


@dataclass(frozen=True)
class Classification:
    """The locks a statement takes; ``note`` says what it is when it locks no table."""

    locks: tuple[Lock, ...] = ()
    note: str = ""
    run_alone: bool = False  # refused inside a transaction block
    known: bool = True

    def describe(self) -> str:
        if not self.known:
            return "UNKNOWN: no rule for this statement; review its locks by hand"
        if not self.locks:
            return f"no table lock ({self.note})"
        locks = "; ".join(dict.fromkeys(str(lock) for lock in self.locks))
        return f"{locks} (otherwise {self.note})" if self.note else locks


UNKNOWN = Classification(known=False)
FUNCTIONS_ONLY = Classification(note="function definitions only")
PRIVILEGES_ONLY = Classification(note="privileges only")


def _name(group: str) -> str:
    """A possibly schema-qualified, possibly quoted name, captured as ``group``."""
    part = r'(?:"[^"]+"|[\w$]+)'
    return rf"(?P<{group}>{part}(?:\.{part})?)"


def _pattern(regex: str) -> re.Pattern:
    return re.compile(regex, re.IGNORECASE | re.DOTALL)


_TRANSACTION = _pattern(r"(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END)\b")
_SESSION = _pattern(r"(SET|RESET)\b|SELECT\s+set_config\s*\(")
_RUN_ALONE = _pattern(
    r"(CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY|DROP\s+INDEX\s+CONCURRENTLY|REINDEX\b.*\bCONCURRENTLY"
    r"|VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM|CREATE\s+TABLESPACE|DROP\s+TABLESPACE)\b"
)
_CREATE_INDEX = _pattern(
    r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?.*?\bON\s+(ONLY\s+)?" + _name("table")
)
_DROP_INDEX = _pattern(r"DROP\s+INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?(IF\s+EXISTS\s+)?" + _name("index"))
_ALTER_TABLE = _pattern(r"ALTER\s+TABLE\s+(IF\s+EXISTS\s+)?(ONLY\s+)?" + _name("table") + r"\s+(?P<actions>.*)")
_POLICY = _pattern(r"(CREATE|DROP|ALTER)\s+POLICY\s+(IF\s+EXISTS\s+)?\S+\s+ON\s+" + _name("table"))
_FUNCTION_DDL = _pattern(
    r"(CREATE\s+(OR\s+REPLACE\s+)?|DROP\s+|ALTER\s+|COMMENT\s+ON\s+)(FUNCTION|PROCEDURE|ROUTINE)\b"
    r"|(GRANT|REVOKE)\b[^;]*?\bON\s+(ALL\s+)?(FUNCTION|PROCEDURE|ROUTINE)S?\b"
)
_PRIVILEGES = _pattern(r"(GRANT|REVOKE)\b")
_SCHEMA_DDL = _pattern(r"(CREATE\s+SCHEMA|COMMENT\s+ON\s+SCHEMA)\b")
_COMMENT_ON_RELATION = _pattern(r"COMMENT\s+ON\s+(TABLE|COLUMN|INDEX)\s+" + _name("table"))
_CREATE_TABLE = _pattern(r"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?" + _name("table"))
_DML = _pattern(r"(INSERT\s+INTO|UPDATE(\s+ONLY)?|DELETE\s+FROM(\s+ONLY)?)\s+" + _name("table"))
# (A WITH may hide a data-modifying statement: it is left unknown.)
_SELECT = _pattern(r"(SELECT|PERFORM)\b")
_LOCK_TABLE = _pattern(r"LOCK\s+(TABLE\s+)?(?P<tables>.+?)(\s+IN\s+(?P<mode>[A-Z ]+?)\s+MODE)?(\s+NOWAIT)?\s*$")
_DO = _pattern(r"DO\b")

# ALTER TABLE actions; the first that matches wins, so NOT VALID forms come first.
# A "?" stands for a part a DO block computes at run time.
_ALTER_ACTIONS: list[tuple[re.Pattern, str, str]] = [
    (_pattern(r"ADD\s+(CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\b.*\bNOT\s+VALID\b"), SHARE_ROW_EXCLUSIVE,
     BRIEF + ", NOT VALID skips the existing rows"),
    (_pattern(r"ADD\s+(CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\b"), SHARE_ROW_EXCLUSIVE,
     "while it checks every existing row; blocks writes"),
    (_pattern(r"ADD\s+(CONSTRAINT\s+\S+\s+)?CHECK\b.*\bNOT\s+VALID\b"), ACCESS_EXCLUSIVE,
     BRIEF + ", NOT VALID skips the scan"),
    (_pattern(r"ADD\s+(CONSTRAINT\s+\S+\s+)?CHECK\b"), ACCESS_EXCLUSIVE,
     "while it scans every row; blocks reads and writes"),
    (_pattern(r"VALIDATE\s+CONSTRAINT\b"), SHARE_UPDATE_EXCLUSIVE, SCANS_ONLINE),
    (_pattern(r"ALTER\s+(COLUMN\s+)?\S+\s+SET\s+NOT\s+NULL\b"), ACCESS_EXCLUSIVE,
     "brief when a validated CHECK (column IS NOT NULL) proves it, otherwise while it scans every row"),
    (_pattern(r"ALTER\s+(COLUMN\s+)?\S+\s+DROP\s+NOT\s+NULL\b"), ACCESS_EXCLUSIVE, BRIEF),
    (_pattern(r"DROP\s+CONSTRAINT\b"), ACCESS_EXCLUSIVE, BRIEF),
    # A column with no DEFAULT (nor NOT NULL, identity or generated value) is a catalog change; any other form
    # may rewrite or scan the table, and stays unknown.
    (_pattern(r"ADD\s+(COLUMN\s+)?(IF\s+NOT\s+EXISTS\s+)?\S+\s+(?!.*\b(DEFAULT|NOT\s+NULL|GENERATED|CHECK|PRIMARY|UNIQUE|REFERENCES)\b)"
              r"[\w\s.\[\]]+$"), ACCESS_EXCLUSIVE, BRIEF + ", a column without a default: no rewrite, no scan"),
    (_pattern(r"DROP\s+COLUMN\b"), ACCESS_EXCLUSIVE, BRIEF + ", the column is only marked dropped: no rewrite"),
    (_pattern(r"REPLICA\s+IDENTITY\b"), ACCESS_EXCLUSIVE, BRIEF),
    (_pattern(r"((ENABLE|DISABLE|FORCE|NO\s+FORCE|\?)\s+)?ROW\s+LEVEL\s+SECURITY\b"), ACCESS_EXCLUSIVE, BRIEF),
]


def classify(statement: str) -> Classification:
    """The locks ``statement`` (one statement, comments allowed) takes."""
    code = _masked(statement)
    if not code:
        return Classification(note="comment")
    if _TRANSACTION.match(code):
        return Classification(note="transaction control")
    if _DO.match(code):
        return _classify_do(statement)
    if _SESSION.match(code):
        return Classification(note="session setting")
    return _classify_command(code)


def _classify_command(code: str) -> Classification:
    """One command, as code (comments removed; literals may be emptied)."""
    if _SESSION.match(code):  # also SET ROLE / RESET ROLE inside a DO block: no table lock
        return Classification(note="session setting")
    if match := _CREATE_INDEX.match(code):
        table = match.group("table")
        if match.group("concurrently"):
            return Classification(
                (Lock(SHARE_UPDATE_EXCLUSIVE, table, "while it builds; reads and writes go on"),), run_alone=True
            )
        return Classification((Lock(SHARE, table, "while it builds; blocks writes"),))
    if match := _DROP_INDEX.match(code):
        target = f"the table of {match.group('index')}"
        if match.group("concurrently"):
            return Classification(
                (Lock(SHARE_UPDATE_EXCLUSIVE, target, "while it waits for running queries; reads and writes go on"),),
                run_alone=True,
            )
        return Classification((Lock(ACCESS_EXCLUSIVE, target, BRIEF),))
    if match := _ALTER_TABLE.match(code):
        return _classify_alter_table(match.group("table"), match.group("actions"))
    if match := _POLICY.match(code):
        return Classification((Lock(ACCESS_EXCLUSIVE, match.group("table"), BRIEF),))
    if _FUNCTION_DDL.match(code):
        return FUNCTIONS_ONLY
    if _PRIVILEGES.match(code):
        return PRIVILEGES_ONLY
    if _SCHEMA_DDL.match(code):
        return Classification(note="schema catalog only")
    if match := _COMMENT_ON_RELATION.match(code):
        table = match.group("table")
        return Classification((Lock(SHARE_UPDATE_EXCLUSIVE, table, "brief; reads and writes go on"),))
    if match := _CREATE_TABLE.match(code):
        return Classification(note=f"creates {match.group('table')}")
    if match := _LOCK_TABLE.match(code):
        mode = " ".join((match.group("mode") or ACCESS_EXCLUSIVE).upper().split())
        tables = [re.sub(r"(?i)^ONLY\s+", "", table.strip()) for table in match.group("tables").split(",")]
        return Classification(tuple(Lock(mode, table, "until the transaction ends") for table in tables))
    if match := _DML.match(code):
        table = match.group("table")
        duration = "bookkeeping rows only" if table.startswith(BOOKKEEPING_PREFIX) else "the rows it writes; blocks no reads"
        return Classification((Lock(ROW_EXCLUSIVE, table, duration),))
    if _SELECT.match(code):
        return Classification(note="reads only")
    return Classification(run_alone=bool(_RUN_ALONE.match(code)), known=False)


def _classify_alter_table(table: str, actions: str) -> Classification:
    locks = []
    for action in _top_level_split(actions, ","):
        rule = next(((mode, duration) for pattern, mode, duration in _ALTER_ACTIONS if pattern.match(action.strip())), None)
        if rule is None:
            return UNKNOWN
        locks.append(Lock(rule[0], table, rule[1]))
    return Classification(tuple(locks))


def _top_level_split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside parentheses."""
    parts, depth, start = [], 0, 0
    for index, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


# --- DO blocks -----------------------------------------------------------------

# A command in a DO block's own code (after IF ... THEN, say).
_COMMAND_START = _pattern(
    r"\b(ALTER\s+TABLE|CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX|INSERT\s+INTO|DELETE\s+FROM"
    r"|UPDATE\s+(ONLY\s+)?[\w.\"]+\s+SET|LOCK\s+TABLE|GRANT|REVOKE|(CREATE|DROP|ALTER)\s+POLICY"
    r"|COMMENT\s+ON|(CREATE(\s+OR\s+REPLACE)?|DROP|ALTER)\s+(FUNCTION|PROCEDURE|ROUTINE))\b"
)
# A word that starts a command: one no rule read makes the block unknown.
_COMMAND_WORD = _pattern(
    r"\b(ALTER|CREATE|DROP|TRUNCATE|LOCK|GRANT|REVOKE|COMMENT|REINDEX|VACUUM|CLUSTER|REFRESH|INSERT|UPDATE|DELETE)\b"
)
_EXECUTE = _pattern(r"\bEXECUTE\b")
_FORMAT_CALL = _pattern(r"\s*format\s*\(")
_FORMAT_PLACEHOLDER = re.compile(r"%[sIL]")
_READS_SNAPSHOTS = _pattern(r"\bFROM\s+" + re.escape(BOOKKEEPING_PREFIX) + r"rollback_snapshots\b")


def _classify_do(statement: str) -> Classification:
    """The locks of every command a DO block runs: its own, and the SQL strings it EXECUTEs.

    An EXECUTEd string is rebuilt from its literals, with "?" for each part
    computed at run time. EXECUTE of a value that holds no literal at all is
    read as the block restoring definitions recorded in
    migration_meta.rollback_snapshots when the block reads that table (the
    same kind of objects, on the same tables, as the block's other commands);
    anywhere else it makes the block unknown, as does any other command word
    no rule read.
    """
    body = next((s.text for s in segments(statement) if s.kind == "dollar"), None)
    if body is None:
        return UNKNOWN
    found: list[Classification] = []
    restores_recorded = False
    for step in _steps(body):
        code = " ".join("''" if s.kind == "string" else s.text for s in step if s.kind in ("code", "identifier", "string"))
        execute = _EXECUTE.search(code)
        if execute:
            command = _executed_text(step)
            if command.strip(" ?"):
                found.extend(_classify_commands(command))
            elif _READS_SNAPSHOTS.search(_masked(body)):
                restores_recorded = True
            else:
                found.append(UNKNOWN)
            head = code[: execute.start()]
        else:
            command = _COMMAND_START.search(code)
            if command:
                found.append(_classify_command(code[command.start() :]))
            head = code[: command.start()] if command else code
        if _COMMAND_WORD.search(head):
            found.append(UNKNOWN)
    if any(not c.known for c in found):
        return UNKNOWN
    locks = tuple(lock for c in found for lock in c.locks)
    notes = sorted({c.note for c in found if c.note})
    if restores_recorded:
        notes.append("re-runs the definitions recorded in its snapshot")
    if not notes and not locks:
        notes = ["checks only: reads the catalog, may stop the script"]
    return Classification(locks, note=", ".join(notes))


def _classify_commands(text: str) -> list[Classification]:
    """Each statement of an EXECUTEd string (a definition may carry its GRANTs and COMMENT)."""
    try:
        return [_classify_command(_masked(command)) for command in split_statements(text)]
    except ValueError:  # not SQL a reader can follow
        return [UNKNOWN]


def _steps(body: str) -> list[list[Segment]]:
    """The body's segments grouped into PL/pgSQL statements (split at code-level ';')."""
    steps: list[list[Segment]] = [[]]
    for segment in segments(body):
        if segment.kind != "code":
            steps[-1].append(segment)
            continue
        parts = segment.text.split(";")
        for index, part in enumerate(parts):
            if index:
                steps.append([])
            steps[-1].append(Segment("code", segment.start, segment.end, part))
    return steps


def _executed_text(step: list[Segment]) -> str:
    """The SQL an ``EXECUTE expr`` step runs: its literal operands, "?" for each computed one.

    ``expr`` is cut into the operands of its top-level ``||`` (parentheses and
    CASE ... END hold theirs together); an operand that is one string literal
    is kept, any other becomes "?". For ``EXECUTE format('template', ...)`` it
    is the template with its placeholders as "?".
    """
    tail: list[Segment] = []
    for index, segment in enumerate(step):
        if segment.kind == "code" and (match := _EXECUTE.search(segment.text)):
            rest = segment.text[match.end() :]
            tail = [Segment("code", 0, 0, rest), *step[index + 1 :]]
            if _FORMAT_CALL.match(rest):
                template = next((s.text for s in tail if s.kind == "string"), "")
                return " ".join(_FORMAT_PLACEHOLDER.sub(" ? ", template).split())
            break
    operands: list[list[Segment]] = [[]]
    depth = 0
    for segment in tail:
        if segment.kind == "comment":
            continue
        if segment.kind != "code":
            operands[-1].append(segment)
            continue
        for token in _EXPRESSION_TOKEN.finditer(segment.text):
            word = token.group(0).upper()
            if depth == 0 and word == "||":
                operands.append([])
                continue
            if depth == 0 and word in ("USING", "INTO"):
                break
            depth += word in ("(", "CASE") and 1 or word in (")", "END") and -1 or 0
            operands[-1].append(Segment("code", 0, 0, token.group(0)))
    parts = [
        operand[0].text if len(operand) == 1 and operand[0].kind == "string" else " ? "
        for operand in operands
        if operand
    ]
    return " ".join("".join(parts).split())


_EXPRESSION_TOKEN = _pattern(r"\|\||[()]|\b(CASE|END|USING|INTO)\b|[^\s|()]+|\|")


def _masked(sql: str) -> str:
    """The statement's code on one line: comments out, string literals and bodies emptied."""
    parts = []
    for segment in segments(sql):
        parts.append({"code": segment.text, "identifier": segment.text, "string": "''", "dollar": "$$"}.get(segment.kind, " "))
    return " ".join("".join(parts).split())
