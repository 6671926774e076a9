"""Small synthetic remote-sensing data sets written in the *public* layouts, with real rasters.

They exist so the converters (:mod:`domains.remote_sensing.convert`), the tests and the quick start can run
on data shaped exactly like the public downloads (``domains.md`` §2), without any download.

API::

    generate(kind, out, n=4, seed=0, size=None, **options) -> Path   # the data-set root written
    generate_all(out_dir, kinds=None, n=4, seed=0) -> dict[kind, Path]  # the plugin's ``synthetic``

`kind` is one of :data:`KINDS`:

``"ucmerced"``
    UC Merced-like scene classification: ``<out>/<Class>/<class><NN>.tif``, 3-band **uint8 GeoTIFF**
    (EPSG:32633, 0.3 m north-up transform, nodata 0 -- texture values are kept >= 1), `n` images per class
    over :data:`UCMERCED_CLASSES` (or ``classes=[...]``, any subset of its keys). Default size 32 px.
``"eurosat_ms"``
    EuroSAT-MS-like: ``<out>/<ClassName>/<ClassName>_<k>.tif`` (``k`` from 1), 13-band **uint16 GeoTIFF** in
    the EuroSAT file order :data:`~domains.remote_sensing.raster.EUROSAT_BANDS` (B8A *last*), 10 m pixels,
    no band descriptions (as in the real files). B04/B03/B02 hold the scene's R/G/B (scaled to L1C-like
    reflectance counts); the other bands are distinct mixtures, so a band mix-up shows. Default 16 px.
``"rsvqa_lr"`` / ``"rsvqa_hr"``
    RSVQA-like: ``{LR|USGS}_split_{train,val,test}_{questions,answers,images}.json`` plus
    ``all_questions.json`` / ``all_answers.json``, and images ``Images_LR/{id}.tif`` (LR) or ``Data/{id}.tif``
    (HR) as 3-band uint8 GeoTIFFs. Records have the public fields (``id``, ``img_id``, ``type``,
    ``question``, ``answers_ids``, ``active``, ...); question types LR ``presence, comp, rural_urban,
    count``, HR ``presence, comp, count, area`` (area answers ``"<n>m2"``). One inactive question per split
    is included (converters must drop it). As in the public files, a split file lists every id in order (the
    list position is the id): another split's question, answer or image stands as ``{"id": n, "active": false}``.
    `n` images in all, split 60/20/20. Default size 32 px.
``"dior_rsvg"``
    DIOR-RSVG-like: ``JPEGImages/{NNNNN}.jpg`` and VOC-style ``Annotations/{NNNNN}.xml`` whose ``<object>`` s
    carry ``<name>``, ``<bndbox>`` (``xmin ymin xmax ymax``) and a ``<description>`` referring expression;
    ``train.txt`` / ``val.txt`` / ``test.txt`` list global object indices counted over the xml files in
    sorted order. 1-3 objects per image, `n` images. Default size 64 px (the real ones are 800).

Scenes are the land-cover textures of :func:`domains.general.world.render_scene` with simple objects
drawn on top. Everything is deterministic: the same arguments write the same pixels and texts (each item
draws from ``numpy.random.default_rng([kind code, seed, index])``).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from domains.base import DomainError, check_synthetic_call, generate_kinds, kinds_written
from domains.general.world import render_scene
from model.progress import Progress

__all__ = [
    "DIOR_OBJECTS",
    "EUROSAT_CLASSES",
    "KINDS",
    "UCMERCED_CLASSES",
    "generate",
    "generate_all",
]

KINDS: tuple[str, ...] = ("ucmerced", "eurosat_ms", "rsvqa_lr", "rsvqa_hr", "dior_rsvg")
_CODE = {k: 300 + i for i, k in enumerate(KINDS)}
MAX_SIZE = 1024  # DIOR's images are 800 px, RSVQA-HR's 512
_DEFAULT_SIZE = {"ucmerced": 32, "eurosat_ms": 16, "rsvqa_lr": 32, "rsvqa_hr": 32, "dior_rsvg": 64}

# UC Merced class folder -> land-cover texture
UCMERCED_CLASSES: dict[str, str] = {
    "agricultural": "farmland", "forest": "forest", "river": "water", "denseresidential": "residential",
    "chaparral": "grassland",
}
# EuroSAT class folder -> land-cover texture
EUROSAT_CLASSES: dict[str, str] = {
    "AnnualCrop": "farmland", "Forest": "forest", "HerbaceousVegetation": "grassland", "Highway": "bare rock",
    "Industrial": "residential", "Pasture": "grassland", "PermanentCrop": "farmland",
    "Residential": "residential", "River": "water", "SeaLake": "water",
}
# DIOR object name -> (fill RGB, shape, phrase)
DIOR_OBJECTS: dict[str, tuple[tuple[int, int, int], str, str]] = {
    "airplane": ((235, 235, 240), "cross", "airplane"),
    "storagetank": ((220, 220, 210), "ellipse", "storage tank"),
    "ship": ((250, 250, 250), "rect", "ship"),
    "vehicle": ((200, 40, 40), "rect", "vehicle"),
    "tenniscourt": ((60, 120, 200), "rect", "tennis court"),
}

CRS_EPSG = 32633


def _rng(kind: str, seed: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([_CODE[kind], int(seed), *more])


def _scene(rng: np.random.Generator, texture: str, size: int) -> np.ndarray:
    """(H, W, 3) uint8 texture, values 1..255 (0 is kept free for nodata)."""
    img = render_scene(rng, texture, size) + rng.normal(0, 3, (size, size, 3))
    return np.clip(np.rint(img), 1, 255).astype(np.uint8)


def _write_geotiff(path: Path, data: np.ndarray, res: float, nodata: float | None, origin=(500000.0, 5000000.0)) -> None:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": CRS.from_epsg(CRS_EPSG),
               "transform": Affine(res, 0.0, origin[0], 0.0, -res, origin[1]), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


# --------------------------------------------------------------------------------------------- objects
def _draw(draw: ImageDraw.ImageDraw, shape: str, box: Sequence[int], rgb) -> None:
    x1, y1, x2, y2 = box
    if shape == "ellipse":
        draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=rgb)
    elif shape == "cross":
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        tw, th = max(1, (x2 - x1) // 6), max(1, (y2 - y1) // 6)
        draw.rectangle((cx - tw, y1, cx + tw - 1, y2 - 1), fill=rgb)
        draw.rectangle((x1, cy - th, x2 - 1, cy + th - 1), fill=rgb)
    else:
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=rgb)


def _place(rng: np.random.Generator, size: int, count: int, lo: float = 0.12, hi: float = 0.3) -> list[list[int]]:
    """Up to `count` non-overlapping pixel boxes [x1, y1, x2, y2) inside a size x size image."""
    boxes: list[list[int]] = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        w = max(2, int(rng.uniform(lo, hi) * size))
        h = max(2, int(rng.uniform(lo, hi) * size))
        x = int(rng.integers(0, size - w + 1))
        y = int(rng.integers(0, size - h + 1))
        b = [x, y, x + w, y + h]
        if all(b[2] <= o[0] or o[2] <= b[0] or b[3] <= o[1] or o[3] <= b[1] for o in boxes):
            boxes.append(b)
    return boxes


def _where(box: Sequence[int], size: int) -> str:
    cx, cy = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
    v = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    if not v and not h:
        return "in the middle"
    if not v:
        return f"on the {h}"
    return f"at the {' '.join(p for p in (v, h) if p)}"


# --------------------------------------------------------------------------------------------- kinds
def _ucmerced(out: Path, n: int, seed: int, size: int, classes: Iterable[str] | None = None) -> None:
    names = list(classes) if classes is not None else list(UCMERCED_CLASSES)
    for ci, cls in enumerate(names):
        texture = UCMERCED_CLASSES[cls]
        for i in range(n):
            rgb = _scene(_rng("ucmerced", seed, ci, i), texture, size)
            _write_geotiff(out / cls / f"{cls}{i:02d}.tif", rgb.transpose(2, 0, 1).copy(), 0.3, 0)


def _eurosat_ms(out: Path, n: int, seed: int, size: int, classes: Iterable[str] | None = None) -> None:
    names = list(classes) if classes is not None else list(EUROSAT_CLASSES)
    for ci, cls in enumerate(names):
        for i in range(n):
            rng = _rng("eurosat_ms", seed, ci, i)
            rgb = _scene(rng, EUROSAT_CLASSES[cls], size).astype(np.float64)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            nir = np.clip(2.2 * g - 0.8 * r + 40, 0, 400)  # vegetation bright in the near infra-red
            mix = {  # EuroSAT file order, B8A last; each band a different mixture and offset
                "B01": 0.5 * b + 0.5 * g + 900, "B02": b * 8 + 700, "B03": g * 8 + 600, "B04": r * 8 + 500,
                "B05": 0.7 * r + 0.3 * nir + 1100, "B06": nir * 5 + 1200, "B07": nir * 6 + 1300,
                "B08": nir * 7 + 1400, "B09": nir * 2 + 300, "B10": 0.1 * g + 20, "B11": r * 4 + 1500,
                "B12": r * 3 + 1000, "B8A": nir * 7.5 + 1600,
            }
            from domains.remote_sensing.raster import EUROSAT_BANDS

            stack = np.stack([mix[name] for name in EUROSAT_BANDS])
            stack = np.clip(np.rint(stack + rng.normal(0, 4, stack.shape)), 1, 65535).astype(np.uint16)
            _write_geotiff(out / cls / f"{cls}_{i + 1}.tif", stack, 10.0, None)


def _rsvqa(out: Path, n: int, seed: int, size: int, hr: bool) -> None:
    kind = "rsvqa_hr" if hr else "rsvqa_lr"
    prefix, img_dir = ("USGS", "Data") if hr else ("LR", "Images_LR")
    n_test = max(1, n // 5)
    n_val = max(1, n // 5) if n >= 3 else 0
    splits = [("train", n - n_val - n_test), ("val", n_val), ("test", n_test)]
    qid = aid = 0
    img_id = 0
    all_q: list[dict] = []
    all_a: list[dict] = []
    written: dict[str, dict[str, list[dict]]] = {}
    for split, count in splits:
        images, questions, answers = [], [], []
        for _ in range(count):
            rng = _rng(kind, seed, img_id)
            texture = ["residential", "farmland", "forest", "grassland"][int(rng.integers(4))]
            rgb = _scene(rng, texture, size)
            pil = Image.fromarray(rgb)
            draw = ImageDraw.Draw(pil)
            n_build = int(rng.integers(0, 4)) + (3 if texture == "residential" else 0)
            boxes = _place(rng, size, n_build, 0.08, 0.16)
            for b in boxes:
                _draw(draw, "rect", b, (150, 60, 50))
            n_road = int(rng.integers(0, 3))
            for k in range(n_road):  # roads: horizontal grey bands
                y = int(rng.integers(0, size - 2))
                draw.rectangle((0, y, size - 1, y + max(1, size // 24)), fill=(110, 110, 110))
            arr = np.maximum(np.asarray(pil), 1)
            _write_geotiff(out / img_dir / f"{img_id}.tif", arr.transpose(2, 0, 1).copy(), 0.15 if hr else 10.0, 0,
                           origin=(500000.0 + img_id * size * 10, 5000000.0))
            nb = len(boxes)
            qa = [("presence", "Is there a building?", "yes" if nb else "no"),
                  ("comp", "Are there more buildings than roads?", "yes" if nb > n_road else "no"),
                  ("count", "How many buildings are there?", str(nb))]
            if hr:
                area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) * 2  # 0.15 m pixels, scaled up
                qa.append(("area", "What is the area covered by buildings?", f"{area}m2"))
            else:
                qa.append(("rural_urban", "Is it a rural or an urban area", "urban" if nb >= 3 else "rural"))
            q_ids = []
            for qtype, text, ans in qa:
                questions.append({"id": qid, "img_id": img_id, "type": qtype, "question": text, "answers_ids": [aid],
                                  "active": True, "date_added": 1_600_000_000.0, "people_id": 0})
                answers.append({"id": aid, "question_id": qid, "answer": ans, "active": True,
                                "date_added": 1_600_000_000.0, "people_id": 0})
                q_ids.append(qid)
                qid += 1
                aid += 1
            images.append({"id": img_id, "questions_ids": q_ids, "active": True, "original_name": f"tile_{img_id}.tif",
                           "sensor": "USGS" if hr else "S2", "people_id": 0, "date_added": 1_600_000_000.0,
                           "upperleft_map_x": 500000.0 + img_id * size * 10, "upperleft_map_y": 5000000.0,
                           "res_x": "0.15m" if hr else "10m", "res_y": "0.15m" if hr else "10m"})
            img_id += 1
        if images:  # one inactive (retracted) question, which converters must ignore
            questions.append({"id": qid, "img_id": images[0]["id"], "type": "presence", "question": "Is there a lake?",
                              "answers_ids": [aid], "active": False, "date_added": 1_600_000_000.0, "people_id": 0})
            answers.append({"id": aid, "question_id": qid, "answer": "maybe", "active": False,
                            "date_added": 1_600_000_000.0, "people_id": 0})
            qid += 1
            aid += 1
        written[split] = {"questions": questions, "answers": answers, "images": images}
        all_q += questions
        all_a += answers
    totals = {"questions": qid, "answers": aid, "images": img_id}
    for split, rows in written.items():  # as RSVQA's Splits.py writes them: position = id, others' items inactive
        for key, items in rows.items():
            mine = {item["id"]: item for item in items}
            full = [mine.get(i, {"id": i, "active": False}) for i in range(totals[key])]
            (out / f"{prefix}_split_{split}_{key}.json").write_text(json.dumps({key: full}), encoding="utf-8")
    (out / "all_questions.json").write_text(json.dumps({"questions": all_q}), encoding="utf-8")
    (out / "all_answers.json").write_text(json.dumps({"answers": all_a}), encoding="utf-8")


def _dior_rsvg(out: Path, n: int, seed: int, size: int) -> None:
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    names = list(DIOR_OBJECTS)
    obj_index = 0
    split_of: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i in range(n):
        rng = _rng("dior_rsvg", seed, i)
        texture = ["residential", "bare rock", "grassland", "desert"][int(rng.integers(4))]
        pil = Image.fromarray(_scene(rng, texture, size))
        draw = ImageDraw.Draw(pil)
        boxes = _place(rng, size, int(rng.integers(1, 4)))
        objs = []
        for b in boxes:
            name = names[int(rng.integers(len(names)))]
            rgb, shape, phrase = DIOR_OBJECTS[name]
            _draw(draw, shape, b, rgb)
            objs.append((name, b, f"The {phrase} {_where(b, size)}"))
        stem = f"{i + 1:05d}"
        pil.save(out / "JPEGImages" / f"{stem}.jpg", format="JPEG", quality=92)
        parts = [(f"<annotation>\n  <filename>{stem}.jpg</filename>\n  <source><database>DIOR</database></source>\n"
                  f"  <size>\n    <width>{size}</width>\n    <height>{size}</height>\n    <depth>3</depth>\n  </size>\n")]
        for name, b, desc in objs:
            # VOC boxes are inclusive pixel indexes: xmax = last column covered
            parts.append(f"  <object>\n    <name>{escape(name)}</name>\n    <pose>Unspecified</pose>\n"
                         f"    <bndbox>\n      <xmin>{b[0]}</xmin>\n      <ymin>{b[1]}</ymin>\n"
                         f"      <xmax>{b[2]}</xmax>\n      <ymax>{b[3]}</ymax>\n    </bndbox>\n"
                         f"    <description>{escape(desc)}</description>\n  </object>\n")
            r = (obj_index * 7 + seed) % 10
            split_of["train" if r < 6 else "val" if r < 8 else "test"].append(obj_index)
            obj_index += 1
        parts.append("</annotation>\n")
        (out / "Annotations" / f"{stem}.xml").write_text("".join(parts), encoding="utf-8")
    for split, idx in split_of.items():
        (out / f"{split}.txt").write_text("".join(f"{k}\n" for k in idx), encoding="utf-8")


# --------------------------------------------------------------------------------------------- API
def _classes(kind: str, options: dict[str, Any]) -> list[str] | None:
    """The ``classes`` option of a classification kind, checked before anything is written (a misspelt class was
    a raw KeyError after the classes before it were drawn, a string its letters, a misspelt option ignored)."""
    known = {"ucmerced": UCMERCED_CLASSES, "eurosat_ms": EUROSAT_CLASSES}.get(kind)
    extra = sorted(set(options) - ({"classes"} if known is not None else set()))
    if extra:
        allowed = "classes" if known is not None else "none"
        raise DomainError(f"unknown option(s) {', '.join(extra)} for synthetic kind {kind!r} (options: {allowed})")
    classes = options.get("classes")
    if classes is None:
        return None
    if isinstance(classes, str):
        names = [c.strip() for c in classes.split(",")]
    else:
        names = list(classes) if isinstance(classes, (list, tuple)) else []
    unknown = [c for c in names if not isinstance(c, str) or c not in known]
    if unknown or not names:
        raise DomainError(f"classes must be a non-empty list of {kind} classes ({', '.join(known)}), got "
                          f"{classes!r}" + (f" ({', '.join(map(repr, unknown))} unknown)" if unknown else ""))
    return names


def generate(kind: str, out: str | Path, n: int = 4, seed: int = 0, size: int | None = None, **options: Any) -> Path:
    """Write a small synthetic data set of `kind` (see the module notes) under `out`; returns `out`.

    `n`: images per class (``ucmerced``, ``eurosat_ms``) or images in all (``rsvqa_*``, ``dior_rsvg``); 1 to 1000
    (:data:`domains.base.MAX_SYNTHETIC_N`).
    `size`: image side in pixels, 8-1024 (default per kind: tiny, for tests). `options`: ``classes=[...]`` (or one
    comma-separated string) for the classification kinds, a subset of their class folders; any other is refused.
    """
    n = check_synthetic_call(kind, KINDS, n, seed)
    size = _DEFAULT_SIZE[kind] if size is None else size
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):  # int() turned 2.5 into 2 and "x" a ValueError
        raise DomainError(f"size must be a whole number of pixels, got {size!r}")
    size = int(size)
    if size < 8:
        raise DomainError(f"size must be >= 8 pixels, got {size}")
    if size > MAX_SIZE:  # refused before allocating: the scenes are drawn whole in memory
        raise DomainError(f"size must be <= {MAX_SIZE} pixels, got {size}")
    classes = _classes(kind, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "ucmerced":
        _ucmerced(out, n, seed, size, classes)
    elif kind == "eurosat_ms":
        _eurosat_ms(out, n, seed, size, classes)
    elif kind in ("rsvqa_lr", "rsvqa_hr"):
        _rsvqa(out, n, seed, size, hr=kind == "rsvqa_hr")
    else:
        _dior_rsvg(out, n, seed, size)
    return out


def generate_all(out_dir: str | Path, kinds: Iterable[str] | str | None = None, n: int = 4, seed: int = 0,
                 size: int | None = None, progress: Progress = True) -> dict[str, Path]:
    """Every kind (or `kinds`: a list, or one comma-separated string) under ``out_dir/<kind>``; the
    ``remote_sensing`` plugin's ``synthetic``. `progress`: a bar over the data sets
    (:func:`model.progress.progress_bar`)."""
    return generate_kinds(generate, out_dir, kinds, KINDS, n, "synthetic remote sensing", progress, seed=seed,
                          size=size)


generate_all.writes = kinds_written(KINDS)  # type: ignore[attr-defined]
