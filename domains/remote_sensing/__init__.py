"""Remote sensing: GeoTIFF / GDAL rasters (Sentinel-2, EuroSAT MS, aerial tiles) read into RGB and chips.

Provides the reader (:mod:`domains.remote_sensing.raster`), data-set converters into InternVL chat JSONL
(:mod:`domains.remote_sensing.convert`: UC Merced / AID / NWPU / EuroSAT (RGB and 13-band MS) scene
classification, RSVQA LR / HR, DIOR-RSVG grounding and region perception; :mod:`domains.remote_sensing.dota`:
DOTA chipped into grounding and count records) and a synthetic generator writing
small data sets in the public layouts (:mod:`domains.remote_sensing.synthetic`). ``rasterio`` and the
converter modules are imported only when used, so the registry works without rasterio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domains.base import DomainPlugin, lazy
from domains.boxes import draw_ref_boxes
from domains.remote_sensing.metrics import METRICS

# what the raster reader opens through rasterio (GeoTIFF, JPEG 2000, Erdas Imagine; raster.READ_DRIVERS), the plugin's
# readers and the converters alike; no .vrt: the reader refuses a VRT (it points at other files or URLs)
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img")
PIL_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")  # read through model.tiling.load_image (EXIF orientation)


def chip_starts(length: int, size: int, step: int) -> list[int]:
    """Chip offsets along one side, as DOTA's devkit splits: every `step`, the last one aligned to the edge (so every
    chip is full size); DOTA's chipping and the GeoTIFF chipper alike."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def read_raster_rgb(path: str | Path, **options: Any):
    """Reader for the plugin: ``domains.remote_sensing.raster.read_rgb_image`` (imports rasterio lazily)."""
    from domains.remote_sensing.raster import read_rgb_image

    return read_rgb_image(path, **options)


_CONVERT = "domains.remote_sensing.convert"


def _classification(dataset: str):
    return lazy(f"{_CONVERT}:convert_classification",
                f"Folder-per-class {dataset} -> classification JSONL (convert.convert_classification).", dataset=dataset)


convert_rsvqa = lazy(f"{_CONVERT}:convert_rsvqa",
                     "RSVQA LR / HR -> VQA JSONL (:func:`domains.remote_sensing.convert.convert_rsvqa`).")
convert_dior_rsvg = lazy(f"{_CONVERT}:convert_dior_rsvg", "DIOR-RSVG -> grounding + region JSONL "
                         "(:func:`domains.remote_sensing.convert.convert_dior_rsvg`).")
convert_scene_chips = lazy(f"{_CONVERT}:convert_scene_chips",
                           "Large GeoTIFF scene(s) -> georeferenced chips (+ grounding records from a boxes file) "
                           "(:func:`domains.remote_sensing.convert.convert_scene_chips`).")
convert_dota = lazy("domains.remote_sensing.dota:convert_dota", "DOTA v1.0 / v1.5 / v2.0 -> chipped grounding + "
                    "count + presence JSONL (:func:`domains.remote_sensing.dota.convert_dota`).")
synthetic = lazy("domains.remote_sensing.synthetic:generate_all", "Small synthetic data sets in the public layouts "
                 "(:func:`domains.remote_sensing.synthetic.generate_all`).")


CONVERTERS = {
    **{name: _classification(name) for name in ("ucmerced", "aid", "nwpu", "eurosat", "eurosat_ms")},
    "rsvqa": convert_rsvqa,
    # the name picks the resolution: unnamed, rsvqa_lr converted HR files (as rsvqa_hr) without a word
    **{f"rsvqa_{res}": lazy(f"{_CONVERT}:convert_rsvqa", f"RSVQA {res.upper()} -> VQA JSONL "
                            "(:func:`domains.remote_sensing.convert.convert_rsvqa`).", resolution=res)
       for res in ("lr", "hr")},
    "dior_rsvg": convert_dior_rsvg,
    "scene_chips": convert_scene_chips,
    "dota": convert_dota,
}

def _read_upload(paths: list[Path], *, bands: Any = "auto", stretch: Any = "auto") -> dict:
    """Demo hook: rasters read to RGB with the page's bands and stretch (:func:`domains.remote_sensing.demo.read_upload`)."""
    from .demo import read_upload

    return read_upload(paths, bands=bands, stretch=stretch)


def _draw_answer(images: list, answer: str, **options: Any) -> list:
    """Demo hook: the answer's ``<ref>..</ref><box>[[..]]</box>`` boxes drawn on every image."""
    return [draw_ref_boxes(image, answer) for image in images]


def _demo_options() -> dict[str, dict]:
    """Demo hook: the band and stretch controls (:func:`domains.remote_sensing.demo.demo_options`)."""
    from .demo import demo_options

    return demo_options()


def _upload_help() -> str:
    from .demo import UPLOAD_HELP

    return UPLOAD_HELP


PLUGIN = DomainPlugin(
    name="remote_sensing",
    description="Satellite and aerial imagery: GeoTIFF / GDAL rasters with 1-13+ bands read to 8-bit RGB "
                "(EuroSAT MS band order handled) and cut into georeferenced chips; converters for scene "
                "classification (UC Merced, AID, NWPU, EuroSAT RGB / MS), RSVQA, DIOR-RSVG and DOTA (chipped); a "
                "synthetic generator in the public layouts.",
    readers={suffix: read_raster_rgb for suffix in RASTER_SUFFIXES},
    converters=CONVERTERS,
    synthetic=synthetic,
    metrics=METRICS,  # rsvqa (per question type), classification, region; grounding is the built-in task
    recipes=("remote-sensing_pocket-tiny_full", "remote-sensing_mobilevlm-v2_full"),
    # for a demo panel: read an upload (any raster rasterio opens) with the chosen bands / stretch, draw boxes on it
    demo_hooks={"read_upload": _read_upload, "draw_answer": _draw_answer, "options": _demo_options,
                "upload_help": _upload_help},
)

__all__ = ["CONVERTERS", "PIL_SUFFIXES", "PLUGIN", "RASTER_SUFFIXES", "chip_starts", "convert_dior_rsvg",
           "convert_dota", "convert_rsvqa", "convert_scene_chips", "read_raster_rgb", "synthetic"]
