"""Demo hooks for driving: read six camera images (or one stitched image) into model input, and draw an
answer's object tags back on the cameras they name.

* :func:`read_upload` takes the six nuScenes cameras, each file's camera read from its name
  (``…__CAM_FRONT_LEFT__….jpg``; the demo keeps that word through its neutral renaming, see :func:`name_tag`),
  or one stitched 3:1 image, and returns what the demo feeds the model: one stitched 2688×896 image with
  :data:`~domains.driving.layout.STITCHED_PREFIX` (``mode="stitched"``), or six camera images with
  :func:`~domains.driving.layout.multi_view_prefix` (``mode="multi"``). A set whose names do not say one
  camera each is refused, never placed by upload order (browsers hand files over in their own order).
* :func:`draw_answer` marks every c-tag ``<cN,CAM,[x,y]>`` of an answer on the camera it names, with
  ``cN`` next to it, plus any ``<ref>…</ref><box>[[…]]</box>`` boxes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from domains.base import DomainError
from domains.boxes import PALETTE, draw_ref_boxes, label_font, text_colour
from domains.driving import layout

__all__ = ["UPLOAD_HELP", "camera_from_name", "demo_options", "draw_answer", "name_tag", "read_upload"]

UPLOAD_HELP = ("Upload the six camera frames of one nuScenes sample with their original file names "
               "(…__CAM_FRONT_LEFT__….jpg): each file's camera is read from its name. Or upload one stitched "
               "3:1 image (2688×896; top row CAM_FRONT_LEFT, CAM_FRONT, CAM_FRONT_RIGHT, bottom row CAM_BACK_LEFT, "
               "CAM_BACK, CAM_BACK_RIGHT).")

MODES = ("stitched", "multi")
# whole tokens only: CAM_FRONT_LEFTY or CAM_BACK2 name no camera (not their CAM_FRONT / CAM_BACK prefix);
# "_" still separates words, so …__CAM_FRONT_LEFT__1533.jpg and CAM_FRONT_and_CAM_BACK.png are read
_CAMERA_IN_NAME = re.compile(r"(?<![A-Z0-9])CAM_(?:FRONT|BACK)(?:_(?:LEFT|RIGHT))?(?![A-Z0-9]|_(?:LEFT|RIGHT))")


def camera_from_name(name: str) -> str | None:
    """The nuScenes camera a file name names as a whole token (``CAM_FRONT_LEFT``, never its prefix
    ``CAM_FRONT``; ``CAM_FRONT_LEFTY`` names none), or None when it names none or several different ones. A hyphen
    or a space counts as ``_`` (``cam_front-left.jpg`` is CAM_FRONT_LEFT, not CAM_FRONT)."""
    words = re.sub(r"[-\s]", "_", Path(name).name.upper())  # cam_front-left.jpg, "cam front left.png"
    found = {m.group(0) for m in _CAMERA_IN_NAME.finditer(words)}
    return found.pop() if len(found) == 1 else None


def name_tag(name: str) -> str | None:
    """Demo hook: the word of an uploaded file's original name kept through the demo's neutral renaming —
    its camera (one of six fixed names, never anything else from the name)."""
    return camera_from_name(name)


def demo_options() -> dict[str, dict]:
    """Demo hook: the choices the page offers (passed to :func:`read_upload` and :func:`draw_answer`)."""
    return {
        "mode": {"choices": list(MODES), "default": "stitched",
                 "label": "View sent to the model: one stitched 2688×896 image, or the six camera images"},
        "order": {"choices": list(layout.CAMERA_ORDERS), "default": "stitch",
                  "label": "Order of the six images (six-image view)"},
    }


_UPLOAD_NAME = re.compile(r"^upload-(\d+)")


def _label(path: Path) -> str:
    """How a file is named in messages: ``upload 3`` for the demo's staged ``upload-3…`` files."""
    m = _UPLOAD_NAME.match(path.name)
    return f"upload {m.group(1)}" if m else path.name


def _read_image(path: Path) -> Image.Image:
    """A camera upload by pocket-adapt's one image reader, named in errors by its (neutral) file name only."""
    from model.tiling import ImageLoadError, load_image  # lazily: the plugin registry stays free of torch

    try:
        return load_image(path)
    except ImageLoadError as err:
        raise DomainError(f"{_label(path)}: {err.reason}") from None


def _check_mode(mode: str, order: str | Sequence[str]) -> tuple[str, ...]:
    if mode not in MODES:
        raise DomainError(f"mode must be 'stitched' or 'multi', got {mode!r}")
    cams = layout.camera_order(order) if isinstance(order, str) else tuple(order)
    if sorted(cams) != sorted(layout.STITCH_ORDER):
        raise DomainError(f"camera order must list the six nuScenes cameras once each, got {list(cams)}")
    return cams


def _assign_cameras(paths: list[Path]) -> dict[str, Path]:
    """``{camera: file}`` from the cameras the file names say; DomainError listing what was found unless
    they name the six cameras once each."""
    named = {p: camera_from_name(p.name) for p in paths}
    by_cam: dict[str, list[str]] = {}
    for p, cam in named.items():
        if cam is not None:
            by_cam.setdefault(cam, []).append(_label(p))
    unnamed = [_label(p) for p, cam in named.items() if cam is None]
    dupes = {cam: labels for cam, labels in by_cam.items() if len(labels) > 1}
    if not unnamed and not dupes:
        return {cam: p for p, cam in named.items()}
    found = [f"{cam} ({', '.join(by_cam[cam])})" for cam in layout.STITCH_ORDER if cam in by_cam]
    problems = []
    if unnamed:
        problems.append(f"no camera in the name of {', '.join(unnamed)}")
    if dupes:
        problems.append("the same camera in " + "; ".join(f"{cam}: {', '.join(v)}" for cam, v in sorted(dupes.items())))
    missing = [cam for cam in layout.STITCH_ORDER if cam not in by_cam]
    raise DomainError(
        f"cannot tell which camera each file shows: {'; '.join(problems)}. Found: {', '.join(found) or 'none'}"
        + (f"; missing: {', '.join(missing)}" if missing else "")
        + ". Upload the six frames of one sample with their nuScenes names (…__CAM_FRONT_LEFT__….jpg), one per "
          "camera; files are never placed by upload order.")


def read_upload(paths: str | Path | Sequence[str | Path], *, mode: str = "stitched", order: str = "stitch") -> dict:
    """Six camera images or one stitched image -> the demo's model input (see the module docstring).

    `paths` may be one path (the stitched image). Returns ``{"images", "labels", "prompt", "info", "warnings"}``.
    `order` names the camera order
    (:data:`~domains.driving.layout.CAMERA_ORDERS`) of the six images in multi mode. Raises ValueError
    (DomainError) for a wrong number of files, file names that do not say one camera each, a single image
    that is not 3:1, and unreadable images.
    """
    if isinstance(paths, (str, Path)):  # one path, not a sequence: a str was read character by character
        paths = [paths]
    paths = [Path(p) for p in paths]
    cams = _check_mode(mode, order)
    warnings: list[str] = []
    info: dict[str, str] = {"view sent to the model": "one stitched 2688×896 image" if mode == "stitched"
                            else "six camera images, in the " + (order if isinstance(order, str) else "given")
                            + " order: " + ", ".join(cams)}
    if mode == "stitched":
        info["stitched grid"] = "top " + " | ".join(layout.STITCH_ORDER[:3]) + "; bottom " + " | ".join(
            layout.STITCH_ORDER[3:])
    if len(paths) == 6:
        files = _assign_cameras(paths)
        views = {cam: _read_image(files[cam]) for cam in layout.STITCH_ORDER}
        info["upload"] = "six camera images"
        info["cameras"] = "read from the file names: " + ", ".join(layout.STITCH_ORDER)
        off = [f"{cam} {img.width}×{img.height}" for cam, img in views.items() if img.size != layout.CAMERA_SIZE]
        if off:
            warnings.append(f"nuScenes cameras are 1600×900; got {', '.join(off)} (coordinates stay relative to "
                            f"each image)")
    elif len(paths) == 1:
        img = _read_image(paths[0])
        layout.check_stitched_aspect(img.size, _label(paths[0]), "; or upload the six camera images")
        info["upload"] = f"one stitched image ({img.width}×{img.height})"
        if mode == "stitched" and img.size != layout.STITCHED_SIZE:
            warnings.append(f"the stitched image is {img.width}×{img.height}; it was resized to "
                            f"{layout.STITCHED_SIZE[0]}×{layout.STITCHED_SIZE[1]} for the model")
        if mode == "stitched":
            stitched = img if img.size == layout.STITCHED_SIZE else img.resize(layout.STITCHED_SIZE,
                                                                               Image.Resampling.BICUBIC)
            return {"images": [stitched], "labels": ["stitched: " + " | ".join(layout.STITCH_ORDER)],
                    "prompt": layout.STITCHED_PREFIX, "info": info, "warnings": warnings}
        views = layout.split_stitched(img)
        warnings.append("the six views were cut from the stitched image: each is upscaled from its cell and keeps "
                        "any camera label drawn on it")
    else:
        raise DomainError(f"upload the six camera images of one sample (CAM_FRONT_LEFT … CAM_BACK_RIGHT in "
                          f"their names) or one stitched image; got {len(paths)} files")
    if mode == "stitched":
        return {"images": [layout.stitch_cameras(views)], "labels": ["stitched: " + " | ".join(layout.STITCH_ORDER)],
                "prompt": layout.STITCHED_PREFIX, "info": info, "warnings": warnings}
    return {"images": [views[cam] for cam in cams], "labels": list(cams), "prompt": layout.multi_view_prefix(cams),
            "info": info, "warnings": warnings}


# ---------------------------------------------------------------------------------------------- drawing
def _color(obj: int) -> tuple[int, int, int]:
    return PALETTE[(obj - 1) % len(PALETTE)]


def _marker(image: Image.Image, x: float, y: float, label: str, color: tuple[int, int, int]) -> None:
    """A filled dot ringed in white at (x, y) with `label` beside it, drawn in place and clipped to `image`."""
    draw = ImageDraw.Draw(image)
    r = max(4, round(min(image.size) * 0.02))
    draw.ellipse([x - r - 2, y - r - 2, x + r + 2, y + r + 2], fill=(255, 255, 255))
    draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    font = label_font(max(10, round(r * 2.2)))
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    w, h = right - left, bottom - top
    tx = x + r + 4 if x + r + 4 + w + 4 <= image.width else x - r - 8 - w  # keep the label inside the image
    ty = min(max(y - h / 2, 0), max(0, image.height - h - 4))
    draw.rectangle([tx - 2, ty - 2, tx + w + 2, ty + h + 4], fill=color)
    draw.text((tx - left, ty - top), label, fill=text_colour(color), font=font)


def _note(image: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(image)
    font = label_font(max(12, image.height // 30))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    y = image.height - (bottom - top) - 8
    draw.rectangle([0, y - 4, right - left + 8, image.height], fill=(0, 0, 0))
    draw.text((4 - left, y - top), text, fill=(255, 255, 0), font=font)


def _camera_xy(tag: layout.CTag, text: str, mode: str, camera: str) -> tuple[float, float]:
    """The tag's point in `camera`'s 1600×900 pixels (bracketed = grid of `mode`; else camera pixels)."""
    if layout.is_grid_tag(text, tag):
        return layout.grid_map(mode)(tag.x, tag.y, camera, decimals=None)
    cw, ch = layout.CAMERA_SIZE
    return min(max(tag.x, 0.0), float(cw)), min(max(tag.y, 0.0), float(ch))


def _traffic_box(out: list[Image.Image], tb: layout.TrafficBox, mode: str, cams: Sequence[str],
                 color: tuple[int, int, int]) -> None:
    """Outline one traffic element ``(c, s, x1, y1, x2, y2)`` on CAM_FRONT (grid when bracketed, else pixels),
    labelled with its category and status."""
    cam = layout.TRAFFIC_CAMERA
    cw, ch = layout.CAMERA_SIZE
    if tb.bracketed:
        convert = layout.grid_map(mode)
        corners = [*convert(tb.box[0], tb.box[1], cam, decimals=None),
                   *convert(tb.box[2], tb.box[3], cam, decimals=None)]
    else:
        corners = [min(max(v, 0.0), float(lim)) for v, lim in zip(tb.box, (cw, ch, cw, ch))]
    if mode == "stitched":
        img = out[0]
        where = layout.cell_box(cam, img.size)
        target = img.crop(where)
    else:
        img, where = out[list(cams).index(cam)], None
        target = img
    sx, sy = target.width / cw, target.height / ch
    x1, y1, x2, y2 = corners[0] * sx, corners[1] * sy, corners[2] * sx, corners[3] * sy
    ImageDraw.Draw(target).rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=color,
                                     width=max(2, round(min(target.size) * 0.006)))
    _marker(target, x2, y1, f"{tb.category}, {tb.status}", color)
    if where is not None:
        img.paste(target, where[:2])


def draw_answer(images: Sequence[Image.Image], answer: str, *, mode: str = "stitched", order: str = "stitch",
                **options: Any) -> list[Image.Image]:
    """Copies of `images` with the answer's c-tags, traffic-element boxes (on CAM_FRONT) and ``<ref>/<box>``
    boxes drawn.

    * ``stitched`` (one 3:1 image, else DomainError): a tag is mapped to its named camera's pixels
      (``from_stitched``, clamped to that camera) and drawn inside that camera's cell, so a point that strays into a
      neighbouring cell still lands on the camera it names; boxes are read on the whole image's 0–1000 grid.
    * ``multi`` (one image per camera in `order`): a tag is drawn on its camera's image at its own grid point;
      boxes, which name no camera, are drawn on every view.

    Tags naming unknown cameras (names are exact, upper-case, as the metrics read them: ``cam_front`` is unknown)
    are listed in a note at the bottom of the first image, never drawn.
    """
    cams = _check_mode(mode, order)
    out = [img.convert("RGB").copy() for img in images]
    if mode == "stitched" and len(out) != 1:
        raise DomainError(f"stitched mode draws on one stitched image, got {len(out)} images")
    if mode == "stitched":  # the cells of another shape are no cameras: every mark would land off its object
        layout.check_stitched_aspect(out[0].size, "stitched mode", "; draw one camera image with mode='multi'")
    if mode == "multi" and len(out) != len(cams):
        raise DomainError(f"multi mode draws on {len(cams)} camera images ({', '.join(cams)}), got {len(out)}")
    text = str(answer or "")
    unknown: list[str] = []
    for tag in layout.iter_ctags(text):
        camera = tag.camera  # exact, as metrics read it: a tag scoring leaves unmapped is not drawn either
        if camera not in layout.CAMERAS:
            unknown.append(f"c{tag.obj} ({tag.camera})")
            continue
        x_cam, y_cam = _camera_xy(tag, text, mode, camera)
        if mode == "stitched":
            img = out[0]
            box = layout.cell_box(camera, img.size)
            cell = img.crop(box)  # drawing on the cell alone keeps the marker on its camera
            _marker(cell, x_cam / layout.CAMERA_SIZE[0] * cell.width, y_cam / layout.CAMERA_SIZE[1] * cell.height,
                    f"c{tag.obj}", _color(tag.obj))
            img.paste(cell, box[:2])
        else:
            img = out[cams.index(camera)]
            _marker(img, x_cam / layout.CAMERA_SIZE[0] * img.width, y_cam / layout.CAMERA_SIZE[1] * img.height,
                    f"c{tag.obj}", _color(tag.obj))
    for k, tb in enumerate(layout.iter_traffic_boxes(text)):  # DriveLM's traffic elements, on CAM_FRONT
        _traffic_box(out, tb, mode, cams, _color(k + 1))
    if "<box>" in text:
        out = [draw_ref_boxes(img, text) for img in out]
    if unknown and out:
        _note(out[0], "not drawn, unknown camera: " + ", ".join(unknown))
    return out
