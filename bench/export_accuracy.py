"""Accuracy of the quick-start adapted model after export: PyTorch against llama.cpp, ONNX Runtime and ExecuTorch.

    python bench/export_accuracy.py                                  # every runtime, print the tables
    python bench/export_accuracy.py --write                          # and replace README.md's three sections
    python bench/export_accuracy.py --runtimes onnx --write          # one table alone (llamacpp, onnx, executorch)
    python bench/export_accuracy.py --from-results --write           # the tables of the last run, measuring nothing

The model is `make reproduce`'s land-cover run (`--run`, default runs/reproduce/landcover/adapted: its
quickstart.yaml and train/final); when the run has no train/final it is made first, with `bench/reproduce.py`'s
settings for that variant (`adapt quickstart`, fixed seeds; KEY=VALUE overrides apply to it too, and a run made
with them serves only further quick checks). The adapted model is scored once in PyTorch and then
through each runtime at each type exactly as `adapt eval RECIPE --model adapted=RUN/train/final --runtime NAME
--gguf-type/--onnx-type/--executorch-type TYPE` scores it (`adapt.run_eval.evaluate_model`, the code behind the
CLI: it exports with `adapt export`'s `deploy.hf.export`, then answers the same prompts and tiles in the runtime).
Answers are compared with PyTorch's one by one. Sections written: `llamacpp_quant`, `onnx_accuracy`,
`executorch_accuracy` (README.md). Exports, predictions and results.json go to `--out` (runs/export-accuracy).
llama.cpp is the one `make llama-cpp` builds (deploy/llamacpp/, cached outside the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.sections import ROOT, machine_line, run_script, write_section  # noqa: E402

README = ROOT / "README.md"
DEFAULT_RUN = ROOT / "runs" / "reproduce" / "landcover" / "adapted"
SECTIONS = {"llamacpp": "llamacpp_quant", "onnx": "onnx_accuracy", "executorch": "executorch_accuracy"}
VARIANTS = {"llamacpp": ("f32", "f16", "q8_0", "q4_k_m"), "onnx": ("fp32", "int8"), "executorch": ("fp32", "int8")}
TITLES = {"llamacpp": "llama.cpp", "onnx": "ONNX Runtime", "executorch": "ExecuTorch"}
SIZE_COLUMN = {"llamacpp": "text model file", "onnx": "graph files", "executorch": "model.pte"}
FLAGS = {"llamacpp": "--gguf-type", "onnx": "--onnx-type", "executorch": "--executorch-type"}
TARGETS = {"q8_0": 1.0, "q4_k_m": 3.0}  # llama.cpp: largest change in points allowed per type (issue's targets)
LABEL = "adapted"


# ------------------------------------------------------------------------------------------------------------
# comparison and tables (pure: tests/test_reproduce.py runs them on hand-made predictions)


def compare(reference: list[dict], other: list[dict]) -> dict:
    """How many of `reference`'s answers `other` gives word for word, matched by (source, line); a sample missing
    from `other` counts as different. Returns {"identical", "total", "different": [(source, line), ...]}."""
    answers = {(p["source"], p["line"]): p["prediction"] for p in other}
    different = [(p["source"], p["line"]) for p in reference
                 if answers.get((p["source"], p["line"]), object()) != p["prediction"]]
    return {"identical": len(reference) - len(different), "total": len(reference), "different": different}


def points(value: float | None, reference: float | None) -> str:
    """`value` - `reference` in points (hundredths): "±0.0", "+1.0", "-0.5"."""
    if value is None or reference is None:
        return "–"
    delta = round((value - reference) * 100, 1)
    return "±0.0" if delta == 0 else f"{delta:+.1f}"


def _score(value: float | None) -> str:
    return "not computed" if value is None else f"{value:.3f}"


def table(runtime: str, pytorch: dict, rows: list[dict], domain_label: str) -> str:
    """The markdown table: PyTorch's row, then one per variant (`rows`: {"variant", "size_mb", "domain",
    "general", "identical", "total"}). A runtime's scores carry their change from PyTorch unless every answer
    is PyTorch's."""
    lines = [f"| runtime | {SIZE_COLUMN[runtime]} | domain ({domain_label}) | general | answers identical to PyTorch's |",
             "|---|---:|---:|---:|---:|",
             f"| PyTorch (float32) | — | {_score(pytorch['domain'])} | {_score(pytorch['general'])} | — |"]
    for row in rows:
        same = row["identical"] == row["total"]
        cells = [_score(row[g]) + ("" if same else f" ({points(row[g], pytorch[g])})") for g in ("domain", "general")]
        lines.append(f"| {TITLES[runtime]} {row['variant']} | {row['size_mb']:.1f} MB | {cells[0]} | {cells[1]} "
                     f"| {row['identical']} of {row['total']} |")
    return "\n".join(lines)


def largest_change(pytorch: dict, row: dict) -> float:
    """The larger of the domain and general changes, in points (absolute)."""
    return max(abs(round((row[g] - pytorch[g]) * 100, 1)) for g in ("domain", "general"))


def _command(runtimes: list[str]) -> str:
    subset = "" if list(runtimes) == list(SECTIONS) else f" --runtimes {runtime_list(runtimes)}"
    return f"python bench/export_accuracy.py{subset} --write"


def runtime_list(runtimes) -> str:
    return ",".join(runtimes)


def caption(runtime: str, pytorch: dict, rows: list[dict], notes: list[str]) -> str:
    """The text under a table: what was measured, the notes, the machine and the regenerating commands."""
    what = {"llamacpp": "GGUF text model and mmproj f16 (f32 for the f32 row), `adapt eval --runtime llamacpp`",
            "onnx": "`vision.onnx`, `embed.onnx` and `decoder.onnx` with their `.data` files, "
                    "`adapt eval --runtime onnx`",
            "executorch": "`model.pte` (XNNPACK), `adapt eval --runtime executorch`"}[runtime]
    order = [*pytorch["domain_sources"], *(s for s in pytorch["n"] if s not in pytorch["domain_sources"])]
    n = ", ".join(f"{s} {pytorch['n'][s]}" for s in order)
    text = [f"Held-out samples: {n}; exports: {what}; MB = 10^6 bytes. "
            f"Scores in brackets: points from PyTorch, shown where some answer differs.", *notes,
            f"Measured on {machine_line()}"
            + (f", llama.cpp {pytorch['llamacpp_version']} as `make llama-cpp` builds it" if runtime == "llamacpp" else "")
            + f"; regenerate with `{_command([runtime])}` (every runtime: `{_command(list(SECTIONS))}`)."]
    return "\n\n".join(text)


# ------------------------------------------------------------------------------------------------------------
# measuring


QUICK_CHECK = "export_accuracy_overrides.json"  # in a run made for a quick check: its overrides


def ensure_run(run: Path, progress: bool, overrides: list[str] = ()) -> Path:
    """`run`/train/final, making the run first (bench/reproduce.py's landcover settings, then `overrides`) when it
    is missing. A run made with overrides serves only checks with overrides, never a full measurement."""
    final = run / "train" / "final"
    if (final.is_dir() and (run / "quickstart.yaml").is_file()
            and (run / "report" / "predictions_adapted.jsonl").is_file()):
        if (run / QUICK_CHECK).is_file() and not overrides:
            made = json.loads((run / QUICK_CHECK).read_text(encoding="utf-8"))
            raise SystemExit(f"{run} was made for a quick check with overrides {made}: delete it, or give another "
                             "--run, for a full measurement")
        return final
    from adapt.quickstart import quickstart
    from bench.reproduce import FIELDS

    variant = FIELDS["landcover"].variants[0]  # the adapted run `python bench/reproduce.py landcover` makes
    print(f"{final} missing: running `{variant.command}` into {run} (bench/reproduce.py's settings)", flush=True)
    (run / QUICK_CHECK).unlink(missing_ok=True)
    quickstart(run, [*variant.overrides, *overrides], progress=progress, field="landcover")
    if overrides:
        (run / QUICK_CHECK).write_text(json.dumps(list(overrides)) + "\n", encoding="utf-8")
    return final


def _groups(summary: dict) -> dict:
    return {g: summary["groups"].get(g, {}).get("main") for g in ("domain", "general")}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def export_size_mb(runtime: str, folder: Path, variant: str) -> float:
    """The size of the export's model files (see SIZE_COLUMN), MB = 10^6 bytes."""
    if runtime == "llamacpp":
        from deploy.gguf import file_names

        files = [folder / file_names(LABEL, variant)[0]]
    elif runtime == "onnx":
        files = sorted(folder.glob("*.onnx*"))
    else:
        files = [folder / "model.pte"]
    return sum(f.stat().st_size for f in files) / 1e6


def gguf_types(path: Path) -> tuple[Counter, list[int]]:
    """Types of a GGUF file's weight matrices (2-D tensors; type name -> count) and the widths of their rows that
    are not multiples of 256 (the K-quants' block)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    kinds = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)
    widths = sorted({int(t.shape[0]) for t in reader.tensors if len(t.shape) == 2 and int(t.shape[0]) % 256})
    return kinds, widths


def llamacpp_notes(pytorch: dict, rows: list[dict], out: Path) -> list[str]:
    notes = []
    targets = [(r, TARGETS[r["variant"]]) for r in rows if r["variant"] in TARGETS]
    if targets:
        parts = [f"{r['variant']} within {t:g} point{'s' if t != 1 else ''} of PyTorch: "
                 f"{'met' if largest_change(pytorch, r) <= t else 'NOT met'} "
                 f"(largest change {largest_change(pytorch, r):.1f})" for r, t in targets]
        notes.append("Targets: " + "; ".join(parts) + ".")
    moved = [r["variant"] for r in rows if round((r["domain"] - pytorch["domain"]) * 100, 1) != 0]
    notes.append("Domain scores are unchanged at every type." if not moved
                 else f"Domain scores change at {', '.join(moved)}.")
    q4 = next((r for r in rows if r["variant"] == "q4_k_m"), None)
    if q4 is not None:
        from deploy.gguf import file_names

        kinds, widths = gguf_types(out / "llamacpp" / "gguf" / f"{LABEL}-q4_k_m" / file_names(LABEL, "q4_k_m")[0])
        listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
        fallback = (f"its rows ({' and '.join(map(str, widths))} wide) are not multiples of 256, so `llama-quantize` "
                    "writes the fallback types llama.cpp uses for such rows: " if widths else "")
        notes.append(f"The q4_k_m text model's weight matrices: {fallback}{listed}"
                     + ("" if "Q4_K" in kinds else "; no Q4_K") + ".")
    return notes


def measure(run: Path, out: Path, runtimes: list[str], progress: bool, overrides: list[str] = (),
            done=lambda runtime, results: None) -> dict:
    """Score PyTorch and every (runtime, variant); returns the results (also written to out/results.json after
    each runtime, and passed to ``done(runtime, results)`` then, so that a later failure keeps what was measured).
    `overrides`: recipe overrides for a smaller check (e.g. eval.max_samples=4), never published."""
    from adapt.recipe import load_recipe
    from adapt.run_eval import evaluate_model
    from deploy.llamacpp import VERSION
    from deploy.runtimes import RUNTIMES

    final = ensure_run(run, progress, list(overrides))
    recipe = load_recipe(run / "quickstart.yaml", list(overrides))
    timings = {}
    started = time.perf_counter()
    print(f"[pytorch] adapt eval {run / 'quickstart.yaml'} --model {LABEL}={final} --out {out / 'pytorch'}", flush=True)
    summary = evaluate_model(recipe, final, LABEL, out / "pytorch", progress)
    timings["pytorch"] = time.perf_counter() - started
    reference = _read(out / "pytorch" / f"predictions_{LABEL}.jsonl")
    quickstart_answers = compare(reference, _read(run / "report" / f"predictions_{LABEL}.jsonl"))  # same model
    domain_sources = [s for s, e in summary["sources"].items() if e["kind"] == "domain"]
    pytorch = {**_groups(summary), "n": {s: e["n"] for s, e in summary["sources"].items()},
               "domain_sources": domain_sources, "llamacpp_version": VERSION,
               "same_as_quickstart_report": quickstart_answers["identical"], "total": quickstart_answers["total"]}
    results = {"run": str(run), "overrides": list(overrides), "pytorch": pytorch, "runtimes": {}, "seconds": timings}
    for runtime in runtimes:
        rows = []
        for variant in VARIANTS[runtime]:
            label = f"{LABEL}-{variant}"
            print(f"[{runtime} {variant}] adapt eval ... --runtime {runtime} {FLAGS[runtime]} {variant} "
                  f"--out {out / runtime}", flush=True)
            started = time.perf_counter()
            summary = evaluate_model(recipe, final, label, out / runtime, progress, runtime=runtime, variant=variant)
            timings[f"{runtime} {variant}"] = time.perf_counter() - started
            answers = compare(reference, _read(out / runtime / f"predictions_{label}.jsonl"))
            folder = out / runtime / RUNTIMES[runtime].export_format / label  # where evaluate_model exports
            rows.append({"variant": variant, **_groups(summary), "size_mb": export_size_mb(runtime, folder, variant),
                         "identical": answers["identical"], "total": answers["total"],
                         "different": answers["different"]})
            print(f"  {_score(rows[-1]['domain'])} / {_score(rows[-1]['general'])}, {answers['identical']} of "
                  f"{answers['total']} answers identical, {timings[f'{runtime} {variant}'] / 60:.1f} min", flush=True)
        results["runtimes"][runtime] = rows
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        done(runtime, results)
    return results


def section(runtime: str, results: dict, out: Path) -> str:
    pytorch, rows = results["pytorch"], results["runtimes"][runtime]
    notes = llamacpp_notes(pytorch, rows, out) if runtime == "llamacpp" else []
    if pytorch["same_as_quickstart_report"] != pytorch["total"]:
        notes.append(f"Note: PyTorch's answers here match the quick start's own report "
                     f"(report/predictions_{LABEL}.jsonl) in {pytorch['same_as_quickstart_report']} of "
                     f"{pytorch['total']} samples.")
    return table(runtime, pytorch, rows, ", ".join(pytorch["domain_sources"])) + "\n\n" + caption(runtime, pytorch,
                                                                                                   rows, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides for a quick check of the script (e.g. eval.max_samples=4); never with --write")
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="quick-start run folder (made when missing)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "export-accuracy")
    parser.add_argument("--runtimes", default=runtime_list(SECTIONS), help=f"comma-separated: {runtime_list(SECTIONS)}")
    parser.add_argument("--write", action="store_true", help=f"replace the runtimes' sections in {README.name}")
    parser.add_argument("--from-results", action="store_true",
                        help="measure nothing: make the tables from the last run's OUT/results.json (and its exports)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    runtimes = [r for r in SECTIONS if r in args.runtimes.split(",")]
    unknown = set(args.runtimes.split(",")) - set(SECTIONS)
    if unknown or not runtimes:
        parser.error(f"unknown runtime(s) {sorted(unknown)}; choose from {runtime_list(SECTIONS)}")
    if args.write and args.overrides:
        parser.error("--write publishes the full evaluation only; drop the overrides")

    def done(runtime: str, results: dict) -> None:
        text = section(runtime, results, args.out.resolve())
        print(f"\n{SECTIONS[runtime]}:\n{text}\n", flush=True)
        if args.write:
            write_section(README, SECTIONS[runtime], text)
            print(f"wrote the {SECTIONS[runtime]} section of {README}", flush=True)

    if args.from_results:
        if not (args.out / "results.json").is_file():
            parser.error(f"--from-results: {args.out / 'results.json'} does not exist (run without --from-results "
                         "first, or give its --out)")
        results = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
        if results.get("overrides"):
            parser.error(f"{args.out / 'results.json'} was measured with overrides {results['overrides']}")
        missing = [r for r in runtimes if r not in results["runtimes"]]
        if missing:
            parser.error(f"{args.out / 'results.json'} has no {', '.join(missing)} results")
        for runtime in runtimes:
            done(runtime, results)
        return 0
    results = measure(args.run.resolve(), args.out.resolve(), runtimes, args.progress, args.overrides, done)
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()))
    return 0


if __name__ == "__main__":
    run_script(main)
