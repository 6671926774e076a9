"""DOTA converter: chips as the devkit cuts them, exact boxes after clipping, counts, bad label lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapt.cli import main
from domains.base import DomainError, get_domain
from domains.remote_sensing import dota
from domains.remote_sensing.dota import chip_starts, convert_dota

# 300 x 200 image, chips of 128 stepping by 100: columns 0, 100, 172; rows 0, 72
LABELS = """imagesource:GoogleEarth
gsd:0.146343590398
10 20 50 20 50 60 10 60 small-vehicle 0
200 10 230 40 200 70 170 40 plane 1
110 100 150 100 150 140 110 140 ship 0
"""


def make_tree(root: Path, labels: str = LABELS, name: str = "P0001", size=(300, 200)) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    w, h = size
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(w)[None, :] % 256
    pixels[..., 1] = np.arange(h)[:, None] % 256
    Image.fromarray(pixels).save(root / "images" / f"{name}.png")
    (root / "labelTxt" / f"{name}.txt").write_text(labels, encoding="utf-8")
    return root


def rows(out: Path, split: str = "all") -> list[dict]:
    return [json.loads(line) for line in (out / f"dota_{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def by_id(recs: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in recs}


def test_chip_starts_follow_the_devkit():
    assert chip_starts(300, 128, 100) == [0, 100, 172]
    assert chip_starts(200, 128, 100) == [0, 72]
    assert chip_starts(100, 128, 100) == [0]
    assert chip_starts(4000, 1024, 824) == [0, 824, 1648, 2472, 2976]


def test_exact_boxes_after_chipping(tmp_path):
    src, out = make_tree(tmp_path / "dota"), tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, tasks=("grounding", "count"), progress=False)
    recs = by_id(rows(out))
    # wholly inside chip (0, 0): its bounds, on the chip's grid
    sv = recs["dota/P0001/x0_y0/small-vehicle/grounding"]
    assert sv["answer"] == "<ref>small vehicle</ref><box>[[78, 156, 391, 469]]</box>"
    assert sv["conversations"][0]["value"].endswith("<ref>small vehicle</ref>")
    assert sv["meta"]["bbox"] == [[10, 20, 50, 60]] and sv["meta"]["gsd"] == pytest.approx(0.146343590398)
    assert sv["meta"]["imagesource"] == "GoogleEarth" and sv["meta"]["lines"] == [3]
    # the rotated plane (a diamond) loses a 4 px^2 tip to each of two chips: kept in both, bounds of the clipped part
    assert recs["dota/P0001/x100_y0/plane/grounding"]["meta"]["bbox"] == [[70, 10, 128, 70]]
    assert recs["dota/P0001/x172_y0/plane/grounding"]["meta"]["bbox"] == [[0, 10, 58, 70]]
    assert recs["dota/P0001/x172_y0/plane/grounding"]["meta"]["difficult"] == [True]
    # the ship: exactly 70 % inside chip (100, 0) -> kept, clipped; wholly inside chip (100, 72)
    assert recs["dota/P0001/x100_y0/ship/grounding"]["meta"]["bbox"] == [[10, 100, 50, 128]]
    assert recs["dota/P0001/x100_y72/ship/grounding"]["meta"]["bbox"] == [[10, 28, 50, 68]]
    assert recs["dota/P0001/x100_y72/ship/grounding"]["answer"] == \
        "<ref>ship</ref><box>[[78, 219, 391, 531]]</box>"
    # 45 % of it in chip (0, 72), nothing else there: that chip is neither recorded nor written
    assert not any("x0_y72" in k for k in recs)
    chips = sorted(p.name for p in (out / "images" / "dota").rglob("*.png"))
    assert chips == ["P0001_x0_y0_128x128.png", "P0001_x100_y0_128x128.png",
                     "P0001_x100_y72_128x128.png", "P0001_x172_y0_128x128.png"]
    # the chip is the source's pixels at its window
    with Image.open(out / recs["dota/P0001/x100_y72/ship/grounding"]["image"]) as chip:
        with Image.open(src / "images" / "P0001.png") as whole:
            assert np.array_equal(np.asarray(chip.convert("RGB")), np.asarray(whole.crop((100, 72, 228, 200))))
    assert report.total_skipped == 0 and report.written == len(recs)


def test_count_questions_only_when_the_count_is_certain(tmp_path):
    src, out = make_tree(tmp_path / "dota"), tmp_path / "out"
    convert_dota(src, out, size=128, overlap=28, progress=False)
    recs = by_id(rows(out))
    count = recs["dota/P0001/x0_y0/small-vehicle/count"]
    assert count["task"] == "rsvqa" and count["answer"] == "1"
    assert count["conversations"][0]["value"].startswith("<image>\nHow many small vehicles are there in the image?")
    assert count["meta"]["question_type"] == "count" and count["meta"]["bucket"] == "1-100"
    assert recs["dota/P0001/x100_y0/ship/count"]["answer"] == "1"

    # a second ship 45 % inside chip (100, 72): seen there in part, not counted -> no count question for ships
    labels = LABELS + "210 150 260 150 260 190 210 190 ship 0\n"
    convert_dota(make_tree(tmp_path / "two", labels), tmp_path / "out2", size=128, overlap=28, progress=False)
    recs = by_id(rows(tmp_path / "out2"))
    assert recs["dota/P0001/x100_y72/ship/grounding"]["meta"]["bbox"] == [[10, 28, 50, 68]]
    assert "dota/P0001/x100_y72/ship/count" not in recs
    assert recs["dota/P0001/x172_y72/ship/count"]["answer"] == "1"


def test_several_boxes_of_a_category_share_one_box_tag_in_reading_order(tmp_path):
    labels = "60 60 80 60 80 80 60 80 small-vehicle 0\n10 10 20 10 20 20 10 20 small-vehicle 0\n"
    src, out = make_tree(tmp_path / "dota", labels, size=(100, 100)), tmp_path / "out"
    convert_dota(src, out, progress=False)  # smaller than a chip: one chip of the image's own size
    (rec,) = [r for r in rows(out) if r["task"] == "grounding"]
    assert rec["width"] == rec["height"] == 100
    assert rec["answer"] == "<ref>small vehicle</ref><box>[[100, 100, 200, 200], [600, 600, 800, 800]]</box>"
    assert [r["answer"] for r in rows(out) if r["meta"].get("question_type") == "count"] == ["2"]


def test_difficult_objects_left_out_on_request(tmp_path):
    src, out = make_tree(tmp_path / "dota"), tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, difficult=False, progress=False)
    recs = by_id(rows(out))
    assert not any("/plane/" in k for k in recs)
    assert report.skipped == {"difficult object": 1}
    assert "P0001.txt:4" in report.examples["difficult object"][0]


def test_malformed_lines_are_skipped_and_counted_with_file_and_line(tmp_path):
    labels = LABELS + ("1 2 3 small-vehicle 0\n"
                       "a 0 10 0 10 10 0 10 plane 0\n"
                       "0 0 10 0 10 10 0 10 plane 5\n"
                       "0 0 10 0 20 0 30 0 plane 0\n"
                       "0 0 10 0 10 nan 0 10 plane 0\n"
                       "\n"
                       "0 0 10 0 10 10 0 10 plane\n")  # difficult absent: 0, as in the devkit
    src, out = make_tree(tmp_path / "dota", labels), tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, progress=False)
    assert report.skipped == {"malformed label line": 5}
    text = " ".join(report.examples["malformed label line"])
    assert "P0001.txt:6" in text and "got 5 fields" in text and "P0001.txt:8" in text and "difficult must be 0, 1 or 2 (a cut object), got '5'" in text
    recs = by_id(rows(out))
    assert recs["dota/P0001/x0_y0/plane/grounding"]["meta"]["lines"] == [12]


def test_bad_objects_and_files_are_reported(tmp_path):
    labels = ("500 500 520 500 520 520 500 520 ship 0\n"  # outside the 300 x 200 image
              "290 10 320 10 320 40 290 40 ship 0\n"  # two thirds outside: skipped
              "280 10 310 10 310 40 280 40 ship 0\n"  # a third outside: clipped, warned
              "0 0 200 0 200 200 0 200 harbor 0\n")  # larger than any 128 chip
    src = make_tree(tmp_path / "dota", labels)
    (src / "labelTxt" / "P0002.txt").write_text("0 0 10 0 10 10 0 10 plane 0\n", encoding="utf-8")  # no image
    (src / "labelTxt" / "P0003.txt").write_text("gsd:null\n", encoding="utf-8")
    (src / "images" / "P0003.png").write_bytes(b"not a png")
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, progress=False)
    assert report.skipped == {"box outside image": 2, "object in no chip": 1, "missing image": 1,
                              "unreadable image": 1}
    assert report.warnings == {"box clipped to image": 1}
    assert "P0001.txt:4" in report.examples["object in no chip"][0]
    (rec,) = [r for r in rows(tmp_path / "out") if r["task"] == "grounding"]
    assert rec["meta"]["bbox"] == [[108, 10, 128, 40]]  # clipped to the image, then to chip x172


def test_rerun_rewrites_and_decodes_nothing(tmp_path, monkeypatch):
    src, out = make_tree(tmp_path / "dota"), tmp_path / "out"
    convert_dota(src, out, size=128, overlap=28, progress=False)
    state = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}

    def refuse(*_a, **_k):
        raise AssertionError("decoded the image although every chip was fresh")

    monkeypatch.setattr(dota, "_chip_pngs", refuse)
    convert_dota(src, out, size=128, overlap=28, progress=False)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == state


def test_split_folders_and_pixel_cap(tmp_path):
    make_tree(tmp_path / "dota" / "train")
    make_tree(tmp_path / "dota" / "val", name="P0009")
    report = convert_dota(tmp_path / "dota", tmp_path / "out", size=128, overlap=28, progress=False)
    assert set(report.outputs) == {"train", "val"}
    assert all(r["meta"]["split"] == "val" for r in rows(tmp_path / "out", "val"))
    report = convert_dota(tmp_path / "dota", tmp_path / "out2", max_pixels=1000, progress=False)
    assert report.skipped == {"image too large": 2} and "max_pixels" in report.examples["image too large"][0]


@pytest.mark.parametrize("options, message", [
    ({"size": 0}, "size"), ({"overlap": 128, "size": 128}, "overlap"), ({"min_keep": 0}, "min_keep"),
    ({"tasks": ["detect"]}, "tasks"), ({"tasks": "count"}, "tasks"),
    ({"difficult": "exclude"}, "^difficult must be true or false"), ({"difficult": None}, "difficult"),
])
def test_bad_options_refused(tmp_path, options, message):
    with pytest.raises(DomainError, match=message):
        convert_dota(make_tree(tmp_path / "dota"), tmp_path / "out", progress=False, **options)


def test_not_a_dota_folder(tmp_path):
    with pytest.raises(DomainError, match="labelTxt"):
        convert_dota(tmp_path, tmp_path / "out", progress=False)


def test_registered_and_runs_from_the_cli(tmp_path):
    assert "dota" in get_domain("remote_sensing").converters
    src = make_tree(tmp_path / "dota")
    rc = main(["convert", "remote_sensing", "dota", "--src", str(src), "--out", str(tmp_path / "out"),
               "--option", "size=128", "--option", "overlap=28"])
    assert rc == 0 and rows(tmp_path / "out")


def test_a_missing_category_is_not_read_as_one(tmp_path):
    labels = "0 0 10 0 10 10 0 10 1\n0 0 10 0 10 10 0 10 <ref>x</ref> 0\n0 0 10 0 10 10 0 10 plane 0\n"
    report = convert_dota(make_tree(tmp_path / "dota", labels), tmp_path / "out", progress=False)
    assert report.skipped == {"malformed label line": 2}
    assert "got '1'" in report.examples["malformed label line"][0]
    assert {r["meta"]["name"] for r in rows(tmp_path / "out")} == {"plane"}


def test_label_file_linked_from_outside_is_refused(tmp_path):
    src = make_tree(tmp_path / "dota")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n", encoding="utf-8")
    (src / "labelTxt" / "P0002.txt").symlink_to(secret)
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, progress=False)
    assert report.skipped == {"path escapes data root": 1}
    assert "root:x" not in report.table()


def test_split_named_after_the_folder_and_stale_chips_removed(tmp_path):
    src, out = make_tree(tmp_path / "DOTA" / "val"), tmp_path / "out"
    convert_dota(src, out, size=128, overlap=28, progress=False)
    assert (out / "dota_val.jsonl").is_file()
    old = sorted((out / "images" / "dota").rglob("*.png"))
    report = convert_dota(src, out, progress=False)  # one 300 x 200 chip now
    assert sorted(p.name for p in (out / "images" / "dota").rglob("*.png")) == ["val_P0001_x0_y0_300x200.png"]
    assert sorted(report.removed) == old


def test_exif_oriented_image_turns_its_boxes(tmp_path):
    src = make_tree(tmp_path / "dota", "10 20 50 20 50 60 10 60 ship 0\n")
    path = src / "images" / "P0001.png"
    with Image.open(path) as im:
        exif = im.getexif()
        exif[0x0112] = 6  # stored 300 x 200, shown turned 90 degrees clockwise: 200 x 300
        im.save(path, exif=exif)
    report = convert_dota(src, tmp_path / "out", progress=False)
    assert report.warnings == {"boxes turned with an EXIF-oriented image": 1}
    (rec,) = [r for r in rows(tmp_path / "out") if r["task"] == "grounding"]
    assert (rec["width"], rec["height"]) == (200, 300)
    assert rec["meta"]["bbox"] == [[140, 10, 180, 50]]


def test_an_unreadable_label_file_is_named_as_such(tmp_path, monkeypatch):
    src = make_tree(tmp_path / "dota")
    real = Path.read_bytes

    def denied(self):
        if self.name == "P0001.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, progress=False)
    assert report.skipped == {"unreadable label file": 1}
    assert "P0001.txt" in report.examples["unreadable label file"][0]


def test_label_files_in_upper_case_are_read_and_other_files_named(tmp_path):
    """Only lower-case ``*.txt`` was listed: ``P0001.TXT`` (and any other file in labelTxt/) was ignored without a
    word."""
    src = make_tree(tmp_path / "dota")
    (src / "labelTxt" / "P0001.txt").rename(src / "labelTxt" / "P0001.TXT")
    (src / "labelTxt" / "notes.json").write_text("{}", encoding="utf-8")
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, progress=False)
    assert report.written > 0 and any(r["meta"]["label_file"] == "labelTxt/P0001.TXT" for r in rows(tmp_path / "out"))
    assert report.skipped == {"not a .txt label file": 1}, report.table()
    assert "notes.json" in report.examples["not a .txt label file"][0]


def test_report_names_inputs_relative_to_src(tmp_path):
    """With --src given as a full path, the report named every skipped input and where a symlink led in full."""
    src = make_tree(tmp_path / "dota")
    (tmp_path / "secret.txt").write_text("1 1 9 1 9 9 1 9 plane 0\n", encoding="utf-8")
    (src / "labelTxt" / "P0002.txt").symlink_to(tmp_path / "secret.txt")
    (src / "labelTxt" / "P0003.txt").write_text("1 1 9 1 9 9 1 9 plane 0\n", encoding="utf-8")
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, progress=False)
    assert report.skipped == {"path escapes data root": 1, "missing image": 1}, report.table()
    assert report.examples["missing image"] == ["labelTxt/P0003.txt: no image P0003.* in images (any of "
                                                + report.examples["missing image"][0].split("(any of ", 1)[1]]
    table = report.table().replace(f"`{src}` → `{tmp_path / 'out'}`", "")
    assert str(tmp_path) not in table, table
