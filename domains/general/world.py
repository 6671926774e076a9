"""Synthetic data for the CPU quick start: a "general" world of shapes and a "specialist" land-cover domain.

Two generators write InternVL-style fine-tune data (``internvl.md`` §8): ``out_dir/images/*.png`` plus
``train.jsonl`` / ``test.jsonl`` whose ``image`` paths are relative to ``out_dir``, and ``manifest.json`` (each
split's line count and SHA-256, so that a later call notices a split edited since).

* :func:`generate_general` -- multiple choice (4 options, A-D) over four task families
  (:data:`GENERAL_TASKS`): the colour of a large shape, its kind, how many shapes there are (1-4) and
  where the shape lies (left / right / top / bottom). Light, slightly noisy background.
* :func:`generate_landcover` -- aerial-looking scenes of one of :data:`LANDCOVER_CLASSES`, asked either
  as multiple choice (~70 %) or as grounding of one object placed on a coarse 4x4 lattice (~30 %), with
  the answer ``<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>`` on the 0-1000 grid (:func:`box_to_grid`).

Every record holds ``id``, ``image``, ``width``, ``height``, ``conversations`` (one human and one gpt turn;
the human turn starts with ``<image>\\n``), ``task`` (``"mc"`` or ``"grounding"``), ``family`` (the task
family: a :data:`GENERAL_TASKS` name, ``"classification"`` or ``"grounding"``), ``answer`` (the reference:
the letter alone for mc, the full ``<ref>…</ref><box>…</box>`` string for grounding), ``label`` (the answer
in words: the colour, class name, count …; the phrase for grounding) and, for mc, ``options``
(``["A. …", "B. …", "C. …", "D. …"]``).

Everything is deterministic: each sample draws from its own ``numpy.random.Generator`` seeded with
``(domain, seed, split, index)``, images are drawn with PIL primitives and numpy, and PNGs are written with
fixed parameters and no metadata, so the same call writes byte-identical files. The pixels are the same on every
machine too: they are computed with IEEE arithmetic (``+ * / sqrt``, rounding), no BLAS product or library sine,
whose last bits depend on the CPU. The correct letter is balanced across A-D (per task family) and drawn
independently of the class, so the letter cannot be guessed from the image alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import re
import shutil
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from domains.base import DomainError
from domains.boxes import render_ref_box, to_grid
from domains.files import atomic_write
from model.limits import usable_cores
from model.progress import Progress, progress_bar

__all__ = [
    "COLORS",
    "GENERAL_TASKS",
    "GROUNDING_OBJECTS",
    "LANDCOVER_CLASSES",
    "MC_INSTRUCTION",
    "SHAPES",
    "Sample",
    "box_to_grid",
    "general_samples",
    "generate_general",
    "generate_landcover",
    "grounding_answer",
    "grounding_prompt",
    "landcover_samples",
    "mc_prompt",
]

LETTERS = "ABCD"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
GROUNDING_QUESTION = "Please provide the bounding box coordinate of the region this sentence describes: <ref>{}</ref>"

GENERAL_TASKS: tuple[str, ...] = ("color", "shape", "count", "position")
GENERAL_QUESTIONS = {
    "color": "What color is the shape?",
    "shape": "What kind of shape is in the image?",
    "count": "How many shapes are in the image?",
    "position": "Where is the shape in the image?",
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 205, 20),
    "green": (40, 155, 55),
    "blue": (35, 75, 215),
    "purple": (130, 45, 175),
    "pink": (245, 110, 185),
    "black": (30, 30, 30),
}
COLORS_LIST: tuple[str, ...] = tuple(COLORS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "star")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
COUNTS: tuple[str, ...] = ("1", "2", "3", "4")

LANDCOVER_CLASSES: tuple[str, ...] = (
    "forest", "water", "desert", "farmland", "residential", "snow", "grassland", "bare rock",
)
LANDCOVER_QUESTION = "What is the land-cover class of this scene?"
GROUNDING_OBJECTS: dict[str, str] = {
    "building": "the red-roofed building",
    "tank": "the storage tank",
    "boat": "the boat",
    "airplane": "the airplane",
}
# the scenes each object may sit on: boats only on water, buildings and tanks only on land, planes anywhere
_SCENES_FOR = {
    "building": tuple(c for c in LANDCOVER_CLASSES if c != "water"),
    "tank": tuple(c for c in LANDCOVER_CLASSES if c != "water"),
    "boat": ("water",),
    "airplane": LANDCOVER_CLASSES,
}
OBJECT_KINDS: tuple[str, ...] = tuple(GROUNDING_OBJECTS)
GROUNDING_FRACTION = 0.3
LATTICE = 4  # object centres on a LATTICE x LATTICE grid
OBJECT_SIZES = (28, 35, 42)  # at 112 px; scaled with the image size

_DOMAIN_CODE = {"general": 101, "landcover": 202}
_SPLIT_CODE = {"train": 0, "test": 1}
# zlib Z_HUFFMAN_ONLY (compress_type 2): noisy pixels gain nothing from LZ77 matching, so this is faster
# than the default and the files come out smaller; with no metadata chunks the bytes depend on pixels only
_PNG_PARAMS = {"format": "PNG", "compress_level": 6, "compress_type": 2, "optimize": False}
_IMAGE_NAME = re.compile(r"^(train|test)_\d{5,}\.png$")


# --------------------------------------------------------------------------------------------- formats
def box_to_grid(box_px: Sequence[float], width: int, height: int) -> list[int]:
    """Pixel box ``(x1, y1, x2, y2)`` -> integers on the 0-1000 grid, ``round(x / W * 1000)`` (InternVL): the shared
    :func:`domains.boxes.to_grid` (clipped to the image; a box outside it raises ValueError)."""
    return to_grid(box_px, width, height)


def mc_prompt(question: str, options: Sequence[str]) -> str:
    """Mini-InternVL multiple-choice prompt; ``options`` are the bare option texts in letter order."""
    lines = [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    return "<image>\n" + question + "\n" + "\n".join(lines) + "\n" + MC_INSTRUCTION


def grounding_prompt(phrase: str) -> str:
    return "<image>\n" + GROUNDING_QUESTION.format(phrase)


def grounding_answer(phrase: str, grid_box: Sequence[int]) -> str:
    """``<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>`` of one 0-1000 grid box
    (:func:`domains.boxes.render_ref_box`)."""
    return render_ref_box(phrase, grid_box)


@dataclass
class Sample:
    """One generated sample: its JSONL record, its pixels and, for grounding, the object's pixel mask."""

    record: dict
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray | None = None  # (H, W) bool, grounding only
    box_px: tuple[int, int, int, int] | None = None  # tight pixel box (x1, y1, x2 exclusive, y2 exclusive)
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers
def _rng(domain: str, seed: int, split: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([_DOMAIN_CODE[domain], int(seed), _SPLIT_CODE[split], *more])


class _Plan:
    """Balanced, shuffled assignments that depend only on an item's index within its stream.

    A stream is cut into blocks of ``k`` items and every block is a fresh random permutation of ``range(k)``,
    so any prefix is as balanced as possible (no value more than one ahead of another), and a smaller call
    yields exactly the first samples of a larger one.
    """

    def __init__(self, domain: str, seed: int, split: str):
        if split not in _SPLIT_CODE:  # a KeyError from the seed table said nothing of the argument
            raise DomainError(f"split must be one of {', '.join(map(repr, _SPLIT_CODE))}, got {split!r}")
        self.key = (domain, seed, split)
        self.blocks: dict[int, tuple[int, np.ndarray]] = {}  # stream -> (block index, permutation)

    def __call__(self, stream: int, j: int, k: int) -> int:
        b = j // k
        if stream not in self.blocks or self.blocks[stream][0] != b:
            self.blocks[stream] = (b, _rng(*self.key, 0, stream, b, k).permutation(k))
        return int(self.blocks[stream][1][j % k])


def _mc_options(rng: np.random.Generator, correct: str, pool: Sequence[str], letter: int) -> list[str]:
    """Four option texts: ``correct`` at index ``letter``, three random distractors from ``pool`` elsewhere."""
    others = [p for p in pool if p != correct]
    picked = [others[i] for i in rng.choice(len(others), size=3, replace=False)]
    picked.insert(letter, correct)
    return picked


def _mc_record(rid: str, image: str, size: int, family: str, question: str, options: list[str], letter: int) -> dict:
    return {
        "id": rid,
        "image": image,
        "width": size,
        "height": size,
        "conversations": [
            {"from": "human", "value": mc_prompt(question, options)},
            {"from": "gpt", "value": LETTERS[letter]},
        ],
        "task": "mc",
        "family": family,
        "answer": LETTERS[letter],
        "label": options[letter],
        "options": [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)],
    }


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), float32, read-only (cached)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _interp_weights(size: int, cells: float, offset: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left lattice knot and smoothstep weight of the right knot, for each of ``size`` samples."""
    t = (np.arange(size) + 0.5) * (cells / size) + offset
    i0 = np.minimum(np.floor(t).astype(int), n)
    f = t - i0
    return i0, (f * f * (3 - 2 * f)).astype(np.float32)


def _value_noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Smooth value noise in [0, 1] (float32): a random lattice about ``cells`` cells across, interpolated.

    The (smoothstep) bilinear interpolation is separable: two gathers. Not matrix products: BLAS picks its kernel
    (summation order, fused multiply-add) by CPU, so their last bits, and some rounded pixels, differ between machines.
    """
    n = max(1, int(np.ceil(cells)))
    lattice = rng.random((n + 2, n + 2), dtype=np.float32)
    oy, ox = rng.random(2) * 0.999
    iy, fy = _interp_weights(size, cells, oy, n)
    ix, fx = _interp_weights(size, cells, ox, n)
    rows = lattice[iy] * (1 - fy)[:, None] + lattice[iy + 1] * fy[:, None]
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def _fbm(rng: np.random.Generator, size: int, cells: float, octaves: int = 3) -> np.ndarray:
    out = np.zeros((size, size), dtype=np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += np.float32(amp) * _value_noise(rng, size, cells * (2 ** o))
        total += amp
        amp *= 0.5
    return out * np.float32(1 / total)


def _worley(rng: np.random.Generator, size: int, spacing: float) -> np.ndarray:
    """Distance (in units of ``spacing``) to the nearest of jittered grid points: crown-like blobs.

    One random point per grid cell; every pixel only looks at the points of its 3x3 neighbouring cells.
    """
    n = int(np.ceil(size / spacing)) + 3  # cells -1 .. n-2, stored at +1
    jx, jy = rng.random(n * n, dtype=np.float32), rng.random(n * n, dtype=np.float32)
    t = ((np.arange(size) + 0.5) / spacing).astype(np.float32)  # pixel centres in cell units, per axis
    c = np.floor(t).astype(int)
    best = np.full((size, size), np.inf, dtype=np.float32)
    for dy in (-1, 0, 1):
        gy = c + dy
        for dx in (-1, 0, 1):
            gx = c + dx
            idx = (gy[:, None] + 1) * n + (gx[None, :] + 1)
            ddx = t[None, :] - gx[None, :] - jx.take(idx)
            ddy = t[:, None] - gy[:, None] - jy.take(idx)
            np.minimum(best, ddx * ddx + ddy * ddy, out=best)
    return np.sqrt(best)


def _dots(rng: np.random.Generator, size: int, count: int, radius: float) -> np.ndarray:
    """Boolean (size, size) mask of ``count`` random discs of ``radius`` px."""
    r = int(np.ceil(radius))
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    keep = oy * oy + ox * ox <= radius * radius
    oy, ox = oy[keep], ox[keep]
    py, px = rng.integers(0, size, (2, count))
    mask = np.zeros((size, size), dtype=bool)
    mask[np.clip(py[:, None] + oy, 0, size - 1), np.clip(px[:, None] + ox, 0, size - 1)] = True
    return mask


def _rotated(size: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates about the image centre, rotated by ``theta`` (float32)."""
    xs, ys = _grid(size)
    h = np.float32(size / 2)
    c, s = np.float32(_sin(theta + np.pi / 2)), np.float32(_sin(theta))
    return (xs - h) * c + (ys - h) * s, (ys - h) * c - (xs - h) * s


_SIN_TERMS = [(-1) ** k / math.factorial(2 * k + 1) for k in range(15)]  # Taylor series of sin, to r**29


def _sin(x) -> np.ndarray:
    """sin(x) in float64 (within ~1e-15) from +, *, rint only, so the same on every machine: np.sin and math.sin
    pick a SIMD or libm routine by CPU, whose last bits (float32's often) differ, and with them some pixels."""
    x = np.asarray(x, dtype=np.float64)
    r = x - np.rint(x * (1 / (2 * np.pi))) * (2 * np.pi)  # in [-pi, pi]
    r2, acc = r * r, np.zeros_like(r)
    for c in reversed(_SIN_TERMS):
        acc = acc * r2 + c
    return acc * r


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


_F32 = np.float32


def _c(rgb) -> np.ndarray:
    """A colour shaped (3, 1, 1): images are computed channel-first, since broadcasting over a leading axis
    is far cheaper in numpy than over a trailing axis of length 3."""
    return np.asarray(rgb, dtype=np.float32).reshape(3, 1, 1)


def _jitter_color(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    return (np.asarray(rgb, dtype=np.float64) + rng.uniform(-amount, amount, 3)).astype(np.float32)


@lru_cache(maxsize=4)
def _noise_table(sigma: float) -> np.ndarray:
    """Integer Gaussian noise of deviation ``sigma`` indexed by one random byte (the inverse normal CDF at
    the byte's bin centre, rounded): far cheaper than drawing normals, and deterministic."""
    from statistics import NormalDist

    dist = NormalDist(0.0, sigma)
    table = np.array([round(dist.inv_cdf((k + 0.5) / 256)) for k in range(256)], dtype=np.int16)
    table.flags.writeable = False
    return table


def _finish(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Round to integers, add Gaussian pixel noise of deviation ``sigma`` and clip to uint8."""
    img = np.asarray(img)
    out = img.astype(np.int16) if img.dtype == np.uint8 else np.rint(img).astype(np.int16)
    if sigma > 0:
        out += _noise_table(float(sigma))[rng.integers(0, 256, img.shape, dtype=np.uint8)]
    return np.clip(out, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ general world
def _shape_primitive(kind: str, cx: float, cy: float, s: float) -> tuple[str, list]:
    """PIL primitive for a shape of bounding-box side ``s`` centred on (cx, cy)."""
    h = s / 2
    if kind == "circle":
        return "ellipse", [cx - h, cy - h, cx + h - 1, cy + h - 1]
    if kind == "square":
        return "rectangle", [cx - h, cy - h, cx + h - 1, cy + h - 1]
    if kind == "triangle":
        return "polygon", [(cx, cy - h), (cx + h, cy + h - 1), (cx - h, cy + h - 1)]
    if kind == "cross":
        t = 0.32 * h
        pts = [(-t, -h), (t, -h), (t, -t), (h, -t), (h, t), (t, t),
               (t, h), (-t, h), (-t, t), (-h, t), (-h, -t), (-t, -t)]
        return "polygon", [(cx + x, cy + y) for x, y in pts]
    if kind == "diamond":
        return "polygon", [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if kind == "star":
        pts = []
        for i in range(10):
            r = h if i % 2 == 0 else 0.42 * h
            a = -np.pi / 2 + i * np.pi / 5
            pts.append((cx + r * float(_sin(a + np.pi / 2)), cy + r * float(_sin(a)) + 0.1 * h))
        return "polygon", pts
    raise ValueError(kind)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, s: float, rgb) -> None:
    prim, coords = _shape_primitive(kind, cx, cy, s)
    getattr(draw, prim)(coords, fill=tuple(int(v) for v in rgb))


def _general_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A light, slightly tinted plain background (the pixel noise comes last, over the shapes too)."""
    colour = rng.uniform(222, 244) + rng.uniform(-7, 7, 3)
    return Image.new("RGB", (size, size), tuple(int(round(v)) for v in colour))


def _shape_color(rng: np.random.Generator, name: str) -> np.ndarray:
    return np.clip(_jitter_color(rng, COLORS[name], 14), 0, 255)


def _render_general(rng: np.random.Generator, family: str, size: int) -> tuple[np.ndarray, str, Sequence[str]]:
    """Draw one image of ``family``; returns (pixels, correct option text, option pool)."""
    sc = size / 112.0
    img = _general_background(rng, size)
    draw = ImageDraw.Draw(img)
    colour = COLORS_LIST[rng.integers(len(COLORS_LIST))]
    kind = SHAPES[rng.integers(len(SHAPES))]
    if family in ("color", "shape"):
        s = rng.uniform(44, 64) * sc
        cx, cy = size / 2 + rng.uniform(-12, 12, 2) * sc
        _draw_shape(draw, kind, cx, cy, s, _shape_color(rng, colour))
        label, pool = (colour, COLORS_LIST) if family == "color" else (kind, SHAPES)
    elif family == "count":
        count = int(rng.integers(1, 5))
        cell = size / 3
        cells = rng.choice(9, size=count, replace=False)
        s = rng.uniform(24, 28) * sc
        rgb = _shape_color(rng, colour)
        slack = (cell - s) / 2 - 1
        for c in cells:
            cx = (c % 3 + 0.5) * cell + rng.uniform(-slack, slack)
            cy = (c // 3 + 0.5) * cell + rng.uniform(-slack, slack)
            _draw_shape(draw, kind, cx, cy, s, rgb)
        label, pool = str(count), COUNTS
    elif family == "position":
        where = POSITIONS[rng.integers(4)]
        s = rng.uniform(26, 36) * sc
        edge = rng.uniform(s / 2 + 3 * sc, 30 * sc)  # distance of the centre from its edge
        across = size / 2 + rng.uniform(-14, 14) * sc
        cx, cy = {"left": (edge, across), "right": (size - edge, across),
                  "top": (across, edge), "bottom": (across, size - edge)}[where]
        _draw_shape(draw, kind, cx, cy, s, _shape_color(rng, colour))
        label, pool = where, POSITIONS
    else:
        raise ValueError(f"unknown general task family {family!r}")
    return _finish(rng, np.asarray(img), 3.0), label, pool


def general_samples(split: str, n: int, seed: int = 0, image_size: int = 112) -> Iterator[Sample]:
    """The first ``n`` general-world samples of ``split`` (``"train"`` or ``"test"``), without writing."""
    plan = _Plan("general", seed, split)
    seen = Counter()
    for i in range(n):
        fam = plan(0, i, len(GENERAL_TASKS))
        family = GENERAL_TASKS[fam]
        letter = plan(1 + fam, seen[fam], 4)  # the letter is balanced within every family
        seen[fam] += 1
        rng = _rng("general", seed, split, 1, i)
        pixels, label, pool = _render_general(rng, family, image_size)
        options = _mc_options(rng, label, pool, letter)
        name = f"images/{split}_{i:05d}.png"
        record = _mc_record(f"general-{split}-{i:05d}", name, image_size, family, GENERAL_QUESTIONS[family],
                            options, letter)
        yield Sample(record, pixels)


# ------------------------------------------------------------------------------------------- land cover
# Scenes are computed channel-first, (3, H, W), in float32 (see _c).
def _scene_forest(rng, size, sc):
    spacing = rng.uniform(6, 11) * sc
    d = np.minimum(_worley(rng, size, spacing), 1.0)
    crown = 1 - d * np.sqrt(d)  # bright crown centres, dark gaps between trees
    base = _c(_jitter_color(rng, (38, 78, 34), 10))
    lift = _c(_jitter_color(rng, (30, 45, 18), 8))
    patches = _fbm(rng, size, rng.uniform(2, 4), 2)  # darker / lighter stands
    return base * (0.55 + 0.25 * patches) + lift * crown


def _scene_water(rng, size, sc):
    u, _ = _rotated(size, rng.uniform(0, np.pi))
    lam = rng.uniform(5, 10) * sc
    warp = _fbm(rng, size, 3, 2) * rng.uniform(2, 5)
    ripple = _sin(u * (2 * np.pi / lam) + warp).astype(np.float32)
    base = _c(_jitter_color(rng, (30, 85, 150), 18))
    depth = _value_noise(rng, size, 1.5) - 0.5
    return base + depth * _c((10, 20, 25)) + ripple * (_c((10, 14, 16)) * rng.uniform(0.6, 1.2))


def _scene_desert(rng, size, sc):
    u, _ = _rotated(size, rng.uniform(0, np.pi))
    lam = rng.uniform(16, 32) * sc
    warp = (_fbm(rng, size, 2.5, 2) - 0.5) * rng.uniform(0.6, 1.4)
    ph = _frac(u / np.float32(lam) + warp)
    slip = rng.uniform(0.65, 0.8)
    # gentle windward slope, steep lee face
    dune = np.where(ph < slip, ph * _F32(1 / slip), (1 - ph) * _F32(1 / (1 - slip)))
    shade = (dune - 0.5) * rng.uniform(35, 55) + (_value_noise(rng, size, 20) - 0.5) * 10
    base = _c(_jitter_color(rng, (214, 178, 120), 14))
    return base + shade * _c((1.0, 0.9, 0.75))


def _paint(rng: np.random.Generator, palette, count: int, jitter: float, index: np.ndarray) -> np.ndarray:
    """(3, H, W) image: ``count`` colours drawn from ``palette`` (jittered), looked up by ``index``."""
    pal = np.asarray(palette, dtype=np.float32)
    table = pal[rng.integers(len(pal), size=count)] + rng.uniform(-jitter, jitter, (count, 3)).astype(np.float32)
    return np.stack([np.ascontiguousarray(table[:, ch]).take(index) for ch in range(3)])


_FARM_PALETTE = ((78, 140, 52), (120, 160, 60), (205, 190, 95), (150, 112, 72), (98, 128, 48), (185, 160, 85))


def _scene_farmland(rng, size, sc):
    u, v = _rotated(size, rng.uniform(0, np.pi))
    width = rng.uniform(9, 17) * sc
    pos = u / width + rng.random()
    strip = np.floor(pos).astype(int)
    lo = int(strip.min())
    img = _paint(rng, _FARM_PALETTE, int(strip.max()) - lo + 1, 12, strip - lo)  # one crop colour per strip
    furrow = _sin(v * (2 * np.pi / (rng.uniform(2.5, 4) * sc))).astype(np.float32)  # crop rows along each strip
    frac = pos - strip
    border = np.abs(frac - 0.5) > 0.5 - 0.6 / width  # thin dark field boundaries
    return img * np.where(border, _F32(0.7), 1 + 0.06 * furrow)


_ROOF_PALETTE = ((95, 95, 100), (150, 150, 155), (120, 100, 85), (70, 72, 80), (175, 165, 150), (105, 115, 125))


def _scene_residential(rng, size, sc):
    theta = rng.choice([0.0, np.pi / 2]) + rng.uniform(-0.5, 0.5)
    u, v = _rotated(size, theta)
    pu, pv = rng.uniform(11, 16, 2) * sc
    iu, iv = np.floor(u / pu).astype(int), np.floor(v / pv).astype(int)
    fu, fv = u / pu - iu, v / pv - iv
    margin = rng.uniform(0.15, 0.25)
    roof = (fu > margin) & (fu < 1 - margin) & (fv > margin) & (fv < 1 - margin)
    roofs = _paint(rng, _ROOF_PALETTE, 61, 10, (iu * 7 + iv * 13) % 61)
    roofs *= np.where(fu < 0.5, _F32(1.06), _F32(0.92))  # the two roof halves catch the light differently
    lawn = (iu * 3 + iv * 5) % 7 == 0
    street = _c(_jitter_color(rng, (185, 185, 180), 10))
    green = _c(_jitter_color(rng, (90, 130, 70), 10))
    return np.where(roof, roofs, np.where(lawn, green, street))


def _scene_snow(rng, size, sc):
    base = _c(_jitter_color(rng, (238, 244, 252), 6))
    shadow = _fbm(rng, size, rng.uniform(2, 4), 3) - 0.3
    u, _ = _rotated(size, rng.uniform(0, np.pi))
    streak = _sin(u * (2 * np.pi / (rng.uniform(6, 12) * sc)) + 4 * _value_noise(rng, size, 3)).astype(np.float32)
    return base - shadow * _c((45, 35, 18)) - streak * _c((5, 4, 2))


def _scene_grassland(rng, size, sc):
    base = _c(_jitter_color(rng, (128, 172, 78), 14))
    mottle = _fbm(rng, size, rng.uniform(4, 8), 3) - 0.5
    fine = (_value_noise(rng, size, 28) - 0.5) * 14
    img = base + mottle * _c((40, 45, 25)) + fine
    bushes = _dots(rng, size, int(rng.uniform(25, 55)), rng.uniform(1.5, 2.5) * sc)  # sparse dark shrubs
    return img * np.where(bushes, _F32(0.62), _F32(1.0))


def _scene_rock(rng, size, sc):
    base = _c(_jitter_color(rng, (138, 124, 108), 14))
    rough = _fbm(rng, size, rng.uniform(5, 9), 4) - 0.5
    ridged = 1 - np.abs(_fbm(rng, size, rng.uniform(2, 4), 3) - 0.5) * 2
    cracks = np.abs(_fbm(rng, size, rng.uniform(3, 6), 2) - 0.5) < 0.018
    return (base + (rough * 70 + (ridged - 0.6) * 25)) * np.where(cracks, _F32(0.55), _F32(1.0))


_SCENES = {
    "forest": _scene_forest, "water": _scene_water, "desert": _scene_desert, "farmland": _scene_farmland,
    "residential": _scene_residential, "snow": _scene_snow, "grassland": _scene_grassland,
    "bare rock": _scene_rock,
}


def render_scene(rng: np.random.Generator, cls: str, size: int = 112) -> np.ndarray:
    """A float (H, W, 3) aerial-looking texture of land-cover class ``cls`` (before pixel noise)."""
    img = _SCENES[cls](rng, size, size / 112.0)
    img = np.clip(img * rng.uniform(0.9, 1.1), 0, 255)  # global exposure
    return np.ascontiguousarray(img.transpose(1, 2, 0))


class _Pen:
    """Draws every primitive on the picture and on the object mask alike."""

    def __init__(self, img: Image.Image, mask: Image.Image):
        self.d, self.m = ImageDraw.Draw(img), ImageDraw.Draw(mask)

    def __call__(self, prim: str, coords, fill, outline=None, **kw) -> None:
        if outline is not None:
            kw["outline"] = tuple(int(v) for v in outline)
        getattr(self.d, prim)(coords, fill=tuple(int(v) for v in fill), **kw)
        if outline is not None:
            kw["outline"] = 255
        getattr(self.m, prim)(coords, fill=255, **kw)


def _draw_object(pen: _Pen, rng: np.random.Generator, obj: str, cx: int, cy: int, s: int) -> None:
    h = s / 2
    if obj == "building":
        w2, h2 = h, round(0.78 * h)
        roof = _jitter_color(rng, (212, 38, 34), 10)
        pen("rectangle", [cx - w2, cy - h2, cx + w2 - 1, cy + h2 - 1], (50, 30, 30))  # outline
        pen("rectangle", [cx - w2 + 2, cy - h2 + 2, cx - 1, cy + h2 - 3], roof * 1.08)
        pen("rectangle", [cx, cy - h2 + 2, cx + w2 - 3, cy + h2 - 3], roof * 0.82)
    elif obj == "tank":
        pen("ellipse", [cx - h, cy - h, cx + h - 1, cy + h - 1], (55, 55, 60))
        pen("ellipse", [cx - h + 3, cy - h + 3, cx + h - 4, cy + h - 4], _jitter_color(rng, (222, 222, 215), 8))
        q = h * 0.35
        pen("ellipse", [cx - q, cy - q, cx + q - 1, cy + q - 1], (165, 165, 160))
    elif obj == "boat":
        hw, hh = h, round(0.5 * h)
        hull = [(cx - hw, cy - hh), (cx + hw * 0.55, cy - hh), (cx + hw - 1, cy), (cx + hw * 0.55, cy + hh - 1),
                (cx - hw, cy + hh - 1)]
        pen("polygon", hull, (40, 40, 45))
        inner = [(x + (2 if x < cx else -2), y + (2 if y < cy else -2 if y > cy else 0)) for x, y in hull]
        pen("polygon", inner, _jitter_color(rng, (240, 240, 235), 8))
        pen("rectangle", [cx - hw * 0.55, cy - hh * 0.45, cx + hw * 0.15, cy + hh * 0.45 - 1], (215, 120, 40))
    elif obj == "airplane":  # seen from above, nose up: fuselage, swept wings, tail plane
        body = _jitter_color(rng, (236, 236, 240), 8)
        f = 0.09 * s  # half width of the fuselage
        pts = [
            (0, -h), (f, -h + 1.6 * f), (f, -0.2 * s), (h, 0.06 * s), (h, 0.16 * s), (f, 0.06 * s),
            (f, 0.3 * s), (0.24 * s, h - 0.1 * s), (0.24 * s, h), (0, h - 0.06 * s),
        ]
        pts = pts + [(-x, y) for x, y in reversed(pts[1:-1])]
        pen("polygon", [(cx + x, cy + y) for x, y in pts], body, outline=(45, 45, 55), width=1)
    else:
        raise ValueError(obj)


def _lattice_centres(size: int) -> list[int]:
    return [int(round(size * (0.2 + 0.6 * k / (LATTICE - 1)))) for k in range(LATTICE)]


def landcover_samples(split: str, n: int, seed: int = 1, image_size: int = 112) -> Iterator[Sample]:
    """The first ``n`` land-cover samples of ``split``, without writing (grounding samples carry the mask)."""
    plan = _Plan("landcover", seed, split)
    centres = _lattice_centres(image_size)
    sc = image_size / 112.0
    n_mc = n_ground = 0
    per_object: Counter = Counter()
    for i in range(n):
        # 3 grounding samples in every block of 10; classes, letters, objects and lattice cells each balanced
        # on their own stream, so e.g. the correct letter says nothing about the class
        ground = plan(0, i, 10) < round(10 * GROUNDING_FRACTION)
        if ground:
            obj = OBJECT_KINDS[plan(3, n_ground, len(OBJECT_KINDS))]
            cell = plan(4, n_ground, LATTICE * LATTICE)
            scenes = _SCENES_FOR[obj]
            cls = scenes[plan(10 + OBJECT_KINDS.index(obj), per_object[obj], len(scenes))]
            per_object[obj] += 1
            n_ground += 1
        else:
            cls = LANDCOVER_CLASSES[plan(1, n_mc, len(LANDCOVER_CLASSES))]
            letter = plan(2, n_mc, 4)
            n_mc += 1
        rng = _rng("landcover", seed, split, 1, i)
        scene = render_scene(rng, cls, image_size)
        name = f"images/{split}_{i:05d}.png"
        rid = f"landcover-{split}-{i:05d}"
        if not ground:
            options = _mc_options(rng, cls, LANDCOVER_CLASSES, letter)
            record = _mc_record(rid, name, image_size, "classification", LANDCOVER_QUESTION, options, letter)
            yield Sample(record, _finish(rng, scene, 3.0))
            continue
        side = int(round(OBJECT_SIZES[rng.integers(len(OBJECT_SIZES))] * sc))
        cx, cy = centres[cell % LATTICE], centres[cell // LATTICE]
        img = Image.fromarray(np.rint(scene).astype(np.uint8))
        mask_img = Image.new("L", (image_size, image_size), 0)
        _draw_object(_Pen(img, mask_img), rng, obj, cx, cy, side)
        mask = np.asarray(mask_img) > 0
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box_px = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        phrase = GROUNDING_OBJECTS[obj]
        answer = grounding_answer(phrase, box_to_grid(box_px, image_size, image_size))
        record = {
            "id": rid,
            "image": name,
            "width": image_size,
            "height": image_size,
            "conversations": [
                {"from": "human", "value": grounding_prompt(phrase)},
                {"from": "gpt", "value": answer},
            ],
            "task": "grounding",
            "family": "grounding",
            "answer": answer,
            "label": phrase,
        }
        pixels = _finish(rng, np.asarray(img), 3.0)
        yield Sample(record, pixels, mask=mask, box_px=box_px, extra={"class": cls, "object": obj})


# ---------------------------------------------------------------------------------------------- writing
def _save_png(pixels: np.ndarray, path: Path) -> None:
    # through a temporary file and a rename: an image of an earlier call is replaced, never written through (a
    # symlink there would carry the pixels into its target, outside out_dir), and a kill leaves no half PNG
    atomic_write(path, lambda f: Image.fromarray(pixels).save(f, **_PNG_PARAMS))


def _line(sample: Sample) -> str:
    return json.dumps(sample.record, ensure_ascii=False) + "\n"


MANIFEST = "manifest.json"  # each split file's line count and SHA-256 as written, to tell an edit anywhere in it


def _read_manifest(out_dir: Path) -> dict:
    """`MANIFEST` of `out_dir` as ``{split: {"lines", "sha256"}}``; {} where there is none (an earlier version's set)
    or it does not parse."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _file_digest(path: Path) -> tuple[int, str]:
    """Lines and SHA-256 of a split file, read in blocks."""
    digest, lines = hashlib.sha256(), 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            lines += block.count(b"\n")
    return lines, digest.hexdigest()


def _check_same_set(out_dir: Path, firsts: dict[str, Sample | None]) -> None:
    """Refuse, before anything is written, an ``out_dir`` whose split files hold another set than the one about to
    be written (another seed, image size or answer style, another generator, a downloaded set), or one edited since
    it was generated (its line count or SHA-256 differ from `MANIFEST`'s): the same set, larger or smaller (a smaller
    call draws exactly the first samples of a larger one), is rewritten byte for byte.
    `firsts`: each split's first sample, None for an empty split."""
    verified, unverified = False, []
    manifest = _read_manifest(out_dir)
    for split, first in firsts.items():
        path = out_dir / f"{split}.jsonl"
        if not path.exists():
            continue
        try:
            with path.open(encoding="utf-8") as f:
                line = f.readline()
            written = manifest.get(split)
            if isinstance(written, dict) and [written.get("lines"), written.get("sha256")] != list(_file_digest(path)):
                raise DomainError(f"{path}: edited since it was generated (its lines or bytes differ from those "
                                  f"{out_dir / MANIFEST} records); write into another folder, or delete it to "
                                  "regenerate (nothing was written)")
        except (OSError, UnicodeDecodeError) as exc:
            raise DomainError(f"{path}: already there and unreadable ({exc}); write into another folder") from None
        if not line.strip():
            continue  # empty: nothing there to lose
        if first is None:
            unverified.append(path)
        elif line == _line(first):
            verified = True
        else:
            raise DomainError(f"{path}: already there and holds another set than this call writes (another seed, "
                              "image_size, answer_style or generator, or not a synthetic set); write into another "
                              "folder or delete it (nothing was written)")
    if unverified and not verified:
        raise DomainError(f"{', '.join(map(str, unverified))}: already there, and an empty split cannot tell whether "
                          "it holds this set; write into another folder or delete it (nothing was written)")


def _write(out_dir: Path, splits: dict[str, Iterator[Sample]], total: int | None = None, desc: str = "synthetic",
           progress: Progress = True) -> dict[str, Path]:
    """Write `splits` (name -> samples) as ``out_dir/<split>.jsonl`` and ``out_dir/images``. A split file already
    there must hold the same set (:func:`_check_same_set`), line by line, else :class:`DomainError` is raised before
    the first image it would redraw: an earlier set is never overwritten. A split file without a `MANIFEST` entry
    (an earlier version's set) is compared line by line as it is rewritten, and refused, left as it was, if it holds
    more lines than this call writes (they cannot be told from the user's own)."""
    out_dir = Path(out_dir)
    splits = {split: iter(samples) for split, samples in splits.items()}
    firsts = {split: next(samples, None) for split, samples in splits.items()}
    _check_same_set(out_dir, firsts)
    splits = {split: (samples if firsts[split] is None else itertools.chain([firsts[split]], samples))
              for split, samples in splits.items()}
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    result: dict[str, Path] = {}
    manifest = _read_manifest(out_dir)
    # PNG encoding releases the GIL: encode on worker threads while the main thread draws the next samples.
    # Every file's bytes depend only on its own pixels, so the order of completion does not matter.
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=min(4, usable_cores())) as pool, \
            progress_bar(total=total, desc=desc, unit="image", progress=progress) as bar:
        for split, samples in splits.items():
            path = out_dir / f"{split}.jsonl"

            def write_split(f: IO[str], samples: Iterator[Sample] = samples, path: Path = path,
                            split: str = split) -> None:
                with contextlib.ExitStack() as stack:
                    old = stack.enter_context(path.open(encoding="utf-8")) if path.exists() else None
                    i = -1
                    for i, sample in enumerate(samples):  # one line at a time: a large set never sits in memory
                        bar.update()
                        line = _line(sample)
                        before = old.readline() if old is not None else ""
                        if before and before != line:  # an edited set: its image i is not this call's to redraw
                            raise DomainError(f"{path}: line {i + 1} differs from the set this call writes (edited, "
                                              "or another set); write into another folder or delete it (the lines "
                                              "before it were rewritten unchanged)")
                        rel = sample.record["image"]
                        pending.append(pool.submit(_save_png, sample.image, out_dir / rel))
                        while len(pending) > 64:
                            pending.popleft().result()
                        written.add(Path(rel).name)
                        f.write(line)
                    if old is not None and not isinstance(manifest.get(split), dict) and old.readline():
                        # no digest of an earlier version's set: lines past this call's could be the user's own
                        raise DomainError(f"{path}: holds more lines than the {i + 1} this call "
                                          f"writes, and has no {MANIFEST} entry (an earlier version wrote it), "
                                          "so its further lines cannot be told from edits; call with at least as "
                                          "many samples, write into another folder, or delete it to regenerate "
                                          "(it was left as it was)")
                    while pending:  # the file appears only once every image it names is on disk
                        pending.popleft().result()

            # through a temporary file: a failure half-way leaves no new file, never half a split
            atomic_write(path, write_split, binary=False)
            result[split] = path
            # after each split: a failure in the next one leaves the manifest true to the files there
            lines, sha256 = _file_digest(path)  # read back, as _check_same_set will read it
            manifest[split] = {"lines": lines, "sha256": sha256}
            atomic_write(out_dir / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n"),
                         binary=False)
    for stale in images.iterdir():  # images of an earlier, larger call would otherwise linger
        if _IMAGE_NAME.match(stale.name) and stale.name not in written:
            stale.unlink()
    result["root"] = out_dir
    return result


ANSWER_STYLES = ("letter", "label")
LABEL_INSTRUCTION = "Answer with one of the options."


def label_style(sample: Sample) -> Sample:
    """Candidates listed in the question, the answer given as the label itself.

    This is the style of Mini-InternVL's remote-sensing classification prompts ("classify the image
    within one of the given classes … answer with one word"); it asks a model to see, not to copy an
    option letter, which a tiny model trained from scratch learns far sooner.
    """
    record = sample.record
    if record["task"] != "mc":
        return sample
    question = record["conversations"][0]["value"].split("\n")[1]
    options = [opt.split(". ", 1)[1] for opt in record["options"]]
    prompt = f"<image>\n{question}\nOptions: {', '.join(options)}.\n{LABEL_INSTRUCTION}"
    record = {**record, "answer": record["label"], "options": options,
              "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": record["label"]}]}
    return replace(sample, record=record)


def _styled(samples: Iterator[Sample], answer_style: str) -> Iterator[Sample]:
    if answer_style not in ANSWER_STYLES:
        raise DomainError(f"answer_style {answer_style!r} is not one of {ANSWER_STYLES}")
    return samples if answer_style == "letter" else map(label_style, samples)


MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024  # below 32 px the count and object layouts no longer fit


def _check_args(n_train: int, n_test: int, seed: int, image_size: int) -> None:
    """Refuse, before drawing or allocating anything, counts, seeds and sizes the generators cannot use."""
    for name, value, lo in (("n_train", n_train, 0), ("n_test", n_test, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise DomainError(f"{name} must be a whole number >= {lo}, got {value!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or \
            not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise DomainError(f"image_size must be a whole number of pixels in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, "
                          f"got {image_size!r}")


PNG_BYTES_PER_PIXEL = 0.4  # a noisy RGB PNG here takes ~0.54 bytes per pixel; the check errs on the small side


def _check_disk(out_dir: Path, n_train: int, n_test: int, image_size: int) -> None:
    """Refuse, before anything is drawn, a set that clearly cannot fit on the disk holding ``out_dir``."""
    n = n_train + n_test
    need = n * image_size * image_size * PNG_BYTES_PER_PIXEL
    where = next((p for p in (Path(out_dir), *Path(out_dir).parents) if p.exists()), Path("."))
    free = shutil.disk_usage(where).free
    if need > free:
        # named above any hidden folder: `adapt synthesize` generates into a .synthesize-* staging folder of --out
        shown = next((p for p in (where, *where.parents) if not p.name.startswith(".")), where)
        raise DomainError(f"n_train + n_test = {n:,} images of {image_size} px need about {need / 2**30:.1f} GiB, "
                          f"more than the {free / 2**20:.0f} MiB free on the disk of {shown}; ask for fewer images")


def generate_general(out_dir: Path, n_train: int = 4000, n_test: int = 200, seed: int = 0,
                     image_size: int = 112, answer_style: str = "letter", progress: Progress = True) -> dict[str, Path]:
    """Write the general shapes world (multiple choice over :data:`GENERAL_TASKS`) under ``out_dir``.

    `answer_style`: "letter" (Mini-InternVL multiple choice, A-D) or "label" (see :func:`label_style`).
    `progress`: a bar over the images (on a terminal). `image_size`: 32..1024 px; `seed`, `n_train`, `n_test` >= 0.
    An ``out_dir`` already holding another set (``train.jsonl`` / ``test.jsonl``), or this one edited since, is refused
    with :class:`DomainError`, nothing written; the same set (these arguments, any ``n_train`` / ``n_test``) is
    rewritten.
    """
    return _generate(general_samples, out_dir, n_train, n_test, seed, image_size, answer_style, "synthetic general",
                     progress)


def generate_landcover(out_dir: Path, n_train: int = 1500, n_test: int = 200, seed: int = 1,
                       image_size: int = 112, answer_style: str = "letter",
                       progress: Progress = True) -> dict[str, Path]:
    """Write the land-cover specialist domain (~70 % classification mc, ~30 % grounding) under ``out_dir``;
    arguments as :func:`generate_general`."""
    return _generate(landcover_samples, out_dir, n_train, n_test, seed, image_size, answer_style,
                     "synthetic land cover", progress)


def _generate(samples: Callable[[str, int, int, int], Iterator[Sample]], out_dir: Path, n_train: int, n_test: int,
              seed: int, image_size: int, answer_style: str, desc: str, progress: Progress) -> dict[str, Path]:
    """Check the arguments and the disk, then write the train and test splits of a world's `samples`
    (``samples(split, n, seed, image_size)``) in `answer_style`: the body of both generators."""
    _check_args(n_train, n_test, seed, image_size)
    _check_disk(out_dir, n_train, n_test, image_size)
    return _write(Path(out_dir), {
        "train": _styled(samples("train", n_train, seed, image_size), answer_style),
        "test": _styled(samples("test", n_test, seed, image_size), answer_style),
    }, n_train + n_test, desc, progress)


def _writes(**_: object) -> list[str]:
    """What the generators write into `out_dir` (so ``adapt synthesize`` refuses a clash before drawing)."""
    return ["images", "train.jsonl", "test.jsonl", MANIFEST]


generate_general.writes = generate_landcover.writes = _writes  # type: ignore[attr-defined]
