"""Issue 14: a run that reports success trained on the data its recipe names, with finite weights, in an
output folder that belongs to it alone; a broken file in that folder costs a checkpoint, not the run."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from adapt.data.samples import DataQualityError
from adapt.recipe import load_recipe
from adapt.train import Trainer, train
from model.errors import PocketAdaptError

RECIPE = """
name: tiny
model: {source: pocket-tiny-scratch}
parts:
  projector: {mode: full, lr: 1.0e-3}
  llm: {mode: lora, lr: 1.0e-3, lora: {r: 2, alpha: 4, dropout: 0.0}}
data:
  sources:
    - {name: field, path: data/field/train.jsonl, kind: domain}
    - {name: general, path: data/general/train.jsonl, kind: general}
  max_bad_fraction: 0.05
mixing: {general_ratio: 0.5, seed: 1}
training: {max_steps: 3, batch_size: 2, warmup_ratio: 0.0, max_seq_length: 256, schedule: constant}
output: {dir: out, save_every: 1, keep_last: 5}
logging: {tensorboard: false}
"""

N = 8  # records per source


def _noise_png(path: Path, seed: int) -> None:
    """A 112 px noise image: incompressible, so cutting the file leaves a readable header and a broken body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    pixels = torch.randint(0, 256, (112, 112, 3), dtype=torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    for source, question in (("field", "Which field?"), ("general", "Which shape?")):
        lines = []
        for k in range(N):
            _noise_png(root / "data" / source / f"{k}.png", seed=k + (100 if source == "general" else 0))
            lines.append(json.dumps({"image": f"{k}.png", "conversations": [
                {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": f"answer {k % 3}"}]}))
        (root / "data" / source / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


def make_run(folder: Path, data_root: Path, broken: int = 0) -> Path:
    """A recipe in `folder` over a copy of the data whose first `broken` field images do not decode."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(data_root / "data", folder / "data")
    for k in range(broken):
        _cut(folder / "data" / "field" / f"{k}.png")
    path = folder / "tiny.yaml"
    path.write_text(RECIPE)
    return path


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ 1. images that fail only at decode time
@pytest.mark.parametrize("setting", [["training.num_workers=0"], ["training.num_workers=2"], ["training.batch_size=1"]],
                         ids=["in-process", "data-workers", "batch-of-one"])
def test_undecodable_domain_data_stops_the_run(tmp_path, data_root, setting):
    recipe = load_recipe(make_run(tmp_path, data_root, broken=N), setting)
    out = Path(recipe.output.dir)
    with pytest.raises(DataQualityError) as info:
        train(recipe, progress=False)
    message = str(info.value)
    assert "field:" in message and "do not decode" in message
    report = (out / "skips.md").read_text()
    assert "image does not decode" in report and "field" in report
    assert not (out / "final").exists()


def test_a_source_whose_every_record_fails_to_decode_stops_whatever_the_limit():
    """max_bad_fraction 1.0 tolerates bad records, not a source left with none (reading refuses that too)."""
    from adapt.data.samples import SkipLog

    skips = SkipLog()
    for k in range(N - 1):
        skips.add_dropped("field", "image does not decode", f"field.jsonl:{k + 1}")
    skips.check({"field": N, "general": N}, 1.0)  # one record of field is left
    skips.add_dropped("field", "image does not decode", f"field.jsonl:{N}")
    with pytest.raises(DataQualityError, match=f"field: {N} of {N} records skipped .*not one record is left"):
        skips.check({"field": N, "general": N}, 1.0)


@pytest.mark.slow
def test_decode_failures_within_the_limit_are_counted_and_reported(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root, broken=1),
                         ["data.max_bad_fraction=0.2", "training.num_workers=2", "training.max_steps=8"])
    train(recipe, progress=False)  # 8 steps x 2 samples: the whole epoch, the broken image included
    out = Path(recipe.output.dir)
    skips = json.loads((out / "skips.json").read_text())
    assert [(s["source"], s["reason"], s["count"]) for s in skips] == [("field", "image does not decode", 1)]
    assert "image does not decode" in (out / "skips.md").read_text()


def test_eval_applies_the_threshold_and_counts_every_skip(tmp_path, data_root):
    from adapt.run_eval import evaluate_model

    path = make_run(tmp_path, data_root, broken=2)
    overrides = ["data.eval_sources=[{name: field, path: data/field/train.jsonl}]", "eval.max_new_tokens=2"]
    recipe = load_recipe(path, overrides)
    with pytest.raises(DataQualityError, match="field: 2 of 8"):
        evaluate_model(recipe, "pocket-tiny-scratch", "base", tmp_path / "eval", progress=False)
    assert "image does not decode" in (tmp_path / "eval" / "skips.md").read_text()
    recipe = load_recipe(path, [*overrides, "data.max_bad_fraction=0.5"])
    summary = evaluate_model(recipe, "pocket-tiny-scratch", "base", tmp_path / "eval", progress=False)
    assert summary["sources"]["field"]["skipped"] == 2 and summary["skipped"] == 2


def test_evaluation_during_training_counts_skips_and_applies_the_threshold(tmp_path, data_root):
    import shutil

    path = make_run(tmp_path, data_root)
    shutil.copytree(tmp_path / "data" / "field", tmp_path / "data" / "held")
    for k in range(2):
        _cut(tmp_path / "data" / "held" / f"{k}.png")
    overrides = ["data.eval_sources=[{name: held, path: data/held/train.jsonl}]", "eval.max_new_tokens=2",
                 "eval.every=1"]
    recipe = load_recipe(path, overrides)
    out = Path(recipe.output.dir)
    with pytest.raises(DataQualityError, match="held: 2 of 8"):
        train(recipe, progress=False)
    assert "image does not decode" in (out / "eval_during_training" / "skips.md").read_text()
    assert not (out / "final").exists()

    shutil.rmtree(out)
    recipe = load_recipe(path, [*overrides, "data.max_bad_fraction=0.5"])
    train(recipe, progress=False)
    evals = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [1, 2, 3] and all(e["eval/skipped"] == 2 for e in evals)
    assert (out / "final").is_dir()


# ------------------------------------------------------------------ 4. non-finite training
def test_a_run_whose_loss_turns_nan_stops_and_saves_no_nan_weights(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root), ["parts.projector.lr=1.0e+30", "parts.llm.lr=1.0e+30"])
    out = Path(recipe.output.dir)
    with pytest.raises(PocketAdaptError) as info:
        train(recipe, progress=False)
    message = str(info.value)
    assert "not finite" in message and "step " in message and "loss" in message
    assert not (out / "final").exists()
    for checkpoint in out.glob("checkpoint-*"):
        weights = load_file(str(checkpoint / "trainable.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values()), checkpoint.name


def test_a_non_finite_gradient_norm_stops_the_run_before_the_update(tmp_path, data_root, monkeypatch):
    recipe = load_recipe(make_run(tmp_path, data_root))
    real = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip(parameters, max_norm, *args, **kwargs):
        calls.append(1)
        norm = real(parameters, max_norm, *args, **kwargs)
        return torch.tensor(float("inf")) if len(calls) == 2 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    with pytest.raises(PocketAdaptError, match=r"step 2.*gradient norm"):
        train(recipe, progress=False)
    out = Path(recipe.output.dir)
    assert (out / "checkpoint-1").is_dir() and not (out / "checkpoint-2").exists() and not (out / "final").exists()


# ------------------------------------------------------------------ 7. one run per output folder
def test_a_second_run_in_the_same_folder_is_refused(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root), ["training.max_steps=1"])
    first = Trainer(recipe, progress=False)
    with pytest.raises(PocketAdaptError) as info:
        Trainer(recipe, progress=False)
    assert f"pid {os.getpid()}" in str(info.value) and str(recipe.output.dir) in str(info.value)
    first.run()
    Trainer(recipe, progress=False).close()  # the first run let go of the folder


def test_a_folder_no_run_made_is_refused_before_anything_is_written(tmp_path, data_root):
    """An output.dir holding files but no run lock is left as it was: a run there moved its final/ aside and
    removed it, and overwrote train_log.jsonl (a foreign checkpoint-7/ was refused, after skips.json, skips.md and
    the lock file were written into it)."""
    import shutil

    from adapt.checkpointing import LOCK_NAME, RunFolderForeign

    recipe = load_recipe(make_run(tmp_path, data_root), ["training.max_steps=1"])
    out = Path(recipe.output.dir)
    (out / "final").mkdir(parents=True)
    (out / "final" / "notes.txt").write_text("precious")
    (out / "train_log.jsonl").write_text("mylog\n")
    with pytest.raises(RunFolderForeign) as info:
        train(recipe, progress=False)
    assert str(info.value) == (f"{out} holds files no `adapt train` run wrote (final/, train_log.jsonl); a run there "
                               "would replace final/, train_log.jsonl and loss.png: set output.dir to a new or empty "
                               "folder, or move those files out")
    (out / "checkpoint-7").mkdir()  # refused as damaged, after skips.json, skips.md and the lock were written
    (out / "checkpoint-7" / "trainer_state.json").write_text("{}")
    (out / "loss.png").write_bytes(b"mine")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(RunFolderForeign, match=r"\(checkpoint-7/, final/, loss.png and 1 more\)"):
        train(recipe, progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert (out / "final" / "notes.txt").read_text() == "precious" and (out / "train_log.jsonl").read_text() == "mylog\n"

    shutil.rmtree(out)
    out.mkdir()
    train(recipe, progress=False)  # an empty folder is a new run's
    assert (out / LOCK_NAME).is_file() and (out / "final").is_dir()
    resumed = load_recipe(tmp_path / "tiny.yaml", ["training.max_steps=2"])
    (out / "final" / "mark").touch()
    assert train(resumed, progress=False, allow_changes=True) == out / "final"  # the run's own folder: resumed
    assert not (out / "final" / "mark").exists()  # and its final/ replaced
    assert [e["step"] for e in read_log(out)] == [1, 2]

    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunFolderForeign, match="afile is a file, not a folder"):
        Trainer(load_recipe(tmp_path / "tiny.yaml", [f"output.dir={tmp_path / 'afile'}"]), progress=False)


def test_every_rank_stops_when_rank_0_refuses_the_folder(tmp_path):
    """Rank 0 alone looks at the folder; the other ranks stop with what it found, not a wrong 'in use'."""
    from adapt.checkpointing import RunFolderBusy, RunFolderForeign, RunFolderUnusable
    from adapt.train import Distributed

    class Peer(Distributed):
        def all_sum(self, values: torch.Tensor) -> torch.Tensor:
            return torch.tensor([found], dtype=torch.float64)

    trainer = Trainer.__new__(Trainer)
    trainer.dist, trainer.out_dir = Peer(rank=1, world=2), tmp_path
    for found, error, says in ((2.0, RunFolderForeign, "no `adapt train` run wrote"), (1.0, RunFolderBusy, "in use"),
                               (3.0, RunFolderUnusable, "cannot be made or its lock file written")):
        with pytest.raises(error, match=says) as info:  # an unwritable folder was "in use by another run" there
            trainer._lock_run_folder()
        assert "in use" not in str(info.value) or found == 1.0
    found = 0.0
    assert trainer._lock_run_folder() is None and not any(tmp_path.iterdir())  # rank 1 neither locks nor writes

    sent = []

    class Main(Distributed):
        def all_sum(self, values: torch.Tensor) -> torch.Tensor:
            sent.append(values.item())
            return values.to(torch.float64)

    (tmp_path / "file").write_text("not a folder")
    trainer.dist, trainer.out_dir = Main(rank=0, world=2), tmp_path / "file" / "run"
    with pytest.raises(RunFolderUnusable):
        trainer._lock_run_folder()
    assert sent == [3.0]  # what rank 0 tells the others: the folder is unusable, not busy


@pytest.mark.skipif(not hasattr(os, "fork"), reason="data workers are forked only where fork exists")
def test_a_forked_data_worker_does_not_let_go_of_the_run_lock(tmp_path):
    from adapt.checkpointing import RunFolderBusy, RunLock

    lock = RunLock(tmp_path)
    child = os.fork()
    if child == 0:  # what a DataLoader worker holding a copy of the trainer does when it ends
        lock.release()
        os._exit(0)
    os.waitpid(child, 0)
    with pytest.raises(RunFolderBusy):
        RunLock(tmp_path)
    lock.release()
    RunLock(tmp_path).release()


def test_a_run_folder_that_cannot_be_made_or_written_is_one_clear_error(tmp_path, monkeypatch):
    """mkdir / open of the lock raised a raw OSError (and rank 0 alone stopping left the other ranks waiting)."""
    from adapt.checkpointing import RunFolderBusy, RunFolderUnusable, RunLock

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RunFolderUnusable, match=r"output.dir .*file/run: cannot make the folder \(Not a directory"):
        RunLock(tmp_path / "file" / "run")
    assert issubclass(RunFolderUnusable, RunFolderBusy)  # what `_lock_run_folder` tells the other ranks about

    def refuse(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("adapt.checkpointing.os.open", refuse)
    with pytest.raises(RunFolderUnusable, match=r"cannot write its lock file \(Permission denied: .*\.adapt-train"):
        RunLock(tmp_path)
    with pytest.raises(RunFolderUnusable, match="cannot make the folder"):
        RunLock(tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()  # the folders it made for the run are gone again
    monkeypatch.undo()

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("adapt.checkpointing.os.write", full)
    with pytest.raises(RunFolderUnusable, match=r"run2: cannot write its lock file \(No space left on device\)"):
        RunLock(tmp_path / "run2")
    monkeypatch.undo()
    assert not (tmp_path / "run2").exists()
    RunLock(tmp_path).release()  # the lock was let go


@pytest.mark.slow
def test_two_train_processes_on_one_folder(tmp_path, data_root):
    path = make_run(tmp_path, data_root)
    out = path.parent / "out"
    cmd = [sys.executable, "-m", "adapt.cli", "train", str(path), "--no-progress", "training.max_steps=400",
           "output.save_every=1000"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None and not (out / "train_log.jsonl").is_file():
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()[-2000:]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


# ------------------------------------------------------------------ 8 and 10. damaged files in the run folder
def test_a_torn_last_log_line_does_not_block_resuming(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root))
    out = Path(recipe.output.dir)
    Trainer(recipe, progress=False).run(stop_after=1)
    with (out / "train_log.jsonl").open("a") as fh:
        fh.write('{"step": 2, "epoch": 0.25, "lo')  # killed while writing
    Trainer(recipe, progress=False).run(stop_after=2)
    assert [e["step"] for e in read_log(out)] == [1, 2]


def test_a_corrupt_log_line_is_named(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root))
    out = Path(recipe.output.dir)
    Trainer(recipe, progress=False).run(stop_after=2)
    lines = (out / "train_log.jsonl").read_text().splitlines()
    (out / "train_log.jsonl").write_text("garbage\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(PocketAdaptError, match=rf"{out / 'train_log.jsonl'}:1"):
        Trainer(recipe, progress=False)


@pytest.mark.parametrize("damage", ["trainer_state.json torn", "weights torn", "optimizer missing", "manifest missing"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, data_root, capsys, damage):
    recipe = load_recipe(make_run(tmp_path, data_root))
    out = Path(recipe.output.dir)
    Trainer(recipe, progress=False).run(stop_after=2)
    newest = out / "checkpoint-2"
    name = {"trainer_state.json torn": "trainer_state.json", "weights torn": "trainable.safetensors",
            "optimizer missing": "optimizer.safetensors", "manifest missing": "manifest.json"}[damage]
    if damage.endswith("torn"):
        _cut(newest / name)
    else:
        (newest / name).unlink()
    capsys.readouterr()
    trainer = Trainer(recipe, progress=False)
    assert trainer.start_step == 1
    printed = capsys.readouterr().out
    assert "checkpoint-2" in printed and name in printed and "checkpoint-1" in printed
    trainer.run()
    assert [e["step"] for e in read_log(out)] == [1, 2, 3] and (out / "final").is_dir()


def test_no_usable_checkpoint_names_the_files(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root), ["output.keep_last=1"])
    out = Path(recipe.output.dir)
    Trainer(recipe, progress=False).run(stop_after=1)
    _cut(out / "checkpoint-1" / "trainer_state.json")
    with pytest.raises(PocketAdaptError) as info:
        Trainer(recipe, progress=False)
    assert str(out / "checkpoint-1" / "trainer_state.json") in str(info.value)


def test_checkpoints_carry_a_manifest_written_last(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root))
    Trainer(recipe, progress=False).run(stop_after=1)
    checkpoint = Path(recipe.output.dir) / "checkpoint-1"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    files = {p.name: p.stat().st_size for p in checkpoint.iterdir() if p.name != "manifest.json"}
    assert manifest["files"] == files
    assert "recipe.yaml" in files


# ------------------------------------------------------------------ 9. resuming after the recipe changed
def test_resuming_after_a_recipe_edit_shows_it_and_refuses(tmp_path, data_root, capsys):
    path = make_run(tmp_path, data_root)
    Trainer(load_recipe(path), progress=False).run(stop_after=1)
    edited = load_recipe(path, ["parts.projector.lr=5.0e-3", "mixing.general_ratio=0.25"])
    with pytest.raises(PocketAdaptError) as info:
        Trainer(edited, progress=False)
    message = str(info.value)
    assert "parts.projector.lr: 0.001 -> 0.005" in message and "mixing.general_ratio: 0.5 -> 0.25" in message
    assert "--allow-changes" in message and "checkpoint-1" in message

    trainer = Trainer(edited, progress=False, allow_changes=True)
    assert "parts.projector.lr: 0.001 -> 0.005" in capsys.readouterr().out
    lrs = {g["part"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["projector"] == pytest.approx(5.0e-3) and lrs["llm"] == pytest.approx(1.0e-3)
    assert trainer.plan.general_ratio == 0.25
    trainer.close()


def test_edits_that_reshape_the_weights_are_refused_even_with_allow_changes(tmp_path, data_root, capsys):
    """A part's mode or a LoRA part's rank changes which weights exist: --allow-changes said it was applying such an
    edit, then failed loading the checkpoint naming weights the model has. Refused up front now, naming the edit;
    a LoRA setting of a part that does not train with LoRA stays an ordinary edit."""
    path = make_run(tmp_path, data_root)
    Trainer(load_recipe(path), progress=False).run(stop_after=1)
    for overrides, shown in ((["parts.vision.mode=lora", "parts.vision.lora.dropout=0.0"],
                              "parts.vision.mode: 'frozen' -> 'lora'"),
                             (["parts.llm.lora.r=4"], "parts.llm.lora.r: 2 -> 4"),
                             (["model.source=pocket-tiny"], "model.source: 'pocket-tiny-scratch' -> 'pocket-tiny'")):
        with pytest.raises(PocketAdaptError) as info:
            Trainer(load_recipe(path, overrides), progress=False, allow_changes=True)
        message = str(info.value)
        assert shown in message and "not even with --allow-changes" in message and "output.dir" in message
        assert "recipe edits since" not in capsys.readouterr().out  # never said to be applied
    trainer = Trainer(load_recipe(path, ["parts.vision.lora.r=4"]), progress=False, allow_changes=True)
    assert trainer.start_step == 1 and "parts.vision.lora.r: 16 -> 4" in capsys.readouterr().out
    trainer.close()


def test_a_recipe_without_training_sources_is_refused_before_anything_is_written(tmp_path, data_root, capsys):
    """`data.sources: []` validated with a note, then `adapt train` failed on the general share, leaving skips.* in
    the output folder. Both refuse it first, saying what is missing."""
    from adapt.cli import main

    path = make_run(tmp_path, data_root)
    assert main(["validate", str(path), "data.sources=[]"]) == 1
    assert "data.sources is empty, so there is nothing to train on" in capsys.readouterr().err
    assert main(["train", str(path), "data.sources=[]", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "data.sources is empty, so there is nothing to train on" in err and "general" not in err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_says_which_steps_are_kept(tmp_path, data_root, capsys, monkeypatch):
    """Ctrl-C printed only `interrupted`: nothing said the steps since the last checkpoint were lost, or how to go on."""
    path = make_run(tmp_path, data_root)
    trainer = Trainer(load_recipe(path, ["output.save_every=2", "training.max_steps=5"]), progress=False)
    real = Trainer._stop_if_not_finite

    def ctrl_c_in_step_4(self, step, *args, **kwargs):
        if step == 4:
            raise KeyboardInterrupt
        return real(self, step, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_stop_if_not_finite", ctrl_c_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert ("stopped after step 3 of 5; checkpoint-2 holds step 2; the 1 step(s) since are not kept: run the same "
            "command to resume from it") in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "_stop_if_not_finite", real)
    again = Trainer(load_recipe(path, ["output.save_every=2", "training.max_steps=5"]), progress=False)
    assert again.start_step == 2
    again.close()


def test_ctrl_c_with_every_checkpoint_damaged_still_raises_the_interrupt(tmp_path, data_root, capsys, monkeypatch):
    """The note said on Ctrl-C raised `CheckpointDamaged` itself when no checkpoint verified, and that error replaced
    the interrupt. The interrupt goes on up now, after a note of what is wrong with the checkpoints."""
    path = make_run(tmp_path, data_root)
    trainer = Trainer(load_recipe(path, ["output.save_every=2", "training.max_steps=5"]), progress=False)
    real = Trainer._stop_if_not_finite

    def ctrl_c_in_step_4(self, step, *args, **kwargs):
        if step == 4:
            _cut(self.out_dir / "checkpoint-2" / "trainer_state.json")
            raise KeyboardInterrupt
        return real(self, step, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_stop_if_not_finite", ctrl_c_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    err = capsys.readouterr().err
    assert "stopped after step 3 of 5; " in err and "checkpoint-2" in err and "trainer_state.json" in err, err


def test_resuming_after_a_harmless_edit_goes_on(tmp_path, data_root, capsys):
    path = make_run(tmp_path, data_root)
    Trainer(load_recipe(path), progress=False).run(stop_after=1)
    trainer = Trainer(load_recipe(path, ["logging.every=5", "output.keep_last=3", "training.num_workers=1"]),
                      progress=False)
    assert trainer.start_step == 1 and "logging.every: 10 -> 5" in capsys.readouterr().out
    trainer.close()


def test_a_moved_project_resumes_as_it_was(tmp_path, data_root, capsys):
    """Moving or renaming the project folder changes every absolute path of the resolved recipe but no setting:
    the run goes on (it was refused as an edit of data.sources[0].path, output.dir, ...); a real edit still shows."""
    import shutil

    path = make_run(tmp_path / "projA", data_root)
    Trainer(load_recipe(path), progress=False).run(stop_after=1)
    shutil.move(tmp_path / "projA", tmp_path / "projB")
    moved = tmp_path / "projB" / path.name
    trainer = Trainer(load_recipe(moved), progress=False)
    out = capsys.readouterr().out
    assert trainer.start_step == 1 and f"the run moved from {tmp_path / 'projA'} to {tmp_path / 'projB'}" in out
    trainer.close()
    with pytest.raises(PocketAdaptError, match=r"parts\.projector\.lr: 0\.001 -> 0\.005"):
        Trainer(load_recipe(moved, ["parts.projector.lr=5.0e-3"]), progress=False)


def test_resuming_past_a_lowered_step_count_is_one_clear_error(tmp_path, data_root):
    """--allow-changes with training.max_steps below the newest checkpoint's step: refused naming both (it was a
    traceback from the data loader, whose length came out negative)."""
    path = make_run(tmp_path, data_root)
    Trainer(load_recipe(path), progress=False).run(stop_after=2)
    with pytest.raises(PocketAdaptError, match=r"checkpoint-2 is at step 2, past the 1 step.*training\.max_steps"):
        Trainer(load_recipe(path, ["training.max_steps=1"]), progress=False, allow_changes=True)


def test_train_verb_takes_allow_changes(tmp_path, data_root, capsys):
    from adapt.cli import main

    path = make_run(tmp_path, data_root)
    Trainer(load_recipe(path), progress=False).run(stop_after=1)
    assert main(["train", str(path), "--no-progress", "training.max_steps=2", "parts.llm.lr=2.0e-3"]) == 1
    assert "--allow-changes" in capsys.readouterr().err
    assert main(["train", str(path), "--no-progress", "training.max_steps=2", "parts.llm.lr=2.0e-3",
                 "--allow-changes"]) == 0


# ------------------------------------------------------------------ 14. the umask decides file modes
def test_run_files_follow_the_umask(tmp_path, data_root):
    recipe = load_recipe(make_run(tmp_path, data_root), ["training.max_steps=1"])
    old = os.umask(0o027)
    try:
        train(recipe, progress=False)
    finally:
        os.umask(old)
    out = Path(recipe.output.dir)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes and {k: oct(m) for k, m in modes.items() if m != 0o640} == {}


def test_a_run_stopped_at_load_for_bad_records_lists_them(tmp_path, data_root):
    """Too many bad records found while reading stop the run before training; skips.md names them all the same."""
    path = make_run(tmp_path, data_root)
    field = tmp_path / "data" / "field" / "train.jsonl"
    line = {"image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nWhich field?"},
                                                       {"from": "gpt", "value": "answer 0"}]}
    field.write_text(field.read_text() + (json.dumps(line) + "\n") * 3)
    recipe = load_recipe(path)
    with pytest.raises(DataQualityError, match="too many bad records"):
        Trainer(recipe, progress=False)
    report = (Path(recipe.output.dir) / "skips.md").read_text()
    assert "missing.png" in report and f"{field}:{N + 1}" in report
    # the folder stays a run's: the same run with a looser limit (or mended data) goes on in it
    Trainer(load_recipe(path, ["data.max_bad_fraction=0.5"]), progress=False).close()


def test_final_is_written_whole_or_not_at_all(tmp_path, data_root, monkeypatch):
    """A write of final/ that fails (or is killed) part-way leaves the earlier final/ as it was, not a folder
    holding a config and no weights; the staging folder goes with the failure."""
    import adapt.train as train_module

    recipe = load_recipe(make_run(tmp_path, data_root), ["training.max_steps=1"])
    trainer = Trainer(recipe, progress=False)
    final = trainer.run()
    before = sorted(p.name for p in final.iterdir())
    assert "model.safetensors" in before

    def broken_save(vlm, processor, out_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(train_module.model_core, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer._write_final(final)
    assert sorted(p.name for p in final.iterdir()) == before and json.loads((final / "config.json").read_text())
    assert not (final.parent / ".final.staging").exists()


def test_a_missing_eval_source_is_refused_before_training(tmp_path, data_root):
    """With eval.every, the held-out file is needed at the first evaluation: missing, the run used to train up to
    it and stop there with nothing saved. It is refused before the first step."""
    recipe = load_recipe(make_run(tmp_path, data_root), [
        "eval.every=2", "data.eval_sources=[{name: held, path: data/field/nope.jsonl, kind: domain}]"])
    with pytest.raises(PocketAdaptError, match=r"data\.eval_sources: source 'held': annotation file not found: .*nope"):
        Trainer(recipe, progress=False)
    assert not list(Path(recipe.output.dir).glob("checkpoint-*"))
    (tmp_path / "data" / "field" / "held.jsonl").mkdir()  # a folder where the file should be: said to be one
    recipe = load_recipe(tmp_path / "tiny.yaml", [
        "eval.every=2", "data.eval_sources=[{name: held, path: data/field/held.jsonl, kind: domain}]",
        f"output.dir={tmp_path / 'out-folder'}"])
    with pytest.raises(PocketAdaptError, match=r"source 'held': .*held\.jsonl is a folder, not an annotation file"):
        Trainer(recipe, progress=False)


def test_each_rank_resumes_with_its_own_random_number_generators(tmp_path):
    """Only rank 0's generators were saved and every rank of a data-parallel run resumed with them: ranks whose dropout
    drew apart (other shapes; each GPU's own CUDA generator) resumed with other masks than an unbroken run's."""
    import random

    import numpy as np

    from adapt.checkpointing import load_checkpoint, rng_state, save_checkpoint

    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    rank0 = rng_state()
    torch.rand(100), random.random(), np.random.rand()  # rank 1 drew more
    rank1 = rng_state()
    following = torch.rand(3), random.random(), np.random.rand()
    path = save_checkpoint(tmp_path, 2, net, optimizer, scheduler, {}, keep_last=2, rank_rng=[rank0, rank1])
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    load_checkpoint(path, net, optimizer, scheduler, rank=1)
    assert torch.equal(torch.rand(3), following[0])
    assert (random.random(), np.random.rand()) == following[1:]
    load_checkpoint(path, net, optimizer, scheduler, rank=0)
    assert torch.equal(torch.get_rng_state(), rank0["torch"])
    load_checkpoint(path, net, optimizer, scheduler, rank=3)  # more ranks than were saved (--allow-changes): rank 0's
    assert torch.equal(torch.get_rng_state(), rank0["torch"])


def test_a_checkpoint_lacking_trainable_weights_is_refused_not_resumed_from_initial_values(tmp_path):
    """load_checkpoint refused weights the model lacks, but not trainable weights the checkpoint lacks: those went
    on from their initial values, with nothing said."""
    from adapt.checkpointing import CheckpointDamaged, load_checkpoint, save_checkpoint

    net, optimizer, scheduler = _tiny_training_state()
    net.bias.requires_grad_(False)  # saved: the weight alone
    path = save_checkpoint(tmp_path, 1, net, None, scheduler, {}, keep_last=1)
    fresh, _, fresh_scheduler = _tiny_training_state()
    with pytest.raises(CheckpointDamaged, match=r"lacks trainable weights of this model: \['bias'\]"):
        load_checkpoint(path, fresh, None, fresh_scheduler)
    fresh.bias.requires_grad_(False)
    load_checkpoint(path, fresh, None, fresh_scheduler)
    assert torch.equal(fresh.weight, net.weight)


def test_a_trainer_state_with_a_format_that_is_no_number_is_a_damaged_checkpoint(tmp_path):
    """`"checkpoint_format": null` (or a string) in trainer_state.json was a TypeError traceback from
    usable_checkpoint at the start of a resume, not the damaged checkpoint it is."""
    from adapt.checkpointing import CheckpointDamaged, save_checkpoint, usable_checkpoint

    net, optimizer, scheduler = _tiny_training_state()
    path = save_checkpoint(tmp_path, 1, net, optimizer, scheduler, {}, keep_last=1)
    state = json.loads((path / "trainer_state.json").read_text())
    (path / "trainer_state.json").write_text(json.dumps({**state, "checkpoint_format": None}))
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointDamaged, match="checkpoint_format is not a whole number"):
        usable_checkpoint(tmp_path)


@pytest.mark.parametrize("key", ["python_random", "numpy_random", "scheduler", "optimizer",
                                 "rank_random[1].numpy_random"])
def test_a_trainer_state_lacking_a_key_resuming_reads_is_a_damaged_checkpoint(tmp_path, key):
    """A trainer_state.json without `python_random` (or another key load_checkpoint reads) verified, then resuming
    died with a raw KeyError; it is a damaged checkpoint naming the key, passed over for an older whole one."""
    from adapt.checkpointing import CheckpointDamaged, load_checkpoint, rng_state, save_checkpoint, usable_checkpoint

    net, optimizer, scheduler = _tiny_training_state()
    older = save_checkpoint(tmp_path, 1, net, optimizer, scheduler, {}, keep_last=3)
    path = save_checkpoint(tmp_path, 2, net, optimizer, scheduler, {}, keep_last=3, rank_rng=[rng_state(), rng_state()])
    state = json.loads((path / "trainer_state.json").read_text())
    if key.startswith("rank_random"):
        del state["rank_random"][1]["numpy_random"]
    else:
        del state[key]
    (path / "trainer_state.json").write_text(json.dumps(state))
    (path / "manifest.json").unlink()
    state_file = re.escape(str(path / "trainer_state.json"))
    with pytest.raises(CheckpointDamaged, match=rf"{state_file}: lacks {re.escape(key)}"):
        load_checkpoint(path, net, optimizer, scheduler, rank=1)
    found, damaged = usable_checkpoint(tmp_path)
    assert found == older and damaged[0][0] == path and f"lacks {key}" in damaged[0][1]


def test_a_checkpoint_folder_renamed_from_another_step_is_refused(tmp_path):
    """A checkpoint-1 copied to checkpoint-5 resumed at step 1 but was pruned and preferred as step 5; the folder
    whose name and trainer_state.json's step differ is damaged, naming both."""
    from adapt.checkpointing import CheckpointDamaged, save_checkpoint, usable_checkpoint, verify_checkpoint

    net, optimizer, scheduler = _tiny_training_state()
    path = save_checkpoint(tmp_path, 1, net, optimizer, scheduler, {}, keep_last=3)
    assert verify_checkpoint(path) is None
    path.rename(tmp_path / "checkpoint-5")
    problem = verify_checkpoint(tmp_path / "checkpoint-5")
    assert problem is not None and "step 1" in problem and "checkpoint-5" in problem
    with pytest.raises(CheckpointDamaged, match=r"holds step 1 but its folder is named checkpoint-5"):
        usable_checkpoint(tmp_path)


def _tiny_training_state():
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    return net, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _kill_points_of_saving_step_1_again(out: Path, where: Path, monkeypatch, damage=None):
    """Save step 1 in `out`, change the weights and save step 1 again, copying `out` at each kill point of the second
    save; `damage(trainable.safetensors)` spoils the first save's weights first. Returns (old weights, new weights,
    the copies)."""
    from adapt.checkpointing import save_checkpoint

    net, optimizer, scheduler = _tiny_training_state()
    save_checkpoint(out, 1, net, optimizer, scheduler, {}, keep_last=3)
    if damage is not None:
        damage(out / "checkpoint-1" / "trainable.safetensors")
    old = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    new = net.weight.detach().clone()
    kills = _copies_at_each_kill_point(monkeypatch, out, where, (Path, "rename"))
    save_checkpoint(out, 1, net, optimizer, scheduler, {}, keep_last=3)
    monkeypatch.undo()
    return old, new, kills


def _copies_at_each_kill_point(monkeypatch, out: Path, where: Path, rename: tuple) -> list[Path]:
    """Copies of `out` (in `where`) as a kill -9 would leave it before each call of `rename` (an (owner, name)
    pair such as (os, "replace")) and each removal of an existing folder; `monkeypatch.undo()` ends it."""
    import shutil

    kills: list[Path] = []

    def before(real, only_existing: bool = False):
        def call(path, *args, **kwargs):
            if not only_existing or Path(path).exists():
                kills.append(where / f"killed-{len(kills)}")
                shutil.copytree(out, kills[-1])
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(*rename, before(getattr(*rename)))
    monkeypatch.setattr(shutil, "rmtree", before(shutil.rmtree, only_existing=True))
    return kills


def test_a_kill_while_replacing_a_checkpoint_leaves_a_whole_one(tmp_path, monkeypatch):
    """Saving step N over an existing checkpoint-N deleted the old folder before renaming the new one in: a kill -9
    between the two lost step N, and the next start deleted the finished `.partial` too. The old one is now moved
    aside until the new one has its name, and the next start finishes or undoes whatever a kill left at any point."""

    from adapt.checkpointing import load_checkpoint, settle_saves, usable_checkpoint

    out = tmp_path / "out"
    old, new, kills = _kill_points_of_saving_step_1_again(out, tmp_path, monkeypatch)
    assert kills
    for folder in kills:
        moved_aside = (folder / ".checkpoint-1.old").exists()
        settle_saves(folder)
        latest, damaged = usable_checkpoint(folder)
        assert latest == folder / "checkpoint-1" and not damaged, folder.name
        assert not list(folder.glob("*.partial")) and not list(folder.glob(".*.old")), folder.name
        fresh, fresh_optimizer, fresh_scheduler = _tiny_training_state()
        assert load_checkpoint(latest, fresh, fresh_optimizer, fresh_scheduler)["step"] == 1
        # the old one is moved aside only once the new one is whole: from then on the new one is kept
        assert torch.equal(fresh.weight.detach(), new if moved_aside else old), folder.name


def test_a_kill_while_replacing_a_damaged_checkpoint_keeps_the_whole_copy(tmp_path, monkeypatch):
    """A run killed after writing `checkpoint-N.partial/` whole, before moving a damaged `checkpoint-N` aside, left the
    only good copy of step N in `.partial`: the next start deleted it. It now takes the damaged one's place, which is
    set aside, not deleted."""
    from adapt.checkpointing import load_checkpoint, settle_saves, usable_checkpoint

    out = tmp_path / "out"

    def damage(weights: Path) -> None:  # shorter than its manifest says
        weights.write_bytes(weights.read_bytes()[:-4])

    _, new, kills = _kill_points_of_saving_step_1_again(out, tmp_path, monkeypatch, damage)
    assert any((f / "checkpoint-1.partial").exists() and (f / "checkpoint-1").exists() for f in kills)
    for folder in kills:
        settle_saves(folder)
        latest, damaged = usable_checkpoint(folder)
        assert latest == folder / "checkpoint-1" and not damaged, folder.name
        assert not list(folder.glob("*.partial")) and not list(folder.glob(".*.old")), folder.name
        fresh, fresh_optimizer, fresh_scheduler = _tiny_training_state()
        load_checkpoint(latest, fresh, fresh_optimizer, fresh_scheduler)
        assert torch.equal(fresh.weight.detach(), new), folder.name


def test_a_kill_while_replacing_final_leaves_a_whole_final(tmp_path, monkeypatch):
    """`final/` was moved aside before the new one took its name: a kill in between left only `.final.replaced`,
    which nothing restored. The next start now restores it, or removes it once a new `final/` is in place."""
    import os

    from adapt.checkpointing import settle_saves
    from adapt.train import staged_folder

    out = tmp_path / "out"
    (out / "final").mkdir(parents=True)
    (out / "final" / "weights").write_text("old")
    kills = _copies_at_each_kill_point(monkeypatch, out, tmp_path, (os, "replace"))
    with staged_folder(out / "final") as staging:
        staging.mkdir()
        (staging / "weights").write_text("new")
    monkeypatch.undo()
    assert any(not (folder / "final").exists() for folder in kills)  # the gap this guards was met
    for folder in kills:
        settle_saves(folder)
        assert (folder / "final" / "weights").read_text() in ("old", "new"), folder.name
        assert sorted(p.name for p in folder.iterdir()) == ["final"], folder.name


def test_a_whole_partial_checkpoint_without_its_final_name_is_resumed_from(tmp_path, data_root, capsys):
    """A run killed after its checkpoint was written whole, before it took its name, left `checkpoint-N.partial/`
    alone: the next start deleted it and started over. It is now renamed into place and resumed from."""
    recipe = load_recipe(make_run(tmp_path, data_root), ["training.max_steps=2"])
    out = Path(recipe.output.dir)
    Trainer(recipe, progress=False).run(stop_after=1)
    (out / "checkpoint-1").rename(out / "checkpoint-1.partial")
    capsys.readouterr()
    trainer = Trainer(recipe, progress=False)
    assert trainer.start_step == 1 and "kept as checkpoint-1" in capsys.readouterr().out
    trainer.run()
    assert [e["step"] for e in read_log(out)] == [1, 2] and not list(out.glob("*.partial"))


@pytest.mark.parametrize("fails", ["write", "rename"])
def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch, fails):
    """A full disk or a refused rename while `atomic_write_text` replaced a log left its hidden `.tmp` file behind
    (one per failed attempt, in the run folder); it is removed, the error goes on up and the old file is as it was."""
    import adapt.checkpointing as checkpointing

    target = tmp_path / "train_log.jsonl"
    target.write_text("old\n")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointing.os, "fsync" if fails == "write" else "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        checkpointing.atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_log.jsonl"]
    assert target.read_text() == "old\n"


@pytest.mark.parametrize("key", ["step", "optimizer", "rank_random"])
def test_extra_state_may_not_replace_what_the_checkpoint_writes(tmp_path, key):
    """`extra` was merged last into trainer_state.json: {"step": 7} made checkpoint-2 hold step 7 (then passed over
    as damaged), an "optimizer" key broke resuming. Refused naming the key, before anything is written."""
    from adapt.checkpointing import load_checkpoint, save_checkpoint

    net, optimizer, scheduler = _tiny_training_state()
    with pytest.raises(ValueError, match=rf"extra holds '{key}', which the checkpoint writes itself"):
        save_checkpoint(tmp_path, 2, net, optimizer, scheduler, {"recipe": "r", key: 7}, keep_last=2)
    assert list(tmp_path.iterdir()) == []
    path = save_checkpoint(tmp_path, 2, net, optimizer, scheduler, {"recipe": "r"}, keep_last=2)
    state = load_checkpoint(path, net, optimizer, scheduler)
    assert state["step"] == 2 and state["recipe"] == "r"


def test_a_full_disk_under_tensorboard_is_one_line_naming_the_run_folder(tmp_path, data_root, monkeypatch, capsys):
    """TensorBoard's writer thread met the full disk first: its traceback was printed beside the one-line error,
    which named no folder."""
    import errno

    from tensorboard.summary.writer.record_writer import RecordWriter

    from adapt.cli import main

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full)
    printed = []  # what Python's threading.excepthook would print as a traceback
    monkeypatch.setattr(threading, "excepthook", printed.append)
    path = make_run(tmp_path, data_root)
    assert main(["train", str(path), "training.max_steps=1", "logging.tensorboard=true", "--no-progress"]) == 1
    assert printed == []
    err = capsys.readouterr().err
    assert err.strip() == (f"adapt train: error: {tmp_path / 'out'}: disk full (No space left on "
                           "device); free some space or write elsewhere")
