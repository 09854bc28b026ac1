"""The docs name only commands, flags, environments, -x keys and environment variables the code has.

The sources of truth: each command's argparse parser (``build_parser()``),
Alembic's own parser, the ``alembic.ini`` sections, ``Settings.X_ARGUMENTS``,
and the environment variables the code reads (found with ``ast``). Every
check below is a function from text to a list of problems, so a drift is
reported by name, and the checkers are themselves tested on a doc with a
made-up flag. No database, no subprocess: this runs in well under a second.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import importlib

import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest
from alembic.config import CommandLine

from chat_migrations import cli
from chat_migrations.runtime.session import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS_DIR = REPO_ROOT / "docs"
COMMANDS_PAGE = DOCS_DIR / "commands.md"
DEPLOYING_PAGE = DOCS_DIR / "deploying.md"

# scripts/NAME → its module; a command without a wrapper is shown as `chat-migrations NAME`.
COMMANDS: dict[str, str] = {name: module for name, module in cli.COMMANDS.items() if (REPO_ROOT / "scripts" / name).is_file()}
# Shell commands: scripts/test passes everything to pytest; install-postgres takes a version.
SHELL_COMMANDS = {"test", "install-postgres"}
# How the docs show a command that has no scripts/ wrapper.
MODULE_COMMANDS = {f"chat-migrations {name}": module for name, module in cli.COMMANDS.items() if name not in COMMANDS}

# Environment variables the docs may name that the code sets for others or
# that another tool reads; each must still appear in the file given.
EXTERNAL_VARIABLES = {
    "ALEMBIC_CONFIG": "scripts/_venv.sh",  # Alembic reads it; _venv.sh puts it in .venv/bin/activate
    "PGOPTIONS": "scripts/chat_migrations/harness/rehearse.py",  # libpq: set for pg_dump, and in render-sql's headers
    "PGPASSWORD": "scripts/chat_migrations/runtime/environments.py",  # libpq: how a password reaches pg_dump and psql
    "CHAT_PLATFORM": "tests/conftest.py",  # the tests: which Supabase platform the server is built as
    "TEST_WORKERS": "scripts/test",  # scripts/test: pytest-xdist workers when -n is not given
}
# `-x key=value`: the placeholder, not a key.
PLACEHOLDER_KEYS = {"key"}
# Names used only in examples of something the reader adds (docs/environments.md, "Adding an environment").
EXAMPLE_ENVIRONMENTS = {"preview"}
EXAMPLE_VARIABLES = {"PREVIEW_DATABASE_URL"}


# --- the sources of truth --------------------------------------------------------------


def _parser_of_module(module_name: str) -> argparse.ArgumentParser:
    return importlib.import_module(module_name).build_parser()


@cache
def parsers() -> dict[str, argparse.ArgumentParser | None]:
    """scripts/NAME (or a MODULE_COMMANDS name) → its parser."""
    found = {name: _parser_of_module(module) for name, module in COMMANDS.items()}
    for name, module in MODULE_COMMANDS.items():
        found[name] = _parser_of_module(module)
    return found


def option_strings(parser: argparse.ArgumentParser | None) -> set[str]:
    if parser is None:
        return set()
    return {s for action in parser._actions for s in action.option_strings} - {"-h", "--help"}


def known_options(command: str) -> set[str] | None:
    """The flags of scripts/COMMAND; None when the command is not known at all."""
    if command in parsers():
        return option_strings(parsers()[command])
    return None


@cache
def alembic_options() -> tuple[set[str], dict[str, set[str]]]:
    """Alembic's global flags, and each subcommand's."""
    parser = CommandLine().parser
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return option_strings(parser), {name: option_strings(p) for name, p in sub.choices.items()}


@cache
def environments() -> dict[str, str]:
    """alembic.ini sections that are environments → their URL variable."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO_ROOT / "alembic.ini")
    return {s: ini.get(s, "database_url_env") for s in ini.sections() if ini.has_option(s, "database_url_env")}


def _variables_read(tree: ast.AST) -> set[str]:
    """Names passed to os.environ.get / os.getenv / os.environ[...] / `in os.environ`, literals or module constants."""
    constants = {
        target.id: node.value.value
        for node in ast.walk(tree) if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets if isinstance(target, ast.Name)
    }

    def value(node) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    def is_environ(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if (node.func.attr == "get" and is_environ(node.func.value)) or node.func.attr == "getenv":
                names.add(value(node.args[0]))
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            names.add(value(node.slice))
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            names.add(value(node.left))
    return names - {None}


@cache
def code_variables() -> set[str]:
    """Every environment variable the library and env.py read, plus the URL variables of alembic.ini."""
    files = [*sorted((REPO_ROOT / "scripts" / "chat_migrations").rglob("*.py")), REPO_ROOT / "alembic" / "env.py"]
    names = set(environments().values())
    for path in files:
        names |= _variables_read(ast.parse(path.read_text(), str(path)))
    return names


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS_DIR.glob("*.md"))]


# --- reading the docs ------------------------------------------------------------------

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")


def code_texts(markdown: str) -> list[str]:
    """The code of a page: each line of a fenced block, and each inline code span outside them."""
    texts = []
    for block in _FENCE.findall(markdown):
        texts.extend(line for line in block.splitlines() if line.strip())
    texts.extend(_INLINE.findall(_FENCE.sub("", markdown)))
    return texts


_STOP = {"|", "||", "&&", ";", ">", "2>", ">>", "#", "then", "do", "||", ")"}


def _tokens(code: str) -> list[str]:
    code = code.split(" #", 1)[0]
    try:
        words = shlex.split(code, comments=False)
    except ValueError:
        words = code.split()
    # Usage notation: [--json], -n ENV ..., start|stop|status
    return [w.strip("[]()|,.;") if w not in _STOP else w for w in words]


def invocations(code: str) -> list[tuple[str, list[str]]]:
    """(command, its arguments) for each scripts/NAME, alembic or python -m command in a piece of code."""
    found = []
    for module_command in MODULE_COMMANDS:
        if module_command in code:
            rest = code.split(module_command, 1)[1]
            found.append((module_command, _until_stop(_tokens(rest))))
            code = code.split(module_command, 1)[0]
    words = _tokens(code)
    for i, word in enumerate(words):
        match = re.fullmatch(r"(?:\S*/)?scripts/([a-z][a-z0-9-]*)", word)
        if match:
            found.append((match.group(1), _until_stop(words[i + 1:])))
        elif re.fullmatch(r"(?:\S*/)?alembic", word):
            found.append(("alembic", _until_stop(words[i + 1:])))
    return found


def _until_stop(words: list[str]) -> list[str]:
    out = []
    for word in words:
        if word in _STOP or word.startswith(("#", ">", "|", "$(")):
            break
        out.append(word)
    return out


# --- the checkers: text in, problems out -----------------------------------------------


def command_problems(markdown: str, where: str) -> list[str]:
    """Every scripts/NAME the page names exists, and every flag given to one is one of its parser's."""
    problems = []
    mentioned = set(re.findall(r"(?<![\w/.-])scripts/([a-z][a-z0-9-]*)(?![\w/.-])", markdown))
    for name in sorted(mentioned):
        if not (REPO_ROOT / "scripts" / name).is_file():
            problems.append(f"{where}: scripts/{name} does not exist")
    for code in code_texts(markdown):
        for command, args in invocations(code):
            if command == "alembic":
                problems += [f"{where}: {p} (in `{code}`)" for p in alembic_problems(args)]
                continue
            if command in SHELL_COMMANDS:
                continue
            known = known_options(command)
            if known is None:
                continue  # reported above as a missing script
            for arg in args:
                flag = arg.split("=", 1)[0]
                if re.fullmatch(r"--?[A-Za-z][\w-]*", flag) and flag not in known:
                    problems.append(f"{where}: scripts/{command} has no flag {flag} (in `{code}`)")
    return problems


def alembic_problems(args: list[str]) -> list[str]:
    """An alembic command line: -n names an environment, -x a known key, other flags are Alembic's."""
    global_options, subcommands = alembic_options()
    problems, subcommand, i = [], None, 0
    while i < len(args):
        arg = args[i]
        value = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("-n", "--name"):
            if value not in environments() and value not in EXAMPLE_ENVIRONMENTS and not re.fullmatch(r"[A-Z]+|\$\w+|\"\$\w+\"", value):
                problems.append(f"alembic -n {value}: not an environment of alembic.ini")
            i += 2
            continue
        if arg == "-x":
            key = value.split("=", 1)[0]
            if key not in Settings.X_ARGUMENTS and key not in PLACEHOLDER_KEYS:
                problems.append(f"alembic -x {key}: not a key of Settings.X_ARGUMENTS")
            i += 2
            continue
        if subcommand is None and arg in subcommands:
            subcommand = arg
        elif subcommand is None and arg in ("…", "..."):  # `alembic -n ENV … --sql`: some subcommand
            subcommand = "…"
        elif re.fullmatch(r"--?[A-Za-z][\w-]*", arg.split("=", 1)[0]):
            if subcommand == "…":
                allowed = global_options.union(*subcommands.values())
            else:
                allowed = global_options | subcommands.get(subcommand, set())
            if arg.split("=", 1)[0] not in allowed:
                problems.append(f"alembic{' ' + subcommand if subcommand else ''} has no flag {arg}")
        i += 1
    return problems


_VARIABLE = r"[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]|PG[A-Z]+"


def variables_named(markdown: str) -> set[str]:
    """Environment variables a page names: `NAME`, $NAME, ${NAME}, NAME=... in code."""
    names = set()
    for code in code_texts(markdown):
        if re.fullmatch(_VARIABLE, code.strip()):
            names.add(code.strip())
        names |= set(re.findall(r"\$\{?(" + _VARIABLE + r")\b", code))
        names |= set(re.findall(r"^(?:export\s+)?(" + _VARIABLE + r")=", code.strip()))
    return names


def variable_problems(markdown: str, where: str) -> list[str]:
    known = code_variables() | set(EXTERNAL_VARIABLES) | EXAMPLE_VARIABLES
    return [f"{where}: environment variable {name} is read by no code" for name in sorted(variables_named(markdown) - known)]


def x_key_problems(markdown: str, where: str) -> list[str]:
    """`-x key` / a `key` row of the -x table: keys Settings.X_ARGUMENTS knows."""
    problems = []
    for code in code_texts(markdown):
        for key in re.findall(r"-x\s+([a-z_]+)", code):
            if key not in Settings.X_ARGUMENTS and key not in PLACEHOLDER_KEYS:
                problems.append(f"{where}: -x {key} is not a key of Settings.X_ARGUMENTS")
    return problems


def commands_page_problems(page: str) -> list[str]:
    """The commands page has a section per command, naming each of its flags, and every -x key."""
    problems = []
    sections = dict(re.findall(r"^## (.*?)\n(.*?)(?=^## |\Z)", page, re.S | re.M))

    def section_of(command: str) -> str | None:
        label = command if command in MODULE_COMMANDS else f"scripts/{command}"
        for heading, body in sections.items():
            # `scripts/NAME`, or for a command without a wrapper its `python -m MODULE`
            if f"`{label}`" in heading or f"`python -m {COMMANDS.get(command, '-')}`" in heading:
                return body
        return None

    scripts = sorted(p.name for p in (REPO_ROOT / "scripts").iterdir() if p.is_file() and not p.name.startswith("_"))
    for command in sorted({*scripts, *parsers()}):
        body = section_of(command)
        if body is None:
            problems.append(f"commands page: no section for {command}")
            continue
        parser = parsers().get(command)
        documented = {flag for code in code_texts(body) for flag in re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", code)}
        for flag in sorted(option_strings(parser)):
            if flag not in documented:
                problems.append(f"commands page: {command}'s flag {flag} is not documented")
        if parser is not None:
            for action in parser._actions:
                for choice in action.choices or ():
                    if isinstance(choice, str) and f"`{choice}`" not in body:
                        problems.append(f"commands page: {command}'s argument {choice} is not documented")
    x_table = {key for key in re.findall(r"^\| `([a-z_]+)` \|", page, re.M)}
    for key in sorted(set(Settings.X_ARGUMENTS) - x_table):
        problems.append(f"commands page: -x {key} is not in the -x table")
    for name in sorted(code_variables() - variables_named(page)):
        problems.append(f"commands page: environment variable {name} (read by the code) is not documented")
    return problems


_README_REFERENCE = re.compile(r'README,\s+(?:"([^"]+)"|([A-Z][^")\n]*[a-z]))')


def readme_reference_problems(readme: str) -> list[str]:
    """The code's pointers `README, "Section"` name a heading of the README."""
    headings = {re.sub(r"\s+", " ", h.strip()) for h in re.findall(r"^#+ (.*)$", readme, re.M)}
    problems = []
    paths = [*(REPO_ROOT / "scripts").rglob("*.py"), *(REPO_ROOT / "alembic").rglob("*.py"),
             REPO_ROOT / "alembic.ini", *(REPO_ROOT / ".github" / "workflows").glob("*.yml")]
    for path in sorted(paths):
        text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text())
        for quoted, bare in _README_REFERENCE.findall(text):
            section = (quoted or bare).strip()
            if not any(h == section or h.startswith(section) for h in headings):
                problems.append(f"{path.relative_to(REPO_ROOT)}: points to README, \"{section}\", which has no such heading")
    return problems


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def link_problems(markdown: str, path: Path) -> list[str]:
    """Relative links point to files that exist, and #anchors to headings of them."""
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", markdown):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            problems.append(f"{path.name}: link to {target}: no such file")
            continue
        if anchor and linked.suffix == ".md":
            anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", linked.read_text(), re.M)}
            if anchor not in anchors:
                problems.append(f"{path.name}: link to {target}: no such heading")
    return problems


def workflow_steps() -> list[str]:
    """The commands the workflows run, as the docs write them (alembic, not .venv/bin/alembic)."""
    import yaml

    steps = []
    for path in sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml")):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            steps += [s["run"].strip().replace(".venv/bin/alembic", "alembic") for s in job["steps"] if "run" in s]
    return steps


def deploying_problems(page: str) -> list[str]:
    named = set(code_texts(page))
    return [f"deploying page: the workflows run `{step}`, which it does not list" for step in workflow_steps() if step not in named]


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_commands_and_flags_the_docs_name_exist(path):
    text = path.read_text()
    assert command_problems(text, path.name) + x_key_problems(text, path.name) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_environment_variables_the_docs_name_are_read_by_the_code(path):
    assert variable_problems(path.read_text(), path.name) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_links_between_pages_resolve(path):
    assert link_problems(path.read_text(), path) == []


def test_the_commands_page_documents_every_command_flag_x_key_and_variable():
    assert commands_page_problems(COMMANDS_PAGE.read_text()) == []


def test_every_readme_section_the_code_points_to_exists():
    assert readme_reference_problems(README.read_text()) == []


def test_the_deploying_page_lists_every_workflow_step():
    assert deploying_problems(DEPLOYING_PAGE.read_text()) == []


def test_external_variables_are_still_used_where_the_docs_say():
    for name, path in EXTERNAL_VARIABLES.items():
        assert name in (REPO_ROOT / path).read_text(), f"{name} is no longer in {path}"


def reference_sections_too_long(text: str, limit: int = 30) -> list[str]:
    """Sections after the runbook that hold more than a short summary (``limit`` lines), Layout's drawing aside."""
    sections = re.split(r"^## ", text.split("\n## The runbook", 1)[1], flags=re.M)[1:]
    return [section.splitlines()[0] for section in sections
            if section.splitlines()[0] != "Layout" and len(section.strip().splitlines()) > limit]


def test_the_readme_stays_a_runbook_not_a_reference():
    # Not a line count (any addition would force folding lines): the runbook, then short summaries linking docs/.
    text = README.read_text()
    assert "## The runbook" in text.splitlines()
    assert reference_sections_too_long(text) == []


def test_the_runbook_rule_catches_reference_material_in_the_readme():
    text = "\n## The runbook\n### 1. Step\nrun it\n## Locks\n" + "a long explanation\n" * 40 + "## Layout\n" + "x\n" * 40
    assert reference_sections_too_long(text) == ["Locks"]


# --- the checkers catch a drift ------------------------------------------------------------


def test_a_flag_no_parser_has_is_reported():
    doc = "Run `scripts/validate -n prod --fast` and\n\n```sh\nscripts/drift staging prod --all-rows\n```\n"
    assert sorted(command_problems(doc, "tmp.md")) == [
        "tmp.md: scripts/drift has no flag --all-rows (in `scripts/drift staging prod --all-rows`)",
        "tmp.md: scripts/validate has no flag --fast (in `scripts/validate -n prod --fast`)",
    ]


def test_a_command_that_does_not_exist_is_reported():
    assert command_problems("`scripts/migrate-all`", "tmp.md") == ["tmp.md: scripts/migrate-all does not exist"]


def test_alembic_environments_keys_and_flags_are_checked():
    doc = "`alembic -n production upgrade head`, `alembic -n prod -x lock_wait=2s upgrade head --dry-run`"
    assert command_problems(doc, "tmp.md") == [
        "tmp.md: alembic -n production: not an environment of alembic.ini (in `alembic -n production upgrade head`)",
        "tmp.md: alembic -x lock_wait: not a key of Settings.X_ARGUMENTS (in `alembic -n prod -x lock_wait=2s upgrade head --dry-run`)",
        "tmp.md: alembic upgrade has no flag --dry-run (in `alembic -n prod -x lock_wait=2s upgrade head --dry-run`)",
    ]
    assert command_problems("`alembic -n prod upgrade 000_prod_baseline:head --sql`", "tmp.md") == []


def test_an_environment_variable_no_code_reads_is_reported():
    doc = "Set `PROD_DB_URL`, or `PG_BINDIR`:\n\n```sh\nLOCAL_DB_PATH=/tmp scripts/local-db start\n```\n"
    assert variable_problems(doc, "tmp.md") == [
        "tmp.md: environment variable LOCAL_DB_PATH is read by no code",
        "tmp.md: environment variable PROD_DB_URL is read by no code",
    ]


def test_an_undocumented_flag_or_key_is_reported_on_the_commands_page():
    page = COMMANDS_PAGE.read_text().replace("--thorough", "--thorow").replace("| `progress_interval` |", "| progress |")
    problems = commands_page_problems(page)
    assert "commands page: validate's flag --thorough is not documented" in problems
    assert "commands page: -x progress_interval is not in the -x table" in problems


def test_a_missing_readme_section_is_reported():
    assert any("Adopting a live database" in p for p in readme_reference_problems("# Chat\n## Quick start\n"))


def test_a_broken_link_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n## Here\n[a](#here) [b](#there) [c](missing.md)\n")
    assert link_problems(page.read_text(), page) == [
        "page.md: link to #there: no such heading",
        "page.md: link to missing.md: no such file",
    ]


def test_the_runbooks_backup_goes_to_a_folder_git_ignores():
    # Before: pg_dump -f prod-before-migration.dump wrote production data into the repository root.
    targets = re.findall(r"pg_dump .* -f (\S+)", README.read_text())
    assert targets, "the runbook's pg_dump"
    for target in targets:
        assert (REPO_ROOT / target).parent.is_dir() and (REPO_ROOT / target).parent != REPO_ROOT, target
        ignored = subprocess.run(["git", "check-ignore", "-q", target], cwd=REPO_ROOT)
        assert ignored.returncode == 0, f"{target} is not git-ignored: a dump holds production data"
