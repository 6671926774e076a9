"""The original OpenGVLab InternVL chat layout (`model_type: internvl_chat`, remote-code `InternVLChatModel`).

Read without executing any of the checkpoint's Python: the config is parsed as JSON and mapped onto
transformers classes. Vision: `vision_model.*` with fused `attn.qkv` → InternVLVisionModel keys with
separate q/k/v. Projector: `mlp1.{0,1,3}` → `layer_norm`, `linear_1`, `linear_2`. LLM: Qwen2, Llama
and Phi-3 keep their keys; InternLM2 becomes a Llama (`wqkv` de-interleaved per KV group).
`ps_version` is honoured (v1 and v2). Tying is the LLM's own: `InternVLChatModel` builds its language model as
`<Arch>ForCausalLM(llm_config)` and ties nothing itself, so `llm_config.tie_word_embeddings` decides.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from transformers import AutoConfig, InternVLVisionConfig, LlamaConfig, PreTrainedConfig

from ..tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, TilingError
from ..vision import check_feature_layer, patch_grid
from ..vlm import PocketVLM, PocketVLMConfig
from .io import (
    CONFIG_ERRORS,
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
from .mobilevlm import v4_text_config

# original template names → ours (same names; listed so an unknown one fails clearly)
TEMPLATES = {"Hermes-2", "internlm2-chat", "phi3-chat", "internvl2_5"}

_VISION_RENAMES = [
    (r"^embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^embeddings\.position_embedding$", "embeddings.position_embeddings"),
    (r"^embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"^encoder\.layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"\.ls1$", ".lambda_1"),
    (r"\.ls2$", ".lambda_2"),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.(q_norm|k_norm)\.", r".attention.\1."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
]
_PROJECTOR = {"mlp1.0.": "multi_modal_projector.layer_norm.", "mlp1.1.": "multi_modal_projector.linear_1.",
              "mlp1.3.": "multi_modal_projector.linear_2."}
_INTERNLM2_RENAMES = [
    (".tok_embeddings.", ".embed_tokens."),
    (".attention.wo.", ".self_attn.o_proj."),
    (".feed_forward.w1.", ".mlp.gate_proj."),
    (".feed_forward.w2.", ".mlp.down_proj."),
    (".feed_forward.w3.", ".mlp.up_proj."),
    (".attention_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
]


# ---------------------------------------------------------------- configs

def vision_config_from_original(vc: dict, image_size: int | None, name: str = "vision_config") -> InternVLVisionConfig:
    """InternViT config `vc` (`name` in errors) as transformers' class; a `CheckpointError` for a missing or mistyped
    field."""
    if vc.get("model_type", "intern_vit_6b") != "intern_vit_6b":
        raise CheckpointError(f"vision_config.model_type {vc.get('model_type')!r} is not InternViT ('intern_vit_6b')")
    try:
        return _internvit_config(vc, image_size)
    except KeyError as err:
        raise CheckpointError(f"{name} lacks {err}") from None
    except CONFIG_ERRORS as err:
        raise CheckpointError(f"{name} is not a valid InternViT config: {' '.join(str(err).split())}") from None


def _internvit_config(vc: dict, image_size: int | None) -> InternVLVisionConfig:
    return InternVLVisionConfig(
        hidden_size=vc["hidden_size"],
        num_hidden_layers=vc["num_hidden_layers"],
        num_attention_heads=vc["num_attention_heads"],
        intermediate_size=vc["intermediate_size"],
        attention_bias=bool(vc.get("qkv_bias", False)),
        use_qk_norm=bool(vc.get("qk_normalization", False)),
        norm_type=vc.get("norm_type", "rms_norm"),
        layer_norm_eps=vc.get("layer_norm_eps", 1e-6),
        hidden_act=vc.get("hidden_act", "gelu"),
        image_size=image_size or vc.get("image_size", 448),
        patch_size=vc.get("patch_size", 14),
        num_channels=vc.get("num_channels", 3),
        attention_dropout=vc.get("attention_dropout", 0.0),
        initializer_range=vc.get("initializer_range", 0.02),
        layer_scale_init_value=vc.get("initializer_factor", 0.1),
    )


def text_config_from_original(lc: dict) -> PreTrainedConfig:
    arch = (lc.get("architectures") or [""])[0]
    model_type = lc.get("model_type", "")
    fields = {k: v for k, v in lc.items() if k not in ("architectures", "auto_map", "_name_or_path", "model_type", "transformers_version", "torch_dtype", "dtype")}
    if model_type == "internlm2" or arch.startswith("InternLM2"):
        return _internlm2_as_llama(lc)
    if model_type in LLM_CLASSES:  # its geometry is there: `check_original_config`
        if model_type == "phi3":
            fields["rope_scaling"] = _phi3_rope_scaling(fields)
        try:
            config = AutoConfig.for_model(model_type, **fields)
        except CONFIG_ERRORS as err:
            raise CheckpointError(f"llm_config ({arch or model_type}) is not a valid {model_type} config: "
                                  f"{' '.join(str(err).strip(chr(34)).split())}") from None
        config.architectures = [arch] if arch else None
        return config
    raise CheckpointError(f"llm_config.model_type {model_type!r} ({arch}) is not supported; known: "
                          f"{', '.join(LLM_CLASSES)}, internlm2")


def _phi3_rope_scaling(lc: dict) -> dict | None:
    """Phi-3's long-context RoPE as transformers 5 reads it. InternVL2-4B's Phi-3-mini-128k config (and InternVL's
    own Phi-3 code, which knows no other names) says "su" or "yarn": transformers 4.x renamed both "longrope" on
    load, transformers 5 fails on them. Both scale the rotary table by a factor of
    `max_position_embeddings / original_max_position_embeddings`: "su" as longrope does, "yarn" by 0.1·ln(s) + 1."""
    scaling = lc.get("rope_scaling")
    if not isinstance(scaling, dict) or scaling.get("type") not in ("su", "yarn"):
        return scaling
    out = {**scaling, "type": "longrope"}
    if scaling["type"] == "yarn" and "attention_factor" not in scaling:
        ratio = lc.get("max_position_embeddings", 4096) / lc.get("original_max_position_embeddings", 4096)
        out["attention_factor"] = 0.1 * math.log(ratio) + 1.0 if ratio > 1 else 1.0
    return out


def _internlm2_as_llama(lc: dict) -> LlamaConfig:
    rope = {"rope_type": "default", "rope_theta": float(lc.get("rope_theta", 10000.0))}
    scaling = lc.get("rope_scaling")
    if scaling:
        kind = scaling.get("type") or scaling.get("rope_type")
        if kind not in ("dynamic", "linear"):
            raise CheckpointError(f"InternLM2 rope_scaling {scaling!r} is not supported")
        rope.update(rope_type=kind, factor=float(scaling["factor"]))
    return LlamaConfig(
        vocab_size=lc["vocab_size"], hidden_size=lc["hidden_size"], intermediate_size=lc["intermediate_size"],
        num_hidden_layers=lc["num_hidden_layers"], num_attention_heads=lc["num_attention_heads"],
        num_key_value_heads=lc.get("num_key_value_heads", lc["num_attention_heads"]),
        hidden_act=lc.get("hidden_act", "silu"), rms_norm_eps=lc.get("rms_norm_eps", 1e-6),
        max_position_embeddings=lc.get("max_position_embeddings", 2048), rope_parameters=rope,
        attention_bias=bool(lc.get("bias", False)), bos_token_id=lc.get("bos_token_id", 1),
        eos_token_id=lc.get("eos_token_id", 2), pad_token_id=lc.get("pad_token_id"),
        tie_word_embeddings=bool(lc.get("tie_word_embeddings", False)),
    )


def _number(raw: dict, key: str, default: int | float, kind: type[int] | type[float], where: str = "") -> int | float:
    """`raw[key]` (else `default`) as `kind`; a `CheckpointError` naming `where + key` for a string, null or
    fraction."""
    value = raw.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (kind is int and value != int(value))):
        raise CheckpointError(f"{where}{key} must be {'an int' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def _section(raw: dict, key: str) -> dict:
    if key not in raw:
        raise CheckpointError(f"missing {key!r} (not an InternVL chat config)")
    section = raw[key]
    if not isinstance(section, dict):
        raise CheckpointError(f"{key} must be a JSON object, got a {type(section).__name__}")
    return section


# InternViT fields `_internvit_config` has no default for
_VISION_GEOMETRY = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def check_original_config(path: Path, raw: dict) -> None:
    """A `CheckpointError` naming `path` (the config.json `raw` was read from) when a section is missing or no object,
    or a field of the models' geometry is missing (`require_config_keys`)."""
    for field in ("vision_config", "llm_config"):
        try:
            _section(raw, field)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
    require_config_keys(path, raw, tuple(f"vision_config.{k}" for k in _VISION_GEOMETRY)
                        + tuple(f"llm_config.{k}" for k in LLM_GEOMETRY_KEYS))


def config_from_original(raw: dict, image_token_id: int, path: Path) -> PocketVLMConfig:
    """The config of original-layout `raw`, read from `path`: a `CheckpointError` naming `path` for a missing or
    mistyped field."""
    check_original_config(path, raw)
    try:
        return _config_from_original(raw, image_token_id)
    except (TilingError, CheckpointError) as err:  # e.g. max_dynamic_patch beyond the bound, a bad llm_config
        raise CheckpointError(f"{path}: {err}") from None


def _config_from_original(raw: dict, image_token_id: int) -> PocketVLMConfig:
    template = raw.get("template") or "Hermes-2"
    if template not in TEMPLATES:
        raise CheckpointError(f"conversation template {template!r} is not supported; known: {sorted(TEMPLATES)}")
    vc, lc = _section(raw, "vision_config"), _section(raw, "llm_config")
    image_size = (_number(raw, "force_image_size", 0, int) if raw.get("force_image_size")
                  else _number(vc, "image_size", 448, int, "vision_config."))
    ps_version = raw.get("ps_version", "v1")  # the InternVLChatConfig default; released models say v2
    vision = vision_config_from_original(vc, image_size)
    try:
        text = text_config_from_original(lc)
    except KeyError as err:  # the InternLM2 fields are read one by one
        raise CheckpointError(f"llm_config lacks {err}") from None
    return PocketVLMConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=check_feature_layer(raw.get("select_layer", -1), vision.num_hidden_layers,
                                                 "select_layer", CheckpointError),
        projector_type="pixel_shuffle_mlp",
        projector_options={"downsample_ratio": _number(raw, "downsample_ratio", 0.5, float), "ps_version": ps_version},
        image_token_id=image_token_id,
        tiling=TilingConfig(
            tile_size=image_size,
            min_tiles=_number(raw, "min_dynamic_patch", 1, int),
            max_tiles=_number(raw, "max_dynamic_patch", 6, int),  # InternVLChatConfig's default, as InternVL reads it
            # both False in InternVLChatConfig (one tile, resized); released configs say true
            thumbnail=bool(raw.get("use_thumbnail", False)),
            mode="dynamic" if raw.get("dynamic_image_size", False) else "resize",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        ).to_dict(),
        chat_template=template,
    )


# ---------------------------------------------------------------- weights

def state_dict_from_original(state: dict[str, torch.Tensor], config: PocketVLMConfig, is_internlm2: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("vision_model."):
            _vision_key(key[len("vision_model."):], tensor, out, config.vision_config)
        elif key[:7] in _PROJECTOR:
            out[_PROJECTOR[key[:7]] + key[7:]] = tensor
        elif key.startswith("language_model."):
            if ".lora_" in key or ".base_model.model." in key:
                raise CheckpointError(f"{key}: unmerged LoRA weights; merge them first (InternVL tools/merge_lora.py)")
            if is_internlm2:
                _internlm2_key(key, tensor, config.text_config, out)
            else:
                out[key] = tensor
        else:
            raise CheckpointError(f"unexpected key {key!r} in an original InternVL checkpoint{wrapper_hint([key])}")
    return out


def _vision_key(key: str, tensor: torch.Tensor, out: dict, vision: InternVLVisionConfig) -> None:
    if ".lora_" in key or key.startswith("base_model."):
        raise CheckpointError(f"vision_model.{key}: unmerged LoRA weights; merge them first")
    match = re.match(r"^(encoder\.layers\.\d+)\.attn\.qkv\.(weight|bias)$", key)
    if match:
        layer = re.sub(r"layers\.(\d+)", r"layer.\1", match.group(1))
        for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
            out[f"vision_tower.{layer}.attention.{name}.{match.group(2)}"] = part.clone()
        return
    for pattern, repl in _VISION_RENAMES:
        key = re.sub(pattern, repl, key)
    if key == "embeddings.position_embeddings":
        tensor = resize_position_embeddings(tensor, patch_grid(vision)[0])
    out["vision_tower." + key] = tensor


def resize_position_embeddings(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """InternViT position embeddings ``(1, 1 + g*g, D)`` for a ``grid x grid`` patch grid.

    A config whose ``force_image_size`` differs from ``vision_config.image_size`` keeps embeddings for the tower's
    own size; InternVL's ``InternVisionEmbeddings._get_pos_embed`` resizes them on every forward (bicubic,
    ``align_corners=False``, in float32, class position untouched). The tower here is built at the tile size, so
    the same resize is done once at load."""
    have = pos.shape[1] - 1
    side = math.isqrt(have)
    if pos.dim() != 3 or side * side != have:
        raise CheckpointError(f"vision_model.embeddings.position_embedding has shape {tuple(pos.shape)}, not "
                              "(1, 1 + g*g, width) for a square patch grid")
    if side == grid:
        return pos
    patches = pos[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.reshape(1, -1, grid * grid).permute(0, 2, 1).to(pos.dtype)
    return torch.cat([pos[:, :1], patches], dim=1)


def _internlm2_key(key: str, tensor: torch.Tensor, text: LlamaConfig, out: dict) -> None:
    if key == "language_model.output.weight":
        out["language_model.lm_head.weight"] = tensor
        return
    if key.endswith(".attention.wqkv.weight"):
        q, k, v = split_internlm2_wqkv(tensor, text)
        base = key[: -len(".attention.wqkv.weight")]
        for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
            out[f"{base}.self_attn.{name}.weight"] = part
        return
    for old, new in _INTERNLM2_RENAMES:
        key = key.replace(old, new)
    out[key] = tensor


def split_internlm2_wqkv(wqkv: torch.Tensor, text: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """De-interleave InternLM2's fused wqkv: per KV group, q-per-kv query heads, then one key, one value head."""
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim = text.hidden_size // heads
    group = heads // kv_heads + 2
    w = wqkv.reshape(kv_heads, group, head_dim, wqkv.shape[-1])
    q = w[:, :-2].reshape(-1, wqkv.shape[-1])
    return q.clone(), w[:, -2].reshape(-1, wqkv.shape[-1]).clone(), w[:, -1].reshape(-1, wqkv.shape[-1]).clone()


def fuse_internlm2_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text: LlamaConfig) -> torch.Tensor:
    """Inverse of `split_internlm2_wqkv`."""
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim = text.hidden_size // heads
    hidden = q.shape[-1]
    q = q.reshape(kv_heads, heads // kv_heads, head_dim, hidden)
    k = k.reshape(kv_heads, 1, head_dim, hidden)
    v = v.reshape(kv_heads, 1, head_dim, hidden)
    return torch.cat([q, k, v], dim=1).reshape(-1, hidden)


# ---------------------------------------------------------------- load / export

def load_original(directory: Path, tokenizer, allow_pickle: bool = False) -> PocketVLM:
    directory = Path(directory)
    raw = read_json(directory / "config.json")
    check_original_config(directory / "config.json", raw)  # before the tokenizer check: the config is the first fault
    image_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise CheckpointError(f"{directory}: the tokenizer has no <IMG_CONTEXT> token")
    config = config_from_original(raw, image_token_id, directory / "config.json")
    lc = raw["llm_config"]
    is_internlm2 = lc.get("model_type") == "internlm2" or (lc.get("architectures") or [""])[0].startswith("InternLM2")
    state = state_dict_from_original(read_state_dict(directory, allow_pickle=allow_pickle), config, is_internlm2)
    return load_vlm(config, state, str(directory), tie=bool(getattr(config.text_config, "tie_word_embeddings", False)))


def original_config(config: PocketVLMConfig, dtype: torch.dtype | None = None) -> dict:
    """The `config.json` of the original layout for `config` (InternViT + pixel-shuffle MLP models); its
    `llm_config` in transformers 4.x spelling, `torch_dtype` `dtype` (else the text config's)."""
    if config.projector_type != "pixel_shuffle_mlp" or config.vision_config.model_type != "internvl_vision":
        raise CheckpointError("the original InternVL layout needs an InternViT tower and the pixel-shuffle MLP projector")
    if config.projector_options.get("pool", 1) != 1:
        raise CheckpointError(f"the original InternVL layout has no pooled pixel shuffle (pool "
                              f"{config.projector_options['pool']}); export this model as pocket or onnx")
    if config.chat_template not in TEMPLATES:
        raise CheckpointError(f"the original InternVL code has no {config.chat_template!r} template; known: {sorted(TEMPLATES)}")
    vc = config.vision_config
    tiling = config.tiling_config
    llm = v4_text_config(config.text_config, dtype)  # InternVL's remote code runs on transformers 4.37
    llm["architectures"] = [type_name_for(config.text_config)]
    return {
        "architectures": ["InternVLChatModel"],
        # allowed: written for other tools, pocket-adapt runs none of it. As released: InternVL's own loader
        # (AutoModel with remote code on) finds the remote-code files a user copies beside the export
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                     "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"},
        "model_type": "internvl_chat",
        "template": config.chat_template,
        "downsample_ratio": config.projector_options.get("downsample_ratio", 0.5),
        "ps_version": config.projector_options.get("ps_version", "v2"),
        "select_layer": config.vision_feature_layer,
        "force_image_size": tiling.tile_size,
        "dynamic_image_size": tiling.mode == "dynamic",
        "min_dynamic_patch": tiling.min_tiles,
        "max_dynamic_patch": tiling.max_tiles,
        "use_thumbnail": tiling.thumbnail,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "vision_config": {
            "model_type": "intern_vit_6b",
            "architectures": ["InternVisionModel"],
            "hidden_size": vc.hidden_size,
            "num_hidden_layers": vc.num_hidden_layers,
            "num_attention_heads": vc.num_attention_heads,
            "intermediate_size": vc.intermediate_size,
            "qkv_bias": vc.attention_bias,
            "qk_normalization": vc.use_qk_norm,
            "norm_type": vc.norm_type,
            "layer_norm_eps": vc.layer_norm_eps,
            "hidden_act": vc.hidden_act,
            "image_size": tiling.tile_size,
            "patch_size": vc.patch_size[0],
            "num_channels": vc.num_channels,
            "initializer_factor": vc.layer_scale_init_value,
            "initializer_range": vc.initializer_range,
            "drop_path_rate": 0.0,
        },
        "llm_config": llm,
    }


# the language models InternVL's InternVLChatModel builds (besides InternLM2, which loads here as Llama)
LLM_CLASSES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "phi3": "Phi3ForCausalLM",
               "qwen3": "Qwen3ForCausalLM", "mistral": "MistralForCausalLM"}


def type_name_for(text: PreTrainedConfig) -> str:
    """`llm_config.architectures[0]` of the original layout; `CheckpointError` for a language model InternVL's
    code cannot build (it raises NotImplementedError for any other name, and this loader refuses it too)."""
    name = LLM_CLASSES.get(text.model_type)
    if name is None:
        raise CheckpointError(f"the original InternVL layout takes {', '.join(LLM_CLASSES)} language models; this "
                              f"model's is {text.model_type!r}: export it as hf or pocket instead")
    return name


def original_state_dict(vlm: PocketVLM) -> dict[str, torch.Tensor]:
    """Our weights under the original key names (fused qkv, `mlp1.*`, `language_model.*`)."""
    inverse_projector = {v: k for k, v in _PROJECTOR.items()}
    state = vlm.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("vision_tower."):
            key = key[len("vision_tower."):]
            match = re.match(r"^encoder\.layer\.(\d+)\.attention\.q_proj\.(weight|bias)$", key)
            if match:
                n, kind = match.groups()
                parts = [state[f"vision_tower.encoder.layer.{n}.attention.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")]
                out[f"vision_model.encoder.layers.{n}.attn.qkv.{kind}"] = torch.cat(parts)
                continue
            if re.search(r"\.attention\.(k_proj|v_proj)\.", key):
                continue
            for pattern, repl in _ORIGINAL_VISION_NAMES:
                key = re.sub(pattern, repl, key)
            out["vision_model." + key] = tensor
        elif key.startswith("multi_modal_projector."):
            prefix = next(p for p in inverse_projector if key.startswith(p))
            out[inverse_projector[prefix] + key[len(prefix):]] = tensor
        else:
            out[key] = tensor
    return out


_ORIGINAL_VISION_NAMES = [
    (r"^embeddings\.cls_token$", "embeddings.class_embedding"),
    (r"^embeddings\.position_embeddings$", "embeddings.position_embedding"),
    (r"^embeddings\.patch_embeddings\.projection\.", "embeddings.patch_embedding."),
    (r"^encoder\.layer\.(\d+)\.", r"encoder.layers.\1."),
    (r"\.lambda_1$", ".ls1"),
    (r"\.lambda_2$", ".ls2"),
    (r"\.attention\.projection_layer\.", ".attn.proj."),
    (r"\.attention\.(q_norm|k_norm)\.", r".attn.\1."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
]


def original_preprocessor_config(tiling: TilingConfig) -> dict:
    """`preprocessor_config.json` as released InternVL2 / Mini-InternVL repositories ship it (a CLIP image processor
    at the tile size, ImageNet's normalisation, bicubic), from the model's own tiling: tools that read the image
    size or normalisation from it (a `CLIPImageProcessor` on one tile) get this model's."""
    return {
        "crop_size": tiling.tile_size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": list(tiling.mean),
        "image_std": list(tiling.std),
        "resample": 3,  # bicubic
        "size": tiling.tile_size,
    }


def export_original(vlm: PocketVLM, processor, out_dir: Path) -> Path:
    """Write the OpenGVLab layout (weights + config.json + tokenizer + preprocessor_config.json); add the
    remote-code `*.py` files of the base model beside it to load it with InternVL's own scripts.

    `llm_config.tie_word_embeddings` records whether the head is tied. A tied head is still written, as a copy
    equal to the embeddings, so the file loads the same whether or not the remote code re-ties its nested LLM;
    equal tensors under a tying config are tied again on load, here and by transformers."""
    out_dir = Path(out_dir)
    raw = original_config(vlm.config, vlm.dtype)
    raw["llm_config"]["tie_word_embeddings"] = head_is_tied(vlm)  # what the weights are, whatever the config says
    raw["torch_dtype"] = str(vlm.dtype).removeprefix("torch.")
    write_json(out_dir / "config.json", raw)
    write_state_dict(out_dir, original_state_dict(vlm))
    if processor is not None:
        processor.save_pretrained(out_dir)
        write_json(out_dir / "preprocessor_config.json", original_preprocessor_config(processor.tiling))
    return out_dir
