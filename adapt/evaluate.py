"""Generation, scoring, reports and pictures: what adaptation gained on the domain and kept in general.

    preds = predict(vlm, processor, records)                    # greedy, batched, left padded
    runs = {"base": summarize(base_preds, kinds), "adapted": summarize(preds, kinds)}
    write_report(out_dir, runs, kinds)                          # eval.json + eval.md (with deltas)
    plot_comparison(runs, kinds, out_dir / "comparison.png")

**Main metric.** Each task has one (accuracy for mc/classification, acc@0.5 for grounding, token_f1
for short answers; registered tasks name theirs, see `adapt.metrics`). A source's main metric is the
mean over its samples of each sample's task's main metric, so a source mixing tasks still has one
number, unless one of its tasks' main metric is not on the 0-1 scale (as the task declared it,
``register_task(..., scale=(0, 100))``; one declaring none is read as 0-1, and a value outside [0, 1] warned of): then
it has none, and a main per task instead (``task_main``). The "domain" and "general"
aggregates are means over all samples of their sources (sources weigh by their sample counts), not means of
source means, under the same rule.

**Kinds.** `kinds` maps a source to "domain" or "general" (general = replay / retention sets).
Sources it does not name count as "domain".

**Protocols.** A summary's ``protocols`` names, for every task it scored, the rule each metric follows and
its source (`adapt.metrics.protocols_of`, updated by what a corpus-level aggregate reports for the run's
settings, e.g. DriveLM's ``eval.protocol``); the report prints them in a "Protocols" table.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from domains.base import markdown_cell
from domains.files import atomic_write
from model.progress import Progress, progress_bar

from .data.samples import MALFORMED_CONVERSATION, NO_SCORER, UNDECODABLE_IMAGE, UNSCORABLE, SkipLog
from .metrics import (
    aggregator,
    check_protocols,
    infer_task,
    main_metric,
    main_scale,
    protocols_of,
    question_of,
    reference_of,
    registered_tasks,
    score,
)

GROUPS = ("domain", "general")


@dataclass
class Prediction:
    """One evaluated sample. `prompt` is the question (last human turn), not the templated prompt."""

    source: str
    line: int
    task: str
    prompt: str
    prediction: str
    reference: str
    scores: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # the record's meta (a domain's corpus metrics read it)


class Skipped(NamedTuple):
    """A record `predict` could not evaluate."""

    source: str
    line: int
    reason: str
    kind: str = UNDECODABLE_IMAGE  # the skip log's reason: what went wrong, in short
    task: str | None = None  # the task it would have been scored as; None where that cannot be told

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


class Predictions(list):
    """A list of `Prediction`s that also remembers the records skipped (``skipped``: `Skipped` tuples)."""

    def __init__(self, items: Iterable[Prediction] = (), skipped: Sequence[Skipped] = ()):
        super().__init__(items)
        self.skipped: list[Skipped] = list(skipped)


# --------------------------------------------------------------------------------------------------
# generation


def split_for_eval(record: Any) -> tuple[list[dict], str]:
    """The conversation up to (excluding) the LAST gpt turn, and the reference answer.

    The reference is `record.answer` when set (a number as its text: ``3`` is ``"3"``, as predictions are text),
    else the value of that last gpt turn (`adapt.metrics.reference_of`). Earlier gpt turns stay in the prompt as
    history.
    """
    turns = list(record.conversations)
    gpt_turns = [k for k, t in enumerate(turns) if t.get("from") == "gpt" or t.get("role") == "assistant"]
    if not gpt_turns and getattr(record, "answer", None) is None:
        raise ValueError(f"{record.source}:{record.line}: no gpt turn and no answer to evaluate against")
    return (turns[:gpt_turns[-1]] if gpt_turns else turns), reference_of(record)


def _task_or_none(record: Any) -> str | None:
    """`record`'s task (`infer_task`), or None where its options or reference do not tell it."""
    try:
        return infer_task(record)
    except ValueError:
        return None


def _prompt_length(record: Any) -> int:
    """About the tokens of the record's prompt as `predict` encodes it, to batch prompts of like length: its measured
    tokens (`adapt.data.samples.measure`) before its last answer, the last run of trained labels.

    Not `record.n_tokens`: that counts the answer too, and answers differ in length far more than prompts (a
    grounding box against a one-word class), so batches sorted by it held prompts of mixed lengths, all padded to
    the longest."""
    from model.processor import IGNORE_INDEX

    plan = getattr(record, "token_plan", None)
    if plan is None:
        return getattr(record, "n_tokens", None) or 0
    labels = plan.labels
    end = len(labels)
    while end > 0 and labels[end - 1] == IGNORE_INDEX:  # after the last answer
        end -= 1
    while end > 0 and labels[end - 1] != IGNORE_INDEX:  # the last answer
        end -= 1
    return end or len(labels)


def _tiling_for(processor, record):
    max_tiles = getattr(record, "max_tiles", None)
    if not max_tiles or max_tiles == processor.tiling.max_tiles:
        return None
    return processor.tiling.with_max_tiles(max_tiles)


def predict(
    vlm,
    processor,
    records: Sequence[Any],
    max_new_tokens: int = 32,
    batch_size: int = 8,
    progress: Progress = True,
    desc: str = "evaluating",
    **generate_kwargs,
) -> Predictions:
    """Greedy answers for `records`, scored with `adapt.metrics.score`, in the records' order.

    Batches are left padded (so every row's last prompt token sits at the end) and formed from
    records of similar prompt length (`_prompt_length`) to waste little padding; `record.max_tiles`
    caps a record's tiles as in training. Records whose images fail to load are skipped, counted in
    the result's ``skipped`` and named in a warning. Domain plugins' task scorers are registered first
    (`adapt.domains_bridge.register_domain_metrics`). `progress`: a bar with ETA, ``"lines"`` or nothing
    (:func:`model.progress.progress_bar`).
    `generate_kwargs` go to `generate` over the greedy defaults (e.g. ``min_new_tokens``).
    """
    import torch

    from model.chat import ConversationError
    from model.tiling import ImageLoadError, load_image

    from .domains_bridge import register_domain_metrics

    register_domain_metrics()  # domain plugins' task scorers (e.g. rsvqa per question type)
    known_tasks = registered_tasks()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    records = list(records)
    # longest prompt first: the batch most likely to run out of memory runs first, and the ETA errs high
    order = sorted(range(len(records)), key=lambda k: -_prompt_length(records[k]))
    device = next(vlm.parameters()).device
    dtype = next(vlm.parameters()).dtype
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=processor.pad_token_id,
        **processor.stop_kwargs(),
    )
    gen_kwargs.update(generate_kwargs)
    results: dict[int, Prediction] = {}
    skipped: list[tuple[int, Skipped]] = []
    was_training = vlm.training
    vlm.eval()
    bar = progress_bar(total=len(records), desc=desc, unit="sample", progress=progress)
    try:
        for start in range(0, len(order), batch_size):
            encoded, meta = [], []
            for k in order[start : start + batch_size]:
                record = records[k]
                try:
                    images = [load_image(path, max_pixels=processor.tiling.max_pixels) for path in (record.images or [])]
                except ImageLoadError as exc:
                    skipped.append((k, Skipped(record.source, record.line, str(exc))))
                    bar.update(1)
                    continue
                try:
                    task = infer_task(record)
                except ValueError as exc:  # options or a reference its task cannot be told from: said, not scored
                    skipped.append((k, Skipped(record.source, record.line, str(exc), UNSCORABLE)))
                    bar.update(1)
                    continue
                if task not in known_tasks:  # said before the model spends time on it
                    skipped.append((k, Skipped(record.source, record.line, f"no scorer for task {task!r}; "
                                               f"known: {', '.join(known_tasks)}", NO_SCORER)))
                    bar.update(1)
                    continue
                try:
                    conversation, reference = split_for_eval(record)
                except ValueError as exc:  # an answer of another type (a list): said, not a traceback ending the run
                    skipped.append((k, Skipped(record.source, record.line, str(exc), UNSCORABLE)))
                    bar.update(1)
                    continue
                tiling = _tiling_for(processor, record)
                try:
                    encoded.append(processor(conversation, images, add_generation_prompt=True, tiling=tiling))
                except ConversationError as exc:  # e.g. a control token in the text: said, never fed to the model
                    skipped.append((k, Skipped(record.source, record.line, str(exc), MALFORMED_CONVERSATION)))
                    bar.update(1)
                    continue
                meta.append((k, record, reference))
            if not encoded:
                continue
            batch = processor.pad(encoded, padding_side="left")
            batch = {name: t.to(device) for name, t in batch.items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(dtype)
            if getattr(vlm, "names_samples", False):  # an export runtime's error then says which sample failed
                batch["samples"] = [f"{record.source}:{record.line}" for _, record, _ in meta]
            with torch.inference_mode():
                new_tokens = vlm.generate(**batch, **gen_kwargs)
            for (k, record, reference), row in zip(meta, new_tokens):
                text = processor.decode(row)
                try:
                    scores = score(text, record, reference)
                except ValueError as exc:  # the record's reference or meta does not fit its task's scorer
                    skipped.append((k, Skipped(record.source, record.line, str(exc), UNSCORABLE)))
                    continue
                # a NaN made its source's mean NaN, reported as "—" (not computed), and eval.json invalid JSON
                bad = [f"{name} = {value}" for name, value in scores.items() if not math.isfinite(value)]
                if bad:
                    skipped.append((k, Skipped(record.source, record.line, f"the {infer_task(record)!r} scorer gave "
                                               f"{', '.join(bad)}: a score must be a finite number", UNSCORABLE)))
                    continue
                results[k] = Prediction(
                    source=record.source,
                    line=record.line,
                    task=infer_task(record),
                    prompt=question_of(record),
                    prediction=text,
                    reference=reference,
                    scores=scores,
                    meta=dict(getattr(record, "meta", None) or {}),
                )
            bar.update(len(meta))
    finally:
        bar.close()
        vlm.train(was_training)
    skipped = [entry._replace(task=_task_or_none(records[k])) for k, entry in sorted(skipped, key=lambda item: item[0])]
    if skipped:
        shown = "; ".join(map(str, skipped[:10])) + (f"; … and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        warnings.warn(
            f"skipped {len(skipped)} of {len(records)} records (an image that failed to load, text the model cannot "
            f"read, a reference its task cannot score): {shown}", stacklevel=2
        )
    return Predictions((results[k] for k in range(len(records)) if k in results), skipped=skipped)


# the files `adapt eval` writes into its --out, here and in adapt/run_eval.py and adapt/cli.py (with SKIP_FILES, and with
# --runtime a folder per export format); adapt.checkpointing.EVAL_OUTPUTS is made of them, so a new one is known there
EVAL_JSON, EVAL_MD, COMPARISON_PNG = "eval.json", "eval.md", "comparison.png"
PREDICTIONS = "predictions_{label}.jsonl"


def save_predictions(predictions: Iterable[Prediction], path: str | os.PathLike) -> None:
    """One JSON object per line (the `Prediction` fields), written whole: a failure leaves the old file as it was."""
    text = "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in predictions)
    atomic_write(Path(path), lambda f: f.write(text), binary=False)


def load_predictions(path: str | os.PathLike) -> list[Prediction]:
    """Read what `save_predictions` wrote; a line that is no prediction is a ValueError naming its file:line."""
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
                out.append(Prediction(**fields))
            except (ValueError, TypeError) as err:  # bad JSON, a field Prediction lacks, a line that is no object
                raise ValueError(f"{path}:{n}: not a prediction as save_predictions writes them: {err}") from None
    return out


# --------------------------------------------------------------------------------------------------
# summaries and reports


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _aggregate(task: str, preds: list[Prediction], context: Mapping[str, Any]
               ) -> tuple[dict, list[str], float | None, dict]:
    """Run `task`'s corpus-level aggregate: (metrics with None = not computed, notes, main value or None,
    protocols it reports)."""
    fn = aggregator(task)
    if fn is None:
        return {}, [], None, {}
    out = dict(fn(preds, dict(context)) or {})
    notes = out.pop("notes", []) or []
    notes = [notes] if isinstance(notes, str) else [str(n) for n in notes]  # one note, not one per character
    protocols = check_protocols(out.pop("protocols", None) or {}, f"protocols returned by the {task} aggregate")
    values: dict[str, float | None] = {}
    for name, value in out.items():
        try:
            values[name] = None if value is None else float(value)
        except (TypeError, ValueError):  # a raw float() traceback named neither the task nor the metric
            raise ValueError(f"the {task!r} aggregate gave {name} = {value!r}, not a number (None: not computed)"
                             ) from None
    named = [n for n in (getattr(fn, "main_metric", None), getattr(fn, "fallback_main_metric", None)) if n is not None]
    if named and not any(n in values for n in named):  # a misspelt name left every sample out, as "not computed"
        raise ValueError(f"the {task!r} aggregate names its main metric {' / '.join(map(repr, named))}, but returned "
                         f"{', '.join(map(repr, values)) or 'no metrics'}")
    for name, value in values.items():  # a NaN would be a mean of NaN and invalid JSON in eval.json
        if value is not None and not math.isfinite(value):
            values[name] = None
            notes.append(f"{task}: the corpus score {name} came out {value} and is left as not computed")
    main = None
    for name in (getattr(fn, "main_metric", None), getattr(fn, "fallback_main_metric", None)):
        if name is not None and values.get(name) is not None:
            main = values[name]
            if name != getattr(fn, "main_metric", None):
                notes.append(f"main metric for {task}: {name} ({fn.main_metric} not computed)")
            break
    return values, notes, main, protocols


def summarize(predictions: Iterable[Prediction], kinds: Mapping[str, str] | None = None,
              context: Mapping[str, Any] | None = None) -> dict:
    """Per-source and per-group means of a run's scores.

    Returns ``{"sources": {source: {"kind", "n", "main", "metrics": {name: mean}, "metric_n": {name: samples},
    "metric_task": {name: task}, "tasks": {task: n}, "samples", "skipped", "skipped_tasks": {task: k}, "notes"}},
    "groups": {"domain"|"general": {"n", "main", "sources": [...], "left_out": {source: k}}}, "n", "skipped",
    "protocols": {task: {metric: {"protocol", "rule", "source"}}}}``.
    A metric's mean is over the source's samples that have it (``metric_n`` counts them; a corpus-level metric has
    no count there); a metric several of the source's tasks return is given per task, named ``<task>/<metric>``
    (never one mean across tasks: the one cross-task figure is ``main``, the mean over samples). Tasks with a
    corpus-level aggregate
    (`adapt.metrics.register_task(..., aggregate=...)`) get its values instead (None = not computed; named
    ``<task>/<metric>`` where the source holds other tasks too) and its main value stands for each of their
    samples in the source and group means. `context` goes to
    the aggregates (e.g. ``{"judge": ...}``). Groups without sources are left out. A group's ``n`` counts the
    samples in its mean; ``left_out`` names the sources whose samples have no main metric (a corpus score not
    computed) and how many, which the mean leaves out. A source's ``samples`` fingerprints which of its lines were
    scored, so a report gives no gain between runs that scored as many but different samples; ``skipped_tasks``
    counts its skipped samples by task (`Skipped.task`; those whose task cannot be told are left out), so a report
    of one run names a task it lost every sample of. A source or group
    whose samples' main metrics come from several tasks, one of them not on the 0-1 scale (its declared scale,
    `adapt.metrics.main_scale`, so every run reads a task alike; a task declaring none is read as 0-1, and a value
    outside [0, 1], or a declared task's outside its scale, is warned of and noted under its source), has
    ``"main": None`` and ``"task_main": {task: mean}`` (and, a source, a note saying so): one mean of 0-100 ratings
    and accuracies means nothing.
    """
    kinds = dict(kinds or {})
    context = dict(context or {})
    skipped = list(getattr(predictions, "skipped", []))
    predictions = list(predictions)
    per_source: dict[str, list[Prediction]] = {}
    for p in predictions:
        per_source.setdefault(p.source, []).append(p)
    for entry in skipped:
        per_source.setdefault(entry.source, [])

    sources: dict[str, dict] = {}
    protocols: dict[str, dict[str, dict[str, str]]] = {}
    group_mains: dict[str, list[float]] = {g: [] for g in GROUPS}
    group_task_mains: dict[str, dict[str, list[float]]] = {g: {} for g in GROUPS}
    group_sources: dict[str, list[str]] = {g: [] for g in GROUPS}
    group_left_out: dict[str, dict[str, int]] = {g: {} for g in GROUPS}
    source_mains: dict[str, dict[str, list[float]]] = {}
    for source in sorted(per_source):
        preds = per_source[source]
        kind = kinds.get(source, "domain")
        if kind not in GROUPS:
            raise ValueError(f"kind of source {source!r} must be 'domain' or 'general', got {kind!r}")
        values: dict[tuple[str, str], list[float]] = {}  # (task, metric) -> its samples' values
        tasks: dict[str, int] = {}
        by_task: dict[str, list[Prediction]] = {}
        for p in preds:
            tasks[p.task] = tasks.get(p.task, 0) + 1
            by_task.setdefault(p.task, []).append(p)
        corpus: dict[str, float | None] = {}
        metric_task: dict[str, str] = {}  # each metric's task: a report joins runs on it, whatever a run named it
        notes: list[str] = []
        mains: dict[str, list[float]] = {}  # task -> its samples' main values
        for task, task_preds in by_task.items():
            aggregated = aggregator(task) is not None
            agg_values, agg_notes, agg_main, agg_protocols = _aggregate(task, task_preds, context)
            protocols.setdefault(task, protocols_of(task)).update(agg_protocols)
            # beside other tasks, an aggregate is named by its task: a DriveLM "accuracy" must not stand for
            # the mean "accuracy" of the source's multiple-choice samples
            named = agg_values if len(by_task) == 1 else {f"{task}/{k}": v for k, v in agg_values.items()}
            corpus.update(named)
            metric_task.update(dict.fromkeys(named, task))
            notes += agg_notes
            for p in task_preds:
                for name, value in p.scores.items():
                    if name not in agg_values:
                        values.setdefault((task, name), []).append(float(value))
                m = agg_main if aggregated else main_metric(p.task, p.scores)
                if m is not None:
                    mains.setdefault(task, []).append(float(m))
        # a name several tasks return (mc's and classification's "accuracy", short's and vqa's "exact_match") is
        # kept per task: one mean over both hid which task scored what, and mixed two normalisations
        shared = {name for name, k in Counter(name for _, name in values).items() if k > 1}
        metric_task = {(f"{task}/{name}" if name in shared else name): task for task, name in values} | metric_task
        values = {(f"{task}/{name}" if name in shared else name): v for (task, name), v in values.items()}
        metrics = {name: _mean(v) for name, v in values.items()}
        metrics.update(corpus)
        sources[source] = {
            "kind": kind,
            "n": len(preds),
            "main": _mean(flat := [v for vs in mains.values() for v in vs]),
            "metrics": metrics,
            "metric_n": {name: len(v) for name, v in values.items()},
            "metric_task": {name: metric_task[name] for name in metrics},
            "tasks": tasks,
            "samples": _fingerprint(p.line for p in preds),
            "skipped": sum(1 for e in skipped if e.source == source),
            "skipped_tasks": dict(Counter(e.task for e in skipped if e.source == source and e.task is not None)),
            "notes": list(dict.fromkeys(notes)),
        }
        source_mains[source] = mains
        group_mains[kind].extend(flat)
        for task, vs in mains.items():
            group_task_mains[kind].setdefault(task, []).extend(vs)
        group_sources[kind].append(source)
        if len(flat) < len(preds):  # e.g. DriveLM without a final score: its samples cannot enter the group mean
            group_left_out[kind][source] = len(preds) - len(flat)
    # a task's main metric is on the scale it declared (a 0-100 rating scoring only 0s in one run is still 0-100),
    # else on the 0-1 scale, never judged from a run's values (a base run of 0s read 0-1, the adapted one not); a
    # mean across tasks of which one is not on 0-1 (a 0-100 rating beside accuracies) means nothing, so such a
    # source or group has a main per task
    off_scale = {task for by_task in source_mains.values() for task in by_task
                 if main_scale(task) is not None and main_scale(task) != (0, 1)}
    outside_scale: dict[str, float] = {}  # task -> a main value of it outside the scale it is read on
    for source, mains in source_mains.items():
        for task, vs in mains.items():
            low, high = main_scale(task) or (0, 1)
            outside = [v for v in vs if not low <= v <= high]
            if outside:
                outside_scale.setdefault(task, outside[0])
                sources[source]["notes"].append(_outside_scale_note(task, outside[0]))
    if outside_scale:
        warnings.warn("; ".join(_outside_scale_note(t, v) for t, v in outside_scale.items()), stacklevel=2)
    for source, mains in source_mains.items():
        if _mixed_scales(mains, off_scale):
            sources[source]["main"] = None
            sources[source]["task_main"] = {task: _mean(vs) for task, vs in mains.items()}
            sources[source]["notes"].append(_mixed_scales_note(mains, off_scale))
    groups = {
        g: {"n": len(group_mains[g]), "main": _mean(group_mains[g]), "sources": group_sources[g],
            "left_out": group_left_out[g]}
        for g in GROUPS
        if group_sources[g]
    }
    for g, entry in groups.items():
        if _mixed_scales(group_task_mains[g], off_scale):
            entry.update(main=None, task_main={task: _mean(vs) for task, vs in group_task_mains[g].items()})
    return {"sources": sources, "groups": groups, "n": len(predictions), "skipped": len(skipped),
            "protocols": {task: protocols[task] for task in sorted(protocols)}}


def _mixed_scales(mains: Mapping[str, list[float]], off_scale: set[str]) -> bool:
    """Whether the main values of several tasks (``{task: values}``) cannot make one mean: one of them is not on
    the 0-1 scale (two such may differ from each other too: 0-100 and x10)."""
    return len(mains) > 1 and any(task in off_scale for task in mains)


def _outside_scale_note(task: str, value: float) -> str:
    """What to say of a main metric `value` of `task` outside its scale (declared, else 0-1)."""
    if (scale := main_scale(task)) is not None:
        return (f"task {task!r} declares its main metric on {scale[0]:g}-{scale[1]:g}, but it scored {value:g}: "
                f"its scorer or its declared scale is wrong (adapt.metrics.register_task({task!r}, ..., scale=...))")
    return (f"task {task!r} declares no scale, so its main metric is read on the 0-1 scale (and averaged with other "
            f"tasks' as such), but it scored {value:g}; declare its range: "
            f"adapt.metrics.register_task({task!r}, ..., scale=(low, high)), e.g. scale=(0, 100)")


def _mixed_scales_note(mains: Mapping[str, list[float]], off_scale: set[str]) -> str:
    off = sorted(task for task in mains if task in off_scale)
    declared = [f"{task} {low:g}-{high:g}" for task in off for low, high in [main_scale(task)]]
    return (f"no one main metric: the main metric of {', '.join(off)} is not on the 0-1 scale of the other tasks' "
            f"(declared {', '.join(declared)}), so each task's mean is given instead: "
            f"{', '.join(f'main ({task})' for task in mains)}")


def _fingerprint(lines: Iterable[int]) -> str:
    """A short digest of a set of sample lines: equal for two runs that scored the same samples of a source."""
    return hashlib.sha256(",".join(map(str, sorted(lines))).encode()).hexdigest()[:16]


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _fmt_delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    return f"{a - b:+.3f}"


def _cells(vals: Mapping[str, float | None], names: list[str], compared: list[tuple[str, str]]) -> list[str]:
    """Each run's value, then each compared run's delta against its base."""
    return [_fmt(vals[n]) for n in names] + [_fmt_delta(vals[n], vals[b]) for n, b in compared]


def _base_pairs(names: list[str]) -> list[tuple[str, str]]:
    """``(run, its base)`` for every run with one: "base", else (an export runtime's runs, ``adapted-q8_0``) the base
    run of the same variant, ``base-q8_0``."""
    pairs = []
    for n in names:
        if n == "base" or (n.startswith("base-") and "base" not in names):
            continue
        variant = n.rsplit("-", 1)[1] if "-" in n else None
        base = "base" if "base" in names else f"base-{variant}" if variant and f"base-{variant}" in names else None
        if base is not None:
            pairs.append((n, base))
    return pairs


def _per_run(counts: Sequence[int]) -> str:
    """One count where every run's is the same, else each run's in run order: de-duplicated, 1, 0 and 1 read "1/0"."""
    return "/".join(map(str, counts if len(set(counts)) > 1 else counts[:1])) or "0"


def _ns(entries: list[dict | None]) -> str:
    """Each run's sample count of a source or group (`_per_run`; 0 for a run without it)."""
    return _per_run([e["n"] if e is not None else 0 for e in entries])


def _metric_n(own: list[str | None], entries: list[dict | None]) -> str:
    """`` (n = k)`` after a metric averaged over fewer samples than its source has (closed_accuracy over the closed
    questions alone, accuracy/count over the count questions), else ``""``: the denominator a quoted number needs.
    `own`: each entry's name for the metric (`_metric_rows`). Every run's count, not only those below their run's n
    (one run's 2 of 3 beside another's 3 of 3 read "(n = 2)" for both): one where the runs with the metric agree, else
    each run's in run order (0 for a run without it)."""
    counts = [((e or {}).get("metric_n") or {}).get(m) for e, m in zip(entries, own)]
    if all(k is None or k == e.get("n") for e, k in zip(entries, counts)):
        return ""
    present = [k for k in counts if k is not None]
    return f" (n = {_per_run(present if len(set(present)) == 1 else [k or 0 for k in counts])})"


NO_SAMPLES = "no samples"  # the cell of a run that scored no sample of the row's task or source (all skipped)


def _no_samples(entry: Mapping[str, Any] | None, task: str | None = None) -> str | None:
    """The cell of a run (`entry`: its summary of a source) that scored no sample of the source, or of `task`:
    NO_SAMPLES with how many were skipped where the summary says; None where it scored some."""
    if not (entry or {}).get("n"):
        skipped = (entry or {}).get("skipped")
    elif task is not None and task not in (entry.get("tasks") or {}):
        skipped = (entry.get("skipped_tasks") or {}).get(task)
    else:
        return None
    return NO_SAMPLES + (f" ({skipped} skipped)" if skipped else "")


def _metric_rows(entries: list[dict | None]) -> list[tuple[str, str | None, list[str | None]]]:
    """A source's metric rows across runs' summaries: (name shown, its task or None where unknown, each entry's own
    name for it or None). Rows join on (task, metric) (``metric_task``), not on the name: a source's ``mc/accuracy``
    is ``accuracy`` in a run that lost all its other tasks' samples. A name is shown as the runs give it, or
    ``<task>/<metric>`` where they differ or it would stand for several tasks' metrics."""
    own: dict[tuple[str | None, str], list[str | None]] = {}
    for k, e in enumerate(entries):
        for name in (e or {}).get("metrics", {}):
            task = (e.get("metric_task") or {}).get(name)
            metric = name.removeprefix(f"{task}/") if task is not None else name
            own.setdefault((task, metric), [None] * len(entries))[k] = name
    shown = {}
    for (task, metric), names in own.items():
        given = set(names) - {None}
        shown[task, metric] = given.pop() if len(given) == 1 else f"{task}/{metric}"
    clashes = Counter(shown.values())
    return [(f"{task}/{metric}" if clashes[shown[task, metric]] > 1 and task is not None else shown[task, metric],
             task, names) for (task, metric), names in own.items()]


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A markdown table: the first `text_columns` columns left aligned, numbers right aligned."""
    rule = "|".join("---" if k < text_columns else "---:" for k in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", "|" + rule + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _same_group_samples(run: Mapping[str, Any], base: Mapping[str, Any], group: str) -> bool:
    """Whether two runs' means of `group` draw on the same sources (a source left out of one, not the other, makes
    their difference no gain: it compares different samples)."""
    a, b = run.get("groups", {}).get(group) or {}, base.get("groups", {}).get(group) or {}
    return (set(a.get("sources", ())) == set(b.get("sources", ()))
            and set(a.get("left_out") or {}) == set(b.get("left_out") or {})
            and all(_same_source_samples(run, base, s) for s in a.get("sources", ())))


def _same_source_samples(run: Mapping[str, Any], base: Mapping[str, Any], source: str) -> bool:
    """Whether both runs scored the same `source` samples (one that skipped samples the other scored, an export
    runtime refusing a long prompt, averages other samples: their difference is no gain). The same number of them
    where a summary has no ``samples`` fingerprint (written before it had one)."""
    a, b = run.get("sources", {}).get(source), base.get("sources", {}).get(source)
    if a is None or b is None:
        return True
    if a.get("samples") and b.get("samples"):
        return a["samples"] == b["samples"]
    return a.get("n") == b.get("n")


def _source_cells(s: str, runs: Mapping[str, dict], vals: Mapping[str, float | None], names: list[str],
                  compared: list[tuple[str, str]], notes: list[str]) -> list[str]:
    """`_cells`, with "—" for a delta between runs that scored different numbers of `s`'s samples (noted)."""
    cells = _cells(vals, names, compared)
    for k, (n, b) in enumerate(compared):
        if vals[n] is not None and vals[b] is not None and not _same_source_samples(runs[n], runs[b], s):
            cells[len(names) + k] = "—"
            na, nb = runs[n]["sources"][s]["n"], runs[b]["sources"][s]["n"]
            note = (f"{s}: no Δ ({n} − {b}): {n} scored {na} sample{'s' * (na != 1)}, {b} {nb}"
                    + (f" other{'s' * (nb != 1)}" if na == nb else "") + " (see skips).")
            if note not in notes:
                notes.append(note)
    return cells


def _kind_of(source: str, runs: Mapping[str, dict], kinds: Mapping[str, str] | None) -> str:
    if kinds and source in kinds:
        return kinds[source]
    for summary in runs.values():
        if source in summary.get("sources", {}):
            return summary["sources"][source]["kind"]
    return "domain"


def _ordered_sources(runs: Mapping[str, dict], kinds: Mapping[str, str] | None) -> list[str]:
    names = dict.fromkeys(s for summary in runs.values() for s in summary.get("sources", {}))
    rank = {g: k for k, g in enumerate(GROUPS)}
    return sorted(names, key=lambda s: (rank.get(_kind_of(s, runs, kinds), len(GROUPS)), s))


def _protocol_rows(runs: Mapping[str, dict]) -> list[list[str]]:
    """One row per task and metric: protocol, rule, source; a metric whose protocol differs between runs gets
    a row per protocol, naming its runs."""
    entries: dict[tuple[str, str], list[tuple[dict, list[str]]]] = {}
    for name, summary in runs.items():
        for task, metrics in (summary.get("protocols") or {}).items():
            for metric, entry in metrics.items():
                seen = entries.setdefault((task, metric), [])
                for known, names in seen:
                    if known == entry:
                        names.append(name)
                        break
                else:
                    seen.append((entry, [name]))
    rows = []
    for (task, metric), seen in sorted(entries.items(), key=lambda item: item[0][0]):
        for entry, names in seen:
            protocol = entry.get("protocol", "?") + (f" ({', '.join(names)})" if len(seen) > 1 else "")
            rows.append([markdown_cell(task), markdown_cell(metric), markdown_cell(protocol), markdown_cell(entry.get("rule", "")),
                         markdown_cell(entry.get("source", ""))])
    return rows


def write_report(
    out_dir: str | os.PathLike, runs: Mapping[str, dict], kinds: Mapping[str, str] | None = None
) -> tuple[Path, Path]:
    """Write ``eval.json`` (all summaries) and ``eval.md`` (side-by-side tables) into `out_dir`.

    `runs` maps a run name to its `summarize` output, e.g. ``{"base": …, "adapted": …}``. When a
    "base" run exists, every other run gets a delta column (run − base; runs of an export runtime, ``adapted-f16``,
    against the base of the same variant, ``base-f16``, when there is no "base"): the domain row shows the
    gain, the general row the retention. A "Protocols" table names the rule and source of every metric
    (the summaries' ``protocols``). A source's metric rows join the runs on (task, metric), and a run that scored no
    sample of a row's task (all skipped) reads "no samples" there, not "—", with how many were skipped where its
    summary says (``skipped``, ``skipped_tasks``); so does its cell of a source it lost in the Sources table.
    The skip files of `out_dir` keep only these runs' tables (`SkipLog.keep_runs`), in this order.
    Returns (json_path, md_path).
    """
    if not runs:
        raise ValueError("write_report needs at least one run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(runs)
    compared = _base_pairs(names)
    header_runs = [markdown_cell(h) for h in names + [f"Δ ({n} − {b})" for n, b in compared]]

    json_path, md_path = out / EVAL_JSON, out / EVAL_MD
    json_text = json.dumps({"kinds": dict(kinds or {}), "runs": runs}, indent=2, ensure_ascii=False) + "\n"

    md: list[str] = ["# Evaluation", ""]
    md.append(
        "Main metric: accuracy for multiple choice and classification, acc@0.5 (IoU > 0.5) for grounding, "
        "token F1 for short answers, or a domain task's own; a source's is the mean over its samples, and "
        "domain/general average over all samples of their sources. Which rule each metric follows, and its "
        "source, is listed under Protocols."
    )
    md.append("")

    # at a glance: the groups
    md += ["## Domain gain and general retention (main metric)", ""]
    rows, group_notes = [], []
    for g in GROUPS:
        entries = [runs[n].get("groups", {}).get(g) for n in names]
        if not any(entries):
            continue
        vals = {n: (e or {}).get("main") for n, e in zip(names, entries)}
        cells = _cells(vals, names, compared)
        for k, (n, b) in enumerate(compared):
            if vals[n] is not None and vals[b] is not None and not _same_group_samples(runs[n], runs[b], g):
                cells[len(names) + k] = "—"
                group_notes.append(f"{g}: no Δ ({n} − {b}): the two means do not cover the same sources' samples.")
        rows.append([g, _ns(entries)] + cells)
        for n, e in zip(names, entries):
            if (e or {}).get("task_main"):
                group_notes.append(f"{g} ({n}): no one mean (—): its tasks' main metrics are not all on the 0-1 "
                                   "scale; per task: " + ", ".join(f"{markdown_cell(t)} {_fmt(v)}"
                                                                    for t, v in e["task_main"].items()) + ".")
            for source, k in ((e or {}).get("left_out") or {}).items():
                group_notes.append(f"{g} ({n}): leaves out {k} sample{'s' * (k != 1)} of {source}, whose main metric "
                                   "was not computed (n counts the samples in the mean).")
    md += _table(["group", "n"] + header_runs, rows) + [""]
    if group_notes:
        md += [f"- {note}" for note in group_notes] + [""]
    if compared:
        for n, base in compared:
            notes = []
            for g in GROUPS:
                a = runs[n].get("groups", {}).get(g, {}).get("main")
                b = runs[base].get("groups", {}).get(g, {}).get("main")
                if a is not None and b is not None and _same_group_samples(runs[n], runs[base], g):
                    extra = f" (keeps {a / b:.1%} of {base})" if g == "general" and b > 0 else ""
                    notes.append(f"{g} {a - b:+.3f}{extra}")
            if notes:
                md += [f"**{n} vs {base}:** " + "; ".join(notes) + ".", ""]

    # every source's main metric side by side
    sources = _ordered_sources(runs, kinds)
    md += ["## Sources (main metric)", ""]
    rows, source_notes = [], []
    for s in sources:
        entries = [runs[n].get("sources", {}).get(s) for n in names]
        vals = {n: (e or {}).get("main") for n, e in zip(names, entries)}
        cells = _source_cells(s, runs, vals, names, compared, source_notes)
        for k, e in enumerate(entries):  # a run that lost the whole source: said, not "—" as a main not computed
            cells[k] = _no_samples(e) or cells[k]
        rows.append([markdown_cell(s), _kind_of(s, runs, kinds), _ns(entries)] + cells)
        if any(e and e.get("task_main") for e in entries):
            source_notes.append(f"{s}: no one main metric (—) where its tasks' main metrics are not all on the 0-1 "
                                "scale; each task's is in its table below.")
    md += _table(["source", "kind", "n"] + header_runs, rows, text_columns=2) + [""]
    if source_notes:
        md += [f"- {markdown_cell(note)}" for note in source_notes] + [""]

    # which rule each metric follows, and where that rule comes from
    protocol_rows = _protocol_rows(runs)
    if protocol_rows:
        md += ["## Protocols", "",
               "What each metric computes and whose evaluation it follows; numbers compare with published ones only "
               "when the protocol is the publication's.", ""]
        md += _table(["task", "metric", "protocol", "rule", "source"], protocol_rows, text_columns=5) + [""]

    # one table per source with all its metrics
    md += ["## Per source, all metrics", ""]
    for s in sources:
        entries = [runs[n].get("sources", {}).get(s) for n in names]
        # each run's count where they differ: the largest alone read as every run's, beside an n of 3/2
        skips = {n: e.get("skipped", 0) for n, e in zip(names, entries) if e}
        skipped = "" if not any(skips.values()) else f"; {max(skips.values())} skipped"
        if len(set(skips.values())) > 1:
            skipped = "; skipped: " + ", ".join(f"{markdown_cell(n)} {k}" for n, k in skips.items())
        # every task a run scored or lost (skipped_tasks): a lone run that lost one named it nowhere
        all_tasks = sorted({t for e in entries if e for t in [*e.get("tasks", {}), *e.get("skipped_tasks", {})]})
        tasks = [markdown_cell(t) + " " + _per_run([(e or {}).get("tasks", {}).get(t, 0) for e in entries])
                 for t in all_tasks]
        md += [f"### {markdown_cell(s)} ({_kind_of(s, runs, kinds)}; n = {_ns(entries)}; tasks: {', '.join(tasks) or '—'}"
               + skipped + ")", ""]
        rows = []
        task_mains = list(dict.fromkeys(t for e in entries if e for t in e.get("task_main") or {}))
        metric_rows = _metric_rows(entries)
        for m, task, own in ([("main", None, ["main"] * len(entries))]
                             + [(f"main ({t})", t, [f"main ({t})"] * len(entries)) for t in task_mains] + metric_rows):
            if m == "main":
                vals = {n: (e or {}).get("main") for n, e in zip(names, entries)}
            elif m.startswith("main (") and m[6:-1] in task_mains:
                vals = {n: ((e or {}).get("task_main") or {}).get(m[6:-1]) for n, e in zip(names, entries)}
            else:
                vals = {n: (e or {}).get("metrics", {}).get(o) for n, e, o in zip(names, entries, own)}
            cells = _source_cells(s, runs, vals, names, compared, [])
            for k, e in enumerate(entries):  # a task (or source) a run scored no sample of: not a "not computed"
                cells[k] = _no_samples(e, task) or cells[k]
            rows.append([markdown_cell(m + _metric_n(own, entries))] + cells)
        md += _table(["metric"] + header_runs, rows) + [""]
        not_computed = [m for m, _, own in metric_rows
                        if any(e and e.get("metrics", {}).get(o, 0) is None for e, o in zip(entries, own))]
        if not_computed:
            md += [f"Not computed (shown as —, not 0): {', '.join(not_computed)}.", ""]
        lost: dict[str, list[str]] = {}  # the tasks lost -> the runs that lost them: one line, not one per run
        for n, e in zip(names, entries):
            if e and e.get("n") and (ts := [markdown_cell(t) for t in all_tasks if t not in e["tasks"]]):
                lost.setdefault(", ".join(ts), []).append(markdown_cell(n))
        if lost:
            md += [f"- {' and '.join([', '.join(ns[:-1]), ns[-1]] if len(ns) > 1 else ns)} scored no sample of "
                   f"{ts} (see skips)." for ts, ns in lost.items()] + [""]
        for note in dict.fromkeys(n for e in entries if e for n in e.get("notes", [])):
            md += [f"- {note}"]
        if any(e and e.get("notes") for e in entries):
            md += [""]

    # both built before either is written, each written whole: a failure never leaves a new eval.json beside an
    # old eval.md, nor half a file
    atomic_write(json_path, lambda f: f.write(json_text), binary=False)
    atomic_write(md_path, lambda f: f.write("\n".join(md)), binary=False)
    SkipLog.keep_runs(out, names)
    return json_path, md_path


# --------------------------------------------------------------------------------------------------
# pictures (matplotlib's Agg canvas directly: no pyplot, no global backend switch)


def _figure(width: float, height: float, ncols: int = 1, width_ratios: Sequence[float] | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, width_ratios=width_ratios)[0]
    return fig, axes


def _save_png(fig, png_path: Path) -> None:
    """`fig` as a PNG at `png_path`, written whole: a failure (a full disk, Ctrl-C) leaves the old picture, not half
    a file."""
    atomic_write(png_path, lambda f: fig.savefig(f, format="png"))


def _chart_fonts():
    """An rc context whose font.family is matplotlib's, then each installed wide font (``domains.boxes.wide_fonts``):
    matplotlib (>= 3.6) takes each glyph from the first family that has it, where DejaVu alone drew a CJK source name
    ("通用", "遥感") as empty boxes, with only a per-glyph warning."""
    import matplotlib

    from domains.boxes import wide_fonts

    return matplotlib.rc_context({"font.family": [*matplotlib.rcParams["font.family"],
                                                  *(name for name, _ in wide_fonts())]})


def _drawable(png_path: Path, full_names: str, **groups: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each name of each group (``sources=[…]``, ``runs=[…]``) as the chart at `png_path` can draw it: unchanged
    where the installed fonts have its characters (:func:`_chart_fonts`); else "?" for each run of characters none
    has, then its place in its group (#1 …) to tell such names apart; `full_names` says where that place counts and
    the names are whole. One warning names those characters, the names and the fix."""
    import matplotlib
    from matplotlib import font_manager

    from domains.boxes import unfontable

    primary = font_manager.findfont(font_manager.FontProperties(family=matplotlib.rcParams["font.family"]))
    drawn: dict[str, dict[str, str]] = {}
    missing: dict[str, None] = {}
    changed: list[str] = []
    for what, names in groups.items():
        labels = drawn[what] = {}
        for k, name in enumerate(names, 1):
            lost = unfontable(name, primary)
            missing.update(dict.fromkeys(lost))
            kept = "".join("?" if bad else "".join(run) for bad, run in itertools.groupby(name, lambda ch: ch in lost))
            labels[name] = f"{kept} #{k}" if lost else name
            if lost:
                changed.append(f"{what[:-1]} {name!r} as {labels[name]!r}")
    if missing:
        warnings.warn(f"{png_path}: no installed font has the characters {' '.join(missing)}, so it labels "
                      f"{', '.join(changed)} (#k: the name's place in {full_names}). To draw them, install a font "
                      f"for them (CJK: e.g. apt install fonts-noto-cjk), delete matplotlib's font cache "
                      f"({matplotlib.get_cachedir()}) and draw again", stacklevel=3)
    return drawn


LABEL_CHARS = 28  # a source name longer than this is cut in its middle on a chart (eval.md has it whole)


def _short(name: str, limit: int = LABEL_CHARS) -> str:
    """`name`, or its start and end around an ellipsis where longer than `limit`: one long name (a dataset split
    spelled out) took the whole figure for its tick label and squeezed the bars into a corner."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "…" + name[len(name) - (limit - 1 - head):]


BAR_INCHES = 0.45  # room for one bar and its 3-decimal value label (fontsize 7) beside the next


def _bars(ax, keys: list[str], labels: list[str], runs: Mapping[str, dict], value_of, title: str,
          run_labels: Mapping[str, str], entry_of: Callable[[dict, str], dict | None] | None = None) -> list:
    """Each run's bars of `keys` on `ax`; returns their containers, for the legend. `entry_of(run, key)`: the run's
    summary of a source, whose bar reads "no samples" (`_no_samples`) where the run scored none of it."""
    names = list(runs)
    containers = []
    width = 0.8 / max(1, len(names))
    top, bottom = 1.0, 0.0
    for k, n in enumerate(names):
        vals = [value_of(runs[n], key) for key in keys]
        finite = [v for v in vals if v is not None and math.isfinite(v)]
        top, bottom = max([top, *finite]), min([bottom, *finite])
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(labels))]
        heights = [v if v is not None else 0.0 for v in vals]
        bars = ax.bar(xs, heights, width * 0.95, label=run_labels[n])
        containers.append(bars)
        for b, v, h, key in zip(bars, vals, heights, keys):
            # a run that lost every sample of a source: its empty bar said "—", as a main metric not computed
            empty = _no_samples(entry_of(runs[n], key)) if entry_of is not None else None
            ax.annotate(empty or _fmt(v), (b.get_x() + b.get_width() / 2, h), ha="center",
                        va="top" if h < 0 else "bottom", fontsize=7, rotation=90 if empty else 0)
    crowded = len(labels) > 3
    ax.set_xticks(range(len(labels)), labels, rotation=35 if crowded else 0, ha="right" if crowded else "center",
                  rotation_mode="anchor" if crowded else "default")
    # a registered task's main metric may exceed 1 or be negative (a correlation): its bars must stay on the chart
    ax.set_ylim(1.22 * bottom, 1.22 * top)
    ax.set_ylabel("main metric")
    ax.set_title(title)
    return containers


def plot_comparison(runs: Mapping[str, dict], kinds: Mapping[str, str] | None, png_path: str | os.PathLike) -> Path:
    """Grouped bars of the main metric: domain and general for each run, and every source beside them; each tick
    names its sample count (n; runs with different counts show them all, as in eval.md)."""
    if not runs:
        raise ValueError("plot_comparison needs at least one run")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    groups = [g for g in GROUPS if any(g in r.get("groups", {}) for r in runs.values())]
    sources = _ordered_sources(runs, kinds)
    bars = max(1, len(runs))
    # each panel as wide as its bars need: two equal halves squeezed many sources' bars until their labels overlapped
    widths = [max(2.5, 1.0 + BAR_INCHES * bars * len(groups)), max(3.0, 1.0 + BAR_INCHES * bars * len(sources))]
    with _chart_fonts():
        drawn = _drawable(png_path, "eval.md's Sources table: its rows (sources), its columns (runs)",
                          sources=sources, runs=list(runs))
        fig, (ax_g, ax_s) = _figure(max(9.0, sum(widths) + 1.0), 4.6, ncols=2, width_ratios=widths)
        group_main = lambda r, g: r.get("groups", {}).get(g, {}).get("main")  # noqa: E731
        source_of = lambda r, s: r.get("sources", {}).get(s)  # noqa: E731
        group_n = [_ns([r.get("groups", {}).get(g) for r in runs.values()]) for g in groups]
        # a group's n counts only the samples in its mean (none where a corpus score was not computed): no "no samples"
        handles = _bars(ax_g, groups, [f"{g}\nn = {n}" for g, n in zip(groups, group_n)], runs, group_main,
                        "domain gain / general retention", drawn["runs"])
        labels = [f"{_short(drawn['sources'][s])}\n{_kind_of(s, runs, kinds)}, "
                  f"n = {_ns([r.get('sources', {}).get(s) for r in runs.values()])}" for s in sources]
        _bars(ax_s, sources, labels, runs, lambda r, s: (source_of(r, s) or {}).get("main"), "per source",
              drawn["runs"], source_of)
        # one legend for both panels, above them: inside a panel it covered the value labels of bars near 1.0
        # the handles themselves: get_legend_handles_labels() leaves out a label starting with "_" (--model _b=DIR)
        fig.legend(handles, [drawn["runs"][n] for n in runs], fontsize=8, loc="outside upper center", ncols=bars,
                   frameon=False)
        _save_png(fig, png_path)
    return png_path


def _log_series(log_path: Path, wanted) -> dict[str, tuple[list[float], list[float]]]:
    """``{key: (steps, values)}`` of the finite numbers under the keys `wanted(key)` accepts in a JSONL log, in step
    order; a step logged twice (a run resumed from before its last lines, a log appended to) keeps its last value:
    in file order the line ran back to the checkpoint's step and drew a zigzag."""
    points: dict[str, dict[float, float]] = {}
    with Path(log_path).open(encoding="utf-8") as f:
        for raw in f:
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), (int, float)):
                continue
            for key, value in entry.items():
                if wanted(key) and isinstance(value, (int, float)) and math.isfinite(value):
                    points.setdefault(key, {})[float(entry["step"])] = float(value)
    return {key: (sorted(by_step), [by_step[x] for x in sorted(by_step)]) for key, by_step in points.items()}


SMOOTH_ABOVE = 50  # a line of more points is drawn faint, with its running mean over it


def _running_mean(ys: Sequence[float], window: int) -> list[float]:
    """The centred mean of `ys` over `window` points (odd; fewer at the ends): per-step losses of a long run scatter
    by more than they fall, and the raw line hid the trend."""
    import numpy as np

    kernel = np.ones(window)
    sums = np.convolve(np.asarray(ys, dtype=float), kernel, mode="same")
    counts = np.convolve(np.ones(len(ys)), kernel, mode="same")
    return list(sums / counts)


def _few(xs: Sequence[float]) -> str | None:
    """A marker for a line of few points: one point or a handful draw nothing (or look like a bend) without it."""
    return "o" if len(xs) <= 2 else "." if len(xs) < 50 else None


def plot_loss_curve(log_path: str | os.PathLike, png_path: str | os.PathLike, eval_path: str | os.PathLike | None = None,
                    eval_keys: Sequence[str] = ("eval/domain", "eval/general"),
                    extra_scores: Mapping[str, Iterable[tuple[float, float]]] | None = None) -> Path:
    """Plot a JSONL training log: total ``loss`` and one line per ``loss/<source>`` key against ``step``; with
    `eval_path` (``eval_log.jsonl``, where it exists), its `eval_keys` (held-out scores) on a second axis.
    `extra_scores` adds ``(step, score)`` points of those keys measured outside the log (distill's held-out
    cosine before and after training); at a step the log has, the log's value is kept.

    Lines without a step, or that are not JSON (a run killed mid-write), are ignored. A source's
    line only has points at the steps that logged it, so sources seen rarely still draw. Rising
    general-source lines while the domain falls is forgetting.
    """
    from matplotlib.ticker import MaxNLocator

    series = _log_series(Path(log_path), lambda key: key == "loss" or key.startswith("loss/"))
    scores = (_log_series(Path(eval_path), lambda key: key in eval_keys)
              if eval_path is not None and Path(eval_path).is_file() else {})
    for key, points in (extra_scores or {}).items():
        if key not in eval_keys:
            continue
        merged = dict(zip(*scores.get(key, ([], []))))
        for step, value in points:
            if math.isfinite(value):
                merged.setdefault(float(step), float(value))
        steps = sorted(merged)
        scores[key] = (steps, [merged[x] for x in steps])
    if not series:
        raise ValueError(f"{log_path}: no lines with 'step' and 'loss' or 'loss/<source>'")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax,) = _figure(8.0, 4.5)
    longest = max(len(xs) for xs, _ in series.values())
    window = max(3, longest // 25) | 1  # one window for every line: about 1/25 of the run's logged steps
    smoothed = False
    for key in ["loss"] * ("loss" in series) + sorted(k for k in series if k != "loss"):
        xs, ys = series[key]
        label = "loss (total)" if key == "loss" else key.split("/", 1)[1]
        style = {"color": "black", "linewidth": 2} if key == "loss" else {"linewidth": 1, "alpha": 0.85}
        if len(xs) <= SMOOTH_ABOVE:
            ax.plot(xs, ys, marker=_few(xs), label=label, **style)
            continue
        (raw,) = ax.plot(xs, ys, linewidth=0.6, alpha=0.25, color=style.get("color"))
        smoothed = True
        ax.plot(xs, _running_mean(ys, window), label=label, **{**style, "color": raw.get_color()})
    values = [y for _, ys in series.values() for y in ys]
    # a loss falling by decades (from ~10 to ~0.01) is a flat line at 0 after the first steps on a linear axis
    log_scale = min(values) > 0 and max(values) / min(values) >= 100
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss" + (" (log scale)" if log_scale else ""))
    ax.set_title("training loss (total and per source)" + (" and held-out scores" if scores else "")
                 + (f"\nfaint: each step; solid: running mean over {window} steps" if smoothed else ""))
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole steps: no 0.96 … 1.04, no 2.5
    handles, labels = ax.get_legend_handles_labels()
    legend_ax = ax
    if scores:
        right = ax.twinx()
        colours = ("tab:green", "tab:purple", "tab:red", "tab:brown")  # apart from the loss lines' cycle
        for key, colour in zip([k for k in eval_keys if k in scores], colours):
            right.plot(*scores[key], linestyle="--", marker="o", linewidth=1.2, color=colour,
                       label=f"held-out {key.split('/', 1)[1]}")
        right.set_ylabel("held-out score")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
        legend_ax = right  # the twin axes draw over the first: a legend on the first is struck through by its lines
    legend = legend_ax.legend(handles, labels, fontsize=8, framealpha=0.9)
    legend.set_zorder(10)
    _save_png(fig, png_path)
    return png_path
