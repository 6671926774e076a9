"""`SHA256SUMS`: the checksums an export writes beside its files, and their check when the folder is opened.

`adapt export` lists every file it wrote in `SHA256SUMS`, in GNU coreutils' format, so ``sha256sum -c SHA256SUMS``
checks a copy on a phone or a Jetson too. pocket-adapt checks the weight files listed there whenever it opens such a
folder (`verify_weights`): a weight file damaged in place, by a faulty copy or disk, keeps its size and often its
headers, and would otherwise load and answer with wrong numbers. Configs, tokenizer files and templates are left to
the checks of what they say (a hand edit there is refused or allowed by what it changes, not by its bytes).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..errors import PocketAdaptError

CHECKSUMS = "SHA256SUMS"
# the files no one edits by hand: weights and graphs (`.data`: an ONNX model's external weights)
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".data", ".pte", ".bin", ".pt", ".pth")
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


class ChecksumError(PocketAdaptError, ValueError):
    """A file of an export does not match the checksum written when it was exported, or the list is unreadable."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB pieces)."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def write_checksums(folder: Path) -> Path:
    """List every file under `folder` (sub-folders included, `SHA256SUMS` itself excepted) with its SHA-256."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != CHECKSUMS)
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in files]
    out = folder / CHECKSUMS
    out.write_text("".join(lines), encoding="utf-8")
    return out


def read_checksums(folder: Path, error: type[PocketAdaptError] = ChecksumError) -> dict[str, str] | None:
    """``{relative path: sha256}`` from `folder`'s `SHA256SUMS`, or None where there is none (an export made
    before checksums, or a checkpoint from elsewhere). A line that is not ``<64 hex> <space><space or *><path>`` is
    `error` naming it."""
    path = Path(folder) / CHECKSUMS
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot be read ({err}); copy it again or export again") from None
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise error(f"{path}:{number}: not a sha256sum line (<64 hex digits>, two spaces, a file name): "
                                f"{line[:80]!r}")
        sums[match.group(2)] = match.group(1)
    return sums


def verify_weights(folder: Path, error: type[PocketAdaptError] = ChecksumError) -> int:
    """Check every weight file (`WEIGHT_SUFFIXES`) that `folder`'s `SHA256SUMS` lists and that is present against
    its checksum; returns how many were checked (0 without a `SHA256SUMS`). A mismatch is `error` naming the file,
    and so is a listed weight file that is missing where no unlisted one is there instead (a folder copied in part:
    an ONNX export without its ``.onnx.data`` looked damaged to onnxruntime; a folder whose weights were converted
    since, ``model.safetensors`` to ``pytorch_model.bin``, is left to the loader)."""
    folder = Path(folder)
    sums = read_checksums(folder, error)
    if not sums:
        return 0
    missing = [name for name in sums if name.endswith(WEIGHT_SUFFIXES) and not (folder / name).exists()]
    if missing and not any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and p.relative_to(folder).as_posix()
                           not in sums for p in folder.rglob("*")):  # (walked only when something is missing)
        raise error(f"{folder}: {', '.join(missing)} listed in {CHECKSUMS} {'is' if len(missing) == 1 else 'are'} "
                    "missing (copied in part?); copy the whole folder, or export again")
    checked = 0
    for name, want in sums.items():
        path = folder / name
        if not name.endswith(WEIGHT_SUFFIXES) or not path.is_file():
            continue
        if os.path.commonpath([path.resolve(), folder.resolve()]) != str(folder.resolve()):
            raise error(f"{folder / CHECKSUMS}: lists {name!r}, a path outside the folder")
        if file_sha256(path) != want:
            raise error(f"{path}: its bytes do not match the SHA-256 recorded at export in {folder / CHECKSUMS} "
                        "(damaged in copying or on disk?); copy the file again, or export again (changed on "
                        f"purpose: remove its line from {CHECKSUMS})")
        checked += 1
    return checked
