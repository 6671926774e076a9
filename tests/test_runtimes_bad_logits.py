"""NaN or +inf logits from an export runtime (an int8 or float16 export overflowing): greedy picked a garbage token
(argmax of NaN is its index) and sampling raised numpy's raw 'probabilities contain NaN'. Both now stop with an
error that says what the logits held and at which step."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.export_runtime import ExportedVLM
from deploy.runtimes import BadLogitsError, pick_token
from model.errors import PocketAdaptError


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("logits, what", [
    ([0.5, np.nan, 3.0], "1 NaN of 3"),
    ([0.5, np.inf, 3.0], r"1 \+inf of 3"),
    ([-np.inf, -np.inf], "all 2 are -inf"),
])
def test_unusable_logits_are_refused_greedy_and_sampled(logits, what, temperature):
    with pytest.raises(BadLogitsError, match=rf"unusable logits \({what}\).*float16"):
        pick_token(np.array(logits), temperature, np.random.default_rng(0))


def test_minus_inf_logits_beside_finite_ones_are_fine():
    logits = np.array([-np.inf, 1.0, -np.inf, 0.5])
    assert pick_token(logits, 0.0, None) == 1
    assert {pick_token(logits, 1.0, np.random.default_rng(k)) for k in range(20)} <= {1, 3}


class _Overflowing(ExportedVLM):
    """A runtime whose prompt pass is fine and whose second decoded token's logits are NaN."""

    image_token_id = 3

    def __init__(self, bad_at: int):
        self.bad_at, self.calls = bad_at, 0

    def embed(self, ids) -> np.ndarray:
        return np.zeros((1, len(ids), 4), dtype=np.float32)

    def _logits(self) -> np.ndarray:
        self.calls += 1
        return np.array([0.0, np.nan, 1.0, 0.0]) if self.calls == self.bad_at else np.array([0.0, 0.0, 1.0, 0.0])

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        return self._logits()

    def decode(self, embeds: np.ndarray, position: int) -> np.ndarray:
        return self._logits()


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("bad_at, step", [(1, "the prompt pass"), (3, "decoding token 3")])
def test_the_generation_loop_names_the_step(bad_at, step, temperature):
    with pytest.raises(PocketAdaptError, match=rf"^{step}: the model produced unusable logits \(1 NaN of 4\)"):
        _Overflowing(bad_at).generate([1, 1], max_new_tokens=5, temperature=temperature)


def test_one_error_type_serves_pytorch_and_the_export_runtimes():
    """PyTorch generation's NaN check (`NonFiniteScoresError`) and the export runtimes' (`BadLogitsError`) were two
    unrelated types: a caller had to know both. The runtimes' is now the PyTorch one's subclass, each with its hint."""
    from model.errors import NonFiniteScoresError
    from model.generation import NonFiniteScoresError as from_generation

    assert from_generation is NonFiniteScoresError
    with pytest.raises(NonFiniteScoresError, match="unusable logits .*float16"):
        pick_token(np.array([np.nan, 1.0]), 0.0, None)
    assert issubclass(BadLogitsError, ValueError)  # as before, for callers catching ValueError
