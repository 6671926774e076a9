"""The medical panel says what a series upload passed over: a localizer in another plane (dropped without a word
before), notes and other non-slices, counted by reason in one line, apart from the damaged-slice warning."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.deps import require

require("gradio")
require("pydicom")

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from deploy.demo.panels import medical  # noqa: E402
from tests.test_demo import MB, assert_no_phi, write_series_zip  # noqa: E402


def _add(upload: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(upload, "a") as zf:
        zf.writestr(name, data)


def _localizer(tmp_path: Path) -> bytes:
    """A sagittal image of the zip's series, placed inside its axial stack."""
    ds = pydicom.dcmread(tmp_path / "series_src" / "IM0001.dcm")
    ds.SOPInstanceUID, ds.InstanceNumber = generate_uid(), 99
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    out = tmp_path / "localizer.dcm"
    ds.save_as(out)
    return out.read_bytes()


def _study(upload: Path):
    return medical.load_study([upload], max_bytes=MB)


def test_a_localizer_passed_over_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    upload = write_series_zip(tmp_path / "series.zip", tmp_path, n=4)
    _add(upload, "DOE_JANE/CT/LOCALIZER.dcm", _localizer(tmp_path))
    study = _study(upload)
    try:
        assert study.count == 4
        lines = [w for w in study.warnings if "passed over" in w]
        assert lines == ["1 file passed over, not shown: 1 × not in the series' plane (a localizer?)."], study.warnings
        assert not any("damaged" in w for w in study.warnings)
        assert_no_phi(" ".join(study.warnings))
    finally:
        study.close()


def test_passed_over_files_are_counted_by_reason_beside_the_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    upload = write_series_zip(tmp_path / "series.zip", tmp_path, n=4)
    localizer = _localizer(tmp_path)
    _add(upload, "DOE_JANE/CT/LOC1.dcm", localizer)
    second = pydicom.dcmread(tmp_path / "localizer.dcm")
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    second.save_as(tmp_path / "loc2.dcm")
    _add(upload, "DOE_JANE/CT/LOC2.dcm", (tmp_path / "loc2.dcm").read_bytes())
    _add(upload, "README.TXT", b"exported by a viewer")
    _add(upload, "DOE_JANE/CT/IM0009.dcm", (tmp_path / "series_src" / "IM0001.dcm").read_bytes()[:600])
    study = _study(upload)
    try:
        assert study.count == 4
        assert any(w.startswith("1 damaged DICOM file(s) left out") for w in study.warnings), study.warnings
        lines = [w for w in study.warnings if "passed over" in w]
        assert lines == ["3 files passed over, not shown: 2 × not in the series' plane (a localizer?), "
                         "1 × not a DICOM file."], study.warnings
    finally:
        study.close()


def test_nothing_passed_over_adds_no_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    study = _study(write_series_zip(tmp_path / "series.zip", tmp_path, n=3))
    try:
        assert not any("passed over" in w for w in study.warnings), study.warnings
    finally:
        study.close()


def test_an_upload_without_images_says_what_it_held(tmp_path, monkeypatch):
    """A lone SR or DICOMDIR read "no pixel data", a zip of them "no readable DICOM images (not DICOM, or no pixel
    data)": neither said what the files were."""
    from pydicom.data import get_testdata_file

    from deploy.demo.uploads import UploadError

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    sr = Path(get_testdata_file("rtstruct.dcm"))
    with pytest.raises(UploadError) as err:
        medical.load_study([sr], max_bytes=MB)
    assert str(err.value).startswith("upload 1: no pixel data (RT Structure Set Storage): not an image; this page "
                                     "reads DICOM images"), str(err.value)
    upload = tmp_path / "reports.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        zf.write(sr, "DOE_JANE/a.dcm")
        zf.write(sr, "DOE_JANE/b.dcm")
        zf.writestr("DOE_JANE/notes.txt", "seen")
    with pytest.raises(UploadError) as err:
        medical.load_study([upload], max_bytes=MB)
    assert str(err.value) == ("upload 1: no readable DICOM images (3 files passed over: 2 × RT Structure Set Storage "
                              "(no pixel data), 1 × not a DICOM file)"), str(err.value)


def test_an_image_file_cut_before_its_pixels_is_called_damaged(tmp_path, monkeypatch):
    """A CT cut off just before its pixel data read "no pixel data", as an SR does: nothing said it was damaged."""
    from deploy.demo.uploads import UploadError
    from tests.test_demo import write_ct

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    data = write_ct(tmp_path / "ct.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:data.rfind(b"\xe0\x7f\x10\x00")])  # up to the (7FE0,0010) Pixel Data tag
    with pytest.raises(UploadError) as err:
        medical.load_study([cut], max_bytes=MB)
    assert str(err.value) == ("upload 1: no pixel data in an image file; the file is incomplete or damaged: copy or "
                              "export it again"), str(err.value)
