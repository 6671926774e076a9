"""Benchmark ``model.tiling.preprocess_image`` against transformers' ``GotOcr2ImageProcessorPil``.

Both run on the same images in the same process, configured as InternVL (448 px tiles, 1..12
tiles, thumbnail, ImageNet statistics, bicubic); outputs are checked to be bit-identical before
timing.

    python bench/bench_tiling.py            # print a markdown table
    python bench/bench_tiling.py --write    # also replace this benchmark's section in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import GotOcr2ImageProcessorPil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.sections import machine_line, write_section  # noqa: E402
from model.tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, preprocess_image  # noqa: E402

SIZES = [(640, 480), (1600, 900), (2688, 896), (1000, 1000)]
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(repeats: int) -> str:
    config = TilingConfig(tile_size=448, min_tiles=1, max_tiles=12, thumbnail=True)
    reference = GotOcr2ImageProcessorPil(
        size={"height": 448, "width": 448},
        crop_to_patches=True,
        min_patches=1,
        max_patches=12,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        resample=Image.Resampling.BICUBIC,
    )
    rng = np.random.default_rng(0)
    rows = []
    total_ours = total_ref = 0.0
    for width, height in SIZES:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        ours_out = preprocess_image(image, config)
        ref_out = reference(image, return_tensors="pt")["pixel_values"]
        if not torch.equal(ours_out, ref_out):  # bit for bit, as the README promises
            diff = (ours_out - ref_out).abs() if ours_out.shape == ref_out.shape else None
            detail = f"max abs diff {float(diff.max()):.3g}" if diff is not None else "shapes differ"
            raise SystemExit(f"{width}x{height}: output differs from the reference ({detail})")
        ours_times, ref_times = [], []
        ours_fn = partial(preprocess_image, image, config)
        ref_fn = partial(reference, image, return_tensors="pt")
        for _ in range(repeats):  # interleave so drift in machine load hits both sides alike
            ours_times.append(_seconds(ours_fn))
            ref_times.append(_seconds(ref_fn))
        ours_s, ref_s = statistics.median(ours_times), statistics.median(ref_times)
        total_ours += ours_s
        total_ref += ref_s
        rows.append(
            f"| {width}x{height} | {ours_out.shape[0]} | {1 / ours_s:.1f} | {1 / ref_s:.1f} "
            f"| **{ref_s / ours_s:.2f}x** |"
        )
    n = len(SIZES)
    rows.append(
        f"| all {n} (mean) | | {n / total_ours:.1f} | {n / total_ref:.1f} "
        f"| **{total_ref / total_ours:.2f}x** |"
    )
    return "\n".join(
        [
            "## Image tiling (`model/tiling.py`)",
            "",
            "`preprocess_image` vs transformers `GotOcr2ImageProcessorPil` (reference) "
            "configured as InternVL: 448 px tiles, 1..12 tiles + thumbnail, ImageNet mean/std, "
            "bicubic; single image in, float32 `(tiles, 3, 448, 448)` tensor out. Outputs are "
            "bit-identical (`torch.equal`, checked in the run). Images are seeded noise; "
            f"median of {repeats} interleaved runs per size. Speed-up = reference time / our time.",
            "",
            f"- Machine: {machine_line()}",
            "- Command: `python bench/bench_tiling.py --write`",
            "",
            "| image | tiles | ours (img/s) | reference (img/s) | speed-up |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per size and side")
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = parser.parse_args(argv)
    section = run(args.repeats)
    print(section)
    if args.write:
        write_section(BENCHMARKS_MD, "bench_tiling", section)
        print(f"\nwrote {BENCHMARKS_MD}")


if __name__ == "__main__":
    main()
