"""DICOM reading: every pydicom test file, the modality LUT -> VOI -> MONOCHROME1 pipeline, colour,
multi-frame, compressed transfer syntaxes, series sorting, corrupt inputs and safe zip extraction."""

from __future__ import annotations

import gzip
import io
import random
import re
import shutil
import stat
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

require("pydicom")
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_windowing, convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from domains.base import DomainError
from domains.medical.dicom import (
    WINDOW_PRESETS,
    DicomError,
    dicom_to_rgb,
    extract_zip,
    file_window,
    find_series,
    frame_bytes,
    frame_count,
    has_pixel_data,
    load_series,
    modality_values,
    read_dicom,
    read_dicom_rgb,
    resolve_window,
    window_values,
)
from tests.pydicom_sweep import (
    COMMAND,
    TEST_FILES,
    differs,
    key_of,
    load_table,
    sweep_outcome,
    testdata_files,
    version_note,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TESTDATA = testdata_files()
SWEEP = load_table()  # tests/data/pydicom_sweep.json, written by `python -m tests.pydicom_sweep`


def shipped(name: str) -> Path:
    """A shipped test file by name (top level first, then the DICOMDIR trees)."""
    path = TEST_FILES / name
    if path.is_file():
        return path
    found = [p for p in TESTDATA if p.name == name]
    assert found, f"{name} is not shipped with this pydicom"
    return found[0]


def rgb(source, **options) -> np.ndarray:
    return np.asarray(dicom_to_rgb(source, **options)).astype(np.int64)


def outcome(path: Path) -> str:
    """'decoded' or the DicomError reason; anything else escapes and fails the test."""
    try:
        image = dicom_to_rgb(path)
    except DicomError as err:
        assert str(path) in str(err) and err.reason, str(err)
        return err.reason
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.width > 0 and image.height > 0
    return "decoded"


# --------------------------------------------------------------------------------------------- sweep
@pytest.mark.parametrize("key", sorted(set(SWEEP["files"]) | {key_of(p) for p in TESTDATA}))
def test_every_pydicom_test_file_has_its_pinned_outcome(key):
    """Each shipped test file decodes (size, channel means) or fails with a DicomError naming the file, as
    pinned in tests/data/pydicom_sweep.json: a file that stops decoding, or starts to, fails here."""
    path = TEST_FILES / key
    expected = SWEEP["files"].get(key)
    assert expected is not None, f"{key}: shipped with pydicom but not in the table; {version_note(SWEEP)}"
    assert path in TESTDATA, f"{key}: in the table but not shipped with this pydicom; {version_note(SWEEP)}"
    got = sweep_outcome(path)
    assert not differs(expected, got, SWEEP["mean_tolerance"]), (
        f"{key}: pinned {expected}, now {got}; {version_note(SWEEP)}")
    # failing clearly: a DicomError whose message names the file and gives a reason
    if got["outcome"] != "decoded":
        assert got["outcome"] == "DicomError" and got["names_file"] and got["reason"], got
        try:
            ds = read_dicom(path)
        except DicomError:
            return  # not DICOM / unreadable
        if not has_pixel_data(ds):
            assert got["reason"] == "no pixel data"
        return
    ds = read_dicom(path, header_only=True)
    assert got["mode"] == "RGB" and got["size"] == [int(ds.Columns), int(ds.Rows)]


def test_sweep_table_records_its_generator_and_versions():
    assert SWEEP["generator"] == COMMAND and SWEEP["versions"]["pydicom"]
    older = {**SWEEP, "versions": {**SWEEP["versions"], "pydicom": "0.0"}}
    note = version_note(older)
    assert f"pydicom 0.0 -> {pydicom.__version__}" in note and f"`{COMMAND}`" in note


def test_pydicom_test_file_summary(capsys):
    counts: Counter[str] = Counter()
    reasons: dict[str, str] = {}
    for path in TESTDATA:
        reason = outcome(path)
        counts[reason] += 1
        reasons[path.name] = reason
    with capsys.disabled():
        print(f"\npydicom {pydicom.__version__} test files: {len(TESTDATA)}; " +
              ", ".join(f"{reason}: {n}" for reason, n in counts.most_common()))
    # every transfer syntax family the plug-ins cover decodes
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "JPGExtended.dcm", "JPEG2000.dcm",
                 "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "examples_palette.dcm", "693_J2KI.dcm",
                 "JPEGLSNearLossless_16.dcm", "rtdose.dcm", "zipMR.gz"):
        assert reasons[name] == "decoded", name
    assert reasons["MR_truncated.dcm"] == "truncated or corrupt pixel data"
    assert reasons["JPEG-lossy.dcm"].startswith("cannot decode JPEG")
    for name in ("DICOMDIR", "rtstruct.dcm", "rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm"):
        assert reasons[name] == "no pixel data", name
    for name in ("README.txt", "test1.json", "crayons.icc"):
        assert reasons[name] == "not a DICOM file", name
    assert counts["decoded"] >= 80


def test_no_pixel_data_names_the_object():
    with pytest.raises(DicomError, match=r"rtstruct\.dcm: no pixel data \(RT Structure Set Storage\)"):
        dicom_to_rgb(shipped("rtstruct.dcm"))
    with pytest.raises(DicomError, match=r"DICOMDIR: no pixel data \(Media Storage Directory Storage\)"):
        dicom_to_rgb(shipped("DICOMDIR"))


def test_corrupt_and_foreign_files(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png, "PNG")
    source = shipped("CT_small.dcm").read_bytes()
    cases = {
        "random.dcm": (random.Random(0).randbytes(4096), "not a DICOM file"),
        "photo.dcm": (png.getvalue(), "not a DICOM file"),
        "empty.dcm": (b"", "empty file"),
        "header_cut.dcm": (source[:700], None),  # cut inside the header
        "pixels_cut.dcm": (source[:-5000], "truncated or corrupt pixel data"),
        "bad.dcm.gz": (b"\x1f\x8b" + b"garbage" * 10, "corrupt gzip file"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DicomError) as info:
            dicom_to_rgb(path)
        assert str(info.value).startswith(f"{path}: "), str(info.value)
        if reason:
            assert info.value.reason == reason, (name, str(info.value))
    with pytest.raises(DicomError, match="file not found"):
        read_dicom(tmp_path / "missing.dcm")
    with pytest.raises(DicomError, match="is a directory"):
        read_dicom(tmp_path)
    with pytest.raises(DicomError, match="truncated"):
        dicom_to_rgb(shipped("MR_truncated.dcm"))


class _CountingReader:
    """A binary file opened for reading whose reads are added to `total` (tells how much of a file was read)."""

    def __init__(self, fh, total: list[int]):
        self._fh, self._total = fh, total

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._total[0] += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self._fh.readinto(buffer)
        self._total[0] += n or 0
        return n

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


def test_a_large_file_without_dicm_is_refused_from_its_first_bytes(tmp_path, monkeypatch):
    """Zeros (or garbage) without the DICM prefix are refused having read a bounded head: parsed whole, zeros
    are millions of empty (0000,0000) elements (a 50 MB file took 23 s, a small zip of one minutes)."""
    import builtins

    zeros = tmp_path / "zeros.dcm"
    with zeros.open("wb") as fh:
        fh.truncate(8 * 1024**2)
    total = [0]
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return _CountingReader(fh, total) if "r" in mode and "b" in mode else fh

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    for header_only in (True, False):
        total[0] = 0
        with pytest.raises(DicomError, match=r"zeros\.dcm: not a DICOM file"):
            read_dicom(zeros, header_only=header_only)
        assert 0 < total[0] <= 256 * 1024, total[0]  # of 8 MiB
    monkeypatch.undo()
    # a dataset without preamble and meta, implicit or explicit VR, is still read whole
    ct = pydicom.dcmread(shipped("CT_small.dcm"))
    ct.preamble, ct.file_meta = None, FileMetaDataset()
    for implicit in (True, False):
        raw = tmp_path / f"raw_{implicit}"
        ct.save_as(raw, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
        assert raw.read_bytes()[:2] == b"\x08\x00"
        assert read_dicom(raw).Rows == 128 and np.array_equal(rgb(raw), rgb(shipped("CT_small.dcm")))


def test_header_only_and_gzip(tmp_path):
    header = read_dicom(shipped("CT_small.dcm"), header_only=True)
    assert "PixelData" not in header and header.Rows == 128
    gz = tmp_path / "ct.dcm.gz"
    gz.write_bytes(gzip.compress(shipped("CT_small.dcm").read_bytes()))
    assert np.array_equal(rgb(gz), rgb(shipped("CT_small.dcm")))
    assert read_dicom_rgb(shipped("CT_small.dcm")).mode == "RGB"


# --------------------------------------------------------------------------------------------- values
def test_ct_small_hounsfield_units():
    hu = modality_values(shipped("CT_small.dcm"))
    raw = pydicom.dcmread(shipped("CT_small.dcm")).pixel_array
    assert hu.min() == -896 and hu.max() == 1167
    assert np.array_equal(hu, raw.astype(float) - 1024)
    # no WC/WW in CT_small: the default is the min-max of the HU values
    image = rgb(shipped("CT_small.dcm"))[..., 0]
    assert np.array_equal(image, np.rint((hu + 896) / (1167 + 896) * 255))


def test_slope_and_intercept(tmp_path):
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    ds.RescaleSlope, ds.RescaleIntercept = 2, -4096
    path = tmp_path / "rescaled.dcm"
    ds.save_as(path)
    values = modality_values(path)
    assert np.array_equal(values, ds.pixel_array.astype(float) * 2 - 4096)
    # the file's window is in modality units: WC/WW 600/1600 now applies to the rescaled values
    expected = np.rint(window_values(values, 600, 1600) * 255)
    assert np.array_equal(rgb(path)[..., 0], expected)


@pytest.mark.parametrize("missing", ["absent", "empty"])
def test_intercept_without_slope_still_rescales(tmp_path, missing):
    # pydicom's apply_modality_lut skips the rescale unless both are there (and fails on an empty one): the HU
    # would be off by 1024, windowed wrong, with no error
    ds = pydicom.dcmread(shipped("CT_small.dcm"))
    if missing == "absent":
        del ds.RescaleSlope
    else:
        ds.RescaleSlope = None
    path = tmp_path / "slope.dcm"
    ds.save_as(path)
    raw = ds.pixel_array.astype(float)
    assert np.array_equal(modality_values(path), raw - 1024)
    assert np.array_equal(rgb(path, window="40/400")[..., 0], np.rint(window_values(raw - 1024, 40, 400) * 255))


def test_a_zero_rescale_slope_is_refused_naming_it():
    # every pixel read as the intercept: a blank image was rendered without a word
    ds = pydicom.dcmread(shipped("CT_small.dcm"))
    ds.RescaleSlope = 0
    with pytest.raises(DicomError, match="invalid RescaleSlope"):
        dicom_to_rgb(ds)


def test_modality_lut_sequence():
    ds = pydicom.dcmread(shipped("CT_small.dcm"))
    del ds.RescaleSlope, ds.RescaleIntercept
    raw = ds.pixel_array.astype(np.int64)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "HU"
    item.LUTData = [min(3 * v, 65535) for v in range(4096)]
    ds.ModalityLUTSequence = Sequence([item])
    assert np.array_equal(modality_values(ds), np.minimum(3 * np.clip(raw, 0, 4095), 65535))


def test_linear_window_exact_edges():
    c, w = 40.0, 80.0
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2  # 0.0 and 79.0
    x = np.array([lo - 1, lo, lo + 1e-9, c - 0.5, hi, hi + 1e-9, hi + 1])
    y = window_values(x, c, w)
    assert y[0] == 0 and y[1] == 0 and 0 < y[2] < 1e-9
    assert y[3] == 0.5
    assert y[4] == pytest.approx(1.0) and y[5] == 1 and y[6] == 1
    assert window_values(np.array([c]), c, w, "LINEAR_EXACT")[0] == 0.5
    assert window_values(np.array([c - w / 2, c + w / 2]), c, w, "LINEAR_EXACT").tolist() == [0.0, 1.0]
    sig = window_values(np.array([c, c + w / 4]), c, w, "SIGMOID")
    assert sig[0] == 0.5 and sig[1] == pytest.approx(1 / (1 + np.exp(-1)))
    with pytest.raises(ValueError):
        window_values(x, c, 0.5)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_matches_pydicom(function):
    """Our [0, 1] window is pydicom's apply_windowing rescaled from its output range."""
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    ds.VOILUTFunction = function
    out = apply_windowing(ds.pixel_array, ds)  # int16 data: output range -32768..32767
    ours = window_values(ds.pixel_array.astype(float), 600, 1600, function)
    assert np.allclose((out + 32768) / 65535, ours, atol=1e-9)
    assert np.array_equal(rgb(ds)[..., 0], np.rint(ours * 255))


def test_file_window_presets_and_explicit():
    mr = shipped("MR_small.dcm")
    assert np.array_equal(rgb(mr), rgb(mr, window=(600, 1600)))
    assert np.array_equal(rgb(mr, window="600/1600"), rgb(mr, window=(600, 1600)))
    assert not np.array_equal(rgb(mr), rgb(mr, window="minmax"))
    # multi-valued WC/WW: the first pair
    mismatch = shipped("J2K_pixelrep_mismatch.dcm")
    assert list(read_dicom(mismatch, header_only=True).WindowWidth) == [100, 100, 200]
    assert np.array_equal(rgb(mismatch), rgb(mismatch, window=(40, 100)))
    ct = shipped("CT_small.dcm")
    hu = modality_values(ct)
    for name in ("brain", "subdural", "lung", "mediastinum", "bone", "abdomen", "liver", "soft_tissue"):
        center, width = WINDOW_PRESETS[name]
        assert np.array_equal(rgb(ct, window=name)[..., 0], np.rint(window_values(hu, center, width) * 255)), name
    assert not np.array_equal(rgb(ct, window="lung"), rgb(ct, window="bone"))
    assert resolve_window("Soft-Tissue") == WINDOW_PRESETS["soft_tissue"]
    assert resolve_window("40,400") == (40.0, 400.0) and resolve_window(None) is None
    for bad in ("nonsense", (40, 0), (40,), "1/2/3"):
        with pytest.raises(ValueError):
            dicom_to_rgb(ct, window=bad)


def test_invalid_file_window_falls_back_to_minmax():
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    ds.WindowWidth = 0
    assert np.array_equal(rgb(ds), rgb(ds, window="minmax"))


def test_voi_lut_sequence():
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    raw = ds.pixel_array.astype(np.int64)
    item = Dataset()
    item.LUTDescriptor = [2048, 0, 12]
    item.LUTData = [min(2 * v, 4095) for v in range(2048)]  # a 12-bit LUT saturating at input 2047
    ds.VOILUTSequence = Sequence([item])
    expected = np.minimum(2 * np.clip(raw, 0, 2047), 4095) / 4095
    assert np.array_equal(rgb(ds)[..., 0], np.rint(expected * 255))
    # the same 12-bit entries under a 16-bit descriptor (a common quirk) are scaled by the bits used
    item.LUTDescriptor = [2048, 0, 16]
    assert np.array_equal(rgb(ds)[..., 0], np.rint(expected * 255))
    # an explicit window overrides the file's VOI LUT
    assert np.array_equal(rgb(ds, window=(600, 1600)), rgb(shipped("MR_small.dcm")))
    # MR_small's own WindowCenter / Width (600 / 1600) are not what the default render applies beside the LUT, so
    # file_window (the demo's "file default" sliders) does not report them
    assert (ds.WindowCenter, ds.WindowWidth) == (600, 1600) and file_window(ds) is None


def _ct_with_voi_lut(first_mapped: int, pixel_representation: int, intercept: float) -> Dataset:
    """A tiny 2x3 CT whose VOI LUT maps -1024..-1024+2047 linearly onto 0..2047 (11 bits)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 2, 3, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = pixel_representation
    ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
    hu = np.array([[-1024, -500, 0], [500, 1023, 3000]], dtype=np.int64)
    ds.PixelData = (hu - int(intercept)).astype("<i2" if pixel_representation else "<u2").tobytes()
    item = Dataset()
    item.LUTDescriptor = [2048, first_mapped, 11]
    item.LUTData = list(range(2048))
    ds.VOILUTSequence = Sequence([item])
    return ds


@pytest.mark.parametrize("pixel_representation, intercept", [(1, 0), (0, -1024)])
@pytest.mark.parametrize("first_mapped", [-1024, 64512])
def test_voi_lut_first_mapped_value_signed_for_signed_modality_values(first_mapped, pixel_representation, intercept):
    """PS3.3 C.11.2.1.1: the descriptor's first mapped value is SS when the modality LUT output is signed; a file
    that writes -1024 unsigned (64512) must map as -1024 does, not send every pixel to the LUT's first entry."""
    ds = _ct_with_voi_lut(first_mapped, pixel_representation, intercept)
    hu = np.array([[-1024, -500, 0], [500, 1023, 3000]])
    expected = np.rint(np.clip(hu + 1024, 0, 2047) / 2047 * 255)
    assert np.array_equal(rgb(ds)[..., 0], expected)


def test_voi_lut_first_mapped_value_unsigned_for_unsigned_modality_values():
    """Unsigned modality values keep a large first mapped value as written: 64512 stays 64512."""
    ds = _ct_with_voi_lut(64512, 0, 0)
    ds.PixelData = np.array([[0, 64511, 64512], [64513, 65000, 65535]], dtype="<u2").tobytes()
    expected = np.rint(np.array([[0, 0, 0], [1, 488, 1023]]) / 2047 * 255)
    assert np.array_equal(rgb(ds)[..., 0], expected)


def test_monochrome1_inverted_after_windowing():
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    normal = rgb(ds)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = rgb(ds)
    assert np.abs(inverted - (255 - normal)).max() <= 1  # rounding of exact halves only
    assert np.abs(rgb(ds, window="brain") - (255 - rgb(shipped("MR_small.dcm"), window="brain"))).max() <= 1
    # a real MONOCHROME1 CR from pydicom's DICOMDIR test tree
    cr = next(p for p in TESTDATA if p.name == "6154")
    cr_ds = pydicom.dcmread(cr)
    assert cr_ds.PhotometricInterpretation == "MONOCHROME1"
    flipped = rgb(cr_ds)
    cr_ds.PhotometricInterpretation = "MONOCHROME2"
    assert np.abs(flipped - (255 - rgb(cr_ds))).max() <= 1


# --------------------------------------------------------------------------------------------- colour
def test_rgb_and_ybr_colour_files():
    reference = rgb(shipped("SC_rgb_rle.dcm"))
    stripes = reference[5::10, 50]
    assert stripes.tolist() == [[255, 0, 0], [255, 128, 128], [0, 255, 0], [128, 255, 128], [0, 0, 255],
                                [128, 128, 255], [0, 0, 0], [64, 64, 64], [192, 192, 192], [255, 255, 255]]
    exact = ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm")
    lossy = ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_jpeg_dcmtk.dcm",
             "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jls_lossy_line.dcm", "SC_rgb_jpeg_lossy_gdcm.dcm")
    for name in exact:
        assert np.array_equal(rgb(shipped(name)), reference), name
    for name in lossy:
        other = rgb(shipped(name))
        assert np.abs(other - reference).mean() < 4, name
        assert np.abs(other[5::10, 50] - stripes).max() <= 12, name  # stripe centres: away from chroma edges


def test_ybr_conversion_matches_pydicom():
    path = shipped("SC_ybr_full_422_uncompressed.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    ds.pixel_array_options(as_rgb=False)
    raw = ds.pixel_array
    assert np.array_equal(rgb(path), convert_color_space(raw, "YBR_FULL", "RGB").astype(np.int64))


def test_palette_colour():
    path = shipped("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    image = rgb(path)
    lut = apply_color_lut(ds.pixel_array, ds).astype(np.float64)  # 16-bit entries
    assert np.array_equal(image, np.rint(lut / 65535 * 255))
    assert (image[..., 0] != image[..., 2]).any()  # really colour


# --------------------------------------------------------------------------------------------- frames
def test_multiframe_frame_selection():
    path = shipped("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path)
    assert frame_count(ds) == 30
    frames = ds.pixel_array  # all frames, converted to RGB by pydicom
    for k in (0, 17, 29):
        assert np.abs(rgb(path, frame=k) - frames[k].astype(np.int64)).max() <= 1, k
    assert not np.array_equal(rgb(path, frame=0), rgb(path, frame=29))
    with pytest.raises(DicomError, match="frame 30 out of range"):
        dicom_to_rgb(path, frame=30)
    with pytest.raises(DicomError, match="frame True out of range"):  # a flag is no frame number (it read as 1)
        dicom_to_rgb(path, frame=True)
    dose = shipped("rtdose.dcm")
    volume = pydicom.dcmread(dose).pixel_array.astype(np.float64)
    k = 7
    expected = (volume[k] - volume[k].min()) / (volume[k].max() - volume[k].min())
    assert np.array_equal(rgb(dose, frame=k)[..., 0], np.rint(expected * 255))


def _enhanced_two_frames() -> Dataset:
    """An enhanced-style 2-frame dataset: shared rescale, per-frame windows in functional groups."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    pixels = np.arange(128, dtype=np.uint16).reshape(2, 8, 8) * 10
    ds.PixelData = pixels.tobytes()
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 2, -100, "US"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for center, width in ((300, 400), (2000, 1000)):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


def test_enhanced_functional_groups():
    ds = _enhanced_two_frames()
    pixels = np.frombuffer(ds.PixelData, dtype="<u2").reshape(2, 8, 8).astype(np.float64)
    for k, (center, width) in enumerate(((300, 400), (2000, 1000))):
        values = modality_values(ds, frame=k)
        assert np.array_equal(values, pixels[k] * 2 - 100)
        assert np.array_equal(rgb(ds, frame=k)[..., 0], np.rint(window_values(values, center, width) * 255))


# --------------------------------------------------------------------------------------------- codecs
def test_mr_small_transfer_syntax_variants_are_identical():
    reference = modality_values(shipped("MR_small.dcm"))
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm", "MR_small_padded.dcm"):
        assert np.array_equal(modality_values(shipped(name)), reference), name
        assert np.array_equal(rgb(shipped(name)), rgb(shipped("MR_small.dcm"))), name


@pytest.mark.parametrize(("syntax", "options", "max_error"), [
    (RLELossless, {}, 0),
    (JPEGLSLossless, {}, 0),
    (JPEG2000Lossless, {}, 0),
    (JPEGLSNearLossless, {"jls_error": 3}, 3),
    (JPEG2000, {"j2k_cr": [8]}, None),
])
def test_mr_small_encoded_here_decodes_close(tmp_path, syntax, options, max_error):
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    reference = ds.pixel_array.astype(np.float64)
    ds.compress(syntax, **options)
    path = tmp_path / "mr.dcm"
    ds.save_as(path)
    assert str(read_dicom(path, header_only=True).file_meta.TransferSyntaxUID) == syntax
    values = modality_values(path)
    error = np.abs(values - reference)
    if max_error is None:  # lossy JPEG 2000: small relative to the value range
        assert np.sqrt((error**2).mean()) < 0.02 * np.ptp(reference)
    else:
        assert error.max() <= max_error
    assert np.abs(rgb(path) - rgb(shipped("MR_small.dcm"))).mean() < (1 if max_error == 0 else 4)


def test_jpeg_extended_and_jpeg2000_files():
    """JPGExtended (12-bit JPEG process 2/4) and JPEG2000.dcm ship the same NM image."""
    extended, j2k = rgb(shipped("JPGExtended.dcm")), rgb(shipped("JPEG2000.dcm"))
    assert extended.shape == j2k.shape == (1024, 256, 3)
    assert np.corrcoef(extended[..., 0].ravel(), j2k[..., 0].ravel())[0, 1] > 0.9


# --------------------------------------------------------------------------------------------- series
def _write_slices(folder: Path, positions, orientation=(1, 0, 0, 0, 1, 0), instances=None, series_uid=None,
                  names=None) -> dict[float, Path]:
    """CT_small copies at the given positions along the normal; returns position -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid(entropy_srcs=[str(folder)])
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    written = {}
    for k, pos in enumerate(positions):
        ds = pydicom.dcmread(shipped("CT_small.dcm"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [float(v) for v in normal * pos + np.array([-10.0, 5.0, 0.0])]
        ds.InstanceNumber = instances[k] if instances else k + 1
        arr = ds.pixel_array.copy()
        arr[:8, :8] = int(pos * 10)  # a mark to recognise the slice
        ds.PixelData = arr.tobytes()
        path = folder / (names[k] if names else f"slice_{k:03d}.dcm")
        ds.save_as(path)
        written[pos] = path
    return written


def test_series_sorted_by_position_not_file_order(tmp_path):
    positions = [12.5, -5.0, 30.0, 0.0, 7.5, 20.0]
    names = ["b.dcm", "f.dcm", "a.dcm", "e.dcm", "c.dcm", "d.dcm"]  # file order unrelated to position
    instances = [1, 2, 3, 4, 5, 6]  # instance numbers in file-writing order: also unrelated
    written = _write_slices(tmp_path / "axial", positions, instances=instances, names=names)
    series = load_series(tmp_path / "axial")
    assert series.positions == sorted(positions)
    assert series.paths == [written[p] for p in sorted(positions)]
    assert len(series) == 6
    for i in range(6):
        assert np.array_equal(np.asarray(series.image(i)), np.asarray(dicom_to_rgb(series.paths[i])))
    # sagittal slices: the normal is -x, so sorting follows the projection, not raw coordinates
    sag = _write_slices(tmp_path / "sagittal", [3.0, 1.0, 2.0], orientation=(0, 1, 0, 0, 0, -1))
    sagittal = load_series(tmp_path / "sagittal")
    assert sagittal.paths == [sag[1.0], sag[2.0], sag[3.0]]
    # the same files given as a shuffled list
    shuffled = list(written.values())
    random.Random(1).shuffle(shuffled)
    assert load_series(shuffled).paths == series.paths


def test_series_without_positions_uses_instance_number(tmp_path):
    written = _write_slices(tmp_path / "s", [1.0, 2.0, 3.0], instances=[3, 1, 2])
    for path in written.values():
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    series = load_series(tmp_path / "s")
    assert series.paths == [written[2.0], written[3.0], written[1.0]]
    assert series.positions == [None, None, None]


def test_series_pick():
    from domains.medical.dicom import DicomSeries

    series = DicomSeries("1.2.3", [Path(f"{k}.dcm") for k in range(10)])
    assert series.pick(1) == [5]
    assert series.pick(2) == [2, 7]
    assert series.pick(5) == [1, 3, 5, 7, 9]
    assert series.pick(10) == series.pick(50) == list(range(10))
    with pytest.raises(ValueError):
        series.pick(0)
    multi = DicomSeries("1.2.4", [Path("multi.dcm")], frames=[4])
    assert len(multi) == 4 and multi.slices[3] == (Path("multi.dcm"), 3)


def test_find_series_groups_and_skips(tmp_path):
    _write_slices(tmp_path / "study" / "one", [0.0, 5.0])
    _write_slices(tmp_path / "study" / "two", [0.0, 2.0, 4.0])
    (tmp_path / "study" / "notes.txt").write_text("not dicom")
    shutil.copy(shipped("DICOMDIR"), tmp_path / "study" / "DICOMDIR")
    shutil.copy(shipped("rtstruct.dcm"), tmp_path / "study" / "rtstruct.dcm")
    dup = tmp_path / "study" / "two_copy.dcm"
    shutil.copy(min((tmp_path / "study" / "two").iterdir()), dup)
    skipped = []
    series = find_series(tmp_path / "study", on_skip=lambda p, reason, detail: skipped.append((p.name, reason)))
    assert sorted(len(s) for s in series) == [2, 3]
    assert len({s.series_uid for s in series}) == 2
    assert ("notes.txt", "not a DICOM file") in skipped
    assert ("DICOMDIR", "no pixel data") in skipped and ("rtstruct.dcm", "no pixel data") in skipped
    assert sum(reason == "duplicate SOPInstanceUID" for _, reason in skipped) == 1
    with pytest.raises(DicomError, match="2 series found") as mixed:
        load_series(tmp_path / "study")
    # where each series is, so the user can name one (it used to say only "use find_series")
    assert re.search(r"\(SeriesNumber .*, 3 file\(s\) in two/, SeriesInstanceUID [\d.]+; SeriesNumber .*, 2 file\(s\) in "
                     r"one/, SeriesInstanceUID [\d.]+; pick one with series=<SeriesNumber or SeriesInstanceUID> or name "
                     r"one series' folder\)$", str(mixed.value)), str(mixed.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomError, match="no DICOM images found"):
        load_series(tmp_path / "empty")


@pytest.mark.parametrize("keep", [0, 100, 200, 600, "garbage", "zeroed"],
                         ids=["empty", "cut-in-preamble", "cut-in-meta", "cut-in-header", "not-dicom", "meta-zeroed"])
def test_a_damaged_slice_fails_the_series_naming_the_file(tmp_path, keep):
    """A slice file cut short would drop out of the series and move every later slice index (a question about
    slice 7 would see slice 8's pixels): load_series refuses the series and names the file instead."""
    files = _write_slices(tmp_path / "s", [0.0, 2.5, 5.0, 7.5])
    assert len(load_series(tmp_path / "s")) == 4
    damaged = files[5.0]
    data = damaged.read_bytes()
    if keep == "zeroed":  # the DICM marker stays, the bytes after it are overwritten: no SOP class, no image header
        damaged.write_bytes(data[:132] + b"\0" * 268 + data[400:])
    else:
        damaged.write_bytes(b"not dicom" if keep == "garbage" else data[:keep])
    with pytest.raises(DicomError, match=rf"1 damaged file\(s\) in the series \({damaged.name}: "):
        load_series(tmp_path / "s")
    skipped = []
    assert [len(s) for s in find_series(tmp_path / "s", on_skip=lambda p, r, d: skipped.append(r))] == [3]
    assert len(skipped) == 1  # find_series passes over it with a reason (load_series judges it by name too)


def test_a_suffix_less_slice_overwritten_fails_the_series_while_other_files_pass(tmp_path):
    """Scanner exports often name slices without a suffix (IM0001, IM0002, ...). One whose first bytes were
    overwritten is no longer DICOM: named like the other slices, it fails the series; a README beside them does not."""
    files = _write_slices(tmp_path / "s", [0.0, 2.5, 5.0, 7.5], names=[f"IM{k:04d}" for k in range(1, 5)])
    (tmp_path / "s" / "README").write_text("exported by the scanner\n")
    (tmp_path / "s" / "notes2.txt").write_text("slice 2 looks odd\n")
    assert len(load_series(tmp_path / "s")) == 4
    damaged = files[5.0]
    damaged.write_bytes(b"\0" * 200 + damaged.read_bytes()[200:])
    with pytest.raises(DicomError, match=rf"1 damaged file\(s\) in the series \({damaged.name}: not a DICOM file"):
        load_series(tmp_path / "s")


def test_real_series_from_pydicom_dicomdir_tree():
    folder = TEST_FILES / "dicomdirtests" / "77654033" / "CT2"
    series = load_series(folder)
    assert len(series) == 4
    assert series.positions == sorted(series.positions)
    assert all(p is not None for p in series.positions)
    assert series.image(series.pick(1)[0]).mode == "RGB"


# --------------------------------------------------------------------------------------------- zips
def _zip(path: Path, entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return path


def test_extract_zip_safe(tmp_path):
    ct = shipped("CT_small.dcm").read_bytes()
    good = _zip(tmp_path / "study.zip", {"study/a.dcm": ct, "study/sub/b.dcm": ct, "__MACOSX/study/._a.dcm": b"x",
                                          "study/": b""})
    out = tmp_path / "out"
    files = extract_zip(good, out)
    assert [p.relative_to(out.resolve()).as_posix() for p in files] == ["study/a.dcm", "study/sub/b.dcm"]
    assert files[0].read_bytes() == ct
    assert load_series(out).paths  # extracted files read back as a series
    assert not list(out.rglob(".part-*"))

    bad_cases = {
        "escape.zip": ({"../evil.dcm": ct}, (), "unsafe path"),
        "absolute.zip": ({"/tmp/evil.dcm": ct}, (), "unsafe path"),
        "nested_escape.zip": ({"a/../../evil.dcm": ct}, (), "unsafe path"),
        "link.zip": ({"link.dcm": b"/etc/passwd"}, ("link.dcm",), "symlink"),
    }
    for name, (entries, links, reason) in bad_cases.items():
        target = tmp_path / f"out_{name}"
        with pytest.raises(DicomError, match=reason):
            extract_zip(_zip(tmp_path / name, entries, links), target)
        assert not target.exists() or not any(target.rglob("*")), name
    assert not (tmp_path / "evil.dcm").exists()
    many = _zip(tmp_path / "many.zip", {f"f{k}.dcm": b"x" for k in range(5)})
    with pytest.raises(DicomError, match="too many files"):
        extract_zip(many, tmp_path / "out_many", max_files=4)
    with pytest.raises(DicomError, match="zip too large"):
        extract_zip(good, tmp_path / "out_big", max_bytes=len(ct))
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(DicomError, match="not a valid zip"):
        extract_zip(tmp_path / "fake.zip", tmp_path / "out_fake")


def test_extract_zip_refuses_an_entry_inside_a_file_entry_naming_both(tmp_path):
    """``study`` and ``study/a.dcm`` (either order, any depth) are refused naming the zip and the entries before
    anything is written; the mkdir failed with an OSError naming a private temporary folder."""
    ct = shipped("CT_small.dcm").read_bytes()
    cases = {"file_first.zip": {"study": b"x", "study/a.dcm": ct},
             "folder_first.zip": {"study/a.dcm": ct, "study": b"x"},
             "deeper.zip": {"study/a.dcm": ct, "study/a.dcm/b/c.dcm": ct}}
    for name, entries in cases.items():
        target = tmp_path / f"out_{name}"
        with pytest.raises(DicomError) as info:
            extract_zip(_zip(tmp_path / name, entries), target)
        clash = "'study/a.dcm/b/c.dcm' is inside entry 'study/a.dcm'" if name == "deeper.zip" else \
            "'study/a.dcm' is inside entry 'study'"
        assert str(info.value) == f"{tmp_path / name}: unsafe path in zip (entry {clash}, which is a file)"
        assert not target.exists() or not any(target.rglob("*")), name


def test_extract_zip_refuses_two_entries_for_one_file_naming_them(tmp_path):
    """The same name twice, or names that lead to one path (``./a`` and ``a``, ``a//b`` and ``a/b``), are refused
    before anything is written; the last entry overwrote the others and the path came back once per entry."""
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("CT/IM0.dcm", b"other")
        archive.writestr("CT/IM1.dcm", b"slice one")
        archive.writestr("CT/IM1.dcm", b"slice two")
        archive.writestr("./CT//IM1.dcm", b"slice three")
    with pytest.raises(DicomError) as info:
        extract_zip(path, tmp_path / "out")
    assert str(info.value) == f"{path}: duplicate entry in zip (entries 2, 3, 4 all extract to 'CT/IM1.dcm')"
    assert info.value.reason == "duplicate entry in zip"
    assert not (tmp_path / "out").exists()
    distinct = _zip(tmp_path / "distinct.zip", {"CT/IM1.dcm": b"a", "MR/IM1.dcm": b"b"})  # same name, two folders
    assert len(extract_zip(distinct, tmp_path / "out_distinct")) == 2


def test_extract_zip_rejects_members_larger_than_declared(tmp_path):
    """A header that understates a member's size (a zip-bomb trick) is caught while copying."""
    path = tmp_path / "liar.zip"
    data = b"\0" * 100_000
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.dcm", data)
    raw = bytearray(path.read_bytes())
    # patch the uncompressed size in the central directory entry (offset 24 from its signature)
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24: central + 28] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(DicomError):
        extract_zip(path, tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*.dcm"))


def test_dicom_error_is_value_error_and_names_file():
    err = DicomError(Path("/data/x.dcm"), "no pixel data", "Basic Text SR Storage")
    assert isinstance(err, ValueError)
    assert str(err) == "/data/x.dcm: no pixel data (Basic Text SR Storage)"
    assert (err.path, err.reason, err.detail) == ("/data/x.dcm", "no pixel data", "Basic Text SR Storage")


@pytest.mark.parametrize("window", [(40, 0.5), "40/0.5", (40, 0), "40/-10"])
def test_a_window_too_narrow_is_refused_as_the_argument_not_the_file(window):
    # a width under 1 passed resolve_window and then failed in the LINEAR window as "invalid image attributes or
    # pixel data" of the file: a converter counted a good slice as damaged
    with pytest.raises(DomainError, match="window width must be a number >= 1") as err:
        dicom_to_rgb(shipped("CT_small.dcm"), window=window)
    assert not isinstance(err.value, DicomError)


def test_window_text_with_a_negative_centre():
    from domains.medical.dicom import WINDOW_PRESETS, resolve_window

    assert resolve_window("-600/1500") == (-600.0, 1500.0) == WINDOW_PRESETS["lung"]
    assert resolve_window(" -600, 1500 ") == (-600.0, 1500.0)
    assert resolve_window("Soft-Tissue") == WINDOW_PRESETS["soft_tissue"]


# --------------------------------------------------------------------------------------------- memory guard
def rle_frame(rows: int, columns: int) -> bytes:
    """An 8-bit frame in DICOM RLE (PS3.5 Annex G): a 64-byte header, one segment, every row encoded on its own as
    replicate runs of at most 128 bytes; row k is grey level 7k mod 256 (horizontal stripes)."""
    full, rest = divmod(columns, 128)

    def row(value: int) -> bytes:
        tail = b"" if not rest else bytes([0, value]) if rest == 1 else bytes([257 - rest, value])
        return bytes([0x81, value]) * full + tail  # 0x81 = -127: repeat the next byte 128 times

    rows_by_value = {v: row(v) for v in range(256)}
    segment = b"".join(rows_by_value[(7 * k) % 256] for k in range(rows))
    segment += b"\0" * (len(segment) % 2)
    return struct.pack("<16L", 1, 64, *([0] * 14)) + segment


def rle_file(path: Path, rows: int, columns: int) -> Path:
    from pydicom.encaps import encapsulate

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = pydicom.FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "OT", rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([rle_frame(rows, columns)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rle_encoder_of_the_guard_test_is_valid(tmp_path):
    """The encoder below makes real RLE: pydicom's decoder reads a small one back exactly."""
    path = rle_file(tmp_path / "small.dcm", 300, 333)
    expected = np.repeat(((7 * np.arange(300)) % 256).astype(np.uint8)[:, None], 333, axis=1)
    assert np.array_equal(read_dicom(path).pixel_array, expected)
    assert np.array_equal(modality_values(path), expected)


def test_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    """A validly encoded 60000 x 60000 RLE image (a 56 MB file) would decode to 3.4 GiB: refused from its header."""
    import domains.medical.dicom as dicom_module

    path = rle_file(tmp_path / "huge.dcm", 60000, 60000)
    assert path.stat().st_size < 60 * 2**20

    def no_decoding(*args, **kwargs):
        raise AssertionError("the decoder was called")

    monkeypatch.setattr(dicom_module, "get_decoder", no_decoding)
    for render in (dicom_to_rgb, modality_values):
        with pytest.raises(DicomError, match="image too large to decode") as caught:
            render(path)
        message = str(caught.value)
        assert message.startswith(str(path)) and "60000 x 60000" in message and "3.35 GiB" in message
        assert isinstance(caught.value, DomainError)
    assert dicom_module.frame_bytes(read_dicom(path, header_only=True)) == 60000 * 60000
    # the limit is what it says: just under it decodes (here: stopped at the decoder), just over it does not
    monkeypatch.setattr(dicom_module, "MAX_FRAME_BYTES", 60000 * 60000)
    monkeypatch.setattr(dicom_module, "MAX_FRAME_PIXELS", 60000 * 60000)
    with pytest.raises(DicomError, match="the decoder was called"):
        dicom_to_rgb(path)
    monkeypatch.setattr(dicom_module, "MAX_FRAME_BYTES", 60000 * 60000 - 1)
    with pytest.raises(DicomError, match="image too large"):
        dicom_to_rgb(path)


def test_a_frame_under_the_byte_limit_with_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    """A 9000 x 9000 8-bit RLE image decodes to 77 MiB, under MAX_FRAME_BYTES, but rendering it works in float64
    (about 35 bytes a pixel, ~2.7 GiB): refused from its header by the pixel limit."""
    import domains.medical.dicom as dicom_module

    path = rle_file(tmp_path / "wide.dcm", 9000, 9000)
    assert dicom_module.frame_bytes(read_dicom(path, header_only=True)) < dicom_module.MAX_FRAME_BYTES

    def no_decoding(*args, **kwargs):
        raise AssertionError("the decoder was called")

    monkeypatch.setattr(dicom_module, "get_decoder", no_decoding)
    for render in (dicom_to_rgb, modality_values):
        with pytest.raises(DicomError, match="image too large to decode") as caught:
            render(path)
        assert "9000 x 9000" in str(caught.value) and "MAX_FRAME_PIXELS" in str(caught.value)
    monkeypatch.setattr(dicom_module, "MAX_FRAME_PIXELS", 9000 * 9000)
    with pytest.raises(DicomError, match="the decoder was called"):
        dicom_to_rgb(path)


def test_rendering_peaks_near_the_pixel_budget_the_limit_assumes():
    """MAX_FRAME_PIXELS x RENDER_BYTES_PER_PIXEL bounds what rendering one frame allocates (numpy included)."""
    import tracemalloc

    import domains.medical.dicom as dicom_module

    n = 1024
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows = ds.Columns = n
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit, ds.PixelRepresentation = bits - 1, 0
        ds.PixelData = (np.arange(n * n) % 200).astype(dtype).tobytes()
        for window in (None, (100, 200)):
            tracemalloc.start()
            try:
                dicom_to_rgb(ds, window=window)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak <= dicom_module.RENDER_BYTES_PER_PIXEL * n * n, (bits, window, peak / (n * n))
    assert dicom_module.MAX_FRAME_PIXELS * dicom_module.RENDER_BYTES_PER_PIXEL <= 3 * 2**30


def test_frame_bytes_counts_samples_and_bytes_per_sample():
    ds = Dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 100, 200, 3
    for bits, width in ((1, 1), (8, 1), (12, 2), (16, 2), (32, 4), (64, 8)):
        ds.BitsAllocated = bits
        assert frame_bytes(ds) == 100 * 200 * 3 * width
    ds.Rows = 0
    with pytest.raises(DicomError, match="invalid image attributes"):
        frame_bytes(ds)


def test_an_entry_over_the_remaining_budget_is_not_called_larger_than_declared(tmp_path):
    """An honest entry over what is left of max_bytes was reported as "larger than declared"; it now names the budget,
    and an entry whose size header lies is still called larger than declared."""
    from domains.medical.dicom import _copy_member

    path = _zip(tmp_path / "a.zip", {"a.dcm": b"x" * 100})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("a.dcm")
        with pytest.raises(DicomError, match="zip too large") as over:
            _copy_member(archive, info, tmp_path / "out.dcm", 40, path)
        assert "over the 40 bytes left" in str(over.value) and "declared" not in str(over.value)

    class Lying:  # zipfile itself stops at the declared size (then fails the CRC); a reader that does not
        def open(self, info):
            return io.BytesIO(b"x" * 100)

    info.file_size = 10
    with pytest.raises(DicomError, match=r"larger than its header declares \(10 bytes\)"):
        _copy_member(Lying(), info, tmp_path / "out.dcm", 1000, path)
    assert not (tmp_path / "out.dcm").exists()


def test_pydicom_warnings_name_the_file_they_are_about(tmp_path):
    """pydicom's "Expected implicit VR, but found explicit VR" printed without the file name for a file that then
    converts fine: it is now said once per read with the file in front."""
    import warnings

    ct = tmp_path / "mislabelled.dcm"
    data = bytearray(shipped("CT_small.dcm").read_bytes())
    at = data.index(b"1.2.840.10008.1.2.1\x00")  # the meta says explicit VR, as the dataset is written
    data[at:at + 20] = b"1.2.840.10008.1.2\x00\x00\x00"  # now it says implicit VR
    ct.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_dicom(ct).Rows == 128 and rgb(ct).shape[:2] == (128, 128)
    texts = [str(w.message) for w in caught]
    said = f"{ct}: Expected implicit VR, but found explicit VR - using explicit VR for reading"
    assert texts.count(said) == 2, texts  # once for each of the two reads
    assert not [t for t in texts if t.startswith("Expected")], texts
    assert all(w.filename == read_dicom.__code__.co_filename for w in caught if str(w.message) == said)
