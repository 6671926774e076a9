"""Boxes, points and the InternVL 0-1000 grounding text shared by all domains.

Pixel boxes are ``Box(x1, y1, x2, y2)``: x to the right, y down, ``(x1, y1)`` the top-left and ``(x2, y2)``
the bottom-right *edge* (so a box covering the whole ``W x H`` image is ``Box(0, 0, W, H)``).

InternVL writes boxes as integers on a 0-1000 grid, ``round(x / W * 1000)`` (``internvl.md`` §8), in the
text form ``<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>``; several boxes of one phrase share one
``<box>``: ``<box>[[...], [...]]</box>``. The grid step is ``W / 1000`` pixels, so a pixel -> grid -> pixel
round trip is exact to half a step: within one pixel for images up to 2000 px on a side (a box thinner than
half a step is kept one step wide by :func:`to_grid`: within one step, a pixel up to 1000 px).
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "GRID",
    "MIN_INSIDE",
    "ONE_BOX",
    "Box",
    "draw_ref_boxes",
    "label_font",
    "Point",
    "clip_box",
    "pixel_box",
    "upright_box",
    "from_grid",
    "parse_ref_boxes",
    "point_from_grid",
    "point_to_grid",
    "render_ref_box",
    "to_grid",
    "unfontable",
    "wide_fonts",
]

GRID = 1000


class Box(NamedTuple):
    """A pixel box; coordinates may be floats. Use :meth:`checked` to validate."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> Point:
        return Point((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def checked(self) -> Box:
        """Return self if the coordinates are finite and ordered (x1 <= x2, y1 <= y2), else ValueError."""
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in self):  # numpy scalars too
            raise ValueError(f"box {tuple(self)} has non-finite or non-numeric coordinates")
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(f"box {tuple(self)} is not ordered: need x1 <= x2 and y1 <= y2")
        return self

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


class Point(NamedTuple):
    x: float
    y: float


def _size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got {width}x{height}")


def pixel_box(box: Sequence[float]) -> Box:
    """`box` as a checked :class:`Box`; ValueError for one without exactly four values (not a raw TypeError)."""
    vals = list(box) if isinstance(box, Iterable) and not isinstance(box, (str, bytes)) else None
    if vals is None or len(vals) != 4:
        raise ValueError(f"pixel box needs 4 values (x1, y1, x2, y2), got {box!r}")
    return Box(*vals).checked()


MIN_INSIDE = 0.5  # a box with less of its area inside the image is a wrong box (or a wrong size), not an overshoot


def clip_box(box: Sequence[float], width: float, height: float, min_inside: float = 0.0) -> Box:
    """Clip a pixel box to the ``width x height`` image; a box lying wholly outside, or with less than
    `min_inside` of its area inside, raises ValueError. A side of zero extent lying on the image's edge, as
    ``(0, 0, 0, 10)``, is inside (the closed image rectangle): :func:`to_grid` widens it inward."""
    _size(width, height)
    b = pixel_box(box)
    # a side with extent must overlap the open image; one of zero extent may lie on its edge
    if any(hi < 0 or lo > size or (lo < hi and (lo >= size or hi <= 0))
           for lo, hi, size in ((b.x1, b.x2, width), (b.y1, b.y2, height))):
        raise ValueError(f"box {tuple(b)} lies outside the {width}x{height} image")
    clipped = Box(max(0, b.x1), max(0, b.y1), min(width, b.x2), min(height, b.y2))
    inside = clipped.width * clipped.height / b.area if b.area > 0 else 1.0
    if inside < min_inside:
        raise ValueError(f"box {tuple(b)} lies {1 - inside:.0%} outside the {width}x{height} image")
    return clipped


def upright_box(box: Sequence[float], width: float, height: float, orientation: int) -> Box:
    """A pixel box of a ``width x height`` image as stored -> the same pixels once the image is turned upright by
    its EXIF `orientation` (1-8, as ``ImageOps.exif_transpose`` and :func:`model.tiling.load_image` turn it)."""
    _size(width, height)
    x1, y1, x2, y2 = pixel_box(box)
    w, h = width, height
    corners = {  # where the stored corner (x, y) lands in the upright image
        1: lambda x, y: (x, y), 2: lambda x, y: (w - x, y), 3: lambda x, y: (w - x, h - y),
        4: lambda x, y: (x, h - y), 5: lambda x, y: (y, x), 6: lambda x, y: (h - y, x),
        7: lambda x, y: (h - y, w - x), 8: lambda x, y: (y, w - x),
    }
    if orientation not in corners:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation!r}")
    (ax, ay), (bx, by) = corners[orientation](x1, y1), corners[orientation](x2, y2)
    return Box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def to_grid(box: Sequence[float], width: float, height: float) -> list[int]:
    """Pixel box -> ``[x1, y1, x2, y2]`` on the 0-1000 grid: clipped to the image, ``round(v / W * 1000)``.

    A side that rounds to nothing (under half a grid step, or of zero pixel extent) keeps one grid step, on the
    side of its centre (so within one step of the pixels), instead of a zero-area box that no IoU can hit and
    :func:`parse_ref_boxes` drops: the grid box always has ``x2 > x1`` and ``y2 > y1``."""
    b = clip_box(box, width, height)
    scale = (width, height, width, height)
    g = [min(GRID, max(0, round(v / s * GRID))) for v, s in zip(b, scale)]
    for lo, hi, size in ((0, 2, width), (1, 3, height)):
        if g[hi] == g[lo]:
            centre = (b[lo] + b[hi]) / 2 / size * GRID
            if (centre >= g[lo] and g[hi] < GRID) or g[lo] == 0:
                g[hi] += 1
            else:
                g[lo] -= 1
    return g


def from_grid(grid: Sequence[float], width: float, height: float) -> Box:
    """``[x1, y1, x2, y2]`` on the 0-1000 grid -> pixel :class:`Box` (grid values are clamped to 0..1000)."""
    _size(width, height)
    if len(grid) != 4:
        raise ValueError(f"grid box needs 4 values, got {list(grid)!r}")
    g = [min(GRID, max(0, float(v))) for v in grid]
    return Box(g[0] / GRID * width, g[1] / GRID * height, g[2] / GRID * width, g[3] / GRID * height).checked()


def _xy(point: Sequence[float], what: str) -> tuple[float, float]:
    """The two finite numbers of a point; ValueError naming it otherwise (not a raw unpacking or TypeError)."""
    vals = list(point) if isinstance(point, Iterable) and not isinstance(point, (str, bytes)) else None
    if vals is None or len(vals) != 2 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in vals):
        raise ValueError(f"{what} needs 2 finite numbers (x, y), got {point!r}")
    return vals[0], vals[1]


def point_to_grid(point: Sequence[float], width: float, height: float) -> list[int]:
    _size(width, height)
    x, y = _xy(point, "point")
    if not (0 <= x <= width and 0 <= y <= height):
        raise ValueError(f"point {tuple(point)} lies outside the {width}x{height} image")
    return [round(x / width * GRID), round(y / height * GRID)]


def point_from_grid(grid: Sequence[float], width: float, height: float) -> Point:
    _size(width, height)
    gx, gy = (min(GRID, max(0, float(v))) for v in _xy(grid, "grid point"))
    return Point(gx / GRID * width, gy / GRID * height)


def _grid_box(box: Sequence[float]) -> list[int]:
    vals = list(box)
    if len(vals) != 4:
        raise ValueError(f"grid box needs 4 values, got {vals!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= GRID for v in vals):
        raise ValueError(f"grid box {vals!r} must hold integers in 0..{GRID}; pass width/height to convert pixels")
    vals = [int(v) for v in vals]  # numpy integers written as plain ones
    if vals[2] < vals[0] or vals[3] < vals[1]:
        raise ValueError(f"grid box {vals!r} is not ordered: need x1 <= x2 and y1 <= y2")
    if vals[2] == vals[0] or vals[3] == vals[1]:  # parse_ref_boxes drops it, grounding_hit refuses it as a reference
        raise ValueError(f"grid box {vals!r} has no area: need x1 < x2 and y1 < y2 (to_grid widens a thin pixel box)")
    return vals


def _is_values(obj: object) -> bool:
    """Whether `obj` can be a box or a list of boxes: iterable and not text (a string iterates as characters)."""
    return isinstance(obj, Iterable) and not isinstance(obj, (str, bytes))


def render_ref_box(phrase: str, boxes: Sequence[float] | Iterable[Sequence[float]],
                   width: float | None = None, height: float | None = None) -> str:
    """``<ref>phrase</ref><box>[[x1, y1, x2, y2], ...]</box>``.

    `boxes` is one box or a list of boxes. Without `width`/`height` they are already 0-1000 grid integers;
    with them they are pixel boxes, clipped and converted with :func:`to_grid`.
    """
    if not isinstance(phrase, str):
        raise ValueError(f"phrase must be a string, got {type(phrase).__name__} {phrase!r}")
    if "<ref>" in phrase or "</ref>" in phrase or "<box>" in phrase or "</box>" in phrase:
        raise ValueError(f"phrase {phrase!r} must not contain <ref>/<box> tags")
    if not _is_values(boxes):
        raise ValueError(f"boxes for phrase {phrase!r} must be one [x1, y1, x2, y2] box or a list of them, got "
                         f"{type(boxes).__name__} {boxes!r}")
    items = list(boxes)
    if len(items) == 4 and all(isinstance(v, numbers.Real) for v in items):  # numpy scalars too (an array row)
        items = [items]  # a single box
    if not items:
        raise ValueError(f"no boxes given for phrase {phrase!r}")
    if (width is None) != (height is None):
        raise ValueError("give both width and height (pixel boxes) or neither (grid boxes)")
    bad = [b for b in items if not _is_values(b)]
    if bad:
        raise ValueError(f"each box for phrase {phrase!r} must be [x1, y1, x2, y2], got {type(bad[0]).__name__} "
                         f"{bad[0]!r}")
    grid = [to_grid(b, width, height) if width is not None else _grid_box(b) for b in items]
    inner = ", ".join(f"[{b[0]}, {b[1]}, {b[2]}, {b[3]}]" for b in grid)
    return f"<ref>{phrase}</ref><box>[{inner}]</box>"


_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
ONE_BOX = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")
"""One ``[x1, y1, x2, y2]`` of numbers in text (groups: the four values): how every box of an answer is read."""
_REF_OR_BOX = re.compile(r"<ref>(.*?)</ref>\s*(?:<box>(.*?)</box>)?|<box>(.*?)</box>", re.DOTALL)


def parse_ref_boxes(text: str, width: float | None = None, height: float | None = None
                    ) -> list[tuple[str, list]]:
    """Every ``<ref>phrase</ref><box>[[...], ...]</box>`` in `text` as ``(phrase, [boxes])``, in order.

    Boxes are 0-1000 grid ``[x1, y1, x2, y2]`` lists of ints (floats kept if written as floats); with
    `width`/`height` they come back as pixel :class:`Box` es. A ``<box>`` without a ``<ref>`` gets phrase
    ``""``; a ``<ref>`` without a ``<box>`` gets ``[]``. Malformed boxes inside ``<box>`` are ignored, and so,
    with `width`/`height`, are reversed ones (x1 > x2 or y1 > y2) and those with no area left once clamped to
    the image (wholly off it): a model's answer may hold any of them.
    """
    if not isinstance(text, str):
        raise ValueError(f"parse_ref_boxes needs the answer's text as a string, got {type(text).__name__} {text!r}")
    out: list[tuple[str, list]] = []
    for m in _REF_OR_BOX.finditer(text):
        phrase = m.group(1) if m.group(1) is not None else ""
        body = m.group(2) if m.group(1) is not None else m.group(3)
        boxes: list = []
        for bm in ONE_BOX.finditer(body or ""):
            try:  # int() refuses over 4300 digits: a runaway answer's number is one more malformed box
                vals = [float(v) if "." in v else int(v) for v in bm.groups()]
                if width is None:
                    boxes.append(vals)
                    continue
                box = from_grid(vals, width, height)
            except ValueError:
                continue
            if box.x2 > box.x1 and box.y2 > box.y1:
                boxes.append(box)
        out.append((phrase.strip(), boxes))
    return out


PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def _luminance(rgb: Sequence[int]) -> float:
    """WCAG relative luminance of an sRGB colour."""
    lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def text_colour(fill: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with `fill` (WCAG ratio): white on the palette's cyan, orange or
    green was barely readable (1.4:1 on cyan)."""
    lum = _luminance(fill)
    return (0, 0, 0) if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else (255, 255, 255)


# Fonts people may have that cover Chinese (SLAKE's zh phrases) and most other scripts, in order of preference.
# None ships with pocket-adapt's dependencies (matplotlib brings DejaVu: Latin, Greek, Cyrillic, not CJK), so
# without one installed (fonts-noto-cjk) such a label says what it could not draw (see _font_for; the charts of
# adapt.evaluate likewise).
_WIDE_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
               "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "Microsoft YaHei", "SimHei",
               "PingFang SC", "Hiragino Sans GB", "Arial Unicode MS")


def _dejavu_file() -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf")  # shipped with matplotlib


@lru_cache(maxsize=32)
def _truetype(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def label_font(size: int):
    """DejaVuSans-Bold (shipped with matplotlib) at `size` px: the font of every label drawn on an image."""
    from PIL import ImageFont

    try:
        return _truetype(_dejavu_file(), size)
    except OSError:  # pragma: no cover - a matplotlib without its fonts
        return ImageFont.load_default(size)


@lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError):  # unreadable font file
        return frozenset()


@lru_cache(maxsize=1)
def wide_fonts() -> tuple[tuple[str, str], ...]:
    """``(family, file)`` of each installed :data:`_WIDE_FONTS` matplotlib's font list knows, preferred first (looked
    up once): the labels drawn on images and the charts (``adapt.evaluate``) take characters DejaVu lacks from them."""
    from matplotlib import font_manager

    found = {f.name: f.fname for f in font_manager.fontManager.ttflist if f.name in _WIDE_FONTS}
    return tuple((name, found[name]) for name in _WIDE_FONTS if name in found)


def _wide_font_files() -> tuple[str, ...]:
    return tuple(path for _, path in wide_fonts())


def unfontable(text: str, font_file: str | None = None) -> str:
    """The printable characters of `text` (each once, in order) that neither `font_file` (default: the labels'
    DejaVu Sans Bold) nor any installed wide font has: they would draw as empty boxes. "" where `font_file`'s
    character map cannot be read (nothing to check against)."""
    primary = _charmap(font_file or _dejavu_file())
    if not primary:
        return ""
    missing = [ch for ch in dict.fromkeys(text) if ch.isprintable() and not ch.isspace() and ord(ch) not in primary]
    for path in _wide_font_files():
        if not missing:
            break
        missing = [ch for ch in missing if ord(ch) not in _charmap(path)]
    return "".join(missing)


def _font_for(text: str, size: int):
    """``(font, text to draw)``: :func:`label_font` where DejaVu has every character of `text`, else an installed
    font that has them all (:data:`_WIDE_FONTS`); where none has, the characters no font here has are left out and
    the label says how many (with a warning), instead of drawing them as empty boxes."""
    text = "".join(ch for ch in text if ch.isprintable())
    dejavu = _dejavu_file()
    codes = {ord(ch) for ch in text}
    if codes <= _charmap(dejavu) or not _charmap(dejavu):  # a matplotlib without its fonts: nothing to check
        return label_font(size), text
    for path in _wide_font_files():
        if codes <= _charmap(path):
            try:
                return _truetype(path, size), text
            except OSError:
                continue
    kept = "".join(ch for ch in text if ord(ch) in _charmap(dejavu))
    missing = len(text) - len(kept)
    warnings.warn("no installed font has some characters of a box label (CJK needs one, e.g. fonts-noto-cjk): they "
                  "are left out of the label", stacklevel=3)
    return label_font(size), f"{kept.strip()} [{missing} char{'s' * (missing != 1)}: no font]".lstrip()


def draw_ref_boxes(image, text: str, width: int | None = None):
    """A copy of `image` with every `<ref>phrase</ref><box>[[…]]</box>` of `text` drawn and labelled.

    `width`: the outline in pixels; by default 3, or 1/300 of the image's shorter side where that is more (a fixed
    3 px was a hairline on a 4000 px aerial scene once shown scaled down to a screen).

    Boxes are read on the 0–1000 grid of this image; each phrase gets its own colour. A box that cannot be drawn
    (reversed, wholly off the image) is left out and the others are drawn (:func:`parse_ref_boxes`). A label
    (:func:`label_font`, scaled to the image; a CJK phrase needs an installed CJK font) sits above its box, or
    below it where there is no room above.
    """
    from PIL import ImageDraw

    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    size = max(11, round(min(out.size) / 40))
    width = max(3, round(min(out.size) / 300)) if width is None else width
    for k, (phrase, boxes) in enumerate(parse_ref_boxes(text, out.width, out.height)):
        colour = PALETTE[k % len(PALETTE)]
        font, label = _font_for(phrase, size) if phrase else (None, "")
        for box in boxes:
            # a box under a pixel wide (a tiny lesion on the 0-1000 grid) is drawn one pixel wide: PIL refuses x2 < x1
            draw.rectangle([box.x1, box.y1, max(box.x1, box.x2 - 1), max(box.y1, box.y2 - 1)], outline=colour,
                           width=width)
            if label:
                left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
                w, h = right - left + 4, bottom - top + 4
                x = max(0, min(box.x1, out.width - w))
                # above the box; where there is no room, below it; else inside it at its top
                y = box.y1 - h if box.y1 >= h else box.y2 if box.y2 + h <= out.height else box.y1
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
                draw.text((x + 2 - left, y + 2 - top), label, fill=text_colour(colour), font=font)
    return out
