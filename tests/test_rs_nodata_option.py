"""``nodata`` of the raster readers: a value that is no number is refused up front naming the option (it failed in
the first chip with a bare ValueError / TypeError), and one the pixel type cannot hold is said to mask nothing."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from rasterio.transform import from_origin

from domains.base import DomainError
from domains.remote_sensing.convert import convert_scene_chips
from domains.remote_sensing.raster import image_notes, read_rgb


def scene(path, dtype="uint16", nodata=None):
    data = np.random.default_rng(0).integers(100, 3000, (3, 64, 96)).astype(dtype)
    data[:, :, :48] = 0 if nodata is None else nodata
    with rasterio.open(path, "w", driver="GTiff", width=96, height=64, count=3, dtype=dtype, nodata=nodata,
                       crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)) as ds:
        ds.write(data)
    return path


@pytest.mark.parametrize("nodata", ["abc", "nan", [0], True])
def test_a_nodata_that_is_no_number_is_refused_up_front(tmp_path, nodata):
    path = scene(tmp_path / "s.tif")
    with pytest.raises(DomainError, match="^nodata must be a number") as err:
        convert_scene_chips(path, tmp_path / "out", size=64, overlap=0, nodata=nodata, progress=False)
    assert str(err.value).endswith(f"or null, got {nodata!r}")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DomainError, match="nodata must be a number"):
        read_rgb(path, nodata=nodata)


def test_a_nodata_the_pixels_cannot_hold_is_said(tmp_path):
    report = convert_scene_chips(scene(tmp_path / "s.tif"), tmp_path / "out", size=64, overlap=0, nodata=-9999,
                                 progress=False)
    assert report.warnings.get("nodata masks nothing") == 1
    assert "nodata=-9999 cannot occur in its uint16 pixels, so it masks nothing" in \
        report.warning_examples["nodata masks nothing"][0]
    other = scene(tmp_path / "t.tif", dtype="int16", nodata=-9999)  # the file's nodata goes unused: said too
    report = convert_scene_chips(other, tmp_path / "out2", size=64, overlap=0, nodata=1e6, progress=False)
    assert "(the file's own nodata -9999 is not used when the option is given)" in \
        report.warning_examples["nodata masks nothing"][0]


@pytest.mark.parametrize("nodata", [0, 0.0, None])
def test_a_nodata_the_pixels_can_hold_is_used_without_a_word(tmp_path, nodata):
    report = convert_scene_chips(scene(tmp_path / "s.tif"), tmp_path / "out", size=64, overlap=0, nodata=nodata,
                                 progress=False)
    assert "nodata masks nothing" not in report.warnings and report.written == 2


def test_a_nan_nodata_of_integer_pixels_is_said_naming_the_file(tmp_path):
    # NaN never equals an integer pixel: as an option or as the file's own nodata it masks nothing
    report = convert_scene_chips(scene(tmp_path / "s.tif"), tmp_path / "out", size=64, overlap=0, nodata=float("nan"),
                                 progress=False)
    assert report.warnings.get("nodata masks nothing") == 1
    assert "nodata=nan cannot occur in its uint16 pixels" in report.warning_examples["nodata masks nothing"][0]
    # a file's own nodata its pixels cannot hold (rasterio hides a NaN one of integer bands; 0.5 of int16 it shows)
    tagged = tmp_path / "tagged.tif"
    with rasterio.open(tagged, "w", driver="GTiff", width=8, height=8, count=1, dtype="int16", nodata=0.5) as ds:
        ds.write(np.full((1, 8, 8), 7, dtype="int16"))
    report = convert_scene_chips(tagged, tmp_path / "out2", size=8, overlap=0, progress=False)
    text = report.warning_examples["nodata masks nothing"][0]
    assert "tagged.tif" in text and "the file's nodata 0.5 cannot occur in its int16 pixels" in text
    notes = dict(image_notes(tagged))
    assert str(tagged) in notes["nodata masks nothing"] and "--option nodata=" in notes["nodata masks nothing"]


def test_zero_fill_is_still_said_when_the_nodata_masks_nothing(tmp_path):
    # a nodata the pixels cannot hold leaves the zero collar as data: it drags the stretch as with no nodata at all
    path = scene(tmp_path / "s.tif")
    for nodata in (float("nan"), -9999):
        report = convert_scene_chips(path, tmp_path / f"out{nodata}", size=64, overlap=0, nodata=nodata,
                                     progress=False)
        assert report.warnings.get("nodata masks nothing") == 1 and report.warnings.get("zero fill without nodata") == 1
        notes = dict(image_notes(path, nodata=nodata))
        assert "nodata masks nothing" in notes and "pass --option nodata=0" in notes["zero fill without nodata"]
        seen: list = []
        read_rgb(path, nodata=nodata, notes=seen)
        assert "zero fill without nodata" in dict(seen)
    # a uint16 GeoTIFF tagged nodata "nan" (rasterio refuses to write it, so the tag is patched in): ignored as GDAL
    # ignores it, every pixel read as data, and its zero collar said
    tagged = tmp_path / "nan_tag.tif"
    with rasterio.open(path) as ds, rasterio.open(tagged, "w", **{**ds.profile, "nodata": 123}) as out:
        out.write(ds.read())  # zeros in the left half, as in `path`
    raw = tagged.read_bytes()
    assert raw.count(b"123\0") == 1
    tagged.write_bytes(raw.replace(b"123\0", b"nan\0"))
    image, valid = read_rgb(tagged)
    assert valid.all() and np.asarray(image)[:, 48:].any()
    assert "zero fill without nodata" in dict(image_notes(tagged))
