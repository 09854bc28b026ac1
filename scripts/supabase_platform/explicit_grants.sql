-- Supabase's Data API "secure by default" (changelog 45329): new projects from
-- 30 May 2026, and every existing project on 30 Oct 2026, give anon,
-- authenticated and service_role nothing on the tables, sequences and
-- functions postgres creates in public until a GRANT says so.
--
-- Run by supabase_admin in a database built by database.sql, AFTER whatever
-- schema the project had already (objects keep the grants they were created
-- with; only new ones get none). Idempotent.
--
-- Only postgres's default privileges change: those of supabase_admin in public
-- stay, and postgres cannot change them (Supabase's troubleshooting page "Can't
-- change the default privileges of supabase_admin in the public schema");
-- they reach only what supabase_admin itself creates there.
-- PUBLIC keeps EXECUTE on new functions: that is PostgreSQL's own default.
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    REVOKE ALL ON TABLES FROM anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    REVOKE ALL ON SEQUENCES FROM anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    REVOKE ALL ON FUNCTIONS FROM anon, authenticated, service_role;
