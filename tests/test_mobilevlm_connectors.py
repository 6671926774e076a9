"""MobileVLM checkpoints read as MobileVLM computes them, and connector options refused where they are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig

from adapt.recipe import ModelSpec
from model.checkpoints.io import CheckpointError
from model.checkpoints.mobilevlm import config_from_mobilevlm
from model.errors import ModelConfigError
from model.projectors import build_projector, projector_tokens

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


@pytest.mark.parametrize("value", [12.0, "12", {"h": 12}, [12, 12, 12], True, [12, 0]])
def test_a_bad_pooled_grid_is_refused_naming_the_option(value):
    with pytest.raises(ModelConfigError, match="pooled_grid must be a positive int or a pair"):
        build_projector("ldpv2", 8, 16, pooled_grid=value)
    with pytest.raises(ModelConfigError, match="pooled_grid"):
        projector_tokens("ldpv2", 24, 24, pooled_grid=value)


@pytest.mark.parametrize("name, options, message", [
    ("qformer", {"num_layers": 0}, "num_layers must be a positive int"),
    ("qformer", {"cross_attention_freq": 0}, "cross_attention_freq must be a positive int"),
    ("qformer", {"intermediate_size": 0}, "intermediate_size must be a positive int"),
    ("qformer", {"hidden_size": 60, "num_heads": 8}, "60 is not divisible by num_heads=8"),
    ("qformer", {"num_heads": 0}, "num_heads must be a positive int"),
    ("qformer", {"dropout": 2}, "dropout must be in"),
    ("resampler", {"num_heads": 0}, "num_heads must be a positive int"),
    ("resampler", {"num_heads": "8"}, "num_heads must be a positive int"),
    ("qformer", {"layer_norm_eps": "1e-12"}, "qformer: layer_norm_eps must be a positive number"),
    ("resampler", {"layer_norm_eps": -1.0}, "resampler: layer_norm_eps must be a positive number"),
    ("pixel_shuffle_mlp", {"layer_norm_eps": "1e-5"}, "pixel_shuffle_mlp: layer_norm_eps must be a positive number"),
    ("pixel_shuffle_mlp", {"hidden_act": "gelu_nope"}, "pixel_shuffle_mlp: unknown hidden_act 'gelu_nope'"),
])
def test_connector_options_are_refused_when_the_recipe_is_validated(name, options, message):
    # the same check building does, before any data is read or weights made
    with pytest.raises(ModelConfigError, match=message):
        build_projector(name, 64, 64, **options)
    with pytest.raises(ModelConfigError, match=message):
        projector_tokens(name, 16, 16, **options)
    with pytest.raises(ValueError, match=message):
        ModelSpec(projector=name, projector_options=options)


@pytest.mark.parametrize("name, options", [("ldp", {}), ("ldpv2", {}), ("qformer", {}), ("resampler", {"num_queries": 4}),
                                           ("pixel_shuffle_mlp", {}), ("linear", {}), ("mlp2x_gelu", {}),
                                           ("mlp3x_gelu", {})])
def test_features_of_another_width_are_refused_naming_both_widths(name, options):
    projector = build_projector(name, 64, 32, **options)
    with pytest.raises(ValueError, match=rf"{name} was built for features of width 64, got 48"):
        projector(torch.randn(1, 16, 48))
    assert projector(torch.randn(1, 16, 64)).shape[-1] == 32


@pytest.mark.parametrize("tower", [None, "", "  ", 3])
def test_a_config_without_a_tower_name_is_refused_not_read_as_its_own_tower(tmp_path, tower):
    # the checkpoint folder's own config.json (the LLM's) was taken for the CLIP tower's: a vision config of
    # model_type 'mobilevlm' with the LLM's widths, or a TypeError for null
    raw = mobilevlm_raw("unused")
    raw["mm_vision_tower"] = tower
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="mm_vision_tower must name the CLIP tower"):
        config_from_mobilevlm(raw, tmp_path, image_token_id=64)


def test_a_tower_folder_that_is_not_clip_is_refused_naming_its_config(tmp_path):
    tower = tmp_path / "tower"
    tower.mkdir()
    (tower / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model", "hidden_size": 8}))
    with pytest.raises(CheckpointError, match=r"tower/config.json.*'siglip_vision_model'.*not a CLIP"):
        config_from_mobilevlm(mobilevlm_raw(str(tower)), tmp_path, image_token_id=64)
    with pytest.raises(CheckpointError, match=r"config.json.*'mobilevlm'.*not a CLIP"):  # the checkpoint itself
        (tmp_path / "config.json").write_text(json.dumps(mobilevlm_raw(".")))
        config_from_mobilevlm(mobilevlm_raw("."), tmp_path, image_token_id=64)


def sentencepiece_files(folder: Path) -> dict[str, bytes]:
    """The tokenizer files of a MobileVLM release (mtgv/MobileVLM_V2-*): a LLaMA sentencepiece model, no
    tokenizer.json; written into `folder`."""
    import io
    import random

    import sentencepiece

    rng = random.Random(0)
    words = "what shapes are in the picture red green blue circle square USER ASSISTANT chat quick brown fox".split()
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(rng.choice(words) for _ in range(10)) for _ in range(500)]), model_writer=buf,
        vocab_size=330, model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
    files = {"tokenizer.model": buf.getvalue(),
             "tokenizer_config.json": json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                                                  "eos_token": "</s>", "unk_token": "<unk>", "legacy": False,
                                                  "model_max_length": 2048}).encode(),
             "special_tokens_map.json": json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}).encode()}
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_the_export_of_a_sentencepiece_release_keeps_its_tokenizer_model(tmp_path):
    # MobileVLM's loader reads the tokenizer with AutoTokenizer(use_fast=False): LlamaTokenizer, which needs
    # tokenizer.model; transformers 5 writes only tokenizer.json, so the export (and a run's final/) lost it
    import sentencepiece
    from transformers import AutoTokenizer

    import model
    from deploy.hf import export

    from .test_checkpoints import write_mobilevlm_v2

    files = sentencepiece_files(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    source = write_mobilevlm_v2(tmp_path / "release", tokenizer, tie=False).directory
    (source / "tokenizer.json").unlink()
    for name, data in files.items():
        (source / name).write_bytes(data)
    vlm, processor = model.load(source)
    final = tmp_path / "final"  # what training writes: the processor saved, then read back by export
    processor.save_pretrained(final)
    assert (final / "tokenizer.model").read_bytes() == files["tokenizer.model"]
    vlm, processor = model.load(source)
    out = export(vlm, model.VLMProcessor.from_config(vlm.config, AutoTokenizer.from_pretrained(str(final))),
                 "mobilevlm", tmp_path / "out")
    assert (out / "tokenizer.model").read_bytes() == files["tokenizer.model"]
    text = "what red circle USER chat"
    ids = sentencepiece.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).encode(text)
    assert AutoTokenizer.from_pretrained(str(out))(text, add_special_tokens=False).input_ids == ids
