"""A compressed (encapsulated) multi-frame DICOM cut off in its pixel data: the frames whose fragments are all in the
file decode, a cut frame fails by number, as in the native case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

require("pydicom")
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import RLELossless

from domains.medical.dicom import DicomError, dicom_to_rgb, modality_values, read_dicom
from tests.test_medical_dicom_cut import FRAMES, _cut, _multiframe

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _rle(tmp_path: Path, offset_table: bool = True) -> tuple[np.ndarray, Path, list[int]]:
    """An RLE Lossless 4-frame CT file, its frames, and the length of each frame's fragment item in the file."""
    arr = _multiframe(tmp_path / "mf.dcm")
    ds = dcmread(tmp_path / "mf.dcm")
    ds.compress(RLELossless)
    frames = list(generate_frames(ds.PixelData, number_of_frames=FRAMES))
    if not offset_table:
        ds.PixelData = encapsulate(frames, has_bot=False)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    return arr, tmp_path / "rle.dcm", [8 + len(f) + len(f) % 2 for f in frames]


@pytest.mark.parametrize("offset_table", [True, False])
def test_frames_before_the_cut_decode_and_the_cut_frame_is_named(tmp_path, offset_table):
    arr, path, _ = _rle(tmp_path, offset_table)
    cut = _cut(path, 8 + 10)  # the sequence delimiter and 10 bytes of the last frame's fragment are gone
    for k in range(FRAMES - 1):
        assert np.array_equal(modality_values(cut, frame=k), arr[k]), k
        assert np.array_equal(np.asarray(dicom_to_rgb(cut, frame=k)), np.asarray(dicom_to_rgb(path, frame=k))), k
    with pytest.raises(DicomError, match=r"truncated or corrupt pixel data \(frame 3 \(of frames 0-3\) is cut off: "
                                         r"the file ends inside its encapsulated .*; frames 0-2 are complete"):
        dicom_to_rgb(cut, frame=3)


def test_a_cut_inside_an_early_frame_fails_every_frame_from_it(tmp_path):
    arr, path, items = _rle(tmp_path)
    cut = _cut(path, 8 + items[3] + items[2] + 5)  # frame 1 loses 5 bytes, frames 2 and 3 are gone
    assert np.array_equal(modality_values(cut, frame=0), arr[0])
    for k in (1, 2, 3):
        with pytest.raises(DicomError, match=rf"frame {k} \(of frames 0-3\) is cut off.*frame 0 is complete"):
            dicom_to_rgb(cut, frame=k)


def test_a_cut_inside_the_first_frame_decodes_nothing(tmp_path):
    _, path, items = _rle(tmp_path)
    cut = _cut(path, 8 + sum(items[1:]) + 5)
    with pytest.raises(DicomError, match=r"truncated or corrupt pixel data \(the file ends inside its encapsulated"):
        dicom_to_rgb(cut, frame=0)
    assert "Rows" in read_dicom(cut, header_only=True)  # the series scan still sees the slice


def test_a_frame_of_several_fragments_is_whole_only_with_all_of_them(tmp_path):
    arr, path, _ = _rle(tmp_path)
    ds = dcmread(path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=FRAMES))
    ds.PixelData = encapsulate(frames, fragments_per_frame=2)  # 2 fragments a frame, bounded by the offset table
    ds.save_as(path, enforce_file_format=True)
    tail = sum(8 + len(f) + len(f) % 2 for frame in frames[2:] for f in _halves(frame))
    second = _halves(frames[1])[1]
    cut = _cut(path, 8 + tail + len(second) // 2)  # frame 1's second fragment is cut in half
    assert np.array_equal(modality_values(cut, frame=0), arr[0])
    with pytest.raises(DicomError, match=r"frame 1 \(of frames 0-3\) is cut off.*frame 0 is complete"):
        dicom_to_rgb(cut, frame=1)


def _halves(frame: bytes) -> list[bytes]:
    from pydicom.encaps import fragment_frame

    return list(fragment_frame(frame, 2))


def test_without_an_offset_table_only_whole_codestreams_count_as_frames(tmp_path):
    from pydicom.uid import JPEGBaseline8Bit

    _multiframe(tmp_path / "mf.dcm", bits=8)
    ds = dcmread(tmp_path / "mf.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    jpeg = [b"\xff\xd8" + bytes([k]) * 20 + b"\xff\xd9" for k in range(FRAMES)]  # stand-ins: never decoded here
    ds.PixelData = encapsulate(jpeg, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm")
    with pytest.raises(DicomError, match=r"frame 3 \(of frames 0-3\) is cut off.*frames 0-2 are complete"):
        dicom_to_rgb(_cut(tmp_path / "jpeg.dcm", 8 + 5), frame=3)
    ds.PixelData = encapsulate([b"not a codestream" * 2] * FRAMES, has_bot=False)  # fragments of unknown frames
    ds.save_as(tmp_path / "jpeg.dcm")
    with pytest.raises(DicomError, match=r"the file ends inside its encapsulated .*no frame is decoded"):
        dicom_to_rgb(_cut(tmp_path / "jpeg.dcm", 8 + 5), frame=0)
