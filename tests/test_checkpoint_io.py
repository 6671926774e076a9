"""model/checkpoints/io.py: reading a checkpoint directory's weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoints.io import CheckpointError, read_state_dict


def _sharded(directory: Path, fmt: str, shards: dict[str, dict[str, torch.Tensor]], weight_map: dict[str, str]) -> None:
    directory.mkdir()
    for name, tensors in shards.items():
        if fmt == "safetensors":
            save_file(tensors, str(directory / name))
        else:
            torch.save(tensors, directory / name)
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (directory / index).write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("fmt", ["safetensors", "pickle"])
def test_a_sharded_checkpoint_is_read_by_its_index(tmp_path, fmt):
    """A stray copy of a tensor in a shard the index does not place it in is not read (the index's one is), and a
    tensor the index places in a shard that lacks it is an error naming that shard: pickle shards as safetensors."""
    ext = "safetensors" if fmt == "safetensors" else "bin"
    a, b, stray = torch.ones(2), torch.full((3,), 2.0), torch.zeros(2)
    _sharded(tmp_path / "ok", fmt, {f"1.{ext}": {"a": a}, f"2.{ext}": {"b": b, "a": stray}},
             {"a": f"1.{ext}", "b": f"2.{ext}"})
    state = read_state_dict(tmp_path / "ok", allow_pickle=True)
    assert state.keys() == {"a", "b"} and torch.equal(state["a"], a) and torch.equal(state["b"], b)

    _sharded(tmp_path / "moved", fmt, {f"1.{ext}": {"a": a}, f"2.{ext}": {"b": b}}, {"a": f"2.{ext}", "b": f"2.{ext}"})
    with pytest.raises(CheckpointError, match=rf"2\.{ext}: lacks 1 tensor\(s\) .*index\.json places in it \(\['a'\]\)"):
        read_state_dict(tmp_path / "moved", allow_pickle=True)


@pytest.mark.parametrize("payload", [torch.zeros(2), {"state_dict": {"a": torch.zeros(2)}}, [torch.zeros(2)]])
def test_a_pickle_that_is_no_state_dict_is_named(tmp_path, payload):
    torch.save(payload, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: holds .*not a state dict of tensor names"):
        read_state_dict(tmp_path, allow_pickle=True)


@pytest.mark.parametrize("fmt", ["safetensors", "pickle"])
def test_a_tensor_in_two_files_without_an_index_is_refused(tmp_path, fmt):
    """With no index, every weight file was merged and a tensor in two of them taken from the last one read,
    without a word; files holding different tensors still merge."""
    ext = "safetensors" if fmt == "safetensors" else "bin"
    _sharded(tmp_path / "apart", fmt, {f"pytorch_model-1.{ext}": {"a": torch.ones(2)},
                                       f"pytorch_model-2.{ext}": {"b": torch.zeros(3)}}, {})
    for index in tmp_path.joinpath("apart").glob("*.index.json"):
        index.unlink()
    assert read_state_dict(tmp_path / "apart", allow_pickle=True).keys() == {"a", "b"}

    _sharded(tmp_path / "both", fmt, {f"pytorch_model-1.{ext}": {"a": torch.ones(2), "b": torch.ones(1)},
                                      f"pytorch_model-2.{ext}": {"a": torch.zeros(2), "b": torch.zeros(1)}}, {})
    for index in tmp_path.joinpath("both").glob("*.index.json"):
        index.unlink()
    with pytest.raises(CheckpointError, match=rf"tensor 'a' \(and 1 more\) is in both pytorch_model-1\.{ext} and "
                                              rf"pytorch_model-2\.{ext}"):
        read_state_dict(tmp_path / "both", allow_pickle=True)
