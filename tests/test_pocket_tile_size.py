"""A pocket checkpoint whose tiling cuts tiles of another size than its vision tower takes is refused on load,
naming both sizes and the file (it loaded, then every image failed with a misleading 'truncated' message)."""

from __future__ import annotations

import json

import pytest

import model
from model.checkpoints.io import CheckpointError
from model.loading import load_config


@pytest.mark.parametrize("tile", [56, 224])
def test_pocket_tile_size_other_than_the_towers_is_refused(tmp_path, tile):
    vlm, processor = model.load("pocket-tiny")
    folder = model.save(vlm, processor, tmp_path / "ck")
    tower = vlm.config.vision_config.image_size
    tower = tower[0] if isinstance(tower, (list, tuple)) else tower
    raw = json.loads((folder / "config.json").read_text())
    raw["tiling"]["tile_size"] = tile
    (folder / "config.json").write_text(json.dumps(raw))
    for read in (model.load, load_config):
        with pytest.raises(CheckpointError) as err:
            read(folder)
        said = str(err.value)
        assert str(folder / "config.json") in said and f"{tile} px tiles" in said and f"takes {tower} px" in said
