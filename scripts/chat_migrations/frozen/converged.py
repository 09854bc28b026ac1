"""The chat schema at 100_converged, read from the frozen baseline: the downgrades' fallbacks.

A database stamped past a revision (adopted at a later revision rather than
upgraded through it) has no snapshot of what that revision replaced. Its
downgrade then restores the converged state, which is prod's baseline with
its keys NOT NULL: the functions, comments and policies here, with the
privileges Supabase's default privileges gave every object the team created
(ALL to anon, authenticated and service_role, in that order, then the owner
postgres; EXECUTE to PUBLIC too for functions), which is what the ACLs read
on a live project at 100_converged. Frozen like the baseline it reads;
revisions may import it.
"""

from __future__ import annotations

import re

from chat_migrations.frozen import baseline

_CONVERGED = baseline.create_sql("prod")


def previous_definition(signature: str) -> str:
    """The function at 100_converged with its grants and comment, as CREATE OR REPLACE.

    CREATE OR REPLACE so that a trigger depending on the function stays in
    place; a function without a comment then gets none explicitly.
    """
    name = re.escape(signature.split("(")[0])
    definition = re.search(rf"^CREATE FUNCTION {name}\(.*?^\$function\$;", _CONVERGED, re.S | re.M)
    if definition is None:
        raise ValueError(f"{signature} is not a function of the baseline")
    comment = re.search(rf"^COMMENT ON FUNCTION {name}\(.*?;$", _CONVERGED, re.S | re.M)
    return "\n".join([
        definition.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1),
        baseline.acl_sql(f"FUNCTION {signature}", "EXECUTE", _EXECUTE_AT_CONVERGED.get(signature, baseline.EVERYONE)),
        comment.group(0) if comment else f"COMMENT ON FUNCTION {signature} IS NULL;",
    ])


# Revisions before 100_converged that narrowed a function's EXECUTE (002, 007).
_EXECUTE_AT_CONVERGED = {"public.get_unread_count(uuid, uuid)": ("authenticated", "service_role", "postgres")}


def previous_table_access(table: str) -> str:
    """The table's policies at 100_converged, and the API roles' privileges as Supabase's defaults gave them."""
    policies = re.findall(rf"^CREATE POLICY \w+ ON {re.escape(table)} .*?;$", _CONVERGED, re.S | re.M)
    if not policies:
        raise ValueError(f"{table} has no policies in the baseline")
    return "\n".join([*policies, baseline.acl_sql(f"TABLE {table}", "ALL", (*baseline.API_ROLES, "postgres"))])
