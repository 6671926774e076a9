"""Where packaged files live: `templates/` (chat templates, recipes, DeepSpeed configs) and model assets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def templates_dir() -> Path:
    """The installed (or source-tree) `templates/` folder."""
    return Path(str(resources.files("templates")))


def assets_dir() -> Path:
    """Files shipped with the model package (the pocket-tiny tokenizer, the example image)."""
    return Path(__file__).resolve().parent / "assets"
