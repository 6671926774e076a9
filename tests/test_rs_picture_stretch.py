"""A JPEG / PNG given ``stretch=`` or ``nodata=`` has them applied to its stored values (they were dropped without a
word: the one image reader has neither), and still comes out upright by its EXIF orientation."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

require("rasterio")
from PIL import Image

from domains.remote_sensing.convert import convert_classification
from domains.remote_sensing.raster import iter_chips, read_image


def _png(path, data, orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(data, mode="RGB")
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


def _dull(h=8, w=12):
    return np.tile(np.linspace(100, 150, w).astype(np.uint8)[None, :, None], (h, 1, 3))


@pytest.mark.parametrize("stretch, first, last", [((0, 100), 0, 255), ("fixed:100,200", 0, 128)])
def test_a_stretch_is_applied_to_a_picture(tmp_path, stretch, first, last):
    path = _png(tmp_path / "a.png", _dull())
    plain = np.asarray(read_image(path)[0])
    assert plain[0, 0, 0] == 100  # auto: as stored
    out = np.asarray(read_image(path, stretch=stretch)[0])
    assert out[0, 0, 0] == first and out[0, -1, 0] == last


def test_nodata_masks_a_picture(tmp_path):
    data = _dull()
    data[:, :3] = 0
    image, valid = read_image(_png(tmp_path / "a.png", data), stretch=(0, 100), nodata=0)
    assert valid[:, :3].sum() == 0 and valid[:, 3:].all()
    assert np.asarray(image)[0, 3, 0] == 0  # the darkest valid pixel, not the fill, is the low end


def test_a_picture_read_with_options_stays_upright(tmp_path):
    data = _dull(8, 12)
    path = _png(tmp_path / "a.png", data, orientation=6)  # stored sideways: 12 wide, shown 8 wide
    plain = read_image(path)[0]
    image, valid = read_image(path, stretch=(0, 100))
    assert image.size == plain.size == (8, 12) and valid.shape == (12, 8)
    assert np.array_equal(np.argsort(np.asarray(image)[:, 0, 0], kind="stable"),
                          np.argsort(np.asarray(plain)[:, 0, 0], kind="stable"))


def test_the_classification_converter_stretches_its_pictures(tmp_path):
    for cls in ("forest", "sea"):
        _png(tmp_path / "raw" / cls / "a.png", _dull())
    convert_classification(tmp_path / "raw", tmp_path / "out", test_fraction=0, stretch=[0, 100], progress=False)
    out = np.asarray(Image.open(tmp_path / "out/images/ucmerced/forest/a.png"))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255


def test_the_demo_page_stretches_a_picture_as_chosen(tmp_path):
    from domains.remote_sensing.demo import read_upload

    path = _png(tmp_path / "upload-1.png", _dull(8, 12), orientation=6)
    plain = read_upload([path])
    assert plain["info"]["image 1 stretch"] == "none (an 8-bit image)"
    out = read_upload([path], stretch="min–max per band")
    assert out["images"][0].size == plain["images"][0].size == (8, 12)  # upright both ways
    assert np.asarray(out["images"][0]).min() == 0 and np.asarray(out["images"][0]).max() == 255
    assert out["info"]["image 1 stretch"].startswith("0–100 percentiles per band")
    assert out["info"]["image 1"] == "8 × 12 px, 3 bands (uint8)"


def test_a_picture_written_unstretched_under_the_same_options_is_rewritten(tmp_path):
    from domains.files import output_key, png_bytes, write_output

    src = _png(tmp_path / "raw" / "forest" / "a.png", _dull())
    _png(tmp_path / "raw" / "sea" / "a.png", _dull())
    old = tmp_path / "out/images/ucmerced/forest/a.png"  # as the reader that dropped the stretch left it
    old.parent.mkdir(parents=True)
    write_output(old, png_bytes(Image.open(src).convert("RGB"), output_key(bands=None, stretch=[0, 100], resize=None)),
                 src)
    convert_classification(tmp_path / "raw", tmp_path / "out", test_fraction=0, stretch=[0, 100], progress=False)
    assert np.asarray(Image.open(old))[0, 0, 0] == 0


@pytest.mark.parametrize("stretch, first, last", [((0, 100), 0, 255), ("fixed:100,200", 0, 128)])
def test_a_stretch_is_applied_to_a_paletted_picture_colours(tmp_path, stretch, first, last):
    # a mode P PNG reads as one paletted band: a stretch asked for applied to its colours, not dropped
    path = tmp_path / "p.png"
    Image.fromarray(_dull()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path)
    plain = np.asarray(read_image(path)[0])
    assert plain.min() >= 95 and plain.max() <= 155
    out = np.asarray(read_image(path, stretch=stretch)[0])
    assert out[0, 0, 0] == first and abs(int(out[0, -1, 0]) - last) <= 3
    chips = list(iter_chips(path, size=16, overlap=0, stretch=stretch))
    assert len(chips) == 1 and np.array_equal(np.asarray(chips[0].image), out)
