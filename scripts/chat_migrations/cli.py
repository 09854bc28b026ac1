"""The project's commands, declared once: ``chat-migrations NAME [ARGS]``.

``scripts/NAME`` (what the README documents) runs ``chat-migrations NAME``;
each command's module keeps its own ``build_parser()`` and ``main(argv)``,
so this group only routes. The docs test reads ``COMMANDS`` to know every
command and, through ``build_parser()``, every flag.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

# name → module; in the order the runbook uses them.
COMMANDS: dict[str, str] = {
    "adopt": "chat_migrations.checks.adopt",
    "drift": "chat_migrations.checks.drift",
    "preflight": "chat_migrations.checks.preflight",
    "validate": "chat_migrations.checks.validate",
    "smoke": "chat_migrations.checks.smoke",
    "render-sql": "chat_migrations.review.render_sql",
    "review": "chat_migrations.review.report",
    "rehearse": "chat_migrations.harness.rehearse",
    "local-job": "chat_migrations.harness.local_job",
    "local-db": "chat_migrations.harness.local_db",
    "bulk-load": "chat_migrations.harness.bulk_load",
    "benchmark-checks": "chat_migrations.harness.benchmark_checks",
    "benchmark-under-load": "chat_migrations.harness.bench_under_load",
    "benchmark-plan-vs-project": "chat_migrations.harness.bench_plan_vs_project",
}


def command(name: str) -> ModuleType:
    """The module of one command (imported only when it runs)."""
    return importlib.import_module(COMMANDS[name])


def _usage() -> str:
    lines = ["usage: chat-migrations COMMAND [ARGS]", "", "commands:"]
    width = max(map(len, COMMANDS))
    for name in COMMANDS:
        summary = (command(name).__doc__ or "").strip().split("\n")[0]
        lines.append(f"  {name:<{width}}  {summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, *rest = argv
    if name not in COMMANDS:
        print(f"chat-migrations: unknown command {name!r}; the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return command(name).main(rest)


if __name__ == "__main__":
    sys.exit(main())
