"""Loading a bfloat16 checkpoint: peak memory and seconds of `model.load`, the code now against an earlier revision.

    python bench/bench_load.py [--models internvl2-1b,mini-internvl-4b] [--repeats 2] [--write]

Each preset is built once with seeded random bfloat16 weights and saved in pocket-adapt's own layout
(`bench/bench_real_sizes.py`'s `build_checkpoint`: the preset's shapes, the bundled pocket-tiny tokenizer, no
network). Then `model.load(folder)` runs in a fresh interpreter for the code now and for `--before` (default: the
revision before the model was built in its stored dtype with the weights read assigned, not copied), interleaved; per run the process' peak RSS (`ru_maxrss`),
its RSS before loading (interpreter and imports) and the load time. Both load the model in bfloat16; the weights
loaded are compared (a digest of every tensor) so a saving that changed the model would show. `--write` puts the
table into BENCHMARKS.md (section bench_load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sections import (  # noqa: E402
    ROOT,
    available_gib,
    command_line,
    machine_line,
    positive_int,
    publish,
    unpack_revision,
)

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "bench_load"
BEFORE = "5e8fc7d~1"  # before load_vlm built the model in its stored dtype and assigned the weights read

PROBE = """
import hashlib, json, resource, sys, time
from pathlib import Path
def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
import torch, model
start_rss = rss_mib()
start = time.perf_counter()
vlm, _ = model.load(sys.argv[1])
seconds = time.perf_counter() - start
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with torch.no_grad():  # read every weight once (file-mapped weights become resident), as a first forward would
    for tensor in vlm.state_dict().values():
        tensor.sum()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
digest = hashlib.sha256()
for name, tensor in sorted(vlm.state_dict().items()):  # every element's bytes, as stored (no float32 copy)
    digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
    digest.update(tensor.detach().contiguous().flatten().view(torch.uint8).numpy().tobytes())
print("RESULT " + json.dumps({"seconds": seconds, "peak_mib": peak, "loaded_mib": loaded,
                              "start_mib": start_rss, "dtype": str(vlm.dtype), "digest": digest.hexdigest(),
                              "params": sum(p.numel() for p in vlm.parameters())}))
"""


def _load(code: Path, folder: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(folder)], cwd=code, env=env, capture_output=True,
                          text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"loading {folder} with {code} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _build(preset: str, folder: Path) -> None:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from bench.bench_real_sizes import build_checkpoint; build_checkpoint({preset!r}, Path({str(folder)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:  # the child's own error, not a CalledProcessError that hides it
        raise SystemExit(f"building the {preset} checkpoint in {folder} failed:\n{done.stderr[-3000:]}")


def measure(models: list[str], repeats: int, before: str, work: Path, command: str) -> str:
    old = unpack_revision(before, work / "before")
    rows = []
    for preset in models:
        folder = work / preset
        _build(preset, folder)
        size_gb = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e9
        # before: the weights read (1x) + a float32 model (2x) + the bfloat16 cast (1x); skipped where it cannot fit
        versions = [("now", ROOT)]
        if available_gib() > 4.5 * size_gb / 1.074:
            versions.append(("before", old))
        runs: dict[str, list[dict]] = {version: [] for version, _ in versions}
        for _ in tqdm(range(repeats), desc=f"loading {preset}"):
            for version, code in versions:
                runs[version].append(_load(code, folder))
        peak = {v: statistics.median(r["peak_mib"] - r["start_mib"] for r in rs) / 1024 for v, rs in runs.items()}
        loaded = {v: statistics.median(r["loaded_mib"] - r["start_mib"] for r in rs) / 1024 for v, rs in runs.items()}
        secs = {v: statistics.median(r["seconds"] for r in rs) for v, rs in runs.items()}
        if "before" in runs:
            same = "identical" if runs["now"][0]["digest"] == runs["before"][0]["digest"] else "DIFFERENT"
            then = [f"{loaded['before']:.2f}", f"{peak['before']:.2f}", f"**{peak['now'] / peak['before']:.2f}x**",
                    f"{secs['before']:.1f}", same]
        else:
            then = ["", f"not run (needs ~{4.5 * size_gb / 1.074:.0f} GiB free)", "", "", ""]
        rows.append(f"| {preset} | {runs['now'][0]['params'] / 1e6:,.0f} M | {size_gb:.2f} | {runs['now'][0]['dtype']} | "
                    f"{loaded['now']:.2f} | {then[0]} | {peak['now']:.2f} | {then[1]} | {then[2]} | {secs['now']:.1f} | "
                    f"{then[3]} | {then[4]} |")
    load = os.getloadavg()[0]
    return "\n".join([
        "## Loading a bfloat16 checkpoint (`model.load`)",
        "",
        "Each preset built with seeded random bfloat16 weights and saved in pocket-adapt's layout (the preset's shapes, "
        f"the bundled tokenizer), then `model.load(folder)` in a fresh interpreter, now and `{before}` (which built the "
        f"model in float32, copied the weights read into it and cast it after; now it is built in the stored dtype and "
        f"the tensors read become its parameters), interleaved, {repeats} rounds, medians. Memory: the process' peak RSS "
        "minus its RSS before the call (interpreter, torch and transformers imported), right after `model.load` and "
        "after every weight has been read once (as a first forward pass would; now the parameters are the file's "
        "copy-on-write mapping, read from disk as they are first used). Weights: a digest of every loaded tensor, now "
        "against before.",
        "",
        f"- Machine: {machine_line()}; load average {load:.1f} over the last minute at the end of the run",
        f"- Command: `{command}`",
        "",
        "| preset | parameters | safetensors GB | loaded as | GiB after load, now | GiB after load, before | "
        "GiB with every weight read, now | same, before | now / before | seconds, now | seconds, before | weights |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="internvl2-1b,mini-internvl-4b")
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--before", default=BEFORE, help="the git revision to compare with")
    parser.add_argument("--work", type=Path, default=None, help="folder for the checkpoints (default: a temp dir)")
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        section = measure(args.models.split(","), args.repeats, args.before, Path(tmp),
                          command_line(__file__, parser, args, skip=("work",)))
    publish(section, BENCHMARKS_MD, SECTION, args.write)


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
