"""Named model configs. Configs only: nothing here downloads weights.

Values for the public models come from their released `config.json` files (see
`shared/reference/internvl.md` §5-6 and `mobilevlm.md` §6); a real checkpoint's own config always wins
when one is loaded. `hub_id` names where users with network can fetch the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ModelConfigError
from .resources import assets_dir
from .tiling import CLIP_MEAN, CLIP_STD, TilingConfig

if TYPE_CHECKING:
    from .vlm import PocketVLM, PocketVLMConfig

# The builders import transformers and the model classes when called, so listing presets (`adapt presets`,
# recipe validation) stays light.

POCKET_TINY_TOKENIZER = "pocket-tiny"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    build: Callable[[], PocketVLMConfig]
    hub_id: str | None = None
    layout: str = "original"
    weights: str | None = None  # safetensors file under model/assets/ with the preset's trained weights
    # the RoPE scaling the released checkpoint's config has and this preset's config leaves out (`adapt inspect`)
    released_rope: str | None = None


def _internvl2_1b() -> PocketVLMConfig:
    from transformers import Qwen2Config

    from .vision import internvit_config
    from .vlm import PocketVLMConfig

    text = Qwen2Config(
        vocab_size=151655, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=False,
    )
    return PocketVLMConfig(
        vision_config=internvit_config("300m"), text_config=text, image_token_id=151648,
        projector_options={"downsample_ratio": 0.5, "ps_version": "v2"}, chat_template="Hermes-2",
        tiling=TilingConfig(max_tiles=12, thumbnail=True).to_dict(),
    )


def _mini_internvl_2b() -> PocketVLMConfig:
    from transformers import LlamaConfig

    from .vision import internvit_config
    from .vlm import PocketVLMConfig

    # InternLM2-chat-1.8B expressed as a Llama (wqkv de-interleaved at load time)
    text = LlamaConfig(
        vocab_size=92553, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
        num_attention_heads=16, num_key_value_heads=8, rms_norm_eps=1e-5, max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    return PocketVLMConfig(
        vision_config=internvit_config("300m"), text_config=text, image_token_id=92546,
        projector_options={"downsample_ratio": 0.5, "ps_version": "v2"}, chat_template="internlm2-chat",
        tiling=TilingConfig(max_tiles=12, thumbnail=True).to_dict(),
    )


def _mini_internvl_4b() -> PocketVLMConfig:
    from transformers import Phi3Config

    from .vision import internvit_config
    from .vlm import PocketVLMConfig

    # Phi-3-mini-128k's released config adds longrope `rope_scaling` (per-dimension short/long factors over 4096
    # original positions, and a cos/sin scale); they are not reproduced here, so this RoPE is plain (see the
    # preset's description). Loading the weights builds from the checkpoint's own config, which has them.
    text = Phi3Config(
        vocab_size=32020, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5, max_position_embeddings=131072,
        bos_token_id=1, eos_token_id=32000, tie_word_embeddings=False,
    )
    return PocketVLMConfig(
        vision_config=internvit_config("300m"), text_config=text, image_token_id=32013,
        projector_options={"downsample_ratio": 0.5, "ps_version": "v2"}, chat_template="phi3-chat",
        tiling=TilingConfig(max_tiles=12, thumbnail=True).to_dict(),
    )


def _mobilevlm_v2(hidden: int, intermediate: int, layers: int, heads: int) -> PocketVLMConfig:
    from transformers import LlamaConfig

    from .vision import clip_vit_l14_336_config
    from .vlm import PocketVLMConfig

    text = LlamaConfig(
        vocab_size=32000, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, rms_norm_eps=1e-6, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    return PocketVLMConfig(
        vision_config=clip_vit_l14_336_config(), text_config=text, image_token_id=32000,
        vision_feature_layer=-2, projector_type="ldpv2", chat_template="vicuna_v1",
        projector_options={"pooled_grid": 12},  # LDPNetV2Projector's fixed 12x12 pool, as a V2 checkpoint is read
        # MobileVLM has no <IMG_CONTEXT>: its `<image>` placeholder is the image token, added after the 32000 words
        # (id 32000), as loading the released checkpoint gives it
        image_context_token="<image>", image_start_token=None, image_end_token=None,
        tiling=TilingConfig(tile_size=336, mode="pad", max_tiles=1, thumbnail=False, mean=CLIP_MEAN, std=CLIP_STD).to_dict(),
    )


def _pocket_tiny() -> PocketVLMConfig:
    """A tiny InternVL-shaped model (InternViT + pixel-shuffle MLP + Qwen2) for CPU tests and demos."""
    from transformers import AutoTokenizer, Qwen2Config

    from .vision import internvit_config
    from .vlm import PocketVLMConfig

    tokenizer = AutoTokenizer.from_pretrained(str(assets_dir() / POCKET_TINY_TOKENIZER))
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision = internvit_config(
        "300m", hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=192,
        image_size=112, patch_size=14,
    )
    return PocketVLMConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        projector_options={"downsample_ratio": 0.5, "ps_version": "v2"}, chat_template="pocket-tiny",
        tiling=TilingConfig(tile_size=112, max_tiles=6, thumbnail=True).to_dict(),
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("pocket-tiny", "tiny InternVL-shaped model (1.7 M params) pre-trained on the synthetic general world; CPU tests and the quick start",
               _pocket_tiny, layout="pocket", weights="pocket-tiny/model.safetensors"),
        Preset("pocket-tiny-scratch", "pocket-tiny with seeded random weights (the start of its pre-training)", _pocket_tiny, layout="pocket"),
        Preset("internvl2-1b", "InternVL2-1B / Mini-InternVL-1B: InternViT-300M + Qwen2-0.5B", _internvl2_1b, "OpenGVLab/InternVL2-1B"),
        Preset("mini-internvl-2b", "Mini-InternVL-2B: InternViT-300M + InternLM2-1.8B (as Llama)", _mini_internvl_2b, "OpenGVLab/InternVL2-2B"),
        Preset("mini-internvl-4b", "Mini-InternVL-4B: InternViT-300M + Phi-3-mini-128k; this config has plain RoPE, "
               "not the released longrope scaling (loading the weights uses the checkpoint's config)", _mini_internvl_4b,
               "OpenGVLab/InternVL2-4B", released_rope="longrope"),
        Preset("mobilevlm-v2-1.7b", "MobileVLM V2 1.7B: CLIP ViT-L/14-336 + LDPv2 + MobileLLaMA-1.4B", lambda: _mobilevlm_v2(2048, 5632, 24, 16), "mtgv/MobileVLM_V2-1.7B", "mobilevlm"),
        Preset("mobilevlm-v2-3b", "MobileVLM V2 3B: CLIP ViT-L/14-336 + LDPv2 + MobileLLaMA-2.7B", lambda: _mobilevlm_v2(2560, 6912, 32, 32), "mtgv/MobileVLM_V2-3B", "mobilevlm"),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}; or give a "
                               "checkpoint folder") from None


def preset_of_hub_id(source: str) -> Preset | None:
    """The preset whose hub id `source` is (any case): hub ids are never fetched as such, their preset is."""
    return next((p for p in PRESETS.values() if p.hub_id and p.hub_id.lower() == source.lower()), None)


def preset_config(name: str) -> PocketVLMConfig:
    return get_preset(name).build()


def preset_skeleton(name: str) -> PocketVLM:
    """The preset's `PocketVLM` with every tensor on the meta device: its parts, shapes and parameter counts
    without reading, fetching or allocating any weight (what `adapt inspect --model PRESET` describes)."""
    import torch

    from .vlm import PocketVLM

    config = preset_config(name)
    with torch.device("meta"):
        return PocketVLM(config)
