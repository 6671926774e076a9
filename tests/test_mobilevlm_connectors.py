"""MobileVLM checkpoints read as MobileVLM computes them, and connector options refused where they are written."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig

from model.checkpoints.mobilevlm import config_from_mobilevlm
from model.projectors import build_projector

from .test_checkpoints import ldpv2_reference


def mobilevlm_raw(tower: str, projector: str = "ldpnetv2") -> dict:
    return {"architectures": ["MobileLlamaForCausalLM"], "model_type": "mobilevlm", "vocab_size": 64, "hidden_size": 16,
            "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
            "mm_hidden_size": 8, "mm_projector_type": projector, "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch", "mm_vision_tower": tower, "vision_tower_type": "clip",
            "image_aspect_ratio": "pad"}


@pytest.mark.parametrize("image_size", [224, 336, 448])
def test_a_v2_checkpoint_pools_to_mobilevlms_fixed_12x12_whatever_its_towers_grid(tmp_path, image_size):
    # LDPNetV2Projector's TokenDownLayer((12, 12)) pools any tower's grid to 144 tokens (mobilevlm.md §2); half the
    # grid is the same only for CLIP-L/336's 24x24
    tower = tmp_path / "tower"
    CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                     image_size=image_size, patch_size=14).save_pretrained(str(tower))
    config = config_from_mobilevlm(mobilevlm_raw(str(tower)), tmp_path, image_token_id=64)
    assert config.image_seq_length == 144
    projector = build_projector(config.projector_type, 8, 16, **config.projector_options)
    side = image_size // 14
    torch.manual_seed(0)
    for p in projector.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, side * side, 8)
    weights = {f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()}
    torch.testing.assert_close(projector(x), ldpv2_reference(x, weights))


def test_a_v1_checkpoint_keeps_ldps_stride_2_count(tmp_path):
    tower = tmp_path / "tower"
    CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                     image_size=224, patch_size=14).save_pretrained(str(tower))
    config = config_from_mobilevlm(mobilevlm_raw(str(tower), "ldpnet"), tmp_path, image_token_id=64)
    assert (config.projector_type, config.image_seq_length) == ("ldp", 64)  # 16x16 -> stride-2 conv -> 8x8

