"""Remote-sensing converters on synthetic data in the public layouts: records, idempotence, bad input, boxes."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.converted import all_records, records
from tests.deps import require

rasterio = require("rasterio")
from PIL import Image

from domains.base import DomainError, get_domain
from domains.boxes import parse_ref_boxes
from domains.remote_sensing.convert import (
    convert_classification,
    convert_dior_rsvg,
    convert_rsvqa,
    normalize_rsvqa_answer,
    rsvqa_bucket,
)
from domains.remote_sensing.raster import read_rgb
from domains.remote_sensing.synthetic import generate


# --------------------------------------------------------------------------------------------- helpers
def check_wellformed(recs: list[dict], out: Path) -> None:
    assert recs
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids))
    for r in recs:
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in r["conversations"]) == 1
        assert gpt["value"] == r["answer"] and r["answer"]
        img = out / r["image"]
        assert img.is_file() and img.suffix == ".png"
        with Image.open(img) as im:
            assert im.size == (r["width"], r["height"]) and im.mode == "RGB"


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(root).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_idempotent(convert, src: Path, out: Path, **kw):
    before_src = tree_state(src)
    first = convert(src, out, **kw)
    state = tree_state(out)
    second = convert(src, out, **kw)
    assert tree_state(out) == state  # same bytes, nothing rewritten (mtimes unchanged)
    assert second.written == first.written and second.skipped == first.skipped
    assert tree_state(src) == before_src  # the source is never modified
    return first


def write_tif(path: Path, data: np.ndarray, nodata=None) -> Path:
    from affine import Affine
    from rasterio.crs import CRS

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": CRS.from_epsg(32633),
               "transform": Affine(10, 0, 500000, 0, -10, 5000000), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def zero_size_tiff(path: Path) -> Path:
    """A TIFF whose ImageWidth / ImageLength are 0 (rasterio cannot write one)."""
    tags = [(256, 3, 0), (257, 3, 0), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8), (277, 3, 1),
            (278, 3, 1), (279, 4, 0)]
    ifd = struct.pack("<H", len(tags))
    for tag, typ, val in tags:
        ifd += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0))
    return path


# --------------------------------------------------------------------------------------------- generator
def test_synthetic_layouts_and_determinism(tmp_path):
    a = generate("ucmerced", tmp_path / "a", n=2, seed=3)
    b = generate("ucmerced", tmp_path / "b", n=2, seed=3)
    assert {k: v[0] for k, v in tree_state(a).items()} == {k: v[0] for k, v in tree_state(b).items()}
    tif = a / "forest" / "forest00.tif"
    with rasterio.open(tif) as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg(), src.nodata) == (3, "uint8", 32633, 0)
        assert src.transform.a == 0.3
    e = generate("eurosat_ms", tmp_path / "e", n=1, classes=["Forest", "SeaLake"])
    with rasterio.open(e / "SeaLake" / "SeaLake_1.tif") as src:
        assert (src.count, src.dtypes[0]) == (13, "uint16")
    r = generate("rsvqa_hr", tmp_path / "r", n=5)
    assert (r / "USGS_split_train_questions.json").exists() and (r / "Data" / "0.tif").exists()
    q = json.loads((r / "USGS_split_train_questions.json").read_text())["questions"][0]
    assert {"id", "img_id", "type", "question", "answers_ids", "active"} <= set(q)
    d = generate("dior_rsvg", tmp_path / "d", n=2)
    assert (d / "JPEGImages" / "00001.jpg").exists() and (d / "Annotations" / "00001.xml").exists()
    assert "<description>" in (d / "Annotations" / "00001.xml").read_text()
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        generate("nope", tmp_path / "x")


def test_plugin_registers_converters_and_synthetic(tmp_path):
    plugin = get_domain("remote_sensing")
    assert {"ucmerced", "aid", "nwpu", "eurosat", "eurosat_ms", "rsvqa", "dior_rsvg"} <= set(plugin.converters)
    made = plugin.synthetic(tmp_path / "syn", kinds=["ucmerced"], n=1)
    report = plugin.convert("ucmerced", made["ucmerced"], tmp_path / "out", test_fraction=0)
    assert report.written == 5 and report.total_skipped == 0


# --------------------------------------------------------------------------------------------- classification
def test_classification_ucmerced(tmp_path):
    src = generate("ucmerced", tmp_path / "UCMerced_LandUse" / "Images", n=3)
    out = tmp_path / "out"
    report = assert_idempotent(convert_classification, tmp_path / "UCMerced_LandUse", out, dataset="ucmerced")
    recs = all_records(report)
    assert report.written == len(recs) == 15 and report.total_skipped == 0
    assert set(report.outputs) == {"train", "test"}
    check_wellformed(recs, out)
    r = recs[0]
    assert r["task"] == "classification" and r["answer"] in r["options"] == r["options"]
    assert r["options"] == sorted(["agricultural", "forest", "river", "denseresidential", "chaparral"])
    assert "Classify the image from the following classes: " in r["conversations"][0]["value"]
    for opt in r["options"]:
        assert opt in r["conversations"][0]["value"]
    assert {x["answer"] for x in recs} == set(r["options"])
    # uint8 RGB is taken as is (no stretch)
    tif = src / "forest" / "forest00.tif"
    with rasterio.open(tif) as ds:
        raw = ds.read().transpose(1, 2, 0)
    png = next(x for x in recs if x["meta"]["source"] == "forest/forest00.tif")
    assert np.array_equal(np.asarray(Image.open(out / png["image"])), raw)


def test_classification_eurosat_13_band_rgb(tmp_path):
    src = generate("eurosat_ms", tmp_path / "EuroSAT_MS", n=2, classes=["Forest", "River", "Highway"])
    out = tmp_path / "out"
    report = assert_idempotent(convert_classification, src, out, dataset="eurosat_ms", test_fraction=0)
    recs = all_records(report)
    check_wellformed(recs, out)
    assert report.written == 6
    assert {r["answer"] for r in recs} == {"forest", "river", "highway"}
    tif = src / "River" / "River_1.tif"
    rec = next(r for r in recs if r["meta"]["source"] == "River/River_1.tif")
    got = np.asarray(Image.open(out / rec["image"]))
    expect = np.asarray(read_rgb(tif, bands=[4, 3, 2], stretch="fixed:0,3000")[0])  # B04, B03, B02 in file order
    wrong = np.asarray(read_rgb(tif, bands=[1, 2, 3], stretch="fixed:0,3000")[0])
    assert np.array_equal(got, expect) and not np.array_equal(got, wrong)
    # the archive as it unzips: the class folders six wrapper folders down
    nested = tmp_path / "EuroSATallBands" / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    shutil.copytree(src, nested)
    deep = convert_classification(tmp_path / "EuroSATallBands", tmp_path / "nested", dataset="eurosat_ms",
                                  test_fraction=0)
    assert deep.written == 6 and deep.total_skipped == 0
    assert {r["answer"] for r in all_records(deep)} == {"forest", "river", "highway"}
    # explicit bands are honoured
    report2 = convert_classification(src, tmp_path / "out2", dataset="eurosat_ms", bands=[8, 4, 3], test_fraction=0)
    rec2 = next(r for r in all_records(report2) if r["meta"]["source"] == "River/River_1.tif")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out2" / rec2["image"])),
                          np.asarray(read_rgb(tif, bands=[8, 4, 3])[0]))


def test_classification_bad_inputs_skipped(tmp_path):
    src = generate("ucmerced", tmp_path / "src", n=2)
    forest = src / "forest"
    blob = (forest / "forest00.tif").read_bytes()
    (forest / "truncated.tif").write_bytes(blob[: len(blob) // 2])
    (forest / "corrupt.tif").write_bytes(b"II*\x00" + b"\x13" * 200)
    zero_size_tiff(forest / "zero.tif")
    write_tif(forest / "nodata.tif", np.zeros((3, 8, 8), np.uint8), nodata=0)
    write_tif(forest / "complex.tif", np.ones((1, 8, 8), np.complex64))
    (src / "emptyclass").mkdir()
    (src / "emptyclass" / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    report = assert_idempotent(convert_classification, src, out, dataset="ucmerced", test_fraction=0)
    assert report.written == 10  # every good image converted
    assert report.skipped == {"unreadable image": 2, "zero-size raster": 1, "all nodata": 1,
                              "unsupported data type": 1, "empty class folder": 1}
    examples = " ".join(e for ex in report.examples.values() for e in ex)
    for name in ("truncated.tif", "corrupt.tif", "zero.tif", "nodata.tif", "complex.tif", "emptyclass"):
        assert name in examples
    assert "complex64" in examples and "nodata" in examples
    assert "emptyclass" not in records(report.outputs["train"])[0]["conversations"][0]["value"]
    assert "skipped: all nodata" in report.table()
    check_wellformed(all_records(report), out)


def test_classification_resumes(tmp_path):
    src = generate("ucmerced", tmp_path / "src", n=2)
    out = tmp_path / "out"
    full = convert_classification(src, out, test_fraction=0)
    jsonl = full.outputs["train"].read_bytes()
    pngs = sorted(out.rglob("*.png"))
    for p in pngs[::2]:  # as if a run had been stopped half-way
        p.unlink()
    full.outputs["train"].unlink()
    kept = {p: p.stat().st_mtime_ns for p in pngs[1::2]}
    again = convert_classification(src, out, test_fraction=0)
    assert again.outputs["train"].read_bytes() == jsonl
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # done work is not redone
    assert all(p.exists() for p in pngs)
    assert not list(out.rglob("*.part"))


# --------------------------------------------------------------------------------------------- RSVQA
@pytest.mark.parametrize("kind", ["rsvqa_lr", "rsvqa_hr"])
def test_rsvqa(tmp_path, kind):
    src = generate(kind, tmp_path / kind, n=5)
    out = tmp_path / "out"
    report = assert_idempotent(convert_rsvqa, src, out)
    assert set(report.outputs) == {"train", "val", "test"}
    recs = all_records(report)
    check_wellformed(recs, out)
    assert report.written == 20 and report.skipped == {"inactive question": 3}
    types = {r["meta"]["question_type"] for r in recs}
    assert types == ({"presence", "comp", "count", "area"} if kind == "rsvqa_hr"
                     else {"presence", "comp", "count", "rural_urban"})
    for r in recs:
        assert r["task"] == "rsvqa" and r["id"].startswith(kind)
        assert r["conversations"][0]["value"].endswith("\nAnswer the question using a single word or phrase.")
        if r["meta"]["question_type"] in ("presence", "comp"):
            assert r["answer"] in ("yes", "no")
        if r["meta"]["question_type"] == "area":
            assert r["answer"].endswith("m2") and r["meta"]["bucket"]
    # answers agree with the source files
    qs = {q["id"]: q for q in json.loads((src / ("USGS" if kind == "rsvqa_hr" else "LR")
                                                .__add__("_split_train_questions.json")).read_text())["questions"]}
    ans = {a["id"]: a for a in json.loads((src / ("USGS" if kind == "rsvqa_hr" else "LR")
                                                 .__add__("_split_train_answers.json")).read_text())["answers"]}
    for r in records(report.outputs["train"]):
        q = qs[r["meta"]["question_id"]]
        assert r["answer"] == ans[q["answers_ids"][0]]["answer"].lower()
    # images are written once per tile, shared by its questions
    assert len({r["image"] for r in recs}) == 5


def test_rsvqa_answer_normalisation():
    assert normalize_rsvqa_answer(" Yes ") == "yes"
    assert normalize_rsvqa_answer("1 234 m2", "area") == "1234m2"
    assert normalize_rsvqa_answer("Urban", "rural_urban") == "urban"
    assert normalize_rsvqa_answer(12, "count") == "12"
    assert [rsvqa_bucket(a) for a in ("0", "7", "101m2", "5000m2", "yes")] == ["0", "1-100", "101-1000", ">1000", None]


def test_rsvqa_count_with_thousands_separators_is_read_as_its_number():
    """A count "1,234" was kept as written: no bucket, and trained in a form no other count has."""
    assert normalize_rsvqa_answer("1,234", "count") == "1234"
    assert normalize_rsvqa_answer("12,345,678", "count") == "12345678"
    assert normalize_rsvqa_answer("1 234", "count") == "1234"
    assert rsvqa_bucket(normalize_rsvqa_answer("1,234", "count")) == ">1000"
    assert normalize_rsvqa_answer("12,5", "count") == "12,5"  # no thousands grouping: left as written


def test_rsvqa_question_types_are_read_in_any_case(tmp_path):
    """A "Count" / "Area" question got no bucket and its answer was not normalised, while the metrics lower-case the
    type and score it as a count / area."""
    assert normalize_rsvqa_answer("1,234", "Count") == "1234"
    src = generate("rsvqa_hr", tmp_path / "src", n=5)
    path = src / "USGS_split_train_questions.json"
    data = json.loads(path.read_text())
    for q in data["questions"]:
        q["type"] = str(q.get("type", "")).capitalize()
    path.write_text(json.dumps(data))
    recs = records(convert_rsvqa(src, tmp_path / "out").outputs["train"])
    counted = [r for r in recs if r["meta"]["question_type"] in ("Count", "Area")]
    assert counted and all(r["meta"]["bucket"] for r in counted)


def test_rsvqa_hr_area_classes_get_their_bucket(tmp_path):
    """RSVQA-HR area answers stored as the data set's classes ("between 10m2 and 100m2", "more than 1000m2") got
    no bucket (None in meta), while the LR-style "<n>m2" did."""
    classes = {"0m2": "0", "between 0m2 and 10m2": "1-100", "Between 10m2 and 100m2": "1-100",
               "between 100m2 and 1000m2": "101-1000", "more than 1000m2": ">1000"}
    assert {a: rsvqa_bucket(normalize_rsvqa_answer(a, "area")) for a in classes} == classes
    assert rsvqa_bucket("more than 100m2") is None  # across two buckets
    src = generate("rsvqa_hr", tmp_path / "src", n=5)
    qs = json.loads((src / "USGS_split_train_questions.json").read_text())["questions"]
    path = src / "USGS_split_train_answers.json"
    data = json.loads(path.read_text())
    area_answers = {aid for q in qs if q.get("type") == "area" for aid in q["answers_ids"][:1]}
    labels = list(classes)
    for k, a in enumerate(x for x in data["answers"] if x["id"] in area_answers):
        a["answer"] = labels[k % len(labels)]
    path.write_text(json.dumps(data))
    recs = records(convert_rsvqa(src, tmp_path / "out").outputs["train"])
    area = [r for r in recs if r["meta"]["question_type"] == "area"]
    want = {a.lower(): b for a, b in classes.items()}
    assert len({r["answer"] for r in area}) > 1 and all(r["meta"]["bucket"] == want[r["answer"]] for r in area)


def test_rsvqa_area_with_a_decimal_comma_keeps_its_fraction():
    """Every comma of an area answer was dropped: "1,5 m2" (a decimal comma) became "15m2"."""
    assert normalize_rsvqa_answer("1,5 m2", "area") == "1.5m2"
    assert normalize_rsvqa_answer("1 234,56 m2", "area") == "1234.56m2"
    assert normalize_rsvqa_answer("1,234,5 m2", "area") == "1234.5m2"
    assert rsvqa_bucket(normalize_rsvqa_answer("1,5 m2", "area")) == "1-100"
    # a group of 3 digits after a comma is thousands
    assert normalize_rsvqa_answer("1,234 m2", "area") == "1234m2"
    assert normalize_rsvqa_answer("12,345,678 m2", "area") == "12345678m2"
    assert normalize_rsvqa_answer("1,234.5 m2", "area") == "1234.5m2"


def test_rsvqa_splits_given_as_a_string_are_names(tmp_path):
    """splits="test_phili" (as --option splits=test_phili gives it) was searched as text, so the "test" split, a
    part of it, was converted too."""
    src = generate("rsvqa_hr", tmp_path / "src", n=5)
    for kind in ("questions", "answers", "images"):
        shutil.copy(src / f"USGS_split_test_{kind}.json", src / f"USGS_split_test_phili_{kind}.json")
    assert set(convert_rsvqa(src, tmp_path / "a", splits="test_phili").outputs) == {"test_phili"}
    assert set(convert_rsvqa(src, tmp_path / "b", splits="train, test").outputs) == {"train", "test"}
    assert set(convert_rsvqa(src, tmp_path / "c", splits=["test_phili"]).outputs) == {"test_phili"}


def test_rsvqa_count_in_words_keeps_its_spaces():
    """Every space of a count answer was removed, whatever it said: "between 1 and 10" became "between1and10"."""
    assert normalize_rsvqa_answer("Between 1 and 10", "count") == "between 1 and 10"
    assert normalize_rsvqa_answer("more than 1000", "count") == "more than 1000"
    assert normalize_rsvqa_answer(" 1 234 ", "count") == "1234"


def test_rsvqa_bad_inputs(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "src", n=5)
    (src / "LR_split_val_answers.json").write_text('{"answers": [ {"id": 1,')  # malformed JSON
    blob = (src / "Images_LR" / "0.tif").read_bytes()
    (src / "Images_LR" / "0.tif").chmod(0o644)
    (src / "Images_LR" / "0.tif").write_bytes(blob[: len(blob) // 3])  # truncated tile: its 4 questions go
    (src / "Images_LR" / "1.tif").unlink()  # missing tile
    out = tmp_path / "out"
    report = assert_idempotent(convert_rsvqa, src, out)
    assert report.skipped["malformed JSON"] == 1
    assert "LR_split_val_answers.json" in " ".join(report.examples["malformed JSON"])
    assert report.skipped["unreadable image"] == 1 and report.skipped["missing image"] == 1
    assert report.skipped["image skipped"] == 8
    assert set(report.outputs) == {"train", "test"}
    assert report.written == 4 + 4  # train: 3 tiles, 2 bad; test: 1 tile
    check_wellformed(all_records(report), out)


# --------------------------------------------------------------------------------------------- DIOR-RSVG
def test_dior_rsvg(tmp_path):
    src = generate("dior_rsvg", tmp_path / "DIOR_RSVG", n=4)
    out = tmp_path / "out"
    report = assert_idempotent(convert_dior_rsvg, src, out)
    recs = all_records(report)
    check_wellformed(recs, out)
    assert report.total_skipped == 0
    n_objects = sum(len(p.read_text().split()) for p in (src / f"{s}.txt" for s in ("train", "val", "test")))
    assert report.written == 2 * n_objects
    for r in recs:
        m = r["meta"]
        if r["task"] == "grounding":
            q = r["conversations"][0]["value"]
            assert q == ("<image>\nPlease provide the bounding box coordinate of the region this sentence describes: "
                         f"<ref>{m['phrase']}</ref>")
            [(phrase, [grid])] = parse_ref_boxes(r["answer"])
            assert phrase == m["phrase"] and grid == m["grid_box"]
            assert r["answer"] == f"<ref>{phrase}</ref><box>[[{', '.join(map(str, grid))}]]</box>"
        else:
            assert r["task"] == "region"
            assert r["conversations"][0]["value"] == "<image>\nWhat object is in this location [[{}, {}, {}, {}]]?".format(
                *m["grid_box"])
            assert r["answer"] == m["name"]
        # box on the grid = round(v / W * 1000)
        W, H = m["size"]
        assert m["grid_box"] == [round(v / s * 1000) for v, s in zip(m["bbox"], (W, H, W, H))]
    # splits follow the global object indices in train/val/test.txt
    for split, path in report.outputs.items():
        listed = {int(x) for x in (src / f"{split}.txt").read_text().split()}
        assert {r["meta"]["object_index"] for r in records(path)} == listed


@pytest.mark.parametrize("resize", [None, 37, 100, 448])
def test_dior_box_round_trip_through_resize(tmp_path, resize):
    src = generate("dior_rsvg", tmp_path / "src", n=3, size=96)
    out = tmp_path / "out"
    report = convert_dior_rsvg(src, out, resize=resize)
    recs = [r for r in all_records(report) if r["task"] == "grounding"]
    assert recs
    for r in recs:
        W, H = r["width"], r["height"]
        if resize:
            assert max(W, H) == resize
        with Image.open(out / r["image"]) as im:
            assert im.size == (W, H)
        [(_, [box])] = parse_ref_boxes(r["answer"], W, H)  # pixels in the output image
        sw, sh = r["meta"]["source_size"]
        back = [box.x1 * sw / W, box.y1 * sh / H, box.x2 * sw / W, box.y2 * sh / H]
        assert np.allclose(back, r["meta"]["source_bbox"], atol=1.0), (back, r["meta"]["source_bbox"])
        assert np.allclose(list(box), r["meta"]["bbox"], atol=max(W, H) / 2000 + 1e-9)


def test_dior_bad_inputs(tmp_path):
    src = generate("dior_rsvg", tmp_path / "src", n=5)
    ann = src / "Annotations"
    # a box wholly outside the image
    x1 = (ann / "00001.xml").read_text()
    start = x1.index("<xmin>")
    end = x1.index("</ymax>") + len("</ymax>")
    (ann / "00001.xml").write_text(x1[:start] + "<xmin>500</xmin><ymin>500</ymin><xmax>600</xmax><ymax>600</ymax>"
                                   + x1[end:])
    (ann / "00005.xml").write_text("<annotation><object><name>ship</name>")  # malformed XML (the last: see below)
    (src / "JPEGImages" / "00003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # corrupt image
    n3 = (ann / "00003.xml").read_text().count("<object>")
    out = tmp_path / "out"
    report = assert_idempotent(convert_dior_rsvg, src, out, tasks=("grounding",))
    assert report.skipped["box outside image"] == 1
    assert "00001.xml" in report.examples["box outside image"][0]
    assert report.skipped["malformed XML"] == 1 and "00005.xml" in report.examples["malformed XML"][0]
    assert report.skipped["unreadable image"] == 1 and "00003.jpg" in report.examples["unreadable image"][0]
    assert report.written >= 1
    recs = all_records(report)
    check_wellformed(recs, out)
    assert all(r["task"] == "grounding" for r in recs)
    stems = {r["meta"]["source"] for r in recs}
    assert "00005.xml" not in stems and "00003.xml" not in stems
    assert n3 >= 1


def test_source_is_never_modified_and_outputs_relative(tmp_path):
    src = generate("dior_rsvg", tmp_path / "src", n=2)
    shutil.copytree(src, tmp_path / "copy")
    report = convert_dior_rsvg(src, tmp_path / "out", resize=32)
    assert {k: v[0] for k, v in tree_state(src).items()} == {k: v[0] for k, v in tree_state(tmp_path / "copy").items()}
    for r in all_records(report):
        assert not Path(r["image"]).is_absolute() and r["image"].startswith("images/dior_rsvg/")


# --------------------------------------------------------------------------------------------- options and freshness
def _png(out: Path, rec: dict) -> np.ndarray:
    with Image.open(out / rec["image"]) as im:
        return np.asarray(im)


def test_changed_bands_or_stretch_rewrite_the_images(tmp_path):
    """Issue 14 (12): a re-run into the same `out` with other bands used to keep the PNGs of the first run."""
    src = generate("eurosat_ms", tmp_path / "EuroSAT_MS", n=1, classes=["River", "Forest"])
    tif = src / "River" / "River_1.tif"
    out = tmp_path / "out"
    for bands, stretch in [(None, "auto"), ([8, 4, 3], "auto"), ([8, 4, 3], [5, 95]), (None, "auto")]:
        report = convert_classification(src, out, dataset="eurosat_ms", bands=bands, stretch=stretch, test_fraction=0)
        rec = next(r for r in all_records(report) if r["meta"]["source"] == "River/River_1.tif")
        auto = (2, 98) if bands else "fixed:0,3000"  # EuroSAT MS RGB: a fixed range (test_rs_eurosat_ms_stretch)
        want = read_rgb(tif, bands=bands or [4, 3, 2], stretch=auto if stretch == "auto" else stretch)[0]
        assert np.array_equal(_png(out, rec), np.asarray(want)), (bands, stretch)
    state = tree_state(out)
    convert_classification(src, out, dataset="eurosat_ms", test_fraction=0)  # same options: nothing rewritten
    assert tree_state(out) == state


def test_changed_resize_rewrites_rsvqa_images(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "rsvqa", n=2)
    out = tmp_path / "out"
    for resize in (None, 16, None):
        recs = all_records(convert_rsvqa(src, out, resize=resize))
        with Image.open(out / recs[0]["image"]) as im:
            assert max(im.size) == (resize or 32) and (im.width, im.height) == (recs[0]["width"], recs[0]["height"])


def test_rsvqa_with_the_wrong_images_folder_writes_nothing_and_keeps_outputs(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "rsvqa", n=2)
    out = tmp_path / "out"
    first = convert_rsvqa(src, out)
    kept = {p: p.read_bytes() for p in first.outputs.values()}
    again = convert_rsvqa(src, out, images_dir=tmp_path / "nowhere")
    assert again.written == 0 and again.skipped["missing image"] == 2 and again.outputs == {}
    assert {p: p.read_bytes() for p in kept} == kept


# --------------------------------------------------------------------------------------------- RSVQA layouts (issue 15)
def _js(path: Path, var: str, obj: dict) -> None:
    """The website's wrapping: ``var x = JSON.parse('{...}');``."""
    path.write_text(f"var {var} = JSON.parse('{json.dumps(obj)}');\n")


def _tile(path: Path, value: int, size: int = 8) -> np.ndarray:
    rgb = np.full((size, size, 3), value, np.uint8)
    rgb[0, 0] = (value, 255 - value, 7)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return rgb


def _website_sample(root: Path, n: int = 3) -> dict[int, np.ndarray]:
    """The RSVQA website's sample (syvlo/RSVQA_website): JSON wrapped in JavaScript, tiles renumbered as
    ``{id}.png`` while ``original_name`` keeps the source tile's name -- here another tile's number, as in
    the real sample (id 13 -> "33.png")."""
    pixels = {}
    for var, res, folder, names in (("USGS", "hr", "dataUSGS_reduced", ("USGS_split_train_{}_reduced.js",)),
                                    ("S2", "lr", "data_S2_reduced", ("{}S2_reduced.js",))):
        images, questions, answers = [], [], []
        for i in range(n):
            pixels[(res, i)] = _tile(root / folder / f"{i}.png", 40 * i + (10 if res == "hr" else 20))
            images.append({"id": i, "original_name": f"{(i + 1) % n}.png", "active": True,
                           "questions_ids": [2 * i, 2 * i + 1], "sensor": "S2" if res == "lr" else "ULTRACAM"})
            for k, (qtype, q, a) in enumerate((("presence", "Is a road present?", "Yes"),
                                                ("count", "How many buildings are there?", str(3 * i)))):
                questions.append({"id": 2 * i + k, "img_id": i, "type": qtype, "question": q,
                                  "answers_ids": [2 * i + k], "active": True})
                answers.append({"id": 2 * i + k, "question_id": 2 * i + k, "answer": a, "active": True})
        name = names[0]
        _js(root / name.format("questions"), f"questions{var}", {"questions": questions})
        _js(root / name.format("answers"), f"answers{var}", {"answers": answers})
        _js(root / name.format("images"), f"images{var}", {"images": images})
    return pixels


def test_rsvqa_lr_and_rsvqa_hr_convert_their_own_resolution(tmp_path):
    """The data set name was ignored: rsvqa_lr converted HR files (written as rsvqa_hr) without a word, and on a folder
    holding both it asked for the resolution the name already gave."""
    plugin = get_domain("remote_sensing")
    hr = generate("rsvqa_hr", tmp_path / "hr", n=3)
    with pytest.raises(DomainError, match=r"no RSVQA LR files; it holds RSVQA HR files \(convert them as rsvqa_hr"):
        plugin.convert("rsvqa_lr", hr, tmp_path / "out", show_progress=False)
    assert not list((tmp_path / "out").glob("*.jsonl"))
    both = tmp_path / "RSVQA_website"
    _website_sample(both)
    for res, split in (("hr", "train"), ("lr", "all")):
        report = plugin.convert(f"rsvqa_{res}", both, tmp_path / res, show_progress=False)
        assert set(report.outputs) == {split} and report.outputs[split].name == f"rsvqa_{res}_{split}.jsonl"
        assert {r["id"].split("/")[0] for r in all_records(report)} == {f"rsvqa_{res}"}
    with pytest.raises(DomainError, match="has no option 'resolution'"):
        plugin.convert("rsvqa_hr", both, tmp_path / "x", show_progress=False, resolution="lr")


def test_rsvqa_website_sample_layout(tmp_path):
    """Issue 15 item 9: the sample's renumbered PNGs are found by id; original_name (another tile's number)
    is kept in meta, never used to pick the file."""
    src = tmp_path / "RSVQA_website"
    pixels = _website_sample(src)
    with pytest.raises(ValueError, match="both RSVQA HR .* and LR files; pass --option resolution="):
        convert_rsvqa(src, tmp_path / "x")
    for res in ("hr", "lr"):
        out = tmp_path / res
        report = assert_idempotent(convert_rsvqa, src, out, resolution=res)
        assert report.written == 6 and report.total_skipped == 0 and set(report.outputs) == {"train" if res == "hr"
                                                                                              else "all"}
        recs = all_records(report)
        check_wellformed(recs, out)
        for r in recs:
            i = r["meta"]["img_id"]
            assert r["id"].startswith(f"rsvqa_{res}/") and r["meta"]["original_name"] == f"{(i + 1) % 3}.png"
            with Image.open(out / r["image"]) as im:
                assert np.array_equal(np.asarray(im), pixels[(res, i)])  # tile i's pixels, not the decoy's
        assert sorted(r["answer"] for r in recs if r["meta"]["question_type"] == "count") == ["0", "3", "6"]


def test_rsvqa_finds_tiles_by_any_suffix_present(tmp_path):
    src = generate("rsvqa_hr", tmp_path / "hr", n=5)
    data = src / "Data"
    want = {}
    for i, suffix in ((0, ".png"), (1, ".JPG"), (2, ".jpeg"), (3, ".bmp")):
        (data / f"{i}.tif").unlink()
        _tile(data / f"{i}{suffix}", 30 * i + 5, 32)
        with Image.open(data / f"{i}{suffix}") as im:
            want[i] = np.asarray(im.convert("RGB"))  # as decoded (the JPEG is lossy)
    _tile(data / "4.png", 200, 32)  # 4.tif is there too: the original GeoTIFF wins
    with rasterio.open(data / "4.tif") as ds:
        want[4] = ds.read().transpose(1, 2, 0)
    out = tmp_path / "out"
    report = assert_idempotent(convert_rsvqa, src, out)
    assert report.total_skipped == 3 and report.skipped == {"inactive question": 3}
    for r in all_records(report):
        i = r["meta"]["img_id"]
        with Image.open(out / r["image"]) as im:
            got = np.asarray(im)
        assert np.array_equal(got, want[i]), i


def test_rsvqa_image_ids_leaving_the_images_folder_are_skipped_unread(tmp_path, monkeypatch):
    """Issue 15 item 10: an img_id is joined under the images folder only through domains.files.inside_root."""
    import domains.remote_sensing.convert as rs

    src = generate("rsvqa_lr", tmp_path / "data" / "rsvqa", n=5)
    secret = _tile(tmp_path / "data" / "secret.png", 99)  # a real image the ids below point at
    (src / "Images_LR" / "leak.png").symlink_to(tmp_path / "data" / "secret.png")
    qpath = src / "LR_split_train_questions.json"
    data = json.loads(qpath.read_text())
    active = [q for q in data["questions"] if q.get("active", True)]
    active[0]["img_id"] = "../../secret"
    active[1]["img_id"] = str(tmp_path / "data" / "secret")
    active[2]["img_id"] = "leak"
    qpath.write_text(json.dumps(data))
    read = []
    real_load = rs._load_rgb
    monkeypatch.setattr(rs, "_load_rgb", lambda p, *a, **k: read.append(Path(p)) or real_load(p, *a, **k))
    report = convert_rsvqa(src, tmp_path / "out")
    assert report.skipped["path escapes data root"] == 3 and report.skipped["image skipped"] == 3
    examples = " ".join(report.examples["path escapes data root"])
    assert "../../secret" in examples and "symlink" in examples
    assert read and all("secret" not in p.name and "leak" not in p.name for p in read)
    for r in all_records(report):
        with Image.open(tmp_path / "out" / r["image"]) as im:
            assert not np.array_equal(np.asarray(im), secret)


def test_dior_box_mostly_outside_is_skipped_and_a_clipped_one_is_said(tmp_path):
    """xmax 4300 on a 64 px image is a wrong box, not a border overshoot: skipped (it was clipped to the image
    edge and trained on); a box a few pixels over the edge is clipped and counted as a warning."""
    src = generate("dior_rsvg", tmp_path / "src", n=3)
    ann = src / "Annotations"

    def set_xmax(xml: Path, value: int) -> tuple[int, int]:
        text = xml.read_text()
        start, end = text.index("<xmax>"), text.index("</xmax>") + len("</xmax>")
        xml.write_text(text[:start] + f"<xmax>{value}</xmax>" + text[end:])
        return int(text[text.index("<xmin>") + 6 : text.index("</xmin>")]), int(text[start + 6 : end - 7])

    first = sorted(ann.glob("*.xml"))
    width = Image.open(next((src / "JPEGImages").iterdir())).width
    set_xmax(first[0], 4300)
    set_xmax(first[1], width + 2)
    report = convert_dior_rsvg(src, tmp_path / "out", tasks=("grounding",))
    assert report.skipped["box outside image"] == 1 and "outside the" in report.examples["box outside image"][0]
    assert report.warnings["box clipped to image"] == 1 and first[1].name in report.warning_examples[
        "box clipped to image"][0]


def test_dior_filenames_leaving_the_images_folder_are_skipped_unread(tmp_path):
    src = generate("dior_rsvg", tmp_path / "data" / "DIOR_RSVG", n=4)
    shutil.copy(src / "JPEGImages" / "00001.jpg", tmp_path / "data" / "secret.jpg")
    ann = src / "Annotations"
    for xml, name in (("00001.xml", "../../secret.jpg"), ("00002.xml", str(tmp_path / "data" / "secret.jpg")),
                      ("00003.xml", "..\\..\\secret.jpg")):
        text = (ann / xml).read_text()
        start, end = text.index("<filename>"), text.index("</filename>")
        (ann / xml).write_text(text[:start] + f"<filename>{name}</filename>" + text[end + len("</filename>"):])
    report = convert_dior_rsvg(src, tmp_path / "out")
    assert report.skipped["path escapes data root"] == 3
    assert {e.split(":")[0].rsplit("/", 1)[-1] for e in report.examples["path escapes data root"]} == {
        "00001.xml", "00002.xml", "00003.xml"}
    assert {r["meta"]["source"] for r in all_records(report)} == {"00004.xml"}
    assert not any("secret" in p.name for p in (tmp_path / "out").rglob("*"))


def test_dior_images_of_one_stem_are_two_outputs(tmp_path):
    """a.jpg and a.png named by two annotations were both written as a.png, the second over the first, and the
    first one's boxes then pointed into the other image."""
    src = generate("dior_rsvg", tmp_path / "src", n=2)
    images, ann = src / "JPEGImages", src / "Annotations"
    second = np.asarray(Image.open(images / "00002.jpg").convert("RGB"))
    Image.fromarray(second).save(images / "00001.png")
    (images / "00002.jpg").unlink()
    text = (ann / "00002.xml").read_text()
    (ann / "00002.xml").write_text(text.replace("<filename>00002.jpg</filename>", "<filename>00001.png</filename>"))
    out = tmp_path / "out"
    report = assert_idempotent(convert_dior_rsvg, src, out)
    image_of = {r["meta"]["source"]: r["image"] for r in all_records(report)}
    assert image_of == {"00001.xml": "images/dior_rsvg/00001.jpg.png", "00002.xml": "images/dior_rsvg/00001.png.png"}
    for xml, original in (("00001.xml", images / "00001.jpg"), ("00002.xml", images / "00001.png")):
        assert np.array_equal(np.asarray(Image.open(out / image_of[xml])), np.asarray(Image.open(original)))


def test_dior_tasks_take_a_comma_separated_string(tmp_path):
    """tasks="grounding" was read letter by letter and refused, "grounding,region" too, as nuScenes took them."""
    src = generate("dior_rsvg", tmp_path / "src", n=2)
    one = convert_dior_rsvg(src, tmp_path / "a", tasks="grounding", progress=False)
    assert {r["task"] for r in all_records(one)} == {"grounding"}
    both = convert_dior_rsvg(src, tmp_path / "b", tasks="grounding, region", progress=False)
    assert {r["task"] for r in all_records(both)} == {"grounding", "region"}
    with pytest.raises(DomainError, match=r"tasks must be .*'detect'"):
        convert_dior_rsvg(src, tmp_path / "c", tasks="grounding,detect", progress=False)


def test_bands_given_as_a_string_are_read_as_the_demo_reads_them(tmp_path):
    """bands="4,3,2" (as --option bands=4,3,2 gives it) was taken for one band named '4,3,2': every image skipped."""
    src = generate("eurosat_ms", tmp_path / "src", n=2)
    listed = convert_classification(src, tmp_path / "a", dataset="eurosat_ms", bands=[4, 3, 2], test_fraction=0)
    given = convert_classification(src, tmp_path / "b", dataset="eurosat_ms", bands="4, 3, 2", test_fraction=0)
    assert given.written == listed.written > 0 and not given.skipped
    assert [p.read_bytes() for p in sorted((tmp_path / "b").rglob("*.png"))] == [
        p.read_bytes() for p in sorted((tmp_path / "a").rglob("*.png"))]
    with pytest.raises(DomainError, match="bands: give one band"):
        convert_classification(src, tmp_path / "c", dataset="eurosat_ms", bands="4,3", test_fraction=0)


def test_plain_images_go_through_the_one_image_reader(tmp_path):
    """A phone JPEG stored sideways comes out upright, a 16-bit PNG is stretched (not saturated), as in training."""
    src = tmp_path / "src"
    (src / "field").mkdir(parents=True)
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # red on the left as stored; EXIF orientation 6 turns it to the top
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(src / "field" / "phone.jpg", exif=exif, quality=95)
    (src / "river").mkdir()
    Image.fromarray(np.tile(np.linspace(1000, 4000, 32, dtype=np.uint16), (32, 1)), "I;16").save(
        src / "river" / "scan.png")
    out = tmp_path / "out"
    report = convert_classification(src, out, dataset="ucmerced", test_fraction=0)
    assert report.written == 2 and not report.skipped
    by_source = {r["meta"]["source"]: r for r in all_records(report)}
    phone = np.asarray(Image.open(out / by_source["field/phone.jpg"]["image"]).convert("RGB")).astype(int)
    assert phone.shape[:2] == (40, 20) and phone[:10, :, 0].mean() > 200 and phone[-10:, :, 0].mean() < 60
    scan = np.asarray(Image.open(out / by_source["river/scan.png"]["image"]).convert("L")).astype(int)
    assert scan.min() == 0 and scan.max() == 255 and len(np.unique(scan)) > 20


def test_classification_never_writes_two_sources_to_one_image(tmp_path):
    """Class folders that clean to one name (森林, 農地) and a.png beside a.jpg each keep their own pixels."""
    src = tmp_path / "src"
    colours = {"森林/img01.png": (0, 200, 0), "農地/img01.png": (200, 150, 0),
               "森林/img02.png": (10, 10, 10), "森林/img02.jpg": (250, 250, 250)}
    for name, colour in colours.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), colour).save(src / name, quality=100)
    out = tmp_path / "out"
    report = convert_classification(src, out, dataset="ucmerced", test_fraction=0)
    recs = all_records(report)
    assert report.written == len(recs) == 4 and report.total_skipped == 0
    assert len({r["image"] for r in recs}) == len({r["id"] for r in recs}) == 4
    for r in recs:
        pixel = Image.open(out / r["image"]).convert("RGB").getpixel((8, 8))
        assert max(abs(a - b) for a, b in zip(pixel, colours[r["meta"]["source"]])) <= 3, (r["image"], pixel)
        assert r["label"] == r["meta"]["class_dir"]


def test_scene_chips_band_names_given_as_a_string_are_names(tmp_path):
    """band_names="blue,green,red,nir" (as --option band_names=... gives it) was counted by its letters, 18 names
    for a 4-band scene, and every scene was skipped."""
    from domains.remote_sensing.convert import convert_scene_chips

    data = np.stack([np.full((16, 16), v, np.uint8) for v in (10, 20, 30, 40)])
    src = tmp_path / "scenes"
    write_tif(src / "scene.tif", data)
    given = convert_scene_chips(src, tmp_path / "a", size=16, overlap=0, band_names="blue, green,red,nir",
                                bands=["red", "green", "blue"], progress=False)
    listed = convert_scene_chips(src, tmp_path / "b", size=16, overlap=0, band_names=["blue", "green", "red", "nir"],
                                 bands=["red", "green", "blue"], progress=False)
    assert given.written == listed.written == 1 and not given.skipped
    png = next((tmp_path / "a").rglob("*.png"))
    assert np.asarray(Image.open(png))[0, 0].tolist() == [30, 20, 10]


def test_scene_chips_of_two_scenes_never_share_a_name(tmp_path):
    from domains.remote_sensing.convert import convert_scene_chips

    src = tmp_path / "scenes"
    write_tif(src / "north" / "tile.tif", np.full((3, 64, 64), 10, np.uint8))
    write_tif(src / "north_tile.tif", np.full((3, 64, 64), 200, np.uint8))
    out = tmp_path / "out"
    convert_scene_chips(src, out, size=64, overlap=0)
    chips = [json.loads(line) for line in (out / "chips.jsonl").open()]
    assert len(chips) == 2 and len({c["image"] for c in chips}) == len({c["id"] for c in chips}) == 2, chips
    values = sorted(int(np.asarray(Image.open(out / c["image"]))[0, 0, 0]) for c in chips)
    assert values == [10, 200]


def test_a_split_the_new_run_does_not_make_is_removed(tmp_path):
    """An earlier run's held-out file left beside a run with test_fraction=0 would overlap its training split."""
    src = generate("ucmerced", tmp_path / "src", n=4)
    out = tmp_path / "out"
    first = convert_classification(src, out, dataset="ucmerced", test_fraction=0.5)
    assert set(first.outputs) == {"train", "test"} and not first.removed
    second = convert_classification(src, out, dataset="ucmerced", test_fraction=0)
    assert set(second.outputs) == {"train"} and second.removed == [out / "ucmerced_test.jsonl"]
    assert not (out / "ucmerced_test.jsonl").exists() and "ucmerced_test.jsonl" in second.table()
    (out / "eurosat_test.jsonl").write_text("{}\n")  # another data set's outputs are left alone
    third = convert_classification(src, out, dataset="ucmerced", test_fraction=0.5)
    assert set(third.outputs) == {"train", "test"} and not third.removed
    assert (out / "eurosat_test.jsonl").read_text() == "{}\n"


def test_a_scene_that_fails_part_way_is_dropped_whole(tmp_path):
    """A tiled GeoTIFF cut short reads its first chips, then fails: none of its chips stay behind, as if read."""
    from rasterio.transform import from_origin

    from domains.remote_sensing.convert import convert_scene_chips

    src = tmp_path / "scenes"
    write_tif(src / "good.tif", np.full((3, 64, 64), 99, np.uint8))
    big = src / "big.tif"
    noise = np.random.default_rng(0).integers(0, 255, (3, 1024, 1024)).astype(np.uint8)
    with rasterio.open(big, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(700000, 4e6, 10, 10), tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate") as ds:
        ds.write(noise)
    with big.open("r+b") as f:
        f.truncate(int(big.stat().st_size * 0.7))
    out = tmp_path / "out"
    report = convert_scene_chips(src, out, size=256, overlap=0)
    chips = [json.loads(line) for line in (out / "chips.jsonl").open()]
    assert [c["scene"] for c in chips] == ["good.tif"]
    assert report.total_skipped == 1 and "dropped with the scene" in str(report.examples)
    assert not (out / "images" / "scene_chips" / "big").exists() or not any((out / "images" / "scene_chips" / "big").iterdir())


def test_classification_refuses_symlinks_out_of_the_source(tmp_path):
    src = generate("ucmerced", tmp_path / "src", n=2)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(src / "forest" / "forest00.tif", outside / "private.tif")
    (src / "forest" / "linked.tif").symlink_to(outside / "private.tif")
    (src / "forest" / "inside.tif").symlink_to(src / "river" / "river00.tif")  # a link within the source is fine
    (src / "mirror").symlink_to(outside, target_is_directory=True)  # a class folder linked in from elsewhere
    report = convert_classification(src, tmp_path / "out", dataset="ucmerced", test_fraction=0)
    assert report.skipped == {"path escapes data root": 2, "empty class folder": 1}, report.table()  # mirror/
    sources = {r["meta"]["source"] for r in all_records(report)}
    assert "forest/inside.tif" in sources and not {"forest/linked.tif", "mirror/private.tif"} & sources


def test_synthesizing_shows_a_bar_unless_told_not_to(tmp_path, capsys):
    """`adapt synthesize remote_sensing` printed nothing for half a minute; it shows a bar over the data sets."""
    from domains.remote_sensing.synthetic import generate_all

    generate_all(tmp_path / "a", kinds=["ucmerced", "dior_rsvg"], n=1)
    err = capsys.readouterr().err
    assert "synthetic remote sensing" in err and "2/2" in err
    generate_all(tmp_path / "b", kinds=["ucmerced"], n=1, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_dior_box_follows_an_exif_oriented_jpeg(tmp_path, orientation):
    """The PNG is written upright (the one image reader applies EXIF orientation); the XML box is in the stored
    pixels, so it is turned with the image, and the record's size is the upright one."""
    src = tmp_path / "src"
    (src / "JPEGImages").mkdir(parents=True)
    (src / "Annotations").mkdir()
    stored = np.zeros((100, 300, 3), np.uint8)
    stored[10:30, 20:80] = 255  # the object: x 20..80, y 10..30 in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(src / "JPEGImages" / "00001.jpg", exif=exif.tobytes(), quality=98)
    (src / "Annotations" / "00001.xml").write_text(
        "<annotation><filename>00001.jpg</filename><size><width>300</width><height>100</height></size><object>"
        "<name>vehicle</name><bndbox><xmin>20</xmin><ymin>10</ymin><xmax>80</xmax><ymax>30</ymax></bndbox>"
        "<description>the white block</description></object></annotation>")
    report = convert_dior_rsvg(src, tmp_path / "out", tasks=("grounding",))
    [rec] = all_records(report)
    with Image.open(tmp_path / "out" / rec["image"]) as im:
        written = np.asarray(im.convert("L")) > 128
    assert written.shape == (rec["height"], rec["width"])
    ys, xs = np.nonzero(written)
    [(_, [box])] = parse_ref_boxes(rec["answer"], rec["width"], rec["height"])
    assert np.allclose(list(box), [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=2.0), (box, orientation)
    assert report.warnings["box turned with an EXIF-oriented image"] == 1


@pytest.mark.parametrize("size", [0, 5, -5])
def test_synthetic_size_below_8_is_refused_not_replaced_by_the_default(tmp_path, size):
    with pytest.raises(DomainError, match=f"size must be >= 8 pixels, got {size}"):
        generate("ucmerced", tmp_path / "u", size=size)


def test_dior_objects_after_a_malformed_xml_are_not_put_in_a_guessed_split(tmp_path):
    """The split files hold global object indices: after an XML that cannot be read (its object count unknown)
    every later object's index is unknown, so it is skipped, never written to a shifted (wrong) split."""
    src = generate("dior_rsvg", tmp_path / "src", n=4)
    xmls = sorted((src / "Annotations").glob("*.xml"))
    later = sum(x.read_text().count("<object>") for x in xmls[2:])
    xmls[1].write_text("<annotation><object><name>ship</name>")  # truncated in copying
    report = convert_dior_rsvg(src, tmp_path / "out", tasks=("grounding",), progress=False)
    assert report.skipped["malformed XML"] == 1
    assert report.skipped["object index unknown"] == later >= 1
    assert xmls[1].name in report.examples["object index unknown"][0]
    assert {r["meta"]["source"] for r in all_records(report)} == {xmls[0].name}


def test_dior_zero_area_box_is_called_malformed_not_outside(tmp_path):
    src = generate("dior_rsvg", tmp_path / "src", n=2)
    xml = sorted((src / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    xmin = text[text.index("<xmin>") + 6: text.index("</xmin>")]
    start, end = text.index("<xmax>"), text.index("</xmax>") + len("</xmax>")
    xml.write_text(text[:start] + f"<xmax>{xmin}</xmax>" + text[end:])  # xmin == xmax, well inside the image
    report = convert_dior_rsvg(src, tmp_path / "out", tasks=("grounding",), progress=False)
    assert "box outside image" not in report.skipped
    assert report.skipped["malformed box"] == 1 and "zero area" in report.examples["malformed box"][0]


def test_classification_ignores_what_a_mac_zip_adds(tmp_path):
    """A zip made on a Mac unpacks a ``__MACOSX`` folder beside the data set and ``._name`` AppleDouble files:
    neither is a class nor an image."""
    src = tmp_path / "unzipped"
    generate("ucmerced", src / "UCMerced_LandUse" / "Images", n=2)
    junk = b"\x00\x05\x16\x07AppleDouble"
    (src / "__MACOSX" / "UCMerced_LandUse" / "Images" / "forest").mkdir(parents=True)
    (src / "__MACOSX" / "UCMerced_LandUse" / "Images" / "forest" / "._forest00.tif").write_bytes(junk)
    (src / "UCMerced_LandUse" / "Images" / "forest" / "._forest00.tif").write_bytes(junk)
    report = convert_classification(src, tmp_path / "out", dataset="ucmerced", progress=False)
    assert report.total_skipped == 0 and report.written == 10
    assert all_records(report)[0]["options"] == sorted(["agricultural", "forest", "river", "denseresidential",
                                                        "chaparral"])


def test_dior_ignores_appledouble_xml_files(tmp_path):
    src = generate("dior_rsvg", tmp_path / "src", n=3)
    (src / "Annotations" / "._00001.xml").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # sorts first
    report = convert_dior_rsvg(src, tmp_path / "out", progress=False)
    assert report.total_skipped == 0 and report.written > 0


def test_rsvqa_ignores_appledouble_question_files(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "src", n=4)
    for q in list(src.glob("*_questions.json")):
        (src / f"._{q.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    report = convert_rsvqa(src, tmp_path / "out", progress=False)
    assert "malformed JSON" not in report.skipped and report.written > 0


def test_dior_object_in_two_split_files_is_said_and_kept_in_the_first(tmp_path):
    """An index in both train.txt and test.txt (a train / test overlap) went to train without a word."""
    src = generate("dior_rsvg", tmp_path / "src", n=4)
    idx = (src / "train.txt").read_text().split()[0]
    with (src / "test.txt").open("a") as f:
        f.write(f"{idx}\n")
    report = convert_dior_rsvg(src, tmp_path / "out", tasks=("grounding",), progress=False)
    assert report.warnings.get("object in two split files") == 1
    assert f"object index {idx} is listed in train.txt too" in report.warning_examples["object in two split files"][0]
    assert [r["meta"]["split"] for r in all_records(report) if r["meta"]["object_index"] == int(idx)] == ["train"]


def test_dior_split_file_that_cannot_be_read_is_refused_naming_it(tmp_path):
    """A folder where test.txt goes was a raw IsADirectoryError traceback."""
    src = generate("dior_rsvg", tmp_path / "src", n=2)
    (src / "test.txt").unlink()
    (src / "test.txt").mkdir()
    with pytest.raises(DomainError, match=r"test\.txt: cannot read the split file"):
        convert_dior_rsvg(src, tmp_path / "out", progress=False)
