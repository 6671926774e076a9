"""A re-run of a whole-image converter that re-uses its PNGs reports the same GeoTIFF notes (RGB guessed, zeros
taken as data) without opening each GeoTIFF again: the PNG made from a GeoTIFF stores its read's notes, with the
source's path left out; a PNG made before it stored them falls back to looking at the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tests.deps import require

rasterio = require("rasterio")
from PIL import Image

from domains.files import png_bytes, stored_key
from domains.remote_sensing import raster
from domains.remote_sensing.convert import NOTES_CHUNK, convert_classification
from domains.remote_sensing.raster import GUESSED_RGB, ZERO_FILL
from tests.test_rs_convert import write_tif


def _scenes(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for k in range(2):
        write_tif(root / "farm" / f"bgrn_{k}.tif", rng.integers(1, 4000, (4, 16, 16)).astype(np.uint16))
    edge = rng.integers(1, 4000, (3, 16, 16)).astype(np.uint16)
    edge[:, :, :12] = 0  # a zero-filled edge without a nodata value
    write_tif(root / "city" / "edge.tif", edge)
    return root


def test_a_rerun_reports_stored_notes_without_opening_the_geotiffs(tmp_path, monkeypatch):
    src, out = _scenes(tmp_path / "scenes"), tmp_path / "out"
    first = convert_classification(src, out, test_fraction=0, progress=False)
    assert first.warnings == {GUESSED_RGB: 2, ZERO_FILL: 1}
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 3 and all(str(src).encode() not in p.read_bytes() for p in pngs)
    looked = []
    real = raster.image_notes
    monkeypatch.setattr(raster, "image_notes", lambda path, *a, **k: looked.append(path) or real(path, *a, **k))
    again = convert_classification(src, out, test_fraction=0, progress=False)
    assert looked == [] and again.written == 3
    assert again.warnings == first.warnings and again.warning_examples == first.warning_examples

    # an output made before notes were stored (same key and source time: fresh) is looked at, as before
    old = next(p for p in pngs if p.parent.name == "city")
    stat = old.stat()
    with Image.open(old) as im:
        assert NOTES_CHUNK in im.info
        old.write_bytes(png_bytes(im.convert("RGB"), stored_key(old)))
    os.utime(old, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = convert_classification(src, out, test_fraction=0, progress=False)
    assert [Path(p).name for p in looked] == ["edge.tif"] and third.warnings == first.warnings
    with Image.open(old) as im:
        assert NOTES_CHUNK not in im.info
