"""A dynamic tiling without a thumbnail (`tiling.thumbnail: false`, more than one tile): every export whose other
reader always adds a thumbnail after an image's tiles (hf: transformers' GotOcr2 processor; gguf: llama.cpp's own
InternVL preprocessing) says so with one warning (`model.tiling.warn_if_thumbnail_added`); the others record the
setting and say nothing."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

import model
from model.tiling import TilingConfig

from .deps import require

SAID = "this model tiles images without a thumbnail (tiling.thumbnail false), but "


def _without_thumbnail(max_tiles: int = 6):
    vlm, processor = model.load("pocket-tiny-scratch")
    tiling = dataclasses.replace(processor.tiling, thumbnail=False, max_tiles=max_tiles)
    vlm.config.tiling = tiling.to_dict()
    processor.tiling = tiling
    return vlm, processor


def _export_warnings(fmt: str, tmp_path, max_tiles: int = 6, **options) -> list[str]:
    from deploy.hf import export

    vlm, processor = _without_thumbnail(max_tiles)
    if fmt == "internvl":  # a template InternVL's code has (pocket-tiny's is pocket-adapt's own)
        vlm.config.chat_template = "Hermes-2"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(vlm, processor, fmt, tmp_path / fmt, **options)
    return [str(w.message) for w in caught if SAID in str(w.message)]


def test_the_hf_export_warns_once_and_not_when_no_thumbnail_could_be_added(tmp_path):
    """The hf export warned for any tiling without a thumbnail, one tile at most included (which never has one)."""
    said = _export_warnings("hf", tmp_path)
    assert len(said) == 1 and "transformers' InternVL image processor (GotOcr2) always adds one" in said[0], said
    assert _export_warnings("hf", tmp_path / "one", max_tiles=1) == []


def test_the_gguf_export_warns_as_the_hf_export_does(tmp_path):
    """The mmproj records the tile counts only, and llama.cpp's InternVL preprocessing always adds a thumbnail: the
    gguf export said nothing, and llama-mtmd-cli saw another tiling than training's."""
    require("gguf", "the deploy extra: GGUF export")
    said = _export_warnings("gguf", tmp_path, qtype="f32", name="m")
    assert len(said) == 1 and said[0].startswith(SAID + "llama.cpp's own InternVL preprocessing"), said


@pytest.mark.parametrize("fmt", ["internvl", "pocket"])
def test_formats_that_record_the_thumbnail_setting_do_not_warn(fmt, tmp_path):
    assert _export_warnings(fmt, tmp_path) == []


def test_the_tensorrt_readme_describes_the_tiling_without_a_thumbnail():
    """The bundle README said the host adds a thumbnail whatever the tiling said."""
    from deploy.tensorrt_readme import _cutting

    assert "no thumbnail" in _cutting(TilingConfig(thumbnail=False).to_dict())
    assert "a thumbnail when there is more than one tile" in _cutting(TilingConfig().to_dict())
