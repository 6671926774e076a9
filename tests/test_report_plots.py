"""What a user reads off comparison.png and loss.png: the drawn figure's data and layout, not only a valid PNG."""

from __future__ import annotations

import itertools

from matplotlib.backends.backend_agg import FigureCanvasAgg

from adapt.evaluate import Prediction, plot_comparison, summarize
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
