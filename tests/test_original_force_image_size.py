"""An original-layout config whose force_image_size differs from vision_config.image_size: InternVL's own code
resizes the tower's position embeddings to the tile grid on every forward; the loader does it once."""

from __future__ import annotations

import json

import torch

import model
from tests.conftest import TILE, original_layout_config, original_layout_tensors, write_original


def test_position_embeddings_of_another_size_are_resized_as_internvl_does(hf_internvl, tiny_tokenizer, tmp_path):
    tensors = original_layout_tensors(hf_internvl)
    width = tensors["vision_model.embeddings.position_embedding"].shape[-1]
    grid = TILE // 14
    big = torch.randn(1, 1 + (2 * grid) ** 2, width, generator=torch.Generator().manual_seed(0))
    tensors["vision_model.embeddings.position_embedding"] = big  # trained at 2*TILE px
    config = original_layout_config(hf_internvl)
    config["vision_config"]["image_size"] = 2 * TILE
    directory = write_original(tmp_path / "ckpt", tensors, config, tiny_tokenizer)
    assert json.loads((directory / "config.json").read_text())["force_image_size"] == TILE

    loaded, _ = model.load(directory)
    got = loaded.vision_tower.embeddings.position_embeddings.detach()
    # InternVisionEmbeddings._get_pos_embed, written out: (1, g, g, D) -> NCHW -> bicubic -> back
    want = torch.nn.functional.interpolate(big[:, 1:].reshape(1, 2 * grid, 2 * grid, width).permute(0, 3, 1, 2),
                                           size=(grid, grid), mode="bicubic", align_corners=False)
    want = torch.cat([big[:, :1], want.reshape(1, width, grid * grid).permute(0, 2, 1)], dim=1)
    assert got.shape == (1, 1 + grid * grid, width)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert loaded.config.tiling_config.tile_size == TILE


def test_a_config_without_max_dynamic_patch_tiles_as_internvl_does(hf_internvl, tmp_path):
    """InternVLChatConfig defaults max_dynamic_patch to 6 (reference internvl.md, §1); a config lacking it was read
    with 12 tiles, so an image got up to twice the tiles InternVL's own code gives it."""
    from model.checkpoints.original import config_from_original

    raw = original_layout_config(hf_internvl)
    raw.pop("max_dynamic_patch")
    tiling = config_from_original(raw, 5, tmp_path / "config.json").tiling_config
    assert (tiling.min_tiles, tiling.max_tiles) == (1, 6)


def test_a_config_without_the_tiling_switches_reads_them_as_internvl_does(hf_internvl, tmp_path):
    """InternVLChatConfig defaults dynamic_image_size and use_thumbnail to False (reference internvl.md, §11); a
    config lacking them was read as dynamic tiling with a thumbnail, where InternVL's own code resizes to one tile."""
    from model.checkpoints.original import config_from_original

    raw = original_layout_config(hf_internvl)
    raw.pop("dynamic_image_size"), raw.pop("use_thumbnail")
    tiling = config_from_original(raw, 5, tmp_path / "config.json").tiling_config
    assert (tiling.mode, tiling.thumbnail) == ("resize", False)
    raw.update(dynamic_image_size=True, use_thumbnail=True)
    tiling = config_from_original(raw, 5, tmp_path / "config.json").tiling_config
    assert (tiling.mode, tiling.thumbnail) == ("dynamic", True)
