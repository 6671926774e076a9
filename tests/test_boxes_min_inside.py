"""`clip_box(min_inside=)`: a border overshoot is clipped, a box mostly outside the image is refused."""

from __future__ import annotations

import pytest

from domains.boxes import MIN_INSIDE, Box, clip_box


def test_an_overshoot_is_clipped_and_a_box_mostly_outside_is_refused():
    assert clip_box((90, 10, 110, 30), 100, 100, min_inside=MIN_INSIDE) == Box(90, 10, 100, 30)  # half inside
    with pytest.raises(ValueError, match="outside the 100x100 image"):
        clip_box((0, 0, 1000, 1000), 100, 100, min_inside=MIN_INSIDE)  # 1 % inside: grid values read as pixels
    assert clip_box((0, 0, 1000, 1000), 100, 100) == Box(0, 0, 100, 100)  # no minimum: clipped as before
