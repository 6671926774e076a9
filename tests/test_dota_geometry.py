"""DOTA quadrilateral geometry (the chip clip against exact areas, crossing quads) and the pixel cap on huge scenes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from domains.base import ConvertReport
from domains.remote_sensing import dota
from domains.remote_sensing.dota import _area, _clip, convert_dota, read_dota_labels
from tests.test_rs_dota import make_tree

SQUARE = [(10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)]
DIAMOND = [(200.0, 10.0), (230.0, 40.0), (200.0, 70.0), (170.0, 40.0)]  # area 1800
DART = [(0.0, 0.0), (10.0, 5.0), (0.0, 10.0), (3.0, 5.0)]  # concave at (3, 5): triangle 50 less triangle 15


@pytest.mark.parametrize("poly, window, area", [
    (SQUARE, (0, 0, 100, 100), 100),  # wholly inside
    (SQUARE, (15, 0, 100, 100), 50),  # half
    (SQUARE, (15, 15, 100, 100), 25),  # over a corner
    (SQUARE, (20, 0, 100, 100), 0),  # touching the chip's left edge from outside
    (SQUARE, (10, 10, 20, 20), 100),  # exactly the chip
    (SQUARE, (30, 30, 40, 40), 0),  # nowhere near
    (DIAMOND, (100, 0, 228, 128), 1796),  # a 2 px tip (base 4) cut off
    (DIAMOND, (200, 0, 328, 128), 900),  # through its middle
    (DART, (0, 0, 5, 10), 22.5),  # concave: x <= 5 of the outer triangle (37.5) less the notch (15)
    (DART, (3, 0, 10, 10), 24.5),  # right of the notch's tip: the outer triangle's x >= 3 part, less nothing
    (list(reversed(DART)), (0, 0, 5, 10), 22.5),  # counter-clockwise as clockwise
])
def test_clip_gives_exact_areas(poly, window, area):
    assert _area(_clip(poly, *window)) == pytest.approx(area, abs=1e-9)


def test_zero_area_and_crossing_quads_are_malformed(tmp_path):
    path = tmp_path / "P0001.txt"
    path.write_text("0 0 10 0 20 0 30 0 plane 0\n"  # on one line
                    "5 5 5 5 5 5 5 5 plane 0\n"  # a point
                    "0 0 10 10 10 0 0 10 plane 0\n"  # corners out of order: a symmetric bow tie (area 0)
                    "0 0 10 10 10 0 0 5 plane 0\n"  # an uneven bow tie: the shoelace gives 25, not its 37.5
                    "0 0 10 0 10 10 0 10 plane 0\n", encoding="utf-8")
    report = ConvertReport(dataset="dota", source=tmp_path, out=tmp_path, max_examples=10)
    objects, _ = read_dota_labels(path, report)
    assert [o.line for o in objects] == [5]
    assert report.skipped == {"malformed label line": 4}
    assert "P0001.txt:4: the quadrilateral crosses itself" in report.examples["malformed label line"][3]


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header says `width` x `height` (RGB) with next to no pixel data: never decodable, cheap to refuse."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_dota_v2_size_scene_is_refused_from_its_header(tmp_path, monkeypatch):
    """DOTA v2.0 has 20000 x 20000 scenes: above max_pixels (and PIL's bomb limit) they are skipped by name with size
    and limit before a pixel is decoded; the limit is the one the option sets (to the pixel)."""
    src = make_tree(tmp_path / "dota")
    _png_header(src / "images" / "P0001.png", 20000, 20000)

    def refuse(*_a, **_k):
        raise AssertionError("decoded an image above max_pixels")

    monkeypatch.setattr(dota, "_chip_pngs", refuse)
    report = convert_dota(src, tmp_path / "out", progress=False)
    assert report.skipped == {"image too large": 1}
    assert report.examples["image too large"] == [
        "images/P0001.png: 20000x20000 = 400,000,000 pixels, above max_pixels 50,000,000; pass --option "
        "max_pixels=N to read it (read in strips of 1024 rows, 59 MiB each)"]
    small = make_tree(tmp_path / "small")  # 300 x 200
    assert convert_dota(small, tmp_path / "o1", max_pixels=59_999, progress=False).skipped == {"image too large": 1}
    monkeypatch.undo()
    assert convert_dota(small, tmp_path / "o2", max_pixels=60_000, progress=False).written > 0


def test_absurd_chip_grids_are_refused_before_cutting(tmp_path, monkeypatch):
    """Every chip of an image is held until the negatives are picked: size 2 / overlap 1 on a 300 x 200 scene made
    59,501 chips (a 7000 px scene: 49 M), now an image skipped with the count and a way out."""
    monkeypatch.setattr(dota, "MAX_CHIPS", 1000)
    src = make_tree(tmp_path / "dota")
    report = convert_dota(src, tmp_path / "out", size=2, overlap=1, progress=False)
    assert report.skipped == {"too many chips": 1}
    assert "300x200 in 2 px chips 1 px apart makes 59,501 chips, above 1,000" in report.examples["too many chips"][0]
    assert convert_dota(src, tmp_path / "out", size=64, overlap=0, progress=False).written > 0  # 5 x 4 chips
