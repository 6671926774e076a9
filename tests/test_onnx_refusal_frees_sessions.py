"""`OnnxVLM` refusing a folder after its sessions were created (a decoder without the exported KV cache, an edited
image_seq_length) left the three sessions, weights and all, alive for as long as the caller held the error's
traceback (which holds the half-built runtime). They are released before the error propagates."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.deps import require


class FakeSession:
    def get_inputs(self) -> list:
        return []  # no past_key_values.N: not the decoder the export writes


def test_a_refusal_after_the_sessions_are_made_releases_them(monkeypatch, tmp_path):
    require("onnx")
    import deploy.onnx.runtime as runtime

    made: list[weakref.ref] = []

    def session(path, threads=None):
        s = FakeSession()
        made.append(weakref.ref(s))
        return s

    export = SimpleNamespace(folder=Path(tmp_path), processor=SimpleNamespace(), genai={})
    monkeypatch.setattr(runtime.OnnxExport, "open", classmethod(lambda cls, folder: export))
    monkeypatch.setattr(runtime, "session", session)
    with pytest.raises(runtime.OnnxRuntimeError, match="not the KV cache") as info:
        runtime.OnnxVLM(tmp_path)
    gc.collect()
    assert info.value is not None and len(made) == 3
    assert [r() for r in made] == [None, None, None]  # released though the traceback is still held
