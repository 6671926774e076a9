"""`adapt eval --runtime llamacpp` splits a prompt into text and image segments (`LlamaCppEvalModel._segments`):
image-context tokens that do not match the tiles said only "image tokens and tiles disagree", with no counts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from deploy.llamacpp import LlamaCppError
from deploy.llamacpp.eval import LlamaCppEvalModel

IMG = 9


def _model() -> LlamaCppEvalModel:
    eval_model = object.__new__(LlamaCppEvalModel)  # no llama.cpp process: `_segments` only names tile files
    eval_model.__dict__.update(processor=SimpleNamespace(image_seq_length=4, image_token_id=IMG),
                               llama=SimpleNamespace(tiles_file=lambda tiles: {"tiles": len(tiles)}))
    return eval_model


def test_matching_image_tokens_become_one_segment_per_run():
    tiles = [np.zeros((2, 2, 3), np.uint8)] * 2
    assert _model()._segments([1, 2] + [IMG] * 8 + [3], tiles) == [{"ids": [1, 2]}, {"tiles": 2}, {"ids": [3]}]


@pytest.mark.parametrize("run, tiles, said", [
    (6, 2, "6 image-context tokens at position 1 (4 per tile, so 1.5 tiles), but 2 of the sample's 2 tiles"),
    (12, 2, "12 image-context tokens at position 1 (4 per tile, so 3 tiles), but 2 of the sample's 2 tiles"),
])
def test_image_tokens_that_do_not_fit_the_tiles_are_counted(run, tiles, said):
    with pytest.raises(LlamaCppError, match="disagree") as err:
        _model()._segments([1] + [IMG] * run + [3], [np.zeros((2, 2, 3), np.uint8)] * tiles)
    assert said in str(err.value) and f"a prompt of {run + 2} tokens" in str(err.value)
