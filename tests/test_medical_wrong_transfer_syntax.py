"""A DICOM file whose file meta names another transfer syntax than its pixel data was written in (a tool that
decompressed the file and kept the old TransferSyntaxUID, or the reverse) is refused as ``wrong transfer syntax``,
naming the file and what to correct, not with pydicom's parsing message, nor decoded from compressed bytes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from domains.medical.convert import convert_classification
from domains.medical.dicom import DicomError, dicom_to_rgb
from domains.medical.synthetic import generate


def _relabelled(src: Path, dst: Path, syntax: str) -> Path:
    """`src` written again with its body as it is (explicit VR little endian) under a file meta claiming `syntax`;
    pydicom's own writer refuses such a file, so meta and body are written apart."""
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    head, body = DicomBytesIO(), DicomBytesIO()
    for fp in (head, body):
        fp.is_little_endian, fp.is_implicit_VR = True, False
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    write_dataset(body, ds)
    dst.write_bytes(head.getvalue() + body.getvalue())
    return dst


@pytest.fixture(scope="module")
def slice_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cls")
    generate("classification", root / "cls", n=2, seed=0)
    return next(iter(sorted((root / "cls").rglob("*.dcm"))))


def test_uncompressed_pixel_data_under_a_compressed_syntax_is_named(slice_file, tmp_path):
    bad = _relabelled(slice_file, tmp_path / "relabelled.dcm", JPEGBaseline8Bit)
    with pytest.raises(DicomError) as err, warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom's unnamed "check that the transfer syntax ..." warning is not reached
        dicom_to_rgb(bad)
    assert err.value.reason == "wrong transfer syntax"
    assert str(bad) in str(err.value) and "JPEG Baseline" in str(err.value) and "stored uncompressed" in str(err.value)


def test_compressed_pixel_data_under_an_uncompressed_syntax_is_named(slice_file, tmp_path):
    ds = pydicom.dcmread(slice_file)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert dicom_to_rgb(tmp_path / "rle.dcm").size == (ds.Columns, ds.Rows)  # the file as written decodes
    bad = _relabelled(tmp_path / "rle.dcm", tmp_path / "relabelled.dcm", ExplicitVRLittleEndian)
    with pytest.raises(DicomError) as err:
        dicom_to_rgb(bad)
    assert err.value.reason == "wrong transfer syntax"
    assert "Explicit VR Little Endian" in str(err.value) and "encapsulated" in str(err.value)


def test_the_converter_counts_it_under_its_reason(slice_file, tmp_path):
    src = tmp_path / "cls"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    _relabelled(slice_file, src / "a" / "bad.dcm", JPEGBaseline8Bit)
    for name in ("one", "two"):
        for label in "ab":
            pydicom.dcmread(slice_file).save_as(src / label / f"{name}.dcm")
    report = convert_classification(src, tmp_path / "out", progress=False)
    (example,) = report.examples["unreadable DICOM"]
    assert example.startswith("a/bad.dcm: wrong transfer syntax"), example
    assert report.written == 4
