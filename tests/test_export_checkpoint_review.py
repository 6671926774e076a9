"""Checkpoint exports (`adapt export -f hf | internvl | pocket`) read back as other tools read them."""

from __future__ import annotations

import dataclasses

import pytest

import model
from deploy.hf import ExportError, export


def _with_tiling(vlm, processor, **change):
    tiling = dataclasses.replace(processor.tiling, **change)
    vlm.config.tiling = tiling.to_dict()
    processor.tiling = tiling
    return tiling


@pytest.mark.parametrize("change", [{"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, {"mode": "pad"}])
def test_internvl_export_refuses_a_tiling_its_config_cannot_hold(change, tmp_path):
    """The original layout's config has no normalisation (InternVL's code and its reader use ImageNet's) and no
    padded or cropped single tile: such a model was written anyway and read back with other pixels (a SigLIP-style
    0.5 / 0.5 model came back with ImageNet's mean and std, 'pad' came back as 'resize'). Now refused, nothing
    written; hf keeps the normalisation."""
    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    tiling = _with_tiling(vlm, processor, **change)
    with pytest.raises(ExportError, match="cannot export to internvl: .*(normalisation|tiling mode)"):
        export(vlm, processor, "internvl", tmp_path / "orig")
    assert not (tmp_path / "orig").exists()
    if "mean" in change:
        again, proc = model.load(export(vlm, processor, "hf", tmp_path / "hf"))
        assert proc.tiling == tiling


def test_internvl_export_keeps_an_imagenet_resize_tiling(tmp_path):
    """What the layout does hold still exports and reads back the same: one squashed tile (dynamic_image_size
    false) with ImageNet's normalisation."""
    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    tiling = _with_tiling(vlm, processor, mode="resize")
    _, proc = model.load(export(vlm, processor, "internvl", tmp_path / "orig"))
    assert (proc.tiling.mode, proc.tiling.mean, proc.tiling.std) == (tiling.mode, tiling.mean, tiling.std)


def test_internvl_export_names_its_remote_code_classes(tmp_path):
    """The export says to copy the base model's remote-code files beside it, but its config.json had no `auto_map`
    (released InternVL2 configs have one), so `AutoModel.from_pretrained(folder, trust_remote_code=True)` -- how
    InternVL's quick start loads a model -- could not find them: 'unrecognized model type internvl_chat'."""
    import json

    from transformers import AutoConfig

    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    out = export(vlm, processor, "internvl", tmp_path / "orig")
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                        "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                        "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"}
    # the class transformers resolves is the one a remote-code file beside it defines (here a stand-in)
    (out / "configuration_internvl_chat.py").write_text(
        "from transformers import PretrainedConfig\n\n\nclass InternVLChatConfig(PretrainedConfig):\n"
        "    model_type = 'internvl_chat'\n")
    config = AutoConfig.from_pretrained(str(out), trust_remote_code=True)
    assert type(config).__name__ == "InternVLChatConfig" and config.template == "Hermes-2"
    again, _ = model.load(out)  # pocket-adapt reads it without running that code
    assert again.config.chat_template == "Hermes-2"


def test_hf_export_of_a_one_tile_resize_model(tmp_path, example_image):
    """A model whose tiling squashes each image to one tile (mode resize) was refused by the hf export, after its
    weights were written, saying GotOcr2 'implements dynamic tiling only', while `model.save` writes the GotOcr2
    config that cuts that tile (crop_to_patches false). The hf export now writes it too: transformers' image
    processor gives pocket-adapt's pixels and the native model its logits. Pad / crop are refused up front."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    vlm, processor = model.load("pocket-tiny")
    _with_tiling(vlm, processor, mode="resize")
    out = export(vlm, processor, "hf", tmp_path / "hf")
    ours = processor([{"role": "user", "content": "<image>\nShapes?"}], images=[example_image])
    pixels = AutoImageProcessor.from_pretrained(str(out))(images=[example_image], return_tensors="pt")["pixel_values"]
    assert pixels.shape == ours.pixel_values.shape == (1, 3, 112, 112)
    assert torch.allclose(pixels, ours.pixel_values, atol=1e-5)
    hf = AutoModelForImageTextToText.from_pretrained(str(out)).eval()
    with torch.no_grad():
        a = hf(input_ids=ours.input_ids[None], pixel_values=pixels).logits
        b = vlm(input_ids=ours.input_ids[None], pixel_values=ours.pixel_values).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert model.load(out)[1].tiling == processor.tiling
    _with_tiling(vlm, processor, mode="pad")
    with pytest.raises(ExportError, match="cannot export to hf: .*tiling mode 'pad'"):
        export(vlm, processor, "hf", tmp_path / "pad")
    assert not (tmp_path / "pad").exists()


@pytest.mark.parametrize("fmt", ["hf", "internvl"])
def test_a_tile_size_other_than_the_towers_is_refused_before_writing(fmt, tmp_path):
    """A tiling whose tile_size is not the tower's image_size (a recipe's tiling.tile_size) was exported anyway: the
    internvl folder's config described position embeddings its weights do not have, and the hf folder was refused by
    pocket-adapt's own reader ('224 px tiles, but the vision tower takes 112 px images'). Refused up front now, as
    the onnx and executorch exports refuse it."""
    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    _with_tiling(vlm, processor, tile_size=224)
    with pytest.raises(ExportError, match=f"cannot export to {fmt}: the tiling cuts 224 px tiles, but the vision "
                                          "tower takes 112 px images"):
        export(vlm, processor, fmt, tmp_path / fmt)
    assert not (tmp_path / fmt).exists()
