"""Pixel padding (PS3.3 C.7.5.1.1.2): padding outside the scan circle is not image, so it takes no part in the
min-max contrast and is painted black; images without padding pixels are untouched."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

require("pydicom")

import pydicom  # noqa: E402

from domains.medical.dicom import dicom_to_rgb, modality_values  # noqa: E402
from tests.pydicom_sweep import TEST_FILES  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _ct_with_corners(padding: int, fill: int | None = None) -> pydicom.Dataset:
    """CT_small (signed, intercept -1024, PixelPaddingValue -2000, no window) with its four corners set to
    stored `fill` (default: the padding value) as a scanner pads outside the reconstruction circle."""
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    arr = ds.pixel_array.copy()
    fill = padding if fill is None else fill
    for rows in (slice(0, 20), slice(-20, None)):
        for cols in (slice(0, 20), slice(-20, None)):
            arr[rows, cols] = fill
    ds.PixelPaddingValue = padding
    ds.PixelData = arr.astype("<i2").tobytes()
    return ds


def _grey(ds) -> np.ndarray:
    return np.asarray(dicom_to_rgb(ds))[..., 0].astype(np.int64)


def _corners(shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[:20, :20] = mask[:20, -20:] = mask[-20:, :20] = mask[-20:, -20:] = True
    return mask


def test_padding_value_is_left_out_of_minmax_and_black():
    plain = _grey(pydicom.dcmread(TEST_FILES / "CT_small.dcm"))
    padded = _ct_with_corners(-2000)
    grey = _grey(padded)
    corners = _corners(grey.shape)
    assert (grey[corners] == 0).all()
    # the rest has the contrast of the image without padding: min-max of the real pixels only
    hu = modality_values(padded)[~corners]
    expected = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    assert np.array_equal(grey[~corners], expected)
    assert grey[~corners].max() == 255 and grey[~corners].min() == 0
    assert plain.shape == grey.shape


def test_padding_range_limit_covers_every_value_between():
    ds = _ct_with_corners(-3024)
    arr = ds.pixel_array.copy()
    arr[:20, :20] = -2500  # inside the range -3024 .. -2000, in either order of value and limit
    ds.PixelData = arr.astype("<i2").tobytes()
    ds.PixelPaddingRangeLimit = -2000
    grey = _grey(ds)
    corners = _corners(grey.shape)
    assert (grey[corners] == 0).all() and grey[~corners].max() == 255 and grey[~corners].min() == 0
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = -2000, -3024
    assert np.array_equal(_grey(ds), grey)
    # without the range limit only the value itself is padding: -2500 then sets the minimum
    del ds.PixelPaddingRangeLimit
    ds.PixelPaddingValue = -3024
    assert _grey(ds)[~corners].min() > 0


def test_padding_applies_to_stored_values_before_rescale():
    # stored -2000 is HU -3024; a padding value given in HU would match nothing
    ds = _ct_with_corners(-2000)
    ds.PixelPaddingValue = -3024
    grey = _grey(ds)
    assert grey[~_corners(grey.shape)].min() > 0  # -3024 HU corners still set the minimum


def test_padding_is_black_in_monochrome1_too():
    ds = _ct_with_corners(-2000)
    ds.PhotometricInterpretation = "MONOCHROME1"
    grey = _grey(ds)
    corners = _corners(grey.shape)
    assert (grey[corners] == 0).all() and grey[~corners].max() == 255


def test_padding_read_as_unsigned_from_implicit_vr(tmp_path):
    # implicit VR files leave 'US or SS' to the reader: a signed image's -2000 may come back as 63536
    ds = _ct_with_corners(-2000)
    ds["PixelPaddingValue"].VR = "US"
    ds["PixelPaddingValue"].value = 63536
    grey = _grey(ds)
    assert (grey[_corners(grey.shape)] == 0).all() and grey[~_corners(grey.shape)].min() == 0
    # an anonymiser's UN element leaves the raw two bytes
    from pydicom.dataelem import DataElement

    ds["PixelPaddingValue"] = DataElement(0x00280120, "UN", (-2000).to_bytes(2, "little", signed=True))
    assert np.array_equal(_grey(ds), grey)


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_J2KI.dcm", "MR_small.dcm"])
def test_images_without_padding_pixels_are_unchanged(name):
    """A padding value that no pixel holds, or none at all, changes nothing (pixels pinned by the sweep)."""
    ds = pydicom.dcmread(TEST_FILES / name)
    before = np.asarray(dicom_to_rgb(ds))
    ds.PixelPaddingValue = -32000 if ds.PixelRepresentation else 65000
    assert np.array_equal(np.asarray(dicom_to_rgb(ds)), before)
    del ds.PixelPaddingValue
    assert np.array_equal(np.asarray(dicom_to_rgb(ds)), before)


def test_modality_values_can_leave_padding_out():
    ds = _ct_with_corners(-2000)
    corners = _corners((ds.Rows, ds.Columns))
    assert (modality_values(ds)[corners] == -3024).all()
    values = modality_values(ds, padding=False)
    assert np.isnan(values[corners]).all() and np.array_equal(values[~corners], modality_values(ds)[~corners])
