"""Remote-sensing task scorers: RSVQA per question type, scene classification and region labels.

Every scorer has the signature ``(prediction, record, reference) -> {name: value}`` that
``adapt.metrics.register_task`` takes; the first key is the task's main metric (also named by the
function's ``main_metric`` attribute). `record` may be an ``adapt`` ``Record`` or a plain mapping: only
``meta``, ``options``, ``conversations`` and ``image_sizes`` are read, with ``getattr`` or ``.get``. Choices
are read by ``domains.answers.parse_choice``, the parser the built-in scorers use, so that an option letter is
read one way whichever scorer a task has.

**rsvqa** (``domains.md`` §2.1). The question type comes from ``record.meta["question_type"]`` (or
``meta["type"]``, the RSVQA field name). Both sides are *normalised*, then compared whole — never by
containment, so "no" does not hit inside "not sure" and "1" does not hit inside "12":

* yes/no and other words (``rural``/``urban``): lower case, punctuation and articles dropped;
* ``count``: the whole answer must be one number (digits, ``+3``, ``1,234``, ``1,234.5``, or an English number word
  up to twenty; integers kept exact); ``accuracy`` needs the same integer, and ``bucket_accuracy/count`` the same
  Mini-InternVL bucket (0 / 1–100 / 101–1000 / >1000). A reference written as one of RSVQA's count classes
  (``"between 0 and 10"`` ... ``"more than 1000"``, the ``range_numbers`` vocabulary of syvlo/RSVQA's
  ``VocabEncoder``) is hit by a number inside the class (above its low end, at most its high end) or by the same
  class, and is in the bucket it lies in;
* ``area``: ``"<n>m2"`` (``m2``, ``m^2``, ``m²``, ``square meters`` stripped), or one of RSVQA-HR's own area
  classes (``"0m2"``, ``"between 0m2 and 10m2"`` ... ``"more than 1000m2"``, as some releases store the answers);
  scored in the same buckets, as Mini-InternVL does (a class by the bucket it lies in: "between 10m2 and 100m2"
  is 1–100), with the exact value or class as ``exact_accuracy/area``.

Returns ``{"accuracy": a, "accuracy/<type>": a}`` (+ the bucket / exact keys for count and area), so a
source's summary shows overall and per-type accuracy side by side.

**classification**: with options (the record's, or lettered lines in its question) the answer is read by
``domains.answers.parse_choice``, exactly as the built-in ``mc`` and ``classification`` scorers read it (letters,
``B. forest``, ``The answer is B``, ``desert (B)``; two options or a contradiction score 0), except that answer
and option texts are compared as labels (`label_key`: CamelCase and ``_``/``-`` split into words, so ``Annual
crop`` answers ``AnnualCrop``). Without options the answer's label must *equal* the reference's.

**grounding** (DIOR-RSVG, DOTA chips) is the built-in task every domain shares (``adapt.metrics``,
``domains.answers.grounding_hit``): Acc@0.5 of the first predicted box against the first reference box.

**region**: a region (``[[x1, y1, x2, y2]]`` in the question) is named by a label: exact label match as
for classification.

**Protocols.** Each scorer's ``protocols`` attribute names, metric by metric, the rule it follows and its
source (Lobry et al. 2020 and Mini-InternVL's ``rs_vqa/score.py`` for RSVQA), saying where this module is stricter or reads more forms than the public
evaluator; ``adapt eval`` prints them in its report.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from domains.answers import (
    answer_text,
    check_reference_is_option,
    check_reference_words,
    parse_choice,
    record_options,
    reference_choice,
)

__all__ = [
    "AREA_BUCKETS",
    "METRICS",
    "area_bucket",
    "area_span",
    "bucket",
    "label_key",
    "match_label",
    "normalize_rsvqa",
    "parse_number",
    "score_classification",
    "score_region",
    "score_rsvqa",
]

# upper edges of the Mini-InternVL count/area buckets: 0 / 1-100 / 101-1000 / >1000
AREA_BUCKETS = (0, 100, 1000)
BUCKET_LABELS = ("0", "1-100", "101-1000", ">1000")  # bucket(value)'s names, as records' meta keeps them


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


# ---------------------------------------------------------------------------------------------- text
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_LEAD_IN = re.compile(r"^(?:the\s+)?(?:correct\s+|final\s+)?(?:answer|label|class)\s*(?:is|:)\s*", re.IGNORECASE)


def _strip_punct(text: str) -> str:
    return "".join(" " if (ch in string.punctuation or unicodedata.category(ch).startswith("P")) else ch
                   for ch in text)


def _words(text: str) -> str:
    text = _ARTICLES.sub(" ", _strip_punct(str(text).lower()))
    return " ".join(text.split())


def normalize_rsvqa(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces, a lead-in ("the answer is") dropped."""
    text = _LEAD_IN.sub("", str(text or "").strip())
    return _words(text)


_NUMBER_WORDS = {w: k for k, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"])}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d{1,3}(?:,\d{3})+|\d+))(\.\d+)?\s*$")
_AREA_UNIT = re.compile(r"\s*(?:m2|m\^2|m²|sq\.?\s*m|square\s+met(?:er|re)s?)\s*\.?\s*$", re.IGNORECASE)


def parse_number(text: str, *, area: bool = False) -> int | float | None:
    """The number a whole answer states ("12", "+3", "1,234", "1,234.5", "12.0", "twelve"; with `area`, "300m2"),
    else None: an int for an integer (exact however large, as RSVQA counts are), else a float.

    Only an answer that is a number as a whole counts: "12 or 13" and "about 12 cars" give None.
    """
    text = _LEAD_IN.sub("", str(text or "").strip()).strip().rstrip(".").strip()
    if area:
        text = _AREA_UNIT.sub("", text)
    m = _NUMBER.match(text)
    if m:
        whole, fraction = int(m.group(1).replace(",", "")), m.group(2)
        if fraction is None or not fraction.strip(".0"):  # "12.0" is the integer 12
            return whole
        return float(m.group(1).replace(",", "") + fraction)
    word = text.lower()
    return _NUMBER_WORDS.get(word)


def bucket(value: float) -> int | None:
    """Mini-InternVL's bucket of a count or area: 0 → 0, 1–100 → 1, 101–1000 → 2, > 1000 → 3; a negative
    value is in none (None: never a hit)."""
    if value < 0:
        return None
    for k, edge in enumerate(AREA_BUCKETS):
        if value <= edge:
            return k
    return len(AREA_BUCKETS)


# RSVQA-HR's own area classes (syvlo/RSVQA VQALoader; some releases store these instead of "<n>m2"): "0m2",
# "between 0m2 and 10m2" (an area above 0 and at most 10; the paper writes "between 1m2 and 10m2"), ...,
# "more than 1000m2"
_AREA_BETWEEN = re.compile(r"^between\s+(.+?)\s+and\s+(.+)$", re.IGNORECASE)
_AREA_ABOVE = re.compile(r"^(?:more|greater)\s+than\s+(.+)$", re.IGNORECASE)


def area_span(text: str, *, area: bool = True) -> tuple[str, float, float] | None:
    """An area answer as ``("=", n, n)`` (a number, unit optional), ``("between", lo, hi)`` (RSVQA's class
    ``between lo and hi``: above `lo`, at most `hi`) or ``("above", lo, inf)`` (``more than lo``), else None.
    `area` False reads a count (no unit: "between 10 and 100")."""
    text = _LEAD_IN.sub("", str(text or "").strip()).strip().rstrip(".").strip()
    value = parse_number(text, area=area)
    if value is not None:
        return ("=", value, value)
    m = _AREA_BETWEEN.match(text)
    if m:
        lo, hi = parse_number(m.group(1), area=area), parse_number(m.group(2), area=area)
        return ("between", lo, hi) if lo is not None and hi is not None and lo < hi else None
    m = _AREA_ABOVE.match(text)
    if m:
        lo = parse_number(m.group(1), area=area)
        return ("above", lo, math.inf) if lo is not None else None
    return None


def area_bucket(text: str, *, area: bool = True) -> int | None:
    """The Mini-InternVL bucket (:func:`bucket`) of an area or count answer: of its number, or of an RSVQA area
    class when the whole class lies in one bucket ("between 10m2 and 100m2" is 1-100; "more than 1000m2" is
    >1000); else None. `area` False reads a count (:func:`area_span`)."""
    span = area_span(text, area=area)
    if span is None:
        return None
    kind, lo, hi = span
    if kind == "=":
        return bucket(lo)
    low = bucket(lo)
    if low is None:
        return None
    low += lo in AREA_BUCKETS  # the class starts above lo: "between 0m2 and 10m2" is not 0
    high = len(AREA_BUCKETS) if math.isinf(hi) else bucket(hi)
    return low if low == high else None


# ---------------------------------------------------------------------------------------------- rsvqa
def _question_type(record: Any) -> str | None:
    """The record's RSVQA question type, lower case and stripped (``"Count"`` is scored as a count)."""
    meta = _field(record, "meta") or {}
    qtype = meta.get("question_type", meta.get("type")) if isinstance(meta, Mapping) else None
    qtype = str(qtype).strip().lower() if qtype is not None else ""
    return qtype or None


def score_rsvqa(prediction: str, record: Any, reference: str) -> dict[str, float]:
    """RSVQA accuracy, overall and for the record's question type (see the module docstring)."""
    qtype = _question_type(record)
    extra: dict[str, float] = {}
    if qtype == "area":
        ref_span, ref_bucket = area_span(reference), area_bucket(reference)
        if ref_span is None or ref_bucket is None:
            raise ValueError(f"rsvqa area reference is neither an area (\"500m2\") nor an RSVQA area class within "
                             f"one bucket (\"between 10m2 and 100m2\", \"more than 1000m2\"): {reference!r}")
        pred_bucket = area_bucket(prediction)
        hit = float(pred_bucket is not None and pred_bucket == ref_bucket)
        extra["bucket_accuracy/area"] = hit
        extra["exact_accuracy/area"] = float(area_span(prediction) == ref_span)
    elif qtype == "count":
        ref_span, ref_bucket = area_span(reference, area=False), area_bucket(reference, area=False)
        if ref_span is None or (ref_span[0] != "=" and ref_bucket is None):
            raise ValueError(f"rsvqa count reference is neither a number (\"12\") nor an RSVQA count class within "
                             f"one bucket (\"between 10 and 100\", \"more than 1000\"): {reference!r}")
        pred_span = area_span(prediction, area=False)
        kind, lo, hi = ref_span
        counted = pred_span is not None and pred_span[0] == "=" and isinstance(pred_span[1], int)  # 12.5 is no count
        hit = float(pred_span == ref_span or (kind != "=" and counted and lo < pred_span[1] <= hi))
        pred_bucket = area_bucket(prediction, area=False)
        extra["bucket_accuracy/count"] = float(pred_bucket is not None and pred_bucket == ref_bucket)
    else:
        hit = float(normalize_rsvqa(prediction) == normalize_rsvqa(reference) != "")
    out = {"accuracy": hit}
    if qtype:
        out[f"accuracy/{qtype}"] = hit
    out.update(extra)
    return out


# ---------------------------------------------------------------------------------------------- labels
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_LETTERS = string.ascii_uppercase


def label_key(text: str) -> str:
    """A label's comparison key: CamelCase and ``_``/``-`` split into words, lower case, no punctuation
    or articles ("AnnualCrop", "annual_crop" and "Annual crop." all give "annual crop")."""
    text = _CAMEL.sub(" ", answer_text(text, "label", numbers=True).strip())
    return _words(text.replace("_", " ").replace("-", " "))


def match_label(answer: str, labels: Sequence[str] | None = None) -> str | None:
    """The label (one of `labels`, or the answer's own key when `labels` is None) an answer names, else None.

    With `labels`: the option `domains.answers.parse_choice` reads (a letter, ``B. forest``, ``The answer is B``, or
    the one label whose key equals the answer's, after a lead-in such as "The answer is"), texts compared by
    `label_key`. Containment never counts ("forest" ≠ "rainforest").
    """
    text = answer_text(answer, "answer", numbers=True).strip()
    if not labels:
        key = label_key(_LEAD_IN.sub("", text))
        return key or None
    labels = list(labels)
    letter = parse_choice(text, labels, key=label_key)
    return labels[_LETTERS.index(letter)] if letter is not None else None


def _label_accuracy(prediction: str, record: Any, reference: str) -> float:
    options = record_options(record)
    if options:
        check_reference_is_option(record, reference, options, key=label_key)
        ref = reference_choice(reference, options, key=label_key)
        if ref is None:  # options read from the question, the reference none of them: compare texts
            check_reference_words(record, reference, label_key(reference))
            return float(label_key(prediction) == label_key(reference))
        return float(parse_choice(prediction, options, key=label_key) == ref)
    check_reference_words(record, reference, label_key(reference))
    pred = match_label(prediction)
    return float(pred is not None and pred == label_key(reference))


def score_classification(prediction: str, record: Any, reference: str) -> dict[str, float]:
    """Scene classification: 1.0 when the prediction names the reference label exactly."""
    return {"accuracy": _label_accuracy(prediction, record, reference)}


def score_region(prediction: str, record: Any, reference: str) -> dict[str, float]:
    """Region classification (a box in the question, a label in the answer): exact label match."""
    return {"accuracy": _label_accuracy(prediction, record, reference)}


def _protocols(**rows: tuple[str, str, str]) -> dict[str, dict[str, str]]:
    return {metric.replace("__", "/"): {"protocol": p, "rule": r, "source": s} for metric, (p, r, s) in rows.items()}


_RSVQA = "Lobry et al., RSVQA, IEEE TGRS 2020 (accuracy per question type)"
_RS_VQA_SCORE = "Mini-InternVL internvl_chat/eval/domain_specific/rs_vqa/score.py"
_BUCKETS = "the same bucket 0 / 1-100 / 101-1000 / >1000"
_LABEL_RULE = ("with options, the option parse_choice reads (as mc: an explicit letter, or an answer whose text equals "
               "exactly one option's, or the letter a reasoning reply names after an answer phrase, no other option "
               "named after it; several options otherwise, or an option's text merely contained, score 0), texts "
               "compared as labels (CamelCase and _ / - split, lower case, punctuation and articles dropped); without "
               "options, the answer's label equals the reference's")
_LABEL_SOURCE = ("pocket-adapt adapt/metrics.py (parse_choice) and domains/remote_sensing/metrics.py (label_key): "
                 "accuracy as share of samples whose label is named (no public evaluator's parser)")
score_rsvqa.protocols = _protocols(  # type: ignore[attr-defined]
    accuracy=("RSVQA, all questions", "mean of every question's accuracy/<type> hit (count exact, area by bucket); "
              "Mini-InternVL's total_score scores count by bucket too, and its headline total_score_useful leaves "
              "count and area out", f"{_RSVQA}; {_RS_VQA_SCORE}"),
    **{"accuracy__<type>": ("RSVQA exact answer, normalised", "presence, comp, rural_urban: the whole normalised "
                            "answer equals the reference (lower case, punctuation, articles and a lead-in such as "
                            "'the answer is' dropped); never containment", f"{_RSVQA}; {_RS_VQA_SCORE} compares "
                            "case-insensitively without the rest of this normalisation")},
    accuracy__count=("exact count", "the answer is one number (digits, +3, 1,234, 1,234.5 or a number word up to "
                     "twenty) equal to the reference; for an RSVQA count class (between 10 and 100, more than 1000) "
                     "a number in the class or the class itself",
                     f"pocket-adapt, stricter than {_RS_VQA_SCORE}, whose count rule is bucket_accuracy/count"),
    bucket_accuracy__count=("Mini-InternVL buckets", f"the answer's number and the reference fall in {_BUCKETS}",
                            f"{_RS_VQA_SCORE} (is_correct_count; it reads bare integers only)"),
    accuracy__area=("Mini-InternVL buckets", f"the answer's area (m2, m^2, square meters stripped) and the "
                    f"reference fall in {_BUCKETS}; an RSVQA-HR area class (between 10m2 and 100m2, more than "
                    "1000m2) counts as the bucket it lies in", f"{_RS_VQA_SCORE} (is_correct_area)"),
    bucket_accuracy__area=("Mini-InternVL buckets", "as accuracy/area", f"{_RS_VQA_SCORE} (is_correct_area)"),
    exact_accuracy__area=("exact area", "the answer states the reference's area, or its RSVQA-HR area class, "
                          "exactly", "pocket-adapt"),
)
score_classification.protocols = _protocols(  # type: ignore[attr-defined]
    accuracy=("pocket exact label", _LABEL_RULE, _LABEL_SOURCE))
score_region.protocols = _protocols(  # type: ignore[attr-defined]
    accuracy=("pocket exact label", _LABEL_RULE + " (the region is a box in the question)", _LABEL_SOURCE))

score_rsvqa.main_metric = "accuracy"  # type: ignore[attr-defined]
score_classification.main_metric = "accuracy"  # type: ignore[attr-defined]
score_region.main_metric = "accuracy"  # type: ignore[attr-defined]
for _fn in (score_rsvqa, score_classification, score_region):
    _fn.scale = (0, 1)  # type: ignore[attr-defined]  # accuracies

METRICS = {
    "rsvqa": score_rsvqa,
    "classification": score_classification,
    "region": score_region,
}
