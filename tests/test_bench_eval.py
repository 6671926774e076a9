"""bench/bench_eval.py compares versions only over the same samples."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_versions_that_answered_different_numbers_of_samples_are_refused(monkeypatch):
    """samples/s was every version's time over the number the code now answered, and the answers were compared
    pairwise with zip, which stops at the shorter list: a version that evaluated fewer samples (its own template)
    showed a wrong rate and "N of N" equal answers."""
    import adapt.quickstart
    from bench import bench_eval

    monkeypatch.setattr(adapt.quickstart, "prepare_landcover", lambda folder: None)
    monkeypatch.setattr(bench_eval, "unpack_revision", lambda revision, folder: ROOT)

    def run(code, recipe, out, overrides):
        answers = ["a"] * (3 if recipe.name == "recipe-1.yaml" else 4)  # recipe-1: the `before` tree's
        return {"predict_s": 1.0, "process_s": 2.0, "answers": answers, "batch_size": 2}

    monkeypatch.setattr(bench_eval, "_run", run)
    with pytest.raises(SystemExit, match="different numbers of samples.*now 4, before 3"):
        bench_eval.measure(1, "HEAD", [], "python bench/bench_eval.py --write")
