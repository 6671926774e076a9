"""DriveLM-nuScenes v1.1 -> InternVL chat JSONL, on the stitched six-view image or as six camera images.

**Input** (``domains.md`` §1.1): ``v1_1_train_nus.json`` / ``v1_1_val_nus_q_only.json`` (or a folder holding
them)::

    {scene_token: {"scene_description": str, "key_frames": {sample_token: {
        "key_object_infos": {...}, "image_paths": {"CAM_FRONT": "../nuscenes/samples/CAM_FRONT/...jpg", ...},
        "QA": {"perception": [{"Q", "A", "C", "con_up", "con_down", "cluster", "layer"}], "prediction": [...],
               "planning": [...], "behavior": [...]}}}}}

Image paths are resolved relative to the JSON's folder (they may reach one level up, the official
``../nuscenes/samples/...`` form, so the root is the JSON folder's parent) or, with ``nuscenes_root``, as
``nuscenes_root/samples/CAM_X/<file>`` (the part of the path from ``samples/`` on). A path that leaves its root
-- by ``..`` steps, an absolute path or a symlink pointing outside -- is skipped as ``path escapes data root``
(:func:`domains.files.inside_root`; an absolute path is refused as written, never read under the JSON folder); a
nuScenes folder symlinked next to the JSON, or absolute ``image_paths``, therefore need
``nuscenes_root``: its real location, trusted as given (``samples/`` itself may be a link there).

**View modes** (``view_mode``):

* ``stitched`` (Mini-InternVL): the six cameras stitched once per frame into a 2688×896 PNG
  (``images/<dataset>/stitch/<scene>_<frame>.png``, written atomically and reused; ``image_format=jpeg`` writes
  ``.jpg`` instead, see :class:`StitchEncoding`); the human turn starts with
  ``layout.STITCHED_PREFIX``; c-tags ``<c1,CAM_BACK,1088.3,497.5>`` become ``<c1,CAM_BACK,[x,y]>`` on the
  stitched image's 0-1000 grid (``layout.to_stitched``); traffic-element boxes ``(traffic light, green, x1, y1,
  x2, y2)`` (CAM_FRONT pixels) become ``(traffic light, green, [x1,y1,x2,y2])`` on the same grid
  (``layout.rewrite_traffic_boxes``).
* ``multi``: the six camera images in the named ``camera_order`` (linked or copied to
  ``images/nuscenes/samples/CAM_X/`` under their file name; a frame whose camera file shares its name with a
  different file linked before is skipped as ``camera name clash``), introduced by ``layout.multi_view_prefix``;
  c-tags on the named camera's own grid (``layout.to_camera_grid``), traffic-element boxes on CAM_FRONT's grid.

**Records**: ``task: "drivelm"``, ``answer`` in the sample's coordinates, ``meta`` with ``scene``, ``frame``,
``qa_id`` (``f"{scene}_{frame}_{i}"``, i over perception + prediction + planning + behavior), ``category``,
``drivelm_tag`` (the QA's own ``tag``, a list where it gives several, else :func:`drivelm_tag`), ``view_mode``,
``camera_order``, ``answer_pixels`` and ``question_pixels`` (the DriveLM texts, c-tags and boxes in camera pixels),
``split``, ``source``. Questions that list
lettered options (``... Please select the correct answer from the following options: A. ... D. ...``) keep
them in ``options``; ``mc=True`` turns "What is the moving status of object ..." and "Predict the behavior ..."
into DriveLM's 4-way multiple choice (``convert_data.py``) with distractors drawn deterministically per QA id.

**Splits**, by whole tokens of the file name (split on ``_ - .``): a ``q_only`` or ``test`` file
(``v1_1_val_nus_q_only.json``, no answers) -> ``test``, with empty answers (never used for training); a
``val`` / ``validation`` file -> ``val``; any other (``v1_1_train_nus.json``) -> ``train`` (``val_fraction``
moves that share of the training files' scenes, drawn over all of them at once, to ``val``; a scene whose files
name two splits is warned about). That ``val`` is not DriveLM's official test subset (whose answers are not
public): its scores are not comparable with the challenge's published numbers. The report names each file's
split. Output ``out/<dataset>_<split>.jsonl``; ``dataset`` defaults to ``drivelm`` (stitched) / ``drivelm_multi``.

**Bad input** is skipped and counted: a file that is not JSON or not the layout, a malformed scene / frame /
QA, a key frame without any QA (``frame without QA``: no image is written for it), a missing or unreadable camera
image, a camera picture not of the 1600x900 frame's shape (``camera size mismatch``: the c-tags are measured in
that frame), an image path naming another camera (folder ``CAM_X/`` or ``…__CAM_X__…`` file name: ``camera
mismatch``), a sample token unknown to the nuScenes tables (with ``dataroot``), a c-tag naming an unknown camera or
lying outside the image, an answer letter past the question's lettered options (``answer not an option``), a
frame already read from another file (``duplicate frame``: its QA ids would be written
twice, maybe in two splits), a training QA repeating an earlier QA of its frame word for word (``duplicate QA``).
A scene in DriveLM's early v1.0 layout (``key_frame`` -> ``Perception`` / ``Prediction and Planning`` q/a lists) is
skipped as ``DriveLM v1.0 layout``. A repeated question with another answer is written with a ``conflicting answers``
warning, a frame's QA list under a key other than the four categories with an ``unknown QA category`` warning (its
questions have no official id and are not converted). Re-runs reuse images and rewrite nothing unchanged.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from domains.base import ConvertReport, DomainError, SkipInput
from domains.driving import layout
from domains.driving.demo import camera_from_name
from domains.driving.layout import (
    CAMERAS,
    STITCH_ORDER,
    STITCHED_PREFIX,
    STITCHED_SIZE,
    VIEW_MODES,
    CTagError,
    iter_ctags,
    multi_view_prefix,
    rewrite_ctags,
    rewrite_traffic_boxes,
    stitch_cameras,
    to_camera_grid,
    to_stitched,
)
from domains.driving.nuscenes import hash_split
from domains.files import (
    KEY_CHUNK,
    check_image,
    inside_root,
    is_fresh,
    link_or_copy,
    safe_name,
    source_stamp,
    write_output,
    write_splits,
)
from domains.parallel import Prefetch, check_workers
from model.progress import Progress, progress_bar
from model.tiling import ImageLoadError, load_image

__all__ = [
    "BEHAVIOR_CHOICES",
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_PNG_LEVEL",
    "IMAGE_FORMATS",
    "MC_PREFIX",
    "MOVING_STATUS_CHOICES",
    "QA_CATEGORIES",
    "TAGS",
    "StitchEncoding",
    "choice_question",
    "convert_drivelm",
    "drivelm_tag",
    "is_behavior_question",
    "is_moving_status_question",
    "parse_options",
]

QA_CATEGORIES = ("perception", "prediction", "planning", "behavior")
TAGS = {0: "accuracy", 1: "chatgpt", 2: "language", 3: "match"}
MC_PREFIX = " Please select the correct answer from the following options:"

# DriveLM challenge/convert_data.py: the answer sets the 4-way multiple choice draws its distractors from
MOVING_STATUS_CHOICES = ("Going ahead.", "Turn right.", "Turn left.", "Stopped.", "Back up.", "Reverse parking.",
                         "Drive backward.")
_STEER = ("is going straight", "is slightly steering to the left", "is steering to the left",
          "is slightly steering to the right", "is steering to the right")
_SPEED = ("driving slowly", "driving with normal speed", "driving fast", "driving very fast")
BEHAVIOR_CHOICES = tuple(f"The ego vehicle {s}. The ego vehicle is {v}." for s in _STEER for v in _SPEED) + (
    "The ego vehicle is going straight. The ego vehicle is not moving.",)

_YES_NO = re.compile(r"^\s*(yes|no)\b", re.IGNORECASE)
_OPTION = re.compile(r"(?:^|\s)([A-Z])\.\s+(.*?)(?=\s+[A-Z]\.\s|\s*$)", re.DOTALL)


class _Skip(Exception):
    def __init__(self, reason: str, where: str, detail: str):
        super().__init__(detail)
        self.reason, self.where, self.detail = reason, where, detail


# --------------------------------------------------------------------------------------------- QA rules
def is_moving_status_question(question: str) -> bool:
    return "what is the moving status of object" in question.lower()


def is_behavior_question(question: str) -> bool:
    return "predict the behavior" in question.lower()


def drivelm_tag(category: str, question: str, answer: str | None) -> int:
    """The DriveLM metric tag of a QA (``convert_data.py`` / ``extract_data.py`` rules, applied to every QA).

    * behavior -> 0 (accuracy); perception "moving status" -> 0, other perception -> 2 (language);
    * prediction whose answer names objects by c-tag (the graph question) -> 3 (match), a yes/no answer -> 0,
      other prediction -> 1 (LLM judge);
    * planning -> 1 (LLM judge).
    """
    if category == "behavior":
        return 0
    if category == "perception":
        return 0 if is_moving_status_question(question) else 2
    if category == "prediction":
        if answer and next(iter_ctags(answer), None) is not None:
            return 3
        if answer and _YES_NO.match(answer):
            return 0
        return 1
    return 1


def parse_options(question: str) -> list[str] | None:
    """The option texts after ``Please select the correct answer from the following options:``, else None."""
    k = question.lower().rfind(MC_PREFIX.strip().lower())
    if k < 0:
        return None
    tail = question[k + len(MC_PREFIX.strip()):]
    found = _OPTION.findall(tail)
    opts = [text.strip() for letter, text in found]
    if len(opts) < 2 or [letter for letter, _ in found] != [chr(65 + i) for i in range(len(found))]:
        return None
    return opts


def choice_question(question: str, answer: str, choices: Sequence[str], key: str) -> tuple[str, str, list[str]]:
    """DriveLM's 4-way multiple choice: (question with lettered options, answer letter, the four options).

    Three distractors come from `choices` without the answer -- nor a choice differing from it only in case,
    spacing or a final period (``stopped`` next to ``Stopped.`` would make two right options); the order is drawn
    from a generator seeded by `key` (the QA id), so conversion is deterministic.
    """
    def same(text: str) -> str:
        return " ".join(text.split()).rstrip(".").casefold()

    rng = random.Random(int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:16], 16))
    pool = [c for c in choices if same(c) != same(answer)]
    options = rng.sample(pool, 3)
    options.insert(rng.randrange(4), answer)
    listed = " ".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))
    return f"{question}{MC_PREFIX} {listed}", chr(65 + options.index(answer)), options


# --------------------------------------------------------------------------------------------- input
def _json_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if src.is_dir():
        files = sorted(p for p in src.glob("*.json") if p.is_file())
        if files:
            return files
    raise DomainError(f"{src}: expected a DriveLM JSON file or a folder holding v1_1_train_nus.json / "
                     "v1_1_val_nus_q_only.json")


def _split_of_file(path: Path) -> str:
    """The split a DriveLM file's name gives, by whole name tokens (``drivelm_nus_latest.json`` is no test file):
    ``test`` for a ``test`` or ``q_only`` token (``v1_1_val_nus_q_only.json``, ``test_eval.json``), ``val`` for
    ``val`` / ``validation``, else ``train``."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", path.name.lower()) if t]
    if "test" in tokens or any(pair == ("q", "only") for pair in zip(tokens, tokens[1:])):
        return "test"
    return "val" if {"val", "validation"} & set(tokens) else "train"


def _resolve_image(raw: Any, camera: str, json_dir: Path, nuscenes_root: Path | None) -> tuple[Path, str]:
    """(source path, path under out) of one ``image_paths`` entry, through :func:`~domains.files.inside_root`:
    with `nuscenes_root` the part from ``samples/`` on must stay in ``nuscenes_root/samples``, else the path as
    written must stay in the JSON folder's parent (where ``../nuscenes`` points)."""
    if not isinstance(raw, str) or not raw.strip():
        raise _Skip("malformed frame", camera, f"image path of {camera} is {raw!r}")
    text = raw.strip().replace("\\", "/")
    try:
        if nuscenes_root is not None:
            parts = PurePosixPath(text).parts
            if "samples" not in parts:
                raise _Skip("malformed frame", camera, f"{raw!r}: no samples/ folder in the path")
            tail = parts[len(parts) - parts[::-1].index("samples"):]
            path = inside_root(nuscenes_root / "samples", PurePosixPath(*tail).as_posix() if tail else "")
        else:  # an absolute path glued under the JSON's folder would read as a missing file there: refused whole
            absolute = PurePosixPath(text).is_absolute() or bool(PureWindowsPath(text).drive)
            if json_dir.name in ("", ".."):  # "." or ".." (the JSON named from below): no folder name to glue under
                json_dir = Path(os.path.abspath(json_dir))
            path = inside_root(json_dir.parent, text if absolute else f"{json_dir.name}/{text}")
    except SkipInput as exc:
        hint = "" if nuscenes_root is not None else (
            "; if the nuScenes folder is yours (a symlink, absolute image_paths), pass "
            "--option nuscenes_root=<folder holding samples/>")
        raise _Skip(exc.reason, camera, f"{exc.detail}{hint}") from None
    # another camera's picture in this camera's place would put every c-tag of the frame on the wrong view
    named = {c for c in (camera_from_name(path.name), path.parent.name) if c in CAMERAS}
    if named - {camera}:
        raise _Skip("camera mismatch", camera, f"image_paths[{camera!r}] is {raw!r}, a picture of "
                                               f"{', '.join(sorted(named - {camera}))}")
    return path, f"images/nuscenes/samples/{camera}/{path.name}"


def _load_sample_tokens(dataroot: str | Path, version: str | None) -> set[str]:
    from domains.driving.nuscenes import open_nuscenes

    nusc = open_nuscenes(dataroot, version)
    return {s["token"] for s in nusc.sample}


# --------------------------------------------------------------------------------------------- converter
IMAGE_FORMATS = ("png", "jpeg")
DEFAULT_PNG_LEVEL = 1  # lossless like every level; 6 is slower for smaller files (bench/bench_drivelm_convert.py)
DEFAULT_JPEG_QUALITY = 95


class StitchEncoding:
    """How stitched frames are written: ``png`` at zlib level `png_level` (0-9; lossless at every level, so the
    decoded pixels -- and any evaluation -- are the same whatever the level) or ``jpeg`` at `jpeg_quality`
    (1-95, 4:4:4 chroma so the magenta camera labels stay sharp; lossy). The JPEG's comment holds its quality, so
    a re-run with another quality rewrites the file; a PNG of another level is reused (same pixels)."""

    def __init__(self, image_format: str = "png", png_level: int | None = None, jpeg_quality: int | None = None):
        fmt = str(image_format).lower()
        fmt = "jpeg" if fmt == "jpg" else fmt
        if fmt not in IMAGE_FORMATS:
            raise DomainError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        if fmt == "png" and jpeg_quality is not None:
            raise DomainError("jpeg_quality applies to image_format=jpeg only (PNG is lossless); drop it or add "
                              "image_format=jpeg")
        if fmt == "jpeg" and png_level is not None:
            raise DomainError("png_level applies to image_format=png only")
        self.format = fmt
        self.png_level = _whole(png_level, "png_level", 0, 9) if png_level is not None else DEFAULT_PNG_LEVEL
        self.jpeg_quality = (_whole(jpeg_quality, "jpeg_quality", 1, 95) if jpeg_quality is not None
                             else DEFAULT_JPEG_QUALITY)
        self.suffix = ".png" if fmt == "png" else ".jpg"
        self.key = f"pocket-adapt stitch jpeg quality={self.jpeg_quality} subsampling=4:4:4".encode()

    def save(self, image: Image.Image, f, stamp: str) -> None:
        """Encode `image` into `f`, recording `stamp` (:func:`~domains.files.source_stamp` of the six cameras)."""
        if self.format == "png":
            info = PngInfo()
            info.add_text(KEY_CHUNK, stamp)
            image.save(f, format="PNG", compress_level=self.png_level, pnginfo=info)
        else:
            image.save(f, format="JPEG", quality=self.jpeg_quality, subsampling=0, comment=self._comment(stamp))

    def _comment(self, stamp: str) -> bytes:
        return self.key + b" sources=" + stamp.encode()

    def made(self, path: Path, stamp: str) -> bool:
        """True when `path` is a whole stitched frame this encoding would write (PNG: any level) from the cameras
        `stamp` describes (a camera file replaced since, by a newer or an older one, makes it stale)."""
        with Image.open(path) as im:
            if im.size != STITCHED_SIZE:
                return False
            if self.format == "jpeg":
                return im.format == "JPEG" and im.info.get("comment") == self._comment(stamp)
            return im.format == "PNG" and im.info.get(KEY_CHUNK) == stamp


def _whole(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and lo <= float(value) <= hi
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DomainError(f"{name} must be a whole number {lo}-{hi}, got {value!r}")
    return int(float(value))


class _Frames:
    """Per-run cache of the images written for each frame (stitched PNG or linked camera files)."""

    def __init__(self, out: Path, dataset: str, view_mode: str, order: tuple[str, ...], link: str,
                 encoding: StitchEncoding | None = None):
        self.out, self.dataset, self.view_mode, self.order, self.link = out, dataset, view_mode, order, link
        self.encoding = encoding or StitchEncoding()
        self.done: dict[tuple[str, str], tuple[list[str], list[tuple[int, int]]] | _Skip] = {}
        self.pf: Prefetch | None = None  # frames stitched or cameras decoded ahead in worker processes (workers > 1)
        self.linked: dict[str, Path] = {}  # multi mode: output path -> the camera file linked there this run

    def plan(self, scene: str, frame: str, paths: dict[str, tuple[Path, str]]) -> list[tuple]:
        """The :class:`~domains.parallel.Prefetch` steps of a frame (see :meth:`_write`): stitching it, or
        decoding each camera file (multi)."""
        if self.view_mode != "stitched":
            return [(paths[cam][0], check_image, (paths[cam][0],)) for cam in self.order]
        dst = self.out / f"images/{self.dataset}/stitch/{_stitch_name(scene, frame)}{self.encoding.suffix}"
        sources = tuple(paths[c][0] for c in STITCH_ORDER)
        try:
            stamp = source_stamp(sources)
        except OSError:
            return []  # a missing camera: _write says which
        return [(dst, _stitch_step, (sources, self.encoding, stamp))]

    def images(self, scene: str, frame: str, paths: dict[str, tuple[Path, str]]):
        key = (scene, frame)
        if key not in self.done:
            try:
                self.done[key] = self._write(scene, frame, paths)
            except _Skip as exc:
                self.done[key] = exc
        got = self.done[key]
        if isinstance(got, _Skip):
            raise got
        return got

    def _write(self, scene: str, frame: str, paths: dict[str, tuple[Path, str]]):
        for cam in STITCH_ORDER:
            src = paths[cam][0]
            if not src.is_file():
                raise _Skip("missing camera image", str(src), f"{src}: no such file ({cam} of frame {frame})")
        if self.view_mode == "stitched":
            enc = self.encoding
            rel = f"images/{self.dataset}/stitch/{_stitch_name(scene, frame)}{enc.suffix}"
            dst = self.out / rel
            sources = [paths[c][0] for c in STITCH_ORDER]
            stamp = source_stamp(sources)
            try:
                if is_fresh(dst, sources) and enc.made(dst, stamp):
                    return [rel], [STITCHED_SIZE]
            except (OSError, UnidentifiedImageError):
                pass  # damaged output: write it again
            got = (self.pf or Prefetch()).get(dst, _stitch_step, tuple(sources), enc, stamp)
            if isinstance(got, tuple):  # (index of the camera, skip reason, why)
                raise _Skip(got[1], str(sources[got[0]]), f"{got[2]} ({STITCH_ORDER[got[0]]} of frame {frame})")
            write_output(dst, got, sources)
            return [rel], [STITCHED_SIZE]
        sizes = []
        for cam in self.order:  # every camera checked before any is linked: a skipped frame leaves no file
            src, where = paths[cam][0], f"({cam} of frame {frame})"
            try:
                # decoded, as stitching does: a truncated camera file is refused
                sizes.append((self.pf or Prefetch()).get(src, check_image, src))
            except SkipInput as exc:
                raise _Skip("unreadable camera image", str(src), f"{exc.detail} {where}") from exc
            except OSError as exc:
                raise _Skip("unreadable camera image", str(src), f"{src}: {exc} {where}") from exc
            off = _off_frame(src, sizes[-1])
            if off:
                raise _Skip("camera size mismatch", str(src), f"{off} {where}")
            # the output keeps only the file name: another file of that name (another folder) would overwrite it
            first = self.linked.get(paths[cam][1])
            if first is not None and not _same_file(first, src):
                raise _Skip("camera name clash", f"frame {frame}",
                            f"{src} ({cam} of frame {frame}) and {first}, linked earlier, are different files "
                            f"with one name, and both would be {paths[cam][1]}")
        for cam in self.order:
            src, rel = paths[cam]
            try:
                link_or_copy(src, self.out / rel, self.link)
            except OSError as exc:
                raise _Skip("unreadable camera image", str(src), f"{src}: {exc} ({cam} of frame {frame})") from exc
            self.linked.setdefault(rel, src)
        return [paths[cam][1] for cam in self.order], sizes


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one file, or two of the same bytes (one nuScenes picture in two copies)."""
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _stitch_name(scene: str, frame: str) -> str:
    """The stitched frame's file stem: Mini-InternVL's ``{scene}_{frame}`` for nuScenes' hex tokens; any other pair
    (``_`` or characters unsafe in a file name) gets a hash of it (:func:`~domains.files.safe_name`), as ``a_b`` +
    ``c`` and ``a`` + ``b_c`` would share one file and a frame's records show the other frame's cameras."""
    name = f"{scene}_{frame}"
    if "_" not in scene + frame and safe_name(name) == name:
        return name
    return safe_name(json.dumps([scene, frame]))


def _off_frame(path: Path, size: tuple[int, int]) -> str | None:
    """Why a camera picture of `size` cannot carry DriveLM's c-tags, else None. They are measured in the 1600x900
    frame; a picture of another shape (a padded 1600x928) is stretched to the cell, moving every point off its
    object, while one of the same shape at another scale (800x450) maps the same."""
    w, h = size
    cw, ch = layout.CAMERA_SIZE
    if abs(w * ch - h * cw) <= 0.01 * h * cw:
        return None
    return (f"{path}: {w}x{h}, not the shape of the {cw}x{ch} camera frame DriveLM's c-tags are measured in "
            "(its points would land off their objects)")


def _stitch_step(sources: tuple[Path, ...], enc: StitchEncoding, stamp: str) -> bytes | tuple[int, str, str]:
    """The expensive, pure part of a stitched frame (a worker's with ``workers > 1``): read the six cameras
    (``STITCH_ORDER``), stitch, encode with `enc`; the file's bytes, or (index of a camera, skip reason, why)."""
    import io

    cams = {}
    for k, cam in enumerate(STITCH_ORDER):
        try:
            cams[cam] = load_image(sources[k])  # the one image reader (EXIF, wide samples, pixel cap)
        except ImageLoadError as exc:
            return k, "unreadable camera image", str(exc)
        off = _off_frame(sources[k], cams[cam].size)
        if off:
            return k, "camera size mismatch", off
    buf = io.BytesIO()
    enc.save(stitch_cameras(cams), buf, stamp)
    return buf.getvalue()


def convert_drivelm(src: str | Path, out: str | Path, view_mode: str = "stitched", camera_order: str | None = None,
                    nuscenes_root: str | Path | None = None, dataroot: str | Path | None = None,
                    version: str | None = None, mc: bool = False, val_fraction: float = 0.0,
                    dataset: str | None = None, link: str = "hardlink", image_format: str = "png",
                    png_level: int | None = None, jpeg_quality: int | None = None,
                    progress: Progress = True, workers: int = 1) -> ConvertReport:
    """DriveLM-nuScenes v1.1 JSON -> ``task: "drivelm"`` records (see the module notes).

    `src`: ``v1_1_train_nus.json`` / ``v1_1_val_nus_q_only.json`` or the folder holding them.

    `view_mode`: ``stitched`` (one 2688x896 image per frame, Mini-InternVL) or ``multi`` (the six camera images).
    `camera_order`: the image order of multi mode: ``stitch``, ``drivelm`` or ``nuscenes`` (default ``stitch``;
    stitched mode refuses any other, its grid being fixed).
    `nuscenes_root`: the nuScenes folder holding ``samples/CAM_*/``. DriveLM's ``image_paths`` read
    ``../nuscenes/samples/CAM_FRONT/<file>.jpg``; without this option that path is taken relative to the JSON's
    folder (so a ``nuscenes`` folder next to it, and it must not be a symlink leading elsewhere); with it, the
    part from ``samples/`` on is read under ``nuscenes_root`` (``<nuscenes_root>/samples/CAM_FRONT/<file>.jpg``),
    wherever the nuScenes data lives (a folder without ``samples/`` is refused before anything is converted).
    `dataroot`: a nuScenes folder whose tables the sample tokens are checked against (unknown ones are skipped).
    `version`: its table version (detected when not given).
    `mc`: DriveLM's test-style 4-way multiple choice for moving-status and behavior questions.
    `val_fraction`: share of the training files' scenes put in ``val`` (by a hash of the scene token). This ``val`` is
    drawn from DriveLM's *training* scenes, not the official test questions (``v1_1_val_nus_q_only.json`` has no
    answers): scores on it are not comparable with the challenge's published test numbers. `dataset`:
    output name (default ``drivelm`` / ``drivelm_multi``). `link`: ``hardlink`` or ``copy`` for the camera images
    of multi mode. `image_format`: stitched frames as ``png`` (lossless: the default, so training and evaluation
    see exactly the stitched pixels) or ``jpeg`` (faster to write, several times smaller on real camera pictures,
    lossy: see `jpeg_quality`; figures in BENCHMARKS.md, ``python bench/bench_drivelm_convert.py --write``).
    `png_level`: zlib level 0-9 of the PNGs (default 1; every level decodes to the same pixels, higher levels only
    make smaller files more slowly). `jpeg_quality`: 1-95 (default 95, 4:4:4 chroma).
    `progress`: show a progress bar. `workers`: processes reading, stitching and encoding the frames of stitched
    mode, or decoding each camera file of multi mode before it is linked (a truncated camera JPEG is skipped in
    both modes) (:mod:`domains.parallel`; output byte-identical to 1).
    """
    workers = check_workers(workers)
    if view_mode not in VIEW_MODES:
        raise DomainError(f"view_mode must be 'stitched' or 'multi', got {view_mode!r}")
    src, out = Path(src), Path(out)
    if view_mode == "stitched" and camera_order not in (None, "stitch"):
        raise DomainError(f"camera_order applies to view_mode=multi; the stitched grid's order is fixed "
                          f"({', '.join(STITCH_ORDER)}), got camera_order={camera_order!r}")
    order_name = "stitch" if view_mode == "stitched" else (camera_order or "stitch")
    order = layout.camera_order(order_name)
    dataset = dataset or ("drivelm" if view_mode == "stitched" else "drivelm_multi")
    root = Path(nuscenes_root) if nuscenes_root is not None else None
    if root is not None and not root.is_dir():
        raise DomainError(f"nuscenes_root {root} is not a folder")
    if root is not None and not (root / "samples").is_dir():  # every image is read under it: none could be
        inside = any((root / cam).is_dir() for cam in STITCH_ORDER)
        raise DomainError(f"nuscenes_root {root} has no samples/ folder; give the folder holding samples/CAM_*/"
                          + (f" (this one holds the CAM_* folders: its parent, {root.parent})" if inside else ""))
    known_samples = _load_sample_tokens(dataroot, version) if dataroot is not None else None
    if view_mode == "stitched":
        prefix, convert = STITCHED_PREFIX, to_stitched
    else:
        prefix, convert = multi_view_prefix(order), to_camera_grid
    # camera files outside src are named <nuscenes_root>/samples/... or, in the default layout (image_paths read
    # from the JSON folder's parent), ../nuscenes/samples/... as image_paths write them: not by a full path
    data_root = Path(os.path.abspath(src if src.is_dir() else src.parent)).parent
    labels = ({str(root): "<nuscenes_root>"} if root is not None else
              {str(data_root): ".."} if data_root.parent != data_root else {})
    report = ConvertReport(dataset=dataset, source=src, out=out, labels=labels)
    encoding = StitchEncoding(image_format, png_level, jpeg_quality)
    if view_mode != "stitched" and (encoding.format != "png" or png_level is not None or jpeg_quality is not None):
        raise DomainError("image_format, png_level and jpeg_quality apply to view_mode=stitched (multi mode links "
                          "the camera JPEGs as they are)")
    frames = _Frames(out, dataset, view_mode, order, link, encoding)
    splits: dict[str, list[dict]] = {}

    def plan():  # every stitched frame, in the loop's order (a superset of those converted)
        for path in _json_files(src):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            for scene, body in data.items() if isinstance(data, dict) else ():
                frames_ = body.get("key_frames") if isinstance(body, dict) else None
                for frame, fbody in frames_.items() if isinstance(frames_, dict) else ():
                    try:
                        qas, paths = _frame_parts(fbody, path.parent, root, "")
                        if qas:
                            yield from frames.plan(scene, frame, paths)
                    except (_Skip, SkipInput):
                        continue

    with Prefetch(workers, plan) as pf:
        frames.pf = pf
        return _convert_frames(src, out, dataset, report, frames, splits, root, known_samples, dataroot, val_fraction,
                               mc, prefix, convert, view_mode, order_name, progress)


def _noting_repeats(repeated: list[str]):
    """A ``json.loads`` object hook that builds each object as usual and appends to `repeated` every key an object
    holds twice."""
    def build(pairs: list[tuple[str, Any]]) -> dict:
        built = dict(pairs)
        if len(built) < len(pairs):
            counts = Counter(k for k, _ in pairs)
            repeated.extend(k for k, n in counts.items() if n > 1)
        return built

    return build


def _convert_frames(src, out, dataset, report, frames, splits, root, known_samples, dataroot, val_fraction, mc, prefix,
                    convert, view_mode, order_name, progress) -> ConvertReport:
    """The serial loop of :func:`convert_drivelm`."""
    seen_frames: dict[tuple[str, str], str] = {}  # (scene, frame) -> the file it was first read from
    loaded: list[tuple[Path, str, dict]] = []
    for path in _json_files(src):
        repeated: list[str] = []
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_noting_repeats(repeated))
            if not isinstance(data, dict):
                raise TypeError(f"top level is a {type(data).__name__}, expected {{scene_token: scene}}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            report.skip(path, "malformed JSON", f"{path}: {type(exc).__name__}: {exc}")
            continue
        for key in repeated:  # json keeps a repeated key's last value: the earlier ones are gone unseen
            report.warn(path, "repeated key", f"{path}: key {key!r} appears more than once in one object (a scene or "
                                              "key frame pasted twice?); only its last copy is read")
        loaded.append((path, _split_of_file(path), data))
    # val_fraction draws over the scenes of every training file at once: drawn per file, a scene in two files
    # (train_sample.json next to the full set) could land in train in one and in val in the other
    train_scenes = {s: s for path, file_split, data in loaded if file_split == "train" for s in data
                    if not _half_pair(s)}  # (skipped below as a malformed scene)
    drawn = hash_split(train_scenes, float(val_fraction)) if val_fraction else {}
    scene_first: dict[str, tuple[str, str]] = {}  # scene -> (its split, the file it was first read from)
    for path, file_split, data in loaded:
        scene_split = {s: drawn.get(s, file_split) if file_split == "train" else file_split for s in data}
        for scene, split in scene_split.items():
            first_split, first_file = scene_first.setdefault(scene, (split, path.name))
            if first_split != split:
                report.warn(f"{path.name} scene {scene}", "scene in two splits",
                            f"{path.name} scene {scene}: its frames here go to {split}, those of {first_file} to "
                            f"{first_split} (a scene split across train and val leaks into evaluation)")
        before = {split: len(records) for split, records in splits.items()}
        items = []
        for scene, body in data.items():
            if isinstance(body, dict) and "key_frames" not in body and isinstance(body.get("key_frame"), dict):
                report.skip(f"{path.name} scene {scene}", "DriveLM v1.0 layout",
                            f"{path}: scene {scene} is in DriveLM's early v1.0 layout (key_frame -> Perception / "
                            "Prediction and Planning q/a lists); this converter reads v1.1 (key_frames -> QA -> "
                            f"{', '.join(QA_CATEGORIES)}, image_paths): use v1_1_train_nus.json")
                continue
            if not isinstance(body, dict) or not isinstance(body.get("key_frames"), dict) or _half_pair(scene):
                report.skip(f"{path.name} scene {scene!a}", "malformed scene", f"{path}: scene {scene!a} " + (
                    f"token {_half_pair(scene)}" if _half_pair(scene) else "has no key_frames object"))
                continue
            if not body["key_frames"]:  # nothing to read, but a scene the user expected to see converted
                report.skip(f"{path.name} scene {scene}", "scene without key frames",
                            f"{path}: scene {scene} has an empty key_frames object")
                continue
            for frame, fbody in body["key_frames"].items():
                if _half_pair(frame):
                    report.skip(f"{path.name} scene {scene} frame {frame!a}", "malformed frame",
                                f"{path}: scene {scene} frame {frame!a}: token {_half_pair(frame)}")
                else:
                    items.append((scene, frame, fbody))
        for scene, frame, fbody in progress_bar(items, desc=f"DriveLM {path.name}", unit="frame", progress=progress):
            where = f"{path.name} scene {scene} frame {frame}"
            first_file = seen_frames.setdefault((scene, frame), path.name)
            if first_file != path.name:  # same QA ids twice, possibly in two splits (train_sample.json + train)
                report.skip(where, "duplicate frame", f"{where}: already read from {first_file}")
                continue
            split = scene_split[scene]
            records = splits.setdefault(split, [])
            try:
                qas, paths = _frame_parts(fbody, path.parent, root, where)
                # a QA list under another key has no official id (ids count the four categories only): said
                other = sorted(str(k) for k in fbody["QA"] if k not in QA_CATEGORIES)
                if not qas:  # nothing to write: no image either
                    raise _Skip("frame without QA", where, f"QA has no question in {', '.join(QA_CATEGORIES)}"
                                + (f" (it holds only {other})" if other else ""))
                if other:
                    report.warn(where, "unknown QA category",
                                f"{where}: QA keys {other} are not DriveLM v1.1 categories "
                                f"({', '.join(QA_CATEGORIES)}); their questions were not converted")
                if known_samples is not None and frame not in known_samples:
                    raise _Skip("unknown sample token", where,
                                f"sample token {frame} is not in the nuScenes sample table at {dataroot}")
                images, sizes = frames.images(scene, frame, paths)
            except _Skip as exc:
                report.skip(exc.where if exc.reason.startswith(("missing camera", "unreadable camera", "camera size"))
                            else where, exc.reason, exc.detail)
                continue
            asked: dict[str, tuple[int, str]] = {}  # question -> (first QA index, its answer)
            for i, (category, qa) in enumerate(qas):
                qa_id = f"{scene}_{frame}_{i}"
                try:
                    rec = _qa_record(qa_id, category, qa, split, mc, prefix, convert, view_mode, order_name,
                                     images, sizes, scene, frame, path.name)
                    _check_repeat(asked, i, qa["Q"].strip(), rec, split)
                except _Skip as exc:
                    report.skip(f"{where} QA {i}", exc.reason, f"{where} QA {i} ({category}): {exc.detail}")
                    continue
                except _Repeat as exc:
                    report.warn(f"{where} QA {i}", "conflicting answers", f"{where} QA {i} ({category}): {exc}")
                records.append(rec)
        went = {split: len(records) - before.get(split, 0) for split, records in sorted(splits.items())}
        rule = (f"; val_fraction {float(val_fraction):g} of its scenes to val" if file_split == "train" and val_fraction
                else "")
        report.inputs[path.name] = (f"{file_split} file by its name{rule}: "
                                    + (", ".join(f"{n} QAs to {split}" for split, n in went.items() if n)
                                       or "no QAs written"))

    return write_splits(report, out, dataset, dict(sorted(splits.items())))


class _Repeat(Exception):
    """A question asked again in its frame with another answer: written, with a warning."""


def _check_repeat(asked: dict[str, tuple[int, str]], i: int, question: str, rec: dict, split: str) -> None:
    """A frame's repeated question: a training copy with the same answer is skipped (it would only weigh that QA
    twice); another answer is kept with a warning. Val and test keep every QA: the official scorer reads each id."""
    answer = rec["meta"].get("answer_text", rec["meta"]["answer_pixels"])  # mc: the answer, not its letter
    if question not in asked:
        asked[question] = (i, answer)
        return
    first, first_answer = asked[question]
    if answer == first_answer:
        if split == "train":
            raise _Skip("duplicate QA", rec["id"], f"same question and answer as QA {first}")
        return
    raise _Repeat(f"asks what QA {first} asks; answered {answer!r} here, {first_answer!r} there")


def _frame_parts(fbody: Any, json_dir: Path, root: Path | None, where: str):
    """The frame's QAs as ``[(category, qa)]`` in DriveLM's order and its six image paths."""
    if not isinstance(fbody, dict):
        raise _Skip("malformed frame", where, "frame is not an object")
    qa = fbody.get("QA")
    image_paths = fbody.get("image_paths")
    if not isinstance(qa, dict):
        raise _Skip("malformed frame", where, "frame has no QA object")
    if not isinstance(image_paths, dict):
        raise _Skip("malformed frame", where, "frame has no image_paths object")
    unknown = sorted(set(image_paths) - CAMERAS)
    missing = [c for c in STITCH_ORDER if c not in image_paths]
    if unknown or missing:
        raise _Skip("malformed frame", where, f"image_paths must name the six cameras; missing {missing or 'none'}, "
                                              f"unknown {unknown or 'none'}")
    qas = []
    for category in QA_CATEGORIES:
        items = qa.get(category, [])
        if not isinstance(items, list):
            raise _Skip("malformed frame", where, f"QA[{category!r}] is not a list")
        qas += [(category, item) for item in items]
    paths = {cam: _resolve_image(image_paths[cam], cam, json_dir, root) for cam in STITCH_ORDER}
    return qas, paths


def _half_pair(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8, else None: json reads a lone ``"\\ud800"`` escape, and writing the
    records would then fail, with every split unwritten."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds {text[exc.start]!r}, half of a UTF-16 pair, which is no text"
    return None


def _given_tag(raw: Any) -> int | list[int] | None:
    """The QA's own ``tag`` (an int or a list, as ``convert_data.py`` writes it): an int for one tag, the sorted
    list for several (evaluation.py scores the QA under each), None when it names no valid tag."""
    values = raw if isinstance(raw, list) else [raw]
    tags = sorted({v for v in values if isinstance(v, int) and not isinstance(v, bool) and v in TAGS})
    if not tags:
        return None
    return tags[0] if len(tags) == 1 else tags


def _qa_record(qa_id: str, category: str, qa: Any, split: str, mc: bool, prefix: str, convert, view_mode: str,
               order_name: str, images: list[str], sizes: list[tuple[int, int]], scene: str, frame: str,
               source: str) -> dict:
    if not isinstance(qa, dict) or not isinstance(qa.get("Q"), str) or not qa["Q"].strip():
        raise _Skip("malformed QA", qa_id, "needs a non-empty string 'Q'")
    question = qa["Q"].strip()
    answer = qa.get("A")
    if answer is not None and not isinstance(answer, str):
        raise _Skip("malformed QA", qa_id, f"'A' must be a string, got {type(answer).__name__}")
    answer = (answer or "").strip()
    for name, text in (("Q", question), ("A", answer)):
        if _half_pair(text):
            raise _Skip("malformed QA", qa_id, f"{name!r} {_half_pair(text)}")
    if not answer and split != "test":
        raise _Skip("missing answer", qa_id, "no answer in a training file")
    tag = _given_tag(qa.get("tag"))
    if tag is None:
        tag = drivelm_tag(category, question, answer)

    options = parse_options(question)
    letter = re.fullmatch(r"([A-Z])\.?", answer)
    if options is not None and letter and ord(letter[1]) - 65 >= len(options):  # scored against no option
        raise _Skip("answer not an option", qa_id, f"answer {answer!r}, but the question lists options "
                                                   f"A-{chr(64 + len(options))}")
    answer_text = None
    if options is None and mc and answer and (
            (category == "perception" and is_moving_status_question(question)) or
            (category == "behavior" and is_behavior_question(question))):
        choices = MOVING_STATUS_CHOICES if category == "perception" else BEHAVIOR_CHOICES
        answer_text = answer
        question, answer, options = choice_question(question, answer, choices, qa_id)
    def unrounded(x: float, y: float, camera: str) -> tuple[float, float]:
        return convert(x, y, camera, decimals=None)

    try:  # c-tags and traffic-element corners, both onto the sample's 0-1000 grid
        q_grid = rewrite_traffic_boxes(rewrite_ctags(question, convert), unrounded)
        a_grid = rewrite_traffic_boxes(rewrite_ctags(answer, convert), unrounded)
    except CTagError as exc:
        raise _Skip("bad c-tag", qa_id, str(exc)) from None
    meta = {"scene": scene, "frame": frame, "qa_id": qa_id, "category": category, "drivelm_tag": tag,
            "view_mode": view_mode, "camera_order": order_name, "answer_pixels": answer, "question_pixels": question,
            "split": split, "source": source}
    if answer_text is not None:
        meta["answer_text"] = answer_text
    if len(images) == 1:
        media: dict[str, Any] = {"image": images[0], "width": sizes[0][0], "height": sizes[0][1]}
    else:
        media = {"image": images, "width_list": [s[0] for s in sizes], "height_list": [s[1] for s in sizes]}
    record = {"id": qa_id, **media,
              "conversations": [{"from": "human", "value": prefix + q_grid}, {"from": "gpt", "value": a_grid}],
              "task": "drivelm", "answer": a_grid}
    if options is not None:
        record["options"] = options
    record["meta"] = meta
    return record

