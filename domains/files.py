"""File helpers the converters share: atomic writes, idempotent JSONL, freshness checks, links, stable splits.

Converters only read their sources and make re-runs cheap and exact: outputs are written through a temporary
file and renamed (a killed run leaves no half file), JSONL is rewritten only when its bytes change, and an
output newer than its sources is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["PNG_OPTIONS", "atomic_write", "image_size", "is_fresh", "link_or_copy", "save_png", "split_of",
           "write_jsonl", "write_splits"]

PNG_OPTIONS = {"format": "PNG", "compress_level": 6, "optimize": False}


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write `path` with ``write(file)`` through a temporary file in the same folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(records: Iterable[dict], path: Path) -> bool:
    """Write `records` unless `path` already holds exactly these bytes (idempotent re-runs); True if written."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, lambda f: f.write(data))
    return True


def write_splits(report, out: Path, dataset: str, splits: dict[str, list[dict]], *, keep_empty: bool = True):
    """Write ``out/<dataset>_<split>.jsonl`` per split (idempotently), record them in `report` (a
    ``domains.base.ConvertReport``: outputs and written counts) and return it. Empty splits are written
    as empty files unless `keep_empty` is False."""
    for split, records in splits.items():
        if not records and not keep_empty:
            continue
        path = out / f"{dataset}_{split}.jsonl"
        write_jsonl(records, path)
        report.outputs[split] = path
        report.wrote(len(records))
    return report


def is_fresh(dst: Path, sources: Path | Iterable[Path]) -> bool:
    """True when `dst` exists, is not empty and is not older than any of `sources`."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    try:
        st = dst.stat()
        return st.st_size > 0 and all(st.st_mtime_ns >= Path(s).stat().st_mtime_ns for s in sources)
    except OSError:
        return False


def save_png(img: Image.Image, path: Path) -> None:
    atomic_write(path, lambda f: img.save(f, **PNG_OPTIONS))


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) from the image header."""
    with Image.open(path) as im:
        return im.size


def link_or_copy(src: Path, dst: Path, mode: str = "hardlink") -> None:
    """Put `src` at `dst`: a hard link (``mode="hardlink"``, falling back to a copy across file systems) or a
    copy (``"copy"``). An existing `dst` of the same size, not older than `src`, is kept."""
    if mode not in ("hardlink", "copy"):
        raise ValueError(f"link mode must be 'hardlink' or 'copy', got {mode!r}")
    try:
        if dst.stat().st_size == src.stat().st_size and is_fresh(dst, [src]):
            return
    except OSError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    tmp.unlink(missing_ok=True)
    try:
        if mode == "hardlink":
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def split_of(key: str, held_out_fraction: float, held_out: str = "test") -> str:
    """``held_out`` for about `held_out_fraction` of keys, else ``"train"``: a hash of the key, so the split is
    the same on every run and machine and does not move when other keys come or go."""
    if held_out_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return held_out if h < held_out_fraction else "train"
