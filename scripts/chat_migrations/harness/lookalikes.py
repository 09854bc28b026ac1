"""Staging and prod lookalikes on a throwaway server, at their observed pre-migration states.

Built the way the live databases are adopted: the observed schema is created
without Alembic, realistic rows are added, and ``alembic stamp`` records the
baseline (README, "Adopting a live database").
"""

from __future__ import annotations

from chat_migrations.schema import history
from chat_migrations.harness import alembic_cli, seed
from chat_migrations.frozen import baseline
from chat_migrations.harness.cluster import Cluster

DATABASES = {env: f"chat_{env}" for env in baseline.ENVIRONMENTS}


def create(cluster: Cluster, *, messages: int = 183, stamped: bool = True) -> dict[str, str]:
    """Create both lookalikes; returns {environment: url}.

    ``stamped=False`` leaves them as a live database is before the runbook's
    steps 3 and 5: never adopted, no revision recorded and no marker.
    """
    urls = {}
    for env, database in DATABASES.items():
        cluster.create_observed_database(database, env)
        cluster.execute(database, seed.seed_sql(messages=messages))
        # The password stays in the cluster's password file, so these URLs are safe to print.
        urls[env] = cluster.passfile_url(database)
    for env in DATABASES if stamped else ():
        # A local database has no Supabase URL to prove it: the operator's -x mark_as does.
        alembic_cli.run("-n", env, "-x", f"mark_as={env}", "stamp", history.base_revision(env), urls=urls)
    return urls


def export_lines(urls: dict[str, str]) -> str:
    from chat_migrations.runtime.environments import load_environments

    environments = load_environments()
    return "\n".join(f"export {environments[env].url_env}='{url}'" for env, url in urls.items())
