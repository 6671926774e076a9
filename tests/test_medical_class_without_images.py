"""Classification: a class folder none of whose files gives an image (RT dose grids only) is no option of the
questions, and is reported; with fewer than two classes left the conversion stops."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.deps import require

require("pydicom")
from domains.base import DomainError
from domains.medical.convert import convert_classification
from domains.medical.synthetic import generate
from tests.test_medical_no_images import _plan_export

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_a_class_of_dose_grids_is_no_option(tmp_path):
    generate("dicom_qa", tmp_path / "src", n=2, seed=1)
    classes = tmp_path / "classes"
    shutil.copytree(tmp_path / "src" / "series" / "case01", classes / "normal")
    shutil.copytree(tmp_path / "src" / "series" / "case02", classes / "tumour")
    _plan_export(classes / "dose")
    report = convert_classification(classes, tmp_path / "out", test_fraction=0.0, salt="s", progress=False)
    records = [json.loads(line) for line in (tmp_path / "out" / "classification_train.jsonl").read_text().splitlines()]
    assert len(records) == report.written == 24
    assert {tuple(r["options"]) for r in records} == {("normal", "tumour")}
    assert "C. " not in records[0]["conversations"][0]["value"]
    assert {r["answer"] for r in records} == {"A", "B"}
    assert report.skipped["class without images"] == 1
    assert "dose: no file of class 'dose' converted" in str(report)
    shutil.rmtree(classes / "tumour")
    with pytest.raises(DomainError, match="1 of 2 class folders gave images, need at least 2"):
        convert_classification(classes, tmp_path / "out2", test_fraction=0.0, salt="s", progress=False)
