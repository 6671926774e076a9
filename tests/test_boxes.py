"""Pixel boxes and the InternVL 0-1000 grounding text."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from domains.boxes import (
    Box,
    clip_box,
    from_grid,
    parse_ref_boxes,
    point_from_grid,
    point_to_grid,
    render_ref_box,
    to_grid,
)


def test_to_grid_rounds_like_internvl():
    assert to_grid(Box(0, 0, 448, 448), 448, 448) == [0, 0, 1000, 1000]
    # round(x / W * 1000): 10/448*1000 = 22.32 -> 22, 100/300*1000 = 333.3 -> 333
    assert to_grid((10, 100, 224, 150), 448, 300) == [22, 333, 500, 500]


def test_round_trip_within_one_pixel():
    rng = random.Random(0)
    for _ in range(3000):
        w, h = rng.randint(1, 2000), rng.randint(1, 2000)
        x1, x2 = sorted(rng.uniform(0, w) for _ in range(2))
        y1, y2 = sorted(rng.uniform(0, h) for _ in range(2))
        if x1 >= w or y1 >= h or x2 <= 0 or y2 <= 0:
            continue
        grid = to_grid(Box(x1, y1, x2, y2), w, h)
        assert all(isinstance(v, int) and 0 <= v <= 1000 for v in grid)
        back = from_grid(grid, w, h)
        # half a step (one pixel up to 2000 px); a box thinner than half a step is kept one step wide
        tx = max(1.0, w / 1000) if x2 - x1 < w / 1000 else 1.0
        ty = max(1.0, h / 1000) if y2 - y1 < h / 1000 else 1.0
        for a, b, t in zip(back, (x1, y1, x2, y2), (tx, ty, tx, ty)):
            assert abs(a - b) <= t, (w, h, (x1, y1, x2, y2), grid, back)
        assert back.area > 0
        assert to_grid(back, w, h) == grid  # the grid is a fixed point


def test_clipping_and_outside():
    assert clip_box((-5, -5, 50, 60), 40, 50) == Box(0, 0, 40, 50)
    assert to_grid((-5, 10, 500, 20), 100, 100) == [0, 100, 1000, 200]
    with pytest.raises(ValueError, match=r"box \(120, 0, 130, 10\) lies outside the 100x100 image"):
        to_grid((120, 0, 130, 10), 100, 100)
    with pytest.raises(ValueError, match="not ordered"):
        to_grid((10, 10, 5, 20), 100, 100)
    with pytest.raises(ValueError, match="non-finite"):
        Box(float("nan"), 0, 1, 1).checked()
    with pytest.raises(ValueError, match="image size"):
        to_grid((0, 0, 1, 1), 0, 10)


def test_render_and_parse():
    one = render_ref_box("the boat", [120, 40, 300, 200])
    assert one == "<ref>the boat</ref><box>[[120, 40, 300, 200]]</box>"
    many = render_ref_box("tanks", [[1, 2, 3, 4], [500, 500, 1000, 1000]])
    assert many == "<ref>tanks</ref><box>[[1, 2, 3, 4], [500, 500, 1000, 1000]]</box>"
    px = render_ref_box("plane", [Box(0, 0, 224, 112)], width=448, height=448)
    assert px == "<ref>plane</ref><box>[[0, 0, 500, 250]]</box>"
    text = f"Here: {one} and {many}. <box>[[7,8, 9 ,10]]</box> <ref>nothing</ref>"
    assert parse_ref_boxes(text) == [
        ("the boat", [[120, 40, 300, 200]]),
        ("tanks", [[1, 2, 3, 4], [500, 500, 1000, 1000]]),
        ("", [[7, 8, 9, 10]]),
        ("nothing", []),
    ]
    (phrase, boxes), = parse_ref_boxes(px, width=448, height=448)
    assert phrase == "plane" and boxes == [Box(0, 0, 224, 112)]


def test_render_errors():
    with pytest.raises(ValueError, match="integers in 0..1000"):
        render_ref_box("x", [0, 0, 1001, 5])
    with pytest.raises(ValueError, match="integers in 0..1000"):
        render_ref_box("x", [0.5, 0, 10, 5])
    with pytest.raises(ValueError, match="no boxes"):
        render_ref_box("x", [])
    with pytest.raises(ValueError, match="must not contain"):
        render_ref_box("<ref>x", [0, 0, 1, 1])
    with pytest.raises(ValueError, match="outside"):
        render_ref_box("x", [Box(500, 500, 600, 600)], width=100, height=100)


def test_points_and_iou():
    assert point_to_grid((224, 112), 448, 448) == [500, 250]
    assert point_from_grid([500, 250], 448, 448) == (224.0, 112.0)
    with pytest.raises(ValueError, match="outside"):
        point_to_grid((500, 0), 448, 448)
    # a point without two numbers was a raw "too many values to unpack" or TypeError
    for bad in ((1, 2, 3), None, (1, None), "12"):
        with pytest.raises(ValueError, match=r"point needs 2 finite numbers \(x, y\), got"):
            point_to_grid(bad, 448, 448)
        with pytest.raises(ValueError, match=r"grid point needs 2 finite numbers \(x, y\), got"):
            point_from_grid(bad, 448, 448)
    assert Box(0, 0, 10, 10).iou(Box(5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert Box(0, 0, 10, 10).center == (5, 5)


def test_draw_ref_boxes_draws_each_box_on_its_grid_position():
    from PIL import Image

    from domains.boxes import PALETTE, draw_ref_boxes

    image = Image.new("RGB", (200, 100), (0, 0, 0))
    drawn = draw_ref_boxes(image, "<ref>boat</ref><box>[[100, 200, 500, 800]]</box> and <ref>tank</ref><box>[[600, 100, 900, 900]]</box>")
    assert image.getpixel((20, 50)) == (0, 0, 0)  # the input is not modified
    assert drawn.getpixel((20, 50)) == PALETTE[0]  # left edge of the boat box: x = 0.1 * 200
    assert drawn.getpixel((120, 50)) == PALETTE[1]  # left edge of the tank box: x = 0.6 * 200
    assert drawn.getpixel((60, 50)) == (0, 0, 0)  # inside the boat box, untouched


def test_a_box_that_cannot_be_drawn_leaves_the_others_drawn():
    """A reversed box, or one wholly off the image, in a model's answer raised (ValueError / PIL's "x1 must be
    greater than or equal to x0"), so the demo drew none of the answer's boxes."""
    from PIL import Image

    from domains.boxes import PALETTE, draw_ref_boxes, parse_ref_boxes

    image = Image.new("RGB", (200, 100), (0, 0, 0))
    answer = ("<ref>a</ref><box>[[100, 200, 500, 800]]</box><ref>b</ref><box>[[750, 1000, 250, 500]]</box>"
              "<ref>c</ref><box>[[1200, 100, 1300, 300]]</box>")
    assert [len(boxes) for _, boxes in parse_ref_boxes(answer, 200, 100)] == [1, 0, 0]
    assert [len(boxes) for _, boxes in parse_ref_boxes(answer)] == [1, 1, 1]  # on the grid: as written
    drawn = draw_ref_boxes(image, answer)
    assert drawn.getpixel((20, 50)) == PALETTE[0]  # the good box is drawn


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_box_lands_where_pil_turns_the_pixels(orientation):
    from PIL import Image, ImageOps

    from domains.boxes import upright_box

    stored = np.zeros((20, 30), np.uint8)
    stored[3:9, 5:12] = 255  # box (5, 3, 12, 9) as pixel edges
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    ys, xs = np.nonzero(np.asarray(ImageOps.exif_transpose(image)))
    assert tuple(upright_box((5, 3, 12, 9), 30, 20, orientation)) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_a_box_label_goes_below_a_box_with_no_room_above():
    """A box at grid y 0-100 was almost hidden by its own label, clamped to the top of the image over the box."""
    from PIL import Image

    from domains.boxes import PALETTE, draw_ref_boxes

    image = Image.new("RGB", (600, 200), (0, 0, 0))
    drawn = draw_ref_boxes(image, "<ref>crane</ref><box>[[0, 0, 200, 100]]</box>")  # pixels (0, 0)-(120, 20)
    assert drawn.getpixel((60, 10)) == (0, 0, 0)  # inside the box: not covered
    assert drawn.getpixel((1, 21)) == PALETTE[0]  # the label, just below the box's bottom edge
    drawn = draw_ref_boxes(image, "<ref>crane</ref><box>[[0, 500, 200, 600]]</box>")  # room above: there
    assert drawn.getpixel((1, 99)) == PALETTE[0] and drawn.getpixel((1, 121)) == (0, 0, 0)


def test_a_label_no_font_here_can_draw_says_so_instead_of_empty_boxes(monkeypatch):
    """A SLAKE zh phrase (<ref>左肺结节</ref>) was drawn as four empty boxes with Pillow's default font."""
    from PIL import Image

    from domains import boxes

    monkeypatch.setattr(boxes, "_wide_font_files", lambda: ())  # no CJK font installed
    assert boxes._font_for("storage tank", 12) == (boxes.label_font(12), "storage tank")
    with pytest.warns(UserWarning, match="no installed font has some characters"):
        assert boxes._font_for("左肺结节", 12)[1] == "[4 chars: no font]"
        assert boxes._font_for("nodule 结节", 12)[1] == "nodule [2 chars: no font]"
        boxes.draw_ref_boxes(Image.new("RGB", (200, 100)), "<ref>左肺结节</ref><box>[[100, 200, 500, 800]]</box>")


def test_a_label_dejavu_cannot_draw_uses_an_installed_font_that_can(monkeypatch):
    import matplotlib

    from domains import boxes

    regular = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")  # has U+1D5A0, Bold has not
    monkeypatch.setattr(boxes, "_wide_font_files", lambda: (regular,))
    font, text = boxes._font_for("\U0001d5a0 sign", 12)
    assert text == "\U0001d5a0 sign" and font.path == regular


def test_to_grid_keeps_a_thin_box_one_step_wide():
    # 1 px of a 2000 px image is half a grid step: round() would give x1 == x2, a box no IoU can ever hit
    grid = to_grid((1000, 500, 1001, 501), 2000, 1000)
    assert grid[2] > grid[0] and grid[3] > grid[1]
    assert parse_ref_boxes(render_ref_box("dot", grid), 2000, 1000)[0][1]  # the parser keeps it
    assert to_grid((3999.8, 10, 4000, 900), 4000, 1000) == [999, 10, 1000, 900]  # at the right edge: step left
    assert to_grid((0, 0, 0.1, 5), 4000, 1000) == [0, 0, 1, 5]
    assert to_grid((1001.5, 0, 1001.6, 5), 4000, 1000) == [250, 0, 251, 5]  # centre right of 250: step right
    assert to_grid((998.5, 0, 998.6, 5), 4000, 1000) == [249, 0, 250, 5]  # centre left of 250: step left


def test_a_box_with_a_runaway_number_is_skipped_like_any_malformed_box():
    """A model answer with a 5000-digit coordinate raised int()'s "Exceeds the limit (4300 digits)" out of
    draw_ref_boxes, so the demo drew none of the answer's boxes."""
    from PIL import Image

    from domains.boxes import PALETTE, draw_ref_boxes

    answer = "<ref>a</ref><box>[[" + "9" * 5000 + ", 0, 10, 10], [100, 200, 500, 800]]</box>"
    assert [len(boxes) for _, boxes in parse_ref_boxes(answer)] == [1]
    assert [len(boxes) for _, boxes in parse_ref_boxes(answer, 200, 100)] == [1]
    assert draw_ref_boxes(Image.new("RGB", (200, 100)), answer).getpixel((20, 50)) == PALETTE[0]


def test_numpy_boxes_convert_like_python_numbers():
    # a box straight from numpy (float32 projections, int64 annotation arrays) was refused as "non-numeric", or
    # failed with a raw TypeError ("'numpy.int64' object is not iterable") when rendered
    pixel = np.array([1, 2, 30, 40], dtype=np.float32)
    assert to_grid(pixel, 100, 100) == [10, 20, 300, 400]
    assert clip_box(pixel, 100, 100) == Box(1, 2, 30, 40)
    assert render_ref_box("car", pixel, 100, 100) == "<ref>car</ref><box>[[10, 20, 300, 400]]</box>"
    assert render_ref_box("car", pixel.astype(np.int64)) == "<ref>car</ref><box>[[1, 2, 30, 40]]</box>"
    assert render_ref_box("car", np.array([[1, 2, 3, 4], [5, 6, 7, 8]])) == (
        "<ref>car</ref><box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box>")
    with pytest.raises(ValueError, match="non-finite"):
        Box(1, 2, np.float32("nan"), 4).checked()


def test_to_grid_widens_a_zero_extent_box_to_one_step():
    """A pixel box of zero width or height became a zero-area grid box, which parse_ref_boxes then dropped:
    grid boxes always have x2 > x1 and y2 > y1, within 0..1000."""
    assert to_grid((50, 10, 50, 40), 100, 100) == [500, 100, 501, 400]
    assert to_grid((10, 20, 60, 20), 100, 100) == [100, 200, 600, 201]
    assert to_grid((100, 100, 100, 100), 200, 200) == [500, 500, 501, 501]
    assert to_grid((199.9, 0, 199.9, 50), 200, 100) == [999, 0, 1000, 500]  # at the right edge: widened inward
    for grid in (to_grid((50, 10, 50, 40), 100, 100), to_grid((199.9, 0, 199.9, 50), 200, 100)):
        assert parse_ref_boxes(render_ref_box("line", grid), 100, 100)[0][1]  # the parser keeps it


def test_render_ref_box_refuses_a_grid_box_of_no_area():
    """A grid box of zero width or height ([5, 5, 5, 9]) was rendered as an answer that parse_ref_boxes drops and
    grounding_hit refuses as a reference: a training sample no prediction could hit."""
    for grid in ([5, 5, 5, 9], [5, 5, 9, 5], [0, 0, 0, 0]):
        with pytest.raises(ValueError, match=r"has no area: need x1 < x2 and y1 < y2"):
            render_ref_box("x", grid)
    assert render_ref_box("x", [5, 5, 6, 6]) == "<ref>x</ref><box>[[5, 5, 6, 6]]</box>"


def test_a_zero_extent_box_on_the_image_edge_is_inside():
    """A zero-width box on the left / right edge, (0, 0, 0, 10), was refused as lying outside though it touches the
    image; it lies in the closed image rectangle, and to_grid widens it one step inward."""
    assert clip_box((0, 0, 0, 10), 100, 100) == Box(0, 0, 0, 10)
    assert clip_box((100, 5, 100, 10), 100, 100) == Box(100, 5, 100, 10)
    assert clip_box((10, 100, 20, 100), 100, 100) == Box(10, 100, 20, 100)
    assert to_grid((0, 0, 0, 10), 100, 100) == [0, 0, 1, 100]
    assert to_grid((100, 0, 100, 10), 100, 100) == [999, 0, 1000, 100]
    assert to_grid((10, 0, 20, 0), 100, 100) == [100, 0, 200, 1]
    for box in ((-5, 0, 0, 10), (100, 0, 110, 10), (101, 0, 101, 10), (-1, 0, -1, 10), (10, 100, 20, 120)):
        with pytest.raises(ValueError, match="lies outside the 100x100 image"):  # beyond, or only touching
            clip_box(box, 100, 100)


@pytest.mark.parametrize("call, names", [
    (lambda: render_ref_box(None, [1, 2, 3, 4]), "phrase must be a string, got NoneType"),
    (lambda: render_ref_box("car", None), "boxes for phrase 'car' must be one [x1, y1, x2, y2] box"),
    (lambda: render_ref_box("car", "1234"), "boxes for phrase 'car' must be one [x1, y1, x2, y2] box"),
    (lambda: render_ref_box("car", 5), "boxes for phrase 'car' must be one [x1, y1, x2, y2] box"),
    (lambda: render_ref_box("car", [[1, 2, 3, 4], None]), "each box for phrase 'car' must be [x1, y1, x2, y2]"),
    (lambda: render_ref_box("car", [None], 100, 100), "each box for phrase 'car' must be [x1, y1, x2, y2]"),
    (lambda: parse_ref_boxes(None), "parse_ref_boxes needs the answer's text as a string, got NoneType"),
])
def test_none_or_text_where_a_phrase_boxes_or_an_answer_belong_is_refused_naming_it(call, names):
    """These raised a raw TypeError ("argument of type 'NoneType' is not iterable")."""
    with pytest.raises(ValueError) as err:
        call()
    assert names in str(err.value)


@pytest.mark.parametrize("call", [
    lambda: to_grid([1, 2, 3], 100, 100), lambda: render_ref_box("car", [[1, 2, 3]], 100, 100),
    lambda: clip_box([1, 2, 3, 4, 5], 10, 10), lambda: clip_box(None, 10, 10),
])
def test_a_pixel_box_without_four_values_is_refused_naming_it(call):
    """These raised a raw TypeError from Box ("Box.__new__() missing 1 required positional argument: 'y2'")."""
    with pytest.raises(ValueError, match=r"pixel box needs 4 values \(x1, y1, x2, y2\), got"):
        call()


def test_upright_box_refuses_a_box_without_four_values():
    from domains.boxes import upright_box

    with pytest.raises(ValueError, match="pixel box needs 4 values"):
        upright_box((1, 2), 10, 10, 1)
