"""The library's shape: what a revision may import, and the one command group.

A revision that imported the head schema (or anything a later change to it
would edit) would silently do something else on the next database it runs
on: a new environment, a rehearsal clone, a rollback. So revisions import
only the runtime (versioned helpers) and the frozen schema, and those import
nothing that follows head.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

from chat_migrations import cli
from chat_migrations.runtime.environments import REPO_ROOT

LIBRARY = REPO_ROOT / "scripts" / "chat_migrations"
REVISIONS = sorted((REPO_ROOT / "alembic" / "versions").rglob("*.py"))
STABLE = ("chat_migrations.runtime", "chat_migrations.frozen", "chat_migrations.errors")


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    return module_name(path.parent / "__init__.py")


def is_module(dotted: str) -> bool:
    path = LIBRARY.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").exists()


def project_imports(source: str, package: str = "") -> set[str]:
    """Every chat_migrations module the source imports, at any depth of the file.

    ``package`` is the package the source belongs to, for relative imports.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from package import module` imports that module; `from module import name`, the module.
            found.update(f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names)
    return {name for name in found if name == "chat_migrations" or name.startswith("chat_migrations.")}


def unstable(imports: set[str]) -> list[str]:
    return sorted(name for name in imports if not name.startswith(STABLE))


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda path: path.stem)
def test_a_revision_imports_only_the_runtime_and_the_frozen_schema(revision):
    assert unstable(project_imports(revision.read_text())) == []


def test_the_runtime_and_the_frozen_schema_import_nothing_that_follows_head():
    stable_modules = [path for path in LIBRARY.rglob("*.py") if module_name(path).startswith(STABLE)]
    assert len(stable_modules) > 10
    offenders = {
        module_name(path): unstable(project_imports(path.read_text(), package_of(path))) for path in stable_modules
    }
    assert {name: imports for name, imports in offenders.items() if imports} == {}


def test_the_rule_catches_what_would_follow_head():
    revision = (
        "from chat_migrations.runtime import lock_retries\n"
        "def upgrade():\n"
        "    from chat_migrations.schema import messaging_functions\n"
        "    from chat_migrations import cli\n"
    )
    assert unstable(project_imports(revision)) == ["chat_migrations.cli", "chat_migrations.schema.messaging_functions"]
    relative = "from ..schema import tables\nfrom . import session\n"
    assert unstable(project_imports(relative, "chat_migrations.runtime")) == ["chat_migrations.schema.tables"]


def import_graph(sources: dict[str, tuple[str, str]]) -> dict[str, set[str]]:
    """module → the project modules it imports; ``sources`` maps a module to (its source, its package)."""
    return {
        name: {imported for imported in project_imports(source, package) if imported in sources and imported != name}
        for name, (source, package) in sources.items()
    }


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted: an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for following in sorted(graph[node]):
            if following not in index:
                visit(following)
                low[node] = min(low[node], low[following])
            elif following in stack:
                low[node] = min(low[node], index[following])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_no_import_cycle_between_the_library_s_modules():
    """At any depth (an import inside a function too): a cycle means two modules that only work together."""
    sources = {module_name(path): (path.read_text(), package_of(path)) for path in LIBRARY.rglob("*.py")}
    graph = import_graph(sources)
    assert sum(len(imported) for imported in graph.values()) > 50
    assert import_cycles(graph) == []


def test_the_cycle_rule_catches_a_cycle_through_a_function_level_import():
    sources = {
        "chat_migrations.runtime.a": ("from chat_migrations.runtime.b import f\n", "chat_migrations.runtime"),
        "chat_migrations.runtime.b": ("def f():\n    from .c import g\n", "chat_migrations.runtime"),
        "chat_migrations.runtime.c": ("import chat_migrations.runtime.a\n", "chat_migrations.runtime"),
        "chat_migrations.runtime.d": ("from chat_migrations.runtime.a import x\n", "chat_migrations.runtime"),
    }
    assert import_cycles(import_graph(sources)) == [
        ["chat_migrations.runtime.a", "chat_migrations.runtime.b", "chat_migrations.runtime.c"]
    ]


# Each package imports only packages of its own layer or below: the runtime and the frozen schema know
# nothing of the checks; the checks nothing of review or the harness; cli and errors stand apart.
LAYERS = {
    "chat_migrations.errors": 0, "chat_migrations.runtime": 1, "chat_migrations.frozen": 2,
    "chat_migrations.schema": 3, "chat_migrations.checks": 4, "chat_migrations.review": 5,
    "chat_migrations.harness": 6, "chat_migrations.cli": 6,
}


def layer(module: str) -> int | None:
    return next((rank for package, rank in LAYERS.items() if module == package or module.startswith(package + ".")),
                None)


def upward_imports(sources: dict[str, tuple[str, str]]) -> list[str]:
    found = []
    for name, imported in sorted(import_graph(sources).items()):
        for target in sorted(imported):
            if layer(name) is not None and layer(target) is not None and layer(target) > layer(name):
                found.append(f"{name} -> {target}")
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    sources = {module_name(path): (path.read_text(), package_of(path)) for path in LIBRARY.rglob("*.py")}
    assert upward_imports(sources) == []


def test_the_layer_rule_catches_an_upward_import():
    sources = {
        "chat_migrations.schema.x": ("from chat_migrations.checks import catalog\n", "chat_migrations.schema"),
        "chat_migrations.checks.catalog": ("", "chat_migrations.checks"),
        "chat_migrations.checks.y": ("def f():\n    from chat_migrations.harness import cluster\n", "chat_migrations.checks"),
        "chat_migrations.harness.cluster": ("", "chat_migrations.harness"),
    }
    assert upward_imports(sources) == ["chat_migrations.checks.y -> chat_migrations.harness.cluster",
                                       "chat_migrations.schema.x -> chat_migrations.checks.catalog"]


def revision_ids() -> set[str]:
    return {match.group(1) for path in REVISIONS
            if (match := re.search(r'^revision: str = "([^"]+)"', path.read_text(), re.M))}


def revision_ids_in_code(source: str, ids: set[str]) -> list[str]:
    """Revision ids a module's code names (string literals, f-strings' text), docstrings and comments aside."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    # A name with .sql after it is one of the plan's files (001_schema_alignment.sql), not a revision.
    pattern = re.compile("(?:" + "|".join(map(re.escape, sorted(ids))) + r")(?!\.sql)|\b000_\{")
    texts = [node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    texts += [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)]
    return sorted({found.group(0) for text in texts for found in [pattern.search(text)] if found})


def test_no_library_code_names_a_revision_to_know_what_it_did():
    ids = revision_ids()
    assert len(ids) > 10
    named = {module_name(path): found for path in LIBRARY.rglob("*.py")
             if (found := revision_ids_in_code(path.read_text(), ids))}
    assert named == {}


def test_the_revision_id_rule_catches_a_list_kept_apart_from_the_revisions():
    ids = {"101_serialised_message_seq"}
    assert revision_ids_in_code('"""Mentions 101_serialised_message_seq."""\nBY = ("101_serialised_message_seq",)\n',
                                ids) == ["101_serialised_message_seq"]
    assert revision_ids_in_code('x = f"000_{env}_baseline"\n', ids) == ["000_{"]
    assert revision_ids_in_code('PLAN = {"101_serialised_message_seq.sql": "..."}\n', ids) == []


def wrappers() -> dict[str, str]:
    """scripts/NAME → the command each thin wrapper runs."""
    found = {}
    for path in (REPO_ROOT / "scripts").iterdir():
        match = path.is_file() and re.search(r'^exec chat-migrations (\S+) "\$@"$', path.read_text(), re.M)
        if match:
            found[path.name] = match.group(1)
    return found


def test_every_documented_command_is_a_thin_wrapper_of_the_command_group():
    assert {name: name for name in wrappers()} == wrappers()
    # bulk-load has no wrapper: the harness calls it, and `chat-migrations bulk-load` runs it by hand.
    assert set(cli.COMMANDS) - set(wrappers()) == {"bulk-load"}


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_declares_its_parser_and_answers_help(name):
    module = cli.command(name)
    assert module.build_parser().format_usage()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0 and "usage:" in output.getvalue()


def test_an_unknown_command_is_refused_with_the_list(capsys):
    assert cli.main(["upgrade"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'upgrade'" in error and "validate" in error
