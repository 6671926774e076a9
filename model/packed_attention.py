"""SDPA attention for packed rows that attends within each sample's own span.

A packed row holds several samples one after another, its ``position_ids`` restarting at 0 with each (see
`adapt.data.dataset.pack`). transformers' own SDPA path keeps the samples apart with a block-diagonal mask over the
whole row, so every layer pays attention over the row's full length squared, through SDPA's masked kernel: four
300-token samples in one row cost ~3.4x the attention of the same samples as four rows (fwd + bwd, CPU;
`python bench/bench_packed_attention.py`). Without a
varlen kernel on CPU (flash-attention's varlen path does this on GPUs), the next best is what this does: cut the
row at the restarts and run causal SDPA on each span, exactly the attention each sample gets in a row of its own.

    use_packed_attention(vlm.language_model)    # what `adapt train` does with training.packing on an SDPA LLM
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "pocket_packed_sdpa"


def segment_bounds(position_ids: torch.Tensor) -> list[list[int]] | None:
    """Per row, the offsets where a sequence starts (a position that does not continue the one before, as
    transformers' `find_packed_sequence_indices` reads them) plus the row's length; None when no row is packed."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    if int(starts.sum()) == position_ids.shape[0]:
        return None
    length = position_ids.shape[1]
    return [[*torch.nonzero(row).flatten().tolist(), length] for row in starts]


def _packed_causal_mask(position_ids: torch.Tensor, starts: list[list[int]]) -> torch.Tensor:
    """(batch, length, length) bool: causal within each sequence of a packed row, nothing across."""
    length = position_ids.shape[1]
    seg = torch.zeros_like(position_ids)
    for b, cuts in enumerate(starts):
        for k, (s, e) in enumerate(zip(cuts, cuts[1:])):
            seg[b, s:e] = k
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    return (seg[:, :, None] == seg[:, None, :]) & causal


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None = None, **kwargs):
    """transformers' SDPA attention, except where the mask is exactly the packed-rows one (causal within each
    sample, nothing across, nothing else: no padding, no window, a full prompt): causal SDPA on each sample's
    span instead. Returns ``(output (batch, length, heads, head_dim), None)`` as transformers' attention
    functions do."""
    bounds = None
    if (attention_mask is not None and attention_mask.dtype == torch.bool and position_ids is not None
            and query.shape[2] == key.shape[2] > 1 and attention_mask.shape[1] == 1):
        positions = position_ids.expand(query.shape[0], -1)
        bounds = segment_bounds(positions)
        if bounds is not None and not torch.equal(attention_mask[:, 0], _packed_causal_mask(positions, bounds)):
            bounds = None
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, position_ids=position_ids, **kwargs)
    kwargs.pop("is_causal", None)
    rows = []
    for b, cuts in enumerate(bounds):
        spans = [sdpa_attention_forward(module, query[b:b + 1, :, s:e], key[b:b + 1, :, s:e],
                                        value[b:b + 1, :, s:e], None, is_causal=True, **kwargs)[0]
                 for s, e in zip(cuts, cuts[1:])]
        rows.append(torch.cat(spans, dim=1))
    return torch.cat(rows, dim=0), None


AttentionInterface.register(NAME, packed_sdpa_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the mask as SDPA's: the attention checks it before cutting


def use_packed_attention(lm: torch.nn.Module) -> bool:
    """Switch a transformers LM that attends with SDPA to the per-span version; True if switched. Others are left
    as they are (eager keeps its mask; flash-attention has its own varlen path). Rows whose mask is anything but
    the packed-causal one (a sliding window, padding, a cache) still go through SDPA with their mask."""
    if getattr(lm.config, "_attn_implementation", None) != "sdpa":
        return False
    lm.set_attn_implementation(NAME)
    return lm.config._attn_implementation == NAME
