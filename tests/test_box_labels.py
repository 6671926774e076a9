"""Box labels on grounding pictures: readable on every colour of the palette."""

from __future__ import annotations

import numpy as np
from PIL import Image

from domains.boxes import PALETTE, _luminance, draw_ref_boxes, text_colour


def _contrast(a, b) -> float:
    lo, hi = sorted((_luminance(a), _luminance(b)))
    return (hi + 0.05) / (lo + 0.05)


def test_every_palette_colour_gets_label_text_that_reads():
    """White text on the palette's cyan (1.4:1), orange (2.6:1) and green (2.7:1) was barely readable."""
    assert all(_contrast(c, text_colour(c)) >= 4.5 for c in PALETTE), [(c, _contrast(c, text_colour(c))) for c in PALETTE]


def test_the_label_on_the_cyan_box_is_drawn_dark():
    text = "".join(f"<ref>o{k}</ref><box>[[{k * 160 + 10}, 300, {k * 160 + 150}, 600]]</box>" for k in range(6))
    out = np.asarray(draw_ref_boxes(Image.new("RGB", (600, 300), (90, 90, 90)), text)).astype(int)
    x1, y1 = round(5 * 160 * 0.6 + 6), 90  # the sixth (cyan) box's left edge in pixels and its top (0-1000 grid)
    label = out[y1 - 14:y1 - 1, x1:x1 + 20]  # the label sits right above the box
    cyan = np.all(label == PALETTE[5], axis=-1)
    assert cyan.mean() > 0.3  # it is the cyan label
    assert (label.sum(axis=-1) < 150).any() and not (label.min(axis=-1) > 230).any()
