"""Synthetic quick-start data: a general shapes world and a land-cover specialist domain (see ``world``)."""

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

__all__ = [
    "COLORS",
    "GENERAL_TASKS",
    "GROUNDING_OBJECTS",
    "LANDCOVER_CLASSES",
    "SHAPES",
    "Sample",
    "box_to_grid",
    "general_samples",
    "generate_general",
    "generate_landcover",
    "landcover_samples",
]
