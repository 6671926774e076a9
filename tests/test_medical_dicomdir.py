"""A disc exported from a PACS: DICOMDIR at the top, files in PT*/ST*/SE* folders without suffixes. Its DICOMDIR reads
as its folder does; the disc's series are named by folder; a file the DICOMDIR lists that is not there is a lost
slice, not a quiet gap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")
import pydicom
from pydicom.fileset import FileSet

from domains.medical.convert import convert_dicom_qa
from domains.medical.dicom import DicomError, load_series
from domains.medical.synthetic import generate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("dicom_qa") / "src"
    generate("dicom_qa", src, n=2, seed=1)
    return src


def _disc(source: Path, out: Path, cases: list[str]) -> Path:
    fileset = FileSet()
    for case in cases:
        for path in sorted((source / "series" / case).glob("*.dcm")):
            fileset.add(pydicom.dcmread(path))
    fileset.write(out)
    return out


def test_a_disc_of_several_series_names_each_series_folder(source, tmp_path):
    disc = _disc(source, tmp_path / "cd", ["case01", "case02"])
    uids = [str(pydicom.dcmread(next((source / "series" / case).glob("*.dcm"))).SeriesInstanceUID)
            for case in ("case01", "case02")]
    detail = (f"(SeriesNumber 2 'AX 5.0 SOFT TISSUE', 12 file(s) in PT000000/ST000000/SE000000/, SeriesInstanceUID "
              f"{uids[0]}; SeriesNumber 2 'AX 5.0 SOFT TISSUE', 12 file(s) in PT000001/ST000000/SE000000/, "
              f"SeriesInstanceUID {uids[1]}; pick one with series=<SeriesNumber or SeriesInstanceUID> or name one "
              "series' folder)")
    for where in (disc, disc / "DICOMDIR"):
        with pytest.raises(DicomError) as err:
            load_series(where)
        assert str(err.value) == f"{where}: 2 series found, expected one {detail}"
    assert len(load_series(disc / "PT000001" / "ST000000" / "SE000000")) == 12
    assert load_series(disc, series=uids[1]).paths == load_series(disc / "PT000001" / "ST000000" / "SE000000").paths
    flat = tmp_path / "flat"  # the two series' files side by side: named by their first files
    flat.mkdir()
    for path in sorted(disc.glob("PT*/*/*/IM*")):
        shutil.copy(path, flat / f"{path.parts[-4]}_{path.name}")
    with pytest.raises(DicomError, match=r"\(SeriesNumber 2 .*, 12 file\(s\) from PT000000_IM\d+, .*; SeriesNumber 2 "
                                         r".*, 12 file\(s\) from PT000001_IM.* \(or keep one series per folder\)\)$"):
        load_series(flat)


def test_the_dicomdir_of_one_series_reads_as_its_folder(source, tmp_path):
    disc = _disc(source, tmp_path / "cd", ["case01"])
    assert load_series(disc / "DICOMDIR").paths == load_series(disc).paths
    questions = json.loads((source / "qa.json").read_text())["questions"]
    asked = [dict(q, series="cd/DICOMDIR") for q in questions if q["series"] == "series/case01"]
    shutil.copytree(disc, tmp_path / "src" / "cd")
    (tmp_path / "src" / "qa.json").write_text(json.dumps(asked))
    report = convert_dicom_qa(tmp_path / "src", tmp_path / "out", salt="s", progress=False)
    assert report.written == len(asked) and report.skipped == {"passed over: no pixel data": 1}


def test_a_file_the_dicomdir_lists_but_the_copy_lacks_is_a_damaged_series(source, tmp_path):
    disc = _disc(source, tmp_path / "cd", ["case01"])
    (disc / "PT000000" / "ST000000" / "SE000000" / "IM000003").unlink()
    with pytest.raises(DicomError, match=r"1 damaged file\(s\) in the series \(IM000003: listed in DICOMDIR, "
                                         r"missing\)"):
        load_series(disc)


def test_a_disc_mounted_with_lowercase_names_is_complete(source, tmp_path):
    disc = _disc(source, tmp_path / "cd", ["case01"])
    for path in sorted(disc.rglob("*"), key=lambda p: -len(p.parts)):
        path.rename(path.with_name(path.name.lower()))
    assert len(load_series(disc / "dicomdir")) == 12


def test_a_dicomdir_copied_with_one_series_of_the_disc_asks_for_no_other(source, tmp_path):
    disc = _disc(source, tmp_path / "cd", ["case01", "case02"])
    one = tmp_path / "one"
    shutil.copytree(disc / "PT000001", one / "PT000001")
    shutil.copy(disc / "DICOMDIR", one / "DICOMDIR")
    assert len(load_series(one)) == 12
    (one / "PT000001" / "ST000000" / "SE000000" / "IM000005").unlink()  # of the series that is here: lost
    with pytest.raises(DicomError, match=r"1 damaged file\(s\) in the series \(IM000005: listed in DICOMDIR"):
        load_series(one / "DICOMDIR")
