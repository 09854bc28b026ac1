"""What a revision records before it rewrites a table's policies and privileges, as SQL.

The same spirit as ``snapshots`` for functions: before a revision replaces the
row-level-security policies or the grants of a table, it stores what the
database held (every policy as the CREATE POLICY statement that recreates it,
the RLS switches, the table's and its columns' ACLs in their order) in
``migration_meta.rollback_snapshots``. Its downgrade puts exactly that back,
not what the project assumes was there. All of it is SQL run by the server, so
the ``--sql`` scripts record and restore the same way.

DROP/CREATE POLICY take ACCESS EXCLUSIVE on the table: a revision takes those
locks first, with ``lock_retries.lock_tables``.
"""

from __future__ import annotations

from chat_migrations.runtime.snapshots import SNAPSHOTS, acl_json_sql, grant_as_recorded_plpgsql, literal

KIND = "table_access"


def record_table_access_sql(revision: str, table: str) -> str:
    """Store the table's policies, RLS switches and ACLs (table and columns); first record wins.

    The policy expressions are deparsed with an empty search_path, so every
    name in them is schema-qualified and recreates the same policy wherever
    the downgrade runs.
    """
    return f"""DO $record$
DECLARE
    saved_search_path text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', '', true);
    INSERT INTO {SNAPSHOTS} (revision, object_kind, object_name, snapshot)
    SELECT {literal(revision)}, '{KIND}', {literal(table)}, jsonb_build_object(
        'row_security', c.relrowsecurity,
        'force_row_security', c.relforcerowsecurity,
        'policies', coalesce((
            SELECT jsonb_agg(
                       'CREATE POLICY ' || quote_ident(pol.polname) || ' ON ' || {literal(table)}
                       || CASE WHEN pol.polpermissive THEN ' AS PERMISSIVE' ELSE ' AS RESTRICTIVE' END
                       || ' FOR ' || CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'
                                     WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END
                       || ' TO ' || (SELECT string_agg(CASE WHEN r.oid = 0 THEN 'PUBLIC'
                                                        ELSE quote_ident(pg_get_userbyid(r.oid)) END, ', ' ORDER BY r.ord)
                                       FROM unnest(pol.polroles) WITH ORDINALITY AS r(oid, ord))
                       || coalesce(' USING (' || pg_get_expr(pol.polqual, pol.polrelid) || ')', '')
                       || coalesce(' WITH CHECK (' || pg_get_expr(pol.polwithcheck, pol.polrelid) || ')', '')
                       ORDER BY pol.polname)
              FROM pg_policy pol WHERE pol.polrelid = c.oid), '[]'::jsonb),
        'acl_is_default', c.relacl IS NULL,
        'acl', {acl_json_sql("c.relacl")},
        'column_acls', coalesce((
            SELECT jsonb_agg(jsonb_build_object('column', att.attname, 'acl', {acl_json_sql("att.attacl")})
                             ORDER BY att.attnum)
              FROM pg_attribute att
             WHERE att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped AND att.attacl IS NOT NULL
        ), '[]'::jsonb))
      FROM pg_class c WHERE c.oid = {literal(table)}::regclass
    ON CONFLICT (revision, object_kind, object_name) DO NOTHING;
    PERFORM set_config('search_path', saved_search_path, true);
END
$record$"""


def drop_policies_sql(table: str) -> str:
    """PL/pgSQL removing every policy of ``table``; the block declares ``existing_policy record``."""
    return f"""
    FOR existing_policy IN SELECT pol.polname FROM pg_policy pol WHERE pol.polrelid = {literal(table)}::regclass LOOP
        EXECUTE 'DROP POLICY ' || quote_ident(existing_policy.polname) || ' ON ' || {literal(table)};
    END LOOP;"""


def restore_table_access_sql(revision: str, fallbacks: dict[str, str | None]) -> str:
    """One statement putting back what ``revision`` recorded for each table of ``fallbacks``.

    Policies: every current one is dropped, the recorded ones are created.
    ACLs: every grantee of the table or its columns loses everything, then the
    recorded privileges are granted again in their recorded order, so the ACL
    reads back identically (the grantor becomes the role running the
    downgrade, as with functions). Without a record (a database stamped past
    the revision) the table's policies are dropped and its fallback SQL (the
    project's known previous policies and grants) runs; with None the
    downgrade refuses rather than guess, and nothing is changed.
    """
    restores = "".join(
        _restore_one_table_plpgsql(revision, table, fallback) for table, fallback in fallbacks.items()
    )
    return f"""DO $restore$
DECLARE
    s jsonb;
    existing_policy record;
    policy_sql text;
    grantee_name text;
    item jsonb;
    column_acl jsonb;
BEGIN{restores}
END
$restore$"""


def _grantee_sql(name: str) -> str:
    return f"CASE WHEN {name} = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident({name}) END"


_GRANT_OPTION = "CASE WHEN (item->>'grantable')::boolean THEN ' WITH GRANT OPTION' ELSE '' END"


def _restore_one_table_plpgsql(revision: str, table: str, fallback: str | None) -> str:
    missing = (
        f"'no snapshot of the policies and grants of ' || {literal(table)} || ' recorded by revision ' "
        f"|| {literal(revision)} || ' (the database was stamped past it)'"
    )
    if fallback is None:
        without_snapshot = (
            f"RAISE EXCEPTION USING MESSAGE = {missing} || ': restore them by hand; nothing was changed';"
        )
    else:
        without_snapshot = (
            f"RAISE NOTICE USING MESSAGE = {missing} || ': restoring the project''s previous ones';"
            f"{drop_policies_sql(table)}\n{fallback}"
        )
    return f"""
    SELECT snapshot INTO s FROM {SNAPSHOTS}
     WHERE revision = {literal(revision)} AND object_kind = '{KIND}' AND object_name = {literal(table)};
    IF s IS NULL THEN
        {without_snapshot}
    ELSE
{_restore_recorded_plpgsql(table)}
    END IF;
    DELETE FROM {SNAPSHOTS}
     WHERE revision = {literal(revision)} AND object_kind = '{KIND}' AND object_name = {literal(table)};"""


def _restore_recorded_plpgsql(table: str) -> str:
    grantee = _grantee_sql("item->>'grantee'")
    table_grant = f"'GRANT ' || (item->>'privilege') || ' ON TABLE ' || {literal(table)} || ' TO ' || {grantee} || {_GRANT_OPTION}"
    column_grant = (
        f"'GRANT ' || (item->>'privilege') || ' (' || quote_ident(column_acl->>'column') || ') ON TABLE ' "
        f"|| {literal(table)} || ' TO ' || {grantee} || {_GRANT_OPTION}"
    )
    return f"""{drop_policies_sql(table)}
    FOR policy_sql IN SELECT value FROM jsonb_array_elements_text(s->'policies') LOOP
        EXECUTE policy_sql;
    END LOOP;
    EXECUTE 'ALTER TABLE ' || {literal(table)}
        || CASE WHEN (s->>'row_security')::boolean THEN ' ENABLE' ELSE ' DISABLE' END || ' ROW LEVEL SECURITY, '
        || CASE WHEN (s->>'force_row_security')::boolean THEN 'FORCE' ELSE 'NO FORCE' END || ' ROW LEVEL SECURITY';
    -- Revoking a table privilege also revokes it on every column.
    FOR grantee_name IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
          FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = {literal(table)}::regclass
        UNION
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
          FROM pg_attribute att, aclexplode(att.attacl) a WHERE att.attrelid = {literal(table)}::regclass
        UNION
        SELECT value->>'grantee' FROM jsonb_array_elements(s->'acl')
    LOOP
        EXECUTE 'REVOKE ALL ON TABLE ' || {literal(table)} || ' FROM ' || {_grantee_sql("grantee_name")};
    END LOOP;
    IF (s->>'acl_is_default')::boolean THEN
        -- The default ACL: everything for the owner and nobody else.
        EXECUTE 'GRANT ALL ON TABLE ' || {literal(table)} || ' TO '
            || quote_ident((SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = {literal(table)}::regclass));
    END IF;
    FOR item IN SELECT value FROM jsonb_array_elements(s->'acl') LOOP{grant_as_recorded_plpgsql(table_grant)}
    END LOOP;
    FOR column_acl IN SELECT value FROM jsonb_array_elements(s->'column_acls') LOOP
        FOR item IN SELECT value FROM jsonb_array_elements(column_acl->'acl') LOOP{grant_as_recorded_plpgsql(column_grant)}
        END LOOP;
    END LOOP;"""
