"""The check every exported runtime's `adapt eval` path shares (ONNX, ExecuTorch, llama.cpp): `predict` with the
runtime in place of the PyTorch model gives PyTorch's answers, sample by sample."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from adapt.data.samples import Record
from adapt.evaluate import predict
from model.resources import assets_dir


def eval_records(folder: Path) -> list[Record]:
    """Four samples that exercise batching: a multi-tile image, a capped tile count, two images in one sample and
    a text-only sample with history (images written under `folder`)."""
    red, wide = folder / "red.png", folder / "wide.png"
    Image.new("RGB", (120, 90), (200, 30, 40)).save(red)
    Image.open(assets_dir() / "example.png").convert("RGB").resize((500, 160)).save(wide)

    def rec(line, images, *values, **fields):
        turns = [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in enumerate(values)]
        return Record("s", line, turns, [str(p) for p in images], [(0, 0)] * len(images), **fields)

    return [rec(1, [wide], "<image>\nWhat shapes are in the picture?", "x"),
            rec(2, [red], "<image>\nWhat colour is it?", "red", max_tiles=2),
            rec(3, [red, wide], "How many pictures?", "2"),
            rec(4, [], "Hello", "Hi.", "Name a colour.", "red")]


def assert_predicts_as_pytorch(runtime, vlm, processor, folder: Path) -> None:
    """Same batches (3 samples, left padded), token ids and tiles: `runtime`'s answers equal `vlm`'s, and the
    runtime timed every sample. Closes `runtime`."""
    records = eval_records(folder)
    expected = predict(vlm, processor, records, max_new_tokens=24, batch_size=3, progress=False)
    try:
        got = predict(runtime, processor, records, max_new_tokens=24, batch_size=3, progress=False)
    finally:
        runtime.close()
    assert [p.prediction for p in got] == [p.prediction for p in expected]
    assert len(runtime.timings) == len(records)
