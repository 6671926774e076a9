"""The whole PS3.15 Annex E table: a unique PHI marker in every string-valued attribute of the DICOM dictionary
(top level, nested, private, file meta, preamble, overlays) is gone from the saved bytes after de-identification;
find_phi flags every given string; the Clean Descriptors and Retain Safe Private options; the table's provenance.

Which attributes get a marker: every attribute of a text VR (AE, AS, DA, DT, LO, LT, PN, SH, ST, TM, UC, UR, UT),
every instance UID (UI), and the code strings (CS) and numbers (DS, IS) that Table E.1-1 lists. Left unmarked, because
the de-identifier keeps them on purpose: deid.KEEP_TEXT (vendor and model names, the rescale unit), class UIDs and the
UIDs of coding schemes / transfer syntaxes (they name kinds of objects, not people), and CS / DS / IS attributes the
table does not list (codes and measurements, PS3.15 E.1.1 note 9).
"""

from __future__ import annotations

import io
import json

import pytest

from tests.deps import require

require("pydicom")
require("dicomanonymizer", "the PS3.15 Annex E table")
import pydicom
from pydicom.datadict import DicomDictionary, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from domains.base import DomainError
from domains.medical import annex_e, deid
from domains.medical.deid import KEEP_TEXT, deidentify, find_phi

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # markers are odd values for some VRs on purpose

TEXT_VRS = ("AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT")
UID_KEPT = {"TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile", "CodingSchemeUID", "ImplementationClassUID",
            "ContextGroupExtensionCreatorUID", "MappingResourceUID"}


def marker(vr: str, n: int) -> str:
    """A value of `vr` that occurs nowhere else (n < 10**5)."""
    return {
        "DA": f"18{n:06d}", "DT": f"17{n:06d}101010", "TM": f"23{n:04d}.{n:06d}", "AS": f"{n % 1000:03d}W",
        "DS": f"7{n:06d}.5", "IS": f"7{n:06d}", "UI": f"1.2.826.0.1.3680043.10.999.{n}",
        "UR": f"http://phi.invalid/QX{n:05d}Q", "PN": f"QX{n:05d}Q^DOE",
    }.get(vr, f"QX{n:05d}Q")


def marked_attributes(table: annex_e.Table) -> list[tuple[int, str, str]]:
    """(tag, VR, keyword) of every dictionary attribute that gets a marker (see the module docstring)."""
    out = []
    for tag, (vr, _vm, _name, _retired, keyword) in sorted(DicomDictionary.items()):
        group = tag >> 16
        if group in (0x0000, 0x0002, 0xFFFE) or not keyword:
            continue
        if vr in TEXT_VRS and keyword not in KEEP_TEXT:
            out.append((tag, vr, keyword))
        elif vr == "UI" and not keyword.endswith("ClassUID") and keyword not in UID_KEPT:
            out.append((tag, vr, keyword))
        elif vr in ("CS", "DS", "IS") and table.action(tag) is not None:
            out.append((tag, vr, keyword))
    return out


class Marked:
    """A dataset with a unique marker in every attribute of marked_attributes, twice nested, in private tags, file
    meta, preamble and overlays / curves; `where` maps each marker to the element name find_phi reports."""

    def __init__(self):
        self.n = 0
        self.where: dict[str, str] = {}
        table = annex_e.table()
        attributes = marked_attributes(table)
        self.ds = pydicom.FileDataset("marked.dcm", Dataset(), file_meta=self._meta(), preamble=self._preamble())
        self._fill(self.ds, attributes)
        self.ds.SOPClassUID = CTImageStorage
        self.ds.file_meta.MediaStorageSOPInstanceUID = self.ds.SOPInstanceUID
        nested = Dataset()  # a sequence the table does not list: kept, its items de-identified
        self._fill(nested, attributes)
        self.ds.SharedFunctionalGroupsSequence = Sequence([nested])
        self.ds.ProcedureCodeSequence = Sequence([self._code("12738006", "SCT")])  # a known code, odd meaning
        reference = Dataset()
        reference.ReferencedSOPClassUID = CTImageStorage
        reference.ReferencedSOPInstanceUID = self._mark("UI", "ReferencedSOPInstanceUID")
        reference.PurposeOfReferenceCodeSequence = Sequence([self._code(self._mark("SH", "CodeValue"), "99LOCAL")])
        self.ds.ReferencedImageSequence = Sequence([reference])
        self._private(self.ds)
        self._overlays(self.ds)
        self.ds.Rows = self.ds.Columns = 2
        self.ds.SamplesPerPixel, self.ds.PhotometricInterpretation = 1, "MONOCHROME2"
        self.ds.BitsAllocated, self.ds.BitsStored, self.ds.HighBit, self.ds.PixelRepresentation = 8, 8, 7, 0
        self.ds.PixelData = b"\0\1\2\3"

    def _mark(self, vr: str, name: str) -> str:
        self.n += 1
        value = marker(vr, self.n)
        self.where[value] = name
        return value

    def _fill(self, ds: Dataset, attributes) -> None:
        for tag, vr, keyword in attributes:
            ds.add_new(tag, vr, self._mark(vr, keyword))

    def _code(self, value: str, scheme: str) -> Dataset:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = value, scheme
        item.CodeMeaning = self._mark("LO", "CodeMeaning")
        item.CodingSchemeVersion = self._mark("SH", "CodingSchemeVersion")
        return item

    def _meta(self) -> FileMetaDataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
        for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                        "ReceivingApplicationEntityTitle"):
            setattr(meta, keyword, self._mark("AE", keyword))
        meta.ImplementationVersionName = self._mark("SH", "ImplementationVersionName")
        meta.ImplementationClassUID = self._mark("UI", "ImplementationClassUID")
        meta.PrivateInformationCreatorUID = self._mark("UI", "PrivateInformationCreatorUID")
        meta.PrivateInformation = self._mark("OB", "PrivateInformation").encode()
        return meta

    def _preamble(self) -> bytes:
        return self._mark("OB", "preamble").encode().ljust(128, b"\0")

    def _private(self, ds: Dataset) -> None:
        block = ds.private_block(0x0009, "ACME MARKER", create=True)
        for offset, vr in enumerate(("LO", "SH", "UT", "PN", "DA", "CS"), start=0x10):
            block.add_new(offset, vr, self._mark(vr, f"private (0009,10{offset:02x})".upper().replace("PRIVATE", "private")))
        block.add_new(0x20, "OB", self._mark("OB", "private (0009,1020)").encode())
        block.add_new(0x21, "US", 7)  # numbers: kept by retain_safe_private only
        block.add_new(0x22, "DS", "2.5")
        item = Dataset()
        item.add_new(0x00100010, "PN", self._mark("PN", "PatientName"))
        block.add_new(0x23, "SQ", Sequence([item]))

    def _overlays(self, ds: Dataset) -> None:
        ds.add_new(0x60003000, "OW", self._mark("OB", "OverlayData").encode())
        ds.add_new(0x60004000, "LT", self._mark("LT", "OverlayComments"))
        ds.add_new(0x60000022, "LO", self._mark("LO", "OverlayDescription"))
        ds.add_new(0x50003000, "OB", self._mark("OB", "CurveData").encode())
        ds.add_new(0x50002500, "LO", self._mark("LO", "CurveLabel"))
        ds.add_new(0x60000010, "US", 2)  # OverlayRows: no text, removed with its group all the same

    def saved(self, ds: Dataset | None = None) -> bytes:
        out = io.BytesIO()
        (self.ds if ds is None else ds).save_as(out, enforce_file_format=True)
        return out.getvalue()


@pytest.fixture(scope="module")
def marked():
    return Marked()


def test_the_marked_dataset_covers_every_string_attribute(marked):
    raw = marked.saved()
    missing = [value for value in marked.where if value.encode() not in raw]
    assert missing == [], "markers that never reached the file"
    marked_count = sum(1 for name in marked.where.values() if not name.startswith(("private", "preamble")))
    assert marked_count > 2 * 900  # ~950 text attributes + instance UIDs + the table's CS / DS / IS, twice
    for keyword in ("ContrastBolusAgent", "AcquisitionDeviceProcessingDescription", "PatientName",
                    "ConfidentialityConstraintOnPatientDataDescription", "StudyDescription", "TextValue"):
        assert keyword in marked.where.values(), keyword


def test_no_marker_survives_deidentification(marked):
    clean = deidentify(marked.ds, salt="marker-test")
    raw = marked.saved(clean)
    survivors = sorted({marked.where[value] for value in marked.where if value.encode() in raw})
    assert survivors == []
    reread = pydicom.dcmread(io.BytesIO(raw))
    assert find_phi(reread) == []
    assert find_phi(reread, list(marked.where)) == []
    # what was kept on purpose is still there: codes, class UIDs, the known code with its standard meaning
    assert reread.SOPClassUID == CTImageStorage and reread.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    code = reread.ProcedureCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("12738006", "SCT") and "rain" in code.CodeMeaning
    assert "CodeValue" not in reread.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence[0]
    assert reread.preamble == b"\0" * 128
    assert [tag for tag in reread.keys() if tag.group >> 8 in (0x50, 0x60)] == []  # overlays / curves whole


def test_find_phi_flags_every_given_string_anywhere(marked):
    found = set(find_phi(marked.ds, list(marked.where), rules=False))  # by the strings alone
    expected = set(marked.where.values())
    assert expected - found == set()
    for value, name in list(marked.where.items())[::97]:  # one string at a time finds its own element
        assert name in find_phi(marked.ds, [value.lower()], rules=False), (value, name)
    assert "preamble" in found and "PrivateInformation" in found and "SourceApplicationEntityTitle" in found


def test_issue_attributes_are_found_without_strings_and_removed():
    ds = Dataset()
    ds.ContrastBolusAgent = "Iohexol for DOE"
    ds.AcquisitionDeviceProcessingDescription = "DOE chest"
    ds.ConfidentialityConstraintOnPatientDataDescription = "VIP: DOE, JOHN"
    procedure = Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator, procedure.CodeMeaning = "77477000", "SCT", "CT of DOE"
    ds.ProcedureCodeSequence = Sequence([procedure])
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = "121311", "DCM", "JOHN DOE's prior"
    reference = Dataset()
    reference.PurposeOfReferenceCodeSequence = Sequence([purpose])
    ds.ReferencedImageSequence = Sequence([reference])
    before = find_phi(ds)
    for keyword in ("ContrastBolusAgent", "AcquisitionDeviceProcessingDescription",
                    "ConfidentialityConstraintOnPatientDataDescription", "CodeMeaning"):
        assert keyword in before, keyword
    clean = deidentify(ds, salt="test")
    assert find_phi(clean) == [] and find_phi(clean, ["DOE", "JOHN"]) == []
    assert clean.ProcedureCodeSequence[0].CodeMeaning != "CT of DOE"
    assert clean.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121311"


def test_action_codes_and_combined_codes():
    """Each code of Table E.1-1 does what the module says, combined codes by their always-conformant choice."""
    tab = annex_e.table()
    expect = {"AccessionNumber": "Z", "AcquisitionDeviceProcessingDescription": "X/D", "AcquisitionDate": "X/Z",
              "AcquisitionDateTime": "X/Z/D", "ContrastBolusAgent": "Z/D", "ReferencedImageSequence": "X/Z/U*",
              "SOPInstanceUID": "U", "PatientAddress": "X", "StudyDate": "Z", "ContentSequence": "D"}
    for keyword, code in expect.items():
        assert tab.action(tag_for_keyword(keyword)) == code, keyword
    ds = Dataset()
    ds.AccessionNumber, ds.AcquisitionDeviceProcessingDescription = "ACC1", "DOE"
    ds.AcquisitionDate, ds.AcquisitionDateTime, ds.ContrastBolusAgent = "20240101", "20240101101010", "DOE"
    ds.PatientAddress, ds.SOPInstanceUID = "1 Road", "1.2.3.4"
    clean = deidentify(ds, salt="s")
    assert clean.AccessionNumber == "" and clean.AcquisitionDate == ""  # Z, X/Z: present, empty
    assert clean.AcquisitionDeviceProcessingDescription == "ANONYMIZED" == clean.ContrastBolusAgent  # X/D, Z/D
    assert clean.AcquisitionDateTime == "19000101000000"  # X/Z/D -> D
    assert "PatientAddress" not in clean  # X
    assert clean.SOPInstanceUID == deid.new_uid("1.2.3.4", salt="s")  # U
    # masks: overlays and curves anywhere in their repeating groups
    for tag in (0x50003000, 0x501E3000, 0x60003000, 0x60024000):
        assert tab.action(tag) == "X", hex(tag)
    assert tab.action(0x60000010) is None


def test_table_is_whole_and_options_are_consistent():
    assert annex_e.check() == []
    tab = annex_e.table()
    assert tab.edition == annex_e.EDITION and len(tab.tags) + len(tab.masks) >= 600
    assert set(tab.tags.values()) == set(annex_e.ACTIONS)  # every code of the standard is used
    assert len(deid.PHI_KEYWORDS) > 500 and "PatientName" in deid.PHI_KEYWORDS
    opts = annex_e.load_options()
    assert len(opts.clean_descriptors) >= 90 and tag_for_keyword("StudyDescription") in opts.clean_descriptors
    assert opts.patient_characteristics[tag_for_keyword("PatientAge")] == "K"
    assert opts.patient_characteristics[tag_for_keyword("Allergies")] == "C"
    doc = json.loads(annex_e.OPTIONS_FILE.read_text(encoding="utf-8"))
    assert len(doc["source_sha256"]) == 64 and "Table E.1-1" in doc["source"]


def test_generator_writes_the_option_columns(tmp_path):
    source = tmp_path / "confidentiality_profile_attributes.json"
    source.write_text(json.dumps([
        {"name": "Study Description", "tag": "(0008,1030)", "basicProfile": "X", "cleanDescOpt": "C"},
        {"name": "Patient's Age", "tag": "(0010,1010)", "basicProfile": "X", "rtnPatCharsOpt": "K"},
        {"name": "Curve Data", "tag": "(50XX,XXXX)", "basicProfile": "X", "cleanGraphOpt": "C"},
        {"name": "Accession Number", "tag": "(0008,0050)", "basicProfile": "Z"},
    ]), encoding="utf-8")
    out = tmp_path / "options.json"
    annex_e.generate_options(source, out)
    opts = annex_e.load_options(out)
    assert opts.clean_descriptors == {0x00081030} and opts.patient_characteristics == {0x00101010: "K"}
    assert annex_e.check(out) == []
    stray = tmp_path / "stray.json"  # an option row the basic table does not list (Modality)
    stray.write_text(json.dumps([{"name": "Modality", "tag": "(0008,0060)", "cleanDescOpt": "C"}]), encoding="utf-8")
    annex_e.generate_options(stray, tmp_path / "stray_options.json")
    assert annex_e.check(tmp_path / "stray_options.json") == [
        "option row (0008,0060) is not in the basic profile table"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "Curve", "tag": "(50XX,XXXX)", "cleanDescOpt": "C"}]), encoding="utf-8")
    with pytest.raises(DomainError, match="no single tag"):
        annex_e.generate_options(bad, tmp_path / "x.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(DomainError, match="broken.json"):
        annex_e.load_options(broken)


def _described() -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JOHNATHAN", "MRN-7781234", "19450317"
    ds.InstitutionName = "St Elsewhere"
    ds.StudyDescription = "CT head for Johnathan Doe, St Elsewhere 1945-03-17 MRN-7781234 call 5550142"
    ds.SeriesDescription = "DOE"  # nothing left after cleaning: removed as the basic profile says
    ds.ProtocolName = "Brain 5mm HOUSE"
    return ds


def test_clean_descriptors_option_is_off_by_default_and_cleans_when_on():
    ds = _described()
    strict = deidentify(ds, salt="test")
    assert "StudyDescription" not in strict and strict.ProtocolName == "ANONYMIZED"  # X; X/D -> D
    cleaned = deidentify(ds, salt="test", clean_descriptors=True, known_phi=["House"])
    assert cleaned.StudyDescription == "CT head for call"
    assert cleaned.ProtocolName == "Brain 5mm"
    assert "SeriesDescription" not in cleaned
    secrets = ["DOE", "Johnathan", "Elsewhere", "1945", "7781234", "5550142", "HOUSE"]
    assert find_phi(cleaned, secrets, rules=False) == []
    assert find_phi(ds, secrets, rules=False) == ["InstitutionName", "PatientBirthDate", "PatientID", "PatientName",
                                                  "ProtocolName", "SeriesDescription", "StudyDescription"]
    assert "StudyDescription" in find_phi(cleaned)  # kept descriptors are still reported by the strict check
    assert [c.CodeValue for c in cleaned.DeidentificationMethodCodeSequence] == ["113100", "113105"]



def test_a_lone_string_is_one_phi_string_not_its_letters():
    """known_phi="House" and find_phi(ds, "DOE") were split into letters: nothing was cut (one letter is too short)
    and every element holding an "o" was reported. A lone string is one string now."""
    ds = _described()
    as_string = deidentify(ds, salt="test", clean_descriptors=True, known_phi="House")
    assert as_string.ProtocolName == "Brain 5mm"
    assert find_phi(ds, "HOUSE", rules=False) == find_phi(ds, ["HOUSE"], rules=False) == ["ProtocolName"]

def test_clean_descriptors_cuts_dates_written_with_month_names():
    ds = Dataset()
    ds.PatientName, ds.PatientBirthDate, ds.StudyDate = "DOE^JANE", "19300212", "20230415"
    ds.SeriesDescription = "Axial DOE JANE born 12 Feb 1930"
    ds.ImageComments = "Scan 15 April 2023 for Jane"
    ds.ProtocolName = "Chest Doe^Jane Apr 15 2023"
    ds.StudyDescription = "CT February 12th, 1930 / 3rd of March, 1999 / 15-APR-23 / Sept. 2021 5mm"
    cleaned = deidentify(ds, salt="test", clean_descriptors=True)
    assert cleaned.SeriesDescription == "Axial born"
    assert cleaned.ImageComments == "Scan for"
    assert cleaned.ProtocolName == "Chest"
    assert cleaned.StudyDescription == "CT 5mm"  # any month-name date, the file's or not
    assert find_phi(cleaned, ["Feb", "Apr", "1930", "2023", "1999", "2021"], rules=False) == []


def test_retain_safe_private_option_keeps_numbers_only():
    ds = Dataset()
    ds.PatientName = "DOE^JOHN"
    block = ds.private_block(0x0019, "ACME MR", create=True)
    block.add_new(0x0C, "IS", "1000")  # a b-value
    block.add_new(0x0D, "FD", 1.5)
    ds[0x0019100E] = RawDataElement(Tag(0x0019100E), "DS", 4, b"DOE ", 0, False, True)  # not a number
    block.add_new(0x0F, "LO", "DOE^JOHN")
    block.add_new(0x10, "OB", b"DOE JOHN")
    item = Dataset()
    item.add_new(0x00181020, "LO", "DOE")
    block.add_new(0x11, "SQ", Sequence([item]))
    default = deidentify(ds, salt="test")
    assert not any(tag.is_private for tag in default.keys())
    kept = deidentify(ds, salt="test", retain_safe_private=True)
    private = {tag: kept[tag].value for tag in kept.keys() if tag.is_private}
    assert private == {0x00190010: "ACME MR", 0x0019100C: "1000", 0x0019100D: 1.5}
    # kept private tags are still reported by the strict check, and no element holds the name
    assert find_phi(kept) == ["private (0019,0010)", "private (0019,100C)", "private (0019,100D)"]
    assert find_phi(kept, ["DOE", "JOHN"], rules=False) == []
    assert [c.CodeValue for c in kept.DeidentificationMethodCodeSequence] == ["113100", "113111"]
    assert keyword_for_tag(0x00181020) == "SoftwareVersions"
