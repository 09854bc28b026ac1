"""What alembic/env.py and the revisions run: environments, identity, the session, online DDL, snapshots.

Stable, versioned helpers: a revision may import these, and they import
nothing from the head schema, the checks, SQL review or the harness.
"""
