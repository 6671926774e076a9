"""Medical VQA scoring (VQA-RAD / SLAKE / PMC-VQA open-ended): closed accuracy and open recall, done right.

One scorer, task ``"med_vqa"``, with the signature ``(prediction, record, reference) -> {name: value}`` that
``adapt.metrics.register_task`` takes. `record` may be an ``adapt`` ``Record`` or a plain mapping; only
``meta["answer_type"]`` is read (``"CLOSED"`` / ``"OPEN"``, any case; missing: CLOSED when the reference is
yes/no, else OPEN). Answers are normalised by ``domains.answers.vqa_tokens``, as task ``vqa`` normalises
them, so that the two read an answer one way.

The convention is LLaVA-Med's (``domains.md`` §3.3) -- papers report *closed accuracy* and *open recall* --
without its pitfalls:

**CLOSED** -> ``{"score": a, "closed_accuracy": a}`` with ``a`` 1.0 or 0.0 for *every* closed question, so
a source's mean is hits over all closed questions (LLaVA-Med drops misses that mention yes/no from the
denominator). Yes/no references: the prediction's *words* (after normalisation) must contain exactly one
of ``yes`` / ``no`` and it must be the reference's; both or neither is wrong, and "no" inside "nodule" or
"not" is no "no". Other closed references ("left", "CT", "male", any Chinese answer): the normalised
prediction must *equal* the normalised reference, so "left lower lobe" does not answer "left".

**OPEN** -> ``{"score": r, "open_recall": r, "open_token_f1": f, "open_exact_match": e}``: ``r`` the share
of the reference's normalised words found among the prediction's words (LLaVA-Med's main open number),
``f`` SQuAD token F1 (bags of words), ``e`` normalised exact match.

Closed questions return ``closed_accuracy`` only and open ones ``open_*`` only, so a source's mean of each
key (``adapt`` averages a key over the samples that have it) is the per-type number; ``score`` (first
key, the main metric) is closed accuracy or open recall by type.

**Protocols.** :func:`score_med_vqa`'s ``protocols`` attribute names each metric's rule and source
(LLaVA-Med's evaluation, SQuAD's token F1); ``adapt eval`` prints them in its report.

**Normalisation** (:func:`tokens`: ``domains.answers.vqa_tokens``, the one task ``vqa`` uses): Unicode NFKC and case
folding (full-width "Ｙｅｓ" = "yes"), punctuation dropped (ASCII and Unicode; a decimal point between digits is kept:
"3.5 cm" stays two words, and so is a minus sign starting a number: "-5" is not "5"), the articles a / an / the
dropped, number words up to twenty read as digits ("two" = "2"), a lead-in ("the answer is") dropped, and CJK text
split into single characters (Chinese has no spaces between words).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domains.answers import bag_f1
from domains.answers import normalize_vqa as normalize_text
from domains.answers import vqa_tokens as tokens

__all__ = [
    "METRICS",
    "answer_type",
    "closed_hit",
    "normalize_text",
    "open_scores",
    "score_med_vqa",
    "tokens",
]


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def answer_type(record: Any, reference: str) -> str:
    """``"CLOSED"`` or ``"OPEN"``: ``meta["answer_type"]``, else CLOSED when the reference is yes / no."""
    meta = _field(record, "meta") or {}
    value = meta.get("answer_type") if isinstance(meta, Mapping) else None
    if value is None or str(value).strip() == "":
        return "CLOSED" if normalize_text(reference) in ("yes", "no") else "OPEN"
    kind = str(value).strip().upper()
    if kind not in ("CLOSED", "OPEN"):
        raise ValueError(f"med_vqa: meta answer_type must be 'CLOSED' or 'OPEN', got {value!r}")
    return kind


def _yes_no(words: list[str]) -> str | None:
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes == has_no:
        return None  # both or neither
    return "yes" if has_yes else "no"


def closed_hit(prediction: str, reference: str) -> float:
    """1.0 when a closed question is answered right (see the module notes), else 0.0."""
    ref = normalize_text(reference)
    if not ref:
        raise ValueError(f"med_vqa: closed reference has no words after normalisation: {reference!r}")
    if ref in ("yes", "no"):
        return float(_yes_no(tokens(prediction)) == ref)
    return float(normalize_text(prediction) == ref)


def open_scores(prediction: str, reference: str) -> dict[str, float]:
    """Open-question scores: recall of the reference's words, token F1 and exact match."""
    ref, pred = tokens(reference), tokens(prediction)
    if not ref:
        raise ValueError(f"med_vqa: open reference has no words after normalisation: {reference!r}")
    pred_set = set(pred)
    recall = sum(1 for w in ref if w in pred_set) / len(ref)  # LLaVA-Med: each reference word found or not
    return {"open_recall": recall, "open_token_f1": bag_f1(pred, ref), "open_exact_match": float(pred == ref)}


def score_med_vqa(prediction: str, record: Any, reference: str) -> dict[str, float]:
    """Medical VQA: closed accuracy for CLOSED questions, open recall (+ F1, exact) for OPEN ones."""
    if answer_type(record, reference) == "CLOSED":
        hit = closed_hit(prediction, reference)
        return {"score": hit, "closed_accuracy": hit}
    scores = open_scores(prediction, reference)
    return {"score": scores["open_recall"], **scores}


_LLAVA_MED = "microsoft/LLaVA-Med llava/eval/run_eval.py, eval_metrics/evaluate_metrics.py"


def _protocol(protocol: str, rule: str, source: str) -> dict[str, str]:
    return {"protocol": protocol, "rule": rule, "source": source}


score_med_vqa.protocols = {  # type: ignore[attr-defined]
    "score": _protocol("VQA-RAD / SLAKE headline", "closed_accuracy for CLOSED questions, open_recall for OPEN ones "
                       "(papers report both)", _LLAVA_MED),
    "closed_accuracy": _protocol(
        "LLaVA-Med closed accuracy, fixed denominator",
        "yes/no references: the answer's normalised words hold exactly one of yes / no and it is the reference's; "
        "other closed references: normalised exact match; every closed question counts (LLaVA-Med drops misses "
        "that mention yes or no from the denominator)", _LLAVA_MED),
    "open_recall": _protocol("LLaVA-Med open recall", "share of the reference's normalised words found among the "
                             "answer's words", f"{_LLAVA_MED} (calculate_f1score: recall)"),
    "open_token_f1": _protocol("SQuAD token F1", "F1 of the bags of normalised words",
                               "SQuAD v2.0 evaluate-v2.0.py (compute_f1), on domains.answers.vqa_tokens' normalisation"),
    "open_exact_match": _protocol("normalised exact match", "the normalised words of answer and reference are equal",
                                  "pocket-adapt domains/medical/metrics.py"),
}

METRICS = {"med_vqa": score_med_vqa}
