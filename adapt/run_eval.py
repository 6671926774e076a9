"""`adapt eval`: generate answers on a recipe's held-out sources and score them, domain and general side by side."""

from __future__ import annotations

from pathlib import Path

import model as model_core

from .data.samples import SkipLog
from .evaluate import predict, save_predictions, summarize
from .recipe import Recipe
from .train import load_records, source_specs


def evaluate_model(recipe: Recipe, source: str | Path, label: str, out_dir: Path, progress: bool = True) -> dict:
    """Score one model on the recipe's `data.eval_sources`; returns its summary (see `adapt.evaluate.summarize`)."""
    if not recipe.data.eval_sources:
        raise ValueError(f"recipe {recipe.name!r} has no data.eval_sources to evaluate on")
    vlm, processor = model_core.load(source, dtype=recipe.model.dtype, allow_pickle=recipe.model.allow_pickle)
    processor.tiling = recipe.tiling_for(processor.tiling)
    skips = SkipLog()
    specs = source_specs(recipe.data.eval_sources)
    records = load_records(specs, processor, recipe.training.max_seq_length, skips, processor.tiling)
    flat = [r for rs in records.values() for r in (rs[: recipe.eval.max_samples] if recipe.eval.max_samples else rs)]
    predictions = predict(vlm, processor, flat, max_new_tokens=recipe.eval.max_new_tokens,
                          batch_size=recipe.eval.batch_size, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_predictions(predictions, out_dir / f"predictions_{label}.jsonl")
    if skips.count():
        skips.save(out_dir)
    return summarize(predictions, {s.name: s.kind for s in specs}, recipe.eval.context())


def eval_kinds(recipe: Recipe) -> dict[str, str]:
    return {s.name: s.kind for s in source_specs(recipe.data.eval_sources)}
