"""Distillation measured end to end on CPU (issue 13 item 1): `adapt distill` then the quick start on its tower.

    python bench/bench_distill.py                       # run, print the section
    python bench/bench_distill.py --write               # and replace README.md's `distill` section
    python bench/bench_distill.py --distill-steps 40 --train-steps 60 --eval-samples 20   # a short look

1. Distil pocket-tiny's trained vision tower (the teacher: 96 wide, 4 layers) into a half-width InternViT student
   (templates/recipes/distill_pocket-tiny.yaml) on the land-cover + general images of the quick start, mixed by
   ratio; report the student's held-out patch-feature cosine to the teacher before and after.
2. Adapt pocket-tiny to the land-cover quick start (templates/recipes/quickstart.yaml, the same budget for each)
   on (a) the distilled student with its vision adapter (the width projection of the last layer pair) in front of
   pocket-tiny's own trained projector (`model.vision_adapter: auto`), (b) the same student as initialised (random)
   with the distiller's initial (random) projection, the same way, (c) pocket-tiny itself (the teacher: its tower
   and projector). Domain and general scores side by side.
   With --fresh also (a) and (b) with a freshly initialised projector instead (`model.vision_adapter: fresh`,
   `model.projector=pixel_shuffle_mlp`), what the section showed before the vision adapter. With --seeds K,
   (a), (b) and (c) are each trained K times (training seeds 0..K-1: initialisation and data order; the
   distillation itself is one run), and (a) - (b) is paired answer by answer over every seed.
3. A linear probe: per question family of the land-cover and general sets, a logistic regression on each tower's
   patch features (the ones its projector reads, every token of the tile) fitted on training images and scored on
   the held-out ones: what a tower's features carry about a label before any VLM training.
4. With --domain: distil on remote-sensing images only (the remote-sensing quick start's UC Merced / RSVQA / DIOR
   sets) and adapt the remote-sensing quick start on that student, the general-distilled one and the random one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt.distill import distill  # noqa: E402
from adapt.domains_bridge import register_domain_metrics  # noqa: E402
from adapt.metrics import main_metric  # noqa: E402
from adapt.quickstart import prepare_landcover, prepare_remote_sensing  # noqa: E402
from adapt.recipe import load_recipe, path_override  # noqa: E402
from adapt.run_eval import evaluate_model  # noqa: E402
from adapt.train import train  # noqa: E402
from bench.sections import ROOT, machine_line, paired_difference, positive_int, write_section  # noqa: E402
from model.checkpoints.tower import load_vision, load_vision_feature, save_tower, save_vision_adapter  # noqa: E402
from model.resources import templates_dir  # noqa: E402

README = ROOT / "README.md"
FRESH_PROJECTOR = ["model.vision_adapter=fresh", "model.projector=pixel_shuffle_mlp",
                   "model.projector_options={downsample_ratio: 0.5, ps_version: v2}"]
TEACHER = "teacher (pocket-tiny)"
RS_SOURCES = ("data.sources=[{name: ucmerced, path: data/rs/ucmerced_train.jsonl, kind: domain}, "
              "{name: rsvqa_lr, path: data/rs/rsvqa_lr_train.jsonl, kind: domain}, "
              "{name: dior_rsvg, path: data/rs/dior_rsvg_train.jsonl, kind: domain}]")
RS_EVAL = ("data.eval_sources=[{name: ucmerced, path: data/rs/ucmerced_test.jsonl, kind: domain}, "
           "{name: rsvqa_lr, path: data/rs/rsvqa_lr_test.jsonl, kind: domain}, "
           "{name: dior_rsvg, path: data/rs/dior_rsvg_test.jsonl, kind: domain}]")


def link_data(folder: Path, data: Path) -> None:
    """`folder/data` -> `data`: the templates' relative data paths then hold."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data").exists():
        (folder / "data").symlink_to(data.resolve())


def copy_template(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    shutil.copyfile(templates_dir() / "recipes" / f"{name}.yaml", path)
    return path


def run_distill(folder: Path, steps: int, batch: int, overrides: list[str] = (), progress: bool = False) -> dict:
    """Distil into `folder/run`; the report plus the initial (random) student saved as `folder/student-random`."""
    recipe = load_recipe(copy_template("distill_pocket-tiny", folder),
                         [f"training.max_steps={steps}", f"training.batch_size={batch}", f"output.save_every={steps}",
                          path_override("output.dir", folder / "run"), "logging.tensorboard=false", *overrides])
    done = folder / "run" / "bench.json"  # a finished run of this very recipe is reused (it is deterministic)
    if done.is_file() and json.loads(done.read_text())["recipe"] == recipe.to_yaml():
        final, minutes = Path(recipe.output.dir) / "final", json.loads(done.read_text())["minutes"]
    else:
        shutil.rmtree(recipe.output.dir, ignore_errors=True)
        started = time.perf_counter()
        final = distill(recipe, progress=progress)
        minutes = (time.perf_counter() - started) / 60
        done.write_text(json.dumps({"recipe": recipe.to_yaml(), "minutes": minutes}), encoding="utf-8")
    student = recipe.distill.student
    tower, tiling = load_vision(student.source, student.config, seed=recipe.seed)  # the Distiller's start, seed for seed
    random_dir = save_tower(tower, recipe.tiling_for(tiling), folder / "student-random",
                            {"note": "the distilled student's initial weights"})
    report = json.loads((Path(recipe.output.dir) / "report.json").read_text())
    adapter = report.get("vision_adapter")
    if adapter is not None:  # the distiller's initial projections, seed for seed (one Linear per pair, in order)
        torch.manual_seed(recipe.seed)
        teacher_width = json.loads((Path(final) / "vision_adapter.json").read_text())["teacher_width"]
        initial = [nn.Linear(tower.config.hidden_size, teacher_width) for _ in report["pairs"]]
        save_vision_adapter(initial[report["pairs"].index(adapter["pair"])], random_dir,
                            {**adapter, "teacher": recipe.distill.teacher.source, "note": "the initial projection"})
    return {"final": str(final), "random": str(random_dir), "report": report, "minutes": minutes, "batch": batch}


def adapt_on(folder: Path, template: str, vision: str | None, steps: int, eval_samples: int | None,
             overrides: list[str] = (), progress: bool = False, fresh: bool = False, seed: int = 0) -> dict:
    """The quick start's recipe `template` trained `steps` steps on pocket-tiny with tower `vision` (None: its own),
    its vision adapter in front of pocket-tiny's projector or (`fresh`) a fresh projector, from training seed
    `seed` (initialisation and data order); its eval summary."""
    adapter = FRESH_PROJECTOR if fresh else ["model.vision_adapter=auto"]
    tower = [path_override("model.vision", vision), *adapter] if vision else []
    seeded = [f"seed={seed}", f"mixing.seed={seed}"] if seed else []  # seed 0: the template as it stands
    recipe = load_recipe(copy_template(template, folder),
                         [*tower, *seeded, f"training.max_steps={steps}",
                          f"output.save_every={steps}", path_override("output.dir", folder / "train"),
                          "logging.tensorboard=false",
                          *([f"eval.max_samples={eval_samples}"] if eval_samples else []), *overrides])
    done = folder / "result.json"  # a finished run of this very recipe is reused (another process may have made it)
    if done.is_file() and json.loads(done.read_text())["recipe"] == recipe.to_yaml():
        return json.loads(done.read_text())["result"]
    shutil.rmtree(recipe.output.dir, ignore_errors=True)
    started = time.perf_counter()
    final = train(recipe, progress=progress)
    summary = evaluate_model(recipe, final, "adapted", folder / "report", progress=progress)
    result = {"summary": summary, "minutes": (time.perf_counter() - started) / 60}
    done.write_text(json.dumps({"recipe": recipe.to_yaml(), "result": result}), encoding="utf-8")
    return result


def _main(summary: dict, group: str) -> float | None:
    return summary["groups"].get(group, {}).get("main")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


SEEDED_ARMS = ("distilled", "random", "teacher")  # the arms --seeds repeats: (a), (b), (c)
ARMS = {  # land-cover runs: folder -> (label, tower, fresh projector)
    "distilled": ("distilled student + its adapter + pocket-tiny's projector", "final", False),
    "random": ("random student + random adapter + pocket-tiny's projector", "random", False),
    "teacher": (TEACHER, None, False),
    "distilled-fresh": ("distilled student, fresh projector", "final", True),
    "random-fresh": ("random student, fresh projector", "random", True),
}


def measure(out: Path, distill_steps: int, distill_batch: int, train_steps: int, eval_samples: int | None,
            domain: bool, progress: bool = False, only: str | None = None, fresh: bool = False,
            seeds: int = 1) -> dict:
    """Every run the section needs; `only` (an `ARMS` name) runs the distillation and that one land-cover arm
    (several processes can share the work; a later full call reuses what they finished). Each arm's entry is
    ``{"seeds": [run, ...]}``, seed 0 first; `SEEDED_ARMS` get `seeds` runs, the others one."""
    data = out / "data"
    if not (data / "landcover").is_dir():
        prepare_landcover(data)
    link_data(out / "distill", data)
    results: dict = {"distill": run_distill(out / "distill", distill_steps, distill_batch, progress=progress)}
    if only is None:
        results["probe"] = probe({"teacher (pocket-tiny)": "pocket-tiny", "distilled student": results["distill"]["final"],
                                  "random student": results["distill"]["random"]}, data)
    results["landcover"] = {}
    for name, (label, tower, fresh_projector) in ARMS.items():
        if (only is not None and name != only) or (only is None and fresh_projector and not fresh):
            continue
        vision = None if tower is None else results["distill"][tower]
        entry = results["landcover"][label] = {"seeds": []}
        for seed in range(seeds if name in SEEDED_ARMS else 1):
            folder = out / "landcover" / (name if seed == 0 else f"{name}-seed{seed}")
            link_data(folder, data)
            entry["seeds"].append({**adapt_on(folder, "quickstart", vision, train_steps, eval_samples,
                                              progress=progress, fresh=fresh_projector, seed=seed),
                                   "folder": str(folder)})
    if domain and only is None:
        rs = out / "rs" / "data"
        if not (rs / "rs").is_dir():
            prepare_remote_sensing(rs)
        link_data(out / "distill-rs", rs)
        results["rs_distill"] = run_distill(out / "distill-rs", distill_steps, distill_batch,
                                            [RS_SOURCES, RS_EVAL, "mixing.general_ratio=0"], progress)
        towers_rs = {"student distilled on remote sensing": results["rs_distill"]["final"],
                     "student distilled on land cover + general": results["distill"]["final"],
                     "random student": results["distill"]["random"], TEACHER: None}
        results["remote_sensing"] = {}
        for label, vision in towers_rs.items():
            folder = out / "remote_sensing" / "-".join(label.split(" ")[:4])
            link_data(folder, rs)
            results["remote_sensing"][label] = {"seeds": [{
                **adapt_on(folder, "remote-sensing_pocket-tiny_full", vision, train_steps, eval_samples,
                           progress=progress), "folder": str(folder)}]}
    return results


PROBE_SETS = ("landcover", "general")


def _labelled(path: Path, per_family: int) -> dict[str, list[dict]]:
    """Up to `per_family` multiple-choice records with a label per question family, in file order."""
    families: dict[str, list[dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("task") == "mc" and record.get("label") is not None:
            entries = families.setdefault(record["family"], [])
            if len(entries) < per_family:
                entries.append(record)
    return families


@torch.inference_mode()
def _features(tower: nn.Module, layer: int, tiling, folder: Path, records: list[dict]) -> np.ndarray:
    """Every patch token of each record's (one-tile) image, flattened: `(records, tokens * width)`."""
    from model.tiling import load_image, preprocess_image
    from model.vision import select_features

    rows = []
    for start in range(0, len(records), 64):
        tiles = [preprocess_image(load_image(folder / r["image"]), tiling) for r in records[start:start + 64]]
        if any(t.shape[0] != 1 for t in tiles):
            raise SystemExit("the probe expects one tile per image (the quick start's 112 px images)")
        rows.append(select_features(tower, torch.cat(tiles), layer).flatten(1))
    return torch.cat(rows).double().numpy()


def probe(towers: dict[str, str], data: Path, per_family: int = 400) -> dict:
    """Held-out accuracy of a logistic regression on each tower's features, per set and question family."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    results: dict = {}
    for label, source in towers.items():
        tower, tiling, layer = load_vision_feature(source)
        tower.eval()
        results[label] = {}
        for name in PROBE_SETS:
            train_sets = _labelled(data / name / "train.jsonl", per_family)
            test_sets = _labelled(data / name / "test.jsonl", 10**9)
            for family, test in test_sets.items():
                train = train_sets.get(family, [])
                x_train = _features(tower, layer, tiling, data / name, train)
                x_test = _features(tower, layer, tiling, data / name, test)
                model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
                model.fit(x_train, [r["label"] for r in train])
                accuracy = float(model.score(x_test, [r["label"] for r in test]))
                chance = max(sum(r["label"] == c for r in test) for c in {r["label"] for r in test}) / len(test)
                results[label][f"{name}/{family}"] = {"accuracy": accuracy, "n_train": len(train),
                                                       "n_test": len(test), "majority": chance}
    return results


def _probe_section(results: dict) -> list[str]:
    return ["What each tower's features carry before any VLM training: a linear probe (logistic regression, C 0.1, "
            "standardised features) on every patch token of the one-tile image, as the projector reads them, fitted "
            "on the sets' training images and scored on their held-out images, per question family (accuracy; "
            "majority class = the most frequent held-out answer's share):", "", *_probe_table(results), "",
            *_probe_findings(results)]


def _probe_findings(results: dict) -> list[str]:
    """The land-cover row and the families where the distilled features gain most on the random ones, in numbers."""
    teacher, distilled, random = (results.get(k) for k in ("teacher (pocket-tiny)", "distilled student",
                                                          "random student"))
    column = "landcover/classification"
    if not (teacher and distilled and random and column in teacher):
        return []
    gains = sorted(((distilled[c]["accuracy"] - random[c]["accuracy"], c) for c in teacher), reverse=True)
    best = ", ".join(f"{c} ({g:+.3f})" for g, c in gains[:2] if g > 0)
    return [f"The random student's features already give the land-cover class at {random[column]['accuracy']:.3f} "
            f"against the teacher's {teacher[column]['accuracy']:.3f} (majority class {teacher[column]['majority']:.3f}), "
            "so a better tower has little to add to the land-cover classification score; "
            + (f"distillation adds most on {best}." if best else "distillation adds nothing on any family here."), ""]


def _probe_table(results: dict) -> list[str]:
    towers = list(results)
    columns = list(next(iter(results.values())))
    first = results[towers[0]]
    lines = ["| set / question family | train / held-out | majority class | " + " | ".join(towers) + " |",
             "|---|---:|---:|" + "---:|" * len(towers)]
    for column in columns:
        cells = " | ".join(f"{results[t][column]['accuracy']:.3f}" for t in towers)
        lines.append(f"| {column} | {first[column]['n_train']} / {first[column]['n_test']} | "
                     f"{first[column]['majority']:.3f} | {cells} |")
    return lines


def _cosine_table(report: dict) -> list[str]:
    before, after = report["held_out_before"], report["held_out_after"]
    lines = ["| held-out source | tiles | cosine before | cosine after |", "|---|---:|---:|---:|"]
    for name, entry in after["sources"].items():
        lines.append(f"| {name} | {entry['tiles']} | {before['sources'][name]['cosine']:.3f} | {entry['cosine']:.3f} |")
    lines.append(f"| all | {sum(e['tiles'] for e in after['sources'].values())} | {before['cosine']:.3f} | {after['cosine']:.3f} |")
    return lines


def _group_mean(arm: dict, group: str) -> float | None:
    """An arm's group score, mean over its seeds."""
    values = [_main(run["summary"], group) for run in arm["seeds"]]
    return None if any(v is None for v in values) else float(np.mean(values))


def _score_cell(arm: dict, group: str) -> str:
    mean = _group_mean(arm, group)
    if mean is None or len(arm["seeds"]) == 1:
        return _fmt(mean)
    each = ", ".join(f"{_main(run['summary'], group):.3f}" for run in arm["seeds"])
    return f"{mean:.3f} ({each})"


def _downstream_table(runs: dict, reference: str) -> list[str]:
    """One row per arm: domain and general (mean over seeds, each seed's in brackets), deltas to `reference`."""
    lines = ["| model | domain | general | Δ domain vs teacher | Δ general vs teacher | wall time (per run) |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, arm in runs.items():
        deltas = []
        for group in ("domain", "general"):
            x, y = _group_mean(arm, group), _group_mean(runs[reference], group)
            deltas.append("–" if x is None or y is None or label == reference else f"{x - y:+.3f}")
        minutes = np.mean([run["minutes"] for run in arm["seeds"]])
        lines.append(f"| {label} | {_score_cell(arm, 'domain')} | {_score_cell(arm, 'general')} | "
                     f"{' | '.join(deltas)} | {minutes:.1f} min |")
    return lines


def sample_scores(predictions: Path, kinds: dict[str, str]) -> dict[str, dict[tuple[str, int], float]]:
    """Group ("domain" / "general") -> (source, line) -> that answer's main metric, from a predictions file;
    `kinds`: source -> group (a source it does not name is domain, as in the eval summary)."""
    register_domain_metrics()  # domain tasks' main metrics, when the runs were read back from disk
    out: dict[str, dict[tuple[str, int], float]] = {"domain": {}, "general": {}}
    for line in predictions.read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        value = main_metric(p["task"], p["scores"])
        if value is not None:
            out[kinds.get(p["source"], "domain")][(p["source"], p["line"])] = float(value)
    return out


def seeds_paired(a: list[Path], b: list[Path], group: str, kinds: dict[str, str]) -> tuple[float, float, int]:
    """`a` − `b` over every answer of the group, paired by seed (the i-th predictions file of each) and held-out
    sample: mean, two standard errors, pairs (`bench.sections.paired_difference`)."""
    x, y = {}, {}
    for seed, (file_a, file_b) in enumerate(zip(a, b, strict=True)):
        x |= {(seed, *k): v for k, v in sample_scores(file_a, kinds)[group].items()}
        y |= {(seed, *k): v for k, v in sample_scores(file_b, kinds)[group].items()}
    return paired_difference(x, y)


def _prediction_files(arm: dict) -> list[Path]:
    return [Path(run["folder"]) / "report" / "predictions_adapted.jsonl" for run in arm["seeds"]]


def _versus(runs: dict, a: str, b: str) -> str:
    """`a` − `b` per group, paired answer by answer over the seeds both ran, against two standard errors."""
    n_seeds = min(len(runs[a]["seeds"]), len(runs[b]["seeds"]))
    files = [_prediction_files(runs[x])[:n_seeds] for x in (a, b)]
    if not all(f.is_file() for f in files[0] + files[1]):
        return "(predictions files missing)"
    kinds = {name: source["kind"] for name, source in runs[a]["seeds"][0]["summary"]["sources"].items()}
    parts = []
    for group in ("domain", "general"):
        mean, se2, n = seeds_paired(*files, group, kinds)
        parts.append(f"{mean:+.3f} {group} (± {se2:.3f}: {'beyond' if abs(mean) > se2 else 'within'} two standard "
                     f"errors; {n} paired answers" + (f" over {n_seeds} seeds" if n_seeds > 1 else "") + ")")
    return ", ".join(parts)


def _delta(runs: dict, a: str, b: str, group: str) -> str:
    x, y = _group_mean(runs[a], group), _group_mean(runs[b], group)
    return "–" if x is None or y is None else f"{x - y:+.3f}"


def _agreement(runs: dict, a: str, b: str) -> str | None:
    """How many held-out answers of runs `a` and `b` (seed 0) are the same, from their predictions files."""
    files = [_prediction_files(runs[x])[0] for x in (a, b)]
    if not all(f.is_file() for f in files):
        return None
    answers = [[json.loads(line)["prediction"] for line in f.read_text().splitlines()] for f in files]
    return f"{sum(x == y for x, y in zip(*answers))} of {len(answers[0])}"


def _findings(runs: dict) -> list[str]:
    """What the land-cover table shows, in numbers: (a) against (b), (a) against (c), and the fresh-projector arms."""
    a, b = ARMS["distilled"][0], ARMS["random"][0]
    lines = []
    if a in runs and b in runs:
        lines.append(f"(a) − (b), distilled against random student, both behind pocket-tiny's projector: "
                     f"{_versus(runs, a, b)}.")
    if b in runs and TEACHER in runs:
        lines.append(f"(c) − (b), the trained tower itself against the random student, the same way: "
                     f"{_versus(runs, TEACHER, b)}: what any student could gain over (b) here.")
    if a in runs and TEACHER in runs:
        same = _agreement(runs, a, TEACHER)
        lines.append(f"(a) − (c), the distilled student's distance to the teacher: {_versus(runs, a, TEACHER)}"
                     + (f"; with seed 0 the two give the same answer on {same} held-out samples." if same else "."))
    fa, fb = ARMS["distilled-fresh"][0], ARMS["random-fresh"][0]
    first = _first_seed(runs)
    if a in runs and fa in runs:
        lines.append(f"The vision adapter against a fresh projector on the same distilled student (seed 0 each): "
                     f"{_delta(first, a, fa, 'domain')} domain, {_delta(first, a, fa, 'general')} general"
                     + (f" (random student: {_delta(first, b, fb, 'domain')} / "
                        f"{_delta(first, b, fb, 'general')})." if b in runs and fb in runs else "."))
    return lines


def _first_seed(runs: dict) -> dict:
    return {label: {"seeds": arm["seeds"][:1]} for label, arm in runs.items()}


DEFAULTS = {"distill_steps": 300, "distill_batch": 16, "train_steps": 400, "eval_samples": 0, "seeds": 3}


def _budget(budget: dict) -> str:
    """Which budget ran: the full one (the defaults) or a reduced one, named against the defaults."""
    def spelled(values: dict) -> str:
        return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())

    if budget == DEFAULTS:
        return f"The full budget (the script's defaults: {spelled(DEFAULTS)})."
    return (f"A reduced budget ({spelled(budget)}); the full one ({spelled(DEFAULTS)}, `python bench/bench_distill.py "
            "--fresh --write`) is not what this section shows.")


def _floor(runs: dict, steps: int) -> str:
    best = max((_group_mean(arm, "domain") or 0.0) for arm in runs.values())
    return (f"Every model's domain score is at most {best:.3f}: after {steps} quick-start steps the land-cover task is "
            "barely learnt by any of them, so the towers separate on the general set." if best < 0.3 else "")


def section(results: dict, command: str, budget: dict) -> str:
    d = results["distill"]["report"]
    adapter = d.get("vision_adapter")
    adapter_text = ("the width projection of pair {pair} (vision_feature_layer {vision_feature_layer}: the feature "
                    "pocket-tiny's projector reads) is written into final/ as the tower's vision adapter"
                    .format(**adapter) if adapter else "no vision adapter was written")
    runs = results["landcover"]
    lines = [f"Teacher: pocket-tiny's trained tower ({d['teacher_params']:,} params, 96 wide, 4 layers); student: an "
             f"InternViT-300M-shaped config at half the width ({d['student_params']:,} params, 48 wide, 4 layers) "
             f"with a {d['projection_params']:,}-param width projection; layer pairs (teacher, student) {d['pairs']}; "
             f"{d['steps']} distillation steps of {results['distill']['batch']} images on land-cover + general images "
             f"({results['distill']['minutes']:.1f} min); {adapter_text}.",
             "", *_cosine_table(d), "",
             *(_probe_section(results["probe"]) if "probe" in results else []),
             "The land-cover quick start (templates/recipes/quickstart.yaml: vision tower frozen, projector and LLM "
             "trained in full; the same steps, data and seeds for each) on pocket-tiny with (a) the distilled student and "
             "its vision adapter in front of pocket-tiny's own trained projector (`model.vision_adapter: auto`; the "
             "adapter trains with the projector), (b) the random student (the distillation's starting weights) with the "
             "distillation's initial random projection, the same way, (c) pocket-tiny itself, tower and projector"
             + ("; and, for comparison, (a) and (b) with a freshly initialised projector (`model.vision_adapter: fresh`)"
                if any(ARMS[n][0] in runs for n in ("distilled-fresh", "random-fresh")) else "") + ":", "",
             *_downstream_table(runs, TEACHER), "",
             *([f"Domain and general: mean over training seeds 0-{len(runs[TEACHER]['seeds']) - 1} (initialisation "
                "and data order; each seed's score in brackets); one seed for the fresh-projector arms.", ""]
               if len(runs.get(TEACHER, {"seeds": [0]})["seeds"]) > 1 else []),
             " ".join(filter(None, [*_findings(runs), _floor(runs, budget["train_steps"]), _budget(budget)]))]
    if "remote_sensing" in results:
        r = results["rs_distill"]["report"]
        lines += ["", f"Domain distillation: the same student distilled {r['steps']} steps on remote-sensing images only "
                  "(UC Merced, RSVQA-LR, DIOR-RSVG of the remote-sensing quick start):", "", *_cosine_table(r), "",
                  "The remote-sensing quick start on each tower (each student with its vision adapter):", "",
                  *_downstream_table(results["remote_sensing"], TEACHER)]
    lines += ["", "Domain: the held-out domain group's main metric (land cover: accuracy and Acc@0.5 over its classification "
              "and grounding samples); general: the general set's. Cosine: the student's patch features through its "
              "projection against the teacher's, mean over tiles, tokens and layer pairs. Wall time: training and "
              "evaluation of one run with OMP_NUM_THREADS=1, up to two runs side by side (`--only`) on the two cores "
              "of a machine shared with other work.",
              "", f"Measured on {machine_line()}, seeds fixed; regenerate with `{command}`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_distill")
    parser.add_argument("--distill-steps", type=positive_int, default=DEFAULTS["distill_steps"])
    parser.add_argument("--distill-batch", type=positive_int, default=DEFAULTS["distill_batch"],
                        help="images per distillation step")
    parser.add_argument("--train-steps", type=positive_int, default=DEFAULTS["train_steps"])
    parser.add_argument("--eval-samples", type=int, default=DEFAULTS["eval_samples"],
                        help="held-out samples per eval source (0 = all)")
    parser.add_argument("--seeds", type=positive_int, default=DEFAULTS["seeds"],
                        help="training seeds for (a), (b) and (c): 0..N-1 (the others run seed 0)")
    parser.add_argument("--domain", action="store_true", help="also distil on remote-sensing images only (item 4)")
    parser.add_argument("--write", action="store_true", help=f"replace the `distill` section of {README.name}")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--fresh", action="store_true",
                        help="also the distilled and random students with a fresh projector (no vision adapter)")
    parser.add_argument("--only", choices=list(ARMS),
                        help="run the distillation and this one land-cover arm (all its seeds), then stop "
                             "(to share the work out)")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # recipes resolve relative output dirs against their own folder
    command = "python bench/bench_distill.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("distill_steps", args.distill_steps),
                                                     ("distill_batch", args.distill_batch),
                                                     ("train_steps", args.train_steps),
                                                     ("eval_samples", args.eval_samples),
                                                     ("seeds", args.seeds))) \
        + (" --fresh" if args.fresh else "") + (" --domain" if args.domain else "") + " --write"
    results = measure(args.out, args.distill_steps, args.distill_batch, args.train_steps, args.eval_samples or None,
                      args.domain, args.progress, args.only, args.fresh, args.seeds)
    if args.only:
        return 0
    text = section(results, command, {k: getattr(args, k) for k in DEFAULTS})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "section.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    print(text)
    if args.write:
        write_section(README, "distill", text)
        print(f"wrote the distill section of {README}")
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
