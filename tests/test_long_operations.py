"""While a long index build runs, the upgrade says where it is; at the end, how long each revision took."""

from __future__ import annotations

import re
import time

from chat_migrations.harness import alembic_cli

from .conftest import revisions_in_order
from .test_faults import Session, wait_for


def test_an_index_build_reports_its_progress_and_each_revision_its_time(make_database):
    db = make_database("staging")
    db.alembic("-n", "staging", "upgrade", "002_function_updates_staging")
    writer = Session(db, "app-writer")
    writer.run("UPDATE public.chat_messages SET updated_at = updated_at WHERE id = (SELECT min(id::text)::uuid FROM public.chat_messages)")
    migration = alembic_cli.start(
        "-n", "staging", "-x", "progress_interval=0.2s", "upgrade", "head", urls={"staging": db.url}
    )
    try:
        wait_for(
            lambda: db.scalar("SELECT count(*) FROM pg_stat_progress_create_index WHERE phase LIKE 'waiting for%%'"),
            "the build to wait for the open writer",
        )
        time.sleep(1.0)  # several progress intervals
    finally:
        writer.close()
    output, _ = migration.communicate(timeout=120)
    assert migration.returncode == 0, output
    progress = re.findall(r"idx_chat_messages_reply_to: waiting for writers before build.*\((\d+)s\)", output)
    assert len(progress) >= 3, output
    assert re.search(r"idx_chat_messages_reply_to built in \d+\.\ds", output)
    # 002 ran in an earlier command; this one applied the rest.
    for revision in revisions_in_order("staging")[2:]:
        assert re.search(rf"upgrade {revision} took \d+\.\ds", output), output
