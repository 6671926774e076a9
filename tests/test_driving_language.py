"""The pure-Python COCO caption metrics used by the DriveLM language score.

Golden values were produced in a throwaway virtual environment with ``pip install pycocoevalcap`` (1.2), whose
wheel ships the official ``stanford-corenlp-3.4.1.jar``: tokenizations come from ``java ...PTBTokenizer
-preserveLines -lowerCase`` with the COCO wrapper's punctuation filter, and scores from pycocoevalcap's
``Bleu(4)``, ``Rouge()`` and ``Cider()`` ``compute_score``. None of that is needed to run these tests.
"""

from __future__ import annotations

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

# --------------------------------------------------------------------------------------------- tokenizer
# lines tokenized together (one input, one line each), as the COCO wrapper does; expected = Java output
GOLDEN_LINES = [
    ("There is a brown SUV to the back of the ego vehicle. The IDs of these objects are <c1,CAM_BACK,1088.3,497.5>, "
     "<c2,CAM_BACK,864.2,468.3>, and <c3,CAM_FRONT,1043.2,82.2>."),
    "The information of these traffic elements is [(traffic light, green, 674.86, 0.14, 723.33, 109.18)].",
    "No, the ego vehicle won't collide with it; it's too far away (about 20-30 meters).",
    '"Turn left" -- don\'t brake, cannot stop... Really?! e.g. the U.S. The end.',
    "The answer is B. Then go at 5.5m/s & 50% speed.",
    "The answer is B.",
    "The ego-vehicle's left-turn signal is on; CAM_FRONT_LEFT sees it.",
]
GOLDEN_TOKENS = [
    ["there", "is", "a", "brown", "suv", "to", "the", "back", "of", "the", "ego", "vehicle", "the", "ids", "of",
     "these", "objects", "are", "<", "c1", "cam_back", ",1088.3,497.5", ">", "<", "c2", "cam_back", ",864.2,468.3",
     ">", "and", "<", "c3", "cam_front", ",1043.2,82.2", ">"],
    ["the", "information", "of", "these", "traffic", "elements", "is", "-lsb-", "-lrb-", "traffic", "light", "green",
     "674.86", "0.14", "723.33", "109.18", "-rrb-", "-rsb-"],
    ["no", "the", "ego", "vehicle", "wo", "n't", "collide", "with", "it", "it", "'s", "too", "far", "away", "-lrb-",
     "about", "20-30", "meters", "-rrb-"],
    ["turn", "left", "do", "n't", "brake", "can", "not", "stop", "really", "?!", "e.g.", "the", "u.s.", "the", "end"],
    ["the", "answer", "is", "b", "then", "go", "at", "5.5", "m/s", "&", "50", "%", "speed"],
    ["the", "answer", "is", "b"],  # "B." before a line starting with "The": letter, then a (dropped) period
    ["the", "ego-vehicle", "'s", "left-turn", "signal", "is", "on", "cam_front_left", "sees", "it"],
]


def test_tokenizer_matches_the_java_ptbtokenizer_on_driving_text():
    assert ptb_tokenize_batch(GOLDEN_LINES) == GOLDEN_TOKENS


def test_tokenizer_single_text_and_details():
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
# pycocoevalcap's scorers on these already-tokenized texts (multiple references, an empty hypothesis)
HYPS = ["the car is turning left", "", "a red light ahead of the ego vehicle", "go go go"]
REFS = [["the car turns left", "a car is turning to the left"], ["stop now"],
        ["there is a red light to the front of the ego vehicle", "red light ahead"], ["go"]]
GOLDEN_BLEU = [0.7254004783171754, 0.6452431306252374, 0.5567525174059852, 0.3781068785847745]
GOLDEN_ROUGE = (0.5659889758410876, [0.7697160883280757, 0.0, 0.9446902654867256, 0.5495495495495495])
GOLDEN_CIDER = (1.8044263529596294, [3.1057207384131864, 0.0, 3.3236851160030274, 0.7882995574223046])


def test_bleu_rouge_cider_match_pycocoevalcap():
    h = [s.split() for s in HYPS]
    r = [[s.split() for s in refs] for refs in REFS]
    assert bleu(h, r) == pytest.approx(GOLDEN_BLEU, rel=1e-12)
    mean, per = rouge_l([s.split(" ") for s in HYPS], [[s.split(" ") for s in refs] for refs in REFS])
    assert mean == pytest.approx(GOLDEN_ROUGE[0], rel=1e-12) and per == pytest.approx(GOLDEN_ROUGE[1], rel=1e-12)
    mean, per = cider(h, r)
    assert mean == pytest.approx(GOLDEN_CIDER[0], rel=1e-12) and per == pytest.approx(GOLDEN_CIDER[1], rel=1e-12)


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


# --------------------------------------------------------------------------------------------- end to end
PREDS = [
    "There is a white sedan to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,812.5,487.3>.",
    ("There are two cars to the back of the ego vehicle, and a pedestrian to the front left. The IDs are "
     "<c1,CAM_BACK,1000.0,520.0>, <c2,CAM_BACK,700.2,480.1>, and <c3,CAM_FRONT_LEFT,300.5,600.0>."),
    "The ego vehicle should keep going ahead at the same speed.",
    "There is a green light to the front of the ego vehicle.",
    "No objects.",
    ("There is a black SUV to the back right of the ego vehicle and a truck to the front. The IDs of these objects "
     "are <c1,CAM_BACK_RIGHT,1200.4,510.0> and <c2,CAM_FRONT,790.0,450.5>."),
]
ANSWERS = [
    "There is a white sedan to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,815.0,490.0>.",
    ("There is a brown SUV to the back of the ego vehicle, a black sedan to the back of the ego vehicle, and a green "
     "light to the front of the ego vehicle. The IDs of these objects are <c1,CAM_BACK,1088.3,497.5>, "
     "<c2,CAM_BACK,864.2,468.3>, and <c3,CAM_FRONT,1043.2,82.2>."),
    "The ego vehicle should decelerate gradually without braking (it's a red light).",
    "There is a green light to the front of the ego vehicle.",
    ("There is a pedestrian to the front right of the ego vehicle. The ID of this object is "
     "<c1,CAM_FRONT_RIGHT,400.0,620.9>."),
    ("There is a black SUV to the back right of the ego vehicle, and a truck to the front of the ego vehicle. The IDs "
     "of these objects are <c1,CAM_BACK_RIGHT,1210.4,505.0> and <c2,CAM_FRONT,788.0,452.5>."),
]
# the official pipeline (Java tokenizer + pycocoevalcap) on PREDS / ANSWERS
GOLDEN_COCO = {"Bleu_1": 0.5604304601525961, "Bleu_2": 0.5268720250502628, "Bleu_3": 0.4991232417862544,
               "Bleu_4": 0.47158148365360425, "ROUGE_L": 0.6216974726252703, "CIDEr": 4.07363243110347}


def test_coco_scores_match_the_official_pipeline():
    scores = coco_scores(PREDS, ANSWERS)
    assert list(scores) == list(COCO_KEYS)
    assert scores == pytest.approx(GOLDEN_COCO, rel=1e-12)
    # several references per sample are accepted
    multi = coco_scores(PREDS[:2], [[ANSWERS[0]], [ANSWERS[1], PREDS[1]]])
    assert multi["Bleu_1"] > coco_scores(PREDS[:2], ANSWERS[:2])["Bleu_1"]
    with pytest.raises(ValueError, match="no predictions"):
        coco_scores([], [])
    with pytest.raises(ValueError, match="references"):
        coco_scores(["a"], ["a", "b"])
