"""The recipe a checkpoint records is read as a recipe is on resume: bounded, no alias bomb, a mapping or an error."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from adapt.checkpointing import RECIPE
from adapt.train import Trainer, TrainingError


def _trainer(tmp_path):
    return SimpleNamespace(dist=SimpleNamespace(main=True), out_dir=tmp_path / "run",
                           recipe=SimpleNamespace(to_yaml=lambda: "name: x\n"),
                           _follow_move=lambda before, checkpoint: before)


def _check(tmp_path, text: str):
    checkpoint = tmp_path / "run" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / RECIPE).write_text(text, encoding="utf-8")
    Trainer._check_recipe_edits(_trainer(tmp_path), checkpoint)


def test_recorded_recipe_not_a_mapping_is_one_error(tmp_path):
    with pytest.raises(TrainingError, match=r"recipe\.yaml"):
        _check(tmp_path, "- just\n- a list\n")


def test_recorded_recipe_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 7)}]" for i in range(1, 7)]
    with pytest.raises(TrainingError, match="expand"):
        _check(tmp_path, "\n".join(lines) + "\n")


def test_recorded_recipe_too_large_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="larger than"):
        _check(tmp_path, "# pad\n" * (2 << 20))


@pytest.mark.parametrize("recorded, now, path, expected", [
    ("/a/proj/runs/x", "/b/proj2/runs/x", "/a/proj/data/t.jsonl", "/b/proj2/data/t.jsonl"),
    ("/a/proj/runs/x", "/runs/x", "/a/proj/data/t.jsonl", "/data/t.jsonl"),  # into the root
    ("/runs/x", "/mnt/runs/x", "/data/t.jsonl", "/data/t.jsonl"),  # out of the root: nothing told moved
])
def test_paths_of_a_moved_run_follow_it_to_and_from_the_root(recorded, now, path, expected):
    """A run moved from /runs to /mnt/runs took / for the folder moved: /data/t.jsonl was compared as
    /mntdata/t.jsonl, and one moved into the root as //data/t.jsonl, each a recipe edit that refused the resume."""
    trainer = SimpleNamespace(out_dir=Path(now), dist=SimpleNamespace(main=False))
    before = {"output": {"dir": recorded}, "data": {"sources": [{"path": path}]}}
    assert Trainer._follow_move(trainer, before, Path("checkpoint-1"))["data"]["sources"][0]["path"] == expected
