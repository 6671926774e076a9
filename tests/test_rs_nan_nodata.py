"""A float GeoTIFF whose nodata is NaN (rasterio masks such pixels on masked reads, so NaN never shows up as a value
to compare): its NaN pixels are nodata for every reader -- invalid in the mask, black, counted in the report -- as
are NaN pixels of a float file without a nodata value; a sparse NaN-nodata scene's unwritten blocks are known to be
empty without reading them, as for any other nodata."""

from __future__ import annotations

import numpy as np

from tests.deps import require

rasterio = require("rasterio")
from rasterio.transform import from_origin
from rasterio.windows import Window

from domains.remote_sensing.convert import convert_classification, convert_scene_chips
from domains.remote_sensing.raster import read_rgb

NAN = float("nan")


def _write(path, data, nodata=NAN, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype="float32", nodata=nodata, crs="EPSG:32633",
                       transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0), **extra) as ds:
        ds.write(data)
    return path


def _half_nan(shape=(3, 32, 64)):
    data = np.random.default_rng(0).uniform(100, 3000, shape).astype("float32")
    data[:, :, : shape[2] // 2] = np.nan
    return data


def test_nan_pixels_are_nodata_in_a_whole_image_read(tmp_path):
    for nodata in (NAN, None):  # the file's NaN nodata, or no nodata value at all: NaN is never data
        image, valid = read_rgb(_write(tmp_path / f"{nodata}.tif", _half_nan(), nodata=nodata))
        assert not valid[:, :32].any() and valid[:, 32:].all()
        assert not np.asarray(image)[:, :32].any() and np.asarray(image)[:, 32:].any()
    src = tmp_path / "classes"
    _write(src / "sea" / "half.tif", _half_nan())
    _write(src / "land" / "ok.tif", _half_nan()[:, :, 32:])
    _write(src / "sea" / "empty.tif", np.full((3, 16, 16), np.nan, dtype="float32"))
    report = convert_classification(src, tmp_path / "out", test_fraction=0, progress=False)
    assert report.written == 2 and report.skipped == {"all nodata": 1}
    assert "zero fill without nodata" not in report.warnings


def test_nan_chips_are_counted_and_sparse_nan_blocks_are_not_read(tmp_path):
    report = convert_scene_chips(_write(tmp_path / "half.tif", _half_nan()), tmp_path / "out", size=32, overlap=0,
                                 progress=False)
    assert report.written == 1 and report.skipped == {"all nodata": 1}
    assert "0.0% valid" in report.examples["all nodata"][0]
    sparse = tmp_path / "sparse.tif"
    with rasterio.open(sparse, "w", driver="GTiff", width=64, height=32, count=3, dtype="float32", nodata=NAN,
                       crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0), tiled=True,
                       blockxsize=32, blockysize=32, sparse_ok=True) as ds:
        ds.write(np.full((3, 32, 32), 7.0, dtype="float32"), window=Window(32, 0, 32, 32))  # the left block: unwritten
    report = convert_scene_chips(sparse, tmp_path / "out2", size=32, overlap=0, progress=False)
    assert report.written == 1 and report.skipped == {"all nodata": 1}
    assert "(no data blocks written)" in report.examples["all nodata"][0]
