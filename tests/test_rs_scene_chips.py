"""Large-scene chipping (``scene_chips`` converter): bounded windowed reads on a sparse 20,000 x 20,000
GeoTIFF, empty chips skipped cheaply, boxes in pixel / map coordinates, chip borders, round trips, re-runs."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from domains.base import get_domain
from domains.boxes import from_grid, parse_ref_boxes
from domains.remote_sensing.convert import (
    chip_grid_to_map,
    chip_grid_to_scene,
    convert_scene_chips,
    load_scene_boxes,
)
from domains.remote_sensing.raster import chip_box_to_map

SIZE = 20_000
CHIP = 448
PIXEL = 10.0  # metres
TRANSFORM = from_origin(500_000.0, 4_000_000.0, PIXEL, PIXEL)
CRS = "EPSG:32633"
# data windows (col, row, width, height); chips step 448 px with overlap=0
REGIONS = {
    "two_chips": (896, 896, 896, 448),  # exactly chips (row 2, col 2) and (row 2, col 3)
    "partial": (10_000, 5_000, 300, 200),  # inside chip (col 9856, row 4928): 30 % valid
    "speck": (15_000, 15_000, 20, 20),  # 0.2 % of its chip: below min_valid
    "corner": (19_800, 19_800, 200, 200),  # in the edge-aligned last chip (19552, 19552)
}
KEPT = {(896, 896), (1344, 896), (9856, 4928), (19552, 19552)}
N_CHIPS = 45 * 45  # 44 full steps + the edge-aligned chip per axis

# objects in scene pixels [x1, y1, x2, y2]
OBJECTS = [
    {"id": "inside", "phrase": "a small field", "box": [1000, 1000, 1100, 1080]},
    {"id": "straddle", "phrase": "a long shed", "box": [1300, 1000, 1400, 1050]},  # 44 % left, 56 % right
    {"id": "half", "phrase": "the water tank", "box": [1314, 1100, 1374, 1150]},  # 50 / 50: both chips
    {"id": "corner", "phrase": "the corner roof", "box": [19850, 19900, 19950, 19990]},
    {"id": "nodata", "class": "ghost", "box": [5000, 5000, 5050, 5050]},  # inside the scene, only nodata chips
    {"id": "far", "phrase": "a ship far away", "box": [25_000, 100, 25_100, 200]},  # outside the scene
]


def to_map(box):
    return list(chip_box_to_map(box, TRANSFORM))


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "big_scene.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint16", nodata=0,
                       crs=CRS, transform=TRANSFORM, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       sparse_ok=True) as ds:
        for col, row, w, h in REGIONS.values():
            ds.write(rng.integers(100, 4000, (3, h, w), dtype="uint16"), window=Window(col, row, w, h))
    assert path.stat().st_size < 5_000_000  # sparse: the 2.4 GB of pixels are mostly never written
    return path


@pytest.fixture(scope="module")
def pixel_boxes(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("boxes") / "boxes.json"
    path.write_text(json.dumps({"crs": CRS, "objects": OBJECTS}))
    return path


@pytest.fixture(scope="module")
def map_boxes(tmp_path_factory) -> Path:
    """The same objects as a GeoJSON FeatureCollection with polygons in the scene CRS (one as ``bounds``)."""
    features = []
    for o in OBJECTS:
        left, bottom, right, top = to_map(o["box"])
        props = {k: v for k, v in o.items() if k != "box"}
        if o["id"] == "half":
            props["bounds"] = [left, bottom, right, top]
            geometry = None
        else:
            geometry = {"type": "Polygon", "coordinates": [[[left, bottom], [right, bottom], [right, top],
                                                            [left, top], [left, bottom]]]}
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
    path = tmp_path_factory.mktemp("geojson") / "boxes.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": CRS}},
                                "features": features}))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def converted(scene, pixel_boxes, tmp_path_factory):
    """One conversion with boxes, every dataset read recorded, memory traced and timed."""
    out = tmp_path_factory.mktemp("out")
    reads: list = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        reads.append(kwargs.get("window"))
        return original(self, *args, **kwargs)

    rasterio.io.DatasetReader.read = spy
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        report = convert_scene_chips(scene, out, size=CHIP, overlap=0, boxes=pixel_boxes)
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rasterio.io.DatasetReader.read = original
    print(f"\n20000x20000 sparse scene, {N_CHIPS} chip windows: {elapsed:.2f} s (traced), "
          f"{len(reads)} windowed reads, tracemalloc peak {peak / 2**20:.1f} MiB")
    return {"out": out, "report": report, "reads": reads, "elapsed": elapsed, "peak": peak}


# --------------------------------------------------------------------------------------------- big scene
def test_bounded_windowed_reads_and_fast(converted):
    reads = converted["reads"]
    assert reads, "the spy saw no reads"
    for win in reads:  # never a whole-scene read: every read is one window no larger than a chip
        assert win is not None
        assert isinstance(win, Window) and win.width <= CHIP and win.height <= CHIP
    # all-nodata chips are recognised from the sparse block index, not read: 64 stretch samples plus the
    # few chips touching a written 256 x 256 block (of 2025 chips)
    assert len(reads) <= 64 + 20
    assert converted["peak"] < 64 * 2**20  # one chip of 3 x 448 x 448 uint16 is 1.2 MB; the scene is 2.4 GB
    assert converted["elapsed"] < 20


def test_data_regions_become_chips_and_empty_chips_are_counted(converted):
    out, report = converted["out"], converted["report"]
    index = read_jsonl(out / "chips.jsonl")
    assert {(r["window"][0], r["window"][1]) for r in index} == KEPT
    assert report.skipped["all nodata"] == N_CHIPS - len(KEPT) - 1
    assert report.skipped["valid fraction below 0.05"] == 1  # the speck
    for r in index:
        assert r["width"] == r["height"] == CHIP and r["window"][2:] == [CHIP, CHIP]
        assert (out / r["image"]).is_file()
        assert r["crs"] == CRS and r["scene"] == "big_scene.tif" and r["scene_size"] == [SIZE, SIZE]
        a, b, c, d, e, f = r["transform"]
        assert (a, b, d, e) == (PIXEL, 0.0, 0.0, -PIXEL)
        assert (c, f) == (500_000.0 + PIXEL * r["window"][0], 4_000_000.0 - PIXEL * r["window"][1])
    partial = next(r for r in index if r["window"][:2] == [9856, 4928])
    assert partial["valid_fraction"] == pytest.approx(300 * 200 / CHIP**2, abs=1e-4)
    pngs = list((out / "images").rglob("*.png"))
    assert len(pngs) == len(KEPT)
    assert not list(out.rglob("*.part"))


def test_grounding_records(converted):
    out, report = converted["out"], converted["report"]
    recs = read_jsonl(report.outputs["all"])
    assert report.written == len(recs)
    by = {}
    for r in recs:
        by.setdefault(r["meta"]["object"], []).append(r)
        assert r["task"] == "grounding" and r["conversations"][0]["value"].startswith("<image>\n")
        assert r["conversations"][1]["value"] == r["answer"]
        assert (out / r["image"]).is_file() and r["width"] == r["height"] == CHIP
        (phrase, boxes), = parse_ref_boxes(r["answer"])
        assert phrase == r["meta"]["phrase"] and boxes == [r["meta"]["grid_box"]]
        assert f"<ref>{phrase}</ref>" in r["conversations"][0]["value"]
    assert set(by) == {"inside", "straddle", "half", "corner"}
    # fully inside: chip (896, 896), box moved into the chip's pixel frame
    (inside,) = by["inside"]
    assert inside["meta"]["window"] == [896, 896, CHIP, CHIP]
    assert inside["meta"]["bbox"] == [104, 104, 204, 184]
    assert inside["meta"]["grid_box"] == [round(104 / CHIP * 1000), round(104 / CHIP * 1000),
                                          round(204 / CHIP * 1000), round(184 / CHIP * 1000)]
    # straddling x = 1344: 44 % in the left chip (dropped), 56 % in the right one (kept, clipped)
    (straddle,) = by["straddle"]
    assert straddle["meta"]["window"][:2] == [1344, 896]
    assert straddle["meta"]["bbox"] == [0, 104, 56, 154]
    assert straddle["meta"]["inside_fraction"] == pytest.approx(0.56)
    assert straddle["meta"]["scene_bbox"] == [1300, 1000, 1400, 1050]
    # exactly 50 % on each side: kept in both chips
    assert sorted(r["meta"]["window"][0] for r in by["half"]) == [896, 1344]
    (corner,) = by["corner"]
    assert corner["meta"]["window"][:2] == [19552, 19552]
    # skipped objects, named
    assert report.skipped["box outside image"] == 1
    assert "far" in report.examples["box outside image"][0] and "a ship far away" in report.examples["box outside image"][0]
    assert report.skipped["box in no chip"] == 1 and "nodata" in report.examples["box in no chip"][0]


def test_round_trip_grid_to_map(converted):
    recs = read_jsonl(converted["report"].outputs["all"])
    original = {o["id"]: o["box"] for o in OBJECTS}
    for r in recs:
        if r["meta"]["object"] not in ("inside", "corner"):
            continue  # whole boxes (clipped ones map back to their clipped part)
        meta, grid = r["meta"], r["meta"]["grid_box"]
        want_px, want_map = original[meta["object"]], to_map(original[meta["object"]])
        # step by step: chip grid -> chip pixels -> scene pixels -> map
        col, row, w, h = meta["window"]
        chip_px = from_grid(grid, w, h)
        scene_px = [chip_px.x1 + col, chip_px.y1 + row, chip_px.x2 + col, chip_px.y2 + row]
        assert np.allclose(scene_px, want_px, atol=1.0)
        assert np.allclose(chip_box_to_map(scene_px, TRANSFORM), want_map, atol=PIXEL)
        # the helpers, through the record's own affine transform
        assert np.allclose(list(chip_grid_to_scene(grid, meta)), want_px, atol=1.0)
        assert np.allclose(chip_grid_to_map(grid, meta), want_map, atol=PIXEL)
        assert np.allclose(chip_box_to_map(chip_px, Affine(*meta["transform"])), want_map, atol=PIXEL)


def test_map_coordinates_give_the_same_records(scene, map_boxes, converted, tmp_path):
    objects, crs = load_scene_boxes(map_boxes)
    assert crs == CRS and all(o["bounds"] is not None and o["pixel"] is None for o in objects)
    report = convert_scene_chips(scene, tmp_path, size=CHIP, overlap=0, boxes=map_boxes)
    assert read_jsonl(report.outputs["all"]) == read_jsonl(converted["report"].outputs["all"])
    assert (tmp_path / "chips.jsonl").read_bytes() == (converted["out"] / "chips.jsonl").read_bytes()
    assert report.skipped == converted["report"].skipped


def test_rerun_is_idempotent(scene, pixel_boxes, converted):
    out = converted["out"]
    jsonl = {p: p.read_bytes() for p in out.glob("*.jsonl")}
    pngs = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    t0 = time.perf_counter()
    report = convert_scene_chips(scene, out, size=CHIP, overlap=0, boxes=pixel_boxes)
    print(f"\nre-run: {time.perf_counter() - t0:.2f} s")
    assert {p: p.read_bytes() for p in out.glob("*.jsonl")} == jsonl
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == pngs
    assert report.written == converted["report"].written and report.skipped == converted["report"].skipped


def test_without_boxes_only_chips_and_index(scene, tmp_path):
    t0 = time.perf_counter()
    report = get_domain("remote_sensing").convert("scene_chips", scene, tmp_path, size=CHIP, overlap=64)
    print(f"\noverlap=64 without boxes: {time.perf_counter() - t0:.2f} s")
    assert set(report.outputs) == {"chips"}
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["chips.jsonl"]
    index = read_jsonl(tmp_path / "chips.jsonl")
    assert report.written == len(index) > 0
    assert all(set(r) >= {"image", "window", "transform", "crs"} for r in index)
    assert report.skipped["all nodata"] > 2000


# --------------------------------------------------------------------------------------------- small scenes
def small_scene(path: Path, fill: bool = True, nodata=0) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=500, height=300, count=3, dtype="uint8", nodata=nodata,
                       crs=CRS, transform=TRANSFORM) as ds:
        ds.write(np.full((3, 300, 500), 120 if fill else 0, dtype="uint8"))
    return path


def test_folder_of_scenes_and_bad_input(tmp_path):
    src = tmp_path / "scenes"
    src.mkdir()
    small_scene(src / "a.tif")
    small_scene(src / "b.tif")
    (src / "broken.tif").write_bytes(b"II*\x00not a tiff")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([
        {"id": 1, "phrase": "a house", "box": [10, 10, 60, 40], "scene": "b.tif"},
        {"id": 2, "phrase": "no box"},
        {"id": 3, "box": [1, 2, 3, 4]},
        {"id": 4, "phrase": "edge", "box": [480, 10, 540, 40]},  # 1/3 inside the scene: in no chip
        {"id": 5, "phrase": "wrong crs", "bounds": to_map([10, 10, 60, 40])},
    ]))
    # a map box in another CRS than the scenes'
    data = json.loads(boxes.read_text())
    boxes.write_text(json.dumps({"crs": "EPSG:4326", "objects": data}))
    report = convert_scene_chips(src, tmp_path / "out", size=256, overlap=0, boxes=boxes)
    recs = read_jsonl(report.outputs["all"])
    assert {r["meta"]["scene"] for r in recs} == {"b.tif"} and {r["meta"]["object"] for r in recs} == {1}
    assert report.skipped["unreadable image"] == 1
    assert report.skipped["malformed box"] == 1 and report.skipped["missing phrase"] == 1
    assert report.skipped["box in no chip"] == 1 and report.skipped["crs mismatch"] == 1
    index = read_jsonl(tmp_path / "out" / "chips.jsonl")
    assert {r["scene"] for r in index} == {"a.tif", "b.tif"} and len(index) == 2 * 2 * 2


def test_a_folder_of_jpeg_2000_and_erdas_imagine_scenes_is_chipped(tmp_path):
    """A folder scan took *.tif / *.tiff only: the .jp2 / .img rasters the reader opens were left out without a
    word (one given as --src alone was chipped)."""
    src = tmp_path / "scenes"
    src.mkdir()
    small_scene(src / "a.tif")
    for name, driver in (("b.jp2", "JP2OpenJPEG"), ("c.img", "HFA")):
        with rasterio.open(src / name, "w", driver=driver, width=500, height=300, count=3, dtype="uint8",
                           crs=CRS, transform=TRANSFORM) as ds:
            ds.write(np.full((3, 300, 500), 120, dtype="uint8"))
    report = convert_scene_chips(src, tmp_path / "out", size=256, overlap=0)
    index = read_jsonl(tmp_path / "out" / "chips.jsonl")
    assert {r["scene"] for r in index} == {"a.tif", "b.jp2", "c.img"} and len(index) == 3 * 2 * 2
    assert not report.skipped


def test_sparse_precheck_matches_iter_chips(tmp_path):
    """The block-index shortcut yields exactly the chips (and skip counts) iter_chips yields by reading."""
    from domains.base import ConvertReport
    from domains.remote_sensing.convert import iter_scene_chips
    from domains.remote_sensing.raster import iter_chips

    path = tmp_path / "sparse.tif"
    rng = np.random.default_rng(1)
    with rasterio.open(path, "w", driver="GTiff", width=3000, height=2500, count=3, dtype="uint16", nodata=0,
                       crs=CRS, transform=TRANSFORM, tiled=True, blockxsize=256, blockysize=256, sparse_ok=True) as ds:
        for col, row, w, h in [(100, 100, 50, 40), (1000, 700, 500, 300), (2950, 2400, 50, 100), (1800, 10, 5, 5)]:
            ds.write(rng.integers(1, 4000, (3, h, w), dtype="uint16"), window=Window(col, row, w, h))
    for overlap, min_valid in [(0, 0.0), (64, 0.05)]:
        ra, rb = ConvertReport(), ConvertReport()
        a = [(c.window, c.row, c.col, c.image.tobytes()) for c in
             iter_chips(path, size=CHIP, overlap=overlap, min_valid=min_valid, report=ra)]
        b = [(c.window, c.row, c.col, c.image.tobytes()) for c in
             iter_scene_chips(path, size=CHIP, overlap=overlap, min_valid=min_valid, stretch=(2, 98), report=rb)]
        assert a == b and a
        assert ra.skipped == rb.skipped


def test_changed_bands_rewrite_the_chips(tmp_path):
    """Issue 14 (12): chips of a re-run with other bands into the same `out` are rewritten, not reused."""
    from PIL import Image

    path = tmp_path / "scene.tif"
    rng = np.random.default_rng(2)
    with rasterio.open(path, "w", driver="GTiff", width=300, height=200, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as ds:
        ds.write(rng.integers(1, 255, (3, 200, 300), dtype="uint8"))
    with rasterio.open(path) as ds:
        data = ds.read()
    out = tmp_path / "out"
    for bands in ([1, 2, 3], [3, 2, 1], [1, 2, 3]):
        convert_scene_chips(path, out, size=CHIP, overlap=0, bands=bands, stretch=None)
        chip = read_jsonl(out / "chips.jsonl")[0]
        with Image.open(out / chip["image"]) as im:
            assert np.array_equal(np.asarray(im), data[[b - 1 for b in bands]].transpose(1, 2, 0)), bands


def test_a_folder_without_readable_scenes_keeps_the_earlier_index(tmp_path):
    small_scene(tmp_path / "a.tif")
    out = tmp_path / "out"
    convert_scene_chips(tmp_path / "a.tif", out, size=256, overlap=0)
    index = (out / "chips.jsonl").read_bytes()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.tif").write_bytes(b"II*\x00not a tiff")
    report = convert_scene_chips(tmp_path / "bad", out, size=256, overlap=0)
    assert report.written == 0 and report.outputs == {} and (out / "chips.jsonl").read_bytes() == index


def test_map_bounds_on_a_scene_without_georeferencing_are_refused(tmp_path):
    """A pixel-only TIFF (no CRS, no geotransform) has no map: bounds are not silently read as pixels."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    scene = tmp_path / "plain.tif"
    data = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype="uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as ds:
            ds.write(data)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"objects": [{"id": "map", "phrase": "a roof", "bounds": [10, 10, 30, 30]},
                                             {"id": "px", "phrase": "a road", "box": [5, 5, 40, 20]}]}))
    with warnings.catch_warnings():  # rasterio's own NotGeoreferencedWarning came before the report's line
        warnings.simplefilter("error", NotGeoreferencedWarning)
        report = convert_scene_chips(scene, tmp_path / "out", size=64, overlap=0, boxes=boxes)
    assert report.skipped.get("scene not georeferenced") == 1
    assert "no CRS or geotransform" in report.examples["scene not georeferenced"][0]
    assert [r["meta"].get("phrase", r["answer"]) for r in read_jsonl(report.outputs["all"])
            if r["task"] == "grounding"] == ["a road"]
    # and back: a box predicted on such a chip has scene pixels only, never pixels passed off as map bounds
    meta = read_jsonl(report.outputs["all"])[0]["meta"]
    assert chip_grid_to_scene([0, 0, 500, 500], meta) == (0, 0, 32, 32)
    with pytest.raises(ValueError, match="has no CRS or geotransform.*use chip_grid_to_scene"):
        chip_grid_to_map([0, 0, 500, 500], meta)
