"""A MoE LLM (transformers 5 fuses its experts into `experts.gate_up_proj` / `experts.down_proj`) through
`model.save` / `model.load`, and the per-expert layout public Qwen2-MoE / Mixtral checkpoints are stored in."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
from model.checkpoints.io import CheckpointError
from model.presets import preset_config
from model.vlm import PocketVLM

IDS = torch.tensor([[20, 30, 40, 50, 60, 70]])


def _moe_vlm(kind: str = "qwen2_moe", experts: int = 4) -> PocketVLM:
    from transformers import MixtralConfig, Qwen2MoeConfig

    config = preset_config("pocket-tiny-scratch")
    old = config.text_config
    common = dict(vocab_size=old.vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, num_experts_per_tok=2, eos_token_id=old.eos_token_id,
                  pad_token_id=old.pad_token_id, tie_word_embeddings=False)
    if kind == "mixtral":
        config.text_config = MixtralConfig(num_local_experts=experts, **common)
    else:
        config.text_config = Qwen2MoeConfig(moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                            num_experts=experts, **common)
    torch.manual_seed(0)
    return PocketVLM(config).eval()


@pytest.fixture(scope="module")
def processor():
    return model.load("pocket-tiny-scratch")[1]


@pytest.mark.parametrize("kind", ["qwen2_moe", "mixtral"])
def test_a_saved_moe_llm_loads_back_with_the_same_logits(tmp_path, processor, kind):
    """`save` wrote the experts per expert (transformers' save_pretrained unfuses them, as the hub stores them) but
    `load` expected the fused parameters: a CheckpointError. Loading now fuses them as `from_pretrained` does."""
    vlm = _moe_vlm(kind)
    model.save(vlm, processor, tmp_path)
    loaded, _ = model.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=IDS).logits, vlm(input_ids=IDS).logits)
    model.save(loaded, processor, tmp_path / "again")  # and once more: the same files
    assert load_file(tmp_path / "again" / "model.safetensors").keys() == load_file(tmp_path / "model.safetensors").keys()


def test_the_saved_experts_are_in_the_public_per_expert_layout(tmp_path, processor):
    model.save(_moe_vlm(), processor, tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    layer = "language_model.model.layers.0.mlp."
    assert {f"{layer}experts.{e}.{p}_proj.weight" for e in range(4) for p in ("gate", "up", "down")} <= keys
    assert f"{layer}experts.gate_up_proj" not in keys


def test_fused_expert_weights_load_too(tmp_path, processor):
    """A checkpoint that holds the fused parameters as they are (what `vlm.state_dict()` gives) loads unchanged."""
    vlm = _moe_vlm()
    model.save(vlm, processor, tmp_path)
    save_file({k: v.contiguous() for k, v in vlm.state_dict().items()}, tmp_path / "model.safetensors")
    loaded, _ = model.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=IDS).logits, vlm(input_ids=IDS).logits)


def test_an_expert_missing_from_the_checkpoint_is_an_error_naming_it(tmp_path, processor):
    """Stacking the experts there are would shift every later expert into the wrong slot, or fail in torch.cat."""
    vlm = _moe_vlm()
    model.save(vlm, processor, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    for name in ("gate", "up", "down"):  # expert 2 of layer 1 gone, expert 4 in its place: still 4 experts
        state["language_model.model.layers.1.mlp.experts.4.%s_proj.weight" % name] = state.pop(
            "language_model.model.layers.1.mlp.experts.2.%s_proj.weight" % name)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"layers\.1\.mlp\.experts.*expert 2"):
        model.load(tmp_path)


def test_a_half_missing_expert_is_an_error_not_a_traceback(tmp_path, processor):
    vlm = _moe_vlm()
    model.save(vlm, processor, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["language_model.model.layers.0.mlp.experts.3.up_proj.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"layers\.0\.mlp\.experts.*up_proj.*expert 3"):
        model.load(tmp_path)


def test_per_expert_tensors_are_freed_once_fused(tmp_path, processor):
    """Fusing kept every per-expert tensor alive in the caller's dict beside its fused copy: a MoE checkpoint's
    experts were held twice (three times with the model) while loading."""
    import gc
    import weakref

    from model.checkpoints.io import convert_weights

    vlm = _moe_vlm()
    model.save(vlm, processor, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    experts = [weakref.ref(v) for k, v in state.items() if ".experts.1." in k]
    fused = convert_weights(vlm, state, "test")
    gc.collect()
    assert experts and all(ref() is None for ref in experts)
    assert "language_model.model.layers.0.mlp.experts.gate_up_proj" in fused
