"""A pocket checkpoint whose config names no dtype loads in the dtype most of its weights are stored in."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

import model


def test_a_pocket_checkpoint_without_config_dtype_loads_in_its_weights_majority_dtype(tmp_path):
    """It took the first tensor's dtype: one float32 tensor first made a bfloat16 checkpoint load as float32."""
    vlm, processor = model.load("pocket-tiny")
    folder = model.save(vlm.to(torch.bfloat16), processor, tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config))
    state = load_file(str(folder / "model.safetensors"))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].float()  # one small float32 tensor, as a mixed-precision save keeps norms
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    loaded, _ = model.load(folder)
    assert loaded.dtype == torch.bfloat16
