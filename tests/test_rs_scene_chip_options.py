"""``scene_chips`` options: `size` / `overlap` outside their range are refused before any file is read, a scene
cut into more chips than the index may hold is skipped unread, and a scene smaller than a chip is said."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from rasterio.transform import from_origin

from domains.base import DomainError
from domains.remote_sensing import convert as rs_convert
from domains.remote_sensing import raster
from domains.remote_sensing.convert import convert_scene_chips, iter_scene_chips


def scene(path, width=500, height=300):
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)) as ds:
        ds.write(np.full((3, height, width), 120, dtype="uint8"))
    return path


@pytest.mark.parametrize(("options", "named"), [
    ({"size": 10**9}, "size must be a whole number of pixels from 1 to 7071"),
    ({"size": 0}, "size must be"),
    ({"size": -448}, "size must be"),
    ({"size": 448.0}, "size must be"),
    ({"size": "448"}, "size must be"),
    ({"size": True}, "size must be"),
    ({"size": 448, "overlap": 448}, "overlap must be a whole number of pixels from 0 to size - 1 (447)"),
    ({"size": 448, "overlap": 10**9}, "overlap must be"),
    ({"size": 448, "overlap": -1}, "overlap must be"),
])
def test_out_of_range_size_or_overlap_is_refused_before_reading(tmp_path, monkeypatch, options, named):
    path = scene(tmp_path / "scene.tif")

    def no_read(*a, **k):
        raise AssertionError("a raster was opened before the options were checked")

    monkeypatch.setattr(raster, "open_raster", no_read)
    missing_boxes = tmp_path / "no_such_boxes.json"  # read before the scenes: the options come first
    with pytest.raises(DomainError) as err:
        convert_scene_chips(path, tmp_path / "out", boxes=missing_boxes, progress=False, **options)
    assert named in str(err.value) and repr(list(options.values())[-1]) in str(err.value)
    with pytest.raises(DomainError, match=named.split(" must")[0] + " must"):
        iter_scene_chips(path, **options)  # eager: not only once the generator is first advanced
    assert not (tmp_path / "out").exists()


def test_the_largest_size_is_accepted(tmp_path):
    report = convert_scene_chips(scene(tmp_path / "scene.tif"), tmp_path / "out", size=raster.MAX_CHIP_SIZE,
                                 overlap=0, progress=False)
    assert report.written == 1


def test_a_scene_cut_into_too_many_chips_is_skipped_unread(tmp_path, monkeypatch):
    path = scene(tmp_path / "scene.tif", 40, 30)
    monkeypatch.setattr(rs_convert, "MAX_SCENE_CHIPS", 100)

    def no_chips(*a, **k):
        raise AssertionError("the scene was chipped")

    monkeypatch.setattr(rs_convert, "iter_scene_chips", no_chips)
    report = convert_scene_chips(path, tmp_path / "out", size=2, overlap=0, progress=False)
    assert report.skipped["too many chips"] == 1 and report.written == 0
    assert "40x30 in 2 px chips 0 px apart makes 300 chips, above 100" in str(report.examples)


def test_a_scene_smaller_than_a_chip_is_said(tmp_path):
    report = convert_scene_chips(scene(tmp_path / "scene.tif", 500, 300), tmp_path / "out", size=448, overlap=0,
                                 progress=False)
    assert report.warnings["scene smaller than chip size"] == 1
    said = str(report.warning_examples)
    assert "the 500x300 scene is smaller than size=448 on one side: its chips are 448x300" in said
    report = convert_scene_chips(scene(tmp_path / "big.tif", 500, 500), tmp_path / "out2", size=448, overlap=0,
                                 progress=False)
    assert "scene smaller than chip size" not in report.warnings


def test_a_scene_linked_in_from_outside_the_folder_is_refused(tmp_path):
    src, outside = tmp_path / "scenes", tmp_path / "elsewhere"
    src.mkdir()
    outside.mkdir()
    scene(src / "a.tif")
    (src / "leak.tif").symlink_to(scene(outside / "secret.tif"))
    report = convert_scene_chips(src, tmp_path / "out", size=256, overlap=0, progress=False)
    assert report.skipped == {"path escapes data root": 1}
    index = (tmp_path / "out" / "chips.jsonl").read_text().splitlines()
    assert {json.loads(row)["scene"] for row in index} == {"a.tif"}


@pytest.mark.parametrize(("options", "named"), [
    ({"min_valid": 5}, "min_valid must be a fraction from 0 to 1 (of a chip's pixels that hold data), got 5"),
    ({"min_valid": "abc"}, "min_valid must be a fraction from 0 to 1"),
    ({"min_valid": -0.1}, "min_valid must be a fraction from 0 to 1"),
    ({"min_valid": float("nan")}, "min_valid must be a fraction from 0 to 1"),
    ({"stretch_scope": "tile"}, "stretch_scope must be 'scene' or 'chip', got 'tile'"),
])
def test_min_valid_and_stretch_scope_are_checked_before_reading(tmp_path, monkeypatch, options, named):
    path = scene(tmp_path / "scene.tif")

    def no_read(*a, **k):
        raise AssertionError("a raster was opened before the options were checked")

    monkeypatch.setattr(raster, "open_raster", no_read)
    with pytest.raises(DomainError) as err:
        convert_scene_chips(path, tmp_path / "out", size=256, overlap=0, progress=False, **options)
    assert str(err.value).startswith(named)
    # the chip readers too (min_valid=5 skipped every chip without a word, "abc" failed in the first with TypeError)
    with pytest.raises(DomainError, match="^" + named.split(" must")[0] + " must"):
        iter_scene_chips(path, size=256, overlap=0, **options)  # eager, as for size and overlap
    with pytest.raises(DomainError, match="^" + named.split(" must")[0] + " must"):
        next(raster.iter_chips(path, size=256, overlap=0, **options))


def test_an_object_naming_no_scene_read_is_an_unknown_scene(tmp_path):
    src = tmp_path / "scenes"
    src.mkdir()
    scene(src / "tile_07.tif")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"id": 1, "phrase": "a pond", "box": [10, 10, 50, 40], "scene": "tile_7.tif"},
                                 {"id": 2, "phrase": "a road", "box": [10, 10, 50, 40], "scene": "tile_07"}]))
    report = convert_scene_chips(src, tmp_path / "out", size=256, overlap=0, boxes=boxes, progress=False)
    assert report.skipped == {"unknown scene": 1} and report.written == 1
    assert "scene 'tile_7.tif' is none of the 1 scene(s) read (tile_07.tif)" in report.examples["unknown scene"][0]


@pytest.mark.parametrize("min_inside", ["0.5", None, True, float("nan"), 0, 1.5])
def test_a_min_inside_that_is_no_fraction_is_refused_naming_it(tmp_path, min_inside):
    with pytest.raises(DomainError, match=r"^min_inside must be in \(0, 1\]") as err:
        convert_scene_chips(scene(tmp_path / "scene.tif"), tmp_path / "out", size=256, overlap=0,
                            min_inside=min_inside, progress=False)
    assert str(err.value).endswith(f"got {min_inside!r}") and not (tmp_path / "out").exists()
