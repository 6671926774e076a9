"""Box-aware training-time image augmentation for every domain (albumentations): flips, 90° turns, colour jitter.

    aug = build_augmentation(flips=True, rot90=True, color_jitter=0.2, seed=0, general_sources={"replay"})
    image, record = aug(image, record, key=(epoch, index))   # deterministic per (seed, key)
    print(aug.summary(records))   # how many records are augmented, and why the others are held back

Each call applies one symmetry of the square, drawn with numpy from ``derive_seed(seed, key)``: with
``flips`` and ``rot90`` all eight are equally likely (identity, the two flips, the half and quarter turns,
both transposes), with ``flips`` alone the identity, either flip or the half turn, with ``rot90`` alone the
four turns; the colour jitter has a seed of its own from the same draw.

Overhead scenes have no "up", so flips and quarter turns are label-preserving for classification,
VQA about presence/counts/areas and grounding — *provided the boxes move with the pixels*. The
callable finds every box in the record's text and moves it:

* ``<box>[[x1, y1, x2, y2], …]</box>`` in any turn (and in ``record.answer``): grounding answers;
* bare ``[[x1, y1, x2, y2]]`` in **human** turns: region boxes of region questions.

Boxes are read on InternVL's 0–1000 grid, turned into pixel boxes with ``domains.boxes.from_grid``,
transformed by albumentations together with the image (``BboxParams(format="pascal_voc")``) and written
back with ``domains.boxes.to_grid`` for the new width and height, in the ``[a, b, c, d]`` form
``render_ref_box`` uses; all other text is kept byte for byte. A flip or quarter turn maps the grid
exactly (``x -> 1000 - x``).

Not every record may be turned (`Augmentation.plan` says what happens to one, `Augmentation.summary`
counts them for the run's log):

* records whose text (any turn, the ``<ref>`` phrases, ``answer``, ``options``) names a direction or a
  side of the image — left, right, top, bottom, upper, lower, above, below, north, south, east, west,
  horizontal, vertical, clockwise and their forms (leftmost, north-east, westward…) — keep their
  orientation and get colour jitter only: a flip makes "the ship on the left" or "A. right" false, and
  such text is not rewritten. "Centre" and "middle" survive every flip and turn and hold nothing back;
* records of ``general_sources`` (replay data, not overhead imagery) are left as they are;
* a record's ``meta`` ``"augment": true`` lifts both rules (the record is augmented like any other),
  ``"augment": false`` leaves it alone;
* stitched six-camera driving frames (``domains.driving.layout.is_stitched_frame``: ``meta.view_mode``
  ``"stitched"`` or a 2688×896 image) get colour jitter only, even with ``"augment": true``: a flip or turn
  would move the cameras out of their layout (CAM_FRONT_LEFT on the right);
* a single camera picture (``meta.camera``, as the nuScenes converter writes it) gets colour jitter only, by the
  same rule and even with ``"augment": true``: it has an up (a turn puts the sky below the street), and a
  left-right flip swaps left and right in its answers ("the car on the left", CAM_FRONT_LEFT).

Also left alone (returned unchanged): records without exactly one image (multi-view DriveLM records and nuScenes
frame sequences get neither flips nor colour jitter; the summary counts them as not augmented, not as held back),
records whose boxes do not parse as ordered 0–1000 grid boxes (a ``<box>`` holding anything else, a ``<quad>``
polygon), and records with a bare ``[[x1, y1, x2, y2]]`` in an answer (a gpt turn or ``record.answer``): it may
be a box, which would no longer match the moved pixels, and records with coordinates outside those boxes in any
text (a single-bracket ``[x1, y1, x2, y2]``, read as a box when scored; a DriveLM c-tag ``<c1,CAM_FRONT,[x,y]>``).
Colour jitter changes brightness, contrast and saturation but never hue (colour can be the label: water, vegetation).

``albumentations`` is imported when the augmentation is built, so the plugin loads without it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from domains.base import DomainError
from domains.boxes import GRID, ONE_BOX, from_grid, to_grid
from domains.driving.layout import is_stitched_frame, iter_ctags

__all__ = ["Augmentation", "build_augmentation", "derive_seed"]

# a <box> span, or (group 2) a bare [[...], [...]] list of boxes
_SPANS = re.compile(r"<box>(.*?)</box>|(\[\s*\[[^\[\]]*\](?:\s*,\s*\[[^\[\]]*\])*\s*\])", re.DOTALL)
# (transpose, hflip, vflip), applied in that order, for 0, 1, 2, 3 quarter turns anticlockwise
_QUARTER_TURNS = ((False, False, False), (True, False, True), (False, True, True), (True, True, False))
# a word naming a direction or a side of the image, in any of its forms (leftmost, north-east, westward, …)
_DIRECTION = re.compile(
    r"\b(?:left|right|top|bottom|upper|lower|above|below|horizontal|vertical|upwards?|downwards?"
    r"|(?:counter|anti)?-?clockwise|(?:north|south)(?:-?(?:east|west))?|east|west)(?:most|ern|erly|ly|wards?|s)?\b",
    re.IGNORECASE)
# why a record is not augmented at all, by design (the summary counts these apart from the records held back)
SEVERAL_IMAGES = "with several images (camera views or frames of one scene)"
NO_IMAGE = "without an image"
# why a record is not flipped or turned (`Augmentation.plan`), worded for `Augmentation.summary`
OPTED_OUT = "with meta.augment false"
GENERAL = "from general sources"
NAMES_DIRECTION = "whose text names a direction such as left, top or north"
UNMOVABLE_BOXES = "with boxes that cannot be moved"
STITCHED = "that are stitched six-camera frames"
CAMERA_PICTURE = "that are camera pictures, whose left and right a flip would swap"
_EPS = 1e-3  # px added to zero-width/height boxes (albumentations rejects them); removed after the move


def derive_seed(seed: int, key: Any = None) -> int:
    """A 32-bit seed from `seed` and a key (an int or a tuple of ints such as ``(epoch, index)``)."""
    entropy = [int(seed) & 0xFFFFFFFF]
    if key is not None:
        entropy += [int(k) & 0xFFFFFFFF for k in (key if isinstance(key, (tuple, list)) else (key,))]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _is_human(turn: Mapping) -> bool:
    return turn.get("from") == "human" or turn.get("role") == "user"


def _bare_box(text: str) -> bool:
    """Whether `text` holds a bare ``[[x1, y1, x2, y2], …]`` list (outside ``<box>``) with a box in it."""
    return any(m.group(2) is not None and ONE_BOX.search(m.group(2)) for m in _SPANS.finditer(text))


def _unmovable_markup(text: str) -> bool:
    """Whether `text` holds grounding markup whose coordinates would not move: a ``<quad>`` polygon, or a ``<box>``
    holding numbers that are not ``[x1, y1, x2, y2]`` boxes (three or five values, ``(x, y),(x, y)`` pairs)."""
    return "<quad>" in text or any(m.group(1) is not None and re.search(r"\d", ONE_BOX.sub("", m.group(1)))
                                   for m in _SPANS.finditer(text))


def _loose_coordinates(text: str, human: bool) -> bool:
    """Whether `text` holds coordinates outside the boxes `_rewrite` moves: a single-bracket ``[x1, y1, x2, y2]``
    (the scorers read it as a box) or a DriveLM c-tag point (``<c1,CAM_FRONT,[x,y]>``)."""
    rest = _SPANS.sub(lambda m: "" if m.group(1) is not None or human else m.group(0), text)
    return ONE_BOX.search(rest) is not None or next(iter_ctags(text), None) is not None


def _rewrite(text: str, human: bool, on_box: Callable[[list[float]], str]) -> str:
    """`text` with each box (as :data:`_SPANS` finds them) replaced by ``on_box(grid_values)``."""

    def span(m: re.Match) -> str:
        if m.group(1) is None and not human:
            return m.group(0)  # a bare [[...]] outside a human turn is not a box we own
        return ONE_BOX.sub(lambda b: on_box([float(v) for v in b.groups()]), m.group(0))

    return _SPANS.sub(span, text)


class Augmentation:
    """The callable `build_augmentation` returns; see the module docstring."""

    def __init__(self, flips: bool = True, rot90: bool = True, color_jitter: float = 0.2, seed: int = 0,
                 general_sources: Iterable[str] = ()):
        try:
            ok = not isinstance(color_jitter, (bool, str)) and 0 <= float(color_jitter) <= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DomainError(f"color_jitter must be a number in [0, 1], got {color_jitter!r}")
        import albumentations as A  # noqa: F401  (fail at build time when it is missing)

        self.flips, self.rot90, self.color_jitter, self.seed = bool(flips), bool(rot90), float(color_jitter), int(seed)
        self.general_sources = frozenset(general_sources)
        self._calls = 0

    @property
    def enabled(self) -> bool:
        return self.flips or self.rot90 or self.color_jitter > 0

    def __repr__(self) -> str:
        return (f"Augmentation(flips={self.flips}, rot90={self.rot90}, color_jitter={self.color_jitter}, "
                f"seed={self.seed})")

    def plan(self, record: Any) -> tuple[str, str]:
        """What `__call__` does with `record`: ``("all", "")`` everything configured, ``("colour", why)``
        colour jitter only, ``("none", why)`` nothing; `why` is one of this module's reasons (or "")."""
        what, why, _ = self._plan(record)
        return what, why

    def _plan(self, record: Any) -> tuple[str, str, list[list[float]]]:
        """`plan`, with the grid boxes to move when the answer is "all"."""
        if not self.enabled:
            return "none", "", []
        meta = _get(record, "meta")
        meta = meta if isinstance(meta, Mapping) else {}
        images = _get(record, "images")
        if images is None and isinstance(record, Mapping) and isinstance(record.get("image"), (list, tuple)):
            images = record["image"]  # a converter's multi-image record: "image" is the list of six cameras
        if images is not None and len(images) != 1:
            return "none", SEVERAL_IMAGES if images else NO_IMAGE, []
        if meta.get("augment") is False:
            return "none", OPTED_OUT, []
        forced = meta.get("augment") is True
        if not forced and _get(record, "source") in self.general_sources:
            return "none", GENERAL, []
        if not (self.flips or self.rot90):
            return "all", "", []
        held = (STITCHED if is_stitched_frame(meta, _image_size(record))
                else CAMERA_PICTURE if meta.get("camera") else "")
        if held:  # no flip or turn keeps these true, whatever meta.augment says
            return ("colour" if self.color_jitter > 0 else "none"), held, []
        texts = _texts(record)
        if not forced and any(_DIRECTION.search(text) for _, _, text in texts):
            return ("colour" if self.color_jitter > 0 else "none"), NAMES_DIRECTION, []
        boxes: list[list[float]] = []

        def collect(vals: list[float]) -> str:
            boxes.append(vals)
            return ""

        for _, human, text in texts:
            if _unmovable_markup(text) or (not human and _bare_box(text)) or _loose_coordinates(text, human):
                return "none", UNMOVABLE_BOXES, []  # likely a box in an answer, but not one we can tell from others
            _rewrite(text, human, collect)
        if any(not all(0 <= v <= GRID for v in vals) or vals[2] < vals[0] or vals[3] < vals[1] for vals in boxes):
            return "none", UNMOVABLE_BOXES, []
        return "all", "", boxes

    def summary(self, records: Mapping[str, Sequence[Any]]) -> str:
        """One line for the run's log: the settings, how many of `records` (by source) are augmented and how
        many are held back, and why."""
        ops = [name for name, on in (("flips", self.flips), ("90-degree turns", self.rot90)) if on]
        ops += [f"colour jitter {self.color_jitter:g}"] if self.color_jitter > 0 else []
        counts = Counter(self.plan(r) for rs in records.values() for r in rs)
        line = (f"augment ({', '.join(ops)}): {counts[('all', '')]} of {sum(counts.values())} records "
                f"{'flipped / turned' if self.flips or self.rot90 else 'colour-jittered'}")
        held = [f"{counts[what, why]} {why} ({'colour jitter only' if what == 'colour' else 'untouched'})"
                for why in (NAMES_DIRECTION, STITCHED, CAMERA_PICTURE, GENERAL, OPTED_OUT, UNMOVABLE_BOXES)
                for what in ("colour", "none") if counts[what, why]]
        # not held back but out of scope: the augmentation transforms a record's one image
        unaugmented = [f"{counts['none', why]} {why}" for why in (SEVERAL_IMAGES, NO_IMAGE) if counts["none", why]]
        return (line + ("; held back: " + ", ".join(held) if held else "")
                + ("; not augmented (one-image records only): " + ", ".join(unaugmented) if unaugmented else ""))

    def _draw(self, key: Any) -> tuple[tuple[bool, bool, bool], int]:
        """The symmetry ``(transpose, hflip, vflip)`` and the colour jitter's seed for `key`.

        Drawn here with numpy rather than by albumentations' ``p=0.5`` transforms: ``Compose(seed=s)`` seeds
        every transform alike, so HorizontalFlip and VerticalFlip drew the same number and never flipped
        one without the other (no mirror image was ever made)."""
        rng = np.random.default_rng(derive_seed(self.seed, key))
        bits = tuple(bool(b) for b in rng.integers(0, 2, size=3))
        turn = _QUARTER_TURNS[int(rng.integers(4))]
        jitter_seed = int(rng.integers(2**32))
        if self.flips and self.rot90:  # all 8 symmetries of the square, equally likely
            return bits, jitter_seed
        if self.flips:  # identity, hflip, vflip, half turn
            return (False, bits[1], bits[2]), jitter_seed
        if self.rot90:
            return turn, jitter_seed
        return (False, False, False), jitter_seed

    def _compose(self, symmetry: tuple[bool, bool, bool], seed: int):
        import albumentations as A

        ops = [op(p=1.0) for op, on in zip((A.Transpose, A.HorizontalFlip, A.VerticalFlip), symmetry) if on]
        if self.color_jitter > 0:
            j = self.color_jitter
            ops.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
        params = A.BboxParams(format="pascal_voc", label_fields=["box_ids"], clip=True) if any(symmetry) else None
        return A.Compose(ops, bbox_params=params, seed=seed)

    def __call__(self, image, record: Any, key: Any = None):
        """Augment one image and move the boxes of `record` with it; returns ``(image, record)``.

        `key` (e.g. ``(epoch, index)``) makes the draw a pure function of ``(seed, key)``; without it
        successive calls draw from a counter.
        """
        from PIL import Image

        what, _, grid_boxes = self._plan(record)
        if what == "none":
            return image, record
        if key is None:
            key = (0xC0FFEE, self._calls)
            self._calls += 1
        width, height = image.size
        pixel_boxes = []
        for vals in grid_boxes:
            b = list(from_grid(vals, width, height))
            for lo, hi, size in ((0, 2, width), (1, 3, height)):
                if b[hi] - b[lo] <= 0:
                    if b[hi] + _EPS <= size:
                        b[hi] += _EPS
                    else:
                        b[lo] -= _EPS
            pixel_boxes.append(b)

        array = np.asarray(image.convert("RGB"))
        symmetry, jitter_seed = self._draw(key)
        if what == "colour":
            symmetry = (False, False, False)
        if not any(symmetry):  # colour only (or nothing): the boxes stay where they are
            if self.color_jitter == 0:
                return image, record
            out = self._compose(symmetry, jitter_seed)(image=array)
            return Image.fromarray(out["image"]), record
        out = self._compose(symmetry, jitter_seed)(
            image=array, bboxes=np.asarray(pixel_boxes, dtype=np.float64).reshape(-1, 4),
            box_ids=list(range(len(pixel_boxes))))
        new_image = Image.fromarray(out["image"])
        new_w, new_h = new_image.size
        moved: dict[int, list[int]] = {}
        for box, idx in zip(out["bboxes"], out["box_ids"]):
            g = to_grid([float(v) for v in box[:4]], new_w, new_h)
            for lo, hi in ((0, 2), (1, 3)):  # a zero-extent grid side stays zero (to_grid widens thin sides)
                if box[hi] - box[lo] <= 2 * _EPS:
                    g[lo] = g[hi] = round((box[lo] + box[hi]) / 2 / (new_w if lo == 0 else new_h) * GRID)
            moved[int(idx)] = g
        if len(moved) != len(pixel_boxes):
            return image, record  # a box was lost (cannot happen for flips/turns); keep the sample intact

        counter = iter(range(len(pixel_boxes)))

        def render(_vals: list[float]) -> str:
            g = moved[next(counter)]
            return f"[{g[0]}, {g[1]}, {g[2]}, {g[3]}]"

        rewritten = {where: _rewrite(text, human, render) for where, human, text in _texts(record)}
        return new_image, _replace(record, rewritten, (new_w, new_h))


def build_augmentation(flips: bool = True, rot90: bool = True, color_jitter: float = 0.2, seed: int = 0,
                       general_sources: Iterable[str] = ()) -> Augmentation:
    """A callable ``(image: PIL, record, key=None) -> (PIL, record)`` (see the module docstring); records whose
    ``source`` is one of `general_sources` are left as they are."""
    return Augmentation(flips=flips, rot90=rot90, color_jitter=color_jitter, seed=seed, general_sources=general_sources)


# ------------------------------------------------------------------------------------------ records
def _get(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def _image_size(record: Any) -> tuple[int, int] | None:
    """The (W, H) of the record's one image as the record gives it (``image_sizes`` or a converter's ``width`` /
    ``height``), else None."""
    sizes = _get(record, "image_sizes")
    if isinstance(sizes, (list, tuple)) and len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        return tuple(sizes[0])
    width, height = _get(record, "width"), _get(record, "height")
    return (width, height) if isinstance(width, int) and isinstance(height, int) else None


def _texts(record: Any) -> list[tuple[Any, bool, str]]:
    """``(where, is_human, text)`` for every turn value, the answer and the options, in a fixed order."""
    out: list[tuple[Any, bool, str]] = []
    for k, turn in enumerate(_get(record, "conversations") or []):
        value = turn.get("value", turn.get("content"))
        if isinstance(value, str):
            out.append((k, _is_human(turn), value))
    answer = _get(record, "answer")
    if isinstance(answer, str):
        out.append(("answer", False, answer))
    options = _get(record, "options")
    if isinstance(options, (list, tuple)):  # choices are part of the question
        out += [(("option", k), True, o) for k, o in enumerate(options) if isinstance(o, str)]
    return out


def _replace(record: Any, rewritten: dict[Any, str], size: tuple[int, int]) -> Any:
    turns = []
    for k, turn in enumerate(_get(record, "conversations") or []):
        if k in rewritten:
            turn = dict(turn)
            turn["value" if "value" in turn else "content"] = rewritten[k]
        turns.append(turn)
    changes: dict[str, Any] = {"conversations": turns}
    if "answer" in rewritten:
        changes["answer"] = rewritten["answer"]
    options = _get(record, "options")
    if any(("option", k) in rewritten for k in range(len(options or ()))):
        changes["options"] = [rewritten.get(("option", k), o) for k, o in enumerate(options)]
    if isinstance(record, Mapping):
        if "width" in record and "height" in record:  # a converter's record: a quarter turn swaps them
            changes["width"], changes["height"] = size
        return {**record, **changes}
    if dataclasses.is_dataclass(record):
        if hasattr(record, "image_sizes") and record.image_sizes is not None and len(record.image_sizes) == 1:
            changes["image_sizes"] = [size]
        return dataclasses.replace(record, **changes)
    raise TypeError(f"cannot augment a record of type {type(record).__name__}")
