"""A converter run with a relative --src (as the README writes them) names its inputs relative to it in the report,
also those a reader found by their absolute path (the DICOM series scan): no folder around the data is shown."""

from __future__ import annotations

import os

from domains.base import ConvertReport


def test_an_absolute_path_under_a_relative_source_is_named_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "raw" / "dicom_qa" / "series").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    report = ConvertReport(dataset="dicom_qa", source="raw/dicom_qa", out="data/med")
    full = os.path.abspath("raw/dicom_qa/series/case01/IM_1.dcm")
    report.warn(full, "burned-in annotation", f"{full}: BurnedInAnnotation is YES")
    report.skip("raw/dicom_qa/series/case02/IM_2.dcm", "unreadable DICOM", "raw/dicom_qa/series/case02/IM_2.dcm: bad")
    assert report.warning_examples["burned-in annotation"] == ["series/case01/IM_1.dcm: BurnedInAnnotation is YES"]
    assert report.examples["unreadable DICOM"] == ["series/case02/IM_2.dcm: bad"]
    assert str(tmp_path) not in report.table()
