"""The demo's default hooks for a plugin that brings only some of its own."""

from __future__ import annotations

from types import SimpleNamespace

from PIL import Image

from domains.boxes import PALETTE


def test_default_drawing_ignores_the_page_options_of_a_plugin_without_its_own_drawing():
    """A plugin with an ``options`` hook but no ``draw_answer``: the page passes its options to the default
    drawing, which handed them to draw_ref_boxes (TypeError), so no answer's boxes were ever drawn."""
    from deploy.demo.hooks import hooks_for

    plugin = SimpleNamespace(name="thirdparty", readers={}, demo_hooks={
        "options": lambda: {"gain": {"choices": ["1", "2"], "default": "1", "label": "gain"}}})
    _read, draw = hooks_for(plugin)
    (out,) = draw([Image.new("RGB", (100, 100), (0, 0, 0))], "<ref>a</ref><box>[[100, 500, 900, 900]]</box>", gain="2")
    assert out.getpixel((10, 70)) == PALETTE[0]
