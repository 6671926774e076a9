"""Image-token budgets for the stitched six-camera driving view (issue 13 item 3): the driving quick start's data and
recipe (`adapt quickstart --field driving`) trained once per budget at the same step budget, each scored on the held-out
driving and general sets.

    python bench/bench_token_budget.py                      # a reduced budget: 40 steps x 8, 40 samples, 96 tokens
    python bench/bench_token_budget.py --steps 300 --batch-size 16 --eval-samples 200 --max-new-tokens 200 \\
        --variants baseline tiles2 pooled qformer --write   # the template's budget: README.md's `token_budget` table
    python bench/bench_token_budget.py --set probe --write  # the detail probe, README section `token_budget_probe`

Variants (each cuts the baseline's image tokens to at most a quarter, on pocket-tiny and on Mini-InternVL's geometry):
fewer tiles (`tiling.max_tiles=2`: a 2x1 grid + thumbnail), pooled pixel shuffle (`model.projector_options.pool=2`:
the pre-trained MLP kept, 2x2-averaged patches), and a Q-Former with a quarter of the tokens per tile (fresh
connector). Token counts come from the processor on a real 2688x896 image (pocket-tiny) and from the tiling rule and
`projector_tokens` at 448 px tiles / 32x32 patches (Mini-InternVL, 256 tokens per tile); nothing is typed in.

`--set probe`: at a CPU budget the tiny model learns none of the driving tasks, so their scores cannot separate the
budgets. The detail probe asks what a budget cut risks on the same stitched layout: one camera of the 2688x896 view
shows a general-world scene (the quick start's synthetic shapes), the other five an empty frame, and the question
(colour, shape, count or position, four options) is about that scene, which pocket-tiny answers well on its own.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.sections import ROOT, machine_line, paired_difference, positive_int, write_section  # noqa: E402

README = ROOT / "README.md"
SECTION = "token_budget"
PROBE_SECTION = "token_budget_probe"
PAIRED = "nuscenes"  # the driving source scored per sample (DriveLM's main score is corpus-level): paired Δ ± 2 SE
PROBE_FAMILIES = ("color", "shape", "count", "position")
TEMPLATE = "driving_pocket-tiny_full"
STITCHED = (2688, 896)  # DriveLM's six cameras stitched 3x2 at 896x448
MINI_INTERNVL = {"tile_size": 448, "grid": 32}  # InternViT-300M-448px: 448 / 14 = 32 patches a side


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    # recipe overrides, given the pixel_shuffle_mlp tokens per tile of the geometry (queries scale with it)
    overrides: Callable[[int], list[str]]


def _qformer(per_tile: int) -> list[str]:
    return ["model.projector=qformer", f"model.projector_options.num_queries={per_tile // 4}"]


VARIANTS = {v.key: v for v in [
    Variant("baseline", "baseline: 6x2 tiles + thumbnail (template)", lambda _: []),
    Variant("tiles2", "fewer tiles: `tiling.max_tiles=2`", lambda _: ["tiling.max_tiles=2"]),
    # the 3x1 grid: one tile per column of cameras (front and back), each at half the baseline's resolution
    Variant("tiles3", "3 tiles, no thumbnail: `tiling.max_tiles=3`, `tiling.thumbnail=false`",
            lambda _: ["tiling.max_tiles=3", "tiling.thumbnail=false"]),
    Variant("pooled", "pooled pixel shuffle: `model.projector_options.pool=2`",
            lambda _: ["model.projector_options.pool=2"]),
    # InternVL's own option at half the ratio: no patch averaged away, the trained MLP widened to start from
    Variant("shuffle4", "coarser pixel shuffle, 4x4 patches a token: `model.projector_options.downsample_ratio=0.25`",
            lambda _: ["model.projector_options.downsample_ratio=0.25"]),
    Variant("qformer", "Q-Former, 1/4 of the tokens per tile: `model.projector=qformer`", _qformer),
]}


def budget_overrides(steps: int, batch_size: int, eval_samples: int, max_new_tokens: int) -> list[str]:
    return [f"training.max_steps={steps}", f"training.batch_size={batch_size}", f"eval.max_samples={eval_samples}",
            f"eval.max_new_tokens={max_new_tokens}", "output.save_every=100000", "logging.tensorboard=false"]


def _per_tile(grid: int, options: dict) -> int:
    """pixel_shuffle_mlp tokens per tile for a grid x grid patch map (the queries of the Q-Former variant scale with it)."""
    from model.projectors import projector_tokens

    return projector_tokens("pixel_shuffle_mlp", grid, grid, **options)


def mini_internvl_tokens(recipe_path: Path, budget: list[str], variant: Variant) -> int:
    """Image tokens of the stitched view on Mini-InternVL's geometry (448 px tiles, 32x32 patches, pixel shuffle 0.5)
    under the variant's tiling and projector settings (the Q-Former's queries scaled to 256 tokens per tile)."""
    import dataclasses

    from adapt.recipe import load_recipe
    from model.projectors import projector_tokens
    from model.tiling import TilingConfig, count_tiles

    internvl = {"downsample_ratio": 0.5, "ps_version": "v2"}
    g = MINI_INTERNVL["grid"]
    recipe = load_recipe(recipe_path, [*budget, *variant.overrides(_per_tile(g, internvl))])
    tiling = recipe.tiling_for(TilingConfig(tile_size=MINI_INTERNVL["tile_size"], max_tiles=12, thumbnail=True))
    tiling = dataclasses.replace(tiling, tile_size=MINI_INTERNVL["tile_size"])
    if recipe.model.projector:
        name, options = recipe.model.projector, recipe.model.projector_options
    else:
        name, options = "pixel_shuffle_mlp", {**internvl, **recipe.model.projector_options}
    return count_tiles(*STITCHED, tiling) * projector_tokens(name, g, g, **options)


def stitched_tokens(processor) -> tuple[int, int]:
    """(tiles, image tokens) the processor gives a real 2688x896 image under its tiling."""
    from PIL import Image

    image = Image.new("RGB", STITCHED, (90, 120, 150))
    enc = processor([{"from": "human", "value": "<image>\nWhat is ahead?"}], images=[image])
    return sum(enc.num_tiles), int((enc.input_ids == processor.image_token_id).sum())


def prefill_ms(vlm, processor, records: list, repeats: int = 3) -> float:
    """Median milliseconds of one prompt's forward pass (tiles -> vision -> projector -> LLM), the part the image
    tokens drive, over held-out prompts (stitched views)."""
    import torch

    from model.tiling import load_image

    times = []
    with torch.inference_mode():
        for record in records:
            enc = processor(record.conversations[:1], images=[load_image(p) for p in record.images])
            inputs = {k: v for k, v in enc.to_model_inputs().items() if k != "labels"}
            for _ in range(repeats):
                started = time.perf_counter()
                vlm(**inputs)
                times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def write_probe_split(general: Path, split: str, out: Path, n: int, seed: int) -> int:
    """The detail probe's `split`: the first `n` general-world records of `general/<split>.jsonl`, each shown in one
    camera (drawn at random) of a stitched six-camera view whose other cameras show an empty grey frame. The scene
    is scaled to the cell's height and centred, so under the baseline's 6x2 tiles it straddles two tiles, as objects
    do. Question, options and answer stay the record's own; ``meta`` names the family and the camera."""
    from PIL import Image

    from domains.driving.layout import CELL_SIZE, STITCH_ORDER, STITCHED_SIZE, stitch_cameras

    records = [json.loads(line) for line in (general / f"{split}.jsonl").open(encoding="utf-8")][:n]
    rng = random.Random(seed)
    empty = Image.new("RGB", CELL_SIZE, (128, 128, 128))
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
        for k, record in enumerate(records):
            camera = rng.choice(STITCH_ORDER)
            cell = empty.copy()
            side = CELL_SIZE[1]
            with Image.open(general / record["image"]) as scene:
                cell.paste(scene.convert("RGB").resize((side, side), Image.Resampling.NEAREST),
                           ((CELL_SIZE[0] - side) // 2, 0))
            image = f"images/{split}_{k:05d}.jpg"
            stitch_cameras({c: cell if c == camera else empty for c in STITCH_ORDER}).save(out / image, quality=95)
            sample = {key: record[key] for key in ("conversations", "task", "answer", "label", "options")}
            f.write(json.dumps({"id": f"probe-{split}-{k:05d}", "image": image, "width": STITCHED_SIZE[0],
                                "height": STITCHED_SIZE[1], **sample,
                                "meta": {"family": record["family"], "camera": camera}}) + "\n")
    return len(records)


def prepare_probe(data: Path, n_train: int, n_test: int) -> None:
    """The general world (as the quick start synthesises it) and the probe built from it, once per --out."""
    from domains.base import get_domain

    general_test = data / "general" / "test.jsonl"
    if not general_test.exists() or sum(1 for _ in general_test.open(encoding="utf-8")) < n_test:
        # the quick start's 200 held-out scenes, or as many as the probe's held-out views need
        get_domain("general").synthesize(data / "general", answer_style="label", n_test=max(200, n_test), force=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        path = data / "probe" / f"{split}.jsonl"
        if not path.exists() or sum(1 for _ in path.open(encoding="utf-8")) != n:
            print(f"[token budget] writing the probe's {split} split ({n} stitched views)", flush=True)
            write_probe_split(data / "general", split, data / "probe", n, seed)


def probe_recipe(out: Path) -> Path:
    """The driving template with the probe (domain) and the general world (general) as its data."""
    import yaml

    from model.resources import templates_dir

    recipe = yaml.safe_load((templates_dir() / "recipes" / f"{TEMPLATE}.yaml").read_text(encoding="utf-8"))
    recipe["name"] = "token_budget_probe"
    recipe["data"]["sources"] = [{"name": "probe", "path": "data/probe/train.jsonl", "kind": "domain"},
                                 {"name": "general", "path": "data/general/train.jsonl", "kind": "general"}]
    recipe["data"]["eval_sources"] = [{"name": "probe", "path": "data/probe/test.jsonl", "kind": "domain"},
                                      {"name": "general", "path": "data/general/test.jsonl", "kind": "general"}]
    path = out / "token_budget_probe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def source_answers(report: Path, source: str) -> dict[int, float]:
    """Held-out line -> the sample's own score (each of `source`'s samples has one: accuracy, Acc@0.5, ...) from a
    variant's predictions."""
    from adapt.evaluate import load_predictions

    out = {}
    for p in load_predictions(report / "predictions_adapted.jsonl"):
        if p.source == source:
            (out[p.line],) = p.scores.values()
    return out


def probe_answers(report: Path) -> dict[int, tuple[str, float]]:
    """Held-out probe line -> (question family, accuracy) from a variant's predictions."""
    from adapt.evaluate import load_predictions

    return {p.line: (p.meta["family"], p.scores["accuracy"])
            for p in load_predictions(report / "predictions_adapted.jsonl") if p.source == "probe"}


def run_variant(variant: Variant, recipe_path: Path, out: Path, budget: list[str], progress: bool,
                prompts: str = "drivelm") -> dict:
    """Train one variant from pocket-tiny at the shared budget, score it, and count its tokens (prefill timed on
    held-out prompts of the eval source `prompts`)."""
    import model as model_core
    from adapt.data import SkipLog, read_source
    from adapt.recipe import load_recipe, path_override
    from adapt.run_eval import evaluate_model
    from adapt.train import source_specs, train

    probe = model_core.load("pocket-tiny")[0]
    per_tile = probe.config.image_seq_length  # pocket-tiny's own, for the Q-Former's queries
    overrides = [*budget, *variant.overrides(per_tile), path_override("output.dir", (out / "train").resolve())]
    recipe = load_recipe(recipe_path, overrides)
    shutil.rmtree(recipe.output.dir, ignore_errors=True)
    started = time.perf_counter()
    final = train(recipe, progress=progress)
    train_s = time.perf_counter() - started

    started = time.perf_counter()
    summary = evaluate_model(recipe, final, "adapted", out / "report", progress)
    eval_s = time.perf_counter() - started
    scored = sum(entry["n"] for entry in summary["sources"].values())

    vlm, processor = model_core.load(final)
    processor.tiling = recipe.tiling_for(processor.tiling)
    tiles, tokens = stitched_tokens(processor)
    spec = next(s for s in source_specs(recipe.data.eval_sources) if s.name == prompts)
    held_out = read_source(spec, SkipLog())[:4]
    return {
        "label": variant.label, "overrides": variant.overrides(per_tile), "tiles": tiles, "tokens": tokens,
        "tokens_per_tile": vlm.config.image_seq_length,
        "mini_internvl_tokens": mini_internvl_tokens(recipe_path, budget, variant),
        "summary": summary, "report": str(out / "report"), "train_s": train_s, "eval_s": eval_s, "eval_samples": scored,
        "prefill_ms": prefill_ms(vlm, processor, held_out),
        "projector_params": sum(p.numel() for p in vlm.multi_modal_projector.parameters()),
    }


def _score(summary: dict, group: str | None = None, source: str | None = None) -> float | None:
    return summary["sources"][source]["main"] if source else summary["groups"].get(group, {}).get("main")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def table(results: dict, args: argparse.Namespace) -> str:
    """The README section: one row per budget, then how it was measured."""
    runs = results["variants"]
    base = runs.get("baseline")
    sources = [s for s, e in next(iter(runs.values()))["summary"]["sources"].items() if e["kind"] == "domain"]
    head = ["budget (recipe option)", "image tokens, pocket-tiny (tiles x tokens/tile)", "image tokens, Mini-InternVL",
            "domain", "Δ domain vs baseline (points)", *sources, f"Δ {PAIRED} vs baseline (points, ± 2 SE)",
            "drivelm language", "general", "train", "eval s/sample", "prefill ms/prompt"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for run in runs.values():
        domain = _score(run["summary"], "domain")
        delta = "–" if base is None or run is base or domain is None or _score(base["summary"], "domain") is None \
            else f"{100 * (domain - _score(base['summary'], 'domain')):+.1f}"
        paired = "–"
        if base is not None and run is not base:
            mean, se2, _ = paired_difference(*(source_answers(Path(r["report"]), PAIRED) for r in (run, base)))
            paired = f"{100 * mean:+.1f} ± {100 * se2:.1f}"
        cells = [f"{run['tokens']} ({run['tiles']} x {run['tokens_per_tile']})", str(run["mini_internvl_tokens"]),
                 _fmt(domain), delta, *(_fmt(_score(run["summary"], source=s)) for s in sources), paired,
                 _fmt(run["summary"]["sources"]["drivelm"]["metrics"].get("language")),
                 _fmt(_score(run["summary"], "general")), f"{run['train_s'] / 60:.1f} min",
                 f"{run['eval_s'] / max(1, run['eval_samples']):.2f}", f"{run['prefill_ms']:.0f}"]
        lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    ns = ", ".join(f"{s} {e['n']}" for s, e in next(iter(runs.values()))["summary"]["sources"].items())
    budget = "The template's budget" if (args.steps, args.batch_size) == (300, 16) else "Reduced budget"
    lines += [
        "",
        f"{budget}, the same for every row: {args.steps} steps of batch {args.batch_size} from `pocket-tiny` "
        f"(the template trains 300 x 16), {args.eval_samples} held-out samples per source ({ns}), at most "
        f"{args.max_new_tokens} generated tokens per answer (template: 200); {results['minutes']:.1f} min in all. "
        "Image tokens are those of one stitched 2688x896 view: pocket-tiny's counted by its processor on a real "
        "image, Mini-InternVL's from the same tiling at 448 px tiles and the projector's count on a 32x32 patch grid "
        "(256 per tile; the Q-Former row uses 1/4 of that, 64 queries, where pocket-tiny's uses 1/4 of 16). Main metric "
        "per source as in the driving quick start (– = not computed: DriveLM's judge-free score needs multiple-choice and "
        "match questions among those the official graph filter keeps); drivelm language = its BLEU / ROUGE-L / CIDEr "
        f"term; Δ in points of the domain score (a mean weighted by samples, DriveLM's a corpus-level score); Δ "
        f"{PAIRED}: paired over the same held-out {PAIRED} samples (each scored on its own), ± two standard errors "
        "of the mean difference. Train and eval times are wall "
        "times on a machine shared with other jobs; prefill is the median forward pass of a held-out DriveLM prompt.",
        "",
        f"Measured on {machine_line()}; regenerate with `{results['command']}`.",
    ]
    return "\n".join(lines)


def _paired_delta(run: dict, base: dict) -> tuple[float, float]:
    """Accuracy difference run - base over the same held-out probe questions, and 2 standard errors of it."""
    a, b = ({line: acc for line, (_, acc) in probe_answers(Path(r["report"])).items()} for r in (run, base))
    mean, se2, _ = paired_difference(a, b)
    return mean, se2


def probe_table(results: dict, args: argparse.Namespace) -> str:
    """The README section of the detail probe: one row per budget, accuracy per question family."""
    runs = results["variants"]
    base = runs.get("baseline")
    head = ["budget (recipe option)", "image tokens, pocket-tiny (tiles x tokens/tile)", "image tokens, Mini-InternVL",
            "probe accuracy", "Δ vs baseline (points, ± 2 SE)", *PROBE_FAMILIES, "general", "train",
            "eval s/sample", "prefill ms/prompt"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for run in runs.values():
        answers = probe_answers(Path(run["report"]))
        family = {f: [acc for fam, acc in answers.values() if fam == f] for f in PROBE_FAMILIES}
        if base is None or run is base:
            delta = "–"
        else:
            mean, se2 = _paired_delta(run, base)
            delta = f"{100 * mean:+.1f} ± {100 * se2:.1f}"
        cells = [f"{run['tokens']} ({run['tiles']} x {run['tokens_per_tile']})", str(run["mini_internvl_tokens"]),
                 _fmt(_score(run["summary"], source="probe")), delta,
                 *(_fmt(statistics.fmean(v)) if v else "–" for v in family.values()),
                 _fmt(_score(run["summary"], "general")), f"{run['train_s'] / 60:.1f} min",
                 f"{run['eval_s'] / max(1, run['eval_samples']):.2f}", f"{run['prefill_ms']:.0f}"]
        lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    first = next(iter(runs.values()))
    counts = {f: sum(1 for fam, _ in probe_answers(Path(first["report"])).values() if fam == f) for f in PROBE_FAMILIES}
    lines += [
        "",
        f"The detail probe (`--set probe`): {args.probe_train} training and {first['summary']['sources']['probe']['n']} "
        "held-out stitched 2688x896 views, each with one general-world scene (the quick start's synthetic shapes, "
        "112 px, scaled to the 448 px cell height) in one of the six cameras, drawn at random, and empty grey frames "
        "in the other five; the scene's own four-option question (" + ", ".join(f"{f} {n}" for f, n in counts.items())
        + f" held-out). Chance is 0.250. Before any training pocket-tiny scores {results['before']['probe']:.3f} on the "
        f"probe and {results['before']['general']:.3f} on the general set, whose first {args.eval_samples} records are "
        "the very scenes and questions of the probe's held-out views, unstitched. Every row: "
        f"the driving template's recipe with this data (general ratio 0.2), {args.steps} steps of batch "
        f"{args.batch_size} from `pocket-tiny`, at most {args.max_new_tokens} generated tokens; "
        f"{results['minutes']:.1f} min in all. Δ: paired over the same held-out questions, ± two standard errors of "
        "the mean difference. General: pocket-tiny's own held-out set (single images). Tokens, times and prefill "
        "as in the table above (prefill over held-out probe prompts).",
        "",
        f"Measured on {machine_line()}; regenerate with `{results['command']}`.",
    ]
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> dict:
    from adapt.quickstart import prepare_driving
    from model.resources import templates_dir

    started = time.perf_counter()
    out = Path(args.out)
    data = out / "data"
    if args.set == "probe":
        prepare_probe(data, args.probe_train, args.eval_samples)
        recipe_path, prompts = probe_recipe(out), "probe"
    else:
        if not (data / "driving" / "drivelm_val.jsonl").exists():
            prepare_driving(data)  # the quick start's synthetic data, generated once for every variant
        recipe_path, prompts = out / f"{TEMPLATE}.yaml", "drivelm"
        shutil.copyfile(templates_dir() / "recipes" / f"{TEMPLATE}.yaml", recipe_path)
    budget = budget_overrides(args.steps, args.batch_size, args.eval_samples, args.max_new_tokens)
    before = None
    if args.set == "probe":  # pocket-tiny untrained: the probe's views against the same questions' bare scenes
        from adapt.recipe import load_recipe, path_override
        from adapt.run_eval import evaluate_model

        report = out / "probe" / "pocket-tiny"
        recipe = load_recipe(recipe_path, [*budget, path_override("output.dir", report.resolve())])
        summary = evaluate_model(recipe, "pocket-tiny", "base", report, args.progress)
        before = {source: entry["main"] for source, entry in summary["sources"].items()}
    variants = {}
    for key in args.variants:
        print(f"[token budget] {key}", flush=True)
        variants[key] = run_variant(VARIANTS[key], recipe_path, out / args.set / key, budget, args.progress, prompts)
    flags = f"--steps {args.steps} --batch-size {args.batch_size} --eval-samples {args.eval_samples} " \
            f"--max-new-tokens {args.max_new_tokens}"
    if args.set == "probe":
        flags = f"--set probe --probe-train {args.probe_train} " + flags
    if args.variants != list(VARIANTS):
        flags += " --variants " + " ".join(args.variants)
    return {"variants": variants, "before": before, "minutes": (time.perf_counter() - started) / 60, "args": flags,
            "command": f"python bench/bench_token_budget.py {flags} --write"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "token_budget")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    # defaults per set: (driving, probe)
    defaults = {"steps": (40, 300), "batch_size": (8, 16), "eval_samples": (40, 200), "max_new_tokens": (96, 8)}
    parser.add_argument("--steps", type=positive_int,
                        help="optimizer steps per variant (default 40 / probe 300; template: 300)")
    parser.add_argument("--batch-size", type=positive_int,
                        help="samples per step (default 8 / probe 16; template: 16)")
    parser.add_argument("--eval-samples", type=positive_int,
                        help="held-out samples per source (default 40 / probe 200; template: 200)")
    parser.add_argument("--max-new-tokens", type=positive_int,
                        help="generated tokens per answer (default 96 / probe 8; template: 200)")
    parser.add_argument("--set", choices=["driving", "probe"], default="driving",
                        help=f"driving: the quick start's driving sets (README section {SECTION}); probe: the detail "
                             f"probe ({PROBE_SECTION})")
    parser.add_argument("--probe-train", type=positive_int, default=1500, help="training views of the detail probe")
    parser.add_argument("--write", action="store_true", help=f"replace the set's section of {README.name}")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    for key, values in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, values[args.set == "probe"])
    results = measure(args)
    section, name = (probe_table(results, args), PROBE_SECTION) if args.set == "probe" else (table(results, args), SECTION)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results-{args.set}.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (args.out / f"table-{args.set}.md").write_text(section + "\n", encoding="utf-8")
    print(section, flush=True)
    if args.write:
        write_section(README, name, section)
        print(f"wrote the {name} section of {README}")
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
