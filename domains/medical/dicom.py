"""Reading DICOM files into 8-bit RGB images with pydicom 3, plus series and safe zip handling.

**Pixel pipeline** (:func:`dicom_to_rgb`), in the order DICOM PS3.4 prescribes for greyscale images:

1. decode one frame with pydicom's pixel-data plug-ins (native, RLE, JPEG baseline / extended /
   lossless, JPEG-LS, JPEG 2000 through pylibjpeg-libjpeg / -openjpeg / -rle, pyjpegls and Pillow);
2. **modality LUT**: RescaleSlope / RescaleIntercept (one missing or empty reads as 1 / 0; a slope of 0 is refused)
   or a Modality LUT Sequence (``pydicom.pixels.apply_modality_lut``; Hounsfield units for CT). In enhanced
   multi-frame files the frame's functional groups (Pixel Value Transformation, Frame VOI LUT) override the top level;
3. **VOI**: `window` ``None`` uses the file's own VOI LUT Sequence or WindowCenter / WindowWidth (the
   first value when multi-valued) with its VOILUTFunction (``LINEAR``, ``LINEAR_EXACT``, ``SIGMOID``);
   with neither, the frame's min-max. A preset name (:data:`WINDOW_PRESETS`), ``(center, width)``,
   a ``"center/width"`` string or ``"minmax"`` override the file. Output is scaled to [0, 1] here:
   pydicom's own VOI functions return values in the input bit-depth range;
4. **MONOCHROME1** (high values dark) is inverted after windowing;
5. **pixel padding** (PixelPaddingValue, up to PixelPaddingRangeLimit where given; PS3.3 C.7.5.1.1.2), matched on
   the stored values before the modality LUT, is left out of the min-max and painted black.

Colour images skip 2-5: ``YBR_FULL`` / ``YBR_FULL_422`` are converted with
``pydicom.pixels.convert_color_space``, ``PALETTE COLOR`` with ``apply_color_lut``; samples wider
than 8 bits are scaled by BitsStored (or the palette's entry size).

**Errors**: everything that can go wrong with a file -- missing, empty, not DICOM, truncated, no pixel
data (DICOMDIR, SR, RT structure sets, waveforms), undecodable compressed data, broken image
attributes, a frame that would decode to more than :data:`MAX_FRAME_BYTES` or hold more than :data:`MAX_FRAME_PIXELS`
values (checked from Rows x Columns x SamplesPerPixel x BitsAllocated before any decoding: a 60000 x 60000 image is
refused, not allocated) --
raises :class:`DicomError` (a :class:`~domains.base.DomainError`), whose message starts with the file and gives
the reason. Messages never quote patient attributes. Frames are decoded one at a time, so the number of
frames does not multiply what is allocated.
A multi-frame file cut off in its pixel data still gives the frames whose bytes are all there -- native data by
the bytes a frame takes, encapsulated (compressed) data by its offset tables or one fragment a frame; a frame the
cut reaches fails naming its number and the frames that are complete.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import itertools
import os
import re
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
    get_decoder,
)
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from domains.base import DomainError
from domains.files import atomic_write
from model.progress import Progress, progress_bar
from model.quiet import ignoring

__all__ = [
    "DICOM_SUFFIXES",
    "WINDOW_PRESETS",
    "SERIES_OPTION",
    "DicomError",
    "DicomSeries",
    "damaged_files",
    "dicom_to_rgb",
    "extract_zip",
    "file_window",
    "find_series",
    "frame_bytes",
    "frame_count",
    "has_pixel_data",
    "is_damaged_slice",
    "load_series",
    "modality_values",
    "not_an_image",
    "pick_slices",
    "read_dicom",
    "windowable",
    "read_dicom_rgb",
    "resolve_window",
    "scan_series",
    "starts_as_dicom",
    "window_values",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
# (center, width) in modality units (Hounsfield units for CT)
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "abdomen": (50.0, 400.0),
    "liver": (60.0, 160.0),
}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
MAX_GZIP_BYTES = 1024**3
# a file without the DICM prefix is judged by this many first bytes before it is parsed whole
PROBE_BYTES = 64 * 1024
# the most one decoded frame may take (Rows x Columns x SamplesPerPixel x bytes per sample); checked from the header
# before any decoding
MAX_FRAME_BYTES = 256 * 1024**2
# the most pixels (Rows x Columns x SamplesPerPixel) one frame may have, also checked from the header: rendering a
# greyscale frame works in float64 and peaks at about RENDER_BYTES_PER_PIXEL bytes a pixel (measured, tested), so
# this keeps one frame's rendering under ~2.5 GiB whatever the bit depth
MAX_FRAME_PIXELS = 64 * 1024**2
SAME_POSITION_MM = 0.01  # two slices closer than this along the normal are one position
RENDER_BYTES_PER_PIXEL = 40
_DETAIL_CHARS = 240
DAMAGED_IMAGE = "damaged DICOM image"
# the reason of a compressed file no installed plug-in decodes (followed by the transfer syntax and what to install)
NO_DECODER = "no pixel-data decoder installed"
# skip reasons of a file that was meant to be a slice; in a series they move every later slice's index
# a file a disc's DICOMDIR lists that is not there (a partial copy of the disc)
LISTED_MISSING = "listed in DICOMDIR, missing"
CORRUPT_GZIP = "corrupt gzip file"  # a gzipped file cut short or damaged: gzip is how a slice travels compressed
DAMAGED_REASONS = frozenset({"empty file", "cannot read file", "unreadable or corrupt DICOM", DAMAGED_IMAGE,
                             LISTED_MISSING, CORRUPT_GZIP})
DICOMDIR_KINDS = ("DICOMDIR", "Media Storage Directory Storage")  # the kinds `not_an_image` names a DICOMDIR by
DICOMDIR_NAME = "dicomdir"  # a disc's index file, any case (ISO 9660 discs mounted on Linux show names lowercase)


class DicomError(DomainError):
    """A DICOM file that cannot be read as asked. ``str(err)`` is ``"<file>: <reason> (<detail>)"``.

    `reason` is short and stable (good for counting, e.g. ``"no pixel data"``); `detail` is the
    library's structural message, if any. Neither ever holds patient data.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, detail: str | None = None, *,
                 limit: int | None = None):
        self.path = str(path) if path is not None else "<dataset>"
        self.reason = reason
        self.detail = _short(detail, limit or _DETAIL_CHARS) if detail else None
        super().__init__(f"{self.path}: {reason}" + (f" ({self.detail})" if self.detail else ""))


def _short(text: str, limit: int = _DETAIL_CHARS) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------- reading
def read_dicom(path: str | os.PathLike, *, header_only: bool = False) -> Dataset:
    """Read a DICOM file; ``header_only`` stops before the pixel data. Raises :class:`DicomError`.

    Files without the 128-byte preamble and ``DICM`` prefix (older writers, raw datasets) are read too,
    but only when their first :data:`PROBE_BYTES` parse to a group 0008 element (checked before the whole file
    is parsed) and the result holds standard group 0008 elements; a missing Transfer Syntax
    UID is filled in from the encoding the file was parsed with. Gzipped files (``.dcm.gz``) are
    decompressed in memory, up to :data:`MAX_GZIP_BYTES`.
    """
    path = Path(path)
    if not path.exists():
        raise DicomError(path, "file not found")
    if path.is_dir():
        raise DicomError(path, "is a directory, not a DICOM file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DicomError(path, "cannot read file", str(exc)) from exc
    if size == 0:
        raise DicomError(path, "empty file")
    with _naming_warnings(path):
        return _read_dicom(path, header_only)


@contextmanager
def _naming_warnings(path: Path) -> Iterator[None]:
    """pydicom's warnings inside the block (``Expected implicit VR, but found explicit VR``) said again with
    ``path`` in front, each text once: of a file that then converts fine they would not say which one it was."""
    # ignoring() only for its lock (catch_warnings is process-wide); "always" records every warning, none ignored
    caught: list[warnings.WarningMessage] = []
    try:
        with ignoring(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        pydicom_dir = Path(pydicom.__file__).parent
        for w in {(w.category, str(w.message)): w for w in caught}.values():
            if Path(w.filename).is_relative_to(pydicom_dir):
                warnings.warn(f"{path}: {w.message}", w.category, stacklevel=3)
            else:  # another thread's, or ours naming the file already: as it was
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _read_dicom(path: Path, header_only: bool) -> Dataset:
    """:func:`read_dicom` of an existing, non-empty file."""
    try:
        source = _gunzipped(path) or path
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=header_only)
        except InvalidDicomError:
            if not _starts_like_dataset(source):  # before parsing it all: zeros parse as millions of empty elements
                raise DicomError(path, "not a DICOM file",
                                 f"no DICM prefix and no DICOM data elements in its first {PROBE_BYTES // 1024} KiB"
                                 ) from None
            with ignoring():  # a probe: garbage parses with VR warnings, judged below
                ds = pydicom.dcmread(source, stop_before_pixels=header_only, force=True)
            if not any(tag.group == 0x0008 for tag in ds.keys()):  # noqa: SIM118 - a Dataset iterates elements
                raise DicomError(path, "not a DICOM file", "no DICM prefix and no DICOM data elements") from None
    except DicomError:
        raise
    except Exception as exc:  # pydicom raises many types (EOFError, struct.error, ValueError, ...)
        raise DicomError(path, "unreadable or corrupt DICOM", f"{type(exc).__name__}: {exc}") from exc
    if len(ds) == 0:
        if not header_only and _header_without_pixels(source):
            # pydicom returns an empty dataset when the file ends before the encapsulated pixel data's delimiter
            ds = _cut_encapsulated(source)
            if ds is None:
                raise DicomError(path, "truncated or corrupt pixel data", "the file ends inside its encapsulated "
                                 "(compressed) pixel data: the header reads, no frame is decoded")
    if len(ds) == 0:
        if _has_dicm_prefix(path):  # the file says it is DICOM: cut off after its meta header
            raise DicomError(path, "unreadable or corrupt DICOM", "DICM prefix but no data elements (truncated?)")
        raise DicomError(path, "not a DICOM file", "no data elements")
    if not ds.filename:
        ds.filename = str(path)
    _fill_transfer_syntax(ds)
    return ds


def _header_without_pixels(source: Path | io.BytesIO) -> bool:
    """Whether `source` reads to data elements when stopped before its pixel data."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        with ignoring():  # a probe: the full read already warned
            return len(pydicom.dcmread(source, stop_before_pixels=True, force=True)) > 0
    except Exception:  # noqa: BLE001 - pydicom raises many types on a broken file; only the answer matters
        return False


_ITEM = 0xFFFEE000  # (FFFE,E000), an encapsulated fragment
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # the same, as it starts little-endian encapsulated pixel data
_WHOLE_CODESTREAM = ((b"\xff\xd8", b"\xff\xd9"), (b"\xff\x4f", b"\xff\xd9"),  # JPEG family; JPEG 2000
                     (b"\x00\x00\x00\x0cjP  ", b"\xff\xd9"))  # JP2 file format


def _cut_encapsulated(source: Path | io.BytesIO) -> Dataset | None:
    """The dataset of a multi-frame file that ends inside its encapsulated (compressed) pixel data, holding the frames
    whose fragments are all in the file; None where no frame is, or the frames' bounds cannot be told.

    Frames are bounded by the Extended Offset Table, else the Basic Offset Table, else one fragment a frame: RLE's
    rule, and assumed for other syntaxes only when every fragment is a whole JPEG / JPEG 2000 codestream. The
    whole frames go into PixelData (encapsulated again); ``ds._cut_frames`` counts them (see :func:`_whole_frame`).
    """
    raw = source.getvalue() if isinstance(source, io.BytesIO) else source.read_bytes()
    fh = io.BytesIO(raw)
    try:
        with ignoring():  # the full read already warned
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
        syntax = UID(str(ds.file_meta.TransferSyntaxUID))
        frames = frame_count(ds)
    except Exception:  # noqa: BLE001 - a header that does not read keeps the caller's message
        return None
    start = fh.tell()  # pydicom stops with the file at the pixel data element's tag
    head = raw[start:start + 12]
    if (frames < 2 or not syntax.is_encapsulated or len(head) < 12 or head[:4] != b"\xe0\x7f\x10\x00"
            or head[4:6] not in (b"OB", b"OW") or head[8:12] != b"\xff\xff\xff\xff"):
        return None
    items: list[tuple[int, bytes]] = []  # (file offset, value) of each item wholly in the file
    pos = start + 12
    while pos + 8 <= len(raw):
        group, element, length = struct.unpack_from("<HHL", raw, pos)
        if (group << 16 | element) != _ITEM or pos + 8 + length > len(raw):
            break  # the cut, the sequence delimiter or damage
        items.append((pos, raw[pos + 8:pos + 8 + length]))
        pos += 8 + length
    if len(items) < 2:
        return None
    first = items[1][0]  # offsets count from the first fragment's item tag
    complete = _complete_frames(ds, syntax, frames, items[0][1], [(at - first, value) for at, value in items[1:]])
    if not complete:
        return None
    ds.PixelData = encapsulate(complete)
    ds["PixelData"].VR = "OB"
    ds._cut_frames = len(complete)
    return ds


def _complete_frames(ds: Dataset, syntax: UID, frames: int, table: bytes, fragments: list[tuple[int, bytes]]
                     ) -> list[bytes] | None:
    """The frames, from the first, whose fragments (``(offset from the first fragment, value)`` of the fragments
    wholly in the file, in order) are all there; None where the frames' bounds cannot be told."""
    offsets: list[int] | None = None
    if ds.get("ExtendedOffsetTable"):
        offsets = list(struct.unpack(f"<{len(ds.ExtendedOffsetTable) // 8}Q", ds.ExtendedOffsetTable))
    elif table:
        offsets = list(struct.unpack(f"<{len(table) // 4}L", table[: len(table) // 4 * 4]))
    if offsets is not None:
        if len(offsets) != frames or offsets != sorted(offsets):
            return None
        end = fragments[-1][0] + 8 + len(fragments[-1][1])  # where the whole fragments end
        whole = []
        for k in range(frames - 1):  # the last frame ends at the sequence delimiter, which the cut took
            parts = [value for at, value in fragments if offsets[k] <= at < offsets[k + 1]]
            if end < offsets[k + 1] or not parts:
                break
            whole.append(b"".join(parts))
        return whole
    if len(fragments) > frames:
        return None  # more fragments than frames: not one a frame
    if syntax != RLELossless and not all(
            any(value.startswith(head) and value.rstrip(b"\x00").endswith(tail) for head, tail in _WHOLE_CODESTREAM)
            for _, value in fragments):
        return None
    return [value for _, value in fragments]


def starts_as_dicom(path: str | os.PathLike) -> bool:
    """Whether a file's first bytes say DICOM, read cheaply (no full parse): the ``DICM`` marker at byte 128, or
    (without it) a dataset start as :func:`read_dicom` accepts one. False for a file that cannot be read."""
    path = Path(path)
    try:
        return _has_dicm_prefix(path) or _starts_like_dataset(path)
    except OSError:
        return False


def _starts_like_dataset(source: Path | io.BytesIO) -> bool:
    """Whether a file without the DICM prefix starts as a DICOM dataset: its first :data:`PROBE_BYTES`, parsed as
    pydicom parses the whole file, reach a group 0008 element before any later group (any group 0000 / 0002 / 0004
    elements before it). Leaves a BytesIO `source` at its start."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
        head = source.read(PROBE_BYTES)
        source.seek(0)
    else:
        with source.open("rb") as fh:
            head = fh.read(PROBE_BYTES)
    first: list[int] = []

    def stop(tag: Any, vr: str | None, length: int) -> bool:
        if tag.group >= 0x0008:
            first.append(tag.group)
            return True
        return False

    with ignoring():  # a probe: garbage parses with VR warnings
        try:
            read_partial(io.BytesIO(head), stop_when=stop, force=True)
        except Exception:  # noqa: BLE001 - pydicom raises many types on garbage; only `first` is judged
            pass
    return first[:1] == [0x0008]


def _has_dicm_prefix(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _gunzipped(path: Path) -> io.BytesIO | None:
    with path.open("rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return None
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read(MAX_GZIP_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DicomError(path, CORRUPT_GZIP, str(exc)) from exc
    if len(data) > MAX_GZIP_BYTES:
        raise DicomError(path, "gzipped file too large", f"more than {MAX_GZIP_BYTES} bytes uncompressed")
    return io.BytesIO(data)


def _fill_transfer_syntax(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def has_pixel_data(ds: Dataset) -> bool:
    return any(kw in ds for kw in PIXEL_KEYWORDS)


def _name(ds: Dataset, path: str | os.PathLike | None = None) -> str:
    if path is not None:
        return str(path)
    filename = getattr(ds, "filename", None)
    return str(filename) if isinstance(filename, (str, os.PathLike)) and str(filename) else "<dataset>"


def frame_count(ds: Dataset) -> int:
    """Number of frames (1 when NumberOfFrames is absent or empty); :class:`DicomError` if invalid."""
    try:
        value = ds.get("NumberOfFrames")
        n = int(value) if value not in (None, "") else 1
    except (TypeError, ValueError) as exc:
        raise DicomError(_name(ds), "invalid NumberOfFrames", str(exc)) from exc
    return max(n, 1)


def frame_bytes(ds: Dataset) -> int:
    """Bytes one frame takes once decoded: Rows x Columns x SamplesPerPixel x bytes per sample (BitsAllocated
    rounded up to 1, 2, 4 or 8 bytes, as pydicom's decoders return it). :class:`DicomError` if they are invalid."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.BitsAllocated) if "BitsAllocated" in ds else 8
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError(_name(ds), "missing image attribute", f"{type(exc).__name__}: {exc}") from exc
    if min(rows, columns, samples, bits) <= 0:
        raise DicomError(_name(ds), "invalid image attributes",
                         f"Rows {rows}, Columns {columns}, SamplesPerPixel {samples}, BitsAllocated {bits}")
    return rows * columns * samples * (1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8)


def _check_size(ds: Dataset) -> None:
    """Refuse, before decoding, a frame larger than :data:`MAX_FRAME_BYTES` (a hostile or broken header)."""
    size = frame_bytes(ds)
    if size > MAX_FRAME_BYTES:
        n = frame_count(ds)
        raise _Fail("image too large to decode",
                    f"{int(ds.Columns)} x {int(ds.Rows)} pixels x {int(ds.get('SamplesPerPixel') or 1)} sample(s) = "
                    f"{size / 2**30:.2f} GiB per frame ({n} frame{'s' * (n != 1)}), over the "
                    f"{MAX_FRAME_BYTES / 2**20:g} MiB limit of domains.medical.dicom.MAX_FRAME_BYTES")
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    if pixels > MAX_FRAME_PIXELS:
        raise _Fail("image too large to decode",
                    f"{int(ds.Columns)} x {int(ds.Rows)} pixels x {int(ds.get('SamplesPerPixel') or 1)} sample(s) = "
                    f"{pixels / 2**20:.1f} Mi values per frame, over the {MAX_FRAME_PIXELS / 2**20:g} Mi limit of "
                    f"domains.medical.dicom.MAX_FRAME_PIXELS (rendering takes about {RENDER_BYTES_PER_PIXEL} bytes "
                    "a value)")


def _sop_class(ds: Dataset) -> Any:
    return ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)


def _object_kind(ds: Dataset) -> str:
    uid = _sop_class(ds)
    if not uid and "DirectoryRecordSequence" in ds:
        return "DICOMDIR"
    try:
        name = UID(str(uid)).name if uid else ""
    except (TypeError, ValueError):
        name = ""
    return name or "unknown object type"


# --------------------------------------------------------------------------------------------- windows
def resolve_window(window: str | Sequence[float] | None) -> tuple[float, float] | str | None:
    """Normalise a `window` argument: ``None`` (the file's own), ``"minmax"`` or ``(center, width)``.

    Accepts a preset name (:data:`WINDOW_PRESETS`, case-insensitive, ``-`` or space for ``_``), a
    ``"40/400"`` or ``"40,400"`` string, or a pair of numbers (width >= 1). Raises ``ValueError`` on anything else.
    """
    if window is None:
        return None
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key in ("", "file", "auto", "default"):
            return None
        if key == "minmax":
            return "minmax"
        if key in WINDOW_PRESETS:
            return WINDOW_PRESETS[key]
        parts = window.strip().replace(",", "/").split("/")  # the raw text: "-600/1500" keeps its minus
        try:
            if len(parts) != 2:
                raise ValueError
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise DomainError(f"unknown window {window!r}: use one of {sorted(WINDOW_PRESETS)}, 'minmax', "
                             "'center/width' or a (center, width) pair") from None
    else:
        try:
            center, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise DomainError(f"window must be a preset name or a (center, width) pair, got {window!r}") from None
    # an override is applied as LINEAR, which needs w >= 1 (a smaller one failed later as a fault of the file)
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        raise DomainError(f"window width must be a number >= 1 (the DICOM LINEAR window), got center={center}, "
                          f"width={width}")
    return center, width


def window_values(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The DICOM VOI window (PS3.3 C.11.2.1.2) of modality values `x`, scaled to [0, 1] (float64).

    ``LINEAR``: 0 below ``c - 0.5 - (w - 1) / 2``, 1 above ``c - 0.5 + (w - 1) / 2``, else
    ``(x - (c - 0.5)) / (w - 1) + 0.5`` (needs ``w >= 1``); ``LINEAR_EXACT``: ``(x - c) / w + 0.5``
    clipped; ``SIGMOID``: ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    x = np.asarray(x, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if width <= 0:
        raise DomainError(f"window width must be > 0, got {width}")
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700, 700)))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if function != "LINEAR":
        raise DomainError(f"unknown VOI LUT function {function!r}: use one of {VOI_FUNCTIONS}")
    if width < 1:
        raise DomainError(f"LINEAR window width must be >= 1, got {width}")
    if width == 1:  # degenerate: a threshold at c - 0.5
        return (x > center - 0.5).astype(np.float64)
    lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.where(x <= lo, 0.0, np.where(x > hi, 1.0, y))


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _file_window(view: Dataset) -> tuple[float, float, str] | None:
    center, width = _first_number(view.get("WindowCenter")), _first_number(view.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(view.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"  # the DICOM default for unknown / empty values
    if width <= 0 or (function == "LINEAR" and width < 1):
        return None  # an invalid window in the file: fall back to min-max
    return center, width, function


def file_window(ds: Dataset, frame: int = 0) -> tuple[float, float, str] | None:
    """The window (centre, width, VOI function) the file itself gives `frame` -- top level or the frame's functional
    groups -- as :func:`dicom_to_rgb` applies it by default; None where it has none valid (min-max is used then) or
    where a VOI LUT Sequence is what the default applies (it comes before any window the file also gives)."""
    view = _frame_view(ds, frame)
    return None if view.get("VOILUTSequence") else _file_window(view)


def _minmax(x: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
    """`x` scaled to [0, 1] by its finite minimum and maximum, ignoring the pixels `leave_out` marks."""
    finite = np.isfinite(x) if leave_out is None else np.isfinite(x) & ~leave_out
    if not finite.any():
        return np.zeros_like(x, dtype=np.float64)
    lo, hi = float(x[finite].min()), float(x[finite].max())
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float64)
    return np.clip((np.where(finite, x, lo) - lo) / (hi - lo), 0.0, 1.0)


# --------------------------------------------------------------------------------------------- pixels
# attributes the value pipeline reads; enhanced multi-frame files carry them per frame in functional groups
_VALUE_KEYWORDS = (
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "Modality",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
    "VOILUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction", "PixelPaddingValue", "PixelPaddingRangeLimit",
)
_FRAME_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """A small dataset with the value-transform attributes that apply to `frame`."""
    view = Dataset()
    for keyword in _VALUE_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    groups = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    for group in groups:
        for seq_keyword in _FRAME_GROUPS:
            items = group.get(seq_keyword)
            if items:
                for element in items[0]:
                    view[element.tag] = element
    if getattr(ds, "file_meta", None) is not None:
        view.file_meta = ds.file_meta
    return view


def _decode(ds: Dataset, frame: int) -> tuple[np.ndarray, str]:
    """One frame as decoded by pydicom, and its photometric interpretation after decoding."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not tsyntax:
        raise _Fail("no Transfer Syntax UID in the file meta information")
    try:
        decoder = get_decoder(UID(tsyntax))
    except NotImplementedError:  # a syntax pydicom has no plug-in for at all (video, private): nothing to install
        raise _Fail(f"unsupported transfer syntax {UID(tsyntax).name}", "pydicom has no pixel-data decoder for it; "
                    "transcode the file to an uncompressed transfer syntax first") from None
    _check_encapsulation(ds, UID(tsyntax))
    if not decoder.is_available:
        raise _Fail(f"{NO_DECODER} for {UID(tsyntax).name} ({_install_hint(decoder)})")
    part = _whole_frame(ds, frame, UID(tsyntax))
    arr, meta = decoder.as_array(part, index=frame if part is ds else 0, as_rgb=False)
    return arr, str(meta.get("photometric_interpretation") or ds.get("PhotometricInterpretation") or "")


def _check_encapsulation(ds: Dataset, syntax: UID) -> None:
    """Refuse pixel data stored otherwise than the file meta's transfer syntax says: uncompressed data under a
    compressed syntax (a tool that decompressed the file and kept its old TransferSyntaxUID), or encapsulated
    (compressed) data under an uncompressed one. pydicom would fail on them with a parsing message, or decode
    compressed bytes as pixels where there are enough of them."""
    if "PixelData" not in ds:
        return
    element = ds["PixelData"]
    value = element.value or b""
    # undefined length: encapsulated as read from a file; an item tag first: re-encapsulated (a file cut short)
    encapsulated = element.is_undefined_length or bytes(value[:4]) == _ITEM_TAG
    if syntax.is_encapsulated and not encapsulated:
        raise _Fail("wrong transfer syntax", f"the file meta says {syntax.name}, a compressed syntax, but the pixel "
                    f"data is stored uncompressed ({len(value)} bytes); correct its TransferSyntaxUID (e.g. "
                    "Explicit VR Little Endian)")
    if not syntax.is_encapsulated and element.is_undefined_length:
        raise _Fail("wrong transfer syntax", f"the file meta says {syntax.name}, an uncompressed syntax, but the "
                    "pixel data is encapsulated (compressed); correct its TransferSyntaxUID to the compression "
                    "it was written with")


def _native_frame_bytes(ds: Dataset, syntax: UID) -> tuple[str, int] | None:
    """(pixel keyword, bytes one frame takes in the file) of native (uncompressed) pixel data; None where that is
    not a whole number of bytes (BitsAllocated 1 or not a multiple of 8) or the data is encapsulated."""
    keyword = next((kw for kw in PIXEL_KEYWORDS if kw in ds), None)
    if keyword is None or syntax.is_encapsulated:
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits <= 0 or bits % 8:
        return None
    size = rows * columns * samples * (bits // 8)
    if str(ds.get("PhotometricInterpretation") or "").strip().upper() == "YBR_FULL_422":
        size = size // 3 * 2  # two luminance samples share one Cb, Cr pair
    return keyword, size


def _is_cut(ds: Dataset, syntax: UID) -> bool:
    """Whether native multi-frame pixel data holds fewer bytes than its frames take (the file was cut off)."""
    found = _native_frame_bytes(ds, syntax)
    if found is None or frame_count(ds) < 2:
        return False
    keyword, size = found
    return len(ds[keyword].value or b"") < size * frame_count(ds)


def _whole_frame(ds: Dataset, frame: int, syntax: UID) -> Dataset:
    """`ds` itself, or -- for multi-frame pixel data cut short -- a one-frame copy holding `frame`'s data when it is
    all in the file: pydicom refuses the whole array, though every frame before the cut is complete. Native data is
    cut when it holds fewer bytes than its frames take; encapsulated data when :func:`read_dicom` found the file
    ending inside it (``ds._cut_frames`` whole frames). A frame the cut reaches fails naming its number and the
    frames that are whole."""
    n = frame_count(ds)
    whole_frames = getattr(ds, "_cut_frames", None)
    if whole_frames is not None:
        if frame >= whole_frames:
            raise _Fail("truncated or corrupt pixel data", f"frame {frame} (of frames 0-{n - 1}) is cut off: the "
                        f"file ends inside its encapsulated (compressed) pixel data; {_complete(whole_frames)}")
        data = encapsulate([next(itertools.islice(generate_frames(ds.PixelData, number_of_frames=whole_frames),
                                                  frame, None))])
        return _one_frame(ds, "PixelData", "OB", data)
    if not _is_cut(ds, syntax):
        return ds
    keyword, size = _native_frame_bytes(ds, syntax)  # type: ignore[misc]  # _is_cut checked it
    data = ds[keyword].value
    if (frame + 1) * size > len(data):
        raise _Fail("truncated or corrupt pixel data",
                    f"frame {frame} (of frames 0-{n - 1}) is cut off: the file holds {len(data)} of {size * n} "
                    f"pixel-data bytes; {_complete(len(data) // size)}")
    return _one_frame(ds, keyword, ds[keyword].VR, data[frame * size:(frame + 1) * size])


def _complete(whole: int) -> str:
    return f"frames 0-{whole - 1} are complete" if whole > 1 else "frame 0 is complete" if whole else \
        "no frame is complete"


def _one_frame(ds: Dataset, keyword: str, vr: str, data: bytes) -> Dataset:
    """A shallow copy of `ds` (the elements are shared, never changed) with one frame of pixel data, `data`."""
    part = Dataset({element.tag: element for element in ds})
    part[keyword] = DataElement(ds[keyword].tag, vr, data)
    part["NumberOfFrames"] = DataElement(0x00280008, "IS", 1)
    part.file_meta = ds.file_meta
    return part


# pip names of the modules pydicom's decoder plug-ins ask for, where they differ
_PIP_NAMES = {"gdcm": "python-gdcm"}


def _install_hint(decoder: Any) -> str:
    """What to install for `decoder`'s transfer syntax, from the dependencies pydicom's plug-ins list
    (``missing_dependencies``): one ``pip install ...`` per plug-in (packages already installed, such as numpy, left
    out)."""
    options = []
    for line in decoder.missing_dependencies:  # "<plug-in> - requires <dep>, <dep> and <dep>", one a plug-in
        _, found, needs = line.partition(" - requires ")
        if not found:  # "<plug-in> - plugin indicating it is unavailable": nothing to install
            continue
        deps = re.split(r", | and ", needs)
        names = [_PIP_NAMES.get(name, name) for dep in deps if (name := re.split(r"[<>=!~ ;\[]", dep.strip(), 1)[0])]
        missing = [name for name in names if not _installed(name)]
        if missing:  # a plug-in whose packages are all installed is unavailable for another reason
            options.append("pip install " + " ".join(missing))
    options.sort(key=lambda option: "gdcm" in option)  # the Python-package plug-ins first, GDCM (a C++ toolkit) last
    return " or ".join(dict.fromkeys(options)) or "install pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg, " \
        "pyjpegls or python-gdcm"


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class _Fail(Exception):
    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def modality_values(ds_or_path: Dataset | str | os.PathLike, *, frame: int = 0, padding: bool = True) -> np.ndarray:
    """One greyscale frame after the modality LUT (float64; Hounsfield units for CT); ``padding=False``: pixel
    padding (as :func:`dicom_to_rgb` leaves it out of the min-max) as NaN."""
    ds, name = _dataset(ds_or_path)
    with _errors(name, ds):
        arr, photometric = _checked_frame(ds, frame)
        if arr.ndim != 2:
            raise _Fail(f"not a greyscale image ({photometric})")
        view = _frame_view(ds, frame)
        values = _modality(arr, view)
        mask = None if padding else _padding(arr, view)
        return values if mask is None else np.where(mask, np.nan, values)


def dicom_to_rgb(
    ds_or_path: Dataset | str | os.PathLike,
    *,
    window: str | tuple[float, float] | None = None,
    frame: int = 0,
) -> Image.Image:
    """One frame of a DICOM image as an 8-bit RGB PIL image (see the module docstring for the pipeline).

    `window` applies to greyscale images only: ``None`` = the file's VOI LUT / window (else min-max),
    a :data:`WINDOW_PRESETS` name, ``"minmax"``, ``"center/width"`` or ``(center, width)``.
    """
    chosen = resolve_window(window)  # argument errors are ValueErrors, before any file work
    ds, name = _dataset(ds_or_path)
    with _errors(name, ds):
        arr, photometric = _checked_frame(ds, frame)
        if photometric in ("MONOCHROME1", "MONOCHROME2") or (arr.ndim == 2 and photometric != "PALETTE COLOR"):
            if arr.ndim != 2:
                raise _Fail(f"{photometric} image with {arr.shape[-1]} samples per pixel")
            grey = _grey(arr, _frame_view(ds, frame), chosen, photometric)
            rgb = np.repeat(_to_uint8(grey)[..., None], 3, axis=-1)
        else:
            rgb = _colour(arr, ds, photometric)
        return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")


def _checked_frame(ds: Dataset, frame: int) -> tuple[np.ndarray, str]:
    if not has_pixel_data(ds):
        raise _Fail("no pixel data", _object_kind(ds))
    n = frame_count(ds)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= int(frame) < n:
        raise _Fail(f"frame {frame} out of range", f"the file has {n} frame{'s' * (n != 1)}")
    _check_size(ds)
    arr, photometric = _decode(ds, int(frame))
    if arr.size == 0:
        raise _Fail("empty image", f"shape {arr.shape}")
    return arr, photometric.strip().upper()


def _modality(arr: np.ndarray, view: Dataset) -> np.ndarray:
    """The modality LUT of stored values `arr` (float64). A rescale with RescaleSlope or RescaleIntercept missing or
    empty reads that one as 1 / 0 (pydicom skips the rescale unless both are there, and fails on an empty one)."""
    if view.get("ModalityLUTSequence") or not ("RescaleSlope" in view or "RescaleIntercept" in view):
        return np.asarray(apply_modality_lut(arr, view), dtype=np.float64)
    rescale = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = view.get(keyword)
        number = default if value is None or (isinstance(value, str) and not value.strip()) else _first_number(value)
        if number is None:
            raise _Fail(f"invalid {keyword}", "not a finite number")
        rescale.append(number)
    if rescale[0] == 0:  # every pixel would be the intercept: a blank image, unsaid
        raise _Fail("invalid RescaleSlope", "0: every pixel would read as the intercept")
    return arr.astype(np.float64) * rescale[0] + rescale[1]


def _grey(arr: np.ndarray, view: Dataset, window: tuple[float, float] | str | None, photometric: str) -> np.ndarray:
    values = _modality(arr, view)
    padding = _padding(arr, view)
    if isinstance(window, tuple):
        out = window_values(values, *window)
    elif window == "minmax":
        out = _minmax(values, padding)
    elif view.get("VOILUTSequence"):
        out = _voi_lut(values, view)
    elif (file_window := _file_window(view)) is not None:
        out = window_values(values, *file_window)
    else:
        out = _minmax(values, padding)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    if padding is not None:
        out = np.where(padding, 0.0, out)
    return out


def _padding(arr: np.ndarray, view: Dataset) -> np.ndarray | None:
    """Where the stored values are padding (PS3.3 C.7.5.1.1.2): Pixel Padding Value, or the inclusive range
    it spans with Pixel Padding Range Limit; None where the file declares none or no pixel is padding."""
    value = _stored_value(view.get("PixelPaddingValue"), view)
    if value is None or not np.issubdtype(arr.dtype, np.integer):
        return None
    limit = _stored_value(view.get("PixelPaddingRangeLimit"), view)
    lo, hi = (value, value) if limit is None else sorted((value, limit))
    mask = (arr >= lo) & (arr <= hi)
    return mask if mask.any() else None


def _stored_value(value: Any, view: Dataset) -> int | None:
    """A padding attribute as the stored pixel value pydicom's arrays hold: its low Bits Stored bits, signed by
    Pixel Representation (0xFFFF with 12 bits stored is 4095, as the array has it)."""
    if isinstance(value, bytes):  # VR left unresolved: 16-bit, in the file's byte order
        if len(value) != 2:
            return None
        value = int.from_bytes(value, "little", signed=False)
    number = _first_number(value)
    if number is None or number != int(number):
        return None
    bits = _int_or_none(view.get("BitsStored"))
    bits = bits if bits is not None and 1 <= bits <= 16 else 16
    # pydicom's arrays keep only the Bits Stored bits (masked, or sign-extended from the high bit), and an implicit
    # VR file leaves 'US or SS' to the reader, which may have guessed the other one: compare like for like
    number = int(number) & ((1 << bits) - 1)
    if int(view.get("PixelRepresentation") or 0) == 1 and number >= 1 << (bits - 1):
        return number - (1 << bits)
    return number


def _voi_lut(values: np.ndarray, view: Dataset) -> np.ndarray:
    """The first VOI LUT of the file applied to modality values, scaled to [0, 1].

    The output range is ``0 .. 2**bits - 1`` from the LUT descriptor, widened when the entries exceed
    it and narrowed to the bits really used when the descriptor overstates them by 4 or more (a common
    quirk: 12-bit entries under a 16-bit descriptor).
    """
    descriptor = view.VOILUTSequence[0].LUTDescriptor
    entries, stored_first, bits = int(descriptor[0]) or 2**16, int(descriptor[1]), int(descriptor[2])
    # PS3.3 C.11.2.1.1: the first mapped value is SS when the modality LUT output is signed; pydicom reads it as
    # the file's VR says, and a file writing -1024 as US 64512 would send every pixel to the LUT's first entry
    first = stored_first - 2**16 if stored_first >= 2**15 and _modality_signed(view) else stored_first
    # the whole LUT, entry i for input first + i, as pydicom reads it (indexed by the descriptor's value as stored)
    table = apply_voi(np.arange(stored_first, stored_first + entries, dtype=np.int64), view, index=0)
    table = np.asarray(table, dtype=np.float64)
    # LUT inputs are integers; below the first mapped value the first entry, above the last the last
    index = np.clip(np.rint(np.nan_to_num(values)), first, first + entries - 1).astype(np.int64) - first
    mapped = table[index]
    top = float(table.max())
    nominal = float(2**bits - 1)
    if top > nominal:
        nominal = top
    elif max(int(top).bit_length(), 1) <= bits - 4:
        nominal = float(2 ** max(int(top).bit_length(), 1) - 1)
    return np.clip(mapped / nominal, 0.0, 1.0) if nominal > 0 else _minmax(mapped)


def _modality_signed(view: Dataset) -> bool:
    """Whether the modality LUT output can be negative: signed stored values, or a rescale that makes them
    negative (a Modality LUT's entries are unsigned)."""
    if view.get("ModalityLUTSequence"):
        return False
    bits = _int_or_none(view.get("BitsStored"))
    bits = bits if bits is not None and 1 <= bits <= 32 else 16
    signed = int(view.get("PixelRepresentation") or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = _first_number(view.get("RescaleSlope"))
    intercept = _first_number(view.get("RescaleIntercept"))
    slope, intercept = (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)
    return min(slope * lo + intercept, slope * hi + intercept) < 0


def windowable(ds: Dataset) -> bool:
    """Whether a window applies to `ds`'s pixels: a greyscale (MONOCHROME1 / MONOCHROME2) image. Colour and palette
    images are shown as stored."""
    return str(ds.get("PhotometricInterpretation") or "").strip().upper().startswith("MONOCHROME")


def _colour(arr: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        if arr.ndim != 2:
            raise _Fail("PALETTE COLOR image with more than one sample per pixel")
        rgb = apply_color_lut(arr, ds)
        # entries are 8 or 16 bits (the descriptor's third value); apply_color_lut returns uint8 / uint16
        return _scale_bits(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise _Fail(f"unsupported photometric interpretation {photometric or '(missing)'}",
                    f"decoded shape {arr.shape}")
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        if arr.dtype != np.uint8:
            raise _Fail(f"unsupported {photometric} bit depth", f"{arr.dtype} samples")
        return convert_color_space(arr, photometric, "RGB")
    if photometric != "RGB":  # YBR_ICT / YBR_RCT are returned as RGB by the JPEG 2000 decoders
        raise _Fail(f"unsupported photometric interpretation {photometric}")
    bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    return _scale_bits(arr, bits)


def _scale_bits(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    top = float(2 ** min(max(bits, 1), 32) - 1)
    return _to_uint8(np.clip(arr.astype(np.float64) / top, 0.0, 1.0))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(np.nan_to_num(unit), 0.0, 1.0) * 255.0).astype(np.uint8)


def _dataset(ds_or_path: Dataset | str | os.PathLike) -> tuple[Dataset, str]:
    if isinstance(ds_or_path, Dataset):
        return ds_or_path, _name(ds_or_path)
    return read_dicom(ds_or_path), str(ds_or_path)


class _errors:
    """Turn any failure in the pixel pipeline into a DicomError naming the file and a reason."""

    def __init__(self, name: str, ds: Dataset):
        self.name, self.ds = name, ds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if not isinstance(exc, Exception):
            return False
        if isinstance(exc, DicomError):
            if exc.path == "<dataset>" and self.name != "<dataset>":
                raise DicomError(self.name, exc.reason, exc.detail) from exc
            return False
        if isinstance(exc, _Fail):
            raise DicomError(self.name, exc.reason, exc.detail) from exc
        raise DicomError(self.name, *_classify(exc, self.ds)) from exc


def _classify(exc: Exception, ds: Dataset) -> tuple[str, str]:
    message = str(exc)
    detail = f"{type(exc).__name__}: {message}"
    try:
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        syntax_name = syntax.name
        compressed = syntax.is_compressed
    except (AttributeError, TypeError, ValueError):
        syntax_name, compressed = "unknown transfer syntax", False
    lowered = message.lower()
    if isinstance(exc, NotImplementedError) and "transfer syntax" in lowered:
        return f"unsupported transfer syntax {syntax_name}", detail
    if "less than expected" in lowered or "truncat" in lowered or isinstance(exc, EOFError):
        return "truncated or corrupt pixel data", detail
    if isinstance(exc, RuntimeError) and compressed:
        return f"cannot decode {syntax_name} pixel data", detail
    if "missing required element" in lowered or isinstance(exc, (AttributeError, KeyError)):
        return "missing image attribute", detail
    if compressed:
        return f"cannot decode {syntax_name} pixel data", detail
    return "invalid image attributes or pixel data", detail


def read_dicom_rgb(path: str | os.PathLike, **options: Any) -> Image.Image:
    """The plugin reader (``.dcm``, ``.dicom``, files without a suffix): :func:`dicom_to_rgb` of a path.

    Options: `window`, `frame` (as :func:`dicom_to_rgb`).
    """
    return dicom_to_rgb(path, **options)


# --------------------------------------------------------------------------------------------- series
@dataclass
class _Header:
    path: Path
    series_uid: str
    sop_uid: str
    position: np.ndarray | None
    orientation: np.ndarray | None
    instance: int | None
    frames: int
    number: int | None = None  # SeriesNumber
    description: str = ""  # SeriesDescription


@dataclass
class DicomSeries:
    """The images of one series, in anatomical order.

    `paths` are the files sorted by ImagePositionPatient projected on the slice normal (from
    ImageOrientationPatient), then InstanceNumber; when any file lacks a position, by InstanceNumber then
    file name. A multi-frame file counts one slice per frame (frames in stored order), so ``len`` and
    indexes address slices: :attr:`slices` maps each to ``(path, frame)``.
    """

    series_uid: str
    paths: list[Path]
    positions: list[float | None] = field(default_factory=list)  # along the slice normal, mm
    frames: list[int] = field(default_factory=list)  # frames per path
    number: int | None = None  # SeriesNumber (of its first file)
    description: str = ""  # SeriesDescription (of its first file)

    def __post_init__(self) -> None:
        if not self.frames:
            self.frames = [1] * len(self.paths)
        if not self.positions:
            self.positions = [None] * len(self.paths)

    @property
    def slices(self) -> list[tuple[Path, int]]:
        return [(path, f) for path, n in zip(self.paths, self.frames) for f in range(n)]

    def __len__(self) -> int:
        return sum(self.frames)

    def same_position(self, tolerance: float = SAME_POSITION_MM) -> list[list[Path]]:
        """Groups of two or more files at one position along the slice normal (within `tolerance` mm): a slice
        stored twice under two SOPInstanceUIDs, or the echoes / phases of a 4D series. Both stay in the series
        (each its own slice index), so the caller warns; empty when positions are unknown."""
        groups: list[list[Path]] = []
        last: float | None = None
        for path, pos in zip(self.paths, self.positions):
            if pos is not None and last is not None and abs(pos - last) <= tolerance:
                groups[-1].append(path)
            elif pos is not None:
                groups.append([path])
            last = pos
        return [g for g in groups if len(g) > 1]

    def same_position_note(self) -> str | None:
        """One line naming the files :meth:`same_position` finds (file names only), or None when there are none."""
        groups = self.same_position()
        if not groups:
            return None
        listed = "; ".join(" = ".join(p.name for p in g) for g in groups[:3]) + (" ; ..." if len(groups) > 3 else "")
        return (f"{sum(len(g) for g in groups)} slices share {len(groups)} position(s) along the slice normal "
                f"({listed}): all kept, each its own slice index (a slice stored twice shifts the indexes after it; "
                "remove the extra copy, or split echoes / phases into series of their own)")

    def image(self, index: int, window: str | tuple[float, float] | None = None) -> Image.Image:
        """Slice `index` as an RGB image (see :func:`dicom_to_rgb` for `window`)."""
        slices = self.slices
        if not -len(slices) <= index < len(slices):
            raise IndexError(f"slice {index} out of range for a series of {len(slices)}")
        path, frame = slices[index]
        return dicom_to_rgb(path, window=window, frame=frame)

    def pick(self, n: int) -> list[int]:
        """`n` evenly spaced slice indexes (:func:`pick_slices`)."""
        return pick_slices(len(self), n)


def pick_slices(total: int, n: int) -> list[int]:
    """`n` evenly spaced indexes of `total` slices or frames: the centres of `n` equal runs (all when
    ``n >= total``). The one rule of series, multi-frame files, the medical reader and the demo."""
    if n < 1:
        raise ValueError(f"pick needs n >= 1, got {n}")
    if n >= total:
        return list(range(total))
    return [int((i + 0.5) * total / n) for i in range(n)]


# objects with pixel data that are not slices of the anatomy: masks and dose grids over another series' images, often
# exported into the same folder (their own SeriesInstanceUID would make the folder "2 series")
NOT_SLICES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
}


def grid_kind(ds: Dataset) -> tuple[str, str] | None:
    """``(what it is, the series to upload to see the anatomy)`` for a dose grid or segmentation
    (:data:`NOT_SLICES`), in a clinician's words; None for anything else."""
    uid = str(_sop_class(ds) or "")
    if uid not in NOT_SLICES:
        return None
    if "Dose" in NOT_SLICES[uid]:
        return ("an RT dose grid (the radiation dose a treatment plan gives, computed over the planning CT)",
                "planning CT")
    return "a segmentation mask (regions marked on another series' images)", "imaged"


NOT_IMAGE_REASONS = ("no pixel data", "not an image slice")  # the reasons :func:`not_an_image` gives
# an image whose plane is not the series' stack's (a localizer stored in the axial series): sorted by position along
# the stack's normal it would sit among the slices and move every later slice index
OTHER_ORIENTATION = "not in the series' plane"


def not_an_image(ds: Dataset) -> tuple[str, str] | None:
    """``(reason, kind)`` when the header `ds` is a DICOM object that is no image to convert -- DICOMDIR, SR,
    RT structure set, presentation state (``"no pixel data"``), a segmentation or dose grid (``"not an image
    slice"``, :data:`NOT_SLICES`) -- else None: an image, or an image header cut off or overwritten (damaged)."""
    uid = str(_sop_class(ds) or "")
    if uid in NOT_SLICES:
        return "not an image slice", f"{NOT_SLICES[uid]}, a mask or dose grid"
    if "Rows" in ds and "Columns" in ds:
        return None
    kind = _object_kind(ds)
    if kind.endswith("Image Storage") or (not uid and kind != "DICOMDIR"):
        return None
    return "no pixel data", kind


def _header(path: Path) -> _Header:
    ds = read_dicom(path, header_only=True)
    passed = not_an_image(ds)
    if passed is not None:
        raise DicomError(path, *passed)
    if "Rows" not in ds or "Columns" not in ds:
        kind = _object_kind(ds)
        if kind.endswith("Image Storage"):  # an image object without its image header: cut off
            raise DicomError(path, DAMAGED_IMAGE, f"{kind} without Rows / Columns (truncated?)")
        raise DicomError(path, DAMAGED_IMAGE, "no SOP class UID and no Rows / Columns (damaged header?)")
    return _Header(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID") or ""),
        sop_uid=str(ds.get("SOPInstanceUID") or ""),
        position=_vector(ds.get("ImagePositionPatient"), 3),
        orientation=_vector(ds.get("ImageOrientationPatient"), 6),
        instance=_int_or_none(ds.get("InstanceNumber")),
        frames=frame_count(ds),
        number=_int_or_none(ds.get("SeriesNumber")),
        description=" ".join(str(ds.get("SeriesDescription") or "").split()),
    )


def _vector(value: Any, size: int) -> np.ndarray | None:
    try:
        vec = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (size,) and np.isfinite(vec).all() else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _sorted_series(uid: str, headers: list[_Header]) -> DicomSeries:
    normal = next((n for h in headers if (n := _normal(h)) is not None), None)
    big = float("inf")
    number, description = headers[0].number, headers[0].description
    if normal is not None and all(h.position is not None for h in headers):
        keyed = [(float(np.dot(normal, h.position)), h) for h in headers]
        keyed.sort(key=lambda kv: (kv[0], kv[1].instance if kv[1].instance is not None else big, str(kv[1].path)))
        return DicomSeries(uid, [h.path for _, h in keyed], [pos for pos, _ in keyed], [h.frames for _, h in keyed],
                           number, description)
    headers = sorted(headers, key=lambda h: (h.instance if h.instance is not None else big, str(h.path)))
    return DicomSeries(uid, [h.path for h in headers], [None] * len(headers), [h.frames for h in headers], number,
                       description)


SkipFn = Callable[[Path, str, str | None], Any]


def _candidate_files(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        root = _disc_root(Path(source))
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise DicomError(root, "folder not found")
        return sorted(p for p in root.rglob("*")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [Path(p) for p in source]


def _disc_root(path: Path) -> Path:
    """The folder of a disc's DICOMDIR given as the source (its files are what it indexes), else `path`."""
    return path.parent if path.is_file() and path.name.lower() == DICOMDIR_NAME else path


def _missing_listed(source: str | os.PathLike | Iterable[str | os.PathLike],
                    files: list[Path]) -> list[tuple[Path, str]]:
    """The files the DICOMDIR at the top of the folder `source` lists (ReferencedFileID, relative to its folder) that
    are not among `files` while others of their series are (names compared in any case): a partial copy of a disc.
    Series with none of their files here (a DICOMDIR copied along with one series of a disc) are not asked for.
    Each with the SeriesInstanceUID its SERIES record gives ("" for none)."""
    if not isinstance(source, (str, os.PathLike)) or not (root := _disc_root(Path(source))).is_dir():
        return []
    index = next((p for p in files if p.parent == root and p.name.lower() == DICOMDIR_NAME), None)
    if index is None:
        return []
    try:
        listed = _listed_files(read_dicom(index, header_only=True))
    except (DicomError, AttributeError, TypeError, ValueError):
        return []  # find_series reports an unreadable DICOMDIR itself; a broken index asks for nothing
    present = {p.relative_to(root).as_posix().lower() for p in files}
    here = {series for series, parts, _, _ in listed if "/".join(parts).lower() in present}
    return [(root.joinpath(*parts), series_uid) for series, parts, _, series_uid in listed
            if series in here and "/".join(parts).lower() not in present]


def _missing_by_uid(index: Path, files: list[Path], seen: set[str], damaged: set[str],
                    unknown: list[Path]) -> list[tuple[Path, str, str]]:
    """For a DICOMDIR among files whose names are not the disc's (uploaded files, a zip's renamed members): the
    files it lists whose SOPInstanceUID (ReferencedSOPInstanceUIDInFile) none of the images read has, in series
    of which some are here -- as (its place on the disc beside `index`, its ReferencedFileID as ``A/B/C``, its
    SeriesInstanceUID or ""). A listed file that is here but damaged -- its name among `files`, or its
    SOPInstanceUID among `damaged` (read from what of it reads) -- is reported as damaged, not again as missing.
    The `unknown` damaged files of which nothing reads, not named as a listed file, stand for as many of the files
    not found: only the rest are missing, each named ``one of A/B/C, D/E/F`` (which ones is not known)."""
    try:
        listed = _listed_files(read_dicom(index, header_only=True))
    except (DicomError, AttributeError, TypeError, ValueError):
        return []
    names = {p.name.lower() for p in files}
    here = {series for series, _, uid, _ in listed if uid and uid in seen}
    missing = [(index.parent.joinpath(*parts), "/".join(parts), series_uid) for series, parts, uid, series_uid in listed
               if series in here and uid and uid not in seen | damaged and parts[-1].lower() not in names]
    disc_names = {parts[-1].lower() for _, parts, _, _ in listed}
    unread = sum(p.name.lower() not in disc_names for p in unknown)  # a disc-named one is excluded by its name
    if len(missing) <= unread:
        return []
    if not unread:
        return missing
    ids = [listed_id for _, listed_id, _ in missing]
    which = f"one of {', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}"
    series_uid = missing[0][2] if len({uid for _, _, uid in missing}) == 1 else ""
    return [(path, which, series_uid) for path, _, _ in missing[:len(missing) - unread]]


def _listed_files(index: Dataset) -> list[tuple[int, list[str], str, str]]:
    """(the file offset of its SERIES record, its ReferencedFileID components, its ReferencedSOPInstanceUIDInFile or
    "", its SERIES record's SeriesInstanceUID or "") of each file a DICOMDIR lists, from the directory records'
    links; IDs that would leave the disc's folder are left out."""
    records = {int(r.seq_item_tell): r for r in index.get("DirectoryRecordSequence") or []}
    out: list[tuple[int, list[str], str, str]] = []
    todo = [(int(index.get("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity") or 0), 0)]
    seen: set[int] = set()
    while todo:
        offset, series = todo.pop()
        while offset in records and offset not in seen:  # a record, then its siblings; offset 0 ends a list
            seen.add(offset)
            record = records[offset]
            here = offset if str(record.get("DirectoryRecordType") or "").strip().upper() == "SERIES" else series
            value = record.get("ReferencedFileID")
            parts = [str(v) for v in value] if type(value).__name__ == "MultiValue" else [str(value)] if value else []
            if parts and not any(part in ("", ".", "..") or "/" in part or "\\" in part for part in parts):
                series_uid = str(records[here].get("SeriesInstanceUID") or "").strip() if here in records else ""
                out.append((here, parts, str(record.get("ReferencedSOPInstanceUIDInFile") or "").strip(), series_uid))
            todo.append((int(record.get("OffsetOfReferencedLowerLevelDirectoryEntity") or 0), here))
            offset = int(record.get("OffsetOfTheNextDirectoryRecord") or 0)
    return out


def find_series(
    folder: str | os.PathLike | Iterable[str | os.PathLike], *, on_skip: SkipFn | None = None,
    progress: Progress = True,
) -> list[DicomSeries]:
    """All image series under `folder` (recursively) or in a list of files, grouped by SeriesInstanceUID.

    A disc's DICOMDIR given as `folder` stands for the disc's folder; a file the DICOMDIR at the top of `folder` lists
    that is not there is reported as :data:`LISTED_MISSING` (a partial copy of the disc; names compare in any case).
    Files that are not DICOM images (other files, DICOMDIR, SR, segmentations, dose grids, broken files), repeated
    SOPInstanceUIDs and images in another plane than most of their series' (:data:`OTHER_ORIENTATION`: a localizer)
    are skipped; ``on_skip(path, reason, detail)`` hears about each (for example
    ``ConvertReport.skip``). Series come in the order of their first file. `progress`: a bar over the files when
    there are 200 or more (:func:`model.progress.progress_bar`).
    """
    return scan_series(folder, on_skip=on_skip, progress=progress)[0]


def scan_series(
    folder: str | os.PathLike | Iterable[str | os.PathLike], *, on_skip: SkipFn | None = None,
    progress: Progress = True,
) -> tuple[list[DicomSeries], dict[Path, str]]:
    """:func:`find_series`, plus the series each damaged or missing file it reported belongs to: ``{path:
    SeriesInstanceUID}`` for those whose header (or the DICOMDIR's SERIES record) still names it -- a file absent
    from it belongs to an unknown series."""
    files = _candidate_files(folder)
    owners: dict[Path, str] = {}
    named = _missing_listed(folder, files)
    by_name = isinstance(folder, (str, os.PathLike)) and any(
        p.parent == _disc_root(Path(folder)) and p.name.lower() == DICOMDIR_NAME for p in files)
    for path, series_uid in named:
        if series_uid:
            owners[path] = series_uid
        if on_skip is not None:
            on_skip(path, LISTED_MISSING, None)
    groups: dict[str, list[_Header]] = {}
    seen: set[str] = set()
    damaged: set[str] = set()  # SOPInstanceUIDs read from damaged files: not missing, damaged
    unknown: list[Path] = []  # damaged files of which no SOPInstanceUID reads
    indexes: list[Path] = []  # DICOMDIRs known by their content only (renamed uploads)
    shown = progress if len(files) >= 200 else False
    for path in progress_bar(files, desc="reading DICOM headers", unit="file", progress=shown):
        try:
            header = _header(path)
        except DicomError as err:
            if err.detail in DICOMDIR_KINDS and not by_name:
                indexes.append(path)
            if err.reason in DAMAGED_REASONS:
                series_uid, sop_uid = _salvaged_uids(path)
                if series_uid:
                    owners[path] = series_uid
                if sop_uid:
                    damaged.add(sop_uid)
                else:
                    unknown.append(path)
            if on_skip is not None:
                on_skip(path, err.reason, err.detail)
            continue
        if header.sop_uid and header.sop_uid in seen:
            if on_skip is not None:
                on_skip(path, "duplicate SOPInstanceUID", None)
            continue
        seen.add(header.sop_uid)
        groups.setdefault(header.series_uid, []).append(header)
    for index in indexes if on_skip is not None else ():
        for path, listed, series_uid in _missing_by_uid(index, files, seen, damaged, unknown):
            if series_uid:
                owners[path] = series_uid
            on_skip(path, LISTED_MISSING, listed)
    found = []
    for uid, headers in groups.items():
        stack, others = _one_orientation(headers)
        for header, normal, main in others if on_skip is not None else ():
            on_skip(header.path, OTHER_ORIENTATION, f"{_plane(normal)} image in a series of {_plane(main)} slices "
                    "(a localizer?)")
        found.append(_sorted_series(uid, stack))
    return found, owners


_SERIES_UID_TAG = 0x0020000E
_META_SOP_UID_TAG = 0x00020003  # MediaStorageSOPInstanceUID


def _salvaged_uids(path: Path) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of a damaged file as far as its start reads ("" for what does not): the
    data set up to its SeriesInstanceUID when an element after it begins (a value cut off reads as a shorter UID,
    which could pass for another series'), else the file meta's MediaStorageSOPInstanceUID."""
    series_uid = sop_uid = ""
    after: list[int] = []

    def stop(tag: int, vr: str | None, length: int) -> bool:
        if tag > _SERIES_UID_TAG:
            after.append(tag)
        return bool(after)

    try:
        source = _gunzipped(path)
        with ignoring(), (open(path, "rb") if source is None else source) as fp:
            ds = read_partial(fp, stop_when=stop, force=True)
            if after:
                series_uid = str(ds.get("SeriesInstanceUID") or "").strip()
                sop_uid = str(ds.get("SOPInstanceUID") or "").strip()
    except Exception:  # noqa: BLE001 - pydicom raises many types on a broken file; the meta may still read
        pass
    if not sop_uid and path.suffix.lower() != ".gz":
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
            if any(tag > _META_SOP_UID_TAG for tag in meta.keys()):  # noqa: SIM118 - an element after it: not cut off
                sop_uid = str(meta.get("MediaStorageSOPInstanceUID") or "").strip()
        except Exception:  # noqa: BLE001 - nothing more reads
            pass
    return series_uid, sop_uid


def _one_orientation(headers: list[_Header]) -> tuple[list[_Header], list[tuple[_Header, np.ndarray, np.ndarray]]]:
    """The series' stack -- the files whose slice normal is the most common one (within about 2.5 degrees, either
    sense), with the files without an orientation -- and the others with their normal and the stack's."""
    groups: list[tuple[np.ndarray, list[_Header]]] = []
    unknown = []
    for h in headers:
        normal = _normal(h)
        if normal is None:
            unknown.append(h)
            continue
        group = next((g for g in groups if abs(float(np.dot(g[0], normal))) > 0.999), None)
        if group is None:
            groups.append((normal, [h]))
        else:
            group[1].append(h)
    if len(groups) < 2:
        return headers, []
    main = max(groups, key=lambda g: len(g[1]))  # the first of the largest on a tie
    keep = {id(h) for h in main[1]} | {id(h) for h in unknown}
    others = [(h, normal, main[0]) for normal, members in groups if members is not main[1] for h in members]
    return [h for h in headers if id(h) in keep], others


def _normal(h: _Header) -> np.ndarray | None:
    if h.orientation is None:
        return None
    normal = np.cross(h.orientation[:3], h.orientation[3:])
    size = float(np.linalg.norm(normal))
    return normal / size if size > 1e-6 else None


def _plane(normal: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(normal)))
    return ("sagittal", "coronal", "axial")[axis] if abs(float(normal[axis])) > 0.9 else "oblique"


def is_damaged_slice(path: Path, reason: str) -> bool:
    """Whether a file `find_series` skipped for `reason` was meant to be a slice, judged by the file alone: damaged,
    or named ``.dcm`` / ``.dicom`` but not DICOM. (A suffix-less file that is not DICOM may be anything:
    :func:`damaged_files` also judges it by the names of the series' slices.)"""
    named = reason == "not a DICOM file" and path.name.lower().endswith((".dcm", ".dicom", ".dcm.gz"))
    return reason in DAMAGED_REASONS or named


def slice_name_pattern(path: str | os.PathLike) -> str:
    """A file's name with its digits taken out (``IM0007`` -> ``IM#``): slices of one series share it."""
    return re.sub(r"\d+", "#", Path(path).name)


def damaged_files(skipped: Iterable[tuple[Path, str]], series: Iterable[DicomSeries]) -> list[tuple[Path, str]]:
    """The files among `skipped` (``(path, reason)`` as `find_series` reported them) that were meant to be slices:
    those :func:`is_damaged_slice` says are, and suffix-less files that are not DICOM yet are named like a slice
    of `series` (``IM0007`` beside ``IM0006``, ``IM0008``: their names equal with the digits taken out), as a
    slice whose first bytes were overwritten is."""
    patterns = {slice_name_pattern(p) for s in series for p in s.paths if not Path(p).suffix}
    return [(path, reason) for path, reason in skipped
            if is_damaged_slice(path, reason)
            or (reason == "not a DICOM file" and not path.suffix and slice_name_pattern(path) in patterns)]


def load_series(folder_or_paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                on_pass: SkipFn | None = None, series: str | int | None = None) -> DicomSeries:
    """Exactly one series from a folder (or a disc's DICOMDIR: its folder) or a list of files; :class:`DicomError`
    for none (saying what was passed over), several (naming each series -- SeriesNumber, SeriesDescription,
    SeriesInstanceUID, file count, its folder where each has one -- and the `series` option), or a damaged
    file among them (empty, truncated, unreadable, listed in the DICOMDIR but missing, named ``.dcm`` / ``.dicom`` or
    like the series' suffix-less
    slices but not DICOM: the series would silently lose a slice and every later slice index would move; see
    :func:`damaged_files`). Files that are not DICOM images (notes, DICOMDIR, SR, RT structure sets, presentation
    states; segmentations and RT dose grids: :data:`NOT_SLICES`) are passed over, each told to
    ``on_pass(path, reason, detail)`` (for DICOM objects the reason ``"no pixel data"`` or ``"not an image slice"``
    with the object's kind as detail) once the series loads.

    `series`: of several series, the one to load -- its SeriesInstanceUID, or its SeriesNumber (an integer, or
    text of digits); the other series' files are left out. A `series` no series has, or a SeriesNumber two series
    share, is a :class:`DicomError` naming each series. A damaged (or missing) file whose header (or DICOMDIR record)
    names another series than the one picked is passed over like the other files that are not its images; one whose
    series cannot be read may be a slice of it: still a :class:`DicomError`, naming the file."""
    chosen = _series_choice(series)
    passed: list[tuple[Path, str, str | None]] = []
    found, owners = scan_series(folder_or_paths, on_skip=lambda *skip: passed.append(skip))
    bad = damaged_files([(path, reason) for path, reason, _ in passed], found)
    where = folder_or_paths if isinstance(folder_or_paths, (str, os.PathLike)) else "<file list>"
    if chosen is not None and found:
        found = _select_series(where, found, chosen)
        uid = found[0].series_uid
        elsewhere = {path for path, _ in bad if owners.get(path, uid) != uid}
        bad = [(path, reason) for path, reason in bad if path not in elsewhere]
        passed = [(path, reason, f"of another series (SeriesInstanceUID {owners[path]})" if path in elsewhere
                   else detail) for path, reason, detail in passed]
    listed = {path: detail for path, reason, detail in passed if reason == LISTED_MISSING and detail}
    # the DICOMDIR's name for a missing file
    unread = "" if chosen is None else ", its series unreadable"
    damaged = [f"{listed.get(path, path.name)}: {reason}" + ("" if path in owners else unread) for path, reason in bad]
    detail = "; ".join(damaged[:3]) + (f"; ... {len(damaged) - 3} more" if len(damaged) > 3 else "")
    if chosen is None and len(found) > 1:  # which series is wanted comes first: its damaged files may be none
        also = f"; also {len(damaged)} damaged file(s) ({detail})" if damaged else ""
        raise DicomError(where, f"{len(found)} series found, expected one", _several(where, found) + also,
                         limit=_SEVERAL_CHARS)
    if damaged:
        which = "the series" if chosen is None else f"series {chosen} or of unknown series"
        if chosen is not None and all(path in owners for path, _ in bad):
            which = f"series {chosen}"
        raise DicomError(where, f"{len(damaged)} damaged file(s) in {which}", detail)
    if not found:
        raise DicomError(where, "no DICOM images found", _passed_over(passed) or "no files")
    if on_pass is not None:
        for skip in passed:
            on_pass(*skip)
    return found[0]


_SEVERAL_CHARS = 1500  # a listing of several series: each one's UID is what picks it
SERIES_OPTION = "series"  # the option (of load_series, the dicom_qa converter, read_upload) that picks one series


def _series_choice(series: str | int | None) -> str | int | None:
    """`series` as given: a SeriesNumber (int) or a SeriesInstanceUID / SeriesNumber as text; DomainError for other
    types (a UID such as ``1.2`` read as a number by YAML must be quoted)."""
    if series is None or (isinstance(series, int) and not isinstance(series, bool)):
        return series
    if isinstance(series, str) and series.strip():
        return series.strip()
    raise DomainError(f"{SERIES_OPTION}={series!r}: give a SeriesNumber (an integer) or a SeriesInstanceUID as text "
                     "(quote a UID that reads as a number)")


def _select_series(where: str | os.PathLike, found: list[DicomSeries], chosen: str | int) -> list[DicomSeries]:
    """The series `chosen` names: by SeriesInstanceUID, else by SeriesNumber; DicomError when none does (or two
    share the SeriesNumber), naming each series."""
    picked = [s for s in found if isinstance(chosen, str) and s.series_uid == chosen]
    if not picked:
        number = chosen if isinstance(chosen, int) else int(chosen) if re.fullmatch(r"[+-]?\d+", chosen) else None
        picked = [s for s in found if number is not None and s.number == number]
    if len(picked) == 1:
        return picked
    if not picked:
        raise DicomError(where, f"no series matches {SERIES_OPTION}={chosen}", _several(where, found),
                         limit=_SEVERAL_CHARS)
    raise DicomError(where, f"{len(picked)} series have SeriesNumber {chosen}",
                     _several(where, picked, hint=f"pick one by its SeriesInstanceUID: {SERIES_OPTION}=<UID>"),
                     limit=_SEVERAL_CHARS)


def _several(where: str | os.PathLike, series: list[DicomSeries], hint: str | None = None) -> str:
    """Each of several series -- SeriesNumber, SeriesDescription, SeriesInstanceUID, file count and the folder of
    each where each has its own (a disc's PT*/ST*/SE* folders), else its first file names -- and how to pick one."""
    ordered = sorted(series, key=lambda s: -len(s.paths))
    root = _disc_root(Path(where)) if isinstance(where, (str, os.PathLike)) else None
    folders = [Path(os.path.commonpath(s.paths)) if len(s.paths) > 1 else s.paths[0].parent for s in ordered]
    own = root is not None and len(set(folders)) == len(folders) and root not in folders
    parts = []
    for s, folder in zip(ordered, folders):
        if own:
            files = f"{len(s.paths)} file(s) in {folder.relative_to(root).as_posix()}/"
        else:
            files = f"{len(s.paths)} file(s) from {s.paths[0].name}"
        label = f"SeriesNumber {s.number if s.number is not None else '(none)'}"
        label += f" {s.description[:40]!r}" if s.description else ""
        parts.append(f"{label}, {files}, SeriesInstanceUID {s.series_uid or '(none)'}")
    if hint is None:
        hint = f"pick one with {SERIES_OPTION}=<SeriesNumber or SeriesInstanceUID>"
        hint += " or name one series' folder" if own else " (or keep one series per folder)"
    shown = 8
    listed = "; ".join(parts[:shown]) + (f"; ... {len(parts) - shown} more" if len(parts) > shown else "")
    return f"{listed}; {hint}"


def _passed_over(passed: list[tuple[Path, str, str | None]]) -> str:
    """What a folder without images held instead: the non-image DICOM objects counted by kind (RT dose, SR, ...),
    then the other files by reason, each with a first file name."""
    kinds: dict[str, int] = {}
    others: dict[str, list[str]] = {}
    for path, reason, detail in passed:
        if reason in NOT_IMAGE_REASONS:
            kind = detail or "unknown object type"
            kinds[kind] = kinds.get(kind, 0) + 1
        else:
            others.setdefault(reason, []).append(path.name)
    parts = []
    if kinds:
        listed = "; ".join(f"{n} × {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
        parts.append(f"{sum(kinds.values())} non-image DICOM object(s) passed over: {listed}")
    if others:
        listed = "; ".join(f"{len(names)} {reason} ({names[0]}{', ...' if len(names) > 1 else ''})"
                           for reason, names in others.items())
        parts.append(f"{sum(map(len, others.values()))} other file(s): {listed}")
    return ". ".join(parts)


# --------------------------------------------------------------------------------------------- zips
def extract_zip(
    zip_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_files: int = 10_000,
    max_bytes: int = 2 * 1024**3,
) -> list[Path]:
    """Safely extract a zip (e.g. an uploaded study) into `out_dir`; returns the extracted files, sorted.

    Refuses, with :class:`DicomError` and before writing anything, archives that are not zips, hold
    encrypted entries, symlinks, absolute paths, ``..`` components, two entries for one file (the same name, or
    names such as ``./a.dcm`` and ``a.dcm`` that lead to one path) or an entry inside another entry that is a
    file (``study`` and ``study/a.dcm``), or exceed `max_files` entries or
    `max_bytes` uncompressed bytes; sizes are enforced while extracting too, so headers that lie do not
    help a zip bomb. ``__MACOSX/`` resource forks are ignored.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError as exc:
        raise DicomError(zip_path, "file not found") from exc
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DicomError(zip_path, "not a valid zip archive", str(exc)) from exc
    with archive:
        members = []
        total = 0
        for number, info in enumerate(archive.infolist(), 1):
            if info.is_dir():
                continue
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
                raise DicomError(zip_path, "unsafe path in zip", f"entry {info.filename!r} escapes the folder")
            if parts and parts[0] == "__MACOSX":
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DicomError(zip_path, "symlink in zip", f"entry {info.filename!r}")
            if info.flag_bits & 0x1:
                raise DicomError(zip_path, "encrypted zip entry", f"entry {info.filename!r}")
            total += info.file_size
            kept = [p for p in parts if p not in ("", ".")]
            if not kept:
                continue
            members.append((number, info, PurePosixPath(*kept)))
            if len(members) > max_files:
                raise DicomError(zip_path, "too many files in zip", f"more than {max_files}")
            if total > max_bytes:
                raise DicomError(zip_path, "zip too large", f"more than {max_bytes} bytes uncompressed")
        _check_clashes(zip_path, members)
        out_root = out_dir.resolve()
        out_root.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        budget = max_bytes
        for _, info, relative in members:
            target = (out_root / relative).resolve()
            if out_root not in target.parents:
                raise DicomError(zip_path, "unsafe path in zip", f"entry {info.filename!r} escapes the folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            budget -= _copy_member(archive, info, target, budget, zip_path)
            written.append(target)
    return sorted(written)


def _check_clashes(zip_path: Path, members: list[tuple[int, zipfile.ZipInfo, PurePosixPath]]) -> None:
    """Refuse two entries for one path (``a.dcm`` twice, or ``./a.dcm`` and ``a.dcm``: the later one overwrote the
    earlier) and entries that would go inside another entry's file (``study`` and ``study/a.dcm``); `members` are
    (entry number in the zip, from 1; entry; path it extracts to)."""
    numbers: dict[PurePosixPath, list[int]] = {}
    for number, _, relative in members:
        numbers.setdefault(relative, []).append(number)
    for relative, found in numbers.items():
        if len(found) > 1:
            raise DicomError(zip_path, "duplicate entry in zip",
                             f"entries {', '.join(map(str, found))} all extract to {relative.as_posix()!r}")
    files = {relative: info.filename for _, info, relative in members}
    for _, info, relative in members:
        for parent in relative.parents:
            if parent in files:
                raise DicomError(zip_path, "unsafe path in zip",
                                 f"entry {info.filename!r} is inside entry {files[parent]!r}, which is a file")


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, zip_path: Path) -> int:
    copied = 0

    def copy(dst) -> None:
        nonlocal copied
        with archive.open(info) as src:
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > info.file_size:
                    raise DicomError(zip_path, "zip too large", f"entry {info.filename!r} is larger than its header "
                                     f"declares ({info.file_size} bytes)")
                if copied > budget:
                    raise DicomError(zip_path, "zip too large", f"entry {info.filename!r} goes over the {budget} bytes "
                                     "left of the upload's max_bytes")
                dst.write(chunk)

    try:
        atomic_write(target, copy)  # removes its .part on any failure, Ctrl-C included; honours the umask
    except DicomError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
        raise DicomError(zip_path, "corrupt zip entry", f"{info.filename!r}: {exc}") from exc
    return copied

