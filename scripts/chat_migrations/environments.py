"""The environments a database can belong to, as alembic.ini declares them.

An environment is an alembic.ini section that names the variable holding its
connection string (``database_url_env``). Everything that must know which
database it is talking to (env.py, the operator scripts, the tests) reads the
environments from here, so adding one is a config section plus a folder.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

REPO_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"
ENV_LOCAL = ".env.local"
NO_ENVIRONMENT_SECTION = "alembic"


class ConfigurationError(Exception):
    """A problem the operator must fix before anything can run (one line)."""


@dataclass(frozen=True)
class Environment:
    name: str
    url_env: str
    supabase_project_ref: str | None

    def database_url(self) -> str:
        """The connection string from the process environment, else ./.env.local."""
        value = os.environ.get(self.url_env) or read_env_file().get(self.url_env)
        if not value:
            raise ConfigurationError(
                f"{self.url_env} is not set: export it or put it in {ENV_LOCAL} "
                f"(the {self.name} database's connection string)"
            )
        return value


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


def read_env_file() -> dict[str, str]:
    """KEY=VALUE pairs of .env.local in the current directory (where alembic runs)."""
    path = Path.cwd() / ENV_LOCAL
    return _parse_env_file(path.read_text()) if path.is_file() else {}


def _parse_env_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def parse_url(url: str) -> URL:
    """A SQLAlchemy URL for psycopg2; libpq-style postgres:// is accepted too."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"not a database URL: {mask_url(url)}") from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(f"not a PostgreSQL URL: {mask_url(url)}")
    return parsed.set(drivername="postgresql+psycopg2")


def libpq_url(url: str) -> str:
    """The same URL in the form libpq tools (psql, pg_dump) understand."""
    return parse_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


_PASSWORD_IN_URL = re.compile(r"(://[^:/?#@\s]*:)[^@/?#\s]*@")
_PASSWORD_IN_QUERY = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or log."""
    masked = _PASSWORD_IN_URL.sub(r"\1***@", url)
    return _PASSWORD_IN_QUERY.sub(r"\1***", masked)
