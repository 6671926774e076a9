"""Uploaded files, handled so that nothing identifying leaks into the page.

Every upload batch is copied into a private temporary folder (mode 0700) under neutral names
(``upload-1.dcm``, ``upload-2.png``, ...): readers, error messages and the page only ever see those
names, never the original file name (which often carries a patient's name). Gradio's own cached copy
is removed once staged. Errors become :class:`UploadError` with a short readable message.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import PocketAdaptError

log = logging.getLogger(__name__)

__all__ = ["StagedUpload", "UploadError", "readable_error", "stage_uploads", "upload_label"]

# a suffix is kept only if it looks like an ordinary file type (never arbitrary text from the name)
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")
_LIVE: set[Path] = set()
_LIVE_LOCK = threading.Lock()


class UploadError(PocketAdaptError, ValueError):
    """A problem with an upload, worded for the page (neutral file names, no stack trace)."""


def upload_label(k: int) -> str:
    """The neutral name shown for the `k`-th (0-based) uploaded file: ``"upload 1"``."""
    return f"upload {k + 1}"


@dataclass
class StagedUpload:
    """One batch of uploads copied under neutral names into a private folder; call :meth:`cleanup`."""

    root: Path
    paths: list[Path] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [upload_label(k) for k in range(len(self.paths))]

    def scratch(self, name: str) -> Path:
        """A fresh folder inside the private root (for example to extract a zip into)."""
        path = self.root / name
        path.mkdir(mode=0o700, parents=True, exist_ok=False)
        return path

    def neutralize(self, text: str) -> str:
        """`text` with private paths replaced by the neutral upload labels."""
        for k, path in enumerate(self.paths):
            text = text.replace(str(path), upload_label(k))
        return text.replace(str(self.root) + os.sep, "").replace(str(self.root), "upload")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(self.root)


def stage_uploads(files: Iterable[str | os.PathLike] | str | os.PathLike | None, *, max_bytes: int,
                  remove_originals: bool = True) -> StagedUpload:
    """Copy uploaded `files` into a private folder as ``upload-<k><suffix>``.

    Checks that each is a regular file and that together they stay within `max_bytes`. With
    `remove_originals`, files lying inside Gradio's upload cache are deleted after copying (files
    elsewhere are never touched). Raises :class:`UploadError`.
    """
    if files is None:
        raise UploadError("no file was uploaded")
    items = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    items = [Path(_path_of(f)) for f in items]
    if not items:
        raise UploadError("no file was uploaded")
    total = 0
    for k, src in enumerate(items):
        if not src.is_file():
            raise UploadError(f"{upload_label(k)}: not a regular file")
        total += src.stat().st_size
    if total > max_bytes:
        raise UploadError(f"the upload is {_mb(total)}, above the {_mb(max_bytes)} limit of this demo")
    root = Path(tempfile.mkdtemp(prefix="pocket-adapt-demo-"))  # 0700
    with _LIVE_LOCK:
        _LIVE.add(root)
    staged = StagedUpload(root)
    try:
        for k, src in enumerate(items):
            suffix = src.suffix.lower()
            dst = root / f"upload-{k + 1}{suffix if _SUFFIX.match(suffix) else ''}"
            shutil.copyfile(src, dst)
            staged.paths.append(dst)
    except OSError as err:
        staged.cleanup()
        raise UploadError(f"the upload could not be stored ({err.strerror or type(err).__name__})") from None
    if remove_originals:
        for src in items:
            _remove_cached(src)
    return staged


def readable_error(exc: BaseException, staged: StagedUpload | None = None) -> str:
    """A one-paragraph message for the page: the error's own text for user errors (paths neutralized),
    a generic line for anything unexpected (its traceback goes to the server log only)."""
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        text = "the image has too many pixels to be read safely"
    elif isinstance(exc, Image.UnidentifiedImageError):
        text = "not an image file this demo can read (PNG, JPEG, ...)"
    elif isinstance(exc, (ValueError, OSError, KeyError)) and str(exc):
        text = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
    else:
        log.error("demo: unexpected error while handling an upload", exc_info=exc)
        text = f"the file could not be processed ({type(exc).__name__}); see the server log"
    if staged is not None:
        text = staged.neutralize(text)
        if staged.paths and not text.startswith("upload"):  # say which file, when the reader did not
            text = f"{upload_label(0) if len(staged.paths) == 1 else 'the upload'}: {text}"
    text = text.replace(tempfile.gettempdir(), "…")
    return " ".join(text.split())[:600]


def _path_of(item) -> str:
    # gradio hands file paths as str; older versions as objects with .name / .path
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    for attr in ("path", "name"):
        value = getattr(item, attr, None)
        if isinstance(value, str):
            return value
    raise UploadError(f"unexpected upload value of type {type(item).__name__}")


def _gradio_cache() -> Path | None:
    try:
        from gradio.utils import get_upload_folder
    except ImportError:
        return None
    return Path(get_upload_folder()).resolve()


def _remove_cached(src: Path) -> None:
    cache = _gradio_cache()
    if cache is None:
        return
    try:
        real = src.resolve()
        if cache in real.parents:
            real.unlink(missing_ok=True)
            if real.parent != cache and not any(real.parent.iterdir()):
                real.parent.rmdir()
    except OSError:  # best effort: Gradio's cache cleaner gets it later
        pass


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


@atexit.register
def _cleanup_all() -> None:
    with _LIVE_LOCK:
        roots = list(_LIVE)
        _LIVE.clear()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)

