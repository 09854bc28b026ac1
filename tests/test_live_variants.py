"""Live schemas differ from the baselines: the migration works on the variants, or refuses before changing anything.

Each variant is a database written the way a team writes it in the SQL
editor (as postgres, under Supabase's default privileges), then adopted.
Every test here failed on the project as it was before it met real Supabase
(the numbered defects of the issue about it).
"""

from __future__ import annotations

import psycopg2
import pytest

from chat_migrations.checks import validate

from .conftest import ENVIRONMENTS, assert_same_schema, head_of
from .supabase_api import new_chat, new_users


def upgrade_and_roll_back(db, environment: str) -> None:
    """Upgrade to head, then back to the baseline: the schema must be exactly what it was."""
    before = db.schema()
    db.alembic("-n", environment, "upgrade", "head")
    assert db.revision() == head_of(environment)
    db.alembic("-n", environment, "downgrade", f"000_{environment}_baseline")
    assert_same_schema(db.schema(), before, f"{environment} variant after upgrade and rollback")


def delete_account(db, user: str) -> None:
    """What GoTrue does when a user deletes their account (auth.admin.deleteUser): as supabase_auth_admin."""
    conn = db.admin_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE supabase_auth_admin")
            cur.execute("DELETE FROM auth.users WHERE id = %s", (user,))
    finally:
        conn.close()


def sent_a_message(db) -> str:
    sender, other = new_users(db, 2)
    chat = new_chat(db, [sender, other])
    db.execute(
        "INSERT INTO public.chat_messages (chat_id, sender_id, message_text) VALUES (%s, %s, 'bye')", (chat, sender)
    )
    return sender


# -- defect 2: a column the plan never names -------------------------------------------------------

WITHOUT_UPDATED_AT = """
CREATE OR REPLACE FUNCTION public.mark_messages_as_delivered(p_chat_id uuid, p_user_id uuid)
RETURNS TABLE(updated_count bigint) LANGUAGE plpgsql SECURITY DEFINER AS $function$
DECLARE v_updated bigint;
BEGIN
    UPDATE public.chat_messages SET status = 'delivered'
     WHERE chat_id = p_chat_id AND sender_id IS DISTINCT FROM p_user_id AND status = 'sent' AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    RETURN QUERY SELECT v_updated;
END;
$function$;
CREATE OR REPLACE FUNCTION public.mark_messages_as_read(p_chat_id uuid, p_user_id uuid)
RETURNS {read_returns} LANGUAGE plpgsql SECURITY DEFINER AS $function$
DECLARE v_updated bigint;
BEGIN
    UPDATE public.chat_messages SET status = 'read'
     WHERE chat_id = p_chat_id AND sender_id IS DISTINCT FROM p_user_id AND status <> 'read' AND deleted_at IS NULL;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    UPDATE public.chat_participants SET last_read_at = now() WHERE chat_id = p_chat_id AND user_id = p_user_id;
    {read_return}
END;
$function$;
ALTER TABLE public.chat_messages DROP COLUMN updated_at;
"""


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_schema_without_updated_at_upgrades_and_its_functions_still_run(make_database, frontend, environment):
    db = make_database(environment)
    returns = ("TABLE(updated_count bigint)", "RETURN QUERY SELECT v_updated;") if environment == "prod" else ("void", "")
    db.execute(WITHOUT_UPDATED_AT.replace("{read_returns}", returns[0]).replace("{read_return}", returns[1]))
    upgrade_and_roll_back(db, environment)
    # After the plan's phase 2 (staging) and at head, the frontend's mark-as-read still works.
    first = "002_function_updates_staging" if environment == "staging" else "100_converged"
    db.alembic("-n", environment, "upgrade", first)
    sender, reader = new_users(db, 2)
    chat = new_chat(db, [sender, reader])
    frontend(db, sender).send(chat, "hello")
    assert db.query("SELECT * FROM public.mark_messages_as_read(%s, %s)", (chat, reader)) == [(1,)]
    db.alembic("-n", environment, "upgrade", "head")
    frontend(db, sender).send(chat, "again")
    assert frontend(db, reader).rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=reader) == [{"updated_count": 1}]


# -- defect 4: NOT NULL meets ON DELETE SET NULL ---------------------------------------------------

SENDER_SET_NULL = """
ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey;
ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_sender_id_fkey
    FOREIGN KEY (sender_id) REFERENCES auth.users (id) ON DELETE SET NULL;
{nullable}
"""


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_deleting_an_account_that_sent_messages_works_before_and_after_the_migration(make_database, environment):
    # Prod's keys are nullable; staging's sender_id is NOT NULL in the baseline, so there a
    # SET NULL key is the live variant where it was made nullable to keep messages.
    db = make_database(environment)
    db.execute(SENDER_SET_NULL.replace(
        "{nullable}", "ALTER TABLE public.chat_messages ALTER COLUMN sender_id DROP NOT NULL;" if environment == "staging" else ""
    ))
    delete_account(db, sent_a_message(db))  # works before
    before = db.schema()
    result = db.alembic("-n", environment, "upgrade", "head")
    assert "public.chat_messages.sender_id stays nullable" in result.output
    assert db.scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'public.chat_messages'::regclass AND attname = 'sender_id'"
    ) is False
    assert db.scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'public.chat_messages'::regclass AND attname = 'chat_id'"
    ) is True
    sender = sent_a_message(db)
    delete_account(db, sender)  # and after: the message stays, its sender unknown
    assert db.scalar("SELECT count(*) FROM public.chat_messages WHERE sender_id IS NULL AND message_text = 'bye'") == 2
    db.alembic("-n", environment, "downgrade", f"000_{environment}_baseline")
    assert_same_schema(db.schema(), before, f"{environment} with a SET NULL sender, rolled back")


def test_without_the_set_null_rule_not_null_would_break_account_deletion(make_database):
    # The defect itself, on purpose: what 005 did before, and why it must not.
    db = make_database("prod")
    db.execute(SENDER_SET_NULL.replace("{nullable}", ""))
    db.alembic("-n", "prod", "upgrade", "100_converged")
    db.execute("ALTER TABLE public.chat_messages ALTER COLUMN sender_id SET NOT NULL")
    with pytest.raises(psycopg2.errors.NotNullViolation):
        delete_account(db, sent_a_message(db))


# -- defect 5: converge definitions, not names -----------------------------------------------------


def test_a_partial_reply_index_on_prod_is_rebuilt_and_restored_exactly(make_database):
    prod, staging = make_database("prod"), make_database("staging")
    prod.execute(
        "DROP INDEX public.idx_chat_messages_reply_to; "
        "CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages (reply_to_message_id) "
        "WHERE reply_to_message_id IS NOT NULL"
    )
    before = prod.schema()
    prod.alembic("-n", "prod", "upgrade", "head")
    staging.alembic("-n", "staging", "upgrade", "head")
    definition = "SELECT pg_get_indexdef('public.idx_chat_messages_reply_to'::regclass)"
    assert prod.scalar(definition) == staging.scalar(definition)
    assert "WHERE" not in prod.scalar(definition)
    assert_same_schema(prod.schema(), staging.schema(), "prod with a partial index vs staging, at head")
    prod.alembic("-n", "prod", "downgrade", "000_prod_baseline")
    assert_same_schema(prod.schema(), before, "prod with a partial index, rolled back")
    assert prod.scalar("SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_migration\\_new'") == 0


def test_the_sql_script_refuses_an_index_of_another_definition_before_building(make_database, psql):
    prod = make_database("prod")
    prod.execute(
        "DROP INDEX public.idx_chat_messages_reply_to; "
        "CREATE INDEX idx_chat_messages_reply_to ON public.chat_messages (reply_to_message_id) "
        "WHERE reply_to_message_id IS NOT NULL"
    )
    prod.alembic("-n", "prod", "upgrade", "005_prod_message_keys_not_null")  # where the script starts
    script = prod.alembic("-n", "prod", "upgrade", "005_prod_message_keys_not_null:006_prod_reply_index_definition", "--sql").stdout
    before = prod.schema()
    result = psql(prod, script, check=False)
    assert result.returncode != 0 and "exists with another definition" in result.stderr
    assert prod.schema() == before


# -- defect 6 and 9: least privilege under Supabase's default privileges --------------------------


def as_role(db, role: str, statement: str, user: str | None = None) -> None:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"SET LOCAL ROLE {role}")
            if user:
                cur.execute("SELECT set_config('request.jwt.claims', %s, true)", (f'{{"sub": "{user}"}}',))
            cur.execute(statement)
            cur.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_observed_schema_lets_anon_truncate_the_messages(make_database, environment):
    # Supabase's default privileges: what the migration closes (and RLS never covered).
    as_role(make_database(environment), "anon", "TRUNCATE public.chat_messages")


@pytest.mark.parametrize(
    "role, statement",
    [
        ("anon", "TRUNCATE public.chat_messages"),
        ("anon", "TRUNCATE public.chats CASCADE"),
        ("anon", "SELECT count(*) FROM public.chat_messages"),
        ("authenticated", "TRUNCATE public.chat_messages"),
        ("authenticated", "DELETE FROM public.chat_messages"),
        ("authenticated", "DELETE FROM public.chat_participants"),
        ("authenticated", "UPDATE public.chats SET title = 'mine'"),
        ("authenticated", "INSERT INTO public.chat_participants (chat_id, user_id) SELECT id, created_by FROM public.chats LIMIT 1"),
        ("authenticated", "CREATE TRIGGER t BEFORE INSERT ON public.chat_messages FOR EACH ROW EXECUTE FUNCTION public.assign_message_seq()"),
        ("anon", "SELECT public.get_unread_count(gen_random_uuid(), gen_random_uuid())"),
        ("anon", "SELECT public.get_latest_seq(gen_random_uuid())"),
    ],
)
def test_at_head_the_api_roles_hold_only_what_the_contract_needs(head, role, statement):
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role(head, role, statement, user="00000000-0000-0000-0000-000000000001")


def test_between_002_and_103_anon_cannot_execute_the_unread_count(make_database):
    db = make_database("staging")
    db.alembic("-n", "staging", "upgrade", "002_function_updates_staging")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role(db, "anon", "SELECT public.get_unread_count(gen_random_uuid(), gen_random_uuid())")
    as_role(db, "authenticated", "SELECT public.get_unread_count(gen_random_uuid(), gen_random_uuid())")


# -- everything at once: a hand-made project -------------------------------------------------------

HAND_MADE = """
ALTER TABLE public.chat_messages ADD COLUMN edited boolean NOT NULL DEFAULT false;
COMMENT ON TABLE public.chat_messages IS 'messages, see the wiki';
ALTER TABLE public.chat_messages RENAME CONSTRAINT chat_messages_status_check TO status_values;
ALTER TABLE public.chats ALTER COLUMN title SET DEFAULT 'untitled';
CREATE INDEX idx_chat_messages_edited ON public.chat_messages (chat_id) WHERE edited;
CREATE POLICY chat_messages_delete_own ON public.chat_messages FOR DELETE TO authenticated
    USING (sender_id = auth.uid());
"""


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_hand_made_project_upgrades_validates_and_rolls_back_exactly(make_database, environment):
    db = make_database(environment)
    db.execute(HAND_MADE)
    before = db.schema()
    db.alembic("-n", environment, "upgrade", "head")
    assert validate.main(["-n", environment], urls={environment: db.url}) == 0
    assert "edited boolean" in db.schema()  # an unknown column is kept, and is no failure
    db.alembic("-n", environment, "downgrade", f"000_{environment}_baseline")
    assert_same_schema(db.schema(), before, f"hand-made {environment}, rolled back")


# -- defect 1: adoption as postgres ---------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_upgrading_a_never_adopted_database_refuses_before_creating_anything(make_database, environment):
    db = make_database(environment)
    db.execute("DROP SCHEMA migration_meta CASCADE")
    before = db.schema()
    result = db.alembic("-n", environment, "-x", f"mark_as={environment}", "upgrade", "head", check=False)
    assert result.returncode != 0
    assert "adopt it first" in result.output and f"scripts/adopt -n {environment}" in result.output
    assert db.scalar("SELECT to_regnamespace('migration_meta') IS NULL")
    assert db.schema() == before


def test_stamping_refuses_a_database_that_differs_blockingly(make_database):
    db = make_database("prod")
    db.execute("DROP SCHEMA migration_meta CASCADE; ALTER TABLE public.chat_messages DROP COLUMN created_at CASCADE")
    result = db.alembic("-n", "prod", "-x", "mark_as=prod", "stamp", "000_prod_baseline", check=False)
    assert result.returncode != 0 and "cannot adopt" in result.output and "scripts/adopt -n prod" in result.output
    assert db.scalar("SELECT to_regnamespace('migration_meta') IS NULL")
