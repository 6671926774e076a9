"""DriveLM scoring (``domains.md`` §1.1): per-sample scores and the corpus-level final score.

Every DriveLM record carries ``meta["drivelm_tag"]`` (as DriveLM's ``extract_data.py`` assigns it):

* **0 accuracy**: exact string match, as the official scorer (``answer == GT``), after stripping surrounding
  white space. For lettered multiple choice (the reference is one letter) the letter is accepted alone or
  leading an option (``B``, ``(B)``, ``B.``, ``B. Turn right.``).
* **1 chatgpt**: an LLM judge rates the answer out of 100 (:mod:`domains.driving.judge`); mean rating.
* **2 language**: BLEU-1..4, ROUGE-L and CIDEr over all tag-2 samples (:mod:`domains.driving.language`);
  ``language = (Bleu_1 + .. + Bleu_4)/4/3 + ROUGE_L/3 + CIDEr/10/3``.
* **3 match**: F1 of the answer's object points against the reference's, a hit when the L1 distance is
  below 16 px; ``match = (mean F1 * 100 + mean judge rating on the same samples) / 2``.

``final_score = 0.4 * chatgpt/100 + 0.2 * language + 0.2 * match/100 + 0.2 * accuracy`` (the official
weighting). **Scales**: ``chatgpt`` and ``match`` stay on the official 0–100 scale, ``CIDEr`` on
pycocoevalcap's ×10 scale; every other value, ``match_f1`` included, is in [0, 1].

**Coordinates.** Samples write c-tags on a 0–1000 grid: ``<c1,CAM_BACK,[x,y]>`` on the stitched image
(``meta["view_mode"] == "stitched"``) or on the named camera's own image (``"multi"``). Before scoring, a
prediction's bracketed c-tags are mapped back to that camera's 1600×900 pixels and rewritten in DriveLM's
form ``<c1,CAM_BACK,1088.3,497.5>`` (Mini-InternVL's ``post_process``: clamped to the frame, rounded to 0.1);
unbracketed tags are taken as camera pixels already, and tags naming an unknown camera are left as they are.
The reference is ``meta["answer_pixels"]``, the original DriveLM answer (or, when a record lacks it, its
``answer`` mapped back the same way).

**Match F1 differs from the official regex in one way**: the official scorer pairs every ``\\d+\\.\\d+``
number of the texts and ignores cameras, so a point in ``CAM_BACK`` can match one in ``CAM_FRONT``; here
points come from c-tags and only match within the same camera. The greedy rule is the official one: each
predicted point, in order, takes the nearest remaining reference point by L1 distance and is a true
positive when that distance is < 16 px.

**Graph filter.** The official scorer keeps a later QA of a frame only when every point in its *question*
was matched by the prediction of the frame's first QA. ``aggregate_drivelm(..., {"graph_filter": True})``
applies it (points from ``meta["question_pixels"]``, frames from ``meta["scene"]``/``meta["frame"]``, the
first QA being the lowest index of ``meta["qa_id"]``); it is off by default and the notes say so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from domains.driving import layout
from domains.driving.language import COCO_KEYS, coco_scores, ptb_tokenize, rouge_l

__all__ = [
    "MATCH_THRESHOLD",
    "METRICS",
    "TAG_NAMES",
    "aggregate_drivelm",
    "answer_accuracy",
    "drivelm_tags",
    "final_score",
    "language_score",
    "match_points",
    "pixel_points",
    "score_drivelm",
    "to_camera_pixels",
]

TAG_NAMES = {0: "accuracy", 1: "chatgpt", 2: "language", 3: "match"}
MATCH_THRESHOLD = 16.0  # px (L1), official
VIEW_MODES = ("stitched", "multi")

NOTE_NO_JUDGE = ("LLM-judge term not computed (no judge endpoint configured): chatgpt, match and final_score are "
                 "None; final_score_no_judge = 0.2*language + 0.2*accuracy + 0.1*match_f1 covers the judge-free "
                 "part of the official score (max 0.5)")
NOTE_TOKENIZER = ("language scores (Bleu_1..4, ROUGE_L, CIDEr) use a pure-Python tokenizer that approximates the "
                  "official Java PTBTokenizer but is not bit-identical to it on rare constructs")
NOTE_SCALES = "chatgpt and match are on the official 0-100 scale, CIDEr on pycocoevalcap's x10 scale; the rest in [0, 1]"


# ---------------------------------------------------------------------------------------------- record access
def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _where(meta: Mapping) -> str:
    return f"DriveLM sample {meta.get('qa_id', '?')!s}"


def drivelm_tags(meta: Mapping) -> frozenset[int]:
    """The record's DriveLM tags (``meta["drivelm_tag"]``: 0..3 or a list of them); ValueError if absent."""
    raw = meta.get("drivelm_tag") if isinstance(meta, Mapping) else None
    values = raw if isinstance(raw, (list, tuple, set, frozenset)) else [raw]
    try:
        tags = frozenset(int(v) for v in values)
    except (TypeError, ValueError):
        tags = frozenset()
    if not tags or not tags <= set(TAG_NAMES):
        raise ValueError(f"{_where(meta)}: meta['drivelm_tag'] must be 0, 1, 2 or 3 (or a list of them), got {raw!r}")
    return tags


def _view_mode(meta: Mapping) -> str:
    mode = meta.get("view_mode", "stitched") or "stitched"
    if mode not in VIEW_MODES:
        raise ValueError(f"{_where(meta)}: meta['view_mode'] must be 'stitched' or 'multi', got {mode!r}")
    return mode


def _from_grid(mode: str):
    return layout.from_stitched if mode == "stitched" else layout.from_camera_grid


# ---------------------------------------------------------------------------------------------- coordinates
def _bracketed(text: str, tag: layout.CTag) -> bool:
    return "[" in text[tag.start:tag.end]


def to_camera_pixels(text: str, mode: str = "stitched") -> str:
    """`text` with every bracketed grid c-tag rewritten as DriveLM's ``<cN,CAM,x,y>`` in camera pixels.

    `mode` is the sample's view mode (``"stitched"`` or ``"multi"``). Numbers are written as Python prints the
    rounded float (``1088.0``), as Mini-InternVL's ``post_process`` does. Unbracketed tags and tags naming an
    unknown camera are left unchanged.
    """
    if mode not in VIEW_MODES:
        raise ValueError(f"view mode must be 'stitched' or 'multi', got {mode!r}")
    convert = _from_grid(mode)
    out, pos = [], 0
    for tag in layout.iter_ctags(text or ""):
        if tag.camera not in layout.CAMERAS or not _bracketed(text, tag):
            continue
        x, y = convert(tag.x, tag.y, tag.camera)
        out += [text[pos:tag.start], f"<c{tag.obj},{tag.camera},{float(x)},{float(y)}>"]
        pos = tag.end
    out.append((text or "")[pos:])
    return "".join(out)


def pixel_points(text: str, mode: str | None = None) -> list[tuple[str, float, float]]:
    """``[(camera, x, y), ...]`` in camera pixels for the c-tags of `text`.

    With `mode`, bracketed tags are grid coordinates of that view mode and are mapped back; unbracketed tags
    (and all tags when `mode` is None) are read as camera pixels.
    """
    convert = _from_grid(mode) if mode is not None else None
    points = []
    for tag in layout.iter_ctags(text or ""):
        if convert is not None and tag.camera in layout.CAMERAS and _bracketed(text, tag):
            x, y = convert(tag.x, tag.y, tag.camera)
            points.append((tag.camera, float(x), float(y)))
        else:
            points.append((tag.camera, tag.x, tag.y))
    return points


def match_points(predicted: Sequence[tuple[str, float, float]], reference: Sequence[tuple[str, float, float]],
                 threshold: float = MATCH_THRESHOLD) -> tuple[list[tuple[str, float, float]], float]:
    """(matched reference points, F1) with DriveLM's greedy rule, pairs only within one camera.

    Each predicted point, in order, takes the nearest unmatched reference point of the same camera by L1
    distance; a distance below `threshold` is a true positive and removes that reference point. F1 uses the
    official 1e-8 terms, so no points at all give 0.
    """
    remaining = list(reference)
    matched, tp, fp = [], 0, 0
    for cam, x, y in predicted:
        best, best_d = None, math.inf
        for k, (rcam, rx, ry) in enumerate(remaining):
            if rcam != cam:
                continue
            d = abs(x - rx) + abs(y - ry)
            if d < best_d:
                best, best_d = k, d
        if best is not None and best_d < threshold:
            tp += 1
            matched.append(remaining.pop(best))
        else:
            fp += 1
    fn = len(reference) - tp
    precision = tp / (tp + fp + 1e-8)
    recall = tp / (tp + fn + 1e-8)
    return matched, 2 * precision * recall / (precision + recall + 1e-8)


# ---------------------------------------------------------------------------------------------- accuracy
_LETTER_REF = re.compile(r"^[A-Z]\.?$")
_ONLY_LETTER = re.compile(r"^[(\[]?([A-Za-z])[)\]]?[.:]?$")
_LEADING_LETTER = re.compile(r"^[(\[]?([A-Z])[)\]]?[.:)]\s+\S")


def answer_accuracy(prediction: str, reference: str) -> float:
    """DriveLM accuracy: 1.0 for an exact match (outer white space ignored), else 0.0.

    When the reference is a single option letter, the prediction may give that letter alone (``b``, ``(B)``,
    ``B.``) or leading the option's text (``B. Turn right.``).
    """
    pred, ref = str(prediction or "").strip(), str(reference or "").strip()
    if pred == ref:
        return 1.0
    if _LETTER_REF.match(ref):
        m = _ONLY_LETTER.match(pred) or _LEADING_LETTER.match(pred)
        return float(m is not None and m.group(1).upper() == ref[0])
    return 0.0


# ---------------------------------------------------------------------------------------------- per sample
def _reference_pixels(meta: Mapping, reference: str, mode: str) -> str:
    answer = meta.get("answer_pixels")
    return str(answer) if answer is not None else to_camera_pixels(str(reference or ""), mode)


def score_drivelm(prediction: str, record: Any, reference: str) -> dict[str, float]:
    """Per-sample DriveLM scores by the record's tag: ``accuracy`` (tag 0), ``ROUGE_L`` (tag 2, for
    inspection; the corpus metrics come from :func:`aggregate_drivelm`), ``match_f1`` (tag 3); tag 1
    (judge) has none per sample. Raises ValueError naming the sample when its meta lacks a valid tag."""
    meta = _field(record, "meta") or {}
    tags = drivelm_tags(meta)
    mode = _view_mode(meta)
    ref_px = _reference_pixels(meta, reference, mode)
    out: dict[str, float] = {}
    if 0 in tags:
        out["accuracy"] = answer_accuracy(to_camera_pixels(prediction, mode), ref_px)
    if 2 in tags:
        _, per_sample = rouge_l([ptb_tokenize(to_camera_pixels(prediction, mode))], [[ptb_tokenize(ref_px)]])
        out["ROUGE_L"] = per_sample[0]
    if 3 in tags:
        _, f1 = match_points(pixel_points(prediction, mode), pixel_points(ref_px))
        out["match_f1"] = f1
    return out


# ---------------------------------------------------------------------------------------------- corpus
def language_score(metrics: Mapping[str, float]) -> float:
    """DriveLM's language term: ``(Bleu_1..4)/4/3 + ROUGE_L/3 + CIDEr/10/3`` (keys in the official order)."""
    b = [metrics[k] for k in COCO_KEYS[:4]]
    return sum(v / 4.0 / 3.0 for v in b) + metrics["ROUGE_L"] / 3.0 + metrics["CIDEr"] / 10.0 / 3.0


def final_score(chatgpt: float, language: float, match: float, accuracy: float) -> float:
    """``0.4 * chatgpt/100 + 0.2 * language + 0.2 * match/100 + 0.2 * accuracy`` (official weights)."""
    return 0.4 * chatgpt / 100.0 + 0.2 * language + 0.2 * match / 100.0 + 0.2 * accuracy


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _qa_index(meta: Mapping) -> int:
    qa_id = str(meta.get("qa_id", ""))
    tail = qa_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _graph_keep(rows: list[dict], notes: list[str]) -> list[dict]:
    """The official graph filter over prepared rows (see the module docstring)."""
    frames: dict[tuple, list[dict]] = {}
    for row in rows:
        meta = row["meta"]
        key = (meta.get("scene"), meta.get("frame"))
        if key == (None, None):
            key = (str(meta.get("qa_id", "")).rsplit("_", 1)[0],)
        frames.setdefault(key, []).append(row)
    kept, dropped, no_question = [], 0, 0
    for frame_rows in frames.values():
        frame_rows.sort(key=lambda r: _qa_index(r["meta"]))
        first, rest = frame_rows[0], frame_rows[1:]
        graph, _ = match_points(pixel_points(first["pred_px"]), pixel_points(first["ref_px"]))
        kept.append(first)
        for row in rest:
            question = row["meta"].get("question_pixels")
            if question is None:
                no_question += 1
                kept.append(row)
                continue
            if all(p in graph for p in pixel_points(str(question))):
                kept.append(row)
            else:
                dropped += 1
    notes.append(f"graph filter applied: {dropped} of {len(rows)} samples dropped (question points not matched "
                 f"in the frame's first QA)")
    if no_question:
        notes.append(f"graph filter: {no_question} samples without meta['question_pixels'] were kept unfiltered")
    return kept


def aggregate_drivelm(predictions: Sequence[Any], context: Mapping[str, Any] | None = None) -> dict:
    """Corpus-level DriveLM metrics for the run's ``drivelm`` predictions.

    Each prediction has ``.prediction``, ``.reference``, ``.meta`` (and ``.task``; other tasks are ignored).
    `context` may hold ``"judge"`` (a :class:`~domains.driving.judge.JudgeConfig` mapping, or None),
    ``"graph_filter"`` (bool) and ``"progress"`` (bool, the judge's progress bar). Returns ``accuracy,
    match_f1, Bleu_1..4, ROUGE_L, CIDEr, language, chatgpt, match, final_score, final_score_no_judge`` (None =
    not computed, never a silent 0) and ``notes`` (strings saying what was not computed and why).
    """
    context = dict(context or {})
    notes: list[str] = []
    rows: list[dict] = []
    bad = 0
    for p in predictions:
        if (_field(p, "task") or "drivelm") != "drivelm":
            continue
        meta = _field(p, "meta") or {}
        try:
            tags = drivelm_tags(meta)
            mode = _view_mode(meta)
        except ValueError:
            bad += 1
            continue
        prediction = str(_field(p, "prediction") or "").strip()
        rows.append({"meta": meta, "tags": tags, "pred_px": to_camera_pixels(prediction, mode),
                     "ref_px": _reference_pixels(meta, str(_field(p, "reference") or ""), mode)})
    if bad:
        notes.append(f"{bad} predictions without a valid meta['drivelm_tag'] / meta['view_mode'] were left out")
    if context.get("graph_filter"):
        rows = _graph_keep(rows, notes)
    else:
        notes.append("graph filter not applied (the official scorer drops a later QA whose question points were "
                     "not matched in the frame's first QA; pass graph_filter=True to apply it)")

    by_tag = {t: [r for r in rows if t in r["tags"]] for t in TAG_NAMES}
    notes.append("DriveLM samples: " + ", ".join(f"{len(by_tag[t])} {TAG_NAMES[t]} (tag {t})" for t in TAG_NAMES))

    out: dict[str, Any] = dict.fromkeys(["accuracy", "match_f1", *COCO_KEYS, "language", "chatgpt", "match",
                                         "final_score", "final_score_no_judge"])
    out["accuracy"] = _mean([answer_accuracy(r["pred_px"], r["ref_px"]) for r in by_tag[0]])
    f1s = [match_points(pixel_points(r["pred_px"]), pixel_points(r["ref_px"]))[1] for r in by_tag[3]]
    out["match_f1"] = _mean(f1s)
    if by_tag[2]:
        lang = coco_scores([r["pred_px"] for r in by_tag[2]], [r["ref_px"] for r in by_tag[2]])
        out.update(lang)
        out["language"] = language_score(lang)
        notes.append(NOTE_TOKENIZER)
    for tag, what in ((0, "accuracy"), (2, "Bleu/ROUGE_L/CIDEr/language"), (3, "match_f1/match")):
        if not by_tag[tag]:
            notes.append(f"no tag-{tag} samples: {what} not computed")

    judge_cfg = context.get("judge")
    judge = None
    if judge_cfg:
        from domains.driving.judge import Judge

        try:
            judge = Judge(judge_cfg)
        except (TypeError, ValueError) as exc:
            notes.append(f"LLM judge not used: {exc}")
    if judge is None:
        if not judge_cfg:
            notes.append(NOTE_NO_JUDGE)
        else:
            notes.append(NOTE_NO_JUDGE.replace("no judge endpoint configured", "judge configuration unusable"))
    else:
        pairs = [(r["pred_px"], r["ref_px"]) for r in by_tag[1]] + [(r["pred_px"], r["ref_px"]) for r in by_tag[3]]
        scores, errors = judge.rate_many(pairs, progress=bool(context.get("progress", True)))
        chat = [s for s in scores[:len(by_tag[1])] if s is not None]
        match_judge = [s for s in scores[len(by_tag[1]):] if s is not None]
        if errors:
            notes.append(f"LLM judge failed on {len(errors)} of {len(pairs)} samples (not scored, left out of "
                         f"the judge means); first error: {errors[0]}")
        out["chatgpt"] = _mean(chat)
        if out["match_f1"] is not None and match_judge:
            out["match"] = (out["match_f1"] * 100.0 + _mean(match_judge)) / 2.0
        if by_tag[1] and not chat:
            notes.append("chatgpt not computed: no tag-1 sample got a judge rating")
        elif not by_tag[1]:
            notes.append("no tag-1 samples: chatgpt not computed")
        if by_tag[3] and not match_judge:
            notes.append("match not computed: no tag-3 sample got a judge rating")

    parts = {k: out[k] for k in ("chatgpt", "language", "match", "accuracy")}
    if all(v is not None for v in parts.values()):
        out["final_score"] = final_score(**parts)
    elif judge is not None:
        missing = [k for k, v in parts.items() if v is None]
        notes.append(f"final_score not computed: {', '.join(missing)} missing")
    if all(out[k] is not None for k in ("language", "accuracy", "match_f1")):
        out["final_score_no_judge"] = 0.2 * out["language"] + 0.2 * out["accuracy"] + 0.1 * out["match_f1"]
    else:
        notes.append("final_score_no_judge not computed: it needs language, accuracy and match_f1")
    notes.append(NOTE_SCALES)
    out = {k: (None if v is None else float(v)) for k, v in out.items()}
    out["notes"] = notes
    return out


aggregate_drivelm.main_metric = "final_score"  # type: ignore[attr-defined]
aggregate_drivelm.fallback_main_metric = "final_score_no_judge"  # type: ignore[attr-defined]
score_drivelm.aggregate = aggregate_drivelm  # type: ignore[attr-defined]
score_drivelm.main_metric = "final_score"  # type: ignore[attr-defined]
score_drivelm.fallback_main_metric = "final_score_no_judge"  # type: ignore[attr-defined]

METRICS = {"drivelm": score_drivelm}
