"""Checkpoint layouts: one module per public layout, plus our own (`save_pretrained` of PocketVLM)."""

from .io import CheckpointError
from .layouts import LAYOUTS, detect_layout

__all__ = ["CheckpointError", "LAYOUTS", "detect_layout"]
