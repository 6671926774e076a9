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
from typing import Any, NoReturn

from domains.base import DomainError
from model.quiet import ignoring

log = logging.getLogger(__name__)

__all__ = ["AUTO", "AUTO_LABEL", "STRETCHES", "UPLOAD_HELP", "demo_options", "parse_bands", "read_upload"]

AUTO = "auto"
AUTO_LABEL = "auto (8-bit files as stored, others 2–98 % per band)"
FIXED_S2_LABEL = "fixed 0–3000 (Sentinel-2 / EuroSAT MS reflectance × 10000)"
# page choice -> read_rgb's stretch (percentiles per band over valid pixels; None = values as stored; "auto" = the
# converters' rule, so the page shows what training saw)
STRETCHES: dict[str, tuple[float, float] | str | None] = {
    AUTO_LABEL: AUTO,
    "2–98 % per band": (2.0, 98.0),
    "0.5–99.5 % per band": (0.5, 99.5),
    "min–max per band": (0.0, 100.0),
    FIXED_S2_LABEL: "fixed:0,3000",
    "none (values as stored, for 8-bit RGB)": None,
}
BAND_CHOICES = [AUTO, "4,3,2", "8,4,3", "1,2,3", "1"]
UPLOAD_HELP = ("Upload a GeoTIFF (or a JPEG 2000 / Erdas Imagine .img raster) with 1 to 13+ bands, e.g. a "
               "Sentinel-2 / EuroSAT MS patch or an aerial tile. Choose which bands make red, green and blue "
               "(1-based indexes or names such as B04,B03,B02; auto = B04,B03,B02 when the bands are named, else "
               "1,2,3) and how the values are stretched to 8 bits (auto: as the converters do for training).")
_UPLOAD_NAME = re.compile(r"^upload-(\d+)")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")


def demo_options() -> dict[str, dict]:
    """Demo hook: the page's band and stretch controls (passed to :func:`read_upload`)."""
    return {
        "bands": {"choices": BAND_CHOICES, "default": AUTO, "custom": True,
                  "label": "Bands for red, green, blue (or one band for grey)",
                  "info": "auto, 1-based indexes (4,3,2) or band names (B04,B03,B02); type your own"},
        "stretch": {"choices": list(STRETCHES), "default": AUTO_LABEL, "label": "Stretch to 8 bits"},
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
    for p in parts:
        if _NUMBER.fullmatch(p) and not p.isdigit():  # "-1", "1.5": read as band names before, "no band named '-1'"
            raise DomainError(f"bands: {p!r} is not a band index; indexes are whole numbers from 1 (4,3,2)")
    return [int(p) if p.isdigit() else p for p in parts]


def _stretch(choice: Any) -> Any:
    """A page label, ``"auto"``, ``"none"`` / None, two percentiles (``[1, 99]``) or ``"fixed:LOW,HIGH"`` ->
    read_rgb's stretch."""
    from domains.remote_sensing.raster import check_stretch_option

    if isinstance(choice, str):
        if choice in STRETCHES:
            choice = STRETCHES[choice]
            return check_stretch_option(choice) if isinstance(choice, str) and choice != AUTO else choice
        if choice.strip().lower() in (AUTO, "none"):
            return None if choice.strip().lower() == "none" else AUTO
        if choice.strip().lower().startswith("fixed"):
            return check_stretch_option(choice)  # DomainError for a bad range
    elif choice is None:
        return None
    elif isinstance(choice, (list, tuple)):
        check_stretch_option(list(choice))  # DomainError for bad percentiles
        return float(choice[0]), float(choice[1])
    raise DomainError(f"stretch must be auto, none, two percentiles such as [1, 99], a fixed range such as "
                      f"fixed:0,3000, or one of the page's choices "
                      f"({'; '.join(STRETCHES)}), got {choice!r}")


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


def _self_contained_driver(path: Path) -> str:
    """The first of the reader's drivers (:data:`~domains.remote_sensing.raster.READ_DRIVERS`: GDAL picks a driver
    by content, not by name, so a VRT or GDAL_WMS XML named .tif would read server files or fetch URLs) that opens
    `path`, when the dataset it opens reads no file but those beside it (its own sidecars); DomainError otherwise,
    before any other driver can open the file."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    from domains.remote_sensing.raster import READ_DRIVERS  # imported here, as rasterio is: not when the page loads

    folder = path.resolve().parent
    for driver in READ_DRIVERS:
        try:
            with ignoring(NotGeoreferencedWarning):
                with rasterio.open(path, driver=driver) as src:
                    files = list(src.files)
        except RasterioError:
            continue
        if any(Path(f).resolve().parent != folder for f in files):
            log.info("demo: %s refers to files outside the upload: refused", _label(path))
            raise DomainError(f"{_label(path)}: the raster refers to other files, which a demo upload cannot read; "
                              "upload a self-contained GeoTIFF")
        return driver
    return _refuse_format(path)


def _refuse_format(path: Path) -> NoReturn:
    raise DomainError(f"{_label(path)}: cannot be read as a raster: the file is damaged, cut short (an interrupted "
                      "download or copy?) or not in a format this demo reads (GeoTIFF, JPEG 2000, Erdas Imagine .img, "
                      "PNG, JPEG, BMP; a VRT or other file that points at other files or URLs is refused).")


def _describe_bands(src, indexes: list[int]) -> str:
    from domains.remote_sensing import raster

    names = raster._known_names(src, None)  # descriptions in the file, or the EuroSAT MS order
    text = ", ".join(str(i) for i in indexes)
    if names:
        text += " (" + ", ".join(names[i - 1] for i in indexes) + ")"
    return text + (" as grey" if len(indexes) == 1 else " as red, green, blue")


def _picture_how(path: Path) -> tuple[str, str]:
    """``(bands, stretch)`` as the one image reader (:func:`model.tiling.load_image`) turned the picture into RGB,
    from its header: 16-bit grey is stretched, 16-bit colour keeps its high byte, 8-bit is kept as stored."""
    from model.tiling import _WIDE_MODES, _open_past_pil_limit, _rawmode

    try:
        with _open_past_pil_limit(path) as image:
            mode, wide_colour = image.mode, any(";16" in _rawmode(tile) for tile in image.tile)
            coloured = _has_colour(image)
    except Exception:  # noqa: BLE001 - load_image read it already; a header that will not reopen says nothing new
        return "red, green, blue as stored", "none (an 8-bit image)"
    grey = mode in _WIDE_MODES or mode in ("1", "L", "LA", "P") and not coloured
    bands = "one band as grey" if grey else "red, green, blue as stored"
    if mode in _WIDE_MODES:
        return bands, "2–98 percentiles of the pixels, to 0–255 (a 16-bit, 32-bit or float image)"
    if wide_colour:
        return bands, "16-bit colour read as its high byte (values / 256)"
    return bands, "none (an 8-bit image)"


def _has_colour(image) -> bool:
    """Whether an open one-channel picture (grey, or a palette) shows colour: a palette of non-grey entries."""
    if image.mode != "P":
        return False
    palette = image.getpalette() or []
    return any(len(set(palette[k:k + 3])) > 1 for k in range(0, len(palette), 3))


def _share(fraction: float) -> str:
    """A share in whole percent that is never rounded to 0 % or 100 % when it is neither."""
    if 0 < fraction < 0.005:
        return "under 1%"
    if 0.995 <= fraction < 1:
        return "over 99%"
    return f"{fraction:.0%}"


def _how(limits: Any, palette: bool) -> str:
    from domains.remote_sensing.raster import FixedStretch

    if palette:
        return "the file's colour map (a paletted band: no stretch)"
    if isinstance(limits, FixedStretch):
        return f"stored values {limits.low:g}–{limits.high:g} to 0–255 in every band (a fixed range)"
    if limits is None:
        return "none (values as stored, clipped to 0–255)"
    return f"{limits[0]:g}–{limits[1]:g} percentiles per band over valid pixels, to 0–255"


def read_upload(paths: Sequence[str | Path], *, bands: str | Sequence[int | str] | None = AUTO,
                stretch: Any = AUTO_LABEL) -> dict:
    """Demo hook: each uploaded raster read to RGB with `bands` and `stretch`; the info says which bands,
    which stretch and how much is nodata. A JPEG / PNG / BMP with auto bands and the auto or no stretch goes through
    the one image reader; with a stretch chosen it is stretched as a raster is (EXIF orientation applied both ways).
    Raises DomainError (a ValueError) in words for bad choices, damaged files and more files than one question takes
    (:data:`model.limits.MAX_IMAGES`, refused before any is read)."""
    from rasterio.errors import RasterioError

    from domains.remote_sensing.raster import (
        RasterError,
        _known_names,
        open_raster,
        palette_of,
        read_image,
        reads_as_picture,
        resolve_bands,
        resolve_stretch,
    )
    from model.limits import MAX_IMAGES
    from model.tiling import ImageLoadError, load_image

    if len(paths) > MAX_IMAGES:  # before any is read: each may be a scene of up to 50 MP
        raise DomainError(f"the upload holds {len(paths)} files; at most {MAX_IMAGES} images can go into one question: "
                          f"upload {MAX_IMAGES} or fewer")
    wanted = parse_bands(bands)
    choice = _stretch(stretch)
    images, info, warnings = [], {}, []
    for k, path in enumerate(Path(p) for p in paths):
        name = f"image {k + 1}"
        if reads_as_picture(path, wanted, choice):  # a stretch chosen for a picture is applied to its stored values
            try:
                image = load_image(path)
            except ImageLoadError as err:
                raise DomainError(f"{_label(path)}: {err.reason}") from None
            images.append(image)
            info[name] = f"{image.width} × {image.height} px, an ordinary image (EXIF orientation applied)"
            info[f"{name} bands"], info[f"{name} stretch"] = _picture_how(path)
            continue
        driver = _self_contained_driver(path)
        try:
            src = open_raster(path)
        except RasterError as err:
            if isinstance(err.__cause__, RasterioError):
                raise _damaged(path, err, opened=False) from None
            raise DomainError(str(err).replace(str(path), _label(path))) from None
        with src:
            if src.driver != driver:  # a file that one of our drivers opens but GDAL's own pick reads otherwise
                _refuse_format(path)
            try:
                indexes = resolve_bands(src, wanted)
            except RasterError:
                if any(isinstance(b, str) for b in wanted or ()) and not _known_names(src, None):
                    # the reader's hint ("pass band_names") is for the Python API, not for this page
                    raise DomainError(f"{_label(path)}: the file does not name its bands, so choose them by number: "
                                      f"1-based indexes 1..{src.count}, e.g. "
                                      f"{'4,3,2' if src.count >= 4 else '1,2,3' if src.count >= 3 else '1'}") from None
                raise
            limits = resolve_stretch(src, indexes, choice)
            palette = palette_of(src, indexes) is not None
            used = _describe_bands(src, indexes)
            count = src.count
            shape = f"{count} band{'s' if count != 1 else ''} ({src.dtypes[0]})"
        try:
            image, valid = read_image(path, bands=indexes, stretch=limits)  # a picture: turned upright
        except RasterError as err:
            if isinstance(err.__cause__, RasterioError):
                raise _damaged(path, err, opened=True) from None
            raise DomainError(str(err).replace(str(path), _label(path))) from None
        images.append(image)
        info[name] = f"{image.width} × {image.height} px, {shape}"  # as shown: a picture turned upright
        info[f"{name} bands"] = used + (" (colour map)" if palette else "")
        info[f"{name} stretch"] = _how(limits, palette)
        if count == 2 and wanted is None:
            warnings.append(f"{name}: 2 bands; band 1 is shown as grey (type 2 under Bands to see the other)")
        if not valid.all():
            warnings.append(f"{name}: {_share(1 - float(valid.mean()))} of the pixels are nodata or masked (drawn black)")
    return {"images": images, "labels": None, "prompt": None, "info": info, "warnings": warnings}
