"""Distillation measured end to end on CPU (issue 13 item 1): `adapt distill` then the quick start on its tower.

    python bench/bench_distill.py                       # run, print the section
    python bench/bench_distill.py --write               # and replace README.md's `distill` section
    python bench/bench_distill.py --distill-steps 40 --train-steps 60 --eval-samples 20   # a short look

1. Distil pocket-tiny's trained vision tower (the teacher: 96 wide, 4 layers) into a half-width InternViT student
   (templates/recipes/distill_pocket-tiny.yaml) on the land-cover + general images of the quick start, mixed by
   ratio; report the student's held-out patch-feature cosine to the teacher before and after.
2. Adapt pocket-tiny to the land-cover quick start (templates/recipes/quickstart.yaml, the same budget for each)
   with its vision tower replaced by (a) the distilled student, (b) the same student as initialised (random),
   (c) the teacher itself; every one gets a freshly initialised projector (`model.projector=pixel_shuffle_mlp`),
   so only the tower differs. Domain and general scores side by side.
3. With --domain: distil on remote-sensing images only (the remote-sensing quick start's UC Merced / RSVQA / DIOR
   sets) and adapt the remote-sensing quick start on that student, the general-distilled one and the random one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt.distill import distill  # noqa: E402
from adapt.quickstart import prepare_landcover, prepare_remote_sensing  # noqa: E402
from adapt.recipe import load_recipe  # noqa: E402
from adapt.run_eval import evaluate_model  # noqa: E402
from adapt.train import train  # noqa: E402
from bench.sections import ROOT, machine_line, write_section  # noqa: E402
from model.checkpoints.tower import load_vision, save_tower  # noqa: E402
from model.resources import templates_dir  # noqa: E402

README = ROOT / "README.md"
FRESH_PROJECTOR = ["model.projector=pixel_shuffle_mlp", "model.projector_options={downsample_ratio: 0.5, ps_version: v2}"]
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
                         [f"training.max_steps={steps}", f"training.batch_size={batch}", f"output.save_every={steps}", f"output.dir={folder / 'run'}",
                          "logging.tensorboard=false", *overrides])
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
    return {"final": str(final), "random": str(random_dir), "report": report, "minutes": minutes, "batch": batch}


def adapt_on(folder: Path, template: str, vision: str, steps: int, eval_samples: int | None,
             overrides: list[str] = (), progress: bool = False) -> dict:
    """The quick start's recipe `template` trained `steps` steps on pocket-tiny with tower `vision`; its eval summary."""
    recipe = load_recipe(copy_template(template, folder),
                         [f"model.vision={vision}", *FRESH_PROJECTOR, f"training.max_steps={steps}",
                          f"output.save_every={steps}", f"output.dir={folder / 'train'}", "logging.tensorboard=false",
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


def measure(out: Path, distill_steps: int, distill_batch: int, train_steps: int, eval_samples: int | None,
            domain: bool, progress: bool = False, only: str | None = None) -> dict:
    """Every run the section needs; `only` ("distilled", "random" or "teacher") runs the distillation and that one
    land-cover run (several processes can share the work; a later full call reuses what they finished)."""
    data = out / "data"
    if not (data / "landcover").is_dir():
        prepare_landcover(data)
    link_data(out / "distill", data)
    results: dict = {"distill": run_distill(out / "distill", distill_steps, distill_batch, progress=progress)}
    towers = {"distilled student": results["distill"]["final"], "random student": results["distill"]["random"],
              "teacher (pocket-tiny's tower)": "pocket-tiny"}
    results["landcover"] = {}
    for label, vision in towers.items():
        folder = out / "landcover" / label.split(" ")[0]
        if only is not None and folder.name != only:
            continue
        link_data(folder, data)
        results["landcover"][label] = adapt_on(folder, "quickstart", vision, train_steps, eval_samples, progress=progress)
    if domain and only is None:
        rs = out / "rs" / "data"
        if not (rs / "rs").is_dir():
            prepare_remote_sensing(rs)
        link_data(out / "distill-rs", rs)
        results["rs_distill"] = run_distill(out / "distill-rs", distill_steps, distill_batch,
                                            [RS_SOURCES, RS_EVAL, "mixing.general_ratio=0"], progress)
        towers_rs = {"student distilled on remote sensing": results["rs_distill"]["final"],
                     "student distilled on land cover + general": results["distill"]["final"],
                     "random student": results["distill"]["random"], "teacher (pocket-tiny's tower)": "pocket-tiny"}
        results["remote_sensing"] = {}
        for label, vision in towers_rs.items():
            folder = out / "remote_sensing" / "-".join(label.split(" ")[:4])
            link_data(folder, rs)
            results["remote_sensing"][label] = adapt_on(folder, "remote-sensing_pocket-tiny_full", vision, train_steps,
                                                        eval_samples, progress=progress)
    return results


def _cosine_table(report: dict) -> list[str]:
    before, after = report["held_out_before"], report["held_out_after"]
    lines = ["| held-out images | tiles | cosine before | cosine after |", "|---|---:|---:|---:|"]
    for name, entry in after["sources"].items():
        lines.append(f"| {name} | {entry['tiles']} | {before['sources'][name]['cosine']:.3f} | {entry['cosine']:.3f} |")
    lines.append(f"| all | {sum(e['tiles'] for e in after['sources'].values())} | {before['cosine']:.3f} | {after['cosine']:.3f} |")
    return lines


def _downstream_table(runs: dict, reference: str) -> list[str]:
    lines = ["| vision tower | domain | general | Δ domain vs teacher | Δ general vs teacher | wall time |",
             "|---|---:|---:|---:|---:|---:|"]
    ref = runs[reference]["summary"]
    for label, run in runs.items():
        s = run["summary"]
        deltas = [None if _main(s, g) is None or _main(ref, g) is None else _main(s, g) - _main(ref, g)
                  for g in ("domain", "general")]
        lines.append(f"| {label} | {_fmt(_main(s, 'domain'))} | {_fmt(_main(s, 'general'))} | "
                     + " | ".join("–" if d is None or label == reference else f"{d:+.3f}" for d in deltas)
                     + f" | {run['minutes']:.1f} min |")
    return lines


def section(results: dict, command: str) -> str:
    d = results["distill"]["report"]
    lines = [f"Teacher: pocket-tiny's trained tower ({d['teacher_params']:,} params, 96 wide, 4 layers); student: an "
             f"InternViT-300M-shaped config at half the width ({d['student_params']:,} params, 48 wide, 4 layers) "
             f"with a {d['projection_params']:,}-param width projection; layer pairs (teacher, student) {d['pairs']}; "
             f"{d['steps']} distillation steps of {results['distill']['batch']} images on land-cover + general images ({results['distill']['minutes']:.1f} min).",
             "", *_cosine_table(d), "",
             "The land-cover quick start on each tower (same recipe, steps and seed; a fresh projector for every tower; "
             "vision tower frozen as in the template):", "",
             *_downstream_table(results["landcover"], "teacher (pocket-tiny's tower)")]
    if "remote_sensing" in results:
        r = results["rs_distill"]["report"]
        lines += ["", f"Domain distillation: the same student distilled {r['steps']} steps on remote-sensing images only "
                  "(UC Merced, RSVQA-LR, DIOR-RSVG of the remote-sensing quick start):", "", *_cosine_table(r), "",
                  "The remote-sensing quick start on each tower:", "",
                  *_downstream_table(results["remote_sensing"], "teacher (pocket-tiny's tower)")]
    lines += ["", "Domain: the held-out domain group's main metric (land cover: accuracy and Acc@0.5 over its classification "
              "and grounding samples); general: the general set's. Cosine: the student's patch features through its "
              "projection against the teacher's, mean over tiles, tokens and layer pairs.",
              "", f"Measured on {machine_line()}, seeds fixed; regenerate with `{command}`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_distill")
    parser.add_argument("--distill-steps", type=int, default=300)
    parser.add_argument("--distill-batch", type=int, default=16, help="images per distillation step")
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--eval-samples", type=int, default=100, help="held-out samples per eval source (0 = all)")
    parser.add_argument("--domain", action="store_true", help="also distil on remote-sensing images only (item 3)")
    parser.add_argument("--write", action="store_true", help=f"replace the `distill` section of {README.name}")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--only", choices=["distilled", "random", "teacher"],
                        help="run the distillation and this one land-cover run, then stop (to share the work out)")
    args = parser.parse_args(argv)
    command = "python bench/bench_distill.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("distill_steps", args.distill_steps),
                                                     ("distill_batch", args.distill_batch),
                                                     ("train_steps", args.train_steps),
                                                     ("eval_samples", args.eval_samples))) \
        + (" --domain" if args.domain else "") + " --write"
    results = measure(args.out, args.distill_steps, args.distill_batch, args.train_steps, args.eval_samples or None,
                      args.domain, args.progress, args.only)
    if args.only:
        return 0
    text = section(results, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "section.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    print(text)
    if args.write:
        write_section(README, "distill", text)
        print(f"wrote the distill section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
