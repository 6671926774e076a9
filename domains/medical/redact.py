"""Pixel redaction of burned-in text for DICOM images that declare it (BurnedInAnnotation ``YES``).

Text burned into the pixels (patient name, ID, dates, institution) is not removed by header
de-identification. :func:`redact_burned_in` blacks out the places where it is put, decided by the first rule
that applies:

1. ``regions`` given by the caller: rectangles ``(x1, y1, x2, y2)`` in pixels of the image (x2 / y2 exclusive;
   an empty list is refused, since it would redact nothing);
2. **ultrasound regions** -- a file with a SequenceOfUltrasoundRegions keeps only those regions (each
   RegionLocationMinX0 / MinY0 / MaxX1 / MaxY1, inclusive) and everything around them is blacked out: scanners
   put the image data inside the regions and their text (patient, date, settings) outside. This is the rule of
   RSNA CTP's DicomPixelAnonymizer and pydicom's ``deid`` ("keepcoordinates from SequenceOfUltrasoundRegions");
3. the **modality mask** :data:`REDACTION_MASKS`, in fractions of the width and height: ``US`` the top 12 %
   (where ultrasound vendors print the patient header), every other modality (``"*"``) the top and bottom 10 %
   (the corner and banner text of secondary captures, fluoroscopy and film-digitiser images); a band on the top
   or bottom edge is at least :data:`MIN_BAND_PX` rows high, the height of a line of small print.

Masks are heuristics: text outside them stays, and image data inside them is lost. So a redacted file keeps
BurnedInAnnotation ``YES`` -- nothing here claims the pixels are clean -- and callers report the regions
(:class:`Redaction`) so that a person can check them; the converters record them in each record's ``meta``.
Redaction is off by default everywhere (``redact_burned_in=False``) and touches only files that declare burned-in
text (:func:`domains.medical.deid.burned_in_annotation`). Why not a library: pydicom's ``deid`` keeps the same
ultrasound rule plus rectangles for a list of named scanner models, but reads files itself, imports matplotlib's
GUI layer and the deprecated pydicom pixel handlers; presidio's DICOM redactor needs OCR (tesseract) and spaCy
models downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Number
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from domains.base import DomainError

__all__ = ["MIN_BAND_PX", "REDACTION_MASKS", "Redaction", "redact_burned_in", "redaction_regions"]

Box = tuple[int, int, int, int]
# (x1, y1, x2, y2) in fractions of width and height, per Modality; "*" for every other modality
REDACTION_MASKS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "US": ((0.0, 0.0, 1.0, 0.12),),
    "*": ((0.0, 0.0, 1.0, 0.10), (0.0, 0.90, 1.0, 1.0)),
}
MIN_BAND_PX = 16
# PIL modes redacted as they are (numpy round-trips them); others are converted to RGB first
_KEPT_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "F"})


@dataclass(frozen=True)
class Redaction:
    """The redacted image (same type and size as given; a PIL image in the same mode, except palette and other
    colour modes, which come back as RGB: :func:`redact_burned_in`), the boxes blacked out ``(x1, y1, x2, y2)`` with
    x2 / y2 exclusive, in pixels of that image, and the rule that chose them (``"regions given"``,
    ``"ultrasound regions"``, ``"mask US"``, ``"mask *"``, or ``"not flagged"`` when nothing was done)."""

    image: Any
    regions: tuple[Box, ...]
    rule: str

    def as_dict(self) -> dict:
        return {"regions": [list(box) for box in self.regions], "rule": self.rule}


def _flagged(ds: Dataset) -> bool:
    from domains.medical.deid import burned_in_annotation

    return burned_in_annotation(ds)


def _mask_to_boxes(mask: np.ndarray) -> tuple[Box, ...]:
    """A boolean (H, W) mask as rectangles: runs of each row, merged down while rows repeat them."""
    boxes: list[Box] = []
    open_runs: dict[tuple[int, int], int] = {}
    height = mask.shape[0]
    for y in range(height + 1):
        runs: set[tuple[int, int]] = set()
        if y < height:
            edges = np.flatnonzero(np.diff(np.concatenate(([0], mask[y].astype(np.int8), [0]))))
            runs = set(zip(edges[::2].tolist(), edges[1::2].tolist()))
        for run in set(open_runs) - runs:
            boxes.append((run[0], open_runs.pop(run), run[1], y))
        for run in runs - set(open_runs):
            open_runs[run] = y
    return tuple(sorted(boxes, key=lambda b: (b[1], b[0])))


def _ultrasound_keep(ds: Dataset, width: int, height: int) -> np.ndarray | None:
    """True where a SequenceOfUltrasoundRegions region lies (scaled to the image), or None without usable regions."""
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    columns, rows = int(ds.get("Columns") or width), int(ds.get("Rows") or height)
    keep = np.zeros((height, width), dtype=bool)
    found = False
    for region in regions:
        try:
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        if x1 < x0 or y1 < y0:
            continue
        sx, sy = width / columns, height / rows
        keep[max(0, round(y0 * sy)):min(height, round((y1 + 1) * sy)),
             max(0, round(x0 * sx)):min(width, round((x1 + 1) * sx))] = True
        found = True
    return keep if found and keep.any() else None


def redaction_regions(ds: Dataset, width: int, height: int, regions: Any = None) -> tuple[tuple[Box, ...], str]:
    """The boxes to black out in a `width` x `height` render of `ds`, and the rule that chose them (module notes).

    `regions`: ``[[x1, y1, x2, y2], ...]`` in pixels (x2 / y2 exclusive), used instead of the rules; an empty
    list (which would redact nothing) or anything else is a :class:`DomainError` naming that shape."""
    if regions is not None:
        shape = "regions must be a list of pixel boxes [[x1, y1, x2, y2], ...] (x2 / y2 exclusive)"
        # text and mappings iterate (by character / key) but are no list of boxes; a number does not iterate at all
        if isinstance(regions, (str, bytes, Mapping)) or not isinstance(regions, Iterable):
            raise DomainError(f"{shape}, got {regions!r}")
        regions = list(regions)
        if not regions:  # an empty list would leave a file that declares burned-in text unredacted, silently
            raise DomainError("regions is an empty list, which would redact nothing: give at least one pixel box "
                              "[[x1, y1, x2, y2]], or regions=None for the automatic rule (module notes)")
        if any(isinstance(box, Number) for box in regions):
            raise DomainError(f"{shape}, got {regions!r} (a single box is a list too: [[x1, y1, x2, y2]])")
        boxes = []
        for box in regions:
            try:
                x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite coordinate
                raise DomainError(f"redaction region {box!r} is not four finite numbers (x1, y1, x2, y2)") from None
            x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
            y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
            if x2 <= x1 or y2 <= y1:
                raise DomainError(f"redaction region {box!r} is empty inside the {width} x {height} image")
            boxes.append((x1, y1, x2, y2))
        return tuple(boxes), "regions given"
    keep = _ultrasound_keep(ds, width, height)
    if keep is not None:
        return _mask_to_boxes(~keep), "ultrasound regions"
    modality = str(ds.get("Modality") or "").strip().upper()
    key = modality if modality in REDACTION_MASKS else "*"
    boxes = []
    for fx1, fy1, fx2, fy2 in REDACTION_MASKS[key]:
        x1, y1, x2, y2 = round(fx1 * width), round(fy1 * height), round(fx2 * width), round(fy2 * height)
        if y1 == 0 and y2 < MIN_BAND_PX:  # a band on the top edge: at least one line of small print high
            y2 = min(height, MIN_BAND_PX)
        if y2 == height and height - y1 < MIN_BAND_PX:
            y1 = max(0, height - MIN_BAND_PX)
        box = (x1, y1, x2, y2)
        if box[2] > box[0] and box[3] > box[1]:
            boxes.append(box)
    return tuple(boxes), f"mask {key}"


def redact_burned_in(image: Any, ds: Dataset, *, regions: Any = None, fill: int = 0,
                     only_flagged: bool = True) -> Redaction:
    """Black out the burned-in text regions of `image`, a render of `ds` (see the module notes).

    `image`: a PIL image or an array whose first two axes are rows and columns (any dtype, any trailing axes);
    a copy is returned, the input is not changed. A PIL image keeps its mode when it is 1-bit, L, LA, RGB, RGBA,
    I, I;16 or F; any other (palette P / PA, CMYK, YCbCr, ...) comes back as RGB, since a `fill` written into
    palette indices or ink would not be black. `regions`: pixel boxes to use instead of the rules. `fill`: the
    value written (one that integer pixels can hold, else a DomainError) into the colour channels; the alpha of an
    LA / RGBA image is set opaque in the boxes (an array's channels are all filled: it has no mode naming alpha).
    With `only_flagged` (the default) an image whose file does not declare burned-in text comes back unchanged,
    with no regions and the rule ``"not flagged"``: the very object given, not a copy.
    """
    if only_flagged and not _flagged(ds):
        return Redaction(image, (), "not flagged")
    if isinstance(image, Image.Image):
        pixels = np.array(image if image.mode in _KEPT_MODES else image.convert("RGB"))
    else:
        pixels = np.array(image, copy=True)
    if pixels.ndim < 2 or 0 in pixels.shape[:2]:
        raise DomainError(f"cannot redact an image of shape {pixels.shape}: expected rows x columns (x samples)")
    height, width = pixels.shape[:2]
    boxes, rule = redaction_regions(ds, width, height, regions)
    try:
        number = float(fill)
    except (TypeError, ValueError):
        raise DomainError(f"fill {fill!r} is not a number") from None
    if np.issubdtype(pixels.dtype, np.integer):  # numpy raises a bare OverflowError, or truncates 1.5 to 1
        info = np.iinfo(pixels.dtype)
        if not number.is_integer() or not info.min <= number <= info.max:
            raise DomainError(f"fill {fill!r} is not a value of this image's {pixels.dtype} pixels "
                              f"({info.min}..{info.max})")
    # an alpha channel filled too would make the box transparent: the text under it could show when composited
    opaque = isinstance(image, Image.Image) and image.mode in ("LA", "RGBA")
    for x1, y1, x2, y2 in boxes:
        pixels[y1:y2, x1:x2, ...] = fill
        if opaque:
            pixels[y1:y2, x1:x2, -1] = 255
    if isinstance(image, Image.Image):
        return Redaction(Image.fromarray(pixels), boxes, rule)  # a new image: no text chunks carried over
    return Redaction(pixels, boxes, rule)
