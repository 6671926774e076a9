"""DriveLM traffic-element boxes ``(c, s, x1, y1, x2, y2)`` (CAM_FRONT pixels) on the samples' 0-1000 grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from domains.driving import layout
from domains.driving.drivelm import convert_drivelm
from domains.driving.layout import CTagError, from_camera_grid, from_stitched, iter_traffic_boxes
from domains.driving.metrics import score_drivelm, to_camera_pixels
from domains.driving.synthetic import generate
from tests.test_driving_drivelm import TRAIN, _one_frame, _records

TRAFFIC_Q = ("Identify all the traffic elements in the front view, categorize them, determine their status, and "
             "predict the bounding box around each one. The output should be a list formatted as (c, s, x1, y1, x2, "
             "y2), where c represents the category, s denotes the status, and x1, y1, x2, y2 are the offsets of the "
             "top-left and bottom-right corners of the box relative to the center point.")
TRAFFIC_A = ("There are two traffic elements in the front view. The information of these traffic elements is "
             "[(traffic light, green, 674.86, 0.14, 723.33, 109.18), (traffic light, green, 1018.98, 7.19, 1071.77, "
             "125.6)].")
FORWARD = {"stitched": layout.to_stitched, "multi": layout.to_camera_grid}


def _unrounded(fn):
    return lambda x, y, camera: fn(x, y, camera, decimals=None)


def _random_boxes(n: int, seed: int = 0) -> list[tuple[float, float, float, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = np.sort(np.round(rng.uniform(0, 1600, 2), 2))
        y = np.sort(np.round(rng.uniform(0, 900, 2), 2))
        out.append((float(x[0]), float(y[0]), float(x[1]), float(y[1])))
    return out + [(0.0, 0.0, 1600.0, 900.0), (0.01, 0.01, 1599.99, 899.99)]


@pytest.mark.parametrize("mode", ["stitched", "multi"])
def test_boxes_go_to_the_grid_with_the_c_tag_maths_and_back_exactly(mode):
    """Issue: traffic-element boxes stayed in CAM_FRONT pixels inside samples whose c-tags are on the 0-1000 grid;
    now both corners map like CAM_FRONT c-tag points and come back to DriveLM's text to the 0.01 px."""
    boxes = _random_boxes(300)
    text = "The information of these traffic elements is [" + ", ".join(
        f"(traffic light, red, {x1}, {y1}, {x2}, {y2})" for x1, y1, x2, y2 in boxes) + "]."
    grid = layout.rewrite_traffic_boxes(text, _unrounded(FORWARD[mode]))
    got = list(iter_traffic_boxes(grid))
    assert len(got) == len(boxes) and all(b.bracketed for b in got)
    for b, (x1, y1, x2, y2) in zip(got, boxes):
        a, c = FORWARD[mode](x1, y1, "CAM_FRONT", decimals=None), FORWARD[mode](x2, y2, "CAM_FRONT", decimals=None)
        assert b.box == pytest.approx((*a, *c), abs=5.01e-4)
        assert all(0 <= v <= 1000 for v in b.box)
    assert to_camera_pixels(grid, mode) == text


def test_stitched_boxes_land_in_the_front_cell():
    (box,) = iter_traffic_boxes(layout.rewrite_traffic_boxes("(traffic light, green, 0, 0, 1600, 900)",
                                                             _unrounded(layout.to_stitched)))
    assert box.box == pytest.approx((1000 / 3, 0.0, 2000 / 3, 500.0), abs=1e-3)  # CAM_FRONT: col 1, row 0


def test_bad_boxes_are_refused_naming_the_tuple():
    with pytest.raises(CTagError, match=r"traffic element '\(traffic light, green, 1700.*outside CAM_FRONT"):
        layout.rewrite_traffic_boxes("(traffic light, green, 1700.0, 1.0, 1710.0, 5.0)", layout.to_stitched)
    with pytest.raises(CTagError, match="top-left then bottom-right"):
        layout.rewrite_traffic_boxes("(traffic light, green, 50.0, 60.0, 10.0, 5.0)", layout.to_stitched)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    generate(root, progress=False)
    return root


@pytest.mark.parametrize("mode, inverse", [("stitched", from_stitched), ("multi", from_camera_grid)])
def test_converted_samples_carry_grid_boxes_and_score_against_the_original(raw, tmp_path, mode, inverse):
    src, _ = _one_frame(raw, tmp_path / "qa")
    data = json.loads(src.read_text())
    scene = next(iter(data))
    frame = next(iter(data[scene]["key_frames"]))
    perception = data[scene]["key_frames"][frame]["QA"]["perception"]
    perception.insert(0, {"Q": TRAFFIC_Q, "A": TRAFFIC_A})
    perception.insert(1, {"Q": TRAFFIC_Q.replace("front view", "front view again"),
                          "A": "[(traffic light, red, 1590.0, 10.0, 1650.0, 40.0)]"})  # leaves CAM_FRONT
    src.write_text(json.dumps(data))
    report = convert_drivelm(src, tmp_path / "out", view_mode=mode, nuscenes_root=raw / "nuscenes", progress=False)
    assert report.skipped == {"bad c-tag": 1} and "1650" in report.examples["bad c-tag"][0]
    rec = next(r for r in _records(report.outputs["train"]) if r["meta"]["question_pixels"] == TRAFFIC_Q)
    assert rec["meta"]["answer_pixels"] == TRAFFIC_A
    boxes = list(iter_traffic_boxes(rec["answer"]))
    assert [b.bracketed for b in boxes] == [True, True] and "674.86" not in rec["answer"]
    for b, want in zip(boxes, iter_traffic_boxes(TRAFFIC_A)):
        x1, y1 = inverse(b.box[0], b.box[1], "CAM_FRONT", decimals=2)
        x2, y2 = inverse(b.box[2], b.box[3], "CAM_FRONT", decimals=2)
        assert (x1, y1, x2, y2) == want.box
    assert to_camera_pixels(rec["answer"], mode) == TRAFFIC_A
    assert score_drivelm(rec["answer"], rec, rec["answer"])["ROUGE_L"] == pytest.approx(1.0)
    assert TRAIN in report.inputs
