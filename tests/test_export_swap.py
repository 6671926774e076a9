"""`export(..., force=True)` swaps the folder whole: a kill at any step of the move-in leaves, once the next export
has tidied up, either the earlier export or the new one beside the user's files, never a new text model beside an
old projector (files were renamed in one at a time)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import deploy.hf as hf
from model.checkpoints.checksums import write_checksums

EXPORT = ("config.json", "model.safetensors", "vision_tower/weights.bin")
USER = {"notes.txt": "mine", "mine/a.txt": "also mine", "hand-q3_k.gguf": "quantised by hand"}


class Killed(BaseException):
    """The process is gone: nothing after this point runs."""


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


def _folders(tmp_path: Path) -> tuple[Path, Path, dict[str, str], dict[str, str]]:
    out, staging = tmp_path / "out", tmp_path / f".out.export-{os.getpid()}@{hf.HOST_TAG}-0123abcd"
    _write(out, {name: "old" for name in EXPORT} | {"old-f16.gguf": "old"})
    write_checksums(out)  # the earlier export's: its .gguf goes with it
    _write(out, USER)
    old = _tree(out)
    _write(staging, {name: "new" for name in EXPORT})
    write_checksums(staging)
    new = _tree(staging) | USER
    return out, staging, old, new


@pytest.mark.parametrize("kill_at", range(6))
def test_a_killed_forced_move_in_leaves_the_old_or_the_new_export_whole(tmp_path, monkeypatch, kill_at):
    out, staging, old, new = _folders(tmp_path)
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) > kill_at:
            raise Killed
        real_replace(src, dst)

    def killed(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(hf.os, "replace", replace)
        m.setattr(hf, "_finish_swap", killed, raising=False)
        with pytest.raises(Killed):
            hf._move_in(staging, out)
            raise Killed  # a kill after the last step
    monkeypatch.setattr(hf, "writer_state", lambda *args: "gone")
    hf._remove_dead_staging(out)  # what the next export does first
    assert _tree(out) in (old, new)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it


def test_a_failed_forced_move_in_puts_everything_back(tmp_path, monkeypatch):
    out, staging, old, _ = _folders(tmp_path)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == out:
            raise OSError(16, "Device or resource busy", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(hf.os, "replace", replace)
    with pytest.raises(OSError, match="busy"):
        hf._move_in(staging, out)
    assert _tree(out) == old
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_forced_move_in_keeps_the_users_files_and_the_folders_mode(tmp_path, capsys):
    out, staging, _, new = _folders(tmp_path)
    out.chmod(0o750)
    hf._move_in(staging, out)
    assert _tree(out) == new and (out.stat().st_mode & 0o777) == 0o750
    assert "old-f16.gguf" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_forced_export_into_a_linked_folder_keeps_the_link(tmp_path):
    from model import load

    real = tmp_path / "real"
    real.mkdir()
    (real / "notes.txt").write_text("mine")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    hf.export(*load("pocket-tiny"), "pocket", tmp_path / "link", force=True)
    assert (tmp_path / "link").is_symlink() and (real / "model.safetensors").is_file()
    assert (real / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_a_journal_cut_short_is_tidied_not_fatal(tmp_path, monkeypatch):
    """A journal only half written (a full disk) means nothing had moved yet: the next export removes it."""
    out, staging, old, _ = _folders(tmp_path)
    hf._journal(staging).write_text('{"ke')
    monkeypatch.setattr(hf, "writer_state", lambda *args: "gone")
    hf._remove_dead_staging(out)
    assert _tree(out) == old and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_target_removed_mid_swap_gets_the_users_files_back_and_a_clear_error(tmp_path, monkeypatch):
    """The user removed the target folder after its files were moved into the staging folder: the undo wrote into
    the missing folder and raised a raw FileNotFoundError, leaving the user's files in a hidden staging folder (and
    every later export hit the same error). They go back into a new folder, and the error says what happened."""
    import shutil

    out, staging, _, _ = _folders(tmp_path)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == out:  # between moving the user's entries across and setting the folder aside
            shutil.rmtree(out)
        real_replace(src, dst)

    monkeypatch.setattr(hf.os, "replace", replace)
    with pytest.raises(hf.ExportError, match=r"removed while the export was moving into it.*notes\.txt") as err:
        hf._move_in(staging, out)
    assert str(out) in str(err.value)
    assert _tree(out) == USER
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_target_removed_before_the_swap_is_a_clear_error(tmp_path, monkeypatch):
    out, staging, _, _ = _folders(tmp_path)
    real_chmod = os.chmod

    def chmod(path, mode):
        shutil.rmtree(out)
        real_chmod(path, mode)

    monkeypatch.setattr(hf.os, "chmod", chmod)
    with pytest.raises(hf.ExportError, match="nothing of yours was left in it"):
        hf._move_in(staging, out)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_only_staging_folders_of_this_machine_boot_and_container_are_judged_by_pid(tmp_path):
    """Staging folders were judged by a bare pid: another container sharing the folder (its own pid space) could have
    a live export's staging -- or the user's files it set aside mid-swap -- removed because a pid of that name was
    not running here. A folder of this pid space is removed when its export is gone; any other is kept and named."""
    import subprocess
    import sys

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "out"
    dead = tmp_path / f".out.export-{gone}@{hf.HOST_TAG}-0123abcd"
    other = tmp_path / f".out.export-{gone}@0badc0de-0123abcd"
    legacy = tmp_path / f".out.export-{gone}-0123abcd"
    for folder in (dead, other, legacy):
        _write(folder, {"model.safetensors": "x"})
    with pytest.warns(UserWarning, match=r"kept 2 export staging folder\(s\)") as caught:
        hf._remove_dead_staging(out)
    assert str(other) in str(caught[0].message) and str(legacy) in str(caught[0].message)
    assert not dead.exists() and other.exists() and legacy.exists()
