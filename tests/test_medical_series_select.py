"""A flat folder holding several DICOM series (a PACS export, a viewer's "save all") was refused with no way to pick
one: the refusal now names each series (SeriesNumber, SeriesDescription, file count, SeriesInstanceUID) and the
option ``series`` (loader, ``dicom_qa`` converter, demo hook; a question's ``series_select``) picks one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")
import pydicom  # noqa: E402

from domains.base import DomainError  # noqa: E402
from domains.medical import read_upload  # noqa: E402
from domains.medical.convert import convert_dicom_qa  # noqa: E402
from domains.medical.dicom import DicomError, load_series  # noqa: E402
from domains.medical.synthetic import generate  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """`src` with qa.json and flat/: case01 as SeriesNumber 2, case02 as SeriesNumber 5 (12 files each)."""
    src = tmp_path_factory.mktemp("series_select") / "src"
    generate("dicom_qa", src, n=2, seed=1)
    folder = src / "flat"
    folder.mkdir()
    uids = {}
    for case, number in (("case01", 2), ("case02", 5)):
        for path in sorted((src / "series" / case).glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.SeriesNumber = number
            ds.SeriesDescription = f"AX case {number}"
            ds.save_as(folder / f"{case}_{path.name}")
            uids[number] = str(ds.SeriesInstanceUID)
    return src, uids


def test_the_refusal_names_each_series_and_the_option(flat):
    src, uids = flat
    with pytest.raises(DicomError) as err:
        load_series(src / "flat")
    text = str(err.value)
    for number in (2, 5):
        assert f"SeriesNumber {number} 'AX case {number}', 12 file(s) from case0" in text, text
        assert f"SeriesInstanceUID {uids[number]}" in text, text
    assert "pick one with series=<SeriesNumber or SeriesInstanceUID>" in text


def test_series_picks_one_by_number_or_uid(flat):
    src, uids = flat
    by_number = load_series(src / "flat", series=5)
    assert len(by_number) == 12 and by_number.series_uid == uids[5] and by_number.number == 5
    assert load_series(src / "flat", series="2").series_uid == uids[2]
    assert load_series(src / "flat", series=uids[2]).number == 2
    with pytest.raises(DicomError, match=r"no series matches series=7 \(SeriesNumber 2 .*SeriesNumber 5 "):
        load_series(src / "flat", series=7)
    with pytest.raises(ValueError, match="quote a UID"):
        load_series(src / "flat", series=1.2)


def test_the_converter_option_and_the_question_key_pick_a_series(flat, tmp_path):
    src, uids = flat
    questions = json.loads((src / "qa.json").read_text())["questions"]
    asked = [dict(q, series="flat") for q in questions if q["series"] == "series/case02"]
    doc = src / "qa_flat.json"
    doc.write_text(json.dumps(asked))
    refused = convert_dicom_qa(src, tmp_path / "a", qa_file=doc.name, salt="s", progress=False)
    assert refused.written == 0 and refused.skipped["unreadable series"] == 1
    example = refused.examples["unreadable series"][0]
    assert "SeriesNumber 5 'AX case 5'" in example and "--option series=..., or the question's series_select" in example
    report = convert_dicom_qa(src, tmp_path / "b", qa_file=doc.name, salt="s", series=5, progress=False)
    expected = convert_dicom_qa(src, tmp_path / "c", salt="s", progress=False)
    assert report.written == len(asked) and not report.skipped, report.skipped
    mine = _records(tmp_path / "b")
    theirs = {r["id"]: r for r in _records(tmp_path / "c")}
    assert mine and all(r["meta"]["series"] == theirs[r["id"]]["meta"]["series"] for r in mine)
    assert expected.written > report.written
    per_question = [dict(q, series_select=uids[5]) for q in asked]
    doc.write_text(json.dumps(per_question))
    picked = convert_dicom_qa(src, tmp_path / "d", qa_file=doc.name, salt="s", series=2, progress=False)
    assert picked.written == len(asked) and not picked.skipped
    with pytest.raises(DomainError, match="series must be a SeriesNumber"):
        convert_dicom_qa(src, tmp_path / "e", qa_file=doc.name, series=[5], progress=False)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(out.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_the_demo_hook_takes_the_option(flat):
    src, _ = flat
    files = sorted((src / "flat").iterdir())
    with pytest.raises(DicomError, match=re.escape("2 series found, expected one")):
        read_upload(files)
    shown = read_upload(files, series=2)
    assert shown["images"] and len(shown["images"]) == 1
