"""Demo hooks for remote sensing: rasters read to RGB with the bands and stretch chosen on the page.

* :func:`read_upload` reads each uploaded raster (GeoTIFF or any format GDAL opens) with
  :func:`domains.remote_sensing.raster.read_rgb`, using the page's ``bands`` (``"auto"``, ``"4,3,2"``,
  ``"B08,B04,B03"``, ``"1"``...) and ``stretch`` choices, and says in its info which bands and which stretch
  made the picture. A damaged or cut-short file is reported in words, not as GDAL's message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domains.base import DomainError

log = logging.getLogger(__name__)

__all__ = ["AUTO", "STRETCHES", "UPLOAD_HELP", "demo_options", "parse_bands", "read_upload"]

AUTO = "auto"
# page choice -> read_rgb's stretch (percentiles per band over valid pixels; None = values as stored)
STRETCHES: dict[str, tuple[float, float] | None] = {
    "2–98 % per band": (2.0, 98.0),
    "0.5–99.5 % per band": (0.5, 99.5),
    "min–max per band": (0.0, 100.0),
    "none (values as stored, for 8-bit RGB)": None,
}
BAND_CHOICES = [AUTO, "4,3,2", "8,4,3", "1,2,3", "1"]
UPLOAD_HELP = ("Upload a GeoTIFF (or another raster GDAL reads: .tif, .jp2, .img, .vrt) with 1 to 13+ bands, e.g. a "
               "Sentinel-2 / EuroSAT MS patch or an aerial tile. Choose which bands make red, green and blue "
               "(1-based indexes or names such as B04,B03,B02; auto = B04,B03,B02 when the bands are named, else "
               "1,2,3) and how the values are stretched to 8 bits.")
_UPLOAD_NAME = re.compile(r"^upload-(\d+)")


def demo_options() -> dict[str, dict]:
    """Demo hook: the page's band and stretch controls (passed to :func:`read_upload`)."""
    return {
        "bands": {"choices": BAND_CHOICES, "default": AUTO, "custom": True,
                  "label": "Bands for red, green, blue (or one band for grey)",
                  "info": "auto, 1-based indexes (4,3,2) or band names (B04,B03,B02); type your own"},
        "stretch": {"choices": list(STRETCHES), "default": "2–98 % per band", "label": "Stretch to 8 bits"},
    }


def parse_bands(text: str | Sequence[int | str] | None) -> list[int | str] | None:
    """``"auto"`` / empty -> None (the reader's default); ``"4, 3, 2"`` -> ``[4, 3, 2]``; ``"B04,B03,B02"`` ->
    names. One band or three; DomainError otherwise."""
    if text is None:
        return None
    if not isinstance(text, str):
        return list(text)
    text = text.strip()
    if not text or text.lower() == AUTO:
        return None
    parts = [p.strip() for p in re.split(r"[,;\s]+", text) if p.strip()]
    if len(parts) not in (1, 3):
        raise DomainError(f"bands: give one band (grey) or three (red, green, blue), got {text!r}")
    return [int(p) if p.isdigit() else p for p in parts]


def _stretch(choice: str | tuple[float, float] | None) -> tuple[float, float] | None:
    if choice is None or isinstance(choice, tuple):
        return choice
    if choice not in STRETCHES:
        raise DomainError(f"stretch must be one of {', '.join(STRETCHES)}, got {choice!r}")
    return STRETCHES[choice]


def _label(path: Path) -> str:
    m = _UPLOAD_NAME.match(path.name)
    return f"upload {m.group(1)}" if m else path.name


def _damaged(path: Path, err: Exception, *, opened: bool) -> DomainError:
    """A plain-words message for a raster GDAL could not open (`opened` False) or read (its text goes to
    the server log only)."""
    log.info("demo: GDAL could not %s %s: %s", "read" if opened else "open", _label(path), err.__cause__ or err)
    if opened:
        return DomainError(f"{_label(path)}: the raster's pixel data is incomplete or damaged; the file looks cut "
                           "short (an interrupted download or copy?). Upload the whole file again.")
    return DomainError(f"{_label(path)}: cannot be read as a raster: the file is damaged, cut short (an interrupted "
                       "download or copy?) or not in a format GDAL reads (GeoTIFF, JPEG 2000, ...).")


def _describe_bands(src, indexes: list[int]) -> str:
    from domains.remote_sensing import raster

    names = raster._known_names(src, None)  # descriptions in the file, or the EuroSAT MS order
    text = ", ".join(str(i) for i in indexes)
    if names:
        text += " (" + ", ".join(names[i - 1] for i in indexes) + ")"
    return text + (" as grey" if len(indexes) == 1 else " as red, green, blue")


def read_upload(paths: Sequence[str | Path], *, bands: str | Sequence[int | str] | None = AUTO,
                stretch: str | tuple[float, float] | None = "2–98 % per band", **options: Any) -> dict:
    """Demo hook: each uploaded raster read to RGB with `bands` and `stretch`; the info says which bands,
    which stretch and how much is nodata. Raises DomainError (a ValueError) in words for bad choices and
    damaged files."""
    import rasterio
    from rasterio.errors import RasterioError

    from domains.remote_sensing.raster import RasterError, read_rgb, resolve_bands

    wanted = parse_bands(bands)
    limits = _stretch(stretch)
    images, info, warnings = [], {}, []
    how = "none (values as stored, clipped to 0–255)" if limits is None else (
        f"{limits[0]:g}–{limits[1]:g} percentiles per band over valid pixels, to 0–255")
    for k, path in enumerate(Path(p) for p in paths):
        name = f"image {k + 1}"
        try:
            src = rasterio.open(path)
        except RasterioError as err:
            raise _damaged(path, err, opened=False) from None
        with src:
            indexes = resolve_bands(src, wanted)
            used = _describe_bands(src, indexes)
            shape = f"{src.width} × {src.height} px, {src.count} band{'s' if src.count != 1 else ''} ({src.dtypes[0]})"
        try:
            image, valid = read_rgb(path, bands=indexes, stretch=limits)
        except RasterError as err:
            if isinstance(err.__cause__, RasterioError):
                raise _damaged(path, err, opened=True) from None
            raise
        images.append(image)
        info[name] = shape
        info[f"{name} bands"] = used
        info[f"{name} stretch"] = how
        if not valid.all():
            warnings.append(f"{name}: {1 - valid.mean():.0%} of the pixels are nodata (drawn black)")
    return {"images": images, "labels": None, "prompt": None, "info": info, "warnings": warnings}
