"""A window preset asked for a colour DICOM (RGB ultrasound, endoscopy) is said to do nothing, not dropped silently."""

from __future__ import annotations

import pytest

from tests.deps import require

require("pydicom")
from domains.medical import read_upload  # noqa: E402
from tests.test_medical_dicom_cut import _multiframe  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_a_window_on_a_colour_series_is_named_as_not_applied(tmp_path):
    _multiframe(tmp_path / "us.dcm", bits=8, samples=3)
    shown = read_upload([tmp_path / "us.dcm"], window="brain")
    assert any("window 'brain' not applied" in w and "colour (RGB)" in w for w in shown["warnings"]), shown["warnings"]
    assert not any("window" in w for w in read_upload([tmp_path / "us.dcm"])["warnings"])


def test_a_window_on_a_greyscale_series_says_nothing(tmp_path):
    _multiframe(tmp_path / "ct.dcm")
    assert not any("not applied" in w for w in read_upload([tmp_path / "ct.dcm"], window="brain")["warnings"])
