"""`adapt validate` / `adapt distill` refuse towers that cannot be distilled as asked (layers, patch grids, tile size)
from the towers' config files alone, before either tower is loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import adapt.distill
import model.checkpoints.tower
from adapt.cli import main
from adapt.distill import DistillError, distill
from adapt.recipe import RecipeError, load_recipe
from domains.general.world import generate_landcover

RECIPE = """
name: precheck
distill:
  teacher: {source: TEACHER}
  student: {source: internvit-300m, config: {hidden_size: 16, num_hidden_layers: 3, num_attention_heads: 2,
            intermediate_size: 32, image_size: 112}}
  layers: 2
data:
  sources: [{name: lc, path: data/train.jsonl, kind: domain}]
mixing: {general_ratio: 0}
training: {max_steps: 1, batch_size: 2}
output: {dir: out}
logging: {tensorboard: false}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("precheck")
    generate_landcover(root / "data", n_train=4, n_test=1)
    return root


def write(folder: Path, data_dir: Path, teacher: str = "pocket-tiny") -> Path:
    (folder / "data").exists() or (folder / "data").symlink_to(data_dir / "data")
    path = folder / "distill.yaml"
    path.write_text(RECIPE.replace("TEACHER", teacher))
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Any tower load fails the test: the checks must come before it."""
    def refuse(*_, **__):
        raise AssertionError("a tower was loaded before the recipe's towers were checked")

    monkeypatch.setattr(adapt.distill, "load_vision_feature", refuse)
    monkeypatch.setattr(adapt.distill, "load_vision", refuse)


BAD = [
    (["distill.layers=4"], r"distill.layers is 4, but the teacher has 4 layers and the student 3"),
    (["distill.layers=null", "distill.pairs=[[4, 2]]"], r"no pair ends at the student's last layer \(3\)"),
    (["distill.layers=null", "distill.pairs=[[5, 3]]"], r"distill.pairs: \[5, 3\] is out of range"),
    (["distill.student.config.patch_size=16"], r"the teacher's patch grid \(8, 8\) .* differs from the student's \(7, 7\)"),
    (["tiling.tile_size=224"], r"tiling.tile_size 224 differs from the student's image size 112"),
    # equal widths: no projection, so projection_lr was silently ignored
    (["distill.student.config.hidden_size=96", "distill.projection_lr=1e-3"],
     r"distill.projection_lr is 0.001, but the teacher and the student are both 96 wide"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_validate_and_distill_refuse_before_loading(tmp_path, data_dir, capsys, no_loading, overrides, message):
    path = write(tmp_path, data_dir)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, overrides)
    for verb in ("validate", "distill"):
        assert main([verb, str(path), *overrides]) == 1
        assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_tower_folder_is_checked_from_its_config_json_alone(tmp_path, data_dir, no_loading):
    """A tower folder without weights: its config.json says its grid and depth."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    config = {"model_type": "internvl_vision", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 32, "image_size": [112, 112], "patch_size": [16, 16]}
    (teacher / "config.json").write_text(json.dumps(config))
    path = write(tmp_path, data_dir, teacher=str(teacher))
    with pytest.raises(RecipeError, match=r"the teacher's patch grid \(7, 7\)"):
        load_recipe(path)
    config["patch_size"] = [14, 14]
    (teacher / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecipeError, match=r"distill.layers is 3, but the teacher has 2 layers and the student 3"):
        load_recipe(path, ["distill.layers=3"])
    assert load_recipe(path).distill.teacher.source == str(teacher)


def test_towers_whose_configs_cannot_be_read_are_checked_once_loaded(tmp_path, data_dir, monkeypatch):
    """A hub: tower's config comes with its weights: `adapt distill` checks the loaded towers, before the data."""
    monkeypatch.setattr(model.checkpoints.tower, "vision_config_feature", lambda *_, **__: None)
    recipe = load_recipe(write(tmp_path, data_dir), ["distill.student.config.patch_size=16"])
    with pytest.raises(DistillError, match=r"the teacher's patch grid \(8, 8\) .* differs from the student's \(7, 7\)"):
        distill(recipe, progress=False)



def test_a_tower_folder_that_cannot_be_read_is_refused_by_validate(tmp_path, data_dir, capsys, no_loading):
    """A folder without config.json (the data folder named by mistake) or with a broken one was a valid recipe."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "internvl_vision"')
    path = write(tmp_path, data_dir)
    for source, message in ((tmp_path / "data", r"distill.teacher: .*data: no config.json"),
                            (broken, r"distill.teacher: .*broken/config.json: invalid JSON")):
        with pytest.raises(RecipeError, match=message):
            load_recipe(path, [f"distill.teacher.source={source}"])
        assert main(["validate", str(path), f"distill.teacher.source={source}"]) == 1
        assert "Traceback" not in capsys.readouterr().err


def test_a_hub_tower_in_the_hub_cache_is_checked_from_its_cached_config(tmp_path, data_dir, monkeypatch, no_loading):
    """InternViT-6B -> 300M: the teacher alone is GBs; a cached hub: tower's config.json says its grid without it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--someone--tower"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({  # OpenGVLab's standalone layout, as InternViT-6B ships it
        "model_type": "intern_vit_6b", "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 32, "image_size": 448, "patch_size": 14, "qkv_bias": True, "qk_normalization": False,
        "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "use_flash_attn": False, "drop_path_rate": 0.0}))
    path = write(tmp_path, data_dir, teacher="hub:someone/tower")
    with pytest.raises(RecipeError, match=r"the teacher's patch grid \(32, 32\) .* differs from the student's \(8, 8\)"):
        load_recipe(path)
    assert load_recipe(path, ["distill.student.config.image_size=448"]).distill.teacher.source == "hub:someone/tower"
    (tmp_path / "other").mkdir()
    uncached = write(tmp_path / "other", data_dir, teacher="hub:someone/elsewhere")
    assert load_recipe(uncached).distill.layers == 2  # not in the cache: adapt distill checks it once fetched


@pytest.mark.parametrize("value", ["0", "200", "[112, 0]"])
def test_a_tower_config_without_a_patch_grid_is_one_line(tmp_path, data_dir, capsys, no_loading, value):
    path = write(tmp_path, data_dir)
    key = "patch_size" if value != "[112, 0]" else "image_size"
    assert main(["validate", str(path), f"distill.student.config.{key}={value}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "distill.student: image_size" in err and "give no patch grid" in err


def test_a_tower_config_override_of_the_wrong_type_is_one_line(tmp_path, data_dir, capsys):
    """transformers 5's strict configs raise their own error (not a ValueError): it was a traceback."""
    path = write(tmp_path, data_dir)
    with pytest.raises(RecipeError, match=r"distill.student: config: .*'hidden_size' expected int, got str"):
        load_recipe(path, ["distill.student.config.hidden_size=x"])
    assert main(["validate", str(path), "distill.student.config.hidden_size=x"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_a_student_too_large_for_this_machine_is_one_line(tmp_path, data_dir, capsys, no_loading):
    """hidden_size 2**20 builds on the meta device (adapt validate passes it), but its weights need 64 TiB: adapt
    distill stopped in the CPU allocator with a traceback; now it refuses before building, naming the size."""
    path = write(tmp_path, data_dir)
    assert main(["distill", str(path), "distill.student.config.hidden_size=1048576"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line.startswith("adapt distill: error: ") for line in err.splitlines()
                                       if not line.startswith("note: ")] == [True], err
    assert re.search(r"distill.student: internvit-300m with config .* has [\d,]+ parameters \([\d,.]+ GiB in "
                     r"float32\), more than this machine's [\d,.]+ GiB of memory", err), err
    assert not (tmp_path / "out" / "final").exists()


def test_an_allocation_that_fails_while_building_a_tower_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    """Where the OS does not say its memory (or other work holds it), the allocator's own failure is one line."""
    monkeypatch.setattr(adapt.distill, "machine_memory", lambda: None)
    path = write(tmp_path, data_dir)
    # a 2**23-wide attention projection is 2**48 bytes, beyond any address space: the allocation itself fails
    huge = ["distill.student.config={hidden_size: 8388608, num_hidden_layers: 3, num_attention_heads: 2, "
            "intermediate_size: 8, image_size: 8, patch_size: 1, use_absolute_position_embeddings: false}"]
    assert main(["distill", str(path), *huge]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line.startswith("adapt distill: error: ") for line in err.splitlines()
                                       if not line.startswith("note: ")] == [True], err
    assert "distill.student (internvit-300m) does not fit in memory (" in err and "can't allocate memory" in err, err
