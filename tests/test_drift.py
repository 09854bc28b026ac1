"""scripts/drift: every kind of difference is a marked row; identical databases show none."""

from __future__ import annotations

import pytest

from chat_migrations.checks import drift

from .test_validate import assert_same_shape, documented_json, run_check


def drift_json(capsys, a, b, *extra: str):
    return run_check(capsys, drift, a.url, b.url, "--json", *extra)


def drifted(run) -> dict[tuple[str, str], dict]:
    return {(row["section"], row["object"]): row for row in run.json["rows"] if row["status"] != "Match"}


def test_two_identical_databases_show_no_drift(capsys, make_database):
    a, b = make_database("prod"), make_database("prod")
    run = drift_json(capsys, a, b)
    assert run.code == 0
    assert run.json["drift"] is False and drifted(run) == {}
    assert {row["section"] for row in run.json["rows"]} == {section.name for section in drift.SECTIONS}
    human = run_check(capsys, drift, a.url, b.url)
    assert f"**No drift**: all {run.json['summary']['compared']} compared objects match." in human.out
    assert "| Mismatch" not in human.out and "| Missing" not in human.out


def test_noise_is_not_drift(capsys, make_database):
    a, b = make_database("prod"), make_database("prod")
    b.execute(
        # The same function with other whitespace; a policy and an index re-created (new OIDs,
        # another creation order); grants given again in another order.
        "CREATE OR REPLACE FUNCTION public.get_latest_seq(p_chat_id uuid) RETURNS bigint LANGUAGE sql STABLE AS $$"
        "\n\tSELECT  coalesce(max(seq), 0)\n    FROM public.chat_messages   WHERE chat_id = p_chat_id;  $$;"
        "DROP POLICY chats_insert_creator ON public.chats;"
        "CREATE POLICY chats_insert_creator ON public.chats FOR INSERT TO authenticated WITH CHECK (created_by = auth.uid());"
        "DROP INDEX public.idx_chat_messages_status;"
        "CREATE INDEX idx_chat_messages_status ON public.chat_messages USING btree (status);"
        "REVOKE ALL ON public.chats FROM authenticated;"
        "GRANT UPDATE, INSERT ON public.chats TO authenticated; GRANT ALL ON public.chats TO authenticated;"
    )
    run = drift_json(capsys, a, b)
    assert run.code == 0, drifted(run)


GET_LATEST_SEQ = "public.get_latest_seq(uuid)"
RECREATE_GET_LATEST_SEQ = (
    f"DROP FUNCTION {GET_LATEST_SEQ}; "
    "CREATE FUNCTION public.get_latest_seq({arguments}) RETURNS {returns} LANGUAGE sql STABLE "
    "AS $$ SELECT coalesce(max(seq), 0)::{returns} FROM public.chat_messages WHERE chat_id = $1 $$; "
    f"GRANT EXECUTE ON FUNCTION {GET_LATEST_SEQ} TO authenticated, service_role"
)

# One difference each: (SQL run on B, section, object, status, attribute that differs).
DIFFERENCES = {
    "column type": ("ALTER TABLE public.chats ALTER COLUMN title TYPE varchar(200)",
                    "columns", "public.chats.title", "Mismatch", "type"),
    "column nullability": ("ALTER TABLE public.chats ALTER COLUMN is_group DROP NOT NULL",
                           "columns", "public.chats.is_group", "Mismatch", "nullable"),
    "column default": ("ALTER TABLE public.chat_messages ALTER COLUMN status SET DEFAULT 'delivered'",
                       "columns", "public.chat_messages.status", "Mismatch", "default"),
    "constraint missing": ("ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_status_check",
                           "constraints", "public.chat_messages.chat_messages_status_check", "Missing", None),
    "constraint not valid": (
        "ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_status_check; "
        "ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_status_check "
        "CHECK (status IN ('sent', 'delivered', 'read')) NOT VALID",
        "constraints", "public.chat_messages.chat_messages_status_check", "Mismatch", "validated"),
    "index definition": (
        "DROP INDEX public.idx_chat_messages_status; "
        "CREATE INDEX idx_chat_messages_status ON public.chat_messages (status) WHERE deleted_at IS NULL",
        "indexes", "public.chat_messages.idx_chat_messages_status", "Mismatch", "definition"),
    "index validity": ("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.idx_chat_messages_status'::regclass",
                       "indexes", "public.chat_messages.idx_chat_messages_status", "Mismatch", "valid"),
    "function arguments": (RECREATE_GET_LATEST_SEQ.format(arguments="p_chat uuid", returns="bigint"),
                           "functions", "public.get_latest_seq", "Mismatch", "arguments"),
    "function return type": (RECREATE_GET_LATEST_SEQ.format(arguments="p_chat_id uuid", returns="integer"),
                             "functions", "public.get_latest_seq", "Mismatch", "returns"),
    "function volatility": (f"ALTER FUNCTION {GET_LATEST_SEQ} VOLATILE",
                            "functions", "public.get_latest_seq", "Mismatch", "volatility"),
    "function security definer": (f"ALTER FUNCTION {GET_LATEST_SEQ} SECURITY DEFINER",
                                  "functions", "public.get_latest_seq", "Mismatch", "security_definer"),
    "function search_path": (f"ALTER FUNCTION {GET_LATEST_SEQ} SET search_path = ''",
                             "functions", "public.get_latest_seq", "Mismatch", "search_path"),
    "function body": (
        "CREATE OR REPLACE FUNCTION public.get_latest_seq(p_chat_id uuid) RETURNS bigint LANGUAGE sql STABLE AS $$ "
        "SELECT coalesce(max(seq), 1) FROM public.chat_messages WHERE chat_id = p_chat_id; $$",
        "functions", "public.get_latest_seq", "Mismatch", "body_digest"),
    "function missing": ("DROP FUNCTION public.get_unread_count(uuid, uuid)",
                         "functions", "public.get_unread_count", "Missing", None),
    "trigger disabled": ("ALTER TABLE public.chat_messages DISABLE TRIGGER trg_assign_message_seq",
                         "triggers", "public.chat_messages.trg_assign_message_seq", "Mismatch", "enabled"),
    "trigger missing": ("DROP TRIGGER trg_assign_message_seq ON public.chat_messages",
                        "triggers", "public.chat_messages.trg_assign_message_seq", "Missing", None),
    "replica identity": ("ALTER TABLE public.chat_messages REPLICA IDENTITY DEFAULT",
                         "replica_identity", "public.chat_messages", "Mismatch", "replica_identity"),
    "publication": ("ALTER PUBLICATION supabase_realtime DROP TABLE public.chat_participants",
                    "publications", "public.chat_participants", "Mismatch", "publications"),
    "rls flag": ("ALTER TABLE public.chats DISABLE ROW LEVEL SECURITY",
                 "rls", "public.chats", "Mismatch", "rls_enabled"),
    "policy": ("ALTER POLICY chats_insert_creator ON public.chats WITH CHECK (true)",
               "policies", "public.chats.chats_insert_creator", "Mismatch", "with_check"),
    "policy missing": ("DROP POLICY chats_select_participant ON public.chats",
                       "policies", "public.chats.chats_select_participant", "Missing", None),
    "grant": ("REVOKE UPDATE ON public.chats FROM authenticated",
              "grants", "table public.chats to authenticated", "Mismatch", "privileges"),
    "function grant": (f"REVOKE EXECUTE ON FUNCTION {GET_LATEST_SEQ} FROM service_role",
                       "grants", "function public.get_latest_seq(uuid) to service_role", "Missing", None),
}


# What postgres cannot do itself: an index made INVALID by hand stands in for a failed concurrent build.
AS_ANOTHER_ACTOR = {"index validity"}


@pytest.mark.parametrize("case", DIFFERENCES)
def test_each_kind_of_difference_is_one_marked_row(capsys, make_database, case):
    sql, section, obj, status, attribute = DIFFERENCES[case]
    a, b = make_database("prod"), make_database("prod")
    b.execute(sql, admin=case in AS_ANOTHER_ACTOR)
    run = drift_json(capsys, a, b)
    assert run.code == 1
    rows = drifted(run)
    # A dropped function takes its grants along: those rows are Missing too, and nothing else.
    grants_of_function = {key for key in rows if key[0] == "grants" and key[1].startswith(f"function {obj}(")}
    assert set(rows) - grants_of_function == {(section, obj)}, rows
    assert not grants_of_function or case == "function missing"
    row = rows[(section, obj)]
    assert row["status"] == status
    if status == "Mismatch":
        assert attribute in row["differences"], row
    else:
        assert row["missing_in"] == b.name
    human = run_check(capsys, drift, a.url, b.url, "--differences-only")
    assert human.code == 1
    table_rows = [line for line in human.out.splitlines() if line.startswith("| `")]
    assert len(table_rows) == len(rows)
    line = next(line for line in table_rows if line.startswith(f"| `{obj.replace('public.', '', 1)}` |"))
    assert line.rstrip(" |").endswith(
        f"Mismatch ({', '.join(row['differences'])})" if status == "Mismatch" else f"Missing in {b.name}"
    )


def test_the_observed_environments_show_the_plans_mismatches(capsys, make_database):
    staging, prod = make_database("staging"), make_database("prod")
    run = run_check(capsys, drift, "staging", "prod", "--json", urls={"staging": staging.url, "prod": prod.url})
    assert run.code == 1
    rows = drifted(run)
    for column in ("chat_participants.chat_id", "chat_participants.user_id", "chat_messages.chat_id", "chat_messages.sender_id"):
        assert rows[("columns", f"public.{column}")]["differences"] == ["nullable"]
    mark_read = rows[("functions", "public.mark_messages_as_read")]
    assert "returns" in mark_read["differences"]
    assert (mark_read["a"]["returns"], mark_read["b"]["returns"]) == ("void", "TABLE(updated_count bigint)")
    assert rows[("functions", "public.get_unread_count")]["missing_in"] == "staging"
    for index in ("idx_chat_messages_sender_id", "idx_chat_messages_reply_to"):
        assert rows[("indexes", f"public.chat_messages.{index}")]["missing_in"] == "staging"
    assert not any(section == "columns" and obj.startswith("public.chats.") for section, obj in rows)
    assert (run.json["a"]["label"], run.json["b"]["label"]) == ("staging", "prod")


def test_staging_and_prod_at_head_do_not_drift(capsys, make_database):
    staging, prod = make_database("staging", "head"), make_database("prod", "head")
    run = run_check(capsys, drift, "staging", "prod", "--json", urls={"staging": staging.url, "prod": prod.url})
    assert run.code == 0, drifted(run)
    assert run.json["a"]["identity"] == "marked as 'staging' (migration_meta.database_identity)"


def test_an_argument_that_is_neither_environment_nor_url_is_exit_2(capsys):
    run = run_check(capsys, drift, "production", "prod")
    assert run.code == 2
    assert "'production' is neither an environment (prod or staging) nor a postgresql:// URL" in run.err


def test_the_json_shape_is_the_documented_one(capsys, make_database):
    staging, prod = make_database("staging"), make_database("prod")
    run = run_check(capsys, drift, "staging", "prod", "--json", urls={"staging": staging.url, "prod": prod.url})
    assert run.json["command"] == "drift" and run.json["exit_code"] == run.code == 1
    assert_same_shape(run.json, documented_json("`scripts/drift staging prod --json`"))
    # Every row has the same keys, whatever its status (a and b: the attributes of its section).
    documented_row = documented_json("`scripts/drift staging prod --json`")["rows"][0]
    assert {tuple(sorted(row)) for row in run.json["rows"]} == {tuple(sorted(documented_row))}


# --- each difference classed (issue 18) -------------------------------------------------------

SENDER_SET_NULL = (
    "ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey; "
    "ALTER TABLE public.chat_messages ADD CONSTRAINT chat_messages_sender_id_fkey "
    "FOREIGN KEY (sender_id) REFERENCES auth.users (id) ON DELETE SET NULL"
)


def test_a_key_kept_nullable_by_its_set_null_foreign_key_is_explained_and_exits_0(capsys, make_database):
    # Before: at head, drift exited 1 on chat_messages.sender_id NOT NULL vs NULL.
    staging, prod = make_database("staging", "head"), make_database("prod")
    prod.execute(SENDER_SET_NULL)
    prod.alembic("-n", "prod", "upgrade", "head")
    urls = {"staging": staging.url, "prod": prod.url}
    run = run_check(capsys, drift, "staging", "prod", "--json", urls=urls)
    assert run.code == 0, drifted(run)
    rows = drifted(run)
    sender = rows[("columns", "public.chat_messages.sender_id")]
    assert sender["class"] == "explained" and "ON DELETE SET NULL" in sender["why"] and sender["why"].startswith("prod keeps")
    assert rows[("constraints", "public.chat_messages.chat_messages_sender_id_fkey")]["class"] == "explained"
    assert {row["class"] for row in rows.values()} == {"explained"}
    assert run.json["drift"] is False and run.json["summary"]["unexplained"] == 0
    human = run_check(capsys, drift, "staging", "prod", "--differences-only", urls=urls)
    assert human.code == 0 and "**No unexplained drift**" in human.out
    assert "Mismatch (nullable); explained: prod keeps it nullable on purpose" in human.out
    # The same nullable key without the SET NULL foreign key is drift.
    prod.execute("ALTER TABLE public.chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey")
    run = run_check(capsys, drift, "staging", "prod", "--json", urls=urls)
    assert run.code == 1 and drifted(run)[("columns", "public.chat_messages.sender_id")]["class"] == "unexplained"


def test_an_extra_nullable_column_or_index_on_one_side_is_harmless_an_extra_required_column_is_not(capsys, make_database):
    a, b = make_database("prod", "head"), make_database("prod", "head")
    b.execute("ALTER TABLE public.chats ADD COLUMN topic text; CREATE INDEX idx_chats_title ON public.chats (title)")
    run = drift_json(capsys, a, b)
    assert run.code == 0, drifted(run)
    rows = drifted(run)
    assert rows[("columns", "public.chats.topic")]["class"] == "harmless"
    assert rows[("indexes", "public.chats.idx_chats_title")]["class"] == "harmless"
    b.execute("ALTER TABLE public.chats ADD COLUMN owner_note text NOT NULL DEFAULT ''; "
              "ALTER TABLE public.chats ALTER COLUMN owner_note DROP DEFAULT")  # an insert without it fails
    run = drift_json(capsys, a, b)
    assert run.code == 1
    assert drifted(run)[("columns", "public.chats.owner_note")]["class"] == "unexplained"
    assert run.json["summary"]["unexplained"] == 1 and run.json["summary"]["harmless"] == 2


def test_what_a_revision_pending_on_one_side_does_is_explained(capsys, make_database):
    staging, prod = make_database("staging", "head"), make_database("prod")  # prod at its baseline
    run = run_check(capsys, drift, "staging", "prod", "--json", urls={"staging": staging.url, "prod": prod.url})
    assert run.code == 1  # the functions differ until prod is upgraded: nothing declares why yet
    rows = drifted(run)
    chat_id = rows[("columns", "public.chat_participants.chat_id")]
    assert chat_id["class"] == "explained" and "001_schema_alignment, pending there, sets it NOT NULL" in chat_id["why"]
    assert rows[("indexes", "public.chat_messages.idx_chat_messages_chat_created")]["class"] == "explained"
