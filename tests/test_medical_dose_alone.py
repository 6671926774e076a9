"""An RT dose file uploaded on its own: its dose grid (one frame per dose plane) was refused as "no DICOM images
found", though the demo's page shows it. read_upload now shows its frames, saying what a dose grid is (no anatomy)
and what to upload to see the anatomy; among a series' files it is still passed over."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.deps import require

require("pydicom")
import pydicom  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from domains.medical import read_upload  # noqa: E402
from domains.medical.dicom import DicomError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_a_dose_grid_alone_shows_its_frames(tmp_path):
    dose = tmp_path / "upload-1"
    shutil.copy(get_testdata_file("rtdose.dcm"), dose)  # 15 frames of 10 x 10
    shown = read_upload([dose], n_slices=3)
    assert [im.size for im in shown["images"]] == [(10, 10)] * 3
    assert shown["labels"] == ["slice 3/15", "slice 8/15", "slice 13/15"]
    volume = pydicom.dcmread(dose).pixel_array.astype(np.float64)
    k = 7
    expected = np.rint((volume[k] - volume[k].min()) / (volume[k].max() - volume[k].min()) * 255)
    assert np.array_equal(np.asarray(shown["images"][1])[..., 0], expected)
    said = " ".join(shown["warnings"])
    assert "RT dose grid" in said and "not an image of the anatomy" in said and "planning CT" in said, said
    windowed = read_upload([dose], window="brain")
    assert any("window 'brain' not applied" in w for w in windowed["warnings"]), windowed["warnings"]
    assert np.array_equal(np.asarray(windowed["images"][0]), np.asarray(read_upload([dose])["images"][0]))


def test_a_dose_grid_without_pixels_is_still_refused(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "dose.dcm")
    with pytest.raises(DicomError, match="no DICOM images found.*RT Dose Storage"):
        read_upload([tmp_path / "dose.dcm"])


def test_the_demo_page_says_a_lone_dose_grid_is_no_picture_of_the_anatomy(tmp_path, monkeypatch):
    """The page showed a lone RT dose file as "RTDOSE DICOM, 15 frames" with no word of what it is."""
    require("gradio")
    from deploy.demo.panels import medical

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    dose = tmp_path / "dose.dcm"
    shutil.copy(get_testdata_file("rtdose.dcm"), dose)
    study = medical.load_study([dose], max_bytes=10 * 2**20)
    try:
        assert study.count == 15
        notes = [w for w in study.warnings if "not an image of the anatomy" in w]
        assert notes == ["This file is an RT dose grid (the radiation dose a treatment plan gives, computed over the "
                         "planning CT), not an image of the anatomy; upload the planning CT series to see the "
                         "anatomy."], study.warnings
    finally:
        study.close()
