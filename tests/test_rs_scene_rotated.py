"""A scene with a rotated geotransform: map bounds become the pixel bounding box of the map box's turned outline
(larger than the object), which the report says once per scene; pixel boxes and north-up scenes say nothing."""

from __future__ import annotations

import json

import numpy as np

from tests.deps import require

rasterio = require("rasterio")
from affine import Affine

from domains.remote_sensing.convert import convert_scene_chips

ROTATED = "map boxes on a rotated scene"


def _scene(path, transform):
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=transform) as ds:
        ds.write(np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8))
    return path


def _boxes(path, transform, key="bounds"):
    # two objects around scene pixels (20..40, 20..40) and (24..36, 24..36), as map bounds or pixel boxes
    objects = []
    for k, (a, b) in enumerate(((20, 40), (24, 36))):
        xs, ys = zip(*(transform * (x, y) for x in (a, b) for y in (a, b)))
        box = [min(xs), min(ys), max(xs), max(ys)] if key == "bounds" else [a, a, b, b]
        objects.append({"id": k, "phrase": "a field", key: box})
    path.write_text(json.dumps({"objects": objects}))
    return path


def test_map_boxes_on_a_rotated_scene_are_said(tmp_path):
    turned = Affine.translation(500_000.0, 4_000_000.0) * Affine.rotation(30) * Affine.scale(10.0, -10.0)
    scene = _scene(tmp_path / "turned.tif", turned)
    report = convert_scene_chips(scene, tmp_path / "out", size=64, overlap=0, boxes=_boxes(tmp_path / "b.json", turned),
                                 progress=False)
    assert report.written == 2 and report.warnings.get(ROTATED) == 1
    text = report.warning_examples[ROTATED][0]
    assert "turned.tif" in text and "rotated" in text and "pixel box bounding its turned outline" in text
    report = convert_scene_chips(scene, tmp_path / "out2", size=64, overlap=0,
                                 boxes=_boxes(tmp_path / "p.json", turned, key="box"), progress=False)
    assert report.written == 2 and ROTATED not in report.warnings
    north_up = Affine.translation(500_000.0, 4_000_000.0) * Affine.scale(10.0, -10.0)
    report = convert_scene_chips(_scene(tmp_path / "up.tif", north_up), tmp_path / "out3", size=64, overlap=0,
                                 boxes=_boxes(tmp_path / "u.json", north_up), progress=False)
    assert report.written == 2 and ROTATED not in report.warnings
