"""Training memory against sequence length, test-sized (pocket-tiny-scratch, text-only rows, CPU).

The peak is that of one training forward + backward (full fine-tuning: every parameter takes a gradient), counted
exactly by torch's `MemTracker` (a dispatch mode that sums the bytes of every live tensor storage: parameters,
gradients, activations, temporaries) rather than by RSS, which the allocator and other threads blur. What grows with
the sequence length L is the peak minus the memory held before the forward (the weights).

Expectations, and the bounds checked:

- linear in L. The LLM attends through SDPA (no L x L score matrix kept); everything saved for backward (each
  layer's inputs, its q/k/v, MLP intermediates, the logits and the loss' softmax) is L x (a width), so the extra
  memory is a + b L. With L = 256, 512, 1024 the increments m(1024) - m(512) and m(512) - m(256) are then in the
  ratio 2; the test accepts 1.6-2.5 (a quadratic term, e.g. an eager attention matrix, pushes it towards 4).
- gradient checkpointing lowers the peak. Without it every decoder layer keeps its intermediates (about
  8 hidden + 4 MLP widths per token per layer) until the backward; with it only each layer's input is kept and one
  layer's intermediates are rebuilt at a time. The per-token slope b with checkpointing must be at most 0.8 of
  the slope without, and the peak at the longest L lower.
"""

from __future__ import annotations

import pytest
import torch

LENGTHS = (256, 512, 1024)


@pytest.fixture(scope="module")
def tiny_vlm():
    import model as model_core

    vlm, _ = model_core.load("pocket-tiny-scratch")
    return vlm.float()


def peak_extra_bytes(vlm, length: int, checkpointing: bool) -> int:
    """Peak tensor bytes over one forward + backward of one `length`-token row, minus those held before it."""
    from torch.distributed._tools.mem_tracker import MemTracker

    if checkpointing:
        vlm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        vlm.activation_checkpointing_disable()
    vlm.train()
    vlm.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(length)
    vocab = vlm.config.text_config.vocab_size
    ids = torch.randint(10, vocab, (1, length), generator=gen)
    mask = torch.ones_like(ids)
    tracker = MemTracker()
    tracker.track_external(vlm)
    with tracker:
        before = tracker.get_tracker_snapshot()[torch.device("cpu")]["Total"]
        logits = vlm(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
        loss.backward()
        del logits, loss
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    vlm.zero_grad(set_to_none=True)
    vlm.activation_checkpointing_disable()
    return peak - before


def test_memory_grows_linearly_and_checkpointing_lowers_it(tiny_vlm):
    torch.manual_seed(0)
    with_ckpt = [peak_extra_bytes(tiny_vlm, n, checkpointing=True) for n in LENGTHS]
    without = [peak_extra_bytes(tiny_vlm, n, checkpointing=False) for n in LENGTHS]
    report = (f"peak extra MB by length {LENGTHS}: checkpointing {[round(b / 2**20, 2) for b in with_ckpt]}, "
              f"without {[round(b / 2**20, 2) for b in without]}")
    for peaks in (with_ckpt, without):
        assert peaks[0] < peaks[1] < peaks[2], report
        ratio = (peaks[2] - peaks[1]) / (peaks[1] - peaks[0])  # 2 when linear (lengths double)
        assert 1.6 <= ratio <= 2.5, f"increment ratio {ratio:.2f}, expected ~2 (linear); {report}"
    slope_ckpt = (with_ckpt[2] - with_ckpt[0]) / (LENGTHS[2] - LENGTHS[0])
    slope_full = (without[2] - without[0]) / (LENGTHS[2] - LENGTHS[0])
    assert slope_ckpt <= 0.8 * slope_full, (
        f"per-token bytes {slope_ckpt:.0f} with checkpointing vs {slope_full:.0f} without; {report}")
    assert with_ckpt[-1] < without[-1], report
