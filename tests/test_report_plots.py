"""What a user reads off comparison.png and loss.png: the drawn figure's data and layout, not only a valid PNG."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from adapt.evaluate import Prediction, plot_comparison, plot_loss_curve, summarize
from tests.test_evaluate import _drawn_figure

LONG = "remote_sensing_dota_v1_5_val_chips_1024px_overlap200_with_difficult_and_truncated"


def _runs(scale: float = 1.0) -> tuple[dict, dict]:
    kinds = {"coco_general_replay": "general"}
    counts = {LONG: 10, "Ärzte-Fragen": 8, "coco_general_replay": 10, "vqa_rad": 5}

    def run(good: float) -> dict:
        preds = [Prediction(s, i, "mc", "q", "A", "A", scores={"accuracy": float(i < good * n or s == "vqa_rad")})
                 for s, n in counts.items() for i in range(n)]
        return summarize(preds, kinds)

    runs = {"base": run(0.62), "adapted": run(0.63)}
    if scale != 1.0:  # a registered task's main metric on another scale (a CIDEr-like score)
        for r in runs.values():
            for entry in [*r["sources"].values(), *r["groups"].values()]:
                entry["main"] *= scale
    return runs, kinds


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_comparison_keeps_bars_readable_beside_a_long_source_name(tmp_path, monkeypatch):
    """One 84-character source name took most of the figure for its tick label: the per-source bars shrank into a
    corner, their value labels (0.625 0.625) printed over each other and the legend over the bars' values."""
    runs, kinds = _runs()
    fig = _drawn_figure(monkeypatch, lambda: plot_comparison(runs, kinds, tmp_path / "comparison.png"))
    ax_g, ax_s = fig.axes
    assert ax_s.get_position().width > 0.4  # the per-source panel keeps its room
    labels = [t.get_text() for t in ax_s.get_xticklabels()]
    assert all(len(line) <= 28 for label in labels for line in label.splitlines()), labels
    assert any(line.startswith("remote_sensin") and line.endswith("truncated") for label in labels
               for line in label.splitlines())
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # the layout as saved
    for ax in (ax_g, ax_s):
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) == 2 * len(ax.get_xticks())
        assert not [pair for pair in itertools.combinations(boxes, 2) if _overlap(*pair)]
        legend = fig.legends[0].get_window_extent(renderer)
        assert not [b for b in boxes if _overlap(b, legend)]


def test_comparison_names_each_bars_sample_count(tmp_path, monkeypatch):
    """eval.md gives every mean its n; the chart gave none, so a +0.2 on 3 samples looked like one on 300."""
    runs, kinds = _runs()
    fig = _drawn_figure(monkeypatch, lambda: plot_comparison(runs, kinds, tmp_path / "comparison.png"))
    ax_g, ax_s = fig.axes
    assert [t.get_text() for t in ax_g.get_xticklabels()] == ["domain\nn = 23", "general\nn = 10"]
    assert "vqa_rad\ndomain, n = 5" in [t.get_text() for t in ax_s.get_xticklabels()]


def test_comparison_axis_holds_a_main_metric_above_one(tmp_path, monkeypatch):
    """The y axis stopped at 1.22: a registered task's main metric on a larger scale ran off the chart."""
    runs, kinds = _runs(scale=5.0)
    fig = _drawn_figure(monkeypatch, lambda: plot_comparison(runs, kinds, tmp_path / "comparison.png"))
    for ax, part in zip(fig.axes, ("groups", "sources")):
        top = max(e["main"] for r in runs.values() for e in r[part].values())
        assert top > 3 and ax.get_ylim()[1] > top, part


def _log(path, entries) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def _loss_line(fig, label: str = "loss (total)"):
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_label() == label]
    return line


def test_loss_curve_keeps_the_last_value_of_a_step_logged_twice(tmp_path, monkeypatch):
    """A log holding steps 21-30 twice (a resume from checkpoint 20 whose old lines stayed) drew a line running back
    from step 30 to 21, a zigzag that reads as a loss jump; the resumed run's values now stand, in step order."""
    log = tmp_path / "train_log.jsonl"
    _log(log, [{"step": s, "loss": 3 - 0.05 * s} for s in range(1, 31)]
         + [{"step": s, "loss": 3.1 - 0.05 * s} for s in range(21, 41)])
    line = _loss_line(_drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png")))
    xs, ys = list(line.get_xdata()), list(line.get_ydata())
    assert xs == list(range(1, 41))
    assert ys[25] == pytest.approx(3.1 - 0.05 * 26)


def test_loss_curve_uses_a_log_axis_when_the_loss_falls_by_decades(tmp_path, monkeypatch):
    """From 10 to 0.001 on a linear axis, everything after the first steps was a flat line on 0."""
    log = tmp_path / "train_log.jsonl"
    _log(log, [{"step": s, "loss": 10 * math.exp(-s / 4)} for s in range(1, 41)])
    ax = _drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png")).axes[0]
    assert ax.get_yscale() == "log" and "log" in ax.get_ylabel()
    _log(log, [{"step": s, "loss": 2.5 - 0.05 * s} for s in range(1, 41)])  # within a decade: linear
    ax = _drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png")).axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "loss"


def test_loss_curve_of_a_long_noisy_run_shows_its_trend(tmp_path, monkeypatch):
    """2000 per-step losses scattering by ±0.5 around a fall of 2 drew a black band: the trend was not readable.
    The steps stay (faint), the labelled line is their running mean, and the title says over how many steps."""
    rng = random.Random(0)
    log = tmp_path / "train_log.jsonl"
    _log(log, [{"step": s, "loss": 2 * math.exp(-s / 500) + rng.random(), "loss/rs": 1 + rng.random()}
               for s in range(1, 2001)])
    fig = _drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png"))
    ax = fig.axes[0]
    mean = np.asarray(_loss_line(fig).get_ydata())
    raw = [line for line in ax.get_lines() if line.get_label().startswith("_") and line.get_color() == "black"]
    assert len(raw) == 1 and raw[0].get_alpha() < 0.5 and len(raw[0].get_xdata()) == 2000
    assert np.abs(np.diff(mean)).mean() < 0.1 * np.abs(np.diff(raw[0].get_ydata())).mean()
    assert len(_loss_line(fig, "rs").get_ydata()) == 2000
    assert "running mean over 81 steps" in ax.get_title()
    expected = 2 * np.exp(-np.arange(1, 2001) / 500) + 0.5
    assert np.abs(mean[100:-100] - expected[100:-100]).max() < 0.25


def test_eval_md_table_survives_a_source_name_with_a_pipe(tmp_path):
    """A source named "rsvqa|lr" split its row of the Sources table into one cell more than the header: the
    numbers shifted a column (Markdown renderers drop or misplace the extra cell)."""
    from adapt.evaluate import write_report

    preds = [Prediction(s, 1, "mc", "q", "A", "A", scores={"accuracy": 1.0}) for s in ("rsvqa|lr", "vqa_rad")]
    md = write_report(tmp_path, {"base": summarize(preds)})[1].read_text(encoding="utf-8")
    table = md.split("## Sources (main metric)")[1].split("\n\n")[1].splitlines()
    cells = [len(line.replace("\\|", "").split("|")) for line in table]
    assert len(set(cells)) == 1, table
    assert "rsvqa\\|lr" in table[2] or "rsvqa\\|lr" in table[3]


def test_eval_md_gives_no_delta_between_runs_that_scored_different_samples(tmp_path):
    """An adapted run that scored 6 of a source's 10 samples (4 skipped) was quoted as a +0.333 gain over the base's
    10: the two means are over different samples. The Δ is "—" with a note saying both counts, and the group's
    too."""
    from adapt.evaluate import write_report

    def run(n: int, good: int) -> dict:
        preds = [Prediction("rs", i, "mc", "q", "A", "A", scores={"accuracy": float(i < good)}) for i in range(n)]
        preds += [Prediction("other", i, "mc", "q", "A", "A", scores={"accuracy": 1.0}) for i in range(4)]
        return summarize(preds)

    md = write_report(tmp_path, {"base": run(10, 5), "adapted": run(6, 5)})[1].read_text(encoding="utf-8")
    assert "| rs | domain | 10/6 | 0.500 | 0.833 | — |" in md
    assert "- rs: no Δ (adapted − base): adapted scored 6 samples, base 10 (see skips)." in md
    assert "| other | domain | 4 | 1.000 | 1.000 | +0.000 |" in md
    assert "| domain | 14/10 | 0.643 | 0.900 | — |" in md and "**adapted vs base:**" not in md
    assert "| main | 0.500 | 0.833 | — |" in md


def test_comparison_axis_holds_a_negative_main_metric(tmp_path, monkeypatch):
    """The y axis started at 0: a registered task's negative main metric (a correlation of -0.4) drew no bar and no
    value, the same as a metric not computed."""
    runs, kinds = _runs()
    for r, value in zip(runs.values(), (-0.4, 0.3)):
        r["sources"]["vqa_rad"]["main"] = value
    fig = _drawn_figure(monkeypatch, lambda: plot_comparison(runs, kinds, tmp_path / "comparison.png"))
    ax_s = fig.axes[1]
    assert ax_s.get_ylim()[0] < -0.4 and ax_s.get_ylim()[1] > 1.0
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = ax_s.get_window_extent(renderer)
    (label,) = [t for t in ax_s.texts if t.get_text() == "-0.400"]
    extent = label.get_window_extent(renderer)
    assert label.get_visible() and box.y0 <= extent.y0 and extent.y1 <= box.y1


def test_comparison_legend_names_a_run_whose_label_starts_with_an_underscore(tmp_path, monkeypatch):
    """matplotlib leaves a "_…" label out of an automatic legend: `adapt eval --model _ft=DIR` drew that run's bars
    with no legend entry to say whose they were."""
    runs, kinds = _runs()
    runs = {"base": runs["base"], "_ft": runs["adapted"]}
    fig = _drawn_figure(monkeypatch, lambda: plot_comparison(runs, kinds, tmp_path / "comparison.png"))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "_ft"]


def test_comparison_says_no_samples_for_a_source_a_run_lost(tmp_path, monkeypatch):
    """A run that lost every sample of a source drew an empty bar labelled "—", as a main metric not computed."""
    from adapt.evaluate import Predictions, Skipped

    kinds = {"x": "domain", "gone": "domain"}
    preds = [Prediction("x", 1, "mc", "q", "A", "A", scores={"accuracy": 1.0})]
    base = summarize([*preds, Prediction("gone", 1, "mc", "q", "A", "A", scores={"accuracy": 1.0})], kinds)
    adapted = summarize(Predictions(preds, skipped=[Skipped("gone", 1, "image does not decode", task="mc")]), kinds)
    fig = _drawn_figure(monkeypatch, lambda: plot_comparison({"base": base, "adapted": adapted}, kinds,
                                                             tmp_path / "comparison.png"))
    assert [t.get_text() for t in fig.axes[1].texts] == ["1.000", "1.000", "no samples (1 skipped)", "1.000"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["1.000", "1.000"]  # domain still has x's sample


def test_comparison_keeps_a_dash_for_a_group_whose_corpus_score_was_not_computed(tmp_path, monkeypatch):
    """A group's n counts the samples in its mean: 0 where its source's corpus score was not computed, which is no
    "no samples" (every sample was scored)."""
    from adapt.metrics import register_task, unregister_task

    def aggregate(preds, context):
        return {"score": None}

    aggregate.main_metric = "score"
    register_task("agg_none", lambda prediction, record, reference: {"accuracy": 1.0}, aggregate=aggregate)
    try:
        run = summarize([Prediction("d", 1, "agg_none", "q", "A", "A", scores={"accuracy": 1.0})], {"d": "domain"})
    finally:
        unregister_task("agg_none")
    assert run["groups"]["domain"]["n"] == 0 and run["sources"]["d"]["n"] == 1
    fig = _drawn_figure(monkeypatch, lambda: plot_comparison({"base": run}, {"d": "domain"}, tmp_path / "c.png"))
    assert [t.get_text() for t in fig.axes[0].texts] == ["—"] and [t.get_text() for t in fig.axes[1].texts] == ["—"]
