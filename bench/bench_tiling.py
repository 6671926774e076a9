"""Benchmark ``model.tiling.preprocess_image`` against transformers' ``GotOcr2ImageProcessorPil``.

Both run on the same images in the same process, configured as InternVL (448 px tiles, 1..12
tiles, thumbnail, ImageNet statistics, bicubic); outputs are checked to be bit-identical before
timing. Ours is timed twice: as it runs by default (colour planes spread over threads) and held to
one thread, so a loaded machine shows in the gap between the two.

    python bench/bench_tiling.py            # print a markdown table
    python bench/bench_tiling.py --write    # also replace this benchmark's section in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
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
import model.tiling as tiling  # noqa: E402
from bench.sections import command_line, machine_line, positive_int, write_section  # noqa: E402
from model.tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, preprocess_image  # noqa: E402

# 1 tile, 9 tiles, 13 tiles, the stitched 2688x896 driving frame (13 tiles), 10 tiles
SIZES = [(448, 448), (1600, 900), (640, 480), (2688, 896), (1000, 1000)]
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def _seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU (all threads of this process) seconds of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def _one_thread(image: Image.Image, config: TilingConfig) -> object:
    threads = tiling._threads
    tiling._threads = lambda: 1
    try:
        return preprocess_image(image, config)
    finally:
        tiling._threads = threads


def thread_scaling(threads: int, jobs: int = 12) -> float:
    """How much `threads` threads speed up independent PIL bicubic resizes (1600x900 -> 1344x1344 planes) on this
    machine: the ceiling of any threaded resize here, whatever the code around it."""
    from concurrent.futures import ThreadPoolExecutor

    plane = Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 1600), dtype=np.uint8))

    def resize(_: object = None) -> object:
        return plane.resize((1344, 1344), Image.Resampling.BICUBIC)

    resize()
    start = time.perf_counter()
    for _ in range(jobs):
        resize()
    alone = time.perf_counter() - start
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(resize, range(jobs)))
        together = time.perf_counter() - start
    return alone / together


def run(repeats: int, command: str) -> str:
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
    totals = {"ours": 0.0, "ours_1": 0.0, "ref": 0.0}
    cpu_totals = {"ours_1": 0.0, "ref": 0.0}
    for width, height in SIZES:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        ours_out = preprocess_image(image, config)
        ref_out = reference(image, return_tensors="pt")["pixel_values"]
        if not torch.equal(_one_thread(image, config), ref_out):
            raise SystemExit(f"{width}x{height}: output on one thread differs from the reference")
        if not torch.equal(ours_out, ref_out):  # bit for bit, as the README promises
            diff = (ours_out - ref_out).abs() if ours_out.shape == ref_out.shape else None
            detail = f"max abs diff {float(diff.max()):.3g}" if diff is not None else "shapes differ"
            raise SystemExit(f"{width}x{height}: output differs from the reference ({detail})")
        default_threads = tiling._threads()
        times: dict[str, list[float]] = {"ours": [], "ours_1": [], "ref": []}
        cpu: dict[str, list[float]] = {"ours_1": [], "ref": []}
        fns = {
            "ours": partial(preprocess_image, image, config),
            "ours_1": partial(_one_thread, image, config),
            "ref": partial(reference, image, return_tensors="pt"),
        }
        for _ in range(repeats):  # interleave so drift in machine load hits every side alike
            for name, fn in fns.items():
                # timed on its second call in a row: a call right after another side's runs up to 3x slower here
                # (the memory the other just freed is faulted in again), which would charge one side for the other
                fn()
                wall, cpu_s = _seconds(fn)
                times[name].append(wall)
                if name in cpu:
                    cpu[name].append(cpu_s)
        med = {name: statistics.median(values) for name, values in times.items()}
        med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
        for name in totals:
            totals[name] += med[name]
        for name in cpu_totals:
            cpu_totals[name] += med_cpu[name]
        rows.append(
            f"| {width}x{height} | {ours_out.shape[0]} | {1 / med['ours']:.1f} | {1 / med['ours_1']:.1f} "
            f"| {1 / med['ref']:.1f} | **{med['ref'] / med['ours']:.2f}x** | {med['ref'] / med['ours_1']:.2f}x "
            f"| {med_cpu['ref'] / med_cpu['ours_1']:.2f}x |"
        )
    n = len(SIZES)
    rows.append(
        f"| all {n} (mean) | | {n / totals['ours']:.1f} | {n / totals['ours_1']:.1f} | {n / totals['ref']:.1f} "
        f"| **{totals['ref'] / totals['ours']:.2f}x** | {totals['ref'] / totals['ours_1']:.2f}x "
        f"| {cpu_totals['ref'] / cpu_totals['ours_1']:.2f}x |"
    )
    scaling = thread_scaling(default_threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return "\n".join(
        [
            "## Image tiling (`model/tiling.py`)",
            "",
            "`preprocess_image` vs transformers `GotOcr2ImageProcessorPil` (reference) "
            "configured as InternVL: 448 px tiles, 1..12 tiles + thumbnail, ImageNet mean/std, "
            "bicubic; single image in, float32 `(tiles, 3, 448, 448)` tensor out. Outputs are "
            "bit-identical (`torch.equal`, checked in the run on one thread and on several). Images are seeded noise; "
            f"median of {repeats} interleaved runs per size (ours, ours on one thread, reference, in turn; each timed on "
            "its second call in a row, as a call right after another side's runs up to 3x slower here while the "
            "memory the other freed is faulted in again). "
            "Speed-up = reference time / our time. Ours resizes and normalises each colour plane on its own, in "
            "bands (horizontal pass in row bands, vertical pass in bands of tile columns, bit-identical to PIL's "
            "two-pass resize; a resize's vertical bands wait only for its own horizontal ones, so the tile grid's "
            f"bands overlap the thumbnail's horizontal pass), spread over {default_threads} threads here (`min(3, torch.get_num_threads())`; one thread inside "
            "DataLoader workers); the reference runs on one. Speed-ups are wall-clock ratios, except the last "
            "column: reference CPU time / ours-on-one-thread CPU time (the work each does, which other load on "
            "the machine barely moves). On a machine shared with other work the threaded speed-up shrinks "
            "towards the one-thread one; on idle cores it approaches the CPU ratio times the threads used.",
            "",
            f"- This machine's ceiling for threaded resizing, same run: {default_threads} threads run independent PIL "
            f"bicubic resizes (1600x900 -> 1344x1344, one plane each) **{scaling:.2f}x** as fast as one thread "
            "(`thread_scaling`): the threaded speed-up cannot pass the one-thread one times that.",
            f"- Machine: {machine_line()}; load average {load:.1f} over the last minute at the end of the run",
            f"- Command: `{command}`",
            "",
            "| image | tiles | ours (img/s) | ours, 1 thread (img/s) | reference (img/s) | speed-up "
            "| speed-up, 1 thread | CPU-time ratio, 1 thread |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=15, help="timed runs per size and side")
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = parser.parse_args(argv)
    section = run(args.repeats, command_line(__file__, parser, args))
    print(section)
    if args.write:
        write_section(BENCHMARKS_MD, "bench_tiling", section)
        print(f"\nwrote {BENCHMARKS_MD}")


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
