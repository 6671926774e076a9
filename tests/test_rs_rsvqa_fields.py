"""RSVQA questions / answers with fields of the wrong shape (an id list inside the list, a null img_id, a numeric
question) are skipped as ``malformed record`` naming the field; an unhashable id crashed the whole conversion."""

from __future__ import annotations

import json

import pytest

from tests.converted import records
from tests.deps import require

require("rasterio")

from domains.remote_sensing.convert import convert_rsvqa
from domains.remote_sensing.synthetic import generate

BAD = [
    ("answers_ids", [[0]], "answers_ids must be an answer id or a non-empty list of them, got [[0]]"),
    ("answers_ids", {"a": 0}, "answers_ids must be an answer id or a non-empty list of them, got {'a': 0}"),
    ("answers_ids", None, "answers_ids must be an answer id or a non-empty list of them, got None"),
    ("img_id", [0], "img_id must be a number or a string, got [0]"),
    ("img_id", None, "img_id must be a number or a string, got None"),
    ("question", 7, "question must be a non-empty string, got 7"),
    ("id", {"n": 1}, "id must be a number or a string, got {'n': 1}"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD)
def test_a_malformed_question_field_is_skipped_and_named(tmp_path, field, value, message):
    src = generate("rsvqa_lr", tmp_path / "raw", n=3)
    qpath = src / "LR_split_train_questions.json"
    data = json.loads(qpath.read_text())
    live = [q for q in data["questions"] if "question" in q]
    live[0][field] = value
    qpath.write_text(json.dumps(data))
    report = convert_rsvqa(src, tmp_path / "out", splits=["train"], progress=False)
    assert report.skipped.get("malformed record") == 1
    assert report.examples["malformed record"][0].endswith(message)
    assert report.written == len(live) - 1 - report.skipped.get("inactive question", 0)


def test_an_answer_with_an_unhashable_id_is_passed_over(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "raw", n=3)
    apath = src / "LR_split_train_answers.json"
    data = json.loads(apath.read_text())
    data["answers"].append({"id": [1, 2], "answer": "yes", "active": True})
    apath.write_text(json.dumps(data))
    before = convert_rsvqa(generate("rsvqa_lr", tmp_path / "clean", n=3), tmp_path / "o1", splits=["train"],
                           progress=False)
    report = convert_rsvqa(src, tmp_path / "out", splits=["train"], progress=False)
    assert report.written == before.written and report.skipped == before.skipped


@pytest.mark.parametrize("value", [None, "", "  ", ["yes"], True, float("nan")])
def test_an_answer_that_is_not_text_or_a_number_is_skipped_and_named(tmp_path, value):
    """A null answer was trained as "none", an empty one as "", a list as its repr."""
    src = generate("rsvqa_lr", tmp_path / "raw", n=3)
    questions = json.loads((src / "LR_split_train_questions.json").read_text())["questions"]
    live = [q for q in questions if "question" in q and q.get("active", True)]
    apath = src / "LR_split_train_answers.json"
    data = json.loads(apath.read_text())
    aid = live[0]["answers_ids"][0]
    for a in data["answers"]:
        if a["id"] == aid:
            a["answer"] = value
    apath.write_text(json.dumps(data))
    report = convert_rsvqa(src, tmp_path / "out", splits=["train"], progress=False)
    assert report.skipped.get("malformed record") == 1
    assert "must be a non-empty string or a number" in report.examples["malformed record"][0]
    assert report.written == len(live) - 1


def test_an_answers_file_that_cannot_be_read_is_skipped_and_named(tmp_path):
    """A folder (or an unreadable file) where the answers file goes was a raw IsADirectoryError traceback."""
    src = generate("rsvqa_lr", tmp_path / "raw", n=3)
    apath = src / "LR_split_val_answers.json"
    apath.unlink()
    apath.mkdir()
    report = convert_rsvqa(src, tmp_path / "out", progress=False)
    assert report.skipped.get("unreadable file") == 1
    assert "LR_split_val_answers.json" in report.examples["unreadable file"][0]
    assert report.written > 0  # the other splits are converted


@pytest.mark.parametrize("side", ["questions", "answers"])
def test_answer_ids_written_as_strings_match_their_answers(tmp_path, side):
    """``answers_ids: ["12"]`` (or an answer ``"id": "12"``) found no answer: every question skipped as missing."""
    src = generate("rsvqa_lr", tmp_path / "raw", n=3)
    clean = convert_rsvqa(src, tmp_path / "o1", splits=["train"], progress=False)
    path = src / f"LR_split_train_{side}.json"
    data = json.loads(path.read_text())
    for row in data[side]:
        if side == "questions" and "answers_ids" in row:
            row["answers_ids"] = [f" {a} " if k % 2 else str(a) for k, a in enumerate(row["answers_ids"])]
        elif side == "answers":
            row["id"] = str(row["id"])
    path.write_text(json.dumps(data))
    report = convert_rsvqa(src, tmp_path / "out", splits=["train"], progress=False)
    assert report.written == clean.written > 0 and report.skipped == clean.skipped
    assert [r["conversations"] for r in records(report.outputs["train"])] == [
        r["conversations"] for r in records(clean.outputs["train"])]


def test_a_non_numeric_answer_id_with_no_answer_is_named(tmp_path):
    src = generate("rsvqa_lr", tmp_path / "raw", n=3)
    qpath = src / "LR_split_train_questions.json"
    data = json.loads(qpath.read_text())
    live = [q for q in data["questions"] if "question" in q and q.get("active", True)]
    live[0]["answers_ids"] = ["twelve"]
    qpath.write_text(json.dumps(data))
    report = convert_rsvqa(src, tmp_path / "out", splits=["train"], progress=False)
    assert report.skipped.get("missing answer") == 1
    assert "no active answer ['twelve']" in report.examples["missing answer"][0]
