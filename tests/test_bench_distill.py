"""The distillation study's comparison (issue 13 item 1, bench/bench_distill.py): "distilled beats random" is read
from answers paired by training seed and held-out sample, split by the eval summary's domain / general kinds."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_distill import _cosine_table, sample_scores, seeds_paired  # noqa: E402
from bench.sections import paired_difference  # noqa: E402

KINDS = {"landcover": "domain", "replay": "general"}


def _predictions(path: Path, right: dict[tuple[str, int], int]) -> Path:
    rows = [{"source": source, "line": line, "task": "mc", "prompt": "q", "prediction": "A", "reference": "A",
             "scores": {"accuracy": float(ok)}, "meta": {}} for (source, line), ok in right.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_scores_are_split_by_the_summary_kinds(tmp_path):
    """A general source is whatever the summary calls general, whatever its name; other sources are domain."""
    file = _predictions(tmp_path / "p.jsonl", {("landcover", 1): 1, ("replay", 1): 0, ("unnamed", 2): 1})
    scores = sample_scores(file, KINDS)
    assert scores["general"] == {("replay", 1): 0.0}
    assert scores["domain"] == {("landcover", 1): 1.0, ("unnamed", 2): 1.0}


def test_difference_is_paired_by_seed_and_sample(tmp_path):
    """Seed 0 of (a) meets seed 0 of (b), seed 1 meets seed 1; a sample only one side answered is not compared."""
    a = [_predictions(tmp_path / "a0.jsonl", {("landcover", 1): 1, ("landcover", 2): 0, ("landcover", 3): 1}),
         _predictions(tmp_path / "a1.jsonl", {("landcover", 1): 1, ("landcover", 2): 1, ("landcover", 3): 1})]
    b = [_predictions(tmp_path / "b0.jsonl", {("landcover", 2): 1, ("landcover", 3): 1, ("landcover", 4): 0}),
         _predictions(tmp_path / "b1.jsonl", {("landcover", 1): 0, ("landcover", 2): 1, ("landcover", 3): 1})]
    mean, se2, n = seeds_paired(a, b, "domain", KINDS)
    diffs = [-1, 0, 1, 0, 0]  # seed 0 over lines 2, 3; seed 1 over lines 1, 2, 3
    assert n == len(diffs)
    assert mean == pytest.approx(statistics.fmean(diffs))
    assert se2 == pytest.approx(2 * statistics.stdev(diffs) / len(diffs) ** 0.5)
    with pytest.raises(ValueError):  # seeds must pair one to one
        seeds_paired(a, b[:1], "domain", KINDS)


def test_paired_difference_needs_two_common_answers():
    assert paired_difference({1: 1.0, 2: 0.0}, {1: 0.0, 2: 0.0}) == pytest.approx((0.5, 2 * 0.5 ** 0.5 / 2 ** 0.5, 2))
    with pytest.raises(ValueError, match="1 answers in common"):
        paired_difference({1: 1.0, 2: 0.0}, {1: 0.0, 3: 0.0})


def test_cosine_table_labels_its_first_column_as_the_source():
    """The README's cosine table headed its column of source names (ucmerced, rsvqa_lr) "held-out images"; it and
    distil's report.md now both say "held-out source"."""
    side = {"cosine": 0.5, "sources": {"ucmerced": {"cosine": 0.5, "tiles": 3}}}
    lines = _cosine_table({"held_out_before": side, "held_out_after": side})
    assert lines[0].startswith("| held-out source | tiles |") and lines[2].startswith("| ucmerced | 3 |")
