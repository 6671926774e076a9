"""Autonomous driving: nuScenes camera rigs, DriveLM-nuScenes QA, the stitched six-view layout.

* :mod:`domains.driving.layout` -- camera names and orders, the 2688×896 stitched image, DriveLM c-tags and their
  coordinate maps (stitched grid / each camera's grid).
* :mod:`domains.driving.nuscenes` -- nuScenes through the nuscenes-devkit (cameras, projected 2-D boxes, frame
  sequences) and the ``nuscenes`` converter (grounding and region samples per camera image).
* :mod:`domains.driving.drivelm` -- the ``drivelm`` converter (DriveLM-nuScenes v1.1, stitched or multi-image).
* :mod:`domains.driving.synthetic` -- a small rendered nuScenes + DriveLM set in the public layouts.
* :mod:`domains.driving.metrics` / :mod:`domains.driving.demo` -- DriveLM scoring and the demo hooks.

Converters, the devkit and the demo code are imported only when used, so the registry loads without the devkit.
"""

from __future__ import annotations

from typing import Any

from domains.base import DomainPlugin, lazy, read_image_rgb
from domains.driving.metrics import METRICS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


convert_drivelm = lazy("domains.driving.drivelm:convert_drivelm",
                       "DriveLM-nuScenes v1.1 -> ``drivelm`` JSONL (:func:`domains.driving.drivelm.convert_drivelm`).")
convert_nuscenes = lazy("domains.driving.nuscenes:convert_nuscenes", "nuScenes dataroot -> grounding + region JSONL "
                        "(:func:`domains.driving.nuscenes.convert_nuscenes`).")
synthetic = lazy("domains.driving.synthetic:generate",
                 "Rendered nuScenes + DriveLM in the public layouts (:func:`domains.driving.synthetic.generate`).")


def read_upload(paths: Any, *, mode: str = "stitched", order: str = "stitch") -> dict:
    """Demo hook: camera uploads -> model inputs (:func:`domains.driving.demo.read_upload`)."""
    from domains.driving.demo import read_upload as fn

    return fn(paths, mode=mode, order=order)


def draw_answer(*args: Any, **kwargs: Any):
    """Demo hook: c-tags / boxes of an answer drawn on the cameras (:func:`domains.driving.demo.draw_answer`)."""
    from domains.driving.demo import draw_answer as fn

    return fn(*args, **kwargs)


def demo_options() -> dict[str, dict]:
    """Demo hook: the choices the demo page offers (:func:`domains.driving.demo.demo_options`)."""
    from domains.driving.demo import demo_options as fn

    return fn()


def demo_name_tag(name: str) -> str | None:
    """Demo hook: the camera an uploaded file's original name says (:func:`domains.driving.demo.name_tag`)."""
    from domains.driving.demo import name_tag as fn

    return fn(name)


def demo_upload_help() -> str:
    """Demo hook: what to upload (:data:`domains.driving.demo.UPLOAD_HELP`)."""
    from domains.driving.demo import UPLOAD_HELP

    return UPLOAD_HELP


CONVERTERS = {"drivelm": convert_drivelm, "nuscenes": convert_nuscenes}

PLUGIN = DomainPlugin(
    name="driving",
    description="Autonomous driving: nuScenes six-camera rigs read through the nuscenes-devkit (2-D boxes projected "
                "per camera, frame sequences), DriveLM-nuScenes v1.1 QA on the Mini-InternVL stitched 2688x896 view "
                "or as six images with c-tags mapped exactly; a rendered synthetic nuScenes + DriveLM set.",
    readers={suffix: read_image_rgb for suffix in IMAGE_SUFFIXES},
    converters=CONVERTERS,
    metrics=METRICS,
    recipes=("driving_pocket-tiny_full",),
    synthetic=synthetic,
    demo_hooks={"read_upload": read_upload, "draw_answer": draw_answer, "options": demo_options,
                "name_tag": demo_name_tag, "upload_help": demo_upload_help},
)

__all__ = ["CONVERTERS", "IMAGE_SUFFIXES", "METRICS", "PLUGIN", "convert_drivelm", "convert_nuscenes", "draw_answer",
           "read_image_rgb", "read_upload", "synthetic"]
