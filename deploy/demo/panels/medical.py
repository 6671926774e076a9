"""The medical panel, for clinicians: DICOM files, series (zip of .dcm) or PNG/JPG, windowing, slice picker.

Only de-identified information reaches the page: the header table is :func:`domains.medical.deid.safe_header`
(an allow-list), uploads are shown as "upload 1", and identifying attributes are reported by keyword only.
Burned-in annotations (text in the pixels) and declared recognisable features (a face) are warned about. The
handlers below are plain functions, so the logic is tested without a browser; :func:`build` wires them to Gradio.
"""

from __future__ import annotations

import logging
import re
import shutil
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from deploy.demo.hooks import default_draw_answer, read_image
from deploy.demo.page import (
    MEDICAL_DISCLAIMER,
    REFUSED_BUTTON,
    DemoSettings,
    error_md,
    escape_md,
    info_md,
    notice_md,
    refused_md,
    warnings_md,
)
from deploy.demo.panels import stream_and_draw
from deploy.demo.session import ModelSession
from deploy.demo.uploads import (
    StagedUpload,
    UploadError,
    readable_error,
    stage_uploads,
    upload_label,
)
from domains.medical import deid, dicom, redact
from domains.medical.convert import slice_prompt

log = logging.getLogger(__name__)

__all__ = ["CUSTOM", "FILE_DEFAULT", "UPLOAD_HELP", "Study", "ask", "build", "load_study", "phi_warning", "title",
           "window_choice", "window_controls"]

FILE_DEFAULT = "file default"
CUSTOM = "custom (sliders)"
MAX_MODEL_SLICES = 8  # slices sent in one question at most
START_TRIES = 8  # slices tried, nearest first, when the one first shown does not decode
RANGE_FRAMES = 256  # frames read at upload for the window sliders' range at most (beyond: evenly spaced ones)
MAX_ZIP_FILES = 4000
ZIP_EXPANSION = 4  # a zip may unpack to at most this many times the upload limit
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_PHI_SHOWN = 4  # keywords listed per kind in the identifying-attributes warning
_MASK_NAMES = {"US": "ultrasound", "*": "other modalities"}


def _box_words(box: tuple[float, float, float, float]) -> str:
    """A REDACTION_MASKS box (fractions of width and height) in words: "the top 12 %"."""
    x1, y1, x2, y2 = box
    if (x1, x2) == (0.0, 1.0) and y1 == 0.0:
        return f"the top {y2 * 100:g} %"
    if (x1, x2) == (0.0, 1.0) and y2 == 1.0:
        return f"the bottom {(1 - y1) * 100:g} %"
    return f"{x1 * 100:g}-{x2 * 100:g} % across by {y1 * 100:g}-{y2 * 100:g} % down"


def _mask_words() -> str:
    """redact.REDACTION_MASKS in words, from the table itself so the help cannot drift from what is blacked out."""
    order = sorted(redact.REDACTION_MASKS, key=lambda modality: modality == "*")  # "other modalities" last
    return "; ".join(f"{_MASK_NAMES.get(modality, modality)}: "
                     + " and ".join(_box_words(box) for box in redact.REDACTION_MASKS[modality]) for modality in order)


REDACT_HELP = ("Off by default. For files flagged BurnedInAnnotation = YES: blacks out where scanners print patient "
               "details (a file that declares ultrasound image regions: all outside them; otherwise "
               f"{_mask_words()}) in the image shown and the one sent to the model. A heuristic: check the image.")
UPLOAD_HELP = ("Upload one DICOM file (single or multi-frame), the files of one series (several .dcm at once, or a "
               ".zip of them), or one PNG / JPEG. Only de-identified header fields are shown; files are renamed "
               "\"upload 1\" at once and removed when you leave or the demo stops.")


def title(plugin) -> str:
    return "medical imaging"


# --------------------------------------------------------------------------------------------- study
@dataclass
class Study:
    """The upload a session works on: its private copy and how to render slice / frame `index`."""

    staged: StagedUpload
    kind: str  # "dicom" (one file, possibly multi-frame), "series" or "image"
    count: int  # slices, frames, or 1
    unit: str  # "slice", "frame" or "image"
    header: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    windowable: bool = False
    default_window: tuple[float, float] | None = None
    value_range: tuple[float, float] | None = None
    summary: str = ""
    dataset: Any = None  # kind "dicom": the pydicom Dataset (pydicom caches its decoded pixels)
    series: Any = None  # kind "series": a dicom.DicomSeries
    image: Image.Image | None = None  # kind "image"
    headers: dict = field(default_factory=dict)  # kind "series": each file's header, by path
    redact: bool = False  # black out burned-in text (files flagged BurnedInAnnotation YES; the page's checkbox)
    redaction: Any = None  # the last render's redact.Redaction (None: not asked for, or a PNG / JPEG)
    first: int | None = None  # the slice first shown when the usual one does not decode
    hounsfield: bool = False  # values in HU (CT): the window presets, which are CT windows, apply

    @property
    def start_index(self) -> int:
        """The slice first shown: the middle of a series, the first frame of a multi-frame file (or the nearest
        one that decodes)."""
        if self.first is not None:
            return self.first
        return self.count // 2 if self.kind == "series" else 0

    def label(self, index: int) -> str:
        return upload_label(0) if self.count == 1 else f"{self.unit} {index + 1}/{self.count}"

    def render(self, index: int = 0, window: str | tuple[float, float] | None = None) -> Image.Image:
        """Slice / frame `index` as 8-bit RGB through `window` (None = the file's own window); with `redact`,
        the burned-in text regions of a file flagged BurnedInAnnotation YES blacked out (what the model gets too)."""
        index = min(max(int(index), 0), self.count - 1)
        self.redaction = None
        if self.kind == "image":
            return self.image
        if not self.windowable:
            window = None
        if self.kind == "series":
            image, header = self.series.image(index, window=window), self.headers.get(self.series.slices[index][0])
        else:
            image, header = dicom.dicom_to_rgb(self.dataset, window=window, frame=index), self.dataset
        if self.redact and header is not None:
            self.redaction = redact.redact_burned_in(image, header)
            return self.redaction.image
        return image

    def render_named(self, index: int = 0, window: str | tuple[float, float] | None = None) -> Image.Image:
        """:meth:`render`, a slice that does not decode raising :class:`UploadError` naming it as the page does
        ("slice 5/9"), not by its file (a zip's files have internal names the page never shows)."""
        try:
            return self.render(index, window)
        except dicom.DicomError as err:
            i = min(max(int(index), 0), self.count - 1)
            log.info("demo: %s", err)
            damaged = any(word in err.reason for word in ("truncated", "corrupt", "damaged"))
            raise UploadError(f"{self.label(i)}: {err.reason}" + ("; the file is incomplete or damaged: copy or "
                                                                   "export it again" if damaged else "")) from None

    def redaction_note(self) -> str:
        """What the last render blacked out, for the image's label ("" when nothing was asked or done)."""
        r = self.redaction
        if r is None:
            return ""
        if r.rule == "not flagged":
            return "not flagged: nothing blacked out"
        if not r.regions:  # flagged, but its rule left nothing outside (ultrasound regions covering the image)
            return f"burned-in text declared, nothing blacked out ({r.rule} cover the whole image): check the pixels"
        return f"burned-in text blacked out ({len(r.regions)} box{'es' if len(r.regions) > 1 else ''}, {r.rule})"

    def pick(self, index: int, n: int) -> list[int]:
        """The slices sent to the model: slice `index` alone, or `n` evenly spaced through the study."""
        n = max(1, min(int(n), self.count, MAX_MODEL_SLICES))
        if n == 1:
            return [min(max(int(index), 0), self.count - 1)]
        return dicom.pick_slices(self.count, n)  # series and multi-frame files alike, as the medical reader picks

    def model_inputs(self, index: int, n: int, window) -> tuple[list[Image.Image], list[str], str | None]:
        """``(images, labels, prompt)`` for a question: one image without prompt, or several with
        ``"Slice k/N: <image>"`` lines placing them (the page's labels may say "frame"; the model gets the
        converters' words, as a multi-frame file in a series folder is trained on)."""
        picked = self.pick(index, n)
        images = [self.render_named(i, window) for i in picked]
        labels = [self.label(i) for i in picked]
        prompt = None if len(images) == 1 else slice_prompt([f"slice {i + 1}/{self.count}" for i in picked])
        return images, labels, prompt

    def close(self) -> None:
        self.staged.cleanup()


def load_study(files, *, max_bytes: int, session: str | None = None) -> Study:
    """Stage and read an upload: one DICOM file, several files of one series, a zip of a series, or one
    PNG / JPEG (freed by ``Study.close`` or the end of the browser `session`). Raises :class:`UploadError` with a
    message fit for the page."""
    staged = stage_uploads(files, max_bytes=max_bytes, session=session)
    try:
        study = _read_staged(staged, max_bytes=max_bytes)
        _first_render(study)  # decode now: broken pixel data is reported at upload, not later
        return study
    except Exception as exc:
        staged.cleanup()
        if isinstance(exc, UploadError):
            raise
        raise UploadError(readable_error(exc, staged)) from None


def _first_render(study: Study) -> None:
    """Render the first slice shown; when it does not decode, start from the nearest slice that does (one
    damaged slice must not refuse a whole series), said in the warnings. Raises the first slice's error when
    none of the nearest START_TRIES slices decode."""
    start = study.start_index
    try:
        study.render(start)
        return
    except Exception as first_error:
        nearest = sorted(range(study.count), key=lambda i: (abs(i - start), i))[1:START_TRIES + 1]
        for i in nearest:
            try:
                study.render(i)
            except Exception:  # noqa: BLE001 - the next one may decode
                continue
            study.first = i
            note = f"{study.label(start).capitalize()} does not decode; showing {study.label(i)}."
            study.warnings.insert(0, note)
            return
        raise first_error


def _read_staged(staged: StagedUpload, *, max_bytes: int) -> Study:
    paths = staged.paths
    suffixes = {p.suffix for p in paths}
    if ".zip" in suffixes:
        if len(paths) != 1:
            raise UploadError("upload a zip on its own (one zip holding one series)")
        return _series_study(staged, _unzip_neutral(staged, max_bytes))
    if suffixes & IMAGE_SUFFIXES:
        if len(paths) == 1:
            return _image_study(staged)
        pictures = [k for k, p in enumerate(paths) if p.suffix in IMAGE_SUFFIXES]
        if len(pictures) == len(paths):
            raise UploadError("upload one PNG / JPEG image at a time (or a DICOM series)")
        return _mixed_study(staged, pictures)
    if len(paths) == 1:
        return _dicom_study(staged)
    return _series_study(staged, paths)


def _mixed_study(staged: StagedUpload, pictures: list[int]) -> Study:
    """DICOM files uploaded with PNG / JPEG images: the DICOM study, the images left out and named (one study is
    shown at a time); when the other files hold no DICOM image, an error naming both."""
    others = [k for k in range(len(staged.paths)) if k not in pictures]
    left_out = _labels(pictures)
    try:
        study = _dicom_study(staged, others[0]) if len(others) == 1 else _series_study(
            staged, [staged.paths[k] for k in others])
    except UploadError as err:
        raise UploadError(f"{err}; {left_out} (PNG / JPEG) not read: this page shows one study at a time -- upload an "
                          "image on its own, or the DICOM files without images") from None
    study.warnings.insert(0, f"{left_out[0].upper()}{left_out[1:]} (PNG / JPEG) not shown: this page shows one study "
                             f"at a time; showing the DICOM {study.summary} from {_labels(others)}. Upload an image on "
                             "its own to ask about it.")
    return study


def _labels(indexes: Sequence[int]) -> str:
    """``upload 1, upload 3`` (the first five, then how many more)."""
    shown = ", ".join(upload_label(k) for k in indexes[:5])
    return shown + (f" and {len(indexes) - 5} more" if len(indexes) > 5 else "")


def _unzip_neutral(staged: StagedUpload, max_bytes: int) -> Path:
    """Extract the zip safely (``dicom.extract_zip`` limits), then move its files to neutral names: member
    names such as ``DOE_JANE/CT/IM1.dcm`` must not reach messages or the page."""
    extracted = staged.scratch("unzipped")
    limit = ZIP_EXPANSION * max_bytes
    try:
        files = dicom.extract_zip(staged.paths[0], extracted, max_files=MAX_ZIP_FILES, max_bytes=limit)
    except dicom.DicomError as err:  # its detail may quote member names (often patient names): reason only
        more = {"zip too large": f" (it unpacks to more than {limit / 2**20:.0f} MB)",
                "too many files in zip": f" (more than {MAX_ZIP_FILES})",
                "duplicate entry in zip": " (it holds two or more files under one name)"}.get(err.reason, "")
        raise UploadError(f"{upload_label(0)}: {err.reason}{more}") from None
    flat = staged.scratch("series")
    groups: dict[str, str] = {}
    for k, path in enumerate(sorted(Path(f) for f in files)):
        path.rename(flat / _neutral_name(path, k + 1, groups))
    shutil.rmtree(extracted, ignore_errors=True)
    return flat


def _neutral_name(path: Path, number: int, groups: dict[str, str]) -> str:
    """``file-NNNN`` plus what `dicom.damaged_files` reads from a name: a DICOM suffix kept; any other suffix
    (a CD export's README.TXT, AUTORUN.INF, viewer .exe) as ``.other``, so such a file is not taken for a damaged
    slice; a suffix-less name's digit pattern (``IM#`` of IM0001, IM0002) as a letter group shared by its
    neighbours, so a damaged suffix-less slice still is."""
    name = path.name.lower()
    kept = next((s for s in (".dcm.gz", ".dcm", ".dicom") if name.endswith(s)), None)
    if kept is not None:
        return f"file-{number:04d}{kept}"
    if path.suffix:
        return f"file-{number:04d}.other"
    pattern = dicom.slice_name_pattern(path)
    if pattern not in groups:  # letters: the pattern takes digits out
        n = len(groups)
        groups[pattern] = string.ascii_lowercase[n % 26] * (n // 26 + 1)
    return f"file-{groups[pattern]}-{number:04d}"


def _image_study(staged: StagedUpload) -> Study:
    image = read_image(staged.paths[0])
    warnings = [("A PNG / JPEG carries no de-identification metadata: check that the pixels show no patient "
                 "name, date or ID before sharing the image or the answer.")]
    return Study(staged, "image", 1, "image", header={"size": f"{image.width} × {image.height} px"},
                 warnings=warnings, summary="image", image=image)


def _dicom_study(staged: StagedUpload, k: int = 0) -> Study:
    try:
        ds = dicom.read_dicom(staged.paths[k])
    except dicom.DicomError as err:
        if err.reason != "not a DICOM file":
            raise
        # a TIFF, WebP, PDF, ... : say what this page reads, not only what the file is not
        raise UploadError(f"{upload_label(k)}: not a DICOM file; this page reads DICOM files (one file, the files "
                          "of one series, or a .zip of them) and PNG / JPEG images") from None
    not_image = dicom.not_an_image(ds)
    if not_image is not None and not dicom.has_pixel_data(ds):  # a single dose grid or mask still shows
        reason, kind = not_image
        raise UploadError(f"{upload_label(k)}: {reason} ({kind}): not an image; this page reads DICOM images (one "
                          "file, the files of one series, or a .zip of them) and PNG / JPEG images")
    if not_image is None and not dicom.has_pixel_data(ds):  # an image object cut off before its pixels
        raise UploadError(f"{upload_label(k)}: no pixel data in an image file; the file is incomplete or damaged: "
                          "copy or export it again")
    frames = max(1, int(dicom.frame_count(ds)))
    unit = "frame" if frames > 1 else "image"
    header = dict(deid.safe_header(ds))
    warnings = _warnings([ds])
    grid = dicom.grid_kind(ds)
    if grid is not None:  # shown, but a clinician should know it is no picture of the anatomy
        warnings.append(f"This file is {grid[0]}, not an image of the anatomy; upload the {grid[1]} series to see "
                        "the anatomy.")
    study = Study(staged, "dicom", frames, unit, header=header, warnings=warnings, dataset=ds,
                  summary=f"{_modality(ds)} DICOM" + (f", {frames} frames" if frames > 1 else ""))
    _set_window(study, ds, study.start_index)
    return study


def _series_study(staged: StagedUpload, source) -> Study:
    """The largest series among the files of `source` (a folder of unzipped files, or uploaded files)."""
    passed: list[tuple[Path, str, str | None]] = []
    found, owners = dicom.scan_series(source, on_skip=lambda *skip: passed.append(skip))
    if not found:
        raise UploadError(f"{upload_label(0) if len(staged.paths) == 1 else 'the upload'}: "
                          f"no readable DICOM images ({_passed_over(passed, 'passed over:') or 'no files'})")
    series = max(found, key=len)
    # a damaged or missing file whose header (or DICOMDIR record) names a series not shown is not one of its slices
    passed = [(path, f"{reason} ({ANOTHER_SERIES})", detail)
              if reason in dicom.DAMAGED_REASONS and owners.get(path, series.series_uid) != series.series_uid
              else (path, reason, detail) for path, reason, detail in passed]
    # by the page's label ("upload 5") for uploaded files; a zip's members by their neutral names
    bad = set(dicom.damaged_files([(path, reason) for path, reason, _ in passed], found))
    # a file the disc's DICOMDIR lists but the upload lacks: named as the DICOMDIR lists it (a disc's File ID, 8
    # characters of A-Z, 0-9, _ per part: no upload name, no patient's)
    listed = [detail for _, reason, detail in passed if reason == dicom.LISTED_MISSING]
    damaged = [staged.neutralize(path.name) for path, reason, _ in passed
               if (path, reason) in bad and reason != dicom.LISTED_MISSING]
    warnings = []
    if len(found) > 1:
        sizes = sorted((len(s) for s in found), reverse=True)
        counts = ", ".join(map(str, sizes[:5])) + (", …" if len(sizes) > 5 else "")
        which = "one of the largest" if sizes[1] == sizes[0] else "the largest"
        warnings.append(f"The upload holds {len(found)} series ({counts} slices); showing {which} "
                        f"({len(series)} slice{'s' if len(series) != 1 else ''}). To see another, upload its files "
                        "on their own.")
    if listed:
        names = [d for d in listed if d and re.fullmatch(r"[A-Za-z0-9_]{1,8}(/[A-Za-z0-9_]{1,8})*", d)]
        shown = f" ({', '.join(names[:5])}{', …' if len(names) > 5 else ''})" if names else ""
        warnings.append(f"The DICOMDIR lists {len(listed)} file{'s' * (len(listed) != 1)} of the uploaded series that "
                        f"the upload lacks{shown}: {'the series is' if len(found) == 1 else 'series may be'} missing "
                        "those slices. Upload the whole disc folder (or a .zip of it).")
    if damaged:
        warnings.append(f"{len(damaged)} damaged DICOM file(s) left out ({', '.join(damaged[:3])}"
                        f"{', …' if len(damaged) > 3 else ''}): the series may be missing slices.")
    passed_over = _passed_over([record for record in passed if record[:2] not in bad], "passed over, not shown:")
    if passed_over:
        warnings.append(f"{passed_over}.")
    same_position = staged.neutralize(series.same_position_note() or "")  # it names files: "upload 2", as the page
    if same_position:
        warnings.append(same_position[0].upper() + same_position[1:] + ".")
    headers = [dicom.read_dicom(p, header_only=True) for p in series.paths]
    header = dict(deid.safe_header(headers[0]))
    header["slices"] = str(len(series))
    study = Study(staged, "series", len(series), "slice", header=header,
                  warnings=warnings + _warnings(headers), series=series, headers=dict(zip(series.paths, headers)),
                  summary=f"{_modality(headers[0])} series, {len(series)} slice{'s' * (len(series) != 1)}")
    path, frame = series.slices[study.start_index]  # a multi-frame file counts one slice per frame
    if all(k.startswith("MONOCHROME") for k in _photometric_counts(headers)):
        _set_window(study, study.headers[path], frame)
    return study


ANOTHER_SERIES = "of a series not shown"


def _passed_over(passed: Sequence[tuple[Path, str, str | None]], said: str) -> str:
    """What `dicom.find_series` passed over (its skip records) as ``"N files <said> <counts by reason>"`` -- a
    non-image object counted by its kind (DICOMDIR, SR, RT dose); "" for none. Names are left out: a file's name
    may hold a patient's."""
    counts: dict[str, int] = {}
    for _, reason, detail in passed:
        if reason == dicom.OTHER_ORIENTATION:
            reason += " (a localizer?)"
        elif reason in dicom.NOT_IMAGE_REASONS and detail:
            reason = f"{detail.split(',')[0]} ({reason})"
        counts[reason] = counts.get(reason, 0) + 1
    if not counts:
        return ""
    total = sum(counts.values())
    parts = ", ".join(f"{n} × {reason}" for reason, n in sorted(counts.items(), key=lambda item: -item[1]))
    return f"{total} file{'s' * (total != 1)} {said} {parts}"


def _modality(ds) -> str:
    value = str(ds.get("Modality", "") or "").strip()
    # a Modality is a code string of up to 16 letters, digits, '_' (RTIMAGE, RTDOSE, IVOCT); nothing else reaches
    # the page
    return value if re.fullmatch(r"[A-Za-z0-9_]{1,16}", value) else "unknown-modality"


def _warnings(datasets: Sequence[Any]) -> list[str]:
    out = []
    burned = sum(bool(deid.burned_in_annotation(ds)) for ds in datasets)
    if burned:
        where = "this file declares" if len(datasets) == 1 else f"{burned} of {len(datasets)} slices declare"
        out.append(f"Burned-in annotation: {where} text in the pixels (BurnedInAnnotation = YES); it may "
                   "show patient details in the image and reaches the model unless you tick \"Black out burned-in "
                   "text\".")
    else:
        risky = [ds for ds in datasets if deid.burned_in_risk(ds)]
        if risky:
            where = "this file does" if len(datasets) == 1 else f"{len(risky)} of {len(datasets)} slices do"
            out.append(f"{_modality(risky[0])} images often carry burned-in text (names, dates) and {where} "
                       "not say whether they have any: check the pixels.")
    faces = sum(str(ds.get("RecognizableVisualFeatures") or "").strip().upper() == "YES" for ds in datasets)
    if faces:
        where = "this file declares" if len(datasets) == 1 else f"{faces} of {len(datasets)} slices declare"
        out.append(f"Recognisable features: {where} that the image shows the patient's face or another feature that "
                   "could identify them (RecognizableVisualFeatures = YES). It is shown here and sent to the model; "
                   "\"Black out burned-in text\" does not remove it.")
    # every slice: a series may mix de-identified slices with one that still names the patient
    phi = phi_warning(sorted({keyword for ds in datasets for keyword in deid.find_phi(ds)}))
    if phi:
        out.append(phi if len(datasets) == 1 else phi.replace("The file is not", "The series is not", 1))
    kinds = _photometric_counts(datasets)
    if len(kinds) > 1:
        listed = ", ".join(f"{kind or '(none)'}: {n} slice{'s' if n > 1 else ''}" for kind, n in kinds.items())
        out.append(f"The slices do not share one PhotometricInterpretation ({listed}): they may come from different "
                   "acquisitions or exports; check that they belong together."
                   + ("" if all(k.startswith("MONOCHROME") for k in kinds) else
                      " Window presets are off, as some slices are not greyscale."))
    return out


def _photometric_counts(datasets: Sequence[Any]) -> dict[str, int]:
    """PhotometricInterpretation -> how many of `datasets` have it, most common first."""
    counts: dict[str, int] = {}
    for ds in datasets:
        kind = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# identity first: what names the patient; then the rest by kind
_IDENTITY_FIRST = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientNames", "OtherPatientIDs",
                   "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers")
_IDENTITY_WORDS = ("Patient", "MedicalRecord", "Admission", "MilitaryRank", "BranchOfService", "EthnicGroup",
                   "Occupation", "Residence")
_PEOPLE_WORDS = ("Institution", "Physician", "Operator", "Person", "Organization", "Observer", "Reviewer",
                 "Performer", "Author", "Department", "Recipient", "Evaluator", "Creator", "Approver", "Interpretation",
                 "Responsible", "Sponsor", "Coordinating", "Site")
_DEVICE_WORDS = ("Station", "Device", "Serial", "Detector", "Gantry", "Plate", "Cassette", "Generator", "Carrier",
                 "ApplicationEntity")
_KINDS = (("patient identity", "patient identity", "patient identity"),
          ("dates and times", "date or time", "dates and times"),
          ("people and institutions", "person or institution", "people and institutions"),
          ("device", "device attribute", "device attributes"),
          ("other", "other identifying attribute", "other identifying attributes"))


def _vr_of(keyword: str) -> str:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    try:
        return dictionary_VR(tag) if tag is not None else ""
    except KeyError:
        return ""


def _kind(keyword: str) -> str:
    vr = _vr_of(keyword)
    if keyword in _IDENTITY_FIRST or any(w in keyword for w in _IDENTITY_WORDS):
        return "patient identity"
    if vr in ("DA", "DT", "TM") or keyword.endswith(("Date", "Time", "DateTime")):
        return "dates and times"
    if vr == "PN" or any(w in keyword for w in _PEOPLE_WORDS):
        return "people and institutions"
    if vr == "AE" or any(w in keyword for w in _DEVICE_WORDS):
        return "device"
    return "other"


def phi_warning(keywords: Sequence[str]) -> str:
    """The page's warning for identifying attributes found in a file (``deid.find_phi`` keywords), grouped by
    kind: patient identity first (PatientName, PatientID, PatientBirthDate, ...), then dates and times,
    people and institutions, device, other; private tags only counted. "" when there are none."""
    private = [k for k in keywords if k.startswith("private")]
    groups: dict[str, list[str]] = {}
    for keyword in sorted(set(keywords) - set(private)):
        groups.setdefault(_kind(keyword), []).append(keyword)
    first = {k: n for n, k in enumerate(_IDENTITY_FIRST)}
    groups.get("patient identity", []).sort(key=lambda k: (first.get(k, len(first)), k))
    parts = []
    for kind, one, many in _KINDS:
        found = groups.get(kind, [])
        if not found:
            continue
        listed = ", ".join(found[:_PHI_SHOWN]) + (f" and {len(found) - _PHI_SHOWN} more" if len(found) > _PHI_SHOWN
                                                  else "")
        count = "" if kind == "patient identity" else f"{len(found)} "
        parts.append(f"{count}{one if len(found) == 1 else many} ({listed})")
    if private:
        parts.append(f"{len(private)} private tag{'s' if len(private) != 1 else ''} (vendor data that may hold "
                     "identifying values)")
    if not parts:
        return ""
    held = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"The file is not de-identified: it holds {held}. They are not shown here and are not sent to "
            "the model.")


def _set_window(study: Study, header_ds, frame: int = 0) -> None:
    """Windowing for a greyscale study: the default window from `header_ds` (its WindowCenter / Width for
    `frame`, else the stack's range) and the sliders' range from the whole stack, so no frame lies outside them."""
    study.windowable = dicom.windowable(header_ds)
    if not study.windowable:
        return
    rescale_type = str(header_ds.get("RescaleType", "") or "").strip().upper()
    study.hounsfield = rescale_type == "HU" or (_modality(header_ds) == "CT" and rescale_type in ("", "HU"))
    study.value_range = _stack_range(study)
    study.default_window = _header_window(header_ds, frame)
    if study.default_window is None and study.value_range is not None:
        lo, hi = study.value_range
        study.default_window = ((lo + hi) / 2, max(hi - lo, 1.0))


def _stack_range(study: Study) -> tuple[float, float] | None:
    """Lowest and highest modality value (pixel padding left out) over the frames of the study: every frame up to RANGE_FRAMES (beyond
    that many evenly spaced ones, the first shown among them), each file of a series read once. Frames read that
    do not decode are named in the study's warnings, so a clinician knows before scrolling to them."""
    picked = sorted(set(dicom.pick_slices(study.count, RANGE_FRAMES)) | {study.start_index})
    if study.kind == "series":
        by_path: dict[Path, list[tuple[int, int]]] = {}
        for i in picked:
            path, frame = study.series.slices[i]
            by_path.setdefault(path, []).append((i, frame))
        sources: Iterator[tuple[Any, list[tuple[int, int]]]] = iter(by_path.items())
    else:
        sources = iter([(study.dataset, [(i, i) for i in picked])])
    ranges, bad = [], []
    for source, frames in sources:
        try:
            ds = dicom.read_dicom(source) if isinstance(source, Path) else source
        except dicom.DicomError as err:
            bad += [(i, err.reason) for i, _ in frames]
            continue
        for i, frame in frames:
            try:
                values = dicom.modality_values(ds, frame=frame, padding=False)  # as the min-max render
            except dicom.DicomError as err:
                bad.append((i, err.reason))
                continue
            finite = values[np.isfinite(values)]
            if finite.size:
                ranges.append((float(finite.min()), float(finite.max())))
    if bad:
        listed = ", ".join(f"{study.label(i)} ({reason})" for i, reason in bad[:3]) + (", …" if len(bad) > 3 else "")
        study.warnings.append(f"{len(bad)} {study.unit}{'s' if len(bad) > 1 else ''} of {study.count} do"
                              f"{'' if len(bad) > 1 else 'es'} not decode: {listed}. {'They' if len(bad) > 1 else 'It'} cannot be "
                              "shown or sent to the model.")
    if not ranges:
        return None
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


def _header_window(ds, frame: int = 0) -> tuple[float, float] | None:
    """The WindowCenter / Width that "file default" renders `frame` with: top level or the frame's functional
    groups (enhanced multi-frame files), None where the file has none valid (min-max is rendered then)."""
    found = dicom.file_window(ds, frame)  # dicom_to_rgb's own rule, so the sliders match it
    return (found[0], found[1]) if found else None


# --------------------------------------------------------------------------------------------- windows
def window_choice(preset: str | None, centre: float | None, width: float | None
                  ) -> str | tuple[float, float] | None:
    """What to pass to :func:`dicom.dicom_to_rgb`: None for the file default, a preset name, or
    ``(centre, width)`` from the sliders."""
    if not preset or preset == FILE_DEFAULT:
        return None
    if preset in dicom.WINDOW_PRESETS:
        return preset
    if centre is None or width is None:
        return None
    return float(centre), max(float(width), 1.0)


def window_controls(study: Study | None) -> dict[str, Any]:
    """Slider ranges and starting values for `study`: ``{"centre": (lo, hi, value), "width": (lo, hi, value)}``."""
    presets = list(dicom.WINDOW_PRESETS.values()) if study is None or study.hounsfield else []
    lo, hi = (study.value_range if study and study.value_range else (-1024.0, 3071.0))
    centre, width = (study.default_window if study and study.default_window else ((lo + hi) / 2, hi - lo))
    c_lo = min(lo, centre, *(c for c, _ in presets))
    c_hi = max(hi, centre, *(c for c, _ in presets))
    w_hi = max(hi - lo, width, *(w for _, w in presets))
    c_lo, c_hi = float(np.floor(c_lo)), float(np.ceil(c_hi))
    # a blank study (one value throughout) must still give sliders that move: Gradio needs minimum < maximum
    return {"centre": (c_lo, max(c_hi, c_lo + 1.0), round(centre, 1)),
            "width": (1.0, max(float(np.ceil(w_hi)), 2.0), round(max(width, 1.0), 1))}


def _presets(study: Study | None = None) -> list[str]:
    """The window choices: the CT presets (HU windows) only for a study in HU, where they mean something."""
    ct = study is None or study.hounsfield
    return [FILE_DEFAULT, *(dicom.WINDOW_PRESETS if ct else ()), CUSTOM]


def describe_window(study: Study, window) -> str:
    if not study.windowable:
        return ""
    if window is None:
        return "window: file default"
    if isinstance(window, str):
        c, w = dicom.WINDOW_PRESETS[window]
        return f"window: {window} ({c:g}/{w:g})"
    return f"window: {window[0]:g}/{window[1]:g}"


# --------------------------------------------------------------------------------------------- asking
def ask(session: ModelSession, question: str, study: Study | None, index: int = 0, n_slices: int = 1,
        window=None, draw_answer=default_draw_answer) -> Iterator[tuple[str, list[Image.Image] | None, list[str], str]]:
    """Yield ``(answer so far, drawn images or None, their labels, notice)``; the last item carries the
    images sent to the model with the answer's boxes drawn. The notice is page markdown naming what failed
    (no study, a slice that does not decode, the question, the generation or only the drawing) or saying
    that a looping answer was cut; "" when all went well. Without a study nothing is sent to the model."""
    text = ""
    if study is None:
        yield text, None, [], notice_md("upload a DICOM file, a series or an image first: nothing was sent to the "
                                        "model.", "No study loaded")
        return
    try:
        images, labels, prompt = study.model_inputs(index, n_slices, window)
    except Exception as exc:  # noqa: BLE001 - a slice that does not decode: say so in the page
        yield text, None, [], error_md(readable_error(exc, study.staged), "Could not prepare the slices")
        return
    for text, drawn, note in stream_and_draw(session, question, images, prompt, draw_answer, "boxes"):
        yield text, drawn, labels, note


# --------------------------------------------------------------------------------------------- page
def build(session: ModelSession, plugin, settings: DemoSettings) -> None:
    hooks = getattr(plugin, "demo_hooks", None) or {}
    draw_answer = hooks.get("draw_answer") or default_draw_answer
    gr.Markdown(f"## pocket-adapt · medical imaging\nModel: **{escape_md(session.name)}**, "
                f"{escape_md(session.sampling_note)} · {escape_md(MEDICAL_DISCLAIMER)}")
    study_state = gr.State(None, delete_callback=lambda study: study.close() if study else None)
    controls = window_controls(None)
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown(f"**What to upload:** {escape_md(UPLOAD_HELP)}", elem_id="pa-upload-help",
                        elem_classes=["pa-notice"])
            upload = gr.UploadButton(f"Upload DICOM, series (.zip) or PNG / JPEG (≤ {settings.max_upload_mb:g} MB)",
                                     file_count="multiple", variant="secondary")
            refused = gr.Button("upload refused", elem_id=REFUSED_BUTTON)  # hidden; the page presses it (HTTP 413)
            status = gr.Markdown("No study uploaded yet. Nothing identifying is shown; uploads are named "
                                 "\"upload 1\".", elem_classes=["pa-notice"])
            preset = gr.Dropdown(_presets(), value=FILE_DEFAULT, label="Window preset", interactive=False)
            with gr.Row():
                centre = gr.Slider(*controls["centre"][:2], value=controls["centre"][2], step=1,
                                   label="Window centre", interactive=False)
                width = gr.Slider(*controls["width"][:2], value=controls["width"][2], step=1,
                                  label="Window width", interactive=False)
            redact_box = gr.Checkbox(False, label="Black out burned-in text", elem_id="pa-redact",
                                     info=REDACT_HELP)
            index = gr.Slider(1, 2, value=1, step=1, label="Slice", visible=False)
            n_slices = gr.Slider(1, 2, value=1, step=1, label="Slices sent to the model", visible=False,
                                 info="1 = the slice shown; more = evenly spaced through the study")
            question = gr.Textbox(label="Question", lines=2, placeholder="e.g. Which organ is shown? Where is the lesion?")
            ask_button = gr.Button("Ask", variant="primary")
            notice = gr.Markdown("", elem_classes=["pa-notice"])
            answer = gr.Textbox(label="Answer", lines=5, interactive=False)
        with gr.Column(scale=1):
            preview = gr.Image(label="Image", type="pil", format="png", interactive=False, height=420,
                               buttons=["download", "fullscreen"], elem_id="pa-preview")
            sent = gr.Gallery(label="Slices sent to the model (answer boxes drawn)", columns=4, format="png",
                              visible=False, interactive=False, buttons=["download", "fullscreen"])
            warnings = gr.Markdown("")
            header = gr.Markdown("")

    def shown(study: Study, i: int, window) -> gr.Image:
        image = study.render_named(i, window)
        text = " · ".join(t for t in (study.label(i), describe_window(study, window), study.redaction_note()) if t)
        return gr.Image(value=image, label=text, format="png")  # lossless, as the preview

    def cleared(status_md: str) -> tuple:
        """Every output of an upload with no study loaded, `status_md` in the status line."""
        return (None, status_md, gr.Image(value=None, label="Image"), "", "",
                gr.Dropdown(_presets(), value=FILE_DEFAULT, interactive=False), gr.Slider(interactive=False),
                gr.Slider(interactive=False), gr.Slider(visible=False), gr.Slider(visible=False), "", "",
                gr.Gallery(value=None, visible=False))

    def on_refused(old: Study | None):
        if old is not None:
            old.close()
        return cleared(refused_md(settings.max_upload_mb, old is not None))

    def on_upload(files, old: Study | None, redact_on: bool = False, request: gr.Request = None):
        if old is not None:
            old.close()
        try:
            study = load_study(files, max_bytes=settings.max_upload_bytes,
                               session=request.session_hash if request else None)
            study.redact = bool(redact_on)
        except UploadError as err:
            return cleared(error_md(str(err)))
        c = window_controls(study)
        start = study.start_index
        many = study.count > 1
        return (study, f"**Ready:** {upload_label(0)} · {escape_md(study.summary)}", shown(study, start, None),
                info_md(study.header, "Header (de-identified)"), warnings_md(study.warnings),
                gr.Dropdown(_presets(study), value=FILE_DEFAULT, interactive=study.windowable),
                gr.Slider(minimum=c["centre"][0], maximum=c["centre"][1], value=c["centre"][2],
                          interactive=study.windowable),
                gr.Slider(minimum=c["width"][0], maximum=c["width"][1], value=c["width"][2],
                          interactive=study.windowable),
                gr.Slider(minimum=1, maximum=max(study.count, 2), value=start + 1, visible=many,
                          label=study.unit.capitalize()),
                gr.Slider(minimum=1, maximum=max(min(study.count, MAX_MODEL_SLICES), 2), value=1, visible=many,
                          label=f"{study.unit.capitalize()}s sent to the model"),
                "", "", gr.Gallery(value=None, visible=False))

    def on_preset(p, c, w, i, study: Study | None):
        if study is None:
            return gr.skip(), gr.skip(), gr.skip()
        window = window_choice(p, c, w)
        image = _safe_render(shown, study, int(i) - 1, window)
        if isinstance(window, str):  # the sliders follow the preset
            return *dicom.WINDOW_PRESETS[window], image
        if window is None and study.default_window:
            return *study.default_window, image
        return gr.skip(), gr.skip(), image

    def on_slider(c, w, i, study: Study | None):
        if study is None:
            return gr.skip(), gr.skip()
        return CUSTOM, _safe_render(shown, study, int(i) - 1, window_choice(CUSTOM, c, w))

    def on_index(i, p, c, w, study: Study | None):
        if study is None:
            return gr.skip()
        return _safe_render(shown, study, int(i) - 1, window_choice(p, c, w))

    def on_redact(on: bool, i, p, c, w, study: Study | None):
        if study is None:
            return gr.skip()
        study.redact = bool(on)
        return _safe_render(shown, study, int(i) - 1, window_choice(p, c, w))

    def on_ask(q, study: Study | None, i, n, p, c, w):
        window = window_choice(p, c, w) if study else None
        for text, drawn, labels, note in ask(session, q, study, int(i) - 1, int(n), window, draw_answer):
            if drawn is None:
                yield text, gr.skip(), gr.skip(), note
            elif len(drawn) == 1:
                yield text, gr.Image(value=drawn[0]), gr.Gallery(value=None, visible=False), note
            else:
                yield text, gr.skip(), gr.Gallery(value=list(zip(drawn, labels)), visible=True), note

    upload.upload(on_upload, inputs=[upload, study_state, redact_box],
                  outputs=[study_state, status, preview, header, warnings, preset, centre, width, index, n_slices,
                           answer, notice, sent])
    refused.click(on_refused, inputs=[study_state],
                  outputs=[study_state, status, preview, header, warnings, preset, centre, width, index, n_slices,
                           answer, notice, sent])
    preset.input(on_preset, inputs=[preset, centre, width, index, study_state], outputs=[centre, width, preview])
    for slider in (centre, width):
        slider.input(on_slider, inputs=[centre, width, index, study_state], outputs=[preset, preview],
                     trigger_mode="always_last", show_progress="hidden")
    index.input(on_index, inputs=[index, preset, centre, width, study_state], outputs=[preview],
                trigger_mode="always_last", show_progress="hidden")
    redact_box.input(on_redact, inputs=[redact_box, index, preset, centre, width, study_state], outputs=[preview])
    for event in (ask_button.click, question.submit):
        event(on_ask, inputs=[question, study_state, index, n_slices, preset, centre, width],
              outputs=[answer, preview, sent, notice], show_progress="minimal")


def _safe_render(shown, study: Study, i: int, window):
    try:
        return shown(study, i, window)
    except Exception as exc:  # noqa: BLE001 - a frame that does not decode: a toast, not a trace
        gr.Warning(readable_error(exc, study.staged))
        return gr.skip()
