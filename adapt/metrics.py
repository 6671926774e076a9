"""Generic answer metrics, and the registry domains plug their task scorers into.

Every scorer answers one question about one sample: ``(prediction, record, reference) -> {name: value}``,
each value on its metric's own scale: the built-in ones in [0, 1]; a domain's may keep its benchmark's (DriveLM's
``chatgpt`` and ``match`` 0-100, ``CIDEr`` x10; see its module and report notes). Nothing rescales the range:
reports print values as given (`adapt.evaluate.summarize` warns of a main metric outside its task's ``scale``,
[0, 1] where it declares none). `score` picks the scorer from the record's task (`infer_task`).

Built-in tasks and their **main metric** (the one number a source is judged by in reports):

=====================  =============================  ===========
task                   scores                         main metric
=====================  =============================  ===========
``mc``                 ``accuracy``                   accuracy
``classification``     ``accuracy``                   accuracy
``short`` / ``vqa``    ``exact_match``, ``token_f1``  token_f1
``grounding``          ``acc@0.5``                    acc@0.5
=====================  =============================  ===========

``short`` normalises as SQuAD does (`normalize_answer`), ``vqa`` as the VQA evaluator does (`vqa_tokens`: number words
read as digits, so "two" answers "2"); in both a decimal point between digits is kept ("1.0" is not "10"), and so is a
minus sign starting a number ("-5" is not "5"). A reference left with no words (``""``, ``"."``), in these and in an
``mc`` / ``classification`` one compared as text, is a ValueError naming the record: only an empty answer (a failed
generation) would match it.

``classification`` is scored as ``mc``: a record with options by `parse_choice`, one without by exact match of
the normalised label. A domain may replace it (the remote-sensing plugin does, once `adapt.domains_bridge`
registers domain scorers, as ``adapt eval`` does) only to read labels more widely, never letters otherwise:
its scorer calls `parse_choice` with its own text comparison (``key``).

A registered task names its main metric (`register_task(..., main_metric=...)`), else it is the first
key its scorer returns, and that metric's scale (`register_task(..., scale=...)`, e.g. ``(0, 100)``; built-ins
``(0, 1)``; one declaring none is read as ``(0, 1)``). A source's main metric is the mean over its samples of each
sample's task's main metric, or one per task where they are not all on the 0-1 scale (see
`adapt.evaluate.summarize`).

**Corpus-level metrics.** Some scores exist only over a whole set (BLEU, CIDEr, DriveLM's final score).
A task registers an `aggregate` callable, ``(predictions, context) -> {name: value}``, where each
prediction has ``.prediction``, ``.reference``, ``.meta``, ``.scores`` and ``.task``, and `context`
carries run settings (``{"judge": {...} | None}``). Its values replace the per-sample means of the
same names for that task's samples; a value of None means *not computed* and is shown as such, never
as 0; a ``"notes"`` list of strings is printed under the source in reports. The aggregate names the
task's main metric with its ``main_metric`` attribute (and ``fallback_main_metric`` for when that is
None). A scorer function with an ``aggregate`` attribute brings it along (see `domains_bridge`).

**Protocols.** Every metric names the rule it follows and where that rule comes from (a paper or a public
evaluator's file), so a report can say which numbers compare with published ones. A task registers them as
``{metric: {"protocol": name, "rule": one line, "source": paper / repository path}}``
(`register_task(..., protocols=...)`, default: the scorer's ``protocols`` attribute); `protocols_of` returns
them, `adapt.evaluate.summarize` collects them per run and `write_report` prints them in a "Protocols" table.
A corpus-level aggregate whose rules depend on the run's settings returns its own under ``"protocols"``.

Choices are parsed strictly (`parse_choice`): an explicit letter, or an answer whose normalised text
*equals* one option's text. A prediction is never counted right because the reference happens to
be a substring of it ("rainforest" does not answer "forest"; see the LLaVA-Med closed-question
pitfall in domains.md §3.3), and answers naming two different options count as wrong, unless the reply concludes
with an answer phrase naming its last letter ("A is a lake and C a road. So the answer is B.").

Boxes follow InternVL: ``<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>`` on a 0–1000 grid; a hit is
IoU > 0.5 (strictly) between the first predicted and the first reference box. IoU does not change
when x and y are scaled by the image width and height, so it is computed on the grid directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from domains.answers import (  # noqa: F401  (re-exported: the one set of answer parsers every scorer uses)
    Box,
    _field,
    _where,
    bag_f1,
    box_iou,
    check_reference_is_option,
    check_reference_words,
    exact_match,
    grounding_hit,
    mc_accuracy,
    normalize_answer,
    normalize_vqa,
    option_texts,
    options_from_question,
    parse_boxes,
    parse_choice,
    question_of,
    record_options,
    reference_choice,
    reference_of,
    token_f1,
    vqa_tokens,
)

if TYPE_CHECKING:  # pragma: no cover
    from adapt.data.samples import Record

MetricFn = Callable[[str, "Record", str], dict[str, float]]
"""A task scorer: (prediction, record, reference) -> named scores, each on its metric's own scale (see above)."""

# --------------------------------------------------------------------------------------------------
# task registry and dispatch


def _score_mc(prediction: str, record: Any, reference: str) -> dict[str, float]:
    options = record_options(record)
    check_reference_is_option(record, reference, options)
    if reference_choice(reference, options) is None:  # compared as text
        check_reference_words(record, reference, normalize_answer(reference))
    return {"accuracy": mc_accuracy(prediction, reference, options)}


def _score_short(prediction: str, record: Any, reference: str) -> dict[str, float]:
    check_reference_words(record, reference, normalize_answer(reference))
    return {"exact_match": exact_match(prediction, reference), "token_f1": token_f1(prediction, reference)}


def _score_vqa(prediction: str, record: Any, reference: str) -> dict[str, float]:
    pred, ref = vqa_tokens(prediction), vqa_tokens(reference)
    check_reference_words(record, reference, ref)
    return {"exact_match": float(pred == ref), "token_f1": bag_f1(pred, ref)}


def _score_grounding(prediction: str, record: Any, reference: str) -> dict[str, float]:
    return {"acc@0.5": grounding_hit(prediction, reference)}


_SQUAD = "SQuAD v2.0 evaluate-v2.0.py"
_VQA_EVAL = "VQA v2 evaluation PythonEvaluationTools/vqaEvaluation/vqaEval.py"
_GROUNDING_RULE = ("first [[x1, y1, x2, y2]] of the answer (inside <box> when there is one) against the first "
                   "reference box on the 0-1000 grid; a box summing < 4 (none negative) is read as 0-1 and scaled by "
                   "1000 (a reference box with no value above 1 is refused: nothing could hit it); hit when the "
                   "continuous IoU is > 0.5")
_GROUNDING_SOURCE = ("Zhan et al., DIOR-RSVG, IEEE TGRS 2023 (Acc@0.5); InternVL internvl_chat/eval/refcoco/"
                     "evaluate_grounding.py (box regex, 0-1 rule; it counts "
                     "IoU >= 0.5 in pixels); Mini-InternVL internvl_chat/eval/domain_specific/rs_det/caculate.py "
                     "(IoU > 0.5; it adds 1 px to widths after rescaling to pixels, which this does not)")
_BUILTIN_PROTOCOLS: dict[str, dict[str, tuple[str, str, str]]] = {
    "mc": {"accuracy": ("pocket strict choice", "an explicit option letter, or an answer whose normalised text "
                        "equals exactly one option's, or the letter a reasoning reply names after an answer phrase "
                        "('So the answer is B.'), no other option named after it; several options otherwise, or an "
                        "option's text merely contained, score 0",
                        "pocket-adapt adapt/metrics.py (parse_choice); avoids the containment pitfall of "
                        "LLaVA-Med's evaluate_metrics.py, which counts an answer containing an option's text")},
    "short": {"exact_match": ("SQuAD", "normalised exact match: lower case, punctuation (but a decimal point "
                              "between digits and a minus sign starting a number, which SQuAD drop) and "
                              "a/an/the dropped (kept when nothing else is left)",
                              f"{_SQUAD} (normalize_answer, compute_exact)"),
              "token_f1": ("SQuAD", "token F1 over normalised words (bags of words); a reference with no words is "
                           "refused (the sample skipped)",
                           f"{_SQUAD} (compute_f1)")},
    "vqa": {"exact_match": ("VQA normalised exact match", "lower case, punctuation dropped but a decimal point "
                            "between digits and a minus sign starting a number kept, a/an/the dropped (unless "
                            "only they are left), number words up to twenty as digits, a lead-in ('the answer "
                            "is') dropped; the words equal one reference (no 10-annotator min(n/3, 1))",
                            f"{_VQA_EVAL} (processPunctuation, processDigitArticle; it reads number words up to ten "
                            "and expands contractions, which this does not)"),
            "token_f1": ("SQuAD token F1, VQA normalisation", "token F1 over the VQA-normalised words (bags of "
                         "words); a reference with no words is refused (the sample skipped)",
                         f"{_SQUAD} (compute_f1); {_VQA_EVAL}")},
    "grounding": {"acc@0.5": ("Acc@0.5 on the 0-1000 grid", _GROUNDING_RULE, _GROUNDING_SOURCE)},
}
_BUILTIN_PROTOCOLS["classification"] = _BUILTIN_PROTOCOLS["mc"]
_PROTOCOL_FIELDS = ("protocol", "rule", "source")


def _protocol_table(raw: dict[str, tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    return {metric: dict(zip(_PROTOCOL_FIELDS, row)) for metric, row in raw.items()}


_TASKS: dict[str, MetricFn] = {}
_MAIN: dict[str, str] = {}
_AGGREGATE: dict[str, Callable[..., dict]] = {}
_PROTOCOLS: dict[str, dict[str, dict[str, str]]] = {}
_SCALE: dict[str, tuple[float, float]] = {}  # task -> the (low, high) its main metric is on, where declared
_MAIN_CHECKED: set[str] = set()  # tasks whose registered main metric a first score has returned
_BUILTIN = {
    "mc": (_score_mc, "accuracy"),
    "classification": (_score_mc, "accuracy"),
    "short": (_score_short, "token_f1"),
    "vqa": (_score_vqa, "token_f1"),
    "grounding": (_score_grounding, "acc@0.5"),
}


def check_protocols(protocols: Any, what: str = "protocols") -> dict[str, dict[str, str]]:
    """`protocols` as ``{metric: {"protocol", "rule", "source"}}`` with non-empty strings, else ValueError."""
    if not isinstance(protocols, dict):
        raise ValueError(f"{what} must map metric names to {{protocol, rule, source}}, got {type(protocols).__name__}")
    out: dict[str, dict[str, str]] = {}
    for metric, entry in protocols.items():
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), str) or not entry[k].strip()
                                              for k in _PROTOCOL_FIELDS):
            raise ValueError(f"{what}[{metric!r}] must hold non-empty strings {', '.join(_PROTOCOL_FIELDS)}, "
                             f"got {entry!r}")
        out[str(metric)] = {k: entry[k] for k in _PROTOCOL_FIELDS}
    return out


def register_task(task: str, fn: MetricFn, *, overwrite: bool = False, main_metric: str | None = None,
                  aggregate: Callable[..., dict] | None = None,
                  protocols: dict[str, dict[str, str]] | None = None,
                  scale: tuple[float, float] | None = None) -> None:
    """Register the scorer of a task; domains plug their metrics in here.

    `fn(prediction, record, reference)` returns named scores, each on its metric's own scale (built-ins in [0, 1];
    only the main metric is checked, against `scale`; say a wider one in the protocol's rule). `main_metric` names
    the score reports rank by (default: the first key `fn` returns); the task's first `score` checks that `fn`
    returns it (unless an `aggregate` names the main metric). `aggregate` computes corpus-level metrics
    (see the module docstring; default: `fn.aggregate` when the scorer has one). `protocols` names the rule
    and source of each metric (default: `fn.protocols`; see the module docstring). `scale`: the (low, high) range
    of the main metric, e.g. ``(0, 100)`` for a 0-100 rating (default: `fn.scale`), by which
    `adapt.evaluate.summarize` keeps a main metric off the 0-1 scale out of a mean with others, in every run alike;
    a task declaring none is read as 0-1 (a value outside [0, 1] is warned of, never a reason to read it otherwise).
    Re-registering a task needs `overwrite=True`.
    """
    if not task or not isinstance(task, str):
        raise ValueError(f"task name must be a non-empty string, got {task!r}")
    if not callable(fn):
        raise TypeError(f"scorer for task {task!r} must be callable, got {type(fn).__name__}")
    if main_metric is not None and (not isinstance(main_metric, str) or not main_metric):
        raise ValueError(f"main_metric of task {task!r} must be a metric name (a non-empty string), got "
                         f"{main_metric!r}")
    if task in _TASKS and not overwrite and _TASKS[task] is not fn:
        raise ValueError(f"task {task!r} already has a scorer ({_TASKS[task].__qualname__}); pass overwrite=True")
    aggregate = aggregate if aggregate is not None else getattr(fn, "aggregate", None)
    if aggregate is not None and not callable(aggregate):
        raise TypeError(f"aggregate of task {task!r} must be callable, got {type(aggregate).__name__}")
    protocols = protocols if protocols is not None else getattr(fn, "protocols", None)
    checked = check_protocols(protocols, f"protocols of task {task!r}") if protocols is not None else None
    scale = scale if scale is not None else getattr(fn, "scale", None)
    scale = _check_scale(task, scale) if scale is not None else None
    _TASKS[task] = fn
    _MAIN_CHECKED.discard(task)
    if checked is not None:
        _PROTOCOLS[task] = checked
    else:
        _PROTOCOLS.pop(task, None)
    if main_metric is not None:
        _MAIN[task] = main_metric
    else:
        _MAIN.pop(task, None)
    if aggregate is not None:
        _AGGREGATE[task] = aggregate
    else:
        _AGGREGATE.pop(task, None)
    if scale is not None:
        _SCALE[task] = scale
    else:
        _SCALE.pop(task, None)


def _check_scale(task: str, scale: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        low = high = math.nan
    if isinstance(scale, (str, bytes)) or not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"scale of task {task!r} must be (low, high), two finite numbers with low < high, got "
                         f"{scale!r}")
    return low, high


def main_scale(task: str) -> tuple[float, float] | None:
    """The (low, high) range `task` declared its main metric on (`register_task(..., scale=...)`), or None."""
    return _SCALE.get(task)


def aggregator(task: str) -> Callable[..., dict] | None:
    """The corpus-level aggregate registered for `task`, if any."""
    return _AGGREGATE.get(task)


def protocols_of(task: str) -> dict[str, dict[str, str]]:
    """``{metric: {"protocol", "rule", "source"}}`` registered for `task` (empty when it names none)."""
    return {metric: dict(entry) for metric, entry in _PROTOCOLS.get(task, {}).items()}


def unregister_task(task: str) -> None:
    """Remove a task's scorer (built-ins come back with their defaults)."""
    _TASKS.pop(task, None)
    _MAIN.pop(task, None)
    _AGGREGATE.pop(task, None)
    _PROTOCOLS.pop(task, None)
    _SCALE.pop(task, None)
    _MAIN_CHECKED.discard(task)
    if task in _BUILTIN:
        register_task(task, _BUILTIN[task][0], main_metric=_BUILTIN[task][1],
                      protocols=_protocol_table(_BUILTIN_PROTOCOLS[task]), scale=(0, 1))


def registered_tasks() -> list[str]:
    return sorted(_TASKS)


for _name, (_fn, _main) in _BUILTIN.items():
    register_task(_name, _fn, main_metric=_main, protocols=_protocol_table(_BUILTIN_PROTOCOLS[_name]), scale=(0, 1))


def main_metric_name(task: str, scores: dict[str, float] | None = None) -> str | None:
    """The name of a task's main metric: registered, else the first score's name, else None."""
    if task in _MAIN:
        return _MAIN[task]
    if scores:
        return next(iter(scores))
    return None


def main_metric(task: str, scores: dict[str, float]) -> float | None:
    """The value of a sample's main metric (None if its scores lack it)."""
    name = main_metric_name(task, scores)
    return scores.get(name) if name is not None else None


def infer_task(record: Any) -> str:
    """`record.task` (an adapt `Record` or a mapping) if set; else "grounding" if the reference holds a ``<box>``; else
    "mc" if the record has options or its question lists lettered options ("A. …\\nB. …"); else "short"."""
    task = _field(record, "task")
    if task:
        return task
    if "<box>" in reference_of(record):
        return "grounding"
    if record_options(record):
        return "mc"
    return "short"


def score(prediction: str, record: Any, reference: str | None = None) -> dict[str, float]:
    """Score one prediction with its task's scorer (`infer_task`). Unknown tasks raise KeyError; a scorer's
    result that is not a mapping of numbers raises ValueError naming the record (`predict` skips it, said), and so
    does a task's first score lacking the main metric it was registered with (unless an aggregate names its own)."""
    if reference is None:
        reference = reference_of(record)
    task = infer_task(record)
    fn = _TASKS.get(task)
    if fn is None:
        raise KeyError(
            f"{_where(record)}: no scorer for task {task!r}; known: {', '.join(registered_tasks())}. "
            "Register one with adapt.metrics.register_task."
        )
    scores = fn(prediction, record, reference)
    if not isinstance(scores, Mapping):
        raise ValueError(f"{_where(record)}: the {task!r} scorer returned {type(scores).__name__}, not a mapping of "
                         "metric names to numbers")
    out: dict[str, float] = {}
    for name, value in scores.items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):  # a raw float() traceback stopped the whole evaluation
            raise ValueError(f"{_where(record)}: the {task!r} scorer gave {name} = {value!r}, not a number") from None
    if task not in _MAIN_CHECKED:  # a misspelt main metric showed "—" for the task in every table
        name = _MAIN.get(task)
        if name is not None and task not in _AGGREGATE and name not in out:  # an aggregate names its own
            raise ValueError(f"{_where(record)}: task {task!r} is registered with main_metric={name!r}, but its "
                             f"scorer returned {', '.join(map(repr, out)) or 'no scores'}: name one of them in "
                             "register_task(..., main_metric=...)")
        _MAIN_CHECKED.add(task)
    return out
