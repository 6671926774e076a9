"""`adapt distill`: the recipe kind, the feature loss and width projection, resume, and the tower it writes
loading as `model.vision` into a trainable VLM and through model.load / export."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import model
from adapt.data.samples import DataError
from adapt.distill import Distiller, DistillError, FeatureDistiller, distill, layer_pairs
from adapt.recipe import DistillRecipe, Recipe, RecipeError, load_recipe
from adapt.train import TrainingError, train
from domains.general.world import generate_general, generate_landcover
from model.checkpoints.io import CheckpointError
from model.checkpoints.tower import load_vision
from tests.conftest import printed_plan

STUDENT = "{hidden_size: 48, num_hidden_layers: 3, num_attention_heads: 4, intermediate_size: 96, image_size: 112}"
RECIPE = """
name: tiny-distill
distill:
  teacher: {source: pocket-tiny}
  student: {source: internvit-300m, config: STUDENT}
  layers: 2
  lr: 2.0e-3
data:
  sources:
    - {name: landcover, path: data/landcover/train.jsonl, kind: domain}
    - {name: general, path: data/general/train.jsonl, kind: general}
  eval_sources:
    - {name: landcover, path: data/landcover/test.jsonl, kind: domain}
    - {name: general, path: data/general/test.jsonl, kind: general}
mixing: {general_ratio: 0.5, seed: 3}
training: {max_steps: STEPS, batch_size: 4, warmup_ratio: 0.1}
output: {dir: out, save_every: SAVE_EVERY, keep_last: 2}
logging: {tensorboard: false}
eval: {max_images: 6}
""".replace("STUDENT", STUDENT)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_general(root / "data" / "general", n_train=32, n_test=6)
    generate_landcover(root / "data" / "landcover", n_train=24, n_test=6)
    return root


def write_recipe(folder: Path, data_dir: Path, steps: int = 12, save_every: int = 4, text: str = RECIPE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").exists() or (folder / "data").symlink_to(data_dir / "data")
    path = folder / "distill.yaml"
    path.write_text(text.replace("SAVE_EVERY", str(save_every)).replace("STEPS", str(steps)))
    return path


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, data_dir) -> Path:
    """One 12-step run: its output folder."""
    recipe = load_recipe(write_recipe(tmp_path_factory.mktemp("run"), data_dir))
    final = distill(recipe, progress=False)
    assert final == Path(recipe.output.dir) / "final"
    return Path(recipe.output.dir)


# ---------------------------------------------------------------------- the recipe
def test_a_distill_section_makes_a_distillation_recipe(tmp_path, data_dir):
    recipe = load_recipe(write_recipe(tmp_path, data_dir), ["distill.lr=5e-4", "distill.student.config.hidden_size=64"])
    assert isinstance(recipe, DistillRecipe)
    assert recipe.distill.lr == 5e-4 and recipe.distill.student.config["hidden_size"] == 64
    assert recipe.distill.teacher.source == "pocket-tiny" and recipe.distill.pairs is None
    assert recipe.output.dir == tmp_path / "out"
    # written out resolved, it loads back to the same recipe
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert load_recipe(again).model_dump() == recipe.model_dump()
    assert isinstance(load_recipe(write_recipe(tmp_path / "t", data_dir, text="mixing: {general_ratio: 0}\n")), Recipe)


@pytest.mark.parametrize("edit,message", [
    ("  layers: 2\n  pairs: [[1, 1]]\n",
     r"distill: give layers .* or pairs .*, not both; .*\(distill.layers=null\) \(line 3\)"),
    ("  layer: 2\n", r"unknown key 'distill.layer' — did you mean 'distill.layers'\? \(line 6\)"),
    ("  pairs: [[0, 3]]\n", r"distill: pairs: layers are numbered from 1.* \(line 3\)"),
    ("  cosine: 0\n", r"cosine and mse are both 0"),
])
def test_distill_section_errors_name_the_key_and_line(tmp_path, data_dir, edit, message):
    text = RECIPE.replace("  layers: 2\n", edit)
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(tmp_path, data_dir, text=text))


def test_layers_null_means_not_given_as_pairs_null_does(tmp_path, data_dir):
    """The template writes both keys, one null: `layers: null` with pairs was refused ('must be a valid integer'),
    and a resolved pairs recipe (layers written as 1) could not be read back."""
    text = RECIPE.replace("  layers: 2\n", "  layers: null\n  pairs: [[3, 2], [4, 3]]\n")
    recipe = load_recipe(write_recipe(tmp_path, data_dir, text=text))
    assert recipe.distill.pairs == [(3, 2), (4, 3)] and recipe.distill.layers is None
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert load_recipe(again).model_dump() == recipe.model_dump()
    plain = load_recipe(write_recipe(tmp_path / "p", data_dir, text=RECIPE.replace("  layers: 2\n", "  layers: null\n")))
    assert plain.distill.layers == 1 and plain.distill.pairs is None  # neither given: the last layer


def test_tower_sources_are_checked(tmp_path, data_dir):
    path = write_recipe(tmp_path, data_dir)
    with pytest.raises(RecipeError, match=r"distill.student.source: 'internvit-300M' is not a tower config .*did you "
                                          r"mean 'internvit-300m'\? \(set by override"):
        load_recipe(path, ["distill.student.source=internvit-300M"])
    with pytest.raises(RecipeError, match=r"distill.teacher: config overrides apply to the tower configs .* only"):
        load_recipe(path, ["distill.teacher.config={hidden_size: 8}"])
    with pytest.raises(RecipeError, match=r"distill.student: config: .hidden_sise. is not a key of the internvit-300m config — did you mean .hidden_size.\?"):
        load_recipe(path, ["distill.student.config={hidden_sise: 8}"])
    with pytest.raises(RecipeError, match=r"unknown key 'distill.teacher.sauce'"):
        load_recipe(path, ["distill.teacher.sauce=x"])


def test_verbs_check_the_recipe_kind(tmp_path, data_dir, capsys):
    from adapt.cli import main

    path = write_recipe(tmp_path, data_dir)
    assert main(["train", str(path)]) == 1
    assert "is a distillation recipe (it has a distill: section); run it with `adapt distill`" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text("mixing: {general_ratio: 0}\n")
    assert main(["distill", str(plain)]) == 1
    assert "is a training recipe (no distill: section); run it with `adapt train`" in capsys.readouterr().err
    assert main(["validate", str(path), "distill.layers=1"]) == 0
    captured = capsys.readouterr()
    assert "valid distillation recipe" in captured.err and "layers: 1" in captured.out


def test_eval_refuses_a_distillation_recipe(tmp_path, data_dir, capsys):
    """adapt eval on a distillation recipe was a raw AttributeError ('DistillRecipe' has no 'model'), and
    `adapt validate --eval` called such a recipe valid for adapt eval."""
    from adapt.cli import main

    path = write_recipe(tmp_path, data_dir)
    for argv in (["eval", str(path)], ["eval", str(path), "--model", "base=pocket-tiny"],
                 ["validate", "--eval", str(path)]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "is a distillation recipe (it has a distill: section); run it with `adapt distill`" in err, argv
        assert "report.md" in err and "Traceback" not in err, argv


# ---------------------------------------------------------------------- the loss and the projection
def test_layer_pairs():
    assert layer_pairs(2, None, 45, 24) == [(44, 23), (45, 24)]
    assert layer_pairs(1, None, 4, 3) == [(4, 3)]
    assert layer_pairs(1, [(10, 2), (45, 24)], 45, 24) == [(10, 2), (45, 24)]
    with pytest.raises(DistillError, match="the teacher has 4 layers and the student 3"):
        layer_pairs(4, None, 4, 3)
    with pytest.raises(DistillError, match="out of range"):
        layer_pairs(1, [(5, 3)], 4, 3)
    with pytest.raises(DistillError, match="no pair ends at the student's last layer"):
        layer_pairs(1, [(4, 2)], 4, 3)


@pytest.mark.parametrize("verb", ["distill", "validate"])
@pytest.mark.parametrize("override,said", [
    ("hidden_size=50", "divisible"),  # 4 heads
    # passed adapt validate, then a RuntimeError traceback from the tower's constructor inside adapt distill
    ("hidden_size=-4", "negative dimension -4"),
])
def test_a_tower_config_that_cannot_be_built_is_one_line(tmp_path, capsys, verb, override, said):
    """distill.student.config.hidden_size=50 with 4 heads: a recipe error naming the override, not the attention
    layer's ValueError traceback from inside the run; adapt validate refuses it too (it called it valid), since the
    recipe builds the tower on the meta device."""
    from adapt.cli import main

    assert main(["init", "distill_pocket-tiny", str(tmp_path)]) == 0
    capsys.readouterr()
    rc = main([verb, str(tmp_path / "distill_pocket-tiny.yaml"), f"distill.student.config.{override}",
               *(["--no-progress"] if verb == "distill" else ["--no-plan"])])
    err = capsys.readouterr().err  # (notes on the data the template expects come first)
    line = next(x for x in err.splitlines() if x.startswith(f"adapt {verb}: error:"))
    assert rc == 1 and "Traceback" not in err and "distill.student: config: {" in line, line
    key, value = override.split("=")
    assert f"'{key}': {value}" in line and "builds no internvit-300m tower: " in line, line
    assert said in line and f"(set by override 'distill.student.config.{override}')" in line, line


def test_width_projection_only_where_widths_differ():
    teacher, tiling = load_vision("pocket-tiny")
    narrow, _ = load_vision("internvit-300m", {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                                               "intermediate_size": 96, "image_size": 112})
    same, _ = load_vision("internvit-300m", {"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
                                             "intermediate_size": 96, "image_size": 112})
    pixels = torch.randn(3, 3, 112, 112)
    wide = FeatureDistiller(teacher, narrow, [(3, 1), (4, 2)], student_tiling=tiling, teacher_tiling=tiling)
    assert [(p.in_features, p.out_features) for p in wide.projections] == [(48, 96), (48, 96)]
    pairs = wide.features(pixels)
    assert [tuple(s.shape) for s, _ in pairs] == [(3, 64, 96)] * 2 == [tuple(t.shape) for _, t in pairs]
    # the teacher's features are those of its own layers 3 and 4, CLS dropped
    hidden = teacher(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert torch.allclose(pairs[0][1], hidden[3][:, 1:]) and torch.allclose(pairs[1][1], hidden[4][:, 1:])
    loss = wide(pixels)
    assert loss.shape == (3,) and torch.all(loss > 0)
    loss.sum().backward()
    assert all(p.grad is not None for p in wide.projections.parameters())
    assert all(p.grad is None for p in wide.teacher.parameters())
    equal = FeatureDistiller(teacher, same, [(4, 2)])
    assert isinstance(equal.projections[0], torch.nn.Identity) and not list(equal.projections.parameters())
    # the loss is 1 - cos (+ mse): a student that is the teacher scores 0
    self_distil = FeatureDistiller(teacher, teacher, [(4, 4)], cosine=1.0, mse=0.5)
    assert torch.allclose(self_distil(pixels), torch.zeros(3), atol=1e-6)


def test_teacher_gets_its_own_normalisation_and_size():
    from model.tiling import CLIP_MEAN, CLIP_STD, TilingConfig

    teacher, _ = load_vision("internvit-300m", {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                "intermediate_size": 64, "image_size": 56, "patch_size": 7})
    student, _ = load_vision("internvit-300m", {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                "intermediate_size": 64, "image_size": 112, "patch_size": 14})
    ours, theirs = TilingConfig(tile_size=112), TilingConfig(tile_size=56, mean=CLIP_MEAN, std=CLIP_STD)
    distiller = FeatureDistiller(teacher, student, [(1, 1)], student_tiling=ours, teacher_tiling=theirs)
    raw = torch.rand(2, 3, 112, 112)
    pixels = (raw - torch.tensor(ours.mean).view(1, 3, 1, 1)) / torch.tensor(ours.std).view(1, 3, 1, 1)
    expected_input = torch.nn.functional.interpolate(
        (raw - torch.tensor(theirs.mean).view(1, 3, 1, 1)) / torch.tensor(theirs.std).view(1, 3, 1, 1),
        size=(56, 56), mode="bicubic", align_corners=False)
    expected = teacher(pixel_values=expected_input, output_hidden_states=True).hidden_states[1][:, 1:]
    assert torch.allclose(distiller.features(pixels)[0][1], expected, atol=1e-5)


# ---------------------------------------------------------------------- a run
def test_distillation_lowers_the_loss_and_raises_held_out_cosine(distilled):
    log = read_log(distilled)
    assert [e["step"] for e in log] == list(range(1, 13))
    assert all("loss/landcover" in e or "loss/general" in e for e in log)
    first, last = sum(e["loss"] for e in log[:3]) / 3, sum(e["loss"] for e in log[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    report = json.loads((distilled / "report.json").read_text())
    before, after = report["held_out_before"], report["held_out_after"]
    assert set(after["sources"]) == {"landcover", "general"} and after["sources"]["general"]["images"] == 6
    assert after["cosine"] > before["cosine"] + 0.2, (before["cosine"], after["cosine"])
    assert report["pairs"] == [[3, 2], [4, 3]] and report["projection_params"] == 2 * (48 * 96 + 96)
    table = (distilled / "report.md").read_text()
    assert "| all |" in table
    # the first column holds source names, not images ("held-out images" misread them as image names or counts)
    assert "| held-out source | tiles | before | after |" in table and "| landcover |" in table
    assert (distilled / "loss.png").is_file() and (distilled / "skips.md").is_file()
    # checkpoints hold the student and the projections, never the frozen teacher
    weights = load_file(str(distilled / "checkpoint-12" / "trainable.safetensors"))
    assert any(k.startswith("student.") for k in weights) and any(k.startswith("projections.") for k in weights)
    assert not any(k.startswith("teacher.") for k in weights)


def test_resume_after_an_interrupted_run_is_exact(tmp_path, data_dir, distilled):
    path = write_recipe(tmp_path, data_dir)
    stopped = distill(load_recipe(path), progress=False, stop_after=6)
    assert stopped.name == "checkpoint-6" and not (tmp_path / "out" / "final").exists()
    distill(load_recipe(path), progress=False)
    got, expected = read_log(tmp_path / "out"), read_log(distilled)
    assert [e["step"] for e in got] == list(range(1, 13))
    for a, b in zip(got, expected):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]
    ours = load_file(str(tmp_path / "out" / "final" / "model.safetensors"))
    reference = load_file(str(distilled / "final" / "model.safetensors"))
    assert ours.keys() == reference.keys()
    assert all(torch.allclose(ours[k], reference[k], atol=1e-6) for k in ours)


def test_periodic_held_out_cosine_is_logged(tmp_path, data_dir, monkeypatch):
    """`eval.every` scores the held-out images during the run (the last step is the report's): eval_log.jsonl, as
    `adapt train` writes it. loss.png draws the report's before (step 0) and after (last step) with them: it drew
    the logged points alone, so a run scored once showed one point on an axis scaled to it."""
    from matplotlib.figure import Figure

    figures, savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), savefig(fig, *a, **k))[1])
    text = RECIPE.replace("eval: {max_images: 6}", "eval: {max_images: 6, every: 3}")
    final = distill(load_recipe(write_recipe(tmp_path, data_dir, steps=7, save_every=7, text=text)), progress=False)
    evals = [json.loads(line) for line in (final.parent / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [3, 6]
    for e in evals:
        assert e["eval/cosine"] == pytest.approx((e["eval/cosine/landcover"] + e["eval/cosine/general"]) / 2, abs=1e-6)
    report = json.loads((final.parent / "report.json").read_text())
    assert report["held_out_before"]["cosine"] < evals[0]["eval/cosine"] < evals[1]["eval/cosine"], evals
    (line,) = figures[-1].axes[1].get_lines()  # the held-out cosine, on the twin axes of loss.png
    assert list(line.get_xdata()) == [0, 3, 6, 7]
    before, after = report["held_out_before"]["cosine"], report["held_out_after"]["cosine"]
    assert list(line.get_ydata()) == pytest.approx([before, *(e["eval/cosine"] for e in evals), after])


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, data_dir, distilled):
    path = write_recipe(tmp_path, data_dir, steps=12, save_every=4)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "adapt.cli", "distill", str(path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        log = out / "train_log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 6:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert (out / "checkpoint-4").is_dir() and not (out / "final").exists()
    resumed = subprocess.run([sys.executable, "-m", "adapt.cli", "distill", str(path), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "checkpoint-4" in resumed.stdout
    assert [e["loss"] for e in read_log(out)] == pytest.approx([e["loss"] for e in read_log(distilled)], abs=1e-6)


def test_an_edited_recipe_is_refused_on_resume(tmp_path, data_dir):
    path = write_recipe(tmp_path, data_dir, steps=4, save_every=2)
    distill(load_recipe(path), progress=False, stop_after=2)
    with pytest.raises(TrainingError, match=r"(?s)distill.lr: 0.002 -> 0.001.*adapt distill RECIPE --allow-changes"):
        Distiller(load_recipe(path, ["distill.lr=1e-3"]), progress=False)


def write_pairs(folder: Path, data_dir: Path, n: int = 3) -> tuple[Path, Path]:
    """`n` held-out records of two images each (a general test image twice): the file, and its root."""
    general = data_dir / "data" / "general"
    first = json.loads((general / "test.jsonl").read_text().splitlines()[0])
    pairs = folder / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({**first, "id": f"pair-{i}", "image": [first["image"]] * 2,
                                         "conversations": [{"from": "human", "value": "<image>\n<image>\nSame?"},
                                                           {"from": "gpt", "value": "yes"}]}) + "\n"
                             for i in range(n)))
    return pairs, general


def test_held_out_max_images_counts_images_not_records(tmp_path, data_dir):
    """eval.max_images ("held-out images per eval source") cut records, and the report's per-source "images" was a
    record count: 3 two-image records scored 6 images under max_images 3 and said 3."""
    pairs, general = write_pairs(tmp_path, data_dir)
    text = RECIPE.replace("eval: {max_images: 6}", "eval: {max_images: 5}").replace(
        "    - {name: general, path: data/general/test.jsonl, kind: general}\n",
        f"    - {{name: general, path: data/general/test.jsonl, kind: general}}\n"
        f"    - {{name: pairs, path: {pairs}, root: {general}, kind: domain}}\n")
    distiller = Distiller(load_recipe(write_recipe(tmp_path, data_dir, steps=1, text=text)), progress=False)
    try:
        sources = distiller.before["sources"]
    finally:
        distiller.close()
    assert sources["pairs"]["images"] == 4 and sources["general"]["images"] == 5, sources


def test_weight_decay_follows_adapt_trains_rule(tmp_path, data_dir):
    """Distillation decayed matrices only (ndim >= 2), so an InternViT student's layer scales (lambda_1, lambda_2)
    were spared where adapt train decays them: both follow transformers' Trainer, all but norms and biases."""
    distiller = Distiller(load_recipe(write_recipe(tmp_path, data_dir, steps=1), ["training.weight_decay=0.05"]),
                          progress=False)
    try:
        names = {id(p): f"{part}.{n}" for part, module in (("student", distiller.model.student),
                                                           ("projection", distiller.model.projections))
                 for n, p in module.named_parameters()}
        decayed = {names[id(p)] for g in distiller._param_groups() if g["weight_decay"] for p in g["params"]}
        spared = {names[id(p)] for g in distiller._param_groups() if not g["weight_decay"] for p in g["params"]}
    finally:
        distiller.close()
    assert "student.encoder.layer.0.lambda_1" in decayed and "student.embeddings.position_embeddings" in decayed
    assert "projection.0.weight" in decayed and "projection.0.bias" in spared
    assert "student.encoder.layer.0.layernorm_before.weight" in spared
    assert "student.encoder.layer.0.mlp.fc1.bias" in spared
    assert decayed | spared == set(names.values()) and not decayed & spared


def held_out_recipe(eval_setting: str, sources: str) -> str:
    """RECIPE with `eval_setting` as its eval: mapping and `sources` (YAML list items) as its held-out sources."""
    return RECIPE.replace("eval: {max_images: 6}", f"eval: {eval_setting}").replace(
        "    - {name: landcover, path: data/landcover/test.jsonl, kind: domain}\n"
        "    - {name: general, path: data/general/test.jsonl, kind: general}\n", sources)


def test_held_out_batch_size_counts_images_not_records(tmp_path, data_dir, monkeypatch):
    """eval.batch_size ("images per forward pass") batched records: two-image records went 2 to a pass at 2."""
    pairs, general = write_pairs(tmp_path, data_dir)
    text = held_out_recipe("{max_images: 6, batch_size: 2}",
                           f"    - {{name: pairs, path: {pairs}, root: {general}, kind: domain}}\n")
    distiller = Distiller(load_recipe(write_recipe(tmp_path, data_dir, steps=1, text=text)), progress=False)
    try:
        passes, cosines = [], distiller.model.cosines
        monkeypatch.setattr(distiller.model, "cosines", lambda pixels: (passes.append(len(pixels)), cosines(pixels))[1])
        result = distiller._held_out_cosine()
    finally:
        distiller.close()
    assert result["sources"]["pairs"]["images"] == 6 and len(passes) == 3, passes


def test_held_out_bad_fraction_is_of_the_whole_source_not_the_max_images_kept(tmp_path, data_dir, capsys):
    """1 missing image in 21 held-out records (4.8%, under data.max_bad_fraction 5%) was judged against the
    eval.max_images records kept: 1 of 3 (33%), and the run refused."""
    general = data_dir / "data" / "general"
    first = json.loads((general / "test.jsonl").read_text().splitlines()[0])
    records = [{**first, "id": f"r-{i}"} for i in range(20)] + [{**first, "id": "gone", "image": "images/gone.png"}]
    (tmp_path / "many.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = held_out_recipe("{max_images: 2}",
                           f"    - {{name: many, path: {tmp_path / 'many.jsonl'}, root: {general}, kind: domain}}\n")
    distiller = Distiller(load_recipe(write_recipe(tmp_path, data_dir, steps=1, text=text)), progress=False)
    try:
        assert distiller.before["sources"]["many"]["images"] == 2 and distiller.before["skipped"] == 1
    finally:
        distiller.close()
    assert "1 held-out record(s) skipped" in capsys.readouterr().out


def test_a_held_out_source_whose_scored_images_all_fail_to_decode_stops_the_run(tmp_path, data_dir, capsys):
    """Held-out images that pass reading but do not decode were held to the limit over the whole file only: with
    every image eval.max_images came to undecodable (2 of 60 records, 3%) the source was left out of the cosine and
    the run went on, its report's "all" row the other sources' alone. Now held as `adapt eval` holds eval.max_samples:
    of the records scored, and a source with none left stops the run."""
    general = data_dir / "data" / "general"
    first = json.loads((general / "test.jsonl").read_text().splitlines()[0])
    good = (general / first["image"]).read_bytes()
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "good.png").write_bytes(good)
    (tmp_path / "held" / "cut.png").write_bytes(good[:len(good) // 2])  # the header intact: reading keeps it
    records = [{**first, "id": f"cut-{i}", "image": "cut.png"} for i in range(2)]
    records += [{**first, "id": f"r-{i}", "image": "good.png"} for i in range(58)]
    (tmp_path / "held" / "many.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = held_out_recipe("{max_images: 2}",
                           f"    - {{name: many, path: {tmp_path / 'held' / 'many.jsonl'}, kind: domain}}\n"
                           "    - {name: general, path: data/general/test.jsonl, kind: general}\n")
    from adapt.data.samples import DataQualityError

    with pytest.raises(DataQualityError, match=r"(?s)held-out images \(data.eval_sources\): too many bad records.*"
                                               r"many: 2 of 60 .*not one record is left"):
        Distiller(load_recipe(write_recipe(tmp_path, data_dir, steps=1, text=text)), progress=False)
    assert "image does not decode" in (tmp_path / "out" / "held_out" / "skips.md").read_text()


@pytest.mark.parametrize("steps, extra, said", [
    (1, [], "never reaches distill.lr; its only step trains at learning rate 0"),
    (1, ["distill.projection_lr=1e-3"], "never reaches distill.lr / distill.projection_lr;"),
    (20, [], None)])
def test_a_distillation_that_is_all_warm_up_says_so(tmp_path, data_dir, capsys, steps, extra, said):
    """`adapt distill` has `adapt train`'s schedule: max_steps 1 at warmup_ratio 0.1 trains at learning rate 0, and
    its plan said nothing (train's plan says so; both now print the one note)."""
    out = printed_plan(Distiller(load_recipe(write_recipe(tmp_path, data_dir, steps=steps), extra), progress=False),
                       capsys)
    if said is None:
        assert "warmup_ratio" not in out, out
    else:
        assert f"training.warmup_ratio 0.1 warms up over every one of the {steps} step(s)" in out and said in out, out


# ---------------------------------------------------------------------- the tower it writes
def test_the_tower_loads_as_model_vision_and_trains(tmp_path, data_dir, distilled, example_image):
    final = distilled / "final"
    tower = AutoModel.from_pretrained(str(final))  # transformers reads the folder as it is
    vlm, processor = model.load("pocket-tiny", vision=final, vision_adapter="fresh")  # no adapter: a fresh projector
    assert vlm.config.vision_config.hidden_size == 48 and vlm.multi_modal_projector.layer_norm.normalized_shape == (192,)
    assert vlm.config.vision_adapter_width is None
    pixels = torch.randn(2, 3, 112, 112)
    assert torch.equal(vlm.vision_tower(pixel_values=pixels).last_hidden_state,
                       tower(pixel_values=pixels).last_hidden_state)
    with pytest.raises(CheckpointError, match="a vision tower alone"):
        model.load(final)
    # a training recipe names it as model.vision; the VLM trains with it (vision tower trained in full here)
    text = f"""
model: {{source: pocket-tiny, vision: {final}, vision_adapter: fresh}}
parts: {{vision: {{mode: full, lr: 1.0e-3}}, projector: {{mode: full, lr: 1.0e-3}}, llm: {{mode: frozen, lr: 1.0e-4}}}}
data:
  sources: [{{name: landcover, path: data/landcover/train.jsonl}}]
mixing: {{general_ratio: 0}}
training: {{max_steps: 2, batch_size: 2, max_seq_length: 512}}
output: {{dir: out, save_every: 10}}
logging: {{tensorboard: false}}
"""
    recipe = load_recipe(write_recipe(tmp_path, data_dir, text=text))
    trained = train(recipe, progress=False)
    adapted, adapted_processor = model.load(trained)
    assert adapted.config.vision_config.hidden_size == 48 and adapted.config.vision_adapter_width is None
    assert not torch.equal(adapted.vision_tower(pixel_values=pixels).last_hidden_state,
                           tower(pixel_values=pixels).last_hidden_state)  # it trained
    enc = adapted_processor([{"role": "user", "content": "Which class?"}], images=[example_image])
    assert adapted.generate(**enc.to_model_inputs(), max_new_tokens=2).shape[1] <= 2


def test_export_takes_the_tower(tmp_path, distilled):
    from adapt.cli import main

    out = tmp_path / "hf"
    assert main(["export", "--model", "pocket-tiny", "--vision", str(distilled / "final"), "--vision-adapter", "fresh",
                 "-f", "hf", "-o", str(out)]) == 0
    exported, _ = model.load(out)
    tower = AutoModel.from_pretrained(str(distilled / "final"))
    pixels = torch.randn(1, 3, 112, 112)
    assert torch.allclose(exported.vision_tower(pixel_values=pixels).last_hidden_state,
                          tower(pixel_values=pixels).last_hidden_state, atol=1e-6)


def test_openGVLab_standalone_internvit_folders_are_tower_sources(tmp_path):
    """InternViT-6B-448px-V1-5 / InternViT-300M-448px are published as `intern_vit_6b` folders with fused qkv: read
    through the original layout's mapping, they compute what the tower they were written from computes."""
    from model.checkpoints.io import write_state_dict
    from model.checkpoints.original import original_config, original_state_dict

    vlm, _ = model.load("pocket-tiny")
    vlm.config.chat_template = "Hermes-2"  # original_config names the template
    (tmp_path / "config.json").write_text(json.dumps(original_config(vlm.config)["vision_config"]))
    write_state_dict(tmp_path, {k.removeprefix("vision_model."): v for k, v in original_state_dict(vlm).items()
                                if k.startswith("vision_model.")})
    tower, tiling = load_vision(tmp_path)
    pixels = torch.randn(2, 3, 112, 112)
    assert tiling.tile_size == 112
    assert torch.allclose(tower(pixel_values=pixels).last_hidden_state,
                          vlm.vision_tower(pixel_values=pixels).last_hidden_state, atol=1e-6)


def test_a_tower_folder_whose_tiling_is_not_its_towers_size_is_refused(tmp_path):
    """pocket_tower.json's tile size was taken as it was: a VLM given the tower cut tiles of another size and failed
    at its first image on a count of image tokens blamed on truncation. It is now the shared tile-size check's."""
    from model.checkpoints.tower import save_tower

    tower, tiling = load_vision("internvit-300m", {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "intermediate_size": 64, "image_size": 112})
    folder = save_tower(tower, tiling, tmp_path / "tower")
    info = json.loads((folder / "pocket_tower.json").read_text())
    info["tiling"]["tile_size"] = 224
    (folder / "pocket_tower.json").write_text(json.dumps(info))
    said = f"{folder / 'pocket_tower.json'}: the tiling cuts 224 px tiles, but the vision tower takes 112 px images"
    with pytest.raises(CheckpointError, match=re.escape(said)):
        load_vision(folder)
    with pytest.raises(CheckpointError, match=re.escape(said)):
        model.load("pocket-tiny", vision=folder, vision_adapter="fresh")


def test_a_tower_folder_whose_config_cannot_be_built_is_one_error(tmp_path, data_dir):
    """A tower folder (e.g. a distillation's student) whose config.json the model refuses — a width no head count
    divides — passed the recipe's config-only check, then stopped `adapt distill` with transformers' bare ValueError
    (a traceback); it is now a CheckpointError naming the folder's config.json."""
    from model.checkpoints.tower import save_tower

    tower, tiling = load_vision("internvit-300m", {"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
                                                   "intermediate_size": 96, "image_size": 112})
    folder = save_tower(tower, tiling, tmp_path / "tower")
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    said = rf"{re.escape(str(folder / 'config.json'))}: the tower cannot be built from this config \(.*divisible"
    with pytest.raises(CheckpointError, match=said):
        load_vision(folder)
    text = RECIPE.replace(f"student: {{source: internvit-300m, config: {STUDENT}}}", f"student: {{source: {folder}}}")
    recipe = load_recipe(write_recipe(tmp_path / "run", data_dir, text=text))
    with pytest.raises(CheckpointError, match=said):
        Distiller(recipe, progress=False)


def test_hub_towers_are_named_owner_slash_name(tmp_path, data_dir):
    path = write_recipe(tmp_path, data_dir)
    recipe = load_recipe(path, ["distill.teacher.source=hub:OpenGVLab/InternViT-6B-448px-V1-5"])
    assert recipe.distill.teacher.source == "hub:OpenGVLab/InternViT-6B-448px-V1-5"
    with pytest.raises(RecipeError, match="a hub tower is named hub:OWNER/NAME"):
        load_recipe(path, ["distill.teacher.source=hub:InternViT-6B"])


@pytest.mark.slow
def test_two_process_run_matches_one_process(tmp_path, data_dir):
    """DDP (2 gloo processes x 2 images) distils exactly as one process over the same 4 images a step."""
    one = load_recipe(write_recipe(tmp_path / "one", data_dir, steps=3, save_every=3))
    distill(one, progress=False)
    path = write_recipe(tmp_path / "two", data_dir, steps=3, save_every=3)
    run = subprocess.run([sys.executable, "-m", "adapt.cli", "distill", str(path), "--nproc-per-node", "2", "--no-progress",
                          "training.batch_size=2"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es) with DDP" in run.stdout
    got, want = read_log(tmp_path / "two" / "out"), read_log(tmp_path / "one" / "out")
    for a, b in zip(got, want, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    ours = load_file(str(tmp_path / "two" / "out" / "final" / "model.safetensors"))
    reference = load_file(str(tmp_path / "one" / "out" / "final" / "model.safetensors"))
    assert all(torch.allclose(ours[k], reference[k], atol=1e-5) for k in reference)


def test_bfloat16_towers_feed_float32_projections():
    """A 6B teacher fits in bfloat16 (`distill.teacher.dtype`); the projections and the loss stay float32."""
    small = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "image_size": 56}
    teacher, _ = load_vision("internvit-300m", {**small, "hidden_size": 64})
    student, _ = load_vision("internvit-300m", {**small, "hidden_size": 32})
    distiller = FeatureDistiller(teacher.to(torch.bfloat16), student.to(torch.bfloat16), [(1, 1)])
    loss = distiller(torch.randn(2, 3, 56, 56))
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert distiller.projections[0].weight.grad is not None and distiller.projections[0].weight.dtype == torch.float32


def test_missing_held_out_images_are_counted_and_held_to_the_limit(tmp_path, data_dir, capsys):
    """Missing held-out images were left out of the cosine without a word (skips.md said nothing was skipped,
    even with every image gone); they now count against data.max_bad_fraction as training's and eval's do."""
    import shutil

    shutil.copytree(data_dir / "data", tmp_path / "data")
    held = tmp_path / "data" / "landcover" / "test.jsonl"
    for line in held.read_text().splitlines()[:2]:
        (held.parent / json.loads(line)["image"]).unlink()
    path = write_recipe(tmp_path, data_dir, steps=1, save_every=1)
    from adapt.data.samples import DataQualityError

    with pytest.raises(DataQualityError, match=r"held-out images \(data.eval_sources\): too many bad records"):
        distill(load_recipe(path), progress=False)
    assert "landcover" in (tmp_path / "out" / "held_out" / "skips.md").read_text()
    shutil.rmtree(tmp_path / "out")
    distill(load_recipe(path, ["data.max_bad_fraction=0.5"]), progress=False)
    assert "warning: 2 held-out record(s) skipped" in capsys.readouterr().out
    assert "2 held-out records skipped" in (tmp_path / "out" / "report.md").read_text()


def test_a_source_with_text_only_records_says_they_were_left_out(tmp_path, data_dir):
    """Distillation keeps only records with images. A source of text-only records stopped the run with the
    mixture's "no domain source has records ... see why their records were skipped (skips.md)", and skips.md did
    not list them; the error now says the text-only records were left out, and how many."""
    text_only = tmp_path / "chat.jsonl"
    text_only.write_text("".join(json.dumps({"id": str(i), "conversations": [
        {"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi"}]}) + "\n" for i in range(3)))
    text = RECIPE.replace("path: data/landcover/train.jsonl", f"path: {text_only}")
    recipe = load_recipe(write_recipe(tmp_path / "run", data_dir, text=text))
    with pytest.raises(DataError, match=r"no domain source .* has records \(landcover\).*adapt distill trains on "
                                        r"images only and left out the text-only records \(landcover: 3 of 3\)"):
        Distiller(recipe, progress=False)


def test_a_full_disk_while_writing_the_tower_leaves_no_half_final(tmp_path, data_dir, capsys, monkeypatch):
    """The tower was written straight into final/: a full disk (or a kill) part way left a final/ with a config and
    no whole weights, which `model.vision` would then take, and the error named no folder. It is now written beside
    it and renamed in whole, as `adapt train`'s final/ is."""
    import errno

    import adapt.distill
    from adapt.cli import main

    path = write_recipe(tmp_path, data_dir, steps=2, save_every=10)
    real = adapt.distill.save_tower

    def full_after_the_weights(tower, tiling, out_dir, info=None):
        real(tower, tiling, out_dir, info)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(adapt.distill, "save_tower", full_after_the_weights)
    assert main(["distill", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    out = tmp_path / "out"
    assert "disk full" in err and str(out / ".final.staging") in err and "Traceback" not in err, err
    assert not (out / "final").exists() and not (out / ".final.staging").exists()
