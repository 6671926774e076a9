"""pocket-adapt model core: tiling, vision towers, projectors, the composite VLM and checkpoint layouts.

    from model import load
    vlm, processor = load("pocket-tiny")          # or a local checkpoint directory in any supported layout
"""

import importlib
import logging

# Loggers whose messages a user can neither act on nor needs: torchao's note that its optional CUDA kernels do not
# load on this machine, and the torch deprecation warnings torchao's import triggers (transformers imports torchao
# when it is installed, as the executorch extra does). Quieted on import unless the application set their level.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")
for _name in QUIET_LOGGERS:
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.ERROR)
del _name

# Imported on first use (PEP 562), so `import model.errors` -- which every package's error classes do -- stays
# light: the names below pull in torch and transformers.
_EXPORTS = {
    "load": "loading", "save": "loading", "PRESETS": "presets", "preset_config": "presets",
    "Encoded": "processor", "SampleTooLongError": "processor", "VLMProcessor": "processor",
    "TilingConfig": "tiling", "tile_grid": "tiling",
    "ImageTokenMismatchError": "vlm", "PocketVLM": "vlm", "PocketVLMConfig": "vlm",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

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
