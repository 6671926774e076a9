"""A transformers-native InternVL config.json must say what transformers itself writes: its geometry keys."""

from __future__ import annotations

import json
import shutil

import pytest

import model
from model.checkpoints.io import CheckpointError
from model.checkpoints.native import REQUIRED_KEYS
from model.loading import load_config


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_a_native_config_without_a_geometry_key_is_an_error_naming_file_and_key(key, tmp_path, native_dir):
    """It loaded with InternVLConfig's defaults (token 151667, ratio 0.5, layer -1, InternViT-300M / Qwen2)."""
    directory = shutil.copytree(native_dir, tmp_path / "native")
    config = json.loads((directory / "config.json").read_text())
    del config[key]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"native/config\.json: no {key};"):
        model.load(directory)
    with pytest.raises(CheckpointError, match=rf"native/config\.json: no {key};"):
        load_config(directory)


def test_a_bare_model_type_names_every_missing_key(tmp_path, native_dir):
    directory = shutil.copytree(native_dir, tmp_path / "native")
    (directory / "config.json").write_text(json.dumps({"model_type": "internvl"}))
    with pytest.raises(CheckpointError, match=", ".join(REQUIRED_KEYS)):
        load_config(directory)


def test_a_complete_native_config_still_loads(native_dir):
    assert load_config(native_dir).vision_feature_layer == -1
