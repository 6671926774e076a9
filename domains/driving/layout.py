"""nuScenes camera names and orders, the stitched six-view layout, and DriveLM c-tags with their coordinate maps.

**Cameras.** nuScenes has six 1600×900 cameras. Orders differ between tools (``domains.md`` §1.3), so every
order here is an explicit, named tuple (:data:`CAMERA_ORDERS`); nothing relies on dict order.

**Stitched layout** (Mini-InternVL): each camera resized to 896×448, pasted into a 3×2 grid (front-left, front,
front-right / back-left, back, back-right), one 2688×896 image. Under InternVL tiling at max 12 tiles it is a 6×2
grid of 448 px tiles (each the left or right half of one camera) plus a thumbnail: 13 tiles.

**c-tags.** DriveLM names objects ``<c1,CAM_BACK,1088.3,497.5>``: object id, the camera holding the object
centre, and the centre in that camera's 1600×900 pixels. Samples carry them rewritten onto a 0–1000 grid:

* *stitched*: ``<c1,CAM_BACK,[x,y]>`` on the grid of the whole 2688×896 image::

      x_norm = (x_cam / 1600 + col) / 3 * 1000        y_norm = (y_cam / 900 + row) / 2 * 1000

  and the inverse (Mini-InternVL's ``post_process``), clamped to the camera frame::

      x_cam = (x_norm * 2688 / 1000 - col * 896) * 1600 / 896
      y_cam = (y_norm * 896 / 1000 - row * 448) * 900 / 448

* *multi-image*: ``<c1,CAM_BACK,[x,y]>`` on the named camera's own grid, ``x_norm = x_cam / 1600 * 1000``.

**Traffic-element boxes.** DriveLM's "Identify all the traffic elements in the front view ..." answer lists
``(c, s, x1, y1, x2, y2)``: category, status and the box corners. Its question calls the corners offsets from
the centre, but the data holds CAM_FRONT pixels from the top-left corner (``(traffic light, green, 674.86, 0.14,
723.33, 109.18)``), so both corners are mapped like c-tag points of CAM_FRONT (:func:`rewrite_traffic_boxes`) and
written ``(traffic light, green, [x1,y1,x2,y2])``: the brackets mark grid values, as in c-tags. DriveLM writes
these corners with two decimals, so they keep :data:`BOX_GRID_DECIMALS` (3) on the grid: the inverse gives the
same 0.01 px back.

Grid values keep :data:`GRID_DECIMALS` decimals: one grid unit is 4.8 camera pixels across the stitched image, so
integer grid values could not give back the camera pixel; with two decimals every coordinate round-trips within
0.03 px before the inverse rounds to 0.1 px (tested over random points).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

from PIL import Image, ImageDraw

from domains.base import DomainError
from domains.boxes import label_font
from model.errors import PocketAdaptError

__all__ = [
    "CAMERAS",
    "CAMERA_ORDERS",
    "CAMERA_SIZE",
    "CELL_SIZE",
    "DRIVELM_ORDER",
    "BOX_GRID_DECIMALS",
    "GRID_DECIMALS",
    "STITCHED_ASPECT_TOLERANCE",
    "STITCHED_PREFIX",
    "STITCHED_SIZE",
    "STITCH_ORDER",
    "CTag",
    "CTagError",
    "VIEW_MODES",
    "camera_order",
    "cell_box",
    "cell_of",
    "check_stitched_aspect",
    "ctag_points",
    "from_camera_grid",
    "from_stitched",
    "grid_map",
    "is_grid_tag",
    "iter_ctags",
    "is_stitched_frame",
    "iter_traffic_boxes",
    "multi_view_prefix",
    "render_ctag",
    "rewrite_ctags",
    "rewrite_traffic_boxes",
    "split_stitched",
    "stitch_cameras",
    "to_camera_grid",
    "to_stitched",
]

CAMERA_SIZE = (1600, 900)  # nuScenes camera images, (W, H)
CELL_SIZE = (896, 448)  # one camera in the stitched image
STITCHED_SIZE = (2688, 896)
STITCHED_ASPECT_TOLERANCE = 0.05  # a stitched image's width / height may differ from 3 by this share
GRID = 1000.0
GRID_DECIMALS = 2
CAMERA_DECIMALS = 1  # DriveLM writes camera pixels with one decimal; the inverse rounds to it
BOX_GRID_DECIMALS = 3  # traffic-element corners: 0.0005 grid units is at most 0.0024 px, under DriveLM's 0.01 px
BOX_CAMERA_DECIMALS = 2
TRAFFIC_CAMERA = "CAM_FRONT"  # DriveLM annotates traffic elements in the front view only

# Mini-InternVL stitch grid (and the devkit's render grid): row 0 front, row 1 back, left to right
STITCH_ORDER = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")
# DriveLM JSON ``image_paths`` / llama-adapter
DRIVELM_ORDER = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
# nuScenes sensor-table listing as in the devkit tutorials
NUSCENES_ORDER = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
CAMERA_ORDERS: dict[str, tuple[str, ...]] = {"stitch": STITCH_ORDER, "drivelm": DRIVELM_ORDER, "nuscenes": NUSCENES_ORDER}
CAMERAS = frozenset(STITCH_ORDER)
VIEW_MODES = ("stitched", "multi")  # grid of c-tags: the whole stitched image, or the named camera's own image

LABEL_COLOR = (255, 0, 255)  # camera names drawn in magenta, DejaVuSans-Bold 50, at the cell's top-left
LABEL_SIZE = 50


class CTagError(PocketAdaptError, ValueError):
    """A c-tag names an unknown camera or lies outside its image."""


def camera_order(name: str) -> tuple[str, ...]:
    """The camera order called `name` (``stitch``, ``drivelm`` or ``nuscenes``)."""
    try:
        return CAMERA_ORDERS[name]
    except KeyError:
        raise DomainError(f"unknown camera order {name!r}; known: {', '.join(CAMERA_ORDERS)}") from None


def _check_camera(camera: str) -> str:
    if camera not in CAMERAS:
        raise CTagError(f"unknown camera {camera!r}; nuScenes cameras are {', '.join(STITCH_ORDER)}")
    return camera


def cell_of(camera: str) -> tuple[int, int]:
    """(col, row) of `camera` in the stitched 3×2 grid."""
    k = STITCH_ORDER.index(_check_camera(camera))
    return k % 3, k // 3


def cell_box(camera: str, size: tuple[int, int] = STITCHED_SIZE) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of `camera`'s cell in a stitched 3:1 image of `size` (W, H)."""
    col, row = cell_of(camera)
    w, h = size
    return round(col * w / 3), round(row * h / 2), round((col + 1) * w / 3), round((row + 1) * h / 2)


def _inside(value: float, limit: float, what: str, camera: str) -> None:
    if not 0.0 <= value <= limit:
        raise CTagError(f"{what} = {value:g} lies outside {camera}'s image (0..{limit:g})")


def _finite_grid(xn: float, yn: float, camera: str) -> None:
    # the clamp below would hand NaN back unchanged (every comparison with it is False) and turn ±inf into an edge
    for what, value in (("x", xn), ("y", yn)):
        if not math.isfinite(value):
            raise CTagError(f"grid {what} = {value!r} for {camera} is not a finite number")


# --------------------------------------------------------------------------------------------- coordinate maps
def to_stitched(x: float, y: float, camera: str, decimals: int | None = GRID_DECIMALS) -> tuple[float, float]:
    """Camera pixels (1600×900 frame of `camera`) -> 0–1000 grid of the stitched 2688×896 image."""
    col, row = cell_of(camera)
    _inside(x, CAMERA_SIZE[0], "x", camera)
    _inside(y, CAMERA_SIZE[1], "y", camera)
    xn = (x / CAMERA_SIZE[0] + col) / 3 * GRID
    yn = (y / CAMERA_SIZE[1] + row) / 2 * GRID
    return (round(xn, decimals), round(yn, decimals)) if decimals is not None else (xn, yn)


def from_stitched(xn: float, yn: float, camera: str, decimals: int | None = CAMERA_DECIMALS) -> tuple[float, float]:
    """Stitched-image grid -> `camera`'s pixels, clamped to its 1600×900 frame (Mini-InternVL's inverse).

    Raises `CTagError` (a ValueError) for an unknown camera or a non-finite coordinate."""
    col, row = cell_of(camera)
    _finite_grid(xn, yn, camera)
    cw, ch = CELL_SIZE
    # post_process's own order of float operations: another order rounds a few points 0.1 px the other way
    x = ((xn / GRID) * STITCHED_SIZE[0] - col * cw) / cw * CAMERA_SIZE[0]
    y = ((yn / GRID) * STITCHED_SIZE[1] - row * ch) / ch * CAMERA_SIZE[1]
    x = min(max(x, 0.0), float(CAMERA_SIZE[0]))
    y = min(max(y, 0.0), float(CAMERA_SIZE[1]))
    return (round(x, decimals), round(y, decimals)) if decimals is not None else (x, y)


def to_camera_grid(x: float, y: float, camera: str, decimals: int | None = GRID_DECIMALS) -> tuple[float, float]:
    """Camera pixels -> the camera's own 0–1000 grid (multi-image samples)."""
    _check_camera(camera)
    _inside(x, CAMERA_SIZE[0], "x", camera)
    _inside(y, CAMERA_SIZE[1], "y", camera)
    xn, yn = x / CAMERA_SIZE[0] * GRID, y / CAMERA_SIZE[1] * GRID
    return (round(xn, decimals), round(yn, decimals)) if decimals is not None else (xn, yn)


def from_camera_grid(xn: float, yn: float, camera: str, decimals: int | None = CAMERA_DECIMALS) -> tuple[float, float]:
    """A camera's own 0–1000 grid -> its pixels, clamped to the frame; `CTagError` (a ValueError) for an unknown
    camera or a non-finite coordinate."""
    _check_camera(camera)
    _finite_grid(xn, yn, camera)
    x = min(max(xn / GRID * CAMERA_SIZE[0], 0.0), float(CAMERA_SIZE[0]))
    y = min(max(yn / GRID * CAMERA_SIZE[1], 0.0), float(CAMERA_SIZE[1]))
    return (round(x, decimals), round(y, decimals)) if decimals is not None else (x, y)


def grid_map(mode: str) -> Callable[..., tuple[float, float]]:
    """The map from `mode`'s 0–1000 grid back to camera pixels: :func:`from_stitched` (``"stitched"``) or
    :func:`from_camera_grid` (``"multi"``); ValueError for another mode."""
    if mode not in VIEW_MODES:
        raise ValueError(f"view mode must be 'stitched' or 'multi', got {mode!r}")
    return from_stitched if mode == "stitched" else from_camera_grid


# --------------------------------------------------------------------------------------------- c-tags
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"  # what float() reads without an exponent: 12, 12.5, 12., .5
# <c1,CAM_BACK,1088.3,497.5> (DriveLM) and <c1,CAM_BACK,[x,y]> (Mini-InternVL); spaces tolerated, brackets in pairs
_CTAG = re.compile(
    rf"<c(?P<id>\d+)\s*,\s*(?P<cam>[A-Za-z_]+)\s*,\s*(?P<open>\[)?\s*(?P<x>{_NUM})\s*,\s*(?P<y>{_NUM})\s*(?(open)\])\s*>"
)


_CTAG_LIKE = re.compile(r"<c\d+\s*,[^<>]*>")  # anything that starts like a c-tag, to catch malformed ones


class CTag(NamedTuple):
    """One c-tag: object number, camera, coordinates (camera pixels or grid, as the text had them)."""

    obj: int
    camera: str
    x: float
    y: float
    start: int = -1  # span in the text it was read from
    end: int = -1


def iter_ctags(text: str) -> Iterator[CTag]:
    """Every c-tag in `text`, bracketed or not, in order (the camera is not checked here)."""
    for m in _CTAG.finditer(text or ""):
        yield CTag(int(m["id"]), m["cam"], float(m["x"]), float(m["y"]), m.start(), m.end())


def is_grid_tag(text: str, tag: CTag) -> bool:
    """Whether `tag`, read from `text`, is written on the grid (``<c1,CAM_BACK,[x,y]>``), not in camera pixels."""
    return "[" in text[tag.start:tag.end]


def ctag_points(text: str) -> list[tuple[str, float, float]]:
    """``[(camera, x, y), ...]`` of the c-tags in `text`."""
    return [(t.camera, t.x, t.y) for t in iter_ctags(text)]


def _fmt(v: float, decimals: int) -> str:
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def render_ctag(obj: int, camera: str, x: float, y: float, *, bracket: bool = True,
                decimals: int = GRID_DECIMALS) -> str:
    """``<c{obj},{camera},[x,y]>`` (or DriveLM's unbracketed form), trailing zeros trimmed."""
    xy = f"{_fmt(x, decimals)},{_fmt(y, decimals)}"
    return f"<c{obj},{camera},[{xy}]>" if bracket else f"<c{obj},{camera},{xy}>"


def rewrite_ctags(text: str, convert: Callable[[float, float, str], tuple[float, float]], *, bracket: bool = True,
                  decimals: int = GRID_DECIMALS) -> str:
    """Rewrite every c-tag in `text` with `convert(x, y, camera) -> (x', y')`.

    Raises `CTagError` naming the tag when its camera is unknown, `convert` finds it outside the image, or it is
    malformed (``<c1,CAM_FRONT,abc,536.3>``, ``<c2,CAM_FRONT,1e9,5>``: it would be kept as text, never mapped).
    """
    tags = list(iter_ctags(text))
    starts = {t.start for t in tags}
    for m in _CTAG_LIKE.finditer(text or ""):
        if m.start() not in starts:
            raise CTagError(f"c-tag {m.group(0)!r}: malformed (expected <cN,CAMERA,x,y> with decimal numbers)")
    out, pos = [], 0
    for tag in tags:
        try:
            x, y = convert(tag.x, tag.y, tag.camera)
        except CTagError as exc:
            raise CTagError(f"c-tag {text[tag.start:tag.end]!r}: {exc}") from None
        out += [text[pos:tag.start], render_ctag(tag.obj, tag.camera, x, y, bracket=bracket, decimals=decimals)]
        pos = tag.end
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------------------------------- traffic boxes
_LABEL = r"[A-Za-z][^(),\[\]<>]*?"
# (traffic light, green, 674.86, 0.14, 723.33, 109.18) (DriveLM) and (traffic light, green, [x1,y1,x2,y2]) (grid)
_TRAFFIC_BOX = re.compile(
    rf"\(\s*(?P<cat>{_LABEL})\s*,\s*(?P<status>{_LABEL})\s*,\s*(?P<open>\[?)\s*(?P<x1>{_NUM})\s*,\s*(?P<y1>{_NUM})"
    rf"\s*,\s*(?P<x2>{_NUM})\s*,\s*(?P<y2>{_NUM})\s*(?P<close>\]?)\s*\)"
)


class TrafficBox(NamedTuple):
    """One ``(c, s, x1, y1, x2, y2)`` traffic element: category, status, corners (pixels or grid, as written)."""

    category: str
    status: str
    box: tuple[float, float, float, float]
    bracketed: bool
    start: int = -1
    end: int = -1


def iter_traffic_boxes(text: str) -> Iterator[TrafficBox]:
    """Every traffic-element tuple in `text`, in order; `bracketed` tells the grid form from DriveLM's pixels."""
    for m in _TRAFFIC_BOX.finditer(text or ""):
        if bool(m["open"]) != bool(m["close"]):
            continue
        box = (float(m["x1"]), float(m["y1"]), float(m["x2"]), float(m["y2"]))
        yield TrafficBox(m["cat"].strip(), m["status"].strip(), box, bool(m["open"]), m.start(), m.end())


def rewrite_traffic_boxes(text: str, convert: Callable[[float, float, str], tuple[float, float]], *,
                          bracket: bool = True, decimals: int = BOX_GRID_DECIMALS,
                          only_bracketed: bool | None = None) -> str:
    """Rewrite every traffic-element tuple in `text`, both corners through `convert(x, y, "CAM_FRONT")`.

    `bracket`: write the grid form ``(c, s, [x1,y1,x2,y2])`` (else DriveLM's ``(c, s, x1, y1, x2, y2)``).
    `only_bracketed`: True rewrites only grid tuples, False only pixel tuples, None every one. Raises `CTagError`
    naming the tuple when a corner lies outside the image or the corners are not top-left / bottom-right.
    """
    out, pos = [], 0
    for tb in iter_traffic_boxes(text):
        if only_bracketed is not None and tb.bracketed != only_bracketed:
            continue
        x1, y1, x2, y2 = tb.box
        where = text[tb.start:tb.end]
        if x2 < x1 or y2 < y1:
            raise CTagError(f"traffic element {where!r}: corners must be top-left then bottom-right")
        try:
            a = convert(x1, y1, TRAFFIC_CAMERA)
            b = convert(x2, y2, TRAFFIC_CAMERA)
        except CTagError as exc:
            raise CTagError(f"traffic element {where!r}: {exc}") from None
        if bracket:
            corners = f"[{','.join(_fmt(v, decimals) for v in (*a, *b))}]"
        else:
            corners = ", ".join(str(float(round(v, decimals))) for v in (*a, *b))
        out += [text[pos:tb.start], f"({tb.category}, {tb.status}, {corners})"]
        pos = tb.end
    out.append((text or "")[pos:])
    return "".join(out)


# --------------------------------------------------------------------------------------------- prompts
STITCHED_PREFIX = "<image>\n"


def multi_view_prefix(order: tuple[str, ...] | str = STITCH_ORDER) -> str:
    """The text that introduces six images in a multi-image sample: ``"CAM_FRONT_LEFT: <image>\\n..."``, one line
    per camera in `order` (a camera tuple or a :data:`CAMERA_ORDERS` name). Images go in the same order."""
    cams = camera_order(order) if isinstance(order, str) else tuple(order)
    for cam in cams:
        _check_camera(cam)
    return "".join(f"{cam}: <image>\n" for cam in cams)


# --------------------------------------------------------------------------------------------- images
def stitch_cameras(images: Mapping[str, Image.Image], *, label: bool = True) -> Image.Image:
    """Six camera images (camera name -> image, any size) -> one 2688×896 RGB image in :data:`STITCH_ORDER`.

    Each camera is resized to 896×448 (bicubic) and, with `label`, its name is drawn at the cell's top-left in
    magenta DejaVuSans-Bold 50 as Mini-InternVL does. A missing or unknown camera raises `CTagError`, a value
    that is not a PIL image (a path) TypeError naming its camera.
    """
    unknown = sorted(set(images) - CAMERAS)
    missing = [c for c in STITCH_ORDER if c not in images]
    if unknown or missing:
        raise CTagError(f"stitching needs exactly the six nuScenes cameras; missing {missing or 'none'}, "
                        f"unknown {unknown or 'none'}")
    not_images = [f"{c} ({type(images[c]).__name__})" for c in STITCH_ORDER if not isinstance(images[c], Image.Image)]
    if not_images:  # a path here failed deep in PIL as "'str' object has no attribute 'convert'"
        raise TypeError(f"stitching needs opened PIL images (model.tiling.load_image); not an image: "
                        f"{', '.join(not_images)}")
    canvas = Image.new("RGB", STITCHED_SIZE)
    for camera in STITCH_ORDER:
        col, row = cell_of(camera)
        cell = images[camera].convert("RGB").resize(CELL_SIZE, Image.Resampling.BICUBIC)
        if label:
            ImageDraw.Draw(cell).text((0, 0), camera, fill=LABEL_COLOR, font=label_font(LABEL_SIZE))
        canvas.paste(cell, (col * CELL_SIZE[0], row * CELL_SIZE[1]))
    return canvas


def check_stitched_aspect(size: tuple[int, int], where: str = "", hint: str = "") -> tuple[int, int]:
    """`size` (W, H) if it has the stitched 3:1 aspect within :data:`STITCHED_ASPECT_TOLERANCE`, else DomainError
    (prefixed with `where`, `hint` appended): the one check for every stitched image read."""
    w, h = size
    if not h or abs(w / h / 3.0 - 1.0) > STITCHED_ASPECT_TOLERANCE:
        raise DomainError(f"{where + ': ' if where else ''}a stitched six-camera image is 3:1 "
                          f"({STITCHED_SIZE[0]}x{STITCHED_SIZE[1]}), got {w}x{h}{hint}")
    return w, h


def is_stitched_frame(meta: Mapping | None, size: tuple[int, int] | None = None) -> bool:
    """Whether a record's one image is a stitched six-camera frame: its `meta` says ``view_mode: "stitched"`` (the
    DriveLM converter's records) or its `size` (W, H) is :data:`STITCHED_SIZE`. The one rule for every reader that
    must not treat such an image as a plain picture (a flip would put CAM_FRONT_LEFT on the right)."""
    if isinstance(meta, Mapping) and meta.get("view_mode") == "stitched":
        return True
    return size is not None and tuple(size) == STITCHED_SIZE


def split_stitched(image: Image.Image, *, camera_size: tuple[int, int] | None = CAMERA_SIZE) -> dict[str, Image.Image]:
    """A stitched image (any size with the 3:1 layout) -> camera name -> its cell, resized to `camera_size`.

    Raises DomainError for an image that is not 3:1 (:func:`check_stitched_aspect`): its cells would not be
    cameras."""
    w, h = check_stitched_aspect(image.size)
    out = {}
    for camera in STITCH_ORDER:
        cell = image.crop(cell_box(camera, (w, h)))
        out[camera] = cell.resize(camera_size, Image.Resampling.BICUBIC) if camera_size else cell
    return out
