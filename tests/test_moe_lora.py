"""LoRA on a MoE LLM: transformers 5 keeps the experts in fused parameters (`experts.gate_up_proj`), not Linear
modules, so LoRA leaves them frozen unless the targets name them (tests/test_moe_expert_lora.py); the run says so
once, naming what LoRA trains, instead of training less silently."""

from __future__ import annotations

import warnings

import pytest

from adapt.parts import PartsError, PartSetting, apply_parts
from model.presets import preset_config
from model.vlm import PocketVLM
from tests.test_moe_checkpoints import _moe_vlm


def _lora(vlm, targets=None, part="llm"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_parts(vlm, {part: PartSetting(mode="lora", targets=targets)})
    return [str(w.message) for w in caught if "MoE" in str(w.message)]


def test_lora_on_a_moe_llm_warns_that_the_experts_stay_frozen():
    (message,) = _lora(_moe_vlm())
    assert "mlp.experts.gate_up_proj" in message and "mlp.experts.down_proj" in message
    assert "mlp.gate" in message  # the router is no Linear either
    assert "q_proj" in message and "shared_expert.gate_proj" in message  # what LoRA does train
    assert "mode full" in message


def test_a_mixtral_llm_warns_too():
    (message,) = _lora(_moe_vlm("mixtral"))
    assert "mlp.experts.gate_up_proj" in message and "o_proj" in message


def test_a_dense_llm_does_not_warn():
    assert _lora(PocketVLM(preset_config("pocket-tiny-scratch"))) == []


def test_lora_on_a_vision_tower_does_not_warn():
    """The warning went by 3-D parameters, so LoRA on InternViT (position embeddings (1, patches, width), class token)
    warned that 'this MoE LM' kept its experts fused."""
    assert _lora(PocketVLM(preset_config("pocket-tiny-scratch")), part="vision") == []
    assert _lora(_moe_vlm(), part="vision") == []


def test_an_expert_target_with_the_default_dropout_is_an_error_saying_why():
    with pytest.raises(PartsError, match=r"gate_up_proj.*fused MoE expert parameters.*set lora.dropout: 0"):
        _lora(_moe_vlm(), targets=("q_proj", "gate_up_proj"))
