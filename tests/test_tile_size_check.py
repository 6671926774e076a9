"""One check, one message: a tiling whose tile size is not the vision tower's image size is refused by the pocket
reader and by every export (hf, internvl, onnx, executorch, tensorrt) in the same words, naming both sizes, the
source and the setting to change (there were five copies with five messages, two of them without the fix)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

import model
from deploy.executorch.export import write_executorch
from deploy.hf import export
from deploy.onnx.export import write_onnx
from deploy.tensorrt import write_tensorrt
from model.checkpoints.io import CheckpointError
from model.errors import PocketAdaptError
from model.vision import check_tile_size

SAID = "the tiling cuts 224 px tiles, but the vision tower takes 112 px images (vision_config.image_size); set " \
       "tiling.tile_size to 112, the tower's size"


@pytest.fixture(scope="module")
def tiny():
    return model.load("pocket-tiny-scratch")


def _bigger_tiles(vlm, processor):
    tiling = dataclasses.replace(processor.tiling, tile_size=224)
    vlm.config.tiling = tiling.to_dict()
    processor.tiling = tiling


def test_the_helper_names_both_sizes_the_source_and_the_fix(tiny):
    vlm, _ = tiny
    check_tile_size(112, vlm.config.vision_config, "x")  # the tower's size: nothing said
    with pytest.raises(PocketAdaptError, match=re.escape(f"recipe r.yaml: {SAID}")):
        check_tile_size(224, vlm.config.vision_config, "recipe r.yaml")
    wide = type(vlm.config.vision_config)(**{**vlm.config.vision_config.to_dict(), "image_size": [112, 84]})
    with pytest.raises(CheckpointError, match=re.escape("x: the tiling cuts 112 px tiles, but the vision tower "
                                                        "takes 112x84 px images (vision_config.image_size); tiles "
                                                        "are square")):
        check_tile_size(112, wide, "x", CheckpointError)


def test_pocket_reader_says_it(tmp_path, tiny):
    vlm, processor = tiny
    folder = model.save(vlm, processor, tmp_path / "ck")
    raw = json.loads((folder / "config.json").read_text())
    raw["tiling"]["tile_size"] = 224
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=re.escape(f"{folder / 'config.json'}: {SAID}")):
        model.load(folder)


@pytest.mark.parametrize("fmt", ["hf", "internvl", "onnx", "executorch"])
def test_every_export_says_it_before_writing(fmt, tmp_path):
    vlm, processor = model.load("pocket-tiny-scratch", chat_template="Hermes-2")
    _bigger_tiles(vlm, processor)
    if fmt in ("hf", "internvl"):
        with pytest.raises(PocketAdaptError, match=re.escape(f"cannot export to {fmt}: {SAID}")):
            export(vlm, processor, fmt, tmp_path / fmt)
        assert not (tmp_path / fmt).exists()
        return
    (tmp_path / fmt).mkdir()
    write = {"onnx": write_onnx, "executorch": write_executorch}[fmt]
    with pytest.raises(PocketAdaptError, match=re.escape(f"cannot export to {fmt}: {SAID}")):
        write(vlm, processor, tmp_path / fmt, progress=False)
    assert not any((tmp_path / fmt).iterdir())


def test_tensorrt_names_the_recipe(tmp_path, tiny):
    vlm, processor = tiny
    tiling = dataclasses.replace(processor.tiling, tile_size=224)
    with pytest.raises(PocketAdaptError, match=re.escape(f"recipe r.yaml: {SAID}")):
        write_tensorrt(vlm, processor, tmp_path, tiling=tiling, source="recipe r.yaml", progress=False)
    assert not any(tmp_path.iterdir())
