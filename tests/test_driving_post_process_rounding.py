"""The stitched grid's inverse rounds as Mini-InternVL's ``post_process`` does, point for point."""

from __future__ import annotations

from domains.driving.layout import STITCH_ORDER, cell_of, from_stitched, to_stitched
from domains.driving.metrics import to_camera_pixels


def _post_process(xn: float, yn: float, camera: str) -> tuple[float, float]:
    """Mini-InternVL ``eval/domain_specific/drivelm/evaluate.py`` ``post_process``, its arithmetic step by step."""
    mx, my = cell_of(camera)
    width, height = 896, 448
    cx, cy = (xn / 1000) * (width * 3), (yn / 1000) * (height * 2)
    cx -= mx * width
    cy -= my * height
    cx, cy = cx / width * 1600, cy / height * 900
    return round(max(0, min(1600, cx)), 1), round(max(0, min(900, cy)), 1)


def test_points_on_a_rounding_tie_go_the_way_post_process_sends_them():
    # y = 1.25 grid units is 2.25 px in CAM_FRONT_LEFT: a tie that the order of the float operations decides
    assert from_stitched(2.5, 1.25, "CAM_FRONT_LEFT") == (12.0, 2.2)
    assert from_stitched(5.5, 2.75, "CAM_FRONT_LEFT") == (26.4, 4.9)
    assert to_camera_pixels("<c1,CAM_FRONT_LEFT,[2.5,1.25]>") == "<c1,CAM_FRONT_LEFT,12.0,2.2>"


def test_every_two_decimal_grid_point_matches_post_process():
    for k in range(0, 100001, 7):
        v = k / 100
        for camera in STITCH_ORDER:
            for yn in (v / 2, 1000 - v / 2):
                assert from_stitched(v, yn, camera) == _post_process(v, yn, camera), (v, yn, camera)


def test_converted_tags_still_round_trip_to_drivelms_pixels():
    for k in range(0, 16001, 3):
        x, y = k / 10, (k % 9001) / 10
        for camera in STITCH_ORDER:
            assert from_stitched(*to_stitched(x, y, camera), camera) == (x, y)
