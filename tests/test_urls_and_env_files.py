"""Connection strings: parsed as SQLAlchemy parses them, masked whatever the password holds,
refused in one line when they cannot work, and read from .env.local as python-dotenv reads it.

No database: nothing here uses the ``cluster`` fixture.
"""

from __future__ import annotations

import string
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg2.extensions import parse_dsn

from chat_migrations.runtime import environments
from chat_migrations.runtime.environments import ConfigurationError, Environment

# Every character that means something in a URL, and the ones .env files and shells treat specially.
SPECIAL_PASSWORDS = [
    "pa/ss-word",
    "pa?ss-word",
    "pa#ss-word",
    "pa@ss-word",
    "p@ss/w?rd#x:y%z",
    "a:b@c/d?e#f&g=h+i j%41",
    "dollar$ign${HOME}$1",
]


@pytest.fixture(autouse=True)
def _own_secrets():
    """Each test starts from the secrets registered before it, and leaves them so."""
    registered = getattr(environments, "_SECRETS", set())
    saved = set(registered)
    yield
    registered.clear()
    registered.update(saved)


def refusal(url: str, **kwargs) -> str:
    with pytest.raises(ConfigurationError) as raised:
        environments.parse_url(url, **kwargs)
    message = str(raised.value)
    assert "\n" not in message and message
    return message


# -- 1. masking from the parsed URL, and redact ---------------------------------------------------


@pytest.mark.parametrize("password", [p for p in SPECIAL_PASSWORDS if "@" not in p])
def test_mask_url_hides_a_password_with_unencoded_special_characters(password):
    url = f"postgresql://postgres:{password}@db.example.com:5432/postgres"
    masked = environments.mask_url(url)
    assert masked == "postgresql://postgres:***@db.example.com:5432/postgres"
    # Not even a piece of it is left behind (the old regex stopped at the first / ? # or @).
    for piece in password.replace("/", " ").replace("?", " ").replace("#", " ").split():
        if len(piece) >= 3 and piece not in url.replace(password, ""):
            assert piece not in masked


@pytest.mark.parametrize("password", [p for p in SPECIAL_PASSWORDS if "@" in p])
def test_an_unencoded_at_sign_in_a_password_is_refused_and_never_shown(password):
    # SQLAlchemy would end the password at the first '@' and take the rest as the host.
    url = f"postgresql://postgres:{password}@db.example.com:5432/postgres"
    message = refusal(url, source="PROD_DATABASE_URL")
    assert "%40" in message
    masked = environments.mask_url(url)
    for piece in password.split("@"):
        if len(piece) >= 3:
            assert piece not in message and piece not in masked


def test_mask_url_hides_the_password_sqlalchemy_would_connect_with():
    # make_url takes '/', '?' and '#' as part of the password: that is what must not print.
    url = "postgresql://u:s3/cr?et#x@h:5432/d"
    assert environments.parse_url(url).password == "s3/cr?et#x"
    assert environments.mask_url(url) == "postgresql://u:***@h:5432/d"


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://u@h/d?sslmode=require&password=p/w?x#y", "postgresql://u@h/d?sslmode=require&password=***"),
        ("postgresql://u@h/d?Password=secret-pw", "postgresql://u@h/d?Password=***"),
        ("postgresql://u:one-secret@h/d?password=two-secret", "postgresql://u:***@h/d?password=***"),
        ("postgres://u:pw-secret@h/d", "postgresql://u:***@h/d"),
    ],
)
def test_mask_url_hides_query_passwords_and_keeps_the_rest(url, masked):
    assert environments.mask_url(url) == masked


@pytest.mark.parametrize(
    "value",
    ["postgresql:/u:hunter2-secret@h/d", "u:hunter2-secret@h", "postgresql://u:hunter2-secret@[::1]x/d", "", "://"],
)
def test_mask_url_never_raises_and_never_shows_a_secret(value):
    masked = environments.mask_url(value)
    assert isinstance(masked, str)
    assert "hunter2-secret" not in masked


def test_free_text_is_redacted_of_every_password_parsed_before():
    environments.parse_url("postgresql://u:p/ss?w0rd@h/d")
    text = "cannot connect: FATAL: password authentication failed (p/ss?w0rd)"
    assert environments.redact(text) == "cannot connect: FATAL: password authentication failed (***)"


def test_redact_removes_every_form_of_a_password_seen_in_a_parsed_url():
    password = "p@ss/w?rd#x:y z"
    environments.parse_url(f"postgresql://u:{quote(password, safe='')}@h/d")
    text = f"FATAL: password {password!r}; encoded {quote(password, safe='')}; as SQLAlchemy renders {quote(password, safe=' +')}"
    redacted = environments.redact(text)
    assert password not in redacted
    assert quote(password, safe="") not in redacted and quote(password, safe=" +") not in redacted
    assert redacted.startswith("FATAL: password '***'")


def test_redact_knows_the_raw_and_the_decoded_password_of_a_masked_url():
    environments.mask_url("postgresql://u:ab%2Fcd%40ef@h/d")
    assert environments.redact("ab%2Fcd%40ef and ab/cd@ef") == "*** and ***"


def test_redact_knows_query_passwords_and_registered_secrets():
    environments.mask_url("postgresql://u@h/d?password=q+uery%26pw")
    environments.register_secret("an-api-token")
    assert environments.redact("q uery&pw q+uery%26pw an-api-token") == "*** *** ***"


def test_database_url_registers_the_password(monkeypatch):
    monkeypatch.setenv("URLS_TEST_DATABASE_URL", "postgresql://u:env-secret-pw@h/d")
    Environment("test", "URLS_TEST_DATABASE_URL", None).database_url()
    assert environments.redact("env-secret-pw") == "***"


def test_redact_leaves_text_without_secrets_alone():
    environments.register_secret("xy")  # too short to be worth masking everywhere
    assert environments.redact("nothing secret here: xy") == "nothing secret here: xy"


# -- 2. postgres://, postgresql:// and postgresql+psycopg2:// alike -------------------------------


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_every_postgres_scheme_is_accepted(scheme):
    url = environments.parse_url(f"{scheme}://u:pw@h:5432/d")
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == ("u", "pw", "h", 5432, "d")
    assert environments.libpq_url(f"{scheme}://u:pw@h:5432/d") == "postgresql://u:pw@h:5432/d"


def test_another_database_is_refused():
    message = refusal("mysql://u:hunter2-secret@h/d", source="PROD_DATABASE_URL")
    assert message.startswith("PROD_DATABASE_URL is not a usable PostgreSQL URL")
    assert "hunter2-secret" not in message


# -- 3. malformed URLs: one line, naming the variable, no secret -----------------------------------


def test_a_non_numeric_port_is_one_line_naming_the_variable():
    message = refusal("postgresql://u:hunter2-secret@h:54x32/d", source="PROD_DATABASE_URL")
    assert message.startswith("PROD_DATABASE_URL is not a usable PostgreSQL URL: its port is not a number")
    assert "hunter2-secret" not in message


def test_the_inline_comment_hint_is_shown_only_where_it_explains_the_error():
    # Before: every non-numeric port got it, from the process environment too.
    from_file = "PROD_DATABASE_URL (in .env.local)"
    assert "inline comment" in refusal("postgresql://u:hunter2-secret@h:5432#prod", source=from_file)
    assert "inline comment" not in refusal("postgresql://u:hunter2-secret@h:54x32/d", source=from_file)
    assert "inline comment" not in refusal("postgresql://u:hunter2-secret@h:5432#prod", source="PROD_DATABASE_URL")
    assert "inline comment" not in refusal("postgresql://u:hunter2#secret@h:54x32/d", source=from_file)


def test_a_refusal_never_repeats_the_url():
    message = refusal("postgresql://u:hunter2-secret@h:54x32/d")
    assert message.startswith("the database URL is not a usable PostgreSQL URL")
    assert "hunter2-secret" not in message and "54x32" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2-secret@h:99999/d",
        "postgresql://u:hunter2@secret@h/d",  # an unencoded '@': SQLAlchemy would take 'secret@h' as the host
        "postgresql://u:hunter2-secret@h/d\n?sslmode=require",
        "postgresql:/u:hunter2-secret@h/d",
        "hunter2-secret",
        "",
    ],
)
def test_malformed_urls_are_one_line_without_the_secret(url):
    message = refusal(url, source="STAGING_DATABASE_URL")
    assert message.startswith("STAGING_DATABASE_URL is not a usable PostgreSQL URL: ")
    assert "hunter2" not in message and "secret" not in message


def test_a_malformed_url_in_the_environment_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URLS_TEST_DATABASE_URL", "postgresql://u:hunter2-secret@h:54x32/d")
    with pytest.raises(ConfigurationError, match=r"^URLS_TEST_DATABASE_URL is not a usable PostgreSQL URL: its port"):
        Environment("test", "URLS_TEST_DATABASE_URL", None).database_url()


# -- 4. Supabase's transaction pooler --------------------------------------------------------------

REF = "rxlqtyfhsocxnsnnnlwl"
POOLER = "aws-0-eu-central-1.pooler.supabase.com"


def test_the_transaction_pooler_is_refused_naming_both_fixes():
    message = refusal(f"postgresql://postgres.{REF}:hunter2-secret@{POOLER}:6543/postgres", source="PROD_DATABASE_URL")
    assert message.startswith("PROD_DATABASE_URL is not a usable PostgreSQL URL: ")
    assert "transaction pooler" in message and "advisory lock" in message
    assert f"session pooler ({POOLER}:5432)" in message
    assert f"direct connection (db.{REF}.supabase.co:5432, IPv6-only unless the project has the IPv4 add-on)" in message
    assert "hunter2-secret" not in message


def test_the_transaction_pooler_is_refused_with_the_port_in_the_query():
    refusal(f"postgresql://postgres.{REF}:pw@{POOLER}/postgres?port=6543")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres.{REF}:pw@{POOLER}:5432/postgres",
        f"postgresql://postgres:pw@db.{REF}.supabase.co:5432/postgres",
        "postgresql://u:pw@localhost:6543/d",  # 6543 elsewhere is just a port
    ],
)
def test_the_session_pooler_and_the_direct_connection_are_accepted(url):
    environments.parse_url(url)


# -- 5. .env.local, as python-dotenv reads it ------------------------------------------------------

VAR = "URLS_TEST_DATABASE_URL"


def url_from_env_file(monkeypatch, tmp_path, content: str | bytes) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(VAR, raising=False)
    path = tmp_path / ".env.local"
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return Environment("test", VAR, None).database_url()


@pytest.mark.parametrize(
    "content, expected",
    [
        (f"{VAR}=postgresql://u:pw@h/d # the local one\n", "postgresql://u:pw@h/d"),
        (f"{VAR}='postgresql://u:p#w@h/d' # quoted\n", "postgresql://u:p#w@h/d"),
        (f'{VAR}="postgresql://u:p #w@h/d"\n', "postgresql://u:p #w@h/d"),
        (f"\ufeff{VAR}=postgresql://u:pw@h/d\n", "postgresql://u:pw@h/d"),
        (f"export\t{VAR}=postgresql://u:pw@h/d\n", "postgresql://u:pw@h/d"),
        (f"# settings\r\nOTHER=x\r\n{VAR}=postgresql://u:pw@h/d\r\nLAST=y\r\n", "postgresql://u:pw@h/d"),
        (f"{VAR}=postgresql://u:pa$$w${{HOME}}rd$1@h/d\n", "postgresql://u:pa$$w${HOME}rd$1@h/d"),
        (f'{VAR}="postgresql://u:pa$w${{HOME}}@h/d"\n', "postgresql://u:pa$w${HOME}@h/d"),
    ],
    ids=["inline-comment", "quoted-hash", "double-quoted-hash", "bom", "export-tab", "crlf", "dollar", "dollar-double-quoted"],
)
def test_env_local_is_read_as_dotenv_reads_it(monkeypatch, tmp_path, content, expected):
    assert url_from_env_file(monkeypatch, tmp_path, content) == expected


def test_a_bom_written_by_an_editor_is_ignored(monkeypatch, tmp_path):
    content = "\r\n".join(["# local", f"export {VAR}='postgresql://u:pw@h/d'", ""]).encode("utf-8-sig")
    assert url_from_env_file(monkeypatch, tmp_path, content) == "postgresql://u:pw@h/d"


@pytest.mark.parametrize("line", [f"{VAR}=\n", f"{VAR}=''\n", f"{VAR}\n", f"{VAR}=   # nothing yet\n"])
def test_an_empty_value_is_not_set(monkeypatch, tmp_path, line):
    with pytest.raises(ConfigurationError) as raised:
        url_from_env_file(monkeypatch, tmp_path, line)
    assert str(raised.value) == (
        f"{VAR} is not set: export it or put it in .env.local (the test database's connection string)"
    )


def test_the_process_environment_wins_over_env_local(monkeypatch, tmp_path):
    (tmp_path / ".env.local").write_text(f"{VAR}=postgresql://u:pw@file/d\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VAR, "postgresql://u:pw@env/d")
    assert Environment("test", VAR, None).database_url() == "postgresql://u:pw@env/d"


def test_a_malformed_url_in_env_local_names_the_file(monkeypatch, tmp_path):
    with pytest.raises(ConfigurationError, match=rf"^{VAR} \(in \.env\.local\) is not a usable PostgreSQL URL"):
        url_from_env_file(monkeypatch, tmp_path, f"{VAR}=postgresql://u:pw@h:54x32/d\n")


# -- 6. libpq_url, for psql and pg_dump -------------------------------------------------------------


@pytest.mark.parametrize("password", [*SPECIAL_PASSWORDS, "with space", "percent%41literal", "ünïcødé€"])
@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_libpq_url_round_trips_through_libpq(scheme, password):
    url = f"{scheme}://postgres.{REF}:{quote(password, safe='')}@{POOLER}:5432/postgres?sslmode=require"
    dsn = parse_dsn(environments.libpq_url(url))
    assert dsn == {
        "user": f"postgres.{REF}", "password": password, "host": POOLER, "port": "5432",
        "dbname": "postgres", "sslmode": "require",
    }


@pytest.mark.parametrize("password", ["pa/ss", "pa?ss", "pa#ss", "p:a/s?s#"])
def test_libpq_url_of_an_unencoded_password_round_trips(password):
    # Accepted as SQLAlchemy accepts it; libpq needs the password encoded.
    dsn = parse_dsn(environments.libpq_url(f"postgresql://u:{password}@h:5432/d"))
    assert dsn["password"] == password and dsn["host"] == "h"


def test_libpq_url_keeps_sockets_and_query_passwords():
    dsn = parse_dsn(environments.libpq_url("postgresql://u@/d?host=/tmp/run dir&port=5433&password=a%26b c"))
    assert dsn == {"user": "u", "dbname": "d", "host": "/tmp/run dir", "port": "5433", "password": "a&b c"}
    dsn = parse_dsn(environments.libpq_url("postgresql://u:pw@[::1]:5432/d"))
    assert dsn["host"] == "::1" and dsn["password"] == "pw"


# -- The property: any URL is parsed or refused cleanly, and never shows its password --------------

PRINTABLE = list(string.printable) + ["é", "€", "ß", "\u00a0"]
QUERY_KEYS = ["sslmode", "application_name", "connect_timeout", "options", "target_session_attrs"]


@st.composite
def urls(draw):
    scheme = draw(st.sampled_from(
        ["postgresql", "postgres", "postgresql+psycopg2", "POSTGRES", "postgresql+asyncpg", "mysql", "http"]
    ))
    user = draw(st.sampled_from(["postgres", f"postgres.{REF}", "app_user", "u", ""]))
    password = draw(st.text(st.sampled_from(PRINTABLE), max_size=24))
    where = draw(st.sampled_from(["userinfo", "query", "none"]))
    encoding = draw(st.sampled_from(["raw", "quote", "quote_plus"]))
    host = draw(st.sampled_from(
        ["h", "localhost", "127.0.0.1", "[::1]", f"db.{REF}.supabase.co", POOLER, ""]
    ))
    port = draw(st.one_of(
        st.none(), st.integers(0, 70000).map(str), st.sampled_from(["54x32", "", "abc", "6543", "5432", "٥٤٣٢"])
    ))
    database = draw(st.sampled_from(["postgres", "d", "", None, "my db"]))
    query = draw(st.lists(
        st.tuples(st.sampled_from(QUERY_KEYS), st.text(st.sampled_from(string.ascii_letters + string.digits + "-_. "), max_size=8)),
        max_size=3,
    ))
    if where == "query" and encoding == "raw":
        assume("&" not in password)  # parse_qsl splits a raw '&': the operator must encode it

    def encode(value: str, plus: bool = False) -> str:
        if encoding == "raw":
            return value
        if encoding == "quote_plus" or plus:
            return quote_plus(value, safe="")
        return quote(value, safe="")

    userpart = f"{user}@" if user else ""
    rest = host + (f":{port}" if port is not None else "")
    rest += f"/{database}" if database is not None else ""
    params = [f"{key}={quote_plus(value)}" for key, value in query]
    if where == "userinfo":
        written = encode(password)
        before, after = f"{scheme}://{user}:", "@" + rest
    elif where == "query":
        written = encode(password, plus=True)
        before, after = f"{scheme}://{userpart}{rest}?" + "".join(f"{p}&" for p in params) + "password=", ""
    else:
        written, before, after = "", f"{scheme}://{userpart}{rest}", ""
        if params:
            before += "?" + "&".join(params)
    return before + written + after, before + after, password, written


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(urls(), st.sampled_from([None, "PROD_DATABASE_URL"]))
def test_any_url_is_parsed_or_refused_and_never_shows_its_password(generated, source):
    url, without_password, password, written = generated
    registered = getattr(environments, "_SECRETS", set())
    saved = set(registered)
    try:
        masked = environments.mask_url(url)
        assert isinstance(masked, str)
        try:
            parsed = environments.parse_url(url, source=source)
        except ConfigurationError as refused:
            message = str(refused)
            assert message and "\n" not in message and "\r" not in message, message
            parsed = None
        else:
            message = ""
        shown = {password, written} if written else set()  # the password is in the URL
        # A URL is read stripped: whitespace at its end is no part of a password written last.
        shown = {form.rstrip() if url.endswith(form) else form for form in shown}
        hidden = [form for form in shown if len(form) >= 4 and form not in without_password]
        for form in hidden:
            assert form not in masked, (url, masked)
            assert form not in message, (url, message)
            # A password with a control character is refused before any connection, so no
            # server message can echo it; every other one is known to redact.
            if form.isprintable():
                assert form not in environments.redact(f"FATAL: {form} was rejected: '{form}'"), url
        if parsed is not None:
            dsn = parse_dsn(environments.libpq_url(url))
            expected = parsed.query.get("password", parsed.password)
            assert dsn.get("password") == (expected or None)  # libpq drops an empty one
            assert dsn.get("user") == (parsed.username or None)
            if parsed.port is not None:
                assert dsn["port"] == str(parsed.port)
    finally:
        registered.clear()
        registered.update(saved)
