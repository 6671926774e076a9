"""Remote-sensing stretch: ``stretch="fixed:LOW,HIGH"`` maps stored values to 0..255 the same in every image and chip
(per-chip percentiles gave the same EuroSAT MS ground another colour in each chip), and a scene zero-filled at its
edges without a nodata tag is reported (its zeros pulled the percentile stretch's low end to 0 without a word)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from rasterio.transform import from_origin

from domains.base import DomainError
from domains.remote_sensing.convert import convert_classification, convert_scene_chips
from domains.remote_sensing.raster import ZERO_FILL, FixedStretch, check_stretch_option, iter_chips, read_rgb


def _tif(path, data, nodata=None):
    bands, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands, dtype=data.dtype, nodata=nodata,
                       crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)) as ds:
        ds.write(data)
    return path


def test_a_fixed_range_maps_stored_values_alike_in_every_image(tmp_path):
    dark = _tif(tmp_path / "dark.tif", np.full((3, 8, 8), 600, dtype="uint16"))
    ramp = np.tile(np.linspace(0, 1200, 8).astype("uint16"), (3, 8, 1))
    both = _tif(tmp_path / "ramp.tif", ramp)
    a = np.asarray(read_rgb(dark, stretch="fixed:0,3000")[0])
    b = np.asarray(read_rgb(both, stretch="Fixed: 0, 3000")[0])
    assert (a == 51).all()  # 600 of 0..3000 -> 255 * 0.2, whatever else the image holds
    assert b[0, 0, 0] == 0 and b[0, -1, 0] == round(1200 / 3000 * 255)
    assert read_rgb(tmp_path / "ramp.tif", stretch="fixed:0,1000")[0].getpixel((7, 0)) == (255, 255, 255)  # clipped


def test_fixed_chips_of_one_value_look_the_same_wherever_they_are(tmp_path):
    data = np.random.default_rng(0).integers(100, 3000, (3, 64, 128)).astype("uint16")
    data[:, :, 64:] = 1500
    data[:, :8, 64:72] = 2900  # a bright corner in the second chip would shift its percentiles
    path = _tif(tmp_path / "s.tif", data)
    for scope in ("scene", "chip"):
        chips = list(iter_chips(path, size=64, overlap=0, stretch="fixed:0,3000", stretch_scope=scope))
        assert np.asarray(chips[1].image)[40, 40].tolist() == [128, 128, 128]


@pytest.mark.parametrize("bad", ["fixed:3000,0", "fixed:5,5", "fixed:0", "fixed:a,b", "fixed:0,inf", "percentile"])
def test_a_bad_fixed_range_is_refused_before_any_work(tmp_path, bad):
    with pytest.raises(DomainError, match="stretch"):
        check_stretch_option(bad)
    with pytest.raises(DomainError, match="stretch"):
        convert_scene_chips(tmp_path, tmp_path / "out", stretch=bad, progress=False)
    with pytest.raises(DomainError, match="fixed:LOW,HIGH"):
        check_stretch_option("percent")


def test_the_classification_converter_takes_a_fixed_range(tmp_path):
    for cls, value in (("forest", 300), ("sea", 900)):
        (tmp_path / "raw" / cls).mkdir(parents=True)
        _tif(tmp_path / "raw" / cls / "a.tif", np.full((13, 8, 8), value, dtype="uint16"))
    report = convert_classification(tmp_path / "raw", tmp_path / "out", dataset="eurosat_ms", test_fraction=0,
                                    stretch="fixed:0,3000", progress=False)
    assert report.written == 2
    from PIL import Image

    forest = Image.open(tmp_path / "out/images/eurosat_ms/forest/a.png")
    assert forest.getpixel((0, 0)) == (26, 26, 26)  # 300 / 3000 * 255; a percentile stretch gave 0 (no spread)
    assert FixedStretch(0, 1) == FixedStretch(0.0, 1.0)


def _edge_scene(path, nodata=None):
    data = np.random.default_rng(1).integers(500, 3000, (3, 64, 128)).astype("uint16")
    data[:, :, :40] = 0  # the scene's zero-filled edge, no nodata tag
    return _tif(path, data, nodata)


@pytest.mark.parametrize("scope", ["scene", "chip"])
def test_a_zero_filled_edge_without_nodata_is_said(tmp_path, scope):
    report = convert_scene_chips(_edge_scene(tmp_path / "s.tif"), tmp_path / "out", size=64, overlap=0,
                                 stretch_scope=scope, progress=False)
    assert report.warnings.get(ZERO_FILL) == 1
    text = report.warning_examples[ZERO_FILL][0]
    assert text.startswith("s.tif: 31.2% of the pixels read are 0 in every band")
    assert "and no nodata value marks them" in text and text.endswith("pass --option nodata=0")
    assert (scope == "chip") == ("band (1 chip(s) over 2% zeros) and" in text)
    assert "they pull the 2 % stretch limit down to 0 (washed-out colours); if they are fill" in text


@pytest.mark.parametrize("options", [{"nodata": 0}, {"stretch": "fixed:0,3000"}, {"stretch": None}])
def test_no_note_once_the_zeros_are_nodata_or_no_percentile_is_taken(tmp_path, options):
    report = convert_scene_chips(_edge_scene(tmp_path / "s.tif"), tmp_path / "out", size=64, overlap=0,
                                 progress=False, **options)
    assert ZERO_FILL not in report.warnings
    assert ZERO_FILL not in convert_scene_chips(_edge_scene(tmp_path / "t.tif", nodata=0), tmp_path / "out2",
                                                size=64, overlap=0, progress=False).warnings


def test_nodata_0_takes_the_fill_out_of_the_stretch(tmp_path):
    path = _edge_scene(tmp_path / "s.tif")
    plain = next(iter_chips(path, size=64, overlap=0, stretch_scope="chip"))
    masked = next(iter_chips(path, size=64, overlap=0, stretch_scope="chip", nodata=0))
    land = np.asarray(plain.image)[:, 40:], np.asarray(masked.image)[:, 40:]
    assert land[1].min() == 0 and land[0].min() > 0  # with the zeros as data the darkest ground was not black
    assert masked.valid_fraction == pytest.approx(24 / 64)


def test_a_few_dark_pixels_are_no_fill(tmp_path):
    data = np.random.default_rng(2).integers(500, 3000, (3, 64, 64)).astype("uint16")
    data[:, 0, :20] = 0  # 20 of 4096 pixels: 0.5 %
    report = convert_scene_chips(_tif(tmp_path / "s.tif", data), tmp_path / "out", size=64, overlap=0, progress=False)
    assert ZERO_FILL not in report.warnings


def test_the_demo_page_offers_and_takes_a_fixed_range(tmp_path):
    from domains.remote_sensing.demo import FIXED_S2_LABEL, STRETCHES, read_upload

    path = _tif(tmp_path / "s.tif", np.full((13, 8, 8), 1500, dtype="uint16"))
    assert FIXED_S2_LABEL in STRETCHES
    for choice in (FIXED_S2_LABEL, "fixed:0,3000"):
        out = read_upload([path], stretch=choice)
        assert out["images"][0].getpixel((0, 0)) == (128, 128, 128)
        assert out["info"]["image 1 stretch"] == "stored values 0–3000 to 0–255 in every band (a fixed range)"
    with pytest.raises(DomainError, match="fixed range needs finite LOW < HIGH"):
        read_upload([path], stretch="fixed:3000,0")


def test_black_chips_of_an_8_bit_scene_without_nodata_are_said(tmp_path):
    data = np.random.default_rng(3).integers(1, 255, (3, 64, 128)).astype("uint8")
    data[:, :, :64] = 0  # an orthomosaic's black collar, neither nodata nor alpha: the first chip is all black
    report = convert_scene_chips(_tif(tmp_path / "s.tif", data), tmp_path / "out", size=64, overlap=0,
                                 progress=False)
    assert report.written == 2 and report.warnings.get(ZERO_FILL) == 1
    text = report.warning_examples[ZERO_FILL][0]
    assert "the zeros count as data: 1 chip(s) all 0 (or under min_valid=0.05 without them) are kept; " in text
    assert "stretch" not in text  # uint8: no stretch to drag
    report = convert_scene_chips(tmp_path / "s.tif", tmp_path / "out2", size=64, overlap=0, nodata=0, progress=False)
    assert report.written == 1 and report.skipped == {"all nodata": 1} and ZERO_FILL not in report.warnings


def test_stored_values_given_as_percentiles_point_at_the_fixed_range():
    with pytest.raises(DomainError, match=r"got \[0, 3000\]; to map stored values 0..3000 give stretch=fixed:0,3000$"):
        check_stretch_option([0, 3000])
    with pytest.raises(DomainError, match=r"got \[90, 10\]$"):
        check_stretch_option([90, 10])
