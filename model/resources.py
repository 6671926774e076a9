"""Where packaged files live: `templates/` (chat templates, recipes, DeepSpeed configs) and model assets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def templates_dir() -> Path:
    """The installed `templates/` folder (the package `pocket_adapt_templates`), or the source tree's when the
    checkout runs uninstalled."""
    try:
        return Path(str(resources.files("pocket_adapt_templates")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "templates"


def assets_dir() -> Path:
    """Files shipped with the model package (the pocket-tiny tokenizer, the example image)."""
    return Path(__file__).resolve().parent / "assets"
