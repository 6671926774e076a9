"""The demo hook contract (``DomainPlugin.demo_hooks``) and the defaults used where a domain has none.

* ``"read_upload"``: ``(paths: list[Path], **options) -> dict`` with keys ``images`` (PIL RGB images in
  model input order), ``labels`` (``list[str] | None``), ``prompt`` (``str | None``: one ``<image>`` per
  image, placed before the question), ``info`` (``dict[str, str]`` shown in the page) and ``warnings``
  (``list[str]``).
* ``"draw_answer"``: ``(images, answer: str, **options) -> list[PIL.Image]``.
* ``"options"``: ``() -> {name: spec}``, controls shown on the page whose values are passed as keywords to both
  hooks above; a spec has ``choices``, ``default`` and ``label``, optionally ``info`` (help under the control)
  and ``custom`` (True: the user may type a value of their own).
* ``"name_tag"``: ``(original file name) -> str | None``, one word of the name kept through the demo's neutral
  renaming (letters, digits, ``_``; e.g. the nuScenes camera): the staged file is ``upload-<k>.<tag><suffix>``.
* ``"upload_help"``: ``() -> str`` (or a str), what to upload, shown by the upload button.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from deploy.demo.uploads import UploadError
from domains.boxes import draw_ref_boxes
from model.limits import MAX_IMAGES
from model.processor import IMAGE_PLACEHOLDER
from model.tiling import DEFAULT_MAX_PIXELS, ImageLoadError, as_rgb, load_image

__all__ = ["UploadResult", "check_file_count", "default_draw_answer", "default_read_upload", "hooks_for",
           "name_tag_for", "normalize_upload", "options_for", "upload_help_for"]



@dataclass
class UploadResult:
    """A validated ``read_upload`` result."""

    images: list[Image.Image]
    labels: list[str]
    prompt: str | None = None
    info: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def default_read_upload(paths: Sequence[Path], *, plugin=None, **options: Any) -> dict:
    """Read each file with the domain's reader for its suffix when it has one, else as an ordinary image.
    More files than one question takes (MAX_IMAGES) are refused before any is read."""
    check_file_count(len(paths))
    images, info = [], {}
    for k, path in enumerate(paths):
        path = Path(path)
        if plugin is not None and (path.suffix.lower() in plugin.readers or "*" in plugin.readers):
            img = plugin.read(path, **options)
        else:
            img = read_image(path)
        images.append(img)
        info[f"image {k + 1}"] = f"{img.width} × {img.height} px"
    return {"images": images, "labels": None, "prompt": None, "info": info, "warnings": []}


def check_file_count(n_files: int) -> None:
    """UploadError (a ValueError) when `n_files` uploads, one image each, are more than one question takes (checked
    before reading: a few hundred small files of huge blank images would otherwise all be decoded, then refused)."""
    if n_files > MAX_IMAGES:
        raise UploadError(f"the upload holds {n_files} files; at most {MAX_IMAGES} images can go into one question: "
                         f"upload {MAX_IMAGES} or fewer")


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An ordinary image file (PNG, JPEG, WebP, TIFF, ...) as RGB, read by :func:`model.tiling.load_image` (the
    reader of training and evaluation: EXIF orientation, wide samples stretched, `max_pixels` cap).
    Raises :class:`~model.tiling.ImageLoadError` (a ValueError) naming the file by its (neutral) name only; for a
    TIFF Pillow cannot open (a multi-band or float GeoTIFF), saying which domain reads it."""
    path = Path(path)
    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageLoadError as err:
        reason = err.reason
        if reason.startswith("not an image file") and path.suffix.lower() in (".tif", ".tiff"):
            # the reason lists TIFF as readable, which left a GeoTIFF's owner with nothing to try
            reason += ("; a TIFF of more than 3 bands or of floating-point samples (a GeoTIFF raster) is read by the "
                       "remote sensing domain (adapt demo --domain remote_sensing), which picks the bands to show")
        raise ImageLoadError(path.name, reason) from None


def default_draw_answer(images: Sequence[Image.Image], answer: str, **options: Any) -> list[Image.Image]:
    """Every ``<ref>..</ref><box>[[..]]</box>`` of the answer drawn on each image (0-1000 grid). `options` are the
    page's reading options (a plugin's ``options`` hook), which say nothing about drawing: ignored."""
    return [draw_ref_boxes(img, answer) for img in images]


def hooks_for(plugin) -> tuple[Callable[..., dict], Callable[..., list]]:
    """``(read_upload, draw_answer)`` of a plugin (or None), each falling back to the default."""
    hooks: Mapping[str, Callable] = getattr(plugin, "demo_hooks", None) or {}
    read = hooks.get("read_upload")
    if read is None:
        def read(paths, **options):
            return default_read_upload(paths, plugin=plugin, **options)
    return read, hooks.get("draw_answer") or default_draw_answer


def name_tag_for(plugin) -> Callable[[str], str | None] | None:
    """The plugin's ``name_tag`` hook, or None."""
    hooks: Mapping[str, Callable] = getattr(plugin, "demo_hooks", None) or {}
    return hooks.get("name_tag")


def upload_help_for(plugin) -> str:
    """What the page says to upload: the plugin's ``upload_help``, or a line for ordinary images."""
    hooks: Mapping[str, Any] = getattr(plugin, "demo_hooks", None) or {}
    text = hooks.get("upload_help")
    if callable(text):
        text = text()
    if text:
        return str(text)
    if plugin is None or plugin.name == "general":
        return "Upload one or more images (PNG, JPEG, WebP, TIFF, ...); they go to the model in upload order."
    kinds = ", ".join(sorted(s for s in getattr(plugin, "readers", {}) if s != "*"))
    return f"Upload one or more files the {plugin.name.replace('_', ' ')} domain reads" + (f" ({kinds})" if kinds else "") + "."


def options_for(plugin) -> dict[str, dict]:
    """The plugin's demo options (``demo_hooks["options"]()``): ``{name: {"choices": [...], "default": value,
    "label": text}}``, passed as keywords to its ``read_upload`` and ``draw_answer``. Empty when it has none."""
    hooks: Mapping[str, Callable] = getattr(plugin, "demo_hooks", None) or {}
    fn = hooks.get("options")
    if fn is None:
        return {}
    options = dict(fn())
    for name, spec in options.items():
        choices = list(spec.get("choices") or [])
        if not choices or (spec.get("default", choices[0]) not in choices and not spec.get("custom")):
            raise ValueError(f"demo option {name!r} of domain {plugin.name!r} needs choices including its default")
    return options


def normalize_upload(result: Any, n_files: int) -> UploadResult:
    """Check a ``read_upload`` result against the contract; UploadError (a ValueError) for too few or too many
    images, TypeError for a result the hook should not have returned."""
    if not isinstance(result, Mapping):
        raise TypeError(f"read_upload returned {type(result).__name__}, expected a dict")
    images = list(result.get("images") or [])
    if not images:
        raise UploadError("no image could be read from the upload")
    if len(images) > MAX_IMAGES:
        raise UploadError(f"the upload gives {len(images)} images; at most {MAX_IMAGES} can go into one question")
    for k, img in enumerate(images):
        if not isinstance(img, Image.Image):
            raise TypeError(f"read_upload image {k + 1} is a {type(img).__name__}, expected a PIL image")
    images = [as_rgb(img) for img in images]  # as the tiling reads them: 16-bit stretched, not clipped to white
    labels = _listed(result, "labels", "one per image")
    if labels is None:
        noun = "upload" if len(images) == n_files else "image"  # one image per file: name them by upload
        labels = [f"{noun} {k + 1}" for k in range(len(images))]
    labels = [str(label) for label in labels]
    if len(labels) != len(images):
        raise TypeError(f"read_upload gave {len(labels)} labels for {len(images)} images")
    prompt = result.get("prompt")
    if prompt is not None and str(prompt).count(IMAGE_PLACEHOLDER) != len(images):
        raise TypeError(f"read_upload prompt has {str(prompt).count(IMAGE_PLACEHOLDER)} <image> placeholders "
                        f"for {len(images)} images")
    info = {str(k): str(v) for k, v in dict(result.get("info") or {}).items()}
    warnings = [str(w) for w in _listed(result, "warnings", "one line each") or []]
    return UploadResult(images, labels, None if prompt is None else str(prompt), info, warnings)


def _listed(result: Mapping, key: str, what: str) -> list | None:
    """``result[key]`` as a list (None when absent); a TypeError naming the hook for anything else: a string
    would otherwise be taken one character at a time."""
    value = result.get(key)
    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else list(value)
    raise TypeError(f"read_upload hook returned {key} as a {type(value).__name__}; it must be a list of "
                    f"strings ({what}) or None")
