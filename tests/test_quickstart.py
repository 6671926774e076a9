"""The quick start's whole path (data, base eval, training, adapted eval, report) on a tiny step budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from adapt.cli import main


@pytest.mark.slow
def test_quickstart_path_on_a_small_budget(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--no-progress", "training.max_steps=3", "eval.max_samples=4"]) == 0
    printed = capsys.readouterr().out
    assert "[4/4] scoring the adapted model" in printed and "done in" in printed
    report = json.loads((out / "report" / "eval.json").read_text())
    assert set(report["runs"]) == {"base", "adapted"}
    for run in report["runs"].values():
        assert set(run["groups"]) == {"domain", "general"}
        assert run["sources"]["landcover"]["n"] == 4 and run["sources"]["general"]["n"] == 4
    assert "Δ" in (out / "report" / "eval.md").read_text()
    Image.open(out / "report" / "comparison.png").verify()
    Image.open(out / "train" / "loss.png").verify()
    assert (out / "train" / "final" / "model.safetensors").is_file()
    # mixing off is one override away
    assert "general_ratio: 0.3" in (out / "quickstart.yaml").read_text()


def test_an_override_typo_stops_the_quickstart_before_any_data_is_generated(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--no-progress", "training.max_stepz=3"]) == 1
    assert "did you mean 'training.max_steps'" in capsys.readouterr().err
    assert not (out / "data").exists()


def test_a_quickstart_never_replaces_an_edited_recipe_or_empties_a_folder_of_other_files(tmp_path, capsys):
    """`adapt init quickstart DIR` + edits, then `adapt quickstart --out DIR`: the edited recipe and files the
    user put under DIR/train were lost (even when the run then stopped on a typo). Refused now, before writing."""
    from adapt.checkpointing import LOCK_NAME
    from adapt.quickstart import QuickstartError, _refuse_to_lose
    from model.resources import templates_dir

    out = tmp_path / "qs"
    assert main(["init", "quickstart", str(out)]) == 0
    recipe = out / "quickstart.yaml"
    edited = recipe.read_text().replace("name: quickstart", "name: my_edited_run")
    recipe.write_text(edited)
    capsys.readouterr()
    assert main(["quickstart", "--out", str(out), "--no-progress", "training.max_stepz=3"]) == 1
    assert recipe.read_text() == edited
    assert main(["quickstart", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "differs from the quickstart template (edited?)" in err and "--force" in err
    assert recipe.read_text() == edited and not (out / "data").exists()
    recipe.write_bytes((templates_dir() / "recipes" / "quickstart.yaml").read_bytes())
    (out / "train").mkdir()
    (out / "train" / "my_notes.txt").write_text("precious")
    assert main(["quickstart", "--out", str(out), "--no-progress"]) == 1
    assert "holds files `adapt train` did not write" in capsys.readouterr().err
    assert (out / "train" / "my_notes.txt").read_text() == "precious"
    (out / "train" / LOCK_NAME).touch()  # a run folder adapt train made: a quick start may start it over ...
    with pytest.raises(QuickstartError, match=r"train holds files `adapt train` did not write \(my_notes.txt\)"):
        _refuse_to_lose(recipe, templates_dir() / "recipes" / "quickstart.yaml", out / "train")  # ... not the notes
    (out / "train" / "my_notes.txt").unlink()
    for name in ("final", "checkpoint-40", "tensorboard", ".final.staging"):
        (out / "train" / name).mkdir()
    for name in ("train_log.jsonl", "loss.png", "skips.md", "skips.json"):
        (out / "train" / name).touch()
    _refuse_to_lose(recipe, templates_dir() / "recipes" / "quickstart.yaml", out / "train")


@pytest.mark.slow
def test_the_distill_template_runs_as_its_comments_say(tmp_path, capsys):
    """`adapt init distill_pocket-tiny DIR` then distil: the recipe reads DIR/data/landcover, which nothing but a
    whole quick start made (and into another folder). `adapt quickstart --data-only --out DIR` makes it there."""
    run = tmp_path / "my run"
    assert main(["init", "distill_pocket-tiny", str(run)]) == 0
    assert main(["quickstart", "--data-only", "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"data in {run / 'data'}" in out and not (run / "report").exists() and not (run / "train").exists()
    assert "adapt distill with distill_pocket-tiny.yaml" in out  # its next step, not only adapt train's
    assert main(["validate", str(run / "distill_pocket-tiny.yaml")]) == 0
    assert "does not exist" not in capsys.readouterr().err
    assert main(["distill", str(run / "distill_pocket-tiny.yaml"), "--no-progress", "training.max_steps=1",
                 "eval.max_images=2", "training.batch_size=2", f"output.dir={tmp_path / 'runs'}"]) == 0
    assert (tmp_path / "runs" / "final" / "config.json").is_file()
    assert main(["quickstart", "--data-only", "--out", str(run), "mixing.general_ratio=0"]) == 1
    assert "--data-only writes data only" in capsys.readouterr().err


@pytest.mark.slow
def test_remote_sensing_quickstart_runs_on_the_plugins_synthetic_rasters(tmp_path, capsys):
    out = tmp_path / "rs"
    args = ["quickstart", "--field", "remote_sensing", "--out", str(out), "--no-progress",
            "training.max_steps=2", "eval.max_samples=3", "eval.max_new_tokens=8"]
    assert main(args) == 0
    assert "[4/4] scoring the adapted model" in capsys.readouterr().out
    assert list((out / "raw" / "ucmerced").rglob("*.tif"))  # GeoTIFFs in the public layout
    report = json.loads((out / "report" / "eval.json").read_text())
    sources = report["runs"]["adapted"]["sources"]
    assert {"ucmerced", "rsvqa_lr", "dior_rsvg", "general"} <= set(sources)


@pytest.mark.slow
@pytest.mark.parametrize("field, sources", [
    ("driving", {"drivelm", "nuscenes", "general"}),
    ("medical", {"dicom_qa", "vqa_rad", "slake", "pmc_vqa", "general"}),
])
def test_domain_quickstarts_run_end_to_end(tmp_path, capsys, field, sources):
    out = tmp_path / field
    args = ["quickstart", "--field", field, "--out", str(out), "--no-progress",
            "training.max_steps=2", "training.batch_size=2", "eval.max_samples=2", "eval.max_new_tokens=4"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "[4/4] scoring the adapted model" in printed.out
    assert "%|" not in printed.err  # --no-progress reaches the generator and the converters too
    report = json.loads((out / "report" / "eval.json").read_text())
    assert sources <= set(report["runs"]["adapted"]["sources"])
    if field == "driving":  # the judge term is reported as not computed, never as 0
        drivelm = report["runs"]["adapted"]["sources"]["drivelm"]
        assert drivelm["metrics"]["final_score"] is None
        assert any("LLM-judge term not computed" in note for note in drivelm["notes"])


def test_a_quickstart_never_deletes_a_run_still_training_in_its_folder(tmp_path, capsys, monkeypatch):
    """OUT/train was emptied whatever held it: a second quick start (or `adapt train` on its recipe) still training
    there lost its checkpoints from under it, --force or not. A live run's folder is refused before anything is
    written; a finished one is started over as before."""
    from adapt.checkpointing import LOCK_NAME, RunLock

    def no_scoring(*args, **kwargs):  # the quick start got past the refusal: stop before training
        raise RuntimeError("scored")

    monkeypatch.setattr("adapt.quickstart.evaluate_model", no_scoring)
    out = tmp_path / "qs"
    live = RunLock(out / "train")
    (out / "train" / "checkpoint-4").mkdir()
    try:
        for argv in ([], ["--force"]):
            assert main(["quickstart", "--out", str(out), "--no-progress", *argv]) == 1
            err = capsys.readouterr().err
            assert f"{out / 'train'} is in use by another run" in err and "would delete that run's folder" in err
        assert sorted(p.name for p in out.iterdir()) == ["train"]  # nothing written, not even the recipe
        assert sorted(p.name for p in (out / "train").iterdir()) == [LOCK_NAME, "checkpoint-4"]
    finally:
        live.release()
    from adapt.quickstart import _refuse_live_run

    _refuse_live_run(out / "train")  # the run ended: its folder may be started over
    assert sorted(p.name for p in (out / "train").iterdir()) == [LOCK_NAME, "checkpoint-4"]


def test_a_quickstart_never_replaces_data_it_did_not_write(tmp_path, capsys):
    """`adapt quickstart --field medical --out proj` replaced proj/raw/* (a real study kept there) and the user's
    proj/data/general with synthetic data, --force or not. Folders an earlier quick start did not write are refused."""
    out = tmp_path / "proj"
    (out / "raw" / "slake").mkdir(parents=True)
    (out / "raw" / "slake" / "README.txt").write_text("mine")
    (out / "data" / "general").mkdir(parents=True)
    (out / "data" / "general" / "train.jsonl").write_text("my general set\n")
    for argv in (["--data-only"], []):
        assert main(["quickstart", "--field", "medical", "--out", str(out), "--no-progress", *argv]) == 1
        err = capsys.readouterr().err
        assert f"{out / 'raw'}, {out / 'data' / 'general'}: not written by a quick start" in err and "--force" in err
    assert (out / "raw" / "slake" / "README.txt").read_text() == "mine"
    assert (out / "data" / "general" / "train.jsonl").read_text() == "my general set\n"
    assert sorted(p.name for p in out.iterdir()) == ["data", "raw"]  # nothing written, not even the recipe
    from adapt.quickstart import DATA_FOLDERS, _refuse_to_replace_data, _stamp_data

    _stamp_data(out, "medical")  # folders a quick start wrote: the next one may replace them
    _refuse_to_replace_data(out, "medical")
    assert set(DATA_FOLDERS["landcover"]) - set(DATA_FOLDERS["medical"]) == {"data/landcover"}


@pytest.mark.slow
def test_driving_quickstart_keeps_drivelm_val_scenes_out_of_nuscenes_train(tmp_path):
    """DriveLM's val scenes are drawn from nuScenes training scenes: without held_out the quick start trained on the
    camera pictures (grounding, region) whose DriveLM questions it then scored."""
    from adapt.quickstart import prepare_driving

    data = tmp_path / "data"
    prepare_driving(data, progress=False)

    def scenes(name: str, key: str = "scene") -> set[str]:
        return {json.loads(line)["meta"][key] for line in (data / "driving" / name).read_text().splitlines()}

    names = {s["token"]: s["name"] for s in json.loads((tmp_path / "raw" / "nuscenes" / "v1.0-mini" / "scene.json")
                                                      .read_text())}
    held = {names[token] for token in scenes("drivelm_val.jsonl")}
    assert held and held <= scenes("nuscenes_val.jsonl")
    assert not held & scenes("nuscenes_train.jsonl")


def test_a_data_stamp_write_that_fails_part_way_keeps_the_last_stamp(tmp_path):
    """The stamp saying which folders a quick start wrote was written in place: cut off by a full disk (or a kill),
    it read as no stamp, and the next quick start refused its own data as not written by a quick start."""
    from adapt.quickstart import DATA_FOLDERS, DATA_STAMP, _stamp_data, _written_before

    out = tmp_path / "proj"
    out.mkdir()
    _stamp_data(out, "landcover")
    script = f"""
import resource, signal
from pathlib import Path
from adapt.quickstart import _stamp_data
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is then an OSError (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (8, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    _stamp_data(Path({str(out)!r}), "medical")
except OSError as exc:
    print("refused:", exc.filename)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0 and done.stdout.startswith("refused:"), done.stderr
    assert _written_before(out) == set(DATA_FOLDERS["landcover"])
    assert [p.name for p in out.iterdir()] == [DATA_STAMP]  # no temporary file left
