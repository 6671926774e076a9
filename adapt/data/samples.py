"""Read InternVL chat JSONL (and meta JSON) sources into validated `Record`s.

A bad record never stops a run: it is logged in a `SkipLog` under one of the `REASONS` with its
``file:line``, and reading goes on. `SkipLog.check` then turns "too many bad records" into one
clear `DataQualityError`. `measure` computes each record's exact token count (image tokens
included) from image headers alone and drops what does not fit, so nothing is ever truncated.

Format (reference: InternVL ``docs/en/get_started/chat_data_format.md``)::

    {"id": 0, "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nQ"},
                                                  {"from": "gpt", "value": "A"}]}

``image`` is a path or a list of paths, relative to the source's root (absolute paths must lie
inside it). ``video`` is a folder of frame images or a list of frame paths; ``<video>`` becomes
``Frame-1: <image>\\nFrame-2: <image>\\n…`` and every frame gets one tile. Optional pocket keys
``task``, ``answer``, ``options`` and ``meta`` pass through to evaluation.
"""

from __future__ import annotations

import codecs
import difflib
import itertools
import json
import math
import numbers
import os
import re
import warnings
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from PIL import Image

from domains.answers import number_text
from domains.base import SkipInput, markdown_cell
from domains.files import atomic_write, inside_root
from model.chat import IMAGE_PLACEHOLDER, ConversationError, image_prefix
from model.errors import PocketAdaptError
from model.limits import MAX_TILES_LIMIT
from model.tiling import upright_size

__all__ = [
    "REASONS",
    "DataError",
    "DataQualityError",
    "MissingDataError",
    "Record",
    "SkipLog",
    "SourceSpec",
    "expand_sources",
    "measure",
    "read_source",
    "record_tiling",
]

# The skip reasons, verbatim (they appear in reports and skips.json).
INVALID_JSON = "invalid JSON"
NOT_OBJECT = "not a JSON object"
MISSING_CONVERSATIONS = "missing conversations"
MALFORMED_CONVERSATION = "malformed conversation"
NO_SCORER = "no scorer for its task"  # evaluation: the record's task has no registered scorer
UNSCORABLE = "reference its task cannot score"  # evaluation: e.g. a grounding answer without a box
INVALID_MEDIA = "invalid image field"
IMAGE_COUNT_MISMATCH = "image count mismatch"
PATH_ESCAPES = "path escapes data root"
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
UNDECODABLE_IMAGE = "image does not decode"  # header read at load, pixels failed when the sample was first used
INVALID_UTF8 = "not UTF-8"
VIDEO_FILE = "video files are not supported"
TOO_LONG = "too long for max_seq_length"
MALFORMED_FIELD = "malformed scoring field"  # task / answer / options / meta of a type the reader cannot use
REASONS = (
    INVALID_UTF8, INVALID_JSON, NOT_OBJECT, MISSING_CONVERSATIONS, MALFORMED_CONVERSATION, INVALID_MEDIA,
    IMAGE_COUNT_MISMATCH, PATH_ESCAPES, MISSING_IMAGE, UNREADABLE_IMAGE, UNDECODABLE_IMAGE, VIDEO_FILE, TOO_LONG,
    MALFORMED_FIELD,
)

KINDS = ("domain", "general")
VIDEO_PLACEHOLDER = "<video>"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg", ".3gp", ".ts"})
_FROM = {"human": "human", "gpt": "gpt", "system": "system", "user": "human", "assistant": "gpt"}
_EXAMPLES_KEPT = 3


class DataError(PocketAdaptError, ValueError):
    """A data source the user must fix: a malformed meta file, clashing names, nothing left to train on."""


class MissingDataError(PocketAdaptError, FileNotFoundError):
    """An annotation file, meta file or data root named by a source does not exist."""


class DataQualityError(DataError):
    """Too large a share of a source's records was skipped."""


@dataclass
class SourceSpec:
    """One data source as a recipe names it.

    ``path`` is an InternVL chat ``.jsonl`` or an InternVL meta ``.json`` (see `expand_sources`).
    ``root`` is where image paths are resolved (default: the annotation file's folder); a meta ``.json``'s is the
    root of its entries that name none.
    ``ratio`` is a mixing weight within the source's kind; ``repeat`` is InternVL's ``repeat_time``;
    ``max_tiles`` caps the tiles per image for this source (InternVL ``max_dynamic_patch``).
    """

    name: str
    path: Path
    root: Path | None = None
    kind: str = "domain"  # "domain" | "general"
    ratio: float | None = None
    repeat: float | None = None
    max_tiles: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.root is not None:
            self.root = Path(self.root)
        if self.kind not in KINDS:
            raise DataError(f"source {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.ratio is not None and (isinstance(self.ratio, bool) or not isinstance(self.ratio, numbers.Real)
                                       or not (self.ratio >= 0 and math.isfinite(self.ratio))):
            raise DataError(f"source {self.name!r}: ratio must be a number >= 0, got {self.ratio!r}")
        _check_repeat(self.repeat, f"source {self.name!r}")
        if self.max_tiles is not None and (isinstance(self.max_tiles, bool) or not isinstance(self.max_tiles, int)
                                           or not 1 <= self.max_tiles <= MAX_TILES_LIMIT):  # as a recipe's and a meta's
            raise DataError(f"source {self.name!r}: max_tiles must be a whole number from 1 to {MAX_TILES_LIMIT}, "
                            f"got {self.max_tiles!r}")

    @property
    def data_root(self) -> Path:
        return self.root if self.root is not None else self.path.parent


def _check_repeat(repeat: float | None, what: str) -> None:
    if repeat is None:
        return
    if isinstance(repeat, bool) or not isinstance(repeat, (int, float)) or not (repeat > 0 and math.isfinite(repeat)):
        raise DataError(f"{what}: repeat must be a number > 0, got {repeat!r}")
    if repeat > 1 and not float(repeat).is_integer():
        raise DataError(f"{what}: repeat > 1 must be a whole number (InternVL repeat_time), got {repeat!r}")


@dataclass(frozen=True)
class TokenPlan:
    """A record's tokens as `measure` encoded them (training flags: labels on, no generation prompt) for its
    images' tile counts: the dataset reuses them when the decoded images give the same counts, so each record is
    tokenised once. int32 arrays: 4 bytes a token."""

    num_tiles: tuple[int, ...]
    input_ids: array
    labels: array


@dataclass
class Record:
    """One validated sample. ``conversations`` are InternVL turns with placeholders already fixed:
    one ``<image>`` per entry of ``images`` (videos expanded to frames)."""

    source: str
    line: int  # 1-based line in the annotation file
    conversations: list[dict]
    images: list[Path]  # resolved, inside the root
    image_sizes: list[tuple[int, int]]  # (w, h) read from headers only
    task: str | None = None
    answer: str | None = None
    options: list[str] | None = None
    meta: dict = field(default_factory=dict)
    max_tiles: int | None = None  # per-record tile cap (the source's max_tiles; 1 for video frames)
    n_tokens: int | None = None  # filled by measure()
    file: Path | None = None  # the annotation file, for "file:line" messages
    token_plan: TokenPlan | None = field(default=None, repr=False, compare=False)  # filled by measure()

    @property
    def where(self) -> str:
        return f"{self.file if self.file is not None else self.source}:{self.line}"


# ---------------------------------------------------------------------------------- skip log
SKIP_FILES = ("skips.json", "skips.md")  # what `SkipLog.save` writes (adapt.checkpointing knows them by this)


class SkipLog:
    """Counts and first examples of skipped records, by source and reason.

    Most records are skipped while reading (`read_source`, `measure`). A few are dropped later, when
    their images are fully decoded or the sample is encoded (`SupervisedDataset`), or when evaluation finds
    no scorer for their task or a reference it cannot score (`adapt.evaluate.predict`): `add_dropped` logs
    each such record once however often it is met, `dropped_entries` lists them so that the logs of
    data workers, ranks and resumed runs can be merged into one, and `check` counts them against the
    same limit as the rest.
    """

    def __init__(self, examples: int = _EXAMPLES_KEPT):
        """`examples`: how many ``(where, detail)`` pairs to keep per source and reason; 0 counts only."""
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
            raise ValueError(f"SkipLog examples must be a whole number >= 0 (0: count only), got {examples!r}")
        self._examples_kept = examples
        self._counts: dict[tuple[str, str], int] = {}
        self._examples: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._dropped: dict[tuple[str, str], tuple[str, str]] = {}  # (source, where) -> (reason, detail)

    def add(self, source: str, reason: str, where: str, detail: str = "") -> None:
        key = (source, reason)
        self._counts[key] = self._counts.get(key, 0) + 1
        examples = self._examples.setdefault(key, [])
        if len(examples) < self._examples_kept:
            examples.append((where, detail))

    def add_dropped(self, source: str, reason: str, where: str, detail: str = "") -> bool:
        """Log a record dropped after reading (`reason`: why, e.g. its image did not decode); False if logged already."""
        if (source, where) in self._dropped:
            return False
        self._dropped[(source, where)] = (reason, detail)
        self.add(source, reason, where, detail)
        return True

    def dropped(self, source: str | None = None) -> int:
        """Records dropped after reading (see `add_dropped`), of one source or of all."""
        return sum(1 for s, _ in self._dropped if source is None or s == source)

    def _dropped_reasons(self, source: str | None = None) -> dict[str, int]:
        """How many records `add_dropped` logged, by reason, of one source or of all."""
        out: dict[str, int] = {}
        for (s, _), (reason, _) in sorted(self._dropped.items()):
            if source is None or s == source:
                out[reason] = out.get(reason, 0) + 1
        return out

    def dropped_entries(self) -> list[list[str]]:
        """``[source, reason, where, detail]`` of every record `add_dropped` logged (JSON-able)."""
        return [[s, r, w, d] for (s, w), (r, d) in sorted(self._dropped.items())]

    def count(self, source: str | None = None, reason: str | None = None) -> int:
        return sum(
            n for (s, r), n in self._counts.items()
            if (source is None or s == source) and (reason is None or r == reason)
        )

    def examples(self, source: str, reason: str) -> list[tuple[str, str]]:
        """The first few ``(where, detail)`` pairs logged for this source and reason."""
        return list(self._examples.get((source, reason), []))

    def sources(self) -> list[str]:
        return sorted({s for s, _ in self._counts})

    def __len__(self) -> int:
        return self.count()

    def __bool__(self) -> bool:  # an empty log is still a log, not "nothing"
        return True

    def to_dict(self) -> list[dict]:
        return [
            {
                "source": s, "reason": r, "count": n,
                "examples": [{"where": w, "detail": d} for w, d in self._examples[(s, r)]],
            }
            for (s, r), n in sorted(self._counts.items())
        ]

    def table(self) -> str:
        """Markdown: source | reason | count | first example (where: detail)."""
        if not self._counts:
            return "No records were skipped."
        lines = ["| source | reason | count | first example |", "|---|---|---:|---|"]
        for (s, r), n in sorted(self._counts.items()):
            kept = self._examples[(s, r)]
            where, detail = kept[0] if kept else ("—", "")  # SkipLog(examples=0): counts only
            example = f"{where}: {detail}" if detail else where
            lines.append(f"| {markdown_cell(s)} | {markdown_cell(r)} | {n} | {markdown_cell(example)} |")
        if self._dropped:
            reasons = self._dropped_reasons()
            undecodable = reasons.pop(UNDECODABLE_IMAGE, 0)
            notes = []
            if undecodable:
                notes.append(f"{undecodable} of these records {'was' if undecodable == 1 else 'were'} dropped after "
                             "reading, when their images were decoded for training or evaluation (the header read, the "
                             "pixels did not).")
            if reasons:
                n = sum(reasons.values())
                listed = ", ".join(f"{r} ({k})" for r, k in reasons.items())
                notes.append(f"{n} {'other ' if undecodable else ''}{'record was' if n == 1 else 'records were'} "
                             f"dropped after reading, when training or evaluation came to {'it' if n == 1 else 'them'}: "
                             f"{listed}.")
            lines += ["", " ".join(notes) + " Records dropped after reading count against data.max_bad_fraction "
                      "like the rest."]
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike, run: str | None = None) -> None:
        """Write ``skips.json`` (every count, first examples) and ``skips.md`` (the table), each whole or not at all
        (a failed write leaves the last ones in place).

        ``run``: this is that run's log, one of several scored into `out_dir` (`adapt eval`'s models, which may skip
        differently: an export runtime refusing a sample): the files keep the other runs' logs found there and give
        each run's (`save_runs`), this one after them, in place of an earlier one of its name."""
        if run is not None:
            logs = self.load_runs(out_dir)
            logs.pop(run, None)
            self.save_runs(out_dir, {**logs, run: self})
            return
        _write_skip_files(Path(out_dir), self.to_dict(), "# Skipped records\n\n" + self.table() + "\n")

    @classmethod
    def from_dict(cls, skips: Iterable[Mapping], dropped: Iterable[Sequence[str]] = ()) -> SkipLog:
        """The log whose `to_dict` is `skips` and whose `dropped_entries` are `dropped`."""
        log = cls()
        for row in skips:
            key = (row["source"], row["reason"])
            log._counts[key] = int(row["count"])
            log._examples[key] = [(x["where"], x["detail"]) for x in row["examples"]]
        for source, reason, where, detail in dropped:
            log._dropped[(source, where)] = (reason, detail)
        return log

    @staticmethod
    def save_runs(out_dir: str | os.PathLike, logs: Mapping[str, SkipLog]) -> None:
        """Write several runs' logs (``{run: log}``, in run order) as `save` writes one: ``skips.json`` as
        ``{"runs": {run: {"skips": to_dict, "dropped": dropped_entries}}}``, ``skips.md`` a table per run, runs whose
        tables are the same (the records read alike and none dropped otherwise) under one heading."""
        runs: dict[str, list[str]] = {}  # table -> the runs it is the table of
        for run, log in logs.items():
            runs.setdefault(log.table(), []).append(run)
        md = ("# Skipped records\n\nA table per run scored here (eval.md's columns; eval.json counts the same); runs "
              "that skipped alike share one.\n")
        md += "".join(f"\n## {', '.join(names)}\n\n{table}\n" for table, names in runs.items())
        _write_skip_files(Path(out_dir), {"runs": {run: {"skips": log.to_dict(), "dropped": log.dropped_entries()}
                                                   for run, log in logs.items()}}, md)

    @classmethod
    def load_runs(cls, out_dir: str | os.PathLike) -> dict[str, SkipLog]:
        """The runs' logs `save_runs` wrote into `out_dir`; none where it holds none (a single log's files)."""
        try:
            runs = json.loads((Path(out_dir) / SKIP_FILES[0]).read_text(encoding="utf-8"))["runs"]
            return {run: cls.from_dict(entry["skips"], entry["dropped"]) for run, entry in runs.items()}
        except (OSError, ValueError, LookupError, TypeError, AttributeError):
            return {}

    @classmethod
    def keep_runs(cls, out_dir: str | os.PathLike, runs: Iterable[str]) -> None:
        """Leave only `runs`' logs in `out_dir`'s skip files, in that order: an earlier evaluation's runs into the same
        folder are not the report's. Files that hold none of them are left as they are."""
        logs = cls.load_runs(out_dir)
        kept = {run: logs[run] for run in runs if run in logs}
        if kept and list(kept) != list(logs):
            cls.save_runs(out_dir, kept)

    def check(self, kept: dict[str, int], max_bad_fraction: float, used: dict[str, int] | None = None) -> None:
        """Raise `DataQualityError` naming every source whose skipped share exceeds the limit.

        ``kept`` maps each source to the record count reading kept; a source counts as bad at
        ``skipped / total > max_bad_fraction``, where records dropped later (`add_dropped`) count
        once, as skipped, and whatever the limit once every record reading kept was dropped later (as
        reading refuses a source with no usable record). ``used``: how many of each source's kept records the later
        stage came to, where it took fewer (evaluation's ``eval.max_samples``); then the share of those dropped is
        held to the limit too, and all of them dropped fails whatever the limit.
        """
        failing = []
        for source in sorted(set(kept) | set(self.sources())):
            bad = self.count(source)
            late = self.dropped(source)
            total = bad + kept.get(source, 0) - late
            came = kept.get(source, 0) if used is None else min(used.get(source, 0), kept.get(source, 0))
            none_left = bool(late) and late >= came
            # without `used` this is never the deciding share: bad / total is at least late / kept
            late_over = bool(came) and late / came > max_bad_fraction
            if total and (bad / total > max_bad_fraction or none_left or late_over):
                undecodable = self._dropped_reasons(source).get(UNDECODABLE_IMAGE, 0)
                found = f"; {undecodable} of them because their images do not decode" if undecodable else ""
                found += "; not one record is left" if none_left else ""
                if came < kept.get(source, 0) and late:
                    found += f"; {late} of the {came} it came to ({late / came:.1%}) dropped after reading"
                failing.append(f"  {source}: {bad} of {total} records skipped ({bad / total:.1%}{found})")
        if failing:
            raise DataQualityError(
                f"too many bad records (limit {max_bad_fraction:.1%} per source, data.max_bad_fraction):\n"
                + "\n".join(failing) + "\n\n" + self.table()
            )


def _write_skip_files(out: Path, data: object, md: str) -> None:
    """``skips.json`` (`data`) and ``skips.md`` (`md`) in `out`, each whole or not at all."""
    json_name, md_name = SKIP_FILES
    json_text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(out / json_name, lambda f: f.write(json_text), binary=False)
    atomic_write(out / md_name, lambda f: f.write(md), binary=False)


# ---------------------------------------------------------------------------------- sources
def expand_sources(specs: Iterable[SourceSpec], repeats: bool = True) -> list[SourceSpec]:
    """Replace each InternVL meta ``.json`` by one spec per entry; ``.jsonl`` specs stay as they are.

    A meta entry ``{"root", "annotation", "repeat_time", "max_dynamic_patch", "length", …}`` becomes
    ``SourceSpec(name="<spec name>/<entry>", path=annotation, root=root, repeat=repeat_time,
    max_tiles=max_dynamic_patch)`` with the parent's kind. Relative ``root`` / ``annotation`` paths
    are resolved against the meta file's folder, or against the working directory (as InternVL
    does) when only that exists. The parent's ``repeat`` multiplies each entry's; a parent
    ``root`` and ``max_tiles`` apply where the entry has none (without either root: the annotation's
    folder); a parent ``ratio`` is split across the entries in proportion to their line counts × repeat.

    ``repeats=False`` (held-out sources, scored in full): no entry gets a ``repeat`` from its ``repeat_time``.
    """
    out: list[SourceSpec] = []
    for spec in specs:
        if spec.path.suffix.lower() != ".json":
            out.append(spec)
            continue
        out.extend(_expand_meta(spec, repeats))
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"duplicate data source name(s): {', '.join(dupes)}")
    return out


META_KEYS_READ = ("root", "annotation", "repeat_time", "max_dynamic_patch")
# InternVL meta keys pocket-adapt does not use (its own tiling, data loading and augmentation settings)
META_KEYS_IGNORED = ("length", "data_augment", "min_dynamic_patch", "split_anno_by_rank", "max_num_frame",
                     "sampling_method", "dynamic_image_size", "use_thumbnail")


def _expand_meta(spec: SourceSpec, repeats: bool = True) -> list[SourceSpec]:
    meta_path = spec.path
    if not meta_path.is_file():
        raise MissingDataError(f"source {spec.name!r}: meta file not found: {meta_path}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"source {spec.name!r}: {meta_path} is not valid JSON ({exc})") from None
    if isinstance(meta, list):  # LLaVA-665k, ShareGPT4V: the records themselves, as one array
        out = meta_path.with_suffix(".jsonl")
        raise DataError(
            f"source {spec.name!r}: {meta_path} is a JSON array of records (LLaVA / ShareGPT4V style), not an InternVL "
            f"meta JSON (an object of named entries); a source reads JSON Lines, one record per line: convert it, "
            f"e.g. jq -c '.[]' {meta_path} > {out}, and set the source's path to {out.name}")
    if not isinstance(meta, dict) or not meta:
        raise DataError(f"source {spec.name!r}: {meta_path} must be a JSON object of named entries")
    children: list[SourceSpec] = []
    for key, entry in meta.items():
        what = f"source {spec.name!r}, meta entry {key!r} in {meta_path}"
        if not isinstance(entry, dict):
            raise DataError(f"{what}: expected an object, got {type(entry).__name__}")
        for typo in (k for k in entry if k not in META_KEYS_READ and k not in META_KEYS_IGNORED):
            near = _near_miss(typo, META_KEYS_READ)
            if near:  # a key InternVL would not know either: most likely a misspelt one we read
                raise DataError(f"{what}: unknown key {typo!r}; did you mean {near[0]!r}?")
        if "annotation" not in entry:
            raise DataError(f"{what}: missing 'annotation'")
        annotation = _meta_path(meta_path, entry["annotation"])
        if annotation.suffix.lower() != ".jsonl":
            raise DataError(f"{what}: the annotation must be a .jsonl file, got {entry['annotation']!r}")
        root = _meta_path(meta_path, entry["root"]) if entry.get("root") not in (None, "") else spec.root
        repeat = entry.get("repeat_time", 1)
        _check_repeat(repeat, what)
        if spec.repeat is not None:
            repeat = repeat * spec.repeat
            _check_repeat(repeat, what + " (times the source's repeat)")
        max_tiles = entry.get("max_dynamic_patch", spec.max_tiles)
        if max_tiles is not None and (isinstance(max_tiles, bool) or not isinstance(max_tiles, int)
                                      or not 1 <= max_tiles <= MAX_TILES_LIMIT):
            raise DataError(f"{what}: max_dynamic_patch must be a whole number from 1 to {MAX_TILES_LIMIT} "
                            f"(InternVL uses up to 12), got {max_tiles!r}")
        children.append(SourceSpec(
            name=f"{spec.name}/{key}", path=annotation, root=root, kind=spec.kind,
            repeat=None if repeat == 1 or not repeats else repeat, max_tiles=max_tiles,
        ))
    if spec.ratio is not None:
        weights = []
        for child in children:
            if (missing := missing_annotation_file(child.path)) is not None:
                raise MissingDataError(f"source {child.name!r}: {missing}")
            lines = _count_lines(child.path)
            r = child.repeat or 1
            weights.append(int(lines * r) if r < 1 else lines * r)
        total = sum(weights)
        for child, w in zip(children, weights):
            child.ratio = spec.ratio * (w / total if total else 1 / len(children))
    return children


def _meta_path(meta_path: Path, value) -> Path:
    if not isinstance(value, str) or not value:
        raise DataError(f"{meta_path}: expected a path string, got {value!r}")
    p = Path(value)  # read as written, as InternVL does: a leading ~ is part of the name
    if p.is_absolute():
        return p
    beside = meta_path.parent / p
    if not beside.exists() and p.exists():
        return p
    return beside


def _count_lines(path: Path) -> int:
    """The records `read_source` would read from `path` (its non-blank lines)."""
    return sum(1 for _ in _lines(path))


def _lines(path: Path, boms: list[int] | None = None) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of `path` as bytes, numbered as an editor shows them, read one at a time (a large file
    never sits in memory whole). Lines end at \n, \r\n or a lone \r (old Mac tools), as InternVL's text-mode
    readlines() splits them; JSON escapes a CR inside a string, so no record holds one. A UTF-8 byte-order mark
    opening a line is not part of it: one opens the file, or, in files joined with ``cat a.jsonl b.jsonl``, a line
    inside it (where it cost the record as invalid JSON); the numbers of those inside go to `boms`."""
    # latin-1 maps each byte to one character and back: text mode splits the lines, the bytes stay as they were
    with open(path, encoding="latin-1", newline=None) as f:
        for n, line in enumerate(f, start=1):
            raw = line.rstrip("\n").encode("latin-1")
            if raw.startswith(codecs.BOM_UTF8):
                while raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                if n > 1 and boms is not None:
                    boms.append(n)
            if raw.strip():
                yield n, raw


def missing_annotation_file(path: Path) -> str | None:
    """What is wrong with `path` as a source's annotation file -- not there, or a folder (the data set's, named as
    the source: "not found" would send the user looking for a folder that is there) -- or None where it is a file."""
    if path.is_dir():
        held = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json"))
        inside = f" (it holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''})" if held else ""
        return (f"{path} is a folder, not an annotation file; name the .jsonl file (or InternVL meta .json) in it as "
                f"the source's path{inside}")
    return None if path.is_file() else f"annotation file not found: {path}"


def read_source(spec: SourceSpec, skips: SkipLog) -> list[Record]:
    """Read and validate one ``.jsonl`` source; bad records are logged in ``skips``, never raised.

    ``spec.repeat < 1`` keeps only the **first** ``int(n_lines * repeat)`` non-blank lines, exactly
    as InternVL's ``repeat_time`` does (not a random subset: shuffle the file if it is ordered).
    ``repeat > 1`` is not applied here (no duplicated records): the mixture plan
    (`MixturePlan.from_sources`) samples such a source ``repeat`` times per epoch.

    Raises `MissingDataError` (a ``FileNotFoundError``) when the annotation file is missing and
    `DataError` for a meta ``.json`` (run `expand_sources` first), for a JSON array or pretty-printed JSON saved
    as ``.jsonl`` and for a UTF-16 or UTF-32 file (one with such a byte-order mark). A line that is not UTF-8 is
    skipped (``"not UTF-8"``), never decoded with replacement characters and trained on.
    """
    path = spec.path
    if path.suffix.lower() == ".json":
        raise DataError(f"source {spec.name!r}: {path} is a meta JSON; expand it with expand_sources() first")
    if (missing := missing_annotation_file(path)) is not None:
        raise MissingDataError(f"source {spec.name!r}: {missing}")
    root = spec.data_root
    if not root.is_dir():
        raise MissingDataError(f"source {spec.name!r}: data root not found: {root}")
    root = root.resolve()

    with open(path, "rb") as f:
        start = f.read(6)
    _refuse_utf16(spec, path, start)
    _refuse_compressed(spec, path, start)
    head = list(itertools.islice(_lines(path), 2))
    if not head:  # scored or trained on, it would leave the report silent about the whole source
        raise DataError(f"source {spec.name!r}: {path} holds no records (an empty file); fill it, or remove the "
                        "source from the recipe")
    _refuse_whole_json(spec, path, head)
    boms: list[int] = []
    lines: Iterable[tuple[int, bytes]] = _lines(path, boms)
    if spec.repeat is not None and spec.repeat < 1:
        total = _count_lines(path)
        kept = int(total * spec.repeat)
        if not kept:
            raise DataError(f"source {spec.name!r}: repeat {spec.repeat} of its {total} records keeps none; "
                            f"give at least {1 / total:.3g}")
        lines = itertools.islice(lines, kept)

    sizes: dict[Path, tuple[int, int] | str] = {}  # header cache: many records share an image
    records = []
    for n, raw in lines:
        try:
            record = _parse(spec, root, path, n, _utf8(raw), sizes)
        except _Skip as skip:
            skips.add(spec.name, skip.reason, f"{path}:{n}", skip.detail)
            continue
        records.append(record)
    if boms:
        shown = ", ".join(map(str, boms[:5])) + (", ..." if len(boms) > 5 else "")
        warnings.warn(f"source {spec.name!r}: {path}: {len(boms)} line(s) inside the file open with a UTF-8 "
                      f"byte-order mark (line(s) {shown}; files joined with cat?); read without it", stacklevel=2)
    return records


_WIDE_BOMS = (("UTF-32", (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)), ("UTF-16", (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)))


def _refuse_utf16(spec: SourceSpec, path: Path, data: bytes) -> None:
    """Raise `DataError` for a file opening with a UTF-16 or UTF-32 byte-order mark (Windows PowerShell 5's ``>``
    writes UTF-16): read as UTF-8, its NUL-riddled lines were skipped as "invalid JSON" fragments, more of them than
    it has records."""
    for encoding, boms in _WIDE_BOMS:  # UTF-32 first: its little-endian mark opens with UTF-16's
        if data.startswith(boms):
            out = path.with_suffix(".utf8.jsonl")
            raise DataError(f"source {spec.name!r}: {path} is {encoding} text (its byte-order mark says so), not "
                            f"UTF-8; re-save it as UTF-8, e.g. iconv -f {encoding} -t UTF-8 {path} > {out}")


# magic bytes -> (format, how to unpack it)
_COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip -k"), (b"\x28\xb5\x2f\xfd", "zstd", "zstd -d"),
               (b"BZh", "bzip2", "bunzip2 -k"), (b"\xfd7zXZ\x00", "xz", "unxz -k"), (b"PK\x03\x04", "zip", "unzip"))


def _refuse_compressed(spec: SourceSpec, path: Path, data: bytes) -> None:
    """Raise `DataError` for a compressed annotation file (data sets ship ``train.jsonl.gz``): read as text, its every
    line was skipped as "not UTF-8" and the source refused for too many bad records, told to re-save it as UTF-8."""
    for magic, name, unpack in _COMPRESSED:
        if data.startswith(magic):
            raise DataError(f"source {spec.name!r}: {path} is {name}-compressed, not JSON Lines text; unpack it "
                            f"({unpack} {path}) and name the .jsonl file as the source's path")


def _refuse_whole_json(spec: SourceSpec, path: Path, lines: list[tuple[int, bytes]]) -> None:
    """Raise `DataError` for a JSON array or a pretty-printed JSON document saved as ``.jsonl`` (InternVL's val files
    are arrays): read line by line it would be skipped as dozens of "invalid JSON" fragments. Line 1 tells: ``[``
    opening an array that does not end on that line (or the file's only line), or ``{`` alone. `lines`: the file's
    first two non-blank lines (one where it has only one)."""
    first = lines[0][1].strip()
    out = path.with_suffix(".lines.jsonl")
    if first.startswith(b"[") and (len(lines) == 1 or not _parses(first)):
        raise DataError(
            f"source {spec.name!r}: {path} is a JSON array (pretty-printed JSON?), not JSON Lines with one object "
            f"per line; convert it, e.g. jq -c '.[]' {path} > {out}, or python -c \"import json, sys; "
            "[print(json.dumps(r, ensure_ascii=False)) for r in json.load(open(sys.argv[1], encoding='utf-8-sig'))]\" "
            f"{path} > {out}")
    if first == b"{" and len(lines) > 1:
        raise DataError(f"source {spec.name!r}: {path} is pretty-printed JSON (line 1 is '{{' alone), not JSON Lines "
                        f"with one object per line; convert it, e.g. jq -c . {path} > {out}")


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int's digit limit; deep nesting
        return False
    return True


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Skip(INVALID_UTF8, f"byte {raw[exc.start]:#04x} at column {exc.start + 1} is not UTF-8 "
                                  "(re-save the file as UTF-8)") from None


def _near_miss(key: str, known: tuple[str, ...]) -> list[str]:
    """The known keys `key` is most likely a misspelling of: close by difflib, or one's beginning
    (``repeat`` for ``repeat_time``, ``images`` for ``image``)."""
    prefix = [k for k in known if k.startswith(key) or key.startswith(k)]
    return prefix or difflib.get_close_matches(key, known, n=1, cutoff=0.75)


def _parse(spec: SourceSpec, root: Path, path: Path, line: int, text: str, sizes: dict) -> Record:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:  # its "line 2 column 1" counts the newline ending the record: say the column
        where = "at the end of the line (the record is cut short?)" if exc.pos >= len(text.rstrip()) else \
            f"at column {exc.pos + 1}"
        raise _Skip(INVALID_JSON, f"{exc.msg} {where}") from None
    except (ValueError, RecursionError) as exc:  # valid JSON Python will not hold: a 5,000-digit number, deep nesting
        raise _Skip(INVALID_JSON, f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise _Skip(NOT_OBJECT, f"got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(text):  # the tokenizer crashed the whole run on one: said here, with file:line
        _refuse_lone_surrogates(obj)
    if "conversations" not in obj:
        raise _Skip(MISSING_CONVERSATIONS, f"keys: {', '.join(sorted(obj)) or '(none)'}")
    turns = _check_conversation(obj["conversations"])
    # "images": [...] would train the sample as text only. Only a record left without media can lose any, and only
    # to a key holding paths: "video_id" beside an image, "image_id": 7 in a text record, are metadata
    if all(obj.get(k) in (None, [], "") for k in ("image", "video")):
        for key, value in obj.items():
            near = [] if key in ("image", "video") or not _paths_like(value) else _near_miss(key, ("image", "video"))
            if near:
                raise _Skip(INVALID_MEDIA, f"unknown key {key!r}; did you mean {near[0]!r}? (read as it is, the "
                                           "record would train without its images)")

    if "image" in obj and "video" in obj and obj["image"] not in (None, [], "") and obj["video"] not in (None, [], ""):
        raise _Skip(INVALID_MEDIA, "a record has either 'image' or 'video', not both")
    max_tiles = spec.max_tiles
    video = obj.get("video")
    if video not in (None, [], ""):
        frames = _video_frames(video, root)
        turns = _expand_video(turns, len(frames))
        images = frames
        max_tiles = 1
    else:
        images = [_inside_root(p, root) for p in _image_list(obj.get("image"))]
        turns = _place_images(turns, len(images))

    image_sizes = [_image_size(p, sizes) for p in images]
    task, answer, options, meta = _scoring_fields(obj)
    return Record(
        source=spec.name,
        line=line,
        conversations=turns,
        images=images,
        image_sizes=image_sizes,
        task=task,
        answer=answer,
        options=options,
        meta=meta,
        max_tiles=max_tiles,
        file=path,
    )


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(value, where: str = "") -> None:
    """Skip, as not UTF-8, a record with a string holding half of a surrogate pair (``"\\ud83d"``: an emoji cut in
    two, common in scraped chat data): it is no character, so it cannot be written as UTF-8 nor tokenised."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Skip(INVALID_UTF8, f"{where or 'a key'} holds {value[exc.start]!r} at character {exc.start + 1}, "
                                      "half of a UTF-16 surrogate pair (an emoji cut in two?), which is no "
                                      "character") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lone_surrogates(key)
            _refuse_lone_surrogates(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{where}[{i}]")


def _paths_like(value) -> bool:
    """Whether a JSON value could be what ``image`` / ``video`` hold: a path or a list of paths."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, str) for v in value)
    return isinstance(value, str) and bool(value)


def _scoring_fields(obj: dict) -> tuple[str | None, str | None, list[str] | None, dict]:
    """`task`, `answer`, `options` (a list of texts) and `meta` (an object) of a record, checked: one of another
    type (``"options": {"A": "cat"}``, ``"A. cat\nB. dog"``) was dropped without a word and the sample scored by
    options parsed from its question instead; so was an empty one (``"task": ""``, ``"options": []``), which is
    refused too."""
    def scalar(key: str) -> str | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Skip(MALFORMED_FIELD, f"{key!r} must be a string, got {type(value).__name__}")
        _refuse_not_finite(value, repr(key))
        return number_text(value) if isinstance(value, (int, float)) else value

    options = obj.get("options")
    if options is not None and (not isinstance(options, list) or
                                any(isinstance(o, bool) or not isinstance(o, (str, int, float)) for o in options)):
        raise _Skip(MALFORMED_FIELD, f"'options' must be a list of option texts, got {_shape(options)}")
    if options == []:  # read as "no options": the task and options were guessed from the question
        raise _Skip(MALFORMED_FIELD, "'options' is an empty list; leave the key out or list the option texts")
    for i, option in enumerate(options or []):
        _refuse_not_finite(option, f"'options'[{i}]")
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _Skip(MALFORMED_FIELD, f"'meta' must be an object, got {type(meta).__name__}")
    meta = dict(meta or {})
    if "id" in obj:
        meta.setdefault("id", obj["id"])
    task = scalar("task")
    if task is not None and not task.strip():  # read as "no task": the task was guessed from the reference
        raise _Skip(MALFORMED_FIELD, f"'task' is {task!r}, no task name; leave the key out or name the task")
    options = [number_text(o) if isinstance(o, (int, float)) else o for o in options] if options is not None else None
    return task, scalar("answer"), options, meta


def _refuse_not_finite(value, what: str) -> None:
    """Python's json reads ``NaN`` / ``Infinity`` (no JSON, but what ``json.dumps`` writes for a pandas missing
    value): as a scoring field it became the reference text "nan", scored without a word."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _Skip(MALFORMED_FIELD, f"{what} is {value!r}, no text (a missing value written as NaN?); leave the "
                                     "key out or give the text")


def _shape(value) -> str:
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a list of {', '.join(kinds)}"
    return type(value).__name__


def _check_conversation(conversations) -> list[dict]:
    """InternVL turns: an optional system turn, then human/gpt alternating, ending with gpt."""
    if not isinstance(conversations, list) or not conversations:
        raise _Skip(MALFORMED_CONVERSATION, "conversations must be a non-empty list of turns")
    turns = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise _Skip(MALFORMED_CONVERSATION, f"turn {i} is not an object")
        role = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if not isinstance(role, str) or role not in _FROM:  # {"from": ["human"]}: unhashable, a TypeError
            raise _Skip(MALFORMED_CONVERSATION, f"turn {i}: unknown role {role!r} (expected human, gpt or system)")
        if not isinstance(value, str) or not value.strip():
            raise _Skip(MALFORMED_CONVERSATION, f"turn {i} ({_FROM[role]}): value must be a non-empty string")
        turns.append({"from": _FROM[role], "value": value})
    body = turns[1:] if turns[0]["from"] == "system" else turns
    for i, turn in enumerate(body):
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            offset = len(turns) - len(body)
            raise _Skip(
                MALFORMED_CONVERSATION,
                f"turn {i + offset}: expected {expected!r}, got {turn['from']!r} "
                "(roles must alternate human/gpt after an optional system turn)",
            )
    for i, turn in enumerate(turns):  # the processor refuses them there too, but only once the model is loaded
        held = [p for p in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER) if p in turn["value"]]
        if turn["from"] != "human" and held:
            where = "an answer" if turn["from"] == "gpt" else "the system turn"
            raise _Skip(MALFORMED_CONVERSATION, f"turn {i} ({turn['from']}): a {held[0]} placeholder in {where}; "
                                                "images and videos go in human turns")
    if not any(t["from"] == "gpt" for t in body):
        raise _Skip(MALFORMED_CONVERSATION, "no gpt turn to learn from")
    if body[-1]["from"] != "gpt":
        raise _Skip(MALFORMED_CONVERSATION, "the conversation ends with an unanswered human turn")
    return turns


def _image_list(value) -> list[str]:
    if value is None or value == "" or value == []:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items):
        raise _Skip(INVALID_MEDIA, f"'image' must be a path or a list of paths, got {value!r}"[:200])
    return items


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def _inside_root(value: str, root: Path) -> Path:
    """Resolve (symlinks too) and refuse anything outside ``root``. A relative name is read as the converters read
    it (``domains.files.inside_root``: backslashes are separators, so a Windows-written ``images\\a.png`` is found
    and ``..\\x`` refused); an absolute one is allowed inside ``root``. A leading ``~`` is a character of the
    name, not a home folder: InternVL joins root and path as written."""
    if _URL.match(value):
        raise _Skip(MISSING_IMAGE, f"{value!r} is a URL; images are read from disk only: download them under {root} "
                                   "and name them relative to it")
    if value.startswith("data:"):  # its whole base64 body was the detail of a "not found" path
        raise _Skip(MISSING_IMAGE, f"{value[:30]!r}... ({len(value):,} characters) is an inline data: URI; images are "
                                   f"read from disk only: decode it to a file under {root} and name it relative to it")
    p = Path(value)
    try:
        if not p.is_absolute():
            try:
                return inside_root(root, value).resolve()
            except SkipInput as exc:
                raise _Skip(PATH_ESCAPES, exc.detail) from None
        resolved = p.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop; a NUL byte ("\u0000" in the JSON)
        raise _Skip(PATH_ESCAPES, f"{value!r}: cannot be resolved under {root}: {exc}") from None
    if not resolved.is_relative_to(root):
        hint = ("; an absolute path must lie inside the data root too (InternVL joins root and path as given): set "
                "the source's root, or the meta entry's, to a folder that holds the images")
        raise _Skip(PATH_ESCAPES, f"{value!r} resolves to {resolved}, outside {root}{hint}")
    return resolved


def _image_size(path: Path, cache: dict) -> tuple[int, int]:
    if path not in cache:
        cache[path] = _read_size(path)
    got = cache[path]
    if isinstance(got, _Skip):
        raise got
    return got


def _read_size(path: Path) -> tuple[int, int] | _Skip:
    try:
        if not path.exists():
            return _Skip(MISSING_IMAGE, f"{path} not found")
        if not path.is_file():
            return _Skip(UNREADABLE_IMAGE, f"{path} is not a file")
    except OSError as exc:
        return _lookup_failed(path, exc)
    try:
        (w, h), _ = upright_size(path)  # as load_image returns it: EXIF orientation applied; no PIL size warning
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        return _Skip(UNREADABLE_IMAGE, f"{path}: {exc or type(exc).__name__}")
    if w <= 0 or h <= 0:
        return _Skip(UNREADABLE_IMAGE, f"{path}: size {w}x{h}")
    return (w, h)


def _lookup_failed(path: Path, exc: OSError) -> _Skip:
    """A path the file system would not look up (a name too long: an inline base64 image? a folder it may not
    enter): the record is skipped, where it crashed the whole read. A long name is shown cut."""
    shown = str(path) if len(str(path)) <= 200 else f"{str(path)[:200]}... ({len(str(path)):,} characters)"
    return _Skip(UNREADABLE_IMAGE, f"{shown}: {exc.strerror or exc}")


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _video_frames(video, root: Path) -> list[Path]:
    if isinstance(video, list):
        if not all(isinstance(p, str) and p for p in video):
            raise _Skip(INVALID_MEDIA, "'video' must be a folder of frames or a list of frame paths")
        if any(Path(p).suffix.lower() in VIDEO_SUFFIXES for p in video):
            raise _Skip(VIDEO_FILE, "extract frames to a folder (or list the frame images) first")
        return [_inside_root(p, root) for p in video]
    if not isinstance(video, str):
        raise _Skip(INVALID_MEDIA, "'video' must be a folder of frames or a list of frame paths")
    if Path(video).suffix.lower() in VIDEO_SUFFIXES:
        raise _Skip(VIDEO_FILE, f"{video!r}: extract frames to a folder (or list the frame images) first")
    folder = _inside_root(video, root)
    try:
        if not folder.exists():
            raise _Skip(MISSING_IMAGE, f"video frame folder {folder} not found")
        if not folder.is_dir():
            raise _Skip(VIDEO_FILE, f"{video!r} is a file; extract frames to a folder (or list the frame images) first")
        # hidden names are no frames: macOS copies leave a "._frame_1.jpg" of metadata beside each frame
        frames = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                         and not p.name.startswith(".")), key=_natural_key)
    except OSError as exc:
        raise _lookup_failed(folder, exc) from None
    if not frames:
        raise _Skip(MISSING_IMAGE, f"no frame images in {folder}")
    return [_inside_root(str(p), root) for p in frames]


def _first_human(turns: list[dict]) -> int:
    return next(k for k, t in enumerate(turns) if t["from"] == "human")


def _count(turns: list[dict], placeholder: str) -> int:
    return sum(t["value"].count(placeholder) for t in turns)


def _place_images(turns: list[dict], n_images: int) -> list[dict]:
    """Placeholders for the record's images by the rule `adapt chat` follows too (`model.chat.image_prefix`)."""
    if _count(turns, VIDEO_PLACEHOLDER):
        raise _Skip(IMAGE_COUNT_MISMATCH, "<video> placeholder in a record without 'video'")
    found = _count(turns, IMAGE_PLACEHOLDER)
    try:
        prefix = image_prefix(found, n_images)
    except ConversationError:
        raise _Skip(IMAGE_COUNT_MISMATCH, f"{found} <image> placeholder(s) for {n_images} image(s)") from None
    if prefix:
        turns = [dict(t) for t in turns]
        k = _first_human(turns)
        turns[k]["value"] = prefix + turns[k]["value"]
    return turns


def _expand_video(turns: list[dict], n_frames: int) -> list[dict]:
    """``<video>`` (prepended to the first human turn when absent, as InternVL does) becomes
    ``Frame-1: <image>\\nFrame-2: <image>\\n…``, lines of their own: text before ``<video>`` on its line ends there,
    text after it starts a line of its own."""
    if _count(turns, IMAGE_PLACEHOLDER):
        raise _Skip(IMAGE_COUNT_MISMATCH, "<image> placeholder in a video record (use <video>)")
    found = _count(turns, VIDEO_PLACEHOLDER)
    if found > 1:
        raise _Skip(IMAGE_COUNT_MISMATCH, f"{found} <video> placeholders; a record holds one video")
    turns = [dict(t) for t in turns]
    if found == 0:
        k = _first_human(turns)
        turns[k]["value"] = VIDEO_PLACEHOLDER + "\n" + turns[k]["value"]
    frames = "\n".join(f"Frame-{i + 1}: {IMAGE_PLACEHOLDER}" for i in range(n_frames))

    def own_lines(m: re.Match) -> str:
        # the frames are lines of their own, as `image_prefix`'s Image-k lines are: "<video>Q" would leave the
        # question on the last frame's line ("Frame-3: <image>Q"), "Q <video>\n" the first frame on the
        # question's ("Q Frame-1: <image>"), read as a question about that frame alone
        text = m.string
        before = m.start() > 0 and text[m.start() - 1] not in "\r\n"
        after = m.end() < len(text) and text[m.end()] not in "\r\n"
        return ("\n" if before else "") + frames + ("\n" if after else "")

    for t in turns:
        t["value"] = _VIDEO_ON_ITS_LINE.sub(own_lines, t["value"])
    return turns


# <video> with the spaces beside it on its line (any whitespace but a line break)
_VIDEO_ON_ITS_LINE = re.compile(r"[^\S\r\n]*" + re.escape(VIDEO_PLACEHOLDER) + r"[^\S\r\n]*")


# ---------------------------------------------------------------------------------- measuring
def record_tiling(record: Record, tiling):
    """The tiling for this record: ``tiling`` with the record's ``max_tiles`` cap, if any
    (`TilingConfig.with_max_tiles`)."""
    if record.max_tiles is None or record.max_tiles == tiling.max_tiles:
        return tiling
    return tiling.with_max_tiles(record.max_tiles)


def measure(records: list[Record], processor, max_seq_length: int, skips: SkipLog, tiling=None) -> list[Record]:
    """Fill each record's ``n_tokens`` (image tokens included, from header sizes only) and ``token_plan``, and
    drop, logging ``"too long for max_seq_length"``, every record that does not fit (never truncates), and, as
    ``"unreadable image"``, every record with an image of more than ``tiling.max_pixels`` pixels.

    ``tiling`` defaults to the processor's; a record's ``max_tiles`` overrides its cap.
    """
    tiling = tiling if tiling is not None else processor.tiling
    kept = []
    for record in records:
        t = record_tiling(record, tiling)
        big = [(w, h) for w, h in record.image_sizes if w * h > t.max_pixels]
        if big:  # the reader would refuse its pixels later: said now, from the header, as reading says it
            w, h = big[0]
            skips.add(record.source, UNREADABLE_IMAGE, record.where,
                      f"{w}x{h} = {w * h:,} pixels, more than tiling.max_pixels ({t.max_pixels:,})")
            continue
        num_tiles = processor.tiles_for_sizes(record.image_sizes, t) if record.image_sizes else []
        try:
            encoded = processor.encode_tokens(record.conversations, num_tiles, add_generation_prompt=False,
                                              with_labels=True)
        except ValueError as exc:  # the chat template refused it: validation missed something
            skips.add(record.source, MALFORMED_CONVERSATION, record.where, str(exc))
            continue
        n = len(encoded.input_ids)
        if n > max_seq_length:
            n_image = sum(num_tiles) * processor.image_seq_length
            skips.add(
                record.source, TOO_LONG, record.where,
                f"{n} tokens ({n_image} image tokens for {sum(num_tiles)} tiles of {len(num_tiles)} image(s)) "
                f"> {max_seq_length}",
            )
            continue
        record.n_tokens = n
        record.token_plan = TokenPlan(tuple(num_tiles), array("i", encoded.input_ids.tolist()),
                                      array("i", encoded.labels.tolist()))
        kept.append(record)
    return kept


def record_to_dict(record: Record) -> dict:
    """JSON-safe dict of a record (paths as strings)."""
    d = asdict(replace(record, token_plan=None))
    del d["token_plan"]
    d["images"] = [str(p) for p in record.images]
    d["file"] = None if record.file is None else str(record.file)
    return d
