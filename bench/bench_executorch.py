"""ExecuTorch (fp32, int8; XNNPACK) against PyTorch eager, same machine, same run.

    python bench/bench_executorch.py [--models pocket-tiny,internvl2-1b-shaped] [--threads N] [--max-seq-len N]
        [--write]

For each model: image encode (ms for 1 tile and for 13 tiles -- InternVL2's 12 + thumbnail) and decode (tokens/s,
64 greedy tokens after a one-tile prompt, end-of-text ignored), PyTorch eager float32 (bench/bench_onnx.py's
measurement, so the two tables measure PyTorch alike) against the `adapt export --format executorch` folder in
ExecuTorch's Python runtime at fp32 and int8 (`--quantize int8`), both with the same thread count (XNNPACK's thread
pool set to it). Ratios are ExecuTorch / PyTorch from the same run.

`internvl2-1b-shaped`: InternViT-300M + a Qwen2-0.5B-shaped language model with random weights (bench_llamacpp's
model). Its lowering takes many minutes and GBs of memory; benchmarks run by hand, never in the tests. `--write` puts
the table into BENCHMARKS.md (section bench_executorch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_llamacpp import bench_models  # noqa: E402
from bench.bench_onnx import run_export_model, runtime_run  # noqa: E402

MAX_SEQ_LEN = 1024  # a one-tile prompt and 64 new tokens fit; the cache length decode attends over


def executorch_run(folder: Path, processor, encoded, threads: int) -> dict:
    from deploy.executorch.runtime import ExecuTorchVLM

    return runtime_run(ExecuTorchVLM, folder, processor, encoded, threads, numpy_pixels=False, files="*.pte")


def run_model(name: str, threads: int, work: Path, max_seq_len: int = MAX_SEQ_LEN) -> dict:
    return run_export_model(name, threads, work, "executorch", executorch_run, max_seq_len=max_seq_len)


def table(results: dict, threads: int, load: tuple[float, float], models: str, max_seq_len: int = MAX_SEQ_LEN) -> str:
    from executorch.version import __version__ as et_version

    from bench.sections import machine_line

    lines = [
        "## ExecuTorch (fp32 / int8, XNNPACK) against PyTorch eager (`adapt export -f executorch`)",
        "",
        "Image encode: ms for 1 tile and for 13 tiles (InternVL2's 12 + thumbnail; random pixels; the vision_encoder "
        "method takes max tiles + thumbnail per call, 13 for the InternVL2 tiling and 7 for pocket-tiny's, so "
        "pocket-tiny's 13 tiles are two calls); decode: tokens/s over 64 greedy tokens after a one-tile prompt "
        "(end-of-text ignored; deploy/export_runtime.py's loop, one text_decoder call per token over a static KV "
        f"cache of {max_seq_len} positions, read up to the filled position by ExecuTorch's llama::custom_sdpa). PyTorch: float32 eager (SDPA attention, as loaded); ExecuTorch: the "
        "Python runtime, XNNPACK delegate, fp32 and `--quantize int8` (torchao int8 per-channel weights, dynamic "
        "int8 activations, every Linear). Encode: median of 3 runs (1 tile) / one run (13 tiles) after a warm-up; "
        "decode: median of 2 after a warm-up; ratios are against PyTorch in the same run (>1 = ExecuTorch faster).",
        "",
        f"- Machine: {machine_line()}; executorch {et_version}; {threads} threads for both runtimes",
        f"- Load average before / after the run: {load[0]:.1f} / {load[1]:.1f} (a shared machine: other jobs ran too)",
        f"- Command: `python bench/bench_executorch.py --models {models} --threads {threads}"
        f"{'' if max_seq_len == MAX_SEQ_LEN else f' --max-seq-len {max_seq_len}'} --write`",
        "",
        "| model | runtime | encode 1 tile ms | encode 13 tiles ms | decode tok/s | .pte MB "
        "| vs PyTorch: encode 1 / 13 tiles / decode |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, res in results.items():
        base = res["pytorch"]
        for runtime, r in res.items():
            label = "PyTorch eager f32" if runtime == "pytorch" else f"ExecuTorch {runtime}"
            ratio = "—" if runtime == "pytorch" else (
                f"{base['encode_1_ms'] / r['encode_1_ms']:.2f}x / {base['encode_13_ms'] / r['encode_13_ms']:.2f}x / "
                f"{r['decode_tps'] / base['decode_tps']:.2f}x")
            size = f"{r['files_mb']:.1f}" if "files_mb" in r else "—"
            lines.append(f"| {name} | {label} | {r['encode_1_ms']:.1f} | {r['encode_13_ms']:.1f} "
                         f"| {r['decode_tps']:.1f} | {size} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from bench.sections import positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=bench_models, default="pocket-tiny,internvl2-1b-shaped")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="threads of both runtimes (default 1: on a loaded machine more threads than free cores "
                             "slow PyTorch's OpenMP down many times)")
    parser.add_argument("--max-seq-len", type=positive_int, default=MAX_SEQ_LEN,
                        help=f"KV cache positions of the exports (default {MAX_SEQ_LEN}; prompt + 64 tokens must fit)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    from deploy.executorch import require_executorch

    require_executorch()  # missing, named before minutes of measuring and lowering, not after
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-executorch-") as tmp:
        results = {name: run_model(name, args.threads, Path(tmp), args.max_seq_len)
                   for name in args.models.split(",")}
    text = table(results, args.threads, (load_before, os.getloadavg()[0]), args.models, args.max_seq_len)
    print(text)
    print(json.dumps(results, indent=1), file=sys.stderr)
    if args.write:
        from bench.sections import write_section

        write_section(ROOT / "BENCHMARKS.md", "bench_executorch", text)
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
