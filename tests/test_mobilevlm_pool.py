"""MobileVLM V2's LDPv2 pools every tower's grid to a fixed 12x12 (mobilevlm.md §2): presets and template agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_the_mobilevlm_v2_presets_pool_to_12x12_as_a_v2_checkpoint_is_read():
    """The presets' config (what `adapt validate` / `inspect` read, and a replaced tower's projector keeps) said ldpv2
    with no options (half the grid: 256 tokens from a 448 px tower) where a released V2 is read with pooled_grid 12."""
    from model.checkpoints.mobilevlm import config_from_mobilevlm
    from model.loading import load_config
    from model.projectors import projector_tokens

    released = {"model_type": "mobilevlm", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "vocab_size": 100, "mm_projector_type": "ldpnetv2",
                "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_vision_select_layer": -2,
                "image_aspect_ratio": "pad"}
    read = config_from_mobilevlm(released, Path("."), 0)
    for name in ("mobilevlm-v2-1.7b", "mobilevlm-v2-3b"):
        preset = load_config(name)
        assert preset.projector_options == read.projector_options == {"pooled_grid": 12}
        assert projector_tokens("ldpv2", 32, 32, **preset.projector_options) == 144


def test_the_template_says_how_a_fresh_ldpv2_pools_as_mobilevlm_v2(tmp_path):
    from adapt.recipe import copy_recipe_template, load_recipe

    path = copy_recipe_template("remote-sensing_mobilevlm-v2_full", tmp_path)
    assert "{pooled_grid: 12}" in path.read_text()
    recipe = load_recipe(path, ["model.projector=ldpv2", "model.projector_options={pooled_grid: 12}"])
    assert recipe.model.projector_options == {"pooled_grid": 12}


# a MobileVLM config's language-model geometry (its top level), as save_pretrained writes it
_LLM = {"model_type": "mobilevlm", "mm_projector_type": "ldpnetv2", "vocab_size": 100, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4}


@pytest.mark.parametrize("missing", [("hidden_size",), ("vocab_size", "num_attention_heads")])
def test_a_mobilevlm_config_without_its_llm_geometry_is_refused_naming_the_file(tmp_path, missing):
    """LlamaConfig filled a missing hidden_size / vocab_size / layer or head count with Llama-7B's: `adapt inspect`
    described a 7B model and a load failed on shape mismatches; it is refused naming the file and the keys."""
    from model.checkpoints.io import CheckpointError
    from model.loading import load_config

    (tmp_path / "config.json").write_text(json.dumps({
        **{k: v for k, v in _LLM.items() if k not in missing}, "mm_vision_tower": "openai/clip-vit-large-patch14-336"}))
    with pytest.raises(CheckpointError) as caught:
        load_config(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'config.json'}: no {', '.join(missing)}; "), str(caught.value)


@pytest.mark.parametrize("fields", [{"hidden_size": "x"}, {"num_attention_heads": 0}, {"hidden_size": 64, "num_attention_heads": 5}])
def test_a_mobilevlm_config_with_bad_llm_fields_is_one_checkpoint_error(tmp_path, fields):
    """transformers 5's strict LlamaConfig raised its own StrictDataclassError (or a ZeroDivisionError) through
    model.load and adapt validate as a traceback."""
    from model.checkpoints.io import CheckpointError
    from model.loading import load_config

    (tmp_path / "config.json").write_text(json.dumps({
        **_LLM, "mm_vision_tower": "openai/clip-vit-large-patch14-336", **fields}))
    with pytest.raises(CheckpointError, match=r"config.json: its language-model fields are not a valid LLaMA config"):
        load_config(tmp_path)


@pytest.mark.parametrize("value,message", [
    ("x", "must be a layer index (an int; -1 is the last layer), got 'x'"),
    (None, "must be a layer index (an int; -1 is the last layer), got None"),
    ([-2], "must be a layer index"),
    (-40, "vision_feature_layer -40 is out of range for a tower of 24 layers"),
])
def test_a_bad_mm_vision_select_layer_is_one_checkpoint_error(tmp_path, value, message):
    """It was read with int(): a string, null or a list raised ValueError / TypeError as a traceback (adapt tiles
    --model DIR), and a layer the tower does not have was taken until the first image."""
    import re

    from model.checkpoints.io import CheckpointError
    from model.loading import load_config

    (tmp_path / "config.json").write_text(json.dumps({
        **_LLM, "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_vision_select_layer": value}))
    with pytest.raises(CheckpointError, match=re.escape(f"config.json: mm_vision_select_layer: {message}")):
        load_config(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "mm_vision_select_layer": -2}))
    assert load_config(tmp_path).vision_feature_layer == -2
