"""Remote sensing end to end on CPU: synthetic raw sets → converters → the recipe template trains and evaluates."""

from __future__ import annotations

import json
import shutil

import pytest

from adapt.cli import main
from model.resources import templates_dir

TEMPLATE = "remote-sensing_pocket-tiny_full"


@pytest.mark.slow
def test_remote_sensing_template_trains_and_evaluates_on_synthetic_data(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["synthesize", "remote_sensing", "--out", str(raw), "--option", "n=6"]) == 0
    for dataset in ("ucmerced", "rsvqa_lr", "dior_rsvg"):
        assert main(["convert", "remote_sensing", dataset, "--src", str(raw / dataset), "--out", str(tmp_path / "data" / "rs")]) == 0
    assert main(["synthesize", "general", "--out", str(tmp_path / "data" / "general"),
                 "--option", "n_train=24", "--option", "n_test=6", "--option", "answer_style=label"]) == 0
    recipe = tmp_path / f"{TEMPLATE}.yaml"
    shutil.copyfile(templates_dir() / "recipes" / f"{TEMPLATE}.yaml", recipe)
    overrides = ["training.max_steps=3", "training.batch_size=4", "eval.max_samples=4", "eval.max_new_tokens=12"]
    assert main(["train", str(recipe), "--no-progress", *overrides]) == 0
    assert main(["eval", str(recipe), *overrides]) == 0
    report = json.loads((tmp_path / "runs" / TEMPLATE / "eval" / "eval.json").read_text())
    adapted = report["runs"]["adapted"]["sources"]
    assert set(adapted) == {"ucmerced", "rsvqa_lr", "dior_rsvg", "general"}
    assert any(k.startswith("accuracy/") for k in adapted["rsvqa_lr"]["metrics"])  # per question type
    assert "acc@0.5" in adapted["dior_rsvg"]["metrics"]
    log = [json.loads(line) for line in (tmp_path / "runs" / TEMPLATE / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and any(k.startswith("loss/") for k in log[0])
