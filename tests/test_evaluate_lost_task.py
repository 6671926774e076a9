"""A run that lost every sample of one of a source's tasks (all skipped) named that source's metrics otherwise than
a run that scored them: beside classification, mc's "accuracy" is ``mc/accuracy``; alone, ``accuracy``. The report's
per-source table joined the runs by name, so the two runs' mc accuracies sat on different rows, each beside a "—",
and the lost task's rows read "—" as a metric not computed does. Rows now join on (task, metric), and a run that
has no sample of the row's task says "no samples". A lone run names a task it lost too (`Skipped.task`)."""

import pytest

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


def test_a_lone_run_names_the_task_it_lost_every_sample_of(tmp_path):
    """One run, no other to compare with: its lost task (every sample skipped) was named nowhere in the report."""
    preds = Predictions([P("mc", 1.0, 1), P("mc", 0.0, 2)],
                        skipped=[Skipped("x", 3, "image does not decode", task="classification"),
                                 Skipped("x", 4, "options are no list", task=None)])
    summary = summarize(preds, KINDS)
    assert summary["sources"]["x"]["skipped_tasks"] == {"classification": 1}  # the untold task is left out
    table = _table(write_report(tmp_path, {"adapted": summary}, KINDS)[1].read_text(), "x")
    assert table.startswith("(domain; n = 2; tasks: classification 0, mc 2; 2 skipped)")
    assert "- adapted scored no sample of classification (see skips)." in table


def test_predict_records_the_task_of_each_skipped_sample(tmp_path):
    from PIL import Image

    from adapt.data.samples import Record
    from adapt.evaluate import predict
    from model import load

    image = tmp_path / "red.png"
    Image.new("RGB", (56, 56), (200, 30, 40)).save(image)

    def rec(line: int, images: list, **fields) -> Record:
        question = "<image>\nWhich?" if images else "Which?"
        conversation = [{"from": "human", "value": question}, {"from": "gpt", "value": "B"}]
        return Record("x", line, conversation, images, [(0, 0)] * len(images), **fields)

    records = [rec(1, [image], task="mc", options=["desert", "forest"]),
               rec(2, [tmp_path / "missing.png"], task="classification", options=["desert", "forest"]),
               rec(3, [], task="caption"),  # no scorer: its task is still known
               rec(4, [], options="desert, forest")]  # its task cannot be told
    vlm, processor = load("pocket-tiny")
    with pytest.warns(UserWarning, match="skipped 3 of 4"):
        preds = predict(vlm, processor, records, max_new_tokens=2, progress=False)
    assert [(s.line, s.task) for s in preds.skipped] == [(2, "classification"), (3, "caption"), (4, None)]
    assert summarize(preds, KINDS)["sources"]["x"]["skipped_tasks"] == {"classification": 1, "caption": 1}


def test_a_source_a_run_lost_says_no_samples_in_the_sources_table(tmp_path):
    """The Sources table read "—" (as a main metric not computed) for a source a run lost every sample of, beside an
    n of 1/0; its cell now says so, with the skips, as the per-task rows do."""
    kinds = {"x": "domain", "gone": "domain"}
    base = summarize([P("mc", 1.0, 1), P("classification", 1.0, 2), Prediction("gone", 1, "mc", "q", "p", "r",
                                                                                {"accuracy": 1.0})], kinds)
    adapted = summarize(Predictions([P("mc", 0.0, 1)], skipped=[
        Skipped("x", 2, "image does not decode", task="classification"),
        Skipped("gone", 1, "image does not decode", task="mc")]), kinds)
    md = write_report(tmp_path, {"base": base, "adapted": adapted}, kinds)[1].read_text()
    assert "| gone | domain | 1/0 | 1.000 | no samples (1 skipped) | — |" in md
    assert "| main | 1.000 | no samples (1 skipped) | — |" in _table(md, "gone")
    assert "| classification/accuracy (n = 1) | 1.000 | no samples (1 skipped) | — |" in _table(md, "x")
    md = write_report(tmp_path / "one", {"adapted": adapted}, kinds)[1].read_text()
    assert "| gone | domain | 0 | no samples (1 skipped) |" in md


def test_the_heading_gives_each_runs_skips_where_they_differ(tmp_path):
    """The heading gave the largest count alone ("n = 3/2; 1 skipped"), read as every run's."""
    base = summarize([P("mc", 0.0, 1), P("mc", 1.0, 2), P("classification", 1.0, 3)], KINDS)
    adapted = summarize(Predictions([P("mc", 1.0, 1), P("mc", 1.0, 2)], skipped=[Skipped("x", 3, "bad")]), KINDS)
    md = write_report(tmp_path, {"base": base, "adapted": adapted}, KINDS)[1].read_text()
    assert "### x (domain; n = 3/2; tasks: classification 1/0, mc 2; skipped: base 0, adapted 1)" in md
    md = write_report(tmp_path, {"base": adapted, "adapted": adapted}, KINDS)[1].read_text()
    assert "### x (domain; n = 2; tasks: mc 2; 1 skipped)" in md


def test_a_no_delta_note_on_one_sample_says_sample(tmp_path):
    """It read "adapted scored 1 samples, base 1 others"."""
    base = summarize(Predictions([P("mc", 1.0, 1)], skipped=[Skipped("x", 2, "bad")]), KINDS)
    adapted = summarize(Predictions([P("mc", 1.0, 2)], skipped=[Skipped("x", 1, "bad")]), KINDS)
    md = write_report(tmp_path, {"base": base, "adapted": adapted}, KINDS)[1].read_text()
    assert "- x: no Δ (adapted − base): adapted scored 1 sample, base 1 other (see skips)." in md


def test_runs_that_lost_the_same_task_share_one_line(tmp_path):
    """Data every run skips alike (an image that does not decode) gave one line per run, each the same."""
    lost = summarize(Predictions([P("mc", 1.0, 1)], skipped=[Skipped("x", 2, "bad", task="classification")]), KINDS)
    other = summarize(Predictions([P("classification", 1.0, 2)], skipped=[Skipped("x", 1, "bad", task="mc")]), KINDS)
    md = write_report(tmp_path, {"base": lost, "adapted": lost, "b-q8": lost, "c": other}, KINDS)[1].read_text()
    assert "- base, adapted and b-q8 scored no sample of classification (see skips)." in md
    assert "- c scored no sample of mc (see skips)." in md and md.count("scored no sample") == 2
