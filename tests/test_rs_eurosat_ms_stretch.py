"""EuroSAT MS (13-band Sentinel-2 L1C, reflectance x 10000): its RGB is drawn with the fixed range 0..3000 by default,
so the same ground has one colour in every patch (the per-patch 2-98 % stretch made a dark lake and a bright field
alike full-range, the colour a class is known by changing from patch to patch)."""

from __future__ import annotations

import numpy as np

from tests.deps import require

rasterio = require("rasterio")
from PIL import Image
from rasterio.transform import from_origin

from domains.remote_sensing.convert import EUROSAT_MS_STRETCH, convert_classification


def _patch(path, rgb_level, seed):
    """A 13-band uint16 patch (EuroSAT file order, no descriptions) whose B04 / B03 / B02 hover around `rgb_level`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(rgb_level - 50, rgb_level + 50, (13, 16, 16)).astype("uint16")
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=13, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)) as ds:
        ds.write(data)


def _mean(out, dataset, cls):
    return float(np.asarray(Image.open(out / f"images/{dataset}/{cls}/a.png")).mean())


def test_eurosat_ms_rgb_keeps_one_colour_scale_across_patches(tmp_path):
    _patch(tmp_path / "raw/SeaLake/a.tif", 300, 0)  # dark water
    _patch(tmp_path / "raw/AnnualCrop/a.tif", 1500, 1)  # bright field
    out = tmp_path / "out"
    convert_classification(tmp_path / "raw", out, dataset="eurosat_ms", test_fraction=0, progress=False)
    lake, crop = _mean(out, "eurosat_ms", "SeaLake"), _mean(out, "eurosat_ms", "AnnualCrop")
    assert abs(lake - 300 / 3000 * 255) < 3 and abs(crop - 1500 / 3000 * 255) < 3
    assert EUROSAT_MS_STRETCH == "fixed:0,3000"


def test_chosen_bands_or_stretch_are_kept(tmp_path):
    _patch(tmp_path / "raw/SeaLake/a.tif", 300, 0)
    _patch(tmp_path / "raw/AnnualCrop/a.tif", 1500, 1)
    out = tmp_path / "out"
    for options in ({"stretch": [2, 98]}, {"bands": [8, 4, 3]}):  # percentiles: every patch full range
        convert_classification(tmp_path / "raw", out, dataset="eurosat_ms", test_fraction=0, progress=False, **options)
        assert abs(_mean(out, "eurosat_ms", "SeaLake") - _mean(out, "eurosat_ms", "AnnualCrop")) < 10, options
