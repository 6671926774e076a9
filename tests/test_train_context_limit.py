"""A training sample longer than the language model's context trained positions the model never learnt, silently,
whenever training.max_seq_length was above the context (4096, the default, against MobileLLaMA's 2048). Such samples
are now skipped as too long, and the run says why."""

from __future__ import annotations

import model
from adapt.data import SkipLog, measure, read_source
from adapt.recipe import load_recipe
from adapt.train import Trainer, source_specs
from tests.test_train import data_dir, write_recipe  # noqa: F401  (the module fixture)


def test_samples_past_the_models_context_are_skipped_and_said(tmp_path, data_dir, capsys):  # noqa: F811
    vlm, processor = model.load("pocket-tiny-scratch")
    path = write_recipe(tmp_path, data_dir, steps=1, save_every=1)
    recipe = load_recipe(path)
    specs = source_specs(recipe.data.sources)
    lengths = sorted(r.n_tokens for s in specs for r in measure(read_source(s, SkipLog()), processor, 10**6, SkipLog()))
    context = lengths[len(lengths) // 2]  # about half the samples are longer
    longer = sum(n > context for n in lengths)
    assert 0 < longer < len(lengths) and recipe.training.max_seq_length > context
    vlm.config.text_config.max_position_embeddings = context
    model.save(vlm, processor, tmp_path / "short")
    recipe = load_recipe(path, [f"model.source={tmp_path / 'short'}", "data.max_bad_fraction=1.0"])
    trainer = Trainer(recipe, progress=False)
    out = capsys.readouterr().out
    assert f"more than the language model's context of {context} tokens" in out, out
    assert trainer.skips.count(reason="too long for max_seq_length") == longer
    assert all(r.n_tokens <= context for records in trainer.records.values() for r in records)
    trainer.close(discard=True)
