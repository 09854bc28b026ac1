"""Security of the messaging functions and tables at head, tried as the API's callers would.

Every abuse is attempted through ``Frontend`` (Supabase's roles and JWT
claims, never the owner) and must fail without changing anything. The lint
rules (tests/supabase_lint.py) run on both environments; the abuses run on
prod, whose schema at head equals staging's (tests/test_migrations.py).
"""

from __future__ import annotations

import psycopg2.errors
import pytest

from chat_migrations.runtime.promises import Function
from chat_migrations.schema import history
from chat_migrations.schema import messaging_functions
from chat_migrations.harness.fingerprints import first_difference

from . import supabase_lint
from .supabase_api import new_chat, new_users

# Runs on both Supabase platforms in CI (docs/testing.md).
pytestmark = pytest.mark.platform

PROD = "prod"
# The functions taking p_user_id: the caller may pass only their own id.
ACTING_AS_A_USER = ("mark_messages_as_read", "mark_messages_as_delivered", "get_unread_count")


@pytest.fixture
def prod_head(make_database):
    return make_database(PROD, "head")


@pytest.fixture
def chat_of_two(prod_head, frontend):
    """Alice and Bob in a chat with two messages each way; Mallory signed in, in another chat."""
    alice, bob, mallory = new_users(prod_head, 3)
    chat = new_chat(prod_head, [alice, bob])
    new_chat(prod_head, [mallory, bob])
    for sender in (alice, bob, alice, bob):
        frontend(prod_head, sender).send(chat, "hello")
    return prod_head, chat, alice, bob, mallory


def chat_state(db, chat):
    """Everything a mark function or an update could change in the chat."""
    return (
        db.query("SELECT id, status, seq, message_text, updated_at FROM public.chat_messages WHERE chat_id = %s ORDER BY id", (chat,)),
        db.query("SELECT user_id, last_read_at FROM public.chat_participants WHERE chat_id = %s ORDER BY user_id", (chat,)),
    )


def refused(call, message: str = "") -> str:
    """Run ``call``; it must fail with insufficient_privilege (42501). Returns the error text."""
    with pytest.raises(psycopg2.errors.InsufficientPrivilege) as failure:
        call()
    assert message in str(failure.value)
    return str(failure.value)


def test_supabase_lint_rules_find_nothing_on_the_messaging_objects(head):
    found = supabase_lint.findings(head)
    # Documented exceptions: SECURITY DEFINER functions that check their caller first.
    allowed = {
        (signature, "SECURITY DEFINER and executable by authenticated")
        for signature in messaging_functions.CALLER_CHECKED_SECURITY_DEFINER
    }
    assert set(found.pop("authenticated_security_definer_function_executable", [])) == allowed
    assert found == {}


def test_the_lint_rules_find_the_observed_schemas_problems(make_database):
    db = make_database(PROD)
    db.alembic("-n", PROD, "upgrade", "100_converged")
    found = supabase_lint.findings(db)
    functions = {"public.assign_message_seq()", "public.get_latest_seq(uuid)", *messaging_functions.API_FUNCTIONS}
    assert {name for name, _ in found["function_search_path_mutable"]} == functions
    definers = {messaging_functions.MARK_MESSAGES_AS_READ, messaging_functions.MARK_MESSAGES_AS_DELIVERED,
                messaging_functions.GET_UNREAD_COUNT}
    # Supabase's default privileges let anon execute every one; 007 closed get_unread_count already.
    assert {name for name, _ in found["anon_security_definer_function_executable"]} == definers - {
        messaging_functions.GET_UNREAD_COUNT
    }
    assert {name for name, _ in found["authenticated_security_definer_function_executable"]} == definers
    assert len(found["auth_rls_initplan"]) == 7


BREAKAGES = {
    "rls_disabled_in_public": ("ALTER TABLE public.chats DISABLE ROW LEVEL SECURITY", "public.chats"),
    "policy_exists_rls_disabled": ("ALTER TABLE public.chats DISABLE ROW LEVEL SECURITY", "public.chats"),
    "rls_enabled_no_policy": (
        "DROP POLICY chat_participants_select_own ON public.chat_participants;"
        "DROP POLICY chat_participants_update_own ON public.chat_participants",
        "public.chat_participants",
    ),
    "unindexed_foreign_keys": (
        "DROP INDEX public.idx_chat_messages_reply_to", "public.chat_messages.chat_messages_reply_to_message_id_fkey"
    ),
    "duplicate_index": ("CREATE INDEX idx_copy ON public.chat_messages (sender_id)", "public.chat_messages"),
    "auth_rls_initplan": (
        "CREATE POLICY chats_update_creator ON public.chats FOR UPDATE TO authenticated "
        "USING (created_by = (SELECT auth.uid())) WITH CHECK (created_by = auth.uid())",
        "public.chats policy chats_update_creator",
    ),
    "multiple_permissive_policies": (
        "CREATE POLICY chats_select_all ON public.chats FOR SELECT TO PUBLIC USING (is_group)",
        "public.chats authenticated SELECT",
    ),
    "rls_policy_always_true": (
        "CREATE POLICY chat_messages_delete_any ON public.chat_messages FOR DELETE TO authenticated USING (true)",
        "public.chat_messages policy chat_messages_delete_any",
    ),
    "function_search_path_mutable": (
        "ALTER FUNCTION public.get_latest_seq(uuid) RESET search_path", messaging_functions.GET_LATEST_SEQ
    ),
    "anon_security_definer_function_executable": (
        "GRANT EXECUTE ON FUNCTION public.mark_messages_as_read(uuid, uuid) TO PUBLIC",
        messaging_functions.MARK_MESSAGES_AS_READ,
    ),
}


def test_each_lint_rule_finds_what_it_looks_for(prod_head):
    assert set(BREAKAGES) | {"authenticated_security_definer_function_executable"} == set(supabase_lint.RULES)
    prod_head.execute(";".join(statement for statement, _ in BREAKAGES.values()))
    found = supabase_lint.findings(prod_head)
    for rule, (_, offender) in BREAKAGES.items():
        assert offender in {name for name, _ in found.get(rule, [])}, f"{rule} missed {offender}"


def test_functions_pin_search_path_and_none_is_executable_by_anon_or_public(prod_head):
    rows = prod_head.query(
        """
        SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig,
               has_function_privilege('anon', p.oid, 'EXECUTE'),
               EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee = 0)
          FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
        """
    )
    # Exactly the functions the revisions promise at head, judged by what they promise.
    promised = {f.signature.removeprefix("public.").replace(" ", ""): f for f in history.promised(PROD).of(Function)}
    assert {function.replace(" ", "") for function, *_ in rows} == set(promised)
    for function, security_definer, config, anon_executes, public_executes in rows:
        assert config == ["search_path=\"\""], function
        if promised[function.replace(" ", "")].result != "trigger":  # a trigger function cannot be called at all
            assert not anon_executes and not public_executes, function
        assert not security_definer or function.startswith("mark_messages_as_"), function


def test_anon_cannot_call_any_messaging_function(chat_of_two, frontend):
    db, chat, alice, *_ = chat_of_two
    anon = frontend(db, None, role="anon")
    before = chat_state(db, chat)
    calls = [(function, {"p_chat_id": chat, "p_user_id": alice}) for function in ACTING_AS_A_USER]
    for function, arguments in [*calls, ("get_latest_seq", {"p_chat_id": chat})]:
        refused(lambda: anon.rpc(function, **arguments), f"permission denied for function {function}")
    # Not even reachable: nobody but its owner may execute the trigger function.
    refused(lambda: anon.query("SELECT public.assign_message_seq()"), "permission denied for function assign_message_seq")
    assert chat_state(db, chat) == before


def test_a_caller_cannot_act_as_another_user(chat_of_two, frontend):
    db, chat, alice, bob, _ = chat_of_two
    as_alice = frontend(db, alice)
    before = chat_state(db, chat)
    for function in ACTING_AS_A_USER:
        error = refused(lambda: as_alice.rpc(function, p_chat_id=chat, p_user_id=bob), "can act only as themselves")
        assert f"{function}: p_user_id {bob} is not the signed-in user ({alice})" in error
    # Signed in without a user id (a JWT without sub) is nobody.
    refused(lambda: frontend(db, None).rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob))
    assert chat_state(db, chat) == before


def test_a_non_participant_can_neither_read_nor_mark_a_chat(chat_of_two, frontend):
    db, chat, _, _, mallory = chat_of_two
    as_mallory = frontend(db, mallory)
    before = chat_state(db, chat)
    for function in ACTING_AS_A_USER:
        refused(lambda: as_mallory.rpc(function, p_chat_id=chat, p_user_id=mallory),
                f"{function}: the signed-in user is not a participant of chat {chat}")
    refused(lambda: as_mallory.rpc("get_latest_seq", p_chat_id=chat), "not a participant")
    assert as_mallory.query("SELECT * FROM public.chat_messages WHERE chat_id = %s", (chat,)) == []
    assert as_mallory.query("SELECT * FROM public.chats WHERE id = %s", (chat,)) == []
    refused(lambda: as_mallory.send(chat, "let me in"), "row-level security")
    # Nor can a participant row be moved into the chat (only last_read_at is the user's to change).
    refused(lambda: as_mallory.query("UPDATE public.chat_participants SET chat_id = %s WHERE user_id = %s",
                                     (chat, mallory)), "permission denied")
    assert chat_state(db, chat) == before


def test_a_participant_cannot_change_another_users_message_through_the_table(chat_of_two, frontend):
    db, chat, alice, bob, _ = chat_of_two
    as_bob = frontend(db, bob)
    alices = db.scalar("SELECT id FROM public.chat_messages WHERE chat_id = %s AND sender_id = %s LIMIT 1", (chat, alice))
    before = chat_state(db, chat)
    # Status, seq and sender belong to the server and the mark functions, for everyone's messages.
    for change in ("status = 'read'", "seq = 1000", "sender_id = %(me)s", "created_at = now()", "chat_id = chat_id"):
        refused(lambda: as_bob.query(f"UPDATE public.chat_messages SET {change} WHERE id = %(id)s",
                                     {"id": alices, "me": bob}), "permission denied for table chat_messages")
    # Editing someone else's message finds no row to change.
    assert as_bob.query("UPDATE public.chat_messages SET message_text = 'edited' WHERE id = %s RETURNING id",
                        (alices,)) == []
    assert chat_state(db, chat) == before
    # The sender edits and deletes their own.
    assert len(as_bob.query("UPDATE public.chat_messages SET message_text = 'typo fixed', deleted_at = now() "
                            "WHERE chat_id = %s AND sender_id = %s RETURNING id", (chat, bob))) == 2


def test_service_role_acts_for_anyone(chat_of_two, frontend):
    db, chat, alice, bob, mallory = chat_of_two
    service = frontend(db, None, role="service_role")
    assert service.rpc("get_unread_count", p_chat_id=chat, p_user_id=alice) == [{"get_unread_count": 2}]
    assert service.rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=alice) == [{"updated_count": 2}]
    assert service.rpc("mark_messages_as_delivered", p_chat_id=chat, p_user_id=mallory) == [{"updated_count": 2}]
    assert service.rpc("get_latest_seq", p_chat_id=chat) == [{"get_latest_seq": 4}]
    assert len(service.query("SELECT * FROM public.chat_messages WHERE chat_id = %s", (chat,))) == 4


def test_the_observed_functions_let_anyone_act_for_anyone(make_database, frontend):
    # Why 103 exists, and proof that the abuse tests above can fail.
    db = make_database(PROD)
    db.alembic("-n", PROD, "upgrade", "100_converged")
    alice, bob, mallory = new_users(db, 3)
    chat = new_chat(db, [alice, bob])
    frontend(db, alice).send(chat, "private")
    assert frontend(db, mallory).rpc("mark_messages_as_read", p_chat_id=chat, p_user_id=bob) == [{"updated_count": 1}]
    # Supabase's default privileges let anon run the SECURITY DEFINER mark functions for anyone.
    frontend(db, alice).send(chat, "again")
    assert frontend(db, None, role="anon").rpc("mark_messages_as_delivered", p_chat_id=chat, p_user_id=bob) == [
        {"updated_count": 1}
    ]


def test_the_observed_prod_lets_anon_count_anyones_unread_messages(make_database, frontend):
    # Why 007 exists (and 002 narrows its new function the same way on staging).
    db = make_database(PROD)
    alice, bob = new_users(db, 2)
    chat = new_chat(db, [alice, bob])
    assert frontend(db, None, role="anon").rpc("get_unread_count", p_chat_id=chat, p_user_id=bob) == [{"get_unread_count": 0}]
    db.alembic("-n", PROD, "upgrade", "007_prod_unread_count_privileges")
    refused(lambda: frontend(db, None, role="anon").rpc("get_unread_count", p_chat_id=chat, p_user_id=bob))


def test_rolling_back_a_database_stamped_past_the_security_revision_restores_the_converged_state(make_database):
    # No snapshot to restore (stamped, not upgraded): the downgrade falls back to
    # the baseline's policies, grants and functions, which are the converged ones.
    db = make_database(PROD)
    db.alembic("-n", PROD, "upgrade", "102_unread_count_index")
    before = db.schema()
    db.alembic("-n", PROD, "upgrade", "103_messaging_security")
    db.execute("DELETE FROM migration_meta.rollback_snapshots WHERE revision = '103_messaging_security'")
    db.alembic("-n", PROD, "downgrade", "-1")
    difference = first_difference(before, db.schema())
    assert not difference, difference
