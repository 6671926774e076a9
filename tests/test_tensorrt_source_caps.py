"""`adapt export --format tensorrt --recipe`: a data source's own max_tiles (a cap other than the recipe tiling's)
trained its images, six camera views included, on other tile counts than the bundle's profiles and
preprocessor_config.json give them on the device; the export says so with the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

import model
from adapt.recipe import load_recipe
from deploy.tensorrt import source_tile_caps

DRIVING = Path(__file__).resolve().parents[1] / "templates/recipes/driving_pocket-tiny_full.yaml"


def _recipe(tmp_path: Path, cap: int | None) -> Path:
    text = DRIVING.read_text(encoding="utf-8")
    if cap is not None:
        text = text.replace("      path: data/driving/drivelm_train.jsonl\n",
                            f"      path: data/driving/drivelm_train.jsonl\n      max_tiles: {cap}\n", 1)
    path = tmp_path / "driving.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_source_cap_other_than_the_tiling_is_warned_with_the_six_view_tiles(tmp_path):
    _, processor = model.load("pocket-tiny")
    recipe = load_recipe(_recipe(tmp_path, 6))
    tiling = recipe.tiling_for(processor.tiling)
    with pytest.warns(UserWarning, match=r"recipe x: data source\(s\) drivelm \(max_tiles 6: six camera views 6 "
                                         r"tiles\) cap tiles otherwise than tiling.max_tiles 12, .* \(six camera "
                                         r"views 18 tiles\)"):
        source_tile_caps(recipe, processor, tiling, "recipe x")


def test_sources_without_their_own_cap_say_nothing(tmp_path, recwarn):
    _, processor = model.load("pocket-tiny")
    recipe = load_recipe(_recipe(tmp_path, None))
    assert source_tile_caps(recipe, processor, recipe.tiling_for(processor.tiling), "recipe x") is None
    recipe = load_recipe(_recipe(tmp_path, 12))  # the same cap as the tiling
    assert source_tile_caps(recipe, processor, recipe.tiling_for(processor.tiling), "recipe x") is None
    assert not [w for w in recwarn if "cap tiles" in str(w.message)]
