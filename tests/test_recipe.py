"""The recipe schema, its error messages, overrides, templates and the recipe verbs."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import get_args

import pytest
import yaml

from adapt.cli import main
from adapt.recipe import (
    DEEPSPEED_PRESETS,
    EvalSpec,
    Recipe,
    RecipeError,
    Training,
    _all_keys,
    apply_overrides,
    list_recipe_templates,
    load_recipe,
    parse_recipe,
    resolve_deepspeed_config,
)
from model.resources import templates_dir
from model.tiling import TilingConfig
from tests.deps import require

MINIMAL = """\
data:
  sources:
    - {name: field, path: data/field/train.jsonl}
    - {name: general, path: data/general/train.jsonl, kind: general}
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


# ---------------------------------------------------------------------- defaults and round trip
def test_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL, "my-run.yaml"))
    assert recipe.name == "my-run"
    assert recipe.base_dir == tmp_path
    assert recipe.model.source == "pocket-tiny" and recipe.model.dtype == "float32"
    assert not recipe.model.trust_remote_code and recipe.model.chat_template is None and not recipe.model.allow_pickle
    parts = recipe.parts
    assert (parts.vision.mode, parts.vision.lr) == ("frozen", 2e-5)
    assert (parts.projector.mode, parts.projector.lr) == ("full", 1e-4)
    assert (parts.llm.mode, parts.llm.lr) == ("lora", 1e-4)
    assert (parts.llm.lora.r, parts.llm.lora.alpha, parts.llm.lora.dropout, parts.llm.lora.targets) == (16, 32, 0.05, None)
    assert recipe.tiling.model_dump() == {"tile_size": None, "min_tiles": None, "max_tiles": None, "thumbnail": None,
                                          "max_pixels": None}
    assert recipe.data.eval_sources == [] and recipe.data.max_bad_fraction == 0.05
    src = recipe.data.sources[0]
    assert (src.kind, src.ratio, src.repeat, src.max_tiles) == ("domain", None, None, None)
    assert (recipe.mixing.general_ratio, recipe.mixing.seed, recipe.mixing.epoch_size) == (0.3, 0, None)
    t = recipe.training
    assert (t.epochs, t.max_steps, t.batch_size, t.grad_accum, t.schedule) == (1, None, 4, 1, "cosine")
    assert (t.warmup_ratio, t.weight_decay, t.max_grad_norm, t.max_seq_length) == (0.03, 0.0, 1.0, 4096)
    assert (t.gradient_checkpointing, t.precision, t.num_workers) == (False, "fp32", 0)
    assert (recipe.distributed.strategy, recipe.distributed.deepspeed) == ("none", "zero1")
    assert recipe.output.dir == tmp_path / "runs" / "my-run"
    assert (recipe.output.save_every, recipe.output.keep_last, recipe.output.merge_lora) == (200, 2, True)
    assert (recipe.logging.every, recipe.logging.tensorboard) == (10, True)
    assert (recipe.eval.every, recipe.eval.max_samples, recipe.eval.max_new_tokens, recipe.eval.batch_size) == (None, None, 32, 8)
    assert recipe.seed == 0


def test_eval_protocol_and_graph_filter_reach_the_scorers(tmp_path):
    from domains.driving import language
    from domains.driving import metrics as drivelm

    recipe = load_recipe(write(tmp_path, "{}\n"))
    # the official rules by default; the graph filter follows the protocol unless set
    assert (recipe.eval.protocol, recipe.eval.graph_filter) == ("official", None)
    assert recipe.eval.context() == {"judge": None, "protocol": "official", "graph_filter": None}
    recipe = load_recipe(write(tmp_path, "eval: {protocol: pocket, graph_filter: true}\n"))
    assert recipe.eval.context() == {"judge": None, "protocol": "pocket", "graph_filter": True}
    # the recipe offers exactly the protocols the scorers know
    assert get_args(EvalSpec.model_fields["protocol"].annotation) == drivelm.PROTOCOLS == language.PROTOCOLS


def test_empty_recipe_is_all_defaults(tmp_path):
    """An empty mapping asks for every default; an empty file is refused (see test_validate_refusals)."""
    recipe = load_recipe(write(tmp_path, "{}\n"))
    assert recipe.name == "recipe" and recipe.data.sources == []
    with pytest.raises(RecipeError, match="holds no settings"):
        load_recipe(write(tmp_path, ""))


def test_name_in_the_file_wins_over_the_stem(tmp_path):
    recipe = load_recipe(write(tmp_path, "name: landcover-lora\n" + MINIMAL))
    assert recipe.name == "landcover-lora" and recipe.output.dir == tmp_path / "runs" / "landcover-lora"


@pytest.mark.parametrize("file, name", [(".x.yaml", "x"), ("._é.yaml", "recipe"), ("été.yaml", "t_")])
def test_a_file_stem_that_is_no_usable_name_gives_a_visible_run_folder(tmp_path, file, name):
    # `.x.yaml` named the run `.x`, so its output went to the hidden runs/.x
    recipe = load_recipe(write(tmp_path, MINIMAL, file))
    assert recipe.name == name and recipe.output.dir == tmp_path / "runs" / name


def test_round_trip_through_yaml(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "training: {max_steps: 7}\ntiling: {max_tiles: 4}\n"))
    text = recipe.to_yaml()
    data = yaml.safe_load(text)
    assert data["training"]["max_steps"] == 7 and data["parts"]["llm"]["lora"]["r"] == 16  # defaults filled in
    assert data["data"]["sources"][0]["path"] == str(tmp_path / "data/field/train.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = load_recipe(write(elsewhere, text, "copy.yaml"))
    assert again.model_dump() == recipe.model_dump()
    assert again.to_yaml() == text


# ---------------------------------------------------------------------- unknown keys
def test_unknown_top_level_key_suggests(tmp_path):
    path = write(tmp_path, MINIMAL + "trainig:\n  max_steps: 3\n")
    message = error_of(path)
    assert f"{path}: unknown key 'trainig' at top level — did you mean 'training'?" in message
    assert "line 5" in message


def test_unknown_nested_key_suggests(tmp_path):
    message = error_of(write(tmp_path, MINIMAL + "training:\n  bach_size: 2\n"))
    assert "recipe.yaml: unknown key 'training.bach_size' — did you mean 'training.batch_size'?" in message


def test_unknown_key_in_a_list_item(tmp_path):
    message = error_of(write(tmp_path, "data:\n  sources:\n    - {nmae: a, path: a.jsonl}\n"))
    assert "unknown key 'data.sources[0].nmae' — did you mean 'data.sources[0].name'?" in message


def test_misplaced_key_points_to_its_section(tmp_path):
    message = error_of(write(tmp_path, MINIMAL + "max_steps: 20\ntraining: {general_ratio: 0.5}\n"))
    assert "unknown key 'max_steps' at top level — did you mean 'training.max_steps'?" in message
    assert "unknown key 'training.general_ratio' — did you mean 'mixing.general_ratio'?" in message


def test_logging_steps_points_to_logging_every_and_says_what_it_does(tmp_path):
    # it was pointed to logging.every (or eval.every) as if every thinned the log; the log gets every step
    message = error_of(write(tmp_path, MINIMAL + "training: {logging_steps: 5}\n"))
    assert ("unknown key 'training.logging_steps' — did you mean 'logging.every'? (it only thins the console lines "
            "under --no-progress; train_log.jsonl and TensorBoard get every step)") in message


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path):
    message = error_of(write(tmp_path, MINIMAL + "logging:\n  wandb_project: x\n"))
    assert "unknown key 'logging.wandb_project'" in message and "every, tensorboard" in message


# ---------------------------------------------------------------------- types and values
@pytest.mark.parametrize(("snippet", "expected"), [
    ("training: {batch_size: four}", "training.batch_size: must be a valid integer"),
    # YAML 1.1 reads 1e3 as a string; it said only 'unable to parse string as an integer'
    ("training: {max_steps: 1e3}", "training.max_steps: must be a whole number, and YAML read 1e3 as text, not a "
                                   "number (YAML 1.1 reads an exponent only with a dot and a sign, as 1.0e+3 for a "
                                   "float): write 1000 (got '1e3')"),
    ("training: {batch_size: 0}", "training.batch_size: must be greater than or equal to 1 (got 0)"),
    ("training: {precision: fp8}", "training.precision: must be 'fp32', 'bf16' or 'fp16' (got 'fp8')"),
    ("parts: {llm: {mode: qlora}}", "parts.llm.mode: must be 'frozen', 'lora' or 'full' (got 'qlora')"),
    ("mixing: {general_ratio: 1}", "mixing.general_ratio: must be less than 1"),
    ("training: [1, 2]", "training: expected a mapping"),
    ("distributed: {deepspeed: zero4}", "distributed.deepspeed: must be one of zero1, zero2, zero3 or a path"),
    ("model: {source: pocket-tinny}", "model.source: 'pocket-tinny' is neither a model preset nor a checkpoint directory"),
    ("model: {chat_template: hermes-2}", "model.chat_template: unknown chat template 'hermes-2'"),
    ("training: {epochs: null, max_steps: null}", "training: set epochs or max_steps"),
    ("parts: {projector: {mode: frozen}, llm: {mode: frozen}}", "parts: every part is frozen"),
    ("tiling: {min_tiles: 6, max_tiles: 2}", "tiling: min_tiles (6) must be <= max_tiles (2)"),
    ("eval: {protocol: lenient}", "eval.protocol: must be 'official' or 'pocket' (got 'lenient')"),
    ("eval: {graph_filter: sometimes}", "eval.graph_filter: must be a valid boolean"),
])
def test_wrong_values_name_the_key(tmp_path, snippet, expected):
    message = error_of(write(tmp_path, MINIMAL + snippet + "\n"))
    assert message.startswith(f"{tmp_path / 'recipe.yaml'}: ")
    assert expected in message


def test_preset_typo_suggests_the_preset(tmp_path):
    assert "did you mean 'pocket-tiny'?" in error_of(write(tmp_path, "model: {source: pocket-tinny}\n"))


def test_a_preset_hub_id_as_source_points_at_its_preset(tmp_path):
    # `adapt chat --model OpenGVLab/InternVL2-1B` names the preset; the recipe only listed the presets
    message = error_of(write(tmp_path, "model: {source: mtgv/mobilevlm_v2-1.7b}\n"))
    assert "model.source: 'mtgv/mobilevlm_v2-1.7b' is the hub id of the preset mobilevlm-v2-1.7b" in message
    assert "give model.source: mobilevlm-v2-1.7b, which fetches it" in message


def test_a_hub_id_as_model_vision_says_the_presets_and_a_local_folder(tmp_path):
    # model.source listed the presets and pointed a preset's hub id at its preset; model.vision said neither
    message = error_of(write(tmp_path, "model: {vision: OpenGVLab/InternVL2-1B}\n"))
    assert "model.vision: 'OpenGVLab/InternVL2-1B' is the hub id of the preset internvl2-1b" in message
    assert "give model.vision: internvl2-1b, which fetches it" in message
    message = error_of(write(tmp_path, "model: {vision: 'OpenGVLab/InternViT-300M-448px'}\n"))
    assert "give model.vision: hub:OpenGVLab/InternViT-300M-448px to fetch that tower from the hub" in message
    assert "hf download OpenGVLab/InternViT-300M-448px --local-dir DIR" in message
    assert "(model.vision: DIR); presets: pocket-tiny, " in message
    assert "; presets: pocket-tiny, " in error_of(write(tmp_path, "model: {vision: no-such-tower}\n"))
    assert "a hub tower is named hub:OWNER/NAME" in error_of(write(tmp_path, "model: {vision: 'hub:InternViT'}\n"))


def test_a_hub_tower_as_model_vision_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """model.vision refused hub:OWNER/NAME, which distill.*.source takes, model.load(vision=...) loads and adapt
    validate looked up in the hub cache (a branch no recipe could reach); it is a tower fetched as distill's are."""
    from huggingface_hub import constants

    import model
    from adapt.recipe import recipe_warnings
    from model.checkpoints.tower import load_vision, save_tower

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    recipe = load_recipe(write(tmp_path, MINIMAL + "model: {source: pocket-tiny-scratch, "
                                                   "vision: 'hub:someone/tower'}\n"))
    assert recipe.model.vision == "hub:someone/tower"
    assert any(note.startswith("model.vision: the weights of someone/tower are not in the local Hugging Face cache")
               for note in recipe_warnings(recipe))
    repo = tmp_path / "hub" / "models--someone--tower"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    tower, tiling = load_vision("pocket-tiny-scratch")
    for p in tower.parameters():  # weights the model's own tower does not have
        p.data.add_(0.5)
    save_tower(tower, tiling, repo / "snapshots" / ("0" * 40))
    assert not any("model.vision" in note for note in recipe_warnings(recipe))
    vlm, _ = model.load(recipe.model.source, vision=recipe.model.vision)
    loaded, saved = vlm.vision_tower.state_dict(), tower.state_dict()
    assert loaded.keys() == saved.keys() and all(loaded[k].equal(saved[k]) for k in saved)


def test_every_error_is_reported_in_file_order(tmp_path):
    message = error_of(write(tmp_path, MINIMAL + "training: {batch_size: 0}\nmixing: {general_ratio: 2}\n"))
    lines = message.splitlines()
    assert len(lines) == 2 and "training.batch_size" in lines[0] and "mixing.general_ratio" in lines[1]


def test_numbers_written_like_1e_4_are_floats(tmp_path):
    # YAML 1.1 reads 1e-4 (no dot) as a string; the schema still takes it as a number
    recipe = load_recipe(write(tmp_path, MINIMAL + "parts: {llm: {lr: 1e-4}}\n"))
    assert recipe.parts.llm.lr == pytest.approx(1e-4)


def test_ratio_and_repeat_are_exclusive(tmp_path):
    text = "data:\n  sources:\n    - {name: a, path: a.jsonl, ratio: 0.5, repeat: 2}\nmixing: {general_ratio: 0}\n"
    message = error_of(write(tmp_path, text))
    assert "data.sources[0]: give ratio or repeat, not both" in message


def test_repeat_above_one_is_whole(tmp_path):
    text = "data:\n  sources:\n    - {name: a, path: a.jsonl, repeat: 1.5}\nmixing: {general_ratio: 0}\n"
    assert "data.sources[0].repeat: above 1 must be a whole number" in error_of(write(tmp_path, text))


def test_ratio_for_all_of_a_kind_or_none(tmp_path):
    text = """\
    data:
      sources:
        - {name: a, path: a.jsonl, ratio: 2}
        - {name: b, path: b.jsonl}
    mixing: {general_ratio: 0}
    """
    assert "ratio is given for domain source(s) a but not for b" in error_of(write(tmp_path, text))


def test_a_kind_whose_every_ratio_is_zero_is_refused(tmp_path):
    """ratio 0 on every domain source drew nothing: training said 'no domain source has records' instead."""
    text = "data:\n  sources:\n    - {name: a, path: a.jsonl, ratio: 0}\nmixing: {general_ratio: 0}\n"
    assert "every domain source has ratio 0 (a), so none would be drawn" in error_of(write(tmp_path, text))
    fine = "data:\n  sources:\n    - {name: a, path: a.jsonl, ratio: 0}\n    - {name: b, path: b.jsonl, ratio: 1}\n" \
           "mixing: {general_ratio: 0}\n"
    load_recipe(write(tmp_path, fine))  # one source left out of the mix on purpose is fine


def test_a_recipe_without_a_domain_source_is_refused(tmp_path):
    """Only general sources and no mixing.epoch_size: adapt validate said 'valid recipe' (the plan a note), and
    adapt train then stopped, as the epoch is sized by the domain records."""
    text = "data:\n  sources:\n    - {name: g, path: g.jsonl, kind: general}\nmixing: {general_ratio: 0.3}\n"
    assert "no data.sources entry has kind: domain" in error_of(write(tmp_path, text))
    assert "no data.sources entry has kind: domain" in error_of(write(tmp_path, text.replace("0.3", "0")))
    load_recipe(write(tmp_path, text.replace("{general_ratio: 0.3}", "{general_ratio: 0.3, epoch_size: 1}")))
    load_recipe(write(tmp_path, "data:\n  eval_sources:\n    - {name: g, path: g.jsonl, kind: general}\n"))


def test_general_ratio_needs_a_general_source(tmp_path):
    message = error_of(write(tmp_path, "data:\n  sources:\n    - {name: a, path: a.jsonl}\n"))
    assert "mixing.general_ratio is 0.3 but no entry of data.sources has kind: general" in message


def test_source_names_are_unique_and_paths_are_annotation_files(tmp_path):
    text = """\
    data:
      sources:
        - {name: a, path: a.jsonl}
        - {name: a, path: b.csv}
    """
    message = error_of(write(tmp_path, text))
    assert "data.sources[1].path: 'b.csv' must be a .jsonl annotation file or an InternVL meta .json" in message
    text = "data:\n  sources:\n    - {name: a, path: a.jsonl}\n    - {name: a, path: b.jsonl}\nmixing: {general_ratio: 0}\n"
    assert "data.sources: two sources are named 'a'" in error_of(write(tmp_path, text))


def test_different_lora_dropouts_are_refused(tmp_path):
    text = MINIMAL + "parts: {vision: {mode: lora, lora: {dropout: 0.1}}}\n"
    assert "every LoRA part must use the same lora.dropout" in error_of(write(tmp_path, text))


# ---------------------------------------------------------------------- malformed files
def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: 2\n   epochs: 3\n")
    message = error_of(path)
    assert message.startswith(f"{path}: malformed YAML at line 3")


def test_duplicate_section_is_an_error(tmp_path):
    message = error_of(write(tmp_path, "training: {batch_size: 2}\nseed: 1\ntraining: {epochs: 2}\n"))
    assert "line 3" in message and "duplicate key 'training' (first at line 1)" in message


def test_yaml_merge_keys_share_settings_and_own_keys_win(tmp_path):
    """`lora: {<<: *shared, r: 4}` failed with "could not determine a constructor for the tag ...merge"."""
    text = MINIMAL + ("parts:\n  vision: {mode: lora, lora: &shared {r: 8, alpha: 16, dropout: 0.0}}\n"
                      "  llm: {mode: lora, lora: {<<: *shared, r: 4}}\n")
    recipe = load_recipe(write(tmp_path, text))
    assert (recipe.parts.vision.lora.r, recipe.parts.llm.lora.r, recipe.parts.llm.lora.alpha) == (8, 4, 16)
    text = MINIMAL + "parts:\n  llm: {mode: lora, lora: {r: 4, r: 2}}\n"
    assert "duplicate key 'r'" in error_of(write(tmp_path, text))  # the mapping's own keys still may not repeat


def test_a_recipe_must_be_a_mapping(tmp_path):
    assert "expected a mapping of sections" in error_of(write(tmp_path, "- a\n- b\n"))


def test_missing_recipe_file(tmp_path):
    assert "no such recipe file" in error_of(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------- overrides
def test_override_values_are_yaml():
    data = apply_overrides({"training": {"batch_size": 2}}, [
        "training.max_steps=20", "mixing.general_ratio=0", "parts.llm.mode=full", "training.gradient_checkpointing=true",
        "eval.max_samples=null", "tiling.max_tiles=", "parts.llm.lora.targets=[q_proj, v_proj]", "name=run-2",
        "parts.llm.lr=2.5e-4", "data.sources=[{name: a, path: a.jsonl}]",
    ])
    assert data["training"] == {"batch_size": 2, "max_steps": 20, "gradient_checkpointing": True}
    assert data["mixing"]["general_ratio"] == 0 and data["parts"]["llm"]["mode"] == "full"
    assert data["eval"]["max_samples"] is None and data["tiling"]["max_tiles"] is None
    assert data["parts"]["llm"]["lora"]["targets"] == ["q_proj", "v_proj"] and data["name"] == "run-2"
    assert data["data"]["sources"] == [{"name": "a", "path": "a.jsonl"}]


def test_overrides_do_not_touch_the_input():
    original = {"training": {"batch_size": 2}}
    apply_overrides(original, ["training.batch_size=8"])
    assert original == {"training": {"batch_size": 2}}


def test_an_override_changes_only_its_key_where_yaml_aliases_share_a_block(tmp_path):
    # the parts shared one dict (`llm: *same`), which the overrides' deepcopy kept shared: parts.llm.lr=5.0e-5 and
    # parts.llm.mode=lora also set the projector's learning rate and put it in LoRA mode
    path = write(tmp_path, MINIMAL + "parts:\n  projector: &same {mode: full, lr: 1.0e-4}\n  llm: *same\n")
    recipe = load_recipe(path, ["parts.llm.lr=5.0e-5", "parts.llm.mode=lora"])
    assert (recipe.parts.llm.mode, recipe.parts.llm.lr) == ("lora", 5e-5)
    assert (recipe.parts.projector.mode, recipe.parts.projector.lr) == ("full", 1e-4)
    shared = {"name": "a", "path": "a.jsonl"}
    out = apply_overrides({"data": {"sources": [shared], "eval_sources": [shared]}}, ["data.sources[0].ratio=0.5"])
    assert out["data"]["eval_sources"] == [{"name": "a", "path": "a.jsonl"}]


def test_numbers_yaml_11_reads_as_other_numbers_are_refused(tmp_path):
    # a leading 0 is octal and a colon base 60 in YAML 1.1: seed 0042 trained with seed 34, batch_size=010 with 8
    path = write(tmp_path, MINIMAL + "mixing:\n  seed: 0042\n")
    assert "mixing.seed: YAML 1.1 reads 0042 as the octal number 34 (a leading 0); write 42" in error_of(path)
    path = write(tmp_path, MINIMAL)
    assert "override training.batch_size=…: YAML 1.1 reads 010 as the octal number 8" in \
        error_of(path, ["training.batch_size=010"])
    assert "reads 1:30 as the base-60 number 90" in error_of(path, ["training.max_steps=1:30"])
    recipe = load_recipe(path, ["training.batch_size=08", "training.grad_accum=07", "name='010'"])
    assert (recipe.training.batch_size, recipe.training.grad_accum, recipe.name) == (8, 7, "010")


def test_override_into_a_list_item():
    data = {"data": {"sources": [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}]}}
    out = apply_overrides(data, ["data.sources[1].ratio=0.25", "data.sources.0.kind=general"])
    assert out["data"]["sources"][1]["ratio"] == 0.25 and out["data"]["sources"][0]["kind"] == "general"
    with pytest.raises(RecipeError, match=r"'data.sources' has 2 item\(s\), no item \[5\]"):
        apply_overrides(data, ["data.sources[5].ratio=1"])


@pytest.mark.parametrize(("override", "expected"), [
    ("trainig.max_steps=2", "override 'trainig.max_steps=2': unknown key 'trainig' at top level — did you mean 'training'?"),
    ("training.max_step=2", "unknown key 'training.max_step' — did you mean 'training.max_steps'?"),
    ("parts.llm.lora.rank=8", "unknown key 'parts.llm.lora.rank' — did you mean 'parts.llm.lora.r'?"),
    ("training.max_steps", "expected dotted.key=value"),
    ("training.max_steps.x=1", "'training.max_steps' is a value, not a section"),
    ("data.sources=[", "the value is not valid YAML"),
    # YAML comments: the value was cut silently (a run folder runs/exp, a name of null)
    ("output.dir=runs/exp #2", "override output.dir=…: YAML reads '#2' as a comment, leaving 'runs/exp'; quote"),
    ("name=#1", "YAML reads '#1' as a comment, leaving null"),
    # a '#' inside the value as well hid the comment from a check of the value's text
    ("output.dir=runs/exp#1 #2", "YAML reads '#2' as a comment, leaving 'runs/exp#1'"),
    ("name='a #1' #2", "YAML reads '#2' as a comment, leaving 'a #1'"),
    ("data.sources=[a#1, b] # two", "YAML reads '# two' as a comment, leaving ['a#1', 'b']"),
])
def test_bad_overrides(override, expected):
    with pytest.raises(RecipeError) as info:
        apply_overrides({}, [override])
    assert expected in str(info.value)


@pytest.mark.parametrize(("override", "value"), [
    ("output.dir=runs/exp#2", "runs/exp#2"), ("name='a #1'", "a #1"), ("name=C#", "C#"),
    ("output.dir={dir: '#x'}", {"dir": "#x"}), ("name=|\n  a # b\n", "a # b\n"),
])
def test_a_hash_inside_a_value_is_no_comment(override, value):
    key = override.split("=", 1)[0]
    out = apply_overrides({}, [override])
    for part in key.split("."):
        out = out[part]
    assert out == value


def test_overrides_through_load_recipe(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["training.max_steps=20", "mixing.general_ratio=0", "parts.llm.mode=full"])
    assert recipe.training.max_steps == 20 and recipe.mixing.general_ratio == 0 and recipe.parts.llm.mode == "full"
    message = error_of(path, ["training.bach_size=2"])
    assert message.startswith(f"{path}: override 'training.bach_size=2'") and "did you mean 'training.batch_size'?" in message
    message = error_of(path, ["training.max_steps=many"])
    assert "training.max_steps: must be a valid integer" in message
    assert "(set by override 'training.max_steps=many')" in message
    # a check over the whole model section names the override of the field it is about, not the section's line
    message = error_of(path, ["model.projector=qformerr"])
    assert "unknown projector 'qformerr'" in message and message.endswith("(set by override 'model.projector=qformerr')")
    message = error_of(path, ["model.projector=qformer", "model.projector_options.num_queries=abc"])
    assert "num_queries must be a positive int" in message and "'model.projector_options.num_queries=abc')" in message
    # a negative index names its override too (it was blamed on the file's line of the item, which has no ratio)
    message = error_of(path, ["data.sources[-1].ratio=-1"])
    assert message.endswith("data.sources[1].ratio: must be greater than or equal to 0 (got -1) "
                            "(set by override 'data.sources[-1].ratio=-1')"), message


# ---------------------------------------------------------------------- paths
def test_relative_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "ckpt").mkdir(parents=True)
    (folder / "ckpt" / "config.json").write_text('{"model_type": "pocket_vlm"}')
    (folder / "my_template.yaml").write_text((templates_dir() / "chat" / "Hermes-2.yaml").read_text(encoding="utf-8"),
                                             encoding="utf-8")  # a whole template: its fields are checked too
    (folder / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    path = write(folder, """\
    model: {source: ckpt, chat_template: my_template.yaml}
    data:
      sources:
        - {name: a, path: data/a.jsonl}
        - {name: g, path: ../shared/general/meta.json, root: /images, kind: general}
      eval_sources:
        - {name: a, path: data/a_test.jsonl, root: imgs}
    distributed: {strategy: deepspeed, deepspeed: ds.json}
    output: {dir: out}
    """)
    monkeypatch.chdir(tmp_path)  # somewhere else: must not matter
    recipe = load_recipe(path)
    assert recipe.base_dir == folder
    assert recipe.model.source == str(folder / "ckpt")
    assert recipe.model.chat_template == str(folder / "my_template.yaml")
    a, g = recipe.data.sources
    assert a.path == folder / "data" / "a.jsonl" and a.root == folder / "data"  # root defaults to the file's folder
    assert g.path == tmp_path / "shared" / "general" / "meta.json" and g.root == Path("/images")
    assert recipe.data.eval_sources[0].root == folder / "imgs"
    assert recipe.distributed.deepspeed == str(folder / "ds.json")
    assert recipe.deepspeed_config() == {"zero_optimization": {"stage": 2}}
    assert recipe.output.dir == folder / "out"


def test_a_missing_data_file_is_not_a_schema_error(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert not recipe.data.sources[0].path.exists()


def test_parse_recipe_from_a_dict(tmp_path):
    recipe = parse_recipe({"data": {"sources": [{"name": "a", "path": "a.jsonl"}]}, "mixing": {"general_ratio": 0}},
                          tmp_path, "from-dict")
    assert recipe.name == "from-dict" and recipe.base_dir == tmp_path
    assert recipe.data.sources[0].path == tmp_path / "a.jsonl"
    with pytest.raises(RecipeError, match="recipe 'from-dict': unknown key 'trainig' at top level"):
        parse_recipe({"trainig": {}}, tmp_path, "from-dict")


def test_every_model_forbids_extra_keys():
    import adapt.recipe as module

    models = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, module.BaseModel)
              and v.__module__ == module.__name__]
    assert Recipe in models and len(models) > 10
    assert all(m.model_config.get("extra") == "forbid" for m in models)


# ---------------------------------------------------------------------- tiling
def test_tiling_overrides_merge_into_the_models_tiling(tmp_path):
    model_tiling = TilingConfig(tile_size=448, min_tiles=1, max_tiles=12, thumbnail=True)
    recipe = load_recipe(write(tmp_path, MINIMAL + "tiling: {max_tiles: 6, thumbnail: false}\n"))
    merged = recipe.tiling_for(model_tiling)
    assert (merged.tile_size, merged.min_tiles, merged.max_tiles, merged.thumbnail) == (448, 1, 6, False)
    assert merged.mean == model_tiling.mean
    assert load_recipe(write(tmp_path, MINIMAL)).tiling_for(model_tiling) == model_tiling
    clash = load_recipe(write(tmp_path, MINIMAL + "tiling: {min_tiles: 8}\nmodel: {source: internvl2-1b}\n"))
    with pytest.raises(RecipeError, match="tiling.min_tiles=8"):
        clash.tiling_for(TilingConfig(max_tiles=6))


@pytest.mark.parametrize("text", [
    MINIMAL + "tiling: {max_tiles: 41}\n",
    MINIMAL + "tiling: {min_tiles: 5000}\n",
    MINIMAL.replace("path: data/field/train.jsonl}", "path: data/field/train.jsonl, max_tiles: 41}"),
])
def test_tile_counts_above_the_limit_are_refused_by_validate(tmp_path, text):
    with pytest.raises(RecipeError, match="less than or equal to 40"):
        load_recipe(write(tmp_path, text))


def test_the_pixel_cap_is_a_tiling_setting(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "tiling: {max_pixels: 1000000}\n"))
    assert recipe.tiling_for(TilingConfig()).max_pixels == 1_000_000
    assert load_recipe(write(tmp_path, MINIMAL)).tiling_for(TilingConfig()).max_pixels == TilingConfig().max_pixels


def test_projector_options_that_do_not_fit_the_model_are_refused(tmp_path):
    """The projector check had no widths (5040 divides by every head count to 10) and no model: a resampler with 7
    heads over pocket-tiny's 128-wide language model passed adapt validate and stopped adapt train once the model had
    loaded."""
    path = write(tmp_path, MINIMAL)
    message = error_of(path, ["model.projector=resampler", "model.projector_options={num_heads: 7}"])
    assert "model.projector_options: resampler does not fit pocket-tiny (96-wide image features on the 8x8 patch " \
           "grid, a 128-wide language model): resampler: text_hidden 128 is not divisible by num_heads=7" in message, \
           message
    assert "\n" not in message
    recipe = load_recipe(path, ["model.projector=resampler", "model.projector_options={num_heads: 8}"])
    assert recipe.model.projector_options == {"num_heads": 8}

    # with model.projector null the options go to the model's own projector (pocket-tiny's pixel_shuffle_mlp): they
    # were checked against every projector there is, and the patch grid not at all
    own = "model.projector_options: pocket-tiny's own projector pixel_shuffle_mlp (96-wide image features on the 8x8 " \
          "patch grid, a 128-wide language model) does not take them: "
    message = error_of(path, ["model.projector_options={num_queries: 4}"])
    assert own + "projector 'pixel_shuffle_mlp' got unknown option(s) ['num_queries']" in message, message
    message = error_of(path, ["model.projector_options={pool: 3}"])
    assert own + "pixel_shuffle_mlp: grid 8x8 is not divisible by 6 (ratio 0.5, pool 3)" in message, message
    assert load_recipe(path, ["model.projector_options={pool: 2}"]).model.projector_options == {"pool": 2}


# ---------------------------------------------------------------------- DeepSpeed
@pytest.mark.parametrize("name", DEEPSPEED_PRESETS)
def test_bundled_deepspeed_configs(name):
    config = resolve_deepspeed_config(name)
    assert config["zero_optimization"]["stage"] == int(name[-1])
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto"
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    assert "optimizer" not in config and "scheduler" not in config  # the trainer's per-part lr groups stay
    autos = [k for k, v in config["zero_optimization"].items() if v == "auto"]
    assert autos == []  # only the keys the trainer fills are "auto"
    if name == "zero3":
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_deepspeed_config_from_a_path(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_batch_size": 16}))
    assert resolve_deepspeed_config(tmp_path / "mine.json")["train_batch_size"] == 16
    assert resolve_deepspeed_config("mine.json", base_dir=tmp_path)["zero_optimization"]["stage"] == 2
    with pytest.raises(RecipeError, match="no such file"):
        resolve_deepspeed_config(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text('{"zero_optimization": {\n  "stage": 2,\n}')
    with pytest.raises(RecipeError, match="malformed JSON at line 3"):
        resolve_deepspeed_config(tmp_path / "broken.json")


def test_a_deepspeed_config_with_a_duplicate_key_is_refused(tmp_path):
    """json keeps the last of two keys silently: the batch size the user read first in the file was not the one
    DeepSpeed got (its own reader refuses duplicates, but the trainer hands it the dict)."""
    (tmp_path / "mine.json").write_text('{"zero_optimization": {"stage": 2, "stage": 3}}')
    message = error_of(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: mine.json}\n"))
    assert "distributed.deepspeed" in message and "mine.json: duplicate key 'stage'" in message, message


def test_a_missing_deepspeed_file_fails_validation_only_when_used(tmp_path):
    load_recipe(write(tmp_path, MINIMAL + "distributed: {deepspeed: absent.json}\n"))
    message = error_of(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: absent.json}\n"))
    assert "distributed.deepspeed: DeepSpeed config" in message and "no such file" in message


def test_a_missing_deepspeed_file_set_by_override_names_the_override(tmp_path):
    """The error ended '(line N)', the line of distributed: in the file, although the path came from the command
    line."""
    message = error_of(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed}\n"),
                       ["distributed.deepspeed=/tmp/absent-ds.json"])
    assert "no such file" in message and "(set by override 'distributed.deepspeed=/tmp/absent-ds.json')" in message
    assert "(line" not in message


@pytest.mark.parametrize("config,said", [
    ({"optimizer": {"type": "Adam"}}, "'optimizer' section would be ignored"),
    ({"scheduler": {"type": "WarmupLR"}}, "training.schedule and training.warmup_ratio"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, "offload_optimizer (ZeRO-Offload)"),
    ({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}, "offload_param (ZeRO-Offload)"),
    ({"train_batch_size": 7}, "train_batch_size is 7, not a multiple of the recipe's 4 samples per process"),
    ({"train_micro_batch_size_per_gpu": 2}, "is 2, but the recipe gives 4 (training.batch_size)"),
    ({"gradient_accumulation_steps": 8}, "is 8, but the recipe gives 1 (training.grad_accum)"),
    ({"gradient_clipping": 0.5}, "is 0.5, but the recipe gives 1.0 (training.max_grad_norm)"),
    ({"bf16": {"enabled": True}}, "bf16.enabled is true, but the recipe gives false (training.precision fp32)"),
    # passed validation, then a TypeError traceback once adapt train had loaded the model and set bf16.enabled
    ({"bf16": True}, 'bf16 is true, but DeepSpeed takes a section there: {"enabled": "auto"}'),
    ({"fp16": "auto"}, 'fp16 is "auto", but DeepSpeed takes a section there'),
    # DeepSpeed's old name: read only without "bf16", which the trainer always writes, so it was silently dropped
    ({"bfloat16": {"enabled": True}}, "'bfloat16' section would be ignored"),
])
def test_a_deepspeed_config_the_recipe_would_overrule_is_refused(tmp_path, config, said):
    """DeepSpeed's traceback (a batch-size assertion, ZeRO-Offload refusing torch's AdamW) or a setting silently
    ignored (an optimizer section) or overwritten (fp16 / bf16): now one line naming the key and what to do."""
    (tmp_path / "mine.json").write_text(json.dumps(config))
    message = error_of(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: mine.json}\n"))
    assert "distributed.deepspeed" in message and said in message, message
    assert "\n" not in message


@pytest.mark.parametrize("key", ["train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                                 "gradient_clipping"])
def test_a_boolean_where_deepspeed_takes_a_number_is_refused(tmp_path, key):
    """true == 1 in Python: it equalled the recipe's batch size 1 (grad_accum 1, max_grad_norm 1.0) and passed."""
    (tmp_path / "mine.json").write_text(json.dumps({key: True}))
    message = error_of(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: mine.json}\n"
                                                 "training: {batch_size: 1, grad_accum: 1, max_grad_norm: 1.0}\n"))
    assert f"mine.json: {key} is true, but DeepSpeed takes a number there" in message, message


@pytest.mark.parametrize("value", ['"16"', "0", "-8", "[16]"])
def test_a_deepspeed_batch_size_that_is_no_count_is_named_so(tmp_path, value):
    """"16" (text), 0 or -8 were refused as "not a multiple of the recipe's 4 samples per process", which 0 and -8
    are, and "16" reads as; and with the process count given, "16" was "but the recipe gives 16"."""
    (tmp_path / "mine.json").write_text(f'{{"train_batch_size": {value}}}')
    message = error_of(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: mine.json}\n"))
    assert f"mine.json: train_batch_size is {value}, but DeepSpeed takes a number there (at least 1)" in message
    with pytest.raises(RecipeError, match="takes a number there"):
        resolve_deepspeed_config(tmp_path / "mine.json", training=Training(), world=4)


@pytest.mark.parametrize("zero,said", [
    ({"stage": 7}, "zero_optimization.stage is 7; it must be 0, 1, 2 or 3"),
    ({"stage": "2"}, 'zero_optimization.stage is "2"; it must be 0, 1, 2 or 3'),
    ({"stage": True}, "zero_optimization.stage is true; it must be 0, 1, 2 or 3"),
    ({"stage": 2, "overlap_com": True}, "zero_optimization.overlap_com is not a DeepSpeed ZeRO setting — did you "
                                        "mean 'overlap_comm'?"),
    ({"stage": 2, "reduce_bucket_size": "big"}, "zero_optimization.reduce_bucket_size: input should be a valid "
                                                "integer"),
    # DeepSpeed's schema reads true as a bucket of 1
    ({"stage": 2, "reduce_bucket_size": True}, "zero_optimization.reduce_bucket_size is true, but DeepSpeed takes a "
                                               "number there"),
])
def test_a_zero_section_deepspeed_would_refuse_is_refused(tmp_path, zero, said):
    """adapt validate passed these, and adapt train stopped with DeepSpeed's pydantic traceback inside
    deepspeed.initialize, after the model had loaded."""
    if "stage is" not in said:  # the stage is checked without DeepSpeed, the other keys by its own schema
        require("deepspeed", "its ZeRO schema checks the other keys")
    (tmp_path / "mine.json").write_text(json.dumps({"zero_optimization": zero}))
    message = error_of(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: mine.json}\n"))
    assert "distributed.deepspeed" in message and f"mine.json: {said}" in message, message
    assert "\n" not in message


def test_a_zero_stage_written_as_a_whole_float_is_taken_as_deepspeed_reads_it(tmp_path):
    """`"stage": 2.0` is no misreading: DeepSpeed's schema takes it as ZeRO-2 (true, also == 1, is refused above)."""
    require("deepspeed", "its ZeRO schema reads the stage")
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    (tmp_path / "mine.json").write_text(json.dumps({"zero_optimization": {"stage": 2.0}}))
    recipe = load_recipe(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: mine.json}\n"))
    zero = recipe.deepspeed_config()["zero_optimization"]
    assert DeepSpeedZeroConfig(**zero).stage == 2


def test_a_deepspeed_config_that_agrees_with_the_recipe_is_taken(tmp_path):
    config = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
              "gradient_clipping": 1.0, "bf16": {"enabled": True}, "zero_optimization": {
                  "stage": 2, "offload_optimizer": {"device": "none"}}}
    (tmp_path / "mine.json").write_text(json.dumps(config))
    recipe = load_recipe(write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed, deepspeed: mine.json}\n"
                               "training: {grad_accum: 2, precision: bf16}\n"))
    training = recipe.training
    assert resolve_deepspeed_config(recipe.distributed.deepspeed, training=training, world=2) == config
    with pytest.raises(RecipeError, match=r"train_batch_size is 16, but the recipe gives 24 .* x 3 process"):
        resolve_deepspeed_config(recipe.distributed.deepspeed, training=training, world=3)


# ---------------------------------------------------------------------- templates
def test_templates_are_listed_with_descriptions():
    templates = list_recipe_templates()
    assert {"quickstart", "internvl2-1b_lora"} <= set(templates)
    assert all(description for description in templates.values())


@pytest.mark.parametrize("name", sorted(list_recipe_templates()))
def test_shipped_templates_validate(name):
    path = templates_dir() / "recipes" / f"{name}.yaml"
    text = path.read_text()
    assert "adapt validate" in text and "adapt train" in text and "adapt eval" in text
    recipe = load_recipe(path)
    assert recipe.name == name
    assert recipe.data.sources and recipe.data.eval_sources
    # every key of the schema appears in the template, so it documents itself
    dumped = yaml.safe_load(recipe.to_yaml())
    written = yaml.safe_load(text)

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(dumped) == keys(written)
    # so is every key of a list item or of a section the template leaves null (eval.judge.timeout, data.augment.flips,
    # a distill source's root): written as `key:`, in the YAML or in a comment
    unnamed = [path for leaf, path in _all_keys(type(recipe)) if not re.search(rf"\b{re.escape(leaf)}:", text)]
    assert unnamed == []


def test_quickstart_template_settings():
    recipe = load_recipe(templates_dir() / "recipes" / "quickstart.yaml")
    assert recipe.model.source == "pocket-tiny" and recipe.mixing.general_ratio == 0.3
    assert [(p.mode) for _, p in recipe.parts.items()] == ["frozen", "full", "full"]
    base = recipe.base_dir
    assert [(s.name, s.kind, s.path) for s in recipe.data.sources] == [
        ("landcover", "domain", base / "data/landcover/train.jsonl"), ("general", "general", base / "data/general/train.jsonl")]
    assert [(s.kind, s.path) for s in recipe.data.eval_sources] == [
        ("domain", base / "data/landcover/test.jsonl"), ("general", base / "data/general/test.jsonl")]
    # the README's figures come from this budget (about 4 minutes on 2 cores)
    assert recipe.training.max_steps == 1000 and recipe.training.batch_size == 16


def test_internvl2_1b_template_follows_the_2nd_finetune_script():
    recipe = load_recipe(templates_dir() / "recipes" / "internvl2-1b_lora.yaml")
    t = recipe.training
    assert recipe.model.source == "internvl2-1b" and recipe.parts.llm.mode == "lora" and recipe.parts.llm.lora.r == 16
    assert recipe.parts.llm.lr == 4e-5 and t.warmup_ratio == 0.03 and t.schedule == "cosine" and t.weight_decay == 0.01
    assert t.max_seq_length == 4096 and t.precision == "bf16" and t.batch_size * t.grad_accum * 2 == 16
    assert recipe.distributed.strategy == "deepspeed" and recipe.distributed.deepspeed == "zero1"
    assert recipe.tiling.max_tiles == 6 and recipe.tiling.thumbnail is True


# ---------------------------------------------------------------------- the verbs
def test_init_copies_the_template_with_comments_and_refuses_to_overwrite(tmp_path, capsys):
    dest = tmp_path / "new" / "project"
    assert main(["init", "quickstart", str(dest)]) == 0
    copied = dest / "quickstart.yaml"
    assert copied.read_bytes() == (templates_dir() / "recipes" / "quickstart.yaml").read_bytes()
    assert copied.read_text().startswith("# ") and "adapt validate" in copied.read_text()
    assert str(copied) in capsys.readouterr().out
    copied.write_text("# mine\n")
    assert main(["init", "quickstart", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert copied.read_text() == "# mine\n"
    assert main(["init", "quikstart", str(dest)]) == 1
    assert "did you mean 'quickstart'?" in capsys.readouterr().err


def test_recipes_lists_the_templates(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "internvl2-1b_lora" in out
    assert list_recipe_templates()["quickstart"] in out


def test_validate_prints_the_resolved_recipe(tmp_path, capsys):
    path = write(tmp_path, MINIMAL)
    assert main(["validate", str(path), "training.max_steps=5", "mixing.general_ratio=0.5"]) == 0
    captured = capsys.readouterr()
    data = yaml.safe_load(captured.out)
    assert data["training"]["max_steps"] == 5 and data["mixing"]["general_ratio"] == 0.5
    assert data["output"]["dir"] == str(tmp_path / "runs" / "recipe")
    assert "does not exist yet" in captured.err  # a note, not an error
    (tmp_path / "data" / "field").mkdir(parents=True)
    (tmp_path / "data" / "field" / "train.jsonl").write_text("")
    assert main(["validate", str(path), "data.sources[0].root=no/such/images"]) == 0
    assert f"its image root {tmp_path / 'no' / 'such' / 'images'} does not exist" in capsys.readouterr().err
    # eval sources are scored in full: a repeat or ratio there is said to be unused (it cut the file in half)
    assert main(["validate", str(path), "data.eval_sources=[{name: e, path: data/field/train.jsonl, repeat: 0.5}]",
                 "data.sources[0].repeat=0.5"]) == 0
    err = capsys.readouterr().err
    assert "data.eval_sources[0] (e): repeat unused: evaluation scores every record of an eval source" in err
    assert "data.sources[0]" not in err


def test_validate_notes_a_preset_or_hub_tower_whose_weights_are_not_in_the_local_cache(tmp_path):
    # it said "valid recipe" and adapt train stopped on the missing weights; the cache is looked up on disk only
    import os
    import subprocess
    import sys

    script = ("import sys; from adapt.cli import main; "
              "sys.exit(max(main(['validate', p]) for p in sys.argv[1:]))")
    names = ["internvl2-1b_lora", "remote-sensing_mobilevlm-v2_full", "distill_internvit-6b_300m"]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)

    def validate() -> str:
        paths = [str(templates_dir() / "recipes" / f"{name}.yaml") for name in names]
        run = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, env=env,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stderr

    err = validate()
    for key, hub_id in [("model.source", "OpenGVLab/InternVL2-1B"), ("model.source", "mtgv/MobileVLM_V2-1.7B"),
                        ("distill.teacher.source", "OpenGVLab/InternViT-6B-448px-V1-5"),
                        ("distill.student.source", "OpenGVLab/InternViT-300M-448px")]:
        assert (f"not in the local Hugging Face cache: adapt {'distill' if 'distill' in key else 'train'} downloads "
                f"them if the hub is reachable; else fetch them where there is network (`hf download {hub_id} "
                f"--local-dir DIR`) and pass the folder instead of ") in err
        assert f"{key}: DIR)" in err
    assert "note: model.source: preset internvl2-1b needs the weights of OpenGVLab/InternVL2-1B, which are" in err
    snapshot = tmp_path / "hf" / "hub" / "models--OpenGVLab--InternVL2-1B" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    err = validate()  # a config alone (a load stopped short of the weights) is not the weights
    assert "note: model.source: preset internvl2-1b needs the weights of OpenGVLab/InternVL2-1B" in err
    (snapshot / "model.safetensors").write_bytes(b"")
    err = validate()
    assert "OpenGVLab/InternVL2-1B" not in err and "mtgv/MobileVLM_V2-1.7B" in err


def test_validate_fails_clearly_on_a_bad_key(tmp_path, capsys):
    path = write(tmp_path, MINIMAL + "trainig: {max_steps: 2}\n")
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown key 'trainig' at top level — did you mean 'training'?" in captured.err
    assert str(path) in captured.err and "Traceback" not in captured.err
    assert main(["validate", str(write(tmp_path, MINIMAL, "ok.yaml")), "training.bach_size=3"]) == 1
    assert "did you mean 'training.batch_size'?" in capsys.readouterr().err


# ---------------------------------------------------------------------- reliability (issue 14)
def _laughs(depth: int) -> str:
    """A 'billion laughs' document: each level lists the previous one nine times (9**depth strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """In a file, inside a section, and in an override value; a child process, so a hang fails the test."""
    import subprocess
    import sys

    cases = {
        "top": (write(tmp_path, _laughs(8), "top.yaml"), []),
        "section": (write(tmp_path, "seed: 1\ntraining:\n" + textwrap.indent(_laughs(8), "  "), "section.yaml"), []),
        "override": (write(tmp_path, MINIMAL, "override.yaml"), ["data.sources={" + _laughs(8).replace("\n", ", ") + "}"]),
    }
    script = (
        "import json, sys\nfrom adapt.recipe import RecipeError, load_recipe\nout = {}\n"
        "for name, (path, overrides) in json.loads(sys.argv[1]).items():\n"
        "    try:\n        load_recipe(path, overrides)\n        out[name] = 'loaded'\n"
        "    except RecipeError as err:\n        out[name] = str(err)\n"
        "print(json.dumps(out))\n"
    )
    arg = json.dumps({k: [str(p), o] for k, (p, o) in cases.items()})
    try:
        run = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("loading a recipe with an alias bomb still ran after 30 s")
    assert run.returncode == 0, run.stderr[-2000:]
    messages = json.loads(run.stdout)
    for name, (path, _) in cases.items():
        assert messages[name].startswith(str(path)), messages[name]
        assert "aliases expand to more than" in messages[name], messages[name]


def test_ordinary_anchors_still_work_and_lines_are_still_named(tmp_path):
    path = write(tmp_path, MINIMAL + "parts:\n  llm: {mode: lora, lr: &lr 2.0e-4}\n  projector: {lr: *lr}\n"
                                     "training: {batch_size: 0}\n")
    assert "training.batch_size" in error_of(path) and "(line 8)" in error_of(path)
    text = path.read_text().replace("batch_size: 0", "batch_size: 2")
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.parts.llm.lr == recipe.parts.projector.lr == 2.0e-4


@pytest.mark.parametrize(("snippet", "key"), [
    ("parts: {llm: {lr: .inf}}", "parts.llm.lr"),
    ("parts: {projector: {lr: .nan}}", "parts.projector.lr"),
    ("training: {max_grad_norm: .inf}", "training.max_grad_norm"),
    ("training: {weight_decay: .inf}", "training.weight_decay"),
    ("parts: {llm: {lora: {alpha: .inf}}}", "parts.llm.lora.alpha"),
    ("eval: {judge: {url: x, model: y, timeout: .inf}}", "eval.judge.timeout"),
])
def test_non_finite_numbers_are_refused(tmp_path, snippet, key):
    message = error_of(write(tmp_path, MINIMAL + snippet + "\n"))
    assert f"{key}: must be a finite number" in message


def test_a_non_finite_override_is_refused(tmp_path):
    message = error_of(write(tmp_path, MINIMAL), ["data.sources[0].ratio=.inf", "data.sources[1].ratio=1"])
    assert "data.sources[0].ratio: must be a finite number" in message and "set by override" in message


@pytest.mark.parametrize("override,expected", [
    ("training.batch_size=true", "training.batch_size: expected a number, got true"),
    ("training.max_steps=yes", "training.max_steps: expected a number, got true"),
    ("parts.llm.lr=false", "parts.llm.lr: expected a number, got false"),
    ("seed=-1", "seed: must be greater than or equal to 0"),
    ("mixing.seed=-1", "mixing.seed: must be greater than or equal to 0"),
    ("seed=5000000000", "seed: must be less than 4294967296"),
])
def test_booleans_for_numbers_and_seeds_out_of_range_are_refused(tmp_path, override, expected):
    """pydantic read `true` as 1 (batch size 1), and a seed numpy cannot take passed validation to crash the run."""
    assert expected in error_of(write(tmp_path, MINIMAL), [override])


def test_a_boolean_stays_a_boolean(tmp_path):
    assert load_recipe(write(tmp_path, MINIMAL), ["output.merge_lora=false"]).output.merge_lora is False


def test_recipe_errors_are_pocket_adapt_errors():
    from model.errors import PocketAdaptError

    assert issubclass(RecipeError, PocketAdaptError) and issubclass(RecipeError, ValueError)


def test_a_model_source_folder_that_is_no_checkpoint_is_refused_by_validate(tmp_path):
    """A data folder, a run's checkpoint-N or an export given as model.source is said when the recipe is read,
    not after the data has been read and measured."""
    (tmp_path / "data").mkdir()
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "trainable.safetensors").write_bytes(b"")
    base = "data:\n  sources:\n    - {name: a, path: a.jsonl}\nmixing: {general_ratio: 0}\nmodel:\n  source: "
    assert "data: no config.json (not a checkpoint directory)" in error_of(write(tmp_path, base + "data\n"))
    assert "a training checkpoint" in error_of(write(tmp_path, base + "ck\n"))


def test_more_data_workers_than_cores_is_noted(tmp_path, capsys, monkeypatch):
    """training.num_workers above the machine's cores validated without a word; each is a process with its own
    memory (a large count ran the machine out of memory)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # a 2-core cpuset
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # on a larger machine: the cpuset is what counts
    path = write(tmp_path, MINIMAL)
    assert main(["validate", str(path), "training.num_workers=2"]) == 0
    assert "num_workers" not in capsys.readouterr().err
    assert main(["validate", str(path), "training.num_workers=64"]) == 0
    assert "training.num_workers is 64, more than this machine's 2 CPU core(s)" in capsys.readouterr().err


def test_a_deepspeed_preset_the_strategy_ignores_is_noted(tmp_path, capsys):
    """`deepspeed: zero3` (chosen to fit the model) with strategy none or ddp validated without a word, and the run
    went without ZeRO; only a .json path was noted."""
    path = write(tmp_path, MINIMAL)
    assert main(["validate", str(path), "distributed.deepspeed=zero1"]) == 0  # the default: nothing chosen
    assert "distributed.deepspeed" not in capsys.readouterr().err
    assert main(["validate", str(path), "distributed.strategy=ddp", "distributed.deepspeed=zero3"]) == 0
    assert "distributed.deepspeed is zero3 but distributed.strategy is 'ddp', so it is unused" in capsys.readouterr().err


@pytest.mark.parametrize("cuda", [False, True])
def test_fp16_without_a_gpu_is_noted(tmp_path, capsys, monkeypatch, cuda):
    """adapt train refuses training.precision fp16 without a CUDA GPU (at once, before loading anything), but adapt
    validate on that machine called the recipe valid without a word."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    path = write(tmp_path, MINIMAL)
    assert main(["validate", "--no-plan", str(path), "training.precision=fp16"]) == 0
    said = "on this machine adapt train would stop: training.precision fp16 needs a CUDA GPU, and there is none here"
    assert (said in capsys.readouterr().err) is not cuda


@pytest.mark.parametrize("pairs", ["[[true, 4]]", "[[4, 4], [2, true]]"])
def test_a_boolean_in_distill_pairs_is_refused(pairs):
    """pydantic read true as layer 1: [[true, 4]] distilled teacher layer 1 into the student's last."""
    recipe = templates_dir() / "recipes" / "distill_pocket-tiny.yaml"
    assert load_recipe(recipe, ["distill.layers=null", "distill.pairs=[[4, 4], [2, 1]]"]).distill.pairs == [(4, 4), (2, 1)]
    with pytest.raises(RecipeError, match=r"distill.pairs: layers are numbers, counted from 1; got \[.*true.*\]"):
        load_recipe(recipe, ["distill.layers=null", f"distill.pairs={pairs}"])


@pytest.mark.parametrize("text,overrides,key,said", [
    ("name: 2024\n", (), "name", "a number (0x…, 0… and 1_000 are numbers too): 2024"),
    ("", ["data.sources[0].name=2019"], "data.sources[0].name", ": 2019"),
    ("model: {source: off}\n", (), "model.source",
     "a boolean (YAML 1.1 reads yes, no, on, off, y and n as true / false): false"),
])
def test_text_yaml_read_as_a_number_or_boolean_says_to_quote_it(tmp_path, text, overrides, key, said):
    """`name: 2024` said "must be a valid string (got 2024)", which reads as nonsense to whoever wrote 2024."""
    message = error_of(write(tmp_path, MINIMAL + text), overrides)
    assert f"{key}: must be text, but YAML read the value as " in message and said in message, message
    assert message.split(" (")[-2].endswith("quote it as written"), message


# ---------------------------------------------------------------------- files that are no recipe
def test_an_oversized_recipe_file_is_refused_without_reading_it_whole(tmp_path):
    from adapt.recipe import MAX_RECIPE_BYTES

    path = tmp_path / "big.yaml"  # a valid recipe once read: only its size is wrong
    with open(path, "w", encoding="utf-8") as f:
        f.write(MINIMAL)
        f.write(("#" * 1023 + "\n") * (MAX_RECIPE_BYTES // 1024 + 1))
    text = error_of(path)
    assert "too large to be a recipe" in text and str(path) in text


def test_a_recipe_that_is_not_utf8_names_the_byte_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + "name: caf\u00e9\n".encode("latin-1"))
    text = error_of(path)
    assert "not UTF-8" in text and "0xe9" in text and "line 5, column 10" in text


def test_an_annotation_file_given_as_the_recipe_says_so(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"image": "a.png", "conversations": []}\n' * 3, encoding="utf-8")
    assert "looks like an annotation file" in error_of(path)


def test_an_oversized_deepspeed_config_is_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 1}' + " " * (2 << 20) + "}", encoding="utf-8")
    with pytest.raises(RecipeError, match="too large to be a DeepSpeed config"):
        resolve_deepspeed_config(path)


@pytest.mark.parametrize("text", ["training:\n\tmax_steps: 2\n", "training:\n  max_steps:\t2\n"])
def test_a_tab_in_the_yaml_is_named_as_the_problem(tmp_path, text):
    path = tmp_path / "tabs.yaml"
    path.write_text(MINIMAL + text, encoding="utf-8")
    message = error_of(path)
    assert "line 6" in message and "replace it with spaces" in message


@pytest.mark.parametrize("text,key", [("training:\n  # max_steps: 20\n", "training"),
                                      ("eval_sources:\n", "data.eval_sources")])
def test_an_empty_section_says_it_is_empty(tmp_path, text, key):
    body = MINIMAL + text if key == "training" else MINIMAL + "  " + text
    message = error_of(write(tmp_path, body))
    assert f"{key}: is empty (null)" in message and "leave the key out" in message and "NoneType" not in message


@pytest.mark.parametrize("text,where,shown", [("training:\n  max_steps: 2\n  on: 3\n", "training: ", "true (bool)"),
                                              ("model: {projector_options: {no: 2}}\n", "model.projector_options: ",
                                               "false (bool)"),
                                              ("1: 2\n", ": ", "the number 1"),
                                              ("training: {~: 2}\n", "training: ", "null"),
                                              ("training: {max_steps: 2, 2.5: x}\n", "training: ", "the number 2.5")])
def test_a_key_yaml_reads_as_no_name_is_explained(tmp_path, text, where, shown):
    message = error_of(write(tmp_path, MINIMAL + text))
    assert f"{where}a key that YAML read as {shown}, not a name" in message and "quote the key" in message
    # the on / off / yes / no hint fits a key read as a boolean, not a number nor null
    assert ("reads on, off, yes, no" in message) == shown.endswith("(bool)"), message
    assert "NoneType" not in message


@pytest.mark.parametrize("extra,expected", [('sep: "</s>"\n', "duplicate key 'sep'"),
                                            ("colour: red\n", "unknown field(s) 'colour'")])
def test_a_chat_template_file_is_checked_when_the_recipe_is_read(tmp_path, extra, expected):
    bundled = (templates_dir() / "chat" / "Hermes-2.yaml").read_text(encoding="utf-8")
    (tmp_path / "mine.yaml").write_text(bundled + extra, encoding="utf-8")
    (tmp_path / "fine.yaml").write_text(bundled, encoding="utf-8")
    assert load_recipe(write(tmp_path, MINIMAL + "model: {chat_template: fine.yaml}\n")).model.chat_template
    message = error_of(write(tmp_path, MINIMAL + "model: {chat_template: mine.yaml}\n"))
    assert "model.chat_template" in message and expected in message


@pytest.mark.parametrize("body", ['sep: "</s>"\n', "colour: red\n", "sep: [unclosed\n", b"\xff\n"])
def test_a_bad_chat_template_file_gets_the_message_of_the_loader_training_uses(tmp_path, body):
    """The recipe read the template file with its own YAML and text reading: a file the loader refuses got another
    message (or, where the two disagreed, passed the recipe check and failed at training)."""
    from model.chat import ChatTemplateError, load_chat_template

    bundled = (templates_dir() / "chat" / "Hermes-2.yaml").read_bytes()
    (tmp_path / "mine.yaml").write_bytes(bundled + (body if isinstance(body, bytes) else body.encode()))
    with pytest.raises(ChatTemplateError) as loader:
        load_chat_template(tmp_path / "mine.yaml")
    message = error_of(write(tmp_path, MINIMAL + "model: {chat_template: mine.yaml}\n"))
    assert "model.chat_template" in message and str(loader.value) in message


@pytest.mark.parametrize("target", [".*q_proj", "layers.*.q_proj", "q_proj|v_proj", "q_proj ", "self_attn..q_proj",
                                    ".q_proj", "q_proj."])
def test_a_lora_target_that_is_no_module_name_is_refused_by_validate(tmp_path, target):
    """A peft-style regex or a stray space passed validation and stopped `adapt train` only once the model was loaded
    (matching no module); it is refused from the recipe now, naming the key and the target."""
    path = write(tmp_path, MINIMAL)
    message = error_of(path, [f"parts.llm.lora.targets=[{json.dumps(target)}]"])
    assert "parts.llm.lora.targets" in message and repr(target) in message and "suffixes" in message
    assert load_recipe(path, ["parts.llm.lora.targets=[self_attn.q_proj, experts.0.w1]"]).parts.llm.lora.targets == [
        "self_attn.q_proj", "experts.0.w1"]


def test_a_lora_rank_beyond_any_layer_width_is_refused_by_validate(tmp_path):
    """`r: 1000000000000` passed validate and then ran peft out of memory building the adapter."""
    text = MINIMAL + "parts: {llm: {mode: lora, lora: {r: 1000000000000}}}\n"
    message = error_of(write(tmp_path, text))
    assert "parts.llm.lora.r" in message and "above 4096" in message
    recipe = load_recipe(write(tmp_path, MINIMAL + "parts: {llm: {mode: lora, lora: {r: 4096}}}\n"))
    assert recipe.parts.llm.lora.r == 4096


def test_path_override_reads_back_as_the_path_whatever_it_holds(tmp_path):
    """Bench scripts and the quick start built ``output.dir=<path>`` unquoted: YAML cut a path at `` #`` (a
    comment) or read ``: `` as a mapping. `path_override` quotes it."""
    from adapt.recipe import apply_overrides, path_override

    for path in (tmp_path / "runs" / "exp #2", tmp_path / "a: b", tmp_path / "plain"):
        data = apply_overrides({"output": {}}, [path_override("output.dir", path)])
        assert data["output"]["dir"] == str(path)
