"""``scene_chips`` boxes in another CRS than the scene's (a GIS export in WGS 84) are reprojected, not skipped;
lon / lat bounds in a file that names no crs are said to look so."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from domains.remote_sensing.convert import convert_scene_chips
from domains.remote_sensing.raster import chip_box_to_map

CRS = "EPSG:32633"  # UTM 33N: 15 E is its central meridian
TRANSFORM = from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)
PIXEL_BOX = [100, 60, 160, 100]  # a 600 m x 400 m field in the scene's pixels


def scene(path):
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as ds:
        ds.write(np.full((3, 256, 256), 90, dtype="uint8"))
    return path


def lon_lat_box():
    return list(transform_bounds(CRS, "EPSG:4326", *chip_box_to_map(PIXEL_BOX, TRANSFORM), densify_pts=21))


def records(report):
    return [json.loads(line) for line in report.outputs["all"].read_text().splitlines()]


CRS84 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}  # old GeoJSON's named crs


@pytest.mark.parametrize("crs", ["EPSG:4326", CRS84])
def test_wgs84_boxes_are_reprojected_to_the_scene_crs(tmp_path, crs):
    left, bottom, right, top = lon_lat_box()
    polygon = [[[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]]
    boxes = tmp_path / "boxes.geojson"
    boxes.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": [
        {"type": "Feature", "properties": {"id": "field", "phrase": "the field"},
         "geometry": {"type": "Polygon", "coordinates": polygon}}]}))
    report = convert_scene_chips(scene(tmp_path / "s.tif"), tmp_path / "out", size=256, overlap=0, boxes=boxes,
                                 progress=False)
    assert report.skipped == {} and report.written == 1
    [rec] = records(report)
    # the bounding box of the reprojected box: within a metre (0.1 px) of the field, a little wider at most
    assert np.allclose(rec["meta"]["scene_bbox"], PIXEL_BOX, atol=0.1), rec["meta"]["scene_bbox"]


def test_boxes_that_cannot_be_reprojected_are_a_crs_mismatch(tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"crs": "EPSG:4326", "objects": [
        {"id": 1, "phrase": "utm numbers labelled lon/lat", "bounds": list(chip_box_to_map(PIXEL_BOX, TRANSFORM))}]}))
    report = convert_scene_chips(scene(tmp_path / "s.tif"), tmp_path / "out", size=256, overlap=0, boxes=boxes,
                                 progress=False)
    assert report.skipped == {"crs mismatch": 1}
    assert "cannot be reprojected" in report.examples["crs mismatch"][0]


def test_lon_lat_bounds_without_a_crs_are_said_to_look_so(tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"id": 1, "phrase": "the field", "bounds": lon_lat_box()}]))
    report = convert_scene_chips(scene(tmp_path / "s.tif"), tmp_path / "out", size=256, overlap=0, boxes=boxes,
                                 progress=False)
    assert report.skipped == {"box outside image": 1}
    assert 'look like longitude / latitude' in report.examples["box outside image"][0]
    assert 'add "crs": "EPSG:4326"' in report.examples["box outside image"][0]
