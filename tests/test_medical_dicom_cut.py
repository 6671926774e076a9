"""A native multi-frame DICOM cut off in its pixel data: the whole frames still decode, a cut frame fails by number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

require("pydicom")
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from domains.medical.dicom import DicomError, dicom_to_rgb, modality_values, read_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FRAMES, ROWS, COLUMNS = 4, 8, 6


def _multiframe(path: Path, syntax=ExplicitVRLittleEndian, bits: int = 16, samples: int = 1) -> np.ndarray:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = ROWS, COLUMNS, FRAMES, samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    shape = (FRAMES, ROWS, COLUMNS) + ((samples,) if samples > 1 else ())
    arr = (np.arange(int(np.prod(shape))) * 7 % 251).reshape(shape).astype(np.uint16 if bits == 16 else np.uint8)
    ds.PixelData = arr.astype(arr.dtype.newbyteorder(">" if syntax == ExplicitVRBigEndian else "<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return arr


def _cut(path: Path, missing: int) -> Path:
    cut = path.with_name("cut_" + path.name)
    cut.write_bytes(path.read_bytes()[:-missing])
    return cut


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_frames_before_the_cut_decode_and_the_cut_frame_is_named(tmp_path, syntax):
    arr = _multiframe(tmp_path / "mf.dcm", syntax)
    cut = _cut(tmp_path / "mf.dcm", 10)  # the last frame loses 10 of its 96 bytes
    for k in range(FRAMES - 1):
        assert np.array_equal(modality_values(cut, frame=k), arr[k]), k
        assert np.array_equal(np.asarray(dicom_to_rgb(cut, frame=k)), np.asarray(dicom_to_rgb(tmp_path / "mf.dcm",
                                                                                           frame=k))), k
    with pytest.raises(DicomError, match=r"truncated or corrupt pixel data \(frame 3 \(of frames 0-3\) is cut off.*"
                                         r"374 of 384 pixel-data bytes; frames 0-2 are complete"):
        dicom_to_rgb(cut, frame=3)


def test_a_cut_inside_an_early_frame_fails_every_frame_from_it(tmp_path):
    arr = _multiframe(tmp_path / "rgb.dcm", bits=8, samples=3)  # 144 bytes a frame
    cut = _cut(tmp_path / "rgb.dcm", 2 * 144 + 100)  # frame 1 loses 100 bytes, frames 2 and 3 are gone
    assert np.array_equal(np.asarray(dicom_to_rgb(cut, frame=0)), arr[0])
    for k in (1, 2, 3):
        with pytest.raises(DicomError, match=rf"frame {k} \(of frames 0-3\) is cut off.*frame 0 is complete"):
            dicom_to_rgb(cut, frame=k)


def test_a_cut_single_frame_file_is_still_refused(tmp_path):
    _multiframe(tmp_path / "mf.dcm")
    ds = dcmread(tmp_path / "mf.dcm")
    ds.NumberOfFrames = 1
    ds.PixelData = ds.PixelData[: ROWS * COLUMNS * 2]
    ds.save_as(tmp_path / "one.dcm", enforce_file_format=True)
    with pytest.raises(DicomError, match="truncated or corrupt pixel data"):
        dicom_to_rgb(_cut(tmp_path / "one.dcm", 10))


def test_a_compressed_multiframe_file_without_its_delimiter_keeps_its_whole_frames(tmp_path):
    from pydicom.uid import RLELossless

    _multiframe(tmp_path / "mf.dcm")
    ds = dcmread(tmp_path / "mf.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    cut = _cut(tmp_path / "rle.dcm", 8)  # pydicom reads this as an empty dataset: no delimiter at the end
    assert np.array_equal(np.asarray(dicom_to_rgb(cut, frame=0)), np.asarray(dicom_to_rgb(tmp_path / "rle.dcm")))
    # the offset table ends the last frame at the delimiter: whether more fragments followed is unknown
    with pytest.raises(DicomError, match=r"truncated or corrupt pixel data \(frame 3 \(of frames 0-3\) is cut off"):
        dicom_to_rgb(cut, frame=3)
    assert "Rows" in read_dicom(cut, header_only=True)  # the series scan still sees the slice
