"""A GeoTIFF of 4+ bands with neither a red / green / blue colour interpretation nor band names is shown as bands
1, 2, 3 on a guess (NAIP's RGBN: right; Planet's BGRN: red and blue swapped): the conversion report counts such files
in one row naming the bands and how to pick others, and says nothing of a file whose RGB is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from rasterio.enums import ColorInterp

from domains.remote_sensing.convert import convert_classification, convert_rsvqa, convert_scene_chips
from domains.remote_sensing.raster import GUESSED_RGB
from domains.remote_sensing.synthetic import generate
from tests.test_rs_convert import write_tif


def _tif(path: Path, count: int = 4, interp: list | None = None, seed: int = 0) -> Path:
    data = np.random.default_rng(seed).integers(0, 4000, (count, 16, 16)).astype(np.uint16)
    write_tif(path, data)
    if interp is not None:
        with rasterio.open(path, "r+") as dst:
            dst.colorinterp = interp
    return path


def _classes(root: Path) -> Path:
    for k in range(3):
        _tif(root / "farm" / f"bgrn_{k}.tif", seed=k)  # 4 bands, untagged: guessed
    _tif(root / "farm" / "rgb.tif", count=3)  # 3 bands: RGB is all there is
    _tif(root / "city" / "tagged.tif", interp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red,
                                              ColorInterp.undefined])  # says where red is
    _tif(root / "city" / "rgb.tif", count=3)
    return root


def test_classification_counts_guessed_rgb_files_in_one_row(tmp_path):
    src, out = _classes(tmp_path / "scenes"), tmp_path / "out"
    for _ in range(2):  # a re-run reusing its PNGs made them with the same guess: still said
        report = convert_classification(src, out, test_fraction=0, progress=False)
        assert report.written == 6 and report.total_skipped == 0
        assert report.warnings == {GUESSED_RGB: 3}
    example = report.warning_examples[GUESSED_RGB][0]
    assert example.startswith("farm/bgrn_0.tif: 4 bands with no red / green / blue colour interpretation")
    assert "bands 1, 2, 3" in example and "--option bands=[3,2,1]" in example
    assert f"| written with a warning: {GUESSED_RGB} | 3 |" in report.table()


def test_chosen_bands_are_no_guess(tmp_path):
    report = convert_classification(_classes(tmp_path / "scenes"), tmp_path / "out", bands=[3, 2, 1], test_fraction=0,
                                    progress=False)
    assert report.written == 6 and not report.warnings


def test_rsvqa_tiles_of_four_bands_are_counted(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "lr", n=2)
    for tile in (src / "Images_LR").glob("*.tif"):
        _tif(tile)
    report = convert_rsvqa(src, tmp_path / "out", progress=False)
    assert report.written and report.warnings == {GUESSED_RGB: 2}  # per tile, not per question


@pytest.mark.parametrize("bands, interp, expected", [
    (None, None, {GUESSED_RGB: 1}),
    ([3, 2, 1], None, {}),
    (None, [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined], {}),
])
def test_scene_chips_count_a_guessed_scene_once(tmp_path, bands, interp, expected):
    data = np.random.default_rng(1).integers(1, 4000, (4, 40, 40)).astype(np.uint16)
    scene = write_tif(tmp_path / "scenes" / "planet.tif", data)
    if interp is not None:
        with rasterio.open(scene, "r+") as dst:
            dst.colorinterp = interp
    report = convert_scene_chips(tmp_path / "scenes", tmp_path / "out", size=16, overlap=0, bands=bands,
                                 progress=False)
    assert report.written == 9 and report.warnings == expected


@pytest.mark.parametrize("names", [["Blue", "Green", "Red", "NIR"], ["blue", "green", "red", "nir"]])
def test_bands_named_red_green_blue_are_read_as_such(tmp_path, names):
    """A B, G, R, NIR file whose band descriptions say so was read as bands 1, 2, 3 (blue shown as red) on a guess."""
    from domains.remote_sensing.raster import open_raster, read_rgb, resolve_bands

    data = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 40)])  # blue 10, green 20, red 30
    tif = write_tif(tmp_path / "bgrn.tif", data)
    with rasterio.open(tif, "r+") as dst:
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    with open_raster(tif) as src:
        assert resolve_bands(src) == [3, 2, 1]
    assert read_rgb(tif)[0].getpixel((2, 2)) == (30, 20, 10)
    report = convert_scene_chips(tmp_path, tmp_path / "out", size=8, overlap=0, progress=False)
    assert report.written == 1 and GUESSED_RGB not in report.warnings
