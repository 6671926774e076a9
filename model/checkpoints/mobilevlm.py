"""MobileVLM / MobileVLM V2 layout (`model_type: mobilevlm`, a LlamaConfig plus `mm_*` keys).

Keys: `model.vision_tower.vision_tower.*` (a CLIPVisionModel) → `vision_tower.*`;
`model.mm_projector.*` → `multi_modal_projector.*` (LDP / LDPv2 / MLP keys kept);
`model.*` → `language_model.model.*`; `lm_head.*` → `language_model.lm_head.*`.
The tower's config is not in the checkpoint: it comes from `mm_vision_tower` when that is a local
folder with a `config.json`, or from the built-in CLIP ViT-L/14-336 config for the OpenAI name.
Tying: `MobileLlamaForCausalLM` is a `LlamaForCausalLM` on this very config, so its `tie_word_embeddings`
(LlamaConfig default False) decides.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPConfig, CLIPVisionConfig, LlamaConfig

from ..projectors import projector_from_mobilevlm_type
from ..tiling import CLIP_MEAN, CLIP_STD, TilingConfig
from ..vision import clip_vit_l14_336_config
from ..vlm import PocketVLM, PocketVLMConfig
from .io import CheckpointError, load_vlm, read_json, read_state_dict

KNOWN_TOWERS = {"openai/clip-vit-large-patch14-336": clip_vit_l14_336_config}
IMAGE_CONTEXT = "<image>"  # MobileVLM's placeholder doubles as its image-context token


def vision_config_for(tower: str, directory: Path) -> CLIPVisionConfig:
    for candidate in (Path(tower), directory / tower):
        if (candidate / "config.json").is_file():
            raw = read_json(candidate / "config.json")
            if raw.get("model_type") == "clip":
                return CLIPConfig.from_dict(raw).vision_config
            return CLIPVisionConfig.from_dict(raw)
    if tower in KNOWN_TOWERS:
        return KNOWN_TOWERS[tower]()
    raise CheckpointError(
        f"{directory}: mm_vision_tower {tower!r} is neither a local folder with a config.json nor a known "
        f"tower ({', '.join(KNOWN_TOWERS)})"
    )


def config_from_mobilevlm(raw: dict, directory: Path, image_token_id: int) -> PocketVLMConfig:
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError(f"{directory}: mm_vision_select_feature {raw['mm_vision_select_feature']!r} is not supported (only 'patch')")
    if raw.get("mm_use_im_start_end") or raw.get("mm_use_im_patch_token"):
        raise CheckpointError(f"{directory}: mm_use_im_start_end / mm_use_im_patch_token are not supported")
    llm_fields = {k: v for k, v in raw.items() if not k.startswith("mm_") and k not in (
        "architectures", "model_type", "auto_map", "_name_or_path", "transformers_version", "torch_dtype",
        "vision_tower_type", "image_aspect_ratio", "use_mm_proj", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
        "max_sequence_length", "dtype", "image_grid_pinpoints")}
    if "rope_theta" in llm_fields:
        llm_fields["rope_parameters"] = {"rope_type": "default", "rope_theta": float(llm_fields.pop("rope_theta"))}
    text = LlamaConfig(**llm_fields)
    vision = vision_config_for(raw.get("mm_vision_tower", ""), directory)
    pad = raw.get("image_aspect_ratio", "pad") == "pad"
    return PocketVLMConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=int(raw.get("mm_vision_select_layer", -2)),
        projector_type=projector_from_mobilevlm_type(raw.get("mm_projector_type", "linear")),
        image_token_id=image_token_id,
        image_context_token=IMAGE_CONTEXT,
        image_start_token=None,
        image_end_token=None,
        tiling=TilingConfig(
            tile_size=_size(vision.image_size), max_tiles=1, thumbnail=False,
            mode="pad" if pad else "resize", mean=CLIP_MEAN, std=CLIP_STD,
        ).to_dict(),
        chat_template="vicuna_v1",
    )


def map_key(key: str) -> str:
    if key.startswith("model.vision_tower.vision_tower."):
        return "vision_tower." + key[len("model.vision_tower.vision_tower."):]
    if key.startswith("model.mm_projector."):
        return "multi_modal_projector." + key[len("model.mm_projector."):]
    if key.startswith("model."):
        return "language_model." + key
    if key.startswith("lm_head."):
        return "language_model." + key
    raise CheckpointError(f"unexpected key {key!r} in a MobileVLM checkpoint")


def load_mobilevlm(directory: Path, tokenizer, allow_pickle: bool = False) -> PocketVLM:
    directory = Path(directory)
    raw = read_json(directory / "config.json")
    if IMAGE_CONTEXT not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_CONTEXT], special_tokens=True)
    config = config_from_mobilevlm(raw, directory, tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT))
    state = {map_key(k): v for k, v in read_state_dict(directory, allow_pickle=allow_pickle).items()}
    if not any(k.startswith("vision_tower.") for k in state):
        raise CheckpointError(
            f"{directory}: no vision-tower weights (a MobileVLM V1 checkpoint takes them from the CLIP release; "
            "merge the tower into the checkpoint first)"
        )
    # CLIPVisionModel keeps position ids as a non-persistent buffer in recent transformers
    state = {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")}
    return load_vlm(config, state, str(directory), tie=config.text_config.tie_word_embeddings)


def _size(value) -> int:
    return value if isinstance(value, int) else int(value[0])
