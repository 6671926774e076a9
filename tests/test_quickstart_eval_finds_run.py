"""`adapt eval` on the recipe a quick start leaves (OUT/<template>.yaml) scores the run it trained, not the base alone."""

from __future__ import annotations

import shutil

import pytest

import adapt.quickstart as qs
import adapt.run_eval as run_eval
from adapt.cli import main
from adapt.data.mixture import source_specs
from adapt.recipe import load_recipe
from model.resources import templates_dir
from tests.test_eval_sources_checked_first import write_eval_files


class _Stop(Exception):
    pass


def _quickstart_run_dir(monkeypatch, out, field: str):
    """Where `adapt quickstart --out OUT --field FIELD` trains (read off the quick start itself, stopped early)."""
    seen = {}

    def stop(recipe, *args, **kwargs):
        seen["dir"] = recipe.output.dir
        raise _Stop

    template, _ = qs.FIELDS[field]
    monkeypatch.setitem(qs.FIELDS, field, (template, lambda data, progress=True: None))
    monkeypatch.setattr(qs, "evaluate_model", stop)
    with pytest.raises(_Stop):
        qs.quickstart(out, progress=False, field=field, force=True)
    return seen["dir"], out / f"{template}.yaml"


def test_the_quickstart_recipe_copy_points_at_the_quickstart_run(tmp_path, monkeypatch):
    run_dir, recipe = _quickstart_run_dir(monkeypatch, tmp_path / "qs", "landcover")
    assert load_recipe(recipe).output.dir == run_dir


def test_eval_on_the_quickstart_recipe_scores_the_adapted_model(tmp_path, monkeypatch, capsys):
    """It scored the base model only (looking for OUT/runs/quickstart/final) and told the user to train first."""
    out = tmp_path / "qs"
    out.mkdir()
    recipe = out / "quickstart.yaml"
    shutil.copyfile(templates_dir() / "recipes" / "quickstart.yaml", recipe)
    (out / "train" / "final").mkdir(parents=True)  # as `adapt quickstart --out qs` leaves it
    write_eval_files(recipe)  # the data is checked first
    scored = []

    def record(recipe, source, label, *args, **kwargs):
        scored.append((label, str(source)))
        return {}

    monkeypatch.setattr(run_eval, "evaluate_model", record)
    monkeypatch.setattr(run_eval, "eval_kinds", lambda recipe: (_ for _ in ()).throw(_Stop()))  # after scoring
    with pytest.raises(_Stop):
        main(["eval", str(recipe), "--no-progress"])
    assert "scoring the base model only" not in capsys.readouterr().err
    assert scored == [("base", "pocket-tiny"), ("adapted", str(out / "train" / "final"))]


@pytest.mark.parametrize("field", ["remote_sensing", "driving", "medical"])
def test_eval_on_a_field_quickstart_recipe_says_where_the_run_is(tmp_path, monkeypatch, capsys, field):
    """The field templates keep runs/<name> (a project folder holds several); a quick start trains into train/, so
    `adapt eval` scores the base model only: the note said "train first", now it names the run and the command."""
    out = tmp_path / "qs"
    run_dir, recipe = _quickstart_run_dir(monkeypatch, out, field)
    (run_dir / "final").mkdir(parents=True)
    for spec in source_specs(load_recipe(recipe).data.eval_sources, held_out=True):  # the data is checked first
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        spec.path.write_text("{}\n", encoding="utf-8")
    capsys.readouterr()
    monkeypatch.setattr(run_eval, "evaluate_model", lambda *a, **k: (_ for _ in ()).throw(_Stop()))
    with pytest.raises(_Stop):
        main(["eval", str(recipe), "--no-progress"])
    err = capsys.readouterr().err
    assert "scoring the base model only" in err and "train first" not in err
    assert f"--model base=pocket-tiny --model adapted={run_dir / 'final'}" in err
