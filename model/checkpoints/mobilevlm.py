"""MobileVLM / MobileVLM V2 layout (`model_type: mobilevlm`, a LlamaConfig plus `mm_*` keys): read and write.

Keys: `model.vision_tower.vision_tower.vision_model.*` (a transformers 4.x CLIPVisionModel) ↔ `vision_tower.*`;
`model.mm_projector.*` ↔ `multi_modal_projector.*` (LDP / LDPv2 / MLP keys kept);
`model.*` ↔ `language_model.model.*`; `lm_head.*` ↔ `language_model.lm_head.*`.
The tower's config is not in the checkpoint: it comes from `mm_vision_tower` when that is a local
folder with a `config.json` (absolute, or relative to the checkpoint), or from the built-in CLIP ViT-L/14-336
config for the OpenAI name.
Tying: `MobileLlamaForCausalLM` is a `LlamaForCausalLM` on this very config, so its `tie_word_embeddings`
(LlamaConfig default False) decides.

`export_mobilevlm` writes the V2 layout (LDPv2, `mm_projector_type: ldpnetv2`). MobileVLM's scripts build the
tower with `CLIPVisionModel.from_pretrained(mm_vision_tower)` and its image processor from the same folder
before the checkpoint's own `model.vision_tower.*` weights are loaded over it (V2); V1-style loading keeps the
folder's weights instead. So the export holds the (possibly adapted) tower twice: in the checkpoint, as a real
V2 checkpoint does, and as a CLIP folder `vision_tower/` (config, weights, preprocessor config) that
`mm_vision_tower` names by absolute path (MobileVLM resolves it from the working directory, not the checkpoint).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPVisionConfig, LlamaConfig, PreTrainedConfig

from ..projectors import projector_from_mobilevlm_type
from ..tiling import CLIP_MEAN, CLIP_STD, TilingConfig
from ..vision import check_feature_layer, check_tile_size, clip_vit_l14_336_config
from ..vlm import PocketVLM, PocketVLMConfig
from .io import (
    CONFIG_ERRORS,
    HEAD_KEY,
    LLM_GEOMETRY_KEYS,
    CheckpointError,
    head_is_tied,
    load_vlm,
    read_json,
    read_state_dict,
    require_config_keys,
    wrapper_hint,
    write_json,
    write_state_dict,
)

KNOWN_TOWERS = {"openai/clip-vit-large-patch14-336": clip_vit_l14_336_config}
IMAGE_CONTEXT = "<image>"  # MobileVLM's placeholder doubles as its image-context token
TOWER_FOLDER = "vision_tower"  # the CLIP folder an export writes and names in mm_vision_tower
V2_TOKENS = 144  # LDPNetV2Projector's TokenDownLayer pools to a fixed 12x12 grid
# Keys a transformers 5 LlamaConfig writes that MobileVLM's (transformers 4.33) configs do not have, or spell
# otherwise (rope_parameters → rope_theta / rope_scaling, dtype → torch_dtype).
_V5_ONLY = ("rope_parameters", "dtype", "head_dim", "layer_types", "output_hidden_states", "return_dict",
            "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
            "output_attentions", "_name_or_path", "transformers_version")


def vision_config_for(tower: str, directory: Path) -> CLIPVisionConfig:
    if not isinstance(tower, str) or not tower.strip():
        # an empty name would make the checkpoint folder itself (its LLM config.json) the tower's folder
        raise CheckpointError(
            f"{directory / 'config.json'}: mm_vision_tower must name the CLIP tower (a folder with a config.json, or "
            f"{', '.join(KNOWN_TOWERS)}), got {tower!r}"
        )
    # the last candidate finds an export's own tower folder after the export was moved
    for candidate in (Path(tower), directory / tower, directory / Path(tower).name):
        if (candidate / "config.json").is_file():
            raw = read_json(candidate / "config.json")
            kind = raw.get("model_type")
            if kind == "clip":
                return CLIPConfig.from_dict(raw).vision_config
            if kind not in (None, "clip_vision_model"):
                raise CheckpointError(
                    f"{candidate / 'config.json'} (mm_vision_tower {tower!r}) describes a {kind!r} model, not a CLIP "
                    "vision tower (model_type 'clip' or 'clip_vision_model'), which MobileVLM's vision_tower_type "
                    "'clip' needs"
                )
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
    if llm_fields.get("rope_scaling", "absent") is None:  # transformers 4.x writes an explicit null
        del llm_fields["rope_scaling"]
    if "rope_theta" in llm_fields:
        llm_fields["rope_parameters"] = {"rope_type": "default", "rope_theta": float(llm_fields.pop("rope_theta"))}
    # LlamaConfig would take Llama-7B's geometry for a missing one
    require_config_keys(directory / "config.json", raw, LLM_GEOMETRY_KEYS)
    try:
        text = LlamaConfig(**llm_fields)
    except CONFIG_ERRORS as err:
        detail = " ".join(str(err).split())
        raise CheckpointError(f"{directory / 'config.json'}: its language-model fields are not a valid LLaMA config "
                              f"({type(err).__name__}: {detail})") from None
    vision = vision_config_for(raw.get("mm_vision_tower"), directory)
    layer = check_feature_layer(raw.get("mm_vision_select_layer", -2), vision.num_hidden_layers,
                                f"{directory / 'config.json'}: mm_vision_select_layer", CheckpointError)
    # MobileVLM's process_images pads only for 'pad'; any other value, or none, is CLIPImageProcessor's
    # shortest-edge resize and centre crop (mobilevlm.md §5)
    pad = raw.get("image_aspect_ratio") == "pad"
    projector = projector_from_mobilevlm_type(raw.get("mm_projector_type", "linear"))
    # LDPNetV2Projector's TokenDownLayer pools every grid to a fixed 12x12; our default halves the grid, which is the
    # same only for CLIP-L/336's 24x24
    options = {"pooled_grid": 12} if projector == "ldpv2" else {}
    return PocketVLMConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=layer,
        projector_type=projector,
        projector_options=options,
        image_token_id=image_token_id,
        image_context_token=IMAGE_CONTEXT,
        image_start_token=None,
        image_end_token=None,
        tiling=TilingConfig(
            tile_size=_size(vision.image_size), max_tiles=1, thumbnail=False,
            mode="pad" if pad else "crop", mean=CLIP_MEAN, std=CLIP_STD,
        ).to_dict(),
        chat_template="vicuna_v1",
    )


def map_key(key: str) -> str:
    if key.startswith("model.vision_tower.vision_tower."):
        # released files come from transformers 4.x, whose CLIPVisionModel kept its modules under `vision_model.`
        # (transformers 5 dropped that level; it strips the prefix in from_pretrained, and so do we)
        return "vision_tower." + key[len("model.vision_tower.vision_tower."):].removeprefix("vision_model.")
    if key.startswith("model.mm_projector."):
        return "multi_modal_projector." + key[len("model.mm_projector."):]
    if key.startswith("model."):
        return "language_model." + key
    if key.startswith("lm_head."):
        return "language_model." + key
    raise CheckpointError(f"unexpected key {key!r} in a MobileVLM checkpoint{wrapper_hint([key])}")


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


def ours_to_mobilevlm(key: str) -> str:
    """A PocketVLM key under its MobileVLM name (the inverse of `map_key`)."""
    for ours, theirs in (("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
                         ("multi_modal_projector.", "model.mm_projector."),
                         ("language_model.model.", "model."), ("language_model.lm_head.", "lm_head.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise CheckpointError(f"cannot place key {key!r} in the MobileVLM layout")


def check_exportable(config: PocketVLMConfig) -> None:
    """Refuse (`CheckpointError`, one line naming the part) a model the MobileVLM V2 layout cannot describe."""
    where = "the MobileVLM V2 layout"
    if config.projector_type != "ldpv2":
        raise CheckpointError(
            f"{where} has an LDPv2 connector (ldpv2, mm_projector_type 'ldpnetv2'); this model's projector is "
            f"{config.projector_type!r}: export it as pocket (or hf / internvl for InternVL models with the pixel-shuffle MLP)"
        )
    if config.vision_config.model_type != "clip_vision_model":
        raise CheckpointError(f"{where} needs a CLIP vision tower, not {config.vision_config.model_type!r}")
    if config.image_seq_length != V2_TOKENS:
        raise CheckpointError(
            f"{where} pools to a fixed 12x12 grid ({V2_TOKENS} tokens); this model gives {config.image_seq_length} "
            "tokens per image (MobileVLM uses 336 px tiles, patch 14, and no ldpv2 pooled_grid other than 12)"
        )
    text = config.text_config
    if text.model_type != "llama":
        raise CheckpointError(f"{where} needs a LLaMA-style language model (MobileLLaMA), not {text.model_type!r}")
    if getattr(text, "attention_bias", False) or getattr(text, "mlp_bias", False):
        raise CheckpointError(f"{where}: MobileLLaMA has no attention or MLP biases; this LLM has them")
    head_dim = getattr(text, "head_dim", None)
    if head_dim not in (None, text.hidden_size // text.num_attention_heads):
        raise CheckpointError(f"{where}: head_dim {head_dim} is not hidden_size / num_attention_heads")
    tiling = TilingConfig.from_dict(config.tiling)
    if tiling.mode not in ("pad", "crop"):
        raise CheckpointError(
            f"{where} preprocesses one image as a padded square (image_aspect_ratio 'pad') or a centre crop "
            f"(any other value) of the tower's size; this model tiles in mode {tiling.mode!r}"
        )
    check_tile_size(tiling.tile_size, config.vision_config, where, CheckpointError)
    if config.image_context_token != IMAGE_CONTEXT or config.image_start_token or config.image_end_token:
        raise CheckpointError(f"{where} marks an image with {IMAGE_CONTEXT!r} alone (no start / end tokens)")
    if config.chat_template != "vicuna_v1":
        raise CheckpointError(
            f"{where}: MobileVLM's scripts prompt with the vicuna_v1 template (--conv-mode v1); this model was set up "
            f"with {config.chat_template!r}"
        )


def v4_text_config(text_config: PreTrainedConfig, dtype: torch.dtype | None = None) -> dict:
    """`text_config` as transformers 4.x writes it, for remote code pinned to 4.x (MobileVLM's 4.33, InternVL's
    4.37): `rope_theta` / `rope_scaling` for `rope_parameters` (a 4.x reader defaults the missing theta to 10000),
    `torch_dtype` for `dtype` (`dtype`, else the config's), and no keys only transformers 5 has."""
    text = text_config.to_dict()
    rope = text.get("rope_parameters") or {}
    llm = {k: v for k, v in text.items() if k not in _V5_ONLY}
    torch_dtype = str(dtype).removeprefix("torch.") if dtype is not None else text.get("dtype")
    llm.update({"rope_theta": float(rope.get("rope_theta", 10000.0)), "torch_dtype": torch_dtype})
    if text_config.model_type == "phi3" and rope.get("rope_type") == "longrope":
        llm["rope_scaling"] = _phi3_v4_rope_scaling(rope, llm)
    elif rope.get("rope_type", "default") != "default":
        # transformers 4.x spelling: {"type": ..., "factor": ...}
        llm["rope_scaling"] = {("type" if k == "rope_type" else k): v for k, v in rope.items() if k != "rope_theta"}
    return llm


def _phi3_v4_rope_scaling(rope: dict, llm: dict) -> dict:
    """Phi-3's longrope as InternVL's own Phi-3 code (InternVL2-4B) reads it: exactly `type` ("su", or "yarn" for
    its 0.1·ln(s) + 1 attention factor), `short_factor` and `long_factor`; `original_max_position_embeddings`
    top level (transformers 4.x's Phi3Config also wants exactly these three keys, and renames both types longrope)."""
    original = rope.get("original_max_position_embeddings", llm.get("original_max_position_embeddings"))
    llm["original_max_position_embeddings"] = original
    ratio = llm["max_position_embeddings"] / original
    su = math.sqrt(1 + math.log(ratio) / math.log(original)) if ratio > 1 else 1.0
    yarn = 0.1 * math.log(ratio) + 1.0 if ratio > 1 else 1.0
    factor = rope.get("attention_factor")
    if rope.get("factor") not in (None, ratio) or (factor is not None and not math.isclose(factor, su)
                                                   and not math.isclose(factor, yarn)):
        raise CheckpointError(f"Phi-3 longrope {rope!r} has a scaling InternVL's Phi-3 code cannot express "
                              "(only its 'su' and 'yarn' factors); export this model as hf or pocket instead")
    kind = "su" if factor is None or math.isclose(factor, su) else "yarn"
    return {"type": kind, "short_factor": rope["short_factor"], "long_factor": rope["long_factor"]}


def mobilevlm_config(config: PocketVLMConfig, tower: str, tied: bool, dtype: torch.dtype) -> dict:
    """The `config.json` of a MobileVLM V2 checkpoint (mobilevlm.md §6) for `config`."""
    llm = {**v4_text_config(config.text_config, dtype), "tie_word_embeddings": tied}
    return {
        **llm,
        "architectures": ["MobileLlamaForCausalLM"],
        "model_type": "mobilevlm",
        "max_sequence_length": llm.get("max_position_embeddings", 2048),
        "mm_hidden_size": config.vision_config.hidden_size,
        "mm_projector_type": "ldpnetv2",
        "mm_vision_select_layer": config.vision_feature_layer,
        "mm_vision_select_feature": "patch",
        "mm_vision_tower": tower,
        "vision_tower_type": "clip",
        # 'square' is MobileVLM's own name for not padding (DataArguments' default): a centre crop
        "image_aspect_ratio": "pad" if TilingConfig.from_dict(config.tiling).mode == "pad" else "square",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "mm_projector_lr": None,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def clip_preprocessor_config(tiling: TilingConfig) -> dict:
    """`CLIPImageProcessor` settings that reproduce our `crop` tiling, and our `pad` tiling after MobileVLM's
    expand2square."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": tiling.tile_size},
        "resample": 3,  # bicubic
        "do_center_crop": True,
        "crop_size": {"height": tiling.tile_size, "width": tiling.tile_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(tiling.mean),
        "image_std": list(tiling.std),
        "do_convert_rgb": True,
    }


def export_mobilevlm(vlm: PocketVLM, processor, out_dir: Path, tower_path: str | Path | None = None) -> Path:
    """Write the MobileVLM V2 layout into `out_dir`: `config.json`, `model.safetensors` under MobileVLM's key
    names, the tokenizer (without our `<image>` entry: MobileVLM splices images in by id -200 and resizes the
    embeddings to `len(tokenizer)`), and the CLIP folder `vision_tower/`. `tower_path` is what `mm_vision_tower`
    says: the absolute path `vision_tower/` will have once the export is in place (default: under `out_dir`)."""
    out_dir = Path(out_dir)
    check_exportable(vlm.config)
    tied = head_is_tied(vlm)
    state = {ours_to_mobilevlm(k): v for k, v in vlm.state_dict().items() if not (tied and k == HEAD_KEY)}
    positions = vlm.vision_tower.embeddings.num_positions
    # transformers 4.33-era CLIP checkpoints (MobileVLM V2's) carry the position-id buffer
    state["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(positions)[None]
    tower = str(Path(tower_path) if tower_path is not None else (out_dir / TOWER_FOLDER).resolve())
    write_json(out_dir / "config.json", mobilevlm_config(vlm.config, tower, tied, vlm.dtype))
    write_state_dict(out_dir, state)
    write_clip_folder(vlm, out_dir / TOWER_FOLDER)
    if processor is not None:
        processor.save_pretrained(out_dir)
        drop_added_token(out_dir, IMAGE_CONTEXT, below=vlm.config.text_config.vocab_size)
    return out_dir


def write_clip_folder(vlm: PocketVLM, folder: Path) -> Path:
    """The tower as a CLIP checkpoint `CLIPVisionModel.from_pretrained` / `CLIPImageProcessor.from_pretrained`
    read: config, weights (`vision_model.*`), preprocessor."""
    config = vlm.config.vision_config.to_dict()
    config.update({"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
                   "torch_dtype": str(vlm.dtype).removeprefix("torch.")})
    write_json(folder / "config.json", {k: v for k, v in config.items() if k not in ("dtype", "_name_or_path")})
    write_state_dict(folder, {f"vision_model.{k}": v for k, v in vlm.vision_tower.state_dict().items()})
    write_json(folder / "preprocessor_config.json", clip_preprocessor_config(TilingConfig.from_dict(vlm.config.tiling)))
    return folder


def drop_added_token(directory: Path, token: str, below: int) -> None:
    """Remove `token` from the saved tokenizer files when it was added beyond the LLM's `below` ids."""
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        raw = read_json(tokenizer_json)
        raw["added_tokens"] = [t for t in raw.get("added_tokens", []) if not (t["content"] == token and t["id"] >= below)]
        write_json(tokenizer_json, raw)
    config = directory / "tokenizer_config.json"
    if config.is_file():
        raw = read_json(config)
        decoder = raw.get("added_tokens_decoder") or {}
        raw["added_tokens_decoder"] = {
            i: t for i, t in decoder.items() if not (t.get("content") == token and int(i) >= below)}
        extra = raw.get("additional_special_tokens") or raw.get("extra_special_tokens")
        if isinstance(extra, list) and token in extra:
            extra.remove(token)
        write_json(config, raw)
    added = directory / "added_tokens.json"
    if added.is_file():
        raw = {k: v for k, v in read_json(added).items() if not (k == token and v >= below)}
        if raw:
            write_json(added, raw)
        else:
            added.unlink()


def _size(value) -> int:
    return value if isinstance(value, int) else int(value[0])
