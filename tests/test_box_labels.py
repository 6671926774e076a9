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
    ratios = {c: round(_contrast(c, text_colour(c)), 2) for c in PALETTE}
    assert min(ratios.values()) >= 4.5, ratios


def test_the_label_on_the_cyan_box_is_drawn_dark():
    text = "".join(f"<ref>o{k}</ref><box>[[{k * 160 + 10}, 300, {k * 160 + 150}, 600]]</box>" for k in range(6))
    out = np.asarray(draw_ref_boxes(Image.new("RGB", (600, 300), (90, 90, 90)), text)).astype(int)
    x1, y1 = round(5 * 160 * 0.6 + 6), 90  # the sixth (cyan) box's left edge in pixels and its top (0-1000 grid)
    label = out[y1 - 14:y1 - 1, x1:x1 + 20]  # the label sits right above the box
    cyan = np.all(label == PALETTE[5], axis=-1)
    assert cyan.mean() > 0.3  # it is the cyan label
    assert (label.sum(axis=-1) < 150).any() and not (label.min(axis=-1) > 230).any()


def _outline(img: Image.Image, text: str, x: int, y: int) -> int:
    """How many pixels thick the drawn outline is, going right from (x, y) on the box's left edge."""
    row = np.asarray(draw_ref_boxes(img, text))[y, x:x + 100]
    return int(np.all(row == PALETTE[0], axis=-1).sum())


def test_box_outline_scales_with_the_image():
    """A 3 px outline on a 4000x3000 aerial scene is under one screen pixel once the picture is shown 1000 px wide."""
    text = "<ref>ship</ref><box>[[250, 250, 750, 750]]</box>"
    assert _outline(Image.new("RGB", (4000, 3000), (90, 90, 90)), text, 1000, 1500) == 10
    assert _outline(Image.new("RGB", (400, 200), (90, 90, 90)), text, 100, 100) == 3  # small images as before
    thin = np.asarray(draw_ref_boxes(Image.new("RGB", (4000, 3000)), text, width=2))  # an explicit width stands
    assert thin[1500, 1000:1010].any(axis=-1).sum() == 2
