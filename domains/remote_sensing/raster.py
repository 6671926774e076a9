"""Reading GeoTIFF and other GDAL rasters into 8-bit RGB images and chips, with rasterio.

* :func:`read_rgb` reads a whole (small) raster -- an EuroSAT patch, an RSVQA tile -- as a PIL RGB image
  plus a boolean valid-pixel mask.
* :func:`iter_chips` walks a large scene in ``size x size`` chips through windowed reads, never reading
  the whole scene; each :class:`Chip` carries its window and affine transform, so boxes can be moved
  between chip pixels and map coordinates (:func:`chip_box_to_map`, :func:`map_box_to_chip`).

**Band selection** (`bands`): ``None`` (the default: RGB guessed, see below), 1-based band indexes
(``[4, 3, 2]``; a digit string such as ``"4"``, as a command line gives it, is an index too, unless the file names a
band ``"4"``: then that band, with a warning where it is another band) or band names (``["B4", "B3", "B2"]``). One
band gives a grey image; otherwise exactly three are needed. Names are matched, in this order, against

1. `band_names` if given (one name per band of the file, in file order),
2. the band descriptions stored in the file (``src.descriptions``, e.g. ``"B04"``),
3. for a 13-band file without descriptions: the **EuroSAT MS order** :data:`EUROSAT_BANDS` =
   ``B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A`` -- B8A is *last* in the EuroSAT files
   (not 9th as in the paper; phelber/EuroSAT#7), so Sentinel-2 RGB = B04, B03, B02 = indexes 4, 3, 2.

Sentinel-2 names are normalised, so ``"B4"``, ``"b04"`` and ``"B04"`` are one band, and ``"B8a"`` is
``"B8A"``. The default RGB is B04/B03/B02 when those names are known (descriptions, `band_names` or a
13-band EuroSAT file), else the bands named ``red``, ``green``, ``blue`` (any case; descriptions or `band_names`),
else the bands the file's colour interpretation marks red, green and blue (a 4-band blue-green-red-NIR file tagged so
reads bands 3, 2, 1), else bands 1, 2, 3, else band 1 as grey. Bands 1, 2, 3 of
a 4+ band file are a guess (NAIP's RGBN: right; Planet's BGRN untagged: red and blue swapped): the converters
count such files in their report (:func:`guessed_rgb`, one row) with how to pick others.

**Stretch**: per band, the `stretch` ``(low, high)`` percentiles are computed over valid pixels only and
mapped linearly to 0..255 (clipped). ``stretch=None`` keeps the values as they are, clipped to 0..255
(right for uint8 RGB files). ``stretch="auto"`` (the default, and the converters'): None when every selected
band is uint8, else ``(2, 98)``. A band with no spread (``high == low``) becomes 0. ``stretch="fixed:LOW,HIGH"``
(:class:`FixedStretch`) maps the stored values LOW..HIGH of every band to 0..255 in every image and chip alike (EuroSAT
MS / Sentinel-2 L1C, reflectance x 10000: ``"fixed:0,3000"``), so the same ground keeps its colour across chips.

**Palette**: one band read from a paletted (colour-map) file (a GeoTIFF class map, a mode P PNG) is drawn in the file's
colours; ``"auto"`` and None keep them as they are, a stretch asked for (percentiles, ``fixed:``) applies to them.

**Nodata**: a pixel is invalid when every selected band equals the nodata value (`nodata` if given, else the
file's) or is NaN / infinite -- as GDAL's dataset mask (``dataset_mask()``) reads nodata, so a pure red
``(200, 0, 0)`` of a uint8 file with nodata 0 stays red -- or when the file's alpha band or internal
(per-dataset) mask masks it. Zeros are data unless nodata says otherwise: a scene edge zero-filled without a nodata
tag (common in Sentinel-2 / Landsat products, and an orthomosaic's black collar) pulls a percentile stretch's low end
to 0 and gives all-black chips that are kept, which :func:`iter_chips` reports (``zero fill without nodata``, naming
``nodata=0``). A nodata the pixel type cannot hold (-9999 in uint16, NaN in an integer band: rasterio reads a
file's NaN tag there as no nodata) masks nothing: said (``nodata masks nothing``), and zeros are then reported as
with no nodata. Invalid pixels are black in the image and ``False`` in the mask; a band's
stretch percentiles are taken over its own valid values (not nodata, finite) of the valid pixels.

Errors name the file: :class:`RasterError` (a ``ValueError``) for unreadable, truncated or corrupt files,
zero-size rasters, unsupported data types (complex) and bad band selections.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from domains.base import DomainError
from domains.boxes import Box, pixel_box
from domains.remote_sensing import chip_starts
from model.errors import PocketAdaptError
from model.limits import DEFAULT_MAX_PIXELS
from model.quiet import ignoring
from model.tiling import STRETCH_PERCENTILES

__all__ = [
    "EUROSAT_BANDS",
    "FixedStretch",
    "SENTINEL2_RGB",
    "NAMED_RGB",
    "CHIP_CACHE_MAX",
    "CHIP_CACHE_MIN",
    "Chip",
    "RasterError",
    "chip_box_to_map",
    "chip_cache_bytes",
    "check_chip_filters",
    "check_chip_options",
    "check_nodata_option",
    "MAX_CHIP_SIZE",
    "GUESSED_RGB",
    "ZERO_FILL",
    "guessed_rgb",
    "image_notes",
    "iter_chips",
    "map_box_to_chip",
    "normalize_band_name",
    "read_image",
    "reads_as_picture",
    "read_rgb",
    "read_rgb_image",
    "resolve_stretch",
    "resolve_bands",
]

# band order of the EuroSAT multispectral GeoTIFFs (13 bands, uint16): B8A is LAST
EUROSAT_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)
SENTINEL2_RGB: tuple[str, ...] = ("B04", "B03", "B02")
NAMED_RGB: tuple[str, ...] = ("RED", "GREEN", "BLUE")  # band descriptions such as "Blue", "Green", "Red", "NIR"
AUTO = "auto"
AUTO_STRETCH = STRETCH_PERCENTILES  # "auto" for bands wider than uint8: the one image reader's stretch
# GDAL's block cache while iter_chips reads: room for the blocks one row of chips spans (so neighbouring chips
# reuse decoded blocks), within these bounds. GDAL's default (5 % of RAM) kept ~1.3 GB of a 20000^2 scene.
CHIP_CACHE_MIN = 16 * 2**20
CHIP_CACHE_MAX = 256 * 2**20
_STAT_WINDOWS = 8  # iter_chips samples up to 8 x 8 windows for scene-wide stretch statistics
_STAT_WINDOW = 128  # ... each at most 128 x 128 pixels (and never larger than a chip)
# the GDAL drivers a raster is opened with: formats that read nothing but the file (and its sidecars). GDAL picks the
# driver by content, not by name, so a data set's "scene.tif" that is a VRT would read any file on the machine into
# the output images (a raw band of ~/.ssh/id_rsa), and a GDAL_WMS XML file would fetch URLs
READ_DRIVERS = ("GTiff", "JP2OpenJPEG", "HFA", "PNG", "JPEG", "BMP")
ZERO_FILL = "zero fill without nodata"  # iter_chips' report warning
ZERO_FILL_MIN = 0.01  # a share of zero pixels below 1 % is taken as dark ground, not fill


class RasterError(PocketAdaptError, ValueError):
    """A raster that cannot be read as asked; the message starts with the file name."""


@dataclass
class Chip:
    """One chip of a scene: the 8-bit RGB image, its valid mask and where it lies."""

    image: Image.Image
    mask: np.ndarray  # bool (height, width), True where the pixel is valid
    window: Window  # in the scene's pixel grid
    transform: Affine  # the chip's own pixel -> map transform
    row: int  # chip index along y
    col: int  # chip index along x
    path: Path
    crs: Any = None

    @property
    def valid_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def box_to_map(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        return chip_box_to_map(box, self.transform)

    def box_from_map(self, bounds: Sequence[float]) -> Box:
        return map_box_to_chip(bounds, self.transform)


# --------------------------------------------------------------------------------------------- bands
_S2 = re.compile(r"^B0*(\d{1,2})(A?)$")


def normalize_band_name(name: str) -> str:
    """``"B4"`` / ``"b04"`` -> ``"B04"``, ``"b8a"`` -> ``"B8A"``; other names are upper-cased and stripped."""
    n = str(name).strip().upper()
    m = _S2.match(n)
    if not m:
        return n
    return f"B{int(m.group(1))}A" if m.group(2) else f"B{int(m.group(1)):02d}"


def _known_names(src, band_names: Sequence[str] | None) -> list[str] | None:
    path = src.name
    if band_names is not None:
        if len(band_names) != src.count:
            raise RasterError(f"{path}: band_names lists {len(band_names)} names but the file has {src.count} bands")
        return [normalize_band_name(n) for n in band_names]
    desc = [d for d in (src.descriptions or ()) if d]
    if len(desc) == src.count:
        return [normalize_band_name(d) for d in src.descriptions]
    if src.count == len(EUROSAT_BANDS) and not desc:
        return list(EUROSAT_BANDS)
    return None


_DIGITS = re.compile(r"[0-9]+")


def resolve_bands(src, bands: Sequence[int | str] | None = None,
                  band_names: Sequence[str] | None = None) -> list[int]:
    """1-based indexes of the bands to read from the open dataset `src` (see the module notes)."""
    path = src.name
    names = _known_names(src, band_names)
    if bands is None:
        if names and all(b in names for b in SENTINEL2_RGB):
            return [names.index(b) + 1 for b in SENTINEL2_RGB]
        if names and all(b in names for b in NAMED_RGB):  # before the colour interpretation, which GDAL sets to
            return [names.index(b) + 1 for b in NAMED_RGB]  # red, green, blue for any 3+ band 8-bit file it writes
        tagged = list(src.colorinterp)
        if all(c in tagged for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
            return [tagged.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
        return [1, 2, 3] if src.count >= 3 else [1]
    if isinstance(bands, (str, int)):
        bands = [bands]
    bands = list(bands)
    if len(bands) not in (1, 3):
        raise RasterError(f"{path}: give 1 band (grey) or 3 bands (RGB), got {bands!r}")
    out = []
    for b in bands:
        if isinstance(b, str) and _DIGITS.fullmatch(b.strip()) and not (names and b.strip() in names):
            b = int(b.strip())  # "1" from a command line is band index 1: the file names no band "1"
        if isinstance(b, (int, np.integer)) and not isinstance(b, bool):
            if not 1 <= int(b) <= src.count:
                raise RasterError(f"{path}: band index {b} out of range; band indexes are 1-based, 1..{src.count}")
            out.append(int(b))
        elif isinstance(b, str):
            key = normalize_band_name(b)
            if names and key in names and _DIGITS.fullmatch(key) and names.index(key) + 1 != int(key):
                warnings.warn(f"{path}: band {key!r} taken as the band named {key!r} (band {names.index(key) + 1}), "
                              f"not band index {int(key)}", UserWarning, stacklevel=2)
            if not names or key not in names:
                known = ", ".join(names) if names else "none (the file has no band descriptions; pass band_names)"
                raise RasterError(f"{path}: no band named {b!r}; known band names: {known}")
            out.append(names.index(key) + 1)
        else:
            raise RasterError(f"{path}: a band is a 1-based index or a name, got {b!r}")
    return out


GUESSED_RGB = "bands 1, 2, 3 of a 4+ band file taken as RGB"  # the report's reason: one row, every such file


def guessed_rgb(src, bands: Sequence[int | str] | None = None, band_names: Sequence[str] | None = None) -> str | None:
    """Why bands 1, 2, 3 of the open dataset `src` are read as red, green, blue on a guess, or None: a file of 4 or more
    bands, `bands` not given, and neither Sentinel-2 band names nor a red / green / blue colour interpretation to go
    by. Right for NAIP's R, G, B, NIR order, wrong for Planet's B, G, R, NIR; the text says how to pick others."""
    if bands is not None or src.count < 4 or resolve_bands(src, None, band_names) != [1, 2, 3]:
        return None
    names = _known_names(src, band_names)
    if names and (all(b in names for b in SENTINEL2_RGB) or all(b in names for b in NAMED_RGB)):
        return None  # B04, B03, B02 (or red, green, blue) are bands 1, 2, 3: named, not guessed
    tagged = list(src.colorinterp)
    if all(c in tagged for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return None
    named = f" (named {', '.join(names[:3])})" if names else ""
    return (f"{src.name}: {src.count} bands with no red / green / blue colour interpretation or Sentinel-2 band "
            f"names, so bands 1, 2, 3{named} are shown as red, green, blue: right for an R, G, B, NIR file (NAIP), "
            f"wrong for B, G, R, NIR (Planet); pick others with --option bands=[3,2,1] (1-based)")


# --------------------------------------------------------------------------------------------- reading
def open_raster(path: str | Path):
    """The open rasterio dataset of `path` (no warning for a raster without a CRS: it reads as pixels), checked
    for a size, bands and a pixel type pocket-adapt reads; failures raise `RasterError` naming the file. Only the
    drivers of :data:`READ_DRIVERS` open it: a VRT (or GDAL_WMS XML) would read other files or URLs."""
    p = Path(path)
    if not p.exists():
        raise RasterError(f"{p}: no such file")
    errors: list[RasterioError] = []
    for driver in READ_DRIVERS:
        try:
            with ignoring(NotGeoreferencedWarning):  # a raster without a CRS is fine here: only pixels are read
                src = rasterio.open(p, driver=driver)
            break
        except RasterioError as exc:
            errors.append(exc)
    else:
        zero = [e for e in errors if any(t in str(e).lower() for t in ("dimensions", "zero number of strips"))]
        exc = (zero or errors)[0]
        if zero:
            raise RasterError(f"{p}: zero-size raster: {exc}") from exc
        raise RasterError(f"{p}: cannot open as a raster (corrupt, truncated, or not one of the formats read: "
                          f"{', '.join(READ_DRIVERS)}; a VRT or other file that points at other files or URLs is "
                          f"refused): {exc}") from exc
    try:
        _check(src, p)
    except Exception:
        src.close()
        raise
    return src


def _check(src, path: Path) -> None:
    if src.width <= 0 or src.height <= 0 or src.count <= 0:
        raise RasterError(f"{path}: zero-size raster ({src.width}x{src.height}, {src.count} bands)")
    for i, dt in enumerate(src.dtypes, start=1):
        kind = np.dtype(dt).kind if dt in np.sctypeDict else "?"
        if kind not in "uif":
            raise RasterError(f"{path}: band {i} has unsupported data type {dt!r}; "
                              "supported: unsigned / signed integers and floats (not complex)")


def check_nodata_option(nodata: Any) -> float | None:
    """A reader's `nodata` option: None or a number (NaN allowed); DomainError naming it otherwise, before any read
    (a string or list failed deep in the first chip with a bare ValueError / TypeError)."""
    if nodata is None:
        return None
    if isinstance(nodata, bool) or not isinstance(nodata, (int, float, np.integer, np.floating)):
        raise DomainError(f"nodata must be a number (the pixel value that marks no data; .nan for NaN) or null, "
                          f"got {nodata!r}")
    return float(nodata)


def _unheld_nodata(src, indexes: list[int], nodata: float | None) -> str | None:
    """A note when the nodata in use -- the `nodata` option, else the file's own -- cannot occur in the bands' pixel
    type (-9999 in uint16, NaN in any integer type), so it masks nothing; None otherwise."""
    value = _nodata(src, nodata)
    if value is None or _masking_nodata(src, indexes, value) is not None:
        return None
    types = sorted({src.dtypes[i - 1] for i in indexes})
    if nodata is None:
        return (f"the file's nodata {value:g} cannot occur in its {'/'.join(types)} pixels, so it masks nothing; "
                "pass --option nodata=N for the value that marks no data")
    return f"nodata={nodata:g} cannot occur in its {'/'.join(types)} pixels, so it masks nothing" + (
        f" (the file's own nodata {src.nodata:g} is not used when the option is given)" if src.nodata is not None
        else "")


def _nodata(src, nodata: float | None) -> float | None:
    if nodata is not None:
        return float(nodata)
    return None if src.nodata is None else float(src.nodata)


def _masking_nodata(src, indexes: list[int], nd: float | None) -> float | None:
    """`nd` (the nodata in use), or None when it masks nothing: a value the bands' pixel type cannot hold, so their
    zeros are data as without any nodata (and said so)."""
    if nd is None or not all(_representable(nd, np.dtype(src.dtypes[i - 1])) for i in indexes):
        return None
    return nd


def _read(src, path: Path, indexes: list[int], window: Window | None = None, cache: int | None = None) -> np.ndarray:
    """Read `indexes` (in `window`); with `cache`, GDAL's block cache is held to that many bytes meanwhile."""
    try:
        if cache is None:
            return src.read(indexes, window=window) if window is not None else src.read(indexes)
        with _block_cache(cache):  # per read, so the setting never outlives a yield
            return src.read(indexes, window=window)
    except RasterioError as exc:
        where = f" window {_win(window)}" if window is not None else ""
        detail = f"{exc}" + (f" ({exc.__cause__})" if exc.__cause__ is not None else "")
        raise RasterError(f"{path}: read failed{where} (truncated or corrupt file?): {detail}") from exc


@contextmanager
def _block_cache(nbytes: int) -> Iterator[None]:
    """Hold GDAL's raster block cache (``GDAL_CACHEMAX``) to `nbytes`, then restore it. Lowering it evicts
    blocks at once. Set and restored directly: a nested ``rasterio.Env`` leaves the lowered value behind."""
    from rasterio.env import get_gdal_config, set_gdal_config

    old = get_gdal_config("GDAL_CACHEMAX")
    set_gdal_config("GDAL_CACHEMAX", int(nbytes))
    try:
        yield
    finally:
        if old is not None:
            set_gdal_config("GDAL_CACHEMAX", old)


def _win(w: Window) -> str:
    return f"(col {int(w.col_off)}, row {int(w.row_off)}, {int(w.width)}x{int(w.height)})"


def _band_values(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """(bands, H, W) -> (bands, H, W) bool: the value is finite and different from nodata."""
    ok = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, dtype=bool)
    if nodata is not None and not math.isnan(nodata) and _representable(nodata, data.dtype):
        ok &= data != np.asarray(nodata).astype(data.dtype)
    return ok


def _valid_mask(data: np.ndarray, nodata: float | None, masks: np.ndarray | None = None) -> np.ndarray:
    """(bands, H, W) -> (H, W) bool: some band finite and different from nodata (GDAL's dataset mask), and not
    masked (`masks`, GDAL's 0 = masked, from :func:`_file_masks`)."""
    valid = np.ones(data.shape[1:], dtype=bool) if masks is None else (masks != 0).all(axis=0)
    return valid & _band_values(data, nodata).any(axis=0)


def _file_masks(src, path: Path, indexes: list[int], window: Window | None = None) -> np.ndarray | None:
    """GDAL's masks of the bands `indexes` where the file has an alpha band or an internal mask (nodata is
    handled by :func:`_valid_mask`, so a `nodata` passed in still wins); None when it has neither."""
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if not any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
        return None
    try:
        return src.read_masks(indexes, window=window) if window is not None else src.read_masks(indexes)
    except RasterioError as exc:
        raise RasterError(f"{path}: reading the file's mask failed (truncated or corrupt file?): {exc}") from exc


def palette_of(src, indexes: list[int]) -> np.ndarray | None:
    """A (N, 3) uint8 lookup table when `indexes` is one paletted band (its colour map), else None."""
    if len(indexes) != 1 or src.colorinterp[indexes[0] - 1] != ColorInterp.palette:
        return None
    try:
        cmap = src.colormap(indexes[0])
    except (ValueError, RasterioError):
        return None
    lut = np.zeros((max(256, max(cmap) + 1), 3), dtype=np.uint8)
    for value, rgba in cmap.items():
        lut[value] = rgba[:3]
    return lut


def _palette_rgb(data: np.ndarray, valid: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(1, H, W) palette indexes -> (H, W, 3) uint8 in the colour map's colours; invalid pixels black."""
    out = lut[np.clip(data[0], 0, len(lut) - 1).astype(np.intp)]
    out[~valid] = 0
    return out


def _palette_stretch(lut: np.ndarray | None, stretch: tuple[float, float] | FixedStretch | str | None) -> bool:
    """Whether a paletted band is stretched: a stretch asked for (not ``"auto"``, not None) applies to its colours
    (it was dropped without a word)."""
    return lut is not None and stretch is not None and stretch != AUTO


def _representable(value: float, dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


@dataclass(frozen=True)
class FixedStretch:
    """``stretch="fixed:LOW,HIGH"``: every band mapped linearly from the stored values LOW..HIGH to 0..255 (clipped),
    the same in every image and chip (percentiles change per chip: the same ground in another colour)."""

    low: float
    high: float


_FIXED = re.compile(r"^\s*fixed\s*:\s*([^,]+),([^,]+)$", re.IGNORECASE)
STRETCH_FORMS = ("\"auto\", null or two percentiles [low, high] such as [2, 98], or a fixed range of stored values "
                 "\"fixed:LOW,HIGH\" such as \"fixed:0,3000\" (Sentinel-2 reflectance x 10000)")


def check_stretch_option(stretch: Any) -> tuple[float, float] | FixedStretch | str | None:
    """A converter's `stretch` option (``"auto"``, None, two percentiles or ``"fixed:LOW,HIGH"``) as the readers take
    it; else a `DomainError` before any work."""
    return _check_stretch(stretch)


def _fixed(stretch: str) -> FixedStretch | None:
    m = _FIXED.match(stretch)
    if not m:
        return None
    try:
        low, high = float(m.group(1)), float(m.group(2))
    except ValueError:
        return None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise DomainError(f"stretch {stretch!r}: a fixed range needs finite LOW < HIGH (stored pixel values), "
                          f"such as \"fixed:0,3000\"")
    return FixedStretch(low, high)


def _check_stretch(stretch) -> tuple[float, float] | FixedStretch | str | None:
    if stretch is None or stretch == AUTO or isinstance(stretch, FixedStretch):
        return stretch
    if isinstance(stretch, str) and (fixed := _fixed(stretch)) is not None:
        return fixed
    numeric = isinstance(stretch, (list, tuple)) and len(stretch) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in stretch)
    if not numeric:
        raise DomainError(f"stretch must be {STRETCH_FORMS}, got {stretch!r}")
    lo, hi = stretch
    if not 0 <= lo < hi <= 100:
        hint = f"; to map stored values {lo:g}..{hi:g} give stretch=fixed:{lo:g},{hi:g}" if 0 <= lo < hi else ""
        raise DomainError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {stretch!r}{hint}")
    return float(lo), float(hi)


def resolve_stretch(src, indexes: list[int], stretch: tuple[float, float] | FixedStretch | str | None
                    ) -> tuple[float, float] | FixedStretch | None:
    """``"auto"`` -> None when every band in `indexes` is uint8 (kept as stored), else :data:`AUTO_STRETCH`."""
    if stretch != AUTO:
        return stretch
    return None if all(src.dtypes[i - 1] == "uint8" for i in indexes) else AUTO_STRETCH


def _band_limits(data: np.ndarray, valid: np.ndarray, stretch: tuple[float, float],
                 nodata: float | None = None) -> list[tuple[float, float]] | None:
    """Per band (low, high) percentile values over its own valid values (:func:`_band_values`) of the valid
    pixels; None when no pixel is valid."""
    if not valid.any():
        return None
    ok = _band_values(data, nodata) & valid
    limits = []
    for band, band_ok in zip(data, ok):
        values = band[band_ok].astype(np.float64)
        lo, hi = np.percentile(values, stretch) if values.size else (0.0, 0.0)
        limits.append((float(lo), float(hi)))
    return limits


def _limits(data: np.ndarray, valid: np.ndarray, stretch: tuple[float, float] | FixedStretch | None,
            nodata: float | None = None) -> list[tuple[float, float]] | None:
    """Per band (low, high) stored values mapped to 0 and 255: the fixed range, or :func:`_band_limits`."""
    if isinstance(stretch, FixedStretch):
        return [(stretch.low, stretch.high)] * len(data)
    return _band_limits(data, valid, stretch, nodata) if stretch else None


def _to_rgb8(data: np.ndarray, valid: np.ndarray, limits: list[tuple[float, float]] | None) -> np.ndarray:
    """(1 or 3, H, W) -> (H, W, 3) uint8; invalid pixels black."""
    out = np.zeros(data.shape, dtype=np.uint8)
    for i, band in enumerate(data):
        x = band.astype(np.float32)
        if limits is None:
            y = np.clip(np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0), 0, 255)
        else:
            lo, hi = limits[i]
            if hi > lo:
                y = np.clip((np.nan_to_num(x, nan=lo) - lo) * (255.0 / (hi - lo)), 0, 255)
            else:
                y = np.zeros_like(x)
        out[i] = np.rint(y).astype(np.uint8)
    out[:, ~valid] = 0
    if out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def read_rgb(path: str | Path, bands: Sequence[int | str] | None = None,
             stretch: tuple[float, float] | str | None = AUTO, nodata: float | None = None,
             band_names: Sequence[str] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
             notes: list[tuple[str, str]] | None = None) -> tuple[Image.Image, np.ndarray]:
    """Read a whole raster as ``(PIL RGB image, valid mask)``; see the module notes for the options.

    Meant for patches and tiles: a raster of more than `max_pixels` pixels (``tiling.max_pixels``, as for every
    image) raises RasterError from its header, before reading (cut it into chips: :func:`iter_chips`).
    `notes`: a list that receives :func:`image_notes`' warnings, taken from this one open and read.
    """
    p = Path(path)
    stretch = _check_stretch(stretch)
    nodata = check_nodata_option(nodata)
    with open_raster(p) as src:
        if src.width * src.height > max_pixels:
            raise RasterError(
                f"{p}: {src.width}x{src.height} = {src.width * src.height:,} pixels, above the limit of "
                f"{max_pixels:,} (tiling.max_pixels); cut the scene into chips with `adapt convert remote_sensing "
                "scene_chips` or raise the limit")
        indexes = resolve_bands(src, bands, band_names)
        lut = palette_of(src, indexes)
        coloured = _palette_stretch(lut, stretch)
        stretch = resolve_stretch(src, indexes, stretch)
        nd = _nodata(src, nodata)
        data = _read(src, p, indexes)
        masks = _file_masks(src, p, indexes)
        header = _header_notes(src, p, indexes, bands, band_names, nodata) if notes is not None else []
        zeros = _masking_nodata(src, indexes, nd) is None and lut is None  # zeros are data: said when they matter
    valid = _valid_mask(data, nd, masks)
    if not valid.any():
        raise RasterError(f"{p}: every pixel is nodata ({nd}), masked or not finite in bands {indexes}")
    if notes is not None:
        notes += header + (_zero_notes(p, data, valid, stretch) if zeros else [])
    if lut is not None and not coloured:
        return Image.fromarray(_palette_rgb(data, valid, lut), mode="RGB"), valid
    if coloured:
        data, nd = _palette_rgb(data, valid, lut).transpose(2, 0, 1), None
    return Image.fromarray(_to_rgb8(data, valid, _limits(data, valid, stretch, nd)), mode="RGB"), valid


def reads_as_picture(path: str | Path, bands: Sequence[int | str] | None, stretch: Any = AUTO,
                     nodata: float | None = None) -> bool:
    """Whether :func:`read_image` reads `path` through the one image reader: a JPEG / PNG / BMP with the default
    bands, the ``auto`` or no stretch and no `nodata` (the reader has no stretch or nodata of its own)."""
    from domains.remote_sensing import PIL_SUFFIXES

    return Path(path).suffix.lower() in PIL_SUFFIXES and bands is None and (stretch is None or stretch == AUTO) \
        and nodata is None


# EXIF orientation -> the turn that makes the stored pixels upright (as ImageOps.exif_transpose turns them)
_EXIF_TURN = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def read_image(path: str | Path, bands: Sequence[int | str] | None = None,
               stretch: tuple[float, float] | str | None = AUTO, **options: Any) -> tuple[Image.Image, np.ndarray]:
    """``(RGB image, valid mask)`` of any image a remote-sensing reader takes: a JPEG / PNG / BMP with the default
    bands, stretch and nodata goes through the one image reader (:func:`model.tiling.load_image`: EXIF orientation,
    pixel cap; every pixel valid), everything else through :func:`read_rgb` with `bands`, `stretch` and `options`
    -- a picture too, so a stretch or nodata asked for is applied to its stored values, never dropped -- and a
    picture read so is turned upright by its EXIF orientation as the one reader turns it."""
    from model.tiling import load_image, upright_size

    if reads_as_picture(path, bands, stretch, options.get("nodata")):
        image = load_image(path, **({"max_pixels": options["max_pixels"]} if "max_pixels" in options else {}))
        return image, np.ones((image.height, image.width), dtype=bool)
    image, valid = read_rgb(path, bands=bands, stretch=stretch, **options)
    from domains.remote_sensing import PIL_SUFFIXES

    if Path(path).suffix.lower() in PIL_SUFFIXES:
        try:
            turn = _EXIF_TURN.get(upright_size(path)[1])
        except Exception:  # noqa: BLE001 - a header PIL cannot read: rasterio read it, keep it as stored
            turn = None
        if turn is not None:
            image = image.transpose(turn)
            valid = np.asarray(Image.fromarray(valid).transpose(turn))
    return image, valid


def read_rgb_image(path: str | Path, **options: Any) -> Image.Image:
    """:func:`read_rgb` without the mask: the reader the ``remote_sensing`` domain plugin registers."""
    return read_rgb(path, **options)[0]


# --------------------------------------------------------------------------------------------- chips
# a chip is read and encoded whole: size x size within the image reader's pixel limit
MAX_CHIP_SIZE = math.isqrt(DEFAULT_MAX_PIXELS)


def check_chip_options(size: Any, overlap: Any) -> tuple[int, int]:
    """`size` and `overlap` of :func:`iter_chips` as whole pixel counts; DomainError naming the option and its
    allowed range otherwise (checked before any file is opened: a mistyped ``size=10**9`` read whole scenes)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_CHIP_SIZE:
        raise DomainError(f"size must be a whole number of pixels from 1 to {MAX_CHIP_SIZE} (a chip is read whole, "
                          f"and size x size must stay within the image reader's {DEFAULT_MAX_PIXELS:,} pixels), "
                          f"got {size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < size:
        raise DomainError(f"overlap must be a whole number of pixels from 0 to size - 1 ({size - 1}), got {overlap!r}")
    return size, overlap


def check_chip_filters(min_valid: Any, stretch_scope: Any) -> tuple[float, str]:
    """`min_valid` and `stretch_scope` of :func:`iter_chips` checked; DomainError naming the option otherwise (a
    ``min_valid`` of 5 skipped every chip without a word, ``"0.5"`` failed in the first chip with a TypeError)."""
    if isinstance(min_valid, bool) or not isinstance(min_valid, (int, float)) or not 0 <= min_valid <= 1:
        raise DomainError(f"min_valid must be a fraction from 0 to 1 (of a chip's pixels that hold data), "
                          f"got {min_valid!r}")
    if stretch_scope not in ("scene", "chip"):
        raise DomainError(f"stretch_scope must be 'scene' or 'chip', got {stretch_scope!r}")
    return float(min_valid), stretch_scope


def chip_cache_bytes(src, size: int) -> int:
    """GDAL block-cache size for chipping the open dataset `src` in ``size``-pixel chips: the bytes of the
    blocks one row of chips spans, whole scene width, all bands, within CHIP_CACHE_MIN..CHIP_CACHE_MAX."""
    block_h = max(1, src.block_shapes[0][0]) if src.block_shapes else 1
    rows = (math.ceil(min(size, src.height) / block_h) + 1) * block_h
    item = max(np.dtype(dt).itemsize for dt in src.dtypes)
    span = rows * src.width * src.count * item
    return int(min(CHIP_CACHE_MAX, max(CHIP_CACHE_MIN, span * 1.25)))


def _scene_limits(src, path: Path, indexes: list[int], nodata: float | None, stretch: tuple[float, float],
                  size: int, cache: int | None = None, lut: np.ndarray | None = None) -> list[tuple[float, float]] | None:
    """Scene-wide percentiles from a grid of small sample windows (bounded memory, no whole-scene read); with
    `lut`, of a paletted band's colours."""
    w = min(_STAT_WINDOW, size, src.width)
    h = min(_STAT_WINDOW, size, src.height)
    nx = min(_STAT_WINDOWS, max(1, src.width // w))
    ny = min(_STAT_WINDOWS, max(1, src.height // h))
    xs = np.linspace(0, src.width - w, nx).round().astype(int) if nx > 1 else [0]
    ys = np.linspace(0, src.height - h, ny).round().astype(int) if ny > 1 else [0]
    samples = [[] for _ in range(3 if lut is not None else len(indexes))]
    for y in ys:
        for x in xs:
            win = Window(int(x), int(y), w, h)
            data = _read(src, path, indexes, win, cache)
            valid = _valid_mask(data, nodata, _file_masks(src, path, indexes, win))
            if lut is not None:
                data = _palette_rgb(data, valid, lut).transpose(2, 0, 1)
            ok = _band_values(data, None if lut is not None else nodata) & valid
            for i, band in enumerate(data):
                samples[i].append(band[ok[i]].astype(np.float64))
    values = [np.concatenate(s) for s in samples]
    if not any(v.size for v in values):
        return None
    return [tuple(float(x) for x in np.percentile(v, stretch)) if v.size else (0.0, 0.0) for v in values]


class _SparseBlocks:
    """Cheap all-nodata test for GeoTIFFs written sparse (``SPARSE_OK``): a block that was never written has
    no offset in the file, so ``dataset.block_size`` fails for it and GDAL fills it with nodata on read.

    Only used when that fill value is invalid for the chip reader: the effective nodata equals the file's
    nodata (or 0 when the file has none). ``window_empty`` then says a window holds no valid pixel without
    reading it; any doubt (other drivers, unexpected errors) answers False, so the window is read.
    """

    def __init__(self, src, indexes: list[int], nodata: float | None):
        fill = 0.0 if src.nodata is None else float(src.nodata)
        same = nodata is not None and (float(nodata) == fill or math.isnan(nodata) and math.isnan(fill))  # NaN != NaN
        self.on = src.driver == "GTiff" and same
        self.src, self.indexes = src, indexes
        self.bh, self.bw = src.block_shapes[0] if self.on else (1, 1)
        self.cache: dict[tuple[int, int], bool] = {}

    def _absent(self, i: int, j: int) -> bool:
        key = (i, j)
        if key not in self.cache:
            from rasterio.errors import RasterBlockError

            absent = True  # a pixel is invalid only when every selected band is nodata
            for b in self.indexes:
                try:
                    self.src.block_size(b, i, j)
                    absent = False
                    break
                except RasterBlockError:
                    continue
                except Exception:  # noqa: BLE001 - unknown: read the window instead
                    absent = False
                    break
            self.cache[key] = absent
        return self.cache[key]

    def window_empty(self, col: int, row: int, width: int, height: int) -> bool:
        if not self.on:
            return False
        for i in range(row // self.bh, (row + height - 1) // self.bh + 1):
            for j in range(col // self.bw, (col + width - 1) // self.bw + 1):
                if not self._absent(i, j):
                    return False
        return True


def iter_chips(path: str | Path, size: int = 448, overlap: int = 64, bands: Sequence[int | str] | None = None,
               stretch: tuple[float, float] | str | None = AUTO, nodata: float | None = None,
               band_names: Sequence[str] | None = None, stretch_scope: str = "scene",
               min_valid: float = 0.0, report=None) -> Iterator[Chip]:
    """Yield :class:`Chip` s of ``size x size`` pixels (smaller only when the scene is), row by row.

    Chips step by ``size - overlap``; the last row / column is aligned to the scene edge. Every read is a
    window no larger than one chip, and GDAL's block cache is held to :func:`chip_cache_bytes` during reads
    (about 64 MB for a 20000-pixel-wide 3-band uint8 scene), so memory stays bounded whatever the scene size.

    `stretch_scope`: ``"scene"`` (default) stretches every chip with the same percentiles, estimated from up
    to 8 x 8 sample windows spread over the scene; ``"chip"`` computes them per chip.
    A chip whose valid fraction is 0 (all nodata) or below `min_valid` is skipped, not yielded; pass a
    :class:`domains.base.ConvertReport` as `report` to count skips by reason with examples.
    """
    p = Path(path)
    size, overlap = check_chip_options(size, overlap)
    nodata = check_nodata_option(nodata)
    min_valid, stretch_scope = check_chip_filters(min_valid, stretch_scope)
    stretch = _check_stretch(stretch)
    with open_raster(p) as src:
        indexes = resolve_bands(src, bands, band_names)
        guess = guessed_rgb(src, bands, band_names) if report is not None else None
        if guess:
            report.warn(p, GUESSED_RGB, guess)
        unheld = _unheld_nodata(src, indexes, nodata) if report is not None else None
        if unheld:
            report.warn(p, "nodata masks nothing", f"{p}: {unheld}")
        lut = palette_of(src, indexes)
        coloured = _palette_stretch(lut, stretch)
        stretch = resolve_stretch(src, indexes, stretch)
        nd = _nodata(src, nodata)
        sparse = _SparseBlocks(src, indexes, nd)
        cache = chip_cache_bytes(src, size)
        scene_limits = None
        if isinstance(stretch, tuple) and stretch_scope == "scene" and (lut is None or coloured):
            scene_limits = _scene_limits(src, p, indexes, nd, stretch, size, cache, lut)
            if scene_limits is None and report is not None:  # chips then differ in contrast: said, not silent
                report.warn(p, "scene stretch taken per chip",
                            f"{p}: the {_STAT_WINDOWS} x {_STAT_WINDOWS} sample windows for the scene-wide stretch "
                            "hold no valid pixel (sparse data), so each chip is stretched on its own (as with "
                            "stretch_scope=chip) and chips' colours are not comparable")
        # zeros taken as data (no nodata): counted, to say when they drag a percentile stretch or make kept chips
        zero_check = report is not None and _masking_nodata(src, indexes, nd) is None and lut is None
        drag_at = _drag_share(stretch)
        zeros = seen = zero_chips = empty_chips = 0
        step = size - overlap
        for r, row_off in enumerate(chip_starts(src.height, size, step)):
            for c, col_off in enumerate(chip_starts(src.width, size, step)):
                win = Window(col_off, row_off, min(size, src.width), min(size, src.height))
                if sparse.window_empty(col_off, row_off, win.width, win.height):
                    if report is not None:
                        report.skip(f"{p} {_win(win)}", "all nodata", "0.0% valid (no data blocks written)")
                    continue
                data = _read(src, p, indexes, win, cache)
                valid = _valid_mask(data, nd, _file_masks(src, p, indexes, win))
                frac = float(valid.mean())
                if frac == 0.0 or frac < min_valid:
                    if report is not None:
                        reason = "all nodata" if frac == 0.0 else f"valid fraction below {min_valid:g}"
                        report.skip(f"{p} {_win(win)}", reason, f"{frac:.1%} valid")
                    continue
                if zero_check:
                    z, n = int(((data == 0).all(axis=0) & valid).sum()), int(valid.sum())
                    zeros, seen = zeros + z, seen + n
                    zero_chips += drag_at is not None and z / valid.size > drag_at
                    empty_chips += n == z or (n - z) / valid.size < min_valid  # nodata=0 would leave it out
                if lut is not None and not coloured:
                    yield Chip(image=Image.fromarray(_palette_rgb(data, valid, lut), mode="RGB"), mask=valid,
                               window=win, transform=src.transform @ Affine.translation(col_off, row_off), row=r,
                               col=c, path=p, crs=src.crs)
                    continue
                if coloured:
                    data = _palette_rgb(data, valid, lut).transpose(2, 0, 1)
                if scene_limits is not None and stretch_scope == "scene":
                    limits = scene_limits
                else:
                    limits = _limits(data, valid, stretch, None if coloured else nd)
                yield Chip(image=Image.fromarray(_to_rgb8(data, valid, limits), mode="RGB"), mask=valid,
                           window=win, transform=src.transform @ Affine.translation(col_off, row_off), row=r, col=c,
                           path=p, crs=src.crs)
        share = zeros / seen if seen else 0.0
        dragged = drag_at is not None and (share > drag_at if stretch_scope == "scene" else zero_chips > 0)
        if zero_check and (dragged or empty_chips):
            where = f" ({zero_chips} chip(s) over {drag_at:.0%} zeros)" if dragged and stretch_scope == "chip" else ""
            kept = f"{empty_chips} chip(s) all 0 (or under min_valid={min_valid:g} without them) are kept"
            report.warn(p, ZERO_FILL, _zero_fill_text(p, share, stretch if dragged else None,
                                                      kept if empty_chips else None, where))


def _drag_share(stretch: tuple[float, float] | FixedStretch | None) -> float | None:
    """The share of zero pixels above which zeros taken as data drag a percentile stretch's low end to 0; None when
    no percentile is taken (uint8 as stored, a fixed range)."""
    return max(stretch[0] / 100, ZERO_FILL_MIN) if isinstance(stretch, tuple) else None


def _zero_fill_text(path: Path, share: float, dragged: tuple[float, float] | None, kept: str | None,
                    where: str = "") -> str:
    """The ``zero fill without nodata`` warning: `share` of the pixels read are 0 in every band; `dragged` the
    percentile stretch they pull down, `kept` what all-zero output is kept."""
    why = ([f"they pull the {dragged[0]:g} % stretch limit down to 0 (washed-out colours)"] if dragged else []) \
        + ([kept] if kept else [])
    return (f"{path}: {share:.1%} of the pixels read are 0 in every band{where} and no nodata value marks them, so "
            f"the zeros count as data: {'; '.join(why)}; if they are fill (a scene edge), pass --option nodata=0")


def image_notes(path: str | Path, bands: Sequence[int | str] | None = None,
                stretch: tuple[float, float] | str | None = AUTO, nodata: float | None = None,
                band_names: Sequence[str] | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple[str, str]]:
    """``(reason, detail)`` warnings a converter reports for a raster read whole by :func:`read_rgb` with these
    options, as :func:`iter_chips` reports them for a scene: bands 1, 2, 3 taken as RGB on a guess
    (:data:`GUESSED_RGB`), a nodata its pixels cannot hold, and zeros taken as data (:data:`ZERO_FILL`: they drag
    a percentile stretch, or the image is all 0). For a raster whose image is not read (a converter's output
    re-used): :func:`read_rgb` with ``notes=`` gives the same notes from its own read."""
    p = Path(path)
    stretch = _check_stretch(stretch)
    nodata = check_nodata_option(nodata)
    with open_raster(p) as src:
        indexes = resolve_bands(src, bands, band_names)
        notes = _header_notes(src, p, indexes, bands, band_names, nodata)
        stretch = resolve_stretch(src, indexes, stretch)
        if _masking_nodata(src, indexes, _nodata(src, nodata)) is not None or palette_of(src, indexes) is not None \
                or src.width * src.height > max_pixels:
            return notes
        data = _read(src, p, indexes)
        valid = _valid_mask(data, None, _file_masks(src, p, indexes))
    return notes + _zero_notes(p, data, valid, stretch)


def _header_notes(src, p: Path, indexes: list[int], bands: Sequence[int | str] | None,
                  band_names: Sequence[str] | None, nodata: float | None) -> list[tuple[str, str]]:
    """:func:`image_notes` told by the open dataset's header: RGB guessed, a nodata that masks nothing."""
    notes: list[tuple[str, str]] = []
    guess = guessed_rgb(src, bands, band_names)
    if guess:
        notes.append((GUESSED_RGB, guess))
    unheld = _unheld_nodata(src, indexes, nodata)
    if unheld:
        notes.append(("nodata masks nothing", f"{p}: {unheld}"))
    return notes


def _zero_notes(p: Path, data: np.ndarray, valid: np.ndarray,
                stretch: tuple[float, float] | FixedStretch | None) -> list[tuple[str, str]]:
    """:func:`image_notes` told by the pixels of a raster without nodata: zeros taken as data."""
    seen = int(valid.sum())
    zeros = int(((data == 0).all(axis=0) & valid).sum())
    drag_at = _drag_share(stretch)
    share = zeros / seen if seen else 0.0
    empty = seen > 0 and zeros == seen
    dragged = drag_at is not None and share > drag_at and not empty
    if dragged or empty:
        return [(ZERO_FILL, _zero_fill_text(p, share, stretch if dragged else None,
                                            "the image is all 0 (black) and is kept" if empty else None))]
    return []


# --------------------------------------------------------------------------------------------- coordinates
def chip_box_to_map(box: Sequence[float], transform: Affine) -> tuple[float, float, float, float]:
    """Pixel box in a chip (or scene) -> map bounds ``(left, bottom, right, top)`` through `transform`.

    For rotated transforms the result is the axis-aligned bounding box of the four transformed corners.
    """
    x1, y1, x2, y2 = pixel_box(box)
    xs, ys = zip(*(transform @ (x, y) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))))
    return min(xs), min(ys), max(xs), max(ys)


def map_box_to_chip(bounds: Sequence[float], transform: Affine) -> Box:
    """Map bounds ``(left, bottom, right, top)`` -> pixel :class:`Box` in the chip (or scene) of `transform`."""
    if len(bounds) != 4:
        raise ValueError(f"map bounds need 4 values (left, bottom, right, top), got {tuple(bounds)}")
    left, bottom, right, top = bounds
    if right < left or top < bottom:
        raise ValueError(f"map bounds {tuple(bounds)} must be (left, bottom, right, top) with left <= right, "
                         "bottom <= top")
    inv = ~transform
    cols, rows = zip(*(inv @ (x, y) for x, y in ((left, top), (right, top), (left, bottom), (right, bottom))))
    return Box(min(cols), min(rows), max(cols), max(rows))
