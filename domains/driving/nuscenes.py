"""nuScenes through the real nuscenes-devkit: cameras, projected 2-D boxes, frame sequences, and a converter.

Reading (``domains.md`` §1.3): a dataroot holds ``<version>/*.json`` (the 13 tables), ``samples/CAM_*/...jpg``
and ``maps/``; :func:`open_nuscenes` loads it with ``NuScenes(version, dataroot, verbose=False)`` (the version is
detected when not given). Cameras always come in an explicit, named order (:data:`layout.CAMERA_ORDERS`).

2-D boxes (:func:`camera_objects`) come from the devkit as nuScenes' own 2-D export
(``export_2d_annotations_as_json.get_2d_boxes``) makes them: ``nusc.get_sample_data`` gives the annotated boxes in
the camera frame, ``view_points`` projects the corners in front of the camera, and the extent of their convex
hull within the image is the box (``post_process_coords``), so an object beside the ego vehicle, partly behind
the camera, keeps the part of it in the image. Annotations can be filtered by nuScenes
visibility (1: 0-40 %, 2: 40-60 %, 3: 60-80 %, 4: 80-100 %) and category.

Converter :func:`convert_nuscenes` (``PLUGIN.converters["nuscenes"]``) writes, per camera image of every key
frame, grounding samples (``Where is the car?`` -> ``<ref>car</ref><box>[[x1, y1, x2, y2]]</box>``, all boxes of
that category, left to right, on the image's 0-1000 grid) and region samples (``What is the object at
<box>[[...]]</box>?`` -> ``car``). With ``history=N`` each sample is a frame sequence: the N previous key frames of
the same camera and the current one, introduced ``Frame-1: <image>\\n...`` as InternVL video prompts do; boxes are
on the last (current) frame.

The devkit is imported lazily (it pulls in OpenCV, scikit-learn and matplotlib); without it a clear ImportError
says to install the driving extra.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domains.base import ConvertReport, DomainError, SkipInput, comma_names
from domains.boxes import Box, render_ref_box, to_grid
from domains.driving.layout import camera_order
from domains.files import check_image, inside_root, link_or_copy, write_splits
from model.errors import MissingExtraError, install_hint
from model.progress import Progress, progress_bar

__all__ = [
    "CATEGORY_PHRASES",
    "VERSIONS",
    "CameraObject",
    "camera_objects",
    "camera_tokens",
    "category_phrase",
    "convert_nuscenes",
    "detect_version",
    "frame_sequence",
    "hash_split",
    "open_nuscenes",
    "previous_samples",
    "require_devkit",
    "scene_samples",
]

VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
INSTALL_HINT = f"the nuScenes reader needs nuscenes-devkit; install the driving extra: {install_hint('nuscenes')}"

# nuScenes detection-challenge categories -> the phrase used in prompts
CATEGORY_PHRASES: dict[str, str] = {
    "animal": "animal",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "child",
    "human.pedestrian.construction_worker": "construction worker",
    "human.pedestrian.personal_mobility": "person on a scooter",
    "human.pedestrian.police_officer": "police officer",
    "human.pedestrian.stroller": "stroller",
    "human.pedestrian.wheelchair": "wheelchair",
    "movable_object.barrier": "barrier",
    "movable_object.debris": "debris",
    "movable_object.pushable_pullable": "cart",
    "movable_object.trafficcone": "traffic cone",
    "static_object.bicycle_rack": "bicycle rack",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction vehicle",
    "vehicle.emergency.ambulance": "ambulance",
    "vehicle.emergency.police": "police car",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}
GROUNDING_QUESTION = "Where is the {phrase}?"
REGION_QUESTION = "What is the object at {box}?"


def category_phrase(category: str) -> str:
    """nuScenes category name -> prompt phrase (``vehicle.car`` -> ``car``; unknown: last part, words)."""
    return CATEGORY_PHRASES.get(category) or category.rsplit(".", 1)[-1].replace("_", " ")


# --------------------------------------------------------------------------------------------- devkit
def require_devkit():
    """The devkit's ``NuScenes`` class, or :class:`~model.errors.MissingExtraError` (an ImportError) with the
    install hint."""
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as exc:
        raise MissingExtraError(f"{INSTALL_HINT} ({exc})") from exc
    return NuScenes


def detect_version(dataroot: str | Path) -> str:
    """The table version under `dataroot`: the one of :data:`VERSIONS` (else any folder) holding ``sample.json``."""
    root = Path(dataroot)
    found = [v for v in VERSIONS if (root / v / "sample.json").is_file()]
    if not found and root.is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / "sample.json").is_file())
    if not found and (root / "sample.json").is_file():  # the table folder itself, not the dataroot above it
        raise DomainError(f"{root}: this is a nuScenes table folder ({root.name}/sample.json); give the dataroot "
                          f"holding it, {root.parent} (the folder with {root.name}/ and samples/)")
    if not found:
        raise DomainError(f"{root}: no nuScenes tables found (expected {root}/v1.0-mini/sample.json or "
                         f"{root}/v1.0-trainval/sample.json)")
    if len(found) > 1:
        raise DomainError(f"{root}: several table versions ({', '.join(found)}); pass version=...")
    return found[0]


def open_nuscenes(dataroot: str | Path, version: str | None = None):
    """``NuScenes(version, dataroot, verbose=False)`` with the version detected when not given.

    Raises ValueError naming the dataroot when the tables are missing or do not load.
    """
    NuScenes = require_devkit()
    root = Path(dataroot)
    version = version or detect_version(root)
    if not root.is_dir():  # listing its folders below would fail with a bare FileNotFoundError
        raise DomainError(f"{root}: no such nuScenes dataroot (a folder holding {version}/ and samples/)")
    if not (root / version).is_dir():
        raise DomainError(f"{root}: no table folder {version}/ (found: "
                         f"{', '.join(sorted(p.name for p in root.iterdir() if p.is_dir())) or 'nothing'})")
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, KeyError, IndexError, json.JSONDecodeError, OSError, TypeError) as exc:
        raise DomainError(f"{root}/{version}: the nuScenes tables do not load "
                         f"({type(exc).__name__}: {exc})") from exc


def _vis_level(level: str | int):
    from nuscenes.utils.geometry_utils import BoxVisibility

    # "any" asks the devkit for every box (NONE) and keeps those whose in-front part reaches the image, as the
    # 2-D export does; the devkit's own ANY would drop a box with a corner behind the camera
    levels = {"any": BoxVisibility.NONE, "all": BoxVisibility.ALL}
    if isinstance(level, str) and level.lower() in levels:
        return levels[level.lower()]
    if level in (BoxVisibility.ANY, BoxVisibility.NONE):
        return BoxVisibility.NONE
    if level == BoxVisibility.ALL:
        return level
    raise DomainError(f"box_vis_level must be 'any' (part of the box in the image) or 'all' (every corner in the "
                      f"image), got {level!r}")


@dataclass(frozen=True)
class CameraObject:
    """One annotated object as seen by one camera."""

    annotation: str  # sample_annotation token
    instance: str  # instance token (the same object across frames)
    category: str  # nuScenes category name
    phrase: str  # prompt phrase (category_phrase)
    box: Box  # pixel box in the camera image (projected corners' extent, clipped)
    visibility: int  # nuScenes visibility token 1..4
    depth: float  # distance of the box centre along the camera axis, metres


def _category_match(category: str, wanted: Sequence[str] | None) -> bool:
    if not wanted:
        return True
    phrase = category_phrase(category)
    return any(category == w or category.startswith(w + ".") or phrase == w for w in wanted)


def _wanted_categories(nusc, categories: Sequence[str] | str | None) -> list[str] | None:
    """`categories` as a list (a string: comma-separated names), or None for all; DomainError naming any that
    matches no nuScenes category (a misspelt "cars" would keep no object, without a word)."""
    if categories is None:
        return None
    categories = comma_names(categories)  # iterated as it is, "car" would be the names "c", "a", "r"
    if not all(isinstance(c, str) and c.strip() for c in categories):
        raise DomainError(f"categories must be names, got {list(categories)!r}")
    wanted = [c.strip() for c in categories]
    known = set(CATEGORY_PHRASES) | {c["name"] for c in nusc.category}
    unknown = [w for w in wanted if not any(_category_match(name, [w]) for name in known)]
    if unknown:
        raise DomainError(f"categories {', '.join(map(repr, unknown))} match no nuScenes category; give names "
                          f"(vehicle.car), prefixes (vehicle) or phrases: "
                          f"{', '.join(sorted({category_phrase(n) for n in known}))}")
    return wanted or None


def camera_objects(nusc, sd_token: str, *, box_vis_level: str | int = "any", min_visibility: int = 1,
                   categories: Sequence[str] | str | None = None, min_box_px: float = 2.0) -> list[CameraObject]:
    """The annotated objects of a camera sample_data with their clipped 2-D boxes, nearest first.

    As nuScenes' own 2-D annotation export (``get_2d_boxes``): ``view_points`` of the box corners in front of
    the camera and the devkit's ``post_process_coords`` (the extent of their convex hull within the image).
    `box_vis_level`: ``any`` keeps a box whose in-front part reaches the image (the export's rule; an object
    beside the ego vehicle with corners behind the camera is kept, clipped), ``all`` only a box with every
    corner in front of the camera and inside the image (the devkit's ``BoxVisibility.ALL``).
    `min_visibility` keeps annotations whose visibility token is at least this (1-4); `categories` keeps
    category names, prefixes (``"vehicle"``) or phrases (``"car"``), a list or one comma-separated string (one
    matching no nuScenes category: DomainError); boxes narrower or lower than
    `min_box_px` after clipping are dropped.
    """
    import numpy as np
    from nuscenes.scripts.export_2d_annotations_as_json import post_process_coords
    from nuscenes.utils.geometry_utils import view_points

    _check_visibility(min_visibility)
    categories = _wanted_categories(nusc, categories)
    sd = nusc.get("sample_data", sd_token)
    width, height = int(sd["width"]), int(sd["height"])
    _, boxes, intrinsic = nusc.get_sample_data(sd_token, box_vis_level=_vis_level(box_vis_level))
    found = []
    for box in boxes:
        ann = nusc.get("sample_annotation", box.token)
        visibility = int(ann.get("visibility_token") or 0)
        if visibility < min_visibility or not _category_match(box.name, categories):
            continue
        corners = box.corners()
        corners = corners[:, corners[2] > 0]  # the export's rule: only corners in front of the camera
        if not corners.shape[1]:
            continue
        pts = view_points(corners, np.asarray(intrinsic), normalize=True)[:2]
        try:  # the devkit's 2-D box: the corners' convex hull intersected with the image
            extent = post_process_coords(pts.T.tolist(), (width, height))
        except (AttributeError, ValueError):  # the intersection degenerates to a line or a point
            extent = None
        if extent is None:
            continue
        clipped = Box(*(float(v) for v in extent))
        if clipped.width < min_box_px or clipped.height < min_box_px:
            continue
        found.append(CameraObject(ann["token"], ann["instance_token"], box.name, category_phrase(box.name),
                                  Box(*(round(v, 2) for v in clipped)), visibility, float(box.center[2])))
    return sorted(found, key=lambda o: (o.depth, o.annotation))


def camera_tokens(nusc, sample_token: str, order: str | Sequence[str] = "stitch") -> list[tuple[str, str]]:
    """``[(camera, sample_data token), ...]`` of a sample's key-frame cameras in `order` (a name or a tuple).

    A camera the sample lacks raises ValueError naming it.
    """
    cams = camera_order(order) if isinstance(order, str) else tuple(order)
    data = nusc.get("sample", sample_token)["data"]
    missing = [c for c in cams if c not in data]
    if missing:
        raise ValueError(f"sample {sample_token} has no sample_data for {', '.join(missing)}")
    return [(c, data[c]) for c in cams]


def scene_samples(nusc, scene_token: str) -> list[str]:
    """The scene's sample tokens in time order (``first_sample_token`` then ``next``)."""
    scene = nusc.get("scene", scene_token)
    tokens, token, seen = [], scene["first_sample_token"], set()
    while token and token not in seen:
        seen.add(token)
        tokens.append(token)
        token = nusc.get("sample", token)["next"]
    return tokens


def previous_samples(nusc, sample_token: str, n: int) -> list[str]:
    """Up to `n` previous key frames of the sample (walking ``sample['prev']``), oldest first."""
    out: list[str] = []
    token = nusc.get("sample", sample_token)["prev"]
    while token and len(out) < n:
        out.append(token)
        token = nusc.get("sample", token)["prev"]
    return out[::-1]


def frame_sequence(nusc, sample_token: str, camera: str, history: int) -> list[str]:
    """Sample_data tokens of `camera` for the `history` previous key frames and this one, oldest first.

    A key frame of the sequence without `camera` raises ``SkipInput("missing camera", ...)`` naming it.
    """
    tokens = previous_samples(nusc, sample_token, history) + [sample_token]
    out = []
    for t in tokens:
        data = nusc.get("sample", t)["data"]
        if camera not in data:
            which = "it" if t == sample_token else f"its previous key frame {t}"
            raise SkipInput("missing camera", f"sample {sample_token}: {which} has no {camera}")
        out.append(data[camera])
    return out


# --------------------------------------------------------------------------------------------- converter
def _in(value: object, low: float, high: float) -> bool:
    """`value` is a number (not a bool) with low <= value < high."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high


def _whole(value: object) -> bool:
    """`value` is a whole number (an int, or a float such as 2.0; not a bool)."""
    return not isinstance(value, bool) and (isinstance(value, numbers.Integral) or
                                             isinstance(value, float) and value.is_integer())


def _check_visibility(min_visibility: object) -> None:
    """A `min_visibility` outside 1-4 (or 2.5) would keep every object or none without a word."""
    if not _whole(min_visibility) or not 1 <= min_visibility <= 4:
        raise DomainError(f"min_visibility must be a nuScenes visibility token 1-4, got {min_visibility!r}")


def _scene_splits(nusc, version: str, split_by: str, val_fraction: float) -> dict[str, str]:
    """scene token -> "train" | "val" (| "test" for v1.0-test)."""
    names = {s["token"]: s["name"] for s in nusc.scene}
    if split_by not in ("auto", "official", "hash"):
        raise DomainError(f"split_by must be 'auto', 'official' or 'hash', got {split_by!r}")
    if split_by in ("auto", "official"):
        from nuscenes.utils.splits import create_splits_scenes

        official = create_splits_scenes()
        if version == "v1.0-mini":
            table = {"train": official["mini_train"], "val": official["mini_val"]}
        elif version == "v1.0-test":
            table = {"test": official["test"]}
        else:
            table = {"train": official["train"], "val": official["val"]}
        by_name = {name: split for split, scenes in table.items() for name in scenes}
        if all(n in by_name for n in names.values()):
            return {tok: by_name[n] for tok, n in names.items()}
        if split_by == "official":
            unknown = sorted(n for n in names.values() if n not in by_name)
            raise DomainError(f"scenes not in the official {version} splits: {', '.join(unknown[:5])}")
    return hash_split(names, val_fraction)


def hash_split(keys: dict[str, str], val_fraction: float) -> dict[str, str]:
    """key -> "train" | "val": ``round(n * val_fraction)`` keys (at least 1 and at most n-1 when the fraction is
    positive and n >= 2) go to val, picked by a hash of their names (stable across runs and machines)."""
    if not 0 <= val_fraction < 1:
        raise DomainError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = sorted(keys, key=lambda k: hashlib.sha1(str(keys[k]).encode()).hexdigest())
    n_val = 0
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    val = set(order[:n_val])
    return {k: "val" if k in val else "train" for k in keys}


def _held_out_scenes(held_out: str | Path | Sequence[str | Path] | None) -> dict[str, set[str]]:
    """file name -> the ``meta.scene`` values (DriveLM scene tokens, nuScenes scene names) of each JSONL file in
    `held_out` (paths, or one string of comma-separated paths); DomainError naming a file or line it cannot read."""
    if held_out is None or held_out == "":
        return {}
    paths: list[str | Path] = [held_out] if isinstance(held_out, Path) else comma_names(held_out)
    found: dict[str, set[str]] = {}
    for path in map(Path, paths):
        scenes = found.setdefault(path.name, set())
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DomainError(f"held_out {path}: cannot read it ({type(exc).__name__}: {exc})") from None
        for n, line in enumerate(lines, 1):
            try:
                scene = json.loads(line)["meta"]["scene"] if line.strip() else None
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DomainError(f"held_out {path} line {n}: not a converted record with meta.scene "
                                  f"({type(exc).__name__}: {exc})") from None
            if isinstance(scene, str):
                scenes.add(scene)
    return found


def _frames_prefix(n: int) -> str:
    return "".join(f"Frame-{i + 1}: <image>\n" for i in range(n))


def _record(rid: str, images: list[str], sizes: list[tuple[int, int]], question: str, answer: str, task: str,
            meta: dict) -> dict:
    if len(images) == 1:
        media: dict[str, Any] = {"image": images[0], "width": sizes[0][0], "height": sizes[0][1]}
        human = "<image>\n" + question
    else:
        media = {"image": images, "width_list": [s[0] for s in sizes], "height_list": [s[1] for s in sizes]}
        human = _frames_prefix(len(images)) + question
    return {"id": rid, **media, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}],
            "task": task, "answer": answer, "meta": meta}


# the dataroot's image folders, which users often link in from another disk: such a link is the data set's own
# layout and is followed, but a file name must stay inside the folder it names
LINKABLE_FOLDERS = ("samples", "sweeps")


def convert_nuscenes(src: str | Path, out: str | Path, version: str | None = None, cameras: str = "stitch",
                     history: int = 0, min_visibility: int = 2, categories: Sequence[str] | str | None = None,
                     tasks: Sequence[str] | str = ("grounding", "region"), box_vis_level: str = "any",
                     min_box_px: float = 8.0, split_by: str = "auto", val_fraction: float = 0.2,
                     link: str = "hardlink", dataset: str = "nuscenes",
                     held_out: str | Path | Sequence[str | Path] | None = None, progress: Progress = True,
                     workers: int = 1) -> ConvertReport:
    """nuScenes dataroot -> grounding and region JSONL per camera image (see the module notes).

    `version`: table version (detected when None). `cameras`: camera order name (``stitch``, ``drivelm``,
    ``nuscenes``) fixing the order samples are written in. `history`: previous key frames per sample (0 = single
    images). `min_visibility`: least nuScenes visibility token (1-4). `categories`: names, prefixes or phrases
    to keep (all when None; one matching no nuScenes category is refused). `tasks`: ``grounding`` and/or
    ``region`` (`categories` and `tasks`: a list or a comma-separated string). `box_vis_level`: ``any`` (part of
    the box in the image, as nuScenes' 2-D export) or ``all`` (every corner in the image). `min_box_px`: smallest
    clipped box side kept. `split_by`: ``official`` (the devkit's scene splits; mini: mini_train / mini_val),
    ``hash`` (`val_fraction` of the scenes by a hash of the name) or ``auto`` (official when every scene is
    listed there). `val_fraction`: the share of scenes in ``val`` with ``hash``. `link`: ``hardlink`` or
    ``copy`` for the camera images put under ``out/images/nuscenes/`` (record paths are relative to `out`).
    `dataset`: output name. `held_out`: converted JSONL files (a list, or comma-separated paths) whose scenes
    (``meta.scene``: DriveLM's scene tokens or nuScenes scene names) are scored elsewhere, e.g. the DriveLM
    converter's ``drivelm_val.jsonl``: their training samples go to ``val``, so no camera picture of a held-out
    scene is trained on. `progress`: show a progress bar.

    Output ``out/<dataset>_<split>.jsonl``; ``report.outputs[split]``. A missing camera file or camera (on the
    key frame or a previous one of its sequence), or a sequence needing one, is skipped and counted, as is a
    ``sample_data`` file name that leaves `src` (absolute, ``..``, a symlink pointing outside: ``path escapes data
    root``, :func:`domains.files.inside_root`; ``samples/`` and ``sweeps/`` themselves may be links, and a name
    under them must stay inside them); re-runs rewrite nothing when nothing changed.

    Each camera file is decoded once in full before it is linked (a truncated JPEG has a whole header) and
    skipped as an ``unreadable camera image`` when it does not decode, or as an ``image size mismatch`` when
    its size is not the ``sample_data`` table's (the boxes are projected for that size); neither is linked.
    `workers`: processes doing that decoding ahead of the loop (:mod:`domains.parallel`; output byte-identical
    to 1); the devkit's tables and the box projection stay in this process, in the one ``NuScenes`` object.
    """
    from domains.parallel import Prefetch, check_workers

    check_workers(workers)

    src, out = Path(src), Path(out)
    tasks = tuple(comma_names(tasks))  # "grounding,region" as categories take it
    if not tasks or set(tasks) - {"grounding", "region"}:
        raise DomainError(f"tasks must be a non-empty subset of ('grounding', 'region'), got {tasks!r}")
    # int() took history=1.5 as 1 and min_visibility=2.5 as 2 without a word, and a text with a bare ValueError
    if not _whole(history) or history < 0:
        raise DomainError(f"history must be a whole number >= 0 of previous key frames, got {history!r}")
    _check_visibility(min_visibility)
    if not _in(min_box_px, 0, math.inf):
        raise DomainError(f"min_box_px must be a number of pixels >= 0, got {min_box_px!r}")
    if not _in(val_fraction, 0, 1):  # checked for every split_by: auto may come to the hash split
        raise DomainError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    order = camera_order(cameras)
    _vis_level(box_vis_level)
    held_scenes = _held_out_scenes(held_out)  # before the tables load: a wrong path fails at once
    version = version or detect_version(src)
    nusc = open_nuscenes(src, version)
    categories = _wanted_categories(nusc, categories)  # before the loop: a misspelt name fails at once
    report = ConvertReport(dataset=dataset, source=src, out=out)
    scene_split = _scene_splits(nusc, version, split_by, float(val_fraction))
    for name, held in held_scenes.items():
        moved = [t for t in scene_split if scene_split[t] == "train" and (t in held or
                                                                          nusc.get("scene", t)["name"] in held)]
        scene_split.update({t: "val" for t in moved})
        known = sum(1 for s in nusc.scene if s["token"] in held or s["name"] in held)
        report.inputs[f"held_out {name}"] = (f"{known} of its {len(held)} scenes in these tables; "
                                             f"{len(moved)} training scene{'s' * (len(moved) != 1)} moved to val")
    splits: dict[str, list[dict]] = {s: [] for s in sorted(set(scene_split.values()))}
    published: dict[str, tuple[str, tuple[int, int]] | None] = {}  # sd token -> (out path, size) | None
    lost: dict[str, str] = {}  # sd token published as None -> why, for the frames whose sequence needs it

    def camera_file(sd_token: str) -> Path:
        """The table's file name, read as a path under the dataroot (never outside it): SkipInput otherwise.
        ``samples/`` and ``sweeps/`` may be links to another disk (a common set-up); nothing below them may leave."""
        sd = nusc.get("sample_data", sd_token)
        name = sd.get("filename") if isinstance(sd.get("filename"), str) else ""
        head, _, tail = name.partition("/")
        if head in LINKABLE_FOLDERS and tail:
            return inside_root(src / head, tail)
        return inside_root(src, name)

    def publish(sd_token: str) -> tuple[str, tuple[int, int]] | None:
        if sd_token not in published:
            try:
                path = camera_file(sd_token)
            except SkipInput as exc:
                report.skip(f"sample_data {sd_token}", exc.reason, f"sample_data {sd_token}: {exc.detail}")
                published[sd_token], lost[sd_token] = None, f"is refused ({exc.detail})"
                return None
            rel = f"images/nuscenes/{path.relative_to(Path(os.path.abspath(src))).as_posix()}"
            of = f"(sample_data {sd_token} of sample {nusc.get('sample_data', sd_token).get('sample_token')})"
            if not path.is_file():
                report.skip(path, "missing camera image", f"{path}: no such file {of}")
                published[sd_token], lost[sd_token] = None, f"is missing ({path})"
            else:
                try:
                    size = pf.get(path, check_image, path)  # decoded in full: a truncated JPEG has a whole header
                    sd = nusc.get("sample_data", sd_token)
                    if size != (int(sd["width"]), int(sd["height"])):  # checked before linking: no stray file
                        report.skip(path, "image size mismatch", f"{path}: file is {size[0]}x{size[1]}, the "
                                    f"sample_data table says {sd['width']}x{sd['height']} {of}")
                        published[sd_token], lost[sd_token] = None, f"is not the table's size ({path})"
                        return None
                    link_or_copy(path, out / rel, link)
                    published[sd_token] = (rel, size)
                except SkipInput as exc:
                    report.skip(path, "unreadable camera image", f"{exc.detail} {of}")
                    published[sd_token], lost[sd_token] = None, f"does not decode ({exc.detail})"
                except OSError as exc:
                    report.skip(path, "unreadable camera image", f"{path}: {exc} {of}")
                    published[sd_token], lost[sd_token] = None, f"cannot be read ({path}: {exc})"
        return published[sd_token]

    samples = [(scene["token"], t) for scene in sorted(nusc.scene, key=lambda s: s["name"])
               for t in scene_samples(nusc, scene["token"])]

    def plan():  # every camera file publish() decodes, in the loop's order
        for _scene, sample_token in samples:
            for camera in order:
                try:
                    seq = frame_sequence(nusc, sample_token, camera, int(history))
                except SkipInput:
                    continue
                for sd_token in seq:
                    try:
                        path = camera_file(sd_token)
                    except SkipInput:
                        continue
                    yield path, check_image, (path,)

    with Prefetch(workers, plan) as pf:
        for scene_token, sample_token in progress_bar(samples, desc=f"nuScenes {version}", unit="frame",
                                                      progress=progress):
            scene_name = nusc.get("scene", scene_token)["name"]
            split = scene_split[scene_token]
            data = nusc.get("sample", sample_token)["data"]
            for camera in order:
                try:  # this key frame, or a previous one of its sequence, may lack the camera
                    seq = frame_sequence(nusc, sample_token, camera, int(history))
                except SkipInput as exc:
                    report.skip(f"sample {sample_token}", exc.reason, exc.detail)
                    continue
                got = [publish(t) for t in seq]
                if any(g is None for g in got):
                    why = lost[next(t for t, g in zip(seq, got) if g is None)]
                    report.skip(f"sample {sample_token} {camera}", "camera image skipped",
                                f"sample {sample_token} {camera}: a camera image of the sequence {why}")
                    continue
                images, sizes = [g[0] for g in got], [g[1] for g in got]
                objects = camera_objects(nusc, data[camera], box_vis_level=box_vis_level,
                                         min_visibility=int(min_visibility), categories=categories,
                                         min_box_px=float(min_box_px))
                w, h = sizes[-1]  # the sample_data table's size (publish refuses any other)
                frame_note = f" in Frame-{len(images)}" if len(images) > 1 else ""
                base = {"dataset": dataset, "split": split, "scene": scene_name, "sample": sample_token,
                        "camera": camera, "sample_data": data[camera], "history": len(images) - 1}
                rid = f"{dataset}/{sample_token}/{camera}"
                if "grounding" in tasks:
                    by_phrase: dict[str, list[CameraObject]] = {}
                    for obj in objects:
                        by_phrase.setdefault(obj.phrase, []).append(obj)
                    for phrase in sorted(by_phrase):
                        objs = sorted(by_phrase[phrase], key=lambda o: (o.box.x1, o.box.y1))
                        grid = [to_grid(o.box, w, h) for o in objs]
                        question = GROUNDING_QUESTION.format(phrase=phrase)[:-1] + frame_note + "?"
                        splits[split].append(_record(
                            f"{rid}/grounding/{phrase.replace(' ', '_')}", images, sizes, question,
                            render_ref_box(phrase, grid), "grounding",
                            {**base, "phrase": phrase, "categories": sorted({o.category for o in objs}),
                             "boxes": [list(o.box) for o in objs], "grid_boxes": grid,
                             "annotations": [o.annotation for o in objs]}))
                if "region" in tasks:
                    for obj in objects:
                        grid = to_grid(obj.box, w, h)
                        box_text = f"<box>[[{grid[0]}, {grid[1]}, {grid[2]}, {grid[3]}]]</box>"
                        question = REGION_QUESTION.format(box=box_text)[:-1] + frame_note + "?"
                        splits[split].append(_record(
                            f"{rid}/region/{obj.annotation}", images, sizes, question, obj.phrase, "region",
                            {**base, "phrase": obj.phrase, "category": obj.category, "box": list(obj.box),
                             "grid_box": grid, "annotation": obj.annotation, "visibility": obj.visibility}))
    return write_splits(report, out, dataset, splits)

