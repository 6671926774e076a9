"""GeoJSON members of a scene boxes file: a 3D ``bbox`` (RFC 7946: west, south, min-z, east, north, max-z) gives
its west / south / east / north corners, and a geometry holding a non-finite coordinate is a malformed box."""

from __future__ import annotations

import json

from domains.base import ConvertReport
from domains.remote_sensing.convert import load_scene_boxes


def _features(tmp_path, *features):
    path = tmp_path / "boxes.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def test_a_3d_bbox_gives_its_horizontal_corners(tmp_path):
    path = _features(tmp_path,
                     {"type": "Feature", "properties": {"id": "a", "class": "ship"}, "geometry": None,
                      "bbox": [510200.0, 3989500.0, 0.0, 510400.0, 3989600.0, 30.0]},
                     {"type": "Feature", "properties": {"id": "b", "class": "ship"}, "geometry": None,
                      "bbox": [510200.0, 3989500.0, 510400.0, 3989600.0]})
    objects, _ = load_scene_boxes(path)
    assert [o["bounds"] for o in objects] == [(510200.0, 3989500.0, 510400.0, 3989600.0)] * 2


def test_a_geometry_with_a_nan_coordinate_is_a_malformed_box(tmp_path):
    ring = [[510200.0, 3989500.0], [510400.0, 3989500.0], [float("nan"), 3989600.0], [510200.0, 3989500.0]]
    path = _features(tmp_path, {"type": "Feature", "properties": {"id": "c", "class": "pond"},
                                "geometry": {"type": "Polygon", "coordinates": [ring]}})  # json writes NaN
    report = ConvertReport()
    objects, _ = load_scene_boxes(path, report)
    assert objects == [] and report.skipped == {"malformed box": 1}
    assert "not finite" in report.examples["malformed box"][0] and "object c" in report.examples["malformed box"][0]
