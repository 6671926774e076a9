"""Medical VQA scoring: closed accuracy over all closed questions, open recall, and the LLaVA-Med pitfalls."""

from __future__ import annotations

import pytest

from adapt import metrics as am
from adapt.data.samples import Record
from adapt.domains_bridge import register_domain_metrics
from adapt.evaluate import Prediction, split_for_eval, summarize
from adapt.metrics import infer_task, question_of
from domains.medical.metrics import METRICS, normalize_text, score_med_vqa, tokens

CLOSED = {"meta": {"answer_type": "CLOSED"}}
OPEN = {"meta": {"answer_type": "OPEN"}}


def closed(prediction: str, reference: str) -> float:
    scores = score_med_vqa(prediction, CLOSED, reference)
    assert list(scores) == ["score", "closed_accuracy"] and scores["score"] == scores["closed_accuracy"]
    return scores["closed_accuracy"]


@pytest.mark.parametrize("prediction, reference, hit", [
    ("yes", "yes", 1.0),
    ("Yes, there is a nodule in the right lung.", "yes", 1.0),
    ("No.", "no", 1.0),
    ("There is no pneumothorax.", "no", 1.0),
    ("no", "yes", 0.0),
    # "no" inside "nodule" / "not" is no "no": the prediction says neither yes nor no
    ("A nodule is seen.", "no", 0.0),
    ("The lesion is not enhancing.", "no", 0.0),
    # both yes and no: wrong whatever the reference
    ("Yes and no.", "yes", 0.0),
    ("yes/no", "no", 0.0),
    # neither
    ("I cannot tell.", "yes", 0.0),
    ("", "no", 0.0),
])
def test_closed_yes_no(prediction, reference, hit):
    assert closed(prediction, reference) == hit


@pytest.mark.parametrize("prediction, reference, hit", [
    ("left", "left", 1.0),
    ("Left.", "left", 1.0),
    ("The answer is left", "left", 1.0),
    # the reference inside a longer prediction does not score (LLaVA-Med substring luck)
    ("left lower lobe", "left", 0.0),
    ("right", "left", 0.0),
    ("CT", "ct", 1.0),
    ("MRI", "ct", 0.0),
    ("CT scan with contrast", "ct", 0.0),
])
def test_closed_other_answers_need_exact_match(prediction, reference, hit):
    assert closed(prediction, reference) == hit


@pytest.fixture
def med_vqa_registered():
    """The medical plugin's scorers registered with adapt, as `adapt eval` does before predicting."""
    owners = register_domain_metrics()
    yield owners
    am.unregister_task("med_vqa")


def test_closed_accuracy_counts_every_closed_question(med_vqa_registered):
    """Scored and summarised the way `adapt eval` does it: every closed question adds a 0 or a 1 (LLaVA-Med
    drops misses that mention yes/no), including empty and unparseable predictions, so the source's
    closed accuracy is hits over all closed questions; open questions do not enter it."""
    assert med_vqa_registered["med_vqa"] == "medical"
    rows = [  # (answer type, reference, prediction, closed hit)
        ("CLOSED", "yes", "Yes, there is a nodule in the right lung.", 1),
        ("CLOSED", "no", "No.", 1),
        ("CLOSED", "left", "Left", 1),
        ("CLOSED", "yes", "no", 0),
        ("CLOSED", "no", "", 0),                   # empty
        ("CLOSED", "yes", "?!", 0),                # no words at all
        ("CLOSED", "yes", "I cannot tell.", 0),    # neither yes nor no
        ("CLOSED", "no", "Yes and no.", 0),        # both
        ("CLOSED", "no", "A nodule is seen.", 0),  # "no" only inside "nodule"
        ("CLOSED", "left", "left lower lobe", 0),
        ("OPEN", "left lower lobe", "The mass is in the left lower lobe.", None),
        ("OPEN", "liver", "", None),
    ]
    preds = []
    for line, (kind, reference, prediction, _) in enumerate(rows, start=1):
        record = Record("vqa_rad", line, [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": reference}],
                        [], [], task="med_vqa", answer=reference, meta={"answer_type": kind})
        _, ref = split_for_eval(record)
        preds.append(Prediction(record.source, record.line, infer_task(record), question_of(record), prediction, ref,
                                am.score(prediction, record, ref), dict(record.meta)))
    source = summarize(preds, {"vqa_rad": "domain"})["sources"]["vqa_rad"]
    hits = [hit for kind, _, _, hit in rows if kind == "CLOSED"]
    assert source["n"] == len(rows) and source["tasks"] == {"med_vqa": len(rows)}
    assert source["metrics"]["closed_accuracy"] == pytest.approx(sum(hits) / len(hits)) == pytest.approx(3 / 10)
    assert source["metrics"]["open_recall"] == pytest.approx(0.5)
    # the main metric is closed accuracy or open recall per question, averaged over every question
    assert source["main"] == pytest.approx((3 + 1) / len(rows))


@pytest.mark.parametrize("prediction, reference, hit", [
    ("Ｙｅｓ", "yes", 1.0),             # full-width letters (NFKC)
    ("YES!!!", "yes", 1.0),
    ("“No.”", "no", 1.0),              # curly quotes
    ("¿no?", "no", 1.0),
    ("Straße", "STRASSE", 1.0),        # case folding
    ("是", "是", 1.0),                  # Chinese closed answers: exact after normalisation
    ("不是", "是", 0.0),
])
def test_unicode_and_punctuation(prediction, reference, hit):
    assert closed(prediction, reference) == hit


def test_open_recall_f1_and_exact():
    scores = score_med_vqa("The mass is in the left lower lobe of the lung.", OPEN, "left lower lobe")
    assert next(iter(scores)) == "score" and "closed_accuracy" not in scores
    assert scores["score"] == scores["open_recall"] == 1.0
    assert scores["open_exact_match"] == 0.0
    assert scores["open_token_f1"] == pytest.approx(2 * 3 / (8 + 3))  # mass is in left lower lobe of lung
    half = score_med_vqa("left kidney", OPEN, "right kidney")
    assert half["open_recall"] == 0.5 and half["open_token_f1"] == 0.5
    exact = score_med_vqa("Liver.", OPEN, "liver")
    assert exact == {"score": 1.0, "open_recall": 1.0, "open_token_f1": 1.0, "open_exact_match": 1.0}
    assert score_med_vqa("", OPEN, "liver")["open_recall"] == 0.0


def test_open_numbers_words_and_decimals():
    assert score_med_vqa("two lesions", OPEN, "2")["open_recall"] == 1.0
    assert score_med_vqa("3.5 cm", OPEN, "3.5 cm")["open_exact_match"] == 1.0
    assert score_med_vqa("35 cm", OPEN, "3.5 cm")["open_recall"] == 0.5  # the decimal point is kept
    # open recall is word level: "no" inside "nodule" does not count
    assert score_med_vqa("nodule", OPEN, "no finding")["open_recall"] == 0.0


def test_chinese_open_answers_are_scored_per_character():
    assert score_med_vqa("肝脏", OPEN, "肝")["open_recall"] == 1.0
    assert score_med_vqa("心脏", OPEN, "肝脏")["open_recall"] == 0.5


def test_answer_type_from_meta_or_reference():
    assert "closed_accuracy" in score_med_vqa("yes", {}, "Yes")  # no answer_type: yes/no -> closed
    assert "open_recall" in score_med_vqa("liver", {"meta": {}}, "liver")
    assert "closed_accuracy" in score_med_vqa("left", {"meta": {"answer_type": " closed "}}, "left")

    class Rec:  # an adapt Record-like object (attributes, not keys)
        def __init__(self):
            self.meta = {"answer_type": "OPEN"}

    assert "open_recall" in score_med_vqa("yes", Rec(), "yes")
    with pytest.raises(ValueError, match="answer_type"):
        score_med_vqa("yes", {"meta": {"answer_type": "MAYBE"}}, "yes")
    with pytest.raises(ValueError, match="no words"):
        score_med_vqa("yes", OPEN, "?!")


@pytest.mark.parametrize("kind, reference", [("CLOSED", "..."), ("OPEN", "?!"), ("", " . ")])
def test_a_reference_without_words_is_refused_naming_the_record(kind, reference):
    """med_vqa refused such a reference with its own message, naming no record (among thousands, which one?); it
    now says it as the built-in scorers do (domains.answers.check_reference_words), with the record's source:line."""
    record = {"source": "vqa_rad_test", "line": 12, "meta": {"answer_type": kind}}
    with pytest.raises(ValueError, match=r"^vqa_rad_test:12: reference .* has no words to compare an answer with"):
        score_med_vqa("yes", record, reference)


def test_normaliser_and_registry():
    assert tokens("The Left-lower LOBE, 2.5 cm; two nodules") == ["left", "lower", "lobe", "2.5", "cm", "2", "nodules"]
    assert normalize_text("  A  CT scan. ") == "ct scan"
    assert METRICS == {"med_vqa": score_med_vqa}


# --------------------------------------------------------------------------------------------- protocols
def test_every_metric_names_its_protocol_and_source():
    returned = set(score_med_vqa("yes", CLOSED, "yes")) | set(score_med_vqa("the liver", OPEN, "liver"))
    assert returned == set(score_med_vqa.protocols)
    for entry in score_med_vqa.protocols.values():
        assert set(entry) == {"protocol", "rule", "source"} and all(entry.values())
    assert "microsoft/LLaVA-Med" in score_med_vqa.protocols["closed_accuracy"]["source"]
    assert "calculate_f1score" in score_med_vqa.protocols["open_recall"]["source"]
    assert "fixed denominator" in score_med_vqa.protocols["closed_accuracy"]["protocol"]


def test_scores_follow_their_named_rules():
    # closed yes/no: exactly one of yes / no among the words, the reference's; a miss is a 0, never dropped
    assert closed("Yes, it is.", "yes") == 1.0 and closed("No, it is not.", "yes") == 0.0
    assert closed("yes or no", "yes") == 0.0
    # other closed answers: normalised exact match ("The CT." is "ct", "CT scan" is not)
    assert closed("The CT.", "CT") == 1.0 and closed("CT scan", "CT") == 0.0
    # open recall: share of the reference's words found (LLaVA-Med), F1 of bags of words (SQuAD), exact
    scores = score_med_vqa("a mass in the left lung", OPEN, "left lower lobe")
    assert scores["open_recall"] == pytest.approx(1 / 3)
    assert scores["open_token_f1"] == pytest.approx(2 * 1 / (4 + 3))
    assert scores["open_exact_match"] == 0.0 and scores["score"] == scores["open_recall"]


# --------------------------------------------------------------------------------------------- yes/no references
@pytest.mark.parametrize("prediction, reference, hit", [
    # a closed reference written as a sentence is read as its yes / no
    ("yes", "Yes, there is.", 1.0),
    ("Yes.", "yes, it is", 1.0),
    ("no", "No, it is not.", 1.0),
    ("no", "Yes, there is.", 0.0),
    ("yes", "No, there is no effusion.", 0.0),
    ("I cannot tell.", "Yes, there is.", 0.0),
    # not a yes / no reference: a sentence that only mentions no, or holds both, still needs an exact match
    ("no", "There is no effusion", 0.0),
    ("yes", "yes and no", 0.0),
    # Chinese (SLAKE's closed answers): 是 / 是的 / 对 / 有 are yes; 否 / 不是 / 不 / 没有 / 无 are no
    ("是的", "是", 1.0),
    ("是的，可以看到病变。", "是", 1.0),
    ("对", "是的", 1.0),
    ("不是", "否", 1.0),
    ("没有", "否", 1.0),
    ("否", "没有。", 1.0),
    ("是", "否", 0.0),
    ("不是", "是的", 0.0),
    ("是，不是", "是", 0.0),        # both: wrong
    ("肝脏有病变", "是", 0.0),       # neither as a clause of its own
    ("yes", "是", 1.0),             # an English yes answers a Chinese yes
    ("否", "no", 1.0),
    # not Chinese yes / no: exact match as before
    ("左肺", "左", 0.0),
    ("有些", "有些", 1.0),
])
def test_closed_yes_no_reference_reduced_to_polarity(prediction, reference, hit):
    assert closed(prediction, reference) == hit


def test_answer_type_from_yes_no_sentence_or_chinese_reference():
    assert "closed_accuracy" in score_med_vqa("yes", {}, "Yes, there is.")
    assert "closed_accuracy" in score_med_vqa("是的", {}, "是")
    assert "open_recall" in score_med_vqa("no", {}, "There is no effusion")


@pytest.mark.parametrize("mark", ["\u00ad", "\u200c", "\u200d", "\u2060", "\ufeff"])
def test_invisible_marks_inside_a_word_do_not_split_it(mark):
    """A soft hyphen or zero-width joiner inside a word (PMC captions copied from PDF / HTML carry them) split it in
    two ("hemor" "rhage"), so the right answer "hemorrhage" scored 0 and "nodule" written so said "no"."""
    reference = f"hemor{mark}rhage"
    assert tokens(reference) == ["hemorrhage"]
    assert score_med_vqa("hemorrhage", OPEN, reference)["open_recall"] == 1.0
    assert closed("hemorrhage", reference) == 1.0
    assert closed("no", "no") == 1.0 and closed(f"no{mark}dule", "no") == 0.0  # "nodule" says no "no"
    from domains.answers import exact_match

    assert exact_match("hemorrhage", reference) == 1.0
