"""Medical uploads that mix kinds: DICOM files with PNG / JPEG images read "upload one PNG / JPEG image at a time
(or a DICOM series)" (the page) or "N non-DICOM image(s) ignored" (the hook) without saying which files were left
out or what was shown; a disc's files (or a zip of them) whose DICOMDIR lists slices the upload lacks showed the
series as complete (the uploaded files' names are not the disc's, so the DICOMDIR's were never matched): the
missing files are now named as the DICOMDIR lists them."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")
require("gradio")
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.fileset import FileSet  # noqa: E402

from deploy.demo.panels import medical  # noqa: E402
from deploy.demo.uploads import UploadError  # noqa: E402
from domains.medical import read_upload  # noqa: E402
from domains.medical.dicom import LISTED_MISSING, DicomError, find_series  # noqa: E402
from domains.medical.synthetic import generate  # noqa: E402
from tests.test_demo import write_ct  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
MB = 2**20 * 50
MISSING = "PT000000/ST000000/SE000000/IM000003"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))


def _mixed(tmp_path: Path, n: int = 3) -> list[Path]:
    cts = [write_ct(tmp_path / f"ct{k}.dcm", z=k, instance=k + 1, series_uid="1.2.3.4") for k in range(n)]
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    return cts + [tmp_path / "photo.png"]


def test_dicom_with_an_image_shows_the_dicom_and_names_the_image(tmp_path):
    study = medical.load_study(_mixed(tmp_path), max_bytes=MB)
    try:
        assert study.kind == "series" and study.count == 3
        assert study.warnings[0].startswith("Upload 4 (PNG / JPEG) not shown: this page shows one study at a time; "
                                            "showing the DICOM CT series, 3 slices from upload 1, upload 2, upload 3")
    finally:
        study.close()
    one = medical.load_study(_mixed(tmp_path, 1), max_bytes=MB)
    try:
        assert one.kind == "dicom" and "Upload 2 (PNG / JPEG) not shown" in one.warnings[0]
    finally:
        one.close()


def test_an_image_with_files_that_are_no_dicom_names_both(tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    with pytest.raises(UploadError) as err:
        medical.load_study([tmp_path / "report.pdf", tmp_path / "photo.jpg"], max_bytes=MB)
    text = str(err.value)
    assert text.startswith("upload 1: not a DICOM file") and "upload 2 (PNG / JPEG) not read" in text, text


def test_the_hook_names_the_images_it_left_out(tmp_path):
    shown = read_upload(_mixed(tmp_path))
    assert shown["warnings"][0].startswith("1 PNG / JPEG image(s) not DICOM, not shown (photo.png): showing the "
                                           "DICOM image(s) of 3 file(s)"), shown["warnings"]


@pytest.fixture(scope="module")
def disc(tmp_path_factory) -> Path:
    """A one-series disc (DICOMDIR + PT*/ST*/SE*/IM*) whose IM000003 was not copied."""
    root = tmp_path_factory.mktemp("disc")
    generate("dicom_qa", root / "src", n=1, seed=1)
    fileset = FileSet()
    for path in sorted((root / "src" / "series" / "case01").glob("*.dcm")):
        fileset.add(pydicom.dcmread(path))
    fileset.write(root / "cd")
    (root / "cd" / MISSING).unlink()
    return root / "cd"


def test_a_disc_upload_missing_a_listed_file_names_it_as_the_dicomdir_does(disc, tmp_path):
    files = sorted(p for p in disc.rglob("*") if p.is_file())
    upload = tmp_path / "cd.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for path in files:
            zf.write(path, path.relative_to(disc).as_posix())
    for given in ([upload], files):
        copies = []
        for path in given:  # load_study takes the uploads away
            copies.append(tmp_path / f"{len(copies)}_{path.name}")
            shutil.copy(path, copies[-1])
        study = medical.load_study(copies, max_bytes=MB)
        try:
            text = " ".join(study.warnings)
            assert study.count == 11
            assert (f"The DICOMDIR lists 1 file of the uploaded series that the upload lacks ({MISSING}): the series is "
                    "missing those slices.") in text, text
            assert "damaged DICOM file" not in text, text
        finally:
            study.close()
    with pytest.raises(DicomError, match=f"{MISSING}: listed in DICOMDIR, missing"):
        read_upload(files)
    skipped = []
    find_series(files, on_skip=lambda *skip: skipped.append(skip))
    assert [(p.relative_to(disc).as_posix(), detail) for p, reason, detail in skipped if reason == LISTED_MISSING] \
        == [(MISSING, MISSING)]
