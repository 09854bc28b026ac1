"""Which locks a migration statement takes, read with PostgreSQL's own parser.

``scripts/render-sql`` annotates every statement of the reviewable scripts
with its ``Classification``. A statement that the online DDL emitted says so
itself: the ``-- lock:`` and ``-- run alone`` lines before it
(chat_migrations.runtime.lock_declarations.declare) are taken as they are. Any
other statement is parsed with pglast (libpg_query, the server's grammar) and
classified by its parse tree: the command, and for a ``DO`` block every
command its PL/pgSQL body runs (its own statements, and the SQL strings it
EXECUTEs, rebuilt from their literals). When in doubt it reports the
stronger lock, and a statement it cannot account for is marked unknown so
that a person looks at it.

It also splits a script into statements (``split_statements``), the comment
lines before each kept with it.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass

from pglast import ast, enums, parse_plpgsql, parse_sql, parser, visitors
from pglast.stream import RawStream

from chat_migrations.runtime import lock_declarations
from chat_migrations.runtime.session import BOOKKEEPING_SCHEMA

# --- splitting -----------------------------------------------------------------

_SEMICOLON = "ASCII_59"
_NOT_CODE = frozenset({"SQL_COMMENT", "C_COMMENT", "SCONST", "USCONST", "BCONST", "XCONST"})


def _tokens(text: str) -> list[parser.Token]:
    try:
        return parser.scan(text)
    except parser.ParseError as error:
        raise ValueError(str(error)) from None


def split_statements(script: str) -> list[str]:
    """The statements of a script, each without its terminating semicolon.

    Comment lines before a statement stay with it; a chunk holding only
    comments (after the last statement, say) is returned as it is.
    """
    try:
        slices = parser.split(script, with_parser=True, only_slices=True)
    except parser.ParseError as error:
        raise ValueError(str(error)) from None
    chunks, end = [], 0
    for piece in slices:
        chunks.append(_after_semicolons(script[end : piece.start]) + script[piece])
        end = piece.stop
    chunks.append(_after_semicolons(script[end:]))
    return [chunk.strip() for chunk in chunks if chunk.strip()]


def _after_semicolons(gap: str) -> str:
    """What follows the last statement terminator in the text between two statements (comments, blanks)."""
    ends = [token.end + 1 for token in _tokens(gap) if token.name == _SEMICOLON]
    return gap[ends[-1] :] if ends else gap


def code_only(sql: str) -> str:
    """``sql`` with its comments and string literals blanked out (offsets kept)."""
    text = list(sql)
    for token in _tokens(sql):
        if token.name in _NOT_CODE:
            text[token.start : token.end + 1] = " " * (token.end + 1 - token.start)
    return "".join(text)


def leading_comments(statement: str) -> tuple[list[str], str]:
    """The full-line comments before a statement, and the statement without them."""
    comments, lines = [], statement.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        line = lines.pop(0).strip()
        if line:
            comments.append(line)
    return comments, "\n".join(lines).strip()


# --- classification ----------------------------------------------------------

# PostgreSQL's lock modes, numbered as LockStmt.mode is (storage/lockdefs.h).
LOCK_MODES = (None, "ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
              "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE")
ACCESS_EXCLUSIVE = lock_declarations.ACCESS_EXCLUSIVE
SHARE_UPDATE_EXCLUSIVE = lock_declarations.SHARE_UPDATE_EXCLUSIVE
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE = "SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"

BRIEF = "brief (catalog change only)"
SCANS_ONLINE = "while it scans the table; reads and writes go on"
_NOT_VALID = BRIEF + ", NOT VALID skips the scan"
_SET_NOT_NULL = "brief when a validated CHECK (column IS NOT NULL) proves it, otherwise while it scans every row"
_BUILDS_ONLINE = "while it builds; reads and writes go on"
_UNTIL_COMMIT = "until the transaction ends"

# How long a lock is held, in the words scripts/review uses: for a catalog
# change only, or while the statement reads every row (a scan, a rewrite, an
# index build), until the transaction ends, or on the rows it writes.
CATALOG_ONLY = "catalog-only"
SCAN = "scan"
UNTIL_COMMIT = "until commit"
ROWS = "rows"

# How a reviewer reads each hold the online DDL declares.
_DECLARED_HOLDS = {
    lock_declarations.Hold.BRIEF: BRIEF,
    lock_declarations.Hold.NOT_VALID: _NOT_VALID,
    lock_declarations.Hold.SCAN: SCANS_ONLINE,
    lock_declarations.Hold.SET_NOT_NULL: _SET_NOT_NULL,
    lock_declarations.Hold.BUILD: _BUILDS_ONLINE,
    lock_declarations.Hold.TRANSACTION: _UNTIL_COMMIT,
}
# The same holds, as scripts/review classes them. The online DDL runs SET NOT
# NULL only after validating a CHECK (column IS NOT NULL), so it does not scan.
_DECLARED_HELD = {
    lock_declarations.Hold.BRIEF: CATALOG_ONLY,
    lock_declarations.Hold.NOT_VALID: CATALOG_ONLY,
    lock_declarations.Hold.SCAN: SCAN,
    lock_declarations.Hold.SET_NOT_NULL: CATALOG_ONLY,
    lock_declarations.Hold.BUILD: SCAN,
    lock_declarations.Hold.TRANSACTION: UNTIL_COMMIT,
}


@dataclass(frozen=True)
class Lock:
    mode: str
    target: str
    duration: str
    held: str = CATALOG_ONLY  # CATALOG_ONLY, SCAN, UNTIL_COMMIT or ROWS

    def __str__(self) -> str:
        return f"{self.mode} on {self.target}, {self.duration}"


class Transaction(enum.Enum):
    """What a transaction-control statement does to the script's transaction."""

    BEGIN = "begin"
    END = "end"  # COMMIT, ROLLBACK, END


@dataclass(frozen=True)
class Setting:
    """A session setting a top-level SET or RESET changes; ``value`` None: back to its default."""

    name: str
    value: str | None


@dataclass(frozen=True)
class Classification:
    """The locks a statement takes; ``note`` says what it is when it locks no table."""

    locks: tuple[Lock, ...] = ()
    note: str = ""
    run_alone: bool = False  # refused inside a transaction block
    known: bool = True
    transaction: Transaction | None = None
    setting: Setting | None = None
    # What it removes that no downgrade can bring back (a column, rows).
    discards: tuple[str, ...] = ()

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
READS_ONLY = Classification(note="reads only")
SESSION_SETTING = Classification(note="session setting")
SCHEMA_ONLY = Classification(note="schema catalog only")


def classify_with_comments(comments: list[str], sql: str) -> tuple[Classification, list[str]]:
    """A statement's classification, as declared in its comment lines if it is, and its other comments."""
    declared, others = lock_declarations.read_declarations(comments)
    if declared is None:
        return classify(sql), others
    locks = tuple(
        Lock(lock.mode, f"the table of {lock.relation}" if lock.index else lock.relation, _DECLARED_HOLDS[lock.hold],
             _DECLARED_HELD[lock.hold])
        for lock in declared.locks
    )
    return Classification(locks, run_alone=declared.run_alone), others


def classify(statement: str) -> Classification:
    """The locks ``statement`` (one statement, comments allowed) takes."""
    try:
        nodes = [raw.stmt for raw in parse_sql(statement)]
    except parser.ParseError:
        return UNKNOWN
    if not nodes:
        return Classification(note="comment")
    if len(nodes) > 1:
        return UNKNOWN  # one statement at a time: a script goes through split_statements first
    return _classify_node(nodes[0])


def _name(*parts: str | None) -> str:
    """A possibly schema-qualified name, quoted where PostgreSQL needs it."""
    *schema, name = [part for part in parts if part]
    return RawStream()(ast.RangeVar(schemaname=schema[-1] if schema else None, relname=name, inh=True))


def _relation(node: ast.RangeVar) -> str:
    return _name(node.schemaname, node.relname)


def _object_name(names) -> str:
    return _name(*(part.sval for part in names))


_FUNCTION_OBJECTS = frozenset({enums.ObjectType.OBJECT_FUNCTION, enums.ObjectType.OBJECT_PROCEDURE,
                               enums.ObjectType.OBJECT_ROUTINE})
# Statements PostgreSQL refuses inside a transaction block (none has a rule: each is unknown).
_RUN_ALONE_NODES = (ast.VacuumStmt, ast.CreatedbStmt, ast.DropdbStmt, ast.AlterSystemStmt,
                    ast.CreateTableSpaceStmt, ast.DropTableSpaceStmt)


def _classify_node(node) -> Classification:
    """One parsed statement."""
    match node:
        case ast.TransactionStmt(kind=kind):
            begins = kind in (enums.TransactionStmtKind.TRANS_STMT_BEGIN, enums.TransactionStmtKind.TRANS_STMT_START)
            ends = kind in (enums.TransactionStmtKind.TRANS_STMT_COMMIT, enums.TransactionStmtKind.TRANS_STMT_ROLLBACK)
            if not (begins or ends):
                return UNKNOWN  # savepoints, two-phase commit
            return Classification(note="transaction control", transaction=Transaction.BEGIN if begins else Transaction.END)
        case ast.DoStmt():
            return _classify_do(node)
        case ast.VariableSetStmt():
            return Classification(note="session setting", setting=_setting(node))
        case ast.SelectStmt():
            return _classify_select(node)
        case ast.IndexStmt(relation=relation, concurrent=True):
            return Classification((Lock(SHARE_UPDATE_EXCLUSIVE, _relation(relation), _BUILDS_ONLINE, SCAN),), run_alone=True)
        case ast.IndexStmt(relation=relation):
            return Classification((Lock(SHARE, _relation(relation), "while it builds; blocks writes", SCAN),))
        case ast.DropStmt():
            return _classify_drop(node)
        case ast.AlterTableStmt(objtype=enums.ObjectType.OBJECT_TABLE):
            return _classify_alter_table(node)
        case ast.CreateTrigStmt(relation=relation):
            return Classification((Lock(SHARE_ROW_EXCLUSIVE, _relation(relation), BRIEF),))
        case ast.CreatePolicyStmt(table=table) | ast.AlterPolicyStmt(table=table):
            return Classification((Lock(ACCESS_EXCLUSIVE, _relation(table), BRIEF),))
        case ast.CreateFunctionStmt() | ast.AlterFunctionStmt():
            return FUNCTIONS_ONLY
        case ast.AlterOwnerStmt(objectType=kind) | ast.RenameStmt(renameType=kind) | ast.AlterObjectSchemaStmt(
            objectType=kind
        ) if kind in _FUNCTION_OBJECTS:
            return FUNCTIONS_ONLY
        case ast.GrantStmt(objtype=kind):
            return FUNCTIONS_ONLY if kind in _FUNCTION_OBJECTS else PRIVILEGES_ONLY
        case ast.GrantRoleStmt():
            return PRIVILEGES_ONLY
        case ast.CreateSchemaStmt():
            return SCHEMA_ONLY
        case ast.CommentStmt():
            return _classify_comment(node)
        case ast.CreateStmt(relation=relation):
            return Classification(note=f"creates {_relation(relation)}")
        case ast.LockStmt(relations=relations, mode=mode):
            return Classification(tuple(Lock(LOCK_MODES[mode], _relation(table), _UNTIL_COMMIT, UNTIL_COMMIT) for table in relations))
        case ast.InsertStmt(withClause=None) | ast.UpdateStmt(withClause=None) | ast.DeleteStmt(withClause=None):
            table = node.relation
            bookkeeping = table.schemaname == BOOKKEEPING_SCHEMA
            duration = "bookkeeping rows only" if bookkeeping else "the rows it writes; blocks no reads"
            discards = (f"deletes rows of {_relation(table)}",) if isinstance(node, ast.DeleteStmt) and not bookkeeping else ()
            return Classification((Lock(ROW_EXCLUSIVE, _relation(table), duration, ROWS),), discards=discards)
        case ast.ReindexStmt(params=params):
            return Classification(run_alone=any(p.defname == "concurrently" for p in params or ()), known=False)
    return Classification(run_alone=True, known=False) if isinstance(node, _RUN_ALONE_NODES) else UNKNOWN


def _setting(node: ast.VariableSetStmt) -> Setting | None:
    """SET name = value / TO value / TO DEFAULT and RESET name; other forms (SET LOCAL, SET ROLE, ...) carry nothing."""
    kind = node.kind
    if node.is_local or node.name in (None, "role", "session_authorization", "timezone", "transaction_isolation"):
        return None
    if kind is enums.VariableSetKind.VAR_SET_VALUE:
        return Setting(node.name, ", ".join(RawStream()(arg) for arg in node.args))
    if kind in (enums.VariableSetKind.VAR_SET_DEFAULT, enums.VariableSetKind.VAR_RESET):
        return Setting(node.name, None)
    return None


def _classify_select(node: ast.SelectStmt) -> Classification:
    if node.intoClause is not None or node.lockingClause or node.withClause is not None:
        return UNKNOWN  # creates a table, locks rows, or a WITH that may write
    targets = node.targetList or ()
    if not node.fromClause and len(targets) == 1 and isinstance(call := targets[0].val, ast.FuncCall) \
            and call.funcname[-1].sval == "set_config":
        return SESSION_SETTING
    return READS_ONLY


def _classify_drop(node: ast.DropStmt) -> Classification:
    kind = node.removeType
    if kind is enums.ObjectType.OBJECT_INDEX:
        if node.concurrent:
            waits = "while it waits for running queries; reads and writes go on"
            locks = (Lock(SHARE_UPDATE_EXCLUSIVE, f"the table of {_object_name(o)}", waits) for o in node.objects)
            return Classification(tuple(locks), run_alone=True)
        return Classification(tuple(Lock(ACCESS_EXCLUSIVE, f"the table of {_object_name(o)}", BRIEF) for o in node.objects))
    if kind in (enums.ObjectType.OBJECT_POLICY, enums.ObjectType.OBJECT_TRIGGER):  # [schema,] table, name
        return Classification(tuple(Lock(ACCESS_EXCLUSIVE, _object_name(o[:-1]), BRIEF) for o in node.objects))
    if kind in _FUNCTION_OBJECTS:
        return FUNCTIONS_ONLY
    return UNKNOWN


def _classify_comment(node: ast.CommentStmt) -> Classification:
    kind = node.objtype
    if kind in _FUNCTION_OBJECTS:
        return FUNCTIONS_ONLY
    if kind is enums.ObjectType.OBJECT_SCHEMA:
        return SCHEMA_ONLY
    if kind in (enums.ObjectType.OBJECT_TABLE, enums.ObjectType.OBJECT_INDEX, enums.ObjectType.OBJECT_COLUMN):
        names = node.object[:-1] if kind is enums.ObjectType.OBJECT_COLUMN else node.object
        return Classification((Lock(SHARE_UPDATE_EXCLUSIVE, _object_name(names), "brief; reads and writes go on"),))
    return UNKNOWN


_ONLINE_RELOPTIONS = frozenset({"fillfactor"})


def _alter_table_rule(command: ast.AlterTableCmd) -> tuple[str, str, str] | None:
    """(mode, duration, held) of one ALTER TABLE subcommand; None: no rule."""
    kind = enums.AlterTableType
    match command.subtype:
        case kind.AT_AddConstraint:
            constraint = command.def_
            if constraint.contype is enums.ConstrType.CONSTR_FOREIGN:
                if constraint.skip_validation:
                    return SHARE_ROW_EXCLUSIVE, BRIEF + ", NOT VALID skips the existing rows", CATALOG_ONLY
                return SHARE_ROW_EXCLUSIVE, "while it checks every existing row; blocks writes", SCAN
            if constraint.contype is enums.ConstrType.CONSTR_CHECK:
                if constraint.skip_validation:
                    return ACCESS_EXCLUSIVE, _NOT_VALID, CATALOG_ONLY
                return ACCESS_EXCLUSIVE, "while it scans every row; blocks reads and writes", SCAN
            return None
        case kind.AT_AddColumn:
            column = command.def_
            # Without a default, constraint, identity or generated value it is a catalog change;
            # any other form may rewrite or scan the table, and has no rule.
            unset = ("", "\x00")  # how pglast gives an empty one-character field
            if column.raw_default is None and not column.constraints and column.identity in unset and column.generated in unset:
                return ACCESS_EXCLUSIVE, BRIEF + ", a column without a default: no rewrite, no scan", CATALOG_ONLY
            return None
        case kind.AT_DropColumn:
            return ACCESS_EXCLUSIVE, BRIEF + ", the column is only marked dropped: no rewrite", CATALOG_ONLY
        case kind.AT_ValidateConstraint:
            return SHARE_UPDATE_EXCLUSIVE, SCANS_ONLINE, SCAN
        case kind.AT_SetNotNull:
            # Without a validated CHECK (column IS NOT NULL) that PostgreSQL can use, it scans.
            return ACCESS_EXCLUSIVE, _SET_NOT_NULL, SCAN
        case kind.AT_SetRelOptions | kind.AT_ResetRelOptions:
            # PostgreSQL sets these storage parameters under SHARE UPDATE EXCLUSIVE (AlterTableGetRelOptionsLockLevel).
            if all(option.defname in _ONLINE_RELOPTIONS for option in command.def_ or ()):
                return (SHARE_UPDATE_EXCLUSIVE, "brief; reads and writes go on, no rewrite (pages written later follow it)",
                        CATALOG_ONLY)
            return None
        case (kind.AT_DropNotNull | kind.AT_DropConstraint | kind.AT_ReplicaIdentity | kind.AT_EnableRowSecurity
              | kind.AT_DisableRowSecurity | kind.AT_ForceRowSecurity | kind.AT_NoForceRowSecurity):
            return ACCESS_EXCLUSIVE, BRIEF, CATALOG_ONLY
    return None


def _classify_alter_table(node: ast.AlterTableStmt) -> Classification:
    table, locks, discards = _relation(node.relation), [], []
    for command in node.cmds:
        rule = _alter_table_rule(command)
        if rule is None:
            return UNKNOWN
        locks.append(Lock(rule[0], table, rule[1], rule[2]))
        if command.subtype is enums.AlterTableType.AT_DropColumn:
            discards.append(f"drops column {table}.{command.name} with its values")
    return Classification(tuple(locks), discards=tuple(discards))


# --- DO blocks -----------------------------------------------------------------

_SNAPSHOTS = f"{BOOKKEEPING_SCHEMA}.rollback_snapshots"
# Stands for a part of an EXECUTEd string that the block computes at run time.
_COMPUTED = '"?"'
_COMPUTED_LITERAL = "'?'"
# Enough for the CASE alternatives one EXECUTE combines; beyond it the string is unknown.
_MAX_ALTERNATIVES = 64


def _classify_do(node: ast.DoStmt) -> Classification:
    """The locks of every command a DO block runs: its own, and the SQL strings it EXECUTEs.

    An EXECUTEd string is rebuilt from its literals (through ``||``,
    ``format()``, ``quote_ident()`` and CASE, every alternative), with a
    placeholder for each part computed at run time. EXECUTE of a value that
    holds no literal at all is read as the block restoring definitions
    recorded in migration_meta.rollback_snapshots when the block reads that
    table (the same kind of objects, on the same tables, as the block's other
    commands); anywhere else it makes the block unknown, as does any command
    no rule reads.
    """
    body = next(option.arg.sval for option in node.args if option.defname == "as")
    language = next((option.arg.sval for option in node.args if option.defname == "language"), "plpgsql")
    if language != "plpgsql":
        return UNKNOWN
    try:
        tree = parse_plpgsql(f"DO $do$\n{body}\n$do$")
    except parser.ParseError:
        return UNKNOWN
    found: list[Classification] = []
    computed = reads_snapshots = False
    for kind, query in _plpgsql_sql(tree):
        if kind == "execute":
            alternatives = _strings(_expression(query))
            if alternatives is None:
                computed = True
                continue
            classified = [c for text in alternatives for c in _classify_script(text)]
            # Each alternative takes the same locks once.
            found.append(Classification(tuple(dict.fromkeys(lock for c in classified for lock in c.locks))))
            found += [Classification(note=c.note, known=c.known, discards=c.discards) for c in classified]
            continue
        reads_snapshots |= _SNAPSHOTS in _relations(query)
        if kind == "statement":
            # Its own queries and session settings change no table: they are the block's checks.
            found += [c for c in _classify_script(query) if not _checks_only(c)]
        elif _expression(query) is None:
            found.append(UNKNOWN)
    if (computed and not reads_snapshots) or any(not c.known for c in found):
        return UNKNOWN
    locks = tuple(lock for c in found for lock in c.locks)
    notes = sorted({c.note for c in found if c.note})
    if computed:
        notes.append("re-runs the definitions recorded in its snapshot")
    if not notes and not locks:
        notes = ["checks only: reads the catalog, may stop the script"]
    discards = tuple(dict.fromkeys(d for c in found for d in c.discards))
    return Classification(locks, note=", ".join(notes), discards=discards)


def _checks_only(classification: Classification) -> bool:
    return classification.known and not classification.locks and classification.note in (READS_ONLY.note, SESSION_SETTING.note)


# PL/pgSQL statements whose "query" is a string to run as SQL.
_DYNAMIC = frozenset({"PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors", "PLpgSQL_stmt_open"})
# PLpgSQL_expr.parseMode (parser/parser.h RawParseMode): 0 a statement, 3-5 an assignment.
_STATEMENT, _ASSIGNMENTS = 0, (3, 4, 5)


def _plpgsql_sql(tree) -> list[tuple[str, str]]:
    """The SQL of a PL/pgSQL tree, in order: ("statement", sql) run as it is, ("execute", expression)
    run as dynamic SQL, ("expression", expression) evaluated (conditions, assignments, arguments)."""
    found: list[tuple[str, str]] = []

    def walk(value, dynamic: bool = False, key: str | None = None) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item, dynamic, key)
            return
        if not isinstance(value, dict):
            return
        for name, item in value.items():
            if name == "PLpgSQL_expr":
                query, mode = item["query"], item.get("parseMode", _STATEMENT)
                if dynamic and key == "query":
                    found.append(("execute", query))
                elif mode == _STATEMENT:
                    found.append(("statement", query))
                else:
                    found.append(("expression", query.partition(":=")[2] if mode in _ASSIGNMENTS else query))
            elif name.startswith("PLpgSQL_stmt_"):
                walk(item, name in _DYNAMIC)
            else:
                walk(item, dynamic, name)

    walk(tree)
    return found


def _classify_script(sql: str) -> list[Classification]:
    """Each statement of ``sql`` (an EXECUTEd definition may carry its GRANTs and COMMENT)."""
    try:
        return [_classify_node(raw.stmt) for raw in parse_sql(sql)]
    except parser.ParseError:
        return [UNKNOWN]


def _relations(sql: str) -> set[str]:
    try:
        return visitors.referenced_relations(sql)
    except parser.ParseError:
        return set()


def _expression(expression: str):
    """The parse tree of a PL/pgSQL expression; None when it is not one."""
    try:
        (raw,) = parse_sql(f"SELECT {expression}")
    except (parser.ParseError, ValueError):
        return None
    targets = raw.stmt.targetList
    return targets[0].val if isinstance(raw.stmt, ast.SelectStmt) and targets and len(targets) == 1 else None


def _strings(node) -> list[str] | None:
    """The SQL texts an EXECUTEd expression may produce; None when no part of it is a literal."""
    if node is None or not _has_literal(node):
        return None
    texts = _pieces(node, _COMPUTED)
    return texts if len(texts) <= _MAX_ALTERNATIVES else [_COMPUTED]


def _has_literal(node) -> bool:
    if isinstance(node, ast.A_Const):
        return isinstance(node.val, ast.String)
    if isinstance(node, ast.A_Expr) and node.name[-1].sval == "||":
        return _has_literal(node.lexpr) or _has_literal(node.rexpr)
    if isinstance(node, ast.CaseExpr):
        return any(_has_literal(when.result) for when in node.args)
    if isinstance(node, ast.FuncCall) and node.funcname[-1].sval == "format":
        return bool(node.args) and _has_literal(node.args[0])
    return False


def _pieces(node, computed: str) -> list[str]:
    """Every text ``node`` may evaluate to; ``computed`` for what only the running block knows."""
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return [node.val.sval]
    if isinstance(node, ast.A_Expr) and node.name[-1].sval == "||" and node.lexpr is not None:
        return [left + right for left, right in itertools.product(_pieces(node.lexpr, computed), _pieces(node.rexpr, computed))]
    if isinstance(node, ast.CaseExpr) and node.defresult is not None:
        results = [when.result for when in node.args] + [node.defresult]
        return list(dict.fromkeys(text for result in results for text in _pieces(result, computed)))
    if isinstance(node, ast.FuncCall):
        function, args = node.funcname[-1].sval, list(node.args or ())
        if function == "quote_ident" and len(args) == 1:
            return [_name(text) if text != _COMPUTED else text for text in _pieces(args[0], _COMPUTED)]
        if function in ("quote_literal", "quote_nullable") and len(args) == 1:
            return [_COMPUTED_LITERAL]
        if function == "format" and args and isinstance(args[0], ast.A_Const):
            return _formatted(args[0].val.sval, args[1:])
    return [computed]


def _formatted(template: str, args: list) -> list[str]:
    """format(template, args...): %s, %I and %L filled in with each alternative of their argument."""
    parts: list[list[str]] = []
    literal, index, position = "", 0, 0
    while index < len(template):
        char = template[index]
        if char != "%" or index + 1 == len(template):
            literal, index = literal + char, index + 1
            continue
        spec = template[index + 1]
        index += 2
        if spec not in "sIL%":
            return [_COMPUTED]  # positions, widths, flags: not followed
        if spec == "%":
            literal += "%"
            continue
        arg = args[position] if position < len(args) else None
        position += 1
        if spec == "I":
            options = [_name(t) if t != _COMPUTED else t for t in (_pieces(arg, _COMPUTED) if arg is not None else [_COMPUTED])]
        elif spec == "L":
            options = [_COMPUTED_LITERAL] if arg is None else [
                RawStream()(ast.A_Const(val=ast.String(t))) if t != _COMPUTED_LITERAL else t
                for t in _pieces(arg, _COMPUTED_LITERAL)
            ]
        else:
            options = _pieces(arg, _COMPUTED) if arg is not None else [_COMPUTED]
        parts += [[literal], options]
        literal = ""
    parts.append([literal])
    return ["".join(combination) for combination in itertools.product(*parts)]
