"""The whole-image converters (classification, RSVQA) take ``nodata`` and report a uint16 GeoTIFF zero-filled without a
nodata tag as ``scene_chips`` does (they read the same data with a silently washed-out stretch and had no option)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from PIL import Image
from rasterio.transform import from_origin

from domains.base import DomainError
from domains.remote_sensing.convert import convert_classification, convert_rsvqa
from domains.remote_sensing.raster import GUESSED_RGB, ZERO_FILL, image_notes
from domains.remote_sensing.synthetic import generate


def _tif(path, data, nodata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    bands, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands, dtype=data.dtype, nodata=nodata,
                       crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)) as ds:
        ds.write(data)
    return path


def _edge(seed=0):
    data = np.random.default_rng(seed).integers(500, 3000, (3, 32, 32)).astype("uint16")
    data[:, :, :12] = 0  # a zero-filled scene edge, no nodata tag
    return data


def _classes(root):
    for k, cls in enumerate(("forest", "sea")):
        _tif(root / cls / "a.tif", _edge(k))
    return root


def test_classification_says_zero_fill_and_takes_nodata(tmp_path):
    src = _classes(tmp_path / "raw")
    report = convert_classification(src, tmp_path / "out", test_fraction=0, progress=False)
    assert report.written == 2 and report.warnings.get(ZERO_FILL) == 2
    text = report.warning_examples[ZERO_FILL][0]
    assert "37.5% of the pixels read are 0 in every band" in text and text.endswith("pass --option nodata=0")
    png = tmp_path / "out/images/ucmerced/forest/a.png"
    land = np.asarray(Image.open(png))[:, 12:]
    again = convert_classification(src, tmp_path / "out", test_fraction=0, progress=False)  # outputs re-used
    assert again.warnings.get(ZERO_FILL) == 2
    masked = convert_classification(src, tmp_path / "out", test_fraction=0, nodata=0, progress=False)
    assert masked.written == 2 and ZERO_FILL not in masked.warnings
    land0 = np.asarray(Image.open(png))[:, 12:]  # rewritten: other options
    assert land0.min() == 0 and land.min() > 0  # the fill no longer sets the stretch's low end
    assert (np.asarray(Image.open(png))[:, :12] == 0).all()


def test_rsvqa_says_zero_fill_and_takes_nodata(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "lr", n=2)
    for k, tile in enumerate(sorted((src / "Images_LR").glob("*.tif"))):
        _tif(tile, _edge(k))
    report = convert_rsvqa(src, tmp_path / "out", progress=False)
    assert report.written and report.warnings.get(ZERO_FILL) == 2  # per tile, not per question
    report = convert_rsvqa(src, tmp_path / "out", nodata=0, progress=False)
    assert report.written and ZERO_FILL not in report.warnings


@pytest.mark.parametrize("convert", [convert_classification, convert_rsvqa])
def test_a_bad_nodata_is_refused_before_any_work(tmp_path, convert):
    with pytest.raises(DomainError, match="^nodata must be a number"):
        convert(tmp_path, tmp_path / "out", nodata="zero", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_all_black_image_is_said_and_dark_ground_is_not(tmp_path):
    black = _tif(tmp_path / "black.tif", np.zeros((3, 16, 16), dtype="uint8"))
    assert [r for r, _ in image_notes(black)] == [ZERO_FILL]
    assert "the image is all 0 (black) and is kept" in image_notes(black)[0][1]
    dark = np.random.default_rng(1).integers(500, 3000, (3, 32, 32)).astype("uint16")
    dark[:, 0, :5] = 0  # 5 of 1024 pixels: dark ground, not fill
    assert image_notes(_tif(tmp_path / "dark.tif", dark)) == []
    assert image_notes(_tif(tmp_path / "fixed.tif", _edge()), stretch="fixed:0,3000") == []  # no percentile to drag
    assert image_notes(_tif(tmp_path / "tagged.tif", _edge(), nodata=0)) == []


def test_the_notes_come_from_the_read_that_made_the_image(tmp_path, monkeypatch):
    src = _classes(tmp_path / "raw")
    _tif(src / "sea" / "rgbn.tif", np.random.default_rng(2).integers(1, 3000, (4, 16, 16)).astype("uint16"))
    expected = {p: image_notes(p, nodata=-1) for p in sorted(src.rglob("*.tif"))}
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    report = convert_classification(src, tmp_path / "out", test_fraction=0, nodata=-1, progress=False)
    assert report.written == 3 and len(opened) == 3  # each GeoTIFF opened once: its pixels and its notes
    assert report.warnings == Counter(r for notes in expected.values() for r, _ in notes)
    assert report.warnings["nodata masks nothing"] == 3 and report.warnings[GUESSED_RGB] == 1
    details = {report.relative(d) for notes in expected.values() for _, d in notes}
    assert {d for examples in report.warning_examples.values() for d in examples} <= details
    opened.clear()
    inodes = {p: p.stat().st_ino for p in (tmp_path / "out").rglob("*.png")}
    again = convert_classification(src, tmp_path / "out", test_fraction=0, nodata=-1, progress=False)
    assert inodes == {p: p.stat().st_ino for p in (tmp_path / "out").rglob("*.png")} and len(inodes) == 3
    assert again.warnings == report.warnings and opened == []  # outputs re-used: their stored notes, nothing opened
