"""The remote-sensing demo's note on how a picture was read opens its header once, through the one image reader's
open: a palette picture above PIL's decompression-bomb limit (a user who raised ``max_pixels``) is described, not a
raw DecompressionBombError, and PIL's warning below the limit is not logged."""

from __future__ import annotations

import warnings

from PIL import Image

from domains.remote_sensing.demo import _picture_how


def _palette_png(path, colour: bool):
    image = Image.new("P", (40, 40))
    entries = [(200, 30, 30), (30, 200, 30)] if colour else [(10, 10, 10), (90, 90, 90)]
    image.putpalette([v for entry in entries for v in entry])
    image.save(path)
    return path


def test_a_palette_picture_past_pils_limit_is_described(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x40 = 1600 px: past twice the limit, PIL refuses
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _picture_how(_palette_png(tmp_path / "c.png", colour=True))[0] == "red, green, blue as stored"
        assert _picture_how(_palette_png(tmp_path / "g.png", colour=False))[0] == "one band as grey"
