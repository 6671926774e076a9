"""domains.files.check_image (the medical converters' image check) refuses from the header what the one image reader
refuses: above tiling.max_pixels, above PIL's bomb limit (a DecompressionBombError traceback ended the whole
conversion), and EPS (Pillow decodes it by running Ghostscript)."""

import re
from pathlib import Path

import pytest
from PIL import Image

from domains.base import SkipInput
from domains.files import check_image
from model.limits import DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("size, needle", [((10_000, 6_000), "above the limit of 50,000,000 (tiling.max_pixels)"),
                                          ((20_000, 10_000), "too many pixels to decode safely")])
def test_a_huge_image_is_a_skip_naming_it(tmp_path: Path, size, needle):
    assert size[0] * size[1] > DEFAULT_MAX_PIXELS
    path = tmp_path / "scan.jpg"  # a PNG under a .jpg name, as downloads have
    Image.new("1", size).save(path, format="PNG")  # 1 bit per pixel: a few MB to make, a few KB on disk
    with pytest.raises(SkipInput, match=re.escape(needle)) as info:
        check_image(path)
    assert info.value.reason == "unreadable image" and str(path) in info.value.detail


def test_eps_is_never_decoded(tmp_path: Path):
    path = tmp_path / "scan.jpg"
    Image.new("RGB", (8, 8)).save(path, format="EPS")
    with pytest.raises(SkipInput, match="PostScript"):
        check_image(path)


def test_an_ordinary_image_still_passes(tmp_path: Path):
    path = tmp_path / "ok.png"
    Image.new("RGB", (40, 30)).save(path)
    assert check_image(path) == (40, 30)
