"""The root of every error pocket-adapt raises for a user to act on.

`adapt` prints these as one line naming the file or key and what to do; anything else that escapes is a
bug and keeps its traceback. Each package's errors derive from `PocketAdaptError` (and, where callers
already catch it, from `ValueError` too). It lives here, in the package every other one may import.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path


class PocketAdaptError(Exception):
    """A failure the user can fix (bad input, bad settings, a missing file): reported in one line."""


class MissingExtraError(PocketAdaptError, ImportError):
    """An optional package is not installed; the message says which extra brings it (:func:`install_hint`)."""


class ModelConfigError(PocketAdaptError, ValueError):
    """A model setting is unknown or invalid: a preset name, a chat template, a projector or tower option."""


class NonFiniteScoresError(PocketAdaptError, RuntimeError):
    """The model's next-token scores hold NaN or +inf (or mask every token): its weights, or the dtype it runs in,
    are broken. PyTorch generation raises it (`model.generation.FiniteScores`), the export runtimes a subclass
    (`deploy.runtimes.BadLogitsError`): one type to catch for both."""


# The optional parts of pocket-adapt (pyproject.toml's extras) by the top-level modules they bring: a verb that
# meets one missing says which extra to install instead of ending in a traceback.
_EXTRA_OF_MODULE = {
    **dict.fromkeys(("pydicom", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls", "dicomanonymizer"), "medical"),
    **dict.fromkeys(("rasterio", "albumentations", "affine"), "remote-sensing"),
    **dict.fromkeys(("nuscenes", "pyquaternion", "descartes", "pycocotools", "shapely", "cv2"), "driving"),
    "gradio": "demo",
    **dict.fromkeys(("onnx", "onnxruntime", "onnxscript", "gguf"), "deploy"),
    **dict.fromkeys(("executorch", "torchao", "ruamel"), "executorch"),
    **dict.fromkeys(("deepspeed", "accelerate"), "distributed"),
}
# extras whose main package is installed without its own (stale) pins, as pyproject.toml explains
_NO_DEPS = {"driving": "nuscenes-devkit==1.2.0", "executorch": "executorch==1.5.1"}


def install_hint(module: str) -> str | None:
    """How to install the extra that brings top-level `module` (``"pydicom"``, ``"cv2.imgproc"``), or None for a
    module no extra brings."""
    extra = _EXTRA_OF_MODULE.get(module.split(".")[0])
    if extra is None:
        return None
    hint = f"pip install 'pocket-adapt[{extra}]'"
    if extra in _NO_DEPS:
        hint += f" && pip install --no-deps '{_NO_DEPS[extra]}'"
    return f"{hint} (the {extra} extra; a checkout's `make setup` installs every extra)"


def os_error_of(err: BaseException, filename: str | Path | None = None) -> OSError | None:
    """The OSError a safetensors write failure carries (a full disk, a quota: safetensors raises them as a
    SafetensorError ending in ``(os error N)``), naming `filename`; None for any other error."""
    safetensors = sys.modules.get("safetensors")  # only once it is imported can one of its errors exist
    if safetensors is None or not isinstance(err, safetensors.SafetensorError):
        return None
    found = re.search(r"\(os error (\d+)\)", str(err))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), None if filename is None else str(filename))


def user_error_message(err: BaseException, out: Path | None = None) -> str | None:
    """The one-line message for an anticipated failure, or None for a bug. `out`: the verb's output folder,
    named when an OSError does not say which file it was writing."""
    if isinstance(err, PocketAdaptError):
        return str(err)
    if isinstance(err, ModuleNotFoundError) and err.name and (hint := install_hint(err.name)):
        return f"this needs the {err.name.split('.')[0]} package, which is not installed: {hint}"
    err = os_error_of(err) or err  # safetensors' write errors (a full disk) carry the OSError they are
    if not isinstance(err, OSError):
        return None
    where = err.filename if err.filename is not None else (f"writing under {out}" if out is not None else None)
    where = f"{where}: " if where is not None else ""
    reason = err.strerror or str(err)
    if isinstance(err, FileNotFoundError):
        return f"{where}no such file or folder; check the path"
    if isinstance(err, FileExistsError):
        return f"{where}already exists and is not a folder; move it away or choose another path"
    if isinstance(err, NotADirectoryError):
        return f"{where}not a folder (a file is in the way on this path); move it away or choose another path"
    if isinstance(err, IsADirectoryError):
        return f"{where}is a folder, not a file; give the path of a file"
    if isinstance(err, PermissionError):
        return f"{where}permission denied; make it writable (readable for inputs) or choose another path"
    # numpy's ndarray.tofile (the GGUF writer's) reports a full disk without an errno
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or (
            err.errno is None and str(err).startswith("Not enough free space")):
        return f"{where}disk full ({reason}); free some space or write elsewhere"
    if err.errno == errno.EROFS:
        return f"{where}read-only file system; choose a writable path"
    return None
