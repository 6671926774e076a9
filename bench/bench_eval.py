"""`adapt eval` throughput: samples/s of the quick start's evaluation, the code now against an earlier revision.

Both versions score pocket-tiny (the quick start's base model) on the quick start's held-out land-cover and general
sets (the same data, recipe, batch size and greedy settings) in fresh interpreters, interleaved, and their answers
are compared: a speed-up that changed an answer is reported as such. Also now in bfloat16 (``model.dtype``), with
the share of answers equal to float32's.

    python bench/bench_eval.py --write          # BENCHMARKS.md section bench_eval
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sections import (  # noqa: E402
    ROOT,
    command_line,
    machine_line,
    positive_int,
    publish,
    run_script,
    unpack_revision,
)

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "bench_eval"
BEFORE = "5289b19~1"  # the revision before issue 16's work
KNOWN = {"17e9232": "with a read-ahead thread, reverted after this benchmark"}  # --also revisions the text explains

# run inside the version under test (PYTHONPATH / cwd = its tree): time `predict` and the whole evaluation
PROBE = """
import json, sys, time
from pathlib import Path
import adapt.run_eval as run_eval
from adapt.recipe import load_recipe

recipe_path, out, *overrides = sys.argv[1:]
recipe = load_recipe(Path(recipe_path), overrides)
timed = {}
inner = run_eval.predict
def predict(*args, **kwargs):
    start = time.perf_counter()
    result = inner(*args, **kwargs)
    timed["predict"] = time.perf_counter() - start
    return result
run_eval.predict = predict
run_eval.evaluate_model(recipe, recipe.model.source, "base", Path(out), progress=False)
answers = [json.loads(line)["prediction"] for line in (Path(out) / "predictions_base.jsonl").open()]
print("RESULT " + json.dumps({"predict_s": timed["predict"], "answers": answers,
                              "batch_size": recipe.eval.batch_size}))
"""


def _run(code: Path, recipe: Path, out: Path, overrides: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(code)}
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, str(recipe), str(out), *overrides], cwd=code, env=env,
                          capture_output=True, text=True, timeout=1800)
    process_s = time.perf_counter() - start  # the whole run as a user waits for it: start-up and imports included
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"evaluation in {code} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "process_s": process_s}


def measure(repeats: int, before: str, also: list[str], command: str) -> str:
    from adapt.quickstart import prepare_landcover

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {"now": ROOT, "before": unpack_revision(before, work / "before")}
        trees.update({f"`{rev}`": unpack_revision(rev, work / f"also-{k}") for k, rev in enumerate(also)})
        prepare_landcover(work / "data")
        runs = {}
        for k, (name, code) in enumerate(trees.items()):  # each version's own template (same eval settings)
            shutil.copyfile(code / "templates" / "recipes" / "quickstart.yaml", work / f"recipe-{k}.yaml")
            runs[name] = (code, f"recipe-{k}", [])
        runs["now, bfloat16"] = (ROOT, "recipe-0", ["model.dtype=bfloat16"])
        results: dict[str, list[dict]] = {name: [] for name in runs}
        with tqdm(total=repeats * len(runs), desc="evaluations") as bar:
            for r in range(repeats):  # interleaved: load drift hits every version alike
                for name, (code, recipe, overrides) in runs.items():
                    results[name].append(_run(code, work / f"{recipe}.yaml", work / f"out-{r}", overrides))
                    bar.update()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    n = len(results["now"][0]["answers"])
    counts = {name: sorted({len(r["answers"]) for r in rs}) for name, rs in results.items()}
    if any(c != [n] for c in counts.values()):  # samples/s divides every version's time by n
        raise SystemExit("the versions evaluated different numbers of samples, so their samples/s and answers do not "
                         "compare: " + ", ".join(f"{name} {'/'.join(map(str, c))}" for name, c in counts.items()))
    reference = results["before"][0]["answers"]
    rows = []
    for name, rs in results.items():
        predict_s = statistics.median(r["predict_s"] for r in rs)
        total_s = statistics.median(r["process_s"] for r in rs)
        base = results["before"]
        speedup = statistics.median(r["predict_s"] for r in base) / predict_s
        speedup_total = statistics.median(r["process_s"] for r in base) / total_s
        same = sum(a == b for a, b in zip(rs[0]["answers"], reference))
        consistent = all(r["answers"] == rs[0]["answers"] for r in rs)
        rows.append(f"| {name} | {n / predict_s:.1f} | {predict_s:.2f} | {total_s:.2f} | **{speedup:.2f}x** | "
                    f"{speedup_total:.2f}x | {same} of {n}{'' if consistent else ' (varied between rounds)'} |")
    fp32_vs_bf16 = sum(a == b for a, b in zip(results["now"][0]["answers"], results["now, bfloat16"][0]["answers"]))
    return "\n".join([
        "## Evaluation throughput (`adapt eval`)",
        "",
        f"The quick start's evaluation of its base model (pocket-tiny on the held-out land-cover and general sets, "
        f"{n} samples, eval.batch_size {results['now'][0]['batch_size']}, greedy) in a fresh interpreter per run, "
        f"the code now and `{before}` (before issue 16's work)"
        f"{''.join(f', {r}' + (f' ({KNOWN[r.strip(chr(96))]})' if r.strip(chr(96)) in KNOWN else '') for r in results if r.startswith('`'))}, "
        f"interleaved, {repeats} rounds; medians. "
        "Samples/s = samples / time in `predict` (read, tile, tokenise, generate, decode, score); the whole run is "
        "the process from start to exit (interpreter, imports, loading the model, the measure pass, the report). "
        "Speed-up = before / now. "
        "Answers equal: the run's answers against `before`'s, sample by sample.",
        "",
        f"- Machine: {machine_line()}; load average {load:.1f} over the last minute at the end of the run",
        f"- Command: `{command}`",
        "",
        "| version | samples/s | predict (s) | whole run (s) | speed-up, predict | speed-up, whole run | "
        "answers equal to before's |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"bfloat16 answers equal to float32's (now): {fp32_vs_bf16} of {n}.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=3, help="rounds over all versions")
    parser.add_argument("--before", default=BEFORE, help="the git revision to compare with")
    parser.add_argument("--also", nargs="*", default=["17e9232"],
                        help="more revisions to time beside them (default: the eval read-ahead, since reverted)")
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = parser.parse_args(argv)
    publish(measure(args.repeats, args.before, args.also, command_line(__file__, parser, args)), BENCHMARKS_MD, SECTION,
            args.write)


if __name__ == "__main__":
    run_script(main)
