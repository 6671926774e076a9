"""`adapt validate` refuses, from the recipe alone, what `adapt train` would refuse only once it has loaded the model:
the checks are the functions `adapt.parts` uses, so both say the same."""

from __future__ import annotations

import pytest

import model
from adapt.cli import main
from adapt.parts import PartsError, PartSetting, apply_parts
from adapt.recipe import RecipeError, load_recipe
from model.checkpoints.io import CheckpointError
from model.presets import preset_config
from model.vlm import PocketVLM
from tests.test_moe_checkpoints import _moe_vlm
from tests.test_recipe import MINIMAL, write


@pytest.mark.parametrize("target", ["experts", "experts.gate_up_proj", "mlp.experts.down_proj"])
def test_fused_expert_targets_with_lora_dropout_are_refused_by_validate(tmp_path, capsys, target):
    """The default lora.dropout (0.05) with expert targets passed validate and failed in train after the load."""
    path = write(tmp_path, MINIMAL + f"parts: {{llm: {{lora: {{targets: [q_proj, {target}]}}}}}}\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"parts.llm.lora.targets ({target}) name fused MoE expert parameters" in err
    assert "lora.dropout is 0.05; set lora.dropout: 0" in err and "Traceback" not in err
    assert load_recipe(path, ["parts.llm.lora.dropout=0"]).parts.llm.lora.targets == ["q_proj", target]


@pytest.mark.parametrize("target", ["down_proj", "gate_up_proj", "experts.0.w1", "shared_experts.down_proj",
                                    "experts_gate"])
def test_targets_that_can_be_linear_modules_keep_their_dropout(tmp_path, target):
    """Phi-3's `gate_up_proj`, a shared expert's and a ModuleList expert's Linear modules take dropout: the model
    decides there, not the name."""
    path = write(tmp_path, MINIMAL + f"parts: {{llm: {{lora: {{targets: [{target}]}}}}}}\n")
    assert load_recipe(path).parts.llm.lora.dropout == 0.05


def test_the_dropout_refusal_says_the_same_in_validate_and_in_train(tmp_path):
    targets = ("q_proj", "experts.gate_up_proj", "experts.down_proj")
    path = write(tmp_path, MINIMAL + f"parts: {{llm: {{lora: {{targets: [{', '.join(targets)}]}}}}}}\n")
    with pytest.raises(RecipeError) as validated:
        load_recipe(path)
    with pytest.raises(PartsError) as trained:
        llm = PartSetting("lora", r=4, alpha=8, dropout=0.05, targets=targets)
        apply_parts(_moe_vlm(), {"projector": PartSetting("full"), "llm": llm})
    after = "name fused MoE expert parameters"
    tail = str(trained.value).split(after, 1)[1]
    assert after + tail in str(validated.value)


def test_parts_naming_experts_with_different_ranks_are_refused_by_validate(tmp_path):
    text = MINIMAL + ("parts: {vision: {mode: lora, lora: {dropout: 0, r: 4, targets: [experts]}},\n"
                      "        llm: {lora: {dropout: 0, r: 8, targets: [experts.down_proj]}}}\n")
    with pytest.raises(RecipeError, match=r"parts\.vision\.lora\.targets \(experts\), parts\.llm\.lora\.targets "
                                          r"\(experts\.down_proj\): the parts whose experts LoRA trains must share "
                                          r"lora\.r and lora\.alpha"):
        load_recipe(write(tmp_path, text))


def test_tiling_overrides_the_models_tiling_cannot_take_are_refused_by_validate(tmp_path, capsys):
    """tiling.min_tiles above the model's max_tiles (pocket-tiny: 6) was refused by `adapt train` only once it had
    loaded the model (a hub preset: downloaded it); its config alone tells, with train's message (tiling_for)."""
    path = write(tmp_path, MINIMAL + "tiling: {min_tiles: 7}\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tiling.min_tiles=7 does not fit the model's tiling (112 px tiles, 1-6 per image, thumbnail)" in err
    assert "min_tiles (7) must be <= max_tiles (6)" in err
    assert "Traceback" not in err
    assert load_recipe(path, ["tiling.max_tiles=8"]).tiling.min_tiles == 7
    assert load_recipe(path, ["tiling.min_tiles=6"]).tiling.min_tiles == 6


def test_a_tile_size_other_than_the_towers_is_refused_by_validate(tmp_path, capsys):
    """tiling.tile_size 224 on pocket-tiny (112 px tower) passed validate; train then failed at the first image with a
    token-count mismatch, and a saved final/ would not load."""
    path = write(tmp_path, MINIMAL + "tiling: {tile_size: 224}\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tiling.tile_size 224 differs from the model's image size 112 (the size its vision tower takes)" in err
    assert "Traceback" not in err
    assert load_recipe(path, ["tiling.tile_size=112"]).tiling.tile_size == 112  # the tower's own size: kept


def test_deepspeed_not_installed_is_said_by_validate(tmp_path, capsys, monkeypatch):
    """`adapt train` imports deepspeed only after loading the model and the data, then stops on the missing module."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    path = write(tmp_path, MINIMAL + "distributed: {strategy: deepspeed}\n")
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "note: distributed.strategy is deepspeed, but deepspeed is not installed here" in err
    assert "pip install 'pocket-adapt[distributed]'" in err
    monkeypatch.undo()
    assert main(["validate", str(path)]) == 0
    assert "not installed" not in capsys.readouterr().err


def test_lora_targets_of_a_part_not_in_lora_mode_are_said_to_be_unused(tmp_path, capsys):
    """`adapt train` ignored them without a word: the part trained in full (or not at all)."""
    path = write(tmp_path, MINIMAL + "parts: {llm: {mode: full, lora: {targets: [q_proj]}}}\n")
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert ("note: parts.llm.lora.targets is set but parts.llm.mode is full, so it is unused (the llm part trains in "
            "full); set parts.llm.mode: lora") in err
    assert main(["validate", str(path), "parts.llm.mode=lora"]) == 0
    assert "unused" not in capsys.readouterr().err


def test_lora_options_of_a_part_not_in_lora_mode_are_said_to_be_unused(tmp_path, capsys):
    """A rank, alpha or dropout on a full or frozen part was ignored without a word (a YAML user setting r: 64 on a
    full LLM thinks it trains a LoRA of rank 64); the default block every bundled recipe carries stays silent."""
    path = write(tmp_path, MINIMAL + "parts: {llm: {mode: full, lora: {r: 64, alpha: 128}}, vision: {mode: frozen, "
                                     "lora: {r: 16, alpha: 32, dropout: 0.05, targets: null}}}\n")
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert ("note: parts.llm.lora.r and parts.llm.lora.alpha are set but parts.llm.mode is full, so they are unused "
            "(the llm part trains in full); set parts.llm.mode: lora") in err
    assert "parts.vision" not in err and "parts.projector" not in err
    assert main(["validate", str(path), "parts.vision.lora.dropout=0.1"]) == 0
    assert "note: parts.vision.lora.dropout is set but parts.vision.mode is frozen, so it is unused (the vision part " \
           "stays frozen)" in capsys.readouterr().err
    assert main(["validate", str(path), "parts.llm.mode=lora"]) == 0
    assert "unused" not in capsys.readouterr().err


def test_bundled_recipes_carry_no_unused_lora_options():
    """Every bundled recipe keeps a lora: block on each part (to switch a mode by one word); none sets an option the
    part's mode leaves unused, so validating a bundled recipe says nothing about it."""
    from adapt.recipe import Recipe, list_recipe_templates, recipe_warnings
    from model.resources import templates_dir

    for name in list_recipe_templates():
        recipe = load_recipe(templates_dir() / "recipes" / f"{name}.yaml")
        if isinstance(recipe, Recipe):
            assert not [n for n in recipe_warnings(recipe) if ".lora." in n], name


def test_an_epoch_too_large_for_this_machine_is_said_by_validate(tmp_path, capsys, monkeypatch):
    """`adapt train` refused mixing.epoch_size 1e9 (over 100 GiB of sample order) only after loading the model and
    reading every source; validate says it with train's message."""
    import adapt.data.mixture as mixture

    monkeypatch.setattr(mixture, "_available_memory", lambda: 2**30)  # 1 GiB, whatever this machine has
    path = write(tmp_path, MINIMAL + "training: {num_workers: 1}\n")
    assert main(["validate", str(path), "mixing.epoch_size=1000000000"]) == 0
    err = capsys.readouterr().err
    assert ("note: on this machine adapt train would stop: an epoch of 1,000,000,000 samples (mixing.epoch_size, "
            "or the sources' records x repeat) needs about 476.8 GiB to hold its sample order (2 process(es)") in err
    assert main(["validate", str(path), "mixing.epoch_size=1000"]) == 0
    assert "would stop" not in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "\n\n", "# a recipe, to be written\n"])
@pytest.mark.parametrize("verb", ["validate", "train"])
def test_an_empty_recipe_file_is_refused_by_validate_as_by_train(tmp_path, capsys, text, verb):
    """An empty file (saved by mistake) was a "valid recipe" of defaults to validate, which train then refused for
    having no data.sources: both now say the file holds no settings."""
    path = write(tmp_path, text)
    assert main([verb, str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: the recipe file holds no settings" in err and "valid recipe" not in err
    assert "Traceback" not in err


EVAL_ONLY = MINIMAL + "  eval_sources: [{name: field, path: data/field/test.jsonl}]\n"


@pytest.mark.parametrize("text, overrides", [("data: {}\n", []), (MINIMAL, ["data.sources=[]"]),
                                             (EVAL_ONLY, ["data.sources=[]"])])
@pytest.mark.parametrize("verb", ["validate", "train"])
def test_a_recipe_without_training_sources_is_refused_by_validate_as_by_train(tmp_path, capsys, text, overrides,
                                                                               verb):
    """`data: {}` was a "valid recipe" (with a note) to validate, which train then refused: both now refuse it in one
    line saying what is missing."""
    path = write(tmp_path, text)
    assert main([verb, str(path), *overrides, *(["--no-progress"] if verb == "train" else [])]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and "data.sources is empty, so there is nothing to train on" in lines[0], lines
    assert "valid recipe" not in lines[0] and not (tmp_path / "runs").exists()


def test_an_eval_only_recipe_is_valid_to_validate_eval_as_adapt_eval_takes_it(tmp_path, capsys):
    """A recipe listing only data.eval_sources (all `adapt eval` needs) could not be checked at all: validate refused
    it for having no data.sources. `validate --eval` checks it as adapt eval does, and the plain refusal names it."""
    path = write(tmp_path, EVAL_ONLY)
    assert main(["validate", str(path), "data.sources=[]"]) == 1
    err = capsys.readouterr().err
    assert "nothing to train on" in err and f"adapt validate --eval {path}" in err
    assert main(["validate", "--eval", str(path), "data.sources=[]"]) == 1  # as adapt eval: its file is missing
    err = capsys.readouterr().err
    assert "annotation file not found" in err and "valid recipe" not in err and "Traceback" not in err
    (tmp_path / "data" / "field").mkdir(parents=True)
    (tmp_path / "data" / "field" / "test.jsonl").write_text("")
    assert main(["validate", "--eval", str(path), "data.sources=[]"]) == 0
    captured = capsys.readouterr()
    assert "eval_sources:" in captured.out and f"{path}: valid recipe 'recipe' for adapt eval" in captured.err
    assert main(["validate", "--eval", str(write(tmp_path, MINIMAL))]) == 1  # nothing to evaluate on
    assert "has no data.eval_sources to evaluate on" in capsys.readouterr().err


def test_validate_eval_notes_only_what_matters_to_adapt_eval(tmp_path, capsys):
    """`validate --eval` printed training's notes too (a missing data.sources file, general_ratio 0, unused LoRA
    settings, a deepspeed setting): noise for a recipe checked for adapt eval. It keeps the eval sources' notes."""
    text = EVAL_ONLY.replace("test.jsonl}", "test.jsonl, ratio: 2}") + (
        "mixing: {general_ratio: 0}\n"
        "parts: {vision: {mode: frozen, lora: {r: 4}}}\n"
        "distributed: {deepspeed: zero3}\n"
        "model: {trust_remote_code: true}\n")
    path = write(tmp_path, text)
    (tmp_path / "data" / "field").mkdir(parents=True)
    (tmp_path / "data" / "field" / "test.jsonl").write_text("")
    assert main(["validate", "--eval", str(path)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2, notes
    assert "data.eval_sources[0] (field): ratio unused" in notes[0]
    assert "model.trust_remote_code is true" in notes[1]
    assert main(["validate", "--no-plan", str(path)]) == 0  # a plain validate still notes what training would meet
    err = capsys.readouterr().err
    assert "data.sources[0] (field)" in err and "does not exist yet" in err
    for note in ("mixing.general_ratio is 0", "parts.vision.lora.r is set", "distributed.deepspeed is zero3"):
        assert note in err, note


def test_a_misspelt_lora_target_is_refused_by_validate_as_by_train(tmp_path, capsys):
    """`v_prj` beside `q_proj` passed adapt validate and stopped adapt train once the model had loaded; validate now
    checks the targets on the model's skeleton (its config on the meta device), with train's message."""
    path = write(tmp_path, MINIMAL + "parts: {llm: {lora: {targets: [q_proj, v_prj]}}}\n")
    assert main(["validate", "--no-plan", str(path)]) == 1
    err = capsys.readouterr().err
    assert "parts.llm.lora.targets: LoRA targets ['v_prj'] match no Linear module in the llm part" in err, err
    with pytest.raises(PartsError) as trained:
        llm = PartSetting("lora", targets=("q_proj", "v_prj"))
        apply_parts(PocketVLM(preset_config("pocket-tiny")), {"projector": PartSetting("full"), "llm": llm})
    assert f"{path}: {trained.value}" in err and "did you mean 'v_proj'?" in err
    path = write(tmp_path, MINIMAL + "parts: {llm: {lora: {targets: [q_proj, v_proj]}}}\n")
    assert main(["validate", "--no-plan", str(path)]) == 0


def test_expert_targets_are_checked_on_a_moe_model_by_validate(tmp_path, capsys):
    """On a MoE LM the fused experts are targets (the MoE rules above still come first: dropout 0); a misspelt
    one is refused naming them, and train's warning about the experts left out is a note."""
    model.save(_moe_vlm(), model.load("pocket-tiny-scratch")[1], tmp_path / "moe")
    recipe = MINIMAL + "model: {source: moe}\nparts: {llm: {lora: {dropout: 0, targets: [q_proj, %s]}}}\n"
    assert main(["validate", "--no-plan", str(write(tmp_path, recipe % "experts.gate_up_proj"))]) == 0
    assert "note: parts.llm: LoRA trains the fused experts' mlp.experts.gate_up_proj but not" in capsys.readouterr().err
    assert main(["validate", "--no-plan", str(write(tmp_path, recipe % "experts.gate_up_prj"))]) == 1
    err = capsys.readouterr().err
    assert "LoRA targets ['experts.gate_up_prj'] match no Linear module in the llm part" in err
    assert "did you mean 'experts.gate_up_proj'?" in err


def test_lora_targets_validate_cannot_check_are_a_note_not_a_refusal(tmp_path, capsys, monkeypatch):
    """A model whose config cannot be read here, or a replaced tower (model.vision), which only loading tells:
    validate passes as before and says the parts were not checked."""
    import model.loading

    def unreadable(source):
        raise CheckpointError(f"{source}: config.json cannot be read")

    monkeypatch.setattr(model.loading, "load_config", unreadable)
    path = write(tmp_path, MINIMAL + "parts: {llm: {lora: {targets: [q_proj, v_prj]}}}\n")
    assert main(["validate", "--no-plan", str(path)]) == 0
    assert ("note: parts.llm not checked against the model (pocket-tiny's config builds no model here: pocket-tiny: "
            "config.json cannot be read): adapt train checks it once it has loaded the model"
            ) in capsys.readouterr().err
    monkeypatch.undo()
    path = write(tmp_path, MINIMAL + "model: {vision: pocket-tiny}\n"
                                     "parts: {vision: {mode: lora, lora: {targets: [qkv]}}, llm: {mode: frozen}}\n")
    assert main(["validate", "--no-plan", str(path)]) == 0
    err = capsys.readouterr().err  # the projector (mode full) is not named: its check is only that it has weights
    assert "note: parts.vision not checked against the model (model.vision pocket-tiny brings its own tower" in err
