"""Evaluation: batched greedy generation (left padding), skipping broken images, summaries, reports, plots."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapt.data.samples import Record
from adapt.evaluate import (
    Prediction,
    Predictions,
    load_predictions,
    plot_comparison,
    plot_loss_curve,
    predict,
    save_predictions,
    split_for_eval,
    summarize,
    write_report,
)


def Rec(source: str, line: int, conversations: list[dict], images: list[Path] = (), **fields) -> Record:
    """A record as adapt.data would read it (image sizes are not needed to score)."""
    return Record(source, line, conversations, list(images), [(0, 0)] * len(images), **fields)


def turns(*values: str) -> list[dict]:
    return [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in enumerate(values)]


@pytest.fixture(scope="module")
def tiny():
    from model import load

    return load("pocket-tiny")


@pytest.fixture()
def records(tmp_path) -> list[Rec]:
    red, green = tmp_path / "red.png", tmp_path / "green.jpg"
    Image.new("RGB", (120, 90), (200, 30, 40)).save(red)
    Image.new("RGB", (300, 100), (20, 160, 40)).save(green)
    return [
        Rec("scenes", 1, turns("<image>\nWhich scene?\nA. desert\nB. forest", "B"), [red], max_tiles=2),
        Rec("scenes", 2, turns("<image>\nDescribe the colours of this picture in a few words, please.", "green"), [green]),
        # multi-turn: the first answer stays in the prompt as history; no image at all
        Rec("chat", 3, turns("Hello", "Hi there.", "Name a colour.", "red")),
    ]


def test_split_for_eval_cuts_at_last_gpt_turn():
    rec = Rec("s", 1, turns("q1", "a1", "q2", "a2"))
    conv, ref = split_for_eval(rec)
    assert conv == turns("q1", "a1", "q2") and ref == "a2"
    rec.answer = "override"
    assert split_for_eval(rec)[1] == "override"


def test_split_for_eval_gives_a_numeric_answer_as_text():
    """A record with no gpt turn and ``answer=3`` (a number, as a mapping or a hand-built record holds it) kept the
    int as its reference, where the gpt-turn path gave "3": a multiple-choice sample whose options are "1", "2", "3"
    was then refused as unscorable ("reference must be a string") and the prediction saved with a number."""
    from adapt.metrics import score

    rec = Rec("s", 1, [{"from": "human", "value": "How many?"}], task="mc", answer=3, options=["1", "2", "3"])
    conv, ref = split_for_eval(rec)
    assert conv == rec.conversations and ref == "3"
    assert score("3", rec, ref) == {"accuracy": 1.0}
    assert split_for_eval(Rec("s", 2, turns("q", "a"), answer=2.5))[1] == "2.5"
    with pytest.raises(ValueError, match="s:3: answer must be a string"):
        split_for_eval(Rec("s", 3, [{"from": "human", "value": "q"}], answer=["a"]))


def test_predict_structure_and_batching_matches_unbatched(tiny, records):
    vlm, processor = tiny
    # random weights like to emit special tokens that decode to "": forbid them, so that equal
    # answers below mean something
    force_text = dict(min_new_tokens=6, suppress_tokens=processor.tokenizer.all_special_ids)
    one_by_one = predict(vlm, processor, records, max_new_tokens=6, batch_size=1, progress=False, **force_text)
    batched = predict(vlm, processor, records, max_new_tokens=6, batch_size=3, progress=False, **force_text)
    assert [(p.source, p.line) for p in batched] == [("scenes", 1), ("scenes", 2), ("chat", 3)]
    assert [p.task for p in batched] == ["mc", "short", "short"]
    assert [p.reference for p in batched] == ["B", "green", "red"]
    assert batched[0].prompt.endswith("B. forest") and batched[2].prompt == "Name a colour."
    assert set(batched[0].scores) == {"accuracy"} and set(batched[1].scores) == {"exact_match", "token_f1"}
    assert all(isinstance(p.prediction, str) and p.prediction for p in batched) and batched.skipped == []
    # left padding must not change any answer (the three prompts have different lengths)
    assert [p.prediction for p in batched] == [p.prediction for p in one_by_one]
    assert [p.scores for p in batched] == [p.scores for p in one_by_one]
    assert not vlm.training


def test_predict_skips_and_counts_missing_images(tiny, records, tmp_path):
    vlm, processor = tiny
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    records[0].images = [tmp_path / "missing.png"]
    records.append(Rec("scenes", 4, turns("<image>\nWhat?", "x"), [broken]))
    with pytest.warns(UserWarning, match=r"skipped 2 of 4.*scenes:1.*missing\.png"):
        preds = predict(vlm, processor, records, max_new_tokens=2, batch_size=2, progress=False)
    assert [(p.source, p.line) for p in preds] == [("scenes", 2), ("chat", 3)]
    assert [(s.source, s.line) for s in preds.skipped] == [("scenes", 1), ("scenes", 4)]
    assert str(preds.skipped[1]).startswith("scenes:4: ") and "broken.png" in preds.skipped[1].reason
    summary = summarize(preds)
    assert summary["skipped"] == 2 and summary["sources"]["scenes"]["skipped"] == 2
    assert summary["sources"]["scenes"]["n"] == 1


def P(source, task, scores, line=0) -> Prediction:
    return Prediction(source, line, task, "q", "p", "r", scores)


@pytest.fixture()
def runs():
    kinds = {"rs": "domain", "med": "domain", "replay": "general"}
    base = [
        P("rs", "mc", {"accuracy": 0.0}), P("rs", "mc", {"accuracy": 1.0}),
        P("rs", "grounding", {"acc@0.5": 0.0}), P("rs", "grounding", {"acc@0.5": 0.0}),
        P("med", "short", {"exact_match": 0.0, "token_f1": 0.5}),
        P("replay", "mc", {"accuracy": 1.0}), P("replay", "mc", {"accuracy": 1.0}),
    ]
    adapted = [
        P("rs", "mc", {"accuracy": 1.0}), P("rs", "mc", {"accuracy": 1.0}),
        P("rs", "grounding", {"acc@0.5": 1.0}), P("rs", "grounding", {"acc@0.5": 0.0}),
        P("med", "short", {"exact_match": 1.0, "token_f1": 1.0}),
        P("replay", "mc", {"accuracy": 1.0}), P("replay", "mc", {"accuracy": 0.0}),
    ]
    return kinds, {"base": summarize(base, kinds), "adapted": summarize(adapted, kinds)}


def test_summarize_numbers(runs):
    kinds, r = runs
    base, adapted = r["base"], r["adapted"]
    rs = base["sources"]["rs"]
    assert rs["n"] == 4 and rs["kind"] == "domain" and rs["tasks"] == {"mc": 2, "grounding": 2}
    assert rs["metrics"] == {"accuracy": 0.5, "acc@0.5": 0.0}  # each over the samples that have it
    assert rs["main"] == pytest.approx(0.25)  # mean of per-sample main metrics
    assert base["sources"]["med"]["main"] == 0.5  # token_f1 is the short-answer main metric
    # groups: means over all samples of their sources, not means of source means
    assert base["groups"]["domain"] == {"n": 5, "main": pytest.approx((0 + 1 + 0 + 0 + 0.5) / 5), "sources": ["med", "rs"],
                                       "left_out": {}}
    assert adapted["groups"]["domain"]["main"] == pytest.approx(4 / 5)
    assert base["groups"]["general"]["main"] == 1.0 and adapted["groups"]["general"]["main"] == 0.5
    assert summarize([P("x", "mc", {"accuracy": 1.0})])["sources"]["x"]["kind"] == "domain"  # default kind


def test_a_metric_several_tasks_return_is_kept_per_task(tmp_path):
    """A source holding mc and classification samples (both "accuracy"), or short and vqa (both "exact_match",
    normalised differently), had one mean of each name over all its samples: 3 right mc answers and 1 wrong
    classification read "accuracy 0.75", which no task scored. Such a metric is now given per task; a name one task
    returns keeps its name, and a source of one task is as it was."""
    preds = [P("x", "mc", {"accuracy": 1.0}, k) for k in (1, 2, 3)] + [
        P("x", "classification", {"accuracy": 0.0}, 4), P("x", "short", {"exact_match": 0.0, "token_f1": 0.5}, 5),
        P("x", "vqa", {"exact_match": 1.0, "token_f1": 1.0}, 6), P("x", "grounding", {"acc@0.5": 1.0}, 7),
        P("one", "mc", {"accuracy": 1.0}, 1), P("one", "mc", {"accuracy": 0.0}, 2)]
    summary = summarize(preds)
    x = summary["sources"]["x"]
    assert x["metrics"] == {"mc/accuracy": 1.0, "classification/accuracy": 0.0, "short/exact_match": 0.0,
                            "short/token_f1": 0.5, "vqa/exact_match": 1.0, "vqa/token_f1": 1.0, "acc@0.5": 1.0}
    assert x["metric_n"] == {"mc/accuracy": 3, "classification/accuracy": 1, "short/exact_match": 1,
                             "short/token_f1": 1, "vqa/exact_match": 1, "vqa/token_f1": 1, "acc@0.5": 1}
    assert x["main"] == pytest.approx((3 + 0 + 0.5 + 1 + 1) / 7)  # the one cross-task figure: a mean over samples
    assert summary["sources"]["one"]["metrics"] == {"accuracy": 0.5}
    md = write_report(tmp_path, {"base": summary})[1].read_text()
    assert "| mc/accuracy (n = 3) | 1.000 |" in md and "| classification/accuracy (n = 1) | 0.000 |" in md
    assert "| accuracy |" in md and "| accuracy (n" not in md


def test_a_metric_name_holding_a_pipe_keeps_the_report_table_whole(tmp_path):
    """Metric names (``<task>/<metric>``) went into eval.md's tables as they were: a ``|`` in one split its row into
    more cells than the header has, shifting every number after it. They are escaped as the other cells are."""
    summary = summarize([P("s", "mc", {"accuracy": 1.0}, 1), P("s", "my|task", {"accuracy": 0.0, "f|1": 0.5}, 2)])
    md = write_report(tmp_path, {"base": summary, "ad|apted": summary})[1].read_text()
    assert "| my\\|task/accuracy (n = 1) | 0.000 | 0.000 | +0.000 |" in md
    assert "| f\\|1 (n = 1) | 0.500 | 0.500 | +0.000 |" in md and "tasks: mc 1, my\\|task 1)" in md
    assert "| metric | base | ad\\|apted | Δ (ad\\|apted − base) |" in md
    cells = [len(re.split(r"(?<!\\)\|", line)) if line.startswith("|") else 0 for line in md.splitlines()]
    for k, n in enumerate(cells):  # every table row has as many cells as its header
        assert n == 0 or cells[k - 1] in (0, n), md.splitlines()[k]


def test_summarize_keeps_main_metrics_of_other_scales_apart(tmp_path):
    """A source holding a 0-100 rating task beside 0-1 accuracies had one main metric, the mean of both (here
    (85 + 0 + 1) / 3 = 28.667), and so had its group: a number on no scale. Such a source and group have a main per
    task instead; sources of one task, or of tasks all on the 0-1 scale, keep their one mean."""
    from adapt import metrics

    metrics.register_task("toy_rating", lambda p, r, ref: {"rating": 85.0}, scale=(0, 100))
    try:
        preds = [P("drive", "toy_rating", {"rating": 85.0}, 1), P("drive", "mc", {"accuracy": 0.0}, 2),
                 P("drive", "mc", {"accuracy": 1.0}, 3), P("rs", "mc", {"accuracy": 1.0}, 1),
                 P("rs", "short", {"exact_match": 0.0, "token_f1": 0.5}, 2),
                 P("rated", "toy_rating", {"rating": 40.0}, 1), P("replay", "mc", {"accuracy": 1.0}, 1)]
        kinds = {"replay": "general"}
        summary = summarize(preds, kinds)
    finally:
        metrics.unregister_task("toy_rating")
    drive = summary["sources"]["drive"]
    assert drive["main"] is None and drive["task_main"] == {"toy_rating": 85.0, "mc": 0.5}
    assert any("toy_rating is not on the 0-1 scale" in note for note in drive["notes"])
    assert summary["sources"]["rs"]["main"] == 0.75 and "task_main" not in summary["sources"]["rs"]  # both 0-1
    assert summary["sources"]["rated"]["main"] == 40.0 and "task_main" not in summary["sources"]["rated"]
    domain = summary["groups"]["domain"]
    assert domain["main"] is None and domain["n"] == 6
    assert domain["task_main"] == {"toy_rating": 62.5, "mc": pytest.approx(2 / 3), "short": 0.5}
    assert summary["groups"]["general"] == {"n": 1, "main": 1.0, "sources": ["replay"], "left_out": {}}
    md = write_report(tmp_path, {"base": summary}, kinds)[1].read_text()
    assert "| drive | domain | 3 | — |" in md and "| rs | domain | 2 | 0.750 |" in md
    assert "| main (toy_rating) | 85.000 |" in md and "| main (mc) | 0.500 |" in md
    assert "domain (base): no one mean (—)" in md and "toy_rating 62.500, mc 0.667, short 0.500." in md


def test_a_declared_scale_keeps_a_run_scoring_only_zeros_apart_too(tmp_path):
    """Whether a task's main metric was off the 0-1 scale was guessed from each run's values: a base run whose 0-100
    rating scored only 0s had one mean of ratings and accuracies, the adapted run a main per task, and the report
    compared the two. A task declares its scale at registration; every run reads it alike."""
    from adapt import metrics

    metrics.register_task("toy_rating", lambda p, r, ref: {"rating": 0.0}, scale=(0, 100))
    try:
        def run(rating: float) -> dict:
            return summarize([P("drive", "toy_rating", {"rating": rating}, 1), P("drive", "mc", {"accuracy": 1.0}, 2),
                              P("rated", "toy_rating", {"rating": rating}, 1)])

        runs = {"base": run(0.0), "adapted": run(85.0)}
    finally:
        metrics.unregister_task("toy_rating")
    assert metrics.main_scale("toy_rating") is None and metrics.main_scale("mc") == (0, 1)
    for name, rating in (("base", 0.0), ("adapted", 85.0)):
        drive = runs[name]["sources"]["drive"]
        assert drive["main"] is None and drive["task_main"] == {"toy_rating": rating, "mc": 1.0}, name
        assert any("toy_rating is not on the 0-1 scale of the other tasks' (declared toy_rating 0-100)" in note
                   for note in drive["notes"]), drive["notes"]
        assert runs[name]["groups"]["domain"]["main"] is None
        assert runs[name]["sources"]["rated"]["main"] == rating  # one task: its one mean
    md = write_report(tmp_path, runs, {})[1].read_text()
    assert "| drive | domain | 2 | — | — | — |" in md, md


def test_a_task_declaring_no_scale_is_read_as_0_1_in_every_run(tmp_path):
    """A task registered with no scale had its scale judged from each run's values: a base run scoring only 0s on a
    0-100 rating read 0-1 (one mean with the accuracies), the adapted run's 85s did not (a main per task), and the
    report compared the two. Undeclared is now 0-1 in every run; a value outside it is warned of and noted, naming
    the task and how to declare its scale."""
    from adapt import metrics

    metrics.register_task("toy_rating", lambda p, r, ref: {"rating": 0.0})
    try:
        def run(rating: float) -> dict:
            return summarize([P("drive", "toy_rating", {"rating": rating}, 1), P("drive", "mc", {"accuracy": 1.0}, 2)])

        base = run(0.0)
        with pytest.warns(UserWarning, match=r"task 'toy_rating' declares no scale.*scored 85.*"
                                             r"register_task\('toy_rating', \.\.\., scale=\(low, high\)\)"):
            adapted = run(85.0)
    finally:
        metrics.unregister_task("toy_rating")
    for summary, rating in ((base, 0.0), (adapted, 85.0)):  # alike: one mean, no main per task
        drive = summary["sources"]["drive"]
        assert drive["main"] == pytest.approx((rating + 1.0) / 2) and "task_main" not in drive
        assert summary["groups"]["domain"]["main"] == pytest.approx((rating + 1.0) / 2)
    assert base["sources"]["drive"]["notes"] == []
    assert any("declares no scale" in note and "scale=(0, 100)" in note
               for note in adapted["sources"]["drive"]["notes"])


def test_a_main_metric_outside_its_declared_scale_is_warned_of():
    """A declared scale was taken on trust: a scorer giving 850 on a task declared 0-100 (CIDEr x10 where x1 was
    declared) passed without a word."""
    from adapt import metrics

    metrics.register_task("toy_rating", lambda p, r, ref: {"rating": 0.0}, scale=(0, 100))
    try:
        with pytest.warns(UserWarning, match=r"task 'toy_rating' declares its main metric on 0-100, but it scored 850"):
            summary = summarize([P("drive", "toy_rating", {"rating": 850.0}, 1)])
    finally:
        metrics.unregister_task("toy_rating")
    assert any("scored 850" in note for note in summary["sources"]["drive"]["notes"])


@pytest.mark.parametrize("scale", [(1, 0), (0, math.inf), "0-100", (0, 1, 2), 5])
def test_a_scale_that_is_no_range_is_refused_naming_the_task(scale):
    from adapt import metrics

    with pytest.raises(ValueError, match=r"scale of task 'toy_rating' must be \(low, high\)"):
        metrics.register_task("toy_rating", lambda p, r, ref: {"rating": 0.0}, scale=scale)
    assert "toy_rating" not in metrics.registered_tasks()


def test_report_tables_and_deltas(runs, tmp_path):
    kinds, r = runs
    json_path, md_path = write_report(tmp_path / "report", r, kinds)
    data = json.loads(json_path.read_text())
    assert data["runs"]["adapted"]["groups"]["general"]["main"] == 0.5 and data["kinds"] == kinds
    md = md_path.read_text()
    assert "| group | n | base | adapted | Δ (adapted − base) |" in md
    assert "| domain | 5 | 0.300 | 0.800 | +0.500 |" in md
    assert "| general | 2 | 1.000 | 0.500 | -0.500 |" in md
    assert "**adapted vs base:** domain +0.500; general -0.500 (keeps 50.0% of base)." in md
    assert "| rs | domain | 4 | 0.250 | 0.750 | +0.500 |" in md
    assert "| replay | general | 2 | 1.000 | 0.500 | -0.500 |" in md
    assert "### med (domain; n = 1; tasks: short 1)" in md  # samples per task: a metric's count
    assert "| token_f1 | 0.500 | 1.000 | +0.500 |" in md
    # sources are listed domain first
    assert md.index("| med | domain") < md.index("| rs | domain") < md.index("| replay | general")
    # a single run has no delta column
    _, md_single = write_report(tmp_path / "single", {"adapted": r["adapted"]}, kinds)
    text = md_single.read_text()
    assert "Δ" not in text and "| domain | 5 | 0.800 |" in text


def test_group_mean_leaving_out_a_source_says_so_and_gives_no_gain(tmp_path):
    """A corpus score not computed in one run (DriveLM's, when the graph filter keeps no match question) left its
    source out of that run's domain mean silently: n 2 in one run, 3 in the other, and a "gain" between means of
    different samples."""
    from adapt.metrics import register_task, unregister_task

    def corpus(preds, context):
        hits = [p.scores["hit"] for p in preds]
        return {"corpus": sum(hits) / len(hits) if any(hits) else None}  # None: not computed

    corpus.main_metric = "corpus"
    register_task("corpus_task", lambda pred, rec, ref: {"hit": 1.0}, aggregate=corpus)
    try:
        kinds = {"drive": "domain", "rs": "domain"}
        base = summarize([P("drive", "corpus_task", {"hit": 0.0}), P("rs", "mc", {"accuracy": 0.0}),
                          P("rs", "mc", {"accuracy": 0.0})], kinds)
        adapted = summarize([P("drive", "corpus_task", {"hit": 1.0}), P("rs", "mc", {"accuracy": 1.0}),
                             P("rs", "mc", {"accuracy": 1.0})], kinds)
    finally:
        unregister_task("corpus_task")
    assert base["groups"]["domain"]["n"] == 2 and base["groups"]["domain"]["left_out"] == {"drive": 1}
    assert adapted["groups"]["domain"]["n"] == 3 and adapted["groups"]["domain"]["left_out"] == {}
    md = write_report(tmp_path, {"base": base, "adapted": adapted}, kinds)[1].read_text()
    assert "| domain | 2/3 | 0.000 | 1.000 | — |" in md
    assert "- domain (base): leaves out 1 sample of drive, whose main metric was not computed" in md
    assert "- domain: no Δ (adapted − base): the two means do not cover the same sources' samples." in md
    assert "**adapted vs base:**" not in md  # no gain quoted over different samples


def test_a_non_finite_corpus_score_is_not_computed_never_nan():
    """An aggregate's NaN (a 0/0 over a corpus) made the source's and group's means NaN and eval.json invalid JSON."""
    import json

    from adapt.metrics import register_task, unregister_task

    def corpus(preds, context):
        return {"corpus": float("nan"), "recall": float("inf")}

    corpus.main_metric = "corpus"
    register_task("nan_corpus_task", lambda pred, rec, ref: {"hit": 1.0}, aggregate=corpus)
    try:
        summary = summarize([P("drive", "nan_corpus_task", {"hit": 1.0}), P("drive", "mc", {"accuracy": 1.0})],
                            {"drive": "domain"})
    finally:
        unregister_task("nan_corpus_task")
    source = summary["sources"]["drive"]
    assert source["metrics"]["nan_corpus_task/corpus"] is None and source["metrics"]["nan_corpus_task/recall"] is None
    assert source["main"] == 1.0 and summary["groups"]["domain"]["main"] == 1.0
    assert any("corpus score corpus came out nan" in n for n in source["notes"])
    json.dumps(summary, allow_nan=False)


def test_runtime_runs_are_compared_with_the_base_of_their_variant(runs, tmp_path):
    """adapt eval --runtime onnx labels its runs base-fp32 / adapted-fp32: with no run called "base" the report
    had no delta column at all, so an export's domain gain and general retention went unreported."""
    kinds, r = runs
    md = write_report(tmp_path, {"base-fp32": r["base"], "adapted-fp32": r["adapted"], "base-int8": r["base"],
                                 "adapted-int8": r["base"]}, kinds)[1].read_text()
    assert ("| group | n | base-fp32 | adapted-fp32 | base-int8 | adapted-int8 | Δ (adapted-fp32 − base-fp32) "
            "| Δ (adapted-int8 − base-int8) |") in md
    assert "| domain | 5 | 0.300 | 0.800 | 0.300 | 0.300 | +0.500 | +0.000 |" in md
    assert "**adapted-fp32 vs base-fp32:** domain +0.500; general -0.500 (keeps 50.0% of base-fp32)." in md
    # a run without a base of its own variant is shown without a delta
    md = write_report(tmp_path / "b", {"base-fp32": r["base"], "adapted-int8": r["adapted"]}, kinds)[1].read_text()
    assert "Δ" not in md


def test_report_gives_the_sample_count_behind_a_per_type_metric(runs, tmp_path):
    """closed_accuracy over the closed questions alone, accuracy/count over the count questions: a metric averaged
    over part of a source's samples had no count in the report, so the number could not be quoted with its n."""
    kinds, r = runs
    assert r["base"]["sources"]["rs"]["metric_n"] == {"accuracy": 2, "acc@0.5": 2}
    md = write_report(tmp_path, r, kinds)[1].read_text()
    assert "| accuracy (n = 2) | 0.500 | 1.000 | +0.500 |" in md and "| acc@0.5 (n = 2) | 0.000 | 0.500 | +0.500 |" in md
    assert "| token_f1 | 0.500 | 1.000 | +0.500 |" in md  # over all of med's samples: no count repeated


def _is_png(path: Path) -> None:
    with Image.open(path) as img:
        img.verify()
        assert img.format == "PNG"


def test_plots_are_valid_pngs(runs, tmp_path):
    kinds, r = runs
    _is_png(plot_comparison(r, kinds, tmp_path / "plots" / "eval.png"))
    log = tmp_path / "train.jsonl"
    lines = [{"step": s, "loss": 2.0 / s, "loss/rs": 2.2 / s, "lr": 1e-4} for s in range(1, 6)]
    lines += [{"step": 6, "loss": 0.3, "loss/replay": 1.5}, {"event": "saved"}]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"step\": 7, \"lo")  # a torn last line
    _is_png(plot_loss_curve(log, tmp_path / "loss.png"))
    # the held-out scores of eval.every on a second axis (they were logged, never drawn)
    evals = tmp_path / "eval_log.jsonl"
    evals.write_text("".join(json.dumps({"step": s, "eval/domain": 0.1 * s, "eval/general": 0.9, "eval/rs": 0.5}) + "\n"
                             for s in (2, 4, 6)))
    with_scores = plot_loss_curve(log, tmp_path / "loss_eval.png", evals)
    _is_png(with_scores)
    with Image.open(tmp_path / "loss.png") as plain, Image.open(with_scores) as drawn:
        assert np.asarray(plain).shape == np.asarray(drawn).shape and not np.array_equal(plain, drawn)
    assert plot_loss_curve(log, tmp_path / "loss_none.png", tmp_path / "no_such.jsonl").is_file()  # no evals yet
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no lines"):
        plot_loss_curve(empty, tmp_path / "none.png")


def _drawn_figure(monkeypatch, draw):
    """The matplotlib Figure `draw()` saves (the PNG alone cannot say which lines have markers)."""
    from matplotlib.figure import Figure

    saved = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), real(fig, *a, **k))[1])
    draw()
    (fig,) = saved
    return fig


def test_loss_curve_of_one_step_draws_its_points_on_whole_step_ticks(tmp_path, monkeypatch):
    """A 1-step run's loss.png drew no total loss (a line without a marker: one point draws nothing, yet the legend
    listed it) on ticks 0.96 … 1.04; 3 steps had ticks 1.25, 1.5 …"""
    log, evals = tmp_path / "train.jsonl", tmp_path / "eval_log.jsonl"
    for steps in ((1,), (1, 2, 3)):
        log.write_text("".join(json.dumps({"step": s, "loss": 2.0 - 0.1 * s, "loss/rs": 2.1}) + "\n" for s in steps))
        evals.write_text(json.dumps({"step": steps[-1], "eval/domain": 0.3, "eval/general": 0.9}) + "\n")
        fig = _drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png", evals))
        ax = fig.axes[0]
        assert all(line.get_marker() not in (None, "None", "") for axes in fig.axes for line in axes.get_lines())
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_loss_curve_legend_is_drawn_above_the_held_out_lines(tmp_path, monkeypatch):
    """The legend sat on the first axes, and the twin axes' held-out lines (drawn after them) struck through it."""
    log, evals = tmp_path / "train.jsonl", tmp_path / "eval_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 2.0 / s}) + "\n" for s in range(1, 11)))
    evals.write_text("".join(json.dumps({"step": s, "eval/domain": 0.5, "eval/general": 0.9}) + "\n" for s in (5, 10)))
    fig = _drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png", evals))
    first, twin = fig.axes
    assert first.get_legend() is None and twin.get_legend() is not None
    legend = twin.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["loss (total)", "held-out domain", "held-out general"]
    assert legend.get_zorder() > max(line.get_zorder() for line in twin.get_lines())


def test_loss_curve_draws_scores_measured_outside_the_log(tmp_path, monkeypatch):
    """`extra_scores` (distill's held-out cosine before and after) join the logged ones in step order; a step the
    log has keeps the log's value, and a key not in `eval_keys` is not drawn."""
    log, evals = tmp_path / "train.jsonl", tmp_path / "eval_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 2.0 / s}) + "\n" for s in range(1, 9)))
    evals.write_text("".join(json.dumps({"step": s, "eval/cosine": 0.1 * s}) + "\n" for s in (4, 8)))
    extra = {"eval/cosine": [(8, 0.5), (0, -0.06)], "eval/other": [(0, 1.0)]}
    fig = _drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png", evals, ("eval/cosine",),
                                                             extra_scores=extra))
    (line,) = fig.axes[1].get_lines()
    assert list(line.get_xdata()) == [0, 4, 8] and list(line.get_ydata()) == pytest.approx([-0.06, 0.4, 0.8])
    evals.unlink()  # no eval log (no eval.every): the measured points alone
    fig = _drawn_figure(monkeypatch, lambda: plot_loss_curve(log, tmp_path / "loss.png", evals, ("eval/cosine",),
                                                             extra_scores=extra))
    (line,) = fig.axes[1].get_lines()
    assert list(line.get_xdata()) == [0, 8] and list(line.get_ydata()) == pytest.approx([-0.06, 0.5])


def test_save_and_load_predictions(tmp_path):
    preds = Predictions([P("rs", "mc", {"accuracy": 1.0}, line=3), P("med", "short", {"token_f1": 0.25}, line=4)])
    path = tmp_path / "out" / "predictions.jsonl"
    save_predictions(preds, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["scores"] == {"accuracy": 1.0}
    assert load_predictions(path) == list(preds)


def test_corpus_aggregate_replaces_means_and_reports_not_computed(tmp_path):
    """A task's corpus-level aggregate: its values win over per-sample means, None stays 'not computed',
    its main value stands for every sample of the task, notes reach the report, context reaches it."""
    from adapt.metrics import register_task, unregister_task

    seen = {}

    def scorer(prediction, record, reference):
        return {"accuracy": float(prediction == reference)}

    def aggregate(preds, context):
        seen["context"] = context
        seen["meta"] = [p.meta for p in preds]
        n_right = sum(p.prediction == p.reference for p in preds)
        return {"accuracy": n_right / len(preds), "corpus_score": 0.25 * n_right, "judge_term": None,
                "final": None, "notes": ["judge term not computed"]}

    aggregate.main_metric = "final"
    aggregate.fallback_main_metric = "corpus_score"
    register_task("corpus_demo", scorer, aggregate=aggregate)
    try:
        preds = [
            Prediction("drv", 1, "corpus_demo", "q", "a", "a", {"accuracy": 1.0}, meta={"tag": 0}),
            Prediction("drv", 2, "corpus_demo", "q", "b", "a", {"accuracy": 0.0}, meta={"tag": 2}),
            Prediction("drv", 3, "mc", "q", "A", "A", {"accuracy": 1.0}),
        ]
        summary = summarize(preds, {"drv": "domain"}, {"judge": None})
        src = summary["sources"]["drv"]
        assert seen["context"] == {"judge": None} and seen["meta"] == [{"tag": 0}, {"tag": 2}]
        # beside the mc sample, the aggregate's values are named by their task
        assert src["metrics"]["corpus_demo/corpus_score"] == 0.25 and src["metrics"]["corpus_demo/judge_term"] is None
        assert src["metrics"]["corpus_demo/final"] is None
        # the aggregate's accuracy covers its two samples; the plain accuracy is the mc sample's (it was overwritten
        # by the aggregate's and so reported 0.5 for a source whose mc sample was right)
        assert src["metrics"]["corpus_demo/accuracy"] == 0.5 and src["metrics"]["accuracy"] == 1.0
        alone = summarize(preds[:2], {"drv": "domain"}, {"judge": None})["sources"]["drv"]["metrics"]
        assert alone["accuracy"] == 0.5 and alone["corpus_score"] == 0.25  # a source of that task alone: plain names
        # main: the fallback (0.25) for each of the 2 aggregated samples, the mc sample's own 1.0
        assert src["main"] == pytest.approx((0.25 + 0.25 + 1.0) / 3)
        assert "judge term not computed" in src["notes"] and any("fallback" in n or "not computed" in n
                                                                 for n in src["notes"])
        _, md = write_report(tmp_path, {"adapted": summary}, {"drv": "domain"})
        text = md.read_text()
        assert "Not computed (shown as —, not 0): corpus_demo/judge_term, corpus_demo/final" in text
        assert "- judge term not computed" in text
        # predictions keep meta through save/load
        save_predictions(preds, tmp_path / "p.jsonl")
        assert load_predictions(tmp_path / "p.jsonl")[0].meta == {"tag": 0}
    finally:
        unregister_task("corpus_demo")


@pytest.mark.parametrize("out, said", [
    ({"final": "n/a"}, r"the 'toy_agg' aggregate gave final = 'n/a', not a number"),
    ({"finl": 0.5}, r"the 'toy_agg' aggregate names its main metric 'final' / 'final_no_judge', but returned 'finl'"),
])
def test_a_corpus_aggregate_giving_no_number_or_no_main_metric_is_refused_naming_it(out, said):
    """A value float() cannot read was a raw "could not convert string to float" naming neither task nor metric; a
    main metric name the aggregate never returns (a typo) left every sample out of the means as 'not computed'."""
    from adapt.metrics import register_task, unregister_task

    def aggregate(preds, context):
        return dict(out)

    aggregate.main_metric, aggregate.fallback_main_metric = "final", "final_no_judge"
    register_task("toy_agg", lambda p, r, ref: {"hit": 1.0}, aggregate=aggregate)
    try:
        with pytest.raises(ValueError, match=said):
            summarize([P("drive", "toy_agg", {"hit": 1.0})])
    finally:
        unregister_task("toy_agg")


def test_a_corpus_aggregates_note_given_as_one_string_is_one_note():
    """A "notes" string was read as a list: each of its characters a note (deduplicated)."""
    from adapt.metrics import register_task, unregister_task

    def aggregate(preds, context):
        return {"final": 0.5, "notes": "judge not configured"}

    aggregate.main_metric = "final"
    register_task("toy_agg", lambda p, r, ref: {"hit": 1.0}, aggregate=aggregate)
    try:
        assert summarize([P("drive", "toy_agg", {"hit": 1.0})])["sources"]["drive"]["notes"] == ["judge not configured"]
    finally:
        unregister_task("toy_agg")


# --------------------------------------------------------------------------------------------- protocols
def test_summary_and_report_name_every_metrics_protocol(runs, tmp_path):
    from adapt.metrics import protocols_of

    kinds, r = runs
    assert r["base"]["protocols"] == {task: protocols_of(task) for task in ("grounding", "mc", "short")}
    _, md = write_report(tmp_path, r, kinds)
    text = md.read_text()
    assert "## Protocols" in text and "| task | metric | protocol | rule | source |" in text
    assert "| short | token_f1 | SQuAD | token F1 over normalised words" in text
    assert "SQuAD v2.0 evaluate-v2.0.py (compute_f1) |" in text
    assert "| grounding | acc@0.5 | Acc@0.5 on the 0-1000 grid |" in text
    # the table comes before the per-source details, and a run without protocols (an older summary) adds none
    assert text.index("## Protocols") < text.index("## Per source, all metrics")
    old = {name: {k: v for k, v in s.items() if k != "protocols"} for name, s in r.items()}
    assert "## Protocols" not in write_report(tmp_path / "old", old, kinds)[1].read_text()


def test_report_names_the_domain_protocols_and_the_drivelm_settings(tmp_path):
    from adapt import metrics as am
    from adapt.domains_bridge import register_domain_metrics

    register_domain_metrics()
    try:
        preds = [
            Prediction("rsvqa", 1, "rsvqa", "q", "yes", "yes", {}, meta={"question_type": "presence"}),
            Prediction("rsvg", 1, "grounding", "q", "[[0, 0, 10, 10]]", "<box>[[0, 0, 10, 10]]</box>", {}),
            Prediction("vqa_rad", 1, "med_vqa", "q", "Yes.", "yes", {}, meta={"answer_type": "CLOSED"}),
            Prediction("drivelm", 1, "drivelm", "q", "D. Turn left.", "D", {},
                       meta={"drivelm_tag": 0, "answer_pixels": "D"}),
        ]
        for p in preds:
            p.scores = am.score(p.prediction, Record(p.source, 1, [], [], [], task=p.task, answer=p.reference,
                                                     meta=p.meta), p.reference)
        official = summarize(preds, None, {"judge": None, "protocol": "official", "graph_filter": None})
        pocket = summarize(preds, None, {"judge": None, "protocol": "pocket", "graph_filter": None})
        assert official["sources"]["drivelm"]["metrics"]["accuracy"] == 0.0  # exact: "D. Turn left." is not "D"
        assert pocket["sources"]["drivelm"]["metrics"]["accuracy"] == 1.0
        text = write_report(tmp_path, {"adapted": official})[1].read_text()
        for expected in ("| drivelm | accuracy | DriveLM official | answer == reference",
                         "OpenDriveLab/DriveLM challenge/evaluation.py (eval_acc)",
                         "| drivelm | samples (graph filter) | DriveLM official |",
                         "| rsvqa | accuracy/<type> | RSVQA exact answer, normalised |", "Lobry et al., RSVQA",
                         "rs_vqa/score.py", "| grounding | acc@0.5 |", "Zhan et al., DIOR-RSVG",
                         "| med_vqa | closed_accuracy | LLaVA-Med closed accuracy, fixed denominator |",
                         "microsoft/LLaVA-Med"):
            assert expected in text, expected
        # two runs scored under different protocols: each protocol is listed with the run that used it
        text = write_report(tmp_path / "both", {"base": official, "adapted": pocket})[1].read_text()
        assert "| drivelm | accuracy | DriveLM official (base) |" in text
        assert "| drivelm | accuracy | pocket (lenient) (adapted) |" in text
        assert "| rsvqa | accuracy | RSVQA, all questions |" in text  # the same in both runs: one row
    finally:
        for task in ("rsvqa", "grounding", "classification", "region", "med_vqa", "drivelm"):
            am.unregister_task(task)


def test_predict_skips_what_it_cannot_ask_or_score_naming_the_record(tiny, records):
    """A grounding reference without a box, a task no scorer knows and a control token in the question end
    neither `adapt eval` nor training's evaluation in a traceback: each record is skipped, said and counted."""
    vlm, processor = tiny
    records += [
        Rec("g", 4, turns("<image>\nWhere is the car?", "There is no car."), records[0].images, task="grounding"),
        Rec("c", 5, turns("Describe it.", "A red square."), task="caption"),
        Rec("c", 6, turns("What is <IMG_CONTEXT>?", "A token."), task="vqa"),
        Rec("o", 7, turns("Which one?", "A"), options="desert, forest"),  # a Record built by code, not the loader
        Rec("l", 8, turns("Which one?"), task="short", answer=["B"]),  # str(["B"]) was scored as the text "['b']"
        Rec("l", 9, turns("Which one?", "B"), task="short", answer=["B"]),  # a raw ValueError ended the evaluation
    ]
    with pytest.warns(UserWarning, match=r"skipped 6 of 9"):
        preds = predict(vlm, processor, records, max_new_tokens=2, batch_size=2, progress=False)
    assert [(p.source, p.line) for p in preds] == [("scenes", 1), ("scenes", 2), ("chat", 3)]
    kinds = {(s.source, s.line): (s.kind, s.reason) for s in preds.skipped}
    assert kinds[("g", 4)][0] == "reference its task cannot score" and "no [[x1, y1, x2, y2]] box" in kinds[("g", 4)][1]
    assert kinds[("c", 5)][0] == "no scorer for its task" and "'caption'" in kinds[("c", 5)][1]
    assert kinds[("c", 6)][0] == "malformed conversation" and "<IMG_CONTEXT>" in kinds[("c", 6)][1]
    assert kinds[("o", 7)][0] == "reference its task cannot score" and "options must be a list" in kinds[("o", 7)][1]
    assert kinds[("l", 8)][0] == "reference its task cannot score" and "got list ['B']" in kinds[("l", 8)][1]
    assert kinds[("l", 9)] == ("reference its task cannot score", "l:9: answer must be a string, got list ['B']")


def test_the_report_is_utf_8_whatever_the_locale(runs, tmp_path):
    """Under a locale whose encoding lacks a character of the report (LC_ALL=C without UTF-8 mode: ASCII), the
    report's write was a UnicodeEncodeError at the end of an evaluation; its files are UTF-8 always."""
    import os
    import subprocess
    import sys

    kinds, r = runs
    r = {"adapté": r["adapted"], "base": r["base"]}
    (tmp_path / "runs.json").write_text(json.dumps([kinds, r]), encoding="utf-8")
    script = ("import json, sys; from adapt.evaluate import write_report; "
              "kinds, r = json.loads(open(sys.argv[1], encoding='utf-8').read()); write_report(sys.argv[2], r, kinds)")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "runs.json"), str(tmp_path / "report")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "adapté" in (tmp_path / "report" / "eval.md").read_text(encoding="utf-8")
    assert "adapté" in json.loads((tmp_path / "report" / "eval.json").read_text(encoding="utf-8"))["runs"]


def test_report_and_predictions_are_written_whole_or_not_at_all(runs, tmp_path, monkeypatch):
    """A report that failed half way left a new eval.json beside the old eval.md, and predictions that failed to
    serialise left a truncated file in place of the old one."""
    import adapt.evaluate as evaluate

    kinds, r = runs
    json_path, md_path = write_report(tmp_path, {"base": r["base"]}, kinds)
    before = json_path.read_text(), md_path.read_text()
    monkeypatch.setattr(evaluate, "_protocol_rows", lambda runs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_report(tmp_path, r, kinds)
    assert (json_path.read_text(), md_path.read_text()) == before

    path = tmp_path / "predictions.jsonl"
    save_predictions([P("rs", "mc", {"accuracy": 1.0})], path)
    old = path.read_text()
    with pytest.raises(TypeError):
        save_predictions([P("rs", "mc", {"accuracy": 0.0}), P("rs", "mc", {"accuracy": object()})], path)
    assert path.read_text() == old and [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_no_gain_between_runs_that_scored_as_many_but_different_samples(tmp_path):
    """Base skipped line 3 and adapted line 1: both scored two samples, and the report called their difference a
    gain."""
    kinds = {"rs": "domain"}
    base = summarize([P("rs", "mc", {"accuracy": 0.0}, line=1), P("rs", "mc", {"accuracy": 0.0}, line=2)], kinds)
    adapted = summarize([P("rs", "mc", {"accuracy": 1.0}, line=2), P("rs", "mc", {"accuracy": 1.0}, line=3)], kinds)
    md = write_report(tmp_path, {"base": base, "adapted": adapted}, kinds)[1].read_text()
    assert "| rs | domain | 2 | 0.000 | 1.000 | — |" in md
    assert "| domain | 2 | 0.000 | 1.000 | — |" in md and "+1.000" not in md
    assert "rs: no Δ (adapted − base): adapted scored 2 samples, base 2 others" in md
    same = summarize([P("rs", "mc", {"accuracy": 1.0}, line=1), P("rs", "mc", {"accuracy": 1.0}, line=2)], kinds)
    assert "| rs | domain | 2 | 0.000 | 1.000 | +1.000 |" in write_report(
        tmp_path / "same", {"base": base, "adapted": same}, kinds)[1].read_text()


def test_a_chart_that_fails_to_save_leaves_the_old_one(runs, tmp_path, monkeypatch):
    """savefig wrote into comparison.png itself: a failure half way left half a PNG where the last chart was."""
    from matplotlib.figure import Figure

    kinds, r = runs
    png = plot_comparison(r, kinds, tmp_path / "comparison.png")
    old = png.read_bytes()

    def torn(fig, target, **kwargs):
        (open(target, "wb") if isinstance(target, (str, Path)) else target).write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", torn)
    with pytest.raises(OSError, match="No space"):
        plot_comparison(r, kinds, png)
    assert png.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["comparison.png"]


@pytest.mark.parametrize(("line", "why"), [("{not json", "Expecting"), ('{"bogus": 1}', "unexpected keyword"),
                                           ("[1, 2]", "argument after")])
def test_load_predictions_names_the_line_that_is_no_prediction(tmp_path, line, why):
    """A damaged predictions file was a raw JSONDecodeError / TypeError naming neither file nor line."""
    path = tmp_path / "p.jsonl"
    save_predictions([P("rs", "mc", {"accuracy": 1.0}, line=3)], path)
    path.write_text(path.read_text() + "\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"p\.jsonl:3: not a prediction .*{why}"):
        load_predictions(path)
