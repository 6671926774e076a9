"""A file that declares burned-in text but whose ultrasound regions cover the whole image has nothing blacked out:
the demo hook and the panel said "blacked out" / "not flagged" for it; they say that nothing was blacked out now."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

require("gradio")
require("pydicom")
require("dicomanonymizer", "the PS3.15 Annex E table")

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import UltrasoundImageStorage, generate_uid  # noqa: E402

from deploy.demo.panels import medical  # noqa: E402
from domains.medical import read_upload  # noqa: E402
from tests.test_demo import new_dicom  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def write_us(path: Path, size: int = 32) -> Path:
    """A flagged ultrasound file whose one region spans every pixel."""
    ds = new_dicom(UltrasoundImageStorage)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BurnedInAnnotation = "US", "YES"
    region = Dataset()
    region.RegionLocationMinX0 = region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1 = region.RegionLocationMaxY1 = size - 1
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    pixels = np.random.default_rng(0).integers(1, 256, size=(size, size), dtype=np.uint8)
    ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_hook_says_nothing_was_blacked_out(tmp_path):
    out = read_upload([write_us(tmp_path / "us.dcm")], redact_burned_in=True)
    plain = read_upload([tmp_path / "us.dcm"])
    assert out["redacted"] == [None] and np.array_equal(np.asarray(out["images"][0]), np.asarray(plain["images"][0]))
    said = " ".join(w for w in out["warnings"] if "burned-in" in w)
    assert "nothing was blacked out in 1 image(s) (ultrasound regions cover the whole image)" in said
    assert "are blacked out" not in said


def test_panel_note_says_flagged_but_nothing_blacked_out(tmp_path):
    study = medical.load_study([str(write_us(tmp_path / "us.dcm"))], max_bytes=1 << 20)
    try:
        plain = np.asarray(study.render(0))
        study.redact = True
        assert np.array_equal(np.asarray(study.render(0)), plain)
        note = study.redaction_note()
        assert "not flagged" not in note
        assert note == ("burned-in text declared, nothing blacked out (ultrasound regions cover the whole image): "
                        "check the pixels")
    finally:
        study.close()
