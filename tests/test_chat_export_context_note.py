"""adapt chat --runtime R: an answer the context ended names what filled up. For ExecuTorch that is the cache the
export was written with (--max-seq-len), not the model's own context, which the note used to name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adapt.cli import main
from deploy.runtimes import RUNTIMES, Answer


class _FakeVLM:
    export = SimpleNamespace(tiling=None)

    def __init__(self, folder):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def chat(self, conversation, images=(), **options):
        timings = {"prompt_tokens": 5, "image_encode_ms": 0.0, "prompt_ms": 1.0, "decode_tokens": 3, "decode_ms": 1.0}
        return Answer("a b c", [1, 2, 3], "prompt", False, timings, context_full=True)


@pytest.mark.parametrize("runtime, expected", [("executorch", "the exported cache (adapt export --max-seq-len) is full"),
                                               ("onnx", "the model's context is full")])
def test_the_cut_note_names_what_filled(tmp_path, capsys, monkeypatch, runtime, expected):
    monkeypatch.setattr(type(RUNTIMES[runtime]), "load", lambda self, which: _FakeVLM)
    assert main(["chat", "--runtime", runtime, "--model", str(tmp_path), "hello"]) == 0
    assert f"[cut at 3 tokens: {expected}]" in capsys.readouterr().err
