"""pocket-adapt's own layout (`model_type: pocket_vlm`): what `model.save` and `adapt export -f pocket` write.

Read through the same `read_state_dict` as every other layout, so the pickle gate, the corrupt-file errors and
the tying rules are the same everywhere. Weights keep the dtype they were saved in (as transformers'
`from_pretrained` does by default).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..vision import check_tile_size
from ..vlm import PocketVLM, PocketVLMConfig
from .io import (
    CONFIG_ERRORS,
    SUB_CONFIG_KEYS,
    CheckpointError,
    load_vlm,
    read_json,
    read_state_dict,
    require_config_keys,
    stored_dtype,
)


def config_from_pocket(path: Path) -> PocketVLMConfig:
    """The `PocketVLMConfig` in `path` (a `config.json`); a bad field is a `CheckpointError` naming the file."""
    raw = read_json(path)
    require_config_keys(path, raw, ("vision_config", "text_config") + SUB_CONFIG_KEYS)
    try:
        config = PocketVLMConfig.from_dict(raw)
    except (*CONFIG_ERRORS, AttributeError) as err:
        raise CheckpointError(f"{path}: not a valid pocket_vlm config ({err})") from None
    check_tile_size(config.tiling_config.tile_size, config.vision_config, str(path), CheckpointError)
    return config


def load_pocket(directory: Path, allow_pickle: bool = False) -> PocketVLM:
    directory = Path(directory)
    config = config_from_pocket(directory / "config.json")
    state = read_state_dict(directory, allow_pickle=allow_pickle)
    dtype = _stored_dtype(config, state)
    return load_vlm(config, state, str(directory), tie=bool(config.text_config.tie_word_embeddings), dtype=dtype)


def _stored_dtype(config: PocketVLMConfig, state: dict[str, torch.Tensor]) -> torch.dtype:
    """The config's `dtype` when it names one, else the one most of the weights are stored in."""
    named = getattr(config, "dtype", None)
    if isinstance(named, torch.dtype):
        return named
    if isinstance(named, str) and isinstance(getattr(torch, named, None), torch.dtype):
        return getattr(torch, named)
    return stored_dtype(state)
