"""Medical VQA scoring (VQA-RAD / SLAKE / PMC-VQA open-ended): closed accuracy and open recall, done right.

One scorer, task ``"med_vqa"``, with the signature ``(prediction, record, reference) -> {name: value}`` that
``adapt.metrics.register_task`` takes. `record` may be an ``adapt`` ``Record`` or a plain mapping; only
``meta["answer_type"]`` is read (``"CLOSED"`` / ``"OPEN"``, any case; missing: CLOSED when the reference is
a yes/no one, see below, else OPEN). Answers are normalised by ``domains.answers.vqa_tokens``, as task ``vqa``
normalises them, so that the two read an answer one way.

The convention is LLaVA-Med's (``domains.md`` §3.3) -- papers report *closed accuracy* and *open recall* --
without its pitfalls:

**CLOSED** -> ``{"score": a, "closed_accuracy": a}`` with ``a`` 1.0 or 0.0 for *every* closed question, so
a source's mean is hits over all closed questions (LLaVA-Med drops misses that mention yes/no from the
denominator). Yes/no references are reduced to their polarity first: an English reference whose first word
is ``yes`` / ``no`` ("yes", "Yes, there is", "No, it is not"), or a Chinese one whose first clause is a yes
(是 / 是的 / 对 / 对的 / 有) or no (否 / 不是 / 不 / 不对 / 没有 / 无) word, as SLAKE's closed answers are. The
prediction must then say exactly one polarity -- ``yes`` / ``no`` among its normalised *words*, or one of
those Chinese words as a clause of its own ("是的，可以看到" is yes, "肝脏有病变" is neither) -- and it must be
the reference's; both or neither is wrong, and "no" inside "nodule" or "not" is no "no". Other closed
references ("left", "CT", "male", "左"): the normalised prediction must *equal* the normalised reference, so
"left lower lobe" does not answer "left".

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

import unicodedata
from collections.abc import Mapping
from typing import Any

from domains.answers import bag_f1, check_reference_words
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
        return "CLOSED" if _reference_polarity(reference) is not None else "OPEN"
    kind = str(value).strip().upper()
    if kind not in ("CLOSED", "OPEN"):
        raise ValueError(f"med_vqa: meta answer_type must be 'CLOSED' or 'OPEN', got {value!r}")
    return kind


_ZH_POLARITY = {"是": "yes", "是的": "yes", "对": "yes", "对的": "yes", "有": "yes",
                "否": "no", "不是": "no", "不": "no", "不对": "no", "没有": "no", "无": "no"}


def _clauses(text: str) -> list[str]:
    """`text` split at punctuation and spaces (NFKC first, so full-width "，" splits too)."""
    text = unicodedata.normalize("NFKC", str(text or ""))
    return "".join(" " if unicodedata.category(ch)[0] in "PZ" or ch.isspace() else ch for ch in text).split()


def _polarity(text: str) -> str | None:
    """"yes" / "no" when `text` says exactly one of them (English words, or a Chinese yes / no clause), else None."""
    words = tokens(text)
    found = {w for w in ("yes", "no") if w in words} | {_ZH_POLARITY[c] for c in _clauses(text) if c in _ZH_POLARITY}
    return found.pop() if len(found) == 1 else None  # both or neither: None


def _reference_polarity(reference: str) -> str | None:
    """The polarity of a yes/no reference (its first word or first Chinese clause a yes / no), else None."""
    words, clauses = tokens(reference), _clauses(reference)
    if (words and words[0] in ("yes", "no")) or (clauses and clauses[0] in _ZH_POLARITY):
        return _polarity(reference)
    return None


def closed_hit(prediction: str, reference: str) -> float:
    """1.0 when a closed question is answered right (see the module notes), else 0.0."""
    ref = normalize_text(reference)
    if not ref:
        raise ValueError(f"med_vqa: closed reference has no words after normalisation: {reference!r}")
    polarity = _reference_polarity(reference)
    if polarity is not None:
        return float(_polarity(prediction) == polarity)
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
    """Medical VQA: closed accuracy for CLOSED questions, open recall (+ F1, exact) for OPEN ones. A reference with
    no words left after normalisation is a ValueError naming the record (``source:line``), as the built-in scorers
    say it."""
    check_reference_words(record, reference, tokens(reference))
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
        "yes/no references (first word yes / no, or a Chinese yes / no first clause) reduced to that polarity: the "
        "answer says exactly one of yes / no (its normalised words, or a Chinese yes / no clause) and it is the "
        "reference's; "
        "other closed references: normalised exact match; every closed question counts (LLaVA-Med drops misses "
        "that mention yes or no from the denominator)", _LLAVA_MED),
    "open_recall": _protocol("LLaVA-Med open recall", "share of the reference's normalised words found among the "
                             "answer's words", f"{_LLAVA_MED} (calculate_f1score: recall)"),
    "open_token_f1": _protocol("SQuAD token F1", "F1 of the bags of normalised words",
                               "SQuAD v2.0 evaluate-v2.0.py (compute_f1), on domains.answers.vqa_tokens' normalisation"),
    "open_exact_match": _protocol("normalised exact match", "the normalised words of answer and reference are equal",
                                  "pocket-adapt domains/medical/metrics.py"),
}

score_med_vqa.scale = (0, 1)  # type: ignore[attr-defined]  # accuracy / token F1
METRICS = {"med_vqa": score_med_vqa}
