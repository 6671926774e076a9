"""A folder holding only non-image DICOM objects (RT dose grids, structure sets): "no images" says what was passed
over, by object kind, rather than listing three file names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")
from domains.medical.convert import convert_dicom_qa
from domains.medical.dicom import DicomError, load_series
from tests.test_medical_series_non_images import _dicom_object

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
RT_DOSE, RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.481.3"


def _plan_export(folder: Path) -> None:
    """A radiotherapy plan export: five dose grids, one structure set, a note."""
    folder.mkdir(parents=True)
    for k in range(5):
        ds = _dicom_object(RT_DOSE, "RTDOSE", "1.2.3", "1.2.3.4")
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 4, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(16)
        ds.save_as(folder / f"RD{k}.dcm", enforce_file_format=True)
    _dicom_object(RT_STRUCT, "RTSTRUCT", "1.2.3", "1.2.3.5").save_as(folder / "RS.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("plan notes")


def test_a_folder_of_dose_grids_says_what_it_passed_over(tmp_path):
    _plan_export(tmp_path / "plan")
    with pytest.raises(DicomError) as err:
        load_series(tmp_path / "plan")
    assert str(err.value) == (f"{tmp_path / 'plan'}: no DICOM images found (6 non-image DICOM object(s) passed over: "
                              "5 × RT Dose Storage, a mask or dose grid; 1 × RT Structure Set Storage. 1 other "
                              "file(s): 1 not a DICOM file (notes.txt))")


def test_the_report_of_dicom_qa_says_it_too(tmp_path):
    _plan_export(tmp_path / "src" / "plan")
    (tmp_path / "src" / "qa.json").write_text(json.dumps([{"id": "q1", "split": "train", "series": "plan",
                                                           "slices": [0], "type": "closed", "question": "Lesion?",
                                                           "answer": "no"}]))
    report = convert_dicom_qa(tmp_path / "src", tmp_path / "out", salt="s", progress=False)
    assert report.skipped == {"unreadable series": 1, "series skipped": 1}
    assert "5 × RT Dose Storage" in str(report)
