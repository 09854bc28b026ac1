"""What a revision records before it replaces or drops something, as SQL.

Before a revision replaces a function or creates an index, it stores what the
database held at that moment (definition, owner, ACL, comment; whether the
index existed) in ``migration_meta.rollback_snapshots``. Its downgrade
restores exactly that, not what the project assumes was there. All of it is
SQL run by the server, so the offline ``--sql`` scripts record and restore the
same way the online commands do.
"""

from __future__ import annotations

from dataclasses import dataclass

SNAPSHOTS = "migration_meta.rollback_snapshots"


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Choice:
    """Two definitions of one function, chosen by the database at run time (online and in --sql alike).

    For a live schema that may lack a column the plan never names: the
    function touches it only where it exists.
    """

    condition: str
    if_true: str
    if_false: str


def _execute_plpgsql(definition: "str | Choice") -> str:
    if isinstance(definition, Choice):
        return (
            f"IF {definition.condition} THEN EXECUTE {literal(definition.if_true)}; "
            f"ELSE EXECUTE {literal(definition.if_false)}; END IF;"
        )
    return f"EXECUTE {literal(definition)};"


def acl_json_sql(acl: str) -> str:
    """SQL: an aclitem[] as a JSON array of {grantee, grantor, privilege, grantable}, in ACL order."""
    return f"""coalesce((
               SELECT jsonb_agg(jsonb_build_object(
                          'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                          'privilege', a.privilege_type,
                          'grantor', pg_get_userbyid(a.grantor),
                          'grantable', a.is_grantable) ORDER BY a.ord)
                 FROM aclexplode({acl}) WITH ORDINALITY AS a(grantor, grantee, privilege_type, is_grantable, ord)
           ), '[]'::jsonb)"""


def grant_as_recorded_plpgsql(statement: str) -> str:
    """PL/pgSQL running the GRANT ``statement`` (an expression) as the role that granted it first.

    So the ACL reads back identically: postgres, a member of the owner and of
    anon on Supabase, would otherwise be recorded as whichever grantor
    PostgreSQL picks (GRANTED BY accepts only the current user before 16).
    """
    return f"""
                IF item->>'grantor' IS NOT NULL AND item->>'grantor' <> current_user
                   AND pg_has_role(item->>'grantor', 'MEMBER') THEN
                    EXECUTE format('SET ROLE %I', item->>'grantor');
                END IF;
                EXECUTE {statement};
                RESET ROLE;"""


def record_function_sql(revision: str, signature: str) -> str:
    """Store the function's current state (or that it did not exist); first record wins."""
    return f"""
INSERT INTO {SNAPSHOTS} (revision, object_kind, object_name, snapshot)
SELECT {literal(revision)}, 'function', {literal(signature)},
       CASE WHEN p.oid IS NULL THEN jsonb_build_object('existed', false)
       ELSE jsonb_build_object(
           'existed', true,
           'definition', pg_get_functiondef(p.oid),
           'owner', pg_get_userbyid(p.proowner),
           'acl_is_default', p.proacl IS NULL,
           -- A NULL ACL stands for the default one: recorded as what it grants, so the
           -- downgrade puts that back (pg_dump reads both alike).
           'acl', {acl_json_sql("coalesce(p.proacl, acldefault('f', p.proowner))")},
           'comment', obj_description(p.oid, 'pg_proc'))
       END
  FROM (SELECT to_regprocedure({literal(signature)}) AS oid) AS target
  LEFT JOIN pg_proc AS p ON p.oid = target.oid
ON CONFLICT (revision, object_kind, object_name) DO NOTHING"""


def _apply_privileges_plpgsql(signature: str) -> str:
    """PL/pgSQL statements giving the function snapshot s's owner, ACL and comment."""
    sig = literal(signature)
    return f"""
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', {sig}, s->>'owner');
        IF jsonb_array_length(s->'acl') > 0 OR NOT (s->>'acl_is_default')::boolean THEN
            -- Rebuild the ACL in its recorded order so it reads back identically:
            -- every grantee loses everything first, or a grant that is still there
            -- (one Supabase's default privileges made) would keep its place while
            -- the ones put back land after it.
            FOR grantee_name IN
                SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
                  FROM pg_proc p, aclexplode(p.proacl) a WHERE p.oid = to_regprocedure({sig})
                UNION SELECT 'PUBLIC'
            LOOP
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', {sig}, grantee_name);
            END LOOP;
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', {sig}, s->>'owner');
            FOR item IN SELECT value FROM jsonb_array_elements(s->'acl') LOOP{grant_as_recorded_plpgsql(
                f"format('GRANT %s ON FUNCTION %s TO %s%s', item->>'privilege', {sig}, "
                "CASE WHEN item->>'grantee' = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(item->>'grantee') END, "
                "CASE WHEN (item->>'grantable')::boolean THEN ' WITH GRANT OPTION' ELSE '' END)")}
            END LOOP;
        END IF;
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', {sig}, s->>'comment');"""


def _snapshot_lookup(revision: str, kind: str, name: str) -> str:
    return (
        f"SELECT snapshot INTO s FROM {SNAPSHOTS} WHERE revision = {literal(revision)} "
        f"AND object_kind = '{kind}' AND object_name = {literal(name)};"
    )


def replace_function_sql(revision: str, signature: str, definition: "str | Choice", keep_privileges: bool) -> str:
    """Drop the function if present and create ``definition`` in its place.

    With keep_privileges the new function gets the old one's owner, ACL and
    comment; otherwise the definition's own GRANT/COMMENT statements apply.
    """
    keep = _apply_privileges_plpgsql(signature) if keep_privileges else ""
    body = f"""EXECUTE 'DROP FUNCTION IF EXISTS ' || {literal(signature)};
    {_execute_plpgsql(definition)}
    IF (s->>'existed')::boolean THEN{keep}
        NULL;
    END IF;"""
    return f"{record_function_sql(revision, signature)};\n{_function_snapshot_block('replace', revision, signature, body)}"


def redefine_function_sql(revision: str, signature: str, definition: "str | Choice") -> str:
    """Record the function, then CREATE OR REPLACE it with the same signature.

    For a function something depends on (a trigger's function): it is never
    dropped, and keeps its owner, ACL and comment. ``definition`` must say
    CREATE OR REPLACE FUNCTION. The downgrade is restore_function_sql.
    """
    if isinstance(definition, Choice):
        return f"{record_function_sql(revision, signature)};\nDO $redefine$ BEGIN {_execute_plpgsql(definition)} END $redefine$"
    return f"{record_function_sql(revision, signature)};\n{definition}"


# The project's known previous state of a function that did not exist before.
ABSENT = ""


def restore_function_sql(
    revision: str, signature: str, fallback_definition: "str | Choice | None", *, forget: bool = True
) -> str:
    """Put back the function recorded by ``revision`` (or remove it if it did not exist).

    Without a snapshot (the database was stamped past the revision rather
    than upgraded through it) the project's known previous state is used:
    ``fallback_definition`` (ABSENT when the function did not exist; a Choice
    is chosen by the database); with None the downgrade refuses rather than
    guess. ``forget``: the snapshot is deleted in the same statement. A
    downgrade in several transactions passes False and runs ``forget_sql`` as
    its own last step, so a rerun after an interruption restores from the
    snapshot again.
    """
    drop = f"EXECUTE 'DROP FUNCTION IF EXISTS ' || {literal(signature)};"
    if fallback_definition is None:
        fallback = (
            f"RAISE EXCEPTION 'no snapshot of % recorded by revision %: restore it by hand', "
            f"{literal(signature)}, {literal(revision)};"
        )
    elif fallback_definition == ABSENT:
        fallback = drop
    else:
        # A trigger's function cannot be dropped; its fallback is CREATE OR REPLACE.
        fallback = (
            f"BEGIN {drop} EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END; "
            f"{_execute_plpgsql(fallback_definition)}"
        )
    return _function_restore_block(revision, signature, forget, f"""IF s IS NULL THEN
        RAISE NOTICE 'no snapshot of % from revision %: restoring the project''s previous definition',
            {literal(signature)}, {literal(revision)};
        {fallback}
        RETURN;
    END IF;
    IF (s->>'existed')::boolean THEN
        -- The recorded definition is CREATE OR REPLACE, which keeps dependents
        -- (a trigger) in place; a changed return type needs the drop.
        BEGIN
            EXECUTE s->>'definition';
        EXCEPTION WHEN invalid_function_definition THEN
            EXECUTE 'DROP FUNCTION ' || {literal(signature)};
            EXECUTE s->>'definition';
        END;{_apply_privileges_plpgsql(signature)}
    ELSE
        EXECUTE 'DROP FUNCTION IF EXISTS ' || {literal(signature)};
    END IF;""")


def restore_function_privileges_sql(revision: str, signature: str) -> str:
    """Put back the owner, ACL (in its order) and comment ``revision`` recorded; the definition is left alone."""
    return _function_restore_block(revision, signature, True, (
        f"IF coalesce((s->>'existed')::boolean, false) AND to_regprocedure({literal(signature)}) IS NOT NULL "
        f"THEN{_apply_privileges_plpgsql(signature)}\n    END IF;"
    ))


def _function_restore_block(revision: str, signature: str, forget: bool, body: str) -> str:
    """The DO block both restores run: read the snapshot into ``s``, run ``body``, forget the snapshot if ``forget``."""
    then = f"{forget_sql(revision, 'function', signature)};" if forget else ""
    return _function_snapshot_block("restore", revision, signature, f"{body}\n    {then}")


def _function_snapshot_block(label: str, revision: str, signature: str, body: str) -> str:
    """A DO block that reads the function's snapshot into ``s`` (item, grantee_name for its ACL), then runs ``body``."""
    return f"""DO ${label}$
DECLARE
    s jsonb;
    item jsonb;
    grantee_name text;
BEGIN
    {_snapshot_lookup(revision, 'function', signature)}
    {body}
END
${label}$"""


def if_function_exists_sql(signature: str, statements: str) -> str:
    """``statements`` only where the function exists (a live schema may lack it)."""
    return (
        f"DO $exists$ BEGIN IF to_regprocedure({literal(signature)}) IS NOT NULL THEN "
        f"EXECUTE {literal(statements)}; END IF; END $exists$"
    )


def record_column_sql(revision: str, table: str, column: str) -> str:
    """Store whether the column was already NOT NULL before the revision."""
    return f"""
INSERT INTO {SNAPSHOTS} (revision, object_kind, object_name, snapshot)
SELECT {literal(revision)}, 'column', {literal(f"{table}.{column}")}, jsonb_build_object('not_null', attnotnull)
  FROM pg_attribute WHERE attrelid = {literal(table)}::regclass AND attname = {literal(column)}
ON CONFLICT (revision, object_kind, object_name) DO NOTHING"""


# The snapshot kind of a column a revision adds: whether it existed before.
ADDED_COLUMN = "added_column"


def record_added_column_sql(revision: str, table: str, column: str) -> str:
    """Store whether the column existed before the revision adds it; first record wins."""
    return f"""
INSERT INTO {SNAPSHOTS} (revision, object_kind, object_name, snapshot)
SELECT {literal(revision)}, '{ADDED_COLUMN}', {literal(f"{table}.{column}")},
       jsonb_build_object('existed', EXISTS (
           SELECT FROM pg_attribute WHERE attrelid = '{table}'::regclass
              AND attname = {literal(column)} AND attnum > 0 AND NOT attisdropped))
ON CONFLICT (revision, object_kind, object_name) DO NOTHING"""


def added_column_existed_sql(revision: str, table: str, column: str) -> str:
    """SQL boolean: the column existed before the revision added it (false without a record)."""
    return (
        f"coalesce((SELECT (snapshot->>'existed')::boolean FROM {SNAPSHOTS}\n"
        f"                      WHERE revision = {literal(revision)} AND object_kind = '{ADDED_COLUMN}'\n"
        f"                        AND object_name = {literal(f'{table}.{column}')}), false)"
    )


def column_was_nullable_sql(revision: str, table: str, column: str) -> str:
    """SQL boolean: the column was nullable before the revision (assumed so without a record)."""
    return (
        f"coalesce((SELECT NOT (snapshot->>'not_null')::boolean FROM {SNAPSHOTS} "
        f"WHERE revision = {literal(revision)} AND object_kind = 'column' "
        f"AND object_name = {literal(f'{table}.{column}')}), true)"
    )


def record_index_sql(revision: str, index: str) -> str:
    """Store whether the index existed (valid) before the revision built it."""
    return f"""
INSERT INTO {SNAPSHOTS} (revision, object_kind, object_name, snapshot)
SELECT {literal(revision)}, 'index', {literal(index)},
       jsonb_build_object('existed', i.indexrelid IS NOT NULL AND i.indisvalid,
                          'definition', pg_get_indexdef(i.indexrelid))
  FROM (SELECT to_regclass({literal(index)}) AS oid) AS target
  LEFT JOIN pg_index AS i ON i.indexrelid = target.oid
ON CONFLICT (revision, object_kind, object_name) DO NOTHING"""


def index_snapshot_sql(revision: str, index: str) -> str:
    """One row: the recorded snapshot (existed, definition), or none."""
    return (
        f"SELECT snapshot FROM {SNAPSHOTS} WHERE revision = {literal(revision)} "
        f"AND object_kind = 'index' AND object_name = {literal(index)}"
    )


def index_existed_before_sql(revision: str, index: str) -> str:
    """One row: true/false as recorded, or NULL when there is no snapshot."""
    return (
        f"SELECT (snapshot->>'existed')::boolean FROM {SNAPSHOTS} WHERE revision = {literal(revision)} "
        f"AND object_kind = 'index' AND object_name = {literal(index)}"
    )


def forget_sql(revision: str, kind: str, name: str) -> str:
    return (
        f"DELETE FROM {SNAPSHOTS} WHERE revision = {literal(revision)} "
        f"AND object_kind = '{kind}' AND object_name = {literal(name)}"
    )
