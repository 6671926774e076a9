"""Synthetic quick-start data: a general shapes world and a land-cover specialist domain (see ``world``)."""

from domains.base import DomainPlugin
from domains.general.world import (
    COLORS,
    GENERAL_TASKS,
    GROUNDING_OBJECTS,
    LANDCOVER_CLASSES,
    SHAPES,
    Sample,
    box_to_grid,
    general_samples,
    generate_general,
    generate_landcover,
    landcover_samples,
)

PLUGIN = DomainPlugin(
    name="general",
    description="Synthetic general shapes world (multiple choice over colour, shape, count, position) for "
                "mixing and the CPU quick start; the land-cover specialist set is generate_landcover.",
    recipes=("quickstart",),
    synthetic=generate_general,
)

__all__ = [
    "COLORS",
    "GENERAL_TASKS",
    "GROUNDING_OBJECTS",
    "LANDCOVER_CLASSES",
    "PLUGIN",
    "SHAPES",
    "Sample",
    "box_to_grid",
    "general_samples",
    "generate_general",
    "generate_landcover",
    "landcover_samples",
]
