"""Vision-tower folders: what `adapt distill` writes and `model.vision` / `model.load(vision=...)` read.

A folder holds the tower as transformers saves it — `config.json` (the vision config, e.g. `model_type:
internvl_vision`) and `model.safetensors` with the tower's own key names, so `AutoModel.from_pretrained` reads
it too — plus `pocket_tower.json`: the tiling the tower was trained with and where it came from.

A distilled tower may carry its vision adapter: `vision_adapter.safetensors` (`weight`, `bias`: the learned
`nn.Linear(student width -> teacher width)` of the layer pair whose features the teacher VLM's projector reads) and
`vision_adapter.json` (the widths, that pair, the teacher VLM's `vision_feature_layer`, the teacher). A VLM of the
teacher's width that reads the same `vision_feature_layer` keeps its trained projector behind it
(`PocketVLM.replace_vision_tower`).

OpenGVLab's standalone InternViT releases (InternViT-6B-448px-V1-5, InternViT-300M-448px: `model_type:
intern_vit_6b`, remote code, fused `attn.qkv`) are read as well, through the original layout's key mapping.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
from torch import nn
from transformers import CONFIG_MAPPING, CLIPVisionConfig, PreTrainedConfig
from transformers.initialization import no_init_weights

from ..tiling import CLIP_MEAN, CLIP_STD, TilingConfig
from ..vision import VISION_CONFIGS, build_vision_tower, check_tile_size
from .io import (
    CONFIG_ERRORS,
    CheckpointError,
    _load_safetensors,
    honour_umask,
    load_strict,
    read_json,
    read_state_dict,
    write_json,
    write_state_dict,
)

TOWER_INFO = "pocket_tower.json"
ADAPTER_WEIGHTS = "vision_adapter.safetensors"
ADAPTER_INFO = "vision_adapter.json"
HUB_PREFIX = "hub:"
HUB_ID = re.compile(r"hub:[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
VLM_MODEL_TYPES = ("pocket_vlm", "internvl", "internvl_chat", "mobilevlm")


def is_tower_folder(directory: Path) -> bool:
    """A folder whose config.json is a vision config (not a whole VLM)."""
    config = Path(directory) / "config.json"
    if not config.is_file():
        return False
    raw = read_json(config)
    model_type = raw.get("model_type")
    return model_type not in VLM_MODEL_TYPES and "llm_config" not in raw and "mm_projector_type" not in raw \
        and "text_config" not in raw


def default_tiling(vision_config: PreTrainedConfig) -> TilingConfig:
    """The tiling a bare tower config implies: its image size, InternVL's tiles; CLIP's normalisation for CLIP."""
    size = vision_config.image_size if isinstance(vision_config.image_size, int) else int(vision_config.image_size[0])
    if isinstance(vision_config, CLIPVisionConfig):
        return TilingConfig(tile_size=size, mode="pad", max_tiles=1, thumbnail=False, mean=CLIP_MEAN, std=CLIP_STD)
    return TilingConfig(tile_size=size)


def save_tower(tower: nn.Module, tiling: TilingConfig, out_dir: Path, info: dict | None = None) -> Path:
    """Write `tower` (config.json, model.safetensors) and `pocket_tower.json` (tiling, `info`) to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tower.config.save_pretrained(str(out_dir))
    write_state_dict(out_dir, tower.state_dict())
    path = out_dir / TOWER_INFO
    path.write_text(json.dumps({"tiling": tiling.to_dict(), **(info or {})}, indent=1) + "\n", encoding="utf-8")
    honour_umask(path)
    return out_dir


def _tower_folder_config(directory: Path) -> tuple[PreTrainedConfig, TilingConfig]:
    """A tower folder's vision config and tiling, from its config.json and pocket_tower.json alone."""
    raw = read_json(directory / "config.json")
    model_type = raw.get("model_type")
    if model_type == "intern_vit_6b":
        from .original import vision_config_from_original

        where = f"{directory / 'config.json'}: InternViT config"
        config = vision_config_from_original(raw, raw.get("image_size"), where)
        return config, default_tiling(config)
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"{directory / 'config.json'}: model_type {model_type!r} is not a vision config "
                              "transformers knows (expected e.g. internvl_vision or clip_vision_model)")
    try:
        config = CONFIG_MAPPING[model_type].from_dict(raw)
    except CONFIG_ERRORS as err:
        raise CheckpointError(f"{directory / 'config.json'}: not a valid {model_type} config ({err})") from None
    tiling = default_tiling(config)
    info_path = directory / TOWER_INFO
    if info_path.is_file():
        stored = read_json(info_path).get("tiling")
        if not isinstance(stored, dict):
            raise CheckpointError(f"{info_path}: no 'tiling' mapping")
        try:
            tiling = TilingConfig.from_dict(stored)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{info_path}: bad tiling ({err})") from None
        check_tile_size(tiling.tile_size, config, str(info_path), CheckpointError)
    return config, tiling


def load_tower_folder(directory: Path, allow_pickle: bool = False) -> tuple[nn.Module, TilingConfig]:
    """The tower in a folder `save_tower` wrote (or transformers saved), and its tiling."""
    directory = Path(directory)
    raw = read_json(directory / "config.json")
    if raw.get("model_type") == "intern_vit_6b":
        return _load_internvit_original(directory, raw, allow_pickle)
    config, tiling = _tower_folder_config(directory)
    tower = _build_from_folder_config(config, directory)
    state = read_state_dict(directory, allow_pickle=allow_pickle)
    load_strict(tower, state, str(directory))
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    return tower.to(dtype), tiling


def _build_from_folder_config(config: PreTrainedConfig, directory: Path) -> nn.Module:
    """The tower `config` describes, weights uninitialised (they are read right after); CheckpointError naming the
    folder's config.json where the model refuses the config (e.g. a width no head count divides)."""
    try:
        with no_init_weights():
            return build_vision_tower(config)
    except CONFIG_ERRORS as err:
        raise CheckpointError(f"{directory / 'config.json'}: the tower cannot be built from this config "
                              f"({' '.join(str(err).split())})") from None


def _load_internvit_original(directory: Path, raw: dict, allow_pickle: bool) -> tuple[nn.Module, TilingConfig]:
    """A standalone InternViT in OpenGVLab's layout, as an `InternVLVisionModel`."""
    from .original import _vision_key, vision_config_from_original

    config = vision_config_from_original(raw, raw.get("image_size"), f"{directory / 'config.json'}: InternViT config")
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in read_state_dict(directory, allow_pickle=allow_pickle).items():
        _vision_key(key.removeprefix("vision_model."), tensor, converted, config)
    state = {k.removeprefix("vision_tower."): v for k, v in converted.items()}
    tower = _build_from_folder_config(config, directory)
    load_strict(tower, state, str(directory))
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    return tower.to(dtype), default_tiling(config)


def save_vision_adapter(adapter: nn.Linear, out_dir: Path, info: dict) -> Path:
    """Write `adapter` (student width -> teacher width) and what it maps into (`info`: teacher_width,
    vision_feature_layer, pair, teacher) next to a tower in `out_dir`."""
    out_dir = Path(out_dir)
    write_state_dict(out_dir, {k: v.float() for k, v in adapter.state_dict().items()}, ADAPTER_WEIGHTS)
    write_json(out_dir / ADAPTER_INFO, {"student_width": adapter.in_features, "teacher_width": adapter.out_features,
                                        **info})
    return out_dir / ADAPTER_WEIGHTS


def load_vision_adapter(directory: str | Path) -> tuple[nn.Linear, dict] | None:
    """The vision adapter a tower folder carries and its info; None for a folder without one (or not a folder)."""
    directory = Path(directory)
    weights, info_path = directory / ADAPTER_WEIGHTS, directory / ADAPTER_INFO
    if not weights.is_file():
        return None
    if not info_path.is_file():
        raise CheckpointError(f"{weights}: no {ADAPTER_INFO} beside it saying which widths it maps")
    info = read_json(info_path)
    state = _load_safetensors(weights)
    weight = state.get("weight")
    if weight is None or weight.ndim != 2 or "bias" not in state or \
            tuple(weight.shape) != (info.get("teacher_width"), info.get("student_width")):
        raise CheckpointError(f"{weights}: expected 'weight' ({info.get('teacher_width')}, {info.get('student_width')}) "
                              f"and 'bias' as {info_path.name} says; found {sorted(state)}")
    adapter = nn.Linear(weight.shape[1], weight.shape[0])
    load_strict(adapter, state, str(weights))
    return adapter, info


def load_vision(source: str | Path, config: dict | None = None, seed: int = 0,
                allow_pickle: bool = False) -> tuple[nn.Module, TilingConfig]:
    """A vision tower and its tiling from any source (`load_vision_feature`, without the feature layer)."""
    tower, tiling, _ = load_vision_feature(source, config, seed, allow_pickle)
    return tower, tiling


def load_vision_feature(source: str | Path, config: dict | None = None, seed: int = 0,
                        allow_pickle: bool = False) -> tuple[nn.Module, TilingConfig, int]:
    """A vision tower, its tiling and the `vision_feature_layer` its projector reads (the VLM's; -1, the tower's
    output, for a bare tower) from any source:

    - a tower folder (`save_tower`, `adapt distill`'s `final/`);
    - a VLM checkpoint folder in any layout, or a preset name: its vision tower (pocket-tiny's is trained);
    - a tower config name (`VISION_CONFIGS`: internvit-300m, internvit-6b, clip-vit-l14-336) with random weights
      (torch seed `seed`); `config` overrides its values (e.g. a tiny `hidden_size` for tests);
    - ``hub:OWNER/NAME``: a tower repository on the Hugging Face hub (config and safetensors fetched; needs network),
      e.g. ``hub:OpenGVLab/InternViT-6B-448px-V1-5``.
    """
    from ..loading import load, moved_aside_note
    from ..presets import PRESETS

    path = Path(source)
    if config and str(source) not in VISION_CONFIGS:
        raise CheckpointError(f"{source}: config overrides apply to the named tower configs "
                              f"({', '.join(VISION_CONFIGS)}) only; a checkpoint's config is its own")
    if str(source).startswith(HUB_PREFIX):
        from ..loading import hub_snapshot

        path = hub_snapshot(str(source)[len(HUB_PREFIX):], f"vision tower {source}", allow_pickle=allow_pickle,
                            instead_of=str(source),
                            where="the tower's folder where the recipe names it, e.g. model.vision: DIR")
    if path.is_dir():
        if is_tower_folder(path):
            return (*load_tower_folder(path, allow_pickle), -1)
        vlm, _ = load(path, allow_pickle=allow_pickle)
        return vlm.vision_tower, vlm.config.tiling_config, vlm.config.vision_feature_layer
    if str(source) in VISION_CONFIGS:
        try:
            vision_config = VISION_CONFIGS[str(source)](**(config or {}))
            torch.manual_seed(seed)
            tower = build_vision_tower(vision_config)  # shapes are checked only here (e.g. width / heads)
        except CONFIG_ERRORS as err:
            raise CheckpointError(f"{source}: bad config override {config or {}} ({err})") from None
        return tower, default_tiling(vision_config), -1
    if str(source) in PRESETS:
        vlm, _ = load(str(source), seed=seed)
        return vlm.vision_tower, vlm.config.tiling_config, vlm.config.vision_feature_layer
    if (moved := moved_aside_note(source)) is not None:
        raise CheckpointError(moved)
    raise CheckpointError(f"{source}: not a vision-tower folder, a checkpoint folder, a preset "
                          f"({', '.join(PRESETS)}) nor a tower config ({', '.join(VISION_CONFIGS)})")


def vision_config_feature(source: str | Path, config: dict | None = None
                          ) -> tuple[PreTrainedConfig, TilingConfig, int] | None:
    """What `load_vision_feature` would give for the tower — its vision config, tiling and feature layer — from config
    files alone: no weights read, nothing built, nothing fetched (a ``hub:`` tower is read from the hub cache; None
    when it is not there). For checks that must not wait for, or allocate, a whole tower (`adapt validate` on a
    distillation)."""
    from ..loading import load_config, moved_aside_note
    from ..presets import PRESETS

    path = Path(source)
    if str(source).startswith(HUB_PREFIX):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(source)[len(HUB_PREFIX):], "config.json")  # the disk only
        if not isinstance(cached, str):
            return None
        path = Path(cached).parent
    if path.is_dir() and is_tower_folder(path):
        return (*_tower_folder_config(path), -1)
    if str(source) in VISION_CONFIGS and not path.is_dir():
        try:
            vision_config = VISION_CONFIGS[str(source)](**(config or {}))
        except CONFIG_ERRORS as err:
            raise CheckpointError(f"{source}: bad config override {config or {}} ({err})") from None
        return vision_config, default_tiling(vision_config), -1
    if path.is_dir() or str(source) in PRESETS:
        vlm = load_config(path if path.is_dir() else str(source))
        return vlm.vision_config, TilingConfig.from_dict(vlm.tiling), vlm.vision_feature_layer
    if (moved := moved_aside_note(source)) is not None:
        raise CheckpointError(moved)
    raise CheckpointError(f"{source}: not a vision-tower folder, a checkpoint folder, a preset "
                          f"({', '.join(PRESETS)}) nor a tower config ({', '.join(VISION_CONFIGS)})")


def with_tower_preprocessing(model_tiling: TilingConfig, tower_tiling: TilingConfig) -> TilingConfig:
    """A VLM's tiling with the tower's tile size and normalisation (its tile counts stay the VLM's)."""
    return dataclasses.replace(model_tiling, tile_size=tower_tiling.tile_size, mean=tower_tiling.mean,
                               std=tower_tiling.std)
