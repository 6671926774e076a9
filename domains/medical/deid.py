"""De-identification of DICOM datasets after the DICOM PS3.15 Annex E *Basic Application Level
Confidentiality Profile*, and a PHI-free header summary for display.

:func:`deidentify` returns a de-identified copy:

* **dummy** (D): PatientName and PatientID become a stable pseudonym (:func:`pseudonym`), so the
  studies of one patient stay linked without naming them;
* **zero** (Z): type-2 attributes that must stay present are emptied (birth date, sex, study date / time,
  accession number, study ID, referring physician, content date / time);
* **remove** (X): the other identifying attributes of the profile -- other IDs and names, addresses,
  telephone numbers, institution and department, performing / reading / operators' names, device
  serial numbers, free-text comments and descriptions, request and procedure-step details, SR content,
  icon images, overlays and curves -- and, by value representation, *every* other person name (PN),
  date / time (DA, DT, TM) and AE title, at any depth of nesting;
* **UIDs** (U): every instance UID (study, series, SOP instance, frame of reference, references inside
  sequences, the file meta MediaStorageSOPInstanceUID) is replaced by ``2.25.<int>`` from a salted hash
  of the original, so slices of one series still share their series / study / frame of reference and
  references between instances still resolve. Class UIDs, transfer syntaxes and registered DICOM UIDs
  are kept;
* all **private tags** are removed;
* **kept**: geometry (position, orientation, spacing, thickness), pixel description and data, rescale
  and window values, modality, body part, manufacturer and model, and the BurnedInAnnotation flag --
  pixels are not touched, so callers must surface :func:`burned_in_annotation`.

PatientIdentityRemoved is set to ``YES``, DeidentificationMethod and its code sequence (DCM 113100,
plus 113108 with `keep_patient_characteristics`) describe what was done, and
LongitudinalTemporalInformationModified is ``REMOVED``. Use a secret `salt` per project: without it,
anyone holding an original UID or patient ID can recompute its replacement.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, UID_dictionary

__all__ = [
    "PHI_KEYWORDS",
    "PSEUDONYM_PATTERN",
    "burned_in_annotation",
    "burned_in_risk",
    "deidentify",
    "find_phi",
    "new_uid",
    "pseudonym",
    "safe_header",
]

# D: replaced by the pseudonym
_DUMMY = ("PatientName", "PatientID")
# Z: emptied, kept present (type 2 in their modules)
_EMPTY = (
    "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber",
    "StudyID", "ContentDate", "ContentTime",
)
# X: removed wherever they occur
_REMOVE = (
    # patient
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers",
    "PatientTelecomInformation", "MilitaryRank", "BranchOfService", "MedicalRecordLocator",
    "PatientInsurancePlanCodeSequence", "PatientReligiousPreference", "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence", "CountryOfResidence", "RegionOfResidence", "PatientAge", "PatientSize",
    "PatientWeight", "EthnicGroup", "Occupation", "AdditionalPatientHistory", "PatientComments", "PatientState",
    "PregnancyStatus", "SmokingStatus", "MedicalAlerts", "Allergies", "SpecialNeeds", "LastMenstrualDate",
    "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization", "PersonName", "PersonAddress",
    "PersonTelephoneNumbers", "PersonTelecomInformation", "ReferencedPatientSequence",
    "ReferencedPatientPhotoSequence", "PatientInstitutionResidence", "PatientTransportArrangements",
    "CurrentPatientLocation", "AdmissionID", "IssuerOfAdmissionIDSequence", "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence", "AdmittingDate", "AdmittingTime", "ServiceEpisodeID",
    "ServiceEpisodeDescription", "VisitComments", "ReasonForVisit", "PatientSexNeutered",
    "PatientSpeciesDescription", "PatientBreedDescription", "BreedRegistrationSequence",
    # people
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName", "ConsultingPhysicianIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy", "PhysiciansReadingStudyIdentificationSequence", "OperatorsName",
    "OperatorIdentificationSequence", "RequestingPhysician", "RequestingService", "ScheduledPerformingPhysicianName",
    "ScheduledPerformingPhysicianIdentificationSequence", "ReviewerName", "VerifyingObserverName",
    "VerifyingObserverIdentificationCodeSequence", "VerifyingOrganization", "PersonIdentificationCodeSequence",
    "HumanPerformerName", "HumanPerformerOrganization", "ContentCreatorName",
    "ContentCreatorIdentificationCodeSequence", "DistributionName", "DistributionAddress",
    "NamesOfIntendedRecipientsOfResults", "IntendedRecipientsOfResultsIdentificationSequence",
    "InterpretationRecorder", "InterpretationTranscriber", "InterpretationAuthor", "InterpretationApproverSequence",
    "PhysicianApprovingInterpretation", "OrderEnteredBy", "OrderEntererLocation", "OrderCallbackPhoneNumber",
    "OrderCallbackTelecomInformation", "EvaluatorName", "ParticipantSequence", "AuthorObserverSequence",
    "CustodialOrganizationSequence",
    # institution and devices
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence",
    "InstitutionCodeSequence", "StationName", "DeviceSerialNumber", "DetectorID", "GantryID", "PlateID", "CassetteID",
    "GeneratorID", "SourceSerialNumber", "ModifyingDeviceID", "ModifyingDeviceManufacturer", "PerformedStationName",
    "PerformedLocation", "ScheduledStationName", "DeviceDescription", "DeviceLabel", "CarrierID",
    # study, request, procedure, free text
    "IssuerOfAccessionNumberSequence", "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments",
    "StudyComments", "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureComments",
    "RequestedProcedureLocation", "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
    "ScheduledProcedureStepLocation", "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "CommentsOnThePerformedProcedureStep", "RequestAttributesSequence", "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberProcedure", "FillerOrderNumberProcedure",
    "ReasonForStudy", "RequestedContrastAgent", "ImagingServiceRequestComments", "ReasonForTheRequestedProcedure",
    "DerivationDescription", "AcquisitionComments", "FrameComments", "TextComments", "TextString",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolName", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointID", "ClinicalTrialCoordinatingCenterName",
    "SpecimenAccessionNumber", "ContainerIdentifier", "ContainerDescription", "SpecimenDescriptionSequence",
    "BarcodeValue", "LabelText", "ConfidentialityCode", "TimezoneOffsetFromUTC", "TopicTitle", "TopicAuthor",
    "TopicKeywords", "TopicSubject",
    # containers of identifying content
    "DigitalSignaturesSequence", "MACParametersSequence", "OriginalAttributesSequence", "ModifiedAttributesSequence",
    "EncryptedAttributesSequence", "ContentSequence", "AcquisitionContextSequence", "IconImageSequence",
    "GraphicAnnotationSequence", "DataSetTrailingPadding",
)
# Retain Patient Characteristics Option (PS3.15 E.3.6)
_CHARACTERISTICS = (
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "SmokingStatus", "PregnancyStatus",
    "PatientSexNeutered", "PatientSpeciesDescription", "PatientBreedDescription",
)
PHI_KEYWORDS: tuple[str, ...] = tuple(sorted(set(_DUMMY + _EMPTY + _REMOVE)))

# person names, dates, times, AE titles and free text (LT / ST / UT: comments, interpretations, reports), at any
# depth, unless listed in _DUMMY / _EMPTY or kept; no geometry or pixel attribute has these VRs
_ALWAYS_REMOVED_VRS = ("PN", "DA", "DT", "TM", "AE", "LT", "ST", "UT")
_KEEP_UID_KEYWORDS = frozenset({
    "TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile", "CodingSchemeUID", "ImplementationClassUID",
    "ContextGroupExtensionCreatorUID", "MappingResourceUID", "LongCodeValue",
})
_META_REMOVE = ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                "PrivateInformationCreatorUID", "PrivateInformation")
PSEUDONYM_PATTERN = re.compile(r"^anon-[0-9a-f]{12}$")
_METHOD = "PS3.15 Annex E basic profile (pocket-adapt)"  # DeidentificationMethod is LO: at most 64 characters


def _digest(salt: str, text: str) -> bytes:
    return hmac.new(salt.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()


def new_uid(uid: str, *, salt: str = "") -> str:
    """The replacement of `uid`: ``"2.25."`` + a 128-bit integer from an HMAC-SHA256 of it (at most 44 chars)."""
    return "2.25." + str(int.from_bytes(_digest(salt, "uid:" + str(uid).strip("\0 ")), "big") >> 128)


def pseudonym(ds: Dataset, *, salt: str = "") -> str:
    """A stable, non-reversible patient pseudonym such as ``"anon-3f9c2a1b07de"`` (12 hex digits).

    Derived from IssuerOfPatientID + PatientID, else PatientName + PatientBirthDate, else the
    StudyInstanceUID; call it on the *original* dataset. A dataset that :func:`deidentify` already
    processed keeps its pseudonym.
    """
    current = str(ds.get("PatientID") or "").strip()
    if PSEUDONYM_PATTERN.match(current) and str(ds.get("PatientIdentityRemoved") or "").upper() == "YES":
        return current
    if current:
        key = f"id:{str(ds.get('IssuerOfPatientID') or '').strip()}|{current}"
    elif str(ds.get("PatientName") or "").strip():
        key = f"name:{str(ds.get('PatientName')).strip()}|{str(ds.get('PatientBirthDate') or '').strip()}"
    else:
        key = f"study:{str(ds.get('StudyInstanceUID') or ds.get('SOPInstanceUID') or '').strip()}"
    return "anon-" + _digest(salt, key).hex()[:12]


def _vr(ds: Dataset, tag: BaseTag) -> str | None:
    vr = ds.get_item(tag).VR
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _keep_uid(keyword: str, value: str) -> bool:
    return keyword.endswith("ClassUID") or keyword in _KEEP_UID_KEYWORDS or value in UID_dictionary


def _is_overlay_or_curve(tag: BaseTag) -> bool:
    return tag.group % 2 == 0 and (0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF)


def _scrub(ds: Dataset, salt: str, keep: frozenset[str], alias: str) -> None:
    for tag in list(ds.keys()):
        if tag.is_private or _is_overlay_or_curve(tag):
            del ds[tag]
            continue
        keyword = keyword_for_tag(tag)
        if keyword in keep:
            continue
        vr = _vr(ds, tag)
        if keyword in _DUMMY:
            ds[tag] = DataElement(tag, vr or "LO", alias)
        elif keyword in _EMPTY:
            ds[tag] = DataElement(tag, vr or "LO", "")
        elif keyword in _REMOVE or vr in _ALWAYS_REMOVED_VRS:
            del ds[tag]
        elif vr == "UI":
            _replace_uids(ds, tag, keyword, salt)
        elif vr == "SQ":
            for item in ds[tag].value or []:
                _scrub(item, salt, keep, alias)


def _replace_uids(ds: Dataset, tag: BaseTag, keyword: str, salt: str) -> None:
    value = ds[tag].value
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    out = [v if not str(v or "").strip() or _keep_uid(keyword, str(v)) else new_uid(str(v), salt=salt)
           for v in values]
    ds[tag] = DataElement(tag, "UI", out if len(out) != 1 else out[0])


def deidentify(
    ds: Dataset,
    *,
    salt: str = "",
    keep: Iterable[str] = (),
    keep_patient_characteristics: bool = False,
) -> Dataset:
    """A de-identified copy of `ds` (the input is not modified); see the module docstring.

    `keep`: DICOM keywords to leave untouched (at your own risk); `keep_patient_characteristics`
    applies the profile's Retain Patient Characteristics Option (sex, age, size, weight, ...).
    """
    alias = pseudonym(ds, salt=salt)
    kept = frozenset(keep) | (frozenset(_CHARACTERISTICS) if keep_patient_characteristics else frozenset())
    out = copy.deepcopy(ds)
    _scrub(out, salt, kept, alias)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        for keyword in _META_REMOVE:
            if keyword in meta:
                delattr(meta, keyword)
        if meta.get("MediaStorageSOPInstanceUID"):
            meta.MediaStorageSOPInstanceUID = new_uid(str(meta.MediaStorageSOPInstanceUID), salt=salt)
    for keyword in _DUMMY:
        if keyword not in kept:
            setattr(out, keyword, alias)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = _METHOD
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if keep_patient_characteristics:
        codes.append(("113108", "Retain Patient Characteristics Option"))
    out.DeidentificationMethodCodeSequence = Sequence([_code(value, meaning) for value, meaning in codes])
    out.LongitudinalTemporalInformationModified = "REMOVED"
    return out


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


# --------------------------------------------------------------------------------------------- checks
def find_phi(ds: Dataset) -> list[str]:
    """Keywords of identifying attributes still present with a non-empty value, at any nesting depth.

    Checks the :data:`PHI_KEYWORDS`, every person name, date / time and AE title, overlays / curves and
    private tags (reported as ``"private (gggg,eeee)"``). A pseudonym from :func:`pseudonym` in
    PatientName / PatientID is not PHI. Sorted, without repeats; empty means nothing was found.
    """
    found: set[str] = set()
    _collect(ds, found)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        found.update(kw for kw in _META_REMOVE if meta.get(kw))
    return sorted(found)


def _collect(ds: Dataset, found: set[str]) -> None:
    for tag in list(ds.keys()):
        keyword = keyword_for_tag(tag) or str(tag)
        if tag.is_private:
            found.add(f"private {tag}")
            continue
        vr = _vr(ds, tag)
        if vr == "SQ":
            items = _value(ds, tag) or []
            if keyword in PHI_KEYWORDS and len(items):
                found.add(keyword)
            for item in items:
                _collect(item, found)
            continue
        if not (keyword in PHI_KEYWORDS or vr in _ALWAYS_REMOVED_VRS or _is_overlay_or_curve(tag)):
            continue
        text = _text(_value(ds, tag))
        if not text:
            continue
        if keyword in _DUMMY and PSEUDONYM_PATTERN.match(text):
            continue
        found.add(keyword)


def _value(ds: Dataset, tag: BaseTag) -> Any:
    try:
        return ds[tag].value
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return ds.get_item(tag).value  # undecodable: judge the raw bytes


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.strip(b"\0 ").decode("latin-1")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(v) for v in value).strip("\\ ")
    return str(value).strip("\0 ")


def burned_in_annotation(ds: Dataset) -> bool:
    """True when the file declares text burned into the pixels (BurnedInAnnotation ``YES``)."""
    return str(ds.get("BurnedInAnnotation") or "").strip().upper() == "YES"


# modalities and SOP classes that often carry burned-in text without declaring it
_RISKY_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "DOC", "SM", "GM"})


def burned_in_risk(ds: Dataset) -> bool:
    """True when burned-in text is declared, or undeclared in a modality that often has it (US, SC, ...)."""
    if burned_in_annotation(ds):
        return True
    flag = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    modality = str(ds.get("Modality") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID") or "")
    secondary_capture = sop_class.startswith("1.2.840.10008.5.1.4.1.1.7")
    return flag != "NO" and (modality in _RISKY_MODALITIES or secondary_capture)


# --------------------------------------------------------------------------------------------- header
def safe_header(ds: Dataset) -> dict[str, str]:
    """Display attributes from an allow-list -- never PHI. Absent or unreadable attributes are left out.

    Keys: ``modality``, ``sop_class``, ``body_part``, ``image_type``, ``size`` (``"W x H"``), ``frames``,
    ``pixel_spacing_mm``, ``slice_thickness_mm``, ``spacing_between_slices_mm``, ``window`` (``"C/W"``),
    ``voi_lut_function``, ``rescale`` (``"slope S, intercept I"``), ``rescale_type``,
    ``photometric_interpretation``, ``samples_per_pixel``, ``bits_stored``, ``transfer_syntax``,
    ``manufacturer``, ``model``, ``patient_position``, ``view_position``, ``laterality``,
    ``magnetic_field_strength_t``, ``kvp``, ``burned_in_annotation``.
    """
    out: dict[str, str] = {}

    def put(key: str, fn) -> None:
        try:
            value = fn()
        except (AttributeError, KeyError, TypeError, ValueError, IndexError, UnicodeDecodeError):
            return
        if value is None:
            return
        text = " ".join(str(value).split())[:64]
        if text:
            out[key] = text

    get = ds.get
    put("modality", lambda: _cs(get("Modality")))
    put("sop_class", lambda: UID(str(get("SOPClassUID"))).name if get("SOPClassUID") else None)
    put("body_part", lambda: _cs(get("BodyPartExamined")))
    put("image_type", lambda: "\\".join(_cs(v) for v in get("ImageType")) if get("ImageType") else None)
    put("size", lambda: f"{int(get('Columns'))} x {int(get('Rows'))}" if get("Rows") and get("Columns") else None)
    put("frames", lambda: str(int(get("NumberOfFrames") or 1)) if "PixelData" in ds or get("Rows") else None)
    put("pixel_spacing_mm", lambda: _numbers(get("PixelSpacing")))
    put("slice_thickness_mm", lambda: _numbers(get("SliceThickness")))
    put("spacing_between_slices_mm", lambda: _numbers(get("SpacingBetweenSlices")))
    put("window", lambda: _window(get("WindowCenter"), get("WindowWidth")))
    put("voi_lut_function", lambda: _cs(get("VOILUTFunction")))
    put("rescale", lambda: (f"slope {_numbers(get('RescaleSlope'))}, intercept {_numbers(get('RescaleIntercept'))}"
                            if get("RescaleSlope") is not None and get("RescaleIntercept") is not None else None))
    put("rescale_type", lambda: _cs(get("RescaleType")))
    put("photometric_interpretation", lambda: _cs(get("PhotometricInterpretation")))
    put("samples_per_pixel", lambda: str(int(get("SamplesPerPixel"))) if get("SamplesPerPixel") else None)
    put("bits_stored", lambda: str(int(get("BitsStored"))) if get("BitsStored") else None)
    put("transfer_syntax", lambda: UID(str(ds.file_meta.TransferSyntaxUID)).name)
    put("manufacturer", lambda: _plain(get("Manufacturer")))
    put("model", lambda: _plain(get("ManufacturerModelName")))
    put("patient_position", lambda: _cs(get("PatientPosition")))
    put("view_position", lambda: _cs(get("ViewPosition")))
    put("laterality", lambda: _cs(get("ImageLaterality") or get("Laterality")))
    put("magnetic_field_strength_t", lambda: _numbers(get("MagneticFieldStrength")))
    put("kvp", lambda: _numbers(get("KVP")))
    put("burned_in_annotation", lambda: _cs(get("BurnedInAnnotation")))
    return out


_CS = re.compile(r"^[A-Z0-9_ ]{1,16}$")


def _cs(value: Any) -> str | None:
    """A code string value, only if it looks like one (upper case, digits, space, underscore)."""
    if value in (None, ""):
        return None
    text = str(value).strip().upper()
    return text if _CS.match(text) else None


def _plain(value: Any) -> str | None:
    text = str(value or "").strip()
    return text[:64] if text and re.fullmatch(r"[\w .,()/+-]{1,64}", text) else None


def _numbers(value: Any) -> str | None:
    if value in (None, ""):
        return None
    items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return " x ".join(f"{float(v):g}" for v in items) if items else None


def _window(center: Any, width: Any) -> str | None:
    def first(value: Any) -> float | None:
        if value in (None, ""):
            return None
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return float(value[0]) if len(value) else None
        return float(value)

    c, w = first(center), first(width)
    return f"{c:g}/{w:g}" if c is not None and w is not None else None
