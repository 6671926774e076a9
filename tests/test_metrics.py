"""Generic metrics: strict choice parsing, SQuAD EM/F1, InternVL boxes, task inference and the registry."""

from __future__ import annotations

import inspect

import pytest

from adapt import metrics
from adapt.data.samples import Record
from adapt.metrics import (
    box_iou,
    exact_match,
    grounding_hit,
    infer_task,
    mc_accuracy,
    normalize_answer,
    options_from_question,
    parse_boxes,
    parse_choice,
    register_task,
    score,
    token_f1,
)


def Rec(conversations: list[dict], source: str = "toy", line: int = 1, **fields) -> Record:
    """A text-only record as adapt.data would read it."""
    return Record(source, line, conversations, [], [], **fields)


def qa(question: str, reply: str, **kw) -> Rec:
    return Rec([{"from": "human", "value": question}, {"from": "gpt", "value": reply}], **kw)


OPTS = ["desert", "forest", "rainforest", "tropical forest"]


# ---------------------------------------------------------------------------------------- text


def test_normalize_answer_squad_style():
    assert normalize_answer("  The  Forest, (mostly)!  ") == "forest mostly"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("“Théâtre” — yes") == "théâtre yes"  # unicode punctuation too
    assert normalize_answer("") == ""
    # None read as the text "None" made a missing prediction an exact match of the answer "none"
    assert normalize_answer(None) == "" and exact_match(None, "none") == 0.0 and token_f1(None, "None") == 0.0


def test_answers_of_other_types_are_refused_but_numbers_are_their_text():
    """str() of any value made a list prediction an exact match: exact_match(["B"], "b") was 1.0. A number is its
    text (a JSONL reference 3 is common); a list, dict or bool is a ValueError naming it, and a sample so answered is
    skipped by `score`'s callers, not scored."""
    from adapt.metrics import normalize_vqa, vqa_tokens

    assert exact_match(3, "3") == 1.0 and exact_match("2.5", 2.5) == 1.0
    assert token_f1("-4 m", -4) == pytest.approx(2 / 3)
    assert vqa_tokens(3) == ["3"] and normalize_vqa(2.5) == "2.5" and normalize_answer(0) == "0"
    assert score("3", qa("How many?", "x", task="vqa"), reference=3)["exact_match"] == 1.0
    for value in (["B"], {"answer": "b"}, True, ("b",)):
        for fn in (normalize_answer, vqa_tokens):
            with pytest.raises(ValueError, match=r"must be a string or a number.*" + type(value).__name__):
                fn(value)
    with pytest.raises(ValueError, match=r"got list \['B'\]"):
        exact_match(["B"], "b")
    with pytest.raises(ValueError, match="got bool True"):
        token_f1("yes", True)
    with pytest.raises(ValueError, match="got list"):
        score(["B"], qa("Which?", "b", task="short"))
    with pytest.raises(ValueError, match="got dict"):
        score("b", qa("Which?", "b", task="vqa"), reference={"b": 1})


def test_exact_match_and_token_f1_known_values():
    assert exact_match("The forest.", "forest") == 1.0
    assert exact_match("forests", "forest") == 0.0
    assert token_f1("the big red car", "red car") == pytest.approx(0.8)  # p=2/3, r=1
    assert token_f1("a small dog barked", "the dog barked loudly") == pytest.approx(2 / 3)  # p=2/3, r=2/3
    assert token_f1("yes yes", "yes") == pytest.approx(2 / 3)  # counts, not sets: p=1/2, r=1
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "") == 1.0 and token_f1(".", "") == 1.0  # both empty after normalising
    assert token_f1("the", "") == 0.0  # articles alone are kept: "the" is not the empty answer
    assert token_f1("", "dog") == 0.0


@pytest.mark.parametrize("prediction, reference", [("10", "1.0"), ("35", "3.5"), ("3.5", "35")])
def test_a_decimal_point_between_digits_is_kept(prediction, reference):
    # SQuAD's normaliser deletes it, so 10 answered 1.0; for short and vqa alike it is no longer so
    assert normalize_answer("3.5 cm.") == "3.5 cm" and normalize_answer("e.g. 1.") == "eg 1"
    for task in ("short", "vqa"):
        assert score(prediction, qa("How much?", reference, task=task))["exact_match"] == 0.0, task
    assert score("1.0", qa("How much?", "1.0", task="short")) == {"exact_match": 1.0, "token_f1": 1.0}


def test_an_empty_answer_does_not_equal_a_reference_of_articles_alone():
    """The reference "A" (a letter where the options were inline) normalised to nothing, like an empty answer: a
    model that said nothing scored exact match and token F1 1.0 against it, under SQuAD's and the VQA rules."""
    for task in ("short", "vqa"):
        for silent in ("", "The", "."):
            assert score(silent, qa("Which? A. cat B. dog", "A", task=task)) == {"exact_match": 0.0, "token_f1": 0.0}
        assert score("a.", qa("Which? A. cat B. dog", "A", task=task)) == {"exact_match": 1.0, "token_f1": 1.0}
        assert score("The cat", qa("Which animal?", "cat", task=task)) == {"exact_match": 1.0, "token_f1": 1.0}
    assert normalize_answer("The A.") == "the a" and normalize_answer("The forest") == "forest"


@pytest.mark.parametrize("prediction, reference", [("2", "two"), ("Two.", "2"), ("The answer is 3", "three"),
                                                  ("twelve", "12")])
def test_vqa_reads_number_words_as_digits(prediction, reference):
    record = qa("How many?", reference, task="vqa")
    assert score(prediction, record) == {"exact_match": 1.0, "token_f1": 1.0}
    assert score(prediction, qa("How many?", reference, task="short"))["exact_match"] == 0.0  # SQuAD: words stay


def test_vqa_normalisation_is_the_medical_one():
    from domains.medical import metrics as medical

    assert medical.tokens is metrics.vqa_tokens and medical.normalize_text is metrics.normalize_vqa
    assert metrics.vqa_tokens("The Left-lower LOBE, 2.5 cm; two nodules") == ["left", "lower", "lobe", "2.5", "cm",
                                                                               "2", "nodules"]
    assert score("3 cm", qa("Size?", "three centimetres", task="vqa"))["token_f1"] == pytest.approx(0.5)


# -------------------------------------------------------------------------------- choices


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("B", "B"), ("b", "B"), ("B.", "B"), ("(B)", "B"), ("[B]", "B"),
        ("B) forest", "B"), ("B. forest", "B"), ("(B) forest", "B"), ("B: forest", "B"),
        ("The answer is B", "B"), ("The answer is B.", "B"), ("Answer: (C)", "C"), ("answer: b", "B"),
        ("the best option is d.", "D"), ("I think it's B", "B"), ("I'd pick (C).", "C"),
        ("Forest.", "B"), ("The answer is forest", "B"), ("tropical forest", "D"), ("A forest.", "B"),
        ("A", "A"), ("It is A.", "A"), ("'B'", "B"), ('"B".', "B"), ("“C”", "C"),
    ],
)
def test_parse_choice_accepts(prediction, expected):
    assert parse_choice(prediction, OPTS) == expected


@pytest.mark.parametrize(
    "prediction",
    [
        "", "   ", "blah", "E", "(F)",  # nothing, or a letter beyond the options
        "B or C", "The answer is B. Or maybe (C).",  # two letters
        "A or B", "A/B", "A, B", "A is wrong, B",  # two letters, A among them (A alone was read as an article)
        "B. desert",  # label and option text disagree
        "It is a rainforest in the tropics",  # containment never counts
        "A forest grows here",  # "A" as an article is not a label
    ],
)
def test_parse_choice_refuses(prediction):
    assert parse_choice(prediction, OPTS) is None


def test_substring_pitfall_is_closed():
    # "forest" is a substring of "rainforest" and "tropical forest": neither may be chosen by luck
    assert parse_choice("forest", OPTS) == "B"
    assert parse_choice("rainforest", OPTS) == "C"
    assert mc_accuracy("rainforest", "forest", OPTS) == 0.0
    assert mc_accuracy("tropical forest", "B", OPTS) == 0.0
    assert mc_accuracy("forest", "rainforest", OPTS) == 0.0
    # and without options the reference text must match exactly, not be contained
    assert mc_accuracy("rainforest", "forest", None) == 0.0
    assert mc_accuracy("Forest", "forest", None) == 1.0


def test_ambiguous_option_texts_give_none():
    assert parse_choice("forest", ["forest", "Forest.", "lake"]) is None


@pytest.mark.parametrize("prediction", ["C. Vitamin D", "(C) Vitamin D", "C) Vitamin D", "c. Vitamin D",
                                        "The answer is C. Vitamin D"])
def test_leading_label_with_its_own_option_text_ignores_capitals_inside_it(prediction):
    # the D of "Vitamin D" was read as a second letter and the right answer scored 0
    options = ["Hepatitis A", "Hepatitis C", "Vitamin D", "Hepatitis B"]
    assert parse_choice(prediction, options) == "C"
    assert mc_accuracy(prediction, "C", options) == 1.0


def test_leading_label_and_letters_beyond_its_option_text():
    options = ["Hepatitis A", "Hepatitis C", "Vitamin D", "Hepatitis B"]
    assert parse_choice("C or D", options) is None  # two letters, still
    assert parse_choice("C. Vitamin D or D", options) is None
    assert parse_choice("D. Vitamin D", options) is None  # label and option text disagree
    assert parse_choice("A. rainforest", OPTS) is None  # label A, text of option C (not "a rainforest")


@pytest.mark.parametrize("prediction", ["b. forest", "b) forest", "b: forest", "(b) forest", "b.", "b"])
def test_lower_case_leading_label(prediction):
    assert parse_choice(prediction, OPTS) == "B"
    assert mc_accuracy(prediction, "B", OPTS) == 1.0


@pytest.mark.parametrize("prediction, expected", [("a desert", "A"), ("a forest", "B"), ("e.g. forest", None),
                                                  ("b. desert", None), ("b forest", None)])
def test_lower_case_letter_is_a_label_only_with_label_punctuation(prediction, expected):
    # "a desert" is the article and the text of option A, not the label A; "e.g." is no label E
    assert parse_choice(prediction, [*OPTS, "lake"]) == expected


def test_a_one_letter_answer_that_is_an_option_text_is_that_option():
    # as a one-letter reference is read (reference_choice): blood group O is option D, not a letter beyond them
    groups = ["A", "B", "AB", "O"]
    assert parse_choice("O", groups) == "D" and parse_choice("B", groups) == "B"
    assert mc_accuracy("O", "O", groups) == 1.0


def test_parse_choice_compares_texts_by_key():
    options = ["AnnualCrop", "SeaLake"]
    assert parse_choice("sea lake", options) is None
    assert parse_choice("sea lake", options, key=lambda t: normalize_answer(t).replace(" ", "")) == "B"
    assert parse_choice("B or A", options, key=lambda t: normalize_answer(t).replace(" ", "")) is None


def test_option_text_wins_over_letters_inside_it():
    assert parse_choice("Type A", ["Type B", "Type A"]) == "B"


def test_mc_accuracy_letter_or_text_reference():
    assert mc_accuracy("B", "B", OPTS) == 1.0
    assert mc_accuracy("(B) forest", "forest", OPTS) == 1.0
    assert mc_accuracy("The answer is forest.", "(B)", OPTS) == 1.0
    assert mc_accuracy("C", "B", OPTS) == 0.0
    assert mc_accuracy("B or C", "B", OPTS) == 0.0


def test_a_reference_outside_the_records_options_is_an_error_naming_it():
    """A letter past the last option, or a class the option list lacks, was scored by exact match of the texts:
    a broken sample that any model choosing an option fails (and that a model writing "E" passes), silently."""
    for ref in ("E", "woods"):
        with pytest.raises(ValueError, match=rf"toy:7: reference '{ref}' is neither an option letter \(A-D\)"):
            score("A", qa("Which scene?", ref, options=OPTS, line=7))
    assert score("B", qa("Which scene?", "forest", options=OPTS)) == {"accuracy": 1.0}
    # options read from the question's lines are not the record's own: a free reference is still compared as text
    assert score("woods", qa("Which?\nA. desert\nB. forest", "woods")) == {"accuracy": 1.0}
    # the remote-sensing classification scorer (class names compared as labels) refuses it the same way
    from domains.remote_sensing.metrics import score_classification

    with pytest.raises(ValueError, match="reference 'Woods' is neither"):
        score_classification("A", qa("Scene?", "Woods", options=["AnnualCrop", "Forest"]), "Woods")
    assert score_classification("annual crop", qa("Scene?", "B", options=["Forest", "AnnualCrop"]), "B") == {
        "accuracy": 1.0}


def test_full_width_letters_are_labels():
    """InternVL answers Chinese prompts with full-width letters ("Ｂ", "（Ｃ）"): they were read as no choice at all."""
    assert [parse_choice(p, OPTS) for p in ("Ｂ", "（Ｃ）", "答案是Ｄ。", "The answer is Ｂ.")] == ["B", "C", "D", "B"]
    assert mc_accuracy("Ｂ", "Ｂ", OPTS) == 1.0 and mc_accuracy("B", "Ｂ", OPTS) == 1.0


def test_options_from_question():
    q = "<image>\nWhich scene?\nA. desert\nB) forest\n(C) lake\nAnswer with the option's letter."
    assert options_from_question(q) == ["desert", "forest", "lake"]
    # a lettered line after Z raised a raw IndexError
    every = "\n".join(f"{c}. option {c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert len(options_from_question(f"Which?\n{every}\nA. again")) == 26
    assert options_from_question("What is B. subtilis?") is None
    assert options_from_question("B. one\nC. two") is None  # must start at A


# ---------------------------------------------------------------------------------- boxes


def test_parse_boxes_internvl_text_and_several_boxes():
    text = "<ref>the red car</ref><box>[[12, 340, 560, 998]]</box>"
    assert parse_boxes(text) == [(12.0, 340.0, 560.0, 998.0)]
    several = "<ref>cars</ref><box>[[1, 2, 3, 4], [5,6,7,8]]</box> and <ref>dog</ref><box>[[9, 10, 11, 12]]</box>"
    assert parse_boxes(several) == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)]
    assert parse_boxes("[[10.5, 20, 30, 40]]") == [(10.5, 20, 30, 40)]  # no tag: whole text, as InternVL
    assert parse_boxes("<box>[[1, 2, 3, 4]") == [(1, 2, 3, 4)]  # cut off before </box>


@pytest.mark.parametrize("text", ["", "no box here", "<box>[[1, 2, 3]]</box>", "<box>[[a, b, c, d]]</box>",
                                  "<box></box>", "<box>[[1, 2, 3, 4, 5]]</box>"])
def test_parse_boxes_malformed(text):
    assert parse_boxes(text) == []


def test_box_iou_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((10, 10, 0, 0), (0, 0, 10, 10)) == 0.0  # inverted box has no area


def test_grounding_hit_strict_threshold():
    ref = "<ref>x</ref><box>[[0, 0, 100, 100]]</box>"
    # IoU exactly 0.5: (0,0,100,100) vs (0,0,100,50) -> 5000 / 10000
    assert box_iou((0, 0, 100, 100), (0, 0, 100, 50)) == 0.5
    assert grounding_hit("<box>[[0, 0, 100, 50]]</box>", ref) == 0.0  # not > 0.5
    assert grounding_hit("<box>[[0, 0, 100, 51]]</box>", ref) == 1.0
    assert grounding_hit("<box>[[0, 0, 100, 100]]</box>", ref) == 1.0
    assert grounding_hit("I cannot see it", ref) == 0.0
    # only the first predicted box counts
    assert grounding_hit("<box>[[500, 500, 600, 600], [0, 0, 100, 100]]</box>", ref) == 0.0
    # InternVL reads a box summing to < 4 as normalised to 0-1
    assert grounding_hit("[[0.0, 0.0, 0.1, 0.1]]", ref) == 1.0
    # but a negative value is no 0-1 coordinate: the box is not scaled up into a hit ([-10, -10, 100, 100] scaled)
    assert grounding_hit("[[-0.01, -0.01, 0.1, 0.1]]", ref) == 0.0
    with pytest.raises(ValueError, match="no"):
        grounding_hit("<box>[[0, 0, 1, 1]]</box>", "a cat")


@pytest.mark.parametrize("prediction", ["[[0.1, 0.1, 0.5, 0.5]]", "[[100, 100, 500, 500]]"])
def test_a_reference_box_normalised_to_0_1_is_refused(prediction):
    """A reference written on 0-1 ([[0.1, 0.1, 0.5, 0.5]]) scored every answer 0 without a word: the same box predicted
    is read as 0-1 and scaled by 1000, and a grid box cannot overlap one under a unit wide."""
    with pytest.raises(ValueError, match=r"has no value above 1, so it reads as normalised to 0-1"):
        grounding_hit(prediction, "<box>[[0.1, 0.1, 0.5, 0.5]]</box>")
    assert grounding_hit(prediction, "<box>[[100, 100, 500, 500]]</box>") == 1.0


@pytest.mark.parametrize("ref", ["[[500, 500, 100, 100]]", "[[100, 100, 100, 500]]", "[[100, 100, 5000, 5000]]",
                                 "[[-10, 0, 100, 100]]"])
def test_grounding_reference_off_the_grid_is_refused(ref):
    # an inverted, empty or off-grid reference box scored every answer 0 without a word
    with pytest.raises(ValueError, match="0-1000 grid"):
        grounding_hit("<box>[[100, 100, 500, 500]]</box>", f"<box>{ref}</box>")


# ---------------------------------------------------------------------------- dispatch


def test_infer_task():
    assert infer_task(qa("Where is it?", "x", task="driving_plan")) == "driving_plan"
    assert infer_task(qa("Find <ref>the car</ref>", "<ref>the car</ref><box>[[1, 2, 3, 4]]</box>")) == "grounding"
    assert infer_task(qa("Which?", "B", options=["a", "b"])) == "mc"
    assert infer_task(qa("Which?\nA. desert\nB. forest", "B")) == "mc"
    assert infer_task(qa("What colour?", "red")) == "short"
    assert infer_task(qa("What colour?", "ignored", answer="<box>[[1, 2, 3, 4]]</box>")) == "grounding"


def test_score_builtins():
    assert score("B", qa("Which?\nA. desert\nB. forest", "B"), "B") == {"accuracy": 1.0}
    assert score("forest", qa("Which?\nA. desert\nB. forest", "B"), "B") == {"accuracy": 1.0}
    assert score("forest", qa("Scene?", "forest", task="classification", options=OPTS), "forest") == {"accuracy": 1.0}
    s = score("red car", qa("What?", "the red car"), "the red car")
    assert s == {"exact_match": 1.0, "token_f1": 1.0}
    s = score("<box>[[0, 0, 10, 10]]</box>", qa("Find", "<box>[[0, 0, 10, 10]]</box>"), "<box>[[0, 0, 10, 10]]</box>")
    assert s == {"acc@0.5": 1.0}
    # the reference defaults to the record's
    assert score("red", qa("What colour?", "Red.")) == {"exact_match": 1.0, "token_f1": 1.0}


def test_register_custom_task_scorer():
    def closed_yes_no(prediction, record, reference):
        return {"closed_acc": float(normalize_answer(prediction).split()[:1] == normalize_answer(reference).split()[:1]),
                "length": 1.0}

    try:
        register_task("toy_closed", closed_yes_no, main_metric="closed_acc")
        rec = qa("Is there a lesion?", "yes", task="toy_closed")
        assert score("Yes, in the left lung.", rec, "yes") == {"closed_acc": 1.0, "length": 1.0}
        assert metrics.main_metric("toy_closed", {"length": 1.0, "closed_acc": 0.0}) == 0.0
        with pytest.raises(ValueError, match="overwrite"):
            register_task("toy_closed", lambda p, r, ref: {"x": 0.0})
        register_task("toy_closed", lambda p, r, ref: {"x": 0.5}, overwrite=True)
        assert score("anything", rec, "yes") == {"x": 0.5}
        assert metrics.main_metric("toy_closed", {"x": 0.5}) == 0.5  # first key when none is named
    finally:
        metrics.unregister_task("toy_closed")
    with pytest.raises(KeyError, match="toy_closed"):
        score("yes", qa("Is there a lesion?", "yes", task="toy_closed"), "yes")


def test_a_main_metric_its_scorer_does_not_return_is_refused_at_the_first_score():
    """A misspelt main_metric ("acuracy") showed "—" for the task in every table, without a word."""
    rec = qa("Is there a lesion?", "yes", task="toy_main")
    try:
        register_task("toy_main", lambda p, r, ref: {"accuracy": 1.0, "f1": 0.5}, main_metric="acuracy")
        for _ in range(2):  # not once only: every sample of a run is refused, and so skipped, said
            with pytest.raises(ValueError, match=r"toy:1: task 'toy_main' is registered with main_metric='acuracy', "
                                                 r"but its scorer returned 'accuracy', 'f1'"):
                score("yes", rec, "yes")
        register_task("toy_main", lambda p, r, ref: {"accuracy": 1.0, "f1": 0.5}, overwrite=True, main_metric="f1")
        assert score("yes", rec, "yes") == {"accuracy": 1.0, "f1": 0.5}
        # the main metric of a task with a corpus-level aggregate is the aggregate's (DriveLM's final_score)
        register_task("toy_main", lambda p, r, ref: {"accuracy": 1.0}, overwrite=True, main_metric="final",
                      aggregate=lambda preds, context: {"final": 1.0})
        assert score("yes", rec, "yes") == {"accuracy": 1.0}
        for bad in (["accuracy"], ""):  # a list was a raw "unhashable type" at the first score
            with pytest.raises(ValueError, match=r"main_metric of task 'toy_main' must be a metric name"):
                register_task("toy_main", lambda p, r, ref: {"accuracy": 1.0}, overwrite=True, main_metric=bad)
    finally:
        metrics.unregister_task("toy_main")


@pytest.mark.parametrize("result, said", [({"acc": None}, "acc = None"), ({"acc": "n/a"}, "acc = 'n/a'"),
                                          (0.5, "returned float")])
def test_a_scorer_giving_no_number_is_a_value_error_naming_the_record(result, said):
    # float(None) was a raw TypeError out of predict, ending the whole evaluation
    try:
        register_task("toy_broken", lambda p, r, ref: result)
        with pytest.raises(ValueError, match=f"toy:1: the 'toy_broken' scorer .*{said}"):
            score("yes", qa("Is there a lesion?", "yes", task="toy_broken"), "yes")
    finally:
        metrics.unregister_task("toy_broken")


def test_builtin_tasks_cannot_be_replaced_by_accident():
    with pytest.raises(ValueError):
        register_task("mc", lambda p, r, ref: {"accuracy": 1.0})
    assert metrics.main_metric_name("grounding") == "acc@0.5"
    assert metrics.main_metric_name("short") == "token_f1"


# --------------------------------------------------------------------------------------------- protocols
def test_builtin_metrics_name_their_protocols():
    for task, record, prediction in [("mc", qa("Which?\nA. x\nB. y", "A"), "A"), ("short", qa("What?", "red"), "red"),
                                     ("grounding", qa("Find", "<box>[[0, 0, 10, 10]]</box>"), "[[0, 0, 10, 10]]")]:
        protocols = metrics.protocols_of(task)
        assert set(score(prediction, record)) == set(protocols), task
        assert all(set(e) == {"protocol", "rule", "source"} and all(e.values()) for e in protocols.values())
    assert "SQuAD v2.0" in metrics.protocols_of("short")["token_f1"]["source"]
    assert "vqaEval.py" in metrics.protocols_of("vqa")["exact_match"]["source"]
    assert set(metrics.protocols_of("vqa")) == set(metrics.protocols_of("short"))
    assert "evaluate_grounding.py" in metrics.protocols_of("grounding")["acc@0.5"]["source"]
    # the rule each names: SQuAD normalisation, F1 1 for two empty answers (v2.0), IoU strictly above 0.5
    assert exact_match("The Forest!", "forest") == 1.0 and token_f1("", "") == 1.0
    assert grounding_hit("[[0, 0, 200, 100]]", "[[0, 0, 100, 100]]") == 0.0


def test_registered_tasks_bring_protocols():
    entry = {"protocol": "toy", "rule": "first word equal", "source": "a paper"}

    def scorer(prediction, record, reference):
        return {"acc": 1.0}

    scorer.protocols = {"acc": entry}
    try:
        register_task("toy_proto", scorer)
        assert metrics.protocols_of("toy_proto") == {"acc": entry}
        metrics.protocols_of("toy_proto")["acc"]["rule"] = "changed"  # a copy
        assert metrics.protocols_of("toy_proto")["acc"]["rule"] == "first word equal"
        register_task("toy_proto", lambda p, r, ref: {"acc": 0.0}, overwrite=True, protocols={"acc": entry})
        assert metrics.protocols_of("toy_proto") == {"acc": entry}
        register_task("toy_proto", lambda p, r, ref: {"acc": 0.0}, overwrite=True)
        assert metrics.protocols_of("toy_proto") == {}  # a new scorer has its own rules
        with pytest.raises(ValueError, match="non-empty strings"):
            register_task("toy_proto", scorer, overwrite=True, protocols={"acc": {"protocol": "x", "rule": "y"}})
        with pytest.raises(ValueError, match="non-empty strings"):
            register_task("toy_proto", scorer, overwrite=True,
                          protocols={"acc": {"protocol": "x", "rule": " ", "source": "z"}})
        with pytest.raises(ValueError, match="must map metric names"):
            register_task("toy_proto", scorer, overwrite=True, protocols=["acc"])
    finally:
        metrics.unregister_task("toy_proto")
    assert metrics.protocols_of("toy_proto") == {}
    # a user scorer replacing a built-in drops the built-in's protocols; unregistering brings them back
    builtin = metrics.protocols_of("short")
    register_task("short", lambda p, r, ref: {"x": 1.0}, overwrite=True)
    try:
        assert metrics.protocols_of("short") == {}
    finally:
        metrics.unregister_task("short")
    assert metrics.protocols_of("short") == builtin


@pytest.mark.parametrize("pred, ref", [("-5", "5"), ("−5 degrees", "5 degrees"), ("The answer is -3.5", "3.5")])
def test_a_minus_sign_starting_a_number_is_kept(pred, ref):
    # punctuation removal made "-5" equal "5": a wrong sign scored as exact
    assert exact_match(pred, ref) == 0.0 and exact_match(pred, pred.replace("−", "-")) == 1.0
    assert score(pred, qa("Temperature?", ref, task="vqa"))["exact_match"] == 0.0
    assert normalize_answer("COVID-19 5-10 x-ray") == "covid19 510 xray"  # a hyphen inside a word is still dropped


@pytest.mark.parametrize("prediction", ["B.\nExplanation: A is wrong", "B\nExplanation: A is wrong",
                                        "(B)\nBecause A is a desert.", "b)\nA is wrong", "B. forest\nNot A: sand.",
                                        "Answer: B\nExplanation: A is wrong", "**B**", "**Answer:** B",
                                        "**B. forest**\nA is sand", "The answer is **B**."])
def test_a_label_on_the_first_line_is_the_answer_and_the_lines_after_it_explain(prediction):
    """A model writing its letter and then an explanation naming another option scored None (two letters)."""
    assert parse_choice(prediction, OPTS) == "B"
    assert mc_accuracy(prediction, "B", OPTS) == 1.0


@pytest.mark.parametrize("prediction", ["A. desert\nB. forest\nC. rainforest",  # an echoed option list
                                        "B. desert\nExplanation: sand",  # label and option text still disagree
                                        "Explanation: A is wrong\nB", "It could be B.\nOr A."])  # no leading label
def test_lines_after_a_leading_label_still_refuse(prediction):
    assert parse_choice(prediction, OPTS) is None


@pytest.mark.parametrize("prediction, expected", [
    ("A is a lake and C is a road. So the answer is B.", "B"),
    ("Option A is sand and option C is wet. Therefore, the correct option is (B).", "B"),
    ("The image shows trees, not sand (A) or palms (C).\nFinal answer: B", "B"),
    ("A) desert: no sand. C) rainforest: too dry.\nFinal answer: (C)", "C"),
    ("Not A or D. The answer is B because the canopy is sparse.", "B"),
    ("A. desert is dry, so no. The answer is C", "C"),  # a leading label, then a concluding answer
    ("B. forest, not A. So the answer is B.", "B"),
    ("A. desert\nB. forest\nC. rainforest\nThe answer is B.", "B"),  # an echoed option list, then the answer
    ("Between A and C, I choose C.", "C"),
    ("A and D are wrong; the final answer is **B**", "B"),
    ("B or C? The answer is: b.", "B"),
    ("A is a lake and C is a road. Final Answer: $\\boxed{B}$", "B"),  # LaTeX, as maths-tuned models write
    ("A is a lake. The answer is $\\boxed{B}$ or C.", None),
    ("A is a lake and C is a road. So the answer is B. Or maybe (C).", None),  # a hedge after the answer
    ("A is wrong. The answer is B or C.", None),  # two letters in the final phrase
    # C under a negation is ruled out, as "rainforest" is in "The answer is B, not rainforest." (it gave None)
    ("A is wrong. The answer is B, not C.", "B"),
    ("The answer is B. A is wrong.", None),  # another letter after the answer phrase
    ("A is wrong, so the answer is B. Desert would be dry.", None),
    ("A is wrong, so the answer is B\nDesert would be dry", None),  # option A's text after it
    ("A is a lake and C is a road, B is a forest.", None),  # no answer phrase at all
    ("I choose B over C.", None),
])
def test_a_reply_concluding_with_an_answer_phrase_chooses_its_letter(prediction, expected):
    """A chain-of-thought reply naming other options before "So the answer is B." gave None: every letter counted."""
    assert parse_choice(prediction, OPTS) == expected
    assert mc_accuracy(prediction, expected or "A", OPTS) == float(expected is not None)


@pytest.mark.parametrize("prediction, expected", [
    ("A is a lake and C is a road. So the answer is B. The trees are dense and green.", "B"),
    ("Option A shows water.\nAnswer: (B)\nBecause the canopy covers the whole tile.", "B"),
    ("Not A or C. The answer is B. It is the only one with trees.", "B"),
    ("A is wrong. The answer is B. B has the sparse canopy.", "B"),  # the same letter again
    ("A is wrong. The answer is D. It is a tropical forest.", "D"),  # its own text; "forest" inside it is no B
    ("A is wrong. The answer is B. Or maybe C.", None),  # another letter after it
    ("A is wrong. The answer is B. Or maybe rainforest.", None),  # another option's text after it
    ("A is wrong. The answer is B.\nC could also fit.", None),
])
def test_an_answer_phrase_followed_by_an_explanation_still_chooses(prediction, expected):
    """"So the answer is B. The trees are dense." gave None: any sentence after the answer phrase cancelled it, though
    one that names no other option only explains the choice."""
    assert parse_choice(prediction, OPTS) == expected


@pytest.mark.parametrize("prediction, expected", [
    ("A is a lake. Answer: B\nBecause the rainforest is too wet here.", "B"),  # an explanation on a new line
    ("A is wrong. The answer is B. Because a desert has no trees.", "B"),  # a new sentence explaining it
    ("A is wrong. The answer is B.\nUnlike a desert, it has a canopy.", "B"),
    ("A is wrong. The answer is B or rainforest.", None),  # a hedge in the same clause
    ("A is wrong. The answer is B, maybe rainforest.", None),
    ("A is wrong. The answer is B. It could also be rainforest.", None),  # a hedging sentence after it
    ("A is wrong. The answer is B.\nRainforest fits too.", None),  # a sentence proposing another option
])
def test_an_explanation_naming_another_option_does_not_cancel_the_answer(prediction, expected):
    """"Answer: B\nBecause the river bends." gave None where "river" was an option: any option text after the answer
    counted as a hedge, though a new sentence or line that only mentions it explains the choice."""
    assert parse_choice(prediction, OPTS) == expected


@pytest.mark.parametrize("reply, expected", [
    ("The answer is B or rainforest.", None), ("B or desert", None), ("The answer is B. Or maybe rainforest.", None),
    ("B. forest or desert", None), ("The answer is B, maybe rainforest.", None), ("B.\nRainforest fits too.", None),
    ("The answer is B.\nBecause a desert has no trees.", "B"), ("The answer is B. It has trees.", "B"),
    ("The answer is D. It is a tropical forest.", "D"), ("B. forest\nUnlike a desert, it has a canopy.", "B"),
    ("The answer is B. It has trees, unlike a desert.", "B"), ("B. It has trees, unlike a desert.", "B"),
    ("(B). It has trees, unlike a desert.", "B"),
    ("B. forest\nRainforest fits too.", None), ("b) forest\nrainforest would be wetter", None),
    ("The answer is B. forest. Or maybe desert.", None),
])
def test_one_letter_and_a_hedge_on_another_options_text_agree_with_several_letters(reply, expected):
    """With one letter named, a hedge on another option's text ("The answer is B or rainforest.") was ignored and
    gave B, while the same reply after "A is wrong." gave None: both are read by the same hedge rule now."""
    assert parse_choice(reply, OPTS) == expected
    if reply.startswith("The answer is"):  # without an answer phrase, several letters give None anyway
        assert parse_choice("A is wrong. " + reply, OPTS) == expected


@pytest.mark.parametrize("reply, expected", [
    ("B. It is not desert or rainforest.", "B"), ("B. It is neither desert nor rainforest.", "B"),
    ("The answer is B, not rainforest.", "B"), ("B. forest. Desert has no trees.", "B"),
    ("B. forest.\nDesert doesn't have a canopy.", "B"), ("A is wrong. The answer is B. Rainforest is not it.", "B"),
    # a hedge outside the negation's stretch, or a sentence proposing another option, still refuses
    ("B. It is not desert, or rainforest.", None), ("B. Not sure, maybe desert.", None),
    ("B. It is not desert but it could be rainforest.", None), ("B. Not desert; maybe rainforest.", None),
    ("The answer is B or rainforest, not desert.", None), ("B. forest. Desert is dry.", None),
    ("B. forest. Desert would also fit.", None),
])
def test_other_options_ruled_out_under_a_negation_do_not_cancel_the_letter(reply, expected):
    """"B. It is not desert or rainforest." and "B. forest. Desert has no trees." gave None: the "or" read as a hedge
    and a sentence starting with another option's text as proposing it, though both rule the other options out."""
    assert parse_choice(reply, OPTS) == expected


@pytest.mark.parametrize("reply, expected", [
    ("B. Rainforest is no less likely.", None), ("The answer is B. Rainforest is no less likely.", None),
    ("B. forest. Desert is not unlikely.", None), ("The answer is B. Rainforest is not impossible.", None),
    ("B. Rainforest cannot be ruled out.", None), ("B. I wouldn't rule out desert.", None),
    ("B, not unlikely rainforest", None), ("B. It is not unlikely to be rainforest.", None),
    ("The answer is B; I cannot exclude C.", None), ("B. Desert isn't wrong either.", None),
    # single negations still rule the other option out
    ("B. Desert is not likely.", "B"), ("B. It is not rainforest, which is less likely.", "B"),
    ("The answer is B, not C.", "B"), ("B is not wrong.", "B"),
])
def test_a_double_negation_keeps_another_option_open(reply, expected):
    """"B. Rainforest is no less likely." gave B: "no" read as ruling rainforest out, though "no less likely",
    "not unlikely" and "cannot be ruled out" keep it as open as the letter's: a hedge, so no one choice."""
    assert parse_choice(reply, OPTS) == expected


@pytest.mark.parametrize("reply, expected", [
    ("Not B.", None), ("It is not C.", None), ("The answer is not B.", None), ("I would not choose B.", None),
    ("No, B.", "B"), ("Not sure. B", "B"), ("I don't know, B.", "B"), ("B is not wrong.", "B"), ("nothing but B", "B"),
])
def test_one_letter_under_a_negation_chooses_nothing(reply, expected):
    """"Not B." and "It is not C." gave B and C: the one letter named counted though the reply rules it out."""
    assert parse_choice(reply, OPTS) == expected


@pytest.mark.parametrize("reply, expected", [
    ("B, not C", "B"), ("The answer is B, not C.", "B"), ("It is not A or C, the answer is B.", "B"),
    ("Neither A nor C; B.", "B"), ("The answer is B, not C or rainforest.", "B"), ("Not A but D.", "D"),
    ("The answer is B, not C. Or maybe D.", None),  # a hedge outside the negation still refuses
    ("Not A or B.", None), ("B or C, not D.", None),
    # a negation's stretch running into an answer phrase does not rule out the letter it names
    ("A is wrong; there is no doubt the answer is B.", "B"), ("I would not choose B.", None),
])
def test_letters_under_a_negation_are_ruled_out_like_option_texts(reply, expected):
    """"The answer is B, not C." gave None (two letters, the last no answer phrase's) while "The answer is B, not
    rainforest." gave B: a letter under a negation counted as a second choice, though it rules the option out."""
    assert parse_choice(reply, OPTS) == expected
    assert parse_choice(reply.replace("not C", "not rainforest"), OPTS) == expected


def test_scores_keep_their_own_scale_and_the_docs_say_so():
    """The registry's docs said every score is in [0, 1], but DriveLM's chatgpt / match are 0-100 and CIDEr x10:
    a plugin author read the bound as checked (it is not) and a reader of reports misread those columns."""
    def rated(prediction, record, reference):
        return {"rating": 85.0, "cider": 3.2}

    metrics.register_task("toy_scale", rated)
    try:
        assert score("x", qa("Q?", "y", task="toy_scale")) == {"rating": 85.0, "cider": 3.2}  # passed on unchanged
    finally:
        metrics.unregister_task("toy_scale")
    source = " ".join(inspect.getsource(metrics).split())
    assert "scores in [0, 1]" not in source and "with values in [0, 1]" not in source
    for doc in (metrics.__doc__, metrics.register_task.__doc__):
        assert "own scale" in " ".join(doc.split())


def test_the_sample_field_readers_take_a_plain_mapping():
    """`reference_of` read ``record.conversations`` as an attribute: a mapping (as domain scorers may be handed, and
    as `question_of` / `record_options` take) failed with a raw AttributeError."""
    turns = [{"from": "human", "value": "Which?\nA. desert\nB. forest"}, {"from": "gpt", "value": "B"}]
    assert metrics.reference_of({"conversations": turns}) == "B"
    assert metrics.reference_of({"answer": "forest", "conversations": turns}) == "forest"
    assert metrics.question_of({"conversations": turns}).startswith("Which?")
    with pytest.raises(ValueError, match=r"^toy:4: no answer and no gpt turn"):
        metrics.reference_of({"source": "toy", "line": 4, "conversations": turns[:1]})
    with pytest.raises(ValueError, match=r"^toy:5: no answer and no gpt turn"):
        metrics.reference_of({"source": "toy", "line": 5})
    # a number answer reads as its text, as the record reader keeps it (a raw TypeError from score() before)
    assert metrics.reference_of({"answer": 3}) == "3"
    assert score("3", {"answer": 3}) == {"exact_match": 1.0, "token_f1": 1.0}
    assert score("B", {"answer": 1, "options": ["0", "1"]}) == {"accuracy": 1.0}
    with pytest.raises(ValueError, match=r"^toy:6: answer must be a string, got list"):
        metrics.reference_of({"source": "toy", "line": 6, "answer": ["B"]})
    # options that are no list: a string's letters were read as the options ("desert" as six)
    with pytest.raises(ValueError, match=r"^toy:7: options must be a list of option texts, got str 'desert, forest'"):
        score("B", {"source": "toy", "line": 7, "answer": "forest", "options": "desert, forest"})
    # and the task a mapping names is the one it is scored by (it read as "mc" from the question's options)
    assert infer_task({"task": "vqa", "conversations": turns}) == "vqa"
    assert score("b", {"task": "short", "conversations": turns}) == {"exact_match": 1.0, "token_f1": 1.0}


def test_answer_boxes_are_read_and_compared_by_the_shared_box_helpers():
    """domains.answers kept its own copy of the box regex and of the IoU that domains.boxes holds."""
    import random

    from domains import answers, boxes

    source = inspect.getsource(answers)
    assert "ONE_BOX.finditer" in source and "re.compile(r\"\\[\" + _NUM" not in source
    assert "_PixelBox(ax1, ay1, ax2, ay2).iou(" in source
    rng = random.Random(0)
    for _ in range(200):
        a, b = ([rng.uniform(-5, 20) for _ in range(4)] for _ in range(2))
        assert box_iou(a, b) == boxes.Box(*a).iou(boxes.Box(*b))
    assert parse_boxes("<box>[[1, 2.5, 3, -4], [1, 2]]</box>") == [(1.0, 2.5, 3.0, -4.0)]


@pytest.mark.parametrize("value", [2, 0, 1.5, ["B"], [], {"answer": "B"}, b"B"])
def test_an_answer_that_is_no_string_is_refused_naming_it(value):
    """A prediction or reference that is no string (an int or a list from a malformed JSONL) was a raw TypeError from
    unicodedata, and 0 or [] passed silently as no answer; it is now a ValueError naming the value."""
    for call, what in ((lambda: parse_choice(value, OPTS), "prediction"),
                       (lambda: metrics.reference_choice(value, OPTS), "reference"),
                       (lambda: mc_accuracy("B", value, OPTS), "reference"),
                       (lambda: metrics.parse_boxes(value), "box text")):
        with pytest.raises(ValueError, match=rf"^{what} must be a string .*got {type(value).__name__} "):
            call()


def test_a_none_answer_is_no_answer():
    """None reads as the empty answer, as `normalize_answer(None)` does."""
    assert parse_choice(None, OPTS) is None
    assert metrics.reference_choice(None, OPTS) is None
    assert metrics.parse_boxes(None) == []
    assert metrics.grounding_hit(None, "<box>[[0, 0, 10, 10]]</box>") == 0.0


@pytest.mark.parametrize("threshold", [50, 1.5, 0, -0.5, float("nan"), "0.5", None, True])
def test_grounding_threshold_outside_zero_one_is_refused(threshold):
    """grounding_hit(..., threshold=50) (a percentage) scored every prediction 0 silently: no IoU exceeds 50."""
    with pytest.raises(ValueError, match=r"^grounding IoU threshold must be a number in \(0, 1\], got "):
        metrics.grounding_hit("<box>[[0, 0, 10, 10]]</box>", "<box>[[0, 0, 10, 10]]</box>", threshold)


def test_grounding_threshold_bounds_are_usable():
    box = "<box>[[0, 0, 10, 10]]</box>"
    assert metrics.grounding_hit(box, box, 0.9) == 1.0
    assert metrics.grounding_hit(box, box, 1) == 0.0  # IoU 1 is not > 1
    assert metrics.grounding_hit("<box>[[0, 0, 10, 2]]</box>", box, 0.1) == 1.0


@pytest.mark.parametrize("task, answer", [("short", ""), ("short", " . "), ("vqa", "?"), ("vqa", ""),
                                          ("mc", ""), ("mc", "...")])
def test_a_reference_without_words_is_refused_naming_the_record(task, answer):
    """A record whose answer was "" or "." scored every prediction 0 (and an empty, failed generation 1) as if the
    model had answered wrong: a sample no answer could be scored against, averaged in without a word."""
    record = qa("Which colour?", "red", task=task, answer=answer, line=7)
    with pytest.raises(ValueError, match=r"^toy:7: reference .* has no words to compare an answer with"):
        score("red", record)
    with pytest.raises(ValueError, match=r"^toy:7: reference "):
        score("", record)


def test_references_with_words_still_score():
    assert score("red", qa("Which colour?", "red", task="short", answer="Red."))["exact_match"] == 1.0
    assert score("A", qa("Which one?", "a", task="vqa", answer="A"))["exact_match"] == 1.0  # an article alone
    assert score("B", qa("Which?\nA. desert\nB. forest", "B", task="mc"))["accuracy"] == 1.0
    assert score("x", qa("Which?", "y", task="mc", answer="0"))["accuracy"] == 0.0


def test_options_past_z_have_no_letter_and_raise_no_index_error():
    """With more than 26 options (AID's 30 or NWPU-RESISC45's 45 scene classes), an answer or reference naming an
    option past Z was a raw IndexError that stopped the whole evaluation; it now chooses none, and a record whose
    reference is such an option is refused, saying why."""
    classes = [f"class {k}" for k in range(30)]
    assert parse_choice("class 28", classes) is None
    assert metrics.reference_choice("class 28", classes) is None
    assert parse_choice("class 2", classes) == "C" and parse_choice("Z", classes) == "Z"
    assert mc_accuracy("class 28", "class 3", classes) == 0.0
    assert score("class 3", qa("Which scene?", "class 3", options=classes))["accuracy"] == 1.0
    with pytest.raises(ValueError, match=r"^toy:1: reference 'class 28' is neither .* past the 26th \(Z\) have no"):
        score("class 28", qa("Which scene?", "class 28", options=classes))
