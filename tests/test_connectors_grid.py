"""Connectors that read the patch grid's geometry refuse a tower whose grid they cannot read when the model is built,
naming the grid: a 2x8 grid's 16 tokens would otherwise be read as 4x4, silently."""

from __future__ import annotations

import pytest
import torch
from transformers import InternVLVisionConfig, Qwen2Config

from model.errors import ModelConfigError
from model.projectors import QFormerProjector
from model.vlm import PocketVLM, PocketVLMConfig


def _config(projector: str, options: dict, image_size=(28, 112)) -> PocketVLMConfig:
    vision = InternVLVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                  image_size=list(image_size), patch_size=14)
    text = Qwen2Config(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                       num_key_value_heads=2)
    return PocketVLMConfig(vision_config=vision, text_config=text, projector_type=projector, projector_options=options)


@pytest.mark.parametrize("projector, options", [("resampler", {"num_queries": 4, "num_heads": 2}), ("ldpv2", {}),
                                                ("ldp", {}), ("pixel_shuffle_mlp", {})])
def test_a_non_square_grid_is_refused_at_build_naming_it(projector, options):
    with pytest.raises(ModelConfigError, match=rf"2x8 patch grid .* {projector} projector: .*square"):
        PocketVLM(_config(projector, options))


def test_a_connector_for_any_grid_still_builds_and_replacing_it_by_a_square_only_one_is_refused():
    torch.manual_seed(0)
    vlm = PocketVLM(_config("qformer", {"num_queries": 4, "num_heads": 4}))
    assert vlm.multi_modal_projector(torch.randn(1, 16, 32)).shape == (1, 4, 48)
    with pytest.raises(ModelConfigError, match="2x8 patch grid .* resampler projector"):
        vlm.replace_projector("resampler", {"num_queries": 4, "num_heads": 2})
    assert isinstance(vlm.multi_modal_projector, QFormerProjector) and vlm.config.projector_type == "qformer"


def test_a_square_grid_builds_the_resampler():
    vlm = PocketVLM(_config("resampler", {"num_queries": 4, "num_heads": 2}, image_size=(56, 56)))
    assert vlm.config.image_seq_length == 4
