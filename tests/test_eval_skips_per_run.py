"""`adapt eval` scores each model into the same --out, and each run saved skips.md over the last: a run that skipped
differently (an export runtime refusing a sample while predicting) was lost from it, though eval.json counted it.
skips.md now gives each run's table (runs that skipped alike under one heading), skips.json each run's log, and an
earlier evaluation's runs into the same folder are left out once the report is written. `adapt train`'s evaluations
(eval.every) keep one log, as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import adapt.run_eval as run_eval
import model
from adapt.cli import main
from adapt.data.samples import DataQualityError, SkipLog
from adapt.evaluate import Prediction, Predictions, Skipped
from adapt.recipe import parse_recipe
from tests.test_data import png, write_jsonl

REFUSED = "refused by the runtime"


def _recipe_dir(tmp_path: Path) -> Path:
    """Four held-out records, one of whose images is missing (a reading skip, alike in every run)."""
    png(tmp_path / "x.png")
    rows = [{"image": "gone.png" if k == 3 else "x.png",
             "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "red"}]}
            for k in range(4)]
    write_jsonl(tmp_path / "test.jsonl", rows)
    (tmp_path / "r.yaml").write_text("model: {source: pocket-tiny}\ndata:\n  eval_sources: [{name: field, path: "
                                     "test.jsonl}]\n  max_bad_fraction: 0.5\nmixing: {general_ratio: 0}\n")
    return tmp_path / "r.yaml"


def _predict(vlm, processor, records, desc: str = "", **kwargs) -> Predictions:
    """Every record scored, except the first in a run labelled ``exported``: that one its runtime refuses."""
    dropped = records[:1] if desc.endswith("exported") else []
    return Predictions([Prediction(r.source, r.line, "short", "q", "red", "red", {"token_f1": 1.0})
                        for r in records if r not in dropped],
                       skipped=[Skipped(r.source, r.line, "prompt too long", REFUSED) for r in dropped])


def _sections(md: str) -> dict[str, str]:
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in md.split("\n## ")[1:]}


def test_each_models_skips_are_in_skips_md(tmp_path, monkeypatch, capsys):
    recipe, out = _recipe_dir(tmp_path), tmp_path / "eval"
    monkeypatch.setattr(run_eval, "predict", _predict)
    models = ["--model", "base=pocket-tiny", "--model", "exported=pocket-tiny"]
    assert main(["eval", str(recipe), *models, "--out", str(out), "--no-progress"]) == 0
    sections = _sections((out / "skips.md").read_text())
    assert list(sections) == ["base", "exported"]
    assert REFUSED in sections["exported"] and REFUSED not in sections["base"]
    assert "gone.png" in sections["base"] and "gone.png" in sections["exported"]
    summaries = json.loads((out / "eval.json").read_text())["runs"]
    logs = SkipLog.load_runs(out)
    assert {run: s["skipped"] for run, s in summaries.items()} == {"base": 1, "exported": 2}
    assert {run: log.count() for run, log in logs.items()} == {"base": 1, "exported": 2}  # as eval.json counts
    assert logs["exported"].dropped() == 1 and logs["base"].dropped() == 0

    # another evaluation into the same folder: its runs alone, those that skipped alike under one heading
    models = ["--model", "other=pocket-tiny", "--model", "base=pocket-tiny"]
    assert main(["eval", str(recipe), *models, "--out", str(out), "--no-progress"]) == 0
    md = (out / "skips.md").read_text()
    assert list(_sections(md)) == ["other, base"] and REFUSED not in md
    assert list(SkipLog.load_runs(out)) == ["other", "base"]


def test_a_run_stopped_by_its_skips_keeps_the_runs_before_it(tmp_path, monkeypatch):
    _recipe_dir(tmp_path)
    recipe = parse_recipe({"data": {"eval_sources": [{"name": "field", "path": "test.jsonl"}], "max_bad_fraction": 0.3},
                           "mixing": {"general_ratio": 0}}, tmp_path, "r")
    _, processor = model.load("pocket-tiny")
    monkeypatch.setattr(run_eval, "predict", _predict)
    out = tmp_path / "out"
    run_eval.score_eval_sources(None, processor, recipe, out, progress=False, desc="evaluating base", run="base")
    with pytest.raises(DataQualityError, match="too many bad records"):  # 2 of 4 skipped: past 30 %
        run_eval.score_eval_sources(None, processor, recipe, out, progress=False, desc="evaluating exported",
                                    run="exported")
    assert list(_sections((out / "skips.md").read_text())) == ["base", "exported"]

    # adapt train's evaluations (no run): one log, as before
    run_eval.score_eval_sources(None, processor, recipe, tmp_path / "during", progress=False)
    assert (tmp_path / "during" / "skips.md").read_text().startswith("# Skipped records\n\n| source |")
    assert isinstance(json.loads((tmp_path / "during" / "skips.json").read_text()), list)
