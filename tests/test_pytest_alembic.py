"""pytest-alembic's standard checks, once per environment.

single head, upgrade from base to head, up/down/up of every revision, and the
models matching the DDL at head. Its up/down check only proves the commands
run; tests/test_migrations.py proves each downgrade leaves no trace.
"""

import pytest
from alembic.config import Config
from pytest_alembic.tests import (  # noqa: F401  (collected as tests here)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from chat_migrations.runtime.environments import ALEMBIC_INI, parse_url

from .conftest import ENVIRONMENTS


@pytest.fixture(params=ENVIRONMENTS)
def alembic_environment(request):
    return request.param


@pytest.fixture
def alembic_config(alembic_environment):
    return Config(str(ALEMBIC_INI), ini_section=alembic_environment)


@pytest.fixture
def alembic_engine(make_database, alembic_environment):
    db = make_database(alembic_environment, "platform")
    engine = create_engine(parse_url(db.url), poolclass=NullPool)
    yield engine
    engine.dispose()
