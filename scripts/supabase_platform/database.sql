-- Per-database part of the local Supabase platform: what a new Supabase
-- project's database has that a chat schema touches.
--
-- Run by supabase_admin inside a freshly created database owned by postgres
-- (CREATE DATABASE x OWNER postgres), after cluster.sql ran on the server.
-- Idempotent where reasonable. Plain SQL only: the harness sends it as one
-- string (one implicit transaction).
--
-- On Supabase the init scripts ran as postgres while it was still a
-- superuser, then postgres was demoted; later migrations ran as
-- supabase_admin and GoTrue's migrations as supabase_auth_admin. Objects are
-- created here under the same role as there, so owners, grantors and default
-- privileges come out the same. Sources: docs/supabase-platform.md.

-- ---------------------------------------------------------------------------
-- Objects the init scripts created as postgres (initial-schema.sql):
-- schema extensions, its two extensions, the realtime publication.
-- ---------------------------------------------------------------------------
SET ROLE postgres;

CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions;
CREATE EXTENSION IF NOT EXISTS pgcrypto    WITH SCHEMA extensions;

-- Empty publication, owned by postgres, so postgres can ADD its own tables.
DO $publication$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'supabase_realtime') THEN
        CREATE PUBLICATION supabase_realtime;
    END IF;
END
$publication$;

RESET ROLE;

-- As trusted extensions created by a non-superuser, their functions belong to
-- the bootstrap superuser; on Supabase postgres (then superuser) owns them.
DO $extension_owner$
DECLARE
    routine regprocedure;
BEGIN
    FOR routine IN
        SELECT d.objid::regprocedure
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
        JOIN pg_catalog.pg_proc p ON p.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_proc'::regclass
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass
          AND d.deptype = 'e'
          AND e.extname IN ('uuid-ossp', 'pgcrypto')
          AND p.proowner <> 'postgres'::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO postgres', routine);
    END LOOP;
END
$extension_owner$;

-- ---------------------------------------------------------------------------
-- Schema public and its default privileges (initial-schema.sql). public stays
-- owned by pg_database_owner, as PostgreSQL 15 makes it and as
-- nix/tests/expected/roles.out shows; postgres gets CREATE as database owner.
-- ---------------------------------------------------------------------------
GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;

-- "alter default privileges in schema public ..." ran as postgres.
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
-- "for user supabase_admin", so objects supabase_admin creates are exposed too.
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;

-- ---------------------------------------------------------------------------
-- Schema extensions: usage for the API roles (initial-schema.sql), all for
-- postgres (demote-postgres.sql) and dashboard_user (post-setup.sql), and
-- what supabase_admin creates there handed to postgres with grant option
-- (20230224042246_grant_extensions_perms_for_postgres.sql).
-- ---------------------------------------------------------------------------
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
GRANT ALL ON SCHEMA extensions TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA extensions
    GRANT ALL ON TABLES TO postgres WITH GRANT OPTION;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA extensions
    GRANT ALL ON ROUTINES TO postgres WITH GRANT OPTION;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA extensions
    GRANT ALL ON SEQUENCES TO postgres WITH GRANT OPTION;

-- ---------------------------------------------------------------------------
-- PostgREST schema-cache reload triggers
-- (20220321174452_fix-postgrest-alter-type-event-trigger.sql, the last merged
-- version), owned by supabase_admin as evtrigs.out records.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION extensions.pgrst_ddl_watch() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    cmd record;
BEGIN
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        IF cmd.command_tag IN (
               'CREATE SCHEMA', 'ALTER SCHEMA',
               'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE',
               'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE',
               'CREATE VIEW', 'ALTER VIEW',
               'CREATE MATERIALIZED VIEW', 'ALTER MATERIALIZED VIEW',
               'CREATE FUNCTION', 'ALTER FUNCTION',
               'CREATE TRIGGER',
               'CREATE TYPE', 'ALTER TYPE',
               'CREATE RULE',
               'COMMENT')
           -- temporary objects never reach the API
           AND cmd.schema_name IS DISTINCT FROM 'pg_temp'
        THEN
            NOTIFY pgrst, 'reload schema';
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION extensions.pgrst_drop_watch() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        IF obj.object_type IN (
               'schema', 'table', 'foreign table', 'view', 'materialized view',
               'function', 'trigger', 'type', 'rule')
           AND obj.is_temporary IS false
        THEN
            NOTIFY pgrst, 'reload schema';
        END IF;
    END LOOP;
END
$$;

DO $event_triggers$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'pgrst_ddl_watch') THEN
        CREATE EVENT TRIGGER pgrst_ddl_watch ON ddl_command_end
            EXECUTE FUNCTION extensions.pgrst_ddl_watch();
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'pgrst_drop_watch') THEN
        CREATE EVENT TRIGGER pgrst_drop_watch ON sql_drop
            EXECUTE FUNCTION extensions.pgrst_drop_watch();
    END IF;
END
$event_triggers$;

-- Everything in extensions, to postgres with grant option (20230224042246)
-- and to dashboard_user (post-setup.sql).
GRANT ALL ON ALL TABLES    IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL ROUTINES  IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL SEQUENCES IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL TABLES    IN SCHEMA extensions TO dashboard_user;
GRANT ALL ON ALL ROUTINES  IN SCHEMA extensions TO dashboard_user;
GRANT ALL ON ALL SEQUENCES IN SCHEMA extensions TO dashboard_user;

-- ---------------------------------------------------------------------------
-- Schema auth, platform side (00000000000001-auth-schema.sql,
-- 20211115181400_update-auth-permissions.sql, post-setup.sql). Owned by
-- supabase_admin (auth.out); postgres keeps USAGE only since
-- 20250421084701_revoke_admin_roles_from_postgres.sql revoked CREATE.
-- ---------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, postgres;
GRANT ALL ON SCHEMA auth TO supabase_auth_admin, dashboard_user;
-- What GoTrue creates is fully usable by postgres (hence REFERENCES and
-- TRIGGER on auth.users) and dashboard_user.
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON TABLES TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON SEQUENCES TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON ROUTINES TO postgres, dashboard_user;

-- ---------------------------------------------------------------------------
-- Schema auth, GoTrue side: created as supabase_auth_admin, as GoTrue's
-- migrations (supabase/auth migrations/*.up.sql) run. auth.users is the
-- table those migrations leave; the other GoTrue tables are left out.
-- ---------------------------------------------------------------------------
SET ROLE supabase_auth_admin;

CREATE TABLE IF NOT EXISTS auth.users (
    -- 00_init_auth_schema.up.sql
    instance_id uuid NULL,
    id uuid NOT NULL,
    aud varchar(255) NULL,
    "role" varchar(255) NULL,
    email varchar(255) NULL,
    encrypted_password varchar(255) NULL,
    email_confirmed_at timestamptz NULL,       -- confirmed_at, renamed by 20210710035447
    invited_at timestamptz NULL,
    confirmation_token varchar(255) NULL,
    confirmation_sent_at timestamptz NULL,
    recovery_token varchar(255) NULL,
    recovery_sent_at timestamptz NULL,
    email_change_token_new varchar(255) NULL,  -- email_change_token, renamed by 20210730183235
    email_change varchar(255) NULL,
    email_change_sent_at timestamptz NULL,
    last_sign_in_at timestamptz NULL,
    raw_app_meta_data jsonb NULL,
    raw_user_meta_data jsonb NULL,
    is_super_admin bool NULL,
    created_at timestamptz NULL,
    updated_at timestamptz NULL,
    -- 20210710035447_alter_users (phone columns made text by 20230116124310)
    phone text NULL DEFAULT NULL,
    phone_confirmed_at timestamptz NULL DEFAULT NULL,
    phone_change text NULL DEFAULT '',
    phone_change_token varchar(255) NULL DEFAULT '',
    phone_change_sent_at timestamptz NULL DEFAULT NULL,
    -- 20210722035447_adds_confirmed_at
    confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
    -- 20210730183235_add_email_change_confirmed
    email_change_token_current varchar(255) NULL DEFAULT '',
    email_change_confirm_status smallint DEFAULT 0
        CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
    -- 20220114185340_add_banned_until
    banned_until timestamptz NULL,
    -- 20220323170000_add_user_reauthentication
    reauthentication_token varchar(255) NULL DEFAULT '',
    reauthentication_sent_at timestamptz NULL DEFAULT NULL,
    -- 20221215195500_modify_users_email_unique_index
    is_sso_user boolean NOT NULL DEFAULT false,
    -- 20230116124412_add_deleted_at
    deleted_at timestamptz NULL,
    -- 20240214120130_add_is_anonymous_column
    is_anonymous boolean NOT NULL DEFAULT false,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_phone_key UNIQUE (phone)
);
COMMENT ON TABLE auth.users IS 'Auth: Stores user login data within a secure schema.';
COMMENT ON COLUMN auth.users.is_sso_user IS 'Auth: Set this column to true when the account comes from SSO. These accounts can have duplicate emails.';

-- 00_init + 20220114185221_update_user_idx
CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users USING btree (instance_id);
CREATE INDEX IF NOT EXISTS users_instance_id_email_idx ON auth.users USING btree (instance_id, lower(email::text));
-- 20220429102000_add_unique_idx: OTP tokens unique unless empty/numeric
CREATE UNIQUE INDEX IF NOT EXISTS confirmation_token_idx ON auth.users USING btree (confirmation_token)
    WHERE confirmation_token::text !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS recovery_token_idx ON auth.users USING btree (recovery_token)
    WHERE recovery_token::text !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS email_change_token_current_idx ON auth.users USING btree (email_change_token_current)
    WHERE email_change_token_current::text !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS email_change_token_new_idx ON auth.users USING btree (email_change_token_new)
    WHERE email_change_token_new::text !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS reauthentication_token_idx ON auth.users USING btree (reauthentication_token)
    WHERE reauthentication_token::text !~ '^[0-9 ]*$';
-- 20221215195500: e-mail unique only among non-SSO users (users_email_key dropped)
CREATE UNIQUE INDEX IF NOT EXISTS users_email_partial_key ON auth.users (email) WHERE (is_sso_user = false);
COMMENT ON INDEX auth.users_email_partial_key IS 'Auth: A partial unique index that applies only when is_sso_user is false';
-- 20240214120130_add_is_anonymous_column
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users USING btree (is_anonymous);

-- 20240612123726_enable_rls_update_grants: RLS on, and postgres may SELECT
-- and pass SELECT on.
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON auth.users TO postgres WITH GRANT OPTION;

-- JWT helpers as 20220224000811_update_auth_functions.up.sql (uid, role,
-- email) and 20220531120530_add_auth_jwt_function.up.sql (jwt, comments)
-- leave them: the per-claim setting first, then the request.jwt.claims JSON.
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

CREATE OR REPLACE FUNCTION auth.email() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

COMMENT ON FUNCTION auth.uid()   IS 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
COMMENT ON FUNCTION auth.role()  IS 'Deprecated. Use auth.jwt() -> ''role'' instead.';
COMMENT ON FUNCTION auth.email() IS 'Deprecated. Use auth.jwt() -> ''email'' instead.';

RESET ROLE;

-- Everything in auth to postgres and dashboard_user
-- (20211115181400_update-auth-permissions.sql, post-setup.sql).
GRANT ALL ON ALL TABLES    IN SCHEMA auth TO postgres, dashboard_user;
GRANT ALL ON ALL SEQUENCES IN SCHEMA auth TO postgres, dashboard_user;
GRANT ALL ON ALL ROUTINES  IN SCHEMA auth TO postgres, dashboard_user;

-- ---------------------------------------------------------------------------
-- Database-level grants, written for "postgres" in Supabase's scripts and
-- applied here to the current database: postgres (demote-postgres.sql),
-- dashboard_user (post-setup.sql), supabase_auth_admin
-- (20251121141100_supabase_auth_admin_db_grants.sql).
-- ---------------------------------------------------------------------------
DO $database_grants$
BEGIN
    EXECUTE format('GRANT ALL ON DATABASE %I TO postgres, dashboard_user', current_database());
    EXECUTE format('GRANT CREATE ON DATABASE %I TO supabase_auth_admin', current_database());
END
$database_grants$;

-- 20251105172723_grant_pg_reload_conf_to_postgres.sql (per-database catalog ACL).
GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO postgres;
