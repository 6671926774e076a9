"""An upload of more files than one question takes is refused before any file is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.deps import require

require("gradio")

from deploy.demo.hooks import hooks_for  # noqa: E402
from deploy.demo.panels.generic import read_files  # noqa: E402
from deploy.demo.uploads import UploadError  # noqa: E402
from model.limits import MAX_IMAGES  # noqa: E402

MB = 2**20


def pngs(folder: Path, n: int) -> list[Path]:
    for k in range(n):
        Image.new("RGB", (8, 8), (k, 0, 0)).save(folder / f"scan{k}.png")
    return sorted(folder.glob("*.png"))


def test_too_many_plain_images_are_refused_unread(tmp_path, monkeypatch):
    """Every file was decoded (each up to 50 MP) before the image count was checked: a few hundred small PNGs of
    huge blank images held many GB at once, then were refused anyway."""
    import deploy.demo.hooks as hooks

    reads: list[Path] = []
    monkeypatch.setattr(hooks, "read_image", lambda path, *a, **k: reads.append(path) or Image.new("RGB", (8, 8)))
    files = pngs(tmp_path, MAX_IMAGES + 1)
    with pytest.raises(UploadError) as err:
        read_files(files, hooks_for(None)[0], max_bytes=MB)
    assert reads == []
    assert f"holds {MAX_IMAGES + 1} files" in str(err.value) and f"at most {MAX_IMAGES}" in str(err.value)
    assert len(read_files(files[:MAX_IMAGES], hooks_for(None)[0], max_bytes=MB).images) == MAX_IMAGES


def test_too_many_rasters_are_refused_unread(tmp_path, monkeypatch):
    """The remote-sensing reader read every raster (GDAL, up to 50 MP each) before the count was checked."""
    require("rasterio")
    import domains.remote_sensing.raster as raster
    from domains.base import get_domain

    opened: list[Path] = []
    real = raster.reads_as_picture
    monkeypatch.setattr(raster, "reads_as_picture", lambda path, *a: opened.append(path) or real(path, *a))
    read = hooks_for(get_domain("remote_sensing"))[0]
    files = pngs(tmp_path, MAX_IMAGES + 1)
    with pytest.raises(UploadError) as err:
        read_files(files, read, max_bytes=MB)
    assert opened == []
    assert f"holds {MAX_IMAGES + 1} files" in str(err.value) and f"at most {MAX_IMAGES}" in str(err.value)
    assert len(read_files(files[:2], read, max_bytes=MB).images) == 2


def test_a_geotiff_pillow_cannot_open_says_which_domain_reads_it(tmp_path):
    """A 5-band GeoTIFF on the plain-image page was "not an image file ... (PNG, JPEG, WebP, TIFF, ...)": TIFF listed
    as readable, and nothing said the remote sensing domain reads it."""
    import numpy as np

    rasterio = require("rasterio")
    tif = tmp_path / "scene.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=8, height=6, count=5, dtype="uint16") as dst:
        dst.write(np.arange(5 * 6 * 8, dtype="uint16").reshape(5, 6, 8))
    with pytest.raises(UploadError) as err:
        read_files([tif], hooks_for(None)[0], max_bytes=MB)
    assert str(err.value).startswith("upload 1: not an image file") and "--domain remote_sensing" in str(err.value)
    garbage = tmp_path / "scan.png"
    garbage.write_bytes(b"not a picture")
    with pytest.raises(UploadError) as err:
        read_files([garbage], hooks_for(None)[0], max_bytes=MB)
    assert "remote_sensing" not in str(err.value)
