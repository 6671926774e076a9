"""The pure-Python COCO caption metrics used by the DriveLM language score.

Golden values come from ``tests/data/coco_caption_golden.json``, which ``python -m tests.coco_caption_golden``
writes from the official code only (PyPI ``pycocoevalcap`` 1.2: its Java ``PTBTokenizer`` with the shipped
``stanford-corenlp-3.4.1.jar``, and its ``Bleu(4)``, ``Rouge()``, ``Cider()``); ``--check`` reproduces it. The
inputs live in that module, and the table must still be the one made from them. When pycocoevalcap is
installed, the scorers are also compared with it live on random corpora (no Java needed for that).

The protocol tests pin the default (``official``) tokenizer to the Java output on the constructs where the
earlier (``pocket``) rules differ — "stopped.The", "gonna", "'n'", "D. Turn left." and more — and on 600
generated lines, and measure what the pocket rules change in the scores.
"""

from __future__ import annotations

import json

import pytest

from domains.driving.language import (
    COCO_KEYS,
    bleu,
    cider,
    coco_scores,
    ptb_tokenize,
    ptb_tokenize_batch,
    rouge_l,
)
from tests import coco_caption_golden as golden
from tests.deps import require

GOLDEN = json.loads(golden.TABLE.read_text(encoding="utf-8"))
REL = 1e-12  # the official code's own float rounding (numpy's mean and exp); any change to the maths is far larger


def test_golden_table_was_made_from_these_inputs():
    assert GOLDEN["inputs"] == json.loads(json.dumps(golden.inputs()))
    assert GOLDEN["versions"]["pycocoevalcap"] == "1.2"
    assert tuple(GOLDEN["pipeline_output"]) == COCO_KEYS == golden.COCO_KEYS


# --------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_matches_the_java_ptbtokenizer_on_driving_text():
    # lines tokenized together (one input, one line each), as the COCO wrapper does
    ours = [" ".join(tokens) for tokens in ptb_tokenize_batch(golden.TOKENIZER_LINES)]
    assert ours == GOLDEN["tokenizer_output"]


def test_tokenizer_matches_the_java_ptbtokenizer_on_single_texts():
    ours = [" ".join(ptb_tokenize(text)) for text in golden.TOKENIZER_SINGLE_TEXTS]
    assert ours == GOLDEN["tokenizer_single_output"]


def test_tokenizer_single_text_and_details():
    # the same texts (as token strings) are in the golden table, from the Java tokenizer
    assert ptb_tokenize("The IDs are <c1,CAM_FRONT,[412.5,300.25]>.") == [
        "the", "ids", "are", "<", "c1", "cam_front", "-lsb-", "412.5,300.25", "-rsb-", ">"]
    # a single letter keeps its period unless a sentence-starting word follows; "etc." ending a sentence adds one
    assert ptb_tokenize("option A. going") == ["option", "a.", "going"]
    assert ptb_tokenize("option A. The car") == ["option", "a", "the", "car"]
    assert ptb_tokenize("cars, trucks, etc. Then") == ["cars", "trucks", "etc.", "then"]
    assert ptb_tokenize("Mr. Smith's car") == ["mr.", "smith", "'s", "car"]
    assert ptb_tokenize("  ") == [] and ptb_tokenize("") == []
    assert ptb_tokenize("two\nlines") == ["two", "lines"]
    assert len(ptb_tokenize_batch(["a", "", "b\nc"])) == 3


# --------------------------------------------------------------------------------------------- scorers
def _assert_scores_match(hyps: list[str], refs: list[list[str]], expected: dict, what: str) -> None:
    # tokens split as pycocoevalcap splits them: BLEU and CIDEr on any whitespace, ROUGE-L on single spaces
    h = [s.split() for s in hyps]
    r = [[s.split() for s in rs] for rs in refs]
    assert bleu(h, r) == pytest.approx(expected["Bleu"], rel=REL), what
    mean, per = rouge_l([s.split(" ") for s in hyps], [[s.split(" ") for s in rs] for rs in refs])
    assert mean == pytest.approx(expected["ROUGE_L"][0], rel=REL), what
    assert per == pytest.approx(expected["ROUGE_L"][1], rel=REL), what
    mean, per = cider(h, r)
    assert mean == pytest.approx(expected["CIDEr"][0], rel=REL), what
    assert per == pytest.approx(expected["CIDEr"][1], rel=REL), what


@pytest.mark.parametrize("k", range(len(golden.SCORER_CASES)), ids=[c["name"] for c in golden.SCORER_CASES])
def test_bleu_rouge_cider_match_pycocoevalcap(k: int) -> None:
    case = GOLDEN["inputs"]["scorer_cases"][k]
    _assert_scores_match(case["hypotheses"], case["references"], GOLDEN["scorers_output"][k], case["name"])


def test_scorers_agree_with_pycocoevalcap_on_random_corpora():
    require("pycocoevalcap", "the official COCO caption scorers, compared live")
    for k, case in enumerate(golden.random_corpora(150, seed=7)):
        expected = golden.official_scores(case["hypotheses"], case["references"])
        _assert_scores_match(case["hypotheses"], case["references"], expected, f"random corpus {k}: {case}")


def test_scorer_edge_cases():
    # pycocoevalcap: an empty hypothesis against an empty reference is one empty token on each side
    assert rouge_l([[]], [[[]]]) == (1.0, [1.0])
    # CIDEr's IDF is log(corpus size): a one-sample corpus scores 0 even for a perfect answer
    assert cider([["a", "b"]], [[["a", "b"]]])[0] == 0.0
    perfect = bleu([["a", "b", "c", "d"]], [[["a", "b", "c", "d"]]])
    assert perfect == pytest.approx([1.0] * 4)
    with pytest.raises(ValueError, match="hypotheses"):
        bleu([["a"]], [])
    with pytest.raises(ValueError, match="no reference"):
        cider([["a"]], [[]])
    # a prediction given an empty reference list: the same error, not the tokenizer's RuntimeError
    assert ptb_tokenize_batch([]) == []
    with pytest.raises(ValueError, match="sample 0 has no reference"):
        coco_scores(["a car"], [[]])


# --------------------------------------------------------------------------------------------- end to end
PREDS, ANSWERS = golden.PIPELINE_PREDICTIONS, golden.PIPELINE_ANSWERS


def test_coco_scores_match_the_official_pipeline():
    scores = coco_scores(PREDS, ANSWERS)
    assert list(scores) == list(COCO_KEYS)
    assert scores == pytest.approx(GOLDEN["pipeline_output"], rel=REL)
    # several references per sample are accepted
    multi = coco_scores(PREDS[:2], [[ANSWERS[0]], [ANSWERS[1], PREDS[1]]])
    assert multi["Bleu_1"] > coco_scores(PREDS[:2], ANSWERS[:2])["Bleu_1"]
    with pytest.raises(ValueError, match="no predictions"):
        coco_scores([], [])
    with pytest.raises(ValueError, match="references"):
        coco_scores(["a"], ["a", "b"])
    # a missing or blank reference raised a raw TypeError (None) or scored as a near-zero match (""): now named
    for refs in ([None], ["  "], [["a car", None]], [5]):
        with pytest.raises(ValueError, match="sample 1: reference"):
            coco_scores(["a car", "a bus"], [["a car"], *refs])


# --------------------------------------------------------------------------------------------- protocols
def test_official_tokenizer_matches_java_on_the_protocol_cases():
    # glued sentences, gonna, 'n', letter options, apostrophe words, curly quotes, abbreviations, symbols
    ours = [" ".join(tokens) for tokens in ptb_tokenize_batch(golden.PROTOCOL_CASES, "official")]
    assert ours == GOLDEN["protocol_cases_output"]


def test_official_tokenizer_matches_java_on_a_generated_corpus():
    # 300 driving answers (sentences often glued without a space) and 300 soups of tricky fragments
    ours = [" ".join(tokens) for tokens in ptb_tokenize_batch(golden.TOKENIZER_CORPUS, "official")]
    wrong = [(text, java, mine) for text, java, mine in zip(golden.TOKENIZER_CORPUS, GOLDEN["tokenizer_corpus_output"],
                                                             ours) if java != mine]
    assert not wrong, f"{len(wrong)} lines differ from the Java tokenizer, e.g. {wrong[:3]}"


def test_official_is_the_default_and_follows_the_java_rules_on_the_named_cases():
    # each expectation is the Java tokenizer's output (the same texts are in PROTOCOL_CASES)
    assert ptb_tokenize("The car stopped.The light is red.") == ["the", "car", "stopped.the", "light", "is", "red"]
    assert ptb_tokenize("I'm gonna turn left.") == ["i", "'m", "gon", "na", "turn", "left"]
    assert ptb_tokenize("rock 'n' roll") == ["rock", "'n'", "roll"]
    assert ptb_tokenize("D. Turn left.") == ["d.", "turn", "left"]
    assert ptb_tokenize("y'all o'clock 'tis") == ["y'", "all", "o'clock", "'t", "is"]
    assert ptb_tokenize("Inc.A and Inc.Ab") == ["inc.", "a", "and", "inc.ab"]
    text = "The car stopped.The light, gonna 'n' o'clock"
    assert ptb_tokenize(text) == ptb_tokenize(text, "official") != ptb_tokenize(text, "pocket")


@pytest.mark.parametrize("brk", ["\u2028", "\u2029", "\x0b", "\x0c", "\x85"])
@pytest.mark.parametrize("protocol", ["official", "pocket"])
def test_the_java_line_breaks_are_read_as_the_wrapper_reads_a_newline(brk, protocol):
    # Java reads them as line breaks (its NEWLINE); read as a bare space character they kept "b." and dropped the
    # period of "no." where "\n" gives "b" and "no." (the scores differ); each stays within its own text
    text = "It is B.{0}The car. See no.{0}5 now{0}ok"
    assert ptb_tokenize(text.format(brk), protocol) == ptb_tokenize(text.format("\n"), protocol)
    assert ptb_tokenize("option B.\u2028The car") == ["option", "b", "the", "car"]
    assert ptb_tokenize_batch([f"a{brk}b", "c"], protocol) == [["a", "b"], ["c"]]


@pytest.mark.parametrize("space", ["\u2000", "\u2002", "\u2009", "\u200a", "\u3000"])
@pytest.mark.parametrize("protocol", ["official", "pocket"])
def test_unicode_spaces_are_spaces_in_the_look_aheads_too(space, protocol):
    # the Java lexer's SPACE is [ \t\u00A0\u2000-\u200A\u3000]; the look-aheads once knew only " \t\u00a0",
    # so a thin space after "B." kept "b." and one after "No." dropped its period, where " " gives "b" and "no."
    text = "It is B.{0}The car. See no.{0}5 now{0}ok. Etc.{0}The end"
    assert ptb_tokenize(text.format(space), protocol) == ptb_tokenize(text.format(" "), protocol)
    assert ptb_tokenize(f"option B.{space}The car") == ["option", "b", "the", "car"]


def test_official_tokenizer_drops_characters_outside_the_bmp_as_java_does():
    # the Java tokenizer's output (pycocoevalcap 1.2): a surrogate ends a token and is deleted, "Untokenizable"
    assert ptb_tokenize("Ünïcödé ✓ naïve ½ emoji 🚗 car") == ["ünïcödé", "✓", "naïve", "1/2", "emoji", "car"]
    assert ptb_tokenize("car🚗car 1🚗2 a 𝐀 b x 𠀀y go 👍🏽 now.") == ["car", "car", "1", "2", "a", "b", "x", "y", "go",
                                                                 "now"]
    assert ptb_tokenize("'🚗s a🚗b.c :)🚗") == ["s", "a", "b.c", ":-rrb-"]
    assert ptb_tokenize("see http://x.com/🚗a now") == ["see", "http://x.com/🚗a", "now"]  # a URL's class takes it
    assert ptb_tokenize("🚗") == []
    assert ptb_tokenize("emoji 🚗 car", "pocket") == ["emoji", "🚗", "car"]  # the earlier reading keeps it


def test_pocket_tokenizer_keeps_the_earlier_reading():
    assert ptb_tokenize("The car stopped.The light is red.", "pocket") == ["the", "car", "stopped", "the", "light",
                                                                             "is", "red"]
    assert ptb_tokenize("I'm gonna turn left.", "pocket") == ["i", "'m", "gonna", "turn", "left"]
    assert ptb_tokenize("rock 'n' roll", "pocket") == ["rock", "n", "roll"]
    # it agrees with Java on plain driving text, not on the protocol cases
    pocket = [" ".join(tokens) for tokens in ptb_tokenize_batch(golden.TOKENIZER_LINES, "pocket")]
    assert pocket == GOLDEN["tokenizer_output"]
    pocket = [" ".join(tokens) for tokens in ptb_tokenize_batch(golden.PROTOCOL_CASES, "pocket")]
    assert sum(a != b for a, b in zip(pocket, GOLDEN["protocol_cases_output"])) >= 10
    with pytest.raises(ValueError, match="official, pocket"):
        ptb_tokenize("a", "java")


def test_official_protocol_reproduces_the_official_pipeline_and_pocket_does_not():
    official = coco_scores(golden.PROTOCOL_PREDICTIONS, golden.PROTOCOL_ANSWERS)
    assert official == pytest.approx(GOLDEN["protocol_pipeline_output"], rel=REL)
    assert coco_scores(golden.PROTOCOL_PREDICTIONS, golden.PROTOCOL_ANSWERS, "official") == official
    pocket = coco_scores(golden.PROTOCOL_PREDICTIONS, golden.PROTOCOL_ANSWERS, "pocket")
    # measured: the pocket tokenizer splits "vehicle.The" and so finds more matching n-grams
    assert pocket["CIDEr"] - official["CIDEr"] == pytest.approx(1.2387, abs=1e-4)
    assert all(pocket[k] > official[k] for k in COCO_KEYS)
    with pytest.raises(ValueError, match="protocol"):
        coco_scores(["a"], ["a"], protocol="java")
