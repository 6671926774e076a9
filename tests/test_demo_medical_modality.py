"""The medical panel's summary names every DICOM modality code (RTIMAGE, RTDOSE: more than four letters) and only
a code: anything else in the attribute reads as unknown."""

from __future__ import annotations

import pytest

from tests.deps import require

require("gradio")
require("pydicom")

from pydicom.dataset import Dataset  # noqa: E402

from deploy.demo.panels import medical  # noqa: E402


@pytest.mark.parametrize(("value", "shown"), [
    ("CT", "CT"), ("RTIMAGE", "RTIMAGE"), ("RTDOSE", "RTDOSE"), ("IVOCT", "IVOCT"), ("OT", "OT"),
    ("", "unknown-modality"), ("CT | x", "unknown-modality"),
    ("**DOE**", "unknown-modality"), ("A" * 17, "unknown-modality"),
])
def test_modality_codes(value, shown):
    ds = Dataset()
    ds.Modality = value
    assert medical._modality(ds) == shown
