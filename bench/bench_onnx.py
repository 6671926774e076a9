"""ONNX Runtime (fp32, int8) against PyTorch eager, same machine, same run.

    python bench/bench_onnx.py [--models pocket-tiny,internvl2-1b-shaped] [--threads N] [--write]

For each model: image encode (ms for 1 tile and for 13 tiles -- InternVL2's 12 + thumbnail) and decode (tokens/s,
64 greedy tokens after a one-tile prompt, end-of-text ignored), PyTorch eager float32 against the `adapt export
--format onnx` folder in onnxruntime at fp32 and int8 (`--quantize int8`), both runtimes with the same thread
count. Ratios are ONNX Runtime / PyTorch from the same run. Encode: median of 3 (1 tile) / one run (13 tiles)
after a warm-up; decode: median of 2 after a warm-up.

`internvl2-1b-shaped`: InternViT-300M + a Qwen2-0.5B-shaped language model with random weights
(`bench/bench_llamacpp.py`'s model: InternVL2-1B's shapes without its download). Its export takes minutes and
several GB of memory; benchmarks run by hand, never in the tests. `--write` puts the table into BENCHMARKS.md
(section bench_onnx).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_llamacpp import QUESTION, _example, bench_models, build  # noqa: E402  (the one set of bench models)
from bench.sections import median_seconds  # noqa: E402

N_DECODE = 64
TILES = (1, 13)
REPEAT = {1: 3, 13: 1}  # timed runs after the warm-up (13 tiles of InternViT-300M take a minute in PyTorch)
VARIANTS = ("fp32", "int8")


def _pixels(processor, n: int):
    import torch

    size = processor.tiling.tile_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def torch_run(vlm, processor, encoded, vision_only: bool = False) -> dict:
    import torch

    lm = vlm.language_model
    out = {}
    with torch.inference_mode():
        for n in TILES[:1] if vision_only else TILES:
            pixels = _pixels(processor, n)
            out[f"encode_{n}_ms"] = median_seconds(lambda: vlm.get_image_features(pixels), REPEAT[n]) * 1e3
        if vision_only:
            return out
        inputs = encoded.to_model_inputs()
        embeds, _ = vlm.embed(inputs["input_ids"], inputs["pixel_values"])
        gen = dict(inputs_embeds=embeds, do_sample=False, eos_token_id=None, pad_token_id=processor.pad_token_id)
        one = median_seconds(lambda: lm.generate(**gen, max_new_tokens=1, min_new_tokens=1), 2)
        full = median_seconds(lambda: lm.generate(**gen, max_new_tokens=N_DECODE, min_new_tokens=N_DECODE), 2)
    out["decode_tps"] = (N_DECODE - 1) / max(full - one, 1e-9)
    return out


def runtime_run(runtime_class, folder: Path, processor, encoded, threads: int, numpy_pixels: bool,
                files: str) -> dict:
    """Image encode (each tile count) and decode tok/s of an export folder in its runtime (OnnxVLM, ExecuTorchVLM:
    ``encode_images`` and ``generate``), and the size of its `files`."""
    out = {}
    with runtime_class(folder, threads=threads) as runtime:
        for n in TILES:
            pixels = _pixels(processor, n)
            pixels = pixels.numpy() if numpy_pixels else pixels
            out[f"encode_{n}_ms"] = median_seconds(lambda: runtime.encode_images(pixels), REPEAT[n]) * 1e3
        ids = encoded.input_ids.tolist()
        pixels = encoded.pixel_values.numpy() if numpy_pixels else encoded.pixel_values
        runs = []
        for _ in range(3):
            tokens, timings = runtime.generate(ids, pixels, N_DECODE, stop_ids=())
            runs.append((len(tokens) - 1) / (timings["decode_ms"] / 1e3))
    out["decode_tps"] = statistics.median(runs[1:])
    out["files_mb"] = sum(p.stat().st_size for p in folder.glob(files)) / 1e6
    return out


def onnx_run(folder: Path, processor, encoded, threads: int) -> dict:
    from deploy.onnx.runtime import OnnxVLM

    return runtime_run(OnnxVLM, folder, processor, encoded, threads, numpy_pixels=True, files="*.onnx*")


def vision_run(path: Path, processor, threads: int) -> dict:
    """One tile through vision.onnx alone (the --vision-only models)."""
    from deploy.onnx.runtime import session

    vision = session(path, threads)
    pixels = _pixels(processor, 1).numpy()
    ms = median_seconds(lambda: vision.run(None, {"pixel_values": pixels}), REPEAT[1]) * 1e3
    return {"encode_1_ms": ms, "files_mb": sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6}


def run_vision_only(name: str, threads: int, work: Path) -> dict:
    """Image encode of one tile only: PyTorch eager against vision.onnx at fp32 and int8 (for models whose full
    export and 13-tile runs do not fit the time the machine gives)."""
    import shutil

    import torch

    from deploy.onnx.export import quantize_int8
    from deploy.onnx.graphs import export_vision

    torch.set_num_threads(threads)
    vlm, processor = build(name)
    results = {"pytorch": torch_run(vlm, processor, None, vision_only=True)}
    (work / f"{name}-fp32").mkdir()
    fp32 = export_vision(vlm, work / f"{name}-fp32" / "vision.onnx")
    results["fp32"] = vision_run(fp32, processor, threads)
    (work / f"{name}-int8").mkdir()
    int8 = work / f"{name}-int8" / "vision.onnx"
    for f in fp32.parent.iterdir():
        shutil.copy(f, int8.parent / f.name)
    quantize_int8(int8)
    results["int8"] = vision_run(int8, processor, threads)
    return results


def run_export_model(name: str, threads: int, work: Path, fmt: str, run, **options) -> dict:
    """PyTorch eager, then each variant of `fmt` exported (`--quantize`) and measured by `run`."""
    import torch
    from tqdm.auto import tqdm

    from deploy.hf import export

    torch.set_num_threads(threads)
    vlm, processor = build(name)
    encoded = processor([{"role": "user", "content": QUESTION}], images=[_example(processor.tiling.tile_size)])
    steps = tqdm(total=1 + 2 * len(VARIANTS), desc=name, unit="step")
    results = {"pytorch": torch_run(vlm, processor, encoded)}
    steps.update()
    for variant in VARIANTS:
        folder = export(vlm, processor, fmt, work / f"{name}-{variant}", force=True,
                        quantize=None if variant == "fp32" else variant, **options)
        steps.update()
        results[variant] = run(folder, processor, encoded, threads)
        steps.update()
    steps.close()
    return results


def run_model(name: str, threads: int, work: Path) -> dict:
    return run_export_model(name, threads, work, "onnx", onnx_run)


def table(results: dict, threads: int, load: tuple[float, float], command: str) -> str:
    import onnxruntime

    from bench.sections import machine_line

    lines = [
        "## ONNX Runtime (fp32 / int8) against PyTorch eager (`adapt export -f onnx`)",
        "",
        "Image encode: ms for 1 tile and for 13 tiles (InternVL2's 12 + thumbnail; random pixels, the vision graph "
        "with its dynamic tile axis); decode: tokens/s over 64 greedy tokens after a one-tile prompt (end-of-text "
        "ignored; ONNX: deploy/export_runtime.py's loop, a decoder call per token with the KV cache as inputs). "
        "PyTorch: float32 eager (SDPA attention, as loaded); ONNX Runtime: CPU provider, fp32 and `--quantize int8` "
        "(dynamic int8 MatMuls in the vision and decoder graphs). Encode: median of 3 runs (1 tile) / one run (13 tiles) after a "
        "warm-up; decode: median of 2 after a warm-up; ratios are against PyTorch in the same run (>1 = ONNX Runtime faster).",
        "",
        f"- Machine: {machine_line()}; onnxruntime {onnxruntime.__version__}; {threads} threads for both runtimes",
        f"- Load average before / after the run: {load[0]:.1f} / {load[1]:.1f} (a shared machine: other jobs ran too)",
        f"- Command: `{command}`",
        "",
        "| model | runtime | encode 1 tile ms | encode 13 tiles ms | decode tok/s | graph files MB "
        "| vs PyTorch: encode 1 / 13 tiles / decode |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, res in results.items():
        base = res["pytorch"]
        for runtime, r in res.items():
            label = "PyTorch eager f32" if runtime == "pytorch" else f"ONNX Runtime {runtime}"
            def ratio_of(key, faster=lambda a, b: a / b):
                return f"{faster(base[key], r[key]):.2f}x" if key in r and key in base else "—"

            ratio = "—" if runtime == "pytorch" else " / ".join(
                [ratio_of("encode_1_ms"), ratio_of("encode_13_ms"), ratio_of("decode_tps", lambda a, b: b / a)])
            size = f"{r['files_mb']:.1f}" if "files_mb" in r else "—"
            cell = lambda key, fmt: format(r[key], fmt) if key in r else "—"  # noqa: E731
            lines.append(f"| {name} | {label} | {cell('encode_1_ms', '.1f')} | {cell('encode_13_ms', '.1f')} "
                         f"| {cell('decode_tps', '.1f')} | {size} | {ratio} |")
    partial = [name for name, res in results.items() if "decode_tps" not in res["pytorch"]]
    if partial:
        lines += ["", f"{', '.join(partial)}: `--vision-only`, one tile's image encode through vision.onnx alone; its "
                  "full export (the language model) and the 13-tile runs did not fit the CPU share this shared machine "
                  "gave the run, so decode was not measured for it."]
    return "\n".join(lines)


def main(argv=None) -> int:
    from bench.sections import positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=bench_models, default="pocket-tiny,internvl2-1b-shaped")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="threads of both runtimes (default 1: on a loaded machine, PyTorch's OpenMP with more "
                             "threads than free cores slows down many times, which would flatter ONNX Runtime)")
    parser.add_argument("--vision-only", type=lambda text: text and bench_models(text), default="", metavar="MODELS",
                        help="comma-separated models measured for one tile's image encode only (vision.onnx alone)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    threads = args.threads
    from deploy.onnx.runtime import import_extra

    for module in ("onnx", "onnxruntime"):  # missing, named before minutes of measuring and exporting, not after
        import_extra(module)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        vision_only = set(filter(None, args.vision_only.split(",")))
        results = {name: (run_vision_only if name in vision_only else run_model)(name, threads, Path(tmp))
                   for name in args.models.split(",")}
    words = ["python", "bench/bench_onnx.py", "--models", args.models, "--threads", str(threads)]
    words += ["--vision-only", args.vision_only] if args.vision_only else []
    text = table(results, threads, (load_before, os.getloadavg()[0]), shlex.join([*words, "--write"]))
    print(text)
    print(json.dumps(results, indent=1), file=sys.stderr)
    if args.write:
        from bench.sections import write_section

        write_section(ROOT / "BENCHMARKS.md", "bench_onnx", text)
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
