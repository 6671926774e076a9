"""The generation loop the ONNX and ExecuTorch runtimes share (`deploy.export_runtime.ExportedVLM`), on a fake
runtime: a four-token vocabulary whose logits always pick token 2."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.export_runtime import ExportedVLM
from model.errors import PocketAdaptError


class _Fake(ExportedVLM):
    image_token_id = 3

    def embed(self, ids) -> np.ndarray:
        return np.zeros((1, len(ids), 4), dtype=np.float32)

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        return np.array([0.0, 0.0, 1.0, 0.0])

    def decode(self, embeds: np.ndarray, position: int) -> np.ndarray:
        return np.array([0.0, 0.0, 1.0, 0.0])


def test_max_new_tokens_bounds_the_answer():
    assert _Fake().generate([1, 1], max_new_tokens=3)[0] == [2, 2, 2]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_new_tokens_below_one_is_refused(bad):
    """0 new tokens gave one token all the same (the count was checked only after the first was kept)."""
    with pytest.raises(PocketAdaptError, match=rf"max_new_tokens must be a whole number of at least 1, got {bad!r}"):
        _Fake().generate([1, 1], max_new_tokens=bad)


def test_an_empty_prompt_is_refused():
    with pytest.raises(PocketAdaptError, match=r"the prompt is empty \(no token ids\)"):
        _Fake().generate([], max_new_tokens=2)
