"""`adapt eval`: generate answers on a recipe's held-out sources and score them, domain and general side by side."""

from __future__ import annotations

from pathlib import Path

import model as model_core
from model.errors import PocketAdaptError
from model.progress import Progress

from .data.samples import MissingDataError, SkipLog, missing_annotation_file
from .evaluate import PREDICTIONS, predict, save_predictions, summarize
from .recipe import Recipe
from .train import load_records, source_specs


class EvalError(PocketAdaptError):
    """A recipe that cannot be evaluated as asked (no eval sources)."""


def check_eval_sources(recipe: Recipe) -> None:
    """Refuse a recipe with no `data.eval_sources`, or one whose annotation file is missing, before a model is loaded
    and exported for nothing (a distillation recipe is refused before, by the CLI's `_check_recipe_kind`)."""
    if not recipe.data.eval_sources:
        raise EvalError(f"recipe {recipe.name!r} has no data.eval_sources to evaluate on")
    for spec in source_specs(recipe.data.eval_sources, held_out=True):
        if (missing := missing_annotation_file(spec.path)) is not None:
            raise MissingDataError(f"data.eval_sources: source {spec.name!r}: {missing}")


def evaluate_model(recipe: Recipe, source: str | Path, label: str, out_dir: Path, progress: Progress = True,
                   runtime: str = "pytorch", gguf_type: str | None = None, variant: str | None = None) -> dict:
    """Score one model on the recipe's `data.eval_sources`; returns its summary (see `adapt.evaluate.summarize`).

    Every model is prompted with the recipe's ``model.chat_template`` when it sets one (as training does),
    so base and adapted are scored on the same prompts; the summary's ``chat_template`` names the template used.
    Its predictions go to ``out_dir/predictions_<label>.jsonl``; skipped records as `score_eval_sources` says, as
    run ``label`` (each model scored into `out_dir` has its own in ``skips.md``).

    Another ``runtime`` (`deploy.runtimes`: ``llamacpp``, ``onnx``, ``executorch``): the model is exported in that
    runtime's format at ``variant`` (a GGUF type, an ONNX or ExecuTorch precision; ``gguf_type`` is the llama.cpp
    spelling), into ``out_dir/<format>/<label>``, and its answers come from that runtime, given exactly the token ids
    and tiles PyTorch would get (`deploy.llamacpp.eval`, `deploy.onnx.eval`, `deploy.executorch.eval`).
    """
    check_eval_sources(recipe)
    vlm, processor = model_core.load(source, dtype=recipe.model.dtype, allow_pickle=recipe.model.allow_pickle,
                                     chat_template=recipe.model.chat_template)
    processor.tiling = recipe.tiling_for(processor.tiling)
    engine = None
    if runtime != "pytorch":
        from deploy.hf import export
        from deploy.runtimes import RuntimeChoiceError, get_runtime

        try:
            engine = get_runtime(runtime)
            variant = engine.check_variant(variant or gguf_type or engine.default_variant)
        except RuntimeChoiceError as err:
            raise EvalError(str(err)) from None
        name = label.removesuffix(f"-{variant}") or "model"
        folder = export(vlm, processor, engine.export_format, out_dir / engine.export_format / label, force=True,
                        **engine.export_options(variant, name, progress))
        del vlm
        vlm = engine.load("eval")(folder, processor)
    try:
        summary, predictions = score_eval_sources(vlm, processor, recipe, out_dir, progress=progress,
                                                  desc=f"evaluating {label}", run=label)
    finally:
        if engine is not None:
            vlm.close()
    summary["chat_template"] = processor.chat_template.name
    if engine is not None:
        summary["runtime"] = f"{engine.title} {variant}"
    save_predictions(predictions, out_dir / PREDICTIONS.format(label=label))
    return summary


def score_eval_sources(vlm, processor, recipe: Recipe, out_dir: Path, progress: Progress = True,
                       desc: str = "evaluating", run: str | None = None) -> tuple[dict, list]:
    """Generate and score answers on `recipe.data.eval_sources` with `processor.tiling`; returns (summary, predictions).

    Records skipped while reading and those skipped while predicting (images that do not decode, a reference its
    task cannot score, a task without a scorer) are counted
    together in `out_dir/skips.md` (with `run`, that run's table beside those of the other runs scored there:
    `adapt.data.samples.SkipLog.save`) and in the summary's ``skipped`` (per source and in all), and held to
    ``data.max_bad_fraction`` (a `DataQualityError` past it), as in training; with ``eval.max_samples``, those dropped
    while predicting are held to it as a share of the records scored too. `adapt eval` and the
    evaluations during `adapt train` (``eval.every``) both score through here.
    """
    skips = SkipLog()
    specs = source_specs(recipe.data.eval_sources, held_out=True)
    records = load_records(specs, processor, recipe.training.max_seq_length, skips, processor.tiling)
    kept = {name: len(rs) for name, rs in records.items()}
    try:
        skips.check(kept, recipe.data.max_bad_fraction)
    except PocketAdaptError:
        skips.save(out_dir, run)
        raise
    scored = {name: rs[: recipe.eval.max_samples] if recipe.eval.max_samples else rs for name, rs in records.items()}
    flat = [r for rs in scored.values() for r in rs]
    predictions = predict(vlm, processor, flat, max_new_tokens=recipe.eval.max_new_tokens,
                          batch_size=recipe.eval.batch_size, progress=progress, desc=desc)
    where = {(r.source, r.line): r.where for r in flat}
    for skipped in predictions.skipped:
        skips.add_dropped(skipped.source, skipped.kind, where.get((skipped.source, skipped.line), skipped.source),
                          skipped.reason)
    out_dir.mkdir(parents=True, exist_ok=True)
    skips.save(out_dir, run)
    # with eval.max_samples, the drops are a share of the records scored, not of the file: 5 of 5 is not 5 of 100
    skips.check(kept, recipe.data.max_bad_fraction, used={name: len(rs) for name, rs in scored.items()})
    summary = summarize(predictions, {s.name: s.kind for s in specs}, recipe.eval.context())
    for name in skips.sources():  # the true count: skipped while reading too, not only while predicting
        entry = summary["sources"].setdefault(name, {"kind": next(s.kind for s in specs if s.name == name), "n": 0,
                                                     "main": None, "metrics": {}, "tasks": {}, "notes": []})
        entry["skipped"] = skips.count(name)
    summary["skipped"] = skips.count()
    return summary, predictions


def eval_kinds(recipe: Recipe) -> dict[str, str]:
    return {s.name: s.kind for s in source_specs(recipe.data.eval_sources, held_out=True)}
