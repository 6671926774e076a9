"""transformers-native InternVL layout (`model_type: internvl`, `InternVLForConditionalGeneration`).

Ours ↔ native is a prefix rename: `vision_tower.*` ↔ `model.vision_tower.*`, `multi_modal_projector.*`
↔ `model.multi_modal_projector.*`, `language_model.model.*` ↔ `model.language_model.*`,
`language_model.lm_head.*` ↔ `lm_head.*`. Legacy native layouts (no leading `model.`) load too.

Tying follows `InternVLForConditionalGeneration`, whose `_tied_weights_keys` tie `lm_head` to the LM's
embeddings under the top-level `tie_word_embeddings` (default True); `text_config.tie_word_embeddings` plays
no part, since the inner language model has no head of its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import AutoConfig, InternVLConfig, InternVLForConditionalGeneration

from ..tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, TilingError, warn_if_thumbnail_added
from ..vision import check_feature_layer, check_tile_size
from ..vlm import PocketVLM, PocketVLMConfig
from .io import (
    CONFIG_ERRORS,
    HEAD_KEY,
    SUB_CONFIG_KEYS,
    CheckpointError,
    build_empty,
    head_is_tied,
    load_strict,
    load_vlm,
    read_json,
    read_state_dict,
    require_config_keys,
    write_json,
)

SIDECAR = "pocket_adapt.json"  # our tiling + chat template, kept beside exported checkpoints
VIDEO_TOKEN = "<video>"  # transformers' InternVL video placeholder (its template renders a video item so)
# Keys transformers' `save_pretrained` always writes and whose `InternVLConfig` defaults (Qwen2 / InternViT-300M
# geometry, token 151667, ratio 0.5, layer -1) would silently misdescribe another model; the other keys'
# defaults (projector_hidden_act, vision_feature_select_strategy, tie_word_embeddings, ...) are taken as transformers
# takes them.
REQUIRED_KEYS = ("vision_config", "text_config", "image_token_id", "downsample_ratio", "vision_feature_layer")


def native_to_ours(key: str) -> str:
    for prefix in ("model.vision_tower.", "model.multi_modal_projector."):
        if key.startswith(prefix):
            return key[len("model."):]
    if key.startswith("model.language_model."):
        return "language_model.model." + key[len("model.language_model."):]
    if key.startswith("lm_head."):
        return "language_model." + key
    if key.startswith("language_model.") and not key.startswith(("language_model.model.", "language_model.lm_head.")):
        return "language_model.model." + key[len("language_model."):]  # legacy: LM without its inner `model.`
    return key


def ours_to_native(key: str) -> str:
    if key.startswith(("vision_tower.", "multi_modal_projector.")):
        return "model." + key
    if key.startswith("language_model.model."):
        return "model.language_model." + key[len("language_model.model."):]
    if key.startswith("language_model.lm_head."):
        return key[len("language_model."):]
    raise CheckpointError(f"cannot place key {key!r} in the native InternVL layout")


def config_from_native(native: InternVLConfig, directory: Path) -> PocketVLMConfig:
    sidecar = read_json(directory / SIDECAR) if (directory / SIDECAR).is_file() else {}
    tower = native.vision_config.image_size
    tower = int(tower[0] if isinstance(tower, (list, tuple)) else tower)
    tiling = sidecar.get("tiling") or tiling_from_preprocessor(directory, tower)
    source = SIDECAR if sidecar.get("tiling") else "preprocessor_config.json"
    try:
        tiling = TilingConfig.from_dict(tiling).to_dict()
    except TilingError as err:
        raise CheckpointError(f"{directory / source}: {err}") from None
    check_tile_size(tiling["tile_size"], native.vision_config, str(directory / source), CheckpointError)
    return PocketVLMConfig(
        vision_config=native.vision_config,
        text_config=native.text_config,
        vision_feature_layer=_single_layer(native, directory),
        projector_type="pixel_shuffle_mlp",
        projector_options={
            "downsample_ratio": native.downsample_ratio,
            "ps_version": "v2",
            "hidden_act": native.projector_hidden_act,
        },
        image_token_id=native.image_token_id,
        tiling=tiling,
        # native checkpoints (InternVL2.5 / 3) were trained with the internvl2_5 ChatML template
        chat_template=sidecar.get("chat_template", "internvl2_5"),
    )


def tiling_from_preprocessor(directory: Path, tile_size: int = 448) -> dict:
    """Tiling from a `preprocessor_config.json` written for `GotOcr2ImageProcessor[Pil]`; without one (a
    `save_pretrained` of the model and tokenizer only), InternVL's defaults at the tower's `tile_size`.

    Always InternVL's dynamic tiling: the file's ``crop_to_patches`` is GotOcr2's own default (false in the files
    transformers' converter wrote for the ``-hf`` checkpoints), which ``InternVLProcessor`` overrides with true at
    every call (its ``images_kwargs``), so transformers tiles these models whatever the file says."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return TilingConfig(tile_size=tile_size).to_dict()
    pre = read_json(path)
    size = pre.get("size") or {}
    try:
        return TilingConfig(
            tile_size=int(size.get("height", tile_size)),
            min_tiles=int(pre.get("min_patches", 1)),
            max_tiles=int(pre.get("max_patches", 12)),
            mode="dynamic",
            mean=tuple(pre.get("image_mean", IMAGENET_MEAN)),
            std=tuple(pre.get("image_std", IMAGENET_STD)),
        ).to_dict()
    except (TilingError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from None


def read_native_config(directory: Path) -> InternVLConfig:
    """The transformers-native InternVL config in `directory`; anything else is a `CheckpointError` naming it."""
    path = Path(directory) / "config.json"
    try:
        native = AutoConfig.from_pretrained(str(directory), trust_remote_code=False)  # never a config.json auto_map
    except CONFIG_ERRORS as err:
        # a missing key is what makes transformers' own check fail (num_hidden_layers)
        require_config_keys(path, read_json(path), REQUIRED_KEYS + SUB_CONFIG_KEYS)
        detail = " ".join(str(err).split())
        raise CheckpointError(f"{path}: not a valid transformers config ({type(err).__name__}: {detail})") from None
    if not isinstance(native, InternVLConfig):
        raise CheckpointError(f"{directory}: config.json is {native.model_type!r}, not transformers' 'internvl'")
    require_config_keys(path, read_json(path), REQUIRED_KEYS + SUB_CONFIG_KEYS)
    return native


def load_native(directory: Path, allow_pickle: bool = False) -> PocketVLM:
    native = read_native_config(directory)
    if native.vision_feature_select_strategy != "default":
        raise CheckpointError(f"{directory}: vision_feature_select_strategy {native.vision_feature_select_strategy!r} is not supported (only 'default': CLS dropped)")
    config = config_from_native(native, Path(directory))
    state = {native_to_ours(k): v for k, v in read_state_dict(Path(directory), allow_pickle=allow_pickle).items()}
    return load_vlm(config, state, str(directory), tie=native.tie_word_embeddings)


def native_config(config: PocketVLMConfig) -> InternVLConfig:
    """The `InternVLConfig` that describes `config`; only pixel-shuffle-MLP InternViT models have one.

    The top-level `tie_word_embeddings` (the one transformers reads) carries the LLM's tying.
    """
    options = config.projector_options
    if config.projector_type != "pixel_shuffle_mlp":
        raise CheckpointError(f"the native InternVL layout has no {config.projector_type!r} projector")
    if options.get("ps_version", "v2") != "v2":
        raise CheckpointError("the native InternVL layout implements pixel shuffle v2 only; this model uses v1")
    if options.get("pool", 1) != 1:
        raise CheckpointError(f"the native InternVL layout has no pooled pixel shuffle (pool {options['pool']}); "
                              "export this model as pocket or onnx")
    if config.vision_config.model_type != "internvl_vision":
        raise CheckpointError(f"the native InternVL layout needs an InternViT tower, not {config.vision_config.model_type!r}")
    return InternVLConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_id=config.image_token_id,
        image_seq_length=config.image_seq_length,
        downsample_ratio=options.get("downsample_ratio", 0.5),
        projector_hidden_act=options.get("hidden_act", "gelu"),
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=bool(getattr(config.text_config, "tie_word_embeddings", False)),
    )


def export_native(vlm: PocketVLM, processor, out_dir: Path) -> Path:
    """Write `out_dir` so `AutoModelForImageTextToText.from_pretrained(out_dir)` loads it as InternVL.

    The weights go through transformers' own `InternVLForConditionalGeneration.save_pretrained`, so
    the files are exactly what transformers itself writes for this model. With `processor`, the folder also holds
    what `InternVLProcessor` reads: the tokenizer with the model's chat template (`chat_template.jinja`, an image item
    rendered `<IMG_CONTEXT>` as transformers' InternVL template does), the GotOcr2 `preprocessor_config.json` and
    `processor_config.json` (`image_seq_length`), and `generation_config.json`'s ``eos_token_id`` is the
    processor's stop tokens.
    """
    out_dir = Path(out_dir)
    config = native_config(vlm.config)
    config.tie_word_embeddings = tied = head_is_tied(vlm)  # what the weights are, whatever the config says
    state = {ours_to_native(k): v for k, v in vlm.state_dict().items() if not (tied and k == HEAD_KEY)}
    hf = build_empty(InternVLForConditionalGeneration, config, vlm.dtype)
    load_strict(hf, state, "export", tied=["lm_head.weight"] if tied else [])
    if processor is not None:
        # generate stops where pocket-adapt stops: on the chat template's end token (an InternLM2 LLM's eos is </s>
        # while its answers end in <|im_end|>), as released -hf checkpoints list them
        hf.generation_config.eos_token_id = list(processor.stop_token_ids)
    hf.to(vlm.dtype).save_pretrained(str(out_dir), safe_serialization=True)
    if processor is not None:
        # transformers' InternVLProcessor reads its placeholders <IMG_CONTEXT> / <video> from the rendered chat
        processor.save_pretrained(out_dir, image_token=vlm.config.image_context_token, video_token=VIDEO_TOKEN)
        _name_internvl_tokens(out_dir / "tokenizer_config.json", processor)
        write_json(out_dir / "preprocessor_config.json", _preprocessor_config(processor.tiling))
        write_json(out_dir / "processor_config.json",
                   {"processor_class": "InternVLProcessor", "image_seq_length": vlm.config.image_seq_length})
    write_json(out_dir / SIDECAR, {"tiling": vlm.config.tiling, "chat_template": vlm.config.chat_template})
    return out_dir


def _name_internvl_tokens(path: Path, processor) -> None:
    """`InternVLProcessor` reads its image and video tokens from the tokenizer's ``extra_special_tokens``; an
    original-layout tokenizer (a released InternVL2's Qwen2 / InternLM2 one) has none, so it could not load the
    export. Named here as transformers' own InternVL converter names them (a ``<video>`` the vocabulary lacks is
    added by transformers when it loads the tokenizer; it only matters for video input)."""
    config = read_json(path)
    extra = config.get("extra_special_tokens")
    extra = dict(extra) if isinstance(extra, dict) else {}
    wanted = {"start_image_token": processor.image_start_token or "<img>",
              "end_image_token": processor.image_end_token or "</img>",
              "context_image_token": processor.image_context_token, "video_token": VIDEO_TOKEN}
    if any(extra.get(k, config.get(k)) != v for k, v in wanted.items()):  # transformers 5 saves them top level
        write_json(path, {**config, "extra_special_tokens": {**extra, **wanted}})


def _preprocessor_config(tiling: TilingConfig) -> dict:
    if tiling.mode == "resize":  # one tile, the whole image squashed to it: GotOcr2 without cropping
        return {**gotocr2_preprocessor_config(dataclasses.replace(tiling, min_tiles=1, max_tiles=1)),
                "crop_to_patches": False}
    if tiling.mode != "dynamic":
        raise CheckpointError(f"GotOcr2 image processors implement dynamic tiling and one resized tile only, not "
                              f"mode {tiling.mode!r}")
    warn_if_thumbnail_added(tiling, "transformers' InternVL image processor (GotOcr2)")
    return gotocr2_preprocessor_config(tiling)


def gotocr2_preprocessor_config(tiling: TilingConfig) -> dict:
    """`GotOcr2ImageProcessor` settings (transformers' InternVL image processor) for `tiling`'s sizes, unchecked:
    they cut our tiles only for a dynamic tiling with a thumbnail."""
    return {
        "image_processor_type": "GotOcr2ImageProcessor",
        "crop_to_patches": True,
        "min_patches": tiling.min_tiles,
        "max_patches": tiling.max_tiles,
        "size": {"height": tiling.tile_size, "width": tiling.tile_size},
        "do_resize": True,
        "resample": 3,  # bicubic
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(tiling.mean),
        "image_std": list(tiling.std),
        "do_convert_rgb": True,
    }


def _single_layer(native: InternVLConfig, directory: Path) -> int:
    layer, name = native.vision_feature_layer, f"{directory / 'config.json'}: vision_feature_layer"
    if isinstance(layer, (list, tuple)):
        raise CheckpointError(f"{name}: a list of layers is not supported; give one layer index")
    return check_feature_layer(layer, native.vision_config.num_hidden_layers, name, CheckpointError)
