# Sourced by the project's commands: make sure .venv exists with the project
# installed (again when pyproject.toml changed), then put it first on PATH.
# Needs only python3 (3.11+) and network access to PyPI.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.installed-$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    echo "setting up $VENV (first run, or pyproject.toml changed)..." >&2
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$REPO_ROOT[test]" >&2
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
# Ctrl-C while alembic starts (before env.py runs) ends with one line, not a traceback: a
# site-packages .pth runs before the console script's imports (scripts/site/chat_migrations_sigint.py).
# Only into this checkout's own venv, never one borrowed through a symlink.
if [ ! -L "$VENV" ]; then
    for SITE_PACKAGES in "$VENV"/lib/python3*/site-packages; do
        for HOOK in 00_chat_migrations_sigint.pth chat_migrations_sigint.py; do
            cmp -s "$REPO_ROOT/scripts/site/$HOOK" "$SITE_PACKAGES/$HOOK" || cp "$REPO_ROOT/scripts/site/$HOOK" "$SITE_PACKAGES/$HOOK"
        done
    done
fi
# After `source .venv/bin/activate`, alembic finds this checkout's alembic.ini
# from any directory (its .env.local is still read from the current one).
if ! grep -q ALEMBIC_CONFIG "$VENV/bin/activate"; then
    printf '\nexport ALEMBIC_CONFIG="%s/alembic.ini"\n' "$REPO_ROOT" >> "$VENV/bin/activate"
fi
export PATH="$VENV/bin:$PATH"
