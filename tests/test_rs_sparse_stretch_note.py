"""A scene whose scene-wide stretch samples hold no valid pixel (sparse data between them) falls back to a stretch per
chip; that is said in the report instead of silently giving chips of different contrast."""

from __future__ import annotations

import numpy as np

from tests.deps import require

rasterio = require("rasterio")
from rasterio.transform import from_origin
from rasterio.windows import Window

from domains.remote_sensing.convert import convert_scene_chips


def sparse_scene(path, at):
    with rasterio.open(path, "w", driver="GTiff", width=2000, height=2000, count=3, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0), tiled=True,
                       blockxsize=256, blockysize=256, sparse_ok=True) as ds:
        data = np.random.default_rng(0).integers(100, 4000, (3, 60, 60), dtype="uint16")
        ds.write(data, window=Window(at, at, 60, 60))
    return path


def test_sparse_data_missed_by_the_samples_is_said(tmp_path):
    # sample windows (128 px) start at 0, 267, 535, ...: data at 180..240 lies between the first two
    report = convert_scene_chips(sparse_scene(tmp_path / "s.tif", 180), tmp_path / "out", size=512, overlap=0,
                                 min_valid=0, progress=False)
    assert report.written == 1 and report.warnings.get("scene stretch taken per chip") == 1
    assert "chips' colours are not comparable" in report.warning_examples["scene stretch taken per chip"][0]


def test_data_the_samples_see_gives_no_note(tmp_path):
    report = convert_scene_chips(sparse_scene(tmp_path / "s.tif", 20), tmp_path / "out", size=512, overlap=0,
                                 min_valid=0, progress=False)
    assert report.written == 1 and "scene stretch taken per chip" not in report.warnings
