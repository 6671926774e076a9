"""adapt chat --runtime R: an answer the context ended names what filled up. For ExecuTorch that is the cache the
export was written with (--max-seq-len), not the model's own context, which the note used to name."""

from __future__ import annotations

import pytest

from adapt.cli import main
from deploy.runtimes import RUNTIMES, Answer
from tests.export_fakes import fake_export_vlm, timings

_FakeVLM = fake_export_vlm(Answer("a b c", [1, 2, 3], "prompt", False, timings(3), context_full=True))


@pytest.mark.parametrize("runtime, expected", [("executorch", "the exported cache (adapt export --max-seq-len) is full"),
                                               ("onnx", "the model's context is full")])
def test_the_cut_note_names_what_filled(tmp_path, capsys, monkeypatch, runtime, expected):
    monkeypatch.setattr(type(RUNTIMES[runtime]), "load", lambda self, which: _FakeVLM)
    assert main(["chat", "--runtime", runtime, "--model", str(tmp_path), "hello"]) == 0
    assert f"[cut at 3 tokens: {expected}]" in capsys.readouterr().err
