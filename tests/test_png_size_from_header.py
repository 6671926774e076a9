"""upright_size reads a PNG's size and EXIF orientation from its chunks: Pillow's getexif() on a PNG decodes every
pixel (looking for an eXIf chunk after them), so a 20000 x 20000 scene was decoded whole before max_pixels refused it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from model.tiling import load_image, upright_size


def _late_exif_png(path: Path, orientation: int) -> None:
    """A 40 x 20 PNG with an eXIf chunk (orientation) after its pixel data, where Pillow looks only by decoding."""
    Image.new("RGB", (40, 20), (10, 20, 30)).save(path)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = exif.tobytes()[6:]  # without the "Exif\0\0" of JPEG's APP1
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data))
    raw = path.read_bytes()
    path.write_bytes(raw[:-12] + chunk + raw[-12:])  # before IEND


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = PngImagePlugin.PngImageFile.load

    def load(self):
        seen.append(self.filename)
        return real(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    return seen


def test_a_late_exif_orientation_is_read_without_decoding(tmp_path, decodes):
    path = tmp_path / "turned.png"
    _late_exif_png(path, 6)
    assert upright_size(path) == ((20, 40), 6)
    assert decodes == []
    assert load_image(path).size == (20, 40)  # as the one reader turns it


@pytest.mark.parametrize("exif", [None, "early"])
def test_plain_and_early_exif_pngs_are_not_decoded(tmp_path, decodes, exif):
    path = tmp_path / "plain.png"
    extra = {}
    if exif:
        e = Image.Exif()
        e[0x0112] = 8
        extra["exif"] = e
    Image.new("RGB", (40, 20)).save(path, **extra)
    assert upright_size(path) == (((20, 40), 8) if exif else ((40, 20), 1))
    assert decodes == []
