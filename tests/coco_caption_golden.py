"""Golden values of ``tests/test_driving_language.py``, produced by the official COCO caption code.

    python -m tests.coco_caption_golden            # (re)write tests/data/coco_caption_golden.json
    python -m tests.coco_caption_golden --check    # compare only; exit 1 and list the differences

The reference is PyPI ``pycocoevalcap`` (the code DriveLM's language score runs; 1.2 ships the Stanford
``stanford-corenlp-3.4.1.jar``) plus a ``java`` on the PATH, and nothing from this project: texts go
through its ``PTBTokenizer`` (``java ... PTBTokenizer -preserveLines -lowerCase``, then its punctuation
filter) and tokens through its ``Bleu(4)``, ``Rouge()`` and ``Cider()`` ``compute_score``, the way
``COCOEvalCap.evaluate`` chains them. Keep pycocoevalcap out of the project's virtual environment if it is
not a dependency there; a throwaway one does::

    python3 -m venv /tmp/cocoenv && /tmp/cocoenv/bin/pip install pycocoevalcap==1.2
    /tmp/cocoenv/bin/python -m tests.coco_caption_golden --check     # from the repository root

The inputs below are the single source of the test's cases; the JSON file records them next to the
official outputs (and the versions that made them), and the test checks that the two still agree.

The *protocol* inputs pin the official DriveLM protocol's tokenizer (``eval.protocol: official``) to the Java
rules on the constructs where the project's earlier reading differed -- sentences glued without a space
(``stopped.The`` stays one token), ``gonna`` -> ``gon na``, ``'n'``, ``'tis``, ``o'clock``, ``y'all``, curly
quotes, abbreviations before a capital -- and on a seeded corpus of generated driving answers and of text
fragments thrown together (:func:`driving_texts`, :func:`fragment_lines`).
:func:`official_scores` needs no Java and is also what the tests call, when pycocoevalcap is installed,
to compare the scorers on random corpora.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

TABLE = Path(__file__).parent / "data" / "coco_caption_golden.json"
COMMAND = "python -m tests.coco_caption_golden"

# ------------------------------------------------------------------------------------------------ inputs
# tokenized together (one input, one line each), as the COCO wrapper feeds its captions to Java
TOKENIZER_LINES = [
    ("There is a brown SUV to the back of the ego vehicle. The IDs of these objects are <c1,CAM_BACK,1088.3,497.5>, "
     "<c2,CAM_BACK,864.2,468.3>, and <c3,CAM_FRONT,1043.2,82.2>."),
    "The information of these traffic elements is [(traffic light, green, 674.86, 0.14, 723.33, 109.18)].",
    "No, the ego vehicle won't collide with it; it's too far away (about 20-30 meters).",
    '"Turn left" -- don\'t brake, cannot stop... Really?! e.g. the U.S. The end.',
    "The answer is B. Then go at 5.5m/s & 50% speed.",
    "The answer is B.",
    "The ego-vehicle's left-turn signal is on; CAM_FRONT_LEFT sees it.",
]
# tokenized one at a time (a text's last token can depend on the next line, so these run alone)
TOKENIZER_SINGLE_TEXTS = [
    "The IDs are <c1,CAM_BACK,1088.3,497.5>, (<c2,CAM_BACK,[1,2]>).",
    "The IDs are <c1,CAM_FRONT,[412.5,300.25]>.",
    "option A. going",
    "option A. The car",
    "cars, trucks, etc. Then",
    "Mr. Smith's car",
    "  ",
    "",
    "two\nlines",
]

# already-tokenized texts for the scorers alone: several references, an empty hypothesis, a corpus where
# the hypotheses are shorter than the references (so BLEU's brevity penalty applies)
SCORER_HYPOTHESES = ["the car is turning left", "", "a red light ahead of the ego vehicle", "go go go"]
SCORER_REFERENCES = [["the car turns left", "a car is turning to the left"], ["stop now"],
                     ["there is a red light to the front of the ego vehicle", "red light ahead"], ["go"]]


def _random_corpus(rng: random.Random) -> dict[str, Any]:
    # a small vocabulary so n-grams overlap; empty texts, one-sample corpora, longer and shorter hypotheses
    vocab = "the car ego vehicle a red light front back left of is to".split()[: rng.randint(3, 13)]

    def text() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, rng.choice((4, 12, 20)))))

    size = rng.randint(1, 12)
    return {"hypotheses": [text() for _ in range(size)],
            "references": [[text() for _ in range(rng.randint(1, 4))] for _ in range(size)]}


def random_corpora(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` seeded random corpora ``{"hypotheses": [...], "references": [[...], ...]}``."""
    rng = random.Random(seed)
    return [_random_corpus(rng) for _ in range(count)]


# scorer cases: the corpus above, cases aimed at one detail each, and seeded random corpora
SCORER_CASES = [
    {"name": "mixed", "hypotheses": SCORER_HYPOTHESES, "references": SCORER_REFERENCES},
    # BLEU's "closest" reference length: 3 tokens against 2 and 4, a tie, goes to the shorter
    {"name": "closest-length tie", "hypotheses": ["a b c", "b c d e"], "references": [["a b", "a b c d"], ["b c d e"]]},
    # no 3- or 4-gram matches: the 1e-15 / 1e-9 smoothing decides BLEU-3/4
    {"name": "no long matches", "hypotheses": ["a b x c d", "e f"], "references": [["a b c d"], ["e g f"]]},
    # a hypothesis longer than its references (no brevity penalty), repeated n-grams (clipping)
    {"name": "long, repetitive", "hypotheses": ["go go go go left left", "the the the"],
     "references": [["go left", "go go left"], ["the car"]]},
    # empty texts: pycocoevalcap's ROUGE-L sees one empty token on each side (empty vs empty scores 1)
    {"name": "empty texts", "hypotheses": ["", "a b", ""], "references": [[""], ["a b", ""], ["c"]]},
    # a one-sample corpus: CIDEr's IDF numerator is log(1) = 0, so even a perfect answer scores 0
    {"name": "one sample", "hypotheses": ["a b c d"], "references": [["a b c d"]]},
    *({"name": f"random {k}", **corpus} for k, corpus in enumerate(random_corpora(12, seed=2024))),
]

# raw texts through the whole pipeline (tokenizer, then the scorers)
PIPELINE_PREDICTIONS = [
    "There is a white sedan to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,812.5,487.3>.",
    ("There are two cars to the back of the ego vehicle, and a pedestrian to the front left. The IDs are "
     "<c1,CAM_BACK,1000.0,520.0>, <c2,CAM_BACK,700.2,480.1>, and <c3,CAM_FRONT_LEFT,300.5,600.0>."),
    "The ego vehicle should keep going ahead at the same speed.",
    "There is a green light to the front of the ego vehicle.",
    "No objects.",
    ("There is a black SUV to the back right of the ego vehicle and a truck to the front. The IDs of these objects "
     "are <c1,CAM_BACK_RIGHT,1200.4,510.0> and <c2,CAM_FRONT,790.0,450.5>."),
]
PIPELINE_ANSWERS = [
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

# the constructs the official protocol's tokenizer follows the Java rules on (tokenized together, one per line)
PROTOCOL_CASES = [
    "The car stopped.The light is red.",
    "Turn left.Then turn right!Stop?No.",
    "I'm gonna turn left, wanna go, gotta brake, lemme see, gimme that; gonnas stays.",
    "rock 'n' roll and rock'n'roll, 'n roll, 'nice",
    "D. Turn left.",
    "B",
    "The answer is D. Turn left.",
    "'Tis 'twas 'em 'til 'cause '90s '45 o'clock O'Neil d'Avignon y'all y'know l'amour c'mon",
    "It'sU.S.The end.He's at the U.S.The car.",
    "Inc.A and Inc.Ab, etc.The end, Mr.Smith, Calif.c'mon",
    "\u2018quoted\u2019 \u201cdouble\u201d `\u2019 \u2019s \u2019n \u2019dog",
    "AT&T, R&D. -LRB- :) ;D ;Dr =] x.com/abc a@b.com http://x.y/z.",
    "1 3/4 miles, \u00a35, \u20ac5, \u00a25, \u00bd, m\u00b2, US$5, ** ## __ &amp;",
    "No. 5 and No.  5, ca. 5, fig. 5, Ph.D. The end.",
    "left-turn.The car; CAM_FRONT.The car; S.Mr.: ego-vehicle's",
    "The object <c1,CAM_FRONT,1088.3,497.5> stopped.The object <c2,CAM_BACK,[412,300]> moved.",
]

# raw texts through the whole pipeline, written the way small models answer: sentences glued without a space,
# "gonna", "'n'", DriveLM c-tags; the official protocol must give the official numbers, the pocket one differs
PROTOCOL_PREDICTIONS = [
    "There is a white sedan to the front of the ego vehicle.The ID of this object is <c1,CAM_FRONT,812.5,487.3>.",
    "The ego vehicle is gonna keep going ahead.It's a green light.",
    ("There are two cars to the back of the ego vehicle.The IDs are <c1,CAM_BACK,1000.0,520.0>, "
     "<c2,CAM_BACK,700.2,480.1>."),
    "The ego vehicle should stop'n'wait.The pedestrian is crossing.",
    "There is a truck to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,790.0,450.5>.",
    "No objects.The road is clear.",
]
PROTOCOL_ANSWERS = [
    "There is a white sedan to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,815.0,490.0>.",
    "The ego vehicle should keep going ahead. It's a green light.",
    "There is a brown SUV to the back of the ego vehicle, and a black sedan to the back of the ego vehicle. The IDs "
    "of these objects are <c1,CAM_BACK,1088.3,497.5> and <c2,CAM_BACK,864.2,468.3>.",
    "The ego vehicle should stop and wait. The pedestrian is crossing.",
    "There is a truck to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,788.0,452.5>.",
    "There is a pedestrian to the front right of the ego vehicle. The ID of this object is "
    "<c1,CAM_FRONT_RIGHT,400.0,620.9>.",
]

# generated corpora: answers a driving model could write, and fragments (contractions, abbreviations, quotes,
# numbers, c-tags, symbols) thrown together with and without spaces
_SUBJECTS = ["The ego vehicle", "There is a white sedan", "The car", "A pedestrian", "The truck", "It", "I",
             "The traffic light"]
_VERBS = ["stopped", "is gonna turn left", "should keep going ahead", "won't collide with it", "is moving",
          "can't see it", "is turning right", "wanna go", "has to decelerate", "is parked",
          "is at <c1,CAM_FRONT,1088.3,497.5>", "is at <c2,CAM_BACK,[412,300]>", "is 5.5m away", "goes at 30 km/h",
          "rock 'n' roll", "isn't moving", "it's red", "'s the ego vehicle's", "gotta brake",
          "is the one on the left-turn lane"]
_OBJECTS = ["to the front of the ego vehicle", "in CAM_FRONT_LEFT", "(about 20-30 meters)", "at the U.S. intersection",
            "etc.", "i.e. the bus", "e.g. a cyclist", "D. Turn left", "B. Stopped", "with 50% probability",
            "at 7:30 p.m.", "A", '"yes"', "\u2018no\u2019", "\u2014 slowly", "...", "near No. 5",
            "by Mr. Smith's car", "to the U.K."]
_ENDS = [".", ".", ".", "!", "?", ". ", "", ";", ","]
_FRAGMENTS = ["the", "The", "car", "stopped", "left", "A", "B", "D", "a", "I", "it's", "don't", "won't", "gonna",
              "wanna", "'n'", "rock'n'roll", "o'clock", "y'all", "'em", "'90s", "Mr.", "etc.", "U.S.", "e.g.", "p.m.",
              "No.", "5", "1088.3", "12,5", "-3", "3.", ".5", "<c1,CAM_BACK,1088.3,497.5>", "<c2,CAM_FRONT,[412,300]>",
              "CAM_FRONT", "ego-vehicle", "left-turn", "AT&T", "R&D", "(", ")", "[", "]", "{", "}", '"', "'", "`",
              "``", "''", "...", "..", "--", "-", "!", "?", "!?", ",", ";", ":", ".", "/", "m/s", "5m/s", "50%", "$5",
              "&", "#1", "@x", "*", "=", "+", "Then", "He", "There", "She's", "can't", "cannot", "'tis", "ain't",
              "car's", "cars'", "l'amour", "d'Avignon", "Yes", "No", "NO", "yes", "x2", "2x", "A1", "B-2", "3-4",
              "1/2", "7:30", "2020-01-02", "Inc.", "Co.", "Jan.", "vs.", "Dr.", "St.", "Calif.", "al.", "i.e.",
              "U.K.", "A.", "D.", "C.D.s", "-LRB-", "10th", "1st", "km/h", "cm", "\u00b0", "\u00d7", "\u2192",
              "\u2026", "\u2013", "\u2014", "\u2019", "\u2018", "\u201c", "\u201d", "isn't", "I'm", "we're",
              "you've", "they'll", "he'd", "Who's", "What's", "Let's", "N'T", "DON'T", "O'Neil", "c'mon", "'til",
              "'cause", "y'know"]


def driving_texts(count: int, seed: int) -> list[str]:
    """`count` seeded answers in a driving model's style: 1-4 sentences, often glued without a space."""
    rng = random.Random(seed)

    def sentence() -> str:
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)}"
        if rng.random() < 0.6:
            text += " " + rng.choice(_OBJECTS)
        return text + rng.choice(_ENDS)

    out = []
    for _ in range(count):
        parts = [sentence() for _ in range(rng.randint(1, 4))]
        out.append("".join(p + rng.choice([" ", " ", "", "  "]) for p in parts).strip())
    return out


def fragment_lines(count: int, seed: int) -> list[str]:
    """`count` seeded lines of 1-10 fragments joined by nothing, one or two spaces."""
    rng = random.Random(seed)
    return ["".join(rng.choice(_FRAGMENTS) + rng.choice([" ", " ", " ", " ", "", "  ", ""])
                    for _ in range(rng.randint(1, 10))).strip() for _ in range(count)]


# tokenized together, as the COCO wrapper feeds a corpus to Java
TOKENIZER_CORPUS = driving_texts(300, seed=13) + fragment_lines(300, seed=14)

COCO_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")


def inputs() -> dict[str, Any]:
    return {
        "tokenizer_lines": TOKENIZER_LINES,
        "tokenizer_single_texts": TOKENIZER_SINGLE_TEXTS,
        "scorer_cases": SCORER_CASES,
        "pipeline_predictions": PIPELINE_PREDICTIONS,
        "pipeline_answers": PIPELINE_ANSWERS,
        "protocol_cases": PROTOCOL_CASES,
        "protocol_predictions": PROTOCOL_PREDICTIONS,
        "protocol_answers": PROTOCOL_ANSWERS,
        "tokenizer_corpus": TOKENIZER_CORPUS,
    }


# ------------------------------------------------------------------------------------------------ official
def official_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """pycocoevalcap's ``Bleu(4)``, ``Rouge()``, ``Cider()`` on tokenized texts (space-joined tokens).

    Returns ``{"Bleu": [b1..b4], "ROUGE_L": [mean, per-sample], "CIDEr": [mean, per-sample]}`` as plain
    floats. No Java involved. (Only n = 4 is meaningful there: its scorers always cook 1..4-grams, and
    ``Cider(n=k)`` for k < 4 fails.)
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    res = {i: [h] for i, h in enumerate(hypotheses)}
    gts = {i: list(refs) for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    return {
        "Bleu": [float(b) for b in bleu],
        "ROUGE_L": [float(rouge), [float(s) for s in rouge_per]],
        "CIDEr": [float(cider), [float(s) for s in cider_per]],
    }


def official_tokenize(texts: Sequence[str]) -> list[str]:
    """pycocoevalcap's ``PTBTokenizer`` (Java) on `texts`, one caption each, in one call: space-joined
    tokens per text, punctuation tokens removed, exactly as its ``tokenize`` returns them."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    return [out[i][0] for i in range(len(texts))]


def official_pipeline(predictions: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """``COCOEvalCap.evaluate``'s chain: references and predictions tokenized (one call each), then scored."""
    refs = official_tokenize(answers)
    hyps = official_tokenize(predictions)
    scores = official_scores(hyps, [[r] for r in refs])
    return dict(zip(COCO_KEYS, [*scores["Bleu"], scores["ROUGE_L"][0], scores["CIDEr"][0]]))


def _java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"the official tokenizer needs java on the PATH: {err}") from err
    return (done.stderr or done.stdout).splitlines()[0].strip()


def build() -> dict[str, Any]:
    """The whole table, computed now."""
    return {
        "_about": f"Made by `{COMMAND}` from pycocoevalcap and Java only; read by tests/test_driving_language.py.",
        "versions": {"pycocoevalcap": metadata.version("pycocoevalcap"), "java": _java_version(),
                     "tokenizer_jar": "stanford-corenlp-3.4.1.jar (shipped in the pycocoevalcap wheel)"},
        "inputs": inputs(),
        "tokenizer_output": official_tokenize(TOKENIZER_LINES),
        "tokenizer_single_output": [official_tokenize([text])[0] for text in TOKENIZER_SINGLE_TEXTS],
        "scorers_output": [official_scores(case["hypotheses"], case["references"]) for case in SCORER_CASES],
        "pipeline_output": official_pipeline(PIPELINE_PREDICTIONS, PIPELINE_ANSWERS),
        "protocol_cases_output": official_tokenize(PROTOCOL_CASES),
        "protocol_pipeline_output": official_pipeline(PROTOCOL_PREDICTIONS, PROTOCOL_ANSWERS),
        "tokenizer_corpus_output": official_tokenize(TOKENIZER_CORPUS),
    }


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                out.append(f"{where}/{key}: only in {'table' if key in old else 'new run'}")
            else:
                out += _differences(old[key], new[key], f"{where}/{key}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for k, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{where}[{k}]")]
    if isinstance(old, float) and isinstance(new, float) and math.isclose(old, new, rel_tol=1e-12, abs_tol=0):
        return []
    return [] if old == new else [f"{where}: table {old!r}, new run {new!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the table instead of writing it")
    args = parser.parse_args(argv)
    table = build()
    if args.check:
        old = json.loads(TABLE.read_text())
        # the versions line records what made the table; a different java build is not a difference
        problems = _differences({k: v for k, v in old.items() if k != "versions"},
                                {k: v for k, v in table.items() if k != "versions"})
        for problem in problems:
            print(problem)
        print(f"{TABLE}: {'differs' if problems else 'reproduced'} "
              f"(table made with {old['versions']}; this run {table['versions']})")
        return 1 if problems else 0
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
