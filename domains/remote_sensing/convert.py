"""Convert public remote-sensing data sets into InternVL chat JSONL (``internvl.md`` §8).

Converters (each ``(src, out, **options) -> ConvertReport``; registered on the ``remote_sensing`` plugin):

* :func:`convert_classification` -- folder-per-class scene classification (UC Merced, AID, NWPU-RESISC45,
  EuroSAT RGB, EuroSAT MS 13-band) -> ``task: "classification"`` records.
* :func:`convert_rsvqa` -- RSVQA LR / HR JSON splits -> ``task: "rsvqa"`` records.
* :func:`convert_dior_rsvg` -- DIOR-RSVG VOC XML -> ``task: "grounding"`` and ``task: "region"`` records.

**Output.** ``out/<dataset>_<split>.jsonl`` (``report.outputs[split]``) with images written as PNG under
``out/images/<dataset>/...``; record ``image`` paths are relative to `out` (use `out` as the InternVL
``root``). Every record holds ``id``, ``image``, ``width``, ``height``, ``conversations`` (one human turn
starting ``<image>\\n`` and one gpt turn), ``task``, ``answer`` (the reference) and ``meta``.

**Idempotent and resumable.** The source is only read. An output PNG is re-used when it exists, is not
older than its source file and was made with the same image options (`bands`, `stretch`, `resize`: their
:func:`~domains.files.output_key` is stored in the PNG, so changed options rewrite it); PNGs are written
atomically, so a killed run leaves no half files; a JSONL is rewritten only when its content changes. Re-running on the same source therefore rewrites nothing and
gives byte-identical JSONL; a run that was stopped picks up where it left off.

**Bad input** (truncated / corrupt rasters, zero-size rasters, all-nodata images, unsupported data types,
boxes outside their image, empty class folders, malformed JSON / XML, missing images or answers, image names
that leave the data folder: ``path escapes data root``, :func:`domains.files.inside_root`) is skipped and
counted in the report under a reason, with the file named; the rest converts.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from domains.base import ConvertReport, DomainError, SkipInput, chat_record, comma_names
from domains.boxes import (
    MIN_INSIDE,
    Box,
    clip_box,
    render_ref_box,
    to_grid,
    upright_box,
)
from domains.class_folders import check_distinct_labels, class_label
from domains.files import (
    atomic_write,
    check_held_out_fraction,
    files_inside,
    image_size,
    inside_root,
    is_fresh,
    output_key,
    png_bytes,
    read_json_file,
    safe_name,
    split_of,
    unique_stems,
    write_output,
    write_splits,
)
from domains.parallel import Prefetch, check_workers
from domains.remote_sensing import PIL_SUFFIXES, RASTER_SUFFIXES, chip_starts
from domains.remote_sensing.metrics import BUCKET_LABELS, area_bucket, label_key
from model.limits import DEFAULT_MAX_PIXELS
from model.progress import Progress, progress_bar
from model.tiling import ImageLoadError, upright_size

__all__ = [
    "CLASSIFICATION_DATASETS",
    "CLASSIFICATION_INSTRUCTION",
    "EUROSAT_MS_STRETCH",
    "GROUNDING_QUESTION",
    "REGION_QUESTION",
    "RSVQA_INSTRUCTION",
    "class_label",
    "convert_classification",
    "convert_dior_rsvg",
    "convert_rsvqa",
    "normalize_rsvqa_answer",
    "rsvqa_bucket",
]

CLASSIFICATION_DATASETS = ("ucmerced", "aid", "nwpu", "eurosat", "eurosat_ms")
# EuroSAT MS (Sentinel-2 L1C, reflectance x 10000): its RGB's "auto" stretch, torchgeo's clip(x / 3000, 0, 1)
EUROSAT_MS_STRETCH = "fixed:0,3000"
# GeoChat / Mini-InternVL remote-sensing scene-classification prompt (domains.md §2.3)
CLASSIFICATION_QUESTION = "Classify the image from the following classes: {classes}."
CLASSIFICATION_INSTRUCTION = "Answer in one word or a short phrase."
RSVQA_INSTRUCTION = "Answer the question using a single word or phrase."
GROUNDING_QUESTION = "Please provide the bounding box coordinate of the region this sentence describes: <ref>{}</ref>"
REGION_QUESTION = "What object is in this location [[{}, {}, {}, {}]]?"

# PNG text chunk of a GeoTIFF's output: its read's notes, so a re-run that re-uses the PNG need not open the GeoTIFF
NOTES_CHUNK = "pocket-adapt:notes"
_SOURCE = "<source>"  # stands for the source's path in a stored note: the output never names where its source lay
IMAGE_SUFFIXES = PIL_SUFFIXES + RASTER_SUFFIXES


# --------------------------------------------------------------------------------------------- helpers




def _raster_reason(msg: str) -> str:
    m = msg.lower()
    if "zero-size" in m or "zero number of strips" in m or "dimensions" in m:
        return "zero-size raster"
    if "every pixel is nodata" in m:
        return "all nodata"
    if "unsupported data type" in m:
        return "unsupported data type"
    if "no such file" in m:
        return "missing image"
    if "band" in m and ("no band named" in m or "out of range" in m or "give 1 band" in m):
        return "bad band selection"
    return "unreadable image"


def _load_rgb(path: Path, bands: Sequence[int | str] | None = None, stretch: Any = "auto",
              nodata: float | None = None, notes: list[tuple[str, str]] | None = None) -> Image.Image:
    """Source image -> PIL RGB through :func:`~domains.remote_sensing.raster.read_image` (JPEG / PNG / BMP: the
    one image reader; TIFFs: rasterio). ``stretch="auto"``: uint8 rasters kept as they are, others 2-98 %.
    `nodata`: the pixel value that marks no data (default: the file's). `notes`: a list that receives a GeoTIFF's
    :func:`~domains.remote_sensing.raster.image_notes`, from this read. Raises :class:`SkipInput` with a reason."""
    if not path.is_file():
        raise SkipInput("missing image", f"{path}: no such file")
    from domains.remote_sensing.raster import RasterError, read_image

    options: dict[str, Any] = {} if nodata is None else {"nodata": nodata}
    if notes is not None and path.suffix.lower() in RASTER_SUFFIXES:
        options["notes"] = notes
    try:
        image = read_image(path, bands=bands, stretch=stretch, **options)[0]
    except ImageLoadError as exc:
        raise SkipInput("unreadable image", f"{path}: cannot read image (corrupt or truncated?): {exc.reason}") \
            from exc
    except RasterError as exc:
        raise SkipInput(_raster_reason(str(exc)), str(exc)) from exc
    if image.width == 0 or image.height == 0:
        raise SkipInput("zero-size raster", f"{path}: zero-size image {image.width}x{image.height}")
    return image


def _note_raster(report: ConvertReport, path: Path, bands: Sequence[int | str] | None, stretch: Any = "auto",
                 nodata: float | None = None, read: list | None = None) -> None:
    """Count in `report` what the scene-chip reader says of a scene, for a GeoTIFF read whole
    (:func:`~domains.remote_sensing.raster.image_notes`: bands 1, 2, 3 of 4+ taken as RGB on a guess, a nodata
    that masks nothing, zeros taken as data without a nodata value). `read`: what :func:`_image_out` put there --
    the notes of the read that made the output, or those it stored (:data:`NOTES_CHUNK`) when it was re-used; for an
    output made without them, the file is looked at here, so the report is the same on every run."""
    if path.suffix.lower() not in RASTER_SUFFIXES:
        return
    from domains.remote_sensing.raster import image_notes

    try:
        notes = read[0] if read else image_notes(path, bands, stretch, nodata)
    except Exception:  # noqa: BLE001 - the image was read; a file that fails now is not this note's business
        return
    for reason, detail in notes:
        report.warn(path, reason, detail)


def _image_out(src_img: Path, dst: Path, step: tuple, key: str, expect: tuple[int, int] | None = None,
               pf: Prefetch | None = None, read: list | None = None) -> tuple[int, int]:
    """Write `dst` from `src_img` unless it is already there, fresh, made with the options `key` stands for
    (:func:`~domains.files.output_key`) and of size `expect`; returns (W, H). `step`: ``(fn, args)``, a
    module-level function returning ``(PNG bytes, (W, H))`` or ``(PNG bytes, (W, H), notes)`` (:func:`_png_step`),
    computed through `pf` (:class:`domains.parallel.Prefetch`: ahead in a worker process with ``workers > 1``)
    under the key `dst`. `read`: a list that receives the step's notes when the step ran, or those the re-used
    output stored (stays empty when it has none), for :func:`_note_raster`."""
    if is_fresh(dst, src_img, key):
        try:
            size = image_size(dst)
            if expect is None or tuple(size) == tuple(expect):
                stored = _stored_notes(dst, src_img) if read is not None else None
                if stored is not None:
                    read.append(stored)
                return size
        except (OSError, UnidentifiedImageError):
            pass  # a damaged output: write it again
    fn, args = step
    data, size, *notes = (pf or Prefetch()).get(dst, fn, *args)
    write_output(dst, data, src_img)
    if read is not None and notes:
        read.append(notes[0])
    return size


def _stored_notes(dst: Path, src_img: Path) -> list[tuple[str, str]] | None:
    """The notes a fresh output `dst` of `src_img` stored (:func:`_png_step`), or None without (readable) ones."""
    try:
        with Image.open(dst) as im:
            stored = json.loads(im.info[NOTES_CHUNK])
        notes = [(str(reason), str(detail).replace(_SOURCE, str(src_img))) for reason, detail in stored]
    except (OSError, UnidentifiedImageError, KeyError, TypeError, ValueError):
        return None
    return notes


def _png_step(src_img: Path, key: str, bands: Sequence[int | str] | None = None, stretch: Any = "auto",
              resize: int | None = None, exact: tuple[int, int] | None = None,
              nodata: float | None = None) -> tuple[bytes, tuple[int, int], list[tuple[str, str]]]:
    """The expensive, pure part of one output image (runs in a worker with ``workers > 1``): read `src_img`
    (:func:`_load_rgb`), resize it (longer side `resize`, or to `exact` (W, H)), encode it as
    :func:`~domains.files.png_bytes` does; returns (PNG bytes, (W, H), the read's notes for :func:`_note_raster`),
    a GeoTIFF's notes also stored in the PNG (:data:`NOTES_CHUNK`). Raises :class:`SkipInput`."""
    notes: list[tuple[str, str]] = []
    img = _load_rgb(src_img, bands, stretch, nodata, notes)
    if exact is not None:
        img = img.resize(tuple(exact), Image.Resampling.BICUBIC)
    elif resize is not None:
        img = img.resize(_resized_size(img.size, resize), Image.Resampling.BICUBIC)
    text = None
    if src_img.suffix.lower() in RASTER_SUFFIXES:
        text = {NOTES_CHUNK: json.dumps([[reason, detail.replace(str(src_img), _SOURCE)] for reason, detail in notes])}
    return png_bytes(img, key, text), img.size, notes


# --------------------------------------------------------------------------------------------- classification
def _listed(p: Path) -> bool:
    """Not a hidden entry, nor the ``__MACOSX`` folder / ``._name`` AppleDouble files a zip made on a Mac holds."""
    return not p.name.startswith(".") and p.name != "__MACOSX"


def _class_root(src: Path) -> Path:
    """Descend through single wrapper folders (``UCMerced_LandUse/Images/...``; EuroSAT-MS's archive nests its class
    folders six deep: ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>``) to the class folders."""
    root = src
    for _ in range(16):
        subdirs = [p for p in root.iterdir() if _listed(p) and p.is_dir()]
        files = [p for p in root.iterdir() if _listed(p) and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if len(subdirs) == 1 and not files:
            root = subdirs[0]
        else:
            break
    return root


# split folder names, any case, with an optional "_set" / "-2017" / " data" tail: Train, training, trainval, val2017, dev
_SPLIT_FOLDER = re.compile(r"^(train|training|trainval|val|valid|validation|eval|evaluation|dev|test|testing)"
                           r"([ _-]?(set|data|split|images|\d+))?$", re.IGNORECASE)


def _split_refusal(root: Path, names: list[str]) -> str:
    """Why `root`'s split folders are no class folders, and the commands that convert them."""
    train = next((n for n in names if n.lower().startswith("train")), names[0])
    return (f"{root}: holds split folders ({', '.join(names)}), not class folders; convert each split's folder of "
            f"class folders on its own, into its own --out and with --option test_fraction=0 (the split is given), "
            f"e.g. --src {root / train} --out <out>/{safe_name(train.lower())} --option test_fraction=0")


def _class_images(d: Path, src: Path, report: ConvertReport) -> list[Path]:
    """The images in class folder `d` and, recursively, in its folders (sorted; hidden entries and ``__MACOSX``
    left out). A symlinked folder is not entered (a link to a parent would loop): it is skipped and counted,
    as ``path escapes data root`` when it leads out of `src`."""
    found: list[Path] = []
    for top, dirs, files in os.walk(d, followlinks=False):
        here = Path(top)
        dirs[:] = sorted(n for n in dirs if _listed(here / n))
        for n in list(dirs):
            sub = here / n
            if sub.is_symlink():
                dirs.remove(n)
                try:
                    inside_root(src, sub.relative_to(src).as_posix())
                except SkipInput as exc:
                    report.skip(sub, exc.reason, exc.detail)
                    continue
                report.skip(sub, "symlinked folder", f"{sub}: a symlinked folder is not entered (it could loop); "
                                                     "put its images in the class folder")
        found += [here / n for n in files if _listed(here / n) and n.lower().endswith(IMAGE_SUFFIXES)
                  and (here / n).is_file()]
    return sorted(found)


def _check_stretch(stretch: Any) -> None:
    from domains.remote_sensing.raster import (
        check_stretch_option,  # rasterio: only once a conversion runs
    )

    check_stretch_option(stretch)


def _bands_option(bands: Any) -> Any:
    """`bands` as the readers take it: a string (``--option bands=4,3,2``) read as the demo reads one (``"4,3,2"`` ->
    ``[4, 3, 2]``, ``"auto"`` -> None; not one or three bands: DomainError), where the reader took it for one band
    name and skipped every image."""
    from domains.remote_sensing.demo import parse_bands

    return parse_bands(bands) if isinstance(bands, str) else bands


def _check_nodata(nodata: Any) -> float | None:
    from domains.remote_sensing.raster import check_nodata_option

    return check_nodata_option(nodata)


def _image_key(bands: Any, stretch: Any, resize: int | None, nodata: float | None) -> str:
    """:func:`~domains.files.output_key` of a whole-image converter's PNGs; `nodata` only when given, so outputs made
    before the option existed stay fresh. A stretch given is marked as applied to JPEG / PNG too: before, they were
    written unstretched under the same options, and such a PNG must not pass for fresh."""
    extra = {} if nodata is None else {"nodata": nodata}
    if stretch is not None and stretch != "auto":
        extra["pictures_stretched"] = True
    return output_key(bands=bands, stretch=stretch, resize=resize, **extra)


def convert_classification(src: str | Path, out: str | Path, dataset: str = "ucmerced",
                           bands: Sequence[int | str] | str | None = None, stretch: Any = "auto",
                           test_fraction: float = 0.2, label_fn: Callable[[str], str] = class_label,
                           resize: int | None = None, nested: bool = False, nodata: float | None = None,
                           workers: int = 1, progress: Progress = True) -> ConvertReport:
    """Folder-per-class scene classification -> ``task: "classification"`` records.

    `src` holds one folder per class (wrapper folders are descended); a class's images lie in its folder, and with
    `nested` also in folders below it (``forest/site1/a.tif``: class ``forest``; counted as the warning ``class
    images in subfolders``). Without `nested` such images are not read and the report says so, naming the option:
    the same layout is what a `src` one level too high looks like (data-set folders taken as classes). A
    symlinked folder is not entered and a symlink leading out of `src` is skipped (``path escapes data root``).
    Split folders in place of class folders (``train/``, ``Validation/``, ``val2017/``, ``trainval/``, any case) are
    refused: convert each one on its own, into its own `out`, with ``test_fraction=0``.
    Each image becomes a record whose
    human turn lists every class label (sorted), GeoChat / Mini-InternVL style::

        <image>\\nClassify the image from the following classes: a, b, c.\\nAnswer in one word or a short phrase.

    and whose answer is the label (:func:`class_label` of the folder name unless `label_fn` is given);
    ``options`` holds the labels, ``meta`` the class folder and the source path.

    `dataset`: one of :data:`CLASSIFICATION_DATASETS` (names the outputs). For ``"eurosat_ms"`` (13-band
    GeoTIFFs) `bands` defaults to B04, B03, B02 (EuroSAT file order, B8A last) and, with those bands,
    ``stretch="auto"`` means ``fixed:0,3000`` (:data:`EUROSAT_MS_STRETCH`: reflectance x 10000, as torchgeo draws
    it), so a forest or a lake keeps its colour in every patch (a per-patch percentile stretch made a dark lake as
    bright as a field); other `bands` (near infra-red B08 reaches 5000 and more) keep the percentile ``auto`` unless
    a stretch is given. `bands`: the bands shown as RGB, 1-based indexes or names (default: B04, B03, B02 for
    ``eurosat_ms``, else the file's red, green, blue, else bands 1, 2, 3), passed to
    :func:`~domains.remote_sensing.raster.read_rgb`.
    `stretch`: ``"auto"`` (uint8 as is, else 2-98 %; for ``eurosat_ms`` with its default bands ``fixed:0,3000``),
    ``None``, percentiles or ``"fixed:LOW,HIGH"`` (stored values to 0..255 in every image alike: ``fixed:0,3000``
    for EuroSAT MS, whose per-image percentiles give the same ground another colour in each image); JPEG / PNG
    images take a stretch or `nodata` given on their stored values as GeoTIFFs do. `test_fraction`: share of images
    put in the ``test`` split, chosen by a hash of the relative path (stable across runs and machines). `resize`:
    longer image side of the output PNGs. `nested`: also read the images below a class folder
    (``forest/site1/a.tif``: class ``forest``; counted as the warning ``class images in subfolders``); without it
    they are left unread and the report says so.
    `nodata`: the pixel value that marks no data in GeoTIFFs (default: the file's own); a GeoTIFF whose zeros are
    taken as data (no nodata value) so that they drag the percentile stretch or make it all black is counted as the
    warning ``zero fill without nodata`` (as ``scene_chips`` does): pass ``nodata=0`` when they are fill.
    `workers`: processes reading and encoding the images (:mod:`domains.parallel`; output byte-identical to 1).
    `progress`: a bar over the images (:func:`model.progress.progress_bar`).
    """
    src, out = Path(src), Path(out)
    if dataset not in CLASSIFICATION_DATASETS:
        raise DomainError(f"dataset must be one of {CLASSIFICATION_DATASETS}, got {dataset!r}")
    check_held_out_fraction(test_fraction)
    _check_stretch(stretch)
    bands = _bands_option(bands)
    nodata = _check_nodata(nodata)
    if not src.is_dir():
        raise DomainError(f"{src}: not a directory (expected one folder per class)")
    if dataset == "eurosat_ms" and bands is None:
        bands = ["B04", "B03", "B02"]
        if stretch == "auto":  # per-image percentiles gave the same ground another colour in each 64 x 64 patch
            stretch = EUROSAT_MS_STRETCH
    report = ConvertReport(dataset=dataset, source=src, out=out)
    root = _class_root(src)
    class_dirs = sorted(p for p in root.iterdir() if _listed(p) and p.is_dir())
    loose = sorted(p.name for p in root.iterdir() if _listed(p) and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not class_dirs and loose:  # --src one class folder, or a flat export: no label to give any image
        more = ", ..." if len(loose) > 3 else ""
        raise DomainError(f"{root}: holds {len(loose)} image(s) ({', '.join(loose[:3])}{more}) but no class folders;"
                          " scene classification reads one folder per class "
                          "(<src>/<class>/<image>): give the folder above the class folders")
    splits_found = sorted(d.name for d in class_dirs if _SPLIT_FOLDER.match(d.name))
    if splits_found:  # read as classes, "train" and "test" would each hold every class's images
        raise DomainError(_split_refusal(root, splits_found))
    classes: list[tuple[Path, list[Path]]] = []
    for d in class_dirs:
        # without `nested` the folders below are only looked into for the hint: what they hold is not reported
        found = _class_images(d, src, report if nested else ConvertReport(dataset=dataset, source=src, out=out))
        imgs = files_inside(src, [p for p in found if nested or p.parent == d], report)  # a link out of src: refused
        below = [p for p in (imgs if nested else found) if p.parent != d]
        folders = sorted({p.relative_to(d).parts[0] for p in below})
        named = f"({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''})"
        if below and not nested:
            hint = (f"its folders {named} hold {len(below)} image(s), not read: pass --option nested=true to read "
                    f"them as class {label_fn(d.name)!r}, or give --src the folder that holds the class folders")
            if imgs:
                report.warn(d, "class subfolders not read", f"{d}: {hint}")
        if not imgs:
            subs = sorted(p.name for p in d.iterdir() if _listed(p) and p.is_dir())
            inside = f", nor do its folders ({', '.join(subs[:3])}{', ...' if len(subs) > 3 else ''})" if subs else ""
            report.skip(d, "empty class folder", f"{d}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})"
                        + (f"; {hint}" if below else inside))
            continue
        if below and nested:  # said, so that a folder that is no part of the class (an extra copy, a mask set) is seen
            report.warn(d, "class images in subfolders", f"{d}: {len(below)} of its {len(imgs)} images lie in its "
                        f"folders {named} and are read as class {label_fn(d.name)!r}")
        classes.append((d, imgs))
    check_distinct_labels(root, [d.name for d, _ in classes], label_fn, key=label_key)
    labels = sorted({label_fn(d.name) for d, _ in classes})
    question = CLASSIFICATION_QUESTION.format(classes=", ".join(labels)) + "\n" + CLASSIFICATION_INSTRUCTION
    splits: dict[str, list[dict]] = {"train": [], "test": []} if test_fraction > 0 else {"train": []}
    longer = _resize_option(resize)
    key = _image_key(bands, stretch, longer, nodata)

    def step(img: Path) -> tuple:
        return _png_step, (img, key, bands, stretch, longer, None, nodata)

    # by the path in the class folder: a.png and a.jpg, or site1/a.tif and site2/a.tif, are two outputs
    stems = {d: unique_stems(img.relative_to(d).as_posix() for img in imgs) for d, imgs in classes}

    def stem(d: Path, img: Path) -> str:
        return stems[d][img.relative_to(d).as_posix()]

    def plan():
        for d, imgs in classes:
            for img in imgs:
                yield (out / f"images/{dataset}/{safe_name(d.name)}/{stem(d, img)}.png", *step(img))

    label_of = {d: label_fn(d.name) for d, _ in classes}
    with Prefetch(workers, plan) as pf:
        for d, img in progress_bar([(d, img) for d, imgs in classes for img in imgs], desc=dataset, unit="image",
                                   progress=progress):
            label = label_of[d]
            rel = img.relative_to(root).as_posix()
            image = f"images/{dataset}/{safe_name(d.name)}/{stem(d, img)}.png"
            read: list = []
            try:
                size = _image_out(img, out / image, step(img), key, pf=pf, read=read)
            except SkipInput as exc:
                report.skip(img, exc.reason, exc.detail)
                continue
            _note_raster(report, img, bands, stretch, nodata, read)
            rid = f"{dataset}/{safe_name(d.name)}/{stem(d, img)}"
            splits[split_of(rel, test_fraction)].append(chat_record(
                rid, image, size, question, label, "classification", options=list(labels), label=label,
                meta={"dataset": dataset, "class_dir": d.name, "source": rel}))
    return write_splits(report, out, dataset, splits)


def _resize_option(resize: Any) -> int | None:
    """The `resize` option as a positive whole number of pixels (or None); DomainError otherwise."""
    if resize is None:
        return None
    try:
        value = float(resize)
        ok = not isinstance(resize, bool) and value.is_integer() and value >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DomainError(f"resize must be a positive longer-side length in pixels, got {resize!r}")
    longest = math.isqrt(DEFAULT_MAX_PIXELS)
    if value > longest:  # refused before any image is enlarged: a mistyped 100000 allocated tens of GB
        raise DomainError(f"resize must be at most {longest} pixels (a square output image must stay within "
                          f"{DEFAULT_MAX_PIXELS:,} pixels, the image reader's limit), got {resize!r}")
    return int(value)


def _resized_size(size: tuple[int, int], longer: int) -> tuple[int, int]:
    w, h = size
    s = longer / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


# --------------------------------------------------------------------------------------------- RSVQA
def normalize_rsvqa_answer(answer: Any, qtype: str | None = None) -> str:
    """RSVQA answer -> the scored form: lower case, spaces collapsed; area ``"1 234 m2"`` / ``"1,234 m2"`` ->
    ``"1234m2"``, ``"1,5 m2"`` (decimal comma) -> ``"1.5m2"``; count ``"1 234"`` / ``"1,234"`` -> ``"1234"``. `qtype`
    is read in any case."""
    text = " ".join(str(answer).strip().lower().split())
    qtype = str(qtype or "").strip().lower()  # as the metrics read it: "Count" is a count
    if qtype == "area" or re.fullmatch(r"[\d ,.]+\s*m2", text):
        m = re.fullmatch(r"([\d ,.]+?)\s*m2", text)
        if m:
            number = m.group(1).replace(" ", "")
            # a last comma before other than 3 digits is no thousands separator: a decimal comma ("1,5 m2")
            decimal = re.fullmatch(r"(\d+|\d{1,3}(?:,\d{3})+),(\d{1,2}|\d{4,})", number)
            number = f"{decimal[1]}.{decimal[2]}" if decimal else number
            text = number.replace(",", "") + "m2"
    elif qtype == "count" and re.fullmatch(r"\d{1,3}(?:[ ,]\d{3})+", text):
        # digit groups only: "1,234" had no bucket, and every space went ("between 1 and 10" -> "between1and10")
        text = text.replace(" ", "").replace(",", "")
    return text


def rsvqa_bucket(answer: str) -> str | None:
    """Count / area answers in the Mini-InternVL buckets ``0``, ``1-100``, ``101-1000``, ``>1000``; an RSVQA-HR
    area class by the bucket it lies in (``"between 10m2 and 100m2"``: ``1-100``), as the metrics score it."""
    k = area_bucket(answer)
    return BUCKET_LABELS[k] if k is not None else None


# full release: LR_split_train_questions.json / USGS_split_test_phili_questions.json; all_questions.json; the
# website's sample: USGS_split_train_questions_reduced.js, questionsS2_reduced.js (JSON wrapped in JavaScript)
_RSVQA_SPLIT = re.compile(r"^(?P<prefix>.+?)_split_(?P<split>.+?)_questions(?:_reduced)?\.(?:json|js)$")
_RSVQA_WHOLE = re.compile(r"^(?:(?P<all>all)_questions|questions(?P<prefix>[A-Za-z0-9]*?))(?:_reduced)?\.(?:json|js)$")
_HR_PREFIXES = ("USGS", "HR")
# image folders, looked for in this order: full release, other spellings, the website's sample
_RSVQA_IMAGE_DIRS = {"hr": ("Data", "Images_HR", "dataUSGS_reduced"), "lr": ("Images_LR", "Data", "data_S2_reduced")}
_JS_JSON = re.compile(r"JSON\.parse\(\s*'(?P<body>.*)'\s*\)\s*;?\s*$", re.DOTALL)


def _json_text(path: Path) -> Any:
    """A JSON file, or the website's ``var x = JSON.parse('{...}');`` / ``var x = {...};`` JavaScript."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".js":
        return json.loads(text)
    m = _JS_JSON.search(text)
    body = m.group("body") if m else text[text.find("{"): text.rfind("}") + 1]
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return json.loads(body.replace("\\'", "'"))  # a JS-escaped quote inside the single-quoted string


def _load_json(path: Path, key: str, report: ConvertReport) -> list | None:
    """The `key` list of an RSVQA file (`_json_text`), or None with the file counted as a skip (`read_json_file`)."""

    def rows(path: Path) -> list:
        data = _json_text(path)
        found = data[key] if isinstance(data, dict) else None
        if not isinstance(found, list):
            raise TypeError(f"expected an object with a {key!r} list")
        return found

    return read_json_file(path, report, rows)


def _sibling(qpath: Path, kind: str) -> Path:
    """``..._questions[_reduced].json`` -> the ``answers`` / ``images`` file of the same split."""
    name = qpath.name
    k = name.rindex("questions")
    return qpath.with_name(name[:k] + kind + name[k + len("questions"):])


def _rsvqa_files(src: Path, splits: Sequence[str] | None) -> list[tuple[str, str, Path]]:
    """(prefix, split, questions file) of the RSVQA question files in `src`. Per resolution (:func:`_resolution`)
    its split files, else its whole-set files (``questionsS2_reduced.js``); ``all_questions.json`` (which
    repeats the split files) only when there is nothing else."""
    split_files, tagged, untagged = [], [], []
    for p in sorted(src.glob("*questions*")):
        if not p.is_file() or not _listed(p):  # a Mac zip's ._LR_split_train_questions.json is no JSON
            continue
        m = _RSVQA_SPLIT.match(p.name)
        if m:
            if splits is None or m.group("split") in splits:
                split_files.append((m.group("prefix"), m.group("split"), p))
            continue
        m = _RSVQA_WHOLE.match(p.name)
        if m and (splits is None or "all" in splits):
            (tagged if m.group("prefix") else untagged).append((m.group("prefix") or "", "all", p))
    found = []
    for res in ("hr", "lr"):
        found += [f for f in split_files if _resolution(f[0]) == res] or [f for f in tagged if _resolution(f[0]) == res]
    return found or untagged


def _resolution(prefix: str) -> str:
    """``USGS`` / ``HR`` file prefixes are the HR set, anything else (``LR``, ``S2``) the LR set."""
    return "hr" if prefix.upper() in _HR_PREFIXES else "lr"


class _ImageFolder:
    """Finds an RSVQA tile by its id with whatever image suffix is present (``{id}.tif`` in the full release,
    ``{id}.png`` in the website's renumbered sample), through :func:`~domains.files.inside_root`."""

    ORDER = RASTER_SUFFIXES + PIL_SUFFIXES  # the original GeoTIFF first when a tile exists twice

    def __init__(self, root: Path):
        self.root = root
        self.listing: dict[Path, dict[str, Path]] = {}  # folder -> stem -> preferred file

    def _stems(self, folder: Path) -> dict[str, Path]:
        if folder not in self.listing:
            stems: dict[str, Path] = {}
            try:
                files = sorted(p for p in folder.iterdir() if p.suffix.lower() in self.ORDER)
            except OSError:
                files = []
            for p in sorted(files, key=lambda p: self.ORDER.index(p.suffix.lower())):
                stems.setdefault(p.stem, p)
            self.listing[folder] = stems
        return self.listing[folder]

    def find(self, img_id: str) -> Path:
        """The tile's file; SkipInput ``path escapes data root`` or ``missing image``."""
        base = inside_root(self.root, img_id)
        found = self._stems(base.parent).get(base.name)
        if found is None:
            raise SkipInput("missing image", f"no tile {img_id}.* in {self.root} (any of {', '.join(self.ORDER)})")
        return inside_root(self.root, f"{img_id}{found.suffix}")  # a symlinked tile must stay inside too


def _scalar_id(v: Any) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _answer_key(v: int | str) -> int | str:
    """An RSVQA answer id as matched: a number and its string (``12``, ``"12"``) are one id; other strings as is."""
    if isinstance(v, str) and v.strip().isascii() and v.strip().isdigit():
        return int(v.strip())
    return v


def _rsvqa_problem(q: dict) -> str | None:
    """What is wrong with the fields of RSVQA question `q` (ids are numbers or strings, the question a non-empty
    string, ``answers_ids`` one id or a list of them), or None."""
    ids = q["answers_ids"]
    if not _scalar_id(q["id"]):
        return f"id must be a number or a string, got {q['id']!r}"
    if not _scalar_id(q["img_id"]):
        return f"img_id must be a number or a string, got {q['img_id']!r}"
    if not isinstance(q["question"], str) or not q["question"].strip():
        return f"question must be a non-empty string, got {q['question']!r}"
    if not (_scalar_id(ids) or (isinstance(ids, list) and ids and all(_scalar_id(i) for i in ids))):
        return f"answers_ids must be an answer id or a non-empty list of them, got {ids!r}"
    return None


def convert_rsvqa(src: str | Path, out: str | Path, dataset: str | None = None, images_dir: str | Path | None = None,
                  splits: Sequence[str] | str | None = None, bands: Sequence[int | str] | str | None = None,
                  stretch: Any = "auto", resize: int | None = None, resolution: str | None = None,
                  nodata: float | None = None, workers: int = 1, progress: Progress = True) -> ConvertReport:
    """RSVQA (LR or HR) -> ``task: "rsvqa"`` VQA records, one per active question.

    Two layouts are read:

    * the **full release** (Zenodo): ``<prefix>_split_<split>_{questions,answers,images}.json`` (prefix ``LR``
      or ``USGS``), or ``all_questions.json`` / ``all_answers.json`` as one ``all`` split; tiles
      ``Images_LR/{img_id}.tif`` or ``Data/{img_id}.tif``;
    * the **website sample** (``syvlo/RSVQA_website``): ``USGS_split_train_{questions,answers,images}_reduced.js``
      and ``{questions,answers,images}S2_reduced.js`` (the JSON inside ``JSON.parse('…')``), tiles renumbered
      as ``dataUSGS_reduced/{img_id}.png`` / ``data_S2_reduced/{img_id}.png``.

    A tile is found by its id with **any image suffix present** (``.tif``, ``.tiff``, ``.jp2``, ``.img``, ``.png``,
    ``.jpg``, ``.jpeg``, ``.bmp``; the raster first when both exist), never by ``original_name``: that field names the
    tile the image was cut from (``"1206.png"``), which in the sample is *another* tile's number, so it is kept
    in ``meta["original_name"]`` only. An id that is not a plain name under the tiles' folder
    (``../../etc/passwd``, a symlink pointing outside) is skipped as ``path escapes data root`` without being
    read. Only ``active`` questions, answers and images are used; a question's answer is
    ``answers[answers_ids[0]]`` (an id written ``12`` in one file and ``"12"`` in the other is one id). A split file
    lists every id of the data set in order, the other splits' items as bare ``{"id": n, "active": false}``
    stand-ins: those are passed over without a word; an inactive question of this split (one with its fields) is
    counted as ``inactive question``.

    `images_dir`: the tiles' folder (default: the first present of ``Data``, ``Images_HR``,
    ``dataUSGS_reduced`` for HR; ``Images_LR``, ``Data``, ``data_S2_reduced`` for LR). `resolution`: ``lr`` or
    ``hr``, needed only by ``rsvqa`` when `src` holds both (the website repository does; ``rsvqa_lr`` and
    ``rsvqa_hr`` set it by their names); it picks the files by prefix (``USGS`` / ``HR`` are HR, others LR).
    `splits`: only these split names (``[train, test]`` or ``"train,test"``; ``all`` for the whole-set files).
    `bands`: the bands of multi-band tiles shown as RGB (1-based indexes or names; default the first three unless
    the file tags or names its red, green, blue; a 4+ band tile read so is counted in the report). `stretch`:
    ``auto`` (uint8 as is, else a 2-98 % percentile stretch), ``null``, two percentiles or ``"fixed:LOW,HIGH"``
    (stored values to 0..255). `nodata`: the pixel value that marks no data in the tiles
    (default: the file's own; zeros taken as data that drag the stretch are counted as ``zero fill without
    nodata``, as in ``scene_chips``). `resize`: longer side of the output PNGs in pixels.

    Prompt: ``question + "\\nAnswer the question using a single word or phrase."``; answer normalised by
    :func:`normalize_rsvqa_answer`. ``meta`` keeps ``question_type`` (scored per type), ``img_id``,
    ``question_id``, ``split``, ``original_name`` (when the images file gives one) and, for count / area, the
    Mini-InternVL ``bucket``. `dataset`: output name (default ``rsvqa_lr`` / ``rsvqa_hr``). `workers`: processes
    reading and encoding the tiles (:mod:`domains.parallel`; output byte-identical to 1). `progress`: a bar over
    each split's questions (:func:`model.progress.progress_bar`).

    A run that writes nothing (wrong folder, no tile found) leaves earlier outputs alone and ``adapt convert``
    exits 1 with the skip table.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DomainError(f"{src}: not a directory (expected the RSVQA json files)")
    if resolution is not None and str(resolution).lower() not in ("lr", "hr"):
        raise DomainError(f"resolution must be 'lr' or 'hr', got {resolution!r}")
    _check_stretch(stretch)
    bands = _bands_option(bands)
    nodata = _check_nodata(nodata)
    # a string is names, not text to search: "test_phili" in "test_phili" took the test split too
    found = _rsvqa_files(src, comma_names(splits) if splits is not None else None)
    if not found:
        raise DomainError(f"{src}: no RSVQA files (*_split_*_questions.json, all_questions.json, or the website "
                          "sample's *_questions_reduced.js / questionsS2_reduced.js)")
    kinds = sorted({_resolution(pre) for pre, _, _ in found})
    if resolution is None and len(kinds) > 1:
        raise DomainError(f"{src} holds both RSVQA HR (USGS) and LR files; pass --option resolution=hr or "
                          "resolution=lr")
    res = str(resolution).lower() if resolution is not None else kinds[0]
    found = [f for f in found if _resolution(f[0]) == res]
    if not found:
        other = "lr" if res == "hr" else "hr"
        raise DomainError(f"{src}: no RSVQA {res.upper()} files; it holds RSVQA {other.upper()} files (convert them "
                          f"as rsvqa_{other}, or as rsvqa with --option resolution={other})")
    dataset = dataset or f"rsvqa_{res}"
    if images_dir is None:
        images_dir = next((src / d for d in _RSVQA_IMAGE_DIRS[res] if (src / d).is_dir()),
                          src / _RSVQA_IMAGE_DIRS[res][0])
    images_dir = Path(images_dir)
    tiles = _ImageFolder(images_dir)
    report = ConvertReport(dataset=dataset, source=src, out=out)
    longer = _resize_option(resize)
    key = _image_key(bands, stretch, longer, nodata)
    out_splits: dict[str, list[dict]] = {}
    image_status: dict[str, tuple[str, tuple[int, int]] | SkipInput] = {}
    def plan():  # every tile a question names, in question order (a superset of those converted)
        finder, seen = _ImageFolder(images_dir), set()
        for _pre, _split, qpath in found:
            try:
                questions = _json_text(qpath)["questions"]
            except Exception:  # noqa: BLE001 - the loop reports it
                continue
            for q in questions if isinstance(questions, list) else []:
                img_key = str(q.get("img_id")) if isinstance(q, dict) else None
                if img_key is None or img_key in seen:
                    continue
                seen.add(img_key)
                try:
                    img_src = finder.find(img_key)
                except SkipInput:
                    continue
                yield (out / f"images/{dataset}/{safe_name(img_key)}.png", _png_step,
                       (img_src, key, bands, stretch, longer, None, nodata))

    with Prefetch(workers, plan) as pf:
        for pre, split, qpath in found:
            apath = _sibling(qpath, "answers")
            questions = _load_json(qpath, "questions", report)
            answers = _load_json(apath, "answers", report)
            if questions is None or answers is None:
                continue
            ipath = _sibling(qpath, "images")
            images_info: dict[str, dict] = {}
            if ipath.exists():
                images_info = {str(i.get("id")): i for i in _load_json(ipath, "images", report) or [] if isinstance(i, dict)}
            by_id = {_answer_key(a["id"]): a for a in answers if isinstance(a, dict) and _scalar_id(a.get("id"))}
            records: list[dict] = []
            for q in progress_bar(questions, desc=f"{dataset} {split}", unit="question", progress=progress):
                if isinstance(q, dict) and q.get("active") is False and set(q) <= {"id", "active"}:
                    continue  # another split's question: the public split files list every id, in order
                where = f"{qpath.name} question {q.get('id') if isinstance(q, dict) else '?'}"
                if not isinstance(q, dict) or not all(k in q for k in ("id", "img_id", "question", "answers_ids")):
                    report.skip(where, "malformed record", f"{where}: needs id, img_id, question, answers_ids")
                    continue
                problem = _rsvqa_problem(q)
                if problem:
                    report.skip(where, "malformed record", f"{where}: {problem}")
                    continue
                if not q.get("active", True):
                    report.skip(where, "inactive question", f"{where}: active is false")
                    continue
                ids = q["answers_ids"] if isinstance(q["answers_ids"], list) else [q["answers_ids"]]
                ans = by_id.get(_answer_key(ids[0])) if ids else None
                if ans is None or "answer" not in ans or not ans.get("active", True):
                    report.skip(where, "missing answer", f"{where}: no active answer {ids[:1]} in {apath.name}")
                    continue
                value = ans["answer"]
                if isinstance(value, bool) or not (isinstance(value, str) and value.strip()
                                                   or isinstance(value, (int, float)) and math.isfinite(value)):
                    # str() would train a null answer as "none", a list as its repr
                    report.skip(where, "malformed record", f"{where}: answer {ids[0]!r} in {apath.name} must be a "
                                                           f"non-empty string or a number, got {value!r}")
                    continue
                img_key = str(q["img_id"])
                info = images_info.get(img_key, {})
                if not info.get("active", True):
                    report.skip(where, "inactive image", f"{where}: image {img_key} is not active")
                    continue
                if img_key not in image_status:
                    image = f"images/{dataset}/{safe_name(img_key)}.png"
                    img_src: Path | str = images_dir / img_key
                    try:
                        img_src = tiles.find(img_key)
                        read: list = []
                        size = _image_out(img_src, out / image, (_png_step, (img_src, key, bands, stretch, longer, None, nodata)), key,
                                          pf=pf, read=read)
                        image_status[img_key] = (image, size)
                        _note_raster(report, img_src, bands, stretch, nodata, read)
                    except SkipInput as exc:
                        image_status[img_key] = exc
                        report.skip(img_src, exc.reason, exc.detail)  # counted once per image
                status = image_status[img_key]
                if isinstance(status, SkipInput):
                    report.skip(where, "image skipped", f"{where}: {status.reason}: {status.detail}")
                    continue
                qtype = str(q.get("type", ""))
                answer = normalize_rsvqa_answer(value, qtype)
                meta = {"dataset": dataset, "split": split, "question_type": qtype, "img_id": q["img_id"],
                        "question_id": q["id"]}
                if info.get("original_name") is not None:
                    meta["original_name"] = info["original_name"]
                if qtype.strip().lower() in ("count", "area"):  # as the metrics read it: "Count" is a count
                    meta["bucket"] = rsvqa_bucket(answer)
                question = str(q["question"]).strip() + "\n" + RSVQA_INSTRUCTION
                records.append(chat_record(f"{dataset}/{split}/{q['id']}", status[0], status[1], question, answer,
                                           "rsvqa", meta=meta))
            out_splits[split] = records
    return write_splits(report, out, dataset, out_splits)


# --------------------------------------------------------------------------------------------- DIOR-RSVG
def _xml_int(el: ET.Element | None, tag: str) -> float:
    node = el.find(tag) if el is not None else None
    if node is None or node.text is None:
        raise ValueError(f"missing <{tag}>")
    return float(node.text.strip())


def _split_indices(src: Path, report: ConvertReport) -> dict[int, str] | None:
    found: dict[int, str] = {}
    any_file = False
    for split in ("train", "val", "test"):
        p = src / f"{split}.txt"
        if not p.exists():
            continue
        any_file = True
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:  # without it every object's split is unknown: refused, not a traceback
            raise DomainError(f"{p}: cannot read the split file ({exc.strerror or exc})") from exc
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                idx = int(line)
            except ValueError:
                report.skip(f"{p}:{n}", "malformed split file", f"{p}:{n}: {line!r} is not an object index")
                continue
            first = found.setdefault(idx, split)
            if first != split:  # a train / test overlap: the object is kept in the first split only
                report.warn(f"{p}:{n}", "object in two split files",
                            f"{p}:{n}: object index {idx} is listed in {first}.txt too; kept in {first} only")
    return found if any_file else None


def _dior_image(root: ET.Element, xml: Path, images: Path) -> tuple[str, Path]:
    """The image annotation `xml` (parsed: `root`) names, as its name under `images` and its path: ``<filename>``
    (else the xml's stem, .jpg), a name without suffix that is no file taken with .jpg; `SkipInput` where the name
    leaves `images` (:func:`~domains.files.inside_root`)."""
    fname = (root.findtext("filename") or "").strip() or f"{xml.stem}.jpg"
    img_src = inside_root(images, fname)
    if not img_src.exists() and not Path(fname).suffix:
        fname = f"{fname}.jpg"
        img_src = inside_root(images, fname)
    return fname, img_src


def convert_dior_rsvg(src: str | Path, out: str | Path, dataset: str = "dior_rsvg",
                      tasks: Sequence[str] | str = ("grounding", "region"), resize: int | None = None,
                      images_dir: str = "JPEGImages", annotations_dir: str = "Annotations",
                      workers: int = 1, progress: Progress = True) -> ConvertReport:
    """DIOR-RSVG -> grounding and region-perception records.

    Reads ``Annotations/*.xml`` (sorted by name) and ``JPEGImages/<filename>``; a ``<filename>`` that is
    absolute or leaves ``JPEGImages`` (``../../etc/passwd``, a symlink pointing outside) is skipped as ``path
    escapes data root`` without being read. Each image is written once, as ``images/<dataset>/<name>.png``;
    ``a.jpg`` and ``a.png`` (two images of one stem) become ``a.jpg.png`` and ``a.png.png``
    (:func:`~domains.files.unique_stems`). Each ``<object>`` with a
    ``<description>`` gives, for `tasks`:

    * ``"grounding"``: ``<image>\\nPlease provide the bounding box coordinate of the region this sentence
      describes: <ref>{description}</ref>`` -> ``<ref>{description}</ref><box>[[x1, y1, x2, y2]]</box>``;
    * ``"region"``: ``<image>\\nWhat object is in this location [[x1, y1, x2, y2]]?`` -> the object name.

    Boxes are on the 0-1000 grid (``round(v / W * 1000)``); ``<bndbox>`` values are taken as pixel edges
    as RSVG-pytorch and the Mini-InternVL evaluator do. A box partly outside the image is clipped (counted as a
    warning), one at least half outside is skipped, and so is a zero-area one (``malformed box``). ``meta``
    keeps the pixel box in the *output* image (``bbox``), the output ``size`` [W, H], the original pixel box (``source_bbox``), ``source_size``, the
    object ``name`` and its global ``object_index``.

    Splits: ``train.txt`` / ``val.txt`` / ``test.txt`` in `src` list global object indices counted over the
    xml files in sorted order (RSVG-pytorch counts in ``os.walk`` order, which is the sorted order on
    most file systems); objects in none of them are skipped, one listed in two is kept in the first (train, val,
    test; counted as the warning ``object in two split files``), and skipped are the objects of every file after an
    unreadable XML (``object index unknown``: how many objects it held is unknown). Without split files everything goes to
    ``all``. `resize`: longer side of the output PNGs; boxes are scaled with the image, so the grid box is
    unchanged and the pixel round trip stays within one pixel. `tasks`: ``grounding`` and / or ``region`` (a list or
    a comma-separated string).
    `dataset`: output name. `images_dir`: the images' folder under `src`. `annotations_dir`: the XML folder
    under `src`. `workers`: processes reading and encoding the images (:mod:`domains.parallel`; output
    byte-identical to 1). `progress`: a bar over the annotation files (:func:`model.progress.progress_bar`).
    """
    src, out = Path(src), Path(out)
    tasks = comma_names(tasks)  # as nuScenes takes them: set("grounding") would be its letters
    unknown = set(tasks) - {"grounding", "region"}
    if unknown or not tasks:
        raise DomainError(f"tasks must be a non-empty subset of ('grounding', 'region'), got {tuple(tasks)!r}")
    ann_dir = src / annotations_dir
    if not ann_dir.is_dir():
        raise DomainError(f"{src}: no {annotations_dir}/ folder of VOC xml files")
    report = ConvertReport(dataset=dataset, source=src, out=out)
    split_map = _split_indices(src, report)
    out_splits: dict[str, list[dict]] = {s: [] for s in (("train", "val", "test") if split_map is not None else ("all",))}
    resize = _resize_option(resize)
    xml_files = sorted(p for p in ann_dir.glob("*.xml") if _listed(p))  # a Mac zip's ._name.xml is no annotation

    named: dict[Path, tuple[str, Path]] = {}  # the image each readable annotation names (the loop reports the rest)
    for xml in xml_files:
        try:
            named[xml] = _dior_image(ET.parse(xml).getroot(), xml, src / images_dir)
        except (ET.ParseError, OSError, SkipInput):
            pass
    # by the name under images_dir: a.jpg and a.png are two output PNGs, not one written over the other
    stems = unique_stems(name for name, _ in named.values())

    def plan():  # every annotated image, in the loop's order (a superset of those converted)
        for name, img_src in named.values():
            try:
                (src_w, src_h), _ = upright_size(img_src)
                wh = _resized_size((src_w, src_h), int(resize)) if resize else (src_w, src_h)
            except Exception:  # noqa: BLE001 - the loop reports it
                continue
            yield (out / f"images/{dataset}/{stems[name]}.png", *_dior_step(img_src, resize, wh))

    with Prefetch(workers, plan) as pf:
        obj_index = -1
        broken: Path | None = None  # the first unreadable XML: the split indices after it cannot be counted
        for xml in progress_bar(xml_files, desc=dataset, unit="file", progress=progress):
            try:
                root = ET.parse(xml).getroot()
                objects = root.findall("object")
            except (ET.ParseError, OSError) as exc:
                report.skip(xml, "malformed XML", f"{xml}: {exc}")
                broken = broken or xml
                continue
            first = obj_index + 1
            obj_index += len(objects)
            if not objects:
                report.skip(xml, "no objects", f"{xml}: no <object> elements")
                continue
            if broken is not None and split_map is not None:
                for k in range(len(objects)):
                    where = f"{xml.name} object {k}"
                    report.skip(where, "object index unknown",
                                f"{where}: {broken.name} cannot be read, so the global object indices of "
                                "train/val/test.txt are unknown for the files after it; repair it and convert again")
                continue
            try:  # the XML names the image: it must stay under the images folder (domains.files.inside_root)
                fname, img_src = _dior_image(root, xml, src / images_dir)
            except SkipInput as exc:
                report.skip(xml, exc.reason, f"{xml}: <filename> {exc.detail}")
                continue
            try:  # the size the PNG will have: load_image turns an image upright by its EXIF orientation
                (src_w, src_h), orientation = upright_size(img_src)
            except FileNotFoundError:
                report.skip(xml, "missing image", f"{xml}: image {img_src} not found")
                continue
            except (UnidentifiedImageError, OSError) as exc:
                report.skip(img_src, "unreadable image", f"{img_src}: {exc}")
                continue
            if src_w <= 0 or src_h <= 0:
                report.skip(img_src, "zero-size raster", f"{img_src}: zero-size image")
                continue
            out_w, out_h = _resized_size((src_w, src_h), int(resize)) if resize else (src_w, src_h)
            sx, sy = out_w / src_w, out_h / src_h
            image = f"images/{dataset}/{stems[fname]}.png"
            pending: list[tuple[str, dict]] = []
            for k, obj in enumerate(objects):
                idx = first + k
                where = f"{xml.name} object {k} (index {idx})"
                split = "all" if split_map is None else split_map.get(idx)
                if split is None:
                    report.skip(where, "not in split files", f"{where}: listed in no train/val/test.txt")
                    continue
                name = (obj.findtext("name") or "").strip()
                desc = " ".join((obj.findtext("description") or "").split())
                try:
                    bb = obj.find("bndbox")
                    raw = Box(_xml_int(bb, "xmin"), _xml_int(bb, "ymin"), _xml_int(bb, "xmax"), _xml_int(bb, "ymax"))
                    raw.checked()
                    if raw.area <= 0:
                        raise ValueError(f"box {tuple(raw)} has zero area (xmin == xmax or ymin == ymax)")
                except ValueError as exc:
                    report.skip(where, "malformed box", f"{xml}: object {k}: {exc}")
                    continue
                turned = raw
                if orientation != 1:  # boxes are in the stored pixel grid (as in RSVG-pytorch's cv2 reads)
                    stored = (src_h, src_w) if orientation >= 5 else (src_w, src_h)
                    turned = upright_box(raw, *stored, orientation)
                    report.warn(where, "box turned with an EXIF-oriented image",
                                f"{img_src}: EXIF orientation {orientation}: the image is written upright and box "
                                f"{tuple(raw)} (stored pixels) becomes {tuple(round(v, 3) for v in turned)}")
                try:
                    box = clip_box(turned, src_w, src_h, min_inside=MIN_INSIDE)  # mostly outside: a wrong <size>?
                    if box.width <= 0 or box.height <= 0:
                        raise ValueError(f"box {tuple(raw)} is empty inside the {src_w}x{src_h} image")
                except ValueError as exc:
                    report.skip(where, "box outside image", f"{xml}: object {k}: {exc}")
                    continue
                if tuple(box) != tuple(turned):  # clipped: kept, but said
                    report.warn(where, "box clipped to image", f"{xml}: object {k}: box {tuple(raw)} clipped to "
                                                               f"{tuple(box)} in the {src_w}x{src_h} image")
                if not name:
                    report.skip(where, "missing name", f"{xml}: object {k} has no <name>")
                    continue
                if "grounding" in tasks and not desc:
                    report.skip(where, "missing description", f"{xml}: object {k} has no <description>")
                    continue
                if any(t in desc for t in ("<ref>", "</ref>", "<box>", "</box>")):
                    report.skip(where, "malformed description", f"{xml}: object {k}: description holds <ref>/<box> tags")
                    continue
                out_box = [box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy]
                grid = to_grid(out_box, out_w, out_h)
                meta = {"dataset": dataset, "split": split, "object_index": idx, "name": name,
                        "bbox": [round(v, 3) for v in out_box], "size": [out_w, out_h],
                        "source_bbox": list(raw), "source_size": [src_w, src_h], "source": xml.name}
                base = f"{dataset}/{xml.stem}/{k}"
                if "grounding" in tasks:
                    pending.append((split, chat_record(f"{base}/grounding", image, (out_w, out_h),
                                                       GROUNDING_QUESTION.format(desc), render_ref_box(desc, grid),
                                                       "grounding", meta={**meta, "phrase": desc, "grid_box": grid})))
                if "region" in tasks:
                    pending.append((split, chat_record(f"{base}/region", image, (out_w, out_h),
                                                       REGION_QUESTION.format(*grid), name, "region",
                                                       meta={**meta, "grid_box": grid})))
            if not pending:
                continue
            try:
                _image_out(img_src, out / image, _dior_step(img_src, resize, (out_w, out_h)), output_key(resize=resize),
                           expect=(out_w, out_h), pf=pf)
            except SkipInput as exc:
                report.skip(img_src, exc.reason, exc.detail)
                continue
            for split, rec in pending:
                out_splits[split].append(rec)
    return write_splits(report, out, dataset, out_splits)


def _encoded(img: Image.Image, key: str) -> tuple[bytes, tuple[int, int]]:
    return png_bytes(img, key), img.size


def _dior_step(img_src: Path, resize: int | None, wh: tuple[int, int]) -> tuple:
    return _png_step, (img_src, output_key(resize=resize), None, "auto", None, wh if resize else None)


# --------------------------------------------------------------------------------------------- scene chips
SCENE_CHIPS_DATASET = "scene_chips"
SCENE_SUFFIXES = RASTER_SUFFIXES  # a scene is any raster the chip reader opens (rasterio), never a picture
MAX_SCENE_CHIPS = 1_000_000  # per scene: a mistyped size / overlap (size=1) is refused before any read


def _scene_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if src.is_dir():
        return sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES
                      and not p.name.startswith("."))
    raise DomainError(f"{src}: no such file or directory (expected a GeoTIFF or other raster scene, or a folder of "
                      "them)")


def iter_scene_chips(path: str | Path, size: int = 448, overlap: int = 64, bands: Sequence[int | str] | None = None,
                     stretch: Any = "auto", nodata: float | None = None, band_names: Sequence[str] | None = None,
                     stretch_scope: str = "scene", min_valid: float = 0.0, report: ConvertReport | None = None):
    """:func:`~domains.remote_sensing.raster.iter_chips` with ``stretch="auto"`` (uint8 as is, else 2-98 %); `size`,
    `overlap`, `min_valid` and `stretch_scope` are checked here, before the scene is opened (DomainError)."""
    from domains.remote_sensing.raster import (
        check_chip_filters,
        check_chip_options,
        iter_chips,
    )

    size, overlap = check_chip_options(size, overlap)
    min_valid, stretch_scope = check_chip_filters(min_valid, stretch_scope)

    return iter_chips(path, size=size, overlap=overlap, bands=bands, stretch=stretch, nodata=nodata,
                      band_names=band_names, stretch_scope=stretch_scope, min_valid=min_valid, report=report)


_PHRASE_KEYS = ("phrase", "description", "class", "name", "label", "category")
_PIXEL_KEYS = ("box", "pixel_box", "bbox_pixels")
_MAP_KEYS = ("bounds", "map_bounds", "map_box")


def _geometry_bounds(geom: Any) -> tuple[float, float, float, float]:
    """Bounds ``(left, bottom, right, top)`` of a GeoJSON geometry (every coordinate pair it holds)."""
    xs: list[float] = []
    ys: list[float] = []

    def walk(c: Any) -> None:
        if isinstance(c, (list, tuple)) and len(c) >= 2 and all(isinstance(v, (int, float)) for v in c[:2]) \
                and not isinstance(c[0], bool):
            xs.append(float(c[0]))
            ys.append(float(c[1]))
        elif isinstance(c, (list, tuple)):
            for item in c:
                walk(item)

    if not isinstance(geom, dict):
        raise TypeError("geometry is not an object")
    if geom.get("type") == "GeometryCollection":
        for g in geom.get("geometries") or []:
            b = _geometry_bounds(g)
            xs += [b[0], b[2]]
            ys += [b[1], b[3]]
    else:
        walk(geom.get("coordinates"))
    if not xs:
        raise ValueError(f"geometry {geom.get('type')!r} holds no coordinates")
    if not all(math.isfinite(v) for v in xs + ys):  # min / max would pass over a NaN (JSON's NaN is read)
        raise ValueError(f"geometry {geom.get('type')!r} holds a coordinate that is not finite")
    return min(xs), min(ys), max(xs), max(ys)


def _four(v: Any, what: str) -> tuple[float, float, float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 4 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ValueError(f"{what} must be 4 numbers, got {v!r}")
    import math

    out = tuple(float(x) for x in v)
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"{what} {list(v)!r} is not finite")
    return out  # type: ignore[return-value]


def load_scene_boxes(path: str | Path, report: ConvertReport | None = None) -> tuple[list[dict], Any]:
    """Read a boxes file (see :func:`convert_scene_chips`) -> ``(objects, crs)``.

    Each object: ``{"id", "phrase", "name", "scene", "pixel": (x1, y1, x2, y2) | None, "bounds": (left,
    bottom, right, top) | None}``; `crs` is the file's top-level ``"crs"`` (or None). Malformed entries are
    skipped into `report` (reasons ``"missing phrase"``, ``"malformed box"``); an unreadable file raises
    ValueError.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DomainError(f"{p}: cannot read the boxes file as JSON / GeoJSON: {exc}") from exc
    crs = None
    if isinstance(data, dict):
        crs = data.get("crs")
        if isinstance(crs, dict):  # old GeoJSON: {"type": "name", "properties": {"name": "EPSG:32633"}}
            crs = (crs.get("properties") or {}).get("name")
        if data.get("type") == "FeatureCollection":
            items = data.get("features")
        else:
            items = data.get("objects", data.get("boxes"))
    else:
        items = data
    if not isinstance(items, list):  # a bad file is a ValueError, as for unreadable JSON
        raise DomainError(  # noqa: TRY004
            f"{p}: expected a list of objects, {{'objects': [...]}} or a GeoJSON FeatureCollection")
    objects = []
    for k, item in enumerate(items):
        where = f"{p.name} object {k}"
        try:
            if not isinstance(item, dict):
                raise TypeError("not an object")
            feature = item.get("type") == "Feature"
            props = dict(item.get("properties") or {}) if feature else item
            oid = props.get("id", item.get("id", k))
            phrase = next((str(props[key]).strip() for key in _PHRASE_KEYS if props.get(key)), "")
            phrase = " ".join(phrase.split())
            where = f"{p.name} object {oid!s}" + (f" ({phrase!r})" if phrase else "")
            if not phrase:
                raise SkipInput("missing phrase", f"{where}: needs one of {', '.join(_PHRASE_KEYS)}")
            if any(t in phrase for t in ("<ref>", "</ref>", "<box>", "</box>")):
                raise SkipInput("malformed description", f"{where}: phrase holds <ref>/<box> tags")
            name = str(next((props[key] for key in ("class", "name", "label", "category") if props.get(key)), phrase))
            pixel = bounds = None
            pk = next((key for key in _PIXEL_KEYS if props.get(key) is not None), None)
            mk = next((key for key in _MAP_KEYS if props.get(key) is not None), None)
            if pk:
                pixel = Box(*_four(props[pk], pk)).checked()
            elif mk:
                bounds = _four(props[mk], mk)
            elif feature and item.get("geometry"):
                bounds = _geometry_bounds(item["geometry"])
            elif feature and item.get("bbox") is not None:
                bb = item["bbox"]  # 3D (RFC 7946): west, south, min-z, east, north, max-z
                bounds = _four(bb[:2] + bb[3:5] if isinstance(bb, list) and len(bb) == 6 else bb, "bbox")
            else:
                raise ValueError(f"needs a pixel box ({'/'.join(_PIXEL_KEYS)}), map bounds ({'/'.join(_MAP_KEYS)}) "
                                 "or a GeoJSON geometry")
            if bounds is not None and (bounds[2] < bounds[0] or bounds[3] < bounds[1]):
                raise ValueError(f"map bounds {list(bounds)} must be [left, bottom, right, top]")
            box_area = pixel.area if pixel is not None else (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
            if box_area <= 0:
                raise ValueError(f"empty box {list(pixel or bounds)}")
        except SkipInput as exc:
            if report is not None:
                report.skip(where, exc.reason, exc.detail)
            continue
        except (ValueError, TypeError, KeyError) as exc:
            if report is not None:
                report.skip(where, "malformed box", f"{where}: {exc}")
            continue
        scene = props.get("scene", props.get("image"))
        objects.append({"id": oid, "phrase": phrase, "name": name, "scene": None if scene is None else str(scene),
                        "pixel": pixel, "bounds": bounds, "where": where})
    return objects, crs


def _reprojected(bounds: Sequence[float], src_crs: Any, dst_crs: Any) -> tuple[float, float, float, float]:
    """Map `bounds` (left, bottom, right, top) in `src_crs` -> the bounds of that box in `dst_crs` (edges densified,
    as GDAL does for a bounding box); ValueError when the CRS cannot be read or the box has no place in `dst_crs`."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    try:
        out = transform_bounds(CRS.from_user_input(src_crs), dst_crs, *bounds, densify_pts=21)
    except (CRSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot reproject {list(bounds)}: {exc}") from exc
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{list(bounds)} cannot be reprojected (outside the area the boxes file crs covers?)")
    return out


def _looks_lon_lat(bounds: Sequence[float]) -> bool:
    left, bottom, right, top = bounds
    return -180 <= left <= right <= 180 and -90 <= bottom <= top <= 90


def _same_crs(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return True
    try:
        from rasterio.crs import CRS

        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except Exception:  # noqa: BLE001 - an unparsable crs string: compare text
        return str(a) == str(b)


def _scene_matches(obj: dict, scene: Path, rel: str) -> bool:
    s = obj["scene"]
    return s is None or s in (scene.name, scene.stem, rel)


def _round(v: float, nd: int = 3) -> float:
    r = round(float(v), nd)
    return 0.0 if r == 0 else r


def chip_grid_to_scene(grid: Sequence[float], meta: dict) -> Box:
    """A 0-1000 grid box predicted on a chip -> pixel :class:`Box` in the whole scene (``meta`` of a record
    or an index row of :func:`convert_scene_chips`)."""
    from domains.boxes import from_grid

    col, row, w, h = meta["window"]
    b = from_grid(grid, w, h)
    return Box(b.x1 + col, b.y1 + row, b.x2 + col, b.y2 + row)


def chip_grid_to_map(grid: Sequence[float], meta: dict) -> tuple[float, float, float, float]:
    """A 0-1000 grid box predicted on a chip -> map bounds ``(left, bottom, right, top)`` in ``meta["crs"]``,
    through the chip's affine ``meta["transform"]`` (6 numbers ``a, b, c, d, e, f``). A chip of a scene with
    neither CRS nor geotransform (GDAL's identity: pixels) has no map: ValueError, naming
    :func:`chip_grid_to_scene`, instead of scene pixels passed off as map bounds."""
    from affine import Affine

    from domains.boxes import from_grid
    from domains.remote_sensing.raster import chip_box_to_map

    _, _, w, h = meta["window"]
    transform = Affine(*meta["transform"][:6])
    if meta.get("crs") is None and (transform.a, transform.b, transform.d, transform.e) == (1, 0, 0, 1):
        raise ValueError(f"scene {meta.get('scene')!r} has no CRS or geotransform, so its chips have no map bounds; "
                         "use chip_grid_to_scene for the box in scene pixels")
    return chip_box_to_map(from_grid(grid, w, h), transform)


def _jsonl_line(row: dict) -> bytes:
    """One JSONL line as :func:`~domains.files.write_jsonl` writes it."""
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


def _write_spooled(spool: Any, path: Path, chunk: int = 2**20) -> bool:
    """Write the bytes of the open binary file `spool` to `path` (atomically, in chunks) unless `path` already holds
    exactly them, as :func:`~domains.files.write_jsonl` does for a list; True if written."""
    spool.seek(0, os.SEEK_END)
    size = spool.tell()
    try:
        if path.stat().st_size == size:
            spool.seek(0)
            with path.open("rb") as old:
                while (a := spool.read(chunk)) == old.read(chunk):
                    if not a:
                        return False
    except OSError:
        pass
    spool.seek(0)
    atomic_write(path, lambda f: shutil.copyfileobj(spool, f, chunk))
    return True


def convert_scene_chips(src: str | Path, out: str | Path, size: int = 448, overlap: int = 64,
                        bands: Sequence[int | str] | str | None = None, boxes: str | Path | None = None,
                        min_valid: float = 0.05, stretch: Any = "auto", nodata: float | None = None,
                        band_names: Sequence[str] | str | None = None, stretch_scope: str = "scene",
                        dataset: str = SCENE_CHIPS_DATASET, min_inside: float = MIN_INSIDE,
                        workers: int = 1, progress: Progress = True) -> ConvertReport:
    """Cut large GeoTIFF scenes into georeferenced chips; with `boxes`, grounding records per chip.

    `src`: one GeoTIFF or a folder of them (``*.tif`` / ``*.tiff``, and the JPEG 2000 / Erdas Imagine ``*.jp2`` /
    ``*.img`` rasters the reader opens too; searched recursively, sorted). Each scene
    is cut by :func:`iter_scene_chips` (``iter_chips`` semantics: ``size x size`` chips stepping by
    ``size - overlap``, last row / column aligned to the edge, windowed reads only, so memory stays bounded;
    all-nodata blocks of sparse GeoTIFFs are recognised without reading). Chips that are all nodata or whose
    valid fraction is below `min_valid` are not written and are counted in the report (``"all nodata"``,
    ``"valid fraction below …"``). `size`: the chip side, 1 to :data:`~domains.remote_sensing.raster.MAX_CHIP_SIZE`
    (7071) pixels; a scene smaller than `size` gives smaller chips (warned: ``scene smaller than chip size``) and one
    that would make more than :data:`MAX_SCENE_CHIPS` (1 M) chips is skipped unread (``too many chips``).
    `overlap`: the pixels two neighbouring chips share, 0 to ``size - 1`` (a size or overlap out of range is a
    DomainError before anything is read). `min_valid`: the least share of a chip's pixels holding data (0 to 1) for
    the chip to be written. `bands`: the bands shown as RGB, 1-based indexes or names (default: B04, B03, B02 where
    the bands are named so, else the file's red, green, blue, else bands 1, 2, 3), passed to the chip reader
    (:func:`~domains.remote_sensing.raster.iter_chips`). `band_names`: one name per band of the file, in file order,
    for files whose bands carry no descriptions, so that `bands` can name them. `stretch_scope`: ``"scene"``
    stretches every chip of a scene with the same percentiles, estimated from sample windows spread over the scene;
    ``"chip"`` computes them per chip. `boxes`: a JSON or GeoJSON file of objects, each a phrase and a pixel or map
    box; with it, grounding records per chip are written too. `dataset`: the name of the outputs
    (``out/images/<dataset>/``, ``out/<dataset>_all.jsonl``). `min_inside`: the least share of an object's box area
    a chip must hold for the object to be kept in it, above 0 and at most 1.
    `stretch`: ``"auto"`` (uint8 as is, else 2-98 % percentiles), ``null``, two percentiles ``[low, high]``, or
    ``"fixed:LOW,HIGH"``: stored values LOW..HIGH to 0..255 in every chip alike (Sentinel-2 L1C / EuroSAT MS,
    reflectance x 10000: ``fixed:0,3000``), so the same ground keeps its colour from chip to chip.
    `nodata`: the pixel value that marks no data (default: the file's own). A scene zero-filled at its edges without
    a nodata tag (Sentinel-2, Landsat; an 8-bit orthomosaic's black collar) has its zeros taken as data: they pull a percentile stretch's low end to 0
    and all-zero chips are kept; the report says so (warning ``zero fill without nodata``): pass ``nodata=0``.

    **Output.** Every kept chip is written as ``out/images/<dataset>/<scene>/<scene>_x<col>_y<row>_<w>x<h>.png``
    and listed in ``out/chips.jsonl`` (``report.outputs["chips"]``), one row per chip: ``id``, ``image``
    (relative to `out`), ``width``, ``height``, ``scene`` (path relative to `src`), ``scene_size`` [W, H],
    ``window`` [col_off, row_off, width, height] in scene pixels, ``transform`` (the chip's pixel -> map affine
    as 6 numbers ``a, b, c, d, e, f``: x = a*col + b*row + c, y = d*col + e*row + f), ``crs`` (``"EPSG:…"``
    or WKT; None when the scene has none) and ``valid_fraction``. **Without `boxes`** that index and the
    PNGs are all that is written (for later labelling); ``report.written`` counts the chips. The index rows go to
    a temporary file as the chips are cut, so memory does not grow with their number (then written atomically, only
    when its bytes change); with `boxes` the grounding records below are held until the end, one per (object, chip).

    **With `boxes`** there is also ``out/<dataset>_all.jsonl`` (``report.outputs["all"]``) with one
    ``task: "grounding"`` record per (object, chip): ``<image>\\nPlease provide the bounding box coordinate
    of the region this sentence describes: <ref>{phrase}</ref>`` -> ``<ref>{phrase}</ref><box>[[x1, y1, x2,
    y2]]</box>`` with the box in the chip's pixel frame on the 0-1000 grid; ``report.written`` counts these
    records. ``meta`` holds the chip fields above plus ``object`` (id), ``phrase``, ``name``, ``bbox`` (chip
    pixels, clipped), ``grid_box``, ``scene_bbox`` (scene pixels, unclipped), ``map_bounds`` (the clipped
    box in map coordinates) and ``inside_fraction``. A predicted grid box goes back to map coordinates with
    :func:`chip_grid_to_map` (or to scene pixels with :func:`chip_grid_to_scene`).

    **Boxes file** (JSON or GeoJSON, UTF-8). Either a list of objects, ``{"objects": [...]}``, or a GeoJSON
    ``FeatureCollection`` (an object's fields are then read from the feature's ``properties``)::

        {"crs": "EPSG:32633",                       # optional; map boxes in another CRS are reprojected
         "objects": [
           {"id": 1, "phrase": "the large red-roofed warehouse", "box": [1020, 1040, 1180, 1110]},
           {"id": 2, "class": "ship", "bounds": [510200.0, 3989500.0, 510400.0, 3989600.0]},
           {"id": 3, "phrase": "a pond", "box": [10, 10, 50, 40], "scene": "tile_07.tif"}]}

    * the phrase is the first of ``phrase``, ``description``, ``class``, ``name``, ``label``, ``category``
      (``name`` in meta is the first of ``class``, ``name``, ``label``, ``category``, else the phrase);
    * ``box`` (or ``pixel_box``): **pixel** ``[x1, y1, x2, y2]`` in the *scene's* pixel grid (x right, y
      down, x2/y2 the far edges, so the whole scene is ``[0, 0, W, H]``);
    * ``bounds`` (or ``map_bounds``, ``map_box``): **map** ``[left, bottom, right, top]`` in the file's ``crs``,
      reprojected to each scene's CRS where it differs (the bounding box of the box's densified edges; one that
      cannot be reprojected is skipped as ``"crs mismatch"``), or in the scene CRS when the file names none (on a
    scene whose geotransform is rotated a map box becomes the pixel box bounding its turned outline, larger than the
    object: warned once per scene, ``map boxes on a rotated scene``);
      a GeoJSON feature may instead carry a ``geometry`` (Polygon, MultiPolygon, ...: its bounding box is
      used) or a ``bbox`` member -- GeoJSON coordinates are taken in the *scene CRS*, not WGS 84, unless
      the file names its ``crs`` (``"crs": "EPSG:4326"``; an object lying outside every scene whose bounds
      look like longitude / latitude says so);
    * ``scene`` (optional): file name, stem or path relative to `src` of the scene the object belongs to;
      without it the object is tried against every scene.

    **Objects and chip borders.** An object's box is matched against every kept chip it intersects: it is
    kept in that chip, clipped to the chip, when at least `min_inside` (50 %) of its whole box area lies
    inside the chip, and dropped from that chip otherwise. With ``overlap > 0`` an object can therefore
    appear in several chips (one record each). Boxes reaching past the scene edge follow the same rule
    (the outside part counts as outside every chip). Skipped, with the object named: ``"box outside
    image"`` (the box lies wholly outside every scene), ``"box in no chip"`` (inside the scene but in no
    kept chip with >= 50 % inside: cut by chip borders, or in nodata chips), ``"crs mismatch"``, ``"scene not
    georeferenced"`` (map bounds for a scene with neither CRS nor geotransform), ``"unknown scene"`` (its
    ``scene`` names none of the scenes), ``"missing phrase"``,
    ``"malformed box"``.

    Idempotent as the other converters: chip PNGs are re-used when present, not older than their scene, of
    the right size and made with the same `bands`, `stretch`, `nodata`, `band_names` and `stretch_scope`
    (other values rewrite them), and JSONL files are rewritten only when their content changes.

    `workers`: accepted for ``adapt convert --workers`` and checked, but this converter runs in one process: its
    chips come from one windowed reader stream per scene (:func:`iter_scene_chips`), whose scene-wide stretch
    and nodata / valid-fraction checks (which report skips) are made while reading, so there is no per-chip
    step to hand to a worker without reading each window twice; chip encoding is the only part left to move.
    `progress`: a bar over the scenes (:func:`model.progress.progress_bar`).
    """
    import numpy as np

    check_workers(workers)

    from domains.remote_sensing.raster import (
        RasterError,
        check_chip_filters,
        check_chip_options,
        check_nodata_option,
        map_box_to_chip,
        open_raster,
    )

    size, overlap = check_chip_options(size, overlap)  # before any scene or boxes file is read
    check_nodata_option(nodata)
    _check_stretch(stretch)
    bands = _bands_option(bands)
    check_chip_filters(min_valid, stretch_scope)
    src, out = Path(src), Path(out)
    # a string was counted by its letters: "B02,B03,B04,B08" was 15 names for a 4-band scene, every scene skipped
    band_names = comma_names(band_names) if band_names is not None else None
    if isinstance(min_inside, bool) or not isinstance(min_inside, (int, float)) or not 0 < min_inside <= 1:
        raise DomainError(f"min_inside must be in (0, 1] (the share of a box's area a chip must hold), "
                          f"got {min_inside!r}")
    scenes = _scene_files(src)
    report = ConvertReport(dataset=dataset, source=src, out=out)
    if not scenes:
        raise DomainError(f"{src}: no GeoTIFF or other raster scenes ({', '.join(SCENE_SUFFIXES)})")
    if src.is_dir():
        scenes = files_inside(src, scenes, report)  # a scene linked in from outside --src is refused, as elsewhere
    objects: list[dict] = []
    boxes_crs = None
    if boxes is not None:
        objects, boxes_crs = load_scene_boxes(boxes, report)
    from collections import Counter

    ids = [str(o["id"]) for o in objects]
    seen = Counter(ids)
    rid_of = [safe_name(i) if seen[i] == 1 else f"{safe_name(i)}~{k}" for k, i in enumerate(ids)]  # unique record ids
    placed: dict[int, str] = {}  # object index -> "" (recorded) or why not yet
    key = output_key(bands=bands, stretch=stretch, nodata=nodata, band_names=band_names, stretch_scope=stretch_scope)
    # chips.jsonl's rows go to a spool file as they come (a folder of large scenes held millions of them in memory)
    index = tempfile.TemporaryFile()
    n_index = 0
    records: list[dict] = []
    rel_of = {scene: scene.name if src.is_file() else scene.relative_to(src).as_posix() for scene in scenes}
    tag_of = unique_stems(rel_of.values())  # north/tile.tif and north_tile.tif: two sets of chips
    for scene in progress_bar(scenes, desc=dataset, unit="scene", progress=progress):
        rel = rel_of[scene]
        tag = tag_of[rel]
        # -- objects of this scene, in scene pixels
        scene_objs: list[tuple[int, Box]] = []
        turned = False  # a map box placed on this scene through a rotated geotransform: said once
        try:
            with open_raster(scene) as ds:
                W, H, transform, crs = ds.width, ds.height, ds.transform, ds.crs
        except Exception:  # noqa: BLE001 - iter_scene_chips reports the problem below
            W = H = 0
            transform = crs = None
        n_chips = len(chip_starts(W, size, size - overlap)) * len(chip_starts(H, size, size - overlap)) if W else 0
        if n_chips > MAX_SCENE_CHIPS:  # refused before any read
            report.skip(scene, "too many chips", f"{scene}: {W}x{H} in {size} px chips {overlap} px apart makes "
                                                 f"{n_chips:,} chips, above {MAX_SCENE_CHIPS:,}; use a larger size or "
                                                 "a smaller overlap")
            continue
        if W and (W < size or H < size):
            report.warn(scene, "scene smaller than chip size",
                        f"{scene}: the {W}x{H} scene is smaller than size={size} on "
                        f"{'both sides' if W < size and H < size else 'one side'}: its chips are "
                        f"{min(W, size)}x{min(H, size)}, not {size}x{size}")
        for k, obj in enumerate(objects):
            if not W or not _scene_matches(obj, scene, rel):
                continue
            if obj["pixel"] is not None:
                b = obj["pixel"]
            else:
                if crs is None and transform.is_identity:  # GDAL's identity: pixels, no map to place bounds on
                    placed.setdefault(k, f"not georeferenced: scene {rel} has no CRS or geotransform, so map "
                                         f"bounds cannot be placed on it; give the box in pixels ({_PIXEL_KEYS[0]})")
                    continue
                bounds = obj["bounds"]
                if not _same_crs(boxes_crs, crs):
                    try:
                        bounds = _reprojected(bounds, boxes_crs, crs)
                    except ValueError as exc:
                        placed.setdefault(k, f"crs mismatch: boxes file crs {boxes_crs!r}, scene {rel} crs {crs}: "
                                             f"{exc}")
                        continue
                b = Box(*(round(v, 6) for v in map_box_to_chip(bounds, transform)))
                if not transform.is_rectilinear and not turned:
                    turned = True
                    report.warn(scene, "map boxes on a rotated scene",
                                f"{scene}: its geotransform is rotated, so a map box becomes the pixel box bounding "
                                "its turned outline, larger than the object; give boxes in pixels "
                                f"({_PIXEL_KEYS[0]}) for tight ones")
            if b.x2 <= 0 or b.y2 <= 0 or b.x1 >= W or b.y1 >= H:
                hint = ""
                if obj["pixel"] is None and boxes_crs is None and crs is not None and crs.is_projected and \
                        _looks_lon_lat(obj["bounds"]):
                    hint = ("; its map bounds look like longitude / latitude (GeoJSON's WGS 84) but the boxes file "
                            f"names no crs, so they were read in the scene's {crs}: add \"crs\": \"EPSG:4326\" to "
                            "the file to have them reprojected")
                placed.setdefault(k, f"box {[_round(v) for v in b]} (scene pixels) lies outside the {W}x{H} scene "
                                     f"{rel}{hint}")
                continue
            placed[k] = f"in scene, in no kept chip with >= {min_inside:.0%} of its box inside" \
                if placed.get(k) != "" else ""
            scene_objs.append((k, b))
        arr = np.array([list(b) for _, b in scene_objs], dtype=np.float64).reshape(-1, 4)
        areas = (arr[:, 2] - arr[:, 0]) * (arr[:, 3] - arr[:, 1])
        crs_text = None
        kept = index.tell(), n_index, len(records), dict(placed)  # to drop the whole scene if a read fails part-way
        try:
            chips = iter_scene_chips(scene, size=size, overlap=overlap, bands=bands, stretch=stretch, nodata=nodata,
                                     band_names=band_names, stretch_scope=stretch_scope, min_valid=min_valid,
                                     report=report)
            for chip in chips:
                col, row = int(chip.window.col_off), int(chip.window.row_off)
                w, h = chip.image.size
                image = f"images/{dataset}/{tag}/{tag}_x{col}_y{row}_{w}x{h}.png"
                _image_out(scene, out / image, (_encoded, (chip.image, key)), key, expect=(w, h))
                if crs_text is None and chip.crs is not None:
                    crs_text = chip.crs.to_string()
                cid = f"{dataset}/{tag}/x{col}_y{row}"
                chip_meta = {"scene": rel, "scene_size": [W, H], "window": [col, row, w, h],
                             "transform": [float(v) for v in tuple(chip.transform)[:6]], "crs": crs_text}
                index.write(_jsonl_line({"id": cid, "image": image, "width": w, "height": h, **chip_meta,
                                         "valid_fraction": _round(chip.valid_fraction, 4)}))
                n_index += 1
                if not len(arr):
                    continue
                ix = np.clip(np.minimum(arr[:, 2], col + w) - np.maximum(arr[:, 0], col), 0, None)
                iy = np.clip(np.minimum(arr[:, 3], row + h) - np.maximum(arr[:, 1], row), 0, None)
                frac = ix * iy / areas
                for n in np.nonzero(frac >= min_inside - 1e-12)[0]:
                    k, b = scene_objs[n]
                    obj = objects[k]
                    cb = clip_box((b.x1 - col, b.y1 - row, b.x2 - col, b.y2 - row), w, h)
                    grid = to_grid(cb, w, h)
                    left, bottom, right, top = chip.box_to_map(cb)
                    meta = {"dataset": dataset, **chip_meta, "object": obj["id"], "phrase": obj["phrase"],
                            "name": obj["name"], "bbox": [_round(v) for v in cb], "grid_box": grid,
                            "scene_bbox": [_round(v) for v in b],
                            "map_bounds": [_round(v, 6) for v in (left, bottom, right, top)],
                            "inside_fraction": _round(frac[n], 4)}
                    records.append(chat_record(f"{cid}/{rid_of[k]}", image, (w, h),
                                               GROUNDING_QUESTION.format(obj["phrase"]),
                                               render_ref_box(obj["phrase"], grid), "grounding", meta=meta))
                    placed[k] = ""
        except RasterError as exc:
            # a scene read only in part is dropped whole: its chips before the failure would pass for all of it
            index.seek(kept[0])
            for line in index:
                (out / json.loads(line)["image"]).unlink(missing_ok=True)
            index.seek(kept[0])
            index.truncate()
            dropped, n_index = n_index - kept[1], kept[1]
            del records[kept[2]:]
            placed.clear()
            placed.update(kept[3])
            note = f" ({dropped} chip(s) read before it dropped with the scene)" if dropped else ""
            report.skip(scene, _raster_reason(str(exc)), f"{exc}{note}")
            continue
    for k, obj in enumerate(objects):
        why = placed.get(k)
        if why == "":
            continue
        if why is None and obj["scene"] is not None and not any(_scene_matches(obj, sc, rel_of[sc]) for sc in scenes):
            names = sorted(rel_of.values())
            why = (f"scene {obj['scene']!r} is none of the {len(names)} scene(s) read ("
                   f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); give its file name, stem or path "
                   "relative to the source")
            reason = "unknown scene"
        elif why is None:
            why = "its scene could not be read" if obj["scene"] is not None else "no readable scene"
            reason = "box outside image"
        elif why.startswith("crs mismatch"):
            reason = "crs mismatch"
        elif why.startswith("not georeferenced"):
            reason = "scene not georeferenced"
        elif why.startswith("in scene"):
            reason = "box in no chip"
        else:
            reason = "box outside image"
        report.skip(obj["where"], reason, f"{obj['where']}: {why}")
    with index:
        if n_index:  # no chip at all (wrong folder, all nodata): an earlier run's index is kept
            _write_spooled(index, out / "chips.jsonl")
            report.outputs["chips"] = out / "chips.jsonl"
    if boxes is None:
        report.wrote(n_index)
        return report
    return write_splits(report, out, dataset, {"all": records})


__all__ += ["SCENE_CHIPS_DATASET", "chip_grid_to_map", "chip_grid_to_scene", "convert_scene_chips", "iter_scene_chips",
            "load_scene_boxes"]
