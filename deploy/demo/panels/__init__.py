"""Demo panels: one module per domain that needs its own controls; the generic panel for all others.

A panel module has ``title(plugin) -> str`` and ``build(session, plugin, settings)``, called inside a ``gr.Blocks``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING

from deploy.demo.page import REPEATED_NOTE, ask_failed_md, failed_md, notice_md

if TYPE_CHECKING:
    from PIL import Image

    from deploy.demo.session import ModelSession

__all__ = ["OWN_PANELS", "has_own_panel", "panel_for", "stream_and_draw"]

# domain name -> module of its own panel
OWN_PANELS: dict[str, str] = {"medical": "deploy.demo.panels.medical"}


def has_own_panel(domain: str) -> bool:
    return domain in OWN_PANELS


def panel_for(domain: str | None) -> ModuleType:
    """The panel module for `domain` (the generic one unless the domain has its own)."""
    return importlib.import_module(OWN_PANELS.get(domain or "general", "deploy.demo.panels.generic"))


def stream_and_draw(session: ModelSession, question: str, images: list[Image.Image], prompt: str | None,
                    draw: Callable[[list[Image.Image], str], list], marks: str
                    ) -> Iterator[tuple[str, list[Image.Image] | None, str]]:
    """Yield ``(answer so far, None, "")`` while `session` answers `question` on `images`, then ``(answer, drawn
    images, notice)``: ``draw(images, answer)``, none without images, or the images undrawn with a notice naming the
    `marks` that could not be drawn. A failed question or generation ends with ``(answer so far, None, notice)``.
    The notice is page markdown, or "" when all went well (a looping answer cut is noted)."""
    text = ""
    try:
        for text in session.stream(question, images, prompt=prompt):
            yield text, None, ""
    except Exception as exc:
        yield text, None, ask_failed_md(exc)
        return
    note = notice_md(REPEATED_NOTE) if getattr(text, "repeated", False) else ""
    if not images:
        yield text, [], note
        return
    try:
        drawn = list(draw(images, text))
    except Exception as exc:  # a drawing bug must not hide the answer
        yield text, list(images), failed_md(exc, f"The answer is shown, but its {marks} could not be drawn",
                                            "drawing the answer")
        return
    yield text, drawn, note
