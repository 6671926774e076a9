"""bench/bench_llamacpp.py: its PyTorch side is timed as its llama.cpp side is, and bad runs stop before measuring."""

from __future__ import annotations

import time


def test_pytorch_timings_leave_out_a_slow_first_call(monkeypatch):
    """llama.cpp's first run is left out of its medians; PyTorch's first `generate` was in a median of two (the
    mean), so a slow first call (lazy set-up) shifted the decode figure PyTorch's ratios are taken against."""
    from bench import bench_llamacpp

    build = bench_llamacpp.build

    def slow_first_generate(name):
        vlm, processor = build(name)
        lm = vlm.language_model
        generate, calls = lm.generate, []

        def first_slow(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                time.sleep(1.0)
            return generate(*args, **kwargs)

        lm.generate = first_slow
        return vlm, processor

    monkeypatch.setattr(bench_llamacpp, "build", slow_first_generate)
    result = bench_llamacpp.torch_run("pocket-tiny", 1)
    # 63 tokens of pocket-tiny take well under 0.5 s: with half the 1 s in the median of one token, the time of the
    # 63 tokens (full - one) came out negative, clamped to 1 ns (63 billion tokens/s)
    assert 1e-4 < 63 / result["decode_tps"] < 0.5
