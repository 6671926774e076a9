"""Medical converters on synthetic data in the public layouts: records, splits, de-identification, bad input."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from adapt.metrics import mc_accuracy
from domains.base import DomainError, get_domain
from domains.boxes import parse_ref_boxes
from domains.files import PATH_ESCAPES
from domains.medical.convert import (
    BURNED_IN_WARNING,
    SAME_POSITION_WARNING,
    convert_classification,
    convert_dicom_qa,
    convert_pmc_vqa,
    convert_slake,
    convert_vqa_rad,
)
from domains.medical.synthetic import generate
from tests.converted import all_records, records
from tests.deps import require

pydicom = require("pydicom")

# the fake PHI the synthetic DICOM files carry (domains.medical.synthetic)
PHI = ("DOE", "JANE", "Jane", "ROE", "RICHARD", "SMITH", "MRN", "19650412", "19580923", "Springfield", "Evergreen",
       "HOUSE", "GREGORY", "RATCHED", "ACC74", "SSN", "ward note", "CTSPRINGFIELD", "1.2.826.0.1.3680043")


# --------------------------------------------------------------------------------------------- helpers
def check_wellformed(recs: list[dict], out: Path) -> None:
    assert recs
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids))
    for r in recs:
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        images = r["image"] if isinstance(r["image"], list) else [r["image"]]
        assert human["value"].count("<image>") == len(images)
        assert gpt["value"] == r["answer"] and r["answer"]
        for k, rel in enumerate(images):
            img = out / rel
            assert img.is_file() and not Path(rel).is_absolute()
            with Image.open(img) as im:
                im.load()
                if k == 0:
                    assert im.size == (r["width"], r["height"])
        if r["task"] == "med_vqa":
            assert r["meta"]["answer_type"] in ("CLOSED", "OPEN")
        if r["task"] == "mc":
            assert r["options"] and r["answer"] in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:len(r["options"])]
            assert mc_accuracy(r["answer"], r["answer"], r["options"]) == 1.0


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(root).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_idempotent(convert, src: Path, out: Path, **kw):
    before = tree_state(src)
    first = convert(src, out, **kw)
    state = tree_state(out)
    second = convert(src, out, **kw)
    assert tree_state(out) == state  # same bytes, nothing rewritten
    assert second.written == first.written and second.skipped == first.skipped
    assert tree_state(src) == before  # the source is never modified
    return first


def assert_no_phi(out: Path) -> None:
    """No PHI string in any output file (JSONL text, file names, PNG / JPEG bytes)."""
    for p in out.rglob("*"):
        for word in PHI:
            assert word not in p.relative_to(out).as_posix(), (p, word)
        if p.is_file():
            data = p.read_bytes()
            for word in PHI:
                assert word.encode() not in data, (p, word)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("medraw")
    for kind in ("vqa_rad", "slake", "pmc_vqa", "classification", "dicom_qa"):
        generate(kind, root / kind, n=3, seed=1)
    return root


def copy_of(raw: Path, kind: str, tmp_path: Path) -> Path:
    dst = tmp_path / kind
    shutil.copytree(raw / kind, dst)
    return dst


# --------------------------------------------------------------------------------------------- VQA-RAD
def test_vqa_rad_splits_types_and_idempotence(raw, tmp_path):
    out = tmp_path / "out"
    report = assert_idempotent(convert_vqa_rad, raw / "vqa_rad", out)
    assert set(report.outputs) == {"train", "test"} and not report.skipped
    rows = json.loads((raw / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text())
    test = [r for r in rows if r["phrase_type"] in ("test_freeform", "test_para")]
    recs = records(report.outputs["test"])
    assert len(recs) == len(test) and report.written == len(rows)
    check_wellformed(all_records(report), out)
    by_qid = {r["meta"]["qid"]: r for r in all_records(report)}
    for row in rows:
        rec = by_qid[str(row["qid"])]
        assert rec["meta"]["answer_type"] == row["answer_type"].strip()  # "CLOSED " -> CLOSED
        assert rec["meta"]["question_type"] == row["question_type"] and rec["meta"]["organ"] == row["image_organ"]
        assert rec["answer"] == row["answer"] and rec["task"] == "med_vqa"
        assert rec["conversations"][0]["value"].startswith("<image>\n" + row["question"])
    # images are copied byte for byte, once each
    first = recs[0]
    src_img = raw / "vqa_rad" / "VQA_RAD Image Folder" / first["meta"]["image_name"]
    assert (out / first["image"]).read_bytes() == src_img.read_bytes()


def test_vqa_rad_and_slake_rows_sharing_a_qid_get_distinct_ids(raw, tmp_path):
    """A question and its paraphrase under one qid (and any repeated qid) used to give two records one id, which
    matching predictions to references by id confuses; both are kept, the later with the phrase type (SLAKE: the
    language), then the row, appended."""
    src = copy_of(raw, "vqa_rad", tmp_path)
    path = src / "VQA_RAD Dataset Public.json"
    rows = json.loads(path.read_text())
    free = next(r for r in rows if r["phrase_type"] == "freeform")
    rows += [{**free, "phrase_type": "para", "question": "Is a lesion seen?"}, {**free, "question": "Any lesion?"}]
    path.write_text(json.dumps(rows))
    recs = all_records(convert_vqa_rad(src, tmp_path / "out", progress=False))
    ids = [r["id"] for r in recs]
    assert len(ids) == len(rows) == len(set(ids))
    base = f"vqa_rad/train/{free['qid']}"
    assert {base, f"{base}-para", f"{base}-freeform"} <= set(ids)
    slake = copy_of(raw, "slake", tmp_path)
    train = slake / "Slake1.0" / "train.json"
    rows = json.loads(train.read_text())
    rows.append({**rows[0], "question": "Another question?"})
    train.write_text(json.dumps(rows))
    ids = [r["id"] for r in all_records(convert_slake(slake, tmp_path / "out2", q_lang="all", progress=False))]
    assert len(ids) == len(set(ids)) and f"slake/train/{rows[0]['qid']}-{rows[0]['q_lang']}" in ids


def test_vqa_rad_bad_input_is_skipped_and_counted(raw, tmp_path):
    src = copy_of(raw, "vqa_rad", tmp_path)
    path = src / "VQA_RAD Dataset Public.json"
    rows = json.loads(path.read_text())
    n = len(rows)
    rows[0]["answer"] = "  "
    rows[1]["phrase_type"] = "validation"
    rows[2]["answer_type"] = "MAYBE"
    rows[3]["question"] = ""
    rows.append("not an object")
    missing = rows[4]["image_name"]
    (src / "VQA_RAD Image Folder" / missing).unlink()
    img_rows = sum(1 for r in rows[4:n] if r["image_name"] == missing)
    rows[5]["image_name"] = "../../etc/passwd"
    path.write_text(json.dumps(rows))
    report = convert_vqa_rad(src, tmp_path / "out")
    assert report.skipped["empty answer"] == 1 and report.skipped["unknown split"] == 1
    assert report.skipped["bad answer_type"] == 1 and report.skipped["empty question"] == 1
    assert report.skipped["malformed record"] == 1 and report.skipped["missing image"] == 1
    assert report.skipped["path escapes data root"] == 1
    assert report.skipped["image skipped"] == img_rows + 1 - (1 if rows[5]["image_name"] == missing else 0)
    assert "validation" in report.examples["unknown split"][0]
    assert any(missing in e for e in report.examples["missing image"])
    assert report.written == n - 4 - report.skipped["image skipped"]
    path.write_text("{not json")
    report = convert_vqa_rad(src, tmp_path / "out2")
    assert report.skipped == {"malformed JSON": 1} and report.written == 0
    with pytest.raises(ValueError, match="VQA_RAD Dataset Public.json"):
        convert_vqa_rad(tmp_path / "nowhere", tmp_path / "out3")


def test_an_unreadable_question_file_is_a_skip_not_a_traceback(raw, tmp_path, monkeypatch):
    """A question file that cannot be read (no permission; chmod does not stop root, so read_text is made to fail)
    ended in a PermissionError traceback; it is counted as remote sensing's RSVQA files are: "unreadable file"."""
    src = copy_of(raw, "vqa_rad", tmp_path)
    path = src / "VQA_RAD Dataset Public.json"
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    report = convert_vqa_rad(src, tmp_path / "out")
    assert report.skipped == {"unreadable file": 1} and report.written == 0
    assert report.examples["unreadable file"][0].endswith("VQA_RAD Dataset Public.json: Permission denied")


def test_a_question_file_holding_null_is_counted_not_dropped_unsaid(raw, tmp_path):
    """A question file holding only `null` read as "already reported": the conversion lost it without a count."""
    src = copy_of(raw, "vqa_rad", tmp_path)
    (src / "VQA_RAD Dataset Public.json").write_text("null")
    report = convert_vqa_rad(src, tmp_path / "out")
    assert report.skipped == {"malformed JSON": 1} and report.written == 0
    assert report.examples["malformed JSON"][0].endswith("the file holds null, not the data")


# --------------------------------------------------------------------------------------------- SLAKE
def test_slake_language_filter_and_splits(raw, tmp_path):
    out = tmp_path / "out"
    report = assert_idempotent(convert_slake, raw / "slake", out)
    assert set(report.outputs) == {"train", "val", "test"}
    recs = all_records(report)
    check_wellformed(recs, out)
    assert {r["meta"]["q_lang"] for r in recs} == {"en"}
    root = raw / "slake" / "Slake1.0"
    en = sum(1 for f in ("train", "validate", "test") for r in json.loads((root / f"{f}.json").read_text())
             if r["q_lang"] == "en")
    assert len(recs) == en and not report.skipped
    zh = convert_slake(root, tmp_path / "zh", q_lang="zh")  # the Slake1.0 folder itself works too
    zh_recs = all_records(zh)
    assert zh_recs and {r["meta"]["q_lang"] for r in zh_recs} == {"zh"}
    assert all(r["answer"] in ("是", "否") and "请用" in r["conversations"][0]["value"] for r in zh_recs)
    both = convert_slake(raw / "slake", tmp_path / "all", q_lang=None)
    assert both.written == report.written + zh.written
    rec = next(r for r in recs if r["meta"]["content_type"] == "Abnormality")
    assert rec["meta"]["answer_type"] == "CLOSED" and rec["image"].startswith("images/slake/xmlab")


def test_slake_bad_input(raw, tmp_path):
    src = copy_of(raw, "slake", tmp_path)
    root = src / "Slake1.0"
    (root / "validate.json").write_text("[{broken")
    rows = json.loads((root / "train.json").read_text())
    rows[0]["answer"] = ""
    rows[1]["img_name"] = "xmlab999/source.jpg"
    (root / "train.json").write_text(json.dumps(rows, ensure_ascii=False))
    (root / "imgs" / "xmlab0" / "source.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    report = convert_slake(src, tmp_path / "out", q_lang="all")
    assert report.skipped["malformed JSON"] == 1 and "validate.json" in report.examples["malformed JSON"][0]
    assert report.skipped["empty answer"] == 1 and report.skipped["missing image"] == 1
    assert report.skipped["unreadable image"] == 1 and report.skipped["image skipped"] >= 1
    assert set(report.outputs) == {"train", "test"}
    with pytest.raises(ValueError, match="unknown SLAKE split"):
        convert_slake(src, tmp_path / "x", splits=["dev"])
    # a language no question has (a typo, "english") dropped every question silently: an empty conversion
    with pytest.raises(ValueError, match=r"no SLAKE question has q_lang 'english'.*\['en', 'zh'\]"):
        convert_slake(src, tmp_path / "y", q_lang="english")
    assert not (tmp_path / "y").exists()


def test_slake_counts_an_unreadable_or_null_question_file_and_converts_the_others(raw, tmp_path, monkeypatch):
    """SLAKE read each question file three times, twice with a bare read: one it could not read (no permission) was
    a PermissionError traceback, one holding `null` was dropped unsaid; each is now read once and counted."""
    src = copy_of(raw, "slake", tmp_path)
    root = src / "Slake1.0"
    (root / "validate.json").write_text("null")
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self == root / "train.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    report = convert_slake(src, tmp_path / "out", q_lang="all")
    assert report.skipped == {"unreadable file": 1, "malformed JSON": 1}
    assert set(report.outputs) == {"test"} and report.written > 0


# --------------------------------------------------------------------------------------------- PMC-VQA
def test_pmc_vqa_multiple_choice_and_open(raw, tmp_path):
    out = tmp_path / "out"
    report = assert_idempotent(convert_pmc_vqa, raw / "pmc_vqa", out)
    assert set(report.outputs) == {"train", "test"} and not report.skipped
    recs = all_records(report)
    check_wellformed(recs, out)
    with (raw / "pmc_vqa" / "train.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    rec = records(report.outputs["train"])[0]
    assert rec["task"] == "mc" and rec["answer"] == row["Answer_label"]
    assert rec["options"] == [row[f"Choice {L}"].split(":", 1)[1] for L in "ABCD"]  # "A:" prefixes dropped
    assert rec["options"][ord(rec["answer"]) - 65] == row["Answer"]
    assert "\nA. " in rec["conversations"][0]["value"] and "option's letter" in rec["conversations"][0]["value"]
    assert mc_accuracy("The answer is " + rec["answer"], rec["answer"], rec["options"]) == 1.0
    opened = convert_pmc_vqa(raw / "pmc_vqa", tmp_path / "open", mode="open", files=["test.csv"])
    orecs = all_records(opened)
    assert set(opened.outputs) == {"test"} and all(r["task"] == "med_vqa" for r in orecs)
    assert all(r["meta"]["answer_type"] == "OPEN" and not r["answer"].startswith(("A:", "B:")) for r in orecs)


def test_pmc_vqa_bad_rows(raw, tmp_path):
    src = copy_of(raw, "pmc_vqa", tmp_path)
    path = src / "train.csv"
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header, *rows = list(reader)
    n = len(rows)
    rows[0][7] = ""                              # no label, but Answer equals one choice: recovered
    rows[1][7] = "E"
    rows[1][2] = "nothing like the choices"      # bad label, no matching Answer: skipped
    rows[2][5] = "C:"                            # empty choice
    rows[3][0] = "PMC0_F0.jpg"                   # missing image
    rows.append(rows[4] + ["extra"])             # more fields than columns
    rows[4][1] = ""                              # empty question
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    report = convert_pmc_vqa(src, tmp_path / "out", files=["train.csv"])
    assert report.skipped["malformed row"] == 3 and report.skipped["empty question"] == 1
    assert report.skipped["missing image"] == 1 and report.skipped["image skipped"] == 1
    assert any("train.csv:" in e for e in report.examples["malformed row"])
    recs = records(report.outputs["train"])
    assert report.written == n + 1 - 5 and recs[0]["meta"]["row"] == 0
    assert recs[0]["options"][ord(recs[0]["answer"]) - 65] == recs[0]["meta"]["answer_text"]
    (src / "test.csv").write_text("Figure_path,Question\nx.jpg,q\n")
    report = convert_pmc_vqa(src, tmp_path / "out2", files=["test.csv"])
    assert report.skipped == {"malformed CSV": 1} and "Answer" in report.examples["malformed CSV"][0]
    with pytest.raises(ValueError, match="mode"):
        convert_pmc_vqa(src, tmp_path / "out3", mode="free")


def test_pmc_vqa_mc_without_choice_columns_is_refused(raw, tmp_path):
    """mode 'mc' on a CSV without the Choice columns skipped every row, said only in the report; it is now an error
    naming the file and the missing columns, and saying to convert with mode 'open'."""
    src = copy_of(raw, "pmc_vqa", tmp_path)
    path = src / "train.csv"
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    keep = [k for k, name in enumerate(header) if name not in ("Choice C", "Choice D")]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([[row[k] for k in keep] for row in [header, *rows]])
    with pytest.raises(DomainError, match=r"train\.csv: mode 'mc' needs the columns Choice A-D, and this file has no "
                                          r"Choice C, Choice D; convert it with mode 'open' \(--option mode=open\)"):
        convert_pmc_vqa(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    opened = convert_pmc_vqa(src, tmp_path / "open", mode="open", files=["train.csv"], progress=False)
    assert opened.written == len(rows) and not opened.skipped


def test_pmc_vqa_counts_a_bad_figure_once_as_the_other_sets_do(raw, tmp_path):
    """PMC-VQA had its own copy of the image-once logic, which counted a figure path leaving the images folder once
    per row naming it (VQA-RAD and SLAKE: once, then each row as 'image skipped'); it now shares _image_once."""
    src = copy_of(raw, "pmc_vqa", tmp_path)
    path = src / "train.csv"
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    rows[0][0] = rows[1][0] = "../outside.jpg"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    report = convert_pmc_vqa(src, tmp_path / "out", files=["train.csv"], progress=False)
    assert report.skipped == {PATH_ESCAPES: 1, "image skipped": 2}, report.skipped
    assert report.written == len(rows) - 2


def test_an_images_folder_that_is_not_there_is_an_error(raw, tmp_path):
    """A mistyped images_dir (or an image folder not unpacked) gave an empty conversion, every question counted as
    a skipped image; it is now an error naming the folder, before anything is written."""
    nowhere = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=r"nowhere: no such folder \(images_dir: the VQA-RAD images\)"):
        convert_vqa_rad(raw / "vqa_rad", tmp_path / "o1", images_dir=nowhere, progress=False)
    with pytest.raises(ValueError, match=r"nowhere: no such folder \(images_dir: the PMC-VQA images\)"):
        convert_pmc_vqa(raw / "pmc_vqa", tmp_path / "o2", images_dir=nowhere, progress=False)
    src = copy_of(raw, "vqa_rad", tmp_path)
    shutil.rmtree(src / "VQA_RAD Image Folder")
    with pytest.raises(ValueError, match=r"VQA_RAD Image Folder: no such folder"):
        convert_vqa_rad(src, tmp_path / "o3", progress=False)
    slake = copy_of(raw, "slake", tmp_path)
    shutil.rmtree(slake / "Slake1.0" / "imgs")
    with pytest.raises(ValueError, match=r"imgs: no such folder \(the SLAKE images"):
        convert_slake(slake, tmp_path / "o4", progress=False)
    pmc = copy_of(raw, "pmc_vqa", tmp_path)
    shutil.rmtree(pmc / "images")
    with pytest.raises(ValueError, match=r"images: no such folder"):
        convert_pmc_vqa(pmc, tmp_path / "o5", progress=False)
    assert not any((tmp_path / f"o{k}").exists() for k in range(1, 6))


def test_slake_without_imgs_is_said_before_any_question_file_is_read(tmp_path, monkeypatch):
    """convert_slake read (and checked the languages of) every question file before finding imgs/ missing: a q_lang
    no question has was reported instead of the missing folder. Now the folder is checked first, nothing read."""
    import domains.medical.convert as convert

    slake = tmp_path / "Slake1.0"
    slake.mkdir()
    (slake / "train.json").write_text(json.dumps([{"qid": 1, "img_name": "xmlab0/source.jpg", "q_lang": "en",
                                                   "question": "Organ?", "answer": "Lung"}]), encoding="utf-8")
    read: list[Path] = []
    real_read = convert.read_json_file
    monkeypatch.setattr(convert, "read_json_file", lambda path, report: read.append(path) or real_read(path, report))
    with pytest.raises(DomainError, match=r"imgs: no such folder \(the SLAKE images"):
        convert_slake(slake, tmp_path / "out", q_lang="xx", progress=False)
    assert read == [] and not (tmp_path / "out").exists()


def test_pmc_vqa_a_label_of_several_letters_is_not_an_answer(raw, tmp_path):
    src = copy_of(raw, "pmc_vqa", tmp_path)
    path = src / "train.csv"
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    rows[0][7], rows[0][2] = "AB", "nothing like the choices"  # no single letter, no matching Answer: skipped
    rows[1][7] = "(BCD)"                                         # Answer equals one choice: recovered from it
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    report = convert_pmc_vqa(src, tmp_path / "out", files=["train.csv"])
    assert report.skipped == {"malformed row": 1}
    assert report.examples["malformed row"] == ["train.csv:2: Answer_label 'AB' is not A-D and Answer matches no "
                                                "single choice"]
    recs = records(report.outputs["train"])
    assert len(recs) == len(rows) - 1 and all(r["answer"] in "ABCD" and len(r["answer"]) == 1 for r in recs)
    assert recs[0]["meta"]["row"] == 1 and recs[0]["options"][ord(recs[0]["answer"]) - 65] == rows[1][2]


# --------------------------------------------------------------------------------------------- classification
def test_classification_png_and_dicom(raw, tmp_path):
    out = tmp_path / "out"
    report = assert_idempotent(convert_classification, raw / "classification", out, test_fraction=0.3)
    recs = all_records(report)
    check_wellformed(recs, out)
    labels = ["kidney cyst", "liver lesion", "lung nodule", "normal"]
    assert all(r["options"] == labels and r["task"] == "mc" for r in recs)
    assert all(r["options"][ord(r["answer"]) - 65] == r["meta"]["label"] for r in recs)
    n_files = sum(1 for _ in (raw / "classification").rglob("*.*"))
    assert report.written == n_files and not report.skipped
    dicom_recs = [r for r in recs if "patient" in r["meta"]]
    assert dicom_recs and all("source" not in r["meta"] and r["meta"]["patient"].startswith("anon") for r in dicom_recs)
    assert all(r["image"].endswith(".png") for r in dicom_recs)
    assert_no_phi(out)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the deliberately corrupt file
def test_classification_split_folders_dicom_without_suffix_and_bad_files(raw, tmp_path):
    src = tmp_path / "xray"
    for split in ("train", "test"):
        shutil.copytree(raw / "classification", src / split)
    dcm = next((src / "train" / "normal").glob("*.dcm"))
    dcm.rename(dcm.with_suffix(""))  # DICOM without a suffix: found by its DICM marker
    (src / "test" / "normal" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    (src / "test" / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "test" / "empty_class").mkdir()
    report = convert_classification(src, tmp_path / "out", dataset="xray")
    assert set(report.outputs) == {"train", "test"}
    assert report.skipped["unreadable DICOM"] == 1 and report.skipped["unreadable image"] == 1
    assert report.skipped["empty class folder"] == 1
    train = records(report.outputs["train"])
    n_train = sum(1 for p in (src / "train").rglob("*") if p.is_file())
    assert len(train) == n_train
    assert report.outputs["train"].name == "xray_train.jsonl"


def test_gzipped_dicom_files_are_classified(raw, tmp_path):
    """``.dcm.gz`` (read_dicom reads it) was no DICOM and no image to classification: its files were ignored
    without a word, a class of them reported as an empty folder."""
    import gzip

    src = copy_of(raw, "classification", tmp_path)
    for dcm in sorted(src.rglob("*.dcm")):
        dcm.with_name(dcm.name + ".gz").write_bytes(gzip.compress(dcm.read_bytes()))
        dcm.unlink()
    report = convert_classification(src, tmp_path / "out", test_fraction=0)
    n_files = sum(1 for p in src.rglob("*") if p.is_file())
    assert report.written == n_files and not report.skipped
    assert sum(1 for r in all_records(report) if "patient" in r["meta"]) == len(list(src.rglob("*.dcm.gz"))) > 0


def test_dicom_files_named_by_their_uid_are_found_by_their_first_bytes(raw, tmp_path):
    """PACS / CD exports name files by SOPInstanceUID (``1.2.840.113619.2.55.3.6046.504``): the suffix ``.504`` is
    no image suffix, so the first bytes decide (the DICM marker, or a dataset without preamble), for the upload
    reader and classification alike; they were ignored without a word."""
    from domains.medical.convert import is_dicom_file

    slices = sorted((raw / "dicom_qa" / "series" / "case01").glob("*.dcm"))
    uid_named = tmp_path / "upload" / "1.2.840.113619.2.55.3.6046.504"
    uid_named.parent.mkdir()
    shutil.copy(slices[0], uid_named)
    raw_named = tmp_path / "upload" / "1.2.840.113619.2.55.3.6046.505"  # no preamble, no meta
    ds = pydicom.dcmread(slices[0])
    ds.preamble, ds.file_meta = None, pydicom.dataset.FileMetaDataset()
    ds.save_as(raw_named, implicit_vr=True, little_endian=True, enforce_file_format=False)
    (tmp_path / "upload" / "notes.txt").write_text("1.2.840 not DICOM")
    (tmp_path / "upload" / "fake.png").write_bytes(slices[0].read_bytes())  # an image suffix is never DICOM
    assert [p.name for p in sorted((tmp_path / "upload").iterdir()) if is_dicom_file(p)] == [
        uid_named.name, raw_named.name]
    read_upload = get_domain("medical").demo_hooks["read_upload"]
    for path in (uid_named, raw_named):
        shown = read_upload([path])
        assert shown["labels"] == ["slice 1/1"] and shown["info"]["modality"] == "CT"
    src = tmp_path / "cls"
    for cls, offset in (("normal", 0), ("tumor", 6)):
        (src / cls).mkdir(parents=True)
        for k, f in enumerate(slices[offset:offset + 3]):
            shutil.copy(f, src / cls / f"1.2.840.113619.2.55.3.{offset + k}")
    report = convert_classification(src, tmp_path / "out")
    assert report.written == 6 and not report.skipped


# --------------------------------------------------------------------------------------------- dicom_qa
def test_dicom_qa_records_boxes_slices_and_no_phi(raw, tmp_path):
    out = tmp_path / "out"
    report = assert_idempotent(convert_dicom_qa, raw / "dicom_qa", out)
    qa = json.loads((raw / "dicom_qa" / "qa.json").read_text())["questions"]
    recs = all_records(report)
    check_wellformed(recs, out)
    assert report.written == len(qa) and set(report.outputs) == {"train", "test"}
    # patient 1 is marked BurnedInAnnotation=YES: one warning per slice file used, and kept
    assert set(report.warnings) == {BURNED_IN_WARNING} and not report.skipped
    assert "--option skip_burned_in=true" in report.warning_examples[BURNED_IN_WARNING][0]  # as typed on the CLI
    assert "written with a warning: burned-in annotation" in report.table()
    tasks = {r["task"] for r in recs}
    assert tasks == {"med_vqa", "grounding", "mc"}
    by_id = {r["meta"]["question_id"]: r for r in recs}
    for q in qa:
        rec = by_id[q["id"]]
        assert rec["meta"]["slices"] == q["slices"] and rec["meta"]["n_slices"] == 12
        if q["type"] == "grounding":
            ((phrase, boxes),) = parse_ref_boxes(rec["answer"], rec["width"], rec["height"])
            assert phrase == "lesion" and len(boxes) == len(q["boxes"])
            for got, want in zip(boxes, q["boxes"]):
                assert max(abs(a - b) for a, b in zip(got, want)) <= 0.5  # within half a grid step at 64 px
        elif q["type"] == "mc":
            assert rec["options"][ord(rec["answer"]) - 65] == q["answer"]
        else:
            assert rec["answer"] == q["answer"] and rec["meta"]["answer_type"] == q["type"].upper()
    multi = [r for r in recs if isinstance(r["image"], list)]
    assert multi and all(len(r["image"]) == 3 for r in multi)
    assert multi[0]["conversations"][0]["value"].startswith("Slice ")
    assert multi[0]["conversations"][0]["value"].count(": <image>\n") == 3
    patients = {r["meta"]["patient"] for r in recs}
    assert len(patients) == 3 and all(p.startswith("anon") for p in patients)
    assert_no_phi(out)


def test_dicom_qa_slices_follow_anatomy_and_windows(raw, tmp_path):
    """Slice k of the QA file is the k-th along the patient axis, whatever the file names; the window changes
    the rendered pixels."""
    from domains.medical.dicom import WINDOW_PRESETS
    from domains.medical.synthetic import _CODE, make_case, window_to_uint8

    out = tmp_path / "out"
    convert_dicom_qa(raw / "dicom_qa", out)
    recs = records(out / "dicom_qa_train.jsonl")
    rec = next(r for r in recs if r["meta"]["question_id"].startswith("case02") and r["meta"]["window"] == "abdomen"
               and not isinstance(r["image"], list))
    case = make_case([_CODE["dicom_qa"], 1, 1, 1], 64, 12)
    k = rec["meta"]["slices"][0]
    with Image.open(out / rec["image"]) as im:
        got = __import__("numpy").asarray(im.convert("L")).astype(int)
    want = window_to_uint8(case.hu[k], WINDOW_PRESETS["abdomen"]).astype(int)
    assert abs(got - want).max() <= 2
    lung = convert_dicom_qa(raw / "dicom_qa", tmp_path / "lung", window="lung", dataset="lung_qa")
    windows = {r["meta"]["window"] for r in all_records(lung)}
    assert "file" not in windows and {"lung", "abdomen", "c40w400"} <= windows  # null windows use the option
    own = {r["meta"]["window"] for r in recs}
    assert "file" in own  # the file's own WindowCenter / WindowWidth
    custom = convert_dicom_qa(raw / "dicom_qa", tmp_path / "custom", window="300/1500")
    assert "c300w1500" in {r["meta"]["window"] for r in all_records(custom)}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the deliberately corrupt file
def test_dicom_qa_bad_input(raw, tmp_path):
    src = copy_of(raw, "dicom_qa", tmp_path)
    doc = json.loads((src / "qa.json").read_text())
    qs = doc["questions"]
    n = len(qs)
    base = next(q for q in qs if q["type"] == "closed" and q["series"].endswith("case02"))
    extra = [
        {**base, "id": "x-split", "split": "dev"},
        {**base, "id": "x-type", "type": "essay"},
        {**base, "id": "x-empty", "answer": " "},
        {**base, "id": "x-slice", "slices": [40]},
        {**base, "id": "x-window", "window": "disco"},
        {**base, "id": "x-escape", "series": "../../etc"},
        {**base, "id": "x-missing", "series": "series/case99"},
        {**base, "id": "x-grid", "type": "grounding", "boxes": [[100, 100, 120, 130]]},
        {**base, "id": "x-most", "type": "grounding", "boxes": [[0, 0, 1000, 1000]]},  # 0-1000 grid given as pixels
        {**base, "id": "x-two", "type": "grounding", "slices": [1, 2], "boxes": [[1, 1, 5, 5]]},
        {**base, "id": "x-mc", "type": "mc", "options": ["a", "b"], "answer": "c"},
        {**base, "id": "x-inst", "slices": None, "instances": [3]},
        {**base, "id": "x-corrupt", "series": "series/corrupt"},
        qs[0],  # duplicate id
        ["not", "an", "object"],
    ]
    corrupt = src / "series" / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    doc["questions"] = qs + extra
    (src / "qa.json").write_text(json.dumps(doc))
    report = convert_dicom_qa(src, tmp_path / "out")
    sk = report.skipped
    assert sk["unknown split"] == 1 and sk["unknown question type"] == 1 and sk["empty answer"] == 1
    assert sk["bad slice"] == 2 and sk["bad window"] == 1 and sk["path escapes data root"] == 1
    assert sk["box outside image"] == 2 and sk["malformed record"] == 2 and sk["duplicate id"] == 1
    assert sk["unreadable series"] == 2 and sk["series skipped"] == 2
    assert report.written == n + 1  # the InstanceNumber question converts
    inst = next(r for r in all_records(report) if r["meta"]["question_id"] == "x-inst")
    assert inst["meta"]["slices"] == [2]  # InstanceNumber 3 is the third slice from the feet
    assert any("x-split" in e for e in report.examples["unknown split"])
    assert any("x-most" in e and "% outside" in e for e in report.examples["box outside image"])
    # the burned-in patient dropped on request
    strict = convert_dicom_qa(raw / "dicom_qa", tmp_path / "strict", skip_burned_in=True)
    case1 = sum(1 for q in qs if q["series"].endswith("case01"))
    assert strict.written == n - case1 and strict.skipped["burned-in annotation"] == case1
    assert BURNED_IN_WARNING not in strict.warnings
    with pytest.raises(ValueError, match="window option"):
        convert_dicom_qa(raw / "dicom_qa", tmp_path / "o1", window="disco")
    with pytest.raises(ValueError, match="window option"):
        convert_classification(raw / "classification", tmp_path / "o1", window=[40, -5])
    for frame in ("x", True, 1.7, -1):  # "x" was a raw int() ValueError; True and 1.7 read as frame 1
        with pytest.raises(DomainError, match="frame option: expected a frame index"):
            convert_classification(raw / "classification", tmp_path / "o1", frame=frame)
    (src / "qa.json").write_text("{")
    assert convert_dicom_qa(src, tmp_path / "o2").skipped == {"malformed JSON": 1}
    with pytest.raises(ValueError, match="qa.json"):
        convert_dicom_qa(tmp_path, tmp_path / "o3")


def test_dicom_qa_skips_a_series_with_a_damaged_slice_and_names_the_file(raw, tmp_path, capsys):
    """`adapt convert medical dicom_qa` with one slice file of case02 cut to 200 bytes: the series is skipped
    (its questions counted) and the table names the file -- it used to convert with that slice silently
    missing and every later slice index pointing at the next slice's pixels."""
    from adapt.cli import main

    src = copy_of(raw, "dicom_qa", tmp_path)
    qs = json.loads((src / "qa.json").read_text())["questions"]
    case2 = sum(1 for q in qs if q["series"].endswith("case02"))
    damaged = sorted((src / "series" / "case02").iterdir())[3]
    damaged.write_bytes(damaged.read_bytes()[:200])
    assert main(["convert", "medical", "dicom_qa", "--src", str(src), "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    assert "| skipped: unreadable series | 1 |" in table and damaged.name in table
    assert f"| skipped: series skipped | {case2} |" in table
    written = [r for p in sorted((tmp_path / "out").glob("*.jsonl")) for r in records(p)]
    assert len(written) == len(qs) - case2 and all(r["meta"]["n_slices"] == 12 for r in written)


def test_plugin_registry_and_cli_names():
    plugin = get_domain("medical")
    assert set(plugin.converters) == {"vqa_rad", "slake", "pmc_vqa", "classification", "dicom_qa"}
    assert set(plugin.metrics) == {"med_vqa"} and plugin.recipes == ("medical_pocket-tiny_full",)
    assert {".dcm", ".dicom", ".png", ".jpg", ".jpeg"} <= set(plugin.readers)
    assert {"read_upload", "draw_answer"} <= set(plugin.demo_hooks)


# --------------------------------------------------------------------------------------------- plugin hooks
def test_readers_and_demo_hooks(raw, tmp_path):
    import zipfile

    plugin = get_domain("medical")
    series_dir = raw / "dicom_qa" / "series" / "case01"
    files = sorted(series_dir.glob("*.dcm"))
    img = plugin.read(files[0])
    assert img.mode == "RGB" and img.size == (64, 64)
    png = next((raw / "classification" / "normal").glob("*.png"))
    assert plugin.read(png).mode == "RGB"
    no_suffix = tmp_path / "slice"
    no_suffix.write_bytes(files[0].read_bytes())
    assert plugin.read(no_suffix).size == (64, 64)

    read_upload, draw_answer = plugin.demo_hooks["read_upload"], plugin.demo_hooks["draw_answer"]
    one = read_upload(files)
    assert len(one["images"]) == 1 and one["labels"] == ["slice 7/12"] and one["prompt"] is None
    three = read_upload(files, n_slices=3, window="lung")
    assert len(three["images"]) == 3 and three["prompt"].count("<image>") == 3
    assert three["prompt"].startswith("Slice ")  # the layout dicom_qa records train on
    assert all(label.startswith("slice ") and label.endswith("/12") for label in three["labels"])
    assert three["images"][0].tobytes() != read_upload(files, slices=[three_index(three)], window="abdomen")["images"][0].tobytes()
    assert any("burned-in" in w for w in three["warnings"])
    info_text = json.dumps(three["info"])
    assert three["info"] and not any(word in info_text for word in PHI)
    with pytest.raises(ValueError, match="out of range"):
        read_upload(files, slices=[99])
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in files:
            z.write(f, f"study/{f.name}")
    zipped = read_upload([archive], slices=[0, 11])
    assert zipped["labels"] == ["slice 1/12", "slice 12/12"]
    picture = read_upload([png])
    assert picture["labels"] is None and picture["prompt"] is None and picture["warnings"] == []
    with pytest.raises(ValueError, match="no DICOM or image"):
        read_upload([tmp_path / "notes.txt"])

    drawn = draw_answer(one["images"], "<ref>lesion</ref><box>[[250, 250, 750, 750]]</box>")
    before, after = one["images"][0].convert("RGB"), drawn[0]
    assert after.size == before.size and after.getpixel((16, 32)) != before.getpixel((16, 32))  # the box edge
    assert after.getpixel((2, 60)) == before.getpixel((2, 60))  # far from the box: untouched


def test_a_zip_inside_an_uploaded_zip_is_named_not_opened(raw, tmp_path):
    import zipfile

    read_upload = get_domain("medical").demo_hooks["read_upload"]
    files = sorted((raw / "dicom_qa" / "series" / "case01").glob("*.dcm"))
    inner = tmp_path / "series.zip"
    with zipfile.ZipFile(inner, "w") as z:
        for f in files:
            z.write(f, f"study/{f.name}")
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as z:
        z.write(inner, "inner/series.zip")
    with pytest.raises(ValueError) as info:
        read_upload([nested])
    assert str(info.value) == ("no DICOM or image files among the upload (nested.zip); zips inside a zip are not "
                               "opened (nested.zip: inner/series.zip): upload the inner zip itself")
    with zipfile.ZipFile(nested, "a") as z:  # beside a series: shown, with a warning naming the inner zip
        for f in files:
            z.write(f, f"outer/{f.name}")
    shown = read_upload([nested])
    assert shown["labels"] == ["slice 7/12"]
    assert any("zips inside a zip are not opened (nested.zip: inner/series.zip)" in w for w in shown["warnings"])


def three_index(result: dict) -> int:
    return int(result["labels"][0].split()[1].split("/")[0]) - 1


def test_classification_never_writes_two_sources_to_one_image(tmp_path):
    """Kermany-style split folders holding the same file name, class folders that clean to one name (正常,
    異常) and a.jpg beside a.jpeg each keep their own image."""
    src = tmp_path / "src"
    shades = {"train/正常/IM-1.png": 0, "train/異常/IM-1.png": 255, "test/正常/IM-1.png": 60,
              "test/異常/IM-1.png": 190, "train/正常/a.jpg": 120, "train/正常/a.jpeg": 240}
    for name, shade in shades.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), shade).save(src / name, quality=100)
    out = tmp_path / "out"
    recs = all_records(convert_classification(src, out))
    assert len(recs) == 6
    assert len({r["image"] for r in recs}) == len({r["id"] for r in recs}) == 6, [r["image"] for r in recs]
    found = []
    for r in recs:
        pixel = Image.open(out / r["image"]).convert("L").getpixel((8, 8))
        found += [name for name, shade in shades.items()
                  if abs(pixel - shade) <= 3 and name.split("/")[1] == r["meta"]["class_dir"]]
    assert sorted(found) == sorted(shades)  # every source once, in its own class


def test_classification_images_lose_their_metadata_and_names(tmp_path):
    """A hospital's PNG / JPEG were copied byte for byte: the PNG's tEXt (PatientName, MRN) and the JPEG's EXIF
    ImageDescription went into the output, and file names into ids, image names and meta["source"]. They are
    re-saved from the decoded pixels (upright per EXIF orientation, lossless) without metadata, under keyed
    hashes of their paths."""
    from PIL import PngImagePlugin

    from model.tiling import load_image

    src = tmp_path / "src"
    pixels = Image.frombytes("RGB", (24, 16), bytes(range(256)) * 4 + bytes(128))
    for cls in ("normal", "pneumonia"):
        (src / cls).mkdir(parents=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("PatientName", "DOE^JANE")
        info.add_text("Comment", "MRN987654 DOB 19650412")
        pixels.save(src / cls / "DOE_JANE_MRN987654_0.png", pnginfo=info)
        exif = Image.Exif()
        exif[0x010E] = "Jane Doe MRN987654"  # ImageDescription
        exif[0x0112] = 6  # Orientation: stored sideways, shown turned 90 degrees
        pixels.save(src / cls / "SMITH_JOHN_1.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    report = assert_idempotent(convert_classification, src, out, test_fraction=0.5)
    recs = all_records(report)
    assert len(recs) == 4 and not report.skipped
    assert_no_phi(out)
    assert not any("SMITH" in p.name or "JOHN" in p.name for p in out.rglob("*"))
    assert all("source" not in r["meta"] and "DOE" not in json.dumps(r) and "SMITH" not in json.dumps(r) for r in recs)
    for r in recs:
        assert r["image"].endswith(".png")
        with Image.open(out / r["image"]) as im:
            assert im.format == "PNG" and not im.info.get("exif") and not getattr(im, "text", {})
            assert not set(im.info) & {"PatientName", "Comment", "exif", "icc_profile"}
            got = im.convert("RGB")
        assert (r["width"], r["height"]) == got.size
        want = [load_image(p) for p in (src / r["meta"]["class_dir"]).iterdir()]
        assert any(w.size == got.size and w.tobytes() == got.tobytes() for w in want)  # lossless, upright
    assert sorted(r["width"] for r in recs) == [16, 16, 24, 24]  # the JPEGs stand upright (16 x 24)


def test_pmc_vqa_an_unclosed_quote_is_refused_not_merged(raw, tmp_path):
    """An opening quote never closed swallows the lines after it into one field: that row is refused with the
    lines it ran over, never written as one garbage question."""
    src = copy_of(raw, "pmc_vqa", tmp_path)
    path = src / "train.csv"
    lines = path.read_text().splitlines()
    figure, rest = lines[3].split(",", 1)
    lines[3] = f'{figure},"5 mm lesion: what modality?,{rest.split(",", 1)[1]}'  # the quote never closes
    figure, rest = lines[5].split(",", 1)
    lines[5] = f'{figure},"Which modality is shown?",{rest.split(",", 1)[1]}'  # a quoted field ends it later
    path.write_text("\n".join(lines) + "\n")
    report = convert_pmc_vqa(src, tmp_path / "out", files=["train.csv"])
    assert report.skipped == {"malformed row": 1}, report.table()
    assert "train.csv:4: one row runs over lines 4-6" in report.examples["malformed row"][0]
    recs = records(report.outputs["train"])
    assert report.written == len(recs) == len(lines) - 1 - 3
    assert not any("PMC" in r["conversations"][0]["value"] for r in recs)


def test_classification_refuses_symlinks_out_of_the_source(tmp_path):
    src = tmp_path / "src"
    for cls in ("normal", "abnormal"):
        (src / cls).mkdir(parents=True)
        Image.new("L", (16, 16), 9).save(src / cls / "a.png")
    secret = tmp_path / "secret.dcm"
    secret.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (src / "normal" / "link.dcm").symlink_to(secret)
    report = convert_classification(src, tmp_path / "out", test_fraction=0)
    assert report.skipped == {"path escapes data root": 1}, report.table()
    assert len(all_records(report)) == 2


# --------------------------------------------------------------------------------------------- de-identification key
def test_default_pseudonyms_are_keyed_by_a_private_machine_key(raw, tmp_path, monkeypatch):
    """Without a salt, pseudonyms were HMAC('', PatientID) and series keys SHA-1(SeriesInstanceUID): anyone could
    recompute them from a guessed MRN. They are keyed by this machine's key now (made once, mode 0600, outside
    --out, named in the report but never printed); re-runs give the same bytes; --option salt still wins."""
    from domains.base import DomainError
    from domains.medical import deid
    from domains.medical.convert import deid_key_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    first = convert_dicom_qa(raw / "dicom_qa", tmp_path / "a")
    key_file = tmp_path / "cfg" / "pocket-adapt" / "deid-key"
    assert deid_key_path() == key_file and key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    ds = pydicom.dcmread(sorted((raw / "dicom_qa" / "series" / "case01").glob("*.dcm"))[0])
    recs = all_records(first)
    patients = {r["meta"]["patient"] for r in recs}
    unkeyed_patient = "anon-" + hmac.new(b"", f"id:|{ds.PatientID}".encode(), hashlib.sha256).hexdigest()[:12]
    assert unkeyed_patient not in patients and deid.pseudonym(ds, salt=key) in patients
    unkeyed = hashlib.sha1(f"\x1f{ds.SeriesInstanceUID}".encode()).hexdigest()[:10]
    assert unkeyed not in {r["meta"]["series"] for r in recs}
    assert str(key_file) in first.table() and key not in first.table()
    for p in (tmp_path / "a").rglob("*"):
        assert key not in p.name and (p.is_dir() or key.encode() not in p.read_bytes())
    convert_dicom_qa(raw / "dicom_qa", tmp_path / "b")  # a re-run: same key, same bytes
    assert key_file.read_text().strip() == key
    for name in ("dicom_qa_train.jsonl", "dicom_qa_test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    shared = convert_dicom_qa(raw / "dicom_qa", tmp_path / "c", salt="project secret")
    assert deid.pseudonym(ds, salt="project secret") in {r["meta"]["patient"] for r in all_records(shared)}
    assert "salt given" in shared.table() and str(key_file) not in shared.table()
    key_file.write_text("not a key\n")
    with pytest.raises(DomainError, match="deid-key: not a pocket-adapt de-identification key"):
        convert_dicom_qa(raw / "dicom_qa", tmp_path / "d")


def test_undeclared_burned_in_text_in_ultrasound_and_secondary_capture_is_handled(raw, tmp_path):
    """Only BurnedInAnnotation YES was acted on: an ultrasound or secondary capture file without the attribute
    converted silently and redact_burned_in left its pixels as they were (the demo warns through
    deid.burned_in_risk). Such files are warned about, skipped or redacted like declared ones now;
    RecognizableVisualFeatures YES is warned about."""
    from domains.medical.convert import BURNED_IN_REDACTED, RECOGNIZABLE_WARNING

    slices = sorted((raw / "dicom_qa" / "series" / "case02").glob("*.dcm"))
    src = tmp_path / "src"
    for cls, offset in (("a", 0), ("b", 3)):
        (src / cls).mkdir(parents=True)
        for k, f in enumerate(slices[offset:offset + 3]):
            ds = pydicom.dcmread(f)
            if k == 0:  # ultrasound, flag absent
                ds.Modality = "US"
                del ds.BurnedInAnnotation
            elif k == 1:  # secondary capture, flag absent, a face
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
                del ds.BurnedInAnnotation
                ds.RecognizableVisualFeatures = "YES"
            else:  # ultrasound declared free of burned-in text
                ds.Modality, ds.BurnedInAnnotation = "US", "NO"
            ds.save_as(src / cls / f"{k}.dcm")
    kept = convert_classification(src, tmp_path / "kept", test_fraction=0)
    assert kept.written == 6 and kept.warnings == {BURNED_IN_WARNING: 4, RECOGNIZABLE_WARNING: 2}, kept.table()
    assert any("BurnedInAnnotation is not given in a US file" in e for e in kept.warning_examples[BURNED_IN_WARNING])
    skipped = convert_classification(src, tmp_path / "skipped", test_fraction=0, skip_burned_in=True)
    assert skipped.written == 2 and skipped.skipped == {"burned-in annotation": 4}
    redacted = convert_classification(src, tmp_path / "redacted", test_fraction=0, redact_burned_in=True)
    recs = all_records(redacted)
    assert redacted.warnings[BURNED_IN_REDACTED] == 4
    flagged = [r for r in recs if "redacted" in r["meta"]]
    assert len(flagged) == 4 and all(r["image"].endswith("_redacted.png") for r in flagged)
    for r in flagged:
        (x1, y1, x2, y2), *_ = r["meta"]["redacted"][0]
        with Image.open(tmp_path / "redacted" / r["image"]) as im:
            assert im.convert("L").crop((x1, y1, x2, y2)).getextrema() == (0, 0)


def test_a_rerun_removes_the_images_no_record_names(raw, tmp_path):
    """dicom_qa run again with redact_burned_in left the first run's unredacted renders (s000_file.png beside
    s000_file_redacted.png), and with skip_burned_in the skipped files' images, in --out. A converter's image folder
    now holds only what its records name; the rest is removed and listed; nothing else is touched."""
    out = tmp_path / "out"
    convert_dicom_qa(raw / "dicom_qa", out)
    (out / "notes.txt").write_text("mine")
    (out / "images" / "other").mkdir()
    (out / "images" / "other" / "x.png").write_bytes(b"mine")
    before = {p for p in (out / "images" / "dicom_qa").rglob("*.png")}
    redacted = convert_dicom_qa(raw / "dicom_qa", out, redact_burned_in=True)
    named = {out / i for r in all_records(redacted) for i in (r["image"] if isinstance(r["image"], list) else [r["image"]])}
    left = {p for p in (out / "images" / "dicom_qa").rglob("*") if p.is_file()}
    assert left == named and any(p.name.endswith("_redacted.png") for p in left)
    assert redacted.removed and set(redacted.removed) == before - named
    assert all(not p.name.endswith("_redacted.png") for p in redacted.removed)
    assert "| removed: an earlier run's file this run did not make |" in redacted.table()
    strict = convert_dicom_qa(raw / "dicom_qa", out, skip_burned_in=True)
    named = {out / i for r in all_records(strict) for i in (r["image"] if isinstance(r["image"], list) else [r["image"]])}
    assert {p for p in (out / "images" / "dicom_qa").rglob("*") if p.is_file()} == named
    assert strict.removed and all(p.name.endswith("_redacted.png") for p in strict.removed)
    assert (out / "notes.txt").read_text() == "mine" and (out / "images" / "other" / "x.png").is_file()
    again = convert_dicom_qa(raw / "dicom_qa", out, skip_burned_in=True)
    assert not again.removed


def test_two_slices_at_one_position_are_named_in_a_warning(raw, tmp_path):
    """A series folder holding one slice twice (a re-export under a new SOPInstanceUID) used to convert with no
    word: the extra copy took a slice index and every later index moved. Now the report and the demo's upload
    warn, naming both files (not their folders)."""
    from domains.medical import read_upload
    from domains.medical.dicom import load_series

    src = copy_of(raw, "dicom_qa", tmp_path)
    folder = src / "series" / "case02"
    first = sorted(folder.iterdir())[4]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.99"
    ds.save_as(folder / "copy.dcm")
    assert load_series(raw / "dicom_qa" / "series" / "case02").same_position_note() is None
    report = convert_dicom_qa(src, tmp_path / "out", progress=False)
    assert report.warnings[SAME_POSITION_WARNING] == 1
    (example,) = report.warning_examples[SAME_POSITION_WARNING]
    assert f"{first.name} = copy.dcm" in example or f"copy.dcm = {first.name}" in example
    upload = read_upload(sorted(folder.iterdir()))
    assert any("share 1 position" in w and "copy.dcm" in w for w in upload["warnings"])


def test_reports_name_inputs_relative_to_the_source(raw, tmp_path):
    """Skipped and warned inputs used to be named by their full paths, which in hospital trees hold patient names
    in the folders above the source; now they are named relative to --src (the source itself as '.')."""
    top = tmp_path / "DOE^JANE 1965"
    cls = copy_of(raw, "classification", top)
    bad = next(p for p in sorted(cls.rglob("*.dcm")))
    bad.write_bytes(bad.read_bytes()[:50])
    report = convert_classification(cls, tmp_path / "out", progress=False)
    (example,) = report.examples["unreadable DICOM"]
    assert example.startswith(f"{bad.relative_to(cls).as_posix()}: not a DICOM file")
    qa = copy_of(raw, "dicom_qa", top)
    slice_file = sorted((qa / "series" / "case02").iterdir())[3]
    slice_file.write_bytes(slice_file.read_bytes()[:300])
    report = convert_dicom_qa(qa, tmp_path / "out2", progress=False)
    rows = [e for examples in (*report.examples.values(), *report.warning_examples.values()) for e in examples]
    assert any(e.startswith("series/case02: 1 damaged file") for e in rows)
    assert any(e.startswith("series/case01/") for e in report.warning_examples[BURNED_IN_WARNING])
    assert not any("DOE^JANE" in e for e in rows)
    assert "DOE^JANE" not in report.table().split("\n", 1)[1]


def test_an_images_dir_outside_the_source_is_named_relative_to_itself(raw, tmp_path):
    """VQA-RAD / PMC-VQA images read from an --option images_dir outside --src were named by their full paths in
    the report (a hospital path can hold a patient's name); now they read ``<images_dir>/<file>``."""
    src = copy_of(raw, "vqa_rad", tmp_path)
    images = tmp_path / "DOE^JANE 1965" / "imgs"
    shutil.move(src / "VQA_RAD Image Folder", images)
    rows = json.loads((src / "VQA_RAD Dataset Public.json").read_text())
    missing = rows[0]["image_name"]
    (images / missing).unlink()
    report = convert_vqa_rad(src, tmp_path / "out", images_dir=images, progress=False)
    assert report.written > 0
    rows = [e for examples in report.examples.values() for e in examples]
    assert f"<images_dir>/{missing}: no such file" in report.examples["missing image"]
    assert not any("DOE^JANE" in e or str(tmp_path) in e for e in rows), rows
    pmc = copy_of(raw, "pmc_vqa", tmp_path)
    shutil.move(pmc / "images", tmp_path / "DOE^JANE 1965" / "figures")
    figure = next(iter((tmp_path / "DOE^JANE 1965" / "figures").iterdir()))
    figure.write_bytes(b"not an image")
    report = convert_pmc_vqa(pmc, tmp_path / "out2", images_dir=tmp_path / "DOE^JANE 1965" / "figures",
                             progress=False)
    rows = [e for examples in report.examples.values() for e in examples]
    assert any(e.startswith(f"<images_dir>/{figure.name}") for e in rows), rows
    assert not any("DOE^JANE" in e for e in rows), rows


def test_a_slice_with_truncated_pixel_data_counts_once_as_a_file_and_once_per_question(raw, tmp_path):
    """A slice file whose pixel data was cut short (its header whole) used to be counted under 'unreadable DICOM'
    once per question asking for it; now the file counts once, under its name, and the questions under
    'slice skipped' (N files, M questions)."""
    from domains.medical import dicom

    src = copy_of(raw, "dicom_qa", tmp_path)
    doc = json.loads((src / "qa.json").read_text())
    qs = doc["questions"]
    series = dicom.load_series(src / "series" / "case01")
    k = next(q["slices"][0] for q in qs if q["series"].endswith("case01") and q.get("slices"))
    path, _ = series.slices[k]
    path.write_bytes(path.read_bytes()[:-2000])
    asking = [q for q in qs if q["series"].endswith("case01") and k in (q.get("slices") or [])]
    qs.append({**asking[0], "id": "other-window", "window": [40, 400]})  # another render of the same file
    (src / "qa.json").write_text(json.dumps(doc))
    report = convert_dicom_qa(src, tmp_path / "out", progress=False)
    assert report.skipped == {"unreadable DICOM": 1, "slice skipped": len(asking) + 1}, report.skipped
    (example,) = report.examples["unreadable DICOM"]
    assert example.startswith(f"series/case01/{path.name}: truncated or corrupt pixel data")
    assert all(f"slice {k} (series/case01/{path.name}): unreadable DICOM" in e
               for e in report.examples["slice skipped"])
    assert report.written == len(qs) - len(asking) - 1


def test_a_series_path_leaving_the_source_is_not_named_by_the_folders_around_it(raw, tmp_path):
    """A qa.json 'series' leading out of --src was reported with where it led as a full path ('(to /.../DOE^JANE
    1965/x)') or a symlink's full target: the folders around a source hold patient names. Now the path is said
    relative to --src and a symlink's target not at all."""
    top = tmp_path / "DOE^JANE 1965"
    src = copy_of(raw, "dicom_qa", top)
    (src / "link").symlink_to(top, target_is_directory=True)
    doc = json.loads((src / "qa.json").read_text())
    doc["questions"][0]["series"] = "../x"
    doc["questions"][1]["series"] = "link"
    (src / "qa.json").write_text(json.dumps(doc))
    report = convert_dicom_qa(src, tmp_path / "out", progress=False)
    rows = report.examples["path escapes data root"]
    assert len(rows) == 2 and not any("DOE^JANE" in e or str(tmp_path) in e for e in rows), rows
    assert any(e.endswith("'../x' leads outside . (to ../x)") for e in rows), rows
    assert any(e.endswith("'link' leads through a symlink to a place outside .") for e in rows), rows


def test_vqa_sets_never_write_two_source_images_to_one_output(tmp_path):
    """VQA-RAD, SLAKE and PMC-VQA rows naming a.jpg and a.JPG (two files), or a.bmp beside a_bmp.png, each get
    their own output image: one was written over the other, and a record showed the other's pixels."""
    shades = {"a.jpg": 0, "a.JPG": 250, "b.bmp": 80, "b_bmp.png": 170}

    def images(folder: Path) -> None:
        folder.mkdir(parents=True)
        for name, shade in shades.items():
            Image.new("L", (16, 16), shade).save(folder / name, format=Image.registered_extensions()[
                Path(name).suffix.lower()], quality=100)

    def check(recs: list[dict], out: Path, name_of) -> None:
        assert len(recs) == len(shades)
        for r in recs:
            pixel = Image.open(out / r["image"]).convert("L").getpixel((8, 8))
            assert abs(pixel - shades[name_of(r)]) <= 3, (r["image"], name_of(r), pixel)

    rad = tmp_path / "rad"
    images(rad / "VQA_RAD Image Folder")
    (rad / "VQA_RAD Dataset Public.json").write_text(json.dumps(
        [{"qid": k, "image_name": name, "question": "Is it dark?", "answer": "yes", "answer_type": "CLOSED",
          "phrase_type": "freeform"} for k, name in enumerate(shades)]))
    check(all_records(convert_vqa_rad(rad, tmp_path / "rad_out", progress=False)), tmp_path / "rad_out",
          lambda r: r["meta"]["image_name"])

    slake = tmp_path / "Slake1.0"
    images(slake / "imgs" / "xmlab0")
    (slake / "train.json").write_text(json.dumps(
        [{"qid": k, "img_name": f"xmlab0/{name}", "question": "Is it dark?", "answer": "yes", "answer_type": "CLOSED",
          "q_lang": "en", "img_id": k} for k, name in enumerate(shades)]))
    names = list(shades)
    check(all_records(convert_slake(slake, tmp_path / "slake_out", progress=False)), tmp_path / "slake_out",
          lambda r: names[r["meta"]["img_id"]])

    pmc = tmp_path / "pmc"
    images(pmc / "images")
    with (pmc / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Figure_path", "Question", "Answer"])
        writer.writerows([name, "What is shown?", "a square"] for name in shades)
    check(all_records(convert_pmc_vqa(pmc, tmp_path / "pmc_out", mode="open", progress=False)),
          tmp_path / "pmc_out", lambda r: r["meta"]["figure"])


def test_classification_refuses_two_class_folders_giving_one_label(tmp_path):
    """Liver_Lesion/ and liver-lesion/ beside each other were merged into one class without a word; now an error
    naming both (the same class folder under train/ and test/ still makes one class)."""
    src = tmp_path / "src"
    for name in ("Liver_Lesion", "liver-lesion", "normal"):
        (src / name).mkdir(parents=True)
        Image.new("L", (16, 16), 9).save(src / name / "a.png")
    with pytest.raises(DomainError, match="'Liver_Lesion' and 'liver-lesion' both give the label 'liver lesion'"):
        convert_classification(src, tmp_path / "out", progress=False)
    split = tmp_path / "split"
    for name in ("train/normal", "test/normal", "train/cyst", "test/cyst"):
        (split / name).mkdir(parents=True)
        Image.new("L", (16, 16), 9).save(split / name / "a.png")
    recs = all_records(convert_classification(split, tmp_path / "out2", progress=False))
    assert len(recs) == 4 and {r["answer"] for r in recs} == {"A", "B"}


def test_file_options_that_leave_src_are_refused(raw, tmp_path):
    """`pmc_vqa files=` and `dicom_qa qa_file=` were joined to src unchecked: ``../`` steps or an absolute path read
    a CSV / JSON from anywhere; each is now refused with one line naming the option, before anything is written."""
    pmc = copy_of(raw, "pmc_vqa", tmp_path)
    outside = tmp_path / "elsewhere.csv"
    shutil.copy(pmc / "train.csv", outside)
    for name in ("../elsewhere.csv", str(outside)):
        with pytest.raises(DomainError, match=r"^files option: .*elsewhere\.csv"):
            convert_pmc_vqa(pmc, tmp_path / "o_pmc", files=[name], progress=False)
        assert not (tmp_path / "o_pmc").exists()
    dq = copy_of(raw, "dicom_qa", tmp_path)
    shutil.copy(dq / "qa.json", tmp_path / "qa_out.json")
    for name in ("../qa_out.json", str(tmp_path / "qa_out.json")):
        with pytest.raises(DomainError, match=r"^qa_file option: .*qa_out\.json"):
            convert_dicom_qa(dq, tmp_path / "o_dq", qa_file=name, progress=False)
        assert not (tmp_path / "o_dq").exists()


def test_pmc_vqa_files_given_as_one_name(raw, tmp_path):
    """`--option files=train.csv` reaches the converter as text, which was iterated by character ("." read src
    itself: a raw IsADirectoryError); one name now means that file, and a folder named is refused in one line."""
    pmc = copy_of(raw, "pmc_vqa", tmp_path)
    one = convert_pmc_vqa(pmc, tmp_path / "one", files="train.csv", progress=False)
    listed = convert_pmc_vqa(pmc, tmp_path / "listed", files=["train.csv"], progress=False)
    assert one.written == listed.written > 0 and set(one.outputs) == {"train"}
    with pytest.raises(DomainError, match=r"^files option: 'images' is a folder"):
        convert_pmc_vqa(pmc, tmp_path / "folder", files=["images"], progress=False)


def test_slake_splits_given_as_one_name(raw, tmp_path):
    """`--option splits=test` reaches the converter as text, which was iterated by character ("unknown SLAKE
    split(s) ['t', 'e', 's', 't']"); one name now means that split."""
    one = convert_slake(raw / "slake", tmp_path / "one", splits="test", progress=False)
    listed = convert_slake(raw / "slake", tmp_path / "listed", splits=["test"], progress=False)
    assert one.written == listed.written > 0 and set(one.outputs) == set(listed.outputs) == {"test"}


@pytest.mark.parametrize("splits", [[["train"]], [None], 5, {"train": 1}, []])
def test_slake_splits_that_are_no_names_are_refused_naming_the_option(raw, tmp_path, splits):
    """`splits: [[train]]` (a list inside a list from YAML) crashed with a raw "unhashable type" TypeError at the
    known-split check; anything but a name or a list of names is refused with one line naming the option."""
    with pytest.raises(DomainError, match=r"^splits option: expected a SLAKE split name or a list of them"):
        convert_slake(raw / "slake", tmp_path / "x", splits=splits, progress=False)
    assert not (tmp_path / "x").exists()
