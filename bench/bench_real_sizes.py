"""Real model sizes on CPU: one LoRA optimizer step of the public-model presets, with random weights, no network.

    python bench/bench_real_sizes.py [--models internvl2-1b,mini-internvl-4b] [--precisions bf16,fp32]
                                     [--steps 2] [--batch-size 2] [--max-tiles 4] [--image-size 448]
                                     [--work /tmp/real_sizes] [--min-free-gb 14] [--write]

For each preset its config (model/presets.py) is built with seeded random weights, in bfloat16, in a subprocess and
written as a checkpoint folder in pocket-adapt's own layout (`model.save`). The presets' tokenizers live on the hub,
so the folder gets the bundled pocket-tiny tokenizer instead: the config keeps the preset's vocabulary size (the
embedding and LM-head shapes are the real ones) and only `image_token_id` is set to that tokenizer's `<IMG_CONTEXT>`
id. Nothing is downloaded.

The data is a small copy of `adapt quickstart`'s (domains/general/world.py generate_general + generate_landcover,
`--image-size` px images: 448 px = one 448 px tile = 256 image tokens). The recipe is the `quickstart` template with:
LLM LoRA (r 16, alpha 32, all Linear layers), projector full, vision frozen, `training.gradient_checkpointing=true`,
`training.max_seq_length=2048`, `tiling.max_tiles=--max-tiles`, batch `--batch-size` x accumulation 1.

Each (preset, precision) runs in its own subprocess (one at a time): adapt/train.py's `Trainer(recipe).run()` for
`--steps` optimizer steps (step 1 is the warm-up; the later ones are timed; the schedule has one step more so no
merged final model is written: a LoRA checkpoint only). Per run: parameters, trainable parameters, tokens per step
(non-pad input positions, image tokens included), step time (`train_log.jsonl`'s `step_time`), tokens/s, and peak
RSS: the process' peak while loading the model and data (`VmHWM` after `Trainer` is built), then, the peak being reset
(`/proc/self/clear_refs`), the peak over the optimizer steps, and the larger of the two (the subprocess' peak;
`ru_maxrss` reads the same high-water mark, so after the reset it is the steps' peak only).

Precision: `bf16` = `training.precision=bf16` (autocast); the weights are `model.dtype` = float32 for presets whose
fp32 weights fit (internvl2-1b) and bfloat16 otherwise (mini-internvl-4b: 3.8 B params would be 15 GB in fp32);
the table says which. `model.checkpoints.io.load_vlm` builds the model in the dtype its weights are stored in, so the
4B preset's bfloat16 checkpoint never passes through a 15 GB float32 copy (`bench/bench_load.py` measures it).

A run is skipped (and the table says why) when `MemAvailable` is below `--min-free-gb` GiB for the 4B preset
(6 GiB for the others) right before it starts. `--write` puts the table into BENCHMARKS.md (section
bench_real_sizes); `--previous WORK/rows.json` keeps an earlier invocation's rows for presets not run again (one preset
at a time on a small machine). The machine is shared: the load averages before and after are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTION = "bench_real_sizes"
PY = sys.executable
BIG = {"mini-internvl-4b", "mini-internvl-2b"}  # presets whose weights are kept in bfloat16
MIN_FREE_SMALL_GB = 6.0


# ------------------------------------------------------------------------------------------- child: build
def build_checkpoint(preset: str, out: Path) -> dict:
    """The preset's model with seeded random bfloat16 weights and the pocket-tiny tokenizer, saved in our layout."""
    import torch
    from transformers import AutoTokenizer

    import model as model_core
    from model.presets import POCKET_TINY_TOKENIZER, preset_config
    from model.processor import VLMProcessor
    from model.resources import assets_dir
    from model.vlm import PocketVLM

    tokenizer = AutoTokenizer.from_pretrained(str(assets_dir() / POCKET_TINY_TOKENIZER))
    config = preset_config(preset)
    config.image_context_token = "<IMG_CONTEXT>"  # the bundled tokenizer's (MobileVLM's own is <image>)
    image_id = tokenizer.convert_tokens_to_ids(config.image_context_token)
    assert image_id < config.text_config.vocab_size, "the tokenizer's image token must fit the preset's vocabulary"
    config.image_token_id = image_id
    started = time.perf_counter()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # never materialise the fp32 model
    try:
        vlm = PocketVLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    vlm = vlm.to(torch.bfloat16)
    params = sum(p.numel() for p in vlm.parameters())
    model_core.save(vlm, VLMProcessor.from_config(vlm.config, tokenizer), out)
    return {"params": params, "build_s": time.perf_counter() - started}


# ------------------------------------------------------------------------------------------- child: train
def _proc_status(key: str) -> float:
    """A `/proc/self/status` memory line in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def train_child(spec: dict, result_path: Path) -> dict:
    import resource

    import torch

    from adapt.parts import trainable_summary
    from adapt.recipe import load_recipe
    from adapt.train import Trainer

    torch.set_num_threads(spec["threads"])
    recipe = load_recipe(Path(spec["recipe"]), spec["overrides"])
    started = time.perf_counter()
    trainer = Trainer(recipe, progress=False)  # a bfloat16 checkpoint is built in bfloat16 (load_vlm)
    load_s = time.perf_counter() - started
    load_peak = _proc_status("VmHWM")
    rss_after_load = _proc_status("VmRSS")
    reset = _reset_peak()

    summary = trainable_summary(trainer.model)
    params = sum(total for _, total in summary.values())
    trainable = sum(n for n, _ in summary.values())
    per_step: list[dict] = []
    tokens = {"positions": 0, "padded": 0, "rows": 0}
    row_losses, log = trainer._row_losses, trainer._log

    def counting_row_losses(batch, autocast):
        mask = batch.get("attention_mask")
        ids = batch["input_ids"]
        tokens["positions"] += int(mask.sum()) if mask is not None else ids.numel()
        tokens["padded"] += ids.numel()
        tokens["rows"] += ids.shape[0]
        return row_losses(batch, autocast)

    def result(finished: bool) -> dict:
        return {"params": params, "trainable": trainable, "load_s": load_s, "load_peak_gb": load_peak,
                "rss_after_load_gb": rss_after_load, "peak_reset": reset, "train_peak_gb": _proc_status("VmHWM"),
                "ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "steps": per_step,
                "model_dtype": recipe.model.dtype, "precision": recipe.training.precision, "finished": finished}

    def recording_log(entry, *args, **kwargs):
        per_step.append({**entry, **tokens, "peak_gb": _proc_status("VmHWM"), "rss_gb": _proc_status("VmRSS")})
        tokens.update(positions=0, padded=0, rows=0)
        # written after every step, so a run stopped for time still reports the steps it did
        result_path.write_text(json.dumps(result(False)))
        return log(entry, *args, **kwargs)

    trainer._row_losses, trainer._log = counting_row_losses, recording_log
    trainer.run(stop_after=spec["steps"])
    return result(True)


# ------------------------------------------------------------------------------------------- parent
def loadavg() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def child(args: list[str], log: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(["nice", "-n", "5", PY, str(Path(__file__).resolve()), *args], cwd=ROOT, stdout=fh,
                             stderr=subprocess.STDOUT)
    return rc, time.perf_counter() - started


def prepare_data(data: Path, image_size: int, n: int) -> None:
    from domains.general.world import generate_general, generate_landcover

    if not (data / "landcover" / "train.jsonl").is_file():
        generate_general(data / "general", n_train=n, n_test=4, image_size=image_size, answer_style="label")
        generate_landcover(data / "landcover", n_train=n, n_test=4, image_size=image_size, answer_style="label")


def recipe_overrides(source: Path, out: Path, precision: str, dtype: str, args) -> list[str]:
    from adapt.recipe import path_override

    return [
        path_override("model.source", source), f"model.dtype={dtype}",
        "parts.vision.mode=frozen", "parts.projector.mode=full", "parts.llm.mode=lora", "parts.llm.lora.r=16",
        "parts.llm.lora.alpha=32", "training.gradient_checkpointing=true", f"training.precision={precision}",
        f"training.batch_size={args.batch_size}", "training.grad_accum=1", "training.max_seq_length=2048",
        f"training.max_steps={args.steps + 1}", "training.num_workers=0", f"tiling.max_tiles={args.max_tiles}",
        "output.save_every=1000000", "eval.every=null", "logging.every=1", "logging.tensorboard=false",
        path_override("output.dir", out),
    ]


def run_all(args) -> list[dict]:
    from bench.sections import available_gib
    from model.resources import templates_dir

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prepare_data(work / "data", args.image_size, args.samples)
    recipe_path = work / "quickstart.yaml"
    shutil.copyfile(templates_dir() / "recipes" / "quickstart.yaml", recipe_path)
    rows = []
    for preset in args.models.split(","):
        big = preset in BIG
        need = args.min_free_gb if big else MIN_FREE_SMALL_GB
        dtype = "bfloat16" if big else "float32"
        precisions = ["bf16"] if big else args.precisions.split(",")
        free = available_gib()
        if free < need:
            rows.append({"preset": preset, "skipped": f"{free:.1f} GiB available < {need:g} GiB needed"})
            print(f"{preset}: skipped ({rows[-1]['skipped']})", flush=True)
            continue
        ckpt = work / f"{preset}-random"
        built: dict = {}
        if not (ckpt / "config.json").is_file():
            print(f"{preset}: building random bf16 checkpoint in {ckpt} ({free:.1f} GiB available)", flush=True)
            rc, wall = child(["--child-build", preset, str(ckpt)], work / f"{preset}-build.log")
            if rc:
                rows.append({"preset": preset, "skipped": f"building the checkpoint failed (rc {rc}, "
                                                          f"see {work / f'{preset}-build.log'})"})
                continue
            built = {"build_s": wall}
        for precision in precisions:
            free = available_gib()
            if free < need:
                rows.append({"preset": preset, "precision": precision, "model_dtype": dtype,
                             "skipped": f"{free:.1f} GiB available < {need:g} GiB needed"})
                continue
            out = work / "runs" / f"{preset}-{precision}"
            shutil.rmtree(out, ignore_errors=True)
            result_path = work / f"{preset}-{precision}.result.json"
            spec = {"recipe": str(recipe_path), "steps": args.steps, "threads": args.threads,
                    "overrides": recipe_overrides(ckpt.resolve(), out.resolve(), precision, dtype, args)}
            spec_path = work / f"{preset}-{precision}.spec.json"
            spec_path.write_text(json.dumps(spec))
            result_path.unlink(missing_ok=True)
            load_before = loadavg()
            print(f"{preset} {precision} (weights {dtype}): {free:.1f} GiB available, load {load_before}", flush=True)
            rc, wall = child(["--child-train", str(spec_path), str(result_path)], work / f"{preset}-{precision}.log")
            row = {"preset": preset, "precision": precision, "model_dtype": dtype, "free_before_gb": free,
                   "load_before": load_before, "load_after": loadavg(), "wall_s": wall, **built}
            partial = json.loads(result_path.read_text()) if result_path.is_file() else {}
            if partial.get("steps"):  # a run stopped (killed for time or memory) after some steps keeps them
                row.update(partial)
                if rc:
                    row["stopped"] = f"stopped after step {len(partial['steps'])} (rc {rc})"
            else:
                tail = (work / f"{preset}-{precision}.log").read_text()[-600:]
                row["skipped"] = f"the run failed (rc {rc}): {tail.strip().splitlines()[-1] if tail.strip() else ''}"
            rows.append(row)
            print(json.dumps(row, indent=1), flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(ckpt, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| preset | weights | precision | parameters | trainable | batch | tokens / step (padded) | step 1 s (warm-up) | "
            "timed step s | tokens/s | peak RSS load GB | peak RSS steps GB | peak RSS overall GB | load avg before → after |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        if "steps" not in r:
            lines.append(f"| {r['preset']} | {r.get('model_dtype', '—')} | {r.get('precision', '—')} | "
                         f"not run: {r['skipped']} |||||||||||")
            continue
        steps = r["steps"]
        timed = steps[1:] or steps
        step_s = sum(s["step_time"] for s in timed) / len(timed)
        tok = sum(s["positions"] for s in timed) / len(timed)
        padded = sum(s["padded"] for s in timed) / len(timed)
        lines.append(
            f"| {r['preset']} | {r['model_dtype']} | {r['precision']} | {r['params'] / 1e6:,.0f} M | "
            f"{r['trainable'] / 1e6:.1f} M | {steps[0]['rows']} | {tok:.0f} ({padded:.0f}) | {steps[0]['step_time']:.1f} | "
            f"{step_s:.1f}{'' if steps[1:] else ' (only step 1 run)'}{' — ' + r['stopped'] if r.get('stopped') else ''} | {tok / step_s:.1f} | {r['load_peak_gb']:.2f} | "
            f"{r['train_peak_gb']:.2f} | {max(r['load_peak_gb'], r['train_peak_gb']):.2f} | {r['load_before']} → {r['load_after']} |")
    return "\n".join(lines)


def _per_image(image_size: int, max_tiles: int) -> str:
    """What one `image_size` px square image is to the presets (448 px tiles, 256 image tokens a tile)."""
    from model.tiling import TilingConfig, count_tiles

    tiles = count_tiles(image_size, image_size, TilingConfig(tile_size=448, max_tiles=max_tiles))
    return ("one 448 px tile, 256 image tokens" if tiles == 1 else
            f"{tiles} 448 px tiles (thumbnail included), {256 * tiles} image tokens")


def section(rows: list[dict], args, argv: list[str], load_before: str, load_after: str) -> str:
    from bench.sections import machine_line
    from model.limits import usable_cores

    return f"""## Real model sizes on CPU (one optimizer step)

Public-model presets at their real shapes with seeded random weights (no download; the bundled pocket-tiny tokenizer
stands in for the hub one, the vocabulary size stays the preset's), trained by `adapt train`'s `Trainer` in one
subprocess per row: LLM LoRA r 16 (alpha 32, every Linear layer), projector full, vision frozen, gradient
checkpointing, AdamW, batch as in the table (accumulation 1), max_seq_length 2048, {args.image_size} px synthetic quick-start
images (max_tiles {args.max_tiles}: {_per_image(args.image_size, args.max_tiles)}, per image), {args.threads} torch thread(s),
`nice -n 5`. Step 1 is the warm-up; "timed step" is the mean of the later steps (a row run for one step only
shows step 1 again). weights = `model.dtype`
(float32 master weights where they fit; bfloat16 for the 4B preset, whose fp32 weights alone are 15 GB);
precision = `training.precision` (bf16 = autocast). Tokens = non-pad input positions, image tokens included. Peak RSS:
the process' peak while loading model + data, then (peak reset) over the optimizer steps, and the larger of the two.

- Command: `{shlex.join(['python', 'bench/bench_real_sizes.py', *argv])}`
- Machine: {machine_line()}
- Load average (1, 5, 15 min) before: {load_before}; after: {load_after} (per row: the table below). The run's own
  {args.threads} thread(s) make a load of about {args.threads} on this {usable_cores()}-core machine; well above that,
  other jobs shared the cores and the times are upper bounds

{table(rows)}
"""


def _previous_rows(parser: argparse.ArgumentParser, path: str, ran: set[str]) -> list[dict]:
    """The rows of an earlier run's rows.json for presets not run now; a parser error naming the file if it
    cannot be read."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        parser.error(f"--previous {path}: {err}")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "preset" in r for r in rows):
        parser.error(f"--previous {path}: not the rows.json of a bench_real_sizes run (a list of rows with a preset)")
    return [r for r in rows if r["preset"] not in ran]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-build"]:
        info = build_checkpoint(argv[1], Path(argv[2]))
        print(json.dumps(info))
        return 0
    if argv[:1] == ["--child-train"]:
        result = train_child(json.loads(Path(argv[1]).read_text()), Path(argv[2]))
        Path(argv[2]).write_text(json.dumps(result))
        return 0
    from bench.sections import positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="internvl2-1b,mini-internvl-4b")
    parser.add_argument("--precisions", default="bf16,fp32", help="for presets with fp32 weights; 4B: bf16 only")
    parser.add_argument("--steps", type=positive_int, default=2, help="optimizer steps per run; the first is the warm-up")
    parser.add_argument("--batch-size", type=positive_int, default=2)
    parser.add_argument("--max-tiles", type=positive_int, default=4)
    parser.add_argument("--image-size", type=positive_int, default=448)
    parser.add_argument("--samples", type=positive_int, default=24, help="training samples per generated set")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--min-free-gb", type=float, default=14.0, help="MemAvailable needed for the 4B preset")
    parser.add_argument("--work", default="/tmp/real_sizes")
    parser.add_argument("--keep", action="store_true", help="keep the random checkpoints")
    parser.add_argument("--previous", help="rows.json of an earlier run: its rows for presets not in --models are "
                                           "kept in the table (one preset at a time on a small machine)")
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = parser.parse_args(argv)
    # read before the run, which rewrites WORK/rows.json (where the first run left it), and before hours of measuring
    previous = _previous_rows(parser, args.previous, set(args.models.split(","))) if args.previous else []
    load_before = loadavg()
    rows = run_all(args)
    Path(args.work, "rows.json").write_text(json.dumps(rows))
    rows = previous + rows
    text = section(rows, args, argv, load_before, loadavg())
    print(text)
    Path(args.work, "section.md").write_text(text)
    if args.write:
        from bench.sections import write_section

        write_section(ROOT / "BENCHMARKS.md", SECTION, text)
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
