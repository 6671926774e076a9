"""Next-token cross-entropy taken only where a label is supervised, a chunk of positions at a time.

A causal LM's own loss projects every position onto the vocabulary and upcasts the whole
`(batch, sequence, vocab)` logits to fp32: with Qwen2's 151,646 tokens that is 600 KB per position,
most of it spent on image and prompt tokens no loss is taken over. Here only supervised positions
reach the head, `chunk` of them at a time; above one chunk each chunk is recomputed in the backward
pass (activation checkpointing), so no more than one chunk of fp32 logits ever exists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .processor import IGNORE_INDEX

LOSS_CHUNK = 1024  # supervised positions per head call (at 151k tokens: 620 MB of fp32 logits)


def supervised_token_losses(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor,
                            chunk: int = LOSS_CHUNK) -> torch.Tensor:
    """Per-position cross-entropy of predicting ``labels[:, 1:]`` from ``hidden[:, :-1]``: a float32
    ``(batch, sequence - 1)`` tensor, zero where the label is ``IGNORE_INDEX``. ``head`` maps hidden
    states to logits (the LM's output embeddings)."""
    targets = labels[:, 1:]
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
    losses = torch.cat(pieces) if pieces else states.new_zeros(0, dtype=torch.float32)
    return torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device).masked_scatter(mask, losses)


def _chunk_losses(head: nn.Module, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(states).float(), targets, reduction="none")
