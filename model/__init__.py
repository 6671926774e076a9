"""pocket-adapt model core: tiling, vision towers, projectors, the composite VLM and checkpoint layouts.

    from model import load
    vlm, processor = load("pocket-tiny")          # or a local checkpoint directory in any supported layout
"""

from .loading import load, save
from .presets import PRESETS, preset_config
from .processor import Encoded, SampleTooLongError, VLMProcessor
from .tiling import TilingConfig, tile_grid
from .vlm import ImageTokenMismatchError, PocketVLM, PocketVLMConfig

__all__ = [
    "Encoded",
    "ImageTokenMismatchError",
    "PRESETS",
    "PocketVLM",
    "PocketVLMConfig",
    "SampleTooLongError",
    "TilingConfig",
    "VLMProcessor",
    "load",
    "preset_config",
    "save",
    "tile_grid",
]
