"""The Makefile's targets, dry-run (`make -n`) in a folder holding only the files their rules read: which commands
a change to the checkout makes them run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(folder: Path, *targets: str) -> list[str]:
    # run as from a shell: under `make test` the parent's MAKELEVEL / MAKEFLAGS would add "make[1]: Entering directory"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    done = subprocess.run(["make", "--no-print-directory", "-n", *targets], cwd=folder, capture_output=True, text=True,
                          timeout=60, check=True, env=env)
    return [line for line in done.stdout.splitlines() if not line.startswith("make: ")]  # "Nothing to be done"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile, the files .venv's stamps depend on, and a .venv installed after them (stamps one minute on)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements").mkdir()
    (tmp_path / ".venv").mkdir()
    then = time.time() - 120
    for name in ("pyproject.toml", "requirements/dev.lock", "requirements/lock.py"):
        (tmp_path / name).touch()
        os.utime(tmp_path / name, (then, then))
    for stamp in (".installed", ".editable"):
        (tmp_path / ".venv" / stamp).touch()
        os.utime(tmp_path / ".venv" / stamp, (then + 60, then + 60))
    return tmp_path


def test_setup_is_a_no_op_on_an_installed_venv(checkout):
    assert dry_run(checkout, "setup") == []


def test_an_edit_of_pyproject_installs_pocket_adapt_again_not_the_lock(checkout):
    """Any edit of pyproject.toml (pytest's addopts) deleted and rebuilt .venv, where README says that happens when
    the lock changes. It now checks the lock and installs pocket-adapt again (entry points, metadata), nothing else."""
    (checkout / "pyproject.toml").touch()
    commands = dry_run(checkout, "setup")
    assert commands == ["python3 requirements/lock.py --check",
                        ".venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .",
                        "touch .venv/.editable"]


def test_a_new_lock_starts_the_venv_again(checkout):
    (checkout / "requirements" / "dev.lock").touch()
    commands = dry_run(checkout, "setup")
    assert commands[:3] == ["python3 requirements/lock.py --check", "rm -rf .venv", "python3 -m venv .venv"]
    assert commands[-2:] == [".venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .",
                             "touch .venv/.editable"]


@pytest.mark.parametrize("target", ["test-latest", "test-lowest"])
def test_the_latest_and_lowest_suites_build_llama_cpp_with_their_venv_first(checkout, target):
    """They ran the suite with CI=true, where a missing llama.cpp build fails the GGUF tests, without building it
    (green only where `make test` had left one in the cache)."""
    venv = ".venv-" + target.split("-")[1]
    commands = dry_run(checkout, target)
    build = commands.index(f"PYTHON={venv}/bin/python deploy/llamacpp/build.sh")
    suite = next(k for k, line in enumerate(commands) if line.startswith(f"CI=true {venv}/bin/python -m pytest"))
    assert commands.index(f"python3 -m venv {venv}") < build < suite
    assert "rm -rf .venv" not in commands and "python3 -m venv .venv" not in commands  # not through `setup`
