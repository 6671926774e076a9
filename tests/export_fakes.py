"""A stand-in for an export runtime's chat class (OnnxVLM's interface), for `adapt chat --runtime R` tests."""

from __future__ import annotations

from types import SimpleNamespace

from deploy.runtimes import Answer
from model.tiling import TilingConfig


def timings(decoded: int) -> dict:
    """An answer's timings with `decoded` tokens generated."""
    return {"prompt_tokens": 5, "image_encode_ms": 0.0, "prompt_ms": 1.0, "decode_tokens": decoded, "decode_ms": 1.0}


def fake_export_vlm(answer: Answer, tiling: TilingConfig | None = None, asked: list[dict] | None = None) -> type:
    """An export runtime class written with `tiling` that answers `answer` to every chat; each chat's options are
    appended to `asked` when given."""

    class FakeVLM:
        export = SimpleNamespace(tiling=tiling)

        def __init__(self, folder):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def chat(self, conversation, images=(), **options):
            if asked is not None:
                asked.append(options)
            return answer

    return FakeVLM
