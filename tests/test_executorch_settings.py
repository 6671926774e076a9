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
    ({"max_seq_len": 0}, r"max_seq_len 0: must be 2 \.\. the model's context"),
    ({"max_seq_len": 99999}, r"max_seq_len 99999: must be 2 \.\. the model's context \(4096\)"),
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
