"""The team's next revision is one file: the checks follow its declaration with no library edit.

The worked example of docs/writing-a-revision.md (a nullable column, a
partial index built online, a function only a chat's participants may call,
a column UPDATE grant) is installed, as the doc prints it, into a copy of the
project after the shared head. ``ALEMBIC_CONFIG`` points every command at
the copy, as it points alembic. Then validate, preflight, smoke, adopt, stamp
and the interrupt matrix run on it, as postgres, on both environments; and
validate fails when one of its promised objects is missing. The template
itself generates a revision the suite's revision rules accept.
"""

from __future__ import annotations

import json
import re

import pytest

from chat_migrations.checks import adopt, preflight, smoke, validate
from chat_migrations.harness import alembic_cli
from chat_migrations.runtime import faults
from chat_migrations.runtime.environments import REPO_ROOT
from chat_migrations.schema import history

from .conftest import assert_same_schema, project_with_shared_revision

GUIDE = REPO_ROOT / "docs" / "writing-a-revision.md"
REVISION = "106_message_pins"


def example_source(shared_head: str) -> str:
    """The guide's example revision, revising ``shared_head``."""
    block = re.search(r"<!-- example revision: begin -->\n```python\n(.*?)```\n<!-- example revision: end -->",
                      GUIDE.read_text(), re.S)
    assert block, "docs/writing-a-revision.md lost its example revision"
    source = block.group(1)
    written_against = re.search(r'^down_revision: .* = "([^"]+)"', source, re.M).group(1)
    return source.replace(written_against, shared_head)


@pytest.fixture
def shared_head() -> str:
    """The shared head of this checkout (read before ALEMBIC_CONFIG points elsewhere)."""
    head = history.head_revision("prod")
    assert head == history.head_revision("staging")
    return head


@pytest.fixture
def next_revision(tmp_path, monkeypatch, shared_head) -> str:
    """alembic.ini of a copy of the project with the example revision after the shared head."""
    ini = project_with_shared_revision(tmp_path, REVISION, example_source(shared_head))
    monkeypatch.setenv("ALEMBIC_CONFIG", ini)
    return ini


def alembic(db, ini: str, *args: str, check: bool = True, fault: str | None = None):
    return alembic_cli.run_in_process(
        "-c", ini, "-n", db.environment, *args, urls={db.environment: db.url}, check=check,
        extra_env={faults.VARIABLE: fault} if fault else None,
    )


def command(capsys, module, db, *args: str) -> tuple[int, dict]:
    code = module.main(["-n", db.environment, "--json", *args], urls={db.environment: db.url})
    return code, json.loads(capsys.readouterr().out)


def failing(document: dict) -> dict[str, list[str]]:
    return {c["name"]: c["problems"] for c in document["checks"] if c["status"] == "fail"}


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_validate_preflight_and_smoke_follow_the_next_revision(capsys, make_database, next_revision, environment):
    db = make_database(environment, "head")
    before = db.schema()

    code, report = command(capsys, preflight, db)
    revisions = next(c for c in report["checks"] if c["name"] == "revisions")
    assert [p["revision"] for p in revisions["data"]["pending"]] == [REVISION]
    changes = next(c for c in report["checks"] if c["name"] == "caller_changes")["problems"]
    assert f"{REVISION}: authenticated on public.chat_messages: gains UPDATE (pinned_at)" in changes
    assert f"{REVISION}: authenticated may now execute public.get_pin_count(uuid)" in changes

    alembic(db, next_revision, "upgrade", "head")
    assert db.revision() == REVISION
    code, report = command(capsys, validate, db)
    assert code == 0, failing(report)
    code, report = command(capsys, smoke, db)
    assert code == 0, report
    # alembic check (autogenerate) knows the new column and partial index from the declaration: models.py is untouched.
    checked = alembic(db, next_revision, "check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # Each promise is judged: its partial index gone, its column grant gone.
    db.execute("DROP INDEX public.idx_chat_messages_pinned")
    checked = alembic(db, next_revision, "check", check=False)
    assert checked.returncode != 0 and "idx_chat_messages_pinned" in checked.stdout + checked.stderr
    code, report = command(capsys, validate, db)
    assert code == 1 and set(failing(report)) == {"indexes"}
    assert "index idx_chat_messages_pinned on public.chat_messages (chat_id, pinned_at WHERE pinned_at IS NOT NULL) " \
           "is missing" in failing(report)["indexes"]
    db.execute("CREATE INDEX idx_chat_messages_pinned ON public.chat_messages (chat_id, pinned_at) "
               "WHERE pinned_at IS NOT NULL; REVOKE UPDATE (pinned_at) ON public.chat_messages FROM authenticated")
    code, report = command(capsys, validate, db)
    assert code == 1 and failing(report) == {
        "privileges": ["authenticated's UPDATE on columns of public.chat_messages: missing on pinned_at"]}
    db.execute("GRANT UPDATE (pinned_at) ON public.chat_messages TO authenticated")

    alembic(db, next_revision, "downgrade", "-1")
    assert_same_schema(db.schema(), before, f"{environment} after the next revision's downgrade")


def test_stamp_follows_the_next_revision(make_database, next_revision):
    db = make_database("prod", "head")
    refused = alembic(db, next_revision, "stamp", REVISION, check=False)
    assert refused.returncode != 0 and "column public.chat_messages.pinned_at" in refused.output
    alembic(db, next_revision, "upgrade", "head")
    db.execute("DELETE FROM migration_meta.alembic_version")
    alembic(db, next_revision, "stamp", REVISION)
    assert db.revision() == REVISION


def test_adopt_follows_the_next_revision(capsys, make_database, next_revision):
    db = make_database("staging")
    db.execute("DELETE FROM migration_meta.alembic_version")
    # A live database where someone built the index by hand, with another definition.
    db.execute("ALTER TABLE public.chat_messages ADD COLUMN pinned_at timestamptz; "
               "CREATE INDEX idx_chat_messages_pinned ON public.chat_messages (pinned_at)")
    code, report = command(capsys, adopt, db)
    assert code == 0, report
    index = next(d for d in report["differences"] if d["object"] == "public.chat_messages.idx_chat_messages_pinned")
    assert index["classification"] == "handled" and REVISION in index["why"]


INTERRUPTS = ["sigint", pytest.param("terminate", marks=pytest.mark.exhaustive)]


@pytest.mark.parametrize("kind", INTERRUPTS)
def test_the_interrupt_matrix_follows_the_next_revision(make_database, shared_head, next_revision, kind):
    clean = make_database("staging", "head")
    before = clean.schema()
    alembic(clean, next_revision, "upgrade", "head")
    after = clean.schema()
    statement = 0
    while True:
        statement += 1
        db = make_database("staging", "head")
        result = alembic(db, next_revision, "upgrade", "head", check=False, fault=f"{kind}:{statement}")
        if result.returncode == 0 and db.revision() == REVISION:
            break
        rollback = make_database("staging", copy_of=db)
        alembic(db, next_revision, "upgrade", "head")
        assert_same_schema(db.schema(), after, f"rerun after {kind} at statement {statement}")
        alembic(rollback, next_revision, "downgrade", shared_head)
        assert_same_schema(rollback.schema(), before, f"rollback after {kind} at statement {statement}")
        db.drop()
        rollback.drop()
    assert statement > 3, "the fault never struck inside the next revision"


def test_the_template_writes_a_revision_the_revision_rules_accept(tmp_path, shared_head):
    ini = project_with_shared_revision(tmp_path, REVISION, example_source(shared_head))
    shared = tmp_path / "project" / "alembic" / "versions" / "shared"
    alembic_cli.run_in_process("-c", ini, "-n", "staging", "revision", "-m", "pin messages", "--rev-id",
                               "107_from_the_template", "--head", REVISION, "--version-path", str(shared))
    written = (shared / "107_from_the_template.py").read_text()
    assert 'revision: str = "107_from_the_template"' in written
    assert f'down_revision: Union[str, Sequence[str], None] = "{REVISION}"' in written
    docstring = written.split('"""')[1]
    for heading in ("Environment:", "Why:", "Locks:", "Downgrade verified:"):
        assert heading in docstring
    namespace: dict = {}
    exec(compile(written, "107_from_the_template.py", "exec"), namespace)
    assert namespace["promises"].items == () and namespace["requires"].columns == {}
