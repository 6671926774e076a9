"""domains.driving.layout: camera orders, the stitched 2688x896 view, c-tags and their exact coordinate maps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from domains.driving import layout
from domains.driving.layout import (
    CAMERA_SIZE,
    CELL_SIZE,
    DRIVELM_ORDER,
    NUSCENES_ORDER,
    STITCH_ORDER,
    STITCHED_SIZE,
    CTag,
    CTagError,
    camera_order,
    cell_of,
    ctag_points,
    from_camera_grid,
    from_stitched,
    iter_ctags,
    multi_view_prefix,
    render_ctag,
    rewrite_ctags,
    split_stitched,
    stitch_cameras,
    to_camera_grid,
    to_stitched,
)
from model.tiling import TilingConfig, split_into_tiles, tile_grid


def _random_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(0, CAMERA_SIZE[0], n), rng.uniform(0, CAMERA_SIZE[1], n)])
    corners = np.array([[0, 0], [CAMERA_SIZE[0], 0], [0, CAMERA_SIZE[1]], [*CAMERA_SIZE], [800, 450]])
    return np.vstack([np.round(pts, 1), corners])  # DriveLM writes one decimal


# --------------------------------------------------------------------------------------------- orders and cells
def test_camera_orders_are_explicit_permutations_of_the_six_cameras():
    assert STITCH_ORDER == ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK",
                            "CAM_BACK_RIGHT")
    assert DRIVELM_ORDER[0] == "CAM_FRONT" and NUSCENES_ORDER[1] == "CAM_FRONT_RIGHT"
    for name, order in layout.CAMERA_ORDERS.items():
        assert camera_order(name) == order
        assert sorted(order) == sorted(STITCH_ORDER)
    with pytest.raises(ValueError, match="unknown camera order 'sideways'.*stitch"):
        camera_order("sideways")


def test_cells_follow_the_mini_internvl_grid():
    assert [cell_of(c) for c in STITCH_ORDER] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    with pytest.raises(CTagError, match="unknown camera 'CAM_TOP'"):
        cell_of("CAM_TOP")


def test_cell_box_of_every_camera_in_the_stitched_image():
    boxes = {cam: layout.cell_box(cam) for cam in STITCH_ORDER}
    assert boxes == {"CAM_FRONT_LEFT": (0, 0, 896, 448), "CAM_FRONT": (896, 0, 1792, 448),
                     "CAM_FRONT_RIGHT": (1792, 0, 2688, 448), "CAM_BACK_LEFT": (0, 448, 896, 896),
                     "CAM_BACK": (896, 448, 1792, 896), "CAM_BACK_RIGHT": (1792, 448, 2688, 896)}
    assert layout.cell_box("CAM_BACK_RIGHT", (1000, 334)) == (667, 167, 1000, 334)  # any size, rounded edges
    with pytest.raises(CTagError, match="unknown camera 'cam_front'"):
        layout.cell_box("cam_front")


def test_grid_map_and_grid_tag_test_shared_by_drawing_and_scoring():
    assert layout.grid_map("stitched") is from_stitched and layout.grid_map("multi") is from_camera_grid
    with pytest.raises(ValueError, match="view mode must be 'stitched' or 'multi', got 'tiles'"):
        layout.grid_map("tiles")
    text = "<c1,CAM_BACK,[500,750]> and <c2,CAM_FRONT,800.0,450.0>"
    grid, pixels = iter_ctags(text)
    assert layout.is_grid_tag(text, grid) and not layout.is_grid_tag(text, pixels)


# --------------------------------------------------------------------------------------------- coordinate maps
@pytest.mark.parametrize("camera", STITCH_ORDER)
def test_stitched_round_trip_within_a_tenth_of_a_pixel(camera):
    for x, y in _random_points(400, seed=STITCH_ORDER.index(camera)):
        xn, yn = to_stitched(x, y, camera)
        assert 0 <= xn <= 1000 and 0 <= yn <= 1000
        col, row = cell_of(camera)
        assert col * 1000 / 3 - 0.005 <= xn <= (col + 1) * 1000 / 3 + 0.005  # in the camera's cell (2 decimals)
        assert row * 500 <= yn <= (row + 1) * 500
        bx, by = from_stitched(xn, yn, camera)
        assert abs(bx - x) <= 0.1 and abs(by - y) <= 0.1


@pytest.mark.parametrize("camera", STITCH_ORDER)
def test_camera_grid_round_trip_within_a_tenth_of_a_pixel(camera):
    for x, y in _random_points(400, seed=10 + STITCH_ORDER.index(camera)):
        xn, yn = to_camera_grid(x, y, camera)
        assert 0 <= xn <= 1000 and 0 <= yn <= 1000
        bx, by = from_camera_grid(xn, yn, camera)
        assert abs(bx - x) <= 0.1 and abs(by - y) <= 0.1


def test_forward_map_formula_and_inverse_clamp():
    # CAM_BACK is cell (1, 1): x_norm = (x/1600 + 1)/3*1000, y_norm = (y/900 + 1)/2*1000
    assert to_stitched(1088.3, 497.5, "CAM_BACK", decimals=None) == pytest.approx(
        ((1088.3 / 1600 + 1) / 3 * 1000, (497.5 / 900 + 1) / 2 * 1000))
    assert to_camera_grid(800, 450, "CAM_FRONT") == (500.0, 500.0)
    # a grid point in the neighbouring cell is clamped to the named camera's frame (Mini-InternVL's inverse)
    assert from_stitched(10.0, 10.0, "CAM_BACK_RIGHT") == (0.0, 0.0)
    assert from_stitched(999.0, 999.0, "CAM_FRONT_LEFT") == (1600.0, 900.0)


@pytest.mark.parametrize("fn", [to_stitched, to_camera_grid])
def test_forward_maps_reject_points_outside_the_image_and_unknown_cameras(fn):
    with pytest.raises(CTagError, match="x = 1600.5 lies outside CAM_FRONT"):
        fn(1600.5, 10, "CAM_FRONT")
    with pytest.raises(CTagError, match="y = -1 lies outside"):
        fn(10, -1, "CAM_BACK")
    with pytest.raises(CTagError, match="unknown camera 'FRONT'"):
        fn(10, 10, "FRONT")


@pytest.mark.parametrize("fn", [from_stitched, from_camera_grid])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_inverse_maps_refuse_a_non_finite_coordinate(fn, bad):
    # NaN slipped through the clamp and came back as a NaN pixel; inf was clamped to the frame's edge
    with pytest.raises(ValueError, match=r"grid x = (nan|inf|-inf) for CAM_FRONT is not a finite number"):
        fn(bad, 500.0, "CAM_FRONT", decimals=None)
    with pytest.raises(CTagError, match=r"grid y = (nan|inf|-inf) for CAM_BACK is not a finite number"):
        fn(500.0, bad, "CAM_BACK")


# --------------------------------------------------------------------------------------------- c-tags
def test_iter_ctags_reads_both_forms_with_spans():
    text = "Notice <c1,CAM_BACK,1088.3,497.5> then <c2,CAM_FRONT,[405.25,80]> and < c3 , CAM_FRONT_LEFT , [ 1 , 2 ] >."
    tags = list(iter_ctags(text))
    assert [(t.obj, t.camera, t.x, t.y) for t in tags] == [
        (1, "CAM_BACK", 1088.3, 497.5), (2, "CAM_FRONT", 405.25, 80.0)]
    assert text[tags[0].start:tags[0].end] == "<c1,CAM_BACK,1088.3,497.5>"
    spaced = "x <c3 , CAM_FRONT_LEFT , [ 1 , 2 ] >"
    assert ctag_points(spaced) == [("CAM_FRONT_LEFT", 1.0, 2.0)]
    assert ctag_points("no tags, [1, 2] <box>[[1, 2, 3, 4]]</box>") == []
    assert list(iter_ctags("")) == [] and isinstance(tags[0], CTag)


def test_render_ctag_forms_and_trimming():
    assert render_ctag(1, "CAM_BACK", 368.54, 776.39) == "<c1,CAM_BACK,[368.54,776.39]>"
    assert render_ctag(2, "CAM_FRONT", 500.0, 12.5) == "<c2,CAM_FRONT,[500,12.5]>"
    assert render_ctag(3, "CAM_FRONT", 1088.3, 497.5, bracket=False, decimals=1) == "<c3,CAM_FRONT,1088.3,497.5>"


@pytest.mark.parametrize("forward,inverse", [(to_stitched, from_stitched), (to_camera_grid, from_camera_grid)])
def test_rewrite_ctags_round_trips_text(forward, inverse):
    rng = np.random.default_rng(3)
    parts, truth = [], []
    for k in range(60):
        cam = STITCH_ORDER[k % 6]
        x, y = round(float(rng.uniform(0, 1600)), 1), round(float(rng.uniform(0, 900)), 1)
        parts.append(f"object {render_ctag(k, cam, x, y, bracket=False, decimals=1)} is near")
        truth.append((cam, x, y))
    text = "; ".join(parts)
    grid = rewrite_ctags(text, forward)
    assert "[" in grid and len(list(iter_ctags(grid))) == 60
    back = [(t.camera, *inverse(t.x, t.y, t.camera)) for t in iter_ctags(grid)]
    for (cam, x, y), (cam2, bx, by) in zip(truth, back):
        assert cam == cam2 and abs(bx - x) <= 0.1 and abs(by - y) <= 0.1
    # the text around the tags is untouched
    assert rewrite_ctags(grid, lambda x, y, c: (x, y)).replace(" ", "") == grid.replace(" ", "")


def test_rewrite_ctags_errors_name_the_tag():
    with pytest.raises(CTagError, match=r"c-tag '<c1,CAM_ROOF,10,10>'.*unknown camera 'CAM_ROOF'"):
        rewrite_ctags("see <c1,CAM_ROOF,10,10>", to_stitched)
    with pytest.raises(CTagError, match=r"c-tag '<c2,CAM_BACK,1700.0,10>'.*outside CAM_BACK"):
        rewrite_ctags("ok <c1,CAM_BACK,1,1> bad <c2,CAM_BACK,1700.0,10>", to_camera_grid)


def test_prompts():
    assert layout.STITCHED_PREFIX == "<image>\n"
    text = multi_view_prefix("drivelm")
    assert text.splitlines() == [f"{c}: <image>" for c in DRIVELM_ORDER] and text.endswith("\n")
    assert multi_view_prefix(("CAM_BACK", "CAM_FRONT")) == "CAM_BACK: <image>\nCAM_FRONT: <image>\n"
    with pytest.raises(CTagError):
        multi_view_prefix(("CAM_BACK", "CAM_SKY"))


# --------------------------------------------------------------------------------------------- images
def _two_tone_cameras() -> dict[str, Image.Image]:
    """Each camera: its left half one colour, its right half another (all twelve distinct)."""
    cams = {}
    for k, cam in enumerate(STITCH_ORDER):
        arr = np.zeros((CAMERA_SIZE[1], CAMERA_SIZE[0], 3), np.uint8)
        arr[:, :800] = (20 * k + 10, 200 - 20 * k, 60)
        arr[:, 800:] = (60, 20 * k + 10, 240 - 20 * k)
        cams[cam] = Image.fromarray(arr)
    return cams


def test_stitch_geometry_and_split_back():
    cams = _two_tone_cameras()
    stitched = stitch_cameras(cams, label=False)
    assert stitched.size == STITCHED_SIZE == (2688, 896) and CELL_SIZE == (896, 448)
    arr = np.asarray(stitched)
    for cam in STITCH_ORDER:
        col, row = cell_of(cam)
        x0, y0 = col * 896, row * 448
        src = np.asarray(cams[cam])
        assert (arr[y0 + 224, x0 + 200] == src[450, 300]).all()  # left half colour
        assert (arr[y0 + 224, x0 + 700] == src[450, 1300]).all()  # right half colour
    parts = split_stitched(stitched)
    assert set(parts) == set(STITCH_ORDER) and all(p.size == CAMERA_SIZE for p in parts.values())
    for cam in STITCH_ORDER:
        back, src = np.asarray(parts[cam]).astype(int), np.asarray(cams[cam]).astype(int)
        assert np.abs(back[:, 100:700] - src[:, 100:700]).max() <= 2  # away from the seam
    with pytest.raises(CTagError, match="missing"):
        stitch_cameras({c: cams[c] for c in STITCH_ORDER[:5]})
    with pytest.raises(TypeError, match=r"not an image: CAM_BACK \(str\)"):
        stitch_cameras({**cams, "CAM_BACK": "samples/CAM_BACK/x.jpg"})
    assert set(split_stitched(stitched.resize((1344, 440)), camera_size=None)) == set(STITCH_ORDER)  # near 3:1
    with pytest.raises(ValueError, match=r"3:1 .*got 1600x900"):  # one camera frame is not six cameras
        split_stitched(cams["CAM_FRONT"])


def test_camera_labels_are_magenta_in_each_cells_top_left():
    stitched = np.asarray(stitch_cameras(_two_tone_cameras()))
    for cam in STITCH_ORDER:
        col, row = cell_of(cam)
        label = stitched[row * 448:row * 448 + 60, col * 896:col * 896 + 400]
        magenta = np.all(label == (255, 0, 255), axis=-1)
        assert magenta.sum() > 500, cam
        right = stitched[row * 448:row * 448 + 60, col * 896 + 720:(col + 1) * 896]  # past the longest name
        assert not np.all(right == (255, 0, 255), axis=-1).any()


def test_tiling_at_max_12_gives_13_tiles_each_half_a_camera():
    assert tile_grid(*STITCHED_SIZE, 1, 12, 448) == (6, 2)
    assert tile_grid(*STITCHED_SIZE, 1, 6, 448) == (3, 1)
    cams = _two_tone_cameras()
    stitched = stitch_cameras(cams, label=False)
    tiles = split_into_tiles(stitched, TilingConfig(tile_size=448, max_tiles=12))
    assert len(tiles) == 13 and all(t.size == (448, 448) for t in tiles)
    for i, tile in enumerate(tiles[:12]):
        col, row = i % 6, i // 6
        cam, half = STITCH_ORDER[row * 3 + col // 2], col % 2
        expected = np.asarray(cams[cam])[450, 300 if half == 0 else 1300]
        centre = np.asarray(tile)[100:348, 100:348].reshape(-1, 3)
        assert (centre == expected).all(), (i, cam, half)
        # the tile is exactly that half of the camera's cell in the stitched image
        assert np.array_equal(np.asarray(tile), np.asarray(stitched)[row * 448:(row + 1) * 448,
                                                                     col * 448:(col + 1) * 448])


@pytest.mark.parametrize("tag", ["<c1,CAM_NOPE,abc,536.3>", "<c2,CAM_FRONT,99999,1e9>", "<c3,CAM_FRONT,12.5>",
                                 "<c5,CAM_FRONT,[12.5,40>", "<c6,CAM_FRONT,12.5,40]>"])
def test_a_malformed_ctag_is_refused_not_kept_as_text(tag):
    """A tag the parser did not recognise was copied into the sample as it was, never mapped or checked."""
    with pytest.raises(CTagError, match="malformed"):
        rewrite_ctags(f"see {tag} and <c4,CAM_BACK,10.0,20.0>", lambda x, y, cam: (x, y))


def test_ctag_numbers_are_read_as_float_reads_them():
    """``.5`` and ``12.`` are numbers (a model writes them); they were refused as malformed tags."""
    text = "<c1,CAM_FRONT,.5,12.> and <c2,CAM_BACK,[-.25, 3.]>"
    assert ctag_points(text) == [("CAM_FRONT", 0.5, 12.0), ("CAM_BACK", -0.25, 3.0)]
    assert rewrite_ctags(text, lambda x, y, cam: (x * 2, y * 2)) == "<c1,CAM_FRONT,[1,24]> and <c2,CAM_BACK,[-0.5,6]>"
