"""llama.cpp (GGUF f16 / q8_0 / q4_k_m) against PyTorch eager, same machine, same run.

    python bench/bench_llamacpp.py [--models pocket-tiny,internvl2-1b-shaped] [--write]

For each model: image encode (ms, one tile), prompt processing (tokens/s, the image's tokens included), decode
(tokens/s, 64 greedy tokens, end-of-text ignored) and peak resident memory of the process that ran it, for PyTorch
eager (float32, the dtype the CPU runs) and for llama.cpp at each GGUF type (mmproj f16, as exported). Ratios are
llama.cpp / PyTorch from the same run. The machine's memory read bandwidth is measured in the same run (1 GiB read by
torch.sum and by a matrix-vector product, the same thread count); a decode step reads every text-model weight once (the token embedding
table only for one row), so bandwidth / bytes-per-token bounds decode speed, and the table reports the fraction
of that bound each runtime reaches.

`internvl2-1b-shaped`: InternViT-300M + a Qwen2-0.5B-shaped language model (InternVL2-1B's config, 151,655-token
vocabulary) with random weights -- the shapes, hence the speed, of InternVL2-1B without its download.
`--write` puts the table into BENCHMARKS.md (section bench_llamacpp). Needs `make llama-cpp`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TYPES = ("f16", "q8_0", "q4_k_m")
N_DECODE = 64
QUESTION = "Describe the picture."


MODELS = ("pocket-tiny", "internvl2-1b-shaped")  # what `build` makes


def bench_models(text: str) -> str:
    """`--models` (argparse type): comma-separated names of `MODELS`, refused before anything is measured."""
    names = text.split(",")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown bench model(s) {', '.join(map(repr, unknown))}; "
                                         f"known: {', '.join(MODELS)} (comma-separated, no spaces)")
    return text


def require_llama_cpp() -> None:
    """`LlamaCppError` naming the build command when llama.cpp's programs this bench runs are not built here."""
    from deploy.llamacpp import binary

    for program in ("pocket-llama", "llama-quantize"):  # q4_k_m is written by llama-quantize
        binary(program)


def _threads() -> int:
    from deploy.llamacpp import threads

    return threads()


def build(name: str):
    """(vlm, processor) for a bench model."""
    import torch

    import model
    from model.presets import _internvl2_1b
    from model.processor import VLMProcessor
    from model.vlm import PocketVLM

    if name == "pocket-tiny":
        return model.load("pocket-tiny")
    if name == "internvl2-1b-shaped":
        _, tiny = model.load("pocket-tiny")  # its tokenizer (the vocabulary table is padded to 151,655 in the GGUF)
        config = _internvl2_1b()
        config.image_token_id = tiny.image_token_id
        config.text_config.eos_token_id = tiny.tokenizer.eos_token_id
        config.text_config.bos_token_id = None
        config.chat_template = "pocket-tiny"
        torch.manual_seed(0)
        vlm = PocketVLM(config).eval()
        return vlm, VLMProcessor.from_config(vlm.config, tiny.tokenizer)
    raise SystemExit(f"unknown bench model {name!r}")


def bandwidth_gbs(n_threads: int, gib: float = 1.0) -> float:
    """Memory read bandwidth (GB/s) with `n_threads` threads: the best of 5 passes over `gib` GiB of float32, read
    as a sum and as a matrix-vector product (a decode step's own access pattern); the faster of the two."""
    import torch

    torch.set_num_threads(n_threads)
    x = torch.ones(int(gib * 2**30 / 4), dtype=torch.float32)
    side = int(x.numel() ** 0.5)
    matrix, vector = x[: side * side].view(side, side), torch.ones(side)
    best = float("inf")
    for fn in (lambda: float(x.sum()), lambda: matrix.mv(vector)):
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def bytes_per_token(gguf_path: Path) -> int:
    """Bytes a decode step reads from the text GGUF: every tensor, the embedding table only for one row."""
    from gguf import GGUFReader

    total = 0
    for t in GGUFReader(str(gguf_path)).tensors:
        total += int(t.n_bytes) // int(t.shape[-1]) if t.name == "token_embd.weight" else int(t.n_bytes)
    return total


def _example(size: int):
    from PIL import Image

    from model.resources import assets_dir

    return Image.open(assets_dir() / "example.png").convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def torch_run(name: str, n_threads: int) -> dict:
    """PyTorch eager timings (runs in its own process, so its peak RSS is its own)."""
    import resource

    import torch

    torch.set_num_threads(n_threads)
    vlm, processor = build(name)
    image = _example(processor.tiling.tile_size)
    encoded = processor([{"role": "user", "content": QUESTION}], images=[image])
    inputs = encoded.to_model_inputs()
    from bench.sections import median_seconds

    lm = vlm.language_model
    # each after an untimed warm-up call, as llama.cpp's first run is left out of its medians
    with torch.inference_mode():
        encode = median_seconds(lambda: vlm.get_image_features(inputs["pixel_values"]), 3)
        embeds, _ = vlm.embed(inputs["input_ids"], inputs["pixel_values"])
        prefill = median_seconds(lambda: lm(inputs_embeds=embeds, use_cache=True), 3)
        gen = dict(inputs_embeds=embeds, do_sample=False, eos_token_id=None, pad_token_id=processor.pad_token_id)
        one = median_seconds(lambda: lm.generate(**gen, max_new_tokens=1, min_new_tokens=1), 2)
        full = median_seconds(lambda: lm.generate(**gen, max_new_tokens=N_DECODE, min_new_tokens=N_DECODE), 2)
    n_prompt = int(inputs["input_ids"].shape[1])
    return {"image_encode_ms": encode * 1e3, "prompt_tps": n_prompt / prefill,
            "decode_tps": (N_DECODE - 1) / max(full - one, 1e-9), "prompt_tokens": n_prompt,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "weight_bytes_per_token": sum(p.numel() * p.element_size() for n, p in lm.named_parameters()
                                          if "embed_tokens" not in n)}


def llama_run(folder: Path, processor, n_threads: int) -> dict:
    from deploy.llamacpp import PocketLlama, tiles_of
    from deploy.llamacpp.runtime import ExportFolder

    export = ExportFolder.open(folder)
    image = _example(processor.tiling.tile_size)
    with PocketLlama(export.model, export.mmproj, n_threads=n_threads) as llama:
        tiles = llama.tiles_file(tiles_of(image, processor.tiling.for_images(1)))
        messages = [{"role": "user", "content": f"<__media__>\n{QUESTION}"}]
        runs = [llama.request(op="generate", messages=messages, images=[tiles], n_predict=N_DECODE, ignore_eos=True)
                for _ in range(3)]
        rss = llama.peak_rss_bytes()
    t = [r["timings"] for r in runs[1:]]  # the first run warms up
    med = lambda key: statistics.median(x[key] for x in t)  # noqa: E731
    return {"image_encode_ms": med("image_encode_ms"), "prompt_tps": t[0]["prompt_tokens"] / (med("prompt_ms") / 1e3),
            "decode_tps": t[0]["decode_tokens"] / (med("decode_ms") / 1e3), "prompt_tokens": t[0]["prompt_tokens"],
            "peak_rss_mib": rss / 2**20, "weight_bytes_per_token": bytes_per_token(export.model)}


def run_model(name: str, n_threads: int, work: Path) -> dict:
    from deploy.hf import export

    proc = subprocess.run([sys.executable, __file__, "--torch-only", name, "--threads", str(n_threads)],
                          capture_output=True, text=True, check=True)
    result = {"pytorch": json.loads(proc.stdout.strip().splitlines()[-1])}
    vlm, processor = build(name)
    for qtype in TYPES:
        folder = export(vlm, processor, "gguf", work / f"{name}-{qtype}", force=True, qtype=qtype, name=name)
        result[qtype] = llama_run(folder, processor, n_threads)
    del vlm
    return result


MODEL_TEXT = {"pocket-tiny": "pocket-tiny",
              "internvl2-1b-shaped": "an InternVL2-1B-shaped model with random weights (InternViT-300M, "
                                     "Qwen2-0.5B-shaped language model, 151,655-token vocabulary)"}


def table(results: dict, bandwidth: float, n_threads: int, load: tuple[float, float], command: str,
          extra_bufts: bool = False) -> str:
    """The section; `extra_bufts`: the run had llama.cpp's extra buffer types on (POCKET_LLAMA_EXTRA_BUFTS=1)."""
    from bench.sections import machine_line

    models = " and for ".join(MODEL_TEXT.get(name, name) for name in results)
    lines = [
        "## llama.cpp (GGUF f16 / q8_0 / q4_k_m) against PyTorch eager (`adapt export -f gguf`, `make llama-cpp`)",
        "",
        f"One tile-sized image and a short question, then 64 greedy tokens (end-of-text ignored), for {models}. "
        "Image encode: ms for the one tile; prompt: tokens/s over the whole prompt, image "
        "tokens included; decode: tokens/s; peak RSS of the process that ran it (PyTorch: its own process, float32 "
        "eager; llama.cpp: the pocket-llama process, mmproj f16). Medians of the last 2 of 3 runs (llama.cpp) / of 3 "
        "(PyTorch encode and prompt; of 2 for its decode) after a warm-up call. Decode bound = bandwidth / bytes one "
        "decode step reads (every text-model weight at that type, one row of the embedding table); ratios are "
        "against PyTorch in the same run.",
        "",
        f"- Machine: {machine_line()}; {n_threads} threads for both runtimes; llama.cpp from llama-cpp-python 0.3.36's "
        f"vendored tree, CPU, -DGGML_NATIVE=ON, {'with' if extra_bufts else 'without'} its extra buffer types "
        f"({'POCKET_LLAMA_EXTRA_BUFTS=1' if extra_bufts else 'see README'})",
        f"- Memory read bandwidth, same run: **{bandwidth:.1f} GB/s** (1 GiB of float32 read by torch.sum and by a "
        f"matrix-vector product, {n_threads} threads, best of 5 each)",
        f"- Load average before / after the run: {load[0]:.1f} / {load[1]:.1f} (a shared machine: other jobs ran too)",
        f"- Command: `{command}`",
        "",
        "| model | runtime | image encode ms | prompt tok/s | decode tok/s | decode / bound | peak RSS MiB "
        "| vs PyTorch: speed of encode / prompt / decode (>1 = llama.cpp faster), peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, res in results.items():
        base = res["pytorch"]
        for runtime, r in res.items():
            bound = bandwidth * 1e9 / r["weight_bytes_per_token"]
            label = "PyTorch eager f32" if runtime == "pytorch" else f"llama.cpp {runtime}"
            ratio = "—" if runtime == "pytorch" else (
                f"{base['image_encode_ms'] / r['image_encode_ms']:.2f}x / {r['prompt_tps'] / base['prompt_tps']:.2f}x "
                f"/ {r['decode_tps'] / base['decode_tps']:.2f}x, RSS {r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x")
            lines.append(f"| {name} | {label} | {r['image_encode_ms']:.1f} | {r['prompt_tps']:.0f} | {r['decode_tps']:.1f} "
                         f"| {r['decode_tps'] / bound:.0%} | {r['peak_rss_mib']:.0f} | {ratio} |")
    tiny = ("pocket-tiny (1.7 M parameters) is too small for memory bandwidth to matter: per-token overheads "
            "dominate, and its bound column is shown only for completeness. ") if "pocket-tiny" in results else ""
    how = "here with (POCKET_LLAMA_EXTRA_BUFTS=1), by default without," if extra_bufts else "without"
    lines += ["", f"{tiny}llama.cpp runs {how} its extra buffer types "
              "(repacked / AMX kernels): they crashed on an Intel CPU with AMX (README \"Edge export\"), and on an "
              "AMD EPYC with AVX-512 they made decode no faster (InternVL2-1B-shaped, one run: f16 36.0, q8_0 48.5, "
              "q4_k_m 47.2 tok/s against 36.8, 50.2, 57.2 without; "
              "`POCKET_LLAMA_EXTRA_BUFTS=1 python bench/bench_llamacpp.py --models internvl2-1b-shaped`)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    from model.arguments import positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=bench_models, default=",".join(MODELS))
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads of both runtimes (default: $POCKET_LLAMA_THREADS, else the usable cores)")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--torch-only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_threads = args.threads or _threads()
    if args.torch_only:
        print(json.dumps(torch_run(args.torch_only, n_threads)))
        return 0
    require_llama_cpp()  # before minutes of measuring PyTorch and exporting, not after
    load_before = os.getloadavg()[0]
    bandwidth = bandwidth_gbs(n_threads)
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-") as tmp:
        results = {name: run_model(name, n_threads, Path(tmp)) for name in args.models.split(",")}
    from bench.sections import command_line

    extra_bufts = os.environ.get("POCKET_LLAMA_EXTRA_BUFTS", "") == "1"  # what deploy.llamacpp reads
    text = table(results, bandwidth, n_threads, (load_before, os.getloadavg()[0]),
                 ("POCKET_LLAMA_EXTRA_BUFTS=1 " if extra_bufts else "") + command_line(__file__, parser, args),
                 extra_bufts=extra_bufts)
    print(text)
    print(json.dumps({"bandwidth_gbs": bandwidth, "results": results}, indent=1), file=sys.stderr)
    if args.write:
        from bench.sections import write_section

        write_section(ROOT / "BENCHMARKS.md", "bench_llamacpp", text)
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
