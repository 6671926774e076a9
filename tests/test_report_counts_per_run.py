"""The report's counts of several runs (the n columns, a source's heading, its tasks list) were de-duplicated: three
runs that scored 1, 0 and 1 samples read "1/0", as if two runs had. Each run's count is now given in run order, or
one number where every run's is the same."""

from adapt.evaluate import Prediction, Predictions, Skipped, plot_comparison, summarize, write_report

KINDS = {"x": "domain"}


def _run(scored: bool) -> dict:
    """A run of one mc sample of source x: scored, or skipped (its image did not decode)."""
    if scored:
        return summarize([Prediction("x", 1, "mc", "q", "B", "B", {"accuracy": 1.0})], KINDS)
    return summarize(Predictions([], skipped=[Skipped("x", 1, "image does not decode", task="mc")]), KINDS)


def test_three_runs_counts_are_each_runs_in_order(tmp_path):
    runs = {"base": _run(True), "broken": _run(False), "adapted": _run(True)}
    md = write_report(tmp_path, runs, KINDS)[1].read_text()
    assert "| domain | 1/0/1 |" in md  # not "1/0"
    assert "| x | domain | 1/0/1 |" in md
    assert "### x (domain; n = 1/0/1; tasks: mc 1/0/1; skipped: base 0, broken 1, adapted 0)" in md
    plot_comparison(runs, KINDS, tmp_path / "comparison.png")  # the chart's tick labels use the same counts


def test_runs_that_agree_show_one_count(tmp_path):
    runs = {"base": _run(True), "other": _run(True), "adapted": _run(True)}
    md = write_report(tmp_path, runs, KINDS)[1].read_text()
    assert "| domain | 1 |" in md and "| x | domain | 1 |" in md
    assert "### x (domain; n = 1; tasks: mc 1)" in md


def _extra(lines_with: int) -> dict:
    """A run of three mc samples of source x, `lines_with` of which have a metric ``extra`` too."""
    return summarize([Prediction("x", k, "mc", "q", "B", "B", {"accuracy": 1.0, **({"extra": 1.0} if k < lines_with
                                                                                       else {})}) for k in range(3)],
                     KINDS)


def test_a_metric_over_fewer_samples_gives_every_runs_count(tmp_path):
    """Only the counts that differed from their run's n were listed: a run averaging ``extra`` over 2 of its 3 samples
    beside one averaging it over all 3 read "(n = 2)", the second run's value as if over 2 too."""
    md = write_report(tmp_path, {"base": _extra(2), "adapted": _extra(3)}, KINDS)[1].read_text()
    assert "| extra (n = 2/3) | 1.000 | 1.000 |" in md
    md = write_report(tmp_path, {"base": _extra(2), "mid": _extra(1), "adapted": _extra(2)}, KINDS)[1].read_text()
    assert "| extra (n = 2/1/2) |" in md  # not "2/1"
    md = write_report(tmp_path, {"base": _extra(2), "adapted": _extra(2)}, KINDS)[1].read_text()
    assert "| extra (n = 2) |" in md and "| accuracy |" in md  # over all its samples: no count
