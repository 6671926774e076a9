"""The recipe a checkpoint records is read as a recipe is on resume: bounded, no alias bomb, a mapping or an error."""
from __future__ import annotations

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
