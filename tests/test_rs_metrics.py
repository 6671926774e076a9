"""Remote-sensing scorers (domains.remote_sensing.metrics) and their wiring into adapt's task registry."""

from __future__ import annotations

import pytest

from adapt import metrics as am
from adapt.data.samples import Record
from adapt.domains_bridge import register_domain_metrics
from adapt.evaluate import Prediction, summarize
from domains.base import DomainPlugin, register_domain, unregister_domain
from domains.remote_sensing.metrics import (
    METRICS,
    bucket,
    label_key,
    match_label,
    parse_number,
    score_classification,
    score_region,
    score_rsvqa,
)


def rec(task=None, qtype=None, options=None, answer="x"):
    meta = {"question_type": qtype} if qtype else {}
    return Record(source="rs", line=1, conversations=[{"from": "human", "value": "<image>\nq"},
                                                       {"from": "gpt", "value": answer}],
                  images=[], image_sizes=[], task=task, answer=answer, options=options, meta=meta)


# ------------------------------------------------------------------------------------------- rsvqa
@pytest.mark.parametrize("pred,ref,hit", [
    ("Yes", "yes", 1.0), ("yes.", "yes", 1.0), ("The answer is no", "no", 1.0), ("no", "yes", 0.0),
    ("not sure", "no", 0.0), ("no, there is none", "no", 0.0), ("", "no", 0.0),
    ("Rural", "rural", 1.0), ("urban area", "urban", 0.0),
])
def test_rsvqa_words_whole_answer_only(pred, ref, hit):
    out = score_rsvqa(pred, rec(qtype="presence"), ref)
    assert out == {"accuracy": hit, "accuracy/presence": hit}
    assert next(iter(out)) == "accuracy"


@pytest.mark.parametrize("pred,ref,hit,bucket_hit", [
    ("12", "12", 1.0, 1.0), ("12.", "12", 1.0, 1.0), ("twelve", "12", 1.0, 1.0), ("1,234", "1234", 1.0, 1.0),
    ("1", "12", 0.0, 1.0), ("12 or 13", "12", 0.0, 0.0), ("0", "0", 1.0, 1.0), ("0", "3", 0.0, 0.0),
    ("about 12 cars", "12", 0.0, 0.0), ("-3", "0", 0.0, 0.0),  # a negative count is in no bucket (it was in "0")
])
def test_rsvqa_count_exact_number_and_bucket(pred, ref, hit, bucket_hit):
    out = score_rsvqa(pred, rec(qtype="count"), ref)
    assert out["accuracy"] == out["accuracy/count"] == hit
    assert out["bucket_accuracy/count"] == bucket_hit


@pytest.mark.parametrize("pred,ref,hit,bucket_hit", [
    ("12", "between 10 and 100", 1.0, 1.0), ("10", "between 10 and 100", 0.0, 1.0),  # the class starts above 10
    ("100", "between 10 and 100", 1.0, 1.0), ("Between 10 and 100", "between 10 and 100", 1.0, 1.0),
    ("5", "between 0 and 10", 1.0, 1.0), ("0", "between 0 and 10", 0.0, 0.0), ("2000", "more than 1000", 1.0, 1.0),
    ("1000", "more than 1000", 0.0, 0.0), ("12.5", "between 10 and 100", 0.0, 1.0),
    ("many", "more than 1000", 0.0, 0.0),
    ("between 10 and 100", "12", 0.0, 1.0), ("300m2", "between 100 and 1000", 0.0, 0.0),
])
def test_rsvqa_count_classes_are_scored_as_their_range(pred, ref, hit, bucket_hit):
    """A count reference written as an RSVQA count class (syvlo/RSVQA range_numbers: "between 10 and 100") raised
    "not a number"; a number in the class (or the class) now hits it, and it is in the bucket it lies in."""
    out = score_rsvqa(pred, rec(qtype="count"), ref)
    assert out["accuracy"] == out["accuracy/count"] == hit
    assert out["bucket_accuracy/count"] == bucket_hit
    with pytest.raises(ValueError, match="count class within one bucket"):
        score_rsvqa("50", rec(qtype="count"), "between 10 and 1000")  # spans two buckets


@pytest.mark.parametrize("pred,ref,hit,exact", [
    ("500m2", "500m2", 1.0, 1.0), ("600 m2", "500m2", 1.0, 0.0), ("600", "500m2", 1.0, 0.0),
    ("50m2", "500m2", 0.0, 0.0), ("0m2", "0m2", 1.0, 1.0), ("2000 square meters", "1500m2", 1.0, 0.0),
    ("big", "500m2", 0.0, 0.0),
])
def test_rsvqa_area_buckets(pred, ref, hit, exact):
    out = score_rsvqa(pred, rec(qtype="area"), ref)
    assert out["accuracy"] == out["accuracy/area"] == hit
    assert out["exact_accuracy/area"] == exact


@pytest.mark.parametrize("pred,ref,hit,exact", [
    ("0m2", "0m2", 1.0, 1.0), ("between 0m2 and 10m2", "between 0m2 and 10m2", 1.0, 1.0),
    ("between 0m2 and 10m2", "0m2", 0.0, 0.0), ("5m2", "between 0m2 and 10m2", 1.0, 0.0),
    ("50m2", "between 0m2 and 10m2", 1.0, 0.0),  # 1-100 holds both 0-10 and 10-100
    ("between 10m2 and 100m2", "between 0m2 and 10m2", 1.0, 0.0), ("0", "between 0m2 and 10m2", 0.0, 0.0),
    ("between 100m2 and 1000m2", "500m2", 1.0, 0.0), ("between 101m2 and 1000m2", "between 100m2 and 1000m2", 1.0, 0.0),
    ("More than 1000m2", "more than 1000m2", 1.0, 1.0), ("5000 m2", "more than 1000m2", 1.0, 0.0),
    ("1000m2", "more than 1000m2", 0.0, 0.0), ("between 1m2 and 10m2", "7m2", 1.0, 0.0),
    ("more than 100m2", "more than 1000m2", 0.0, 0.0),  # spans two buckets: in none
])
def test_rsvqa_hr_area_classes_are_scored_by_their_bucket(pred, ref, hit, exact):
    """RSVQA-HR's own area classes ("between 0m2 and 10m2", "more than 1000m2") as reference were "not a number": a
    ValueError that stopped the evaluation; they are now scored by the bucket they lie in."""
    out = score_rsvqa(pred, rec(qtype="area"), ref)
    assert out["accuracy"] == out["accuracy/area"] == out["bucket_accuracy/area"] == hit
    assert out["exact_accuracy/area"] == exact
    with pytest.raises(ValueError, match="area class"):
        score_rsvqa("5m2", rec(qtype="area"), "more than 100m2")  # a class across buckets has no bucket


def test_buckets_and_numbers():
    assert [bucket(v) for v in (0, 1, 100, 101, 1000, 1001)] == [0, 1, 1, 2, 2, 3]
    assert parse_number("300m2", area=True) == 300 and parse_number("300m2") is None
    assert parse_number("-") is None and parse_number("three") == 3


def test_rsvqa_type_from_rsvqa_field_and_missing():
    r = rec(qtype=None)
    r.meta = {"type": "comp"}
    assert score_rsvqa("yes", r, "yes") == {"accuracy": 1.0, "accuracy/comp": 1.0}
    assert score_rsvqa("yes", {"meta": {}}, "yes") == {"accuracy": 1.0}
    with pytest.raises(ValueError):
        score_rsvqa("3", rec(qtype="count"), "many")


@pytest.mark.parametrize("qtype", ["Count", " COUNT ", "count"])
def test_rsvqa_type_is_read_whatever_its_case(qtype):
    """A "Count" type is a count (a number compared as a number, with its bucket), not a word compared as text."""
    out = score_rsvqa("twelve", rec(qtype=qtype), "12")
    assert out == {"accuracy": 1.0, "accuracy/count": 1.0, "bucket_accuracy/count": 1.0}
    area = rec(qtype="Area")
    assert score_rsvqa("600 m2", area, "500m2")["accuracy/area"] == 1.0


# --------------------------------------------------------------------------------- labels
def test_label_key_and_match():
    assert label_key("AnnualCrop") == label_key("annual_crop") == label_key("Annual crop.") == "annual crop"
    labels = ["Forest", "Rainforest", "SeaLake"]
    assert match_label("forest", labels) == "Forest"
    assert match_label("The answer is sea lake", labels) == "SeaLake"
    assert match_label("tropical forest", labels) is None
    assert match_label("B", labels) == "Rainforest" and match_label("(C)", labels) == "SeaLake"
    assert match_label("A. Rainforest", labels) is None  # contradictory
    assert match_label("D", labels) is None


@pytest.mark.parametrize("pred,ref,hit", [
    ("forest", "Forest", 1.0), ("rainforest", "forest", 0.0), ("Forest.", "forest", 1.0),
    ("HerbaceousVegetation", "herbaceous vegetation", 1.0), ("a forest near a river", "forest", 0.0),
])
def test_classification_exact_label(pred, ref, hit):
    assert score_classification(pred, rec(task="classification"), ref) == {"accuracy": hit}
    assert score_region(pred, rec(task="region"), ref) == {"accuracy": hit}



@pytest.mark.parametrize("ref", ["", ".", "  "])
def test_a_classification_reference_without_a_label_is_refused_naming_the_record(ref):
    """Without options, a reference with no label left ('', '.') scored every answer 0 without a word (and, where
    the question lists options the reference is none of, an empty answer 1): refused as the built-in scorers do."""
    for score, task in ((score_classification, "classification"), (score_region, "region")):
        with pytest.raises(ValueError, match="has no words to compare an answer with"):
            score("forest", rec(task=task), ref)
    in_question = rec(task="classification")
    in_question.conversations[0]["value"] = "<image>\nScene?\nA. desert\nB. forest"
    with pytest.raises(ValueError, match="has no words to compare an answer with"):
        score_classification("", in_question, ref)

def test_classification_with_options_letters_and_text():
    r = rec(task="classification", options=["forest", "river", "desert"])
    assert score_classification("B", r, "B")["accuracy"] == 1.0
    assert score_classification("river", r, "B")["accuracy"] == 1.0
    assert score_classification("B", r, "river")["accuracy"] == 1.0
    assert score_classification("C", r, "river")["accuracy"] == 0.0
    assert score_classification("B or C", r, "river")["accuracy"] == 0.0
    # a letter after a lead-in, as the built-in classification scorer (parse_choice) reads it: these scored 0
    for answer in ("The answer is B", "Answer: (B)", "Option B", "the correct choice is B."):
        assert score_classification(answer, r, "river")["accuracy"] == 1.0, answer
    assert score_classification("The answer is B or C", r, "river")["accuracy"] == 0.0
    assert score_classification("Option B. desert", r, "river")["accuracy"] == 0.0
    prefixed = rec(task="classification", options=["A. desert", "B. forest"])
    assert score_classification("forest", prefixed, "B")["accuracy"] == 1.0
    assert score_classification("A", prefixed, "desert")["accuracy"] == 1.0
    in_question = rec(task="classification")
    in_question.conversations[0]["value"] = "<image>\nScene?\nA. desert\nB. forest\nAnswer with the letter."
    assert score_classification("forest", in_question, "B")["accuracy"] == 1.0
    assert score_classification("B.", in_question, "B")["accuracy"] == 1.0
    assert score_classification("desert", in_question, "B")["accuracy"] == 0.0


# --------------------------------------------------------------------------------- grounding
REF = "<ref>the plane</ref><box>[[100, 100, 300, 300]]</box>"


@pytest.mark.parametrize("pred,hit", [
    (REF, 1.0),
    ("<ref>plane</ref><box>[[110, 110, 310, 310]]</box>", 1.0),
    ("<box>[[200, 200, 400, 400]]</box>", 0.0),  # IoU 1/7
    ("[[100, 100, 300, 300]]", 1.0),  # bare box, as InternVL's evaluator accepts
    ("<box>[[0.1, 0.1, 0.3, 0.3]]</box>", 1.0),  # 0-1 normalised
    ("<ref>plane</ref><box>[[100, 100, 300, 300]", 1.0),  # cut short
    ("no idea", 0.0),
    ("<box>[[300, 300, 100, 100]]</box>", 0.0),
])
def test_grounding_acc05(pred, hit):
    out = score_grounding(pred, rec(task="grounding"), REF)
    assert out == {"acc@0.5": hit}


def test_grounding_iou_exactly_half_is_a_miss():
    # [0,0,200,100] vs [0,0,100,100]: IoU = 0.5 exactly -> not > 0.5
    assert score_grounding("<box>[[0, 0, 200, 100]]</box>", {}, "<box>[[0, 0, 100, 100]]</box>")["acc@0.5"] == 0.0
    with pytest.raises(ValueError):
        score_grounding("<box>[[0, 0, 1, 1]]</box>", {}, "nothing")


def score_grounding(prediction, record, reference):
    """The built-in grounding task, the one scorer remote sensing shares with every other domain."""
    return am.score(prediction, rec(task="grounding", answer=reference), reference)


def test_metrics_table():
    # grounding is the built-in task: a second scorer named DIOR-RSVG as the source of medical grounding too
    assert set(METRICS) == {"rsvqa", "classification", "region"}
    assert all(callable(fn) and fn.main_metric for fn in METRICS.values())


# --------------------------------------------------------------------------------- wiring into adapt
@pytest.fixture
def rs_plugin():
    plugin = DomainPlugin(name="rs_metrics_test", metrics={"rsvqa_t": score_rsvqa})
    register_domain(plugin, overwrite=True)
    yield plugin
    unregister_domain(plugin.name)
    for task in ("rsvqa_t", "grounding", "classification", "region", "rsvqa"):
        am.unregister_task(task)


def test_register_domain_metrics_adds_and_overrides_builtins(rs_plugin):
    owners = register_domain_metrics()
    assert owners.get("rsvqa_t") == "rs_metrics_test"
    r = rec(task="rsvqa_t", qtype="presence", answer="yes")
    assert am.score("Yes.", r) == {"accuracy": 1.0, "accuracy/presence": 1.0}
    assert am.main_metric_name("rsvqa_t") == "accuracy"
    assert register_domain_metrics() == owners  # idempotent


def test_user_registration_wins(rs_plugin):
    def mine(prediction, record, reference):
        return {"mine": 1.0}

    am.register_task("rsvqa_t", mine)
    try:
        owners = register_domain_metrics()
        assert "rsvqa_t" not in owners and am._TASKS["rsvqa_t"] is mine
    finally:
        am.unregister_task("rsvqa_t")


def test_summary_shows_per_question_type_accuracy(rs_plugin):
    register_domain_metrics()
    rows = [("presence", "yes", "yes"), ("presence", "no", "yes"), ("count", "3", "3"), ("comp", "no", "no")]
    preds = []
    for k, (qtype, pred, ref) in enumerate(rows):
        r = rec(task="rsvqa_t", qtype=qtype, answer=ref)
        preds.append(Prediction("rsvqa", k + 1, "rsvqa_t", "q", pred, ref, am.score(pred, r)))
    src = summarize(preds)["sources"]["rsvqa"]
    assert src["main"] == pytest.approx(0.75)
    m = src["metrics"]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["accuracy/presence"] == pytest.approx(0.5)
    assert m["accuracy/count"] == 1.0 and m["accuracy/comp"] == 1.0


def test_real_plugin_exposes_its_metrics_to_adapt_eval():
    """The remote_sensing plugin hands every scorer of METRICS to adapt, which then scores its tasks with them
    (as `adapt eval` does: register_domain_metrics, then score per sample)."""
    from domains.base import get_domain

    plugin = get_domain("remote_sensing")
    assert {task: plugin.metrics.get(task) for task in METRICS} == METRICS
    try:
        owners = register_domain_metrics()
        for task, fn in METRICS.items():
            assert owners.get(task) == "remote_sensing" and am._TASKS[task] is fn, task
            assert am.main_metric_name(task) == fn.main_metric
        count = rec(task="rsvqa", qtype="count", answer="12")  # a task adapt itself does not know
        assert am.score("twelve", count) == {"accuracy": 1.0, "accuracy/count": 1.0, "bucket_accuracy/count": 1.0}
    finally:
        for task in METRICS:
            am.unregister_task(task)


LC_OPTS = ["forest", "desert", "water", "urban"]
ONE_RULE = ["desert (B)", "I choose B", "B - desert", "It is B.", "b. desert", "b) desert", "B. desert", "(b)",
            "The answer is B", "Desert.", "B or C", "B. water", "a desert", "The answer is b.", "C", "rainforest"]


def test_classification_with_options_is_scored_as_mc():
    """With the remote-sensing scorer in place (as `adapt eval` registers it), a classification record with options
    scores every answer as mc does: "desert (B)", "I choose B", "B - desert", "It is B." scored mc 1 and
    classification 0 (the plugin had a second, stricter letter parser)."""
    try:
        register_domain_metrics()
        assert am._TASKS["classification"] is score_classification
        for reference in ("desert", "B"):
            for answer in ONE_RULE:
                mc = am.score(answer, rec(task="mc", options=LC_OPTS, answer=reference))
                assert am.score(answer, rec(task="classification", options=LC_OPTS, answer=reference)) == mc, answer
                assert mc["accuracy"] == am.mc_accuracy(answer, reference, LC_OPTS)
        assert am.score("desert (B)", rec(task="classification", options=LC_OPTS, answer="desert"))["accuracy"] == 1.0
    finally:
        for task in METRICS:
            am.unregister_task(task)


def test_classification_adds_only_label_names_to_parse_choice():
    # what parse_choice cannot do: class names written as words; letters are read as mc reads them
    r = rec(task="classification", options=["AnnualCrop", "Forest", "SeaLake"], answer="SeaLake")
    assert score_classification("Sea lake", r, "SeaLake")["accuracy"] == 1.0
    assert am.mc_accuracy("Sea lake", "SeaLake", r.options) == 0.0
    assert score_classification("C. Sea lake", r, "SeaLake")["accuracy"] == 1.0
    assert score_classification("A. Sea lake", r, "SeaLake")["accuracy"] == 0.0  # contradictory
    assert score_classification("sea_lake (C)", r, "C")["accuracy"] == 1.0
    assert score_classification("Sea lake or forest", r, "SeaLake")["accuracy"] == 0.0


def test_mc_reads_options_written_with_their_letters_as_classification_does():
    prefixed = rec(task="mc", options=["A. desert", "B. forest"], answer="B")
    assert am.score("forest", prefixed) == {"accuracy": 1.0}
    assert am.record_options(prefixed) == ["desert", "forest"]
    assert am.record_options({"options": ["A) x", "C. y"]}) == ["x", "C. y"]  # only an option's own letter


# --------------------------------------------------------------------------------------------- protocols
def _declared(protocols: dict, key: str) -> str:
    return key if key in protocols else key.rsplit("/", 1)[0] + "/<type>"


@pytest.mark.parametrize("fn,record,pred,ref", [
    (score_rsvqa, rec(qtype="presence"), "yes", "yes"),
    (score_rsvqa, rec(qtype="rural_urban"), "urban", "rural"),
    (score_rsvqa, rec(qtype="count"), "3", "3"),
    (score_rsvqa, rec(qtype="area"), "300m2", "250m2"),
    (score_rsvqa, rec(), "yes", "yes"),
    (score_classification, rec(), "forest", "forest"),
    (score_region, rec(), "forest", "river"),
])
def test_every_metric_names_its_protocol_and_source(fn, record, pred, ref):
    for key in fn(pred, record, ref):
        entry = fn.protocols[_declared(fn.protocols, key)]
        assert set(entry) == {"protocol", "rule", "source"} and all(entry.values()), key


def test_protocol_sources_are_the_public_evaluators():
    assert "Lobry et al." in score_rsvqa.protocols["accuracy"]["source"]
    assert "rs_vqa/score.py (is_correct_count" in score_rsvqa.protocols["bucket_accuracy/count"]["source"]
    assert "DIOR-RSVG" in am.protocols_of("grounding")["acc@0.5"]["source"]
    assert "rs_det/caculate.py" in am.protocols_of("grounding")["acc@0.5"]["source"]


@pytest.mark.parametrize("pred,ref,same_bucket", [
    ("0", "0", 1.0), ("0", "1", 0.0), ("1", "100", 1.0), ("100", "101", 0.0), ("101", "1000", 1.0),
    ("1000", "1001", 0.0), ("5000", "1001", 1.0),
])
def test_rsvqa_count_buckets_are_mini_internvls(pred, ref, same_bucket):
    # is_correct_count's edges: 0 | 1-100 | 101-1000 | > 1000; accuracy/count is the exact number
    out = score_rsvqa(pred, rec(qtype="count"), ref)
    assert out["bucket_accuracy/count"] == same_bucket and out["accuracy/count"] == float(pred == ref)


def test_rsvqa_and_grounding_follow_their_named_rules():
    # area: "m2" stripped, Mini-InternVL's buckets as the type accuracy, the exact value beside it
    out = score_rsvqa("1000m2", rec(qtype="area"), "101m2")
    assert out["accuracy/area"] == out["bucket_accuracy/area"] == 1.0 and out["exact_accuracy/area"] == 0.0
    assert score_rsvqa("1001 m2", rec(qtype="area"), "1000m2")["accuracy/area"] == 0.0
    # exact answers: case-insensitive as score.py, whole answer only
    assert score_rsvqa("URBAN", rec(qtype="rural_urban"), "urban")["accuracy"] == 1.0
    assert score_rsvqa("urban area", rec(qtype="rural_urban"), "urban")["accuracy"] == 0.0
    # grounding: continuous IoU on the grid, strictly above 0.5; with rs_det's +1-pixel widths this box
    # ([0,0,200,100] against [0,0,100,100], IoU 0.5 exactly) would count (10201 / 20301 > 0.5)
    assert score_grounding("<box>[[0, 0, 200, 100]]</box>", {}, "<box>[[0, 0, 100, 100]]</box>")["acc@0.5"] == 0.0
    assert score_grounding("<box>[[0, 0, 199, 100]]</box>", {}, "<box>[[0, 0, 100, 100]]</box>")["acc@0.5"] == 1.0
    # boxes summing to < 4 are 0-1 coordinates (InternVL's rule)
    assert score_grounding("[[0.0, 0.0, 0.1, 0.1]]", {}, "<box>[[0, 0, 100, 100]]</box>")["acc@0.5"] == 1.0


@pytest.mark.parametrize("text, number", [
    ("1,234.5", 1234.5), ("+3", 3), ("+1,000", 1000), ("-1,234.25", -1234.25), ("1,234", 1234), ("12.0", 12),
    ("1,234.5m2", None), ("1,23", None), ("+", None), ("++3", None), ("1,2345", None),
])
def test_parse_number_thousands_with_decimals_and_plus_sign(text, number):
    assert parse_number(text) == number


def test_parse_number_keeps_large_counts_exact():
    """An integer answer stays an int: a float would make 2**53 + 1 equal 2**53."""
    big = 2**53 + 1
    assert parse_number(str(big)) == big and parse_number(f"{big:,}") == big
    assert parse_number(str(big)) != parse_number(str(big - 1))
    assert isinstance(parse_number("+3"), int) and isinstance(parse_number("12.5"), float)
    out = score_rsvqa(str(big - 1), rec(qtype="count"), str(big))
    assert out["accuracy"] == 0.0
    assert parse_number("1,234.5m2", area=True) == 1234.5


def test_labels_of_other_types_are_refused_and_a_number_is_its_text():
    """``str(text or "")`` read the label 0 as no answer and a list as its printed form; they follow
    `domains.answers.answer_text` now, as every other scorer does."""
    from domains.remote_sensing.metrics import label_key, match_label

    assert label_key(0) == "0" and match_label(0) == "0"
    assert label_key(None) == "" and match_label(None) is None
    for value in (["forest"], {"a": 1}, True):
        with pytest.raises(ValueError, match="must be a string or a number"):
            label_key(value)
        with pytest.raises(ValueError, match="must be a string or a number"):
            match_label(value)


def test_the_domain_scorers_declare_their_main_metrics_scale():
    """Without a declared scale a report judged a task's scale from one run's values, so two runs could disagree."""
    from adapt.domains_bridge import register_domain_metrics
    from adapt.metrics import main_scale

    register_domain_metrics()
    for task in ("rsvqa", "classification", "region", "med_vqa", "drivelm"):
        assert main_scale(task) == (0, 1), task
