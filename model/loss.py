"""Next-token cross-entropy taken only where a label is supervised, a chunk of positions at a time.

A causal LM's own loss projects every position onto the vocabulary and upcasts the whole
`(batch, sequence, vocab)` logits to fp32: with Qwen2's 151,646 tokens that is 600 KB per position,
most of it spent on image and prompt tokens no loss is taken over. Here, once a batch's fp32 logits
would pass `FULL_LOGITS_BYTES`, only supervised positions reach the head, `chunk` of them at a time;
above one chunk each chunk is recomputed in the backward pass (activation checkpointing), so no more
than one chunk of fp32 logits ever exists. Below it (small vocabularies, short batches) the head
projects every position as the LM's own loss does, which costs little and keeps training bit for bit
what it was before this module (the published pocket-tiny runs replay exactly); both ways give the
same losses and gradients up to float rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .processor import IGNORE_INDEX

LOSS_CHUNK = 1024  # supervised positions per head call (at 151k tokens: 620 MB of fp32 logits)
FULL_LOGITS_BYTES = 64 * 2**20  # up to this, fp32 logits of every position are made at once


def supervised_token_losses(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor,
                            chunk: int = LOSS_CHUNK, full_logits_bytes: int | None = None) -> torch.Tensor:
    """Per-position cross-entropy of predicting ``labels[:, 1:]`` from ``hidden[:, :-1]``: a float32
    ``(batch, sequence - 1)`` tensor, zero where the label is ``IGNORE_INDEX``. ``head`` maps hidden
    states to logits (the LM's output embeddings). ``full_logits_bytes``: `FULL_LOGITS_BYTES` unless given."""
    targets = labels[:, 1:]
    vocab = getattr(head, "out_features", hidden.shape[-1])
    if labels.numel() * vocab * 4 <= (FULL_LOGITS_BYTES if full_logits_bytes is None else full_logits_bytes):
        logits = head(hidden)[:, :-1].float()
        return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    mask = targets != IGNORE_INDEX
    states = hidden[:, :-1][mask]
    wanted = targets[mask]
    pieces = []
    for start in range(0, wanted.numel(), chunk):
        part = (states[start:start + chunk], wanted[start:start + chunk])
        if wanted.numel() <= chunk:  # one chunk: recomputing it would only cost time
            pieces.append(_chunk_losses(head, *part))
        else:
            pieces.append(checkpoint(_chunk_losses, head, *part, use_reentrant=False))
    # no supervised position: the head on no states, so the (zero) loss still has a graph to backward through
    losses = torch.cat(pieces) if pieces else _chunk_losses(head, states, wanted)
    return torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device).masked_scatter(mask, losses)


def _chunk_losses(head: nn.Module, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # (n, vocab): the classes contiguous in the last dimension. A (1, vocab, n) view would round as the full-logits
    # (batch, vocab, sequence) loss does, but CUDA runs a softmax over a strided class dimension with its slow
    # "spatial" kernel: half the GPU time of an InternVL2-1B training step on an H200 (bench/gpu_train.sh, PROFILE=1)
    return F.cross_entropy(head(states).float(), targets, reduction="none")
