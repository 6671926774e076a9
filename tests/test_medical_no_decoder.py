"""A compressed DICOM with no decoder installed: the message names the transfer syntax and what to install, and
``convert`` counts such files under one reason (the install hint once a run, not once a file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deps import require

require("pydicom")
import pydicom
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless

import domains.medical.dicom as dicom_module
from domains.medical.convert import convert_classification
from domains.medical.dicom import NO_DECODER, DicomError, dicom_to_rgb

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
JPEG_LS = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small_jpeg_ls_lossless.dcm"
PLAIN = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm"


@pytest.fixture
def no_jpeg_ls_decoder(monkeypatch):
    """JPEG-LS as on a machine with none of its plug-ins: pydicom's decoder without available plug-ins."""
    decoder = get_decoder(JPEGLSLossless)
    cls = type(decoder)
    available, missing = cls.is_available, cls.missing_dependencies  # pydicom's public properties, patched for it
    monkeypatch.setattr(cls, "is_available", property(lambda self: self is not decoder and available.fget(self)))
    monkeypatch.setattr(cls, "missing_dependencies", property(
        lambda self: ["gdcm - requires gdcm>=3.0.10", "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1",
                      "pyjpegls - requires numpy and pyjpegls>=1.2", "mine - plugin indicating it is unavailable"]
        if self is decoder else missing.fget(self)))
    real = dicom_module._installed
    monkeypatch.setattr(dicom_module, "_installed",
                        lambda name: name not in ("python-gdcm", "pylibjpeg-libjpeg", "pyjpegls") and real(name))


def test_the_message_names_the_syntax_and_the_packages(no_jpeg_ls_decoder):
    with pytest.raises(DicomError) as err:
        dicom_to_rgb(JPEG_LS)
    assert err.value.reason == (f"{NO_DECODER} for JPEG-LS Lossless Image Compression (pip install pylibjpeg-libjpeg "
                                "or pip install pyjpegls or pip install python-gdcm)")


def test_convert_counts_undecodable_files_under_one_reason(tmp_path, no_jpeg_ls_decoder):
    src = tmp_path / "raw"
    for label in ("mr", "ct"):
        (src / label).mkdir(parents=True)
        shutil.copy(PLAIN, src / label / "plain.dcm")
    for k in range(3):
        shutil.copy(JPEG_LS, src / "mr" / f"ls{k}.dcm")
    report = convert_classification(src, tmp_path / "out", test_fraction=0.0)
    reason = f"{NO_DECODER} for JPEG-LS Lossless Image Compression (pip install pylibjpeg-libjpeg or pip install " \
             "pyjpegls or pip install python-gdcm)"
    assert report.skipped == {reason: 3}
    assert report.examples[reason] == [f"mr/ls{k}.dcm: not decoded" for k in range(3)]
    assert report.written == 2


@pytest.mark.parametrize("syntax, name", [("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
                                          ("1.2.3.4.5", "1.2.3.4.5")])
def test_a_syntax_no_plugin_decodes_is_named_unsupported(tmp_path, syntax, name):
    """A transfer syntax pydicom has no decoder for at all (video, a private UID) is "unsupported", naming it, not
    "invalid image attributes" (a private UID) nor "cannot decode" (as if the data were damaged); convert skips the
    file naming it and the reason."""
    ds = pydicom.dcmread(PLAIN)
    ds.file_meta.TransferSyntaxUID = syntax
    with pytest.raises(DicomError) as err:
        dicom_to_rgb(ds)
    assert err.value.reason == f"unsupported transfer syntax {name}"
    assert "no pixel-data decoder" in err.value.detail
    src = tmp_path / "raw"
    for label in ("mr", "ct"):
        (src / label).mkdir(parents=True)
        shutil.copy(PLAIN, src / label / "plain.dcm")
    ds.PixelData = encapsulate([ds.PixelData])  # as a compressed syntax is stored
    ds.save_as(src / "mr" / "video.dcm", enforce_file_format=True)
    report = convert_classification(src, tmp_path / "out", test_fraction=0.0)
    assert report.skipped == {"unreadable DICOM": 1}
    assert report.examples["unreadable DICOM"][0].startswith(f"mr/video.dcm: unsupported transfer syntax {name} (")
