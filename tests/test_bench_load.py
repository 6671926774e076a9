"""bench/bench_load.py: its "weights identical" column compares a digest of every element of every loaded tensor."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types

import torch

from bench.bench_load import PROBE


class Tiny(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(weight, requires_grad=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.w.dtype


def probe_digest(weight: torch.Tensor, monkeypatch) -> str:
    """The digest PROBE prints for a model whose only weight is `weight` (model.load stubbed)."""
    fake = types.ModuleType("model")
    fake.load = lambda folder: (Tiny(weight), None)
    monkeypatch.setitem(sys.modules, "model", fake)
    monkeypatch.setattr(sys, "argv", ["probe", "folder"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(PROBE, {"__name__": "__main__"})
    line = next(line for line in out.getvalue().splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])["digest"]


def test_probe_digest_covers_every_element(monkeypatch):
    a = torch.zeros(4096, dtype=torch.bfloat16)
    b = a.clone()
    b[2000:] = 7.0  # past the first 1024 values
    c = a.clone()
    c[-1] = 1.0
    digests = [probe_digest(w, monkeypatch) for w in (a, a.clone(), b, c)]
    assert digests[0] == digests[1]
    assert len({digests[0], digests[2], digests[3]}) == 3


def test_a_failed_checkpoint_build_shows_the_childs_error(tmp_path):
    """`_build` ran its child with check=True and captured output: a failure was a CalledProcessError traceback
    with the child's stderr nowhere to be seen."""
    import pytest

    from bench.bench_load import _build

    with pytest.raises(SystemExit) as caught:
        _build("no-such-preset", tmp_path / "ckpt")
    message = str(caught.value)
    assert "building the no-such-preset checkpoint" in message and "no-such-preset" in message.split("failed:")[1]
