"""Driving demo hooks: uploads -> model input, answers drawn back on the cameras."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from domains.boxes import PALETTE
from domains.driving import layout
from domains.driving.demo import camera_from_name, draw_answer, read_upload

COLORS = {cam: (20 + 35 * k, 200 - 30 * k, 60 + 25 * k) for k, cam in enumerate(layout.STITCH_ORDER)}
SMALL = (160, 90)  # 16:9 like the real cameras, small enough to be fast


def write_cameras(tmp_path, names=None, size=SMALL):
    paths = []
    for cam in layout.STITCH_ORDER:
        name = (names or {}).get(cam, f"n008-2018__{cam}__1537291010612404.jpg")
        path = tmp_path / name
        Image.new("RGB", size, COLORS[cam]).save(path, quality=95)
        paths.append(path)
    return paths


def close(pixel, color, tol=6):
    return all(abs(a - b) <= tol for a, b in zip(pixel, color))


def cell_center(camera, size=layout.STITCHED_SIZE):
    col, row = layout.cell_of(camera)
    return int((col + 0.5) * size[0] / 3), int((row + 0.75) * size[1] / 2)  # below the camera label


# --------------------------------------------------------------------------------------------- read_upload
def test_camera_from_name():
    assert camera_from_name("n008__CAM_FRONT_LEFT__1537.jpg") == "CAM_FRONT_LEFT"
    assert camera_from_name("cam_front.png") == "CAM_FRONT"
    assert camera_from_name("samples/CAM_BACK/x__CAM_BACK_RIGHT__1.jpg") == "CAM_BACK_RIGHT"  # the file name counts
    assert camera_from_name("CAM_FRONT_and_CAM_BACK.png") is None
    assert camera_from_name("frame_001.png") is None
    # names match on whole tokens: a longer word is no camera, never its CAM_FRONT prefix
    assert camera_from_name("CAM_FRONT_LEFTY.jpg") is None
    assert camera_from_name("CAM_BACK_RIGHTS.jpg") is None
    assert camera_from_name("CAM_BACK2.jpg") is None
    assert camera_from_name("MYCAM_FRONT.jpg") is None
    assert camera_from_name("n015-2018-07-24__CAM_FRONT_LEFT__1533.jpg") == "CAM_FRONT_LEFT"
    assert camera_from_name("CAM_FRONT_1533.jpg") == "CAM_FRONT"
    # a hyphen or space between the words is read as "_", never as the end of a shorter camera's name
    assert camera_from_name("cam_front-left.jpg") == "CAM_FRONT_LEFT"
    assert camera_from_name("CAM-BACK-RIGHT.png") == "CAM_BACK_RIGHT"
    assert camera_from_name("cam front right.png") == "CAM_FRONT_RIGHT"
    assert camera_from_name("scene-0103_cam_back.jpg") == "CAM_BACK"


def test_six_named_cameras_are_stitched_whatever_the_upload_order(tmp_path):
    # bare names make CAM_FRONT a prefix of CAM_FRONT_LEFT / CAM_FRONT_RIGHT
    paths = write_cameras(tmp_path, names={cam: f"{cam}.png" for cam in layout.STITCH_ORDER})
    random.Random(0).shuffle(paths)
    out = read_upload(paths)
    assert out["prompt"] == layout.STITCHED_PREFIX
    (img,) = out["images"]
    assert img.size == layout.STITCHED_SIZE and img.mode == "RGB"
    for cam in layout.STITCH_ORDER:
        assert close(img.getpixel(cell_center(cam)), COLORS[cam]), cam
    assert out["info"]["cameras"] == "read from the file names: " + ", ".join(layout.STITCH_ORDER)
    assert any("1600×900" in w for w in out["warnings"])  # the small test cameras are flagged


def test_six_cameras_in_multi_mode_follow_the_named_order(tmp_path):
    paths = write_cameras(tmp_path)
    out = read_upload(paths, mode="multi", order="drivelm")
    assert out["labels"] == list(layout.DRIVELM_ORDER)
    assert out["prompt"] == layout.multi_view_prefix("drivelm")
    assert out["prompt"].count("<image>") == 6
    for cam, img in zip(layout.DRIVELM_ORDER, out["images"]):
        assert close(img.getpixel((80, 45)), COLORS[cam]), cam


def test_unnamed_cameras_are_refused_never_placed_by_upload_order(tmp_path):
    names = {cam: f"view_{k}.png" for k, cam in enumerate(layout.NUSCENES_ORDER)}
    paths = sorted(write_cameras(tmp_path, names=names))  # view_0 .. view_5: in the nuScenes order, but unsaid
    with pytest.raises(ValueError, match=r"cannot tell which camera each file shows: no camera in the name of "
                                         r"view_0.png, .*view_5.png\. Found: none; missing: CAM_FRONT_LEFT") as err:
        read_upload(paths, mode="multi", order="nuscenes")
    assert "never placed by upload order" in str(err.value)


def test_upload_errors_are_clear(tmp_path):
    paths = write_cameras(tmp_path)
    with pytest.raises(ValueError, match="got 2 files"):
        read_upload(paths[:2])
    dupe = tmp_path / "copy__CAM_BACK__2.jpg"
    dupe.write_bytes(paths[4].read_bytes())
    with pytest.raises(ValueError, match=r"the same camera in CAM_BACK: n008-2018__CAM_BACK__1537291010612404.jpg, "
                                         r"copy__CAM_BACK__2.jpg\. Found: .*; missing: CAM_BACK_RIGHT\."):
        read_upload([*paths[:5], dupe])
    unnamed = tmp_path / "mystery.jpg"
    unnamed.write_bytes(paths[5].read_bytes())
    with pytest.raises(ValueError, match=r"no camera in the name of mystery.jpg\. Found: CAM_FRONT_LEFT \(.*"
                                         r"; missing: CAM_BACK_RIGHT"):
        read_upload([*paths[:5], unnamed])
    broken = tmp_path / "x__CAM_BACK_RIGHT__3.jpg"
    broken.write_text("not an image")
    with pytest.raises(ValueError, match="x__CAM_BACK_RIGHT__3.jpg: not an image file"):
        read_upload([*paths[:5], broken])
    with pytest.raises(ValueError, match="mode"):
        read_upload(paths, mode="panorama")
    square = tmp_path / "square.png"
    Image.new("RGB", (500, 500)).save(square)
    with pytest.raises(ValueError, match=r"square.png: a stitched six-camera image is 3:1 .*got 500x500; or upload"):
        read_upload([square])


def test_stitched_upload_aspect_follows_the_one_layout_setting(tmp_path, monkeypatch):
    """read_upload and layout.split_stitched share layout's one 3:1 check (STITCHED_ASPECT_TOLERANCE)."""
    wide = tmp_path / "wide.png"
    Image.new("RGB", (400, 200)).save(wide)  # 2:1
    with pytest.raises(ValueError, match="3:1"):
        read_upload([wide])
    monkeypatch.setattr(layout, "STITCHED_ASPECT_TOLERANCE", 0.5)
    assert read_upload([wide])["images"][0].size == layout.STITCHED_SIZE
    assert len(read_upload([wide], mode="multi")["images"]) == 6


def test_staged_names_keep_the_camera_and_messages_name_uploads(tmp_path):
    """The demo stages files as upload-<k>.<camera><suffix> (deploy.demo.uploads, name_tag hook): the camera
    is read from there, and messages name the upload, not the staged file."""
    cams = list(layout.STITCH_ORDER)
    random.Random(1).shuffle(cams)
    names = {cam: f"upload-{k + 1}.{cam}.jpg" for k, cam in enumerate(cams)}
    out = read_upload(write_cameras(tmp_path, names=names))
    for cam in layout.STITCH_ORDER:
        assert close(out["images"][0].getpixel(cell_center(cam)), COLORS[cam]), cam
    (tmp_path / names[cams[0]]).rename(tmp_path / "upload-1.jpg")  # staged without a camera word
    with pytest.raises(ValueError, match=r"no camera in the name of upload 1\. Found: "):
        read_upload(sorted(tmp_path.glob("upload-*")))


def test_one_stitched_image_in_both_modes(tmp_path):
    views = {cam: Image.new("RGB", SMALL, COLORS[cam]) for cam in layout.STITCH_ORDER}
    path = tmp_path / "stitched.png"
    layout.stitch_cameras(views).resize((1344, 448)).save(path)
    out = read_upload([path])
    assert out["images"][0].size == layout.STITCHED_SIZE and out["prompt"] == layout.STITCHED_PREFIX
    assert any("1344×448; it was resized to 2688×896" in w for w in out["warnings"])  # never resized silently
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (3, 1)).save(tiny)
    assert any("3×1; it was resized" in w for w in read_upload([tiny])["warnings"])
    out = read_upload([path], mode="multi")
    assert out["labels"] == list(layout.STITCH_ORDER) and len(out["images"]) == 6
    assert all(img.size == layout.CAMERA_SIZE for img in out["images"])
    for cam, img in zip(layout.STITCH_ORDER, out["images"]):
        assert close(img.getpixel((800, 700)), COLORS[cam]), cam
    assert any("cut from the stitched image" in w for w in out["warnings"])
    # one path given bare, not in a list: a str was split into characters ("got 41 files"), a Path crashed
    for one in (path, str(path)):
        assert read_upload(one)["images"][0].size == layout.STITCHED_SIZE


# --------------------------------------------------------------------------------------------- draw_answer
def stitched_image():
    return layout.stitch_cameras({cam: Image.new("RGB", SMALL, COLORS[cam]) for cam in layout.STITCH_ORDER},
                                 label=False)


def test_markers_land_on_the_named_camera_in_the_stitched_image():
    xb, yb = layout.to_stitched(800.0, 450.0, "CAM_BACK")
    answer = f"Notice <c1,CAM_BACK,[{xb},{yb}]> and <c2,CAM_FRONT,[900,100]> now."
    (out,) = draw_answer([stitched_image()], answer)
    assert out.getpixel((896 + 448, 448 + 224)) == PALETTE[0]  # CAM_BACK cell centre
    # grid x 900 lies in CAM_FRONT_RIGHT's cell; the marker is clamped to CAM_FRONT's right edge (y 180 px)
    y = round(180 / 900 * 448)
    assert out.getpixel((1790, y)) == PALETTE[1]
    assert close(out.getpixel((1796, y)), COLORS["CAM_FRONT_RIGHT"])  # nothing spills into the next camera
    # camera pixels (DriveLM's unbracketed form) are accepted too
    (out,) = draw_answer([stitched_image()], "<c3,CAM_BACK_LEFT,400.0,450.0>")
    assert out.getpixel((224, 448 + 224)) == PALETTE[2]


def test_markers_in_multi_mode_and_unknown_cameras():
    images = [Image.new("RGB", (400, 225), COLORS[cam]) for cam in layout.STITCH_ORDER]
    xn, yn = layout.to_camera_grid(400.0, 675.0, "CAM_BACK_LEFT")
    out = draw_answer(images, f"<c4,CAM_BACK_LEFT,[{xn},{yn}]> <c5,CAM_TOP,[10,10]>", mode="multi")
    k = layout.STITCH_ORDER.index("CAM_BACK_LEFT")
    assert out[k].getpixel((100, 169)) == PALETTE[3]
    for j, img in enumerate(out):
        if j not in (0, k):
            assert img.tobytes() == images[j].tobytes()
    assert out[0].getpixel((2, 223)) == (0, 0, 0)  # the note listing c5 (CAM_TOP), first image's bottom
    assert images[k].getpixel((100, 169)) == COLORS["CAM_BACK_LEFT"]  # inputs are not modified
    with pytest.raises(ValueError, match="6 camera images"):
        draw_answer(images[:2], "x", mode="multi")
    with pytest.raises(ValueError, match="one stitched image"):
        draw_answer(images, "x")
    # one camera picture in stitched mode: its "cells" are no cameras, and the marks landed anywhere
    with pytest.raises(ValueError, match=r"stitched mode: a stitched six-camera image is 3:1 .*got 400x225"):
        draw_answer(images[:1], "<c1,CAM_BACK,[500,700]>")


def test_drawing_reads_camera_names_as_scoring_does():
    """A lower-case camera is unknown to the metrics (left unmapped, never scored as that camera); drawing it on
    CAM_FRONT showed the user a point that was not what got scored. Both now refuse it the same way."""
    from domains.driving.metrics import to_camera_pixels

    xn, yn = layout.to_stitched(800.0, 450.0, "CAM_FRONT")
    answer = f"<c1,cam_front,[{xn},{yn}]>"
    assert to_camera_pixels(answer) == answer  # scoring: unknown camera, left as written
    (out,) = draw_answer([stitched_image()], answer)
    assert close(out.getpixel((896 + 448, 224)), COLORS["CAM_FRONT"])  # no marker at the CAM_FRONT centre
    assert out.getpixel((2, 895)) == (0, 0, 0)  # the note listing c1 (cam_front)


def test_boxes_are_drawn_too():
    (out,) = draw_answer([stitched_image()], "<ref>car</ref><box>[[100, 500, 200, 900]]</box>")
    assert out.getpixel((int(0.15 * 2688), round(0.9 * 896) - 2)) == PALETTE[0]


@pytest.mark.parametrize("mode", ["stitched", "multi"])
def test_traffic_element_boxes_are_outlined_on_the_front_camera(mode):
    """Answers list traffic elements as (c, s, [x1,y1,x2,y2]) on the sample's grid (CAM_FRONT); they used to be
    left undrawn. The outline lands on CAM_FRONT, and only there."""
    convert = layout.to_stitched if mode == "stitched" else layout.to_camera_grid
    (a, b), (c, d) = convert(400.0, 200.0, "CAM_FRONT"), convert(1200.0, 700.0, "CAM_FRONT")
    answer = f"The information of these traffic elements is [(traffic light, green, [{a},{b},{c},{d}])]."
    if mode == "stitched":
        (out,) = draw_answer([stitched_image()], answer)
        left, top, w, h = 896, 0, 896, 448
        others = [(cam, cell_center(cam)) for cam in layout.STITCH_ORDER if cam != "CAM_FRONT"]
        assert all(close(out.getpixel(xy), COLORS[cam]) for cam, xy in others)
    else:
        images = [Image.new("RGB", (400, 225), COLORS[cam]) for cam in layout.STITCH_ORDER]
        out = draw_answer(images, answer, mode="multi")
        k = layout.STITCH_ORDER.index("CAM_FRONT")
        assert all(img.tobytes() == images[j].tobytes() for j, img in enumerate(out) if j != k)
        out, (left, top, w, h) = out[k], (0, 0, 400, 225)
    x_left, y_mid = left + round(400 / 1600 * w), top + round(450 / 900 * h)
    assert out.getpixel((x_left, y_mid)) == PALETTE[0]  # the box's left edge
    assert close(out.getpixel((left + round(800 / 1600 * w), y_mid)), COLORS["CAM_FRONT"])  # inside: untouched


@pytest.mark.parametrize(("images", "mode", "order", "message"), [
    (2, "stitched", "stitch", "stitched mode draws on one stitched image, got 2"),
    (5, "multi", "stitch", "multi mode draws on 6 camera images"),
    (1, "panorama", "stitch", "mode must be 'stitched' or 'multi'"),
    (6, "multi", ["CAM_FRONT"] * 6, "camera order must list the six nuScenes cameras once each"),
])
def test_drawing_refusals_are_the_domains_own_errors_so_the_page_shows_them(images, mode, order, message):
    """The demo page shows only a PocketAdaptError's text (anything else as its type and a reference), so a wrong
    upload count must be a DomainError to reach the user in words."""
    from model.errors import PocketAdaptError

    with pytest.raises(PocketAdaptError, match=message):
        draw_answer([Image.new("RGB", (48, 16))] * images, "", mode=mode, order=order)
