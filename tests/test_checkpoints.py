"""Checkpoint layouts: native InternVL, original OpenGVLab InternVL, MobileVLM V2, ours; export back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    CLIPVisionModel,
    InternVLForConditionalGeneration,
    LlamaConfig,
    LlamaForCausalLM,
)

import model
from model.checkpoints import CheckpointError, detect_layout
from model.checkpoints.io import head_is_tied
from model.checkpoints.native import export_native
from model.checkpoints.original import export_original, fuse_internlm2_wqkv
from model.vlm import PocketVLM

from .conftest import (
    TILE,
    original_layout_config,
    original_layout_tensors,
    randomize_,
    tiny_internvl_config,
    write_original,
    write_preprocessor,
)


def logits_of(vlm, inputs) -> torch.Tensor:
    with torch.no_grad():
        return vlm(**inputs).logits


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_layout_detection(native_dir, original_dir, tmp_path):
    assert detect_layout(native_dir) == "native"
    assert detect_layout(original_dir) == "original"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="bert"):
        detect_layout(tmp_path)
    with pytest.raises(CheckpointError, match="not a checkpoint directory nor a preset"):
        model.load(tmp_path / "nowhere")


def test_original_layout_and_native_twin_load_to_the_same_model(original_dir, native_dir, prompt_inputs):
    from_original, proc_o = model.load(original_dir)
    from_native, _ = model.load(native_dir)
    assert_same_weights(from_original, from_native)
    assert torch.allclose(logits_of(from_original, prompt_inputs), logits_of(from_native, prompt_inputs), atol=1e-6)
    # the original config's tiling and template are honoured
    assert proc_o.tiling.tile_size == 56 and proc_o.tiling.max_tiles == 6 and proc_o.tiling.thumbnail
    assert from_original.config.chat_template == "Hermes-2"
    assert proc_o.image_token_id == proc_o.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")


def test_original_ps_version_v1_is_honoured(tmp_path, hf_internvl, tiny_tokenizer, prompt_inputs):
    directory = write_original(
        tmp_path / "v1", original_layout_tensors(hf_internvl), original_layout_config(hf_internvl, "v1"), tiny_tokenizer
    )
    v1, _ = model.load(directory)
    assert v1.config.projector_options["ps_version"] == "v1"
    pixels = prompt_inputs["pixel_values"]
    with torch.no_grad():
        got = v1.get_image_features(pixels)
        # v1 = the v2 output token grid transposed (2x2 tokens per tile here)
        features = hf_internvl.model.vision_tower(pixel_values=pixels).last_hidden_state[:, 1:]
        v2 = hf_internvl.model.pixel_shuffle(features.reshape(len(pixels), 4, 4, -1), 0.5)
        expected = hf_internvl.model.multi_modal_projector(v2.transpose(1, 2).reshape(len(pixels), 4, -1))
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(CheckpointError, match="v1"):
        export_native(v1, None, tmp_path / "out")


def test_export_native_loads_in_transformers_without_missing_keys(original_dir, tmp_path, prompt_inputs):
    vlm, processor = model.load(original_dir)
    out = export_native(vlm, processor, tmp_path / "native")
    hf, info = AutoModelForImageTextToText.from_pretrained(str(out), output_loading_info=True)
    assert type(hf).__name__ == "InternVLForConditionalGeneration"
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert torch.allclose(logits_of(hf.eval(), prompt_inputs), logits_of(vlm, prompt_inputs), atol=1e-5)
    # and it comes back into pocket-adapt unchanged, tiling and template included
    again, proc2 = model.load(out)
    assert_same_weights(again, vlm)
    assert proc2.tiling == processor.tiling and again.config.chat_template == "Hermes-2"


def test_export_original_round_trip(native_dir, tmp_path, prompt_inputs):
    vlm, processor = model.load(native_dir)
    vlm.config.chat_template = "Hermes-2"
    vlm.config.text_config.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
    out = export_original(vlm, processor, tmp_path / "orig")
    raw = json.loads((out / "config.json").read_text())
    assert raw["model_type"] == "internvl_chat" and raw["ps_version"] == "v2"
    assert raw["vision_config"]["qkv_bias"] is True
    # InternVL's remote code reads llm_config with transformers 4.37, which knows rope_theta (default 10000), not
    # transformers 5's rope_parameters
    llm = raw["llm_config"]
    assert llm["rope_theta"] == 1000000.0 and "rope_scaling" not in llm and llm["torch_dtype"] == "float32"
    assert not {"rope_parameters", "dtype", "layer_types"} & set(llm)
    again, _ = model.load(out)
    assert_same_weights(again, vlm)
    assert again.config.text_config.rope_parameters["rope_theta"] == 1000000.0


# ---------------------------------------------------------------- tied and untied LM heads
# transformers ties InternVLForConditionalGeneration's `lm_head` by the top-level `tie_word_embeddings` only,
# leaves a tied head out of what `save_pretrained` writes, and, when the config ties but the file holds a
# different head, keeps it untied. A loaded PocketVLM must end up exactly as tied as transformers' own model.


def _head_and_embedding_names(tensors: dict) -> tuple[str, str]:
    """The names transformers wrote the LM's embeddings under, and the head's beside them (current or legacy)."""
    embedding = next(k for k in tensors if k.endswith("embed_tokens.weight"))
    return ("lm_head.weight" if embedding.startswith("model.") else "language_model.lm_head.weight"), embedding


def _holds_head(directory: Path) -> bool:
    return any(k.endswith("lm_head.weight") for k in load_file(str(directory / "model.safetensors")))


def _native_checkpoint(directory: Path, tokenizer, tie: bool, text_tie: bool) -> Path:
    torch.manual_seed(0)
    hf = InternVLForConditionalGeneration(tiny_internvl_config(tokenizer, tie=tie, text_tie=text_tie))
    randomize_(hf, seed=7)
    hf.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    write_preprocessor(directory)
    return directory


def _transformers_model(directory: Path) -> InternVLForConditionalGeneration:
    hf, info = AutoModelForImageTextToText.from_pretrained(str(directory), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    return hf.eval()


@pytest.mark.parametrize(
    "tie, text_tie",
    [(True, False), (False, False), (False, True), (True, True)],
    ids=["top-level-only", "untied", "text-config-only", "both"],
)
def test_native_checkpoint_is_tied_as_transformers_ties_it(tie, text_tie, tmp_path, tiny_tokenizer, prompt_inputs):
    directory = _native_checkpoint(tmp_path / "native", tiny_tokenizer, tie, text_tie)
    assert _holds_head(directory) is not tie  # transformers' own file leaves a tied head out
    hf = _transformers_model(directory)
    assert head_is_tied(hf) is tie
    vlm, processor = model.load(directory)
    assert head_is_tied(vlm) is tie
    assert torch.allclose(logits_of(vlm, prompt_inputs), logits_of(hf, prompt_inputs), atol=1e-5)
    # export back: transformers reads the same tying from what we write
    out = export_native(vlm, processor, tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is tie
    assert _holds_head(out) is not tie
    again = _transformers_model(out)
    assert head_is_tied(again) is tie
    assert torch.allclose(logits_of(again, prompt_inputs), logits_of(hf, prompt_inputs), atol=1e-5)
    # and our own layout keeps it too
    mine, _ = model.load(model.save(vlm, processor, tmp_path / "pocket"))
    assert head_is_tied(mine) is tie
    assert torch.equal(logits_of(mine, prompt_inputs), logits_of(vlm, prompt_inputs))


@pytest.mark.parametrize("head", ["equal", "different", "head-only"])
def test_native_tied_config_with_a_head_tensor_follows_transformers(head, tmp_path, tiny_tokenizer, prompt_inputs):
    """Tying on, yet the file holds a head: tied when it equals the embeddings (or stands in for absent ones),
    kept separate, with a warning, when it differs."""
    directory = _native_checkpoint(tmp_path / "native", tiny_tokenizer, tie=True, text_tie=False)
    tensors = load_file(str(directory / "model.safetensors"))
    head_name, embedding_name = _head_and_embedding_names(tensors)
    embeddings = tensors[embedding_name]
    tensors[head_name] = torch.randn(embeddings.shape) * 0.2 if head == "different" else embeddings.clone()
    if head == "head-only":
        del tensors[embedding_name]
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf = _transformers_model(directory)
    if head == "different":
        with pytest.warns(UserWarning, match="kept untied"):
            vlm, _ = model.load(directory)
    else:
        vlm, _ = model.load(directory)
    assert head_is_tied(hf) is (head != "different") and head_is_tied(vlm) is (head != "different")
    assert torch.equal(vlm.get_output_embeddings().weight, tensors[head_name])
    assert torch.allclose(logits_of(vlm, prompt_inputs), logits_of(hf, prompt_inputs), atol=1e-5)


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_original_checkpoint_is_tied_by_its_llm_config(tie, tmp_path, tiny_tokenizer, prompt_inputs):
    """InternVLChatModel builds `Qwen2ForCausalLM(llm_config)`: the LLM's flag decides, not the chat config's."""
    torch.manual_seed(0)
    hf = InternVLForConditionalGeneration(tiny_internvl_config(tiny_tokenizer, tie=tie))  # the same model, natively
    randomize_(hf, seed=8)
    hf.eval()
    tensors = original_layout_tensors(hf)
    config = original_layout_config(hf)
    assert config["llm_config"]["tie_word_embeddings"] is tie
    config["tie_word_embeddings"] = not tie  # the chat config's own flag ties nothing
    if tie:
        del tensors["language_model.lm_head.weight"]  # as save_pretrained writes a tied LLM
    directory = write_original(tmp_path / "orig", tensors, config, tiny_tokenizer)
    vlm, processor = model.load(directory)
    assert head_is_tied(vlm) is tie
    assert torch.allclose(logits_of(vlm, prompt_inputs), logits_of(hf, prompt_inputs), atol=1e-5)
    out = export_original(vlm, processor, tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["llm_config"]["tie_word_embeddings"] is tie
    again, _ = model.load(out)
    assert head_is_tied(again) is tie
    assert_same_weights(again, vlm)
    # and into transformers' native class, tied the same way
    native = _transformers_model(export_native(vlm, processor, tmp_path / "native"))
    assert head_is_tied(native) is tie
    assert torch.allclose(logits_of(native, prompt_inputs), logits_of(hf, prompt_inputs), atol=1e-5)


def _internlm2_checkpoint(tmp_path: Path, hf_internvl, tokenizer):
    """An original-layout InternVL2-2B-style checkpoint: InternLM2 LLM keys and fused, interleaved wqkv."""
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )
    torch.manual_seed(1)
    llama = LlamaForCausalLM(text)
    randomize_(llama, seed=3)
    sd = llama.state_dict()
    tensors = {k: v for k, v in original_layout_tensors(hf_internvl).items() if not k.startswith("language_model.")}
    tensors["language_model.model.tok_embeddings.weight"] = sd["model.embed_tokens.weight"]
    tensors["language_model.model.norm.weight"] = sd["model.norm.weight"]
    tensors["language_model.output.weight"] = sd["lm_head.weight"]
    for n in range(2):
        src, dst = f"model.layers.{n}.", f"language_model.model.layers.{n}."
        q, k, v = (sd[src + f"self_attn.{p}_proj.weight"] for p in "qkv")
        tensors[dst + "attention.wqkv.weight"] = fuse_internlm2_wqkv(q, k, v, text)
        tensors[dst + "attention.wo.weight"] = sd[src + "self_attn.o_proj.weight"]
        tensors[dst + "feed_forward.w1.weight"] = sd[src + "mlp.gate_proj.weight"]
        tensors[dst + "feed_forward.w3.weight"] = sd[src + "mlp.up_proj.weight"]
        tensors[dst + "feed_forward.w2.weight"] = sd[src + "mlp.down_proj.weight"]
        tensors[dst + "attention_norm.weight"] = sd[src + "input_layernorm.weight"]
        tensors[dst + "ffn_norm.weight"] = sd[src + "post_attention_layernorm.weight"]
    llm_config = {
        "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config"}, "vocab_size": len(tokenizer),
        "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 1000000, "bias": False,
        "hidden_act": "silu", "max_position_embeddings": 2048, "tie_word_embeddings": False,
    }
    config = original_layout_config(hf_internvl, llm_config=llm_config)
    config["template"] = "internlm2-chat"
    return write_original(tmp_path / "internlm2", tensors, config, tokenizer), llama


def test_internlm2_checkpoint_loads_as_llama(tmp_path, hf_internvl, tiny_tokenizer):
    directory, llama = _internlm2_checkpoint(tmp_path, hf_internvl, tiny_tokenizer)
    vlm, processor = model.load(directory)
    assert vlm.config.text_config.model_type == "llama"
    assert processor.chat_template.name == "internlm2-chat"
    ids = torch.tensor([[20, 17, 99, 300, 70]])
    with torch.no_grad():
        assert torch.allclose(vlm(input_ids=ids).logits, llama.eval()(input_ids=ids).logits, atol=1e-5)


# MobileVLM V2, written from the published layout (mobilevlm.md §3, §6) without pocket-adapt's projector code:
# LDPv2 tensors under `model.mm_projector.{mlp.mlp.0, mlp.mlp.2, peg.peg.0}`, the CLIP tower under
# `model.vision_tower.vision_tower.vision_model.`, the LLM as a plain LlamaForCausalLM. The tower works on 336 px
# with 14 px patches, a 24x24 grid, so LDPv2's fixed 12x12 pool gives the released 144 tokens.
CLIP_HIDDEN, LLM_HIDDEN, MOBILEVLM_TILE = 32, 48, 336


@dataclass
class MobileVLMCheckpoint:
    directory: Path
    clip: CLIPVisionModel
    projector: dict[str, torch.Tensor]  # the `model.mm_projector.*` tensors, by published name
    llama: LlamaForCausalLM


def write_mobilevlm_v2(directory: Path, tokenizer, tie: bool) -> MobileVLMCheckpoint:
    """A tiny MobileVLM V2 checkpoint; with `tie`, `lm_head.weight` is left out, as `save_pretrained` does."""
    directory.mkdir(parents=True)
    clip_cfg = CLIPVisionConfig(hidden_size=CLIP_HIDDEN, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=MOBILEVLM_TILE, patch_size=14, projection_dim=16)
    tower_dir = directory / "clip-tower"
    clip_cfg.save_pretrained(str(tower_dir))
    torch.manual_seed(2)
    clip = CLIPVisionModel(clip_cfg)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=LLM_HIDDEN, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                         tie_word_embeddings=tie))
    for module, seed in ((clip, 4), (llama, 6)):
        randomize_(module, seed)
    gen = torch.Generator().manual_seed(5)
    shapes = {
        "mlp.mlp.0.weight": (LLM_HIDDEN, CLIP_HIDDEN), "mlp.mlp.0.bias": (LLM_HIDDEN,),
        "mlp.mlp.2.weight": (LLM_HIDDEN, LLM_HIDDEN), "mlp.mlp.2.bias": (LLM_HIDDEN,),
        "peg.peg.0.weight": (LLM_HIDDEN, 1, 3, 3), "peg.peg.0.bias": (LLM_HIDDEN,),
    }
    projector = {f"model.mm_projector.{k}": torch.randn(shape, generator=gen) * 0.2 for k, shape in shapes.items()}
    # released files come from transformers 4.x, whose CLIPVisionModel keeps its modules under `vision_model.`
    tensors = {f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in clip.state_dict().items()}
    # transformers 4.33-era files also carry the position-id buffer
    tensors["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(577)[None]
    tensors.update(projector)
    tensors.update({k: v for k, v in llama.state_dict().items() if not (tie and k == "lm_head.weight")})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
    config = llama.config.to_dict()
    config.update({
        "architectures": ["MobileLlamaForCausalLM"], "model_type": "mobilevlm", "mm_hidden_size": CLIP_HIDDEN,
        "mm_projector_type": "ldpnetv2", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_vision_tower": str(tower_dir), "vision_tower_type": "clip", "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "use_mm_proj": True,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "mm_projector_lr": None,
        "max_sequence_length": 2048,
    })
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(str(directory))
    return MobileVLMCheckpoint(directory, clip.eval(), projector, llama.eval())


def ldpv2_reference(x: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """MobileVLM V2's LDPNetV2Projector from its published structure: token-wise Linear-GELU-Linear, the
    token grid average-pooled to a fixed 12x12, then PEG (depthwise 3x3 conv with bias) plus a residual."""
    w = {k.removeprefix("model.mm_projector."): v for k, v in t.items()}
    x = F.linear(F.gelu(F.linear(x, w["mlp.mlp.0.weight"], w["mlp.mlp.0.bias"])), w["mlp.mlp.2.weight"], w["mlp.mlp.2.bias"])
    b, n, c = x.shape
    side = math.isqrt(n)
    grid = F.adaptive_avg_pool2d(x.permute(0, 2, 1).reshape(b, c, side, side), (12, 12))
    grid = F.conv2d(grid, w["peg.peg.0.weight"], w["peg.peg.0.bias"], stride=1, padding=1, groups=c) + grid
    return grid.flatten(2).transpose(1, 2)


@pytest.fixture(scope="module")
def mobilevlm_dir(tmp_path_factory, tiny_tokenizer) -> MobileVLMCheckpoint:
    return write_mobilevlm_v2(tmp_path_factory.mktemp("mobilevlm") / "untied", tiny_tokenizer, tie=False)


@pytest.fixture(scope="module")
def mobilevlm_tied_dir(tmp_path_factory, tiny_tokenizer) -> MobileVLMCheckpoint:
    return write_mobilevlm_v2(tmp_path_factory.mktemp("mobilevlm") / "tied", tiny_tokenizer, tie=True)


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_mobilevlm_v2_checkpoint_matches_the_published_architecture(tie, mobilevlm_dir, mobilevlm_tied_dir, example_image):
    ckpt = mobilevlm_tied_dir if tie else mobilevlm_dir
    assert detect_layout(ckpt.directory) == "mobilevlm"
    vlm, processor = model.load(ckpt.directory)
    assert vlm.config.projector_type == "ldpv2" and vlm.config.vision_feature_layer == -2
    assert processor.tiling.mode == "pad" and processor.tiling.tile_size == MOBILEVLM_TILE
    assert processor.chat_template.name == "vicuna_v1"
    assert head_is_tied(vlm) is tie and head_is_tied(ckpt.llama) is tie
    enc = processor([{"role": "user", "content": "What is this?"}], images=[example_image])
    assert enc.pixel_values.shape == (1, 3, MOBILEVLM_TILE, MOBILEVLM_TILE)
    image_mask = enc.input_ids == processor.image_token_id
    assert int(image_mask.sum()) == 144  # 24x24 patches pooled to 12x12, as released
    assert "<img>" not in processor.tokenizer.decode(enc.input_ids, skip_special_tokens=False)
    with torch.no_grad():
        # MobileVLM's tower: hidden_states[-2] of CLIPVisionModel, CLS dropped ('patch')
        hidden = ckpt.clip(pixel_values=enc.pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        expected_features = ldpv2_reference(hidden, ckpt.projector)
        assert torch.allclose(vlm.get_image_features(enc.pixel_values), expected_features, atol=1e-5)
        # features written over the `<image>` positions, the rest looked up in the LLM's own table
        inputs = enc.to_model_inputs()
        embeds = ckpt.llama.get_input_embeddings()(inputs["input_ids"].masked_fill(image_mask[None], 0))
        embeds[image_mask[None]] = expected_features.reshape(-1, LLM_HIDDEN)
        expected = ckpt.llama(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
        assert torch.allclose(logits_of(vlm, inputs), expected, atol=1e-5)
    new = vlm.generate(**enc.to_model_inputs(), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert new.shape == (1, 4)


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_pickle_weights_are_refused_unless_allowed(tie, tmp_path, mobilevlm_dir, mobilevlm_tied_dir):
    directory = (mobilevlm_tied_dir if tie else mobilevlm_dir).directory
    copy = tmp_path / "bin"
    copy.mkdir()
    for f in directory.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            (copy / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(directory / "model.safetensors"))
    if tie:  # a `.bin` of a tied model holds the head too, sharing the embeddings' storage
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    torch.save(tensors, copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        model.load(copy)
    vlm, _ = model.load(copy, allow_pickle=True)
    reference, _ = model.load(directory)
    assert_same_weights(vlm, reference)
    assert head_is_tied(vlm) is tie


def test_missing_or_unexpected_weights_are_named(tmp_path, native_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in native_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(broken / "model.safetensors"))
    tensors.pop("multi_modal_projector.linear_2.bias")  # transformers writes the legacy (no `model.`) names
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 \['multi_modal_projector.linear_2.bias'\].*unexpected 1"):
        model.load(broken)


def test_save_load_round_trip_is_safetensors(tmp_path, example_image):
    vlm, processor = model.load("pocket-tiny")
    out = model.save(vlm, processor, tmp_path / "ckpt")
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    assert detect_layout(out) == "pocket"
    again, proc2 = model.load(out)
    assert_same_weights(again, vlm)
    assert proc2.tiling == processor.tiling and again.config.chat_template == "pocket-tiny"
    enc = processor([{"role": "user", "content": "Shapes?"}], images=[example_image])
    assert torch.equal(logits_of(again, enc.to_model_inputs()), logits_of(vlm, enc.to_model_inputs()))


def test_pocket_tiny_exports_to_transformers(tmp_path, example_image):
    vlm, processor = model.load("pocket-tiny")
    out = export_native(vlm, processor, tmp_path / "hf")
    hf, info = AutoModelForImageTextToText.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    enc = processor([{"role": "user", "content": "Shapes?"}], images=[example_image])
    assert torch.allclose(logits_of(hf.eval(), enc.to_model_inputs()), logits_of(vlm, enc.to_model_inputs()), atol=1e-5)


@pytest.mark.parametrize(
    "name, vision_params, projector_params, tokens_per_tile",
    [
        ("internvl2-1b", (300e6, 310e6), 4_482_816, 256),
        ("mini-internvl-2b", (300e6, 310e6), 12_595_200, 256),
        ("mini-internvl-4b", (300e6, 310e6), 22_034_432, 256),
        ("mobilevlm-v2-1.7b", (300e6, 310e6), 6_316_032, 144),
        ("mobilevlm-v2-3b", (300e6, 310e6), 9_205_760, 144),
    ],
)
def test_public_presets_have_the_released_shapes(name, vision_params, projector_params, tokens_per_tile):
    config = model.preset_config(name)
    with torch.device("meta"):
        vlm = PocketVLM(config)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert vision_params[0] < count(vlm.vision_tower) < vision_params[1]
    assert count(vlm.multi_modal_projector) == projector_params
    assert config.image_seq_length == tokens_per_tile


def test_pocket_tiny_preset_is_tiny_and_deterministic():
    a, processor = model.load("pocket-tiny")
    b, _ = model.load("pocket-tiny")
    assert sum(p.numel() for p in a.parameters()) < 5_000_000
    assert_same_weights(a, b)
    assert processor.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>") == a.config.image_token_id


def test_internvit_6b_config_builds_the_6b_tower():
    from model.vision import build_vision_tower, internvit_config

    config = internvit_config("6b")
    assert config.use_qk_norm and config.norm_type == "rms_norm" and not config.attention_bias
    with torch.device("meta"):
        tower = build_vision_tower(config)
    assert 5.0e9 < sum(p.numel() for p in tower.parameters()) < 6.0e9
    with pytest.raises(ValueError, match="unknown InternViT size"):
        internvit_config("2b")


def test_a_training_checkpoint_is_named_as_one(tmp_path):
    """`adapt export --model runs/x/checkpoint-40`: say it holds only the trained weights and point at final/."""
    (tmp_path / "checkpoint-40").mkdir()
    (tmp_path / "checkpoint-40" / "trainable.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"checkpoint-40: a training checkpoint .* use the run's final/ folder"):
        model.load(tmp_path / "checkpoint-40")


def test_a_native_checkpoint_without_preprocessor_config_tiles_at_its_towers_size(tmp_path, native_dir, prompt_inputs):
    """`save_pretrained` of model and tokenizer writes no preprocessor_config.json: the tiles were 448 px whatever the
    tower took, and every image then failed as 'image tokens and image features disagree'. The tower's size is used;
    a preprocessor_config.json that disagrees with the tower is refused at load, naming both."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(native_dir, bare)
    (bare / "preprocessor_config.json").unlink()
    vlm, processor = model.load(bare)
    assert processor.tiling.tile_size == TILE != 448 and processor.tiling.max_tiles == 12  # InternVL's default cap
    reference, _ = model.load(native_dir)
    assert torch.equal(logits_of(vlm, prompt_inputs), logits_of(reference, prompt_inputs))
    pre = json.loads((native_dir / "preprocessor_config.json").read_text())
    pre["size"] = {"height": 448, "width": 448}
    (bare / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(CheckpointError, match=rf"448 px tiles, but the vision tower takes {TILE} px images"):
        model.load(bare)


def test_a_hub_preprocessor_config_with_crop_to_patches_false_still_tiles(tmp_path, native_dir, example_image):
    """transformers' converter saved the `-hf` checkpoints' image processor with GotOcr2's default
    ``crop_to_patches: false``; InternVLProcessor sets it true at every call, so transformers tiles them. It was read
    as one squashed tile per image (256 tokens where transformers gives 9 tiles to a 1600x900 picture)."""
    import shutil

    from transformers import GotOcr2ImageProcessorPil, InternVLProcessor

    assert InternVLProcessor.images_kwargs == {"crop_to_patches": True}  # the upstream fact relied on
    hub = tmp_path / "hub"
    shutil.copytree(native_dir, hub)
    (hub / "preprocessor_config.json").unlink()
    GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, max_patches=6, image_mean=[0.485, 0.456, 0.406],
                             image_std=[0.229, 0.224, 0.225]).save_pretrained(hub)  # as the converter writes it
    assert json.loads((hub / "preprocessor_config.json").read_text())["crop_to_patches"] is False
    _, processor = model.load(hub)
    assert processor.tiling.mode == "dynamic" and processor.tiling.max_tiles == 6
    wide = example_image.resize((3 * TILE, TILE))
    reference = GotOcr2ImageProcessorPil.from_pretrained(hub)(wide, crop_to_patches=True, return_tensors="pt")
    assert processor.tiles_for_sizes([wide.size]) == [reference["pixel_values"].shape[0]] == [4]  # 3 tiles + thumbnail


def _internvl_processor(directory: Path):
    """transformers' `InternVLProcessor` read from `directory`, without its video processor: transformers 5 cannot
    build one without torchvision (`VIDEO_PROCESSOR_MAPPING has no attribute _extra_content`), which CPU CI lacks."""
    import re

    from transformers import InternVLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImagesOnly(InternVLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                     **kwargs):
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
            self.image_seq_length = image_seq_length
            for name in ("start_image_token", "end_image_token", "start_image_token_id", "end_image_token_id",
                         "video_token"):
                setattr(self, name, getattr(tokenizer, name))
            self.image_token, self.image_token_id = tokenizer.context_image_token, tokenizer.context_image_token_id
            self.multimodal_pattern = re.compile(
                f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})")

    return ImagesOnly.from_pretrained(str(directory))


TEXT_CHATS = [
    [{"role": "user", "content": "Shapes?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q1"},
     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
]


@pytest.mark.parametrize("fmt", ["hf", "internvl", "pocket"])
def test_exports_carry_the_models_chat_template(fmt, tmp_path, example_image):
    """transformers' `apply_chat_template` on an export renders the prompt pocket-adapt trains and chats with (the
    model's template, here Hermes-2 with InternVL's system message), and a transformers-style image item renders the
    placeholder the folder's runtime expands. The exports kept the tokenizer's own template (pocket-tiny's here, a
    real InternVL2-1B's Qwen2 'You are a helpful assistant.'), and the hf one failed on an image item."""
    from transformers import AutoTokenizer

    from deploy.hf import export

    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    out = export(vlm, processor, fmt, tmp_path / fmt)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    for chat in TEXT_CHATS:
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
        assert ids == processor(chat).input_ids.tolist()
    asked = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Shapes?"}]}]
    if fmt != "hf":  # pocket-adapt's placeholder, as InternVL's own chat() writes it too
        assert tokenizer.apply_chat_template(asked, tokenize=False, add_generation_prompt=True) == \
            processor.chat_template.render([{"role": "user", "content": "<image>\nShapes?"}])
        return
    hf = _internvl_processor(out)  # <IMG_CONTEXT> placeholder, expanded by image_seq_length x tiles
    prompt = hf.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
    got = hf(images=[example_image], text=[prompt], return_tensors="pt")
    ours = processor([{"role": "user", "content": "<image>\nShapes?"}], images=[example_image])
    assert got["input_ids"][0].tolist() == ours.input_ids.tolist()
    assert torch.equal(got["pixel_values"], ours.pixel_values)


def test_an_hf_export_of_a_tokenizer_without_internvl_token_names_loads_in_internvl_processor(tmp_path, example_image):
    """A released InternVL2 checkpoint's tokenizer (original layout) has no `extra_special_tokens`, from which
    `InternVLProcessor` reads `<img>`, `</img>`, `<IMG_CONTEXT>` and `<video>`: its hf export could not be loaded
    by transformers' processor. The export names them, as transformers' own converter does."""
    from deploy.hf import export

    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    plain = model.save(vlm, processor, tmp_path / "plain")
    config = json.loads((plain / "tokenizer_config.json").read_text())
    for key in ("extra_special_tokens", "model_specific_special_tokens", "start_image_token", "end_image_token",
                "context_image_token", "video_token"):  # as the tokenizer of a released InternVL2 has none of them
        config.pop(key, None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    vlm, processor = model.load(plain)
    out = export(vlm, processor, "hf", tmp_path / "hf")
    hf = _internvl_processor(out)
    asked = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Shapes?"}]}]
    got = hf(images=[example_image], text=[hf.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)],
             return_tensors="pt")
    ours = processor([{"role": "user", "content": "<image>\nShapes?"}], images=[example_image])
    assert got["input_ids"][0].tolist() == ours.input_ids.tolist()


def test_transformers_generate_on_an_hf_export_stops_where_pocket_adapt_stops(tmp_path, example_image):
    """The export's generation_config.json named only the LLM's EOS, not the chat template's end token: here the
    model answers <|endoftext|> (a stop token of pocket-adapt's, not the LLM's eos <|im_end|>) where it answered
    'cross', and transformers' generate on the export ran on to max_new_tokens."""
    vlm, processor = model.load("pocket-tiny")
    head = vlm.language_model.lm_head
    weight = head.weight.detach().clone()
    weight[[1014, 0]] = weight[[0, 1014]]
    head.weight = torch.nn.Parameter(weight)
    out = export_native(vlm, processor, tmp_path / "hf")
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == processor.stop_token_ids
    hf = AutoModelForImageTextToText.from_pretrained(str(out)).eval()
    inputs = processor([{"role": "user", "content": "What shapes are in the picture?"}],
                       images=[example_image]).to_model_inputs()
    ours = vlm.generate(**inputs, max_new_tokens=10, do_sample=False, eos_token_id=processor.stop_token_ids,
                        pad_token_id=processor.pad_token_id)[0].tolist()
    theirs = hf.generate(**inputs, max_new_tokens=10, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    assert 0 in ours and len(ours) < 10
    assert theirs == ours
