"""What each revision changes for the API's callers, computed without a database.

``caller_changes`` is the one place scripts/review asks; today it reads each
revision module's ``access`` (chat_migrations.runtime.api_access.Access), and
it starts from the grants and policies of the environment's baseline (the
committed catalog picture scripts/adopt compares with), so "may no longer
execute" is said against what the baseline really granted.
"""

from __future__ import annotations

from alembic.script import Script

from chat_migrations.checks import adopt
from chat_migrations.runtime import api_access


def caller_changes(environment: str, scripts: list[Script]) -> dict[str, list[str]]:
    """revision → the lines naming what it changes for anon, authenticated and service_role.

    ``scripts`` are the environment's revisions after its baseline, in upgrade order.
    """
    picture = adopt.expected_picture(environment)
    grants = api_access.current_grants(picture["grants"])
    policies: dict[str, set[str]] = {}
    for key in picture["policies"]:
        table, name = key.rsplit(".", 1)
        policies.setdefault(table, set()).add(name)
    changes: dict[str, list[str]] = {}
    for script in scripts:
        access = getattr(script.module, "access", None)
        lines = api_access.changes(script.revision, access, grants, policies) if access is not None else []
        changes[script.revision] = [line.removeprefix(f"{script.revision}: ") for line in lines]
    return changes
