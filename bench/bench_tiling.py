"""Benchmark ``model.tiling.preprocess_image`` against transformers' ``GotOcr2ImageProcessorPil``.

Both run on the same images in the same process, configured as InternVL (448 px tiles, 1..12
tiles, thumbnail, ImageNet statistics, bicubic); outputs are checked to be bit-identical before
timing.

    python bench/bench_tiling.py            # print a markdown table
    python bench/bench_tiling.py --write    # also replace this benchmark's section in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from transformers import GotOcr2ImageProcessorPil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, preprocess_image  # noqa: E402

SIZES = [(640, 480), (1600, 900), (2688, 896), (1000, 1000)]
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
START, END = "<!-- bench_tiling:start -->", "<!-- bench_tiling:end -->"
HEADER = (
    "# Benchmarks\n\n"
    "Every figure is a ratio against a reference measured in the same run, on the machine named in "
    "each section, by the command given there.\n"
)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cores}-core CPU ({cpu}), no GPU; Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Pillow {PIL.__version__}, numpy {np.__version__}"
    )


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
            f"- Machine: {_machine()}",
            "- Command: `python bench/bench_tiling.py --write`",
            "",
            "| image | tiles | ours (img/s) | reference (img/s) | speed-up |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def write_section(section: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) this benchmark's marked section in ``path``."""
    text = path.read_text() if path.exists() else HEADER
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per size and side")
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = parser.parse_args(argv)
    section = run(args.repeats)
    print(section)
    if args.write:
        write_section(section)
        print(f"\nwrote {BENCHMARKS_MD}")


if __name__ == "__main__":
    main()
