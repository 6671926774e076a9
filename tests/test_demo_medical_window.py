"""The medical panel's window sliders and the demo's auth file: ranges over the whole stack, passwords as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

require("gradio")
require("pydicom")

from deploy.demo.panels import medical  # noqa: E402
from tests.test_demo import MB, write_ct  # noqa: E402


def restack(path: Path, frames_hu: list[np.ndarray]) -> Path:
    """Rewrite the CT file at `path` with these frames (HU; stored = HU + 1024), keeping its WC/WW 40/400."""
    import pydicom

    ds = pydicom.dcmread(path)
    stored = np.stack([np.clip(np.rint(f + 1024), 0, 4095).astype(np.uint16) for f in frames_hu])
    ds.NumberOfFrames = len(frames_hu)
    ds.set_pixel_data(stored if len(frames_hu) > 1 else stored[0], "MONOCHROME2", 12, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def frame(lo: float, hi: float, size: int = 16) -> np.ndarray:
    return np.tile(np.linspace(lo, hi, size), (size, 1))


def test_multiframe_sliders_cover_every_frame_and_keep_the_files_window(tmp_path):
    path = restack(write_ct(tmp_path / "cine.dcm"), [frame(-100, 100), frame(-1000, 0), frame(0, 2500)])
    study = medical.load_study([path], max_bytes=MB)
    try:
        assert study.count == 3
        assert study.value_range == pytest.approx((-1000.0, 2500.0), abs=1)
        assert study.default_window == (40.0, 400.0)  # the DICOM's WindowCenter / WindowWidth stays the default
        c = medical.window_controls(study)
        assert c["centre"][0] <= -1000 and c["centre"][1] >= 2500 and c["width"][1] >= 3500
        assert c["centre"][2] == 40.0 and c["width"][2] == 400.0
    finally:
        study.close()


def test_series_sliders_cover_every_slice_not_only_the_middle_one(tmp_path):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    ranges = [(-3000, -2000), (-100, 100), (-50, 50), (1000, 3000), (0, 10)]
    files = []
    for k, (lo, hi) in enumerate(ranges):
        f = write_ct(tmp_path / f"IM{k}.dcm", z=2.5 * k, instance=k + 1, series_uid=uid)
        files.append(restack(f, [frame(lo, hi)]))
    study = medical.load_study(files, max_bytes=MB)
    try:
        assert study.kind == "series" and study.count == 5 and study.windowable
        assert study.value_range == pytest.approx((-1024.0, 3000.0), abs=1)  # stored 0 = -1024 HU: clipped low
        assert study.default_window == (40.0, 400.0)
    finally:
        study.close()


def test_a_long_stack_reads_at_most_range_frames_for_the_sliders(tmp_path, monkeypatch):
    monkeypatch.setattr(medical, "RANGE_FRAMES", 2)
    read = []
    original = medical.dicom.modality_values

    def counted(ds, *, frame=0, **options):
        read.append(frame)
        return original(ds, frame=frame, **options)

    monkeypatch.setattr(medical.dicom, "modality_values", counted)
    path = restack(write_ct(tmp_path / "cine.dcm"), [frame(-10 * k, 10 * k) for k in range(1, 7)])
    study = medical.load_study([path], max_bytes=MB)
    try:
        assert sorted(read) == [0, 1, 4]  # the first frame shown and two evenly spaced ones
        assert study.value_range == pytest.approx((-50.0, 50.0), abs=1)
    finally:
        study.close()


def test_a_slice_that_does_not_decode_is_named_at_upload_by_its_slice_label(tmp_path):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    files = [write_ct(tmp_path / f"DOE_JANE_{k}.dcm", z=2.5 * k, instance=k + 1, series_uid=uid) for k in range(5)]
    files[1].write_bytes(files[1].read_bytes()[:-500])  # pixel data cut short, header intact
    study = medical.load_study(files, max_bytes=MB)
    try:
        text = " ".join(study.warnings)
        assert "1 slice of 5 does not decode: slice 2/5 (truncated or corrupt pixel data). It cannot be shown" in text
        assert "DOE" not in text and "upload-" not in text
        assert study.value_range == pytest.approx((-1000.0, 1000.0), abs=1)  # from the slices that decode
    finally:
        study.close()


@pytest.mark.parametrize("where", ["shared", "per-frame"])
def test_an_enhanced_files_window_in_its_functional_groups_is_the_sliders_default(tmp_path, where):
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = write_ct(tmp_path / "enhanced.dcm", frames=3)
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth

    def group(centre: float, width: float) -> Dataset:
        voi, item = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = centre, width
        item.FrameVOILUTSequence = Sequence([voi])
        return item

    if where == "shared":
        ds.SharedFunctionalGroupsSequence = Sequence([group(40, 400)])
    else:
        ds.PerFrameFunctionalGroupsSequence = Sequence([group(40, 400), group(500, 2000), group(-600, 1500)])
    ds.save_as(path)
    study = medical.load_study([path], max_bytes=MB)
    try:
        assert study.default_window == (40.0, 400.0)
        # "file default" and the sliders' starting values render the same picture
        assert np.array_equal(np.asarray(study.render(0)), np.asarray(study.render(0, study.default_window)))
    finally:
        study.close()


def test_a_window_the_renderer_ignores_is_not_the_sliders_default(tmp_path):
    import pydicom

    path = write_ct(tmp_path / "ct.dcm")
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 40, 0.5  # LINEAR needs width >= 1: the file default is min-max
    ds.save_as(path)
    study = medical.load_study([path], max_bytes=MB)
    try:
        assert study.default_window == pytest.approx((0.0, 2000.0), abs=1)
    finally:
        study.close()


def test_a_damaged_middle_slice_does_not_refuse_the_series(tmp_path):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    files = [write_ct(tmp_path / f"IM{k}.dcm", z=2.5 * k, instance=k + 1, series_uid=uid) for k in range(5)]
    files[2].write_bytes(files[2].read_bytes()[:-500])  # the middle slice, shown first
    study = medical.load_study(files, max_bytes=MB)
    try:
        assert study.count == 5 and study.start_index == 1
        assert study.warnings[0] == "Slice 3/5 does not decode; showing slice 2/5."
        study.render(study.start_index)
    finally:
        study.close()
    one = write_ct(tmp_path / "one.dcm")
    one.write_bytes(one.read_bytes()[:-500])
    with pytest.raises(medical.UploadError, match="upload 1: truncated or corrupt pixel data"):
        medical.load_study([one], max_bytes=MB)


def test_a_damaged_file_among_uploaded_files_is_named_by_its_page_label(tmp_path):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    files = [write_ct(tmp_path / f"IM{k}.dcm", z=2.5 * k, instance=k + 1, series_uid=uid) for k in range(4)]
    files[3].write_bytes(files[3].read_bytes()[:300])  # cut inside the header
    study = medical.load_study(files, max_bytes=MB)
    try:
        assert "1 damaged DICOM file(s) left out (upload 4)" in " ".join(study.warnings)
    finally:
        study.close()


def _as_mr(path):
    """The CT file at `path` rewritten as an MR without rescale or window: its stored values, not Hounsfield units."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Modality = "MR"
    del ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth
    ds.save_as(path)
    return path


def test_ct_window_presets_are_offered_only_for_values_in_hounsfield_units(tmp_path):

    ct = medical.load_study([write_ct(tmp_path / "ct.dcm")], max_bytes=MB)
    path = _as_mr(restack(write_ct(tmp_path / "mr.dcm"), [frame(100 - 1024, 900 - 1024)]))  # stored 100..900
    mr = medical.load_study([path], max_bytes=MB)
    try:
        assert "lung" in medical._presets(ct) and medical.window_controls(ct)["centre"][0] <= -600
        assert medical._presets(mr) == [medical.FILE_DEFAULT, medical.CUSTOM]
        c = medical.window_controls(mr)  # the sliders span the MR's values, not the CT presets'
        assert c["centre"][:2] == (100.0, 900.0) and c["width"][1] == 800.0
    finally:
        ct.close()
        mr.close()


def test_a_slice_that_does_not_decode_is_named_by_its_slice_when_asked_about(tmp_path):
    import zipfile

    from pydicom.uid import generate_uid

    uid = generate_uid()
    files = [write_ct(tmp_path / f"IM{k}.dcm", z=2.5 * k, instance=k + 1, series_uid=uid) for k in range(5)]
    files[4].write_bytes(files[4].read_bytes()[:-500])
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in files:
            zf.write(f, f"DOE_JANE/{f.name}")

    class Session:
        def stream(self, question, images, prompt=None):
            yield "never asked"

    for upload in (files, [archive]):
        study = medical.load_study(upload, max_bytes=MB)
        try:
            *_, notice = list(medical.ask(Session(), "where?", study, 0, 3))[-1]
            assert "slice 5/5: truncated or corrupt pixel data" in notice
            assert "file" not in notice.replace("the file is", "") and "series/" not in notice
        finally:
            study.close()


def test_a_blank_non_ct_study_still_gets_sliders_that_move(tmp_path):

    path = _as_mr(restack(write_ct(tmp_path / "blank.dcm"), [frame(-1024, -1024)]))  # stored 0 throughout
    study = medical.load_study([path], max_bytes=MB)
    try:
        assert study.value_range == (0.0, 0.0)
        c = medical.window_controls(study)
        assert c["centre"][0] < c["centre"][1] and c["width"][0] < c["width"][1]
        assert c["centre"][0] <= c["centre"][2] <= c["centre"][1] and c["width"][0] <= c["width"][2] <= c["width"][1]
    finally:
        study.close()


def test_images_each_in_a_series_of_their_own_are_said_as_such(tmp_path):
    views = [write_ct(tmp_path / f"view{k}.dcm") for k in range(2)]  # e.g. two radiographs, one series each
    study = medical.load_study(views, max_bytes=MB)
    try:
        assert ("The upload holds 2 series (1, 1 slices); showing one of the largest (1 slice). To see another, "
                "upload its files on their own.") in study.warnings
    finally:
        study.close()


# --------------------------------------------------------------------------------------------- auth file
def auth_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "users.txt"
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_auth_file_passwords_are_kept_exactly_and_line_endings_bom_comments_handled(tmp_path):
    from deploy.demo.app import load_auth_file

    data = "\ufeffann:pa:ss\r\n  # indented comment\r\n\r\n  bob:b b\r\n".encode()
    assert load_auth_file(auth_file(tmp_path, data)) == [("ann", "pa:ss"), ("bob", "b b")]


@pytest.mark.parametrize("line, expected", [
    ("bob: hunter2", "users.txt:2: the password begins or ends with spaces or tabs"),
    ("bob:hunter2 ", "users.txt:2: the password begins or ends with spaces or tabs"),
    ("bob:hunter2\t", "users.txt:2: the password begins or ends with spaces or tabs"),
    ("ann:hunter2", "users.txt:2: this user is already on line 1"),
])
def test_auth_file_refuses_invisible_spaces_and_a_user_twice_naming_the_line_not_the_password(tmp_path, line,
                                                                                               expected):
    from deploy.demo.app import load_auth_file
    from deploy.demo.page import DemoError

    with pytest.raises(DemoError, match=expected) as err:
        load_auth_file(auth_file(tmp_path, f"ann:first\n{line}\n".encode()))
    assert "hunter2" not in str(err.value) and "first" not in str(err.value)


def test_auth_file_that_is_not_utf8_is_named(tmp_path):
    from deploy.demo.app import load_auth_file
    from deploy.demo.page import DemoError

    with pytest.raises(DemoError, match=r"users.txt: not UTF-8 text"):
        load_auth_file(auth_file(tmp_path, "ann:caf\u00e9\n".encode("latin-1")))
