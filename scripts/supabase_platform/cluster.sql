-- Cluster-wide part of the local Supabase platform: the roles a Supabase
-- project has, with their attributes, memberships and role settings.
--
-- Run ONCE per server, by the bootstrap superuser supabase_admin (initdb -U
-- supabase_admin), connected to database postgres. Idempotent: a role that
-- exists already is brought to the attributes below instead of created.
-- Plain SQL only (no psql meta-commands): the harness sends it as one string.
--
-- Sources (see docs/supabase-platform.md): supabase/postgres
-- migrations/db/init-scripts/*.sql and migrations/db/migrations/*.sql, and the
-- golden files nix/tests/expected/roles.out, z_15_roles.out, z_17_roles.out
-- that record the resulting roles.
--
-- The password of postgres is NOT set here (the harness does it).

-- Session-local helpers; pg_temp objects vanish with the session.
CREATE FUNCTION pg_temp.ensure_role(p_role text, p_attributes text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = p_role) THEN
        EXECUTE format('CREATE ROLE %I %s', p_role, p_attributes);
    ELSE
        EXECUTE format('ALTER ROLE %I %s', p_role, p_attributes);
    END IF;
END
$$;

CREATE FUNCTION pg_temp.ensure_member(p_granted text, p_member text, p_admin boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_auth_members m
        WHERE m.roleid = p_granted::regrole AND m.member = p_member::regrole
          AND (m.admin_option OR NOT p_admin)
    ) THEN
        EXECUTE format('GRANT %I TO %I%s', p_granted, p_member,
                       CASE WHEN p_admin THEN ' WITH ADMIN OPTION' ELSE '' END);
    END IF;
END
$$;

-- supabase_admin: 00000000000000-initial-schema.sql gives it every attribute
-- (it is the bootstrap superuser here already); settings as in roles.out.
ALTER ROLE supabase_admin WITH SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS;
ALTER ROLE supabase_admin SET search_path TO "$user", public, auth, extensions;
ALTER ROLE supabase_admin SET log_statement TO 'none';

-- The API roles (00000000000000-initial-schema.sql creates them NOINHERIT;
-- 20230529180330_alter_api_roles_for_inherit.sql makes them INHERIT).
SELECT pg_temp.ensure_role('anon',          'NOLOGIN INHERIT NOBYPASSRLS');
SELECT pg_temp.ensure_role('authenticated', 'NOLOGIN INHERIT NOBYPASSRLS');
SELECT pg_temp.ensure_role('service_role',  'NOLOGIN INHERIT BYPASSRLS');
-- Short timeouts for API roles (initial-schema).
ALTER ROLE anon          SET statement_timeout TO '3s';
ALTER ROLE authenticated SET statement_timeout TO '8s';

-- PostgREST's login role (initial-schema; supabase_admin membership revoked
-- by 20221103090837_revoke_admin.sql; timeouts by 20221028101028 and
-- 20231130133139).
SELECT pg_temp.ensure_role('authenticator', 'LOGIN NOINHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS');
SELECT pg_temp.ensure_member('anon',          'authenticator');
SELECT pg_temp.ensure_member('authenticated', 'authenticator');
SELECT pg_temp.ensure_member('service_role',  'authenticator');
ALTER ROLE authenticator SET statement_timeout TO '8s';
ALTER ROLE authenticator SET lock_timeout TO '8s';

-- Replication / read-only / ETL users (initial-schema; pg_monitor memberships
-- as z_15_roles.out and z_17_roles.out record them).
SELECT pg_temp.ensure_role('supabase_replication_admin', 'LOGIN REPLICATION');
SELECT pg_temp.ensure_role('supabase_read_only_user',    'LOGIN BYPASSRLS');
SELECT pg_temp.ensure_member('pg_read_all_data', 'supabase_read_only_user');
SELECT pg_temp.ensure_member('pg_monitor',       'supabase_read_only_user');
SELECT pg_temp.ensure_role('supabase_etl_admin', 'LOGIN REPLICATION');
SELECT pg_temp.ensure_member('pg_read_all_data', 'supabase_etl_admin');
SELECT pg_temp.ensure_member('pg_monitor',       'supabase_etl_admin');

-- GoTrue's role (00000000000001-auth-schema.sql; idle timeout by
-- 20220322085208_gotrue-session-limit.sql; log_statement as in roles.out).
-- CREATEROLE is kept: revoking it is only an open PR (supabase/postgres#2386).
SELECT pg_temp.ensure_role('supabase_auth_admin', 'LOGIN NOINHERIT CREATEROLE NOREPLICATION');
ALTER ROLE supabase_auth_admin SET search_path TO auth;
ALTER ROLE supabase_auth_admin SET idle_in_transaction_session_timeout TO 60000;
ALTER ROLE supabase_auth_admin SET log_statement TO 'none';

-- Storage API's role (00000000000002-storage-schema.sql); its API-role
-- memberships were replaced by authenticator in
-- 20231013070755_grant_authenticator_to_supabase_storage_admin.sql.
SELECT pg_temp.ensure_role('supabase_storage_admin', 'LOGIN NOINHERIT CREATEROLE NOREPLICATION');
SELECT pg_temp.ensure_member('authenticator', 'supabase_storage_admin');
ALTER ROLE supabase_storage_admin SET search_path TO storage;
ALTER ROLE supabase_storage_admin SET log_statement TO 'none';

-- Realtime's role (init-scripts/00000000000003-realtime-schema.sql).
SELECT pg_temp.ensure_role('supabase_realtime_admin', 'LOGIN NOINHERIT CREATEROLE REPLICATION');
SELECT pg_temp.ensure_member('anon',          'supabase_realtime_admin');
SELECT pg_temp.ensure_member('authenticated', 'supabase_realtime_admin');
SELECT pg_temp.ensure_member('service_role',  'supabase_realtime_admin');
ALTER ROLE supabase_realtime_admin SET search_path TO public, extensions, realtime;

-- Dashboard role (00000000000003-post-setup.sql).
SELECT pg_temp.ensure_role('dashboard_user', 'NOLOGIN NOSUPERUSER CREATEDB CREATEROLE REPLICATION');

-- PgBouncer's auth user (ansible/files/pgbouncer_config/pgbouncer_auth_schema.sql).
SELECT pg_temp.ensure_role('pgbouncer', 'LOGIN');

-- postgres, as it is after 10000000000000_demote-postgres.sql: no superuser.
SELECT pg_temp.ensure_role('postgres', 'LOGIN NOSUPERUSER INHERIT CREATEDB CREATEROLE REPLICATION BYPASSRLS');
-- search_path from post-setup.sql; the backslash is Supabase's own quirk
-- (roles.out records it), so "$user" is never expanded for postgres there.
ALTER ROLE postgres SET search_path TO "\$user", public, extensions;

-- Memberships of postgres: API roles (20230201083204_grant_auth_roles_to_postgres),
-- pg_monitor (20230306081037), pg_read_all_data and pg_signal_backend
-- (20240606060239_grant_predefined_roles_to_postgres). Not supabase_auth_admin
-- nor supabase_storage_admin: revoked by 20240627101908 and
-- 20250421084701_revoke_admin_roles_from_postgres.
-- On 16+ the CREATEROLE rules need ADMIN OPTION to manage these roles:
-- 20250605172253_grant_with_admin_to_postgres_16_and_above.sql, and
-- z_17_roles.out (admin on all of them, authenticator too, plus
-- pg_create_subscription without admin).
DO $postgres_members$
DECLARE
    v16 boolean := current_setting('server_version_num')::int >= 160000;
    granted text;
BEGIN
    FOREACH granted IN ARRAY ARRAY['anon', 'authenticated', 'service_role',
                                   'pg_monitor', 'pg_read_all_data', 'pg_signal_backend'] LOOP
        PERFORM pg_temp.ensure_member(granted, 'postgres', v16);
    END LOOP;
    IF v16 THEN
        PERFORM pg_temp.ensure_member('authenticator', 'postgres', true);
        PERFORM pg_temp.ensure_member('pg_create_subscription', 'postgres', false);
    END IF;
END
$postgres_members$;

DROP FUNCTION pg_temp.ensure_member(text, text, boolean);
DROP FUNCTION pg_temp.ensure_role(text, text);
