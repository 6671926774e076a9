"""Small synthetic medical data sets: real DICOM CT series and the public VQA layouts, deterministic by seed.

They exist so the converters (:mod:`domains.medical.convert`), the tests, the recipe template and the demo
run without any download (``domains.md`` §3). Everything comes from one *phantom*: a CT volume in Hounsfield
units (HU) with a body ellipse (skin-line fat -100, muscle / soft tissue 40), liver 60, spleen 45, kidneys
30, lungs -850, a bone-dense spine (700-1000), air -1000 outside, mild noise, and 0-2 spherical lesions per
patient at known positions: hypodense liver / spleen lesions, kidney cysts (0 HU) and hyperdense lung
nodules. Each lesion's box in each slice is the bounding box of its voxels there, so the labels are exact.

API::

    make_case(seed, size=64, n_slices=12, lesion_organs=None) -> Case     # the phantom, in HU
    generate(kind, out, n=3, seed=0, size=64, n_slices=12, **options) -> Path
    generate_all(out_dir, kinds=None, n=3, seed=0, size=64, n_slices=12) -> dict[kind, Path]   # plugin.synthetic

`kind` is one of :data:`KINDS`:

``"dicom_qa"``
    The :func:`~domains.medical.convert.convert_dicom_qa` layout: ``series/caseNN/IM_<hash>.dcm`` (one CT
    series per patient, file names in no anatomical order, so readers must sort by position) and ``qa.json``.
    The files are valid **CT Image Storage** instances (Explicit VR Little Endian, file meta, generated
    Study / Series / SOP Instance / Frame of Reference UIDs) with consistent ``ImagePositionPatient``,
    ``ImageOrientationPatient`` (axial), ``PixelSpacing``, ``SliceThickness`` / ``SpacingBetweenSlices`` and
    ``SliceLocation``; pixels are uint16 stored values with ``RescaleSlope`` 1 / ``RescaleIntercept`` -1024,
    so the modality LUT gives real HU; ``WindowCenter`` / ``WindowWidth`` 40 / 400. They carry **fake but
    realistic PHI** (``PatientName`` "DOE^JANE", ``PatientID``, birth date, study dates, accession number,
    institution, referring physician, a private tag holding a name) so de-identification is exercised; with
    ``burned_in=True`` (default) patient 1 has ``BurnedInAnnotation`` "YES" and initials burned into the
    pixels. `n` patients.
    Questions per patient: closed ("Is there a lesion in this slice?" yes / no), open ("In which organ is
    the lesion?"; "How many lesions are visible in these slices?" over three slices), grounding ("Where is
    the lesion?" -> boxes) and multiple choice (the lesion's organ).
``"vqa_rad"``
    ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/synpicNNNNN.jpg`` with every public field;
    phrase types ``freeform`` / ``para`` (train) and ``test_freeform`` / ``test_para`` (test).
``"slake"``
    ``Slake1.0/{train,validate,test}.json`` + ``Slake1.0/imgs/xmlabN/source.jpg``, English and Chinese
    questions (``q_lang``), every public field.
``"pmc_vqa"``
    ``train.csv`` / ``test.csv`` (``Figure_path, Question, Answer, Choice A..D`` as ``"A:…"``,
    ``Answer_label``) + ``images/PMC<n>_F<k>.jpg``.
``"classification"``
    Folder per class (``normal``, ``liver_lesion``, ``kidney_cyst``, ``lung_nodule``): `n` images per class,
    PNG renders and single-slice DICOM files (with PHI) mixed.

Splits go by patient, never mixing one patient's images across them: the last fifth of the patients (at
least one, when n > 1) is ``test`` (SLAKE: the patient before them ``validate``), the rest ``train``.
Images of the VQA copies are JPEG renders of phantom slices (abdomen or lung window). Each item draws from
``numpy.random.default_rng([kind code, seed, index])``, so the same arguments write the same data; DICOM
UIDs come from ``pydicom.uid.generate_uid`` with deterministic entropy sources.
"""

from __future__ import annotations

import csv
import hashlib
import json
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from domains.base import DomainError, check_synthetic_call, generate_kinds, kinds_written
from model.progress import Progress

__all__ = [
    "KINDS",
    "ORGANS",
    "Case",
    "Lesion",
    "generate",
    "generate_all",
    "make_case",
    "window_to_uint8",
]

KINDS: tuple[str, ...] = ("dicom_qa", "vqa_rad", "slake", "pmc_vqa", "classification")
_CODE = {k: 700 + i for i, k in enumerate(KINDS)}

AIR, FAT, SOFT_TISSUE, BONE = -1000.0, -100.0, 40.0, 700.0
# organ -> (HU, ellipse centres (x, y) in [-1, 1] image coordinates, semi-axes, slice range as a fraction
# of the series from the feet (0) to the head (1)); the image shows the patient's right on the left
ORGANS: dict[str, tuple[float, tuple[tuple[float, float], ...], tuple[float, float], tuple[float, float]]] = {
    "kidney": (30.0, ((-0.36, 0.22), (0.36, 0.22)), (0.12, 0.15), (0.0, 0.45)),
    "liver": (60.0, ((-0.3, -0.04),), (0.36, 0.3), (0.2, 0.72)),
    "spleen": (45.0, ((0.46, 0.02),), (0.15, 0.2), (0.34, 0.66)),
    "lung": (-850.0, ((-0.38, -0.05), (0.38, -0.05)), (0.3, 0.36), (0.68, 1.0)),
}
# lesion kind per organ: (HU, density word, phrase)
LESIONS: dict[str, tuple[float, str, str]] = {
    "liver": (10.0, "hypodense", "liver lesion"),
    "spleen": (12.0, "hypodense", "splenic lesion"),
    "kidney": (0.0, "hypodense", "renal cyst"),
    "lung": (35.0, "hyperdense", "lung nodule"),
}
WINDOWS = {"abdomen": (40.0, 400.0), "lung": (-600.0, 1500.0)}
FAKE_PATIENTS = (  # fake PHI: name, sex, birth date
    ("DOE^JANE", "F", "19650412"), ("ROE^RICHARD", "M", "19580923"), ("SMITH^ALEX", "M", "19720101"),
    ("MUSTERMANN^ERIKA", "F", "19800530"), ("TANAKA^HANAKO", "F", "19911111"), ("NOWAK^JAN", "M", "19470302"),
)
MIN_VISIBLE = 3  # a lesion counts as visible in a slice from this many voxels on


def _patient_split(i: int, n: int, val: bool = False) -> str:
    """Splits by patient (no patient in two splits): the last fifth (at least one) is ``test``, the one
    before them ``validate`` when `val`, the rest ``train``; a single patient is ``train``."""
    if n < 2:
        return "train"
    n_test = max(1, n // 5)
    if i >= n - n_test:
        return "test"
    if val and n >= 3 and i == n - n_test - 1:
        return "validate"
    return "train"


def _rng(kind: str, seed: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([_CODE[kind], int(seed), *more])


# --------------------------------------------------------------------------------------------- phantom
@dataclass
class Lesion:
    organ: str
    hu: float
    density: str
    phrase: str
    center: tuple[float, float, float]  # (x, y) normalised, z in slices
    radius: float = 0.12  # normalised units (1 = half the image side)
    radius_z: float = 1.6  # slices
    boxes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)  # slice -> pixel box (edges)


@dataclass
class Case:
    """One synthetic patient: the HU volume ``(n_slices, size, size)`` (slice 0 at the feet) and its labels."""

    hu: np.ndarray
    lesions: list[Lesion]
    organs: list[set[str]]  # organs present per slice
    areas: list[dict[str, int]] = field(default_factory=list)  # organ -> voxels per slice

    @property
    def n_slices(self) -> int:
        return self.hu.shape[0]

    def lesions_in(self, k: int) -> list[Lesion]:
        return [les for les in self.lesions if k in les.boxes]


def _ellipse(xx: np.ndarray, yy: np.ndarray, c: Sequence[float], axes: Sequence[float]) -> np.ndarray:
    return ((xx - c[0]) / axes[0]) ** 2 + ((yy - c[1]) / axes[1]) ** 2 <= 1.0


def _organ_scale(organ: str, t: float) -> float:
    lo, hi = ORGANS[organ][3]
    if not lo <= t <= hi:
        return 0.0
    mid, half = (lo + hi) / 2, (hi - lo) / 2 + 1e-9
    return float(np.sqrt(max(0.0, 1.0 - ((t - mid) / half) ** 2)) * 0.6 + 0.4)  # ellipsoid ends, not points


def _organ_mask(organ: str, t: float, xx: np.ndarray, yy: np.ndarray, scale: float = 1.0) -> np.ndarray:
    s = _organ_scale(organ, t) * scale
    mask = np.zeros(xx.shape, bool)
    if s == 0.0:
        return mask
    _, centres, axes, _ = ORGANS[organ]
    for c in centres:
        mask |= _ellipse(xx, yy, c, (axes[0] * s, axes[1] * s))
    return mask


MAX_SIZE, MAX_SLICES, MAX_VOXELS = 512, 1024, 512 * 512 * 128  # a real CT slice; ~1 GB of working arrays


def _check_volume(size: int, n_slices: int) -> None:
    """Refuse, before allocating, a phantom too small to hold the organs or too large for memory."""
    if size < 32:
        raise DomainError(f"size must be >= 32 pixels, got {size}")
    if n_slices < 4:
        raise DomainError(f"n_slices must be >= 4, got {n_slices}")
    if size > MAX_SIZE:
        raise DomainError(f"size must be <= {MAX_SIZE} pixels, got {size}")
    if n_slices > MAX_SLICES:
        raise DomainError(f"n_slices must be <= {MAX_SLICES}, got {n_slices}")
    if size * size * n_slices > MAX_VOXELS:
        raise DomainError(f"size x size x n_slices must be at most {MAX_VOXELS} voxels (e.g. 512 x 512 x 128), "
                          f"got {size} x {size} x {n_slices}")


def make_case(seed: int | Sequence[int], size: int = 64, n_slices: int = 12,
              lesion_organs: str | Sequence[str] | None = None) -> Case:
    """A phantom patient. `lesion_organs`: organs (or one organ) to put one lesion each in (default: 0-2 random
    ones)."""
    _check_volume(size, n_slices)
    rng = np.random.default_rng(seed)
    scale = {organ: float(rng.uniform(0.9, 1.1)) for organ in ORGANS}  # patients differ a little
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    xx, yy = np.meshgrid(axis, axis)
    ts = [k / (n_slices - 1) for k in range(n_slices)]
    body_axes = (0.86 + rng.uniform(-0.03, 0.03), 0.62 + rng.uniform(-0.03, 0.03))
    body = _ellipse(xx, yy, (0.0, 0.06), body_axes)
    inner = _ellipse(xx, yy, (0.0, 0.06), (body_axes[0] - 0.07, body_axes[1] - 0.07))
    spine = _ellipse(xx, yy, (0.0, 0.48), (0.1, 0.1))
    spine_core = _ellipse(xx, yy, (0.0, 0.48), (0.065, 0.065))
    hu = np.full((n_slices, size, size), AIR, np.float64)
    organs: list[set[str]] = []
    masks: list[dict[str, np.ndarray]] = []
    for k, t in enumerate(ts):
        sl = hu[k]
        sl[body] = FAT
        sl[inner] = SOFT_TISSUE
        present, organ_masks = set(), {}
        kidneys = _organ_mask("kidney", t, xx, yy, scale["kidney"] * 1.25) & inner
        sl[kidneys] = FAT  # perirenal fat
        for organ in ORGANS:
            m = _organ_mask(organ, t, xx, yy, scale[organ]) & inner
            if organ == "liver":
                m &= ~_organ_mask("lung", t, xx, yy, scale["lung"])  # the lung bases lie over the liver dome
            if m.sum() >= 4:
                sl[m] = ORGANS[organ][0]
                present.add(organ)
                organ_masks[organ] = m
        sl[spine] = 1000.0
        sl[spine_core] = BONE
        organs.append(present)
        masks.append(organ_masks)
    if isinstance(lesion_organs, str):  # one organ, not its letters
        lesion_organs = [lesion_organs]
    if lesion_organs is None:
        pool = ["liver", "liver", "kidney", "spleen", "lung"]
        lesion_organs = [pool[int(i)] for i in rng.choice(len(pool), size=int(rng.integers(1, 3)), replace=False)]
    lesions: list[Lesion] = []
    zz = np.arange(n_slices)
    for organ in lesion_organs:
        if organ not in ORGANS:
            raise DomainError(f"unknown organ {organ!r}; known: {', '.join(ORGANS)}")
        lesion = _place_lesion(rng, organ, masks, xx, yy, zz, lesions, size)
        if lesion is not None:
            lesions.append(lesion)
    for lesion in lesions:
        for k, box in list(lesion.boxes.items()):
            m = _lesion_mask(lesion, k, xx, yy) & masks[k][lesion.organ]
            hu[k][m] = lesion.hu
    hu += rng.normal(0.0, 6.0, hu.shape) * (hu > -990)  # noise inside the body only
    areas = [{organ: int(m.sum()) for organ, m in per_slice.items()} for per_slice in masks]
    return Case(hu=hu, lesions=lesions, organs=organs, areas=areas)


def _lesion_mask(lesion: Lesion, k: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    cx, cy, cz = lesion.center
    r, rz = lesion.radius, lesion.radius_z
    dz = (k - cz) / rz
    if abs(dz) >= 1:
        return np.zeros(xx.shape, bool)
    rk = r * float(np.sqrt(1 - dz * dz))
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= rk * rk


def _place_lesion(rng: np.random.Generator, organ: str, masks: list[dict[str, np.ndarray]], xx: np.ndarray,
                  yy: np.ndarray, zz: np.ndarray, placed: list[Lesion], size: int) -> Lesion | None:
    slices = [k for k in range(len(masks)) if organ in masks[k]]
    if not slices:
        return None
    areas = np.array([masks[k][organ].sum() for k in slices], float)
    best = [k for k, a in zip(slices, areas) if a >= 0.6 * areas.max()]
    hu, density, phrase = LESIONS[organ]
    for _ in range(50):
        kc = best[int(rng.integers(len(best)))]
        ys, xs = np.nonzero(masks[kc][organ])
        i = int(rng.integers(len(xs)))
        cx, cy = float(xx[0, xs[i]]), float(yy[ys[i], 0])
        radius = float(rng.uniform(0.1, 0.15)) * (0.8 if organ in ("kidney", "spleen") else 1.0)
        lesion = Lesion(organ, hu, density, phrase, (cx, cy, float(kc)), radius)
        if any(abs(o.center[2] - kc) < 3 and np.hypot(o.center[0] - cx, o.center[1] - cy) < 0.4 for o in placed):
            continue
        core = _lesion_mask(lesion, kc, xx, yy)
        if (core & masks[kc][organ]).sum() < 0.8 * core.sum():  # mostly inside its organ
            continue
        for k in range(len(masks)):
            if organ not in masks[k]:
                continue
            m = _lesion_mask(lesion, k, xx, yy) & masks[k][organ]
            if m.sum() >= MIN_VISIBLE:
                ys, xs = np.nonzero(m)
                lesion.boxes[k] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if lesion.boxes:
            return lesion
    return None


def _box_area(box: Sequence[int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def window_to_uint8(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU -> 8-bit grey through a (center, width) window (linear, clipped)."""
    c, w = window
    lo = c - w / 2
    return (np.clip((hu - lo) / w, 0, 1) * 255 + 0.5).astype(np.uint8)


def _slice_rgb(case: Case, k: int, window: str = "abdomen") -> Image.Image:
    return Image.fromarray(window_to_uint8(case.hu[k], WINDOWS[window])).convert("RGB")


def _window_for(lesions: Iterable[Lesion]) -> str:
    return "lung" if any(les.organ == "lung" for les in lesions) else "abdomen"


# --------------------------------------------------------------------------------------------- DICOM
def _uid(*parts: Any) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["pocket-adapt synthetic CT", *map(str, parts)]))


def _ct_dataset(case: Case, k: int, *, patient: int, seed: int, size: int, burned_in: bool, study_uid: str,
                series_uid: str, frame_uid: str, fov_mm: float = 350.0, thickness: float = 5.0):
    """One CT Image Storage instance (slice `k` of `case`) with fake PHI; returns the pydicom FileDataset."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        CTImageStorage,
        ExplicitVRLittleEndian,
    )

    name, sex, birth = FAKE_PATIENTS[patient % len(FAKE_PATIENTS)]
    sop_uid = _uid(seed, patient, "sop", k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    study_date = f"2024{1 + patient % 12:02d}{10 + patient % 18:02d}"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{9 + patient % 8:02d}3015"
    ds.AccessionNumber = f"ACC{740000 + 37 * patient + seed:06d}"
    ds.Modality = "CT"
    ds.Manufacturer = "pocket-adapt synthetic"
    ds.InstitutionName = "Springfield General Hospital"
    ds.InstitutionAddress = "742 Evergreen Terrace, Springfield"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StationName = "CTSPRINGFIELD01"
    ds.StudyDescription = "CT CHEST ABDOMEN WO CONTRAST"
    ds.SeriesDescription = "AX 5.0 SOFT TISSUE"
    ds.OperatorsName = "NURSE^RATCHED"
    ds.PatientName = name
    ds.PatientID = f"MRN{100200 + 7919 * patient + seed:07d}"
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = f"{2024 - int(birth[:4]):03d}Y"
    ds.OtherPatientIDs = f"SSN-000-{patient:02d}-{1234 + seed:04d}"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = f"{thickness:.1f}"
    ds.SpacingBetweenSlices = f"{thickness:.1f}"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"S{4000 + patient}"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = k + 1
    spacing = fov_mm / size
    z = -300.0 + k * thickness  # slice 0 at the feet; z grows towards the head (LPS)
    ds.ImagePositionPatient = [f"{-fov_mm / 2 + spacing / 2:.4f}", f"{-fov_mm / 2 + spacing / 2:.4f}", f"{z:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.2f}"
    ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.WindowCenterWidthExplanation = "ABDOMEN"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    block = ds.private_block(0x0009, "POCKET SYNTHETIC", create=True)
    block.add_new(0x01, "LO", f"ward note: {name.replace('^', ' ').title()}")
    hu = case.hu[k].copy()
    if burned_in:
        hu = _burn_in(hu, name)
    stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)  # HU = stored * 1 - 1024
    ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
    return ds


def _burn_in(hu: np.ndarray, name: str) -> np.ndarray:
    """Initials burned into the top-left corner (outside the body), as old scanners printed them."""
    size = hu.shape[0]
    canvas = Image.new("L", (size, size), 0)
    initials = "".join(part[:1] for part in reversed(name.split("^")))
    ImageDraw.Draw(canvas).text((1, 0), initials, fill=255)
    out = hu.copy()
    out[np.asarray(canvas) > 127] = 1000.0
    return out


def _write_series(folder: Path, case: Case, *, patient: int, seed: int, size: int, burned_in: bool) -> list[Path]:
    study_uid, series_uid = _uid(seed, patient, "study"), _uid(seed, patient, "series")
    frame_uid = _uid(seed, patient, "frame")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(case.n_slices):
        ds = _ct_dataset(case, k, patient=patient, seed=seed, size=size, burned_in=burned_in, study_uid=study_uid,
                         series_uid=series_uid, frame_uid=frame_uid)
        # file names in no anatomical order (a hash of the SOP Instance UID): readers must sort by position
        path = folder / f"IM_{hashlib.sha1(ds.SOPInstanceUID.encode()).hexdigest()[:10]}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------- kinds
GROUNDING_QUESTION = ("Where is the lesion? Please provide the bounding box coordinate of the region this "
                      "sentence describes: <ref>lesion</ref>")
ORGAN_OPTIONS = ("kidney", "liver", "lung", "spleen")


class _QuestionList:
    """Appends the questions of one patient with running ids ``caseNN-001``, ..."""

    def __init__(self, items: list[dict], case: str, split: str, series: str):
        self.items, self.case, self.split, self.series = items, case, split, series

    def __call__(self, kind: str, slices: list[int], question: str, window: Any, **more: Any) -> None:
        self.items.append({"id": f"{self.case}-{len(self.items) + 1:03d}", "split": self.split, "series": self.series,
                           "slices": slices, "window": window, "type": kind, "question": question, **more})


def _dicom_qa(out: Path, n: int, seed: int, size: int, n_slices: int, burned_in: bool = True) -> None:
    questions: list[dict] = []
    for p in range(n):
        rng = _rng("dicom_qa", seed, p)
        organs = None if p else ["liver", "lung"]  # patient 1 always has lesions in both windows
        case = make_case([_CODE["dicom_qa"], seed, p, 1], size, n_slices, organs)
        series = f"series/case{p + 1:02d}"
        _write_series(out / series, case, patient=p, seed=seed, size=size, burned_in=burned_in and p == 0)
        split = _patient_split(p, n)
        items: list[dict] = []
        add = _QuestionList(items, f"case{p + 1:02d}", split, series)

        lesion_slices = [k for k in range(case.n_slices) if case.lesions_in(k)]
        empty = [k for k in range(case.n_slices) if not case.lesions_in(k) and case.organs[k]]
        for k in lesion_slices:
            here = case.lesions_in(k)
            window = _window_for(here)
            add("closed", [k], "Is there a lesion in this slice?", window, answer="yes")
            boxes = [list(les.boxes[k]) for les in here]
            add("grounding", [k], GROUNDING_QUESTION, window, ref="lesion", boxes=boxes)
            if len({les.organ for les in here}) == 1:
                organ = here[0].organ
                add("open", [k], "In which organ is the lesion?", window, answer=organ)
                add("mc", [k], "Which organ contains the lesion?", window, options=list(ORGAN_OPTIONS), answer=organ)
        picks = [int(k) for k in rng.choice(empty, size=min(len(empty), max(2, len(lesion_slices))), replace=False)]
        for j, k in enumerate(sorted(picks)):
            # the file's own window (null), a preset, or an explicit [center, width]
            window = (None, "abdomen", [40, 400])[j % 3] if "lung" not in case.organs[k] else "lung"
            add("closed", [k], "Is there a lesion in this slice?", window, answer="no")
        trio = sorted({round(x) for x in np.linspace(0, case.n_slices - 1, 5)[1:4]})
        count = len({id(les) for k in trio for les in case.lesions_in(k)})
        add("open", trio, "How many lesions are visible in these slices?", "abdomen", answer=str(count))
        questions += items
    doc = {"format": "pocket-adapt dicom_qa", "version": 1,
           "description": "Synthetic CT phantoms: lesion presence, organ, count and location questions.",
           "questions": questions}
    (out / "qa.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")


def _cases(kind: str, seed: int, n: int, size: int, n_slices: int) -> list[Case]:
    return [make_case([_CODE[kind], seed, i], size, n_slices) for i in range(n)]


def _jpeg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=95)


def _render_items(case: Case, rng: np.random.Generator) -> list[tuple[int, str, list[Lesion]]]:
    """Two slices of a case worth asking about: one with a lesion (if any) and one without."""
    with_lesion = [k for k in range(case.n_slices) if case.lesions_in(k)]
    without = [k for k in range(case.n_slices) if not case.lesions_in(k) and case.organs[k]]
    out = []
    if with_lesion:
        k = with_lesion[int(rng.integers(len(with_lesion)))]
        out.append((k, _window_for(case.lesions_in(k)), case.lesions_in(k)))
    k = without[int(rng.integers(len(without)))]
    out.append((k, "lung" if "lung" in case.organs[k] else "abdomen", []))
    return out


def _organ_answer(k: int, case: Case) -> str:
    present = sorted(case.organs[k])
    return present[0] if len(present) == 1 else ", ".join(present)


def _vqa_rad(out: Path, n: int, seed: int, size: int, n_slices: int) -> None:
    rows: list[dict] = []
    img_dir = out / "VQA_RAD Image Folder"
    qid = 0
    img_no = 0
    for i, case in enumerate(_cases("vqa_rad", seed, n, size, n_slices)):
        rng = _rng("vqa_rad", seed, i)
        test = _patient_split(i, n) == "test"
        for k, window, lesions in _render_items(case, rng):
            name = f"synpic{50000 + 17 * img_no + seed}.jpg"
            img_no += 1
            _jpeg(_slice_rgb(case, k, window), img_dir / name)
            organ = "CHEST" if window == "lung" else "ABD"
            qa = [("PRES", "Is there a lesion?", "yes" if lesions else "no", "CLOSED"),
                  ("MODALITY", "What imaging modality was used?", "CT", "OPEN"),
                  ("MODALITY", "Is this a CT or an MRI?", "CT", "CLOSED ")]  # trailing space, as in the public file
            if lesions:
                qa.append(("POS", "Which organ is the abnormality in?", lesions[0].organ, "OPEN"))
                qa.append(("ATTRIB", "Is the lesion hypodense or hyperdense?", lesions[0].density, "CLOSED"))
            else:
                qa.append(("ORGAN", "What organs are seen in this image?", _organ_answer(k, case), "OPEN"))
            for j, (qtype, question, answer, atype) in enumerate(qa):
                phrase = ("test_freeform" if j % 2 == 0 else "test_para") if test else ("freeform" if j % 2 == 0 else "para")
                rows.append({
                    "qid": qid, "phrase_type": phrase, "qid_linked_id": f"0{qid // 2:05d}",
                    "image_case_url": f"https://medpix.nlm.nih.gov/case?id=synthetic-{img_no}",
                    "image_name": name, "image_organ": organ, "evaluation": "evaluated",
                    "question": question, "question_rephrase": "NULL", "question_relation": "NULL",
                    "question_frame": "NULL", "question_type": qtype, "answer": answer, "answer_type": atype,
                })
                qid += 1
    (out / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


_SLAKE_ZH = {"Is there a lesion?": "这张图片里有病变吗？", "yes": "是", "no": "否"}


def _slake(out: Path, n: int, seed: int, size: int, n_slices: int) -> None:
    root = out / "Slake1.0"
    splits: dict[str, list[dict]] = {"train": [], "validate": [], "test": []}
    qid = img_id = 0
    cases = _cases("slake", seed, max(n, 3), size, n_slices)
    for i, case in enumerate(cases):
        rng = _rng("slake", seed, i)
        split = _patient_split(i, len(cases), val=True)
        for k, window, lesions in _render_items(case, rng):
            folder = f"xmlab{img_id}"
            _jpeg(_slice_rgb(case, k, window), root / "imgs" / folder / "source.jpg")
            location = "Lung" if window == "lung" else "Abdomen"
            qa = [("Is there a lesion?", "yes" if lesions else "no", "CLOSED", "Abnormality", "en"),
                  ("What modality is used to take this image?", "CT", "OPEN", "Modality", "en"),
                  ("Which organ is the largest in this image?", _largest_organ(case, k), "OPEN", "Organ", "en"),
                  (_SLAKE_ZH["Is there a lesion?"], _SLAKE_ZH["yes" if lesions else "no"], "CLOSED", "Abnormality", "zh")]
            if lesions:
                qa.append(("Where is the abnormality?", lesions[0].organ, "OPEN", "Position", "en"))
            for question, answer, atype, content, lang in qa:
                splits[split].append({
                    "img_id": img_id, "img_name": f"{folder}/source.jpg", "question": question, "answer": answer,
                    "q_lang": lang, "location": location, "modality": "CT", "answer_type": atype,
                    "base_type": "vqa", "content_type": content, "triple": ["vhead", "_", "_"], "qid": qid,
                })
                qid += 1
            img_id += 1
    for split, rows in splits.items():
        (root / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


def _largest_organ(case: Case, k: int) -> str:
    areas = case.areas[k]
    return max(sorted(areas), key=lambda o: areas[o]) if areas else "spine"


def _pmc_vqa(out: Path, n: int, seed: int, size: int, n_slices: int) -> None:
    header = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
    rows: dict[str, list[list[str]]] = {"train": [], "test": []}
    fig = 0
    for i, case in enumerate(_cases("pmc_vqa", seed, n, size, n_slices)):
        rng = _rng("pmc_vqa", seed, i)
        split = _patient_split(i, n)
        for k, window, lesions in _render_items(case, rng):
            name = f"PMC{7000000 + 101 * i + seed}_F{fig + 1}.jpg"
            fig += 1
            _jpeg(_slice_rgb(case, k, window), out / "images" / name)
            qa = [("What imaging modality is shown in the figure?", "Computed tomography",
                   ["Magnetic resonance imaging", "Ultrasound", "Computed tomography", "Radiography"])]
            if lesions:
                qa.append(("Which organ shows the lesion?", lesions[0].organ.capitalize(),
                           [o.capitalize() for o in ORGAN_OPTIONS]))
            else:
                qa.append(("What does the image show?", "No focal lesion",
                           ["A focal lesion", "No focal lesion", "A fracture", "Free air"]))
            for question, answer, choices in qa:
                order = [int(x) for x in rng.permutation(4)]
                shuffled = [choices[j] for j in order]
                label = "ABCD"[shuffled.index(answer)]
                rows[split].append([name, question, answer, *(f" {L}:{c}" for L, c in zip("ABCD", shuffled)), label])
    for split, table in rows.items():
        with (out / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(table)


CLASSIFICATION_CLASSES: dict[str, str | None] = {
    "normal": None, "liver_lesion": "liver", "kidney_cyst": "kidney", "lung_nodule": "lung"}


def _classification(out: Path, n: int, seed: int, size: int, n_slices: int) -> None:
    for ci, (cls, organ) in enumerate(CLASSIFICATION_CLASSES.items()):
        for i in range(n):
            case = make_case([_CODE["classification"], seed, ci, i], size, n_slices, [organ] if organ else [])
            if organ:
                if not case.lesions:
                    raise RuntimeError(f"synthetic classification: no {organ} lesion could be placed (seed {seed})")
                lesion = case.lesions[0]
                k = max(lesion.boxes, key=lambda s: _box_area(lesion.boxes[s]))
            else:
                k = (case.n_slices // 2 + i) % case.n_slices
            window = "lung" if organ == "lung" or "lung" in case.organs[k] else "abdomen"
            if i % 2 == 0:
                img = _slice_rgb(case, k, window)
                path = out / cls / f"{cls}_{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path, format="PNG")
            else:
                single = Case(hu=case.hu[k:k + 1], lesions=[], organs=[case.organs[k]])
                patient = ci * 100 + i
                ds = _ct_dataset(single, 0, patient=patient, seed=seed, size=size, burned_in=False,
                                 study_uid=_uid(seed, "cls", patient, "study"),
                                 series_uid=_uid(seed, "cls", patient, "series"),
                                 frame_uid=_uid(seed, "cls", patient, "frame"))
                if window == "lung":
                    ds.WindowCenter, ds.WindowWidth, ds.WindowCenterWidthExplanation = "-600", "1500", "LUNG"
                path = out / cls / f"{cls}_{i:03d}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)


# --------------------------------------------------------------------------------------------- API
def generate(kind: str, out: str | Path, n: int = 3, seed: int = 0, size: int = 64, n_slices: int = 12,
             **options: Any) -> Path:
    """Write a small synthetic data set of `kind` (see the module notes) under `out`; returns `out`.

    `n`: patients (``dicom_qa``, ``vqa_rad``, ``pmc_vqa``; ``slake`` uses at least 3, one per split) or
    images per class (``classification``); 1 to 1000 (:data:`domains.base.MAX_SYNTHETIC_N`). `size`: slice side in
    pixels (32-512); `n_slices`: slices per patient (4-1024; at most 512 x 512 x 128 voxels). `options`:
    ``burned_in`` (``dicom_qa``, default True).
    """
    n = check_synthetic_call(kind, KINDS, n, seed)
    for name, value in (("size", size), ("n_slices", n_slices)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise DomainError(f"{name} must be a whole number, got {value!r}")
    unknown = set(options) - ({"burned_in"} if kind == "dicom_qa" else set())
    if unknown:
        raise DomainError(f"unknown option(s) for synthetic {kind!r}: {', '.join(sorted(unknown))}")
    if not isinstance(options.get("burned_in", True), bool):  # bool("no") would burn the text in
        raise DomainError(f"synthetic {kind!r}: burned_in must be true or false, got {options['burned_in']!r}")
    n, size, n_slices = int(n), int(size), int(n_slices)
    _check_volume(size, n_slices)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "dicom_qa":
        _dicom_qa(out, n, seed, size, n_slices, burned_in=bool(options.get("burned_in", True)))
    elif kind == "vqa_rad":
        _vqa_rad(out, n, seed, size, n_slices)
    elif kind == "slake":
        _slake(out, n, seed, size, n_slices)
    elif kind == "pmc_vqa":
        _pmc_vqa(out, n, seed, size, n_slices)
    else:
        _classification(out, n, seed, size, n_slices)
    return out


def generate_all(out_dir: str | Path, kinds: Iterable[str] | str | None = None, n: int = 3, seed: int = 0,
                 size: int = 64, n_slices: int = 12, progress: Progress = True) -> dict[str, Path]:
    """Every kind (or `kinds`) under ``out_dir/<kind>``; the ``medical`` plugin's ``synthetic``. `progress`: a bar
    over the data sets (:func:`model.progress.progress_bar`)."""
    return generate_kinds(generate, out_dir, kinds, KINDS, n, "synthetic medical", progress, seed=seed, size=size,
                          n_slices=n_slices)


generate_all.writes = kinds_written(KINDS)  # type: ignore[attr-defined]
