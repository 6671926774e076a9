"""dicom_qa question fields of the wrong kind: a question or id given as a list was written as its Python repr
("['x']") and trained on; mc options repeating one text took the answer for a letter (answer "a" of options
["a", "a"] became A). Both are now skipped as malformed records, named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")

from domains.medical.convert import VQA_RAD_JSON, convert_dicom_qa, convert_slake, convert_vqa_rad  # noqa: E402
from domains.medical.synthetic import generate  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_wrong_kinds_of_fields_are_malformed_records(tmp_path: Path):
    src = tmp_path / "src"
    generate("dicom_qa", src, n=1, seed=1)
    base = {"split": "train", "series": "series/case01", "slices": [3], "type": "closed", "question": "Q?",
            "answer": "yes"}
    questions = [dict(base, id="ok"), dict(base, id="list-question", question=["x"]), dict(base, id=["x"]),
                 dict(base, id="answer-object", answer={"a": 1}),
                 dict(base, id="twice", type="mc", options=["a", "A"], answer="a"),
                 dict(base, id="option-list", type="mc", options=[["a"], "b"], answer="b"),
                 dict(base, id="mc-ok", type="mc", options=["liver", "lung"], answer="lung")]
    (src / "qa.json").write_text(json.dumps({"questions": questions}))
    report = convert_dicom_qa(src, tmp_path / "out", salt="s", progress=False)
    assert report.written == 2 and report.skipped == {"malformed record": 5}, (report.skipped, report.examples)
    examples = " ".join(report.examples["malformed record"])
    assert "question list-question: question must be text, got list ['x']" in examples
    assert "item 2: id must be text, got list ['x']" in examples
    records = [json.loads(line) for line in (tmp_path / "out" / "dicom_qa_train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["dicom_qa/train/ok", "dicom_qa/train/mc-ok"]
    assert records[1]["answer"] == "B"


def test_vqa_rad_and_slake_refuse_a_list_question_or_answer(tmp_path: Path):
    generate("vqa_rad", tmp_path / "vqa_rad", n=2, seed=1)
    generate("slake", tmp_path / "slake", n=2, seed=1)
    path = tmp_path / "vqa_rad" / VQA_RAD_JSON
    rows = json.loads(path.read_text())
    rows += [dict(rows[0], qid=9000, question=["x"]), dict(rows[0], qid=9001, answer=["yes"])]
    path.write_text(json.dumps(rows))
    report = convert_vqa_rad(tmp_path / "vqa_rad", tmp_path / "out", progress=False)
    assert report.skipped == {"malformed record": 2}, report.skipped
    assert "qid 9000: question must be text, got list ['x']" in " ".join(report.examples["malformed record"])
    slake = next((tmp_path / "slake").rglob("train.json"))
    rows = json.loads(slake.read_text())
    slake.write_text(json.dumps(rows + [dict(rows[0], qid=9000, answer={"a": 1})]))
    report = convert_slake(tmp_path / "slake", tmp_path / "out_slake", progress=False)
    assert report.skipped.get("malformed record") == 1, report.skipped
