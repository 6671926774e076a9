"""DOTA chips are cut from a PNG read in full-width strips no taller than a chip, never from the whole decoded scene,
and come out byte for byte as from the one image reader; other images still go through that reader."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.io
from PIL import Image
from rasterio.env import get_gdal_config

from domains.base import SkipInput
from domains.files import output_key
from domains.remote_sensing import dota
from domains.remote_sensing.dota import _chip_pngs, chip_starts, convert_dota
from domains.remote_sensing.raster import CHIP_CACHE_MIN
from model.tiling import load_image
from tests.test_png_size_from_header import _late_exif_png
from tests.test_rs_dota import make_tree

KEY = output_key(dota_chip=1)


def _windows(w: int, h: int, size: int, step: int) -> list[tuple[int, int, int, int]]:
    return [(c, r, c + min(size, w), r + min(size, h)) for r in chip_starts(h, size, step)
            for c in chip_starts(w, size, step)]


def _scene(path, mode: str, **save) -> None:
    rng = np.random.default_rng(1)
    bands = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2, "P": 1, "I;16": 1}[mode]
    data = rng.integers(0, 255 if mode != "I;16" else 65535, (90, 70, bands)).astype(
        np.uint16 if mode == "I;16" else np.uint8)
    img = Image.fromarray(data[..., 0] if bands == 1 else data, mode=None if mode != "P" else "L")
    if mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=40)
    elif mode == "I;16":
        img = Image.fromarray(data[..., 0])
    img.save(path, **save)


@pytest.mark.parametrize("mode, save", [("RGB", {}), ("RGBA", {}), ("L", {}), ("LA", {}), ("P", {}),
                                        ("I;16", {}), ("RGB", {"interlace": 1}), ("RGB", {"optimize": True})])
def test_chips_match_the_one_image_reader(tmp_path, mode, save):
    path = tmp_path / "P0001.png"
    _scene(path, mode, **save)
    windows = _windows(70, 90, 32, 20)[::-1]  # any order: each chip lands in its own place
    whole = load_image(path)
    assert _chip_pngs(path, windows, KEY, 10**6) == [dota.png_bytes(whole.crop(w), KEY) for w in windows]


def test_an_exif_turned_png_is_cut_upright(tmp_path):
    path = tmp_path / "P0001.png"
    _late_exif_png(path, 6)  # 40 x 20 stored, 20 x 40 upright
    windows = _windows(20, 40, 16, 8)
    whole = load_image(path)
    assert _chip_pngs(path, windows, KEY, 10**6) == [dota.png_bytes(whole.crop(w), KEY) for w in windows]


def test_a_png_scene_is_never_held_whole(tmp_path, monkeypatch):
    """The rows held are at most a chip's height: max_pixels raised for a v2.0 scene costs a strip, not the scene."""
    src = make_tree(tmp_path / "dota", size=(300, 200))
    heights, caches, real_read = [], set(), rasterio.io.DatasetReader.read

    def read(self, *args, window=None, **kwargs):
        heights.append(int(window.height))
        caches.add(int(get_gdal_config("GDAL_CACHEMAX")))  # GDAL's default (5 % of RAM) would keep every row read
        return real_read(self, *args, window=window, **kwargs)

    def refuse(*_a, **_k):
        raise AssertionError("decoded the whole scene")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    monkeypatch.setattr(dota, "load_image", refuse)
    report = convert_dota(src, tmp_path / "out", size=64, overlap=16, negatives=100, progress=False)
    assert report.written > 0 and heights and max(heights) <= 64
    assert sum(heights) <= 200  # each row decoded once, top to bottom
    assert caches == {CHIP_CACHE_MIN}
    monkeypatch.undo()
    whole = np.asarray(Image.open(src / "images" / "P0001.png").convert("RGB"))
    for chip in (tmp_path / "out").rglob("*_x*_y*_*x*.png"):
        col, row = (int(v[1:]) for v in chip.stem.split("_")[-3:-1])
        assert np.array_equal(np.asarray(Image.open(chip)), whole[row:row + 64, col:col + 64])


def test_a_truncated_png_is_an_unreadable_image(tmp_path):
    path = tmp_path / "P0001.png"
    _scene(path, "RGB")
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(SkipInput) as exc:
        _chip_pngs(path, _windows(70, 90, 32, 20), KEY, 10**6)
    assert exc.value.reason == "unreadable image" and "P0001.png" in exc.value.detail


def test_the_warnings_lock_is_not_held_while_strips_are_read(tmp_path, monkeypatch):
    """`model.quiet.ignoring`'s lock, shared by every reader's thread, was held over the whole strip read: another
    thread's image open waited for the length of a big scene."""
    import threading

    from model import quiet

    path = tmp_path / "P0001.png"
    _scene(path, "RGB")
    free, real_read = [], rasterio.io.DatasetReader.read

    def take() -> None:  # what another thread opening an image does first
        free.append(quiet._LOCK.acquire(timeout=0.2))
        if free[-1]:
            quiet._LOCK.release()

    def read(self, *args, **kwargs):
        other = threading.Thread(target=take)
        other.start()
        other.join()
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    assert len(_chip_pngs(path, _windows(70, 90, 32, 20), KEY, 10**6)) == 12
    assert free and all(free)
