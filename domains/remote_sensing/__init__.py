"""Remote sensing: GeoTIFF / GDAL rasters (Sentinel-2, EuroSAT MS, aerial tiles) read into RGB and chips.

Part 1 provides the reader (:mod:`domains.remote_sensing.raster`); data-set converters (RSVQA, DIOR-RSVG,
EuroSAT, ...), metrics and the synthetic generator come later. ``rasterio`` is imported only when a
raster is read, so the registry works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domains.base import DomainPlugin

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")


def read_raster_rgb(path: str | Path, **options: Any):
    """Reader for the plugin: ``domains.remote_sensing.raster.read_rgb_image`` (imports rasterio lazily)."""
    from domains.remote_sensing.raster import read_rgb_image

    return read_rgb_image(path, **options)


PLUGIN = DomainPlugin(
    name="remote_sensing",
    description="Satellite and aerial imagery: GeoTIFF / GDAL rasters with 1-13+ bands read to 8-bit RGB "
                "(EuroSAT MS band order handled) and cut into georeferenced chips. No data-set converters, "
                "metrics or synthetic generator yet (domain plugins part 1).",
    readers={suffix: read_raster_rgb for suffix in RASTER_SUFFIXES},
)

__all__ = ["PLUGIN", "RASTER_SUFFIXES", "read_raster_rgb"]
