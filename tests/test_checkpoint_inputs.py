"""Checkpoints as users bring them: configs and weight files that real releases (and real mistakes) have."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import model
from model.checkpoints import CheckpointError
from model.checkpoints.original import export_original
from model.loading import load_config

from .conftest import original_layout_config, original_layout_tensors, write_original


def test_weights_of_other_shapes_than_the_config_are_one_error_naming_them(tmp_path, hf_internvl, tiny_tokenizer):
    """A config that does not describe its weights (here downsample_ratio 0.25 for a 0.5 projector) is a
    CheckpointError naming the tensor and both shapes, not torch's RuntimeError."""
    config = original_layout_config(hf_internvl)
    config["downsample_ratio"] = 0.25
    directory = write_original(tmp_path / "orig", original_layout_tensors(hf_internvl), config, tiny_tokenizer)
    with pytest.raises(CheckpointError, match=r"orig: \d+ weight\(s\) have other shapes.*"
                                              r"multi_modal_projector\.layer_norm\.weight \(128,\) \(config: \(512,\)\)"):
        model.load(directory)


def _phi3_internvl(tokenizer, attention_factor: float | None = None):
    """A tiny InternVL with a Phi-3 LLM using long-context RoPE factors (as Phi-3-mini-128k does): max positions 4
    times the original ones, so the attention factor is not 1."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Phi3Config

    from .conftest import randomize_, tiny_internvl_config

    base = tiny_internvl_config(tokenizer)
    short = [1.0 + i / 4 for i in range(6)]  # head_dim 12: 6 factors; not 1, so a misread RoPE shows
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": short, "long_factor": [f * 2 for f in short],
            "original_max_position_embeddings": 1024}
    if attention_factor is not None:
        rope["attention_factor"] = attention_factor
    text = Phi3Config(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      original_max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, rope_parameters=rope)
    config = InternVLConfig(vision_config=base.vision_config, text_config=text, image_token_id=base.image_token_id,
                            image_seq_length=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = InternVLForConditionalGeneration(config)
    randomize_(hf, seed=11)
    return hf.eval()


@pytest.mark.parametrize("kind", ["su", "yarn"])
def test_an_internvl2_4b_phi3_llm_config_with_su_or_yarn_rope_loads_and_exports_as_released(kind, tmp_path,
                                                                                         tiny_tokenizer, prompt_inputs):
    """InternVL2-4B's llm_config (Phi-3-mini-128k, transformers 4.37) names its RoPE scaling "su" (or "yarn"), as
    InternVL's own Phi-3 code needs: transformers 5 fails on both names, and an export wrote transformers 5's
    "longrope" dict, which that code refuses. "yarn" scales the rotary table by 0.1·ln(4096/1024) + 1."""
    hf = _phi3_internvl(tiny_tokenizer, attention_factor=0.1 * math.log(4) + 1 if kind == "yarn" else None)
    config = original_layout_config(hf)
    llm = config["llm_config"]
    rope = llm.pop("rope_parameters")
    llm.pop("dtype", None)
    scaling = {"type": kind, "short_factor": rope["short_factor"], "long_factor": rope["long_factor"]}
    llm.update(architectures=["Phi3ForCausalLM"], rope_theta=rope["rope_theta"], torch_dtype="float32",
               rope_scaling=scaling)
    config["template"] = "phi3-chat"
    directory = write_original(tmp_path / "orig", original_layout_tensors(hf), config, tiny_tokenizer)
    vlm, processor = model.load(directory)
    assert vlm.config.text_config.rope_parameters["rope_type"] == "longrope"
    with torch.no_grad():
        ours, theirs = vlm(**prompt_inputs).logits, hf(**prompt_inputs).logits
    assert torch.allclose(ours, theirs, atol=1e-5)

    out = export_original(vlm, processor, tmp_path / "export")
    exported = json.loads((out / "config.json").read_text())["llm_config"]
    assert exported["rope_scaling"] == scaling and exported["original_max_position_embeddings"] == 1024
    again, _ = model.load(out)
    with torch.no_grad():
        assert torch.equal(again(**prompt_inputs).logits, ours)


@pytest.mark.parametrize("bad", [{"rope_scaling": {"type": "yarn"}},  # no factor: transformers raises a KeyError
                                 {"hidden_size": "x"}])  # transformers 5's strict dataclass raises its own error
def test_an_llm_config_transformers_rejects_is_one_error_naming_config_json(bad, tmp_path, hf_internvl, tiny_tokenizer):
    config = original_layout_config(hf_internvl)
    config["llm_config"].pop("rope_parameters", None)
    config["llm_config"].update(bad)
    directory = write_original(tmp_path / "orig", original_layout_tensors(hf_internvl), config, tiny_tokenizer)
    with pytest.raises(CheckpointError, match=r"orig/config\.json: llm_config \(Qwen2ForCausalLM\) is not a valid qwen2"):
        model.load(directory)


def _sharded_original(tmp_path, hf_internvl, tokenizer):
    from safetensors.torch import load_file

    directory = write_original(tmp_path / "orig", original_layout_tensors(hf_internvl),
                               original_layout_config(hf_internvl), tokenizer)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    first = "model-00001-of-00002.safetensors"
    key = next(k for k, shard in index["weight_map"].items() if shard != first)
    return directory, index, first, key, load_file(str(directory / index["weight_map"][key]))[key]


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/../../x.safetensors"])
def test_an_index_naming_a_shard_outside_the_checkpoint_is_refused(shard, tmp_path, hf_internvl, tiny_tokenizer):
    directory, index, _, key, _ = _sharded_original(tmp_path, hf_internvl, tiny_tokenizer)
    (tmp_path / "outside.safetensors").write_bytes((directory / index["weight_map"][key]).read_bytes())
    index["weight_map"] = {k: shard if v == index["weight_map"][key] else v for k, v in index["weight_map"].items()}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"index\.json: shard .* is not a file name beside the index"):
        model.load(directory)


def test_each_tensor_is_read_from_the_shard_the_index_names(tmp_path, hf_internvl, tiny_tokenizer):
    """A stray copy of a tensor in another shard (a shard from an older download) is not read; a tensor the index
    places in a shard that lacks it is an error naming the shard."""
    from safetensors.torch import load_file, save_file

    directory, index, first, key, value = _sharded_original(tmp_path, hf_internvl, tiny_tokenizer)
    assert first < index["weight_map"][key]  # the stray copy's shard is read first: a plain update would keep it
    stray = load_file(str(directory / first))
    save_file({**stray, key: torch.zeros_like(value)}, str(directory / first))
    vlm, _ = model.load(directory)
    assert torch.equal(vlm.state_dict()[_ours(key)], value)

    save_file(stray, str(directory / first))
    index["weight_map"]["language_model.model.norm.bias"] = first
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00001-of-00002\.safetensors: lacks 1 tensor\(s\) "
                                              r"model\.safetensors\.index\.json places in it"):
        model.load(directory)


def _ours(key: str) -> str:
    """A non-vision original-layout key under PocketVLM's name."""
    for theirs, ours in (("mlp1.0.", "multi_modal_projector.layer_norm."), ("mlp1.1.", "multi_modal_projector.linear_1."),
                         ("mlp1.3.", "multi_modal_projector.linear_2.")):
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    assert key.startswith("language_model."), key
    return key


@pytest.mark.parametrize("select_layer,message", [
    (-4, "vision_feature_layer -4 is out of range for a tower of 2 layers"),
    (3, "vision_feature_layer 3 is out of range for a tower of 2 layers"),
    ("-1", "must be a layer index (an int; -1 is the last layer), got '-1'"),
    (None, "must be a layer index (an int; -1 is the last layer), got None"),
    ([-1], "must be a layer index (an int; -1 is the last layer), got [-1]"),
])
def test_a_select_layer_beyond_the_tower_is_refused_at_load(select_layer, message, tmp_path, hf_internvl,
                                                            tiny_tokenizer):
    """select_layer -4 (the internvl_chat_llava scripts' value, for a 48-layer tower) on this 2-layer tower loaded,
    then every image ended in an IndexError traceback; a string, null or list was read with int() (a traceback)."""
    config = original_layout_config(hf_internvl)
    config["select_layer"] = select_layer
    directory = write_original(tmp_path / "orig", original_layout_tensors(hf_internvl), config, tiny_tokenizer)
    with pytest.raises(CheckpointError, match=re.escape(f"orig/config.json: select_layer: {message}")):
        model.load(directory)
    with pytest.raises(CheckpointError, match=re.escape(f"orig/config.json: select_layer: {message}")):
        model.loading.load_config(directory)


def test_a_projector_option_the_projector_refuses_names_the_checkpoint(tmp_path, hf_internvl, tiny_tokenizer):
    config = original_layout_config(hf_internvl)
    config["ps_version"] = "v3"
    directory = write_original(tmp_path / "orig", original_layout_tensors(hf_internvl), config, tiny_tokenizer)
    with pytest.raises(CheckpointError, match=r"orig: ps_version must be 'v1' or 'v2', got 'v3'"):
        model.load(directory)


def test_weights_saved_from_a_ddp_wrapper_say_so(tmp_path, hf_internvl, tiny_tokenizer):
    """A checkpoint saved from DDP / DeepSpeed (every key 'module.'-prefixed) was refused as an 'unexpected key'
    with nothing saying why; the message names the wrapper and the fix."""
    tensors = {f"module.{k}": v for k, v in original_layout_tensors(hf_internvl).items()}
    directory = write_original(tmp_path / "ddp", tensors, original_layout_config(hf_internvl), tiny_tokenizer)
    with pytest.raises(CheckpointError, match=r"unexpected key 'module\..*start with 'module\.'.*DDP / DeepSpeed.*"
                                              r"strip 'module\.' from every key"):
        model.load(directory)


@pytest.mark.parametrize("where", ["text_config", "vision_config"])
def test_a_native_config_field_transformers_rejects_is_one_error_naming_the_folder(where, tmp_path, native_dir):
    """transformers 5's configs are strict dataclasses: a field of the wrong type raised their own error (not a
    ValueError), a traceback through model.load and adapt validate."""
    import shutil

    directory = shutil.copytree(native_dir, tmp_path / "native")
    config = json.loads((directory / "config.json").read_text())
    config[where]["hidden_size"] = "x"
    (directory / "config.json").write_text(json.dumps(config))
    for load in (model.load, model.loading.load_config):
        with pytest.raises(CheckpointError, match=r"native.*hidden_size"):
            load(directory)


@pytest.mark.parametrize("layer,message", [
    (5, "vision_feature_layer: vision_feature_layer 5 is out of range for a tower of 2 layers"),
    ([-1, -2], "vision_feature_layer: a list of layers is not supported; give one layer index"),
])
def test_a_native_vision_feature_layer_the_tower_lacks_names_config_json(layer, message, tmp_path, native_dir):
    """The native loader read vision_feature_layer with int() and checked no range; its list refusal named no file."""
    import shutil

    directory = shutil.copytree(native_dir, tmp_path / "native")
    config = json.loads((directory / "config.json").read_text())
    config["vision_feature_layer"] = layer
    (directory / "config.json").write_text(json.dumps(config))
    for load in (model.load, model.loading.load_config):
        with pytest.raises(CheckpointError, match=re.escape(f"native/config.json: {message}")):
            load(directory)


def test_a_native_tiling_of_another_tile_size_is_refused_in_the_shared_checks_words(tmp_path, native_dir):
    import shutil

    directory = shutil.copytree(native_dir, tmp_path / "native")
    config = json.loads((directory / "preprocessor_config.json").read_text())
    tower = config["size"]["height"]
    config["size"] = {"height": 2 * tower, "width": 2 * tower}
    (directory / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=re.escape(
            f"preprocessor_config.json: the tiling cuts {2 * tower} px tiles, but the vision tower takes {tower} px "
            f"images (vision_config.image_size); set tiling.tile_size to {tower}, the tower's size")):
        model.loading.load_config(directory)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["vision_config"].pop("hidden_size"), r"no vision_config\.hidden_size; transformers' save_pretrained"),
    (lambda c: c.update(vision_config=[]), r"vision_config must be a JSON object, got a list"),
    (lambda c: c["vision_config"].update(num_hidden_layers="2"), r"vision_config is not a valid InternViT config"),
    (lambda c: c.update(min_dynamic_patch="x"), r"min_dynamic_patch must be an int, got 'x'"),
    (lambda c: c.update(force_image_size="448"), r"force_image_size must be an int, got '448'"),
    (lambda c: c.update(downsample_ratio="half"), r"downsample_ratio must be a number, got 'half'"),
    (lambda c: c.update(max_dynamic_patch=float("inf")), r"max_dynamic_patch must be an int, got inf"),
    (lambda c: c.pop("llm_config"), r"missing 'llm_config'"),
    (lambda c: (c["llm_config"].update(architectures=["InternLM2ForCausalLM"]), c["llm_config"].pop("vocab_size")),
     r"no llm_config\.vocab_size;"),
    (lambda c: c["llm_config"].pop("hidden_size"), r"no llm_config\.hidden_size;"),
    (lambda c: c["llm_config"].pop("num_hidden_layers"), r"no llm_config\.num_hidden_layers;"),
    (lambda c: [c["llm_config"].pop(k) for k in ("vocab_size", "intermediate_size")],
     r"no llm_config\.vocab_size, llm_config\.intermediate_size;"),
])
def test_an_original_config_with_a_missing_or_mistyped_field_is_one_error_naming_it(change, message, tmp_path,
                                                                                   hf_internvl, tiny_tokenizer):
    """A missing or mistyped field of an original-layout config.json is a CheckpointError naming the file and the
    field, from `load` and `load_config` alike, not a KeyError / ValueError / AttributeError traceback."""
    config = original_layout_config(hf_internvl)
    change(config)
    directory = write_original(tmp_path / "orig", original_layout_tensors(hf_internvl), config, tiny_tokenizer)
    for read in (model.load, load_config):
        with pytest.raises(CheckpointError, match=r"orig/config\.json: " + message):
            read(directory)


@pytest.mark.parametrize("change, message", [({"num_hidden_layers": "4"}, r"not a valid InternViT config: .*num_hidden_layers"),
                                             ({"hidden_size": None}, r"not a valid InternViT config: .*hidden_size")])
def test_a_standalone_internvit_config_of_the_wrong_type_is_one_error_naming_it(change, message, tmp_path):
    """OpenGVLab's standalone InternViT folder (`intern_vit_6b`) with a mistyped field: a CheckpointError naming the
    file, from reading the config alone and from loading the tower, not a strict-dataclass traceback."""
    from model.checkpoints.tower import load_tower_folder, vision_config_feature

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "intern_vit_6b", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "image_size": 28, "patch_size": 14, "norm_type": "layer_norm", **change}))
    for read in (vision_config_feature, load_tower_folder):
        with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "config.json")) + ": InternViT config is " + message):
            read(tmp_path)
