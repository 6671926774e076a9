"""Classification: split folders given as --src are refused whatever their case or spelling (``Training/``,
``Validation/``, ``trainval/``, ``val2017/``: before, only the lower-case short names were, and the rest converted as
classes 'training', 'validation'), and the message says what to pass: each split on its own, own --out,
test_fraction=0."""

from __future__ import annotations

import pytest
from PIL import Image

from domains.base import DomainError
from domains.remote_sensing.convert import convert_classification


def _layout(src, splits):
    for split in splits:
        for cls in ("forest", "urban"):
            (src / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(src / split / cls / "a.png")


@pytest.mark.parametrize("splits", [("Training", "Validation", "Test"), ("TRAIN", "VAL"), ("trainval", "test"),
                                    ("train2017", "val2017"), ("train_set", "eval_set"), ("dev", "testing")])
def test_split_folders_of_any_spelling_are_refused(tmp_path, splits):
    _layout(tmp_path / "raw", splits)
    with pytest.raises(DomainError, match="holds split folders") as err:
        convert_classification(tmp_path / "raw", tmp_path / "out", progress=False)
    assert f"({', '.join(sorted(splits))}), not class folders" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_the_message_names_the_training_split_and_what_to_pass(tmp_path):
    _layout(tmp_path / "raw", ("Test", "Training", "Validation"))
    with pytest.raises(DomainError) as err:
        convert_classification(tmp_path / "raw", tmp_path / "out", progress=False)
    assert str(err.value).endswith(f"into its own --out and with --option test_fraction=0 (the split is given), e.g. "
                                   f"--src {tmp_path / 'raw' / 'Training'} --out <out>/training --option test_fraction=0")


def test_class_names_that_only_start_like_a_split_are_classes(tmp_path):
    for cls in ("testbed", "training_ground", "valley", "developed"):
        (tmp_path / "raw" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "raw" / cls / "a.png")
    report = convert_classification(tmp_path / "raw", tmp_path / "out", test_fraction=0, progress=False)
    assert report.written == 4
