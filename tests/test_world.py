"""The synthetic quick-start data: general shapes world and land-cover specialist domain."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domains.general import (
    COLORS,
    GENERAL_TASKS,
    GROUNDING_OBJECTS,
    LANDCOVER_CLASSES,
    SHAPES,
    box_to_grid,
    generate_general,
    generate_landcover,
    landcover_samples,
)

MC_TAIL = "\nAnswer with the option's letter from the given choices directly."
GROUNDING_HEAD = "<image>\nPlease provide the bounding box coordinate of the region this sentence describes: <ref>"
BOX = re.compile(r"^<ref>(.+?)</ref><box>\[\[(\d+), (\d+), (\d+), (\d+)\]\]</box>$")

# small sizes that still give every class / family enough samples for the centroid check
GENERAL_N = {"n_train": 320, "n_test": 160}
LANDCOVER_N = {"n_train": 240, "n_test": 120}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def general(tmp_path_factory) -> dict[str, Path]:
    return generate_general(tmp_path_factory.mktemp("general"), **GENERAL_N)


@pytest.fixture(scope="module")
def landcover(tmp_path_factory) -> dict[str, Path]:
    return generate_landcover(tmp_path_factory.mktemp("landcover"), **LANDCOVER_N)


def records(out: dict[str, Path], split: str) -> list[dict]:
    return read_jsonl(out[split])


# ------------------------------------------------------------------------------------------------ format
def test_box_to_grid():
    assert box_to_grid((0, 0, 112, 112), 112, 112) == [0, 0, 1000, 1000]
    assert box_to_grid((28, 14, 56, 70), 112, 112) == [250, 125, 500, 625]
    assert box_to_grid((10, 10, 20, 20), 200, 100) == [50, 100, 100, 200]
    assert box_to_grid((1, 1, 2, 2), 3, 3) == [333, 333, 667, 667]
    assert box_to_grid((-3, 0, 500, 50), 100, 100) == [0, 0, 1000, 500]  # clamped to the grid


def test_box_to_grid_is_the_shared_to_grid():
    """box_to_grid repeated to_grid's rounding but clamped each value alone: a box wholly outside became a zero-area
    grid box on the border, a reversed one an unordered box, and a zero-width one a box no parser keeps."""
    from domains.boxes import to_grid

    for box, size in ((30, 10, 30, 40), 100), ((120.0, 5.0, 110.0, 9.0), 100), ((0, 0, 112, 112), 112):
        try:
            expected = to_grid(box, size, size)
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                box_to_grid(box, size, size)
        else:
            assert box_to_grid(box, size, size) == expected
    assert box_to_grid((30, 10, 30, 40), 100, 100) == [300, 100, 301, 400]
    with pytest.raises(ValueError, match="lies outside the 100x100 image"):
        box_to_grid((120, 5, 130, 9), 100, 100)


def test_returned_paths(general, landcover):
    for out in (general, landcover):
        assert set(out) == {"train", "test", "root"}
        assert out["train"] == out["root"] / "train.jsonl" and out["test"] == out["root"] / "test.jsonl"
    assert len(records(general, "train")) == GENERAL_N["n_train"]
    assert len(records(landcover, "test")) == LANDCOVER_N["n_test"]


def check_mc(rec: dict) -> None:
    human, gpt = rec["conversations"]
    assert rec["task"] == "mc"
    assert rec["answer"] in "ABCD" and len(rec["answer"]) == 1 and gpt["value"] == rec["answer"]
    opts = rec["options"]
    assert [o[:3] for o in opts] == ["A. ", "B. ", "C. ", "D. "]
    texts = [o[3:] for o in opts]
    assert len(set(texts)) == 4, "options must be distinct"
    assert opts["ABCD".index(rec["answer"])] == f"{rec['answer']}. {rec['label']}", "options contain the answer"
    body = human["value"]
    assert body.startswith("<image>\n") and body.endswith(MC_TAIL)
    question, *lines = body[len("<image>\n"):-len(MC_TAIL)].split("\n")
    assert question.endswith("?") and lines == opts


def check_grounding(rec: dict) -> list[int]:
    human, gpt = rec["conversations"]
    assert rec["task"] == "grounding" and "options" not in rec
    phrase = rec["label"]
    assert human["value"] == f"{GROUNDING_HEAD}{phrase}</ref>"
    assert gpt["value"] == rec["answer"]
    m = BOX.match(rec["answer"])
    assert m and m.group(1) == phrase
    x1, y1, x2, y2 = (int(v) for v in m.groups()[1:])
    assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000
    return [x1, y1, x2, y2]


@pytest.mark.parametrize("domain", ["general", "landcover"])
def test_records_well_formed(domain, request):
    out = request.getfixturevalue(domain)
    root = out["root"]
    for split in ("train", "test"):
        recs = records(out, split)
        assert len({r["id"] for r in recs}) == len(recs)
        for rec in recs:
            assert set(rec) >= {"id", "image", "conversations", "task", "answer"}
            human, gpt = rec["conversations"]
            assert (human["from"], gpt["from"]) == ("human", "gpt")
            assert human["value"].count("<image>") == 1 and human["value"].startswith("<image>\n")
            assert "<image>" not in gpt["value"]
            assert not Path(rec["image"]).is_absolute() and rec["image"].startswith("images/")
            path = root / rec["image"]
            assert path.is_file()
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "RGB"
                assert im.size == (rec["width"], rec["height"]) == (112, 112)
            if rec["task"] == "mc":
                check_mc(rec)
            else:
                assert domain == "landcover"
                check_grounding(rec)


def test_option_pools(general, landcover):
    pools = {"color": set(COLORS), "shape": set(SHAPES), "count": {"1", "2", "3", "4"},
             "position": {"left", "right", "top", "bottom"}}
    for rec in records(general, "train"):
        assert {o[3:] for o in rec["options"]} <= pools[rec["family"]]
    for rec in records(landcover, "train"):
        if rec["task"] == "mc":
            assert rec["conversations"][0]["value"].startswith("<image>\nWhat is the land-cover class of this scene?\n")
            assert {o[3:] for o in rec["options"]} <= set(LANDCOVER_CLASSES)


# ------------------------------------------------------------------------------------------- determinism
def test_deterministic_byte_identical(tmp_path):
    for gen, kw in ((generate_general, {"n_train": 40, "n_test": 12}),
                    (generate_landcover, {"n_train": 40, "n_test": 12})):
        a, b = tmp_path / f"{gen.__name__}_a", tmp_path / f"{gen.__name__}_b"
        gen(a, **kw)
        gen(b, **kw)
        files_a, files_b = tree_bytes(a), tree_bytes(b)
        assert len(files_a) == 40 + 12 + 3  # images, the two splits and manifest.json
        assert files_a == files_b
        # the same call again in the same place: unchanged; a smaller call leaves no stale images behind
        gen(a, **kw)
        assert tree_bytes(a) == files_a
        gen(a, n_train=10, n_test=5)
        assert len(list((a / "images").iterdir())) == 15
        assert {k: v for k, v in tree_bytes(a).items() if k.startswith("images/train_0000")} == {
            k: v for k, v in files_a.items() if k in {f"images/train_{i:05d}.png" for i in range(10)}}
        # another seed: other data
        c = tmp_path / f"{gen.__name__}_c"
        gen(c, seed=7, **kw)
        assert tree_bytes(c)["images/train_00000.png"] != files_a["images/train_00000.png"]


def test_an_image_left_as_a_symlink_is_replaced_not_written_through(tmp_path):
    """A PNG was saved by opening its path, so an images/ entry left as a symlink (or hard link) had the new pixels
    written into its target, a file outside the output folder. The new image now replaces the entry."""
    outside = tmp_path / "keep.png"
    outside.write_bytes(b"not the generator's")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "train_00000.png").symlink_to(outside)
    generate_general(out, n_train=2, n_test=1, progress=False)
    assert outside.read_bytes() == b"not the generator's"
    image = out / "images" / "train_00000.png"
    assert not image.is_symlink() and Image.open(image).size == (112, 112)
    assert not list(out.rglob("*.part"))


def test_the_same_seed_draws_the_same_pixels_on_every_machine(monkeypatch):
    """Scenes used float32 np.sin and BLAS products, whose last bits depend on the CPU (SIMD routine, BLAS kernel),
    so a few rounded pixels (here 2 in 70 land-cover images) differed between machines. Only IEEE arithmetic is used
    now: the pixels below are the same everywhere (a deliberate change of the generators updates the digests)."""
    import hashlib

    from domains.general.world import general_samples

    def refuse(*args, **kwargs):
        raise AssertionError("a CPU-dependent sine drew pixels")

    monkeypatch.setattr(np, "sin", refuse)
    monkeypatch.setattr(np, "cos", refuse)
    digests = {}
    for name, samples in (("general", general_samples("train", 24, image_size=64)),
                          ("landcover", landcover_samples("train", 70))):
        digest = hashlib.sha256()
        for sample in samples:
            digest.update(sample.image.tobytes())
        digests[name] = digest.hexdigest()[:16]
    assert digests == {"general": "0039997ac652e89a", "landcover": "15282a29561c9ef6"}


def test_train_and_test_share_no_images(general, landcover):
    for out in (general, landcover):
        root = out["root"]
        names = {split: {r["image"] for r in records(out, split)} for split in ("train", "test")}
        assert not names["train"] & names["test"]
        digests = {split: {hashlib.sha256(np.asarray(Image.open(root / n)).tobytes()).hexdigest() for n in names[split]}
                   for split in names}
        assert not digests["train"] & digests["test"]
        assert len(digests["train"]) == len(names["train"]), "images within a split are distinct too"


# -------------------------------------------------------------------------------------------- balance
def test_coverage_and_balance(general, landcover):
    gen = records(general, "train")
    fams = Counter(r["family"] for r in gen)
    assert set(fams) == set(GENERAL_TASKS) and len(GENERAL_TASKS) >= 4
    assert max(fams.values()) - min(fams.values()) <= 1
    for fam in GENERAL_TASKS:  # the correct letter is balanced within every family
        letters = Counter(r["answer"] for r in gen if r["family"] == fam)
        assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1
    labels = {fam: Counter(r["label"] for r in gen if r["family"] == fam) for fam in GENERAL_TASKS}
    assert set(labels["color"]) == set(COLORS) and set(labels["shape"]) == set(SHAPES)
    assert set(labels["count"]) == {"1", "2", "3", "4"} and set(labels["position"]) == {"left", "right", "top", "bottom"}

    for split in ("train", "test"):
        lc = records(landcover, split)
        mc = [r for r in lc if r["task"] == "mc"]
        ground = [r for r in lc if r["task"] == "grounding"]
        assert abs(len(ground) / len(lc) - 0.3) < 0.01
        letters = Counter(r["answer"] for r in mc)
        assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1
        classes = Counter(r["label"] for r in mc)
        assert set(classes) == set(LANDCOVER_CLASSES) and max(classes.values()) - min(classes.values()) <= 1
    # the letter is not tied to the class (a class-to-letter shortcut would make the options pointless)
    mc = [r for r in records(landcover, "train") if r["task"] == "mc"]
    per_class = Counter((r["label"], r["answer"]) for r in mc)
    assert all(len({a for (c, a) in per_class if c == cls}) >= 3 for cls in LANDCOVER_CLASSES)
    objects = Counter(r["label"] for r in records(landcover, "train") if r["task"] == "grounding")
    assert len(objects) == len(GROUNDING_OBJECTS) and max(objects.values()) - min(objects.values()) <= 1


# ------------------------------------------------------------------------------------------- grounding
def assert_box_matches(mask: np.ndarray, grid: list[int], width: int, height: int) -> None:
    """The object's pixels lie inside the box mapped back to pixels (within 1 px), and the box is tight."""
    x1, y1, x2, y2 = grid[0] / 1000 * width, grid[1] / 1000 * height, grid[2] / 1000 * width, grid[3] / 1000 * height
    ys, xs = np.nonzero(mask)
    assert xs.size > 0
    # pixel (x, y) covers [x, x + 1) x [y, y + 1)
    assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1
    assert ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
    assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1


def test_grounding_box_matches_drawn_object(landcover):
    root = landcover["root"]
    recs = {r["id"]: r for r in records(landcover, "test")}
    seen = 0
    for sample in landcover_samples("test", LANDCOVER_N["n_test"], seed=1, image_size=112):
        rec = recs[sample.record["id"]]
        assert rec == sample.record
        png = np.asarray(Image.open(root / rec["image"]).convert("RGB"))
        assert np.array_equal(png, sample.image)
        if rec["task"] != "grounding":
            assert sample.mask is None
            continue
        seen += 1
        obj, cls = sample.extra["object"], sample.extra["class"]
        assert obj == "airplane" or (obj == "boat") == (cls == "water"), "boats on water, buildings on land"
        grid = check_grounding(rec)
        assert_box_matches(sample.mask, grid, 112, 112)
        ys, xs = np.nonzero(sample.mask)
        w, h = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
        assert 12 <= w <= 44 and 12 <= h <= 44
    assert seen == round(0.3 * LANDCOVER_N["n_test"])


def test_grounding_positions_on_a_coarse_lattice(landcover):
    """Objects sit on a 4x4 lattice of centres with a few sizes, so a tiny model can learn the boxes."""
    lattice = [round(c / 112 * 1000) for c in (22, 45, 67, 90)]
    cells = Counter()
    for rec in records(landcover, "train"):
        if rec["task"] != "grounding":
            continue
        x1, y1, x2, y2 = check_grounding(rec)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        col = min(range(4), key=lambda k: abs(lattice[k] - cx))
        row = min(range(4), key=lambda k: abs(lattice[k] - cy))
        assert abs(lattice[col] - cx) <= 30 and abs(lattice[row] - cy) <= 30
        assert 28 / 112 * 1000 - 20 <= x2 - x1 <= 42 / 112 * 1000 + 20
        cells[row, col] += 1
    assert len(cells) == 16 and max(cells.values()) - min(cells.values()) <= 2


def test_other_image_size(tmp_path):
    out = generate_landcover(tmp_path / "lc224", n_train=20, n_test=10, image_size=224)
    samples = list(landcover_samples("train", 20, seed=1, image_size=224))
    for rec, sample in zip(records(out, "train"), samples):
        with Image.open(out["root"] / rec["image"]) as im:
            assert im.size == (224, 224) == (rec["width"], rec["height"])
        if rec["task"] == "grounding":
            assert_box_matches(sample.mask, check_grounding(rec), 224, 224)
    gen = generate_general(tmp_path / "g224", n_train=8, n_test=4, image_size=224)
    with Image.open(gen["root"] / records(gen, "test")[0]["image"]) as im:
        assert im.size == (224, 224)


# ------------------------------------------------------------------------------------------ learnability
def features(root: Path, recs: list[dict]) -> np.ndarray:
    """8x8 block means of each image (the vision tower sees an 8x8 patch grid at 112 px)."""
    out = []
    for rec in recs:
        a = np.asarray(Image.open(root / rec["image"]).convert("RGB"), dtype=np.float32)
        out.append(a.reshape(8, 14, 8, 14, 3).mean(axis=(1, 3)).ravel())
    return np.stack(out)


def nearest_centroid_accuracy(out: dict[str, Path], keep) -> float:
    train = [r for r in records(out, "train") if keep(r)]
    test = [r for r in records(out, "test") if keep(r)]
    x, y = features(out["root"], train), np.array([r["label"] for r in train])
    classes = sorted(set(y))
    centroids = np.stack([x[y == c].mean(axis=0) for c in classes])
    xt, yt = features(out["root"], test), np.array([r["label"] for r in test])
    pred = np.array(classes)[((xt[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)]
    return float((pred == yt).mean())


def test_tasks_are_visually_learnable(general, landcover):
    """A nearest-centroid classifier on 8x8 thumbnails already beats chance by far: the labels follow the pixels."""
    lc = nearest_centroid_accuracy(landcover, lambda r: r["task"] == "mc")
    colour = nearest_centroid_accuracy(general, lambda r: r["family"] == "color")
    position = nearest_centroid_accuracy(general, lambda r: r["family"] == "position")
    assert lc >= 0.6, lc  # chance: 1/8
    assert colour >= 0.6, colour  # chance: 1/8
    assert position >= 0.6, position  # chance: 1/4


def test_label_style_lists_candidates_and_answers_with_the_label(tmp_path):
    from domains.general.world import generate_landcover

    paths = generate_landcover(tmp_path / "lc", n_train=20, n_test=2, answer_style="label")
    records = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    mc = [r for r in records if r["task"] == "mc"]
    assert mc and all(r["answer"] == r["label"] == r["conversations"][1]["value"] for r in mc)
    for r in mc:
        question = r["conversations"][0]["value"]
        assert question.startswith("<image>\n") and f"Options: {', '.join(r['options'])}." in question
        assert r["answer"] in r["options"] and not any(o[:3] in ("A. ", "B. ") for o in r["options"])
    grounding = [r for r in records if r["task"] == "grounding"]
    assert grounding and all("<box>[[" in r["answer"] for r in grounding)
    with pytest.raises(ValueError, match="answer_style"):
        generate_landcover(tmp_path / "x", n_train=1, n_test=1, answer_style="letters")


def test_writing_shows_a_bar_over_the_images_unless_told_not_to(tmp_path, capsys):
    """`adapt quickstart --data-only` wrote thousands of images for a quarter of a minute without a sign."""
    from domains.general.world import generate_general, generate_landcover

    generate_landcover(tmp_path / "lc", n_train=3, n_test=2)
    err = capsys.readouterr().err
    assert "synthetic land cover" in err and "5/5" in err
    generate_general(tmp_path / "g", n_train=3, n_test=2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("generate", [generate_general, generate_landcover])
@pytest.mark.parametrize("option, value, words", [
    ("image_size", 16, "image_size must be a whole number of pixels in 32..1024, got 16"),
    ("image_size", 100_000, "in 32..1024, got 100000"),  # refused before a 100000x100000 canvas is allocated
    ("image_size", 0, "in 32..1024"),
    ("seed", -1, "seed must be a whole number >= 0, got -1"),
    ("n_train", -3, "n_train must be a whole number >= 0, got -3"),
    ("n_test", 2.5, "n_test must be a whole number >= 0"),
])
def test_unusable_arguments_are_refused_before_anything_is_drawn(tmp_path, generate, option, value, words):
    """A too-small image_size or a negative seed ended in numpy's 'high - low < 0' / 'expected non-negative integer'
    tracebacks, a huge image_size in a MemoryError after allocating, a negative count in an empty file; each is
    refused now, naming the option, before any file is written."""
    from domains.base import DomainError

    with pytest.raises(DomainError, match=re.escape(words)):
        generate(tmp_path / "out", **{"n_train": 2, "n_test": 1, "progress": False, option: value})
    assert not (tmp_path / "out").exists()
    out = generate(tmp_path / "small", n_train=40, n_test=4, image_size=32, progress=False)  # the smallest works
    assert len(records(out, "train")) == 40
