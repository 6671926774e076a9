"""DOTA presence questions: "yes" per category kept in a chip, seeded and capped "no" where a category is surely
absent, never a guess (a cut or difficult object, an image with a bad label line)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from domains.base import DomainError
from domains.remote_sensing.dota import convert_dota
from tests.test_rs_dota import LABELS, by_id, make_tree, rows

# make_tree's 300 x 200 scene in 128 px chips stepping by 100 (columns 0, 100, 172; rows 0, 72): each chip's
# categories with a kept box ("yes"), and those of which nothing lies in it (a "no" may be asked)
YES = {"x0_y0/small-vehicle", "x100_y0/plane", "x100_y0/ship", "x172_y0/plane", "x100_y72/ship"}
NO = {"x0_y0/plane", "x100_y0/small-vehicle", "x172_y0/ship", "x172_y0/small-vehicle", "x0_y72/plane",
      "x0_y72/small-vehicle", "x100_y72/plane", "x100_y72/small-vehicle", "x172_y72/plane", "x172_y72/ship",
      "x172_y72/small-vehicle"}  # not x0_y0/ship nor x0_y72/ship: a ship is cut there below min_keep


def presence(out, split: str = "all") -> dict[str, str]:
    """``"x0_y0/plane" -> "yes" / "no"`` of the presence records."""
    return {r["id"].split("/", 2)[2].rsplit("/", 1)[0]: r["answer"] for r in rows(out, split)
            if r["meta"].get("question_type") == "presence"}


def test_yes_and_only_sure_no(tmp_path):
    src, out = make_tree(tmp_path / "dota"), tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, negatives=100, progress=False)
    asked = presence(out)
    assert {k for k, a in asked.items() if a == "yes"} == YES
    assert {k for k, a in asked.items() if a == "no"} == NO
    rec = by_id(rows(out))["dota/P0001/x172_y72/ship/presence"]
    assert rec["task"] == "rsvqa" and rec["meta"]["question_type"] == "presence" and rec["meta"]["name"] == "ship"
    assert rec["conversations"][0]["value"].startswith("<image>\nIs there a ship in the image?\n")
    assert report.total_skipped == 0
    # chip (172, 72) holds no object: written for its negatives, the source's pixels at its window
    with Image.open(out / rec["image"]) as chip, Image.open(src / "images" / "P0001.png") as whole:
        assert np.array_equal(np.asarray(chip.convert("RGB")), np.asarray(whole.crop((172, 72, 300, 200))))


def test_negatives_capped_seeded_and_reproducible(tmp_path):
    src = make_tree(tmp_path / "dota")
    convert_dota(src, tmp_path / "a", size=128, overlap=28, progress=False)
    answers = list(presence(tmp_path / "a").values())
    assert answers.count("no") == answers.count("yes") == 5  # default negatives=1.0: no more "no" than "yes"
    convert_dota(src, tmp_path / "b", size=128, overlap=28, progress=False)
    assert (tmp_path / "a" / "dota_all.jsonl").read_bytes() == (tmp_path / "b" / "dota_all.jsonl").read_bytes()
    convert_dota(src, tmp_path / "c", size=128, overlap=28, negatives=0.4, progress=False)
    assert list(presence(tmp_path / "c").values()).count("no") == 2  # floor(0.4 * 5)
    convert_dota(src, tmp_path / "d", size=128, overlap=28, negatives=0, progress=False)
    assert "no" not in presence(tmp_path / "d").values()
    convert_dota(src, tmp_path / "e", size=128, overlap=28, negatives=1e308, progress=False)  # inf * 5: every one
    assert {k for k, a in presence(tmp_path / "e").items() if a == "no"} == NO
    picks = set()
    for seed in range(6):
        convert_dota(src, tmp_path / f"s{seed}", size=128, overlap=28, seed=seed, progress=False)
        picks.add(frozenset(k for k, a in presence(tmp_path / f"s{seed}").items() if a == "no"))
    assert len(picks) > 1 and all(p <= NO and len(p) == 5 for p in picks)


def test_no_negatives_on_an_image_with_a_bad_label_line(tmp_path):
    src = make_tree(tmp_path / "dota", LABELS + "1 2 3 ship 0\n")
    make_tree(tmp_path / "dota", LABELS + "400 10 430 10 430 40 400 40 ship 0\n", name="P0002")  # off the image
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, negatives=100, progress=False)
    assert report.skipped == {"malformed label line": 1, "box outside image": 1}
    asked = {r["id"]: r["answer"] for r in rows(tmp_path / "out") if r["meta"].get("question_type") == "presence"}
    assert asked and all(a == "yes" for a in asked.values())


def test_difficult_left_out_is_never_denied(tmp_path):
    src, out = make_tree(tmp_path / "dota"), tmp_path / "out"
    convert_dota(src, out, size=128, overlap=28, difficult=False, negatives=100, progress=False)
    asked = presence(out)
    assert "plane" not in {k.split("/")[1] for k in asked}  # only a difficult plane: not in the vocabulary
    labels = LABELS + "20 150 40 150 40 170 20 170 plane 0\n"  # a plain plane in chip (0, 72)
    convert_dota(make_tree(tmp_path / "two", labels), tmp_path / "out2", size=128, overlap=28, difficult=False,
                 negatives=100, progress=False)
    asked = presence(tmp_path / "out2")
    assert asked["x0_y72/plane"] == "yes" and asked["x0_y0/plane"] == "no"
    assert "x100_y0/plane" not in asked and "x172_y0/plane" not in asked  # the difficult plane is there


def test_presence_alone(tmp_path):
    convert_dota(make_tree(tmp_path / "dota"), tmp_path / "out", size=128, overlap=28, tasks=["presence"],
                 progress=False)
    assert {r["meta"]["question_type"] for r in rows(tmp_path / "out")} == {"presence"}


@pytest.mark.parametrize("options, message", [
    ({"negatives": -1}, "negatives"), ({"negatives": float("nan")}, "negatives"),
    ({"negatives": float("inf")}, "negatives"), ({"negatives": "all"}, "negatives"),
    ({"seed": 1.5}, "seed"), ({"tasks": ["presence", "caption"]}, "tasks"),
])
def test_bad_presence_options_refused(tmp_path, options, message):
    with pytest.raises(DomainError, match=message):
        convert_dota(make_tree(tmp_path / "dota"), tmp_path / "out", progress=False, **options)


def test_every_option_is_described_in_convert_help():
    """`adapt convert -h` listed DOTA's options with no word on what they do (only `progress` had one)."""
    import inspect

    from adapt.cli import option_docs

    params = set(inspect.signature(convert_dota).parameters) - {"src", "out"}
    docs = option_docs(convert_dota)
    assert params <= set(docs), params - set(docs)
    assert "images_dir" in docs and "," not in docs["seed"]


def test_an_before_a_vowel(tmp_path):
    labels = "10 20 50 20 50 60 10 60 airport 0\n60 20 90 20 90 60 60 60 plane 0\n"
    convert_dota(make_tree(tmp_path / "dota", labels, size=(100, 100)), tmp_path / "out", progress=False)
    asked = {r["meta"]["name"]: r["conversations"][0]["value"] for r in rows(tmp_path / "out")
             if r["meta"].get("question_type") == "presence"}
    assert asked["airport"].startswith("<image>\nIs there an airport in the image?")
    assert asked["plane"].startswith("<image>\nIs there a plane in the image?")
