"""DOTA v1.0 / v1.5 / v2.0 (oriented aerial object boxes) -> chips with grounding, count and presence records.

Layout read: ``images/P0000.png`` beside ``labelTxt/P0000.txt``, either in ``src/train``, ``src/val``,
``src/test`` (one split each) or in `src` itself (one split, named after `src` when it is ``train`` / ``val`` /
``test``, else ``all``). A label file holds optional header lines
``imagesource:GoogleEarth`` and ``gsd:0.146`` (``gsd:null`` in v2.0), then one object a line::

    x1 y1 x2 y2 x3 y3 x4 y4 category difficult

an oriented quadrilateral in pixels, a category such as ``small-vehicle`` and ``difficult`` 0 / 1 (optional, 0 when
absent, as in the DOTA devkit; 2, which the devkit's split writes for a cut object, counts as difficult).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from domains.base import ConvertReport, DomainError, SkipInput, chat_record
from domains.boxes import Box, render_ref_box, to_grid, upright_box
from domains.files import (
    files_inside,
    image_size,
    inside_root,
    is_fresh,
    output_key,
    png_bytes,
    remove_unreferenced_images,
    safe_name,
    write_output,
    write_splits,
)
from domains.parallel import Prefetch, check_workers
from domains.remote_sensing import PIL_SUFFIXES, chip_starts
from domains.remote_sensing.convert import GROUNDING_QUESTION, RSVQA_INSTRUCTION, _listed, rsvqa_bucket
from model.limits import DEFAULT_MAX_PIXELS
from model.progress import Progress, progress_bar
from model.quiet import ignoring
from model.tiling import ImageLoadError, load_image, upright_size

__all__ = ["CHIP_GAP", "CHIP_SIZE", "COUNT_QUESTION", "DOTA_DATASET", "EMPTY_LABELS", "MIN_KEEP", "PRESENCE_QUESTION",
           "TASKS", "DotaObject", "chip_starts", "convert_dota", "read_dota_labels"]

DOTA_DATASET = "dota"
CHIP_SIZE, CHIP_GAP = 1024, 200  # the DOTA devkit's ImgSplit defaults (subsize, gap)
MIN_KEEP = 0.7  # the devkit's thresh: an object is kept in a chip when >= 70 % of its polygon's area is inside
MAX_CHIPS = 1_000_000  # per image: each chip is kept in memory until the negatives are picked
MIN_IN_IMAGE = 0.5  # an object at least half outside its image is a wrong label, not a border overshoot
EMPTY_LABELS = ("skip", "negative")  # what an empty label file is: see convert_dota's Bad input
COUNT_QUESTION = "How many {} are there in the image?"
PRESENCE_QUESTION = "Is there {} in the image?"  # RSVQA's presence form ("Is there a road?"), answered yes / no
TASKS = ("grounding", "count", "presence")
_HEADER = re.compile(r"^(imagesource|gsd)\s*:\s*(.*)$", re.IGNORECASE)

Polygon = list[tuple[float, float]]


class DotaObject(NamedTuple):
    polygon: Polygon  # the 4 corners, image pixels
    category: str  # as written: "small-vehicle"
    difficult: bool
    line: int  # 1-based line of the label file


def _area(poly: Polygon) -> float:
    """Shoelace area of a simple polygon."""
    n = len(poly)
    return abs(sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1] for i in range(n))) / 2


def _clip(poly: Polygon, x1: float, y1: float, x2: float, y2: float) -> Polygon:
    """Sutherland-Hodgman: the part of `poly` inside the rectangle ``[x1, x2] x [y1, y2]`` (empty if none)."""
    edges = ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False))  # (axis, bound, keep >= bound)
    for axis, bound, low in edges:
        if not poly:
            break
        inside = (lambda p: p[axis] >= bound) if low else (lambda p: p[axis] <= bound)
        out: Polygon = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            if inside(cur) != inside(prev):  # the edge crosses the bound: add the crossing point
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = (prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1]))
                out.append((bound, cross[1]) if axis == 0 else (cross[0], bound))
            if inside(cur):
                out.append(cur)
        poly = out
    return poly


def _crosses(poly: Polygon) -> bool:
    """Whether a quadrilateral's opposite sides cross (a bow tie: its shoelace area is the lobes' difference)."""
    def turn(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def cut(a, b, c, d) -> bool:  # segments ab and cd cross at a point inside both
        return turn(a, b, c) * turn(a, b, d) < 0 and turn(c, d, a) * turn(c, d, b) < 0

    a, b, c, d = poly
    return cut(a, b, c, d) or cut(b, c, d, a)


def _bounds(poly: Polygon) -> Box:
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    return Box(min(xs), min(ys), max(xs), max(ys))


def read_dota_labels(path: Path, report: ConvertReport) -> tuple[list[DotaObject], dict[str, Any]]:
    """A DOTA label file -> ``(objects, header)`` (``header``: ``imagesource`` and ``gsd`` when given). A malformed
    object line is skipped into `report` (``malformed label line``) under ``file:line``; the rest is read."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipInput("malformed label file", f"{path}: not UTF-8 text ({exc})") from exc
    objects: list[DotaObject] = []
    header: dict[str, Any] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        m = _HEADER.match(line)
        if m and not objects:
            key, value = m.group(1).lower(), m.group(2).strip()
            if key == "gsd":
                try:
                    value = float(value) if math.isfinite(float(value)) else None
                except ValueError:
                    value = None  # "gsd:null" (DOTA v2.0) or empty
            header[key] = value
            continue
        where = f"{path}:{n}"
        parts = line.split()
        try:
            if len(parts) not in (9, 10):
                raise ValueError(f"needs 8 coordinates, a category and a difficult flag, got {len(parts)} fields")
            coords = [float(v) for v in parts[:8]]
            if not all(math.isfinite(v) for v in coords):
                raise ValueError("a coordinate is not finite")
            if re.fullmatch(r"[-+.\d]+", parts[8]) or re.search(r"[<>]", parts[8]):
                raise ValueError(f"the category must be a name such as small-vehicle, got {parts[8]!r}")
            flag = parts[9] if len(parts) == 10 else "0"
            if flag not in ("0", "1", "2"):
                raise ValueError(f"difficult must be 0, 1 or 2 (a cut object), got {flag!r}")
            poly = [(coords[i], coords[i + 1]) for i in range(0, 8, 2)]
            if _area(poly) <= 0:
                raise ValueError("the quadrilateral has no area")
            if _crosses(poly):
                raise ValueError("the quadrilateral crosses itself (corners out of order), so its area is unknown")
        except ValueError as exc:
            report.skip(where, "malformed label line", f"{where}: {exc}: {line[:120]!r}")
            continue
        objects.append(DotaObject(poly, parts[8], flag != "0", n))
    return objects, header


def _phrase(category: str) -> str:
    return " ".join(category.replace("-", " ").replace("_", " ").split())


def _with_article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _plural(phrase: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", phrase):
        return phrase + "es"
    if re.search(r"[^aeiou]y$", phrase):
        return phrase[:-1] + "ies"
    return phrase + "s"


def _split_roots(src: Path, labels_dir: str) -> dict[str, Path]:
    found = {s: src / s for s in ("train", "val", "test") if (src / s / labels_dir).is_dir()}
    if found:
        return found
    if (src / labels_dir).is_dir():  # one split folder given: named after it (DOTA/val -> val), else "all"
        return {src.name if src.name in ("train", "val", "test") else "all": src}
    raise DomainError(f"{src}: no {labels_dir}/ folder of DOTA label files (nor train/, val/, test/ holding one)")


def _find_image(images: Path, stem: str) -> Path:
    for suffix in PIL_SUFFIXES + tuple(s.upper() for s in PIL_SUFFIXES):
        path = inside_root(images, stem + suffix)  # a symlink leading out of the data folder is refused
        if path.is_file():
            # as `images` is written (inside_root's path is absolute): meta and reports name it relative to src
            return images / (stem + suffix)
    raise SkipInput("missing image", f"no image {stem}.* in {images} (any of {', '.join(PIL_SUFFIXES)})")


def _label_files(files: list[tuple[str, Path]], report: ConvertReport) -> list[tuple[str, Path]]:
    """The ``.txt`` label files of `files` (``P0001.TXT`` included); any other file is skipped into `report` (``not a
    .txt label file``), as is a second file of one name (``P0001.txt`` beside ``P0001.TXT``: one image, one chip
    set)."""
    kept, seen = [], set()
    for split, path in files:
        if path.suffix.lower() != ".txt":
            report.skip(path, "not a .txt label file", f"{path}: DOTA label files end in .txt")
        elif (split, path.stem) in seen:
            report.skip(path, "duplicate label file", f"{path}: another label file of {path.stem} was read")
        else:
            seen.add((split, path.stem))
            kept.append((split, path))
    return kept


def _unlabelled_images(roots: dict[str, Path], images_dir: str, labels_dir: str, labelled: set[tuple[str, str]],
                       report: ConvertReport) -> None:
    """Skip into `report` (``no label file``) each image of a split that no label file names: DOTA gives every
    train / val image one (header lines alone when it holds no object), so a missing one is a lost file."""
    for split, root in roots.items():
        folder = root / images_dir
        if not folder.is_dir():
            continue
        for image in sorted(folder.iterdir()):
            if (_listed(image) and image.suffix.lower() in PIL_SUFFIXES and (split, image.stem) not in labelled
                    and image.is_file()):
                report.skip(image, "no label file", f"{image}: no {labels_dir}/{image.stem}.txt, so it is not "
                                                    f"converted (a scene without objects needs its header lines)")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DomainError(f"{name} must be a positive whole number of pixels, got {value!r}")
    return value


def convert_dota(src: str | Path, out: str | Path, dataset: str = DOTA_DATASET, size: int = CHIP_SIZE,
                 overlap: int = CHIP_GAP, min_keep: float = MIN_KEEP, difficult: bool = True,
                 tasks: Sequence[str] = TASKS, negatives: float = 1.0, seed: int = 0, images_dir: str = "images",
                 labels_dir: str = "labelTxt", max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 1,
                 empty_labels: str = "skip", progress: Progress = True) -> ConvertReport:
    """DOTA -> ``size x size`` chips with grounding, count and presence records, in ``out/<dataset>_<split>.jsonl``.

    **Chips** as the DOTA devkit's split: ``size x size`` (default 1024) stepping by ``size - overlap`` (default
    200), the last row / column aligned to the image edge (an image smaller than `size` is one chip of its own
    size; chips are not padded). A chip is written (``out/images/<dataset>/<image>/<image>_x<col>_y<row>_<w>x<h>
    .png``) only when it has a record (an object, or a negative presence question); chips an earlier run left there
    that no record names (another `size`) are removed (listed in ``report.removed``).

    **Objects and chip borders.** An object is kept in a chip when at least `min_keep` (0.7, the devkit's
    ``thresh``) of its quadrilateral's area lies inside the chip; its box is then the horizontal bounds of the
    quadrilateral clipped to the chip. With ``overlap > 0`` an object can be kept in several chips. An object
    kept in no chip (larger than a chip, say) is skipped as ``object in no chip``. Before that each object is
    clipped to its image: one at least half outside is skipped (``box outside image``), a smaller overshoot is
    clipped and counted as a warning. ``difficult=False`` leaves difficult objects out (``difficult object``).

    **Records** (`tasks`), per chip and category present, the category's name with ``-`` as a space:

    * ``"grounding"``: ``<image>\\nPlease provide the bounding box coordinate of the region this sentence
      describes: <ref>small vehicle</ref>`` -> ``<ref>small vehicle</ref><box>[[x1, y1, x2, y2], ...]</box>``, every
      kept box of the category on the chip's 0-1000 grid, top to bottom then left to right, in one ``<box>``;
    * ``"count"``: ``How many small vehicles are there in the image?`` + the RSVQA instruction -> ``"3"``, a
      ``task: "rsvqa"`` record with ``question_type: "count"`` (scored by the RSVQA scorer). It is asked only when
      the count is certain: not when an object of the category is cut by the chip border below `min_keep` (seen
      in part but not counted) or left out as difficult;
    * ``"presence"``: ``Is there a small vehicle in the image?`` + the RSVQA instruction -> ``"yes"`` for each
      category with a kept box, and ``"no"`` (a negative) for a category of the run's vocabulary (the categories
      kept in some chip, all splits) of which no part lies in the chip, asked on any chip, empty ones included; a
      ``task: "rsvqa"`` record with ``question_type: "presence"``. A category cut below `min_keep` or left out as
      difficult is never asked about (neither yes nor no), nor is any absent category on an image with a
      malformed or mostly-outside object line (it may be anything anywhere).

    **Options.** `dataset`: the name of the output files and image folder. `size`: the chip side in pixels.
    `overlap`: pixels neighbouring chips share (below `size`). `min_keep`: the share of an object's area a chip must
    hold to keep it. `difficult`: false leaves difficult objects out. `tasks`: any of grounding, count, presence.
    `negatives`: at most ``floor(negatives * yes-questions)`` "no" presence questions per split (1.0: no more "no"
    than "yes"; 0: none), the ones whose hash of `seed` and the record id is smallest, so the pick does not depend
    on the order or on `workers`. `seed`: another whole number picks other negatives. `images_dir`: the folder of
    the images. `labels_dir`: the folder of the label files. `max_pixels`: the largest image decoded (width x
    height). `workers`: processes decoding and cutting images ahead.

    ``meta`` holds the ``source_image`` and ``label_file`` (relative to `src`), ``source_size``, the chip
    ``window`` [col, row, w, h], ``gsd`` / ``imagesource`` when the file gives them, ``name`` (the category), and
    per box the chip-pixel ``bbox``, the ``grid_box``, ``difficult`` and the label ``lines``.

    **Bad input**: a malformed object line (wrong field count, a non-number, a zero-area quadrilateral, a number
    where the category goes, a difficult flag not 0 / 1 / 2, corners out of order so that the sides cross) is skipped
    and counted with ``file:line``. A label file of header lines alone is a scene without objects (only "no" presence
    questions); one whose object lines are all malformed is skipped (``no objects``), as is an image no label file
    names (``no label file``). An **empty** label file (no header, no object line) is what the DOTA devkit's
    ``ImgSplit`` and mmrotate's ``img_split`` write for a background patch of a split DOTA, but an original DOTA
    label file always has its header, so there it is a damaged file; and mmrotate leaves out an object with less
    than 70 % of it in the patch, so such a patch may still show most of one. `empty_labels`: ``"skip"`` (the
    default: skipped as ``no objects``, the message naming this option) or ``"negative"`` (pre-split data whose
    empty files you vouch for: a scene without objects, counted as the warning ``empty label file read as a
    scene without objects``). A label file without an image, an unreadable image, or one above `max_pixels`
    (``tiling.max_pixels``; raise it for DOTA v2.0's largest scenes: an 8-bit PNG is read in full-width strips of a
    chip's height, never whole; other images are decoded whole, the skip message gives the memory either takes) or
    one `size` and `overlap` would cut into more than ``MAX_CHIPS`` (1 M) chips is skipped with the file named. Re-runs reuse chip
    PNGs that are fresh (as the other converters); the image is decoded only when a chip is missing. With ``workers
    > 1`` each image is decoded and its missing chips encoded ahead in worker processes (:mod:`domains.parallel`:
    one decode per image serves all its chips; the output is byte for byte that of one worker). `progress`: a bar
    over the images.
    """
    check_workers(workers)
    src, out = Path(src), Path(out)
    size = _positive_int(size, "size")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < size:
        raise DomainError(f"overlap must be a whole number with 0 <= overlap < size ({size}), got {overlap!r}")
    if isinstance(min_keep, bool) or not isinstance(min_keep, (int, float)) or not 0 < min_keep <= 1:
        raise DomainError(f"min_keep must be in (0, 1], got {min_keep!r}")
    max_pixels = _positive_int(max_pixels, "max_pixels")
    if not isinstance(difficult, (bool, np.bool_, int)) or difficult not in (0, 1):  # "exclude" was truthy
        raise DomainError(f"difficult must be true or false (false leaves difficult objects out), got {difficult!r}")
    difficult = bool(difficult)
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks or set(tasks) - set(TASKS):
        raise DomainError(f"tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
    if (isinstance(negatives, bool) or not isinstance(negatives, (int, float)) or not math.isfinite(negatives)
            or negatives < 0):
        raise DomainError(f"negatives must be a number >= 0 (negative presence questions per positive one), "
                          f"got {negatives!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DomainError(f"seed must be a whole number, got {seed!r}")
    if empty_labels not in EMPTY_LABELS:
        raise DomainError(f"empty_labels must be one of {', '.join(EMPTY_LABELS)}, got {empty_labels!r}")
    if not src.is_dir():
        raise DomainError(f"{src}: not a directory (expected DOTA's images/ and labelTxt/)")
    roots = _split_roots(src, labels_dir)
    report = ConvertReport(dataset=dataset, source=src, out=out)
    key = output_key(dota_chip=1)
    step = size - overlap
    files = [(split, p) for split, root in roots.items()  # a label file linked in from outside src is refused
             for p in files_inside(src, sorted(p for p in (root / labels_dir).iterdir() if _listed(p)), report)
             if p.is_file()]
    files = _label_files(files, report)
    _unlabelled_images(roots, images_dir, labels_dir, {(split, p.stem) for split, p in files}, report)
    vocabulary: set[str] = set()  # the categories kept in some chip: the ones a presence question may ask about
    splits: dict[str, list[dict]] = {split: [] for split in roots}
    scenes: list[_Scene] = []
    for split, label in files:
        root = roots[split]
        malformed = report.skipped.get("malformed label line", 0)
        try:
            img_src = _find_image(root / images_dir, label.stem)
            objects, header = read_dota_labels(label, report)
        except SkipInput as exc:
            report.skip(label, exc.reason, exc.detail)
            continue
        except OSError as exc:
            report.skip(label, "unreadable label file", f"{label}: {exc}")
            continue
        try:
            (W, H), orientation = upright_size(img_src)
        except (UnidentifiedImageError, OSError) as exc:
            report.skip(img_src, "unreadable image", f"{img_src}: {exc}")
            continue
        if W * H > max_pixels:
            bands = _strip_bands(img_src) if orientation == 1 else None
            cost = (f"read in strips of {min(size, H)} rows, {len(bands) * W * min(size, H) / 2**20:,.0f} MiB each"
                    if bands else f"decoded whole, about {3 * W * H / 2**20:,.0f} MiB")
            report.skip(img_src, "image too large", f"{img_src}: {W}x{H} = {W * H:,} pixels, above max_pixels "
                                                     f"{max_pixels:,}; pass --option max_pixels=N to read it ({cost})")
            continue
        bad_lines = report.skipped.get("malformed label line", 0) != malformed
        if not objects and not header and not bad_lines and empty_labels == "negative":
            report.warn(label, "empty label file read as a scene without objects",
                        f"{label}: empty, read as a background patch (empty_labels=negative)")
        elif not objects and (bad_lines or not header):
            # a header alone is a scene with no objects (a sure negative); an empty file, or one whose object lines
            # were all malformed, says nothing sure about the scene
            detail = ("no object line could be read (each malformed one is reported with its file:line)" if bad_lines
                      else "empty: no imagesource: / gsd: header and no object lines; if it is a background patch "
                           "of a split DOTA (the devkit's ImgSplit and mmrotate's img_split write those empty), "
                           "pass --option empty_labels=negative to ask it \"no\" presence questions")
            report.skip(label, "no objects", f"{label}: {detail}")
            continue
        n_chips = len(chip_starts(W, size, step)) * len(chip_starts(H, size, step))
        if n_chips > MAX_CHIPS:
            report.skip(img_src, "too many chips", f"{img_src}: {W}x{H} in {size} px chips {overlap} px apart "
                                                   f"makes {n_chips:,} chips, above {MAX_CHIPS:,}; use a larger size "
                                                   f"or a smaller overlap")
            continue
        rel = label.relative_to(src).as_posix()
        stem = safe_name(label.stem) if split == "all" else f"{split}_{safe_name(label.stem)}"
        if orientation != 1:
            report.warn(label, "boxes turned with an EXIF-oriented image", f"{label}: {img_src.name} has EXIF "
                        f"orientation {orientation}: it is written upright and its boxes are turned with it")
        kept: list[tuple[DotaObject, Polygon, float]] = []  # object, polygon clipped to the image, area of that
        # a skipped object line may be anything anywhere: "no" would be a guess on this image
        sure = report.skipped.get("malformed label line", 0) == malformed
        for obj in objects:
            where = f"{label}:{obj.line}"
            poly = obj.polygon
            if orientation != 1:  # labels are in the stored pixel grid; load_image turns the image upright
                stored = (H, W) if orientation >= 5 else (W, H)
                poly = [upright_box((x, y, x, y), *stored, orientation)[:2] for x, y in poly]
            area = _area(poly)
            inside = _clip(poly, 0, 0, W, H)
            if _area(inside) < MIN_IN_IMAGE * area:
                report.skip(where, "box outside image", f"{where}: the {obj.category} lies mostly outside the "
                                                        f"{W}x{H} image {img_src.name}")
                sure = False
                continue
            if inside != poly:
                report.warn(where, "box clipped to image", f"{where}: {obj.category} clipped to the {W}x{H} image")
            if obj.difficult and not difficult:
                report.skip(where, "difficult object", f"{where}: difficult {obj.category} left out (difficult=False)")
            kept.append((obj, inside, _area(inside)))  # chip fractions are of the part inside the image
        placed = [False] * len(kept)
        bounds = [_bounds(poly) for _, poly, _ in kept]
        chip_cats: list[tuple[int, int, int, int, dict[str, dict[str, Any]]]] = []
        for row in chip_starts(H, size, step):
            for col in chip_starts(W, size, step):
                w, h = min(size, W), min(size, H)
                by_cat: dict[str, dict[str, Any]] = {}
                for k, (obj, poly, area) in enumerate(kept):
                    near = bounds[k]
                    if near.x2 <= col or near.y2 <= row or near.x1 >= col + w or near.y1 >= row + h:
                        continue  # nowhere near this chip: no need to clip (thousands of objects per scene)
                    part = _clip(poly, col, row, col + w, row + h)
                    if not part:
                        continue
                    entry = by_cat.setdefault(obj.category, {"boxes": [], "uncertain": False})
                    frac = _area(part) / area
                    if frac < min_keep - 1e-9 or (obj.difficult and not difficult):
                        entry["uncertain"] = entry["uncertain"] or frac > 0
                        continue
                    b = _bounds(part)
                    entry["boxes"].append((Box(b.x1 - col, b.y1 - row, b.x2 - col, b.y2 - row), obj))
                    placed[k] = True
                chip_cats.append((col, row, w, h, by_cat))
        for k, (obj, _, _) in enumerate(kept):
            if not placed[k] and (difficult or not obj.difficult):
                where = f"{label}:{obj.line}"
                report.skip(where, "object in no chip", f"{where}: no {size}x{size} chip holds >= {min_keep:.0%} of "
                                                        f"the {obj.category}")
        vocabulary.update(obj.category for k, (obj, _, _) in enumerate(kept) if placed[k])
        scenes.append(_Scene(split, img_src, stem, chip_cats, sure,
                             {"source_image": img_src.relative_to(src).as_posix(), "label_file": rel,
                              "source_size": [W, H], **header}))

    chosen = _pick_negatives(scenes, sorted(vocabulary), dataset, negatives, seed) if "presence" in tasks else set()
    images: list[tuple[str, Path, list, list[tuple[Path, tuple[int, int, int, int]]]]] = []  # split, image, chips, todo
    categories = sorted(vocabulary)
    for scene in scenes:
        chips = []
        for col, row, w, h, by_cat in scene.chips:
            cid = _chip_id(dataset, scene.stem, col, row)
            absent = [c for c in categories if f"{cid}/{safe_name(c)}/presence" in chosen]
            records = _chip_records(dataset, scene.stem, scene.split, col, row, w, h, by_cat, absent, tasks,
                                    {**scene.meta, "window": [col, row, w, h]})
            if records:
                chips.append((col, row, w, h, records))
        images.append((scene.split, scene.image, chips, _chips_todo(scene.image, out, dataset, scene.stem, chips, key)))

    def plan():  # the images to decode, in the loop's order: decoded and cut ahead in the workers
        for _, img_src, _, todo in images:
            if todo:
                windows = tuple(window for _, window in todo)
                yield (img_src, windows), _chip_pngs, (img_src, windows, key, max_pixels)

    with Prefetch(workers, plan) as pf:
        for split, img_src, chips, todo in progress_bar(images, desc=dataset, unit="image", progress=progress):
            if todo:
                windows = tuple(window for _, window in todo)
                try:
                    pngs = pf.get((img_src, windows), _chip_pngs, img_src, windows, key, max_pixels)
                except SkipInput as exc:
                    report.skip(img_src, exc.reason, exc.detail)
                    continue
                for (dst, _), data in zip(todo, pngs):
                    write_output(dst, data, img_src)
            for *_, records in chips:
                splits[split].extend(records)
    remove_unreferenced_images(report, out, f"images/{dataset}", splits)  # chips of other sizes, earlier runs
    return write_splits(report, out, dataset, splits)


class _Scene(NamedTuple):
    split: str
    image: Path
    stem: str
    chips: list[tuple[int, int, int, int, dict[str, dict[str, Any]]]]  # col, row, w, h, category -> boxes, uncertain
    sure: bool  # every object line was read and placed in the image: a category not seen is absent
    meta: dict[str, Any]


def _chip_id(dataset: str, stem: str, col: int, row: int) -> str:
    return f"{dataset}/{stem}/x{col}_y{row}"


def _absent(by_cat: dict[str, dict[str, Any]], category: str) -> bool:
    """No part of any object of `category` lies in the chip (a zero-area touch of its border aside)."""
    entry = by_cat.get(category)
    return entry is None or not (entry["boxes"] or entry["uncertain"])


def _pick_negatives(scenes: list[_Scene], vocabulary: list[str], dataset: str, ratio: float, seed: int) -> set[str]:
    """The ids of the negative presence questions asked: per split at most ``floor(ratio * positives)``, those
    whose seeded hash of the id is smallest (the pick depends on the ids alone: not on the order, nor on workers)."""
    def rank(rid: str) -> bytes:
        return hashlib.blake2b(f"{seed}/{rid}".encode(), digest_size=8).digest()

    positives: dict[str, int] = {}
    for sc in scenes:
        positives[sc.split] = positives.get(sc.split, 0) + sum(
            1 for *_, by_cat in sc.chips for entry in by_cat.values() if entry["boxes"])
    chosen: set[str] = set()
    for split, n in positives.items():
        cap = math.floor(min(ratio * n, sys.maxsize))  # 1e308 * n is inf: 'all of them'
        candidates = (f"{_chip_id(dataset, sc.stem, col, row)}/{safe_name(c)}/presence"
                      for sc in scenes if sc.split == split and sc.sure
                      for col, row, _, _, by_cat in sc.chips for c in vocabulary if _absent(by_cat, c))
        chosen.update(heapq.nsmallest(cap, candidates, key=rank) if cap else ())
    return chosen


def _chip_records(dataset: str, stem: str, split: str, col: int, row: int, w: int, h: int,
                  by_cat: dict[str, dict[str, Any]], absent: Sequence[str], tasks: Sequence[str],
                  chip_meta: dict) -> list[dict]:
    image = f"images/{dataset}/{stem}/{stem}_x{col}_y{row}_{w}x{h}.png"
    cid = _chip_id(dataset, stem, col, row)
    records = []
    for category in sorted(set(by_cat) | set(absent)):
        phrase = _phrase(category)
        asked = PRESENCE_QUESTION.format(_with_article(phrase)) + "\n" + RSVQA_INSTRUCTION
        if category in absent:  # a negative: only presence asks about it
            meta = {"dataset": dataset, "split": split, **chip_meta, "name": category, "phrase": phrase,
                    "question_type": "presence"}
            records.append(chat_record(f"{cid}/{safe_name(category)}/presence", image, (w, h), asked, "no", "rsvqa",
                                       meta=meta))
            continue
        entry = by_cat[category]
        boxes = sorted(entry["boxes"], key=lambda bo: (bo[0].y1, bo[0].x1, bo[0].y2, bo[0].x2))
        if not boxes:
            continue
        grids = [to_grid(b, w, h) for b, _ in boxes]
        meta = {"dataset": dataset, "split": split, **chip_meta, "name": category, "phrase": phrase,
                "bbox": [[round(v, 3) for v in b] for b, _ in boxes], "grid_box": grids,
                "difficult": [o.difficult for _, o in boxes], "lines": [o.line for _, o in boxes]}
        if "grounding" in tasks:
            records.append(chat_record(f"{cid}/{safe_name(category)}/grounding", image, (w, h),
                                       GROUNDING_QUESTION.format(phrase), render_ref_box(phrase, grids), "grounding",
                                       meta=meta))
        if "count" in tasks and not entry["uncertain"]:
            answer = str(len(boxes))
            records.append(chat_record(f"{cid}/{safe_name(category)}/count", image, (w, h),
                                       COUNT_QUESTION.format(_plural(phrase)) + "\n" + RSVQA_INSTRUCTION, answer,
                                       "rsvqa",
                                       meta={**meta, "question_type": "count", "bucket": rsvqa_bucket(answer)}))
        if "presence" in tasks:
            records.append(chat_record(f"{cid}/{safe_name(category)}/presence", image, (w, h), asked, "yes", "rsvqa",
                                       meta={**meta, "question_type": "presence"}))
    return records


def _chips_todo(img_src: Path, out: Path, dataset: str, stem: str, chips: list,
                key: str) -> list[tuple[Path, tuple[int, int, int, int]]]:
    """(output path, crop window) of each chip PNG not already there fresh."""
    todo = []
    for col, row, w, h, _ in chips:
        dst = out / f"images/{dataset}/{stem}/{stem}_x{col}_y{row}_{w}x{h}.png"
        try:
            if is_fresh(dst, img_src, key) and image_size(dst) == (w, h):
                continue
        except (OSError, UnidentifiedImageError):
            pass  # a damaged output: write it again
        todo.append((dst, (col, row, col + w, row + h)))
    return todo


def _chip_pngs(img_src: Path, windows: Sequence[tuple[int, int, int, int]], key: str,
               max_pixels: int) -> list[bytes]:
    """The expensive, pure step (in a worker with ``workers > 1``): read the image once and encode each window as a
    chip PNG. An 8-bit PNG is read in full-width strips of at most a chip's height (:func:`_strip_chips`), so a
    scene never sits in memory whole (a PNG cut short is refused from its chunk headers first: :func:`_png_cut`);
    any other image is decoded whole by the one image reader. Raises ``SkipInput("unreadable image")``."""
    try:
        bands = _strip_bands(img_src)
        if bands is not None:
            cut = _png_cut(img_src)
            if cut:
                raise SkipInput("unreadable image", f"{img_src}: the image is damaged or truncated ({cut})")
            if cut is None:
                return _strip_chips(img_src, bands, windows, key)
        image = load_image(img_src, max_pixels=max_pixels)
    except ImageLoadError as exc:
        raise SkipInput("unreadable image", str(exc)) from exc
    return [png_bytes(image.crop(window), key) for window in windows]


_STRIP_MODES = {"RGB": (1, 2, 3), "RGBA": (1, 2, 3), "L": (1,), "LA": (1,)}  # the bands read: RGB, or grey


def _strip_bands(path: Path) -> tuple[int, ...] | None:
    """The 1-based bands to read (R, G, B, or one grey) when `path` is a PNG whose rows GDAL reads top to bottom
    exactly as :func:`load_image` decodes them: 8-bit grey or colour (alpha dropped), not interlaced (GDAL would
    decode it whole), no EXIF turn; else None. From the header (opened past PIL's bomb limit: `max_pixels` was
    checked)."""
    try:
        with open(path, "rb") as fp, PngImagePlugin.PngImageFile(fp) as image:
            rawmodes = {str(t[3][0] if isinstance(t[3], tuple) else t[3]) for t in image.tile}
            if rawmodes == {image.mode} and not image.info.get("interlace") and upright_size(path)[1] == 1:
                return _STRIP_MODES.get(image.mode)
    except Exception:  # noqa: BLE001 - not a PNG, or a damaged header: the one image reader says what is wrong
        pass
    return None


def _png_cut(path: Path) -> str | None:
    """Why the PNG at `path` is cut short (a chunk running past the end of the file); None when its chunks end with
    IEND; "" when the file ends between chunks without one, which the headers cannot judge (decode it whole).
    GDAL's PNG driver decodes the rows a cut file lacks as zeros, without an error; the chunk headers tell it
    (a seek per chunk, nothing decoded)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fp:
            pos = 8  # past the signature
            while pos + 12 <= size:
                fp.seek(pos)
                length, kind = struct.unpack(">I4s", fp.read(8))
                if pos + 12 + length > size:
                    return (f"its {kind.decode('latin-1')} chunk at byte {pos} runs past the end of the file "
                            f"({size:,} bytes)")
                if kind == b"IEND":
                    return None
                pos += 12 + length
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    return ""


def _strip_chips(path: Path, bands: tuple[int, ...], windows: Sequence[tuple[int, int, int, int]],
                 key: str) -> list[bytes]:
    """Chip PNGs of `windows` from a PNG read once from top to bottom in full-width strips (a PNG is one deflate
    stream: a row is reached only through the rows above it). The rows held are those of the chips being cut:
    at most a chip's height times the image width, whatever the image height."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.windows import Window

    from domains.remote_sensing.raster import CHIP_CACHE_MIN, _block_cache

    out: list[bytes] = [b""] * len(windows)
    try:
        # GDAL would keep every row read in its block cache (5 % of RAM): rows are read once, top to bottom
        with _block_cache(CHIP_CACHE_MIN):
            # only the open warns; the lock of `ignoring` is shared by every reader's thread, so not held for the read
            with ignoring(NotGeoreferencedWarning):  # a PNG has no map coordinates: only pixels are read
                src = rasterio.open(path, driver="PNG")
            with src:
                top, held = 0, None  # rows top .. top + held.shape[1] of the image, all columns
                for i in sorted(range(len(windows)), key=lambda k: (windows[k][1], windows[k][3])):
                    x1, y1, x2, y2 = windows[i]
                    end = top + (held.shape[1] if held is not None else 0)
                    if held is None or y1 >= end:  # rows between are decoded by GDAL, not held
                        held, top = src.read(bands, window=Window(0, y1, src.width, y2 - y1)), y1
                    else:
                        held = held[:, y1 - top:]
                        if y2 > end:
                            more = src.read(bands, window=Window(0, end, src.width, y2 - end))
                            held = np.concatenate([held, more], axis=1)
                        top = y1
                    rgb = np.ascontiguousarray(held[[0, 0, 0] if len(bands) == 1 else slice(None), : y2 - y1, x1:x2]
                                               .transpose(1, 2, 0))
                    out[i] = png_bytes(Image.fromarray(rgb), key)
    except RasterioError as exc:
        raise SkipInput("unreadable image", f"{path}: the image is damaged or truncated ({exc})") from exc
    return out
