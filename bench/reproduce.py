"""Reproduce the README's quick-start tables: every figure there comes from this script.

    python bench/reproduce.py landcover                 # run, print the table
    python bench/reproduce.py landcover --write         # and replace README.md's `reproduce:landcover` section
    python bench/reproduce.py pocket-tiny --write       # rebuild pocket-tiny's weights from scratch and compare
    python bench/reproduce.py all --write               # every section (make reproduce; about an hour on 2 cores)

Each field runs `adapt quickstart --field FIELD` (fixed seeds: the data generators' and the recipe's)
into runs/reproduce/FIELD/, scores pocket-tiny before and after adaptation on the held-out domain and
general sets, and, for the land-cover story, runs once more without general replay
(`mixing.general_ratio=0`) to show the forgetting replay prevents. `overrides` shrink the budget for
the short version CI runs (tests/test_reproduce.py), which checks the direction of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt.pretrain_tiny import check_full, record_path  # noqa: E402
from adapt.quickstart import quickstart  # noqa: E402
from bench.sections import ROOT, machine_line, write_section  # noqa: E402

README = ROOT / "README.md"
NO_REPLAY = "mixing.general_ratio=0"


@dataclass(frozen=True)
class Variant:
    label: str
    command: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Field:
    name: str
    domain_label: str
    variants: tuple[Variant, ...]
    detail: dict[str, tuple[str, ...]] = field(default_factory=dict)  # source -> metrics shown per source


FIELDS = {
    "landcover": Field(
        "landcover", "land cover",
        (Variant("adapted, 30 % general replay (default)", "adapt quickstart"),
         Variant("adapted, no replay", f"adapt quickstart {NO_REPLAY}", (NO_REPLAY,))),
        {"landcover": ("accuracy", "acc@0.5")},
    ),
    "remote_sensing": Field(
        "remote_sensing", "remote sensing",
        (Variant("adapted, 20 % general replay (template)", "adapt quickstart --field remote_sensing"),),
    ),
    "driving": Field(
        "driving", "driving",
        (Variant("adapted (template)", "adapt quickstart --field driving"),),
        {"drivelm": ("accuracy", "match_f1", "Bleu_4", "ROUGE_L", "CIDEr", "language", "final_score_no_judge",
                     "final_score")},
    ),
    "medical": Field(
        "medical", "medical",
        (Variant("adapted (template)", "adapt quickstart --field medical"),),
        {"dicom_qa": ("closed_accuracy", "open_recall", "acc@0.5")},
    ),
}


def run_field(spec: Field, out_root: Path, overrides: list[str] = (), progress: bool = False) -> dict:
    """Run every variant of one field; returns {"base": summary, variant label: summary, "minutes": {...}}."""
    results: dict = {"minutes": {}}
    for i, variant in enumerate(spec.variants):
        out = Path(out_root) / spec.name / ("adapted" if i == 0 else f"variant-{i}")
        ran = quickstart(out, [*variant.overrides, *overrides], progress=progress, field=spec.name)
        results.setdefault("base", ran["base"])  # every variant scores the same base on the same sets
        results[variant.label] = ran["adapted"]
        results["minutes"][variant.label] = ran["minutes"]
    return results


def _main(summary: dict, group: str) -> float | None:
    return summary["groups"].get(group, {}).get("main")


def _fmt(value: float | None) -> str:
    return "not computed" if value is None else f"{value:.3f}"


def table(spec: Field, results: dict, overrides: list[str] = ()) -> str:
    """The README section for one field: a run table, per-source metrics, and what produced them."""
    base = results["base"]
    sources = [s for s, entry in base["sources"].items() if entry["kind"] == "domain"]
    head = ["run", f"domain ({spec.domain_label})", *sources, "general", "wall time"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    rows = [("base `pocket-tiny`", base, None)] + [
        (f"{v.label}: `{v.command}`", results[v.label], results["minutes"][v.label]) for v in spec.variants
    ]
    for label, summary, minutes in rows:
        cells = [_fmt(_main(summary, "domain")), *(_fmt(summary["sources"][s]["main"]) for s in sources),
                 _fmt(_main(summary, "general")), "–" if minutes is None else f"{minutes:.1f} min"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ns = ", ".join(f"{s} {base['sources'][s]['n']}" for s in [*sources, "general"] if s in base["sources"])
    lines += ["", f"Held-out samples per source: {ns}. Main metric per source: accuracy for multiple choice and "
              "classification, Acc@0.5 IoU for grounding, or the domain task's own."]
    for source, metrics in spec.detail.items():
        detail = ["", f"`{source}` in detail (base → " + " / ".join(v.label for v in spec.variants) + "):", "",
                  "| metric | base | " + " | ".join(v.label for v in spec.variants) + " |",
                  "|---|---:|" + "---:|" * len(spec.variants)]
        for metric in metrics:
            values = [results[k]["sources"][source]["metrics"].get(metric) for k in ["base", *(v.label for v in spec.variants)]]
            detail.append(f"| {metric} | " + " | ".join(_fmt(v) for v in values) + " |")
        lines += detail
    lines += ["", f"Measured on {machine_line()}, seeds fixed; "
              f"regenerate with `python bench/reproduce.py {spec.name} --write`"
              + (f" (overrides: {' '.join(overrides)})" if overrides else "") + "."]
    return "\n".join(lines)


def compare_weights(shipped: Path, rebuilt: Path) -> tuple[int, int, float]:
    """How many tensors of two weight files are identical, how many there are, and the largest element
    difference over the tensors both hold."""
    from safetensors.torch import load_file

    a, b = load_file(shipped), load_file(rebuilt)
    common = sorted(a.keys() & b.keys())
    same = sum(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bool((a[k] == b[k]).all()) for k in common)
    largest = max(((a[k].double() - b[k].double()).abs().max().item() for k in common
                   if a[k].shape == b[k].shape and a[k].numel()), default=0.0)
    return same, len(a.keys() | b.keys()), largest


def pocket_tiny(out_root: Path) -> str:
    """Rebuild pocket-tiny from scratch (the recorded settings) and say whether it is the shipped model."""
    import model

    started = time.perf_counter()
    problems, summary = check_full(Path(out_root) / "pocket-tiny", progress=False)
    minutes = (time.perf_counter() - started) / 60
    record = json.loads(record_path().read_text())
    vlm, _ = model.load("pocket-tiny")
    n_params = sum(p.numel() for p in vlm.parameters())
    size = (record_path().parent / "model.safetensors").stat().st_size
    if problems:
        same, total, largest = compare_weights(record_path().parent / "model.safetensors",
                                               Path(out_root) / "pocket-tiny" / "train" / "final" / "model.safetensors")
        verdict = (f"DIFFERENT: {'; '.join(problems)}; {same} of {total} tensors identical, largest element "
                   f"difference {largest:.3g}")
    else:
        verdict = "identical to the shipped weights, bit for bit"
    made = record.get("made_with", {})
    return "\n".join([
        "| parameters | weights file | pre-training | general test set: rebuilt (recorded) | rebuild time "
        "| rebuilt weights |",
        "|---:|---:|---|---:|---:|---|",
        f"| {n_params / 1e6:.2f} M | {size / 2**20:.1f} MiB | {record['steps']} steps from scratch, lr {record['lr']} "
        f"| {_fmt(summary['groups']['general']['main'])} ({_fmt(record.get('general_accuracy'))}) | {minutes:.1f} min "
        f"| {verdict} |",
        "",
        f"The record (`model/assets/pocket-tiny/rebuild.json`) was made with Python {made.get('python', '?')}, torch "
        f"{made.get('torch', '?')}, transformers {made.get('transformers', '?')} on {made.get('machine', '?')}.",
        "",
        f"Measured on {machine_line()}; regenerate with `python bench/reproduce.py pocket-tiny --write` "
        "(runs `python -m adapt.pretrain_tiny --check`).",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="+", metavar="FIELD|KEY=VALUE",
                        help=f"fields ({', '.join(FIELDS)}, all), then recipe overrides for a smaller budget "
                             "(never with --write)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--write", action="store_true", help=f"replace the fields' sections in {README.name}")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_intermixed_args(argv)
    overrides = [item for item in args.items if "=" in item]
    names = [item for item in args.items if "=" not in item]
    known = [*FIELDS, "pocket-tiny"]
    unknown = [n for n in names if n not in known and n != "all"]
    if not names:
        parser.error(f"name a field to run ({', '.join(known)} or all), then any overrides")
    if unknown:
        parser.error(f"unknown field(s) {unknown}; choose from {', '.join(known)}, all")
    if args.write and overrides:
        parser.error("--write publishes the full runs only; drop the overrides")
    names = known if "all" in names else names
    if "pocket-tiny" in names:
        names.remove("pocket-tiny")
        if overrides:
            parser.error("pocket-tiny is rebuilt in full only; drop the overrides")
        section = pocket_tiny(args.out)
        print(section, flush=True)
        if args.write:
            write_section(README, "reproduce:pocket-tiny", section)
    for name in names:
        results = run_field(FIELDS[name], args.out, overrides, args.progress)
        section = table(FIELDS[name], results, overrides)
        (args.out / name).mkdir(parents=True, exist_ok=True)
        (args.out / name / "table.md").write_text(section + "\n", encoding="utf-8")
        (args.out / name / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(section, flush=True)
        if args.write:
            write_section(README, f"reproduce:{name}", section)
            print(f"wrote the reproduce:{name} section of {README}")
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
