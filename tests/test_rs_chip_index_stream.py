"""scene_chips streams its chip index: the rows of chips.jsonl went to a list kept until the end (a folder of large
scenes in small chips held millions of rows in memory); they now go to a spool file as the chips are cut, with the
same bytes, an unchanged index left untouched, and a scene that fails part-way still dropped whole."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from tests.deps import require

rasterio = require("rasterio")
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

import domains.remote_sensing.convert as rs_convert
from domains.remote_sensing.convert import convert_scene_chips
from domains.remote_sensing.raster import Chip, RasterError


def _scene(path, w=64, h=48):
    data = np.random.default_rng(0).integers(0, 255, (3, h, w)).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)) as ds:
        ds.write(data)
    return path


def test_the_index_bytes_are_jsonl_of_its_rows_and_rewritten_only_on_change(tmp_path):
    src = tmp_path / "scenes"
    src.mkdir()
    _scene(src / "a.tif")
    _scene(src / "b.tif", 40, 40)
    report = convert_scene_chips(src, tmp_path / "out", size=16, overlap=4, progress=False)
    path = tmp_path / "out" / "chips.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert report.written == len(rows) == 5 * 4 + 3 * 3
    assert path.read_bytes() == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    before = path.stat().st_mtime_ns
    convert_scene_chips(src, tmp_path / "out", size=16, overlap=4, progress=False)
    assert path.stat().st_mtime_ns == before
    (src / "b.tif").unlink()
    convert_scene_chips(src, tmp_path / "out", size=16, overlap=4, progress=False)
    assert len(path.read_text().splitlines()) == 5 * 4


def test_a_scene_failing_part_way_drops_its_rows_and_chips(tmp_path, monkeypatch):
    src = tmp_path / "scenes"
    src.mkdir()
    _scene(src / "a.tif")
    _scene(src / "b.tif")
    real = rs_convert.iter_scene_chips

    def failing(path, **kw):
        for n, chip in enumerate(real(path, **kw)):
            if path.name == "a.tif" and n == 3:
                raise RasterError(f"{path}: read failed window (truncated or corrupt file?)")
            yield chip

    monkeypatch.setattr(rs_convert, "iter_scene_chips", failing)
    report = convert_scene_chips(src, tmp_path / "out", size=16, overlap=0, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "chips.jsonl").read_text().splitlines()]
    assert {r["scene"] for r in rows} == {"b.tif"} and report.written == len(rows) == 12
    assert "(3 chip(s) read before it dropped with the scene)" in str(report.examples)
    assert not list((tmp_path / "out" / "images" / "scene_chips").glob("a/*.png"))


@pytest.mark.parametrize("chips", [6_000])
def test_index_memory_does_not_grow_with_the_chip_count(tmp_path, monkeypatch, chips):
    tile = Image.new("RGB", (1, 1))
    mask = np.ones((1, 1), dtype=bool)

    def many(path, **kw):  # a huge scene's chips, without the reading and encoding
        for n in range(chips):
            yield Chip(image=tile, mask=mask, window=Window(n, 0, 1, 1), transform=Affine.translation(n, 0), row=0,
                       col=n, path=path)

    monkeypatch.setattr(rs_convert, "iter_scene_chips", many)
    monkeypatch.setattr(rs_convert, "MAX_SCENE_CHIPS", 10**9)
    monkeypatch.setattr(rs_convert, "_image_out", lambda *a, **k: (1, 1))
    scene = _scene(tmp_path / "s.tif")
    convert_scene_chips(scene, tmp_path / "warm", size=1, overlap=0, progress=False)  # lazy imports, out of the peak
    tracemalloc.start()
    try:
        report = convert_scene_chips(scene, tmp_path / "out", size=1, overlap=0, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.written == chips
    # kept in a list: 8 MiB; spooled: the 1 MiB chunks that compare and copy the spool
    assert peak < 3 * 2**20, f"{peak / 2**20:.1f} MiB for {chips} index rows"
