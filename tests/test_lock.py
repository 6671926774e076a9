"""The lock is what a fresh machine installs: made from today's inputs, and installed exactly."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "requirements"))
import lock  # noqa: E402  (requirements/lock.py: standard library only)


def test_lock_is_made_from_todays_inputs():
    assert lock.recorded_digest() == lock.inputs_digest(), "run `make lock` and commit requirements/dev.lock"


@pytest.mark.parametrize("edit", [
    lambda text: text.replace('"transformers>=', '"transformers>=0.0.1,'),  # a bound moved
    lambda text: text.replace('dev = [', 'dev = ["rich", '),                # a package added to the extra
])
def test_check_catches_a_dependency_edit_without_make_lock(tmp_path, edit):
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    (tmp_path / "pyproject.toml").write_text(edit((ROOT / "pyproject.toml").read_text(encoding="utf-8")), encoding="utf-8")
    run = subprocess.run([sys.executable, str(tmp_path / "requirements" / "lock.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "make lock" in run.stderr


def test_check_accepts_an_unchanged_copy(tmp_path):
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    run = subprocess.run([sys.executable, str(tmp_path / "requirements" / "lock.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_lock_pins_every_package_with_hashes_and_the_cpu_torch():
    hashes: dict[str, int] = {}
    current = None
    for line in lock.LOCK.read_text(encoding="utf-8").splitlines():
        if line[:1].isalnum():
            current = lock.normalize(line.split("==")[0])
            assert "==" in line, line
            hashes[current] = 0
        elif "--hash=sha256:" in line:
            hashes[current] += 1
    pins = lock.locked()
    assert hashes.keys() == pins.keys() and len(pins) > 50
    assert all(hashes.values()), [name for name, n in hashes.items() if not n]
    assert pins["torch"].endswith("+cpu") and pins["nuscenes-devkit"] == "1.2.0"
    assert pins["numpy"].startswith("2.")  # not the devkit's numpy<2: it is locked alone (no-deps.in)
    for name in ("transformers", "peft", "gradio", "pydicom", "deepspeed", "setuptools"):
        assert name in pins, name


def test_installed_environment_is_the_lock():
    """Every locked package is installed at its locked version (make test-latest deselects this)."""
    pins = lock.locked()
    installed = {lock.normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert not wrong, f"installed environment differs from requirements/dev.lock (locked, installed): {wrong}"
