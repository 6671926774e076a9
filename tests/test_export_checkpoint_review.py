"""Checkpoint exports (`adapt export -f hf | internvl | pocket`) read back as other tools read them."""

from __future__ import annotations

import dataclasses

import pytest

import model
from deploy.hf import ExportError, export


def _with_tiling(vlm, processor, **change):
    tiling = dataclasses.replace(processor.tiling, **change)
    vlm.config.tiling = tiling.to_dict()
    processor.tiling = tiling
    return tiling


@pytest.mark.parametrize("change", [{"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, {"mode": "pad"}])
def test_internvl_export_refuses_a_tiling_its_config_cannot_hold(change, tmp_path):
    """The original layout's config has no normalisation (InternVL's code and its reader use ImageNet's) and no
    padded or cropped single tile: such a model was written anyway and read back with other pixels (a SigLIP-style
    0.5 / 0.5 model came back with ImageNet's mean and std, 'pad' came back as 'resize'). Now refused, nothing
    written; hf keeps the normalisation."""
    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    tiling = _with_tiling(vlm, processor, **change)
    with pytest.raises(ExportError, match="cannot export to internvl: .*(normalisation|tiling mode)"):
        export(vlm, processor, "internvl", tmp_path / "orig")
    assert not (tmp_path / "orig").exists()
    if "mean" in change:
        again, proc = model.load(export(vlm, processor, "hf", tmp_path / "hf"))
        assert proc.tiling == tiling


def test_internvl_export_keeps_an_imagenet_resize_tiling(tmp_path):
    """What the layout does hold still exports and reads back the same: one squashed tile (dynamic_image_size
    false) with ImageNet's normalisation."""
    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    tiling = _with_tiling(vlm, processor, mode="resize")
    _, proc = model.load(export(vlm, processor, "internvl", tmp_path / "orig"))
    assert (proc.tiling.mode, proc.tiling.mean, proc.tiling.std) == (tiling.mode, tiling.mean, tiling.std)
