"""Run and source names outside DejaVu's scripts (CJK: "通用", "遥感") on comparison.png: drawn with an installed font
that has them, else labelled readably with one warning, never as empty boxes. (loss.png names recipe sources only,
which a recipe keeps to [A-Za-z0-9._-].)"""

from __future__ import annotations

import warnings

import domains.boxes as boxes
from adapt.evaluate import Prediction, plot_comparison, summarize
from tests.test_evaluate import _drawn_figure

KINDS = {"通用": "general"}


def _runs() -> dict:
    preds = [Prediction(s, i, "mc", "q", "A", "A", scores={"accuracy": float(i % 2)})
             for s in ("通用", "遥感", "vqa_rad") for i in range(4)]
    return {"base": summarize(preds, KINDS), "适配": summarize(preds, KINDS)}


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def _draw(monkeypatch, draw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = _drawn_figure(monkeypatch, draw)
    return fig, [str(w.message) for w in caught]


def test_cjk_names_without_a_font_for_them_get_readable_labels_and_one_warning(tmp_path, monkeypatch):
    """DejaVu has no CJK glyph: each such name drew as empty boxes, with only matplotlib's per-glyph warnings."""
    monkeypatch.setattr(boxes, "wide_fonts", lambda: ())  # this machine may have a CJK font: pretend it has none
    png = tmp_path / "comparison.png"
    fig, messages = _draw(monkeypatch, lambda: plot_comparison(_runs(), KINDS, png))
    _, ax_s = fig.axes
    ticks = [t.get_text().splitlines()[0] for t in ax_s.get_xticklabels()]
    assert ticks == ["vqa_rad", "? #2", "? #3"]  # the rows of eval.md's Sources table
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "? #2"]
    assert not [t for t in _texts(fig) if any(ch in t for ch in "通用遥感适配")]
    assert not [m for m in messages if "Glyph" in m], messages
    (ours,) = [m for m in messages if str(png) in m]
    assert "fonts-noto-cjk" in ours and all(ch in ours for ch in "通用遥感")
    assert "'通用' as '? #" in ours


def test_cjk_names_are_drawn_with_an_installed_cjk_font(tmp_path, monkeypatch):
    """With a CJK font installed, the chart's font list falls back to it and the names stay whole, without warning."""
    fake = str(tmp_path / "NotoSansCJK.ttc")
    real = boxes._charmap
    monkeypatch.setattr(boxes, "wide_fonts", lambda: (("Noto Sans CJK SC", fake),))
    monkeypatch.setattr(boxes, "_charmap", lambda path: frozenset(map(ord, "通用遥感适配")) if path == fake else real(path))
    png = tmp_path / "comparison.png"
    fig, messages = _draw(monkeypatch, lambda: plot_comparison(_runs(), KINDS, png))
    _, ax_s = fig.axes
    labels = ax_s.get_xticklabels()
    assert [t.get_text().splitlines()[0] for t in labels] == ["vqa_rad", "遥感", "通用"]
    assert all(t.get_fontfamily()[-1] == "Noto Sans CJK SC" for t in labels)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "适配"]
    assert not [m for m in messages if str(png) in m]


def test_unfontable_names_only_the_characters_no_font_has(monkeypatch):
    monkeypatch.setattr(boxes, "wide_fonts", lambda: ())
    assert boxes.unfontable("Ärzte-Fragen vqa_rad\n") == ""
    assert boxes.unfontable("rs 遥感 遥") == "遥感"
