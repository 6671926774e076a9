"""The medical panel's window sliders leave pixel padding out, as the min-max rendering does: a padded CT slice
without a window of its own opens with the sliders on the image's own range, not squashed by -3024 HU corners."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

require("gradio")
require("pydicom")

import pydicom  # noqa: E402

from deploy.demo.panels import medical  # noqa: E402
from tests.test_demo import MB, write_ct  # noqa: E402


def test_sliders_leave_padding_out(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    path = write_ct(tmp_path / "ct.dcm")  # a -1000..1000 HU ramp, stored HU + 1024 (unsigned)
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    arr = ds.pixel_array.copy()
    arr[:4, :4] = 0  # stored 0 = -1024 HU outside the scan circle, the padding value
    ds.add_new("PixelPaddingValue", "US", 0)
    ds.PixelData = arr.tobytes()
    ds.save_as(path)
    study = medical.load_study([path], max_bytes=MB)
    try:
        lo, hi = study.value_range
        assert lo > -1024 and lo == pytest.approx(-1000, abs=1) and hi == pytest.approx(1000, abs=1)
        assert study.default_window == pytest.approx(((lo + hi) / 2, hi - lo))
        # the file default (min-max) and the sliders' default window render the same, the padding black
        shown = np.asarray(study.render(0))[..., 0].astype(int)
        slid = np.asarray(study.render(0, study.default_window))[..., 0].astype(int)
        assert (shown[:4, :4] == 0).all() and np.abs(shown - slid).max() <= 1
    finally:
        study.close()
