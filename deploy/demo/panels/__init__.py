"""Demo panels: one module per domain that needs its own controls; the generic panel for all others.

A panel module has ``title(plugin) -> str`` and ``build(session, plugin, settings)``, called inside a ``gr.Blocks``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["OWN_PANELS", "has_own_panel", "panel_for"]

# domain name -> module of its own panel
OWN_PANELS: dict[str, str] = {"medical": "deploy.demo.panels.medical"}


def has_own_panel(domain: str) -> bool:
    return domain in OWN_PANELS


def panel_for(domain: str | None) -> ModuleType:
    """The panel module for `domain` (the generic one unless the domain has its own)."""
    return importlib.import_module(OWN_PANELS.get(domain or "general", "deploy.demo.panels.generic"))
