"""A checkpoint's vision_config / text_config must hold the keys that fix its geometry: their class defaults
(InternViT-300M, Qwen2-7B) would build another model than the weights' without a word."""

from __future__ import annotations

import json
import shutil

import pytest

import model
from model.checkpoints.io import SUB_CONFIG_KEYS, CheckpointError
from model.loading import load_config


@pytest.fixture(scope="module")
def pocket_dir(tmp_path_factory):
    vlm, processor = model.load("pocket-tiny-scratch")
    return model.save(vlm, processor, tmp_path_factory.mktemp("pocket") / "ckpt")


def _without(source, tmp_path, path: str):
    directory = shutil.copytree(source, tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    section, key = path.split(".")
    del config[section][key]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("path", SUB_CONFIG_KEYS)
@pytest.mark.parametrize("layout", ["native", "pocket"])
def test_a_config_without_an_inner_geometry_key_is_an_error_naming_file_and_key_path(
        layout, path, tmp_path, request):
    directory = _without(request.getfixturevalue(f"{layout}_dir"), tmp_path, path)
    with pytest.raises(CheckpointError, match=rf"ckpt/config\.json: no {path.replace('.', '[.]')};"):
        load_config(directory)


@pytest.mark.parametrize("layout", ["native", "pocket"])
def test_load_names_the_key_path_before_reading_weights(layout, tmp_path, request):
    directory = _without(request.getfixturevalue(f"{layout}_dir"), tmp_path, "vision_config.hidden_size")
    with pytest.raises(CheckpointError, match=r"no vision_config[.]hidden_size;"):
        model.load(directory)


def test_a_pocket_config_without_a_section_names_it_once(pocket_dir, tmp_path):
    directory = shutil.copytree(pocket_dir, tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    del config["text_config"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: no text_config;"):
        load_config(directory)


@pytest.mark.parametrize("layout", ["native", "pocket"])
def test_complete_configs_still_load(layout, request):
    assert load_config(request.getfixturevalue(f"{layout}_dir")).vision_config.hidden_size > 0
