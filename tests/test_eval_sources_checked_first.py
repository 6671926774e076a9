"""`adapt eval`: a missing eval annotation file is refused before the model is loaded (and, with --runtime,
exported)."""

from __future__ import annotations

from pathlib import Path

import pytest

import adapt.run_eval as run_eval
from adapt.cli import main
from adapt.data.mixture import source_specs
from adapt.data.samples import MissingDataError
from adapt.recipe import load_recipe


def write_eval_files(recipe_path: Path) -> None:
    """One (empty) record per eval file of the recipe: `adapt eval` checks those files before the models."""
    for spec in source_specs(load_recipe(recipe_path).data.eval_sources, held_out=True):
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        spec.path.write_text("{}\n", encoding="utf-8")


def test_a_missing_eval_file_is_refused_before_the_model_is_loaded(tmp_path, monkeypatch):
    """The model was loaded (and exported, with another runtime: minutes for a real one) before the file was read."""
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    recipe = load_recipe(tmp_path / "quickstart.yaml")
    loaded = []
    monkeypatch.setattr(run_eval.model_core, "load", lambda source, **k: loaded.append(source) or 1 / 0)
    with pytest.raises(MissingDataError, match=r"data.eval_sources: source 'landcover'.*landcover[/\\]test.jsonl"):
        run_eval.evaluate_model(recipe, "pocket-tiny", "base", tmp_path / "out", progress=False, runtime="onnx")
    assert loaded == []


def test_a_recipe_without_eval_sources_is_refused(tmp_path):
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    recipe = load_recipe(tmp_path / "quickstart.yaml", ["data.eval_sources=[]"])
    with pytest.raises(run_eval.EvalError, match="no data.eval_sources"):
        run_eval.evaluate_model(recipe, "pocket-tiny", "base", tmp_path / "out", progress=False)


@pytest.mark.parametrize("override", [[], ["data.eval_sources=[]"]])
def test_adapt_eval_refuses_missing_eval_data_before_the_base_model_only_note(tmp_path, capsys, override):
    """With no --model and no run, "note: no adapted model ...; scoring the base model only" came before the refusal
    of a missing eval file (or of no data.eval_sources): a note about scoring that was never going to happen."""
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    capsys.readouterr()
    rc = main(["eval", str(tmp_path / "quickstart.yaml"), *override, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and ("no data.eval_sources" in err or "annotation file not found" in err)
    assert "scoring the base model only" not in err and not (tmp_path / "out").exists()


def test_adapt_eval_with_models_refuses_a_missing_eval_file_before_checking_the_models(tmp_path, capsys):
    """With --model, a mistyped model folder was reported first; fixing it only led to the missing eval file."""
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    capsys.readouterr()
    rc = main(["eval", str(tmp_path / "quickstart.yaml"), "--model", f"adapted={tmp_path / 'trian' / 'final'}",
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "annotation file not found" in err and "landcover" in err
    assert "--model" not in err and "trian" not in err and not (tmp_path / "out").exists()


def test_eval_and_training_say_an_eval_source_that_is_a_folder_is_one(tmp_path, capsys):
    """An eval source that is a folder was refused as 'annotation file not found' by `adapt eval` and by
    training's evaluation check, sending the user looking for a folder that is there; both say it is a folder."""
    folder = tmp_path / "held.jsonl"  # a folder where the file should be (an archive unpacked under its name)
    folder.mkdir()
    (folder / "test.jsonl").write_text("")
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    capsys.readouterr()
    recipe = load_recipe(tmp_path / "quickstart.yaml",
                         [f"data.eval_sources=[{{name: held, path: {folder}, kind: domain}}]"])
    with pytest.raises(MissingDataError,
                       match=r"source 'held': .*held\.jsonl is a folder, not an annotation file.*test\.jsonl"):
        run_eval.check_eval_sources(recipe)


@pytest.mark.parametrize("verb", [["validate", "--eval"], ["eval"]])
def test_a_distillation_recipe_is_refused_by_eval_and_validate_eval_in_one_line(tmp_path, capsys, verb):
    """`validate --eval` called a distillation recipe "valid for adapt eval", which then stopped on a raw
    AttributeError ('DistillRecipe' object has no attribute 'model')."""
    assert main(["init", "distill_pocket-tiny", str(tmp_path)]) == 0
    for name in ("landcover", "general"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "test.jsonl").write_text("")
    capsys.readouterr()
    assert main([*verb, str(tmp_path / "distill_pocket-tiny.yaml")]) == 1
    err = capsys.readouterr().err
    assert "is a distillation recipe (it has a distill: section)" in err
    assert "Traceback" not in err and "valid recipe" not in err
