"""A clinical series folder also holds DICOMDIR, SR, RT structure sets, presentation states and key-object notes:
they are passed over and counted in the conversion report, and the series converts as without them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from domains.medical.convert import convert_classification, convert_dicom_qa
from domains.medical.dicom import load_series
from domains.medical.synthetic import generate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
NON_IMAGES = {  # file name -> (SOP class, modality, in the slices' series)
    "SR0001.dcm": ("1.2.840.10008.5.1.4.1.1.88.22", "SR", False),
    "RS0001.dcm": ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", False),
    "PS0001": ("1.2.840.10008.5.1.4.1.1.11.1", "PR", True),
    "KO0001.dcm": ("1.2.840.10008.5.1.4.1.1.88.59", "KO", True),
}


def _dicom_object(sop: str, modality: str, study_uid: str, series_uid: str) -> Dataset:
    """A bare DICOM object of SOP class `sop` in the given study and series (no pixel data yet)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    return ds


def _add_non_images(folder: Path, tmp: Path) -> None:
    slices = sorted(folder.glob("IM_*.dcm"))
    first = pydicom.dcmread(slices[0], stop_before_pixels=True)
    for name, (sop, modality, same_series) in NON_IMAGES.items():
        ds = _dicom_object(sop, modality, first.StudyInstanceUID,
                           first.SeriesInstanceUID if same_series else generate_uid())
        ds.save_as(folder / name, enforce_file_format=True)
    fileset = FileSet()
    for path in slices[:2]:
        fileset.add(pydicom.dcmread(path))
    fileset.write(tmp / "fs")
    shutil.copy(tmp / "fs" / "DICOMDIR", folder / "DICOMDIR")


def test_non_image_objects_are_passed_over_and_counted(tmp_path):
    src = tmp_path / "dicom_qa"
    generate("dicom_qa", src, n=2, seed=1)
    plain = convert_dicom_qa(src, tmp_path / "plain", salt="s")
    folder = sorted((src / "series").iterdir())[0]
    _add_non_images(folder, tmp_path)
    told: list[tuple[str, str, str | None]] = []
    series = load_series(folder, on_pass=lambda path, reason, detail: told.append((path.name, reason, detail)))
    assert len(series) == len(list(folder.glob("IM_*.dcm")))
    assert sorted(told) == [("DICOMDIR", "no pixel data", "Media Storage Directory Storage"),
                            ("KO0001.dcm", "no pixel data", "Key Object Selection Document Storage"),
                            ("PS0001", "no pixel data", "Grayscale Softcopy Presentation State Storage"),
                            ("RS0001.dcm", "no pixel data", "RT Structure Set Storage"),
                            ("SR0001.dcm", "no pixel data", "Enhanced SR Storage")]
    report = convert_dicom_qa(src, tmp_path / "out", salt="s")
    assert report.skipped == {"passed over: no pixel data": 5}
    assert report.written == plain.written
    assert f"series/{folder.name}/DICOMDIR: Media Storage Directory Storage" in str(report)


@pytest.mark.parametrize(("sop", "modality"), [("1.2.840.10008.5.1.4.1.1.66.4", "SEG"),
                                               ("1.2.840.10008.5.1.4.1.1.481.2", "RTDOSE")])
def test_a_mask_or_dose_grid_beside_the_slices_is_not_a_second_series(tmp_path, sop, modality):
    src = tmp_path / "dicom_qa"
    generate("dicom_qa", src, n=1, seed=1)
    folder = next((src / "series").iterdir())
    first = pydicom.dcmread(sorted(folder.glob("IM_*.dcm"))[0], stop_before_pixels=True)
    ds = _dicom_object(sop, modality, first.StudyInstanceUID, generate_uid())
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 4, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(16)
    ds.save_as(folder / f"{modality}.dcm", enforce_file_format=True)
    told: list[tuple[str, str]] = []
    series = load_series(folder, on_pass=lambda path, reason, detail: told.append((path.name, reason)))
    assert len(series) == len(list(folder.glob("IM_*.dcm")))
    assert told == [(f"{modality}.dcm", "not an image slice")]
    report = convert_dicom_qa(src, tmp_path / "out", salt="s")
    assert report.skipped == {"passed over: not an image slice": 1}


def test_classification_passes_over_non_images_in_a_class_folder(tmp_path):
    src = tmp_path / "dicom_qa"
    generate("dicom_qa", src, n=1, seed=1)
    folder = next((src / "series").iterdir())
    _add_non_images(folder, tmp_path)
    seg = FileMetaDataset()
    seg.MediaStorageSOPClassUID, seg.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.66.4", generate_uid()
    seg.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = seg
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = seg.MediaStorageSOPClassUID, seg.MediaStorageSOPInstanceUID, "SEG"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 4, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(16)
    classes = tmp_path / "classes"
    (classes / "b").mkdir(parents=True)
    shutil.copytree(folder, classes / "a")
    ds.save_as(classes / "a" / "SEG.dcm", enforce_file_format=True)
    for path in sorted(folder.glob("IM_*.dcm"))[:2]:
        shutil.copy(path, classes / "b" / path.name)
    report = convert_classification(classes, tmp_path / "out", test_fraction=0.0, salt="s")
    assert report.skipped == {"passed over: no pixel data": 5, "passed over: not an image slice": 1}
    assert report.written == len(list(folder.glob("IM_*.dcm"))) + 2
    assert report.examples["passed over: not an image slice"] == [
        "a/SEG.dcm: Segmentation Storage, a mask or dose grid"]
