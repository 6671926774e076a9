"""An upload of several series without any DICOMDIR warned "The DICOMDIR lists 4 files of the uploaded series that
the upload lacks (4, 1)": the series' slice counts overwrote the list of the DICOMDIR's missing files. Only the
several-series line is shown now."""

from __future__ import annotations

import pytest

from tests.deps import require

require("pydicom")
require("gradio")
from pydicom.uid import generate_uid  # noqa: E402

from deploy.demo.panels import medical  # noqa: E402
from tests.test_demo import write_ct  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_several_series_without_a_dicomdir_say_nothing_of_one(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    big, small = generate_uid(), generate_uid()
    files = [write_ct(tmp_path / f"IM{k}.dcm", z=2.5 * k, instance=k + 1, series_uid=big) for k in range(4)]
    files.append(write_ct(tmp_path / "OT0.dcm", series_uid=small))
    study = medical.load_study(files, max_bytes=2**20 * 50)
    try:
        text = " ".join(study.warnings)
        assert "The upload holds 2 series (4, 1 slices); showing the largest (4 slices)." in text, text
        assert "DICOMDIR" not in text, text
    finally:
        study.close()
