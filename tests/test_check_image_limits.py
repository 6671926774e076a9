"""domains.files.check_image (the converters' image check) is the one image reader's (model.tiling.load_image): it
refuses from the header what that reader refuses: above tiling.max_pixels, also above PIL's bomb limit (a
DecompressionBombError traceback ended the whole conversion), and EPS (Pillow decodes it by running Ghostscript)."""

import re
from pathlib import Path

import pytest
from PIL import Image

from domains.base import SkipInput
from domains.files import check_image
from model.limits import DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("size", [(10_000, 6_000), (20_000, 10_000)])  # the second above PIL's own bomb limit too
def test_a_huge_image_is_a_skip_naming_it(tmp_path: Path, size):
    """Refused from the header in the one reader's words, whatever PIL's global limit (a library may change it)."""
    needle = "above the limit of 50,000,000 (tiling.max_pixels)"
    assert size[0] * size[1] > DEFAULT_MAX_PIXELS
    path = tmp_path / "scan.jpg"  # a PNG under a .jpg name, as downloads have
    Image.new("1", size).save(path, format="PNG")  # 1 bit per pixel: a few MB to make, a few KB on disk
    with pytest.raises(SkipInput, match=re.escape(needle)) as info:
        check_image(path)
    assert info.value.reason == "unreadable image" and str(path) in info.value.detail


def test_eps_is_never_decoded(tmp_path: Path):
    path = tmp_path / "scan.jpg"
    Image.new("RGB", (8, 8)).save(path, format="EPS")
    with pytest.raises(SkipInput, match="PostScript") as info:
        check_image(path)
    assert info.value.reason == "unreadable image"


def test_the_size_is_the_upright_one_training_reads(tmp_path: Path):
    """A phone photo stored sideways (EXIF orientation 6): load_image turns it upright, so its record's size must be
    the turned one."""
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30)).save(path, exif=exif)
    assert check_image(path) == (30, 40)


def test_an_ordinary_image_still_passes(tmp_path: Path):
    path = tmp_path / "ok.png"
    Image.new("RGB", (40, 30)).save(path)
    assert check_image(path) == (40, 30)
