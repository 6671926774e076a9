"""Checkpoints as users bring them: configs and weight files that real releases (and real mistakes) have."""

from __future__ import annotations

import pytest

import model
from model.checkpoints import CheckpointError

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
