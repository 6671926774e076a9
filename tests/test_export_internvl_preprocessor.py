"""`adapt export -f internvl` writes the `preprocessor_config.json` released InternVL2 / Mini-InternVL repositories
ship (a CLIP image processor at the tile size with ImageNet's normalisation), from the model's own tiling."""

from __future__ import annotations

import json

import torch

import model
from deploy.hf import export


def test_internvl_export_writes_the_released_preprocessor_config(tmp_path, example_image):
    from transformers import CLIPImageProcessorPil

    vlm, processor = model.load("pocket-tiny", chat_template="Hermes-2")
    out = export(vlm, processor, "internvl", tmp_path / "orig")
    pre = json.loads((out / "preprocessor_config.json").read_text())
    size = processor.tiling.tile_size
    # OpenGVLab/InternVL2-1B's file, with this model's tile size
    assert pre == {"crop_size": size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                   "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
                   "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": size}
    assert "preprocessor_config.json" in (out / "SHA256SUMS").read_text()
    # a CLIP image processor read from the export gives the pixels pocket-adapt feeds for a one-tile image
    tile = example_image.resize((size, size))
    theirs = CLIPImageProcessorPil.from_pretrained(str(out))(tile, return_tensors="pt")["pixel_values"]
    ours = processor([{"role": "user", "content": "<image>\nShapes?"}], images=[tile]).pixel_values
    assert theirs.shape == ours.shape == (1, 3, size, size)
    assert torch.allclose(theirs, ours, atol=1e-5)
    again, proc2 = model.load(out)  # and the export still loads with the same tiling
    assert proc2.tiling == processor.tiling
