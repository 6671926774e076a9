"""Box-aware augmentation (domains.augment), its recipe key and the dataset hook."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.deps import require

require("albumentations")

from adapt.data.augment import build_augment
from adapt.data.dataset import SupervisedDataset
from adapt.data.samples import Record, SkipLog
from adapt.recipe import RecipeError, load_recipe
from domains.augment import (
    _DIRECTION,
    CAMERA_PICTURE,
    GENERAL,
    NAMES_DIRECTION,
    NO_IMAGE,
    OPTED_OUT,
    SEVERAL_IMAGES,
    STITCHED,
    Augmentation,
    build_augmentation,
    derive_seed,
)
from domains.boxes import from_grid, parse_ref_boxes, to_grid
from model.tiling import TilingConfig

W, H = 320, 200
BOX_PX = (40, 30, 120, 90)  # x1, y1, x2, y2 in pixels


def marked_image(box=BOX_PX, size=(W, H)) -> Image.Image:
    """Black image with the box filled white, so the pixels tell where the box went."""
    a = np.zeros((size[1], size[0], 3), np.uint8)
    x1, y1, x2, y2 = box
    a[y1:y2, x1:x2] = 255
    return Image.fromarray(a)


def white_bbox(image: Image.Image) -> tuple[int, int, int, int]:
    a = np.asarray(image)[..., 0] > 127
    ys, xs = np.nonzero(a)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def assert_left_alone(rec, image) -> None:
    """Under every flip / turn setting `rec` is planned as unmovable and comes back untouched, image and all."""
    for flips, rot90 in ((True, False), (False, True), (True, True)):
        aug = build_augmentation(flips=flips, rot90=rot90, color_jitter=0.0, seed=0)
        assert aug.plan(rec) == ("none", "with boxes that cannot be moved")
        for k in range(8):
            got_image, got = aug(image, rec, key=(0, k))
            assert got is rec and got_image is image


def grounding_record(grid) -> Record:
    box = f"[{grid[0]}, {grid[1]}, {grid[2]}, {grid[3]}]"
    answer = f"<ref>the roof</ref><box>[{box}]</box>"
    return Record(source="rs", line=1, images=["x.png"], image_sizes=[(W, H)], task="grounding", answer=answer,
                  conversations=[{"from": "human", "value": f"<image>\nWhat is in [{box}]? Then find the roof."},
                                 {"from": "gpt", "value": f"A roof. {answer}"}])


@pytest.mark.parametrize("flips,rot90", [(True, False), (False, True), (True, True)])
def test_boxes_follow_the_pixels(flips, rot90):
    grid = to_grid(BOX_PX, W, H)
    record = grounding_record(grid)
    aug = build_augmentation(flips=flips, rot90=rot90, color_jitter=0.0, seed=7)
    seen_sizes, changed = set(), 0
    for k in range(16):
        image, out = aug(marked_image(), record, key=(0, k))
        nw, nh = image.size
        seen_sizes.add((nw, nh))
        (phrase, boxes), = parse_ref_boxes(out.answer)
        assert phrase == "the roof" and len(boxes) == 1
        moved = from_grid(boxes[0], nw, nh)
        truth = white_bbox(image)
        assert all(abs(a - b) <= 1 for a, b in zip(moved, truth)), (moved, truth)
        # the gpt turn, the human region box and the answer are re-rendered alike
        g = boxes[0]
        text = f"[{g[0]}, {g[1]}, {g[2]}, {g[3]}]"
        assert out.conversations[0]["value"] == f"<image>\nWhat is in [{text}]? Then find the roof."
        assert out.conversations[1]["value"] == f"A roof. <ref>the roof</ref><box>[{text}]</box>"
        assert out.image_sizes == [(nw, nh)]
        changed += g != grid
    assert changed > 0
    assert (len(seen_sizes) == 2) == rot90  # quarter turns swap width and height


def test_exact_maps_on_the_grid():
    record = grounding_record([100, 200, 300, 400])
    aug = build_augmentation(flips=True, rot90=True, color_jitter=0.0, seed=0)
    allowed = set()
    for x1, y1, x2, y2 in [(100, 200, 300, 400)]:
        for _ in range(4):  # the 8 symmetries of the square, on the grid
            allowed |= {(x1, y1, x2, y2), (1000 - x2, y1, 1000 - x1, y2), (x1, 1000 - y2, x2, 1000 - y1),
                        (1000 - x2, 1000 - y2, 1000 - x1, 1000 - y1)}
            x1, y1, x2, y2 = y1, 1000 - x2, y2, 1000 - x1  # a quarter turn
    for k in range(20):
        _, out = aug(marked_image(), record, key=(1, k))
        (_, (box,)), = parse_ref_boxes(out.answer)
        assert tuple(box) in allowed


_SYMMETRIES = {"identity": lambda a: a, "hflip": lambda a: a[:, ::-1], "vflip": lambda a: a[::-1],
               "rot180": lambda a: a[::-1, ::-1], "rot90ccw": lambda a: np.rot90(a, 1), "rot90cw": lambda a: np.rot90(a, 3),
               "transpose": lambda a: a.transpose(1, 0, 2), "antitranspose": lambda a: np.rot90(a, 2).transpose(1, 0, 2)}


@pytest.mark.parametrize("flips,rot90,expected", [
    (True, False, {"identity", "hflip", "vflip", "rot180"}),
    (False, True, {"identity", "rot90ccw", "rot180", "rot90cw"}),
    (True, True, set(_SYMMETRIES)),
])
def test_every_symmetry_is_drawn(flips, rot90, expected):
    """Each flip is decided on its own (albumentations' Compose(seed=...) gave both flips one draw: no mirrors)."""
    a = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    record = {"images": ["x"], "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}
    aug = build_augmentation(flips=flips, rot90=rot90, color_jitter=0.0, seed=0)
    seen = []
    for k in range(160):
        n = np.asarray(aug(Image.fromarray(a), record, key=(0, k))[0])
        seen += [name for name, f in _SYMMETRIES.items() if f(a).shape == n.shape and np.array_equal(f(a), n)][:1]
    assert len(seen) == 160 and set(seen) == expected
    assert min(seen.count(name) for name in expected) > 160 / len(expected) / 3  # no symmetry starved
    again = [np.asarray(aug(Image.fromarray(a), record, key=(0, k))[0]).tobytes() for k in range(5)]
    assert again == [np.asarray(aug(Image.fromarray(a), record, key=(0, k))[0]).tobytes() for k in range(5)]


def test_deterministic_per_seed_and_key_and_colour_keeps_boxes():
    record = grounding_record(to_grid(BOX_PX, W, H))
    a = build_augmentation(color_jitter=0.3, seed=3)
    b = build_augmentation(color_jitter=0.3, seed=3)
    i1, r1 = a(marked_image(), record, key=(2, 5))
    i2, r2 = b(marked_image(), record, key=(2, 5))
    assert np.array_equal(np.asarray(i1), np.asarray(i2)) and r1 == r2
    outs = {np.asarray(a(marked_image(), record, key=(2, k))[0]).tobytes() for k in range(8)}
    assert len(outs) > 1
    assert derive_seed(3, (2, 5)) == derive_seed(3, (2, 5)) != derive_seed(4, (2, 5))
    colour_only = build_augmentation(flips=False, rot90=False, color_jitter=0.5, seed=1)
    img, out = colour_only(marked_image(), record, key=(0, 0))
    assert out.answer == record.answer and img.size == (W, H)


def test_records_left_alone():
    aug = build_augmentation(color_jitter=0.0, seed=0)
    record = grounding_record(to_grid(BOX_PX, W, H))
    image = marked_image()
    for rec in (
        Record(**{**record.__dict__, "meta": {"augment": False}}),  # opted out
        Record(**{**record.__dict__, "images": ["a.png", "b.png"]}),  # several images
        Record(**{**record.__dict__, "answer": "<box>[[500, 500, 100, 100]]</box>"}),  # unordered box
    ):
        got_image, got = aug(image, rec, key=(0, 0))
        assert got is rec and got_image is image
    off = build_augmentation(flips=False, rot90=False, color_jitter=0.0)
    assert off(image, record) == (image, record)


def test_degenerate_box_and_dict_records():
    rec = {"conversations": [{"from": "human", "value": "<image>\n[[0, 0, 0, 10]] and [[1, 2]]"},
                             {"from": "gpt", "value": "<box>[[0, 0, 0, 10]]</box> [[5, 5]]"}]}
    aug = build_augmentation(flips=True, rot90=False, color_jitter=0.0, seed=0)
    outs = {aug(marked_image(), rec, key=(0, k))[1]["conversations"][1]["value"] for k in range(12)}
    assert outs == {"<box>[[0, 0, 0, 10]]</box> [[5, 5]]", "<box>[[1000, 0, 1000, 10]]</box> [[5, 5]]",
                    "<box>[[0, 990, 0, 1000]]</box> [[5, 5]]", "<box>[[1000, 990, 1000, 1000]]</box> [[5, 5]]"}


def test_a_bare_box_in_an_answer_leaves_the_record_alone():
    """A bare [[x1, y1, x2, y2]] answer is not moved, so the image must not move either (it did, silently)."""
    a = np.zeros((100, 200, 3), np.uint8)
    a[:, :100] = 255  # the left half is white
    image = Image.fromarray(a)
    answer = {"images": ["x.png"], "conversations": [
        {"from": "human", "value": "<image>\nWhere is the white field? Answer with a box."},
        {"from": "gpt", "value": "[[0, 0, 500, 1000]]"}]}
    in_answer_field = {**answer, "conversations": answer["conversations"][:1], "answer": "[[0, 0, 500, 1000]]"}
    for rec in (answer, in_answer_field):
        for flips, rot90 in ((True, False), (False, True), (True, True)):
            aug = build_augmentation(flips=flips, rot90=rot90, color_jitter=0.0, seed=0)
            for k in range(8):
                got_image, got = aug(image, rec, key=(0, k))
                assert got is rec and got_image is image


@pytest.mark.parametrize("answer", [
    "<quad>[[100, 0, 500, 0, 500, 1000, 100, 1000]]</quad>", "<ref>field</ref><box>[[0, 0, 500]]</box>",
    "<box>[[0, 0, 500, 1000, 7]]</box>", "<box>(0,0),(500,1000)</box>",
])
def test_grounding_markup_whose_coordinates_cannot_move_leaves_the_record_alone(answer):
    """A <quad> polygon or a <box> of other than four values was not found as a box, so the pixels were flipped and
    turned while the coordinates in the answer stayed where they were: a wrong label, trained on."""
    a = np.zeros((100, 200, 3), np.uint8)
    a[:, :100] = 255
    image = Image.fromarray(a)
    rec = {"images": ["x.png"], "conversations": [
        {"from": "human", "value": "<image>\nPlease provide the bounding box of the white field."},
        {"from": "gpt", "value": answer}]}
    assert_left_alone(rec, image)


@pytest.mark.parametrize("turn,text", [
    ("gpt", "There is a white sedan to the front of the ego vehicle <c1,CAM_FRONT,[512.3,300]>."),
    ("gpt", "<c2,CAM_BACK,1088.3,497.5> is parked."),
    ("gpt", "(traffic light, green, [100,200,150,260])"),
    ("gpt", "The ship is at [100, 200, 300, 400]."),
    ("human", "<image>\nIs the object at [120, 300, 400, 560] a ship?"),
])
def test_coordinates_outside_the_moved_boxes_leave_the_record_alone(turn, text):
    """A DriveLM c-tag point or a single-bracket [x1, y1, x2, y2] (a box to the scorers) was not moved, yet the
    pixels were flipped and turned under it: the point or box then named the wrong place, trained on."""
    image = marked_image()
    question = "<image>\nWhat are the important objects in the current scene?"
    rec = {"images": ["x.png"], "conversations": [
        {"from": "human", "value": text if turn == "human" else question},
        {"from": "gpt", "value": "yes" if turn == "human" else text}]}
    assert_left_alone(rec, image)


@pytest.mark.parametrize("text,names", [
    ("<ref>The ship on the left</ref>", True), ("Where is the shape?\nA. right\nB. top", True),
    ("the LOWER-LEFT corner", True), ("the leftmost car", True), ("a north-eastern field", True),
    ("the road runs horizontally", True), ("turn it counter-clockwise", True), ("the westward runway", True),
    ("the ship in the middle", False), ("the centre of the image", False), ("a rooftop and a topology", False),
    ("How many buildings are there?", False), ("the Eastman plant", False),
])
def test_which_texts_name_a_direction(text, names):
    record = {"images": ["x.png"], "conversations": [{"from": "human", "value": f"<image>\n{text}"},
                                                     {"from": "gpt", "value": "yes"}]}
    aug = build_augmentation(color_jitter=0.2)
    assert aug.plan(record) == (("colour", NAMES_DIRECTION) if names else ("all", ""))


def test_text_naming_a_direction_keeps_its_orientation():
    """Flipping 'the ship on the left' trained a wrong answer: such records get colour jitter only."""
    grid = to_grid(BOX_PX, W, H)
    box = f"[[{grid[0]}, {grid[1]}, {grid[2]}, {grid[3]}]]"
    record = Record(source="dior", line=1, images=["x.png"], image_sizes=[(W, H)], task="grounding",
                    conversations=[{"from": "human", "value": "<image>\nWhere is <ref>the roof on the left</ref>?"},
                                   {"from": "gpt", "value": f"<ref>the roof on the left</ref><box>{box}</box>"}])
    in_options = Record(**{**record.__dict__, "conversations": [
        {"from": "human", "value": "<image>\nWhere is the roof?"}, {"from": "gpt", "value": "A"}],
        "options": ["A. upper left", "B. lower right"]})
    for rec in (record, in_options):
        for jitter in (0.0, 0.3):
            aug = build_augmentation(flips=True, rot90=True, color_jitter=jitter, seed=0)
            for k in range(12):
                image, out = aug(marked_image(), rec, key=(0, k))
                assert out is rec and image.size == (W, H) and white_bbox(image) == BOX_PX
                if jitter == 0:
                    assert np.array_equal(np.asarray(image), np.asarray(marked_image()))
    forced = Record(**{**record.__dict__, "meta": {"augment": True}})  # the record's own word wins
    aug = build_augmentation(flips=True, rot90=True, color_jitter=0.0, seed=0)
    assert aug.plan(forced) == ("all", "")
    assert any(aug(marked_image(), forced, key=(0, k))[1] != forced for k in range(8))


def test_a_stitched_six_camera_frame_is_never_flipped_or_turned():
    """A behaviour question on a stitched frame names no direction and holds no coordinates, yet a flip put
    CAM_FRONT_LEFT on the right of the layout every other driving sample teaches: colour jitter only."""
    from domains.driving.layout import STITCHED_SIZE

    turns = [{"from": "human", "value": "<image>\nPredict the behavior of the ego vehicle."},
             {"from": "gpt", "value": "The ego vehicle is going straight. The ego vehicle is driving slowly."}]
    by_meta = Record(source="drivelm", line=1, images=["f.png"], image_sizes=[(1344, 448)], task="drivelm",
                     conversations=turns, meta={"view_mode": "stitched", "augment": True})
    by_size = Record(source="mine", line=1, images=["f.png"], image_sizes=[STITCHED_SIZE], conversations=turns)
    as_dict = {"conversations": turns, "images": ["f.png"], "width": 2688, "height": 896}
    picture = Record(source="rs", line=1, images=["x.png"], image_sizes=[(W, H)], conversations=turns)
    frame = Image.fromarray(np.random.default_rng(0).integers(0, 256, (448, 1344, 3), np.uint8))
    for jitter, what in ((0.0, "none"), (0.3, "colour")):
        aug = build_augmentation(flips=True, rot90=True, color_jitter=jitter, seed=0)
        assert aug.plan(picture) == ("all", "")
        for rec in (by_meta, by_size, as_dict):
            assert aug.plan(rec) == (what, STITCHED)
        for k in range(8):
            image, out = aug(frame, by_meta, key=(0, k))
            assert out is by_meta and image.size == frame.size
            if jitter == 0:
                assert np.array_equal(np.asarray(image), np.asarray(frame))
    assert aug.summary({"d": [by_meta, picture]}) == (
        "augment (flips, 90-degree turns, colour jitter 0.3): 1 of 2 records flipped / turned; held back: "
        f"1 {STITCHED} (colour jitter only)")


def test_the_summary_plans_each_record_once(monkeypatch):
    """summary planned every record twice (counts, then camera pictures): twice the regex work on a large run."""
    turns = [{"from": "human", "value": "<image>\nWhat is here?"}, {"from": "gpt", "value": "A field."}]
    plain = Record(source="rs", line=1, images=["x.png"], image_sizes=[(W, H)], conversations=turns)
    camera = Record(**{**plain.__dict__, "meta": {"camera": "CAM_FRONT"}})
    left = Record(**{**plain.__dict__, "conversations": [turns[0], {"from": "gpt", "value": "On the left."}]})
    stitched = Record(**{**plain.__dict__, "image_sizes": [(2688, 896)]})
    records = {"rs": [plain, camera, left, stitched, Record(**{**plain.__dict__, "meta": {"augment": False}}),
                      Record(**{**plain.__dict__, "images": ["a.png", "b.png"]}), grounding_record([5, 5, 1, 1])],
               "replay": [Record(**{**plain.__dict__, "source": "replay"})]}
    aug = build_augmentation(flips=True, rot90=True, color_jitter=0.2, seed=0, general_sources={"replay"})
    calls = []
    plan = Augmentation.plan
    monkeypatch.setattr(Augmentation, "plan", lambda self, record: calls.append(record) or plan(self, record))
    assert aug.summary(records) == (
        "augment (flips, 90-degree turns, colour jitter 0.2): 1 of 8 records flipped / turned; held back: "
        f"1 {NAMES_DIRECTION} (colour jitter only), 1 {STITCHED} (colour jitter only), 1 {CAMERA_PICTURE} (colour "
        f"jitter only), 1 {GENERAL} (untouched), 1 {OPTED_OUT} (untouched), 1 with boxes that cannot be moved "
        f"(untouched); not augmented (one-image records only): 1 {SEVERAL_IMAGES}")
    assert len(calls) == 8 and {id(r) for r in calls} == {id(r) for rs in records.values() for r in rs}


def test_a_converters_multi_image_record_is_left_alone():
    """A converter's JSONL record lists its images under "image" (DriveLM multi: six cameras): it was read as one
    image and flipped like a single picture."""
    turns = [{"from": "human", "value": "CAM_FRONT: <image>\nCAM_BACK: <image>\nPredict the behavior of the ego "
                                         "vehicle."}, {"from": "gpt", "value": "The ego vehicle is not moving."}]
    multi = {"image": ["a.jpg", "b.jpg"], "width_list": [W, W], "height_list": [H, H], "conversations": turns}
    one = {"image": "a.jpg", "width": W, "height": H, "conversations": turns}
    aug = build_augmentation(flips=True, rot90=True, color_jitter=0.2, seed=0)
    assert aug.plan(multi) == ("none", SEVERAL_IMAGES) and aug.plan(one) == ("all", "")
    image, out = aug(marked_image(), multi, key=(0, 0))
    assert out is multi and np.array_equal(np.asarray(image), np.asarray(marked_image()))


def test_the_summary_says_multi_image_records_are_not_augmented_rather_than_held_back():
    """Multi-view DriveLM records and nuScenes frame sequences get no flip, turn or colour jitter (by design): the
    summary listed them among the records held back, "(untouched)" beside those whose text names a direction. They
    are now a clause of their own, text-only records apart from them."""
    turns = [{"from": "human", "value": "Frame-1: <image>\nFrame-2: <image>\nWhat moves?"},
             {"from": "gpt", "value": "A car."}]
    frames = Record(source="nuscenes", line=1, images=["a.jpg", "b.jpg"], image_sizes=[(W, H)] * 2,
                    conversations=turns)
    text_only = Record(source="nuscenes", line=2, images=[], image_sizes=[],
                       conversations=[{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}])
    one = Record(source="nuscenes", line=3, images=["a.jpg"], image_sizes=[(W, H)],
                 conversations=[{"from": "human", "value": "<image>\nWhat is here?"}, turns[1]])
    aug = build_augmentation(flips=True, rot90=True, color_jitter=0.2, seed=0)
    assert aug.plan(frames) == ("none", SEVERAL_IMAGES) and aug.plan(text_only) == ("none", NO_IMAGE)
    assert aug.summary({"nuscenes": [frames, frames, text_only, one]}) == (
        "augment (flips, 90-degree turns, colour jitter 0.2): 1 of 4 records flipped / turned; not augmented "
        f"(one-image records only): 2 {SEVERAL_IMAGES}, 1 {NO_IMAGE}")


def test_general_sources_are_left_alone_and_counted(tmp_path):
    marked_image().save(tmp_path / "x.png")
    rs = grounding_record(to_grid(BOX_PX, W, H))
    rs.images = [tmp_path / "x.png"]
    left = Record(**{**rs.__dict__, "conversations": [{"from": "human", "value": "<image>\nIs the roof on the left?"},
                                                       {"from": "gpt", "value": "yes"}], "answer": None})
    opted_out = Record(**{**rs.__dict__, "meta": {"augment": False}})
    replay = Record(**{**rs.__dict__, "source": "replay"})
    replay_forced = Record(**{**replay.__dict__, "meta": {"augment": True}})
    records = {"rs": [rs, left, opted_out], "replay": [replay, replay_forced]}
    aug = build_augment({"flips": True, "rot90": True, "color_jitter": 0.2}, seed=0, general_sources=["replay"])
    assert aug.plan(replay) == ("none", GENERAL) and aug.plan(replay_forced) == ("all", "")
    order = [("replay", 0)] * 8
    ds = SupervisedDataset(records, order, _EchoProcessor(), 512, SkipLog(), augment=aug)
    for i in range(8):  # replay data is trained as it is
        enc = ds[i]["encoded"]
        assert enc["conversation"] == replay.conversations
        assert np.array_equal(np.asarray(enc["images"][0]), np.asarray(marked_image()))
    assert aug.summary(records) == (
        "augment (flips, 90-degree turns, colour jitter 0.2): 2 of 5 records flipped / turned; held back: "
        f"1 {NAMES_DIRECTION} (colour jitter only), 1 {GENERAL} (untouched), 1 {OPTED_OUT} (untouched)")


def test_a_dict_record_gets_the_turned_image_size():
    # a converter's JSONL record carries width / height: a quarter turn swaps them, as for image_sizes
    rec = {**grounding_record(to_grid(BOX_PX, W, H)).__dict__, "width": W, "height": H}
    aug = build_augmentation(flips=False, rot90=True, color_jitter=0.0, seed=0)
    sizes = set()
    for k in range(8):
        image, out = aug(marked_image(), rec, key=(0, k))
        assert (out["width"], out["height"]) == image.size
        sizes.add(image.size)
    assert sizes == {(W, H), (H, W)}


@pytest.mark.parametrize("jitter", [2.0, float("nan"), "strong", None, [0.2]])
def test_bad_jitter(jitter):
    with pytest.raises(ValueError, match=r"^color_jitter must be a number in \[0, 1\], got "):
        build_augmentation(color_jitter=jitter)


# ------------------------------------------------------------------------------------------ recipe
MINIMAL = """\
data:
  sources:
    - {name: field, path: data/field/train.jsonl}
    - {name: general, path: data/general/train.jsonl, kind: general}
"""


def _recipe(tmp_path, extra=""):
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + extra)
    return path


def test_recipe_augment_off_by_default(tmp_path):
    recipe = load_recipe(_recipe(tmp_path))
    assert recipe.data.augment is None and build_augment(recipe.data.augment, recipe.seed) is None
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert load_recipe(again).data.augment is None


def test_recipe_augment_key(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, "  augment: {flips: true, rot90: false, color_jitter: 0.1}\n"))
    spec = recipe.data.augment
    assert (spec.flips, spec.rot90, spec.color_jitter) == (True, False, 0.1)
    aug = build_augment(spec, recipe.seed)
    assert isinstance(aug, Augmentation) and (aug.flips, aug.rot90, aug.color_jitter) == (True, False, 0.1)
    defaults = load_recipe(_recipe(tmp_path, "  augment: {}\n")).data.augment
    assert (defaults.flips, defaults.rot90, defaults.color_jitter) == (True, True, 0.2)
    assert build_augment({"flips": False, "rot90": False, "color_jitter": 0}) is None
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert load_recipe(again).data.augment == spec


@pytest.mark.parametrize("extra,needle", [
    ("  augment: {flip: true}\n", "flip"),
    ("  augment: {color_jitter: 1.5}\n", "color_jitter"),
    ("  augment: {rot90: maybe}\n", "rot90"),
])
def test_recipe_augment_errors(tmp_path, extra, needle):
    with pytest.raises(RecipeError) as info:
        load_recipe(_recipe(tmp_path, extra))
    assert needle in str(info.value) and "augment" in str(info.value)


# ------------------------------------------------------------------------------------------ dataset hook
class _EchoProcessor:
    """Stands in for the processor: returns what it was given."""

    tiling = TilingConfig()

    def __call__(self, conversation, images, **kwargs):
        return {"conversation": conversation, "images": images}


def test_dataset_applies_augmentation_per_epoch_and_position(tmp_path):
    marked_image().save(tmp_path / "x.png")
    record = grounding_record(to_grid(BOX_PX, W, H))
    record.images = [tmp_path / "x.png"]
    records = {"rs": [record]}
    order = [("rs", 0)] * 6
    plain = SupervisedDataset(records, order, _EchoProcessor(), 512, SkipLog())
    assert all(plain[i]["encoded"]["conversation"] == record.conversations for i in range(6))

    aug = build_augmentation(color_jitter=0.0, seed=11)
    ds = SupervisedDataset(records, order, _EchoProcessor(), 512, SkipLog(), augment=aug, epoch=3)
    first = [ds[i]["encoded"] for i in range(6)]
    again = SupervisedDataset(records, order, _EchoProcessor(), 512, SkipLog(), augment=aug, epoch=3)
    for i, enc in enumerate(first):  # a pure function of (seed, epoch, position): resume sees the same data
        enc2 = again[i]["encoded"]
        assert enc["conversation"] == enc2["conversation"]
        assert np.array_equal(np.asarray(enc["images"][0]), np.asarray(enc2["images"][0]))
        _, expected_rec = aug(marked_image(), record, key=(3, i))
        assert enc["conversation"] == expected_rec.conversations
        assert ds[i]["record"].answer == expected_rec.answer
    assert len({str(e["conversation"]) for e in first}) > 1
    ds.set_order(order, epoch=4)
    assert ds.epoch == 4
    assert record.answer == grounding_record(to_grid(BOX_PX, W, H)).answer  # the stored record is untouched


def test_the_augmentation_lives_beside_the_shared_box_helpers():
    """It serves every domain (driving frames, camera pictures, replay) but lived in domains.remote_sensing."""
    import importlib.util

    assert type(build_augment({})).__module__ == "domains.augment"
    assert importlib.util.find_spec("domains.remote_sensing.augment") is None


def test_a_dict_spec_is_read_as_the_recipe_section_is(tmp_path):
    """{"color_jitter": 0.1} switched flips and turns off (a recipe's augment: {color_jitter: 0.1} leaves them on),
    and a misspelt {"flip": true} switched everything off without a word."""
    from adapt.data.samples import DataError

    aug = build_augment({"color_jitter": 0.1})
    assert (aug.flips, aug.rot90, aug.color_jitter) == (True, True, 0.1)
    recipe = load_recipe(_recipe(tmp_path, "  augment: {color_jitter: 0.1}\n"))
    assert repr(build_augment(recipe.data.augment)) == repr(aug)
    with pytest.raises(DataError, match=r"data.augment .*flip: Extra inputs are not permitted"):
        build_augment({"flip": True})
    with pytest.raises(DataError, match="color_jitter"):
        build_augment({"color_jitter": 2})
    for spec in (True, "flips", ["flips"]):  # an AttributeError on model_dump before
        with pytest.raises(DataError, match=r"data.augment: .* not a mapping"):
            build_augment(spec)


def test_a_record_whose_moved_boxes_run_too_long_is_trained_as_read_not_dropped(tmp_path):
    """A moved box's digits can take more tokens ([[5, ...]] -> [[995, ...]]): a record measure() had let in, one
    augmented visit over max_seq_length dropped it for the whole run and counted it as bad."""
    from model.processor import SampleTooLongError

    marked_image().save(tmp_path / "x.png")
    record = grounding_record(to_grid(BOX_PX, W, H))
    record.images = [tmp_path / "x.png"]

    class Tight(_EchoProcessor):
        def __call__(self, conversation, images, **kwargs):
            if conversation != record.conversations:
                raise SampleTooLongError("longer than max_length")
            return super().__call__(conversation, images, **kwargs)

    skips = SkipLog()
    aug = build_augmentation(flips=True, rot90=False, color_jitter=0.0, seed=11)
    ds = SupervisedDataset({"rs": [record]}, [("rs", 0)] * 6, Tight(), 512, skips, augment=aug)
    moved = [i for i in range(6) if aug(marked_image(), record, key=(0, i))[1] is not record]
    assert moved
    for i in range(6):
        item = ds[i]
        assert item is not None and item["encoded"]["conversation"] == record.conversations
        assert white_bbox(item["encoded"]["images"][0]) == BOX_PX  # the pixels as read, with the text as read
    assert skips.count() == 0 and ds.dropped_entry(moved[0]) is None


def test_a_camera_picture_is_never_flipped_or_turned():
    """A nuScenes camera picture (meta.camera) was flipped left-right: "the car on the left" and CAM_FRONT_LEFT then
    named the wrong side, a wrong answer trained on. Like a stitched frame it gets colour jitter only, even when its
    meta asks for augmentation, and the summary counts it."""
    turns = [{"from": "human", "value": "<image>\nPlease provide the bounding box of <ref>the truck</ref>."},
             {"from": "gpt", "value": "<ref>the truck</ref><box>[[100, 500, 300, 900]]</box>"}]
    record = Record(source="nuscenes", line=1, images=["c.jpg"], image_sizes=[(W, H)], task="grounding",
                    conversations=turns, meta={"camera": "CAM_FRONT"})
    forced = Record(**{**record.__dict__, "meta": {"camera": "CAM_FRONT_LEFT", "augment": True}})
    picture = np.zeros((H, W, 3), np.uint8)
    picture[: H // 2, : W // 4] = 255  # a white patch at the top left
    for jitter, what in ((0.0, "none"), (0.3, "colour")):
        for flips, rot90 in ((True, False), (False, True), (True, True)):
            aug = build_augmentation(flips=flips, rot90=rot90, color_jitter=jitter, seed=0)
            for rec in (record, forced):
                assert aug.plan(rec) == (what, CAMERA_PICTURE)
                for k in range(16):
                    image, out = aug(Image.fromarray(picture), rec, key=(0, k))
                    assert out is rec and image.size == (W, H)
                    pixels = np.asarray(image).astype(int)
                    assert pixels[: H // 2, : W // 4].min() > pixels[:, W // 4:].max(), k  # the patch stays put
    assert aug.summary({"d": [record, forced, grounding_record([100, 200, 300, 400])]}) == (
        "augment (flips, 90-degree turns, colour jitter 0.3): 1 of 3 records flipped / turned; held back: "
        f"2 {CAMERA_PICTURE} (colour jitter only)")


def test_readme_names_the_direction_words_the_augmentation_holds_back():
    """README's list of direction words is the augmentation's: each holds a record back, and none is missing."""
    readme = " ".join(Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8").split())
    listed = re.search(r"names a direction — (.*?) and their forms", readme).group(1).split(", ")
    assert all(_DIRECTION.fullmatch(word) for word in listed), listed
    stems = {"left", "right", "top", "bottom", "upper", "lower", "above", "below", "north", "south", "east", "west",
             "horizontal", "vertical", "upward", "downward", "clockwise"}  # the alternatives of _DIRECTION
    assert set(listed) == stems
