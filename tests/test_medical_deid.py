"""De-identification (PS3.15 Annex E basic profile): PHI gone from the saved bytes, UIDs remapped
consistently across a series, geometry and pixels kept, pseudonyms, burned-in flag, safe header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

require("pydicom")
require("dicomanonymizer", "the PS3.15 Annex E table")
import pydicom
import pydicom.data
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from domains.medical.deid import (
    PHI_KEYWORDS,
    PSEUDONYM_PATTERN,
    burned_in_annotation,
    burned_in_risk,
    deidentify,
    find_phi,
    new_uid,
    pseudonym,
    safe_header,
)
from domains.medical.dicom import DicomError, dicom_to_rgb, read_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the odd values the tests write on purpose
TEST_FILES = Path(pydicom.data.DATA_ROOT) / "test_files"

# every string here is identifying and must not survive de-identification anywhere in the file
PHI = {
    "PatientName": "DOE^JOHNATHAN",
    "PatientID": "MRN-7781234",
    "PatientBirthDate": "19450317",
    "PatientBirthTime": "061500",
    "PatientAddress": "12 Quarry Lane, Springfield",
    "PatientTelephoneNumbers": "+1-555-0142",
    "OtherPatientIDs": "ALT-99812",
    "OtherPatientNames": "ROE^JANEY",
    "PatientMotherBirthName": "SMYTHE^MARGARET",
    "PatientComments": "claustrophobic, call daughter",
    "AdditionalPatientHistory": "fell from ladder at Elm Farm",
    "InstitutionName": "St Elsewhere General",
    "InstitutionAddress": "400 Hospital Road, Shelbyville",
    "InstitutionalDepartmentName": "Radiology West Wing",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "PerformingPhysicianName": "QUINN^MICHAELA",
    "OperatorsName": "TECH^TERRY",
    "NameOfPhysiciansReadingStudy": "GREY^MEREDITH",
    "PhysiciansOfRecord": "KILDARE^JAMES",
    "RequestingPhysician": "WELBY^MARCUS",
    "AccessionNumber": "ACC20240105X",
    "StudyID": "STUDY4242",
    "StudyDate": "20240105",
    "StudyTime": "101530",
    "SeriesDate": "20240106",
    "AcquisitionDate": "20240107",
    "ContentDate": "20240108",
    "StudyDescription": "CT head for Johnathan",
    "SeriesDescription": "axial brain Doe",
    "ImageComments": "patient Johnathan moved",
    "StationName": "CTROOM-ELSEWHERE",
    "DeviceSerialNumber": "SN-55501234",
    "ProtocolName": "Doe special protocol",
    "PatientAge": "079Y",
    "PatientWeight": "81.5",
}
NESTED = {"RequestedProcedureID": "RPID-31337", "ScheduledProcedureStepID": "SPS-27182"}
PRIVATE_TEXT = "PRIVATE-SECRET-JD"
OVERLAY_TEXT = b"OVERLAY-BURNED-NAME"


def phi_slice(k: int, study_uid: str, series_uid: str, frame_uid: str, sop_uids: list[str],
              burned_in: str | None = "YES") -> pydicom.FileDataset:
    """A CT slice full of PHI: top level, nested sequences, private tags, an overlay, file meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uids[k]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "ELSEWHERE_AE"
    ds = pydicom.FileDataset(f"slice{k}.dcm", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uids[k]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "CT", "HEAD", "ACME"
    ds.PatientSex = "M"
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [-120.0, -110.0, 2.5 * k]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 2.5
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, -1024, 40, 400
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    ds.PixelData = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 16 + k).tobytes()
    # identifying content nested in sequences
    request = Dataset()
    request.AccessionNumber = PHI["AccessionNumber"]
    for keyword, value in NESTED.items():
        setattr(request, keyword, value)
    ds.RequestAttributesSequence = Sequence([request])
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "ALT-99812", "OTHER HOSPITAL"
    ds.OtherPatientIDsSequence = Sequence([other])
    code = Dataset()  # a code item whose PN-like content sits in a non-listed keyword
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-A0100", "SRT", "Brain"
    code.ContentCreatorName = "HOUSE^GREGORY"
    ds.AnatomicRegionSequence = Sequence([code])
    if k > 0:  # a reference to the previous slice must follow the UID remapping
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CTImageStorage, sop_uids[k - 1]
        ds.ReferencedImageSequence = Sequence([ref])
    # private tags and an overlay with text
    block = ds.private_block(0x0009, "ELSEWHERE PACS", create=True)
    block.add_new(0x10, "LO", PRIVATE_TEXT)
    ds.add_new(0x60003000, "OW", OVERLAY_TEXT + b"\0")
    ds.add_new(0x60000010, "US", 16)
    return ds


@pytest.fixture()
def two_slices(tmp_path):
    study, series, frame = (generate_uid(entropy_srcs=[name]) for name in ("study", "series", "frame"))
    sops = [generate_uid(entropy_srcs=["sop", str(k)]) for k in range(2)]
    paths = []
    for k in range(2):
        path = tmp_path / f"orig_{k}.dcm"
        phi_slice(k, study, series, frame, sops).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _phi_strings() -> list[bytes]:
    values = list(PHI.values()) + list(NESTED.values()) + [PRIVATE_TEXT, "ELSEWHERE_AE", "ELSEWHERE PACS",
                                                           "OTHER HOSPITAL"]
    return [v.encode() for v in values] + [OVERLAY_TEXT, b"DOE", b"JOHNATHAN"]


def test_phi_gone_from_saved_bytes_and_header(two_slices, tmp_path):
    original = read_dicom(two_slices[0])
    raw = two_slices[0].read_bytes()
    assert all(s in raw for s in _phi_strings()), "the fixture must really contain the PHI"
    before = find_phi(original)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "OperatorsName",
                    "AccessionNumber", "RequestAttributesSequence", "ContentCreatorName", "OverlayData",
                    "SourceApplicationEntityTitle"):
        assert keyword in before, keyword
    assert any(item.startswith("private ") for item in before)

    clean = deidentify(original, salt="project-secret")
    assert find_phi(clean) == []
    out = tmp_path / "clean.dcm"
    clean.save_as(out, enforce_file_format=True)
    saved = out.read_bytes()
    for secret in _phi_strings():
        assert secret not in saved, secret
    reread = read_dicom(out)
    assert find_phi(reread) == []
    assert reread.PatientIdentityRemoved == "YES"
    assert reread.LongitudinalTemporalInformationModified == "REMOVED"
    assert "Annex E" in reread.DeidentificationMethod
    assert reread.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    # type-2 attributes stay present but empty; the pseudonym replaces name and ID
    for keyword in ("PatientBirthDate", "StudyDate", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        assert keyword in reread and not str(reread[keyword].value or ""), keyword
    assert str(reread.PatientName) == reread.PatientID == pseudonym(original, salt="project-secret")
    for header in (safe_header(original), safe_header(clean)):
        text = str(header)
        for secret in _phi_strings():
            assert secret.decode() not in text, secret


def test_input_dataset_is_not_modified(two_slices):
    original = read_dicom(two_slices[0])
    before = original.to_json_dict()
    deidentify(original, salt="test")
    assert original.to_json_dict() == before


def test_uids_replaced_consistently_across_a_series(two_slices):
    originals = [read_dicom(p) for p in two_slices]
    clean = [deidentify(ds, salt="s1") for ds in originals]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert clean[0][keyword].value == clean[1][keyword].value, keyword
        assert clean[0][keyword].value != originals[0][keyword].value, keyword
    assert clean[0].SOPInstanceUID != clean[1].SOPInstanceUID
    for before, after in zip(originals, clean):
        assert after.SOPInstanceUID != before.SOPInstanceUID
        assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
        assert after.SOPClassUID == before.SOPClassUID == CTImageStorage
        assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            uid = str(after[keyword].value)
            assert uid.startswith("2.25.") and len(uid) <= 64 and UID(uid).is_valid, uid
    # the reference from slice 1 to slice 0 still resolves
    assert clean[1].ReferencedImageSequence[0].ReferencedSOPInstanceUID == clean[0].SOPInstanceUID
    assert clean[1].ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    # deterministic per salt, different across salts
    assert deidentify(originals[0], salt="s1").SOPInstanceUID == clean[0].SOPInstanceUID
    assert deidentify(originals[0], salt="s2").SOPInstanceUID != clean[0].SOPInstanceUID


def test_geometry_and_pixels_kept(two_slices):
    original = read_dicom(two_slices[1])
    clean = deidentify(original, salt="test")
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows",
                    "Columns", "BitsStored", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
                    "Modality", "BodyPartExamined", "PhotometricInterpretation", "InstanceNumber"):
        assert clean[keyword].value == original[keyword].value, keyword
    assert np.array_equal(clean.pixel_array, original.pixel_array)
    assert np.array_equal(np.asarray(dicom_to_rgb(clean)), np.asarray(dicom_to_rgb(original)))
    assert clean.AnatomicRegionSequence[0].CodeMeaning == "Brain"  # codes kept, the person name inside gone
    assert clean.AnatomicRegionSequence[0].get("ContentCreatorName") == "ANONYMIZED"  # Z/D -> a dummy


def _embedded_overlay(signed: bool = False, syntax: str = ExplicitVRLittleEndian) -> tuple[Dataset, np.ndarray]:
    """A 16-bit slice, BitsStored 12, with overlay 6000 embedded in bit 15 (OverlayBitPosition 15); its values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, syntax
    ds = pydicom.FileDataset("emb.dcm", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.Modality, ds.Rows, ds.Columns = CTImageStorage, "CT", 8, 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, int(signed)
    stored = np.arange(64, dtype=np.int16).reshape(8, 8) * 60 - (2000 if signed else 0)  # 12-bit values
    raw = stored.view(np.uint16) & (0xFFFF if signed else 0x0FFF)
    raw[6:8, 1:7] |= 0x8000  # the overlay's "text", on positive values
    ds.PixelData = raw.tobytes()
    for element, vr, value in ((0x10, "US", 8), (0x11, "US", 8), (0x40, "CS", "G"), (0x50, "SS", [1, 1]),
                               (0x100, "US", 1), (0x102, "US", 15)):
        ds.add_new(0x60000000 | element, vr, value)
    return ds, stored


@pytest.mark.parametrize("signed", [False, True])
def test_embedded_overlay_bits_are_cleared_with_the_overlay(signed):
    ds, stored = _embedded_overlay(signed)
    clean = deidentify(ds, salt="test")
    assert [tag for tag in clean.keys() if tag.group == 0x6000] == []
    raw = np.frombuffer(clean.PixelData, np.uint16).reshape(8, 8)
    if signed:  # above HighBit: the sign, extended, never the overlay
        assert np.array_equal(raw.view(np.int16), stored)
    else:
        assert not (raw & 0xF000).any() and np.array_equal(raw, stored)
    assert np.array_equal(clean.pixel_array, stored)
    assert np.frombuffer(ds.PixelData, np.uint16).reshape(8, 8)[6, 1] & 0x8000  # the input is not modified


def test_embedded_overlay_in_compressed_pixel_data_is_warned_about():
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds, _ = _embedded_overlay(syntax=RLELossless)
    ds.PixelData = encapsulate([b"\x00" * 16])
    with pytest.warns(UserWarning, match="embedded overlay bits above HighBit 11 stay in the compressed PixelData"):
        clean = deidentify(ds, salt="test")
    assert clean.PixelData == ds.PixelData and [tag for tag in clean.keys() if tag.group == 0x6000] == []


def test_burned_in_annotation_reported(two_slices):
    study, series, frame = "1.2.3", "1.2.3.4", "1.2.3.5"
    flagged = deidentify(read_dicom(two_slices[0]), salt="test")
    assert flagged.BurnedInAnnotation == "YES" and burned_in_annotation(flagged)
    assert safe_header(flagged)["burned_in_annotation"] == "YES"
    assert not burned_in_annotation(phi_slice(0, study, series, frame, ["1.2.3.6"], burned_in="NO"))
    unflagged = phi_slice(0, study, series, frame, ["1.2.3.6"], burned_in=None)
    assert not burned_in_annotation(unflagged) and not burned_in_risk(unflagged)
    unflagged.Modality = "US"
    assert burned_in_risk(unflagged)
    unflagged.BurnedInAnnotation = "NO"
    assert not burned_in_risk(unflagged)


def test_pseudonym():
    a = phi_slice(0, "1.2.3", "1.2.4", "1.2.5", ["1.2.6"])
    b = phi_slice(0, "1.2.3", "1.2.4", "1.2.5", ["1.2.6"])
    b.PatientID = "MRN-0000001"
    alias = pseudonym(a, salt="x")
    assert PSEUDONYM_PATTERN.match(alias)
    assert alias == pseudonym(a, salt="x") != pseudonym(a, salt="y")
    assert alias != pseudonym(b, salt="x")
    clean = deidentify(a, salt="x")
    assert pseudonym(clean, salt="x") == alias  # already de-identified: kept
    assert "MRN" not in alias and "DOE" not in alias.upper()
    a.PatientID = ""  # falls back to name + birth date
    assert PSEUDONYM_PATTERN.match(pseudonym(a, salt="x")) and pseudonym(a, salt="x") != alias



def test_deidentify_refuses_a_missing_or_empty_salt():
    """deidentify(salt="") was the default: pseudonyms and new UIDs were HMAC('', original), so anyone could
    recompute them from a guessed patient ID. A salt is required now and an empty one is refused."""
    ds = phi_slice(0, "1.2.3", "1.2.4", "1.2.5", ["1.2.6"])
    with pytest.raises(TypeError, match="salt"):
        deidentify(ds)
    for salt in ("", "   "):
        with pytest.raises(ValueError, match="salt must be a secret, non-empty string"):
            deidentify(ds, salt=salt)
    with pytest.raises(TypeError, match="salt"):
        pseudonym(ds)
    with pytest.raises(ValueError, match="got bytes") as refused:
        deidentify(ds, salt=b"top-secret")
    assert "top-secret" not in str(refused.value)  # a secret of the wrong type is not echoed into logs
    assert PSEUDONYM_PATTERN.match(str(deidentify(ds, salt="secret").PatientID))


def test_pseudonym_and_new_uid_refuse_an_empty_salt():
    """pseudonym / new_uid called directly with salt="" gave HMAC('', original): pseudonyms and UIDs anyone could
    recompute from a guessed patient ID. They refuse an empty or blank salt, as deidentify does."""
    ds = phi_slice(0, "1.2.3", "1.2.4", "1.2.5", ["1.2.6"])
    for salt in ("", "  "):
        with pytest.raises(ValueError, match="pseudonym: salt must be a secret, non-empty string"):
            pseudonym(ds, salt=salt)
        with pytest.raises(ValueError, match="new_uid: salt must be a secret, non-empty string"):
            new_uid("1.2.3", salt=salt)
    assert PSEUDONYM_PATTERN.match(pseudonym(ds, salt="s")) and new_uid("1.2.3", salt="s").startswith("2.25.")
    assert "PatientName" in find_phi(ds)  # find_phi (no salt) still walks UIDs


def test_keep_accepts_one_keyword_as_a_string():
    """keep="PatientName" was split into letters and kept nothing; a string is one keyword now."""
    ds = phi_slice(0, "1.2.3", "1.2.4", "1.2.5", ["1.2.6"])
    kept = deidentify(ds, salt="s", keep="PatientName")
    assert str(kept.PatientName) == str(ds.PatientName)
    assert kept.PatientID != ds.PatientID
    assert str(deidentify(ds, salt="s", keep=["PatientName"]).PatientName) == str(ds.PatientName)
    # the name is still there: the file must not claim the identity was removed
    assert kept.PatientIdentityRemoved == "NO"
    assert deidentify(ds, salt="s", keep="Manufacturer").PatientIdentityRemoved == "YES"  # not a table attribute
    # a misspelt keyword kept nothing, unsaid: the caller believed StudyDate was kept
    with pytest.raises(ValueError, match=r"keep names \['StudyDates'\], not DICOM keywords"):
        deidentify(ds, salt="s", keep=["StudyDate", "StudyDates"])

def test_longitudinal_temporal_flag_says_what_was_done_to_dates():
    """keep=("StudyDate",) left the real study date in place while LongitudinalTemporalInformationModified still
    said REMOVED. A kept date or time (top level or in a kept sequence) makes it UNMODIFIED (MODIFIED when the
    source said its dates were shifted already); keeping no date leaves REMOVED."""
    ds = phi_slice(0, "1.2.3", "1.2.4", "1.2.5", ["1.2.6"])
    ds.StudyDate, ds.StudyTime = "20230415", "101500"
    flag = lambda **kw: deidentify(ds, salt="s", **kw).LongitudinalTemporalInformationModified  # noqa: E731
    assert flag() == "REMOVED"
    assert flag(keep="Manufacturer") == "REMOVED"
    assert flag(keep="StudyDate") == "UNMODIFIED"  # StudyTime and the rest removed: the kept date is still real
    assert flag(keep="StudyTime") == "UNMODIFIED"
    item = Dataset()
    item.ScheduledProcedureStepStartDate = "20230414"
    ds.ScheduledProcedureStepSequence = Sequence([item])
    assert flag(keep="ScheduledProcedureStepSequence") == "UNMODIFIED"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"  # dates shifted before they reached us
    assert flag(keep="StudyDate") == "MODIFIED" and flag() == "REMOVED"
    del ds.StudyDate
    assert flag(keep="StudyDate") == "REMOVED"  # nothing was there to keep


def test_keep_patient_characteristics(two_slices):
    original = read_dicom(two_slices[0])
    assert "PatientAge" not in deidentify(original, salt="test")
    kept = deidentify(original, salt="test", keep_patient_characteristics=True)
    assert kept.PatientAge == "079Y" and kept.PatientSex == "M"
    assert [item.CodeValue for item in kept.DeidentificationMethodCodeSequence] == ["113100", "113108"]
    assert find_phi(kept) == ["PatientAge", "PatientSex", "PatientWeight"]  # find_phi still reports them


def test_phi_keywords_are_dicom_keywords():
    unknown = [kw for kw in PHI_KEYWORDS if tag_for_keyword(kw) is None]
    assert unknown == []
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "PatientTelephoneNumbers",
                    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
                    "PerformingPhysicianName", "OperatorsName", "AccessionNumber", "StudyID", "OtherPatientIDs",
                    "OtherPatientIDsSequence", "PatientBirthTime", "PatientComments"):
        assert keyword in PHI_KEYWORDS, keyword
    # a plain tuple: it was a tuple subclass whose index / count / == / + saw an empty tuple
    assert type(PHI_KEYWORDS) is tuple and PHI_KEYWORDS == tuple(sorted(PHI_KEYWORDS))
    assert PHI_KEYWORDS[PHI_KEYWORDS.index("PatientName")] == "PatientName" and PHI_KEYWORDS.count("PatientID") == 1


def test_deidentify_every_pydicom_test_file():
    """Real-world variety (SR, RT, multi-frame, odd encodings): nothing identifying is left."""
    done = 0
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        try:
            ds = read_dicom(path)
        except DicomError:
            continue
        clean = deidentify(ds, salt="sweep")
        assert find_phi(clean) == [], path.name
        done += 1
    assert done > 100


def test_safe_header_of_ct_small():
    header = safe_header(read_dicom(TEST_FILES / "CT_small.dcm"))
    assert header["modality"] == "CT" and header["size"] == "128 x 128"
    assert header["rescale"] == "slope 1, intercept -1024"
    assert header["transfer_syntax"] == "Explicit VR Little Endian"
    assert header["photometric_interpretation"] == "MONOCHROME2"
    assert header["frames"] == "1"
    assert "window" not in header  # CT_small has no WC/WW
    assert safe_header(read_dicom(TEST_FILES / "MR_small.dcm"))["window"] == "600/1600"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in header.items())


def test_safe_header_shows_a_rescale_with_one_of_its_two_values():
    """"rescale" was shown only with both RescaleSlope and RescaleIntercept; with one, the other has its DICOM
    default (slope 1, intercept 0), which the reader applies (dicom._modality), so the page showed no rescale for
    pixels that were rescaled."""
    ds = read_dicom(TEST_FILES / "CT_small.dcm")
    del ds.RescaleSlope
    assert safe_header(ds)["rescale"] == "slope 1, intercept -1024"
    ds = read_dicom(TEST_FILES / "CT_small.dcm")
    ds.RescaleSlope = 2
    del ds.RescaleIntercept
    assert safe_header(ds)["rescale"] == "slope 2, intercept 0"
    del ds.RescaleSlope
    assert "rescale" not in safe_header(ds)


def test_safe_header_reads_an_enhanced_files_functional_groups():
    """An enhanced multi-frame file keeps spacing, window and rescale in its functional groups: the header table
    showed none of them."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    def item(**values):
        entry = Dataset()
        for keyword, value in values.items():
            setattr(entry, keyword, value)
        return entry

    ds = Dataset()
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "CT", 4, 4, 2
    ds.SharedFunctionalGroupsSequence = Seq([item(
        PixelMeasuresSequence=Seq([item(PixelSpacing=[0.5, 0.5], SliceThickness=1.25)]),
        PixelValueTransformationSequence=Seq([item(RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU")]))])
    ds.PerFrameFunctionalGroupsSequence = Seq([item(FrameVOILUTSequence=Seq([item(WindowCenter=40, WindowWidth=400)]))
                                               for _ in range(2)])
    header = safe_header(ds)
    assert header["pixel_spacing_mm"] == "0.5 x 0.5" and header["slice_thickness_mm"] == "1.25"
    assert header["window"] == "40/400" and header["rescale"] == "slope 1, intercept -1024"
    assert header["rescale_type"] == "HU"
    ds.PixelSpacing = [0.7, 0.7]  # the top level, where a file has it, wins
    assert safe_header(ds)["pixel_spacing_mm"] == "0.7 x 0.7"


def test_free_text_is_removed_and_method_fits_its_vr():
    """Free text (LT / ST / UT: interpretations, comments) can name the patient; DeidentificationMethod is LO (64)."""
    from pydicom.dataset import Dataset

    from domains.medical.deid import deidentify, find_phi

    ds = Dataset()
    ds.PatientName = "DOE^JOHNATHAN"
    ds.InterpretationText = "Johnathan has a lesion"  # ST, retired group 4008
    ds.ImageComments = "seen by Johnathan's GP"  # LT
    assert "InterpretationText" in find_phi(ds) and "ImageComments" in find_phi(ds)
    out = deidentify(ds, salt="test")
    assert find_phi(out) == []
    assert "Johnathan" not in str(out) and "JOHNATHAN" not in str(out)
    assert len(out.DeidentificationMethod) <= 64 and "Annex E" in out.DeidentificationMethod
