"""A run that lost every sample of one of a source's tasks (all skipped) named that source's metrics otherwise than
a run that scored them: beside classification, mc's "accuracy" is ``mc/accuracy``; alone, ``accuracy``. The report's
per-source table joined the runs by name, so the two runs' mc accuracies sat on different rows, each beside a "—",
and the lost task's rows read "—" as a metric not computed does. Rows now join on (task, metric), and a run that
has no sample of the row's task says "no samples"."""

from adapt.evaluate import Prediction, Predictions, Skipped, summarize, write_report

KINDS = {"x": "domain"}


def P(task: str, accuracy: float, line: int) -> Prediction:
    return Prediction("x", line, task, "q", "p", "r", {"accuracy": accuracy})


def _table(md: str, source: str) -> str:
    return md.split(f"### {source} ")[1].split("###")[0]


def test_a_task_a_run_lost_is_a_row_saying_no_samples(tmp_path):
    base = summarize([P("mc", 0.0, 1), P("mc", 1.0, 2), P("classification", 1.0, 3)], KINDS)
    lost = Predictions([P("mc", 1.0, 1), P("mc", 1.0, 2)], skipped=[Skipped("x", 3, "image does not decode")])
    adapted = summarize(lost, KINDS)
    assert base["sources"]["x"]["metric_task"] == {"mc/accuracy": "mc", "classification/accuracy": "classification"}
    assert adapted["sources"]["x"]["metric_task"] == {"accuracy": "mc"}
    md = write_report(tmp_path, {"base": base, "adapted": adapted}, KINDS)[1].read_text()
    # the gain/retention table joins on the group and gives no Δ between means over different samples (as before)
    assert "| domain | 3/2 | 0.667 | 1.000 | — |" in md
    assert "domain: no Δ (adapted − base): the two means do not cover the same sources' samples." in md
    table = _table(md, "x")
    assert "| mc/accuracy (n = 2) | 0.500 | 1.000 | — |" in table  # no Δ: the runs scored different samples
    assert "| classification/accuracy (n = 1) | 1.000 | no samples | — |" in table
    assert "| accuracy |" not in table
    assert "- adapted scored no sample of classification (see skips)." in table
    # the other way round, and with the runs' order swapped: the same rows
    table = _table(write_report(tmp_path / "r", {"adapted": adapted, "base": base}, KINDS)[1].read_text(), "x")
    assert "| mc/accuracy (n = 2) | 1.000 | 0.500 |" in table
    assert "| classification/accuracy (n = 1) | no samples | 1.000 |" in table


def test_runs_that_each_kept_another_task_are_not_compared_on_one_row(tmp_path):
    """Each run kept one task: both name it "accuracy", and the one row compared mc's accuracy with classification's."""
    base = summarize([P("mc", 0.0, 1), P("mc", 1.0, 2)], KINDS)
    adapted = summarize([P("classification", 1.0, 3)], KINDS)
    md = write_report(tmp_path, {"base": base, "adapted": adapted}, KINDS)[1].read_text()
    table = _table(md, "x")
    assert "| mc/accuracy | 0.500 | no samples | — |" in table
    assert "| classification/accuracy | no samples | 1.000 | — |" in table and "| accuracy |" not in table


def test_runs_with_the_same_tasks_keep_their_metric_names(tmp_path):
    base = summarize([P("mc", 0.0, 1), P("classification", 1.0, 2)], KINDS)
    one = summarize([P("mc", 0.0, 1)], KINDS)
    md = write_report(tmp_path, {"base": base, "adapted": base}, KINDS)[1].read_text()
    assert "| mc/accuracy (n = 1) | 0.000 | 0.000 | +0.000 |" in md and "no samples" not in md
    md = write_report(tmp_path / "one", {"base": one, "adapted": one}, KINDS)[1].read_text()
    assert "| accuracy | 0.000 | 0.000 | +0.000 |" in md and "no samples" not in md


def test_a_corpus_aggregate_joins_its_run_without_the_other_task(tmp_path):
    """A corpus aggregate is named by its task beside another task (``agg_demo/accuracy``), plainly alone."""
    from adapt.metrics import register_task, unregister_task

    def aggregate(preds, context):
        return {"accuracy": sum(p.scores["accuracy"] for p in preds) / len(preds)}

    aggregate.main_metric = "accuracy"
    register_task("agg_demo", lambda prediction, record, reference: {"accuracy": 1.0}, aggregate=aggregate)
    try:
        both = summarize([P("agg_demo", 1.0, 1), P("agg_demo", 0.0, 2), P("mc", 1.0, 3)], KINDS)
        lost = summarize(Predictions([P("agg_demo", 1.0, 1), P("agg_demo", 1.0, 2)],
                                     skipped=[Skipped("x", 3, "image does not decode")]), KINDS)
    finally:
        unregister_task("agg_demo")
    assert lost["sources"]["x"]["metric_task"] == {"accuracy": "agg_demo"}
    table = _table(write_report(tmp_path, {"base": both, "adapted": lost}, KINDS)[1].read_text(), "x")
    assert "| agg_demo/accuracy | 0.500 | 1.000 | — |" in table
    assert "| accuracy (n = 1) | 1.000 | no samples | — |" in table  # mc's, which adapted has no sample of
