"""A localizer in another plane stored in the axial series: passed over and reported, so it does not sit among the
slices (sorted by its position along the axial normal) and move the slice indexes the questions use."""

from __future__ import annotations

import pytest

from tests.deps import require

require("pydicom")
import pydicom
from pydicom.uid import generate_uid

from domains.medical.convert import convert_dicom_qa
from domains.medical.dicom import load_series
from domains.medical.synthetic import generate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_a_sagittal_localizer_in_an_axial_series_is_passed_over(tmp_path):
    src = tmp_path / "src"
    generate("dicom_qa", src, n=1, seed=1)
    plain = convert_dicom_qa(src, tmp_path / "plain", salt="s", progress=False)
    folder = next((src / "series").iterdir())
    before = load_series(folder)
    middle = pydicom.dcmread(before.paths[len(before.paths) // 2])
    middle.SOPInstanceUID, middle.InstanceNumber = generate_uid(), 999
    middle.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal, its position inside the axial stack's range
    middle.save_as(folder / "LOCALIZER.dcm")
    told: list[tuple[str, str, str | None]] = []
    after = load_series(folder, on_pass=lambda path, reason, detail: told.append((path.name, reason, detail)))
    assert after.paths == before.paths
    assert told == [("LOCALIZER.dcm", "not in the series' plane", "sagittal image in a series of axial slices "
                     "(a localizer?)")]
    report = convert_dicom_qa(src, tmp_path / "out", salt="s", progress=False)
    assert report.written == plain.written and report.skipped == {"passed over: not in the series' plane": 1}
    for jsonl in (tmp_path / "plain").glob("*.jsonl"):  # the same records: no slice index moved
        assert (tmp_path / "out" / jsonl.name).read_text() == jsonl.read_text()


def test_a_series_in_one_plane_keeps_every_file(tmp_path):
    src = tmp_path / "src"
    generate("dicom_qa", src, n=1, seed=1)
    folder = next((src / "series").iterdir())
    first = sorted(folder.glob("*.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]  # the same plane seen from the other side
    ds.save_as(first)
    assert len(load_series(folder)) == len(list(folder.glob("*.dcm")))
