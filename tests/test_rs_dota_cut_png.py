"""A DOTA scene PNG cut short inside its pixel data was read by GDAL's PNG driver with the missing rows as zeros
and no error: the converter wrote chips of a half-black (or garbled) scene, with no word in the report. A chunk
running past the end of the file is now an unreadable image, named; a file that only lacks its IEND trailer is
judged by the one image reader, which decodes it whole."""

from __future__ import annotations

import pytest

from domains.base import SkipInput
from domains.remote_sensing.dota import _chip_pngs, convert_dota
from model.tiling import load_image
from tests.test_dota_strips import KEY, _scene
from tests.test_rs_dota import make_tree


def test_a_png_cut_inside_its_pixel_data_is_unreadable(tmp_path):
    path = tmp_path / "P0001.png"
    _scene(path, "RGB")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SkipInput) as exc:
        _chip_pngs(path, [(0, 0, 70, 90)], KEY, 10**6)  # the whole scene in one read: GDAL said nothing
    assert exc.value.reason == "unreadable image"
    assert "P0001.png: the image is damaged or truncated (its IDAT chunk" in exc.value.detail


def test_a_png_without_its_trailer_reads_as_the_one_reader_reads_it(tmp_path):
    path = tmp_path / "P0001.png"
    _scene(path, "RGB")
    path.write_bytes(path.read_bytes()[:-12])  # the IEND chunk alone
    whole = load_image(path)
    chips = _chip_pngs(path, [(0, 0, 70, 90)], KEY, 10**6)
    assert len(chips) == 1 and whole.size == (70, 90)


def test_the_converter_counts_the_cut_scene(tmp_path):
    src = make_tree(tmp_path / "train")
    make_tree(src, name="P0002")
    cut = src / "images" / "P0002.png"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    report = convert_dota(src, tmp_path / "out", progress=False)  # one 1024 px chip holds the scene: read whole
    (example,) = report.examples["unreadable image"]
    assert example.startswith("images/P0002.png: the image is damaged or truncated"), example
    assert report.written > 0 and not (tmp_path / "out" / "images" / "dota" / "P0002").exists()
