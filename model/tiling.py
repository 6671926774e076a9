"""InternVL dynamic tiling and image normalisation.

Reproduces InternVL2 / Mini-InternVL preprocessing (``dynamic_preprocess`` + ``build_transform``):
pick the tile grid whose aspect ratio is closest to the image's, resize the whole image to that
grid with bicubic resampling, cut it row-major into square tiles and append a thumbnail of the
whole image when there is more than one tile. Three single-tile modes cover other model families:
``pad`` (LLaVA / MobileVLM expand-to-square), ``crop`` (CLIPImageProcessor's shortest-edge resize and
centre crop: MobileVLM without ``image_aspect_ratio: pad``) and ``resize`` (squash to one tile).

Normalisation is bit-compatible with transformers' ``GotOcr2ImageProcessorPil``: uint8 is scaled
by ``1/255`` in float64, cast to float32, then ``(x - mean) / std`` is computed in float32.

:func:`load_image` is the one image reader of training, evaluation, chat and the demo: EXIF orientation
applied, 16-bit / 32-bit / float images stretched to 8 bit, and images above ``max_pixels`` refused
before they are decoded. An image handed over in memory (a caller's ``Image.open``) that still carries an EXIF
orientation is turned by it as well, so a photo tiles the same whether its path or its opened image is given.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import os
import struct
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, ImageOps

from .errors import PocketAdaptError
from .limits import DEFAULT_MAX_PIXELS, MAX_TILES_LIMIT
from .quiet import ignoring

if TYPE_CHECKING:  # torch is imported where tensors are made, so tile planning (`adapt tiles`) stays light
    import torch

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageLoadError",
    "MAX_TILES_LIMIT",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "TilingConfig",
    "TilingError",
    "as_rgb",
    "candidate_grids",
    "count_tiles",
    "load_image",
    "most_tiles_per_image",
    "normalize",
    "preprocess_image",
    "split_into_tiles",
    "tile_counts",
    "tile_grid",
    "upright_size",
    "warn_if_thumbnail_added",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)

Mode = Literal["dynamic", "pad", "crop", "resize"]
_MODES: tuple[str, ...] = ("dynamic", "pad", "crop", "resize")
_BICUBIC = Image.Resampling.BICUBIC



class TilingError(PocketAdaptError, ValueError):
    """A tiling setting is out of range (from a recipe, a CLI flag, a meta JSON or a checkpoint config)."""


@dataclass(frozen=True)
class TilingConfig:
    """How one image becomes tiles.

    ``mode``: ``dynamic`` = InternVL tiles (+ thumbnail); ``pad`` = pad to a centred square with
    colour ``int(255 * mean)`` then resize to one tile; ``crop`` = resize the shortest edge to the tile
    size, then cut the centred tile (transformers' CLIPImageProcessor); ``resize`` = squash to one tile.
    ``min_tiles`` / ``max_tiles`` / ``thumbnail`` only apply to ``dynamic``; tile counts are at most
    :data:`MAX_TILES_LIMIT`. An image whose share of ``max_tiles`` (:meth:`for_images`) is below ``min_tiles``
    gets one tile, as in InternVL. ``max_pixels`` caps the decoded pixels of one image file (:func:`load_image`).
    Every path that sets these (recipes, CLI flags, meta JSON caps, checkpoint configs) builds a
    ``TilingConfig``, so an out-of-range value fails here with a :class:`TilingError`.
    """

    tile_size: int = 448
    min_tiles: int = 1
    max_tiles: int = 12
    thumbnail: bool = True
    mode: Mode = "dynamic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        # Coerce sequences (e.g. lists from JSON/YAML) so the frozen config stays hashable.
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        for name in ("tile_size", "min_tiles", "max_tiles", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TilingError(f"TilingConfig.{name} must be an int, got {value!r}")
        if self.tile_size <= 0:
            raise TilingError(f"TilingConfig.tile_size must be > 0, got {self.tile_size}")
        if self.min_tiles < 1:
            raise TilingError(f"TilingConfig.min_tiles must be >= 1, got {self.min_tiles}")
        for name in ("min_tiles", "max_tiles"):
            if getattr(self, name) > MAX_TILES_LIMIT:
                raise TilingError(
                    f"TilingConfig.{name} is {getattr(self, name)}; it must be at most {MAX_TILES_LIMIT} "
                    "(InternVL uses up to 12 tiles per image)"
                )
        if self.min_tiles > self.max_tiles:
            raise TilingError(
                f"TilingConfig.min_tiles ({self.min_tiles}) must be <= max_tiles ({self.max_tiles})"
            )
        if self.mode not in _MODES:
            raise TilingError(f"TilingConfig.mode must be one of {_MODES}, got {self.mode!r}")
        if not isinstance(self.thumbnail, bool):
            raise TilingError(f"TilingConfig.thumbnail must be a bool, got {self.thumbnail!r}")
        if any(s <= 0 for s in self.std):
            raise TilingError(f"TilingConfig.std must be > 0, got {self.std}")
        if not all(0 <= m <= 1 for m in self.mean):  # 123.675, ... (mmcv's 0-255 means) normalised every tile to ~-2
            raise TilingError(f"TilingConfig.mean must be on the 0-1 scale of pixels divided by 255 (ImageNet's is "
                              f"{IMAGENET_MEAN}), got {self.mean}; for a mean on the 0-255 scale, divide it and the "
                              "std by 255")
        if self.max_pixels < 1:
            raise TilingError(f"TilingConfig.max_pixels must be >= 1, got {self.max_pixels}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-safe dict (mean/std as lists); inverse of :meth:`from_dict`."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TilingConfig:
        """Build from a dict; unknown keys raise :class:`TilingError` naming them."""
        if not isinstance(d, dict):
            raise TilingError(f"tiling settings must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TilingError(
                f"unknown TilingConfig key(s): {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**d)

    def for_images(self, n_images: int) -> TilingConfig:
        """Config for each image of an ``n_images``-image sample: at most ``max(1, max_tiles // n)`` tiles
        (:meth:`with_max_tiles`: one tile where that share is below ``min_tiles``, as in InternVL).

        A cap of 1 gives a single tile (hence no thumbnail).
        """
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise TilingError(f"n_images must be a whole number >= 1, got {n_images!r}")
        return self.with_max_tiles(max(1, self.max_tiles // n_images))

    def with_max_tiles(self, max_tiles: int) -> TilingConfig:
        """This tiling with at most `max_tiles` tiles per image (a multi-image sample's share, a source's or meta
        entry's ``max_dynamic_patch``), as InternVL's ``dynamic_preprocess`` takes it with ``min_tiles`` unchanged:
        where ``min_tiles`` is above the cap no grid fits, so each image gets one tile (no thumbnail), never a grid
        of fewer tiles than ``min_tiles`` asks for."""
        if isinstance(max_tiles, bool) or not isinstance(max_tiles, int) or max_tiles < 1:
            raise TilingError(f"max_tiles must be a whole number >= 1, got {max_tiles!r}")
        if self.min_tiles > max_tiles:
            return dataclasses.replace(self, min_tiles=1, max_tiles=1)
        return dataclasses.replace(self, max_tiles=max_tiles)


def _triple(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    try:
        items = () if isinstance(values, (str, bytes)) else tuple(values)
    except TypeError:  # a bare number
        items = ()
    if len(items) != 3:
        raise TilingError(f"TilingConfig.{name} must have 3 values (one per RGB channel), got {values!r}")
    try:
        vals = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise TilingError(f"TilingConfig.{name} must be 3 numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in vals):  # a NaN std would turn every tile into NaN
        raise TilingError(f"TilingConfig.{name} must be finite numbers, got {values!r}")
    return vals  # type: ignore[return-value]


def _first_insertions(min_tiles: int, max_tiles: int) -> Iterator[tuple[int, int]]:
    """The grids in the order InternVL's triple loop (``n``, then ``cols``, then ``rows`` in ``1..n``) first
    yields them, without the loop: a grid first appears at ``n = max(min_tiles, cols, rows)``, and within
    one ``n`` in (cols, rows) order. O(max_tiles · log max_tiles) instead of O(max_tiles³)."""

    def fits(cols: int, rows: int) -> bool:
        return min_tiles <= cols * rows <= max_tiles

    first = min_tiles  # at n = min_tiles, every grid inside min_tiles x min_tiles
    for cols in range(1, min(first, max_tiles) + 1):
        for rows in range(1, min(first, max_tiles // cols) + 1):
            if fits(cols, rows):
                yield cols, rows
    for n in range(first + 1, max_tiles + 1):  # later n: the grids with a side of exactly n
        for cols in range(1, min(n - 1, max_tiles // n) + 1):
            if fits(cols, n):
                yield cols, n
        for rows in range(1, min(n, max_tiles // n) + 1):
            if fits(n, rows):
                yield n, rows


@lru_cache(maxsize=64)
def _candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    # The same first-insertion sequence into a set as InternVL (repeats change nothing), so CPython's
    # iteration order (which the stable sort keeps among equal tile counts, and which decides ties) is
    # identical.
    grids = set(_first_insertions(min_tiles, max_tiles))
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """All ``(cols, rows)`` with ``min_tiles <= cols*rows <= max_tiles``, in InternVL's order."""
    return list(_candidate_grids(min_tiles, max_tiles))


def tile_grid(
    width: int, height: int, min_tiles: int = 1, max_tiles: int = 12, tile_size: int = 448
) -> tuple[int, int]:
    """InternVL's ``(cols, rows)`` for a ``width`` x ``height`` image (no pixels touched).

    Closest aspect ratio wins; on an exact tie a later (larger) grid wins only while the image
    area exceeds half the grid's pixel area.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in _candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def count_tiles(width: int, height: int, config: TilingConfig) -> int:
    """Number of tiles ``split_into_tiles`` yields for this size, thumbnail included."""
    if config.mode != "dynamic":
        return 1
    cols, rows = tile_grid(width, height, config.min_tiles, config.max_tiles, config.tile_size)
    n = cols * rows
    return n + 1 if config.thumbnail and n > 1 else n


def tile_counts(config: TilingConfig) -> list[int]:
    """Every tile count ``split_into_tiles`` gives one image, whatever its size, thumbnail included: ``[1]`` in the
    single-tile modes (``pad``, ``crop``, ``resize``), else each candidate grid's."""
    if config.mode != "dynamic":
        return [1]
    return sorted({c * r + (1 if config.thumbnail and c * r > 1 else 0)
                   for c, r in candidate_grids(config.min_tiles, config.max_tiles)})


def most_tiles_per_image(config: TilingConfig) -> int:
    """The most tiles ``split_into_tiles`` gives one image of any size (`tile_counts`' largest)."""
    return tile_counts(config)[-1]


def warn_if_thumbnail_added(config: TilingConfig, reader: str) -> None:
    """The one warning of every export whose other reader (`reader`: transformers' GotOcr2 image processor for hf,
    llama.cpp's own InternVL preprocessing for gguf) always adds a thumbnail after an image's tiles, for a dynamic
    tiling of more than one tile without one. The internvl, pocket, onnx, executorch and tensorrt exports record
    ``thumbnail`` where their readers follow it."""
    if config.mode == "dynamic" and not config.thumbnail and config.max_tiles > 1:
        warnings.warn(f"this model tiles images without a thumbnail (tiling.thumbnail false), but {reader} always adds "
                      "one after the tiles of an image cut into more than one, so there the model sees other tiles "
                      "than in training; pocket-adapt's own runtimes cut them as trained", stacklevel=3)


def _pad_color(mean: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(255 * m) for m in mean)  # type: ignore[return-value]


def _expand_to_square(image: Image.Image, color: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), color)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _upright(image: Image.Image) -> Image.Image:
    """`image` turned by its EXIF orientation, as :func:`load_image` turns a file, so a caller's own ``Image.open``
    of a photo tiles as its path does (transformers' ``load_image`` turns PIL inputs too). An image without a turning
    tag (load_image's output: the tag is dropped once applied; an array) is returned as it is."""
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):
            return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels as stored, as load_image keeps them
        pass
    return image


def as_rgb(image: Image.Image) -> Image.Image:
    """`image` as the tiling reads it: turned by its EXIF orientation, RGB, 16-bit and float samples stretched
    rather than clipped to white (for callers showing or handing on an image they did not tile)."""
    return _to_rgb(_upright(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    # Plain convert, as InternVL does: alpha is dropped, not composited onto white. Wide samples
    # (16-bit, float) are stretched rather than clipped, as load_image does.
    if image.mode == "RGB":
        return image
    if image.mode == "La":  # premultiplied alpha, which Pillow converts to RGB only through LA (as RGBa -> RGB does)
        image = image.convert("LA")
    return _stretch_to_rgb(image) if image.mode in _WIDE_MODES else image.convert("RGB")


# (output size of one resize, [(tile index, top, left) of each tile cut from it])
# Pixels one single-tile-mode resize may make or read (48 MB as RGB): a crop strip or pad canvas above it is bounded
# (an extreme aspect only); dynamic mode is bounded by its tile grid.
_RESIZE_BUDGET = 1 << 24
_Resize = tuple[tuple[int, int], list[tuple[int, int, int]]]


def _resize_plan(image: Image.Image, config: TilingConfig) -> tuple[Image.Image, list[_Resize]]:
    """The image the tiles are resized from and, per resize, where its tiles go: the pixels of
    :func:`split_into_tiles` without cutting anything yet."""
    size = config.tile_size
    width, height = image.size
    one_tile = [((size, size), [(0, 0, 0)])]
    if config.mode == "pad":
        side = max(width, height)
        if side * side > max(_RESIZE_BUDGET, 2 * width * height):
            # an extreme aspect (1 x 50,000: a 2.5 G-pixel canvas) is first shrunk so its square fits the budget
            scale = math.isqrt(_RESIZE_BUDGET) / side
            image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), _BICUBIC)
        return _expand_to_square(image, _pad_color(config.mean)), one_tile
    if config.mode == "resize":
        return image, one_tile
    if config.mode == "crop":  # transformers' get_resize_output_image_size(default_to_square=False), center_crop
        short, long = sorted((width, height))
        target = (size, int(size * long / short)) if width <= height else (int(size * long / short), size)
        top, left = (target[1] - size) // 2, (target[0] - size) // 2
        if target[0] * target[1] > _RESIZE_BUDGET:
            # an extreme aspect (1 x 4000: a 448 x 1.8 M strip, 43 s and 4 GB, to keep one tile of it): resize only
            # the source under the centred tile, as InternVL's grid cap bounds dynamic_preprocess's resize
            return _tile_of_resize(image, target, top, left, size), one_tile
        return image, [(target, [(0, top, left)])]
    cols, rows = tile_grid(*image.size, config.min_tiles, config.max_tiles, size)
    tiles = [(r * cols + c, r * size, c * size) for r in range(rows) for c in range(cols)]
    plan = [((size * cols, size * rows), tiles)]
    if config.thumbnail and len(tiles) > 1:
        plan.append(((size, size), [(len(tiles), 0, 0)]))
    return image, plan


def _tile_of_resize(image: Image.Image, target: tuple[int, int], top: int, left: int, size: int) -> Image.Image:
    """The ``size``² tile at (top, left) of ``image.resize(target)`` (one side of `target` is `size`), without the
    rest: PIL's two passes in PIL's order (horizontal then vertical, each into 8 bits; the reverse for a strip over
    100 times taller than wide that shrinks) over just the source span under the tile and its bicubic support. Equal to the full resize but for float rounding of the box's
    coefficients (at most a level, rarely)."""
    width, height = image.size
    scale_x, scale_y = width / target[0], height / target[1]
    if target[0] == size and height > 100 * width and target[1] < height:  # PIL resizes such a strip vertically first
        rows = image.resize((width, size), _BICUBIC, box=(0, top * scale_y, width, (top + size) * scale_y))
        return rows.resize((size, size), _BICUBIC)
    if target[0] == size:  # tall: every column, the rows under the tile
        margin = 2 * max(scale_y, 1.0) + 2
        y0 = max(0, math.floor(top * scale_y - margin))
        y1 = min(height, math.ceil((top + size) * scale_y + margin))
        rows = image.crop((0, y0, width, y1)).resize((size, y1 - y0), _BICUBIC)
        return rows.resize((size, size), _BICUBIC, box=(0, top * scale_y - y0, size, (top + size) * scale_y - y0))
    margin = 2 * max(scale_x, 1.0) + 2  # wide: every row, the columns under the tile
    x0 = max(0, math.floor(left * scale_x - margin))
    x1 = min(width, math.ceil((left + size) * scale_x + margin))
    columns = image.crop((x0, 0, x1, height)).resize(
        (size, height), _BICUBIC, box=(left * scale_x - x0, 0, (left + size) * scale_x - x0, height))
    return columns.resize((size, size), _BICUBIC)


def split_into_tiles(image: Image.Image, config: TilingConfig) -> list[Image.Image]:
    """RGB tiles of ``config.tile_size``², row-major, thumbnail last (dynamic mode, >1 tile)."""
    source, plan = _resize_plan(as_rgb(image), config)
    size = config.tile_size
    tiles = []
    for target, cuts in plan:
        resized = source.resize(target, _BICUBIC)
        tiles += [resized.crop((left, top, left + size, top + size)) for _, top, left in cuts]
    return tiles


@lru_cache(maxsize=16)
def _lookup_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    # (3, 256) float32: every uint8 value normalised exactly as GotOcr2ImageProcessorPil does
    # (float64 rescale, cast to float32, then float32 subtract/divide). A gather through it
    # is bit-identical to the arithmetic and one pass over memory.
    scaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    m = np.asarray(mean, dtype=np.float32)[:, None]
    s = np.asarray(std, dtype=np.float32)[:, None]
    lut = (scaled[None, :] - m) / s
    lut.setflags(write=False)  # shared through the cache
    return lut


@lru_cache(maxsize=16)
def _pair_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    # (3, 65536) uint64: two normalised float32 values per entry, indexed by two neighbouring uint8 pixels
    # read as one native uint16, so one gather writes two outputs (half the gathers and index casts of
    # _lookup_table). Both the index and the entry are read in native byte order, so it cancels out.
    pixels = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(65536, 2)  # each index's two pixels
    table = np.ascontiguousarray(_lookup_table(mean, std)[:, pixels]).view(np.uint64)[..., 0]
    table.setflags(write=False)
    return table


def _gather(lut: np.ndarray, pairs: np.ndarray | None, channel: int, plane: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = lut[channel][plane]`` for a ``(H, W)`` uint8 plane (a view) into float32 ``out``.

    mode="clip": uint8 indices are always in range, and the default mode="raise" buffers ``out`` (an extra
    copy of every tile). numpy releases the GIL here, so planes are gathered in parallel threads.
    """
    if pairs is not None and plane.shape[-1] % 2 == 0 and plane.strides[-1] == 1 and plane.ctypes.data % 2 == 0:
        np.take(pairs[channel], plane.view(np.uint16), out=out.view(np.uint64), mode="clip")
    else:
        np.take(lut[channel], plane, out=out, mode="clip")


def _normalize_arrays(
    tiles: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Equally sized ``(H, W, 3)`` uint8 arrays (views are fine) -> float32 ``(N, 3, H, W)``."""
    lut = _lookup_table(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    h, w, _ = tiles[0].shape
    out = np.empty((len(tiles), 3, h, w), dtype=np.float32)
    for i, tile in enumerate(tiles):
        if tile.shape != (h, w, 3):
            raise ValueError(f"all tiles must be {w}x{h} RGB, tile {i} has shape {tile.shape}")
        for c in range(3):
            _gather(lut, None, c, tile[..., c], out[i, c])
    import torch

    return torch.from_numpy(out)


def normalize(
    tiles: list[Image.Image], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Stack equally sized tiles into float32 ``(N, 3, H, W)`` holding ``(x/255 - mean) / std``."""
    if not tiles:
        raise ValueError("normalize() needs at least one tile")
    return _normalize_arrays([np.asarray(_to_rgb(t)) for t in tiles], mean, std)


# Below this many pixels in and out of the resizes, handing work to threads costs more than it saves.
_THREADED_MIN_PIXELS = 2 * 448 * 448
_pool: tuple[ThreadPoolExecutor, int] | None = None  # (pool, its threads)
_pool_lock = threading.Lock()


def _helpers(threads: int) -> ThreadPoolExecutor:
    """A pool of at least ``threads`` threads, made on first use and only ever grown."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[1] < threads:
            _pool = (ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tiling"), threads)
        return _pool[0]


def _forget_pool() -> None:  # a forked child (a DataLoader worker) has none of the parent's threads
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _run_lanes(tasks: list[Callable[[], None]], lanes: int, after: list[threading.Event | None] | None = None,
               done: list[Callable[[], None] | None] | None = None) -> None:
    """Run every task once: the calling thread and ``lanes - 1`` pool threads take the next one in turn.

    ``after[i]``, when given, is an event task ``i`` waits for before it starts, and ``done[i]`` is called when
    it ends (how a later pass waits for the tasks it reads); tasks are handed out in list order, so a task
    only ever waits for ones already taken by a running lane. The caller works too, so nothing waits on a
    busy pool: a helper that has not started by the time the caller runs out of tasks is cancelled.
    """
    order = itertools.count()  # next() is atomic under the GIL

    def lane() -> None:
        while (i := next(order)) < len(tasks):
            if after is not None and after[i] is not None:
                after[i].wait()
            try:
                tasks[i]()
            finally:  # also on an error, so a lane waiting for this task does not wait forever
                if done is not None and done[i] is not None:
                    done[i]()

    helpers = [] if lanes <= 1 else [_helpers(lanes - 1).submit(lane) for _ in range(lanes - 1)]
    try:
        lane()
    finally:
        for future in helpers:
            if not future.cancel():
                future.result()  # re-raises a helper's error


def _threads() -> int:
    """Threads for one image: torch's intra-op setting (1 inside DataLoader workers), at most 3."""
    import torch

    return max(1, min(3, torch.get_num_threads()))


def _chunks(length: int, parts: int, step: int = 1) -> list[tuple[int, int]]:
    """``[0, length)`` cut into at most `parts` nearly equal spans whose inner bounds are multiples of `step`."""
    units = -(-length // step)
    parts = max(1, min(parts, units))
    bounds = [min(length, (units * k // parts) * step) for k in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def preprocess_image(image: Image.Image, config: TilingConfig) -> torch.Tensor:
    """Tile and normalise one image: float32 ``(count_tiles, 3, tile_size, tile_size)``.

    The pixels are those of ``normalize(split_into_tiles(image, config))``, computed faster: every colour
    plane of a resized image is gathered through the lookup table, two pixels at a time, straight into the
    output tensor. With more than one thread (:func:`_threads`) the resizes are also cut into pieces that
    run side by side, bit-identical to PIL's own: PIL resizes in two passes, horizontal into an 8-bit
    intermediate then vertical, each pass's weights depending only on the sizes along its axis -- so the
    horizontal pass runs in row bands and the vertical pass in bands of tile columns (each band gathered into
    its tiles as soon as it is resized). PIL's resize and numpy's gather release the GIL.
    """
    source, plan = _resize_plan(as_rgb(image), config)
    size = config.tile_size
    n_tiles = sum(len(tiles) for _, tiles in plan)
    lut, pairs = _lookup_table(config.mean, config.std), _pair_table(config.mean, config.std)
    out = np.empty((n_tiles, 3, size, size), dtype=np.float32)

    def cut(channel: int, resized: np.ndarray, tiles: list[tuple[int, int, int]], left0: int = 0) -> None:
        for index, top, left in tiles:
            _gather(lut, pairs, channel, resized[top : top + size, left - left0 : left - left0 + size],
                    out[index, channel])

    big = source.width * source.height + sum(w * h for (w, h), _ in plan) > _THREADED_MIN_PIXELS
    # PIL resizes a shrinking strip over 100 times taller than wide vertically first; the bands run horizontal first
    pil_order = all(not (source.height > 100 * source.width and h < source.height) for (_, h), _ in plan)
    lanes = _threads() if big and pil_order else 1
    if lanes == 1:  # one RGB resize costs less than three single-plane ones
        for target, tiles in plan:
            resized = source if source.size == target else source.resize(target, _BICUBIC)
            for channel, plane in enumerate(resized.split()):
                cut(channel, np.asarray(plane), tiles)
    else:
        _resize_in_bands(source, plan, lanes, size, cut)
    import torch

    return torch.from_numpy(out)


def _resize_in_bands(source: Image.Image, plan: list[_Resize], lanes: int, size: int,
                     cut: Callable[[int, np.ndarray, list[tuple[int, int, int]], int], None]) -> None:
    """Every resize of `plan` as horizontal row bands, then vertical bands of tile columns, on `lanes` threads;
    `cut(channel, band, tiles, band_left)` takes each finished band's tiles, plane by plane.

    A resize's vertical bands wait only for its own horizontal bands, so one resize's vertical pass (or a tile
    grid that needs no horizontal pass) overlaps another's horizontal pass, e.g. the thumbnail's.
    """
    width, height = source.size
    horizontal: list[Callable[[], None]] = []
    vertical_ready: list[tuple[Callable[[], None], threading.Event | None]] = []
    vertical_waiting: list[tuple[Callable[[], None], threading.Event | None]] = []
    finish: list[Callable[[], None] | None] = []
    for (target_w, target_h), tiles in plan:
        # horizontal: row bands of the source into one 8-bit RGB intermediate (what PIL's first pass makes);
        # its cost follows the source row length times the output's (a downscale reads more source per output)
        middle = np.asarray(source) if target_w == width else np.empty((height, target_w, 3), dtype=np.uint8)
        ready: threading.Event | None = None
        if target_w != width:
            bands = _chunks(height, lanes if max(width, target_w) * height > _THREADED_MIN_PIXELS else 1)
            ready, left = threading.Event(), [len(bands)]
            lock = threading.Lock()

            def one_done(ready=ready, left=left, lock=lock) -> None:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        ready.set()

            for top, bottom in bands:
                horizontal.append(lambda m=middle, t=top, b=bottom, w=target_w: m.__setitem__(
                    slice(t, b), np.asarray(source.crop((0, t, width, b)).resize((w, b - t), _BICUBIC))))
                finish.append(one_done)
        # vertical: bands of whole tile columns of the intermediate, each gathered into its tiles (one band when
        # a tile does not start on a multiple of the tile size, as crop's centred tile)
        aligned = all(t[2] % size == 0 for t in tiles)
        for left, right in _chunks(target_w, 2 * lanes if target_w > size and aligned else 1, size):
            band = [t for t in tiles if left <= t[2] < right]

            def vertical(m=middle, a=left, b=right, h=target_h, band=band) -> None:
                piece = Image.fromarray(np.ascontiguousarray(m[:, a:b]))
                if h != height:
                    piece = piece.resize((b - a, h), _BICUBIC)
                for channel, plane in enumerate(piece.split()):
                    cut(channel, np.asarray(plane), band, a)

            (vertical_ready if ready is None else vertical_waiting).append((vertical, ready))
    later = vertical_ready + vertical_waiting  # bands free to start first
    _run_lanes(horizontal + [task for task, _ in later], lanes,
               after=[None] * len(horizontal) + [event for _, event in later],
               done=finish + [None] * len(later))


class ImageLoadError(PocketAdaptError, ValueError):
    """An image file is missing, unreadable, not an image, truncated, or above the pixel cap.

    ``str(err)`` is ``"<path>: <reason>"``; ``err.path`` and ``err.reason`` hold the two parts.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{os.fspath(path)}: {reason}")

    def __reduce__(self):  # DataLoader workers pickle errors back to the main process
        return type(self), (self.path, self.reason)


# PIL modes with more than 8 bits per sample: convert("RGB") would clip them to 0..255 (a 16-bit scan
# turns white, reflectances in 0..1 turn black), so they are stretched to 8 bit instead.
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
STRETCH_PERCENTILES = (2.0, 98.0)  # wide images to 8 bit, as the domain readers stretch


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image as RGB; failures raise ``ImageLoadError("<path>: <reason>")``.

    The one reader of training, evaluation, chat and the demo:

    - an image with more than `max_pixels` pixels (``TilingConfig.max_pixels``) is refused from its header,
      before any pixel is decoded;
    - decoding happens here, so truncated files fail at load time, not later inside a data loader;
    - EXIF orientation is applied (a phone photo stored sideways comes out upright);
    - 16-bit, 32-bit and float images are stretched to 8 bit as the domain readers do (2nd-98th
      percentile of the finite pixels mapped linearly to 0..255; non-finite pixels black); 16-bit colour
      (PNG, TIFF) is read as its high byte, and refused when that leaves it near-black (all samples < 8192);
    - alpha is dropped, not composited, as in InternVL;
    - a file of 0 bytes is refused as "empty file".

    `max_pixels` must be a whole number >= 1 (else a :class:`TilingError`): there is no "no limit", since the
    PIL decompression-bomb check is bypassed here in favour of this one.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1:
        raise TilingError(f"max_pixels (tiling.max_pixels) must be a whole number >= 1, got {max_pixels!r}; "
                          f"the default is {DEFAULT_MAX_PIXELS:,}")
    try:
        with _open_past_pil_limit(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageLoadError(
                    path,
                    f"{width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
                    "(tiling.max_pixels); downscale the image or raise the limit",
                )
            wide_colour = image.mode in ("RGB", "RGBA") and any(";16" in _rawmode(tile) for tile in image.tile)
            image.load()
            try:
                ImageOps.exif_transpose(image, in_place=True)
            except Exception:  # noqa: BLE001 - a damaged EXIF block: keep the pixels as stored
                pass
            # a new in-memory image either way (a copy of RGB), so the file can be closed now
            rgb = image.copy() if image.mode == "RGB" else _to_rgb(image)
            if wide_colour and max(high for _, high in rgb.getextrema()) < _DARK_HIGH_BYTE:
                raise ImageLoadError(
                    path,
                    "16-bit colour samples that all stay below 8192 (a 12-bit scan?): Pillow keeps only the high "
                    "byte of a 16-bit colour sample, so it would come out nearly black; save it as 8-bit colour, "
                    "or as 16-bit greyscale (stretched to 8 bit here)",
                )
            return rgb
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a folder, not an image file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied: this user may not read the file") from None
    except RefusedFormatError as exc:
        raise ImageLoadError(path, str(exc)) from None
    except EmptyImageError:
        raise ImageLoadError(path, "empty file") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file pocket-adapt can read (PNG, JPEG, WebP, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"too many pixels to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageLoadError(path, f"the image is damaged or truncated ({reason})") from exc


# Pillow decodes EPS by running Ghostscript (an outside program) on the file: never for a file someone uploaded
_UNREAD_FORMATS = ("EPS",)


class RefusedFormatError(Image.UnidentifiedImageError):
    """An image format the reader does not open on purpose (see `_UNREAD_FORMATS`)."""


class EmptyImageError(Image.UnidentifiedImageError):
    """A file of 0 bytes (Pillow says "cannot identify image file" for it too)."""


def _readable_formats() -> list[str]:
    """The Pillow formats the image reader opens, in Pillow's own order: every registered one but `_UNREAD_FORMATS`."""
    Image.init()
    return [name for name in Image.ID if name not in _UNREAD_FORMATS]


def _open_past_pil_limit(path: str | os.PathLike[str]) -> Image.Image:
    """``Image.open(path)``, also for an image above PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``,
    ~179 M pixels refused): ``tiling.max_pixels`` is the limit, applied by the callers from the header, so an image
    above it is refused in their words and a ``max_pixels`` above PIL's takes effect. PIL's limit is a global, so
    rather than lifting it (other threads read it), an image PIL refuses is opened once more through the plugin of
    its format, as ``Image.open`` does, without the check. PIL's warning below its limit is silenced here too; a file
    of 0 bytes raises :class:`EmptyImageError` ("empty file")."""
    try:
        with ignoring(Image.DecompressionBombWarning):
            return Image.open(path, formats=_readable_formats())
    except Image.DecompressionBombError:
        pass
    except Image.UnidentifiedImageError:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
        if not prefix:
            raise EmptyImageError("empty file") from None
        if any(Image.OPEN[name][1](prefix) for name in _UNREAD_FORMATS if name in Image.OPEN):
            raise RefusedFormatError("PostScript (EPS) is not read: Pillow decodes it by running Ghostscript on the "
                                     "file; convert it to PNG") from None
        raise
    with open(path, "rb") as fp:
        prefix = fp.read(16)
    for name in _readable_formats():  # the format that gave PIL's error is the first to accept the file, as it was there
        factory, accept = Image.OPEN[name]
        found = True if accept is None else accept(prefix)
        if found and not isinstance(found, str):
            try:
                return factory(os.fspath(path))  # given a path, the image owns (and closes) its file
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise Image.UnidentifiedImageError(f"cannot identify image file {os.fspath(path)!r}")


def upright_size(path: str | os.PathLike[str]) -> tuple[tuple[int, int], int]:
    """``((W, H), orientation)`` of an image file as :func:`load_image` returns it, from its header: the stored
    size with width and height swapped when the EXIF orientation (1-8, 1 when absent) turns it by 90 degrees.
    Raises what ``Image.open`` raises, bar PIL's decompression-bomb refusal (the size is read at any size)."""
    with _open_past_pil_limit(path) as image:
        width, height = _stored_size(image)
        try:
            if image.format == "PNG" and "exif" not in image.info:  # Pillow's getexif() would decode every pixel
                orientation = int(_late_png_exif(image.fp).get(_EXIF_ORIENTATION, 1) or 1)
            else:
                orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        except Exception:  # noqa: BLE001 - a damaged EXIF block: load_image keeps the pixels as stored too
            orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    return ((height, width) if orientation >= 5 else (width, height)), orientation


_EXIF_ORIENTATION = 0x0112


def _late_png_exif(fp) -> Image.Exif:
    """The EXIF of a PNG whose eXIf chunk, if any, follows the pixel data (Pillow finds it only by decoding them):
    the chunks are walked by their lengths, the pixel data skipped unread."""
    exif = Image.Exif()
    fp.seek(8)
    while len(head := fp.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        if kind == b"eXIf":
            data = fp.read(length)
            exif.load(data if data.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + data)
            break
        if kind == b"IEND":
            break
        fp.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return exif
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """Width and height of the pixel grid as stored in the file, before any orientation is applied.

    Pillow (>= 11) reports a TIFF's size already turned by its orientation tag (it turns the pixels when loading),
    so ``image.size`` would be swapped twice; the TIFF's own width and length tags hold the stored grid."""
    tags = getattr(image, "tag_v2", None)
    if image.format == "TIFF" and tags is not None and _TIFF_WIDTH in tags and _TIFF_LENGTH in tags:
        return int(tags[_TIFF_WIDTH]), int(tags[_TIFF_LENGTH])
    return image.size


# 16-bit colour is read as its high byte (a linear scaling to 8 bit); when even the brightest sample's high byte is
# below this, the low bits that hold the picture are lost and the image would train as near-black
_DARK_HIGH_BYTE = 32


def _rawmode(tile) -> str:
    """How a not-yet-decoded tile is stored (``"RGB;16B"``: 16-bit big-endian colour), from its decoder args."""
    args = tile[3]
    return str(args[0] if isinstance(args, tuple) and args else args)


def _stretch_to_rgb(image: Image.Image) -> Image.Image:
    """A one-channel image with wide samples as 8-bit RGB grey (percentile stretch, see :func:`load_image`)."""
    values = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(values)
    out = np.zeros(values.shape, dtype=np.uint8)
    if valid.any():
        low, high = np.percentile(values[valid], STRETCH_PERCENTILES)
        if high > low:  # a flat image has nothing to stretch: black, as in the domain readers
            scaled = np.clip((values[valid] - low) * (255.0 / (high - low)), 0, 255)
            out[valid] = np.rint(scaled).astype(np.uint8)
    return Image.fromarray(np.repeat(out[..., None], 3, axis=-1), "RGB")
