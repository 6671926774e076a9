"""The domain plugin contract and its registry.

A domain plugin bundles everything pocket-adapt knows about one field of data (remote sensing, driving,
medical imaging, ...): how to read its raw files, how to convert public data sets into InternVL chat
JSONL, how to score its tasks, which recipe templates fit it, a synthetic generator for tests and quick
starts, and optional hooks for the demo.

Data flows one way, ``domains -> adapt``: nothing here imports training or evaluation code (scorers read
answers with ``domains.answers``, the parsers ``adapt.metrics`` uses too, so an answer is read one way). A plugin
only *exposes* callables; ``adapt`` looks plugins up through this registry (for example it hands
``plugin.metrics[task]`` to ``adapt.metrics.register_task``).

Where plugins come from:

* built-in domains (:data:`BUILTIN_DOMAINS`): each module exposes a ``PLUGIN`` attribute, imported on
  first use of the registry;
* third-party packages: an entry point in the group ``pocket_adapt.domains`` whose object is a
  :class:`DomainPlugin` or a zero-argument callable returning one, for example in ``pyproject.toml``::

      [project.entry-points."pocket_adapt.domains"]
      forestry = "my_package.forestry:PLUGIN"

  A broken entry point (import error, wrong object, duplicate name) is reported by name through
  :func:`discovery_errors` and a warning; the other plugins still load.
* :func:`register_domain` at run time.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import numbers
import os
import re
import shutil
import tempfile
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.errors import PocketAdaptError
from model.progress import Progress, progress_bar

__all__ = [
    "BUILTIN_DOMAINS",
    "ENTRY_POINT_GROUP",
    "ConvertReport",
    "Converter",
    "DomainError",
    "DomainPlugin",
    "MetricFn",
    "Reader",
    "SkipInput",
    "WHOLE_FILE_REASONS",
    "chat_record",
    "discovery_errors",
    "check_options",
    "check_synthetic_n",
    "comma_names",
    "generate_kinds",
    "kinds_written",
    "MAX_SYNTHETIC_N",
    "get_domain",
    "lazy",
    "read_image_rgb",
    "list_domains",
    "register_domain",
    "unregister_domain",
]

ENTRY_POINT_GROUP = "pocket_adapt.domains"
# skip reasons converters give a whole annotation file (every sample in it lost): `adapt convert` exits 1 on them
WHOLE_FILE_REASONS = ("malformed JSON", "malformed CSV")
# built-in domain name -> module exposing ``PLUGIN``
BUILTIN_DOMAINS: dict[str, str] = {
    "driving": "domains.driving",
    "general": "domains.general",
    "medical": "domains.medical",
    "remote_sensing": "domains.remote_sensing",
}

Reader = Callable[..., Any]  # (path, **options) -> PIL.Image.Image in mode "RGB"
Converter = Callable[..., "ConvertReport"]  # (src: Path, out: Path, **options) -> ConvertReport
MetricFn = Callable[[str, Mapping[str, Any], Any], dict]  # (prediction, record, reference) -> {name: score}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# a converter's `dataset` names out/<dataset>_<split>.jsonl and out/images/<dataset>/ (which it may prune)
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class DomainError(PocketAdaptError, ValueError):
    """A domain cannot do what was asked: an unknown domain, data set or option, a bad option value, a source
    folder that is not in the expected layout. The message names the file, folder or option."""


# --------------------------------------------------------------------------------------------- reports
def check_dataset_name(name: object, out: str | Path) -> None:
    """`DomainError` unless `name` (a converter's ``dataset``) is a plain name, safe as a file and folder name."""
    if not (isinstance(name, str) and DATASET_NAME.match(name)):
        raise DomainError(f"dataset {name!r}: names files and folders under {out}, so it must be a plain name of "
                          "letters, digits, '.', '_' and '-' (e.g. vqa_rad), with no slash or '..'")


@dataclass
class ConvertReport:
    """What a converter did: how many samples it wrote and what it skipped, by reason, with examples.

    Converters call :meth:`wrote` for each written sample and :meth:`skip` for each rejected input;
    :meth:`table` renders a markdown summary for the CLI and for logs.
    """

    dataset: str = ""
    source: str | Path | None = None
    out: str | Path | None = None
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> ["file: detail", ...]
    warnings: dict[str, int] = field(default_factory=dict)  # inputs kept with a warning: reason -> count
    warning_examples: dict[str, list[str]] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)  # e.g. split name -> JSONL path
    removed: list[Path] = field(default_factory=list)  # an earlier run's split files / images this run did not make
    inputs: dict[str, str] = field(default_factory=dict)  # input file name -> where it went (e.g. its split)
    max_examples: int = 3
    # inputs under it are named relative to it in the examples (default: `source`, its folder for a file; ""
    # names them as given): a full path names the folders around the data, and the table lands in logs
    root: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # another input folder -> the name it is written as

    def __post_init__(self) -> None:
        if self.out is not None:
            check_dataset_name(self.dataset, self.out)
        if not self.root and self.source is not None and str(self.source) not in ("", "."):
            source = Path(self.source)
            self.root = str(source if source.is_dir() else source.parent)
            self.root = "" if self.root == "." else self.root.rstrip("/" + os.sep) or self.root

    def wrote(self, n: int = 1) -> None:
        self.written += int(n)

    def skip(self, file: str | Path, reason: str, detail: str | None = None) -> None:
        """Count one skipped input under `reason`; keep the first few as ``"file: detail"`` examples
        (a `detail` that already starts with ``"file: "`` is not prefixed twice)."""
        self._count(self.skipped, self.examples, file, reason, detail)

    def warn(self, file: str | Path, reason: str, detail: str | None = None) -> None:
        """Count one input that was converted but deserves a look (e.g. burned-in annotation)."""
        self._count(self.warnings, self.warning_examples, file, reason, detail)

    def relative(self, text: str) -> str:
        """`text` with each path under :attr:`root` written relative to it (the root itself as ``.``), and each
        path under a folder of :attr:`labels` as ``<label>/...``."""
        roots = [(self.root, ".")] if self.root else []
        roots += [(str(folder).rstrip("/" + os.sep) or str(folder), label) for folder, label in self.labels.items()
                  if str(folder) not in ("", ".")]
        # a relative root also stands for its absolute path: a reader that resolves its files (the DICOM series
        # scan) names them in full, and the examples must not name the folders around the data
        roots += [(absolute, label) for root, label in roots if (absolute := os.path.abspath(root)) != root]
        for root, label in sorted(roots, key=lambda rl: -len(rl[0])):  # the deeper root first, when nested
            keep = "" if label == "." else label + "/"
            for prefix in dict.fromkeys((root + os.sep, root + "/")):
                text = re.sub(r"(^|(?<=[\s'\"(\[=,]))" + re.escape(prefix), keep, text)
            text = re.sub(r"(^|(?<=[\s'\"(\[=,]))" + re.escape(root) + r"(?=$|[\s'\":),\]])", label, text)
        return text

    def _count(self, counts: dict[str, int], examples: dict[str, list[str]], file: str | Path, reason: str,
               detail: str | None) -> None:
        counts[reason] = counts.get(reason, 0) + 1
        kept = examples.setdefault(reason, [])
        if len(kept) < self.max_examples:
            name, detail = self.relative(str(file)), None if detail is None else self.relative(detail)
            if detail and detail.startswith(name + ": "):
                detail = detail[len(name) + 2:]
            kept.append(f"{name}: {detail or reason}")

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def merge(self, other: ConvertReport) -> ConvertReport:
        """Add `other`'s counts (for example one report per split) into this report; returns self."""
        self.written += other.written
        for counts, examples, o_counts, o_examples in (
            (self.skipped, self.examples, other.skipped, other.examples),
            (self.warnings, self.warning_examples, other.warnings, other.warning_examples),
        ):
            for reason, n in o_counts.items():
                counts[reason] = counts.get(reason, 0) + n
                kept = examples.setdefault(reason, [])
                for ex in o_examples.get(reason, []):
                    if len(kept) < self.max_examples:
                        kept.append(ex)
        self.outputs.update(other.outputs)
        self.removed += other.removed
        self.inputs.update(other.inputs)
        return self

    def table(self) -> str:
        """A markdown summary: one row for the written samples, one per skip reason (most frequent first)."""
        title = f"**{self.dataset}**" if self.dataset else "**conversion**"
        where = f" `{self.source}` → `{self.out}`" if self.source is not None or self.out is not None else ""
        lines = [f"{title}{where}", "", "| outcome | count | examples |", "|---|---:|---|",
                 f"| written | {self.written} | |"]
        lines += [f"| read: {markdown_cell(name)} | | {markdown_cell(where)} |" for name, where in self.inputs.items()]
        for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
            ex = "<br>".join(markdown_cell(e) for e in self.examples.get(reason, []))
            lines.append(f"| skipped: {markdown_cell(reason)} | {n} | {ex} |")
        for reason, n in sorted(self.warnings.items(), key=lambda kv: (-kv[1], kv[0])):
            ex = "<br>".join(markdown_cell(e) for e in self.warning_examples.get(reason, []))
            lines.append(f"| written with a warning: {markdown_cell(reason)} | {n} | {ex} |")
        if self.removed:
            names = "<br>".join(markdown_cell(path.name) for path in self.removed)
            lines.append(f"| removed: an earlier run's file this run did not make | {len(self.removed)} | {names} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class SkipInput(PocketAdaptError):
    """Raised inside a converter for one input to skip: `reason` (the report's key) and a `detail` naming
    the file or record; the converter catches it and calls :meth:`ConvertReport.skip`. One that escapes to
    the user (a reader called directly) is an ordinary one-line error."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def markdown_cell(text: object) -> str:
    """`text` fit for one cell of a Markdown table (and a heading): ``|`` escaped, line breaks as spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------------- options
def read_image_rgb(path: str | Path, **options: Any):
    """A plugin's reader for PNG / JPEG and the like: the image as RGB, by pocket-adapt's one image reader
    (:func:`model.tiling.load_image`: EXIF orientation, wide samples stretched, ``max_pixels`` cap)."""
    from model.tiling import load_image  # lazily: the plugin registry stays free of torch

    return load_image(path, **{k: v for k, v in options.items() if k == "max_pixels"})


def lazy(target: str, doc: str = "", **fixed: Any) -> Callable[..., Any]:
    """A callable that imports ``"package.module:function"`` on first call and calls it with `fixed` keywords
    added (for example ``dataset="eurosat"``), so a plugin registers without importing heavy readers.
    :func:`check_options` looks through it at the target's signature; `fixed` keywords are not options."""
    module, _, name = target.partition(":")

    def resolve() -> Callable[..., Any]:
        return getattr(importlib.import_module(module), name)

    def call(*args: Any, **options: Any) -> Any:
        return resolve()(*args, **fixed, **options)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = doc or f"``{target}``" + (f" with {fixed}" if fixed else "")
    call.resolve, call.fixed = resolve, dict(fixed)  # type: ignore[attr-defined]
    return call


def option_names(fn: Callable[..., Any], positional: int) -> tuple[list[str], bool] | None:
    """The keyword options `fn` takes after its first `positional` parameters (sorted) and whether it takes any
    other (``**kwargs``); None where its signature cannot be read (a :func:`lazy` target that does not import: the
    call itself then says why, and a listing of every plugin's options goes on)."""
    fixed = set(getattr(fn, "fixed", ()))
    try:
        target = fn.resolve() if callable(getattr(fn, "resolve", None)) else fn
    except Exception:  # noqa: BLE001 - whatever its import raises
        return None
    try:
        params = list(inspect.signature(target).parameters.values())[positional:]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    known = sorted(p.name for p in params if p.kind in kinds and p.name not in fixed)
    return known, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def comma_names(value: Iterable[str] | str) -> list[str]:
    """An option naming several things, as a list: a string is comma-separated names, stripped, empty ones dropped
    (a bare name is not read letter by letter); any other iterable is listed as it is."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def pick_kinds(kinds: Iterable[str] | str | None, known: Sequence[str]) -> list[str]:
    """A generator's `kinds` option as a list: a string is comma-separated (`comma_names`), None or empty means
    every one of `known`; an unknown kind is refused before anything is written."""
    kinds = comma_names(kinds or known)
    for kind in kinds:
        if kind not in known:
            raise DomainError(f"unknown synthetic kind {kind!r}; known: {', '.join(known)}")
    return kinds


def chat_record(rid: str, image: str | list[str], size: tuple[int, int], question: str, answer: str, task: str,
                prefix: str = "<image>\n", **extra: Any) -> dict:
    """A converter's InternVL chat record: one human turn (`prefix` + `question`) and one gpt turn (`answer`), with
    the image(s), `size` as width and height, the task, the reference answer and any `extra` keys (``meta``)."""
    return {"id": rid, "image": image, "width": size[0], "height": size[1],
            "conversations": [{"from": "human", "value": prefix + question},
                              {"from": "gpt", "value": answer}],
            "task": task, "answer": answer, **extra}


MAX_SYNTHETIC_N = 1000  # synthetic sets are for tests and trials; a mistyped 10**12 filled the disk file by file


def check_synthetic_n(n: Any, what: str = "n") -> int:
    """A synthetic generator's count `n` as an int in 1..:data:`MAX_SYNTHETIC_N`; DomainError naming `what` and the
    range otherwise. Generators call it before anything is drawn or written (a plugin's own `n` may mean more)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_SYNTHETIC_N:
        raise DomainError(f"{what} must be a whole number from 1 to {MAX_SYNTHETIC_N} (synthetic sets are small, "
                          f"for tests and trying things out), got {n!r}")
    return int(n)


def check_synthetic_call(kind: Any, known: Sequence[str], n: Any, seed: Any) -> int:
    """What a synthetic ``generate(kind, out, n, seed)`` checks before anything is drawn or written: `kind` one of
    `known`, `n` (:func:`check_synthetic_n`) and `seed` a whole number >= 0 (numpy refuses a negative one with a bare
    ValueError deep in the first draw; int() took 2.5 as seed 2, another set than asked for). Returns `n` as an int."""
    if kind not in known:
        raise DomainError(f"unknown synthetic kind {kind!r}; known: {', '.join(known)}")
    n = check_synthetic_n(n)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DomainError(f"seed must be a whole number >= 0, got {seed!r}")
    return n


def generate_kinds(generate: Callable[..., Path], out_dir: str | Path, kinds: Iterable[str] | str | None,
                   known: Sequence[str], n: int, desc: str, progress: Progress, **options: Any) -> dict[str, Path]:
    """Each of `kinds` (:func:`pick_kinds` of `known`) written by a plugin's ``generate(kind, out_dir / kind, n=n,
    **options)``, with a bar `desc` over the sets: the body of a ``generate_all``, whose ``writes`` is
    :func:`kinds_written`."""
    kinds = pick_kinds(kinds, known)
    check_synthetic_n(n)  # before the bar starts
    written = {}
    with progress_bar(kinds, desc=desc, unit="set", progress=progress) as bar:  # closed on errors too
        for kind in bar:
            written[kind] = generate(kind, Path(out_dir) / kind, n=n, **options)
    return written


def kinds_written(known: Sequence[str]) -> Callable[..., list[str]]:
    """A :func:`generate_kinds` user's ``writes``: the folders it makes in `out_dir` (so ``adapt synthesize`` refuses a
    clash before generating); `n` is checked too, so a huge one is refused before any folder is made."""

    def writes(kinds: Iterable[str] | str | None = None, n: int = 1, **_: Any) -> list[str]:
        check_synthetic_n(n)
        return pick_kinds(kinds, known)

    return writes


def check_options(fn: Callable[..., Any], options: Mapping[str, Any], what: str, positional: int) -> None:
    """Raise :class:`DomainError` naming the known options when `options` holds a keyword `fn` does not take.

    `positional`: how many leading parameters the caller fills itself (``src, out``: 2). A target taking
    ``**kwargs`` accepts anything; one whose signature cannot be read is not checked.
    """
    fixed = set(getattr(fn, "fixed", ()))
    found = option_names(fn, positional)
    if found is None:
        return
    target = fn.resolve() if callable(getattr(fn, "resolve", None)) else fn
    known, open_ended = found
    unknown = [k for k in options if k in fixed or (k not in known and not open_ended)]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise DomainError(f"{what} has no option {names}; its options: {', '.join(known) or 'none'}")
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is simply not checked
        return
    for key, value in options.items():
        if key in hints and not _fits(value, hints[key]):
            text = "; quote it to pass it as text" if _fits("", hints[key]) and isinstance(value, (int, float)) else ""
            raise DomainError(f"{what}: option {key}={value!r} is not {_describe(hints[key])}{text}")


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path",
            type(None): "null"}


def _fits(value: Any, hint: Any) -> bool:
    """Whether an option value read as YAML can stand for a parameter annotated `hint`. Only the plain kinds an
    option is typed as are checked (bool, int, float, str, paths, lists, their unions and Literal); others pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:  # a Python caller's Path as well as a YAML text
        return isinstance(value, (str, os.PathLike))
    if hint is type(None):
        return value is None
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return isinstance(value, (list, tuple))
    if hint is collections.abc.Callable or origin is collections.abc.Callable:  # label_fn: a text would be called
        return callable(value)
    return True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(arg) for arg in typing.get_args(hint)))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return "a list such as [a, b]"
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        return "a Python function (given in Python, not on the command line)"
    return _SCALARS.get(hint, str(hint))


# --------------------------------------------------------------------------------------------- plugins
@dataclass
class DomainPlugin:
    """One domain. Only `name` is required; everything else defaults to empty.

    * `readers`: file suffix (``".tif"``, lower case, with the dot) or ``"*"`` (any file) -> callable
      ``(path, **options) -> PIL RGB image``; :meth:`read` picks one by suffix.
    * `converters`: data-set name -> ``(src: Path, out: Path, *, progress, **options) -> ConvertReport``;
      ``progress`` (``True`` / ``False`` / ``"lines"``) goes to :func:`model.progress.progress_bar`.
    * `metrics`: task name -> scorer ``(prediction, record, reference) -> dict[str, float]``, the signature
      ``adapt.metrics.register_task`` takes.
    * `recipes`: names of recipe templates under ``templates/recipes`` (without ``.yaml``).
    * `synthetic`: a generator ``(out_dir, *, progress, **options) -> ...`` writing a small synthetic data set.
      It may carry a ``writes`` attribute, ``(**options) -> [name, ...]``: the top-level files and folders it
      writes into ``out_dir`` for those options, so that :meth:`synthesize` refuses a clash before generating.
    * `demo_hooks`: optional hook name -> callable for the demo app (``deploy.demo``):

      - ``"read_upload"``: ``(paths: list[Path], **options) -> dict`` with ``"images"`` (PIL RGB images in
        model-input order), ``"labels"`` (one caption per image, or None), ``"prompt"`` (text holding one
        ``<image>`` per image that precedes the question, or None for the default placement), ``"info"``
        (``{name: value}`` shown in the page; never identifying data) and ``"warnings"`` (strings).
        Options are the domain's own (medical: ``window``, ``slices``; driving: ``mode``, ``order``).
      - ``"draw_answer"``: ``(images, answer: str, **options) -> list[PIL.Image]``: the answer drawn on the
        images (boxes, points).
      - ``"options"``: ``() -> {name: {"choices": [...], "default": value, "label": text}}``: choices the demo
        page offers; the chosen values go to ``read_upload`` and ``draw_answer`` as keywords.

      A scorer in `metrics` may carry an ``aggregate`` attribute, ``(predictions, context) -> {name: value}``,
      for corpus-level scores (see ``adapt.metrics``).
    """

    name: str
    description: str = ""
    readers: dict[str, Reader] = field(default_factory=dict)
    converters: dict[str, Converter] = field(default_factory=dict)
    metrics: dict[str, MetricFn] = field(default_factory=dict)
    recipes: tuple[str, ...] = ()
    synthetic: Callable[..., Any] | None = None
    demo_hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"domain name must be lower-case snake_case (e.g. 'remote_sensing'), got {self.name!r}")
        where = f"domain {self.name!r}"
        for attr in ("readers", "converters", "metrics", "demo_hooks"):
            value = getattr(self, attr)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise TypeError(f"{where}: {attr} must be a dict of name -> callable, got {type(value).__name__}")
            value = dict(value)
            for key, fn in value.items():
                if not isinstance(key, str) or not key:
                    raise TypeError(f"{where}: {attr} keys must be non-empty strings, got {key!r}")
                if not callable(fn):
                    raise TypeError(f"{where}: {attr}[{key!r}] must be callable, got {type(fn).__name__}")
            setattr(self, attr, value)
        for suffix in self.readers:
            if suffix != "*" and not (suffix.startswith(".") and suffix == suffix.lower()):
                raise ValueError(f"{where}: reader keys are lower-case file suffixes like '.tif' or '*', got {suffix!r}")
        if isinstance(self.recipes, str):
            self.recipes = (self.recipes,)
        self.recipes = tuple(self.recipes or ())
        if not all(isinstance(r, str) and r for r in self.recipes):
            raise TypeError(f"{where}: recipes must be template names (strings), got {self.recipes!r}")
        if self.synthetic is not None and not callable(self.synthetic):
            raise TypeError(f"{where}: synthetic must be callable or None, got {type(self.synthetic).__name__}")

    def reader_for(self, path: str | Path) -> Reader:
        suffix = Path(path).suffix.lower()
        fn = self.readers.get(suffix) or self.readers.get("*")
        if fn is None:
            known = ", ".join(sorted(self.readers)) or "none"
            raise DomainError(f"{path}: domain {self.name!r} has no reader for {suffix or 'files without a suffix'!r} "
                             f"(readers for: {known})")
        return fn

    def read(self, path: str | Path, **options: Any):
        """Read a raw field file into an RGB PIL image with the reader registered for its suffix."""
        return self.reader_for(path)(Path(path), **options)

    def convert(self, dataset: str, src: str | Path, out: str | Path, /, *, show_progress: Progress = True,
                **options: Any) -> ConvertReport:
        """Run converter `dataset` after checking `options` against its parameters and removing the ``.part``
        files a killed run left in `out` (:func:`domains.files.remove_stale_parts`). `show_progress`: the converter's
        ``progress`` (a bar, ``"lines"`` or nothing; a ``progress`` option, if given, wins)."""
        fn = self.converters.get(dataset)
        if fn is None:
            known = ", ".join(sorted(self.converters)) or "none yet"
            raise DomainError(f"domain {self.name!r} has no converter for data set {dataset!r} (known: {known})")
        what = f"converter {self.name}/{dataset}"
        check_options(fn, options, what, positional=2)
        if "dataset" in options:
            check_dataset_name(options["dataset"], out)
        options = _with_progress(fn, options, show_progress, what, positional=2)
        from domains.files import remove_stale_parts

        remove_stale_parts(Path(out))
        return fn(Path(src), Path(out), **options)

    def synthesize(self, out: str | Path, /, *, show_progress: Progress = True, force: bool = False,
                   **options: Any) -> Any:
        """Run the synthetic-data generator into `out` after checking `options` against its parameters.

        The generator writes into a fresh hidden folder inside `out`; each file or folder it made then takes its
        place in `out` whole. One that would replace something in `out` that is not empty (a real data set
        downloaded there, an earlier synthesis with other options) is refused with :class:`DomainError`, and
        nothing is moved, unless `force`, which replaces it: two generations never mix and nothing is overwritten
        without a word. `show_progress`: the generator's ``progress`` (a ``progress`` option wins). Returns the
        generator's result with its paths in `out`."""
        if self.synthetic is None:
            raise DomainError(f"domain {self.name!r} has no synthetic-data generator")
        what = f"the {self.name} generator"
        check_options(self.synthetic, options, what, positional=1)
        options = _with_progress(self.synthetic, options, show_progress, what, positional=1)
        out = Path(out)
        declared = synthetic_writes(self.synthetic, options)
        if declared is not None and not force:  # refused before minutes of generating, where the names are known
            _refuse_taken([out / name for name in declared if _holds_something(out / name)])
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".synthesize-", dir=out))
        try:
            result = self.synthetic(staging, **options)
            made = sorted(staging.iterdir())
            if not force:  # the safety net for what a generator writes without declaring it
                _refuse_taken([out / p.name for p in made if _holds_something(out / p.name)])
            for p in made:
                target = out / p.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                os.replace(p, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return _moved(result, staging, out)


def synthetic_writes(fn: Callable[..., Any], options: Mapping[str, Any]) -> list[str] | None:
    """The top-level names generator `fn` declares (its ``writes`` attribute, looked up through :func:`lazy`) it
    writes for `options`; None where it declares nothing."""
    target = fn.resolve() if callable(getattr(fn, "resolve", None)) else fn
    writes = getattr(target, "writes", None)
    if writes is None:
        return None
    return sorted(set(writes(**{**getattr(fn, "fixed", {}), **options})))


def _refuse_taken(taken: list[Path]) -> None:
    if taken:
        names = ", ".join(str(t) for t in taken[:5]) + (f" and {len(taken) - 5} more" if len(taken) > 5 else "")
        raise DomainError(f"{names}: already there and not empty; synthesize into another --out, or pass "
                          "--force to replace them (nothing was written)")


def _holds_something(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def _moved(result: Any, staging: Path, out: Path) -> Any:
    """`result` (a path, or a mapping / list of them) with the paths under `staging` given under `out`."""
    if isinstance(result, Mapping):
        return {k: _moved(v, staging, out) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return type(result)(_moved(v, staging, out) for v in result)
    if isinstance(result, Path) and result.is_relative_to(staging):
        return out / result.relative_to(staging)
    return result


def _with_progress(fn: Callable[..., Any], options: dict[str, Any], progress: Progress, what: str,
                   positional: int) -> dict[str, Any]:
    """`options` with ``progress`` set to `progress` unless they set it already. Every converter and generator
    shows its progress through :func:`model.progress.progress_bar`: one without a ``progress`` keyword (in its
    signature, or through ``**kwargs``) is refused with :class:`DomainError` rather than left silent."""
    found = option_names(fn, positional)
    if found is not None and "progress" not in found[0] and not found[1]:
        raise DomainError(f"{what} takes no 'progress' keyword; converters and generators must accept "
                          "progress=True|False|'lines' (model.progress.progress_bar)")
    return {"progress": progress, **options}


# --------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, DomainPlugin] = {}
_ERRORS: dict[str, str] = {}  # source (builtin:<name> / entry point name) -> message
_LOADED = False


def register_domain(plugin: DomainPlugin, *, overwrite: bool = False) -> DomainPlugin:
    """Add `plugin` to the registry. Re-registering a different plugin under a taken name needs `overwrite`."""
    if not isinstance(plugin, DomainPlugin):
        raise TypeError(f"register_domain expects a DomainPlugin, got {type(plugin).__name__}")
    old = _REGISTRY.get(plugin.name)
    if old is not None and old is not plugin and not overwrite:
        raise ValueError(f"domain {plugin.name!r} is already registered ({old.description or 'no description'}); "
                         "pass overwrite=True to replace it")
    _REGISTRY[plugin.name] = plugin
    return plugin


def unregister_domain(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_domain(name: str) -> DomainPlugin:
    """The plugin called `name`; an unknown name raises ValueError listing the known ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        msg = f"unknown domain {name!r}; known domains: {known}"
        if _ERRORS:
            msg += "; plugins that failed to load: " + "; ".join(f"{k} ({v})" for k, v in sorted(_ERRORS.items()))
        raise DomainError(msg) from None


def list_domains() -> list[str]:
    """Names of all registered domains (built-in, entry points, run-time), sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def discovery_errors() -> dict[str, str]:
    """Plugins that failed to load: ``{"builtin:<name>" or entry-point name: message}``."""
    _ensure_loaded()
    return dict(_ERRORS)


def reload_domains() -> None:
    """Forget discovered plugins and errors and discover again (run-time registrations are dropped too)."""
    global _LOADED
    _REGISTRY.clear()
    _ERRORS.clear()
    _LOADED = False
    _ensure_loaded()


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for name, module in BUILTIN_DOMAINS.items():
        try:
            plugin = _as_plugin(importlib.import_module(module).PLUGIN, f"{module}.PLUGIN")
            if plugin.name != name:
                raise ValueError(f"{module}.PLUGIN is named {plugin.name!r}, expected {name!r}")
            if plugin.name not in _REGISTRY:
                _REGISTRY[plugin.name] = plugin
        except (Exception, SystemExit) as exc:  # one broken domain must not hide the others (nor end the program)
            _report(f"builtin:{name}", exc)
    _load_entry_points()


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken distribution's metadata
        _report(f"entry points ({ENTRY_POINT_GROUP})", exc)
        return
    for ep in eps:
        label = f"entry point {ep.name!r} ({ep.value})"
        try:
            plugin = _as_plugin(ep.load(), label)
            old = _REGISTRY.get(plugin.name)
            if old is not None and old is not plugin:
                raise ValueError(f"domain name {plugin.name!r} is already taken; rename the plugin")
            _REGISTRY[plugin.name] = plugin
        except (Exception, SystemExit) as exc:  # a plugin module calling sys.exit() on import
            _report(label, exc)


def _as_plugin(obj: Any, label: str) -> DomainPlugin:
    if isinstance(obj, DomainPlugin):
        return obj
    if callable(obj):
        made = obj()
        if isinstance(made, DomainPlugin):
            return made
        raise TypeError(f"{label} returned {type(made).__name__}, expected a DomainPlugin")
    raise TypeError(f"{label} is a {type(obj).__name__}, expected a DomainPlugin or a callable returning one")


def _report(label: str, exc: BaseException) -> None:
    msg = f"{type(exc).__name__}: {exc}"
    _ERRORS[label] = msg
    warnings.warn(f"pocket-adapt: domain plugin {label} failed to load: {msg}", RuntimeWarning, stacklevel=3)
