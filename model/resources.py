"""Where packaged files live: `templates/` (chat templates, recipes, DeepSpeed configs) and model assets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def templates_dir() -> Path:
    """The `templates/` folder of the source checkout this code runs from (its `pyproject.toml` beside it), else the
    installed one (the package `pocket_adapt_templates`). The checkout comes first: an editable install points
    `pocket_adapt_templates` at the checkout it was made from, not at another worktree run with its `.venv`."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "templates").is_dir():
        return checkout / "templates"
    return Path(str(resources.files("pocket_adapt_templates")))


def assets_dir() -> Path:
    """Files shipped with the model package (the pocket-tiny tokenizer, the example image)."""
    return Path(__file__).resolve().parent / "assets"
