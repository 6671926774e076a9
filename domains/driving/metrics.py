"""DriveLM scoring (``domains.md`` §1.1): per-sample scores and the corpus-level final score.

Every DriveLM record carries ``meta["drivelm_tag"]`` (as DriveLM's ``extract_data.py`` assigns it): **0
accuracy**, **1 chatgpt** (an LLM judge rates the answer out of 100, :mod:`domains.driving.judge`; mean
rating), **2 language** (BLEU-1..4, ROUGE-L and CIDEr over all tag-2 samples, :mod:`domains.driving.language`;
``language = (Bleu_1 + .. + Bleu_4)/4/3 + ROUGE_L/3 + CIDEr/10/3``), **3 match** (F1 of the answer's points
against the reference's; ``match = (mean F1 * 100 + mean judge rating on the same samples) / 2``), and
``final_score = 0.4 * chatgpt/100 + 0.2 * language + 0.2 * match/100 + 0.2 * accuracy`` (the official
weighting). **Scales**: ``chatgpt`` and ``match`` stay on the official 0–100 scale, ``CIDEr`` on
pycocoevalcap's ×10 scale; every other value, ``match_f1`` included, is in [0, 1].

**Protocols** (:data:`PROTOCOLS`; the recipe's ``eval.protocol``, passed in the aggregate's context as
``"protocol"``). ``official`` (the default) reproduces OpenDriveLab/DriveLM ``challenge/evaluation.py``:

* accuracy: ``answer == GT``, exact string equality, no stripping, no option-letter parsing ("D. Turn left."
  does not answer "D");
* match F1: every ``\\d+\\.\\d+`` number of each text, in order, read as (x, y) pairs (an odd last number of the
  answer dropped); each predicted point takes the nearest remaining reference point by L1 distance, a true
  positive when that distance is < 16 px; **cameras are ignored**, so a point in CAM_BACK can match one in
  CAM_FRONT; F1 with the official 1e-8 terms;
* language: the Java PTBTokenizer's rules (``stopped.The`` stays one token, ``gonna`` -> ``gon na``), see
  :mod:`domains.driving.language`;
* graph filter on (below).

``pocket`` keeps this project's earlier, more lenient reading: accuracy ignores outer white space and, when
the reference is one option letter, accepts the letter alone or leading the option (``B``, ``(B)``, ``B.``,
``B. Turn right.``); match F1 reads points from c-tags and pairs them only within the same camera; language
uses the pocket tokenizer, which splits ``stopped.The``; the graph filter is off unless asked for. Numbers
made under ``pocket`` are not comparable with the challenge's.

**Coordinates.** Samples write c-tags on a 0–1000 grid: ``<c1,CAM_BACK,[x,y]>`` on the stitched image
(``meta["view_mode"] == "stitched"``) or on the named camera's own image (``"multi"``). A record without
``view_mode`` (an older or a foreign converter's) is read by its images: six camera images are ``multi``, one camera
picture (``meta.camera``) is on its camera's grid, one 3:1 image is stitched; when they do not tell, a sample whose
texts hold grid c-tags is refused, naming it, rather than read in a guessed layout. Before scoring, a
prediction's bracketed c-tags are mapped back to that camera's 1600×900 pixels and rewritten in DriveLM's form
``<c1,CAM_BACK,1088.3,497.5>`` (Mini-InternVL's ``post_process``: clamped to the frame, rounded to 0.1), and
bracketed traffic-element boxes ``(c, s, [x1,y1,x2,y2])`` to DriveLM's ``(c, s, x1, y1, x2, y2)`` in CAM_FRONT
pixels (rounded to 0.01, as DriveLM writes them), under both protocols, as Mini-InternVL feeds its answers to the
official scorer; unbracketed tags are taken as camera pixels already, and tags naming an unknown camera are left
as they are. The reference is ``meta["answer_pixels"]``, the original DriveLM answer (or, when a record lacks it,
its ``answer`` mapped back the same way). A sample whose reference is empty (the answer-less q_only test split)
is left out, with a note, rather than scored as wrong.

**Graph filter.** The official scorer keeps a later QA of a frame only when every point of its *question*
is among the reference points the prediction of the frame's first QA matched. The context's
``"graph_filter"`` (``eval.graph_filter``) switches it on (True) or off (False); None follows the protocol
(official: on, pocket: off). Points come from ``meta["question_pixels"]`` (a sample without it is kept, and
counted in a note), frames from ``meta["scene"]``/``meta["frame"]`` (else the ``qa_id`` prefix), the first QA
being the lowest index of ``meta["qa_id"]``; under ``official`` points are compared as (x, y) numbers,
under ``pocket`` as c-tag points with their camera.

**Per sample** (:func:`score_drivelm`, which gets no run settings) the official rules apply; the corpus
metrics of a run (:func:`aggregate_drivelm`) replace them in reports and follow the run's protocol, which the
aggregate names, metric by metric, under ``"protocols"``.
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
    "PROTOCOLS",
    "TAG_NAMES",
    "aggregate_drivelm",
    "answer_accuracy",
    "drivelm_tags",
    "final_score",
    "language_score",
    "match_points",
    "official_points",
    "pixel_points",
    "protocols",
    "score_drivelm",
    "to_camera_pixels",
]

TAG_NAMES = {0: "accuracy", 1: "chatgpt", 2: "language", 3: "match"}
MATCH_THRESHOLD = 16.0  # px (L1), official
VIEW_MODES = layout.VIEW_MODES

NOTE_NO_JUDGE = ("LLM-judge term not computed (no judge endpoint configured): chatgpt, match and final_score are "
                 "None; final_score_no_judge = 0.2*language + 0.2*accuracy + 0.1*match_f1 covers the judge-free "
                 "part of the official score (max 0.5)")
PROTOCOLS = ("official", "pocket")
NOTE_TOKENIZER = {
    "official": ("language scores (Bleu_1..4, ROUGE_L, CIDEr) tokenize with a pure-Python port of the official Java "
                 "PTBTokenizer's rules; it agrees with the Java tokenizer token for token on the project's test "
                 "corpora, but is not proven identical on every text"),
    "pocket": ("language scores (Bleu_1..4, ROUGE_L, CIDEr) tokenize with the pocket rules (\"stopped.The\" split "
               "in two, \"gonna\" kept whole): not the official numbers"),
}
NOTE_SCALES = ("chatgpt and match are on the official 0-100 scale, CIDEr on pycocoevalcap's x10 scale; "
               "the rest in [0, 1]")


_EVALUATION = "OpenDriveLab/DriveLM challenge/evaluation.py"
_OFFICIAL = "DriveLM official"
_POCKET = "pocket (lenient)"
_LANGUAGE_KEYS = "Bleu_1..Bleu_4, ROUGE_L, CIDEr, language"
_PROTOCOL_TABLE: dict[str, dict[str, tuple[str, str, str]]] = {
    "official": {
        "accuracy": (_OFFICIAL, "answer == reference, exact string equality (no stripping, no option-letter parsing)",
                     f"{_EVALUATION} (eval_acc)"),
        "match_f1": (_OFFICIAL, "every `\\d+\\.\\d+` pair of the texts, cameras ignored; each predicted point "
                     "takes the nearest remaining reference point by L1, a hit below 16 px; F1 with 1e-8 terms",
                     f"{_EVALUATION} (match_result)"),
        _LANGUAGE_KEYS: (_OFFICIAL, "pycocoevalcap BLEU-4 / ROUGE-L / CIDEr after the Java PTBTokenizer's rules "
                         "(CoreNLP 3.4.1, -preserveLines -lowerCase; \"stopped.The\" one token, \"gonna\" -> "
                         "\"gon na\"), ported to Python; language = Bleu/4/3 + ROUGE_L/3 + CIDEr/10/3",
                         f"{_EVALUATION} (eval_language: language_evaluation.CocoEvaluator); "
                         "pycocoevalcap tokenizer/ptbtokenizer.py"),
    },
    "pocket": {
        "accuracy": (_POCKET, "exact match after stripping outer white space; a one-letter reference also accepts "
                     "B, (B), B. and \"B. option text\"", "pocket-adapt domains/driving/metrics.py"),
        "match_f1": (_POCKET, "points from c-tags, paired only within the same camera; nearest remaining reference "
                     "point by L1, a hit below 16 px (the official greedy rule)",
                     f"pocket-adapt domains/driving/metrics.py, after {_EVALUATION} (match_result)"),
        _LANGUAGE_KEYS: (_POCKET, "pycocoevalcap BLEU-4 / ROUGE-L / CIDEr after the pocket tokenizer (splits "
                         "\"stopped.The\", keeps \"gonna\"); language = Bleu/4/3 + ROUGE_L/3 + CIDEr/10/3",
                         "pocket-adapt domains/driving/language.py"),
    },
}
_COMMON_PROTOCOLS: dict[str, tuple[str, str, str]] = {
    "chatgpt": ("DriveLM official prompt", "the recipe's eval.judge model rates each tag-1 answer out of 100 "
                "against the reference with DriveLM's messages (the challenge used gpt-3.5-turbo); mean rating",
                "OpenDriveLab/DriveLM challenge/gpt_eval.py"),
    "match": (_OFFICIAL, "(mean match_f1 * 100 + mean judge rating of the tag-3 answers) / 2",
              f"{_EVALUATION} (eval_match)"),
    "final_score": (_OFFICIAL, "0.4*chatgpt/100 + 0.2*language + 0.2*match/100 + 0.2*accuracy",
                    f"{_EVALUATION} (__main__)"),
    "final_score_no_judge": ("pocket (not an official number)", "0.2*language + 0.2*accuracy + 0.1*match_f1, the "
                             "judge-free part of final_score (max 0.5)", "pocket-adapt domains/driving/metrics.py"),
}
_GRAPH_FILTER = {
    "official": (_OFFICIAL, "a later QA of a frame counts only when every (x, y) point of its question was matched "
                 "by the prediction of the frame's first QA", f"{_EVALUATION} (eval_graph, set_graph)"),
    "pocket": (_POCKET, "as the official filter, with c-tag points compared camera and all",
               "pocket-adapt domains/driving/metrics.py"),
    "off": ("none", "every sample counts (the official scorer's graph filter is off)", "recipe eval.graph_filter"),
}


def check_protocol(protocol: Any) -> str:
    """`protocol` if it is one of :data:`PROTOCOLS`, else ValueError."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"DriveLM protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def protocols(protocol: str = "official", graph_filter: str | None = None) -> dict[str, dict[str, str]]:
    """What each DriveLM metric follows under `protocol`: ``{metric: {"protocol", "rule", "source"}}``.

    `graph_filter` is the filter applied (``"official"``, ``"pocket"`` or ``"off"``; default: the protocol's
    own), listed under ``"samples (graph filter)"``.
    """
    rows = {**_PROTOCOL_TABLE[check_protocol(protocol)], **_COMMON_PROTOCOLS,
            "samples (graph filter)": _GRAPH_FILTER[graph_filter or protocol]}
    return {metric: dict(zip(("protocol", "rule", "source"), row)) for metric, row in rows.items()}


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
        # int() alone would read 1.7 or True as tag 1: only whole numbers (or their digit strings) name a tag
        if any(isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()) for v in values):
            raise ValueError
        tags = frozenset(int(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        tags = frozenset()
    if not tags or not tags <= set(TAG_NAMES):
        raise ValueError(f"{_where(meta)}: meta['drivelm_tag'] must be 0, 1, 2 or 3 (or a list of them), got {raw!r}")
    return tags


def _view_mode(meta: Mapping, sample: Any = None) -> str | None:
    """``meta["view_mode"]`` ("stitched" or "multi", else ValueError naming the sample); when it is missing (a record
    written by an older or a foreign converter), the mode `sample`'s images show (:func:`_shown_view_mode`), else
    None: :func:`_in_pixels` then refuses only a text whose grid coordinates need the mode."""
    mode = meta.get("view_mode")
    if mode is None or mode == "":
        return _shown_view_mode(meta, sample)
    if mode not in VIEW_MODES:
        raise ValueError(f"{_where(meta)}: meta['view_mode'] must be 'stitched' or 'multi', got {mode!r}")
    return mode


def _shown_view_mode(meta: Mapping, sample: Any) -> str | None:
    """The view mode a sample's images show, as the converters lay them out: six camera images are ``multi``; one
    camera picture (``meta.camera``) has its c-tags on its own camera's grid, as ``multi`` reads them; one other
    image is the stitched frame unless its size is known and not the stitched 3:1 (2688x896,
    :func:`layout.check_stitched_aspect`). None when they do not tell.

    `sample` is a record (``images`` and ``image_sizes``; a converter's ``image``, ``width`` / ``height``) or, in the
    aggregate, a prediction, whose question holds one ``<image>`` per image of its record."""
    images = _field(sample, "images", _field(sample, "image"))
    if isinstance(images, str) or hasattr(images, "__fspath__"):
        images = [images]
    count = len(images) if isinstance(images, (list, tuple)) else str(_field(sample, "prompt") or "").count("<image>")
    if count == len(layout.CAMERAS):
        return "multi"
    if count != 1:
        return None
    if meta.get("camera") in layout.CAMERAS:
        return "multi"
    sizes = _field(sample, "image_sizes") or [(_field(sample, "width"), _field(sample, "height"))]
    try:
        if None not in sizes[0]:
            layout.check_stitched_aspect(tuple(sizes[0]))
    except (TypeError, ValueError):
        return None
    return "stitched"


# ---------------------------------------------------------------------------------------------- coordinates
def to_camera_pixels(text: str, mode: str = "stitched") -> str:
    """`text` with every bracketed grid c-tag rewritten as DriveLM's ``<cN,CAM,x,y>`` in camera pixels.

    `mode` is the sample's view mode (``"stitched"`` or ``"multi"``). Numbers are written as Python prints the
    rounded float (``1088.0``), as Mini-InternVL's ``post_process`` does, except for a point clamped to the frame's
    edge: ``post_process`` writes that one as an integer (``1600``), which the challenge's ``\\d+\\.\\d+`` number
    pattern then skips, shifting its pairing of the other numbers; we write ``1600.0``. Unbracketed tags and tags
    naming an unknown camera are left unchanged. Bracketed traffic-element boxes ``(c, s, [x1,y1,x2,y2])`` go back to
    DriveLM's ``(c, s, x1, y1, x2, y2)`` in CAM_FRONT pixels.
    """
    convert = layout.grid_map(mode)
    out, pos = [], 0
    for tag in layout.iter_ctags(text or ""):
        if tag.camera not in layout.CAMERAS or not layout.is_grid_tag(text, tag):
            continue
        x, y = convert(tag.x, tag.y, tag.camera)
        out += [text[pos:tag.start], f"<c{tag.obj},{tag.camera},{float(x)},{float(y)}>"]
        pos = tag.end
    out.append((text or "")[pos:])
    return _traffic_boxes_to_pixels("".join(out), convert)


def _traffic_boxes_to_pixels(text: str, convert) -> str:
    """Bracketed grid traffic-element tuples back to DriveLM's ``(c, s, x1, y1, x2, y2)`` in CAM_FRONT pixels
    (clamped, 0.01 px); a tuple with corners out of order is left as written."""
    def unrounded(x: float, y: float, camera: str) -> tuple[float, float]:
        return convert(x, y, camera, decimals=None)

    out, pos = [], 0
    for box in layout.iter_traffic_boxes(text):
        if not box.bracketed:
            continue
        piece = text[box.start:box.end]
        try:
            piece = layout.rewrite_traffic_boxes(piece, unrounded, bracket=False, decimals=layout.BOX_CAMERA_DECIMALS)
        except layout.CTagError:
            pass
        out += [text[pos:box.start], piece]
        pos = box.end
    out.append(text[pos:])
    return "".join(out)


def pixel_points(text: str, mode: str | None = None) -> list[tuple[str, float, float]]:
    """``[(camera, x, y), ...]`` in camera pixels for the c-tags of `text`.

    With `mode` (``"stitched"`` or ``"multi"``, else ValueError), bracketed tags are grid coordinates of that view
    mode and are mapped back; a bracketed tag naming an unknown camera has no cell to map from and is skipped
    (its 0–1000 values are no pixels). Unbracketed tags (and all tags when `mode` is None) are read as camera pixels.
    """
    convert = layout.grid_map(mode) if mode is not None else None
    points = []
    for tag in layout.iter_ctags(text or ""):
        if convert is not None and layout.is_grid_tag(text, tag):
            if tag.camera not in layout.CAMERAS:
                continue
            x, y = convert(tag.x, tag.y, tag.camera)
            points.append((tag.camera, float(x), float(y)))
        else:
            points.append((tag.camera, tag.x, tag.y))
    return points


_DECIMAL = re.compile(r"\d+\.\d+")


def official_points(text: str) -> tuple[list[tuple[None, float, float]], bool]:
    """(points, odd) as DriveLM's ``evaluation.py`` reads a text: every ``\\d+\\.\\d+`` number in order, paired
    as (x, y), the camera unknown (None). `odd` says the text had an odd count of numbers; the last is then
    dropped (the official scorer drops it from an answer and fails on a reference)."""
    numbers = [float(v) for v in _DECIMAL.findall(text or "")]
    odd = len(numbers) % 2 == 1
    if odd:
        numbers = numbers[:-1]
    return [(None, x, y) for x, y in zip(numbers[::2], numbers[1::2])], odd


def _points(text: str, protocol: str) -> list[tuple[str | None, float, float]]:
    return official_points(text)[0] if protocol == "official" else pixel_points(text)


def match_points(predicted: Sequence[tuple[str | None, float, float]],
                 reference: Sequence[tuple[str | None, float, float]], threshold: float = MATCH_THRESHOLD,
                 by_camera: bool = True) -> tuple[list[tuple[str | None, float, float]], float]:
    """(matched reference points, F1) with DriveLM's greedy rule.

    Each predicted ``(camera, x, y)`` point, in order, takes the nearest unmatched reference point by L1
    distance (with `by_camera`, only reference points of the same camera; the official scorer ignores
    cameras); a distance below `threshold` is a true positive and removes that reference point. F1 uses the
    official 1e-8 terms, so no points at all give 0.
    """
    remaining = list(reference)
    matched, tp, fp = [], 0, 0
    for cam, x, y in predicted:
        best, best_d = None, math.inf
        for k, (rcam, rx, ry) in enumerate(remaining):
            if by_camera and rcam != cam:
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


def answer_accuracy(prediction: str, reference: str, protocol: str = "official") -> float:
    """DriveLM accuracy: 1.0 for a match, else 0.0.

    ``official``: ``prediction == reference``, exactly. ``pocket``: outer white space ignored, and when the
    reference is a single option letter, the prediction may give that letter alone (``b``, ``(B)``, ``B.``)
    or leading the option's text (``B. Turn right.``).
    """
    if check_protocol(protocol) == "official":
        return float(str(prediction or "") == str(reference or ""))
    pred, ref = str(prediction or "").strip(), str(reference or "").strip()
    if pred == ref:
        return 1.0
    if _LETTER_REF.match(ref):
        m = _ONLY_LETTER.match(pred) or _LEADING_LETTER.match(pred)
        return float(m is not None and m.group(1).upper() == ref[0])
    return 0.0


# ---------------------------------------------------------------------------------------------- per sample
def _in_pixels(text: str, mode: str | None, meta: Mapping) -> str:
    """:func:`to_camera_pixels` for the sample's `mode`; with no mode known, `text` as it is when it holds no grid
    coordinates to map back, else ValueError naming the sample (guessing a mode put points in the wrong camera)."""
    if mode is not None:
        return to_camera_pixels(text, mode)
    if to_camera_pixels(text, "stitched") != text:
        raise ValueError(f"{_where(meta)}: its grid coordinates (<cN,CAM,[x,y]>) need meta['view_mode'], which it "
                         f"lacks, and its images do not tell the mode (six camera images: 'multi'; one 3:1 stitched "
                         f"frame: 'stitched'): add meta['view_mode'] to the record")
    return text


def _reference_pixels(meta: Mapping, reference: str, mode: str | None) -> str:
    answer = meta.get("answer_pixels")
    return str(answer) if answer is not None else _in_pixels(str(reference or ""), mode, meta)


def score_drivelm(prediction: str, record: Any, reference: str) -> dict[str, float]:
    """Per-sample DriveLM scores by the record's tag, official protocol: ``accuracy`` (tag 0), ``ROUGE_L`` (tag
    2, for inspection; the corpus metrics come from :func:`aggregate_drivelm`), ``match_f1`` (tag 3); tag 1
    (judge) has none per sample; nor has a sample without a reference answer (q_only), which
    :func:`aggregate_drivelm` leaves out too. Raises ValueError naming the sample when its meta lacks a valid tag."""
    meta = _field(record, "meta") or {}
    tags = drivelm_tags(meta)
    mode = _view_mode(meta, record)
    ref_px = _reference_pixels(meta, reference, mode)
    out: dict[str, float] = {}
    if not ref_px.strip():  # an empty answer would "equal" it: accuracy 1.0 for saying nothing
        return out
    if 0 in tags:
        out["accuracy"] = answer_accuracy(_in_pixels(prediction, mode, meta), ref_px)
    if 2 in tags:
        _, per_sample = rouge_l([ptb_tokenize(_in_pixels(prediction, mode, meta))], [[ptb_tokenize(ref_px)]])
        out["ROUGE_L"] = per_sample[0]
    if 3 in tags:
        _, f1 = match_points(_points(_in_pixels(prediction, mode, meta), "official"), _points(ref_px, "official"),
                             by_camera=False)
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


def _frame_key(meta: Mapping) -> tuple | None:
    if meta.get("scene") is not None and meta.get("frame") is not None:
        return (meta["scene"], meta["frame"])
    qa_id = str(meta.get("qa_id", ""))
    head, _, tail = qa_id.rpartition("_")
    return (head,) if head and tail.isdigit() else None


def _match(row: dict, protocol: str) -> tuple[list, float]:
    return match_points(_points(row["pred_px"], protocol), _points(row["ref_px"], protocol),
                        by_camera=protocol == "pocket")


def _graph_keep(rows: list[dict], notes: list[str], protocol: str) -> list[dict]:
    """The graph filter over prepared rows (see the module docstring), with `protocol`'s points."""
    frames: dict[tuple, list[dict]] = {}
    kept, dropped, no_question, no_frame, no_first = [], 0, 0, 0, 0
    for row in rows:
        key = _frame_key(row["meta"])
        if key is None:
            no_frame += 1
            kept.append(row)
        else:
            frames.setdefault(key, []).append(row)
    official = protocol == "official"
    for frame_rows in frames.values():
        frame_rows.sort(key=lambda r: _qa_index(r["meta"]))
        first, rest = frame_rows[0], frame_rows[1:]
        no_first += _qa_index(first["meta"]) != 0
        matched, _ = _match(first, protocol)
        graph = {(x, y) if official else (cam, x, y) for cam, x, y in matched}
        kept.append(first)
        for row in rest:
            question = row["meta"].get("question_pixels")
            if question is None:
                no_question += 1
                kept.append(row)
                continue
            points = [(x, y) if official else (cam, x, y) for cam, x, y in _points(str(question), protocol)]
            if all(p in graph for p in points):
                kept.append(row)
            else:
                dropped += 1
    notes.append(f"graph filter ({protocol} rule) applied: {dropped} of {len(rows)} samples dropped (question "
                 f"points not matched in the frame's first QA)")
    if no_question:
        notes.append(f"graph filter: {no_question} samples without meta['question_pixels'] were kept unfiltered")
    if no_frame:
        notes.append(f"graph filter: {no_frame} samples without meta['scene']/['frame'] or a qa_id "
                     f"'<scene>_<frame>_<i>' were kept unfiltered")
    if no_first:
        notes.append(f"graph filter: {no_first} frames lack their first QA (qa_id index 0); their lowest-numbered "
                     f"QA set the matched points instead, which the official scorer never does")
    return kept


def aggregate_drivelm(predictions: Sequence[Any], context: Mapping[str, Any] | None = None) -> dict:
    """Corpus-level DriveLM metrics for the run's ``drivelm`` predictions.

    Each prediction has ``.prediction``, ``.reference``, ``.meta`` (and ``.task``; other tasks are ignored).
    `context` may hold ``"protocol"`` (``"official"``, the default, or ``"pocket"``: see the module notes),
    ``"graph_filter"`` (True / False; None or absent: the protocol's choice), ``"judge"`` (a
    :class:`~domains.driving.judge.JudgeConfig` mapping, or None) and ``"progress"`` (bool, the judge's
    progress bar). Returns ``accuracy, match_f1, Bleu_1..4, ROUGE_L, CIDEr, language, chatgpt, match,
    final_score, final_score_no_judge`` (None = not computed, never a silent 0), ``notes`` (strings saying what
    was not computed and why) and ``protocols`` (what each metric followed, :func:`protocols`).
    """
    context = dict(context or {})
    protocol = check_protocol(context.get("protocol") or "official")
    graph_filter = context.get("graph_filter")
    if graph_filter is None:
        graph_filter = protocol == "official"
    notes: list[str] = []
    rows: list[dict] = []
    bad = 0
    for p in predictions:
        if (_field(p, "task") or "drivelm") != "drivelm":
            continue
        meta = _field(p, "meta") or {}
        prediction = str(_field(p, "prediction") or "")  # as generated: the official accuracy is exact
        try:
            tags = drivelm_tags(meta)
            mode = _view_mode(meta, p)
            row = {"meta": meta, "tags": tags, "pred_px": _in_pixels(prediction, mode, meta),
                   "ref_px": _reference_pixels(meta, str(_field(p, "reference") or ""), mode)}
        except ValueError:
            bad += 1
            continue
        rows.append(row)
    if bad:
        notes.append(f"{bad} predictions without a valid meta['drivelm_tag'] / meta['view_mode'] were left out")
    answered = [r for r in rows if r["ref_px"].strip()]
    if len(answered) < len(rows):  # DriveLM's q_only test file has no answers: scoring it would read as all wrong
        notes.append(f"{len(rows) - len(answered)} samples have no reference answer (DriveLM's q_only test file "
                     f"holds none) and were left out: score the val split")
        rows = answered
    notes.append(f"DriveLM protocol: {protocol}" + (" (the challenge's evaluation.py rules)" if protocol == "official"
                                                   else " (lenient; not comparable with the challenge's numbers)"))
    if graph_filter:
        rows = _graph_keep(rows, notes, protocol)
    else:
        notes.append("graph filter not applied (the official scorer drops a later QA whose question points were "
                     "not matched in the frame's first QA; set eval.graph_filter: true to apply it)")

    by_tag = {t: [r for r in rows if t in r["tags"]] for t in TAG_NAMES}
    notes.append("DriveLM samples: " + ", ".join(f"{len(by_tag[t])} {TAG_NAMES[t]} (tag {t})" for t in TAG_NAMES))

    out: dict[str, Any] = dict.fromkeys(["accuracy", "match_f1", *COCO_KEYS, "language", "chatgpt", "match",
                                         "final_score", "final_score_no_judge"])
    out["accuracy"] = _mean([answer_accuracy(r["pred_px"], r["ref_px"], protocol) for r in by_tag[0]])
    out["match_f1"] = _mean([_match(r, protocol)[1] for r in by_tag[3]])
    odd = sum(official_points(r["ref_px"])[1] for r in by_tag[3])
    if protocol == "official" and odd:
        notes.append(f"{odd} tag-3 references hold an odd count of decimal numbers; their last number was dropped "
                     f"(the official scorer stops with an error on them)")
    if by_tag[2]:
        lang = coco_scores([r["pred_px"] for r in by_tag[2]], [r["ref_px"] for r in by_tag[2]], protocol)
        out.update(lang)
        out["language"] = language_score(lang)
        notes.append(NOTE_TOKENIZER[protocol])
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
        scores, errors = judge.rate_many(pairs, progress=context.get("progress", True))
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
    out["protocols"] = protocols(protocol, protocol if graph_filter else "off")
    return out


aggregate_drivelm.main_metric = "final_score"  # type: ignore[attr-defined]
aggregate_drivelm.fallback_main_metric = "final_score_no_judge"  # type: ignore[attr-defined]
score_drivelm.aggregate = aggregate_drivelm  # type: ignore[attr-defined]
score_drivelm.main_metric = "final_score"  # type: ignore[attr-defined]
score_drivelm.fallback_main_metric = "final_score_no_judge"  # type: ignore[attr-defined]
score_drivelm.scale = (0, 1)  # type: ignore[attr-defined]  # final_score (and the no-judge part) are 0-1
score_drivelm.protocols = protocols("official")  # type: ignore[attr-defined]

METRICS = {"drivelm": score_drivelm}
