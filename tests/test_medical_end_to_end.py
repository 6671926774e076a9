"""Medical end to end on CPU: synthetic DICOM / VQA sets -> converters -> the recipe template trains and evaluates."""

from __future__ import annotations

import json
import shutil

import pytest

from adapt.cli import main
from model.resources import templates_dir
from tests.deps import require

require("pydicom")

TEMPLATE = "medical_pocket-tiny_full"
SOURCES = ("dicom_qa", "vqa_rad", "slake", "pmc_vqa")


@pytest.mark.slow
def test_medical_template_trains_and_evaluates_on_synthetic_data(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["synthesize", "medical", "--out", str(raw), "--option", "n=3"]) == 0
    for dataset in SOURCES:
        assert main(["convert", "medical", dataset, "--src", str(raw / dataset), "--out", str(tmp_path / "data" / "med")]) == 0
    printed = capsys.readouterr().out
    assert "written with a warning: burned-in annotation" in printed  # patient 1 of the synthetic CT set
    assert main(["synthesize", "general", "--out", str(tmp_path / "data" / "general"),
                 "--option", "n_train=24", "--option", "n_test=6"]) == 0
    recipe = tmp_path / f"{TEMPLATE}.yaml"
    shutil.copyfile(templates_dir() / "recipes" / f"{TEMPLATE}.yaml", recipe)
    overrides = ["training.max_steps=3", "training.batch_size=4", "eval.max_samples=6", "eval.max_new_tokens=12"]
    assert main(["train", str(recipe), "--no-progress", *overrides]) == 0
    assert main(["eval", str(recipe), *overrides]) == 0
    report = json.loads((tmp_path / "runs" / TEMPLATE / "eval" / "eval.json").read_text())
    adapted = report["runs"]["adapted"]["sources"]
    assert set(adapted) == {*SOURCES, "general"}
    for source in ("vqa_rad", "slake"):
        metrics = adapted[source]["metrics"]
        assert {"score", "closed_accuracy", "open_recall"} <= set(metrics), (source, metrics)
        assert adapted[source]["tasks"] == {"med_vqa": adapted[source]["n"]}
    assert "accuracy" in adapted["pmc_vqa"]["metrics"]
    assert adapted["dicom_qa"]["n"] == 6 and "med_vqa" in adapted["dicom_qa"]["tasks"]
    log = [json.loads(line) for line in (tmp_path / "runs" / TEMPLATE / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and any(k.startswith("loss/") for k in log[0])
