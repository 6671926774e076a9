"""Folder-per-class data sets (scene classification, medical image classes): folder name -> label text, and the
check that no two folders give one class."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from domains.base import DomainError

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def class_label(folder: str) -> str:
    """Class folder name -> label text: ``"AnnualCrop"`` -> ``"annual crop"``, ``"liver_lesion"`` ->
    ``"liver lesion"``, ``"PNEUMONIA"`` -> ``"pneumonia"``, ``"denseresidential"`` stays."""
    return " ".join(_CAMEL.sub(" ", folder).replace("_", " ").replace("-", " ").split()).lower()


def check_distinct_labels(root: Path, folders: Sequence[str], label_fn: Callable[[str], str],
                          key: Callable[[str], str] = str) -> None:
    """Refuse class folders of `root` that give one label (``AnnualCrop`` and ``annual_crop``), or labels the
    scorer reads as one (`key` of the label): their images would merge into one class unsaid."""
    seen: dict[str, str] = {}
    for name in folders:
        label = label_fn(name)
        other = seen.setdefault(key(label), name)
        if other != name:
            same = f"{label!r}" if label_fn(other) == label else f"{label!r} (as {label_fn(other)!r} and {label!r})"
            raise DomainError(f"{root}: class folders {other!r} and {name!r} both give the label {same}; rename or "
                              "merge one of them")
