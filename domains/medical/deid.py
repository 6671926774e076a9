"""De-identification of DICOM datasets after the whole DICOM PS3.15 Annex E *Basic Application Level
Confidentiality Profile* table, a PHI finder, and a PHI-free header summary for display.

:func:`deidentify` returns a de-identified copy. It applies **every row of Table E.1-1** (edition
:data:`domains.medical.annex_e.EDITION`, several hundred attributes, see :mod:`domains.medical.annex_e`) with
its action code, at any depth of nesting and in the file meta information:

* ``X`` removes the attribute; ``Z`` empties it; ``D`` puts a dummy value of its VR (``ANONYMIZED``,
  ``19000101``, ``000000``, ``0``, ...); ``U`` replaces the UID (below);
* the combined codes take the choice that keeps any IOD conformant without knowing the IOD (their last
  letter): ``Z/D``, ``X/D`` and ``X/Z/D`` -> ``D``; ``X/Z`` -> ``Z``; ``X/Z/U*`` -> ``U`` for a UID, else ``Z``;
  sequences under ``D`` / ``X/D`` / ``X/Z/D`` / ``X/Z/U*`` are kept and their items processed by the same rules;
* PatientName and PatientID get a stable pseudonym (:func:`pseudonym`, a dummy value), so one patient's
  studies stay linked without naming them.

Beyond the table (safe by default; the profile itself keeps every attribute it does not list):

* **free text** -- every other attribute of a text VR (AE, AS, DA, DT, LO, LT, PN, SH, ST, TM, UC, UR, UT)
  and every standard attribute of VR UN is removed, at any depth, except :data:`KEEP_TEXT`
  (Manufacturer, ManufacturerModelName, RescaleType: vendor, model and unit names). Code strings (CS) and
  numbers (DS, IS, binary) are kept (PS3.15 E.1.1 note 9);
* **coded entries** (items with CodingSchemeDesignator + CodeValue) keep their code only when it is a
  code of pydicom's PS3.16 dictionary, with its standard CodeMeaning (replacing any other meaning) and
  without CodingSchemeVersion; local or unknown codes lose CodeValue / CodingSchemeDesignator / CodeMeaning;
* **UIDs**: every instance UID (table ``U`` rows and any other UI value that is not a class UID, a
  transfer syntax or a UID registered in the standard) becomes ``2.25.<int>`` from a salted HMAC of the
  original, so slices of one series still share study / series / frame of reference and references
  between instances still resolve;
* **overlays and curves** (groups 50xx / 60xx) are removed whole, an overlay embedded in the pixel data
  with them: when an overlay group goes, the PixelData bits outside BitsStored (where OverlayBitPosition
  points) are cleared -- pixel values stay -- for uncompressed pixel data; compressed (encapsulated) pixel
  data cannot be changed without decoding, so a warning says its embedded overlay bits stay;
* the file **preamble** is zeroed; the file meta's PrivateInformation and text elements (AE titles) are
  removed, and its implementation class UID / version name are pydicom's, the writer of the de-identified
  file;
* **private tags** are removed (see `retain_safe_private`).

Options (all off by default: off means removal, as the basic profile says):

* `clean_descriptors` -- the Clean Descriptors Option (DCM 113105): attributes marked ``C`` in its column
  (StudyDescription, SeriesDescription, ProtocolName, ContrastBolusAgent, comments, ...) are kept but
  cleaned: every value of the dataset's identifying attributes (names and their parts, IDs, dates in
  common spellings, addresses, AE titles, ...), every string in `known_phi`, any date-like text (numeric,
  or with a month name: ``12 Feb 1930``, ``April 15th, 2023``, ``15-APR-23``) and any run of 5+ digits is
  cut out. What is left is kept; an attribute left empty gets its basic action. This
  is best effort: a name that appears nowhere else in the file cannot be recognised;
* `retain_safe_private` -- the Retain Safe Private Option (DCM 113111), after the approach of PS3.15
  E.3.10 note 2: private attributes are kept only when numeric (US, SS, UL, SL, FL, FD, UV, SV, or IS / DS
  holding only a number), with their private creator; private text, binary (OB / UN), sequences and
  anything whose VR is unknown are removed. A vendor could still store an identifier as a number: use it
  only for sources whose private numbers you know;
* `keep_patient_characteristics` -- the Retain Patient Characteristics Option (DCM 113108): sex, age,
  size, weight, ethnic group, smoking / pregnancy status are kept (``K``), allergies, patient state,
  pre-medication and special needs are cleaned as descriptors (``C``);
* `keep` -- keywords left untouched wherever they occur, at your own risk.

PatientIdentityRemoved is set to ``YES`` (``NO`` when `keep` names an attribute of Table E.1-1, such as PatientName: the
file may still identify the patient), DeidentificationMethod and its code sequence (DCM 113100 plus the options used)
describe what was done, LongitudinalTemporalInformationModified is ``REMOVED`` (``UNMODIFIED`` when `keep` left a date
or time in place, even with others removed: those are real; ``MODIFIED`` if the source said its dates were already
shifted), and the BurnedInAnnotation flag is kept as it was -- pixel values are not touched here (see
:mod:`domains.medical.redact`), so callers must surface :func:`burned_in_annotation`. Use a secret `salt` per project
(required, never empty): without it, anyone holding an original UID or patient ID can recompute its replacement.

:func:`find_phi` names what :func:`deidentify` would still change (at any depth, file meta and private tags
included) and, given `strings`, every element holding any of them.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom import __version_info__ as _pydicom_version
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, UID_dictionary

from domains.medical import annex_e

__all__ = [
    "KEEP_TEXT",
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

# text attributes outside Table E.1-1 that are kept: vendor and model names, the rescale unit name
KEEP_TEXT = frozenset({"Manufacturer", "ManufacturerModelName", "RescaleType"})
_TEXT_VRS = frozenset({"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"})
_NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_PSEUDONYMISED = ("PatientName", "PatientID")
_PIXEL_KEYWORDS = frozenset({"PixelData", "FloatPixelData", "DoubleFloatPixelData"})
_CODE_VALUES = ("CodeValue", "LongCodeValue", "URNCodeValue")
_CODE_KEYWORDS = (*_CODE_VALUES, "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning")
_KEEP_UID_KEYWORDS = frozenset({
    "TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile", "CodingSchemeUID", "ImplementationClassUID",
    "ContextGroupExtensionCreatorUID", "MappingResourceUID",
})
_META_REMOVE = ("PrivateInformationCreatorUID", "PrivateInformation")
_METHOD = "PS3.15 Annex E basic profile (pocket-adapt)"  # DeidentificationMethod is LO: at most 64 characters
# values deidentify writes (the file meta names the software that wrote the file: pydicom, as its writer would)
_WRITER = {"ImplementationClassUID": PYDICOM_IMPLEMENTATION_UID,
           "ImplementationVersionName": f"PYDICOM {'.'.join(_pydicom_version)}"}
_OWN = {**_WRITER, "DeidentificationMethod": _METHOD}
_DUMMY_TEXT = "ANONYMIZED"
_DUMMIES: dict[str, Any] = {
    **{vr: _DUMMY_TEXT for vr in ("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT")},
    "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000D", "DS": "0", "IS": "0",
    "UR": "urn:anonymized", **{vr: 0 for vr in _NUMERIC_VRS}, **{vr: b"\0\0" for vr in ("OB", "OW", "UN")},
}
# the combined codes resolved to the choice that keeps any IOD conformant (type 1 > type 2 > type 3)
_RESOLVED = {"X": "X", "Z": "Z", "D": "D", "U": "U", "Z/D": "D", "X/Z": "Z", "X/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}
PSEUDONYM_PATTERN = re.compile(r"^anon-[0-9a-f]{12}$")
_OPTION_CODES = {"clean_descriptors": ("113105", "Clean Descriptors Option"),
                 "keep_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
                 "retain_safe_private": ("113111", "Retain Safe Private Option")}


@cache
def _phi_keywords() -> tuple[str, ...]:
    return tuple(sorted({kw for tag in annex_e.table().tags if (kw := keyword_for_tag(tag))}))


if TYPE_CHECKING:
    # keywords of every Table E.1-1 attribute that pydicom's dictionary knows (sorted)
    PHI_KEYWORDS: tuple[str, ...]


def __getattr__(name: str) -> Any:
    if name == "PHI_KEYWORDS":  # read from the Annex E table on first use, so importing this module needs no table
        return _phi_keywords()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_salt(salt: Any, caller: str) -> None:
    """Refuse a salt that is not a secret: with a known (empty) one anyone recomputes pseudonyms and new UIDs."""
    if not isinstance(salt, str) or not salt.strip():
        got = "an empty string" if isinstance(salt, str) else type(salt).__name__  # never echo a secret
        raise ValueError(f"{caller}: salt must be a secret, non-empty string, got {got}: with a known salt "
                         "anyone can recompute pseudonyms and new UIDs from a guessed patient ID; pass one secret "
                         "per project (e.g. domains.medical.convert.machine_key()[0])")


def _digest(salt: str, text: str) -> bytes:
    return hmac.new(salt.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()


def new_uid(uid: str, *, salt: str) -> str:
    """The replacement of `uid`: ``"2.25."`` + a 128-bit integer from an HMAC-SHA256 of it keyed by `salt` (at most
    44 chars). An empty `salt` is refused (ValueError): the replacement would be recomputable by anyone."""
    _check_salt(salt, "new_uid")
    return "2.25." + str(int.from_bytes(_digest(salt, "uid:" + str(uid).strip("\0 ")), "big") >> 128)


def pseudonym(ds: Dataset, *, salt: str) -> str:
    """A stable patient pseudonym such as ``"anon-3f9c2a1b07de"`` (12 hex digits of an HMAC-SHA256 keyed by `salt`).

    Derived from IssuerOfPatientID + PatientID, else PatientName + PatientBirthDate, else the
    StudyInstanceUID; call it on the *original* dataset. It is non-reversible only with a secret `salt`:
    with ``""`` anyone could recompute it from a guessed ID (a million MRNs take seconds), so an empty or
    blank salt is refused (ValueError); pass a secret (the converters pass ``--option salt`` or this machine's key,
    :func:`domains.medical.convert.machine_key`). A dataset that :func:`deidentify` already
    processed keeps its pseudonym.
    """
    _check_salt(salt, "pseudonym")
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


# --------------------------------------------------------------------------------------------- helpers
def _vr(ds: Dataset, tag: BaseTag) -> str | None:
    try:
        vr = ds[tag].VR
    except Exception:  # noqa: BLE001 - an undecodable value: judge by the raw element / dictionary
        vr = ds.get_item(tag).VR
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _value(ds: Dataset, tag: BaseTag) -> Any:
    try:
        return ds[tag].value
    except Exception:  # noqa: BLE001 - pydicom raises many types on broken values: judge the raw bytes
        return ds.get_item(tag).value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).strip(b"\0 ").decode("latin-1")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(v) for v in value).strip("\\ ")
    return str(value).strip("\0 ")


def _items(values: str | Iterable[str]) -> list[str]:
    """`values` as a list, a lone string as one item (not its letters)."""
    return [values] if isinstance(values, str) else list(values)


def _filled(value: Any) -> bool:
    """A value that holds something (a non-empty text, a non-zero byte, an item)."""
    if isinstance(value, Sequence) or type(value).__name__ == "Sequence":
        return len(value) > 0
    if isinstance(value, (bytes, bytearray)):
        return any(value)
    return bool(_text(value))


def _keep_uid(keyword: str, value: str) -> bool:
    return keyword.endswith("ClassUID") or keyword in _KEEP_UID_KEYWORDS or value in UID_dictionary


def _is_overlay(tag: BaseTag) -> bool:
    return tag.group % 2 == 0 and 0x6000 <= tag.group <= 0x60FF


def _is_overlay_or_curve(tag: BaseTag) -> bool:
    return _is_overlay(tag) or (tag.group % 2 == 0 and 0x5000 <= tag.group <= 0x50FF)


@cache
def _known_codes() -> dict[tuple[str, str], tuple[str, ...]]:
    """(scheme, value) -> the standard meanings, from pydicom's PS3.16 code dictionary (built on first use)."""
    from pydicom.sr.codedict import Collection, codes

    out: dict[tuple[str, str], list[str]] = {}
    for scheme in codes.schemes():
        for code in Collection(scheme).concepts.values():
            meanings = out.setdefault((scheme, str(code.value)), [])
            if code.meaning not in meanings:
                meanings.append(code.meaning)
    return {key: tuple(value) for key, value in out.items()}


def _code_meanings(scheme: str, value: str) -> tuple[str, ...]:
    known = _known_codes()
    if (scheme, value) in known:
        return known[(scheme, value)]
    if scheme == "SRT":  # SNOMED RT codes map to SNOMED CT (PS3.16 Annex O)
        try:
            from pydicom.sr._snomed_dict import mapping
        except ImportError:
            return ()
        sct = mapping.get("SRT", {}).get(value)
        return known.get(("SCT", sct), ()) if sct else ()
    return ()


# --------------------------------------------------------------------------------------------- clean option
_DATE_LIKE = re.compile(r"(?<!\w)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?!\w)")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
# dates with a month name: "12 Feb 1930", "12th of February, 1930", "12-FEB-30", "Feb. 12th, 1930", "April 2023"
_MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?" \
         r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
_DAY = r"[0-3]?\d(?:st|nd|rd|th)?"
_YEAR = r"(?:\d{4}|'?\d{2})"
_SEP = r"(?:\s*[-/.,]\s*|\s+)"
_MONTH_DATE = re.compile(
    rf"(?<![0-9A-Za-z])(?:{_DAY}(?:{_SEP}(?:of\s+)?|(?=[A-Za-z])){_MONTH}(?:{_SEP}|(?=\d)){_YEAR}"
    rf"|{_MONTH}{_SEP}{_DAY}{_SEP}{_YEAR}|{_MONTH}{_SEP}\d{{4}})(?![0-9A-Za-z])", re.IGNORECASE)
_LONG_NUMBER = re.compile(r"\d{5,}")


class _Cleaner:
    """Cuts identifying text out of descriptors: given strings, the dataset's identifying values, dates, long numbers."""

    def __init__(self, strings: Iterable[str]):
        tokens = sorted({s.strip() for s in strings if len(s.strip()) >= 2}, key=len, reverse=True)
        self.pattern = (re.compile("(?<![0-9A-Za-z])(?:" + "|".join(map(re.escape, tokens)) + ")(?![0-9A-Za-z])",
                                   re.IGNORECASE) if tokens else None)

    def __call__(self, text: str) -> str:
        if self.pattern is not None:
            text = self.pattern.sub(" ", text)
        text = _LONG_NUMBER.sub(" ", _DATE_LIKE.sub(" ", _MONTH_DATE.sub(" ", text)))
        words = [w for w in text.split() if any(c.isalnum() for c in w)]  # what cutting left of "Doe, 1945"
        return " ".join(words).strip(" -_,;:/.^")


def _spellings(vr: str, value: str) -> list[str]:
    """`value` and the forms it may take inside free text: name parts, dates with separators."""
    out = [value]
    if vr == "PN":
        out += re.split(r"[\^=,\s]+", value)
    if vr in ("DA", "DT") and re.fullmatch(r"\d{8}.*", value):
        y, m, d = value[:4], value[4:6], value[6:8]
        out += [f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}", f"{d}-{m}-{y}"]
        if 1 <= int(m) <= 12 and int(d) >= 1:  # month names: "12 Feb 1930", "February 12, 1930" (other forms: _MONTH_DATE)
            names = (_MONTHS[int(m) - 1], _MONTHS[int(m) - 1][:3])
            out += [form for name in names for day in dict.fromkeys((d, d.lstrip("0")))
                    for form in (f"{day} {name} {y}", f"{name} {day} {y}", f"{name} {day}, {y}")]
    return out


def _identifying_strings(ds: Dataset, tab: annex_e.Table, descriptors: frozenset[int], out: list[str]) -> None:
    for tag in list(ds.keys()):
        vr = _vr(ds, tag)
        value = _value(ds, tag)
        if vr == "SQ":
            for item in value or []:
                _identifying_strings(item, tab, descriptors, out)
            continue
        if vr not in _TEXT_VRS or tag in descriptors or getattr(tag, "is_private_creator", False):
            continue
        if vr == "PN" or tag.is_private or tab.action(tag) not in (None, "U"):
            values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            for v in values:
                out += _spellings(vr, _text(v))


# --------------------------------------------------------------------------------------------- the walk
@dataclass
class _Ctx:
    """What one walk applies (``apply``) or only reports (``found``)."""

    salt: str = ""
    alias: str = ""
    keep: frozenset[str] = frozenset()
    clean: frozenset[int] = frozenset()  # tags under the Clean Descriptors Option
    characteristics: dict[int, str] = field(default_factory=dict)  # tag -> K / C
    retain_safe_private: bool = False
    cleaner: _Cleaner | None = None
    apply: bool = True
    found: set[str] = field(default_factory=set)
    kept_dates: bool = False  # a kept attribute holds a date or time (LongitudinalTemporalInformationModified)
    table: annex_e.Table = field(default_factory=annex_e.table)

    def change(self, ds: Dataset, tag: BaseTag, name: str, new: Any, vr: str | None = None) -> None:
        """Set (or with ``new is _REMOVE`` delete) an element, reporting it when a filled value changes."""
        old = _value(ds, tag)
        if new is _REMOVE:
            if _filled(old):
                self.found.add(name)
            if self.apply:
                del ds[tag]
            return
        if _filled(old) and _text(old) != _text(new):
            self.found.add(name)
        if self.apply:
            ds[tag] = DataElement(tag, vr or _vr(ds, tag) or "UN", new)


_REMOVE = object()


def _name(tag: BaseTag) -> str:
    return f"private {tag}" if tag.is_private else (keyword_for_tag(tag) or str(tag))


def _scrub(ds: Dataset, ctx: _Ctx) -> None:
    _private(ds, ctx)
    handled = _code_item(ds, ctx)
    overlays = [tag for tag in ds.keys() if _is_overlay(tag)]
    for tag in list(ds.keys()):
        if tag.is_private or tag in handled:
            continue
        name = _name(tag)
        if name in ctx.keep:
            ctx.kept_dates = ctx.kept_dates or _holds_dates(ds, tag)
            continue
        try:
            _element(ds, tag, name, ctx)
        except Exception:  # noqa: BLE001 - a value pydicom cannot decode or re-encode: remove it
            ctx.found.add(name)
            if ctx.apply and tag in ds:
                del ds[tag]
    if ctx.apply and any(tag not in ds for tag in overlays) and "PixelData" in ds and "PixelData" not in ctx.keep:
        _clear_overlay_bits(ds)


def _holds_dates(ds: Dataset, tag: BaseTag) -> bool:
    """The element holds a filled date, date-time or time, itself or in its items at any depth."""
    vr = _vr(ds, tag)
    value = _value(ds, tag)
    if vr == "SQ":
        return any(_holds_dates(item, t) for item in value or [] for t in item.keys())
    return vr in ("DA", "DT", "TM") and _filled(value)


def _clear_overlay_bits(ds: Dataset) -> None:
    """Zero the PixelData bits outside BitsStored (below the low bit, above HighBit), where embedded overlays live.

    Signed pixels are sign-extended above HighBit instead, so pixel values do not change. Encapsulated
    (compressed) pixel data cannot be changed without decoding: a warning says its embedded overlays stay.
    """
    try:
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        high = int(ds.get("HighBit", stored - 1))
        signed = int(ds.get("PixelRepresentation") or 0) == 1
    except (AttributeError, TypeError, ValueError):
        return
    low = high - stored + 1
    if allocated not in (8, 16, 32) or stored >= allocated or low < 0 or high >= allocated:
        return
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID") or "")) if meta is not None else UID("")
    raw = _value(ds, Tag("PixelData"))
    if not isinstance(raw, (bytes, bytearray)):
        return
    if (syntax and syntax.is_encapsulated) or bytes(raw[:4]) == b"\xfe\xff\x00\xe0":
        warnings.warn(f"deidentify: embedded overlay bits above HighBit {high} stay in the compressed PixelData "
                      f"({syntax.name or 'encapsulated'}): they cannot be cleared without decoding", stacklevel=4)
        return
    dtype = np.dtype(f"u{allocated // 8}").newbyteorder("<" if not syntax or syntax.is_little_endian else ">")
    size = len(raw) // dtype.itemsize * dtype.itemsize
    pixels = np.frombuffer(raw, dtype=dtype, count=size // dtype.itemsize).copy()
    cleared = pixels & np.array(((1 << stored) - 1) << low, dtype=dtype)
    if signed and high < allocated - 1:
        above = np.array(((1 << allocated) - 1) ^ ((1 << (high + 1)) - 1), dtype=dtype)
        cleared = np.where((cleared >> high) & 1 == 1, cleared | above, cleared)
    if not np.array_equal(cleared, pixels):
        ds[Tag("PixelData")].value = cleared.astype(dtype, copy=False).tobytes() + bytes(raw[size:])


def _element(ds: Dataset, tag: BaseTag, name: str, ctx: _Ctx) -> None:
    if _is_overlay_or_curve(tag):
        ctx.change(ds, tag, name, _REMOVE)
        return
    if name in _OWN and _text(_value(ds, tag)) == _OWN[name]:
        return
    vr = _vr(ds, tag)
    action = ctx.table.action(tag)
    option = ctx.characteristics.get(tag) or ("C" if tag in ctx.clean else None)
    if option == "K":
        return
    if name in _PSEUDONYMISED:
        if not PSEUDONYM_PATTERN.match(_text(_value(ds, tag))):
            ctx.change(ds, tag, name, ctx.alias, vr)
        return
    if vr == "SQ":
        _sequence(ds, tag, name, action, option, ctx)
        return
    if option == "C" and vr in _TEXT_VRS and _clean(ds, tag, name, vr, ctx):
        return
    if action is None:  # the profile keeps it: UIDs are still replaced and free text still removed
        if vr == "UI":
            _uids(ds, tag, name, ctx)
        elif (vr in _TEXT_VRS and name not in KEEP_TEXT) or vr == "UN":
            ctx.change(ds, tag, name, _REMOVE)
        return
    resolved = _RESOLVED[action]
    if vr == "UI" and resolved in ("U", "U*", "D"):
        _uids(ds, tag, name, ctx)
    elif resolved == "X":
        ctx.change(ds, tag, name, _REMOVE)
    elif resolved in ("Z", "U*"):
        ctx.change(ds, tag, name, _empty(vr), vr)
    else:  # D (and a U row on a non-UID element)
        ctx.change(ds, tag, name, _DUMMIES[vr] if vr in _DUMMIES else _empty(vr), vr)


def _empty(vr: str | None) -> Any:
    return b"" if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV") else None if vr in _NUMERIC_VRS else ""


def _sequence(ds: Dataset, tag: BaseTag, name: str, action: str | None, option: str | None, ctx: _Ctx) -> None:
    resolved = _RESOLVED.get(action or "", "K")
    if option == "C" or resolved not in ("X", "Z"):  # D, U*, kept and cleaned sequences: process the items
        for item in _value(ds, tag) or []:
            _scrub(item, ctx)
    elif resolved == "X":
        ctx.change(ds, tag, name, _REMOVE)
    else:
        ctx.change(ds, tag, name, Sequence([]), "SQ")


def _clean(ds: Dataset, tag: BaseTag, name: str, vr: str, ctx: _Ctx) -> bool:
    """Clean a descriptor in place; False when nothing is left (the basic action applies then)."""
    value = _value(ds, tag)
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    cleaner = ctx.cleaner or _Cleaner(())
    cleaned = [c for c in (cleaner(_text(v)) for v in values) if c]
    if not cleaned:
        return False
    ctx.change(ds, tag, name, cleaned if len(cleaned) > 1 else cleaned[0], vr)
    return True


def _uids(ds: Dataset, tag: BaseTag, name: str, ctx: _Ctx) -> None:
    if not ctx.apply:  # find_phi: a replaced UID is not reported, and its walk has no salt
        return
    value = _value(ds, tag)
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    out = [v if not _text(v) or _keep_uid(name, _text(v)) else new_uid(_text(v), salt=ctx.salt) for v in values]
    if out != values:  # a replaced UID is not reported: it cannot be told from a new one
        ds[tag] = DataElement(tag, "UI", out if len(out) != 1 else out[0])


def _code_item(ds: Dataset, ctx: _Ctx) -> set[BaseTag]:
    """Apply the coded-entry rule to an item with a code; the tags it handled."""
    value_keyword = next((kw for kw in _CODE_VALUES if kw in ds), None)
    if value_keyword is None or "CodingSchemeDesignator" not in ds or set(_CODE_KEYWORDS) & ctx.keep:
        return set()
    present = {kw: Tag(kw) for kw in _CODE_KEYWORDS if kw in ds}
    meanings = _code_meanings(_text(_value(ds, present["CodingSchemeDesignator"])),
                              _text(_value(ds, present[value_keyword])))
    for keyword, tag in present.items():
        if not meanings:
            ctx.change(ds, tag, keyword, _REMOVE)
        elif keyword == "CodingSchemeVersion":
            ctx.change(ds, tag, keyword, _REMOVE)
        elif keyword == "CodeMeaning":
            current = _text(_value(ds, tag))
            if current.casefold() not in {m.casefold() for m in meanings}:
                ctx.change(ds, tag, keyword, meanings[0], "LO")
    if meanings and "CodeMeaning" not in ds and ctx.apply:
        ds.CodeMeaning = meanings[0]
    return set(present.values())


def _private(ds: Dataset, ctx: _Ctx) -> None:
    tags = [tag for tag in ds.keys() if tag.is_private]
    if not tags:
        return
    kept: set[BaseTag] = set()
    if ctx.retain_safe_private:
        kept = {tag for tag in tags if not tag.is_private_creator and _safe_private(ds, tag)}
        kept |= {Tag(tag.group, tag.element >> 8) for tag in kept}  # their private creators
    for tag in tags:
        if tag not in kept:
            ctx.change(ds, tag, _name(tag), _REMOVE)


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _safe_private(ds: Dataset, tag: BaseTag) -> bool:
    """A private element that is only numbers (PS3.15 E.3.10 note 2)."""
    try:
        element = ds[tag]
    except Exception:  # noqa: BLE001
        return False
    if element.VR in _NUMERIC_VRS:
        return True
    if element.VR in ("IS", "DS"):
        raw = element.value
        values = list(raw) if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw]
        return all(_NUMBER.fullmatch(str(v)) for v in values if v not in (None, ""))
    return False


def _meta(ds: Dataset, ctx: _Ctx) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for keyword in _META_REMOVE:
        if keyword in meta and keyword not in ctx.keep:
            ctx.change(meta, Tag(keyword), keyword, _REMOVE)
    _scrub(meta, ctx)
    if ctx.apply:
        for keyword, value in _WRITER.items():
            if keyword not in ctx.keep:
                setattr(meta, keyword, value)


def _options(keep_patient_characteristics: bool, clean_descriptors: bool) -> tuple[dict[int, str], frozenset[int]]:
    """(patient-characteristics column if that option is on, Clean Descriptors tags if that one is on)."""
    opts = annex_e.load_options()
    chars = dict(opts.patient_characteristics) if keep_patient_characteristics else {}
    return chars, (opts.clean_descriptors if clean_descriptors else frozenset())


# --------------------------------------------------------------------------------------------- API
def deidentify(
    ds: Dataset,
    *,
    salt: str,
    keep: str | Iterable[str] = (),
    keep_patient_characteristics: bool = False,
    clean_descriptors: bool = False,
    retain_safe_private: bool = False,
    known_phi: str | Iterable[str] = (),
) -> Dataset:
    """A de-identified copy of `ds` (the input is not modified); see the module docstring.

    `salt`: the secret key of pseudonyms and new UIDs, required and not empty (whoever knows it can recompute
    them from a guessed patient ID or UID); use one salt for a whole project so its series and patients stay
    linked, e.g. this machine's key, :func:`domains.medical.convert.machine_key`.
    `keep`: DICOM keywords (a lone string is one keyword; one pydicom does not know is a ValueError) to leave
    untouched (at your own risk). Options (off =
    removal, the basic profile): `keep_patient_characteristics` (Retain Patient Characteristics),
    `clean_descriptors` (Clean Descriptors: keep descriptions with identifying text cut out; `known_phi` adds
    strings to cut, a lone string is one), `retain_safe_private` (Retain Safe Private: keep numeric private
    attributes).
    """
    _check_salt(salt, "deidentify")
    alias = pseudonym(ds, salt=salt)
    chars, clean = _options(keep_patient_characteristics, clean_descriptors)
    cleaner = None
    if clean or "C" in chars.values():
        strings: list[str] = [str(s) for s in _items(known_phi)]
        descriptors = clean | {tag for tag, code in chars.items() if code == "C"}
        _identifying_strings(ds, annex_e.table(), frozenset(descriptors), strings)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _identifying_strings(meta, annex_e.table(), frozenset(descriptors), strings)
        cleaner = _Cleaner(strings)
    ctx = _Ctx(salt=salt, alias=alias, keep=_keep_keywords(keep), clean=clean, characteristics=chars,
               retain_safe_private=retain_safe_private, cleaner=cleaner)
    out = copy.deepcopy(ds)
    _scrub(out, ctx)
    _meta(out, ctx)
    if getattr(out, "preamble", None):
        out.preamble = b"\0" * 128
    for keyword in _PSEUDONYMISED:
        if keyword not in ctx.keep:
            setattr(out, keyword, alias)
    # a kept Table E.1-1 attribute (PatientName, a date, an ID...) may still identify the patient: claim no removal
    out.PatientIdentityRemoved = "NO" if ctx.keep & set(_phi_keywords()) else "YES"
    out.DeidentificationMethod = _METHOD
    used = {"keep_patient_characteristics": keep_patient_characteristics, "clean_descriptors": clean_descriptors,
            "retain_safe_private": retain_safe_private}
    codes = [("113100", "Basic Application Confidentiality Profile")]
    codes += sorted(_OPTION_CODES[option] for option, on in used.items() if on)
    out.DeidentificationMethodCodeSequence = Sequence([_code(value, meaning) for value, meaning in codes])
    # PS3.15 E.3.6: dates kept by `keep` are real (UNMODIFIED) unless the source already shifted them
    shifted = str(ds.get("LongitudinalTemporalInformationModified") or "").strip().upper() == "MODIFIED"
    out.LongitudinalTemporalInformationModified = (
        ("MODIFIED" if shifted else "UNMODIFIED") if ctx.kept_dates else "REMOVED")
    return out


def _keep_keywords(keep: str | Iterable[str]) -> frozenset[str]:
    """`keep` as a set of DICOM keywords; ValueError naming any that is none (a misspelt one kept nothing, unsaid)."""
    names = frozenset(_items(keep))
    unknown = sorted(str(k) for k in names if not isinstance(k, str) or tag_for_keyword(k) is None)
    if unknown:
        raise ValueError(f"deidentify: keep names {unknown}, not DICOM keywords (as pydicom spells them, e.g. "
                         "'PatientName', 'StudyDate')")
    return names


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


# --------------------------------------------------------------------------------------------- checks
def find_phi(ds: Dataset, strings: str | Iterable[str] = (), *, rules: bool = True) -> list[str]:
    """Names of elements that still hold identifying information, at any depth, file meta included.

    Without `strings`: every element that :func:`deidentify` (default options) would remove, empty, replace
    with a dummy or clean while it holds a value -- the Annex E table rows, free text outside
    :data:`KEEP_TEXT`, non-standard codes, overlays / curves -- and private tags (``"private (gggg,eeee)"``).
    Replaced UIDs are not reported (a new UID looks like an old one) and a pseudonym in PatientName /
    PatientID is not PHI. With `strings` (a lone string is one): also every element whose value contains one of
    them (case-insensitive; text, numbers as text and binary values alike, pixel data excepted) and
    ``"preamble"`` when the file preamble does; ``rules=False`` reports only those. Sorted, without repeats;
    empty means nothing was found.
    """
    ctx = _Ctx(apply=False)
    if rules:
        _scrub(ds, ctx)
        _meta(ds, ctx)
    needles = [s for s in (str(s).strip() for s in _items(strings)) if s]
    if needles:
        texts = [s.casefold() for s in needles]
        raws = {form for s in needles for form in (s.encode("utf-8").lower(), s.encode("latin-1", "ignore").lower())
                if form}
        _search(ds, texts, raws, ctx.found)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _search(meta, texts, raws, ctx.found)
        preamble = getattr(ds, "preamble", None)
        if preamble and any(raw in bytes(preamble).lower() for raw in raws):
            ctx.found.add("preamble")
    return sorted(ctx.found)


def _search(ds: Dataset, texts: list[str], raws: set[bytes], found: set[str]) -> None:
    for tag in list(ds.keys()):
        name = _name(tag)
        if name in _PIXEL_KEYWORDS:
            continue
        value = _value(ds, tag)
        if isinstance(value, Sequence) or type(value).__name__ == "Sequence":
            for item in value:
                _search(item, texts, raws, found)
        elif isinstance(value, (bytes, bytearray)):
            low = bytes(value).lower()
            if any(raw in low for raw in raws):
                found.add(name)
        elif value is not None:
            text = _text(value).casefold()
            if any(t in text for t in texts):
                found.add(name)


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
    # an enhanced multi-frame file keeps these in its functional groups (shared, else the first frame's)
    measures = lambda keyword: _grouped(ds, "PixelMeasuresSequence", keyword)  # noqa: E731
    voi = lambda keyword: _grouped(ds, "FrameVOILUTSequence", keyword)  # noqa: E731
    values = lambda keyword: _grouped(ds, "PixelValueTransformationSequence", keyword)  # noqa: E731
    put("pixel_spacing_mm", lambda: _numbers(measures("PixelSpacing")))
    put("slice_thickness_mm", lambda: _numbers(measures("SliceThickness")))
    put("spacing_between_slices_mm", lambda: _numbers(measures("SpacingBetweenSlices")))
    put("window", lambda: _window(voi("WindowCenter"), voi("WindowWidth")))
    put("voi_lut_function", lambda: _cs(voi("VOILUTFunction")))
    put("rescale", lambda: _rescale(values("RescaleSlope"), values("RescaleIntercept")))
    put("rescale_type", lambda: _cs(values("RescaleType")))
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


def _grouped(ds: Dataset, group: str, keyword: str) -> Any:
    """`keyword` at the top level of `ds`, else in functional group `group` (an enhanced multi-frame file's): the
    shared groups', else the first frame's; None where none has it."""
    if ds.get(keyword) not in (None, ""):
        return ds.get(keyword)
    for functional in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(functional) or []
        found = items[0].get(group) if len(items) else None
        if found and found[0].get(keyword) not in (None, ""):
            return found[0].get(keyword)
    return None


def _rescale(slope: Any, intercept: Any) -> str | None:
    """``"slope S, intercept I"`` when either is given, the other at its DICOM default (slope 1, intercept 0), as the
    reader applies it (``dicom._modality``); None when neither is."""
    if slope is None and intercept is None:
        return None
    slope, intercept = 1 if slope is None else slope, 0 if intercept is None else intercept  # DICOM's defaults
    return f"slope {_numbers(slope)}, intercept {_numbers(intercept)}"


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
