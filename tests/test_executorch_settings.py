"""`write_executorch`'s sizes, refused by name before ExecuTorch is needed (these tests run without it installed)."""

from __future__ import annotations

import pytest

import model
from deploy.executorch import ExecuTorchError
from deploy.executorch.export import write_executorch


@pytest.fixture(scope="module")
def tiny():
    return model.load("pocket-tiny-scratch")


@pytest.mark.parametrize(("options", "said"), [
    ({"max_prefill_len": -5}, r"max_prefill_len -5: must be at least 1 \(positions per decoder call\)"),
    ({"max_prefill_len": 0}, r"max_prefill_len 0: must be at least 1"),
    ({"max_seq_len": 0}, r"max_seq_len 0: must be 39 \.\. the model's context"),
    ({"max_seq_len": 99999}, r"max_seq_len 99999: must be 39 \.\. the model's context \(4096\)"),
    # a cache of 8 positions cannot hold one image's 16 tokens: the program could answer no image question
    ({"max_seq_len": 8}, r"max_seq_len 8: must be 39 \.\. the model's context \(4096\); 39: a prompt of one image at "
                         r"one tile \(16 image tokens\) with a one-character question and no system message, and one "
                         r"answer token"),
    ({"max_seq_len": 38}, r"max_seq_len 38: must be 39 \.\."),
    ({"max_seq_len": 64.5}, r"max_seq_len must be a whole number, got 64.5"),
    ({"max_prefill_len": True}, r"max_prefill_len must be a whole number, got True"),
])
def test_sizes_that_cannot_work_are_refused_naming_the_setting(tiny, tmp_path, monkeypatch, options, said):
    """A negative max_prefill_len was written into the program and its runtime's chunking fed the decoder nothing
    (AttributeError on the first prompt); 0 became the default silently. Refused before executorch is imported."""
    import deploy.executorch.export as et

    def must_not_run():
        raise AssertionError("executorch was required before the sizes were checked")

    monkeypatch.setattr(et, "require_executorch", must_not_run)
    vlm, processor = tiny
    with pytest.raises(ExecuTorchError, match=said):
        write_executorch(vlm, processor, tmp_path, **options)


def test_the_least_max_seq_len_that_holds_one_image_passes_the_size_checks(tiny, tmp_path, monkeypatch):
    import deploy.executorch.export as et

    def required():
        raise RuntimeError("sizes passed")

    monkeypatch.setattr(et, "require_executorch", required)
    vlm, processor = tiny
    with pytest.raises(RuntimeError, match="sizes passed"):
        write_executorch(vlm, processor, tmp_path, max_seq_len=et.least_seq_len(processor))


@pytest.mark.parametrize(("tiling", "most"), [
    ({"mode": "pad"}, 1), ({"mode": "crop"}, 1), ({"mode": "resize"}, 1),
    ({}, 13), ({"thumbnail": False}, 12), ({"max_tiles": 1}, 1), ({"max_tiles": 6}, 7),
])
def test_the_vision_program_is_sized_for_the_tiles_the_tiling_gives(tiny, tmp_path, monkeypatch, tiling, most):
    """A pad / crop / resize tiling (one tile an image) with the default max_tiles 12 and thumbnail was sized for 13
    tiles a call; the vision program and get_max_tiles take the most tiles the mode gives (two at least: an example
    of one would fix the tile axis)."""
    import copy

    import deploy.executorch.export as et
    from model.tiling import TilingConfig, count_tiles, most_tiles_per_image

    config = TilingConfig(tile_size=tiny[1].tiling.tile_size, **tiling)
    sizes = [(w, h) for w in (1, 300, 448, 2000, 9000) for h in (1, 300, 448, 2000, 9000)]
    assert most_tiles_per_image(config) == most == max(count_tiles(w, h, config) for w, h in sizes)
    seen = {}

    def capture(module, args, dynamic_shapes, method):
        seen[method] = dynamic_shapes[0][0].max
        raise ExecuTorchError("stop after the vision program's sizes (test)")

    monkeypatch.setattr(et, "require_executorch", lambda: None)
    monkeypatch.setattr(et, "_capture", capture)
    vlm, processor = tiny
    processor = copy.copy(processor)
    processor.tiling = config
    with pytest.raises(ExecuTorchError, match="stop after"):
        write_executorch(vlm, processor, tmp_path, progress=False)
    assert seen == {et.VISION_METHOD: max(2, most)}
