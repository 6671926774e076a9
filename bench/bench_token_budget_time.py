"""Training and inference time of each image-token budget of the driving quick start (issue 13 item 3), measured on
their own so that the accuracy run (`bench_token_budget.py`, ~2 h) need not hold the machine quiet: the same
variants and recipe, each trained a few optimizer steps from pocket-tiny in a fresh `Trainer`, variants interleaved
round by round so load drift hits each alike; medians, ratios against the baseline of the same run.

Timed: the optimizer step (`train_log.jsonl`'s `step_time`: forward, backward and update of one batch, data loading
included) after the warm-up steps, and on the trained weights the prompt's forward pass (prefill: tiles -> vision ->
projector -> LLM) and a greedy answer of a fixed number of new tokens (prefill plus decode, as `adapt chat` runs it)
over held-out DriveLM prompts.

    python bench/bench_token_budget_time.py --write   # README.md section `token_budget_time`
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_token_budget import (  # noqa: E402
    TEMPLATE,
    VARIANTS,
    budget_overrides,
    mini_internvl_tokens,
    prefill_ms,
    stitched_tokens,
)
from bench.sections import ROOT, command_line, machine_line, positive_int, publish  # noqa: E402

README = ROOT / "README.md"
SECTION = "token_budget_time"
PROMPTS = 4  # held-out DriveLM prompts timed per variant and round


def step_times(log: Path, warmup: int) -> list[float]:
    """The `step_time` of every logged optimizer step after the first `warmup` ones."""
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    times = [e["step_time"] for e in entries if "step_time" in e and e["step"] > warmup]
    if not times:
        raise ValueError(f"{log}: no optimizer step after the {warmup} warm-up steps was logged")
    return times


def answer_ms(vlm, processor, records: list, new_tokens: int) -> float:
    """Median milliseconds of a greedy answer of exactly `new_tokens` tokens (no early end), prompt included."""
    import torch

    from model.tiling import load_image

    times = []
    with torch.inference_mode():
        for record in records:
            enc = processor(record.conversations[:1], images=[load_image(p) for p in record.images])
            inputs = {k: v for k, v in enc.to_model_inputs().items() if k != "labels"}
            started = time.perf_counter()
            out = vlm.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            times.append(time.perf_counter() - started)
            if out.shape[-1] != new_tokens:
                raise RuntimeError(f"asked for {new_tokens} new tokens, got {out.shape[-1]}")
    return 1000 * statistics.median(times)


def time_variant(key: str, recipe_path: Path, out: Path, budget: list[str], warmup: int, new_tokens: int,
                 per_tile: int) -> dict:
    """One round of one variant: train `budget`'s steps from pocket-tiny, then time prefill and answers (`per_tile`:
    pocket-tiny's image tokens a tile, which the Q-Former's queries scale with)."""
    import model as model_core
    from adapt.data import SkipLog, read_source
    from adapt.recipe import load_recipe, path_override
    from adapt.train import Trainer, source_specs

    variant = VARIANTS[key]
    recipe = load_recipe(recipe_path,
                         [*budget, *variant.overrides(per_tile), path_override("output.dir", out.resolve())])
    shutil.rmtree(out, ignore_errors=True)
    final = Trainer(recipe, progress=False).run()
    steps = step_times(out / "train_log.jsonl", warmup)

    vlm, processor = model_core.load(final)
    processor.tiling = recipe.tiling_for(processor.tiling)
    tiles, tokens = stitched_tokens(processor)
    spec = next(s for s in source_specs(recipe.data.eval_sources) if s.name == "drivelm")
    held_out = read_source(spec, SkipLog())[:PROMPTS]
    return {"steps": steps, "prefill_ms": prefill_ms(vlm, processor, held_out),
            "answer_ms": answer_ms(vlm, processor, held_out, new_tokens), "tiles": tiles, "tokens": tokens,
            "tokens_per_tile": vlm.config.image_seq_length,
            "mini_internvl_tokens": mini_internvl_tokens(recipe_path, budget, variant)}


def summarise(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: median step, prefill and answer time over all rounds, and the baseline's over each (speed-up:
    > 1 is faster than the baseline)."""
    medians = {key: {"step_s": statistics.median([t for r in runs for t in r["steps"]]),
                     "prefill_ms": statistics.median([r["prefill_ms"] for r in runs]),
                     "answer_ms": statistics.median([r["answer_ms"] for r in runs]), **{
                         k: runs[0][k] for k in ("tiles", "tokens", "tokens_per_tile", "mini_internvl_tokens")}}
               for key, runs in rounds.items()}
    base = medians.get("baseline")
    for m in medians.values():
        for what in ("step_s", "prefill_ms", "answer_ms"):
            m[f"{what}_speedup"] = base[what] / m[what] if base else None
    return medians


def table(medians: dict[str, dict], args: argparse.Namespace, command: str, minutes: float, load: str) -> str:
    head = ["budget (recipe option)", "image tokens, pocket-tiny (tiles x tokens/tile)", "image tokens, Mini-InternVL",
            f"train step, batch {args.batch_size} (s)", "speed-up", "prefill (ms)", "speed-up",
            f"answer, {args.new_tokens} tokens (ms)", "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def ratio(value: float | None) -> str:
        return "–" if value is None else f"**{value:.2f}x**"

    for key, m in medians.items():
        lines.append("| " + " | ".join([
            VARIANTS[key].label, f"{m['tokens']} ({m['tiles']} x {m['tokens_per_tile']})",
            str(m["mini_internvl_tokens"]), f"{m['step_s']:.2f}", ratio(m["step_s_speedup"]),
            f"{m['prefill_ms']:.0f}", ratio(m["prefill_ms_speedup"]),
            f"{m['answer_ms']:.0f}", ratio(m["answer_ms_speedup"])]) + " |")
    lines += [
        "",
        f"Each variant trained {args.warmup + args.steps} optimizer steps of batch {args.batch_size} from "
        f"`pocket-tiny` with the template's recipe in a fresh `Trainer`, {args.rounds} rounds with the variants "
        "interleaved; train "
        f"step = median `step_time` of the {args.steps} steps after {args.warmup} warm-up steps of every round (data "
        "loading included); prefill = median forward pass of a held-out DriveLM prompt (stitched 2688x896 view) on "
        f"the trained weights, answer = a greedy answer of exactly {args.new_tokens} new tokens to it, prompt "
        f"included ({PROMPTS} prompts a round); speed-up = baseline's time / the row's, same run. Fewer tiles cut the "
        "vision tower's work and the LLM's image tokens; pooling and the Q-Former run the tower on all 13 tiles and "
        "cut only the LLM's tokens. These are pocket-tiny's times (a 0.4 M-parameter tower, a 1.3 M-parameter LLM); "
        "on Mini-InternVL the tower (300 M a tile) and the LLM (1.8 B or 3.8 B, over every image token) weigh "
        "otherwise. "
        f"{minutes:.1f} min in all; {load}.",
        "",
        f"Measured on {machine_line()}; regenerate with `{command}`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import os

    from adapt.quickstart import prepare_driving
    from model.resources import templates_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "token_budget_time")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=["baseline", "tiles2", "pooled", "qformer"])
    parser.add_argument("--rounds", type=positive_int, default=3, help="rounds over all variants")
    parser.add_argument("--warmup", type=positive_int, default=2, help="untimed optimizer steps a round")
    parser.add_argument("--steps", type=positive_int, default=6, help="timed optimizer steps a round")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="samples a step (template: 16)")
    parser.add_argument("--new-tokens", type=positive_int, default=32, help="tokens of each timed answer")
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of {README.name}")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = args.out / "data"
    if not (data / "driving" / "drivelm_val.jsonl").exists():
        prepare_driving(data)
    recipe_path = args.out / f"{TEMPLATE}.yaml"
    shutil.copyfile(templates_dir() / "recipes" / f"{TEMPLATE}.yaml", recipe_path)
    budget = budget_overrides(args.warmup + args.steps, args.batch_size, 1, args.new_tokens)
    import model as model_core

    per_tile = model_core.load("pocket-tiny")[0].config.image_seq_length
    rounds: dict[str, list[dict]] = {key: [] for key in args.variants}
    with tqdm(total=args.rounds * len(args.variants), desc="token budget timing") as bar:
        for r in range(args.rounds):
            for key in args.variants:
                bar.set_postfix_str(f"round {r + 1} {key}")
                rounds[key].append(time_variant(key, recipe_path, args.out / key, budget, args.warmup,
                                                args.new_tokens, per_tile))
                bar.update()
    load = f"load average {os.getloadavg()[0]:.1f} over the last minute at the end"
    command = command_line(__file__, parser, args, skip=("out",))
    section = table(summarise(rounds), args, command, (time.perf_counter() - started) / 60, load)
    (args.out / "rounds.json").write_text(json.dumps(rounds, indent=1) + "\n", encoding="utf-8")
    publish(section, README, SECTION, args.write)
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
