"""Vision towers built from transformers classes, and feature-layer selection.

InternViT is `InternVLVisionModel` (`model_type="internvl_vision"`); MobileVLM's CLIP ViT-L/14-336 is
`CLIPVisionModel` (`"clip_vision_model"`). Any vision config `AutoModel` can build works, as long as
its output is a square grid of patch tokens (optionally preceded by one CLS token).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, CLIPVisionConfig, InternVLVisionConfig, PreTrainedConfig

from .errors import ModelConfigError


def build_vision_tower(vision_config: PreTrainedConfig) -> nn.Module:
    """A randomly initialised tower for `vision_config` (weights come from a checkpoint later)."""
    return AutoModel.from_config(vision_config)


def patch_grid(vision_config: PreTrainedConfig) -> tuple[int, int]:
    """(rows, cols) of patch tokens one tile yields."""
    image = _pair(vision_config.image_size)
    patch = _pair(vision_config.patch_size)
    return image[0] // patch[0], image[1] // patch[1]


def check_tile_size(tile_size: int, vision_config: PreTrainedConfig, source: str,
                    error: type[Exception] = ModelConfigError) -> None:
    """`error` naming `source` when a tiling cuts tiles of another size than the vision tower takes: the tower
    would embed them at another patch grid, so every image's features would disagree with its image tokens."""
    size = getattr(vision_config, "image_size", None)
    if size is None:
        return
    rows, cols = _pair(size)
    if (rows, cols) == (tile_size, tile_size):
        return
    shown = rows if rows == cols else f"{rows}x{cols}"
    fix = (f"set tiling.tile_size to {rows}, the tower's size" if rows == cols
           else "tiles are square, so this tower cannot take them")
    raise error(f"{source}: the tiling cuts {tile_size} px tiles, but the vision tower takes {shown} px images "
                f"(vision_config.image_size); {fix}")


def select_features(tower: nn.Module, pixel_values: torch.Tensor, feature_layer: int = -1) -> torch.Tensor:
    """Patch features `(tiles, rows*cols, C)` from layer `feature_layer`, CLS dropped.

    -1 is the tower's `last_hidden_state` (InternVL's `select_layer=-1`); any other k indexes
    `hidden_states` (L+1 entries, 0 = embeddings), so -2 is the output of the second-to-last layer
    (MobileVLM's `mm_vision_select_layer=-2`).
    """
    if feature_layer == -1:
        hidden = tower(pixel_values=pixel_values).last_hidden_state
    else:
        hidden = tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states[feature_layer]
    return patch_tokens(tower, pixel_values, hidden)


def layer_features(tower: nn.Module, pixel_values: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    """Patch features `(tiles, rows*cols, C)` after each of `layers` (1-based block numbers: `hidden_states[k]`).

    The last block's are the tower's output, `last_hidden_state` (a final norm included, where the tower has one):
    exactly what a VLM with `vision_feature_layer=-1` feeds its projector (`select_features`)."""
    out = tower(pixel_values=pixel_values, output_hidden_states=True)
    last = len(out.hidden_states) - 1
    return [patch_tokens(tower, pixel_values, out.last_hidden_state if k == last else out.hidden_states[k])
            for k in layers]


def feature_block(depth: int, feature_layer: int) -> int:
    """The 1-based block whose output `select_features(..., feature_layer)` reads, in a tower of `depth` blocks
    (-1: the last; -2: the one before; k >= 0: `hidden_states[k]`, 0 = the embeddings)."""
    block = depth + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 0 <= block <= depth:
        raise ModelConfigError(f"vision_feature_layer {feature_layer} is out of range for a tower of {depth} layers")
    return block


def paired_block(depth: int, feature_layer: int) -> int | None:
    """The block k whose `layer_features(tower, pixels, [k])` are `select_features(tower, pixels, feature_layer)`
    in every tower of `depth` blocks; None where none is: a layer the tower lacks, or a k other than -1 naming the
    last block (`hidden_states[k]`, before a final norm where the tower has one; `layer_features` gives the output)."""
    try:
        block = feature_block(depth, feature_layer)
    except ModelConfigError:
        return None
    return None if block == depth and feature_layer != -1 else block


def check_feature_layer(layer: object, depth: int, name: str, error: type[Exception] = ModelConfigError) -> int:
    """`layer`, a checkpoint config's `name`, as the int layer index of a tower of `depth` blocks; else `error`
    naming `name` (a string, null or list was read with int() as a traceback, a layer the tower lacks was taken
    until the first image)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise error(f"{name}: must be a layer index (an int; -1 is the last layer), got {layer!r}")
    try:
        feature_block(depth, layer)
    except ModelConfigError as err:
        raise error(f"{name}: {err}") from None
    return layer


def patch_tokens(tower: nn.Module, pixel_values: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """`hidden` without its CLS token, if it has one."""
    patch = _pair(tower.config.patch_size)
    n_patches = (pixel_values.shape[-2] // patch[0]) * (pixel_values.shape[-1] // patch[1])
    extra = hidden.shape[1] - n_patches
    if extra not in (0, 1):
        raise ModelConfigError(
            f"vision tower returned {hidden.shape[1]} tokens for {n_patches} patches; "
            "expected the patch grid, optionally preceded by one CLS token"
        )
    return hidden[:, extra:, :]


def internvit_config(size: str = "300m", **overrides) -> InternVLVisionConfig:
    """InternViT configs as embedded in released InternVL2 checkpoints (class defaults differ: set all)."""
    if size == "300m":
        values = dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            attention_bias=True, use_qk_norm=False, norm_type="layer_norm", layer_norm_eps=1e-6,
        )
    elif size == "6b":
        values = dict(
            hidden_size=3200, num_hidden_layers=45, num_attention_heads=25, intermediate_size=12800,
            attention_bias=False, use_qk_norm=True, norm_type="rms_norm", layer_norm_eps=1e-6,
        )
    else:
        raise ModelConfigError(f"unknown InternViT size {size!r}; known: '300m', '6b'")
    values.update(image_size=448, patch_size=14, hidden_act="gelu", use_mean_pooling=True)
    values.update(overrides)
    return InternVLVisionConfig(**values)


def clip_vit_l14_336_config(**overrides) -> CLIPVisionConfig:
    """OpenAI CLIP ViT-L/14-336 vision config (MobileVLM's tower)."""
    values = dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )
    values.update(overrides)
    return CLIPVisionConfig(**values)


# Tower configs by name (random weights): teachers and students for `adapt distill`, `model.vision`.
VISION_CONFIGS = {
    "internvit-300m": lambda **o: internvit_config("300m", **o),
    "internvit-6b": lambda **o: internvit_config("6b", **o),
    "clip-vit-l14-336": clip_vit_l14_336_config,
}


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
