"""How a training run fails as a user meets it: a full disk while saving, then the resume."""

from __future__ import annotations

import json
import os
import time

import pytest
from safetensors import SafetensorError

import adapt.checkpointing
from adapt.checkpointing import LOCK_NAME
from adapt.cli import main
from tests.test_train import data_dir, read_log, write_recipe  # noqa: F401  (the module fixture)

FULL = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors' own wording


def _full_disk(*args, **kwargs):
    raise SafetensorError(FULL)


@pytest.mark.parametrize("where", ["checkpoint", "final"])
def test_a_full_disk_while_saving_is_one_line_and_the_run_resumes(tmp_path, data_dir, capsys, monkeypatch, where):  # noqa: F811,E501
    """safetensors reports a full disk as a SafetensorError: `adapt train` ended in a traceback and left the
    checkpoint's .partial folder (full model size) on the full disk. Now it says "disk full" naming the folder,
    removes what it half wrote, and the same command resumes from the last whole checkpoint."""
    path = write_recipe(tmp_path, data_dir, steps=2, save_every=1)
    out = tmp_path / "out"
    if where == "checkpoint":  # the second checkpoint's write fails
        real = adapt.checkpointing.save_file
        calls = []

        def writer(tensors, filename, *args, **kwargs):
            calls.append(filename)
            if "checkpoint-2" in filename:
                _full_disk()
            return real(tensors, filename, *args, **kwargs)

        monkeypatch.setattr(adapt.checkpointing, "save_file", writer)
    else:
        import transformers.modeling_utils

        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", _full_disk)  # model.save's writer
    assert main(["train", str(path), "--no-progress", "eval.every=1000"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "disk full" in err and "free some space" in err, err
    assert str(out / ("checkpoint-2.partial" if where == "checkpoint" else ".final.staging")) in err
    assert not list(out.glob("*.partial")) and not (out / ".final.staging").exists() and not (out / "final").exists()
    assert (out / ("checkpoint-1" if where == "checkpoint" else "checkpoint-2")).is_dir()
    monkeypatch.undo()
    assert main(["train", str(path), "--no-progress", "eval.every=1000"]) == 0
    assert (out / "final" / "model.safetensors").is_file()
    assert [e["step"] for e in read_log(out)] == [1, 2]


def test_a_full_disk_while_writing_a_checkpoints_json_names_the_folder(tmp_path, data_dir, capsys, monkeypatch):  # noqa: F811
    """A full disk met by trainer_state.json's plain write (an OSError carrying no file name): one line naming the
    checkpoint folder being written, not only the run folder; the last whole checkpoint is kept and resumed from."""
    import errno
    from pathlib import Path

    path = write_recipe(tmp_path, data_dir, steps=3, save_every=1)
    out = tmp_path / "out"
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.parent.name == "checkpoint-2.partial" and self.name == "trainer_state.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main(["train", str(path), "--no-progress", "eval.every=1000"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "disk full" in err and str(out / "checkpoint-2.partial") in err, err
    assert not list(out.glob("*.partial")) and (out / "checkpoint-1").is_dir()
    monkeypatch.undo()
    assert main(["train", str(path), "--no-progress", "eval.every=1000"]) == 0
    assert [e["step"] for e in read_log(out)] == [1, 2, 3]


def _tensorboard_losses(folder) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("loss")]


def test_a_resume_after_kill_shows_each_step_once_in_tensorboard(tmp_path, data_dir):  # noqa: F811
    """A run killed after its last checkpoint had logged further steps to TensorBoard; the resumed run logged them
    again, so TensorBoard drew two curves over those steps (train_log.jsonl was cut back, the events were not)."""
    from torch.utils.tensorboard import SummaryWriter

    from adapt.recipe import load_recipe
    from adapt.train import Trainer

    path = write_recipe(tmp_path, data_dir, steps=3, save_every=2)
    Trainer(load_recipe(path, ["eval.every=1000"]), progress=False).run(stop_after=2)
    out = tmp_path / "out"
    killed = SummaryWriter(str(out / "tensorboard"))  # what the killed run had logged past checkpoint-2
    killed.add_scalar("loss", 999.0, 3)
    killed.close()
    Trainer(load_recipe(path, ["eval.every=1000"]), progress=False).run()
    logged = _tensorboard_losses(out / "tensorboard")
    assert [step for step, _ in logged] == [1, 2, 3] and 999.0 not in [v for _, v in logged]
    assert [e["step"] for e in read_log(out)] == [1, 2, 3]


def test_a_run_starting_over_after_a_kill_shows_each_step_once_in_tensorboard(tmp_path, data_dir):  # noqa: F811
    """A run killed before its first checkpoint had logged steps to TensorBoard; the run starting over (which drops
    train_log.jsonl) logged them again beside the killed run's, so TensorBoard drew two curves over those steps."""
    from torch.utils.tensorboard import SummaryWriter

    from adapt.recipe import load_recipe
    from adapt.train import Trainer

    path = write_recipe(tmp_path, data_dir, steps=2, save_every=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("")  # a run killed (kill -9) before its first checkpoint: its lock and its events
    killed = SummaryWriter(str(out / "tensorboard"))
    killed.add_scalar("loss", 999.0, 1)
    killed.close()
    time.sleep(1.1)  # event files are read in name order, which starts with the second they were opened in
    Trainer(load_recipe(path, ["eval.every=1000"]), progress=False).run()
    logged = _tensorboard_losses(out / "tensorboard")
    assert [step for step, _ in logged] == [1, 2] and 999.0 not in [v for _, v in logged]


def test_a_resume_drops_the_evaluations_a_killed_run_logged_past_its_checkpoint(tmp_path, data_dir):  # noqa: F811
    """eval_log.jsonl was never cut back on resume (train_log.jsonl was): a killed run's evaluations past the
    checkpoint stayed beside the resumed run's own, and loss.png drew both; a run starting over kept them all."""
    from adapt.recipe import load_recipe
    from adapt.train import Trainer

    path = write_recipe(tmp_path, data_dir, steps=3, save_every=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("")  # a run killed (kill -9) before its first checkpoint: its lock and evaluations
    (out / "eval_log.jsonl").write_text('{"step": 1, "eval/landcover": 0.5}\n')
    Trainer(load_recipe(path, ["eval.every=1000"]), progress=False).run(stop_after=2)
    started = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in started] == [2]  # it started over: only its own evaluation of the stop point
    (out / "eval_log.jsonl").write_text('{"step": 2, "eval/landcover": 0.5}\n{"step": 3, "eval/landcover": 0.9}\n')
    Trainer(load_recipe(path, ["eval.every=1000"]), progress=False).run()
    entries = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    # the killed run's step 3 dropped; the last step is evaluated anew (eval.every 1000 does not divide 3)
    assert [e["step"] for e in entries] == [2, 3] and "eval/skipped" not in entries[0] and "eval/skipped" in entries[1]


def test_a_full_disk_while_exporting_is_one_line(tmp_path, capsys, monkeypatch):
    """Outside training too (`adapt export`, `adapt convert`), safetensors' full-disk SafetensorError ended in a
    traceback; the CLI reads the OSError it carries."""
    import transformers.modeling_utils

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", _full_disk)
    assert main(["export", "--model", "pocket-tiny", "-f", "hf", "--out", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "disk full (No space left on device)" in err, err
