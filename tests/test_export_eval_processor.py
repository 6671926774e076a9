"""`adapt eval --runtime onnx|executorch` refuses an export folder made with another processor than the evaluated
model's: only the image token id was compared, so a folder of another model with the same image token (another
tiling, another tokenizer) was scored as this model."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from deploy.export_eval import ExportEvalModel
from model.errors import PocketAdaptError


@pytest.fixture(scope="module")
def processor():
    from model import load

    return load("pocket-tiny")[1]


class Fake(ExportEvalModel):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_the_evaluated_processors_own_export_is_taken(processor):
    model = Fake(processor)
    model.check_processor("exp", copy.deepcopy(processor))
    assert not model.closed


def test_another_tiling_is_refused_naming_it_and_the_runtime_closed(processor):
    other = copy.copy(processor)
    other.tiling = dataclasses.replace(processor.tiling, max_tiles=processor.tiling.max_tiles + 1)
    model = Fake(processor)
    with pytest.raises(PocketAdaptError, match=r"exp: not an export of the evaluated .*tiling max_tiles"):
        model.check_processor("exp", other)
    assert model.closed


def test_another_tokenizer_with_the_same_image_token_is_refused(processor):
    other = copy.copy(processor)
    other.tokenizer = copy.deepcopy(processor.tokenizer)
    other.tokenizer.add_tokens(["<another_models_token>"])
    assert other.image_token_id == processor.image_token_id
    with pytest.raises(PocketAdaptError, match="another tokenizer"):
        Fake(processor).check_processor("exp", other)


def test_another_image_token_or_count_is_refused(processor):
    other = copy.copy(processor)
    other.image_token_id, other.image_seq_length = processor.image_token_id + 1, processor.image_seq_length + 1
    with pytest.raises(PocketAdaptError, match=r"image token id .*image tokens per tile"):
        Fake(processor).check_processor("exp", other)
