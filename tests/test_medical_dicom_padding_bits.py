"""Pixel padding compared as pydicom's arrays hold stored values: the low Bits Stored bits, signed by Pixel
Representation. A PixelPaddingValue written 0xFFFF with 12 bits stored (arrays hold 4095), or written unsigned
for signed pixels, missed every padding pixel: the min-max took the padding in and it was not painted black."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

require("pydicom")

import pydicom  # noqa: E402

from domains.medical.dicom import dicom_to_rgb, modality_values  # noqa: E402
from tests.pydicom_sweep import TEST_FILES  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _ct(raw: int, padding: int, vr: str, signed: bool) -> pydicom.Dataset:
    """CT_small as 12 of 16 bits stored, its top-left 10x10 stored as `raw`, PixelPaddingValue `padding` (as `vr`)."""
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    arr = np.tile(np.linspace(900, 1100, ds.Columns).astype(np.uint16), (ds.Rows, 1))
    arr[:10, :10] = raw
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
    ds.PixelData = arr.astype("<u2").tobytes()
    ds.add_new(0x00280120, vr, padding)
    return ds


@pytest.mark.parametrize("raw, padding, vr, signed", [
    (0xFFFF, 0xFFFF, "US", False),  # all 16 bits set in both: the array holds 4095
    (0x0FFF, 0xFFFF, "US", False),
    (0x0830, 0x0830, "US", True),  # -2000 in 12 bits, the header value read unsigned
    (0xF830, 0xF830, "US", True),
])
def test_padding_written_beyond_bits_stored_is_found(raw, padding, vr, signed):
    ds = _ct(raw, padding, vr, signed)
    grey = np.asarray(dicom_to_rgb(ds, window="minmax"))[..., 0]
    assert (grey[:10, :10] == 0).all()
    assert np.isnan(modality_values(ds, padding=False)[:10, :10]).all()
    rest = grey.copy()
    rest[:10, :10] = 255
    assert rest.min() == 0 and grey[:, -1].max() == 255  # the contrast spans the real pixels only
