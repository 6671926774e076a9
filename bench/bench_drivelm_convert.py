"""Time per frame of the stitched DriveLM conversion for each way of writing the 2688x896 frames.

`adapt convert driving drivelm` stitches the six cameras of every key frame into one image; writing it as a PNG at
zlib level 6 (the converter's setting until issue 15) dominated the conversion. This runs the real converter
(``domains.driving.drivelm.convert_drivelm``) on the synthetic nuScenes + DriveLM set
(``domains.driving.synthetic.generate``: 1600x900 camera JPEGs in the public layout) once per encoding, into a
fresh folder each time, and reports seconds per frame, bytes per frame and how far the decoded pixels are from
the lossless stitch. The PNG levels are checked to decode to bit-identical pixels in the run.

The rendered cameras are flat colours, which compress far better than photographs; ``--grain`` adds seeded
Gaussian sensor noise (standard deviation in grey levels) to every camera before it is saved as a quality-90 JPEG,
so the level-6 PNG lands near the 2.3 MB of a stitched frame from real nuScenes photographs (the size is printed).

    python bench/bench_drivelm_convert.py            # print a markdown table
    python bench/bench_drivelm_convert.py --write    # also replace this benchmark's section in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.sections import command_line, machine_line, positive_int, write_section  # noqa: E402
from domains.driving.drivelm import convert_drivelm  # noqa: E402
from domains.driving.synthetic import generate  # noqa: E402

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
SECTION = "bench_drivelm_convert"
REFERENCE = "png6"
# name -> (--option text, converter options)
VARIANTS = {
    "png6": ("`png_level=6` (zlib default; the setting before issue 15)", {"png_level": 6}),
    "png1": ("`png_level=1` (**default**)", {}),
    "png0": ("`png_level=0` (stored, no compression)", {"png_level": 0}),
    "jpeg95": ("`image_format=jpeg` (quality 95)", {"image_format": "jpeg"}),
    "jpeg85": ("`image_format=jpeg jpeg_quality=85`", {"image_format": "jpeg", "jpeg_quality": 85}),
}


def make_data(root: Path, scenes: int, frames: int, grain: float) -> tuple[Path, int]:
    """The synthetic set under `root` (cameras grained when `grain` > 0); (DriveLM folder, number of key frames)."""
    made = generate(root, n_scenes=scenes, n_frames=frames, seed=0, progress=False)
    if grain > 0:
        rng = np.random.default_rng(15)
        for jpg in sorted((made["nuscenes"] / "samples").glob("CAM_*/*.jpg")):
            with Image.open(jpg) as im:
                pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
            pixels += rng.normal(0.0, grain, pixels.shape).astype(np.float32)
            Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(jpg, format="JPEG", quality=90)
    return made["drivelm"], scenes * frames


def _decoded(out: Path) -> dict[str, np.ndarray]:
    frames = {}
    for path in sorted((out / "images" / "drivelm" / "stitch").iterdir()):
        with Image.open(path) as im:
            frames[path.stem] = np.asarray(im.convert("RGB"))
    return frames


def _check(name: str, report) -> None:
    if report.total_skipped or not report.written:
        raise SystemExit(f"{name}: the conversion skipped input:\n{report.table()}")


def run(scenes: int, frames: int, repeats: int, grain: float, command: str) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench_drivelm_"))
    try:
        drivelm, n_frames = make_data(work / "raw", scenes, frames, grain)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        sizes: dict[str, float] = {}
        pixels: dict[str, dict[str, np.ndarray]] = {}
        # untimed, one per variant: the first conversion in this process pays its imports and each encoder's first
        # use, which would otherwise land on the first timed runs alone (an inflated speed-up at --repeats 1 or 2)
        for name, (_, options) in VARIANTS.items():
            out = work / f"{name}_warm-up"
            _check(name, convert_drivelm(drivelm, out, progress=False, **options))
            stitched = list((out / "images" / "drivelm" / "stitch").iterdir())
            assert len(stitched) == n_frames, (name, len(stitched))
            sizes[name] = sum(p.stat().st_size for p in stitched) / n_frames
            pixels[name] = _decoded(out)
            shutil.rmtree(out)
        for rep in range(repeats):  # interleaved, so drift in machine load hits every variant alike
            for name, (_, options) in VARIANTS.items():
                out = work / f"{name}_{rep}"
                start = time.perf_counter()
                report = convert_drivelm(drivelm, out, progress=False, **options)
                times[name].append((time.perf_counter() - start) / n_frames)
                _check(name, report)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ref = pixels[REFERENCE]
    ref_s = statistics.median(times[REFERENCE])
    rows = []
    for name, (label, _) in VARIANTS.items():
        diff = np.concatenate([np.abs(pixels[name][k].astype(np.int16) - ref[k]).ravel() for k in ref])
        if name.startswith("png"):
            if diff.any():  # lossless at every level: anything else is a bug
                raise SystemExit(f"{name}: decoded pixels differ from {REFERENCE} (max {diff.max()})")
            fidelity = "identical (checked)"
        else:
            mse = float(np.mean(diff.astype(np.float64) ** 2))
            fidelity = f"mean {diff.mean():.2f}, max {diff.max()}, PSNR {10 * np.log10(255 ** 2 / mse):.1f} dB"
        s = statistics.median(times[name])
        rows.append(f"| {label} | {s:.3f} | **{ref_s / s:.2f}x** | {sizes[name] / 1e6:.2f} | "
                    f"{sizes[name] / sizes[REFERENCE]:.2f} | {fidelity} |")
    return "\n".join([
        "## Stitched DriveLM conversion (`adapt convert driving drivelm`)",
        "",
        "Seconds per key frame of the whole stitched conversion (read six 1600x900 camera JPEGs, stitch to 2688x896, "
        "write the frame, build its QA records) for each way of writing the frame, on the synthetic nuScenes + "
        f"DriveLM set ({scenes} scenes x {frames} key frames = {n_frames} frames; cameras with Gaussian grain of "
        f"{grain:g} grey levels so the level-6 PNG is {sizes[REFERENCE] / 1e6:.2f} MB, near the 2.3 MB of real "
        f"frames). One untimed run per option first (imports, first use of each encoder), then the median of "
        f"{repeats} interleaved runs, each into a fresh folder. Speed-up and size are against "
        "`png_level=6`; pixel difference: decoded frame vs the lossless stitch, in 8-bit grey levels over all "
        "pixels and channels. Every PNG level decodes to the same pixels, so training and evaluation on the "
        "default output are unchanged; JPEG is lossy (4:4:4 chroma).",
        "",
        f"- Machine: {machine_line()}",
        f"- Command: `{command}`",
        "",
        "| `--option` | s / frame | speed-up | MB / frame | size vs level 6 | pixels vs lossless |",
        "|---|---|---|---|---|---|",
        *rows,
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=positive_int, default=2, help="synthetic scenes (1-10)")
    parser.add_argument("--frames", type=positive_int, default=4, help="key frames per scene")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed conversions per encoding")
    parser.add_argument("--grain", type=float, default=4.0, help="camera noise, grey levels (0: flat renders)")
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = parser.parse_args(argv)
    section = run(args.scenes, args.frames, args.repeats, args.grain, command_line(__file__, parser, args))
    print(section)
    if args.write:
        write_section(BENCHMARKS_MD, SECTION, section)
        print(f"\nwrote {BENCHMARKS_MD}")


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
