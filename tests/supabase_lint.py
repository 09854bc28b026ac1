"""Supabase's database linter rules that concern the messaging objects, written as our own SQL.

Each rule has the name Supabase's linter (splinter) gives it and returns one
row per finding: the object and what is wrong with it. The scope is the
``public`` schema, where the messaging tables and functions live and which
Supabase's API exposes. Where Supabase's own query is looser, these are
stricter:

* auth_rls_initplan: every call of auth.uid()/jwt()/role()/email() or
  current_setting() in a policy must be wrapped in a SELECT, not just one;
* duplicate_index: indexes equal in columns, operator classes, order,
  collations, expressions and predicate, whether unique or not;
* unindexed_foreign_keys: the foreign key's columns must lead some valid index.

rls_policy_always_true is not in the issue's list: it checks its "no
permissive true policies for writes".
"""

from __future__ import annotations

_TABLES = "c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace"
_FUNCTION = "format('%s.%s(%s)', p.pronamespace::regnamespace, p.proname, oidvectortypes(p.proargtypes))"
_TABLE = "format('%s.%s', c.relnamespace::regnamespace, c.relname)"
_NOT_FROM_AN_EXTENSION = "NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"

_SECURITY_DEFINER_EXECUTABLE_BY = f"""
SELECT {_FUNCTION}, 'SECURITY DEFINER and executable by {{role}}'
  FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
   AND has_function_privilege('{{role}}', p.oid, 'EXECUTE')
   AND {_NOT_FROM_AN_EXTENSION.format(oid="p.oid")}"""

# An auth function or current_setting() called in a policy expression.
_AUTH_CALL = r"(auth\.(uid|jwt|role|email)|current_setting)\("

RULES: dict[str, str] = {
    "function_search_path_mutable": f"""
SELECT {_FUNCTION}, 'search_path is not set: it resolves names through the caller''s search_path'
  FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace
   AND {_NOT_FROM_AN_EXTENSION.format(oid="p.oid")}
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) setting WHERE setting LIKE 'search\\_path=%')""",
    "rls_disabled_in_public": f"""
SELECT {_TABLE}, 'RLS is disabled: the API reads and writes it with table grants alone'
  FROM pg_class c WHERE {_TABLES} AND NOT c.relrowsecurity""",
    "policy_exists_rls_disabled": f"""
SELECT {_TABLE}, 'has policies but RLS is disabled, so they do nothing'
  FROM pg_class c WHERE {_TABLES} AND NOT c.relrowsecurity
   AND EXISTS (SELECT FROM pg_policy pol WHERE pol.polrelid = c.oid)""",
    "rls_enabled_no_policy": f"""
SELECT {_TABLE}, 'RLS is enabled without any policy: the API sees nothing'
  FROM pg_class c WHERE {_TABLES} AND c.relrowsecurity
   AND NOT EXISTS (SELECT FROM pg_policy pol WHERE pol.polrelid = c.oid)""",
    "anon_security_definer_function_executable": _SECURITY_DEFINER_EXECUTABLE_BY.format(role="anon"),
    "authenticated_security_definer_function_executable": _SECURITY_DEFINER_EXECUTABLE_BY.format(role="authenticated"),
    "unindexed_foreign_keys": f"""
SELECT {_TABLE} || '.' || fk.conname, 'no valid index starts with the foreign key''s columns'
  FROM pg_constraint fk JOIN pg_class c ON c.oid = fk.conrelid
 WHERE fk.contype = 'f' AND {_TABLES}
   AND NOT EXISTS (
       SELECT FROM pg_index i
        WHERE i.indrelid = fk.conrelid AND i.indisvalid
          AND (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(fk.conkey)] = fk.conkey)""",
    "duplicate_index": f"""
SELECT {_TABLE}, 'identical indexes: ' || string_agg(i.indexrelid::regclass::text, ', ' ORDER BY i.indexrelid::regclass::text)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE {_TABLES}
 GROUP BY c.oid, c.relnamespace, c.relname, i.indkey::text, i.indclass::text, i.indoption::text, i.indcollation::text,
          pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid)
HAVING count(*) > 1""",
    "auth_rls_initplan": f"""
SELECT {_TABLE} || ' policy ' || pol.polname, 'calls an auth function once per row: wrap it as (select auth.uid())'
  FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
 WHERE {_TABLES}
   AND EXISTS (
       SELECT FROM (VALUES (pg_get_expr(pol.polqual, pol.polrelid)), (pg_get_expr(pol.polwithcheck, pol.polrelid))) e(expr)
        WHERE regexp_count(e.expr, '{_AUTH_CALL}') > regexp_count(e.expr, 'SELECT {_AUTH_CALL}'))""",
    "multiple_permissive_policies": f"""
SELECT {_TABLE} || ' ' || r.rolname || ' ' || act.command,
       'several permissive policies, all evaluated: ' || string_agg(pol.polname, ', ' ORDER BY pol.polname)
  FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
  JOIN pg_roles r ON pol.polroles @> ARRAY[r.oid] OR pol.polroles = '{{0}}'
 CROSS JOIN LATERAL unnest(CASE pol.polcmd WHEN 'r' THEN '{{SELECT}}'::text[] WHEN 'a' THEN '{{INSERT}}'
                              WHEN 'w' THEN '{{UPDATE}}' WHEN 'd' THEN '{{DELETE}}'
                              ELSE '{{SELECT,INSERT,UPDATE,DELETE}}' END) AS act(command)
 WHERE {_TABLES} AND pol.polpermissive
   AND NOT r.rolbypassrls AND NOT r.rolsuper AND r.rolname NOT LIKE 'pg\\_%'
 GROUP BY c.oid, c.relnamespace, c.relname, r.rolname, act.command
HAVING count(*) > 1""",
    "rls_policy_always_true": f"""
SELECT {_TABLE} || ' policy ' || pol.polname, 'a permissive write policy that is always true'
  FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
 WHERE {_TABLES} AND pol.polpermissive AND pol.polcmd IN ('a', 'w', 'd', '*')
   AND (pg_get_expr(pol.polqual, pol.polrelid) = 'true' OR pg_get_expr(pol.polwithcheck, pol.polrelid) = 'true')""",
}


def findings(db) -> dict[str, list[tuple[str, str]]]:
    """Every rule's findings on ``db`` (a tests.conftest.Database); rules without findings are left out."""
    found = {}
    for rule, sql in RULES.items():
        rows = db.query(f"SET search_path = ''; {sql} ORDER BY 1")
        if rows:
            found[rule] = [tuple(row) for row in rows]
    return found
