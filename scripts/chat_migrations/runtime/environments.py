"""The environments a database can belong to, as alembic.ini declares them.

An environment is an alembic.ini section that names the variable holding its
connection string (``database_url_env``). Everything that must know which
database it is talking to (env.py, the operator scripts, the tests) reads the
environments from here, so adding one is a config section plus a folder.

Connection strings hold passwords, so this module is also where they are
parsed (by SQLAlchemy), masked and remembered: every URL that ``parse_url``
sees has its password registered, and ``redact`` takes every registered
password out of any text before it is printed.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit, parse_qsl

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from chat_migrations.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[3]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"


def alembic_ini() -> Path:
    """The alembic.ini the commands read the revisions through: ``ALEMBIC_CONFIG``, as for alembic, else this
    checkout's."""
    return Path(os.environ.get("ALEMBIC_CONFIG") or ALEMBIC_INI)
ENV_LOCAL = ".env.local"
NO_ENVIRONMENT_SECTION = "alembic"


@dataclass(frozen=True)
class Environment:
    name: str
    url_env: str
    supabase_project_ref: str | None

    def database_url(self) -> str:
        """The connection string from the process environment, else ./.env.local.

        The URL is checked (``parse_url``, naming the variable in any refusal)
        and its password registered for ``redact`` before it is returned.
        """
        source = self.url_env
        value = os.environ.get(self.url_env)
        if not value:
            value = read_env_file().get(self.url_env)
            source = f"{self.url_env} (in {ENV_LOCAL})"
        if not value or not value.strip():
            raise ConfigurationError(
                f"{self.url_env} is not set: export it or put it in {ENV_LOCAL} "
                f"(the {self.name} database's connection string)"
            )
        parse_url(value, source=source)
        return value.strip()


def load_environments(ini_path: Path = ALEMBIC_INI) -> dict[str, Environment]:
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(ini_path):
        raise ConfigurationError(f"cannot read {ini_path}")
    environments = {}
    for section in parser.sections():
        url_env = parser.get(section, "database_url_env", fallback=None)
        if url_env:
            ref = parser.get(section, "supabase_project_ref", fallback="").strip() or None
            environments[section] = Environment(section, url_env.strip(), ref)
    return environments


def get_environment(name: str | None, ini_path: Path = ALEMBIC_INI) -> Environment:
    environments = load_environments(ini_path)
    choices = " or ".join(f"-n {n}" for n in environments)
    if not name or name == NO_ENVIRONMENT_SECTION:
        raise ConfigurationError(f"no environment chosen: pass {choices}")
    if name not in environments:
        raise ConfigurationError(f"unknown environment {name!r}: pass {choices}")
    return environments[name]


# ---------------------------------------------------------------------------
# .env.local


def read_env_file() -> dict[str, str]:
    """KEY=VALUE pairs of .env.local in the current directory (where alembic runs).

    Parsed by python-dotenv, as the shell-like tools an operator also uses
    parse it: ``export`` (followed by a space or a tab), quotes, an inline
    ``# comment`` after whitespace, CRLF line endings. A UTF-8 byte order mark
    is ignored, and ``$`` is never expanded (a password may contain it). A key
    without ``=`` is left out; an empty value stays empty (so: not set).
    """
    path = Path.cwd() / ENV_LOCAL
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # only when a .env.local is read: every command imports this module

    values = dotenv_values(path, interpolate=False, encoding="utf-8-sig")
    return {key: value for key, value in values.items() if value is not None}


def _parse_env_file(text: str) -> dict[str, str]:
    """The pairs of a .env file's text, parsed as ``read_env_file`` parses the file."""
    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text.removeprefix("\ufeff")), interpolate=False)
    return {key: value for key, value in values.items() if value is not None}


# ---------------------------------------------------------------------------
# Secrets seen in URLs, and taking them out of text

# Shorter passwords are not registered: replacing a one- to three-character
# string in every printed line would garble the output.
MIN_SECRET_LENGTH = 4
MASK = "***"

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret, as written and in the percent-encoded and -decoded forms URLs carry, for ``redact``."""
    if not value:
        return
    for plain in {value, unquote(value), unquote_plus(value)}:
        for form in (plain, quote(plain, safe=""), quote_plus(plain, safe=""), quote(plain, safe=" +")):
            if len(form) >= MIN_SECRET_LENGTH:
                _SECRETS.add(form)


def redact(text: str) -> str:
    """The text with every password this process has seen in a URL replaced by ***."""
    if not _SECRETS:
        return text
    pattern = re.compile("|".join(map(re.escape, sorted(_SECRETS, key=len, reverse=True))))
    # Repeated, so that no secret is left spelled across a mask.
    while (replaced := pattern.sub(MASK, text)) != text:
        text = replaced
    return text


# ---------------------------------------------------------------------------
# Parsing and masking URLs

_SCHEME = re.compile(r"(?i)(postgres|postgresql)(\+\w+)?://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_POOLER_USER = re.compile(r"[^.]+\.(?P<ref>[a-z0-9]{20})")
TRANSACTION_POOLER_PORT = 6543
EXPECTED_FORM = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"


def parse_url(url: "str | URL", *, source: str | None = None) -> URL:
    """A SQLAlchemy URL for psycopg2, from a postgres://, postgresql:// or postgresql+driver:// URL.

    SQLAlchemy parses it; the password (and a ``password=`` query value) is
    registered for ``redact``. Anything else, a malformed URL, or Supabase's
    transaction pooler (which cannot keep the migration's session-level lock
    and settings) raises ConfigurationError: one line naming ``source`` (the
    variable the URL came from), which never repeats the URL.
    """
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    subject = source or "the database URL"

    def refuse(reason: str) -> ConfigurationError:
        return ConfigurationError(redact(f"{subject} is not a usable PostgreSQL URL: {reason}"))

    text = str(url).strip()
    # Whatever is refused below, its password must not be printed later either:
    # register it as SQLAlchemy reads it and as urllib does (which never checks the port).
    try:
        _register_secrets_of(make_url(text))
    except Exception:  # noqa: BLE001 - not parseable by SQLAlchemy
        pass
    # And the whole of what stands between "USER:" and the last "@" (what an operator meant).
    register_secret(text.partition("://")[2].rpartition("@")[0].partition(":")[2])
    with contextlib.suppress(ValueError):
        split = urlsplit(text)
        register_secret(split.password)
        for key, value in parse_qsl(text.partition("?")[2]):  # a '#' is no fragment to SQLAlchemy
            if key.lower() == "password":
                register_secret(value)
    for pair in text.partition("?")[2].split("&"):  # as written, before any decoding
        key, _, value = pair.partition("=")
        if unquote_plus(key).strip().lower() == "password":
            register_secret(value)
    if not _SCHEME.match(text):
        raise refuse(f"expected {EXPECTED_FORM}")
    if _CONTROL.search(text):
        raise refuse("it contains a line break or another control character (write one in a password as %0A)")
    try:
        parsed = make_url(_SCHEME.sub("postgresql+psycopg2://", text, count=1))
    except ValueError:
        # The hint only where it explains the error: a '#' after the host, in a value read from .env.local.
        host_and_port = text.partition("://")[2].partition("/")[0].rpartition("@")[2]
        hint = f" (in {ENV_LOCAL}, an inline comment needs a space before '#')" if (
            "#" in host_and_port and ENV_LOCAL in (source or "")) else ""
        raise refuse(f"its port is not a number{hint}") from None
    except ArgumentError:
        raise refuse(f"expected {EXPECTED_FORM}") from None
    _register_secrets_of(parsed)
    if text.count("@") > 1:
        raise refuse("it has an '@' besides the one before the host: write an '@' of the password as %40")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise refuse(f"port {parsed.port} is out of range (1-65535)")
    _refuse_transaction_pooler(parsed, refuse)
    return parsed


def _register_secrets_of(parsed: URL) -> None:
    register_secret(parsed.password)
    for key, value in parsed.query.items():
        if key.lower() == "password":
            for item in (value,) if isinstance(value, str) else value:
                register_secret(item)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to print or log; never raises."""
    try:
        parsed = parse_url(url)
    except Exception:  # noqa: BLE001 - masking must never be what fails
        return "<unparseable URL>"
    hidden = [key for key in parsed.query if key.lower() == "password"]
    shown = parsed.difference_update_query(hidden).set(drivername="postgresql").render_as_string(hide_password=True)
    if hidden:
        shown += ("&" if "?" in shown else "?") + "&".join(f"{key}={MASK}" for key in hidden)
    return redact(shown)


def _refuse_transaction_pooler(parsed: URL, refuse) -> None:
    query_host, query_port = parsed.query.get("host"), parsed.query.get("port")
    host = (query_host if isinstance(query_host, str) else parsed.host or "").lower().rstrip(".")
    port = parsed.port
    if port is None and isinstance(query_port, str) and query_port.strip().isdigit():
        port = int(query_port)
    if not (host.endswith(".pooler.supabase.com") and port == TRANSACTION_POOLER_PORT):
        return
    user = _POOLER_USER.fullmatch(parsed.username or "")
    ref = user.group("ref") if user else "<ref>"
    raise refuse(
        f"{host}:{TRANSACTION_POOLER_PORT} is Supabase's transaction pooler, where the migration's "
        f"session-level advisory lock and the read-only session settings do not hold; use the session "
        f"pooler ({host}:5432) or the direct connection (db.{ref}.supabase.co:5432, IPv6-only unless "
        f"the project has the IPv4 add-on)"
    )


def libpq_url(url: str, *, source: str | None = None) -> str:
    """The same URL in the form libpq tools (psql, pg_dump) understand.

    Every part is percent-encoded where libpq decodes it, so a password with
    any characters reaches libpq unchanged.
    """
    parsed = parse_url(url, source=source)
    netloc = ""
    if parsed.username is not None or parsed.password is not None:
        netloc = quote(parsed.username or "", safe="")
        if parsed.password is not None:
            netloc += ":" + quote(parsed.password, safe="")
        netloc += "@"
    if parsed.host:
        netloc += f"[{quote(parsed.host, safe=':')}]" if ":" in parsed.host else quote(parsed.host, safe="")
    if parsed.port is not None:
        netloc += f":{parsed.port}"
    rendered = f"postgresql://{netloc}"
    if parsed.database is not None:
        rendered += "/" + quote(parsed.database, safe="")
    params = [
        f"{quote(key, safe='')}={quote(value, safe='')}"
        for key, values in parsed.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    if params:
        rendered += "?" + "&".join(params)
    return rendered


def libpq_command(url: str, *, source: str | None = None) -> tuple[str, dict[str, str]]:
    """For a libpq tool (pg_dump, psql): the URL without its password, and the environment carrying it.

    A password on a command line is visible to every user of the machine (ps);
    PGPASSWORD in the child's environment is not.
    """
    parsed = parse_url(url, source=source)
    environment = dict(os.environ)
    if parsed.password is not None:
        environment["PGPASSWORD"] = parsed.password
    return libpq_url(parsed.set(password=None)), environment
