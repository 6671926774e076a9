"""TensorRT bundle: every prompt layout the profiles serve (six camera views as six images, the most-tiles
multi-image prompt, the stitched view) must fit TensorRT-LLM's max_input_len, counted as the processor encodes it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from .deps import require

require("onnx", "the deploy extra: ONNX export")

import model  # noqa: E402
from adapt.recipe import load_recipe  # noqa: E402
from deploy import tensorrt  # noqa: E402
from deploy.tensorrt import TensorRTExportError, layouts, prompt_lengths  # noqa: E402

DRIVING = Path(__file__).resolve().parents[1] / "templates/recipes/driving_pocket-tiny_full.yaml"


def test_prompt_lengths_count_every_image_of_a_layout():
    """Six 1600x900 views share max_tiles 12 (2 + thumbnail each): 18 x 16 image tokens plus six images' framing and
    the question, more than the one stitched image's 13 x 16 + text."""
    _, processor = model.load("pocket-tiny")
    tiling = load_recipe(DRIVING).tiling_for(processor.tiling)
    found = {x.name: x for x in layouts(processor, tiling, 6)}
    lengths = prompt_lengths(processor, list(found.values()), tiling)
    six, stitched = lengths["driving_six_views"], lengths["driving_stitched"]
    assert found["driving_six_views"].tiles == 18 and six > 18 * processor.image_seq_length
    assert stitched == 250 and six - 18 * 16 > stitched - 13 * 16  # six images carry more framing than one


def test_a_six_view_prompt_longer_than_max_input_len_is_refused_before_the_export(tmp_path, monkeypatch):
    """max_position_embeddings 400, 64 new tokens: max_input_len 336 holds the 288 image tokens of six views and the
    250-token stitched reference prompt, but not the six-view prompt itself (image tokens + framing + question):
    refused up front, naming the layout and the numbers, instead of a bundle whose engines cannot take it."""
    def reached(*args, **kwargs):
        raise AssertionError("the export started: the six-view prompt's length was not checked")

    monkeypatch.setattr(tensorrt, "write_onnx", reached)
    vlm, processor = model.load("pocket-tiny")
    vlm = copy.deepcopy(vlm)
    vlm.config.text_config.max_position_embeddings = 400
    tiling = load_recipe(DRIVING).tiling_for(processor.tiling)
    six = prompt_lengths(processor, layouts(processor, tiling, 6), tiling)["driving_six_views"]
    with pytest.warns(UserWarning, match="max_position_embeddings 400"), \
            pytest.raises(TensorRTExportError, match=rf"layout driving_six_views \(6 image\(s\), 18 tiles = 288 image "
                          rf"tokens, with the question {six} tokens\) is longer than max_input_len 336 \(max_seq_len "
                          rf"400 - max_new_tokens 64; max_position_embeddings 400\)"):
        tensorrt.write_tensorrt(vlm, processor, tmp_path, tiling=tiling, max_images=6, max_new_tokens=64)
