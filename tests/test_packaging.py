"""The wheel a user installs holds everything the package reads at run time, and works outside the checkout."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adapt/", "domains/", "model/", "deploy/", "templates/")
# the source folder templates/ installs as this package (a top-level `templates` clashed with other distributions')
INSTALLED_AS = {"templates/": "pocket_adapt_templates/"}
# files a working tree may hold beside the package data (notes, scratch output)
STRAYS = ("model/assets/notes.txt", "model/assets/pocket-tiny/scratch.json", "adapt/notes.md", "deploy/llamacpp/a.sh")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the tracked files (so no build/ or egg-info lands in the checkout) beside what
    a working tree also holds: compiled modules and stray files, which must not ship."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    src = tmp / "src"
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(src / p) for p in PACKAGES)], check=True)
    for stray in STRAYS:
        (src / stray).write_text("not package data\n")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(tmp / "dist")], check=True, capture_output=True, timeout=600)
    (found,) = (tmp / "dist").glob("pocket_adapt-*.whl")
    return found


def test_the_wheel_holds_every_tracked_package_file_and_the_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    tracked = [next((to + name[len(src):] for src, to in INSTALLED_AS.items() if name.startswith(src)), name)
               for name in tracked]
    missing = [name for name in tracked if name not in names]
    assert not missing, f"tracked files missing from the wheel: {missing[:10]}"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not [name for name in names if name.startswith(("tests/", "bench/", "build/", *INSTALLED_AS))]
    extra = sorted(name for name in names - set(tracked) if ".dist-info/" not in name)
    assert not extra, f"files in the wheel that are not tracked package files: {extra[:10]}"


def test_the_installed_package_runs_outside_the_checkout(wheel, tmp_path):
    """Unpacked as pip installs it, run from another folder: the package's own files are found, none of the
    checkout's (a recipe template, the bundled model, llama.cpp's build script)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    script = (f"import sys; sys.path.insert(0, {str(site)!r}); import adapt, deploy.llamacpp as l; "
              f"assert adapt.__file__.startswith({str(site)!r}), adapt.__file__; "
              "assert (l.HERE / 'build.sh').is_file() and (l.HERE / 'pocket_llama.cpp').is_file(); "
              "from model.resources import templates_dir; "
              f"assert str(templates_dir()).startswith({str(site)!r}), templates_dir(); "
              "from adapt.cli import main; sys.exit(main(['init', 'quickstart', 'mine']) or main(['presets']))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=work, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / "mine" / "quickstart.yaml").is_file() and "pocket-tiny" in proc.stdout


def test_a_checkout_reads_its_own_templates_not_the_installed_ones(tmp_path):
    """A worktree run with another checkout's `.venv` (bench/reproduce.py's way) read that checkout's templates: the
    editable install maps `pocket_adapt_templates` to the folder it was installed from."""
    (tmp_path / "model").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    shutil.copyfile(ROOT / "model" / "resources.py", tmp_path / "model" / "resources.py")
    spec = importlib.util.spec_from_file_location("worktree_resources", tmp_path / "model" / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.templates_dir() == tmp_path / "templates"
