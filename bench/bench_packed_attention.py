"""Attention of a packed row: SDPA's masked kernel over the whole row against model/packed_attention.py's per-span
causal SDPA, forward + backward, same query / key / value.

    python bench/bench_packed_attention.py [--samples 4] [--length 300] [--heads 14] [--head-dim 64] [--threads 1]

Prints the time of each (median of --repeats after a warm-up, the two timed in turn) and their ratio: what README's
"Loss and packing" states for four 300-token samples (Qwen2-0.5B's 14 heads of 64). Both paths compute the same output
(checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

from bench.sections import interleaved_medians  # noqa: E402
from model.arguments import positive_int  # noqa: E402
from model.packed_attention import _packed_causal_mask, packed_sdpa_attention, segment_bounds  # noqa: E402


class _Attention(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 1


def _step(fn, q, k, v):
    """One forward + backward of attention `fn` from fresh gradients."""
    def step() -> None:
        q.grad = k.grad = v.grad = None
        fn(q, k, v)[0].sum().backward()
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=4)
    parser.add_argument("--length", type=positive_int, default=300, help="tokens per sample")
    parser.add_argument("--heads", type=positive_int, default=14)
    parser.add_argument("--head-dim", type=positive_int, default=64)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--repeats", type=positive_int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    row = args.samples * args.length
    positions = torch.arange(args.length).repeat(args.samples)[None]
    mask = _packed_causal_mask(positions, segment_bounds(positions))[:, None]
    q, k, v = (torch.randn(1, args.heads, row, args.head_dim, requires_grad=True) for _ in range(3))
    module = _Attention()

    def masked(q, k, v):
        return sdpa_attention_forward(module, q, k, v, mask, position_ids=positions)

    def per_span(q, k, v):
        return packed_sdpa_attention(module, q, k, v, mask, position_ids=positions)

    with torch.no_grad():
        assert torch.allclose(masked(q, k, v)[0], per_span(q, k, v)[0], atol=1e-5), "the two paths differ"
    # interleaved: drift in machine load hits both alike (one side's runs all first gave it a quieter or busier spell)
    times = interleaved_medians({"masked": _step(masked, q, k, v), "span": _step(per_span, q, k, v)}, args.repeats)
    t_masked, t_span = times["masked"], times["span"]
    print(f"{args.samples} samples x {args.length} tokens, {args.heads} heads x {args.head_dim}, "
          f"{args.threads} thread(s), fwd + bwd: masked SDPA over the row {t_masked * 1e3:.1f} ms, per span "
          f"{t_span * 1e3:.1f} ms: {t_masked / t_span:.1f}x")
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
