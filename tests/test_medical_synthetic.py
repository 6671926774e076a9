"""Synthetic medical data: valid CT DICOM series with real HU and fake PHI, the public layouts, determinism."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from domains.medical.synthetic import (
    KINDS,
    LESIONS,
    ORGANS,
    generate,
    generate_all,
    make_case,
    window_to_uint8,
)
from tests.deps import require

pydicom = require("pydicom")
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dicom_qa(tmp_path_factory) -> Path:
    return generate("dicom_qa", tmp_path_factory.mktemp("syn") / "dicom_qa", n=3, seed=0)


def series(folder: Path) -> list:
    return sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda ds: float(ds.ImagePositionPatient[2]))


def test_phantom_hounsfield_values_and_lesion_labels():
    case = make_case(5, size=64, n_slices=12, lesion_organs=["liver", "kidney", "lung"])
    hu = case.hu
    assert hu.shape == (12, 64, 64)
    assert hu[:, 0, 0].max() == -1000  # air outside the body, exact
    assert 650 <= np.percentile(hu[hu > 500], 10) and hu.max() < 1100  # bone
    assert {les.organ for les in case.lesions} == {"liver", "kidney", "lung"}
    for les in case.lesions:
        organ_hu = ORGANS[les.organ][0]
        for k, (x1, y1, x2, y2) in les.boxes.items():
            inside = hu[k, y1:y2, x1:x2]
            # the box holds lesion voxels: hypodense lesions darker, lung nodules brighter than their organ
            if LESIONS[les.organ][1] == "hypodense":
                assert inside.min() < organ_hu - 25
            else:
                assert inside.max() > organ_hu + 500
            assert k in range(12) and 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    liver = [k for k in range(12) if "liver" in case.organs[k]]
    assert liver and np.median([case.hu[k][32, 20] for k in liver]) == pytest.approx(60, abs=30)
    assert make_case(5, 64, 12).hu.tobytes() == make_case(5, 64, 12).hu.tobytes()
    w = window_to_uint8(np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0]), (40, 400))
    assert w.tolist() == [0, 0, 128, 255, 255]


def test_dicom_series_are_valid_ct_with_consistent_geometry(dicom_qa):
    folder = dicom_qa / "series" / "case01"
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 12
    slices = series(folder)
    uids = set()
    for k, ds in enumerate(slices):
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "CT" and ds.InstanceNumber == k + 1  # instance order = anatomical order
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == -1024
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40, 400)
        assert ds.pixel_array.dtype == np.uint16 and ds.BitsStored == 12
        hu = apply_modality_lut(ds.pixel_array, ds)
        assert hu.min() == -1000 and hu.max() > 700
        uids.add(ds.SOPInstanceUID)
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID):
            assert uid.is_valid
    assert len(uids) == 12
    assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) for ds in slices}) == 1
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert np.allclose(np.diff(z), float(slices[0].SliceThickness))
    assert all(float(ds.SliceLocation) == zi for ds, zi in zip(slices, z))
    spacing = float(slices[0].PixelSpacing[0])
    assert spacing * slices[0].Columns == pytest.approx(350.0)
    # file names are not in anatomical order: readers have to sort by position
    by_position = sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    assert [p.name for p in files] != [p.name for p in by_position]
    other = series(dicom_qa / "series" / "case02")
    assert other[0].StudyInstanceUID != slices[0].StudyInstanceUID


def test_dicom_files_carry_fake_phi_and_burned_in_flag(dicom_qa):
    ds = series(dicom_qa / "series" / "case01")[0]
    assert str(ds.PatientName) == "DOE^JANE" and ds.PatientID.startswith("MRN") and ds.PatientBirthDate
    assert ds.InstitutionName and ds.AccessionNumber and ds.StudyDate and str(ds.ReferringPhysicianName)
    assert any(el.tag.is_private for el in ds)
    assert ds.BurnedInAnnotation == "YES"  # patient 1: initials in the pixels
    assert series(dicom_qa / "series" / "case02")[0].BurnedInAnnotation == "NO"
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert (hu[:12, :20] > 500).any()  # the burned-in text, outside the body


def test_qa_file_matches_the_phantom(dicom_qa):
    doc = json.loads((dicom_qa / "qa.json").read_text())
    qs = doc["questions"]
    assert {q["type"] for q in qs} == {"closed", "open", "grounding", "mc"}
    assert {q["split"] for q in qs} == {"train", "test"}
    assert all(q["series"].startswith("series/case") for q in qs) and len({q["id"] for q in qs}) == len(qs)
    assert {json.dumps(q["window"]) for q in qs} >= {"null", '"abdomen"', '"lung"', "[40, 400]"}
    assert {q["answer"] for q in qs if q["type"] == "closed"} == {"yes", "no"}
    assert any(len(q["slices"]) == 3 for q in qs)
    slices = series(dicom_qa / "series" / "case01")
    for q in (q for q in qs if q["type"] == "grounding" and q["series"].endswith("case01")):
        ds = slices[q["slices"][0]]
        hu = apply_modality_lut(ds.pixel_array, ds)
        for x1, y1, x2, y2 in q["boxes"]:
            inside = hu[y1:y2, x1:x2]
            assert inside.size and (inside.min() < 30 or (inside.max() > -300 and inside.min() < -500))


def test_public_layouts_and_determinism(tmp_path):
    paths = generate_all(tmp_path / "a", n=2, seed=3)
    assert set(paths) == set(KINDS)
    again = generate_all(tmp_path / "b", n=2, seed=3)
    for kind in KINDS:
        assert digest(paths[kind]) == digest(again[kind]), kind
    assert digest(generate("vqa_rad", tmp_path / "c", n=2, seed=4)) != digest(paths["vqa_rad"])
    rad = json.loads((paths["vqa_rad"] / "VQA_RAD Dataset Public.json").read_text())
    fields = {"qid", "phrase_type", "qid_linked_id", "image_case_url", "image_name", "image_organ", "evaluation",
              "question", "question_rephrase", "question_relation", "question_frame", "question_type", "answer",
              "answer_type"}
    assert all(set(r) == fields for r in rad)
    assert {r["phrase_type"] for r in rad} == {"freeform", "para", "test_freeform", "test_para"}
    assert all((paths["vqa_rad"] / "VQA_RAD Image Folder" / r["image_name"]).is_file() for r in rad)
    root = paths["slake"] / "Slake1.0"
    rows = [r for f in ("train", "validate", "test") for r in json.loads((root / f"{f}.json").read_text())]
    assert {r["q_lang"] for r in rows} == {"en", "zh"}
    assert all((root / "imgs" / r["img_name"]).is_file() and r["img_name"].endswith("/source.jpg") for r in rows)
    with (paths["pmc_vqa"] / "train.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C",
                                     "Choice D", "Answer_label"]
        for row in reader:
            assert row["Choice A"].strip().startswith("A:") and row["Answer_label"] in "ABCD"
            assert row[f"Choice {row['Answer_label']}"].split(":", 1)[1] == row["Answer"]
            assert (paths["pmc_vqa"] / "images" / row["Figure_path"]).is_file()
    classes = sorted(p.name for p in paths["classification"].iterdir())
    assert classes == ["kidney_cyst", "liver_lesion", "lung_nodule", "normal"]
    files = list(paths["classification"].rglob("*.*"))
    assert {p.suffix for p in files} == {".png", ".dcm"}
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        generate("nope", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown option"):
        generate("vqa_rad", tmp_path / "x", burned_in=False)


def test_burned_in_must_be_a_bool(tmp_path):
    """burned_in="no" was read as bool("no") = True: the fake name was burned in; a non-bool is refused now."""
    from domains.base import DomainError

    for value in ("no", "false", 0, None):
        with pytest.raises(DomainError, match="burned_in must be true or false"):
            generate("dicom_qa", tmp_path / "x", n=1, burned_in=value)
    assert not (tmp_path / "x").exists()  # refused before any folder is made


def test_one_lesion_organ_given_as_a_string():
    """make_case(lesion_organs="liver") iterated the letters and failed with "unknown organ 'l'"; a string is one
    organ now."""
    case = make_case(5, size=64, n_slices=12, lesion_organs="liver")
    assert [les.organ for les in case.lesions] == ["liver"]


@pytest.mark.parametrize("bad", [{"seed": "abc"}, {"seed": 1.5}, {"seed": None}, {"seed": -1}, {"size": "big"},
                                 {"n_slices": 12.5}])
def test_seed_size_and_slices_must_be_whole_numbers(tmp_path, bad):
    """seed="abc" / None / 1.5 and size="big" ended in a bare ValueError / TypeError from int() or numpy; they are
    refused with a DomainError naming the parameter, before any folder is made."""
    from domains.base import DomainError

    with pytest.raises(DomainError, match=next(iter(bad))):
        generate("vqa_rad", tmp_path / "x", n=1, **bad)
    assert not (tmp_path / "x").exists()
