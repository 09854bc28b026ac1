"""What a user types, tried carelessly: every command stays one line, exits as documented, never prints a password.

A login whose password holds every URL-special character is made by the
platform's superuser (as a Supabase project's password can be); the real
commands then run with it in every form the README accepts, succeeding and
failing, as text and as JSON, and all their output is searched for it.
Then a property-based test (hypothesis) throws generated URLs, .env.local
files, -x settings and revision arguments at the real alembic command line:
no traceback, the documented exit code, the secret never printed, nothing
changed when the command refuses.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat_migrations.checks import adopt, drift, preflight, smoke, validate
from chat_migrations.harness import alembic_cli
from chat_migrations.runtime.environments import load_environments

# Every character that means something in a URL, a shell or a .env file.
SECRET = "p/w?x#y@z:%&=+ $!'\"\\;sEcReT"
SECRET_PIECES = ("sEcReT", quote(SECRET, safe=""))


@pytest.fixture
def special_login(cluster, make_database):
    """A prod database and a login for it whose password is SECRET (acting as postgres, like the pooler's user)."""
    db = make_database("prod")
    db.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'careful_operator') THEN "
        "CREATE ROLE careful_operator LOGIN; END IF; END $$; GRANT postgres TO careful_operator; "
        "ALTER ROLE careful_operator SET role = 'postgres'",
        admin=True,
    )
    db.execute("ALTER ROLE careful_operator PASSWORD %s", (SECRET,), admin=True)
    url = f"postgresql://careful_operator:{quote(SECRET, safe='')}@127.0.0.1:{cluster.port}/{db.name}"
    return db, url


def assert_no_secret(output: str) -> None:
    for piece in SECRET_PIECES:
        assert piece not in output, output


def in_process(command, *args: str, urls) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = command.main(list(args), urls=urls)
    return code, out.getvalue()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_no_command_prints_the_password_succeeding_or_failing(special_login, scheme):
    db, url = special_login
    url = url.replace("postgresql://", f"{scheme}://", 1)
    wrong = url.replace(quote(SECRET, safe=""), quote(SECRET[::-1], safe=""))
    outputs = []
    for args in (["upgrade", "head"], ["current"], ["downgrade", "-1"], ["history"]):
        for candidate in (url, wrong):
            result = alembic_cli.run("-n", "prod", *args, urls={"prod": candidate}, check=False)
            outputs.append(result.output)
    for command in (validate, preflight, adopt, smoke):
        for candidate in (url, wrong):
            for json_flag in ([], ["--json"]):
                outputs.append(in_process(command, "-n", "prod", *json_flag, urls={"prod": candidate})[1])
    for candidate in (url, wrong):
        outputs.append(in_process(drift, candidate, candidate, "--json", urls={})[1])
    for output in outputs:
        assert_no_secret(output)
        assert "Traceback" not in output
    # The wrong password really was refused, the right one really connected.
    assert any("password authentication failed" in output for output in outputs)
    assert db.revision() is not None


# -- the property test -----------------------------------------------------------------------------

def run(cwd, *args: str, url: str | None) -> tuple[int, str]:
    result = alembic_cli.run_in_process(*args, urls=None if url is None else {"prod": url}, check=False, cwd=cwd)
    return result.returncode, result.output


def state(db) -> tuple:
    """What a refusal must not change: revision, marker, and a fingerprint of the chat schema's catalog."""
    return (
        db.revision(),
        db.scalar("SELECT string_agg(environment, ',') FROM migration_meta.database_identity"),
        db.scalar(
            "SELECT md5(string_agg(c.relname || ':' || c.relkind::text || ':' || coalesce(c.relacl::text, '') || ':' "
            "|| (SELECT string_agg(a.attname || a.attnotnull, ',' ORDER BY a.attnum) FROM pg_attribute a "
            "WHERE a.attrelid = c.oid), '|' ORDER BY c.relname)) FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace"
        ),
    )


X_KEYS = ["lock_timeout", "lock_attempts", "statement_timeout", "advisory_lock_wait", "progress_interval", "mark_as",
          "lock_timeot", ""]
X_VALUES = ["500ms", "2s", "1min", "0", "-1", "abc", "3", "1.5s", "prod", "staging", "9" * 30, "", "500 ms", "\u00e9"]
REVISIONS = ["head", "-1", "+1", "base", "000_prod_baseline", "001_schema_alignment", "103_messaging_security",
             "nope", "000_staging_baseline", "heads", "head:base", "", "-99", "abc@head"]
COMMANDS = ["upgrade", "downgrade", "stamp", "current"]


@st.composite
def invocations(draw):
    command = draw(st.sampled_from(COMMANDS))
    x = draw(st.lists(st.tuples(st.sampled_from(X_KEYS), st.sampled_from(X_VALUES)), max_size=2))
    revision = draw(st.sampled_from(REVISIONS))
    url_form = draw(st.sampled_from(["good", "bad-port", "pooler", "wrong-password", "env-file", "env-file-comment",
                                     "missing", "not-a-url"]))
    return command, x, revision, url_form


@pytest.mark.exhaustive
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(invocations())
def test_any_careless_invocation_is_one_line_with_its_documented_exit_and_changes_nothing_when_refused(
    cluster, special_login, make_database, tmp_path_factory, invocation
):
    command, x, revision, url_form = invocation
    db = make_database("prod")  # a fresh one per example
    url = special_login[1].replace(f"/{special_login[0].name}", f"/{db.name}")
    cwd = tmp_path_factory.mktemp("cwd")
    variable = load_environments()["prod"].url_env
    urls = {
        "good": url,
        "bad-port": url.replace(f":{cluster.port}/", ":54x32/"),
        "pooler": url.replace(f"127.0.0.1:{cluster.port}", "aws-0-eu-central-1.pooler.supabase.com:6543"),
        "wrong-password": url.replace(quote(SECRET, safe=""), "wrong-" + quote(SECRET, safe="")),
        "not-a-url": SECRET,
    }
    if url_form.startswith("env-file"):
        comment = "  # the careful operator's login" if url_form == "env-file-comment" else ""
        (cwd / ".env.local").write_text(f"\ufeffexport\t{variable}='{url}'{comment}\n")
    args = ["-n", "prod"]
    for key, value in x:
        args += ["-x", f"{key}={value}"]
    args += [command] + ([revision] if command != "current" else [])
    before = state(db)
    code, output = run(cwd, *args, url=urls.get(url_form))
    assert "Traceback" not in output, output
    assert_no_secret(output)
    assert code in (0, 2, 255), (code, output)  # done, argparse's usage error, one FAILED line
    if code == 255:
        assert len([line for line in output.splitlines() if line.startswith("FAILED:")]) == 1, output
        assert "ERROR [alembic" not in output, output
        # A refusal changes nothing; a revision that failed in its middle was rolled back whole.
        assert state(db) == before, output
    if command == "current":
        assert state(db) == before
    db.drop()
