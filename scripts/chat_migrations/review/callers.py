"""What each revision changes for the API's callers, computed without a database.

``caller_changes`` is the one place scripts/review asks. It runs preflight's
caller report (each revision's declared ``promises``, folded in upgrade
order; chat_migrations.checks.preflight.caller_changes) from the catalog of
the environment's baseline as committed for scripts/adopt, so "may no
longer execute" is said against what the baseline really granted.
"""

from __future__ import annotations

from alembic.script import Script

from chat_migrations.checks import adopt, preflight


def caller_changes(environment: str, scripts: list[Script]) -> dict[str, list[str]]:
    """revision → the lines naming what it changes for anon, authenticated and service_role.

    ``scripts`` are the environment's revisions after its baseline, in upgrade order.
    """
    baseline = adopt._as_catalog(adopt.expected_picture(environment))  # the catalog adopt compares with
    found: dict[str, list[str]] = {script.revision: [] for script in scripts}
    for change in preflight.caller_changes(baseline, scripts):
        found[change["revision"]].append(change["change"].removeprefix(f"{change['revision']}: "))
    return found
