"""Driving end to end on CPU: synthetic nuScenes + DriveLM -> both converters (stitched and multi-image DriveLM)
-> the recipe template trains a few steps and evaluates with the DriveLM metrics."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from adapt.cli import main
from model.resources import templates_dir
from tests.deps import require

TEMPLATE = "driving_pocket-tiny_full"

require("nuscenes")


@pytest.mark.slow
def test_driving_template_trains_and_evaluates_on_synthetic_data(tmp_path, capsys):
    raw, data = tmp_path / "raw", tmp_path / "data" / "driving"
    assert main(["synthesize", "driving", "--out", str(raw), "--no-progress"]) == 0
    assert (raw / "nuscenes" / "v1.0-mini" / "sample.json").is_file()
    assert main(["convert", "driving", "drivelm", "--src", str(raw / "drivelm"), "--out", str(data),
                 "--option", "view_mode=stitched", "--option", "val_fraction=0.1", "--no-progress"]) == 0
    assert main(["convert", "driving", "drivelm", "--src", str(raw / "drivelm"), "--out", str(data),
                 "--option", "view_mode=multi", "--option", "val_fraction=0.1", "--option", "progress=false"]) == 0
    assert main(["convert", "driving", "nuscenes", "--src", str(raw / "nuscenes"), "--out", str(data),
                 "--no-progress"]) == 0
    assert "%|" not in capsys.readouterr().err  # --no-progress: no bars from the generator or the converters
    assert main(["synthesize", "general", "--out", str(tmp_path / "data" / "general"),
                 "--option", "n_train=24", "--option", "n_test=6", "--option", "answer_style=label"]) == 0
    for name in ("drivelm", "drivelm_multi", "nuscenes"):
        for split in ("train", "val"):
            assert (data / f"{name}_{split}.jsonl").stat().st_size > 0
    assert (data / "drivelm_test.jsonl").stat().st_size > 0  # answer-less test questions

    template = templates_dir() / "recipes" / f"{TEMPLATE}.yaml"
    shutil.copyfile(template, tmp_path / f"{TEMPLATE}.yaml")
    assert main(["validate", str(tmp_path / f"{TEMPLATE}.yaml")]) == 0
    # the same recipe with the six-image DriveLM samples mixed in, so both view modes go through the model
    recipe = yaml.safe_load(template.read_text())
    for key, split in (("sources", "train"), ("eval_sources", "val")):
        recipe["data"][key].insert(1, {"name": "drivelm_multi", "path": f"data/driving/drivelm_multi_{split}.jsonl",
                                       "kind": "domain"})
    recipe["name"] = "driving_both_views"
    path = tmp_path / "driving_both_views.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    overrides = ["training.max_steps=3", "training.batch_size=4", "eval.max_samples=4", "eval.max_new_tokens=12"]
    assert main(["train", str(path), "--no-progress", *overrides]) == 0
    log = [json.loads(line) for line in (tmp_path / "runs" / "driving_both_views" / "train_log.jsonl").read_text()
           .splitlines()]
    assert len(log) == 3 and any(k.startswith("loss/") for k in log[0])
    capsys.readouterr()
    assert main(["eval", str(path), "--no-progress", *overrides]) == 0
    printed = capsys.readouterr()
    assert "%|" not in printed.err
    report = json.loads((tmp_path / "runs" / "driving_both_views" / "eval" / "eval.json").read_text())
    adapted = report["runs"]["adapted"]["sources"]
    assert set(adapted) == {"drivelm", "drivelm_multi", "nuscenes", "general"}
    assert adapted["drivelm"]["tasks"] == {"drivelm": 4} and adapted["drivelm"]["skipped"] == 0
    for name in ("drivelm", "drivelm_multi"):
        metrics = adapted[name]["metrics"]
        for key in ("accuracy", "Bleu_4", "ROUGE_L", "CIDEr", "language", "final_score"):
            assert key in metrics
        assert metrics["final_score"] is None  # no LLM judge configured: not computed, never a silent 0
        assert any("judge" in note for note in adapted[name]["notes"])
    assert set(adapted["nuscenes"]["metrics"]) >= {"acc@0.5", "accuracy"}
    assert "drivelm" in printed.out
