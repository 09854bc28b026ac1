"""An environment's chain of revisions, as ``alembic -n ENV`` loads it, and the state it promises at each.

``promised(environment, revision)`` folds the ``promises`` every revision
declares in its own file (chat_migrations.runtime.promises), from the
baseline up to ``revision`` (head by default). Nothing here names a
revision: what a revision did is read from that revision.
"""

from __future__ import annotations

from alembic.script import Script, ScriptDirectory

from chat_migrations.errors import ChatMigrationsError
from chat_migrations.runtime import bookkeeping, promises


class UnknownRevision(ChatMigrationsError):
    """A revision this environment's chain does not contain."""


script_directory = bookkeeping.script_directory
base_revision = bookkeeping.base_revision


def head_revision(environment: str) -> str:
    return script_directory(environment).get_current_head()


def revisions(environment: str) -> set[str]:
    return {script.revision for script in script_directory(environment).walk_revisions()}


def chain(environment: str, revision: str | None = None, script: ScriptDirectory | None = None) -> list[Script]:
    """The revisions from the baseline up to ``revision`` (head when None), baseline first."""
    script = script or script_directory(environment)
    target = revision or script.get_current_head()
    if target not in {s.revision for s in script.walk_revisions()}:
        raise UnknownRevision(f"{target} is not a revision of {environment}'s history")
    return list(script.iterate_revisions(target, "base"))[::-1]


def declaration(script: Script) -> promises.Promises:
    """What one revision declares it leaves: its module's ``promises``."""
    declared = getattr(script.module, "promises", None)
    if not isinstance(declared, promises.Promises):
        raise ChatMigrationsError(
            f"revision {script.revision} ({script.path}) declares no promises: every revision says what it "
            "leaves (promises = Promises(...); docs/writing-a-revision.md)"
        )
    return declared


def promised(environment: str, revision: str | None = None, script: ScriptDirectory | None = None, *,
             strict: bool = True) -> promises.State:
    """The state a database of ``environment`` at ``revision`` (head when None) holds, by the declarations.

    ``strict`` False: a revision that declares nothing is passed over instead of refused (for env.py, where
    every command, a downgrade included, would otherwise stop on it; the checks and tests refuse it).
    """
    steps = chain(environment, revision, script)
    if not strict:
        steps = [s for s in steps if isinstance(getattr(s.module, "promises", None), promises.Promises)]
    return promises.fold((s.revision, declaration(s)) for s in steps)


def states(environment: str, script: ScriptDirectory | None = None) -> list[promises.State]:
    """The promised state at each revision of the chain, baseline first."""
    return [promised(environment, s.revision, script) for s in chain(environment, None, script)]


def common_to_every_revision(environment: str, script: ScriptDirectory | None = None) -> promises.State:
    """The promises that hold, unchanged, at every revision of the chain (for a database at an unknown one)."""
    states = [promised(environment, s.revision, script) for s in chain(environment, None, script)]
    common = promises.State(None)
    for key, item in states[0].items.items():
        if all(state.items.get(key) == item for state in states[1:]):
            common.items[key] = item
            common.declared_by[key] = states[-1].declared_by[key]
    return common


def pending(environment: str, current: str | None, script: ScriptDirectory | None = None) -> list[Script]:
    """The revisions after ``current`` up to head, in upgrade order (all of them when ``current`` is None)."""
    everything = chain(environment, None, script)
    if current is None:
        return everything
    names = [s.revision for s in everything]
    return everything[names.index(current) + 1:] if current in names else []
