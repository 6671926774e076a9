"""RSVQA questions / answers with fields of the wrong shape (an id list inside the list, a null img_id, a numeric
question) are skipped as ``malformed record`` naming the field; an unhashable id crashed the whole conversion."""

from __future__ import annotations

import json

import pytest

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
