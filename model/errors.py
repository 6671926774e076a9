"""The root of every error pocket-adapt raises for a user to act on.

`adapt` prints these as one line naming the file or key and what to do; anything else that escapes is a
bug and keeps its traceback. Each package's errors derive from `PocketAdaptError` (and, where callers
already catch it, from `ValueError` too). It lives here, in the package every other one may import.
"""

from __future__ import annotations

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
