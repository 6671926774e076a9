"""Medical imaging: DICOM (CT / MR / X-ray) read to windowed RGB, de-identified, and public medical VQA sets.

Provides readers (DICOM through :mod:`domains.medical.dicom`; PNG / JPEG through PIL), converters into
InternVL chat JSONL (:mod:`domains.medical.convert`: VQA-RAD, SLAKE, PMC-VQA, folder-per-class
classification, and ``dicom_qa``: DICOM series + a question file, several slices per sample, boxes on the
0-1000 grid), the ``med_vqa`` scorer (:mod:`domains.medical.metrics`: closed accuracy over all closed
questions, open recall), a synthetic generator writing real CT DICOM series with fake PHI and the public
layouts (:mod:`domains.medical.synthetic`), and demo hooks. ``pydicom`` and the converter modules are
imported only when used, so the registry works without pydicom.

Converted data never holds patient-identifying attributes: DICOM-derived records carry only
``deid.pseudonym`` ids and rendered pixels (see :mod:`domains.medical.convert`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domains.base import DomainError, DomainPlugin, lazy, read_image_rgb
from domains.boxes import draw_ref_boxes
from domains.medical.metrics import METRICS

DICOM_SUFFIXES = (".dcm", ".dicom")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_dicom_rgb(path: str | Path, **options: Any):
    """Reader for ``.dcm`` / ``.dicom``: :func:`domains.medical.dicom.read_dicom_rgb` (imports pydicom lazily)."""
    from domains.medical.dicom import read_dicom_rgb as fn

    return fn(path, **options)


def read_any(path: str | Path, **options: Any):
    """Reader for other files: DICOM when its first bytes say so (no suffix, a UID-named file's ``.504``: see
    :func:`domains.medical.convert.is_dicom_file`), else PIL."""
    from domains.medical.convert import is_dicom_file

    if is_dicom_file(Path(path)):
        return read_dicom_rgb(path, **options)
    return read_image_rgb(path, **options)


def _converter(name: str):
    return lazy(f"domains.medical.convert:convert_{name}",
                f"(src, out, **options) -> ConvertReport: :func:`domains.medical.convert.convert_{name}`.")


CONVERTERS = {name: _converter(name) for name in ("vqa_rad", "slake", "pmc_vqa", "classification", "dicom_qa")}

synthetic = lazy("domains.medical.synthetic:generate_all", "Small synthetic data sets: DICOM CT series + QA and the "
                 "public layouts (:func:`domains.medical.synthetic.generate_all`).")


# --------------------------------------------------------------------------------------------- demo hooks
def read_upload(paths: Sequence[str | Path], *, window: Any = None, slices: Sequence[int] | None = None,
                n_slices: int | None = None, redact_burned_in: bool = False, series: str | int | None = None) -> dict:
    """Uploaded files -> model input for the demo.

    `paths`: PNG / JPEG images, DICOM files of one series (or one multi-frame file; an RT dose grid or a
    segmentation alone shows its frames, with a warning saying it is no anatomy), or ``.zip`` archives of
    them (extracted safely by :func:`domains.medical.dicom.extract_zip`; zips inside them are not opened, and
    are named in the error or a warning). DICOM options: `window` (a preset
    name or ``(center, width)``; None = the file's own), `slices` (0-based indices in the series sorted by
    position, or frames) or `n_slices` (that many evenly spaced slices); neither = the middle slice.
    `series`: of files of several series, the one to show (its SeriesNumber or SeriesInstanceUID; unset: several
    series are refused, each named). `redact_burned_in` (off by default): images of files whose BurnedInAnnotation is YES come back with their text
    regions blacked out (:func:`domains.medical.redact.redact_burned_in`), listed under ``"redacted"`` (an image
    whose ultrasound regions cover it whole is left as it is, and a warning says so).

    Returns ``{"images": [PIL RGB], "labels": ["slice 6/12", ...] | None, "prompt": "Slice 3/12: <image>\\n…"
    | None (one image: the default), "info": de-identified header fields (never PHI), "warnings": [...]}``, and
    with `redact_burned_in` ``"redacted"``: per image None (untouched) or ``{"regions": [[x1, y1, x2, y2], ...],
    "rule": ...}`` (pixel boxes blacked out, x2 / y2 exclusive, and the rule that chose them).
    """
    from domains.medical.convert import IMAGE_SUFFIXES, is_dicom_file, slice_prompt

    files = [Path(p) for p in paths]
    if not files:
        raise DomainError("no files uploaded")
    with tempfile.TemporaryDirectory(prefix="pocket-medical-upload-") as tmp:
        expanded: list[Path] = []
        inner_zips: list[str] = []  # not opened: one level of extraction keeps the limits of extract_zip meaningful
        for k, p in enumerate(files):
            if p.suffix.lower() == ".zip":
                from domains.medical.dicom import extract_zip

                root = Path(tmp).resolve() / str(k)
                extracted = [q for q in extract_zip(p, root) if q.is_file()]
                inner_zips += [f"{p.name}: {q.relative_to(root).as_posix()}" for q in extracted
                               if q.suffix.lower() == ".zip"]
                expanded += [q for q in extracted if q.suffix.lower() != ".zip"]
            else:
                expanded.append(p)
        dicoms = [p for p in expanded if is_dicom_file(p)]
        pictures = [p for p in expanded if p not in dicoms and p.suffix.lower() in IMAGE_SUFFIXES]
        warnings: list[str] = []
        not_opened = f"zips inside a zip are not opened ({', '.join(inner_zips)})" if inner_zips else ""
        if not_opened and (dicoms or pictures):
            warnings.append(f"{not_opened}: extract them and upload their files or the inner zip itself")
        if not dicoms:
            if not pictures:
                names = ", ".join(p.name for p in files)
                raise DomainError(f"no DICOM or image files among the upload ({names})"
                                 + (f"; {not_opened}: upload the inner zip itself" if not_opened else ""))
            images = [read_image_rgb(p) for p in pictures]
            labels = [f"image {k + 1}/{len(images)}" for k in range(len(images))] if len(images) > 1 else None
            info = {"images": str(len(images)), "size": " / ".join(f"{im.width}x{im.height}" for im in images)}
            return {"images": images, "labels": labels, "prompt": slice_prompt(labels) if labels else None,
                    "info": info, "warnings": warnings}
        if pictures:
            names = ", ".join(p.name for p in pictures[:5]) + (f" and {len(pictures) - 5} more" if len(pictures) > 5 else "")
            warnings.append(f"{len(pictures)} PNG / JPEG image(s) not DICOM, not shown ({names}): showing the DICOM "
                            f"image(s) of {len(dicoms)} file(s); upload an image on its own to see it")
        return _read_dicom_upload(dicoms, window, slices, n_slices, warnings, redact_burned_in, series)


def _read_dicom_upload(dicoms: list[Path], window: Any, slices_wanted: Sequence[int] | None, n_slices: int | None,
                       warnings: list[str], redact_burned_in: bool = False, series_wanted: str | int | None = None) -> dict:
    from domains.medical import deid, dicom
    from domains.medical.convert import slice_prompt
    from domains.medical.redact import redact_burned_in as redact

    if isinstance(window, list):
        window = tuple(window)
    series = _lone_grid(dicoms, window, warnings) if series_wanted is None else None
    if series is not None:
        window = None
    else:
        series = dicom.load_series(dicoms, series=series_wanted)
    same_position = series.same_position_note()
    if same_position:
        warnings.append(same_position)
    slices = list(series.slices)  # (file, frame) per slice, anatomical order
    total = len(slices)
    if slices_wanted is not None and len(slices_wanted) > 0:
        chosen = [int(k) for k in slices_wanted]
        bad = [k for k in chosen if not 0 <= k < total]
        if bad:
            raise DomainError(f"slice(s) {bad} out of range: the series has {total} (0..{total - 1})")
    elif n_slices and int(n_slices) > 1:
        chosen = list(series.pick(int(n_slices)))
    else:
        chosen = [total // 2]
    images = [series.image(k, window=window) for k in chosen]
    labels = [f"slice {k + 1}/{total}" for k in chosen]
    headers = {p: dicom.read_dicom(p, header_only=True) for p in sorted({slices[k][0] for k in chosen})}
    colour = sorted({str(ds.get("PhotometricInterpretation") or "").strip() for ds in headers.values()
                     if not dicom.windowable(ds)})
    if window is not None and colour:  # windowing maps one channel of stored values; colour pixels are shown as stored
        warnings.append(f"window {window!r} not applied: the image is colour ({', '.join(colour)}), shown as stored; "
                        "windows apply to greyscale images (CT, MR, X-ray)")
    burned = [p for p, ds in headers.items() if deid.burned_in_annotation(ds)]
    redacted: list[dict | None] = [None] * len(images)
    if burned and redact_burned_in:
        whole: list[str] = []  # rules of flagged images left whole: nothing outside their regions to black out
        for n, k in enumerate(chosen):
            done = redact(images[n], headers[slices[k][0]])
            if done.regions:
                images[n], redacted[n] = done.image, done.as_dict()
            elif done.rule != "not flagged":
                whole.append(done.rule)
        rules = sorted({r["rule"] for r in redacted if r})
        said = [f"their text regions are blacked out ({', '.join(rules)}); text outside those regions may remain"
                ] if rules else []
        if whole:
            said.append(f"nothing was blacked out in {len(whole)} image(s) ({', '.join(sorted(set(whole)))} cover the "
                        "whole image): text burned into them remains, check the pixels")
        warnings.append(f"burned-in annotation: {len(burned)} file(s) are marked BurnedInAnnotation=YES; "
                        + "; ".join(said))
    elif burned:
        warnings.append(f"burned-in annotation: {len(burned)} file(s) are marked BurnedInAnnotation=YES; "
                        "text burned into the pixels may identify the patient")
    out = {"images": images, "labels": labels, "prompt": slice_prompt(labels) if len(labels) > 1 else None,
           "info": dict(deid.safe_header(dicom.read_dicom(slices[chosen[0]][0], header_only=True))),
           "warnings": warnings}
    if redact_burned_in:
        out["redacted"] = redacted
    return out


def _lone_grid(dicoms: list[Path], window: Any, warnings: list[str]):
    """A dose grid or segmentation uploaded alone (no anatomy: :func:`~domains.medical.dicom.load_series` passes it
    over among a series' files) as a series of its frames, what it is said in `warnings`; else None."""
    from domains.medical import dicom

    if len(dicoms) != 1:
        return None
    try:
        ds = dicom.read_dicom(dicoms[0])
        passed = dicom.not_an_image(ds)
        if passed is None or passed[0] != "not an image slice" or not dicom.has_pixel_data(ds):
            return None
        frames = dicom.frame_count(ds)
    except dicom.DicomError:
        return None  # load_series says what is wrong with it
    what, anatomy = dicom.grid_kind(ds)
    dose = "Dose" in passed[1]
    warnings.append(f"the file is {what}, not an image of the anatomy: its {frames} frame(s) are shown, each scaled "
                    f"to its own lowest and highest {'dose' if dose else 'value'} (brighter = more); upload the "
                    f"{anatomy} series to see the anatomy")
    if window is not None:  # CT / MR windows are in the image's units, not dose or label values
        warnings.append(f"window {window!r} not applied: windows apply to greyscale images (CT, MR, X-ray), not to "
                        f"{'a dose grid' if dose else 'a mask'}")
    return dicom.DicomSeries(str(ds.get("SeriesInstanceUID") or ""), [dicoms[0]], frames=[frames])


def draw_answer(images: Sequence[Any], answer: str, **options: Any) -> list:
    """Every ``<ref>…</ref><box>[[…]]</box>`` of `answer` drawn on each image (0-1000 grid of that image)."""
    width = int(options["width"]) if options.get("width") is not None else None  # None: scaled to the image
    return [draw_ref_boxes(im, answer, width=width) for im in images]


PLUGIN = DomainPlugin(
    name="medical",
    description="Medical imaging: DICOM CT / MR / X-ray read through a VOI window (presets or the file's own) "
                "to RGB and de-identified (pseudonyms, no PHI in converted data); converters for VQA-RAD, "
                "SLAKE, PMC-VQA, folder-per-class classification and DICOM series with a QA file (multi-slice "
                "samples, lesion boxes); med_vqa scoring (closed accuracy, open recall); synthetic CT series.",
    readers={**{s: read_dicom_rgb for s in DICOM_SUFFIXES}, **{s: read_image_rgb for s in PIL_SUFFIXES},
             "*": read_any},
    converters=CONVERTERS,
    metrics=METRICS,  # med_vqa
    recipes=("medical_pocket-tiny_full",),
    synthetic=synthetic,
    demo_hooks={"read_upload": read_upload, "draw_answer": draw_answer},
)

__all__ = ["CONVERTERS", "DICOM_SUFFIXES", "PIL_SUFFIXES", "PLUGIN", "draw_answer", "read_any", "read_dicom_rgb",
           "read_image_rgb", "read_upload", "synthetic"]
