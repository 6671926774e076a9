"""SHA256SUMS: every export lists its files with their SHA-256 (GNU sha256sum's format), and pocket-adapt refuses a
weight file whose bytes changed in place (same size, headers intact) when it opens the folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import model
from model.checkpoints.checksums import CHECKSUMS, ChecksumError, read_checksums, verify_weights, write_checksums
from model.checkpoints.io import CheckpointError


def corrupt_in_place(path: Path) -> None:
    """Flip 64 bytes in the middle of a file, keeping its size: what a faulty copy or disk does."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def assert_chat_refuses_damaged(capsys, runtime: str, folder: Path, target: Path) -> None:
    """Flip bytes in `target` (a file of the export `folder`), then `adapt chat --runtime RUNTIME`: exit 1, one
    `adapt chat: error:` line naming the file and the SHA-256 mismatch, no traceback."""
    from adapt.cli import main

    assert target.is_file(), sorted(p.name for p in folder.iterdir())
    corrupt_in_place(target)
    capsys.readouterr()  # the export fixture's own progress bars, when the calling test built it
    rc = main(["chat", "--runtime", runtime, "--model", str(folder), "--example-image"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("adapt chat: error:") and "Traceback" not in err
    assert f"{target}: its bytes do not match the SHA-256 recorded at export in {folder / CHECKSUMS}" in err


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    (folder / "vision_tower").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "vision_tower" / "model.safetensors").write_bytes(b"tower" * 100)
    (folder / "config.json").write_text('{"a": 1}')
    return folder


def test_the_list_names_every_file_and_sha256sum_checks_it(tmp_path):
    folder = _folder(tmp_path)
    write_checksums(folder)
    assert sorted(read_checksums(folder)) == ["config.json", "model.safetensors", "vision_tower/model.safetensors"]
    tool = shutil.which("sha256sum")
    assert tool, "sha256sum (GNU coreutils) is on every machine of this project"
    ok = subprocess.run([tool, "-c", CHECKSUMS], cwd=folder, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    corrupt_in_place(folder / "vision_tower" / "model.safetensors")
    bad = subprocess.run([tool, "-c", CHECKSUMS], cwd=folder, capture_output=True, text=True)
    assert bad.returncode != 0 and "vision_tower/model.safetensors: FAILED" in bad.stdout


def test_weights_are_checked_and_configs_left_to_their_own_checks(tmp_path):
    folder = _folder(tmp_path)
    assert verify_weights(folder) == 0  # no SHA256SUMS: a checkpoint from elsewhere
    write_checksums(folder)
    assert verify_weights(folder) == 2
    (folder / "config.json").write_text('{"a": 2}')  # a hand edit: for the config's own checks to judge
    assert verify_weights(folder) == 2
    corrupt_in_place(folder / "model.safetensors")
    with pytest.raises(ChecksumError, match=rf"{folder / 'model.safetensors'}: its bytes do not match the SHA-256"):
        verify_weights(folder)
    with pytest.raises(CheckpointError, match="model.safetensors: its bytes do not match"):
        verify_weights(folder, CheckpointError)
    # a weight file the list names, missing: the folder was copied in part
    moved = tmp_path / "elsewhere.safetensors"
    (folder / "vision_tower" / "model.safetensors").rename(moved)
    with pytest.raises(ChecksumError, match=r"vision_tower/model.safetensors listed in SHA256SUMS is missing"):
        verify_weights(folder)
    moved.rename(folder / "vision_tower" / "model.safetensors")
    # converted since (another weight file in its place): the loader judges what it finds
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    assert verify_weights(folder) == 1
    (folder / "pytorch_model.bin").rename(folder / "model.safetensors")
    # changed on purpose: its line removed, the rest still checked
    (folder / CHECKSUMS).write_text("".join(line for line in (folder / CHECKSUMS).read_text().splitlines(True)
                                            if not line.endswith("  model.safetensors\n")))
    assert verify_weights(folder) == 1


def test_a_malformed_or_escaping_list_is_named(tmp_path):
    folder = _folder(tmp_path)
    (folder / CHECKSUMS).write_text(f"{'0' * 64}  model.safetensors\nnot a checksum line\n")
    with pytest.raises(ChecksumError, match=rf"{CHECKSUMS}:2: not a sha256sum line"):
        verify_weights(folder)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    (folder / CHECKSUMS).write_text(f"{'0' * 64}  ../outside.safetensors\n")
    with pytest.raises(ChecksumError, match="a path outside the folder"):
        verify_weights(folder)


@pytest.mark.parametrize("fmt", ["pocket", "hf"])
def test_model_load_refuses_an_export_damaged_in_place(fmt, tmp_path):
    """`adapt export -f pocket|hf` writes SHA256SUMS; `model.load` (every verb that takes --model) checks it."""
    from deploy.hf import export

    vlm, processor = model.load("pocket-tiny")
    out = export(vlm, processor, fmt, tmp_path / fmt)
    listed = read_checksums(out)
    assert set(listed) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {CHECKSUMS}
    model.load(out)  # as exported: loads
    corrupt_in_place(out / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"{out / 'model.safetensors'}: its bytes do not match the SHA-256"):
        model.load(out)
