"""Generated sections of README.md / BENCHMARKS.md: the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`.

Every published figure lives in such a section, written only by the command named inside it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_section(path: Path, name: str) -> str:
    """The body of section `name` in `path` (without its markers)."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{path}: expected one {start} … {end} pair")
    return text[text.index(start) + len(start): text.index(end)].strip("\n")


def write_section(path: Path, name: str, body: str, *, append_if_missing: bool = False) -> None:
    """Replace section `name` in `path` with `body` (atomically); other text is left as it is."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    elif append_if_missing:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        raise ValueError(f"{path}: no {start} … {end} section to replace")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
