"""dicom_qa inputs a user meets. A question over several slices, skipped at a slice that does not render, used to
leave the renders of its earlier slices unnamed; the clean-up then listed them as "removed: an earlier run's file
this run did not make", in a first run into an empty --out. They are this run's: deleted, not listed as an earlier
run's."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")

from domains.base import DomainError
from domains.medical.convert import convert_dicom_qa
from domains.medical.dicom import load_series
from domains.medical.synthetic import generate
from tests.converted import all_records


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("medraw")
    generate("dicom_qa", root / "dicom_qa", n=2, seed=1)
    return root / "dicom_qa"


def _images(out: Path) -> set[Path]:
    return {p for p in (out / "images" / "dicom_qa").rglob("*") if p.is_file()}


def _named(out: Path, report) -> set[Path]:
    return {out / i for r in all_records(report)
            for i in (r["image"] if isinstance(r["image"], list) else [r["image"]])}


def test_a_question_skipped_at_a_later_slice_leaves_nothing_called_an_earlier_runs(raw, tmp_path):
    src = tmp_path / "dicom_qa"
    shutil.copytree(raw, src)
    doc = json.loads((src / "qa.json").read_text())
    first = next(q for q in doc["questions"] if q["type"] == "closed")
    series = load_series(src / first["series"])
    last = len(series) - 1
    path, _ = series.slices[last]
    path.write_bytes(path.read_bytes()[:-2000])  # its pixel data cut short
    # a window no other question uses: the first slice's render is made for this question alone
    doc["questions"].insert(0, {**first, "id": "two-slices", "slices": [0, last], "window": [12, 34]})
    (src / "qa.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    report = convert_dicom_qa(src, out, progress=False)
    assert report.examples["slice skipped"][0].startswith(f"qa.json question two-slices: slice {last} ")
    assert report.removed == [], report.removed
    assert "removed:" not in report.table()
    assert _images(out) == _named(out, report)  # the unnamed render is gone all the same
    again = convert_dicom_qa(src, out, progress=False)
    assert again.removed == [] and _images(out) == _named(out, again)


def test_an_earlier_runs_render_is_still_listed(raw, tmp_path):
    src = tmp_path / "dicom_qa"
    shutil.copytree(raw, src)
    out = tmp_path / "out"
    convert_dicom_qa(src, out, progress=False)
    before = _images(out)
    doc = json.loads((src / "qa.json").read_text())
    doc["questions"] = doc["questions"][:1]
    (src / "qa.json").write_text(json.dumps(doc))
    report = convert_dicom_qa(src, out, progress=False)
    images = {p for p in report.removed if p.suffix == ".png"}
    assert images and images == before - _named(out, report)


def test_the_qa_file_given_as_src_names_its_folder(raw, tmp_path):
    """``--src raw/dicom_qa/qa.json`` said "no qa.json"; it now says a folder is expected, and which."""
    with pytest.raises(DomainError, match=rf"qa\.json: not a directory \(expected the folder holding qa\.json and "
                                          rf"the series folders: {re.escape(str(raw))}\)"):
        convert_dicom_qa(raw / "qa.json", tmp_path / "out", progress=False)


def test_a_question_without_a_series_is_a_malformed_record(raw, tmp_path):
    """``"series": null`` (or missing, or blank) was counted under "path escapes data root" ('': not a file name
    under .); no path was given, so nothing escaped: it is a malformed record naming the field."""
    src = tmp_path / "dicom_qa"
    shutil.copytree(raw, src)
    doc = json.loads((src / "qa.json").read_text())
    doc["questions"][0]["series"] = None
    doc["questions"][1].pop("series")
    doc["questions"][2]["series"] = "  "
    (src / "qa.json").write_text(json.dumps(doc))
    report = convert_dicom_qa(src, tmp_path / "out", progress=False)
    assert "path escapes data root" not in report.skipped
    assert report.skipped["malformed record"] == 3
    assert report.examples["malformed record"][0].endswith(": no series (the folder of its DICOM series)")
