"""Shared fixtures: tiny models and checkpoints written in the exact public layouts (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    AutoTokenizer,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    Qwen2Config,
)

from model.resources import assets_dir

pytest_plugins = ["pytester", "tests.skip_policy"]

TILE = 56  # 56 px tiles, 14 px patches: a 4x4 grid, 4 tokens per tile after pixel shuffle


def printed_plan(runner, capsys) -> str:
    """What a `Trainer` / `Distiller` prints as its plan (``_print_plan``), the runner closed after."""
    try:
        capsys.readouterr()
        runner._print_plan(0)
        return capsys.readouterr().out
    finally:
        runner.close()


@pytest.fixture(scope="session", autouse=True)
def private_config_home(tmp_path_factory):
    """XDG_CONFIG_HOME in a temporary folder for the whole run (subprocesses inherit it): the medical converters'
    de-identification key (domains.medical.convert.machine_key) is never written into the real home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config-home")))
        yield


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return AutoTokenizer.from_pretrained(str(assets_dir() / "pocket-tiny"))


@pytest.fixture(scope="session")
def example_image() -> Image.Image:
    return Image.open(assets_dir() / "example.png").convert("RGB")


def tiny_internvl_config(tokenizer, tie: bool = False, text_tie: bool | None = None) -> InternVLConfig:
    """`tie` is the top-level flag (the one InternVLForConditionalGeneration ties by); `text_tie` the text
    config's, `tie` unless given."""
    vision = InternVLVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=TILE, patch_size=14, attention_bias=True, layer_scale_init_value=0.5,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=tie if text_tie is None else text_tie,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4, tie_word_embeddings=tie,
    )


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (norm weights and biases too), so any mapping slip shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.fixture(scope="session")
def hf_internvl(tiny_tokenizer):
    """A random tiny transformers-native InternVL in eval mode (fp32)."""
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(tiny_internvl_config(tiny_tokenizer))
    randomize_(model)
    return model.eval()


def write_preprocessor(directory: Path, max_tiles: int = 6) -> None:
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "GotOcr2ImageProcessor", "crop_to_patches": True, "min_patches": 1,
        "max_patches": max_tiles, "size": {"height": TILE, "width": TILE}, "do_resize": True, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }))


@pytest.fixture(scope="session")
def native_dir(tmp_path_factory, hf_internvl, tiny_tokenizer) -> Path:
    """The tiny model saved by transformers itself: the native layout, byte for byte."""
    directory = tmp_path_factory.mktemp("native")
    hf_internvl.save_pretrained(str(directory))
    tiny_tokenizer.save_pretrained(str(directory))
    write_preprocessor(directory)
    return directory


# The original OpenGVLab layout, written from the reference tables (internvl.md §5-6), independently
# of model.checkpoints.original, so the loader is checked against the documented layout.
_NATIVE_TO_ORIGINAL_VISION = {
    "embeddings.cls_token": "embeddings.class_embedding",
    "embeddings.position_embeddings": "embeddings.position_embedding",
    "embeddings.patch_embeddings.projection.weight": "embeddings.patch_embedding.weight",
    "embeddings.patch_embeddings.projection.bias": "embeddings.patch_embedding.bias",
}
_LAYER_PARTS = {
    "lambda_1": "ls1", "lambda_2": "ls2", "attention.projection_layer.weight": "attn.proj.weight",
    "attention.projection_layer.bias": "attn.proj.bias", "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias", "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
    "layernorm_before.weight": "norm1.weight", "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight", "layernorm_after.bias": "norm2.bias",
}


def original_layout_tensors(hf_model: InternVLForConditionalGeneration) -> dict[str, torch.Tensor]:
    sd = hf_model.state_dict()
    out: dict[str, torch.Tensor] = {}
    n_layers = hf_model.config.vision_config.num_hidden_layers
    for native, original in _NATIVE_TO_ORIGINAL_VISION.items():
        out[f"vision_model.{original}"] = sd[f"model.vision_tower.{native}"]
    for n in range(n_layers):
        src, dst = f"model.vision_tower.encoder.layer.{n}.", f"vision_model.encoder.layers.{n}."
        for native, original in _LAYER_PARTS.items():
            out[dst + original] = sd[src + native]
        for kind in ("weight", "bias"):
            out[dst + f"attn.qkv.{kind}"] = torch.cat([sd[src + f"attention.{p}_proj.{kind}"] for p in "qkv"])
    for idx, name in ((0, "layer_norm"), (1, "linear_1"), (3, "linear_2")):
        for kind in ("weight", "bias"):
            out[f"mlp1.{idx}.{kind}"] = sd[f"model.multi_modal_projector.{name}.{kind}"]
    for key, value in sd.items():
        if key.startswith("model.language_model."):
            out["language_model.model." + key[len("model.language_model."):]] = value
    out["language_model.lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def original_layout_config(hf_model: InternVLForConditionalGeneration, ps_version: str = "v2", llm_config: dict | None = None) -> dict:
    """config.json as released InternVL2 checkpoints write it (remote-code fields included)."""
    vc = hf_model.config.vision_config
    text = hf_model.config.text_config.to_dict()
    text.update(architectures=["Qwen2ForCausalLM"], _name_or_path="Qwen/Qwen2-0.5B-Instruct")
    return {
        "_commit_hash": None, "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                     "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"},
        "downsample_ratio": 0.5, "dynamic_image_size": True, "force_image_size": TILE,
        "llm_config": llm_config or text, "max_dynamic_patch": 6, "min_dynamic_patch": 1,
        "model_type": "internvl_chat", "ps_version": ps_version, "select_layer": -1, "template": "Hermes-2",
        "torch_dtype": "float32", "use_backbone_lora": 0, "use_llm_lora": 0, "use_thumbnail": True,
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "attention_dropout": 0.0,
            "drop_path_rate": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": vc.hidden_size,
            "image_size": TILE, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": vc.intermediate_size, "layer_norm_eps": vc.layer_norm_eps, "norm_type": "layer_norm",
            "num_attention_heads": vc.num_attention_heads, "num_channels": 3,
            "num_hidden_layers": vc.num_hidden_layers, "patch_size": 14, "qk_normalization": False,
            "qkv_bias": True, "use_flash_attn": False,
        },
    }


def write_original(directory: Path, tensors: dict, config: dict, tokenizer) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    # released checkpoints are sharded with an index; mirror that
    keys = sorted(tensors)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: tensors[k] for k in shard_keys}, str(directory / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard_keys})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for name in ("configuration_internvl_chat.py", "modeling_internvl_chat.py"):
        # remote code that must never run: importing it would fail loudly
        (directory / name).write_text("raise RuntimeError('remote code was executed')\n")
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def original_dir(tmp_path_factory, hf_internvl, tiny_tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("original")
    return write_original(directory, original_layout_tensors(hf_internvl), original_layout_config(hf_internvl), tiny_tokenizer)


@pytest.fixture()
def prompt_inputs(tiny_tokenizer, example_image):
    """A one-image prompt for the tiny native-shaped model, built with our processor."""
    from model.chat import get_chat_template
    from model.processor import VLMProcessor
    from model.tiling import TilingConfig

    processor = VLMProcessor(tiny_tokenizer, TilingConfig(tile_size=TILE, max_tiles=6), get_chat_template("Hermes-2"), 4)
    encoded = processor([{"role": "user", "content": "<image>\nWhat shapes are there?"}], images=[example_image])
    return encoded.to_model_inputs()

