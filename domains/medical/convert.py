"""Convert public medical VQA / classification sets and DICOM question sets into InternVL chat JSONL.

Converters (each ``(src, out, **options) -> ConvertReport``; registered on the ``medical`` plugin), for the
public layouts of ``domains.md`` §3.2:

* :func:`convert_vqa_rad` -- ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/`` -> ``med_vqa``;
* :func:`convert_slake` -- ``Slake1.0/{train,validate,test}.json`` + ``imgs/xmlabN/source.jpg`` -> ``med_vqa``;
* :func:`convert_pmc_vqa` -- ``train.csv`` / ``test.csv`` (and ``test_clean.csv``, ``*_2.csv``) + ``images/``
  -> multiple choice (``mc``) or open-ended ``med_vqa``;
* :func:`convert_classification` -- folder per class (PNG / JPEG / DICOM) -> lettered multiple choice;
* :func:`convert_dicom_qa` -- DICOM series + a QA JSON (the layout below) -> closed / open ``med_vqa``,
  ``grounding`` and ``mc``, one or several slices per sample.

**Output.** ``out/<dataset>_<split>.jsonl`` (``report.outputs[split]``), images under
``out/images/<dataset>/``; record ``image`` paths are relative to `out`. Records hold ``id``, ``image`` (a
path, or a list of paths for multi-slice samples), ``width`` / ``height`` (of the first image),
``conversations`` (one human turn with one ``<image>`` per image, one gpt turn), ``task``, ``answer``,
``meta`` and, for multiple choice, ``options`` (texts without letters; the question lists them as
``A. …``, the answer is the letter). ``med_vqa`` records carry ``meta["answer_type"]`` (``CLOSED`` /
``OPEN``), which :mod:`domains.medical.metrics` scores by. The public sets' JPEG / PNG sources (VQA-RAD, SLAKE,
PMC-VQA) are copied byte for byte (after a full decode check); classification's images, which may be a
hospital's own, are re-saved as PNG from their decoded pixels (upright per EXIF orientation) without any
metadata, under keyed hashes of their paths; DICOM slices are rendered to 8-bit PNG through
:mod:`domains.medical.dicom`.

**No patient data in the output.** DICOM-derived records and file names carry only
``deid.pseudonym(ds, salt=...)`` ids and keyed hashes (HMAC-SHA256) of UIDs and paths -- never the source
PatientName / PatientID, dates, institution, UIDs or file names -- and the images are rendered pixels only (PNG
without text chunks). The key is the ``salt`` option when given (the same salt gives the same pseudonyms on any
machine), else this machine's key (:func:`machine_key`: made once, kept outside the output in
``$XDG_CONFIG_HOME/pocket-adapt/deid-key``, mode 0600): re-runs here give the same pseudonyms, while nobody
without the key can recompute one from a guessed patient ID. The report names the key file, never the key.

A file that may hold burned-in text (:func:`domains.medical.deid.burned_in_risk`: ``BurnedInAnnotation`` "YES", or
not "NO" in an ultrasound, secondary capture or other modality that often has it) is, by the DICOM converters'
options: kept as it is and counted in the report as a warning (``report.warnings["burned-in
annotation"]``, the default); skipped (``skip_burned_in=True``); or rendered with the text regions blacked out
(``redact_burned_in=True``: :func:`domains.medical.redact.redact_burned_in` -- the file's ultrasound regions, else
the modality's mask), counted under ``report.warnings["burned-in annotation redacted"]`` with the rule and the
regions, its records carrying ``meta["redacted"]`` (per image, the ``[x1, y1, x2, y2]`` pixel boxes blacked out)
and its images named ``…_redacted.png``. A mask is a heuristic: check the images, text outside it stays. A file
with ``RecognizableVisualFeatures`` "YES" (a face, say) is kept and counted under
``report.warnings["recognizable visual features"]``.

**Idempotent.** Sources are only read; an output image is re-used when present and not older than its
source; a JSONL is rewritten only when its bytes change (atomic writes throughout). ``classification`` and
``dicom_qa`` own ``out/images/<dataset>/``: images there that no record of the run names (an earlier run's
unredacted render, the image of a file skipped this time) are removed and listed in ``report.removed``.

**Bad input** (missing / undecodable images, corrupt DICOM, malformed JSON / CSV rows, empty questions or
answers, unknown splits, boxes outside the image, ...) is skipped and counted under a reason with the file
or record named; the rest converts. A bad file is counted once, under its own name and reason (``unreadable
DICOM``: truncated pixel data, say), and each question that needed it once more (``image skipped``, ``series
skipped``, ``slice skipped``): the report reads N files (M questions). A compressed file no installed plug-in
decodes is counted under a reason naming its transfer syntax and what to ``pip install``. DICOM objects that are
no images -- DICOMDIR, SR, RT structure sets, presentation states, segmentations, RT dose grids -- in a series or
class folder are not errors: they are counted as ``passed over: <reason>`` with their kind; so is an image in another
plane than its series' slices (a localizer), which would otherwise move the slice indexes.

``dicom_qa`` layout
-------------------
::

    <src>/
      qa.json                   # the questions (below)
      <series folders>/*.dcm    # one DICOM series per folder (any names; slices are sorted by position)

``qa.json`` is ``{"questions": [...]}`` (or a bare list); other top-level keys (``format``, ``version``,
``description``) are ignored. Each question::

    {"id": "case01-007",                 # unique; used in record ids (must not hold patient data)
     "split": "train",                   # train | val | test (option default_split fills a missing one)
     "series": "series/case01",          # folder of one series, relative to <src> (must stay inside it);
                                         #   a disc's DICOMDIR stands for its folder (of a disc with several
                                         #   series, name the series' folder: the report lists them)
     "series_select": 3,                 # optional, of a folder holding several series: the one to use, by
                                         #   SeriesNumber or SeriesInstanceUID (default: the series option)
     "slices": [5],                      # 0-based indices in the series sorted along the slice normal
                                         #   (domains.medical.dicom.load_series order), or a frame index of a
                                         #   multi-frame file; or "instances": [InstanceNumber, ...]
     "window": "abdomen",                # a WINDOW_PRESETS name, [center, width], "center/width", "minmax",
                                         #   or null = the converter's window option (default: the file's
                                         #   own VOI LUT / WindowCenter / WindowWidth)
     "type": "closed",                   # closed | open | grounding | mc
     "question": "Is there a lesion in this slice?",
     "answer": "yes",                    # closed / open: the answer; mc: an option's text or its letter
     "options": ["liver", "lung"],       # mc only
     "ref": "lesion",                    # grounding: the phrase (default "lesion")
     "boxes": [[x1, y1, x2, y2]]}        # grounding: pixel boxes in the slice (x2 / y2 the far edges)

Several slices make one multi-image sample: the human turn is ``Slice 4/12: <image>\\nSlice 6/12:
<image>\\n…{question}`` (:func:`slice_prompt`). Grounding questions take exactly one slice; their answer is
``<ref>{ref}</ref><box>[[x1, y1, x2, y2], …]</box>`` on the 0-1000 grid (``domains.boxes``).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from domains.base import ConvertReport, DomainError, SkipInput, chat_record
from domains.boxes import render_ref_box
from domains.class_folders import check_distinct_labels, class_label
from domains.files import (
    PNG_OPTIONS,
    check_held_out_fraction,
    decode_image,
    files_inside,
    inside_root,
    is_fresh,
    png_bytes,
    read_json_file,
    remove_unreferenced_images,
    safe_name,
    split_of,
    unique_stems,
    write_output,
    write_splits,
)
from domains.parallel import Prefetch
from model.progress import Progress, progress_bar

__all__ = [
    "BURNED_IN_REDACTED",
    "BURNED_IN_WARNING",
    "RECOGNIZABLE_WARNING",
    "SAME_POSITION_WARNING",
    "MC_INSTRUCTION",
    "SPLITS",
    "VQA_INSTRUCTION",
    "class_label",
    "convert_classification",
    "convert_dicom_qa",
    "convert_pmc_vqa",
    "convert_slake",
    "convert_vqa_rad",
    "is_dicom_file",
    "mc_question",
    "slice_prompt",
]

VQA_INSTRUCTION = "Answer the question using a single word or phrase."
VQA_INSTRUCTION_ZH = "请用一个词或短语回答问题。"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
CLASSIFICATION_QUESTION = "Which of the following best describes this image?"
BURNED_IN_WARNING = "burned-in annotation"
BURNED_IN_REDACTED = "burned-in annotation redacted"
RECOGNIZABLE_WARNING = "recognizable visual features"
SAME_POSITION_WARNING = "slices at one position"
SPLITS = ("train", "val", "test")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")


# --------------------------------------------------------------------------------------------- helpers
DEID_KEY_FILE = "deid-key"
DEID_KEY_INPUT = "de-identification key"  # its row in the report (the path, never the key)


def deid_key_path() -> Path:
    """Where this machine's de-identification key lives: ``$XDG_CONFIG_HOME/pocket-adapt/deid-key``
    (``~/.config/pocket-adapt/deid-key`` when XDG_CONFIG_HOME is unset or relative)."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "pocket-adapt" / DEID_KEY_FILE


def machine_key() -> tuple[str, Path]:
    """(this machine's de-identification key, its file): 64 hex digits made once by :func:`secrets.token_hex`
    and kept in :func:`deid_key_path` (mode 0600), so re-runs on this machine give the same pseudonyms and
    splits while nobody without the file can recompute a pseudonym from a guessed patient ID. Raises
    :class:`DomainError` naming the file when it cannot be read or made."""
    path = deid_key_path()
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="ascii") as f:
                    f.write(secrets.token_hex(32) + "\n")
                try:
                    os.link(tmp, path)  # appears whole, and never replaces a key another run made meanwhile
                except FileExistsError:
                    pass
            finally:
                tmp.unlink(missing_ok=True)
        key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DomainError(f"{path}: cannot read or create the de-identification key "
                          f"({type(exc).__name__}: {exc}); pass --option salt=... instead") from None
    if not re.fullmatch(r"[0-9a-f]{64}", key):
        raise DomainError(f"{path}: not a pocket-adapt de-identification key (64 hex digits); restore it from a "
                          "backup, or move it away to make a new one (pseudonyms then change)")
    return key, path


def _secret(salt: str, report: ConvertReport) -> str:
    """The key of a run's pseudonyms and hashes: `salt` when given, else :func:`machine_key`; the report names
    which (the key file's path, never the key)."""
    if salt:
        report.inputs[DEID_KEY_INPUT] = "the --option salt given"
        return salt
    key, path = machine_key()
    report.inputs[DEID_KEY_INPUT] = f"{path} (this machine's; --option salt=... gives pseudonyms shared across machines)"
    return key


IMAGES_LABEL = "<images_dir>"


def _report(dataset: str, src: Path, out: Path, images_dir: Path | None = None) -> ConvertReport:
    """The run's :class:`ConvertReport`, naming inputs relative to `src` (its folder when `src` is a file) and,
    for an `images_dir` outside it, relative to `images_dir`."""
    root = src if src.is_dir() else src.parent
    root_text = "" if str(root) in ("", ".") else str(root)
    images_text = ""
    if images_dir is not None and str(images_dir) not in ("", "."):
        inside = bool(root_text) and os.path.abspath(images_dir).startswith(os.path.abspath(root) + os.sep)
        images_text = "" if inside else str(images_dir).rstrip("/" + os.sep) or str(images_dir)
    return ConvertReport(dataset=dataset, source=src, out=out, root=root_text,
                         labels={images_text: IMAGES_LABEL} if images_text else {})


def _hash(key: str, *parts: Any, n: int = 10) -> str:
    """A keyed digest (HMAC-SHA256) of `parts`: without `key` nobody can match it to a guessed UID or path."""
    return hmac.new(key.encode("utf-8"), "\x1f".join(map(str, parts)).encode("utf-8"), hashlib.sha256).hexdigest()[:n]


def slice_prompt(labels: Sequence[str] | None) -> str:
    """The text before the question: ``"<image>\\n"`` for one image, else ``"{Label}: <image>\\n"`` per image
    with the label's first letter capitalised (``["slice 4/12", ...]`` -> ``"Slice 4/12: <image>\\n…"``), so
    the demo's lower-case display labels give the layout the converters train on."""
    if not labels or len(labels) == 1:
        return "<image>\n"
    return "".join(f"{label[:1].upper()}{label[1:]}: <image>\n" for label in labels)


def mc_question(question: str, options: Sequence[str]) -> str:
    """A question with its lettered options and the answer-with-a-letter instruction (InternVL MC style)."""
    lines = [question.strip(), *(f"{LETTERS[k]}. {opt}" for k, opt in enumerate(options)), MC_INSTRUCTION]
    return "\n".join(lines)


def _text(value: Any) -> str:
    """A field as stripped text ('' for None / NaN-like blanks); numbers become their text."""
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())


def _name(value: Any) -> str:
    """A file-name field: stripped text ('' for None); inner spaces kept."""
    return "" if value is None else str(value).strip()


def _out_stems(names: Iterable[str]) -> dict[str, str]:
    """The output stem of each image named in a data file (:func:`~domains.files.unique_stems`: its path without the
    suffix as one safe name, ``xmlab0/source.jpg`` -> ``xmlab0_source-<hash>``), distinct for distinct names:
    ``a.jpg`` and ``a.JPG``, or ``a.bmp`` and ``a.png``, are two images and must not land on one output file."""
    return unique_stems(name for name in names if name)


def _copy_target(src: Path, rel_stem: str) -> tuple[str, bool]:
    """(output path relative to `out`, whether the file is kept byte for byte) of :func:`_copy_image`."""
    suffix = src.suffix.lower()
    keep = suffix in (".jpg", ".jpeg", ".png")
    # `rel_stem` is unique for the source name (_out_stems): a converted a.bmp and a neighbour a.png have two stems
    return f"{rel_stem}{suffix if keep else '.png'}", keep


def _copy_step(src: Path, keep: bool) -> tuple[bytes, tuple[int, int]]:
    """The expensive, pure part of :func:`_copy_image` (a worker's with ``workers > 1``): decode `src` fully,
    then its bytes (`keep`) or its RGB PNG; (bytes, (W, H)). Raises :class:`SkipInput`."""
    rgb = decode_image(src)
    if keep:
        return src.read_bytes(), rgb.size
    buf = io.BytesIO()
    rgb.save(buf, **PNG_OPTIONS)
    return buf.getvalue(), rgb.size


def _copy_plan(src: Path, out: Path, rel_stem: str) -> tuple:
    """The :class:`~domains.parallel.Prefetch` step of ``_copy_image(src, out, rel_stem)``."""
    rel, keep = _copy_target(src, rel_stem)
    return out / rel, _copy_step, (src, keep)


def _copy_image(src: Path, out: Path, rel_stem: str, pf: Prefetch | None = None) -> tuple[str, tuple[int, int]]:
    """JPEG / PNG: copied byte for byte; other formats: converted to PNG. Returns (relative path, size).
    `pf`: computes :func:`_copy_step` (ahead, in a worker process, with ``workers > 1``)."""
    rel, keep = _copy_target(src, rel_stem)
    return _made_image(src, out, rel, pf, _copy_step, src, keep)


def _made_image(src: Path, out: Path, rel: str, pf: Prefetch | None, step: Callable, *args: Any
                ) -> tuple[str, tuple[int, int]]:
    """``out/rel`` made from `src` by ``step(*args) -> (bytes, size)`` (through `pf`), or re-used when fresh;
    (rel, size)."""
    dst = out / rel
    if is_fresh(dst, src):
        try:
            with Image.open(dst) as im:
                return rel, im.size
        except (UnidentifiedImageError, OSError):
            pass  # damaged output: write it again
    data, size = (pf or Prefetch()).get(dst, step, *args)
    write_output(dst, data, src)
    return rel, size


def _clean_step(src: Path) -> tuple[bytes, tuple[int, int]]:
    """`src` decoded by the one image reader (:func:`model.tiling.load_image`: upright per EXIF orientation, RGB)
    and saved as PNG from the decoded pixels, without any metadata (EXIF, text chunks, ICC); (bytes, (W, H)).
    Raises :class:`SkipInput`."""
    from model.tiling import (  # lazily: the plugin registry stays free of torch
        ImageLoadError,
        load_image,
    )

    if not src.is_file():
        raise SkipInput("missing image", f"{src}: no such file")
    try:
        img = load_image(src)
    except ImageLoadError as exc:
        raise SkipInput("unreadable image", str(exc)) from exc
    return png_bytes(img), img.size


def _clean_image(src: Path, out: Path, rel: str, pf: Prefetch | None = None) -> tuple[str, tuple[int, int]]:
    """``out/rel`` (a ``.png``) made by :func:`_clean_step`; (rel, size)."""
    return _made_image(src, out, rel, pf, _clean_step, src)


def is_dicom_file(path: Path) -> bool:
    """``.dcm`` / ``.dicom`` suffix, gzipped too (``.dcm.gz``, which :func:`~domains.medical.dicom.read_dicom`
    reads); never an :data:`IMAGE_SUFFIXES` one; any other name (none, or the ``.504`` of a file named by its
    SOPInstanceUID) when its first bytes say DICOM: the ``DICM`` marker at byte 128 or a dataset without preamble
    (:func:`domains.medical.dicom.starts_as_dicom`)."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or path.name.lower().endswith(tuple(s + ".gz" for s in DICOM_SUFFIXES)):
        return True
    if suffix in IMAGE_SUFFIXES:
        return False
    from domains.medical.dicom import starts_as_dicom

    return starts_as_dicom(path)


# --------------------------------------------------------------------------------------------- DICOM
class _Dicom:
    """Reads DICOM slices through domains.medical.dicom / deid (imported on first use): pseudonyms, the
    burned-in policy (one warning per file; skip, keep or redact) and PNG renders cached per (file, frame, window)."""

    def __init__(self, report: ConvertReport, out: Path, dataset: str, salt: str, skip_burned_in: bool,
                 redact_burned_in: bool = False):
        from domains.medical import deid, dicom, redact

        if skip_burned_in and redact_burned_in:
            raise DomainError("skip_burned_in and redact_burned_in are both set: choose one for files that may "
                              "hold burned-in text")
        self.dicom, self.deid, self.redact = dicom, deid, redact
        self.report, self.out, self.dataset = report, out, dataset
        self.salt, self.skip_burned_in, self.redact_burned_in = salt, skip_burned_in, redact_burned_in
        self.checked: dict[Path, Any] = {}  # path -> the header, or the SkipInput raised for it
        self.renders: dict[tuple, tuple[str, tuple[int, int]] | SkipInput] = {}
        self.redacted: dict[tuple, list[list[int]]] = {}  # render key -> boxes blacked out
        self.made: set[Path] = set()  # renders this run wrote where no file was: not an earlier run's if unused
        self.pf: Prefetch | None = None  # renders computed ahead in worker processes (workers > 1)

    def window(self, value: Any) -> tuple[Any, str]:
        """A window argument (preset name, ``[center, width]``, ``"center/width"``, ``"minmax"`` or None = the
        file's own) -> (value for dicom_to_rgb, a file-name tag). Raises :class:`SkipInput` ("bad window")."""
        try:
            resolved = self.dicom.resolve_window(tuple(value) if isinstance(value, list) else value)
        except (TypeError, ValueError) as exc:
            raise SkipInput("bad window", str(exc)) from exc
        if resolved is None:
            return None, "file"
        if resolved == "minmax":
            return "minmax", "minmax"
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_").replace(" ", "_")
            if key in self.dicom.WINDOW_PRESETS:
                return key, key
        c, w = resolved
        return (c, w), f"c{c:g}w{w:g}"

    def read(self, path: Path, header_only: bool = False):
        if not path.is_file():
            raise SkipInput("missing image", f"{path}: no such file")
        try:
            return self.dicom.read_dicom(path, header_only=header_only)
        except self.dicom.DicomError as exc:
            raise SkipInput("unreadable DICOM", str(exc)) from exc

    def pseudonym(self, ds) -> str:
        return self.deid.pseudonym(ds, salt=self.salt)

    def header(self, path: Path):
        """`path`'s header, read once; applies the burned-in policy (one warning per file, or a skip)."""
        status = self.checked.get(path)
        if status is None:
            try:
                status = self.read(path, header_only=True)
                why = _burned_in_why(status)
                if why is not None:
                    if self.skip_burned_in:
                        raise SkipInput("burned-in annotation", f"{path}: {why} (--option skip_burned_in=true)")
                    if self.redact_burned_in:
                        self.report.warn(str(path), BURNED_IN_REDACTED, self._redaction_note(status, why))
                    else:
                        self.report.warn(str(path), BURNED_IN_WARNING,
                                         f"{why}: text may be burned into the pixels; kept "
                                         "(--option skip_burned_in=true drops such files, --option redact_burned_in=true "
                                         "blacks the text out)")
                if str(status.get("RecognizableVisualFeatures") or "").strip().upper() == "YES":
                    self.report.warn(str(path), RECOGNIZABLE_WARNING,
                                     "RecognizableVisualFeatures is YES: the pixels may show a face or other features "
                                     "that identify the patient; kept, check the images")
            except SkipInput as exc:
                status = exc
            self.checked[path] = status
        if isinstance(status, SkipInput):
            raise status
        return status

    def _redaction_note(self, ds, why: str) -> str:
        try:
            boxes, rule = self.redact.redaction_regions(ds, int(ds.Columns), int(ds.Rows))
        except (AttributeError, TypeError, ValueError):
            return f"{why}: text regions blacked out (see meta['redacted'])"
        listed = ", ".join(f"[{', '.join(map(str, box))}]" for box in boxes[:4]) + (" …" if len(boxes) > 4 else "")
        return (f"{why}: blacked out by the {rule} rule: {listed}; text outside these regions "
                "may remain, check the images (records carry meta['redacted'])")

    def render(self, path: Path, rel_stem: str, window: Any, frame: int = 0) -> tuple[str, tuple[int, int]]:
        """Slice `frame` of `path` through `window` -> ``out/<rel_stem>.png`` (``…_redacted.png`` when burned-in
        text is blacked out; :meth:`redactions` then gives the boxes); (relative path, size)."""
        key = (path, frame, json.dumps(window))
        cached = self.renders.get(key)
        if isinstance(cached, SkipInput):
            raise cached
        if cached is not None:
            return cached
        header = self.header(path) if self.redact_burned_in else None
        redact = header is not None and self.deid.burned_in_risk(header)
        rel = f"{rel_stem}_redacted.png" if redact else f"{rel_stem}.png"
        dst = self.out / rel
        try:
            if is_fresh(dst, path):
                try:
                    with Image.open(dst) as im:
                        self.renders[key] = (rel, im.size)
                    if redact:
                        boxes, _rule = self.redact.redaction_regions(header, *im.size)
                        self.redacted[key] = [list(box) for box in boxes]
                    return self.renders[key]
                except (UnidentifiedImageError, OSError):
                    pass
            data, size, regions = (self.pf or Prefetch()).get(dst, _render_step, path, window, frame, redact)
            if redact:
                self.redacted[key] = regions
            if not dst.exists():
                self.made.add(dst)
            write_output(dst, data, path)
            self.renders[key] = (rel, size)
            return self.renders[key]
        except SkipInput as exc:
            self.renders[key] = exc
            raise

    def plan(self, path: Path, rel_stem: str, window: Any, frame: int = 0) -> tuple:
        """The :class:`~domains.parallel.Prefetch` step of ``render(path, rel_stem, window, frame)`` (reads the
        header: call it on a reader of its own, whose report is thrown away)."""
        header = self.header(path) if self.redact_burned_in else None
        redact = header is not None and self.deid.burned_in_risk(header)
        rel = f"{rel_stem}_redacted.png" if redact else f"{rel_stem}.png"
        return self.out / rel, _render_step, (path, window, frame, redact)

    def redactions(self, path: Path, window: Any, frame: int = 0) -> list[list[int]] | None:
        """The boxes blacked out in the render of (`path`, `frame`, `window`), or None when it was not redacted."""
        return self.redacted.get((path, frame, json.dumps(window)))


def _burned_in_why(ds) -> str | None:
    """Why `ds` may hold burned-in text (:func:`domains.medical.deid.burned_in_risk`: declared, or not declared
    NO in a modality / SOP class that often has it, such as ultrasound or secondary capture), or None."""
    from domains.medical import deid

    if deid.burned_in_annotation(ds):
        return "BurnedInAnnotation is YES"
    if not deid.burned_in_risk(ds):
        return None
    flag = str(ds.get("BurnedInAnnotation") or "").strip()
    modality = str(ds.get("Modality") or "").strip() or "?"
    return (f"BurnedInAnnotation is {flag or 'not given'} in a {modality} file (ultrasound, secondary capture and "
            "the like often carry burned-in text)")


def _render_step(path: Path, window: Any, frame: int, redact: bool) -> tuple[bytes, tuple[int, int], list | None]:
    """The expensive, pure part of :meth:`_Dicom.render` (a worker's with ``workers > 1``): read the DICOM, render
    `frame` through `window`, black out burned-in text when `redact`; (PNG bytes, (W, H), boxes or None)."""
    from domains.medical import dicom
    from domains.medical import redact as redaction

    if not path.is_file():
        raise SkipInput("missing image", f"{path}: no such file")
    try:
        ds = dicom.read_dicom(path)
        img = dicom.dicom_to_rgb(ds, window=window, frame=frame)
    except dicom.DicomError as exc:
        if exc.reason.startswith(dicom.NO_DECODER):  # one row naming the syntax and what to install, not one a file
            raise SkipInput(exc.reason, f"{path}: not decoded") from exc
        raise SkipInput("unreadable DICOM", str(exc)) from exc
    regions = None
    if redact:
        done = redaction.redact_burned_in(img, ds, only_flagged=False)  # also undeclared risky files (_burned_in_why)
        img = done.image
        regions = [list(box) for box in done.regions]
    return png_bytes(img), img.size, regions


def _window_option(reader: _Dicom, window: Any) -> tuple[Any, str]:
    try:
        return reader.window(window)
    except SkipInput as exc:
        raise DomainError(f"window option: {exc.detail}") from None


def _option_inside(src: Path, name: Any, option: str) -> Path:
    """`name`, a file named by `option`, as a path under `src` (:func:`~domains.files.inside_root`); a name leading
    out of `src` is a :class:`DomainError` naming the option."""
    try:
        return inside_root(src, name)
    except SkipInput as exc:
        raise DomainError(f"{option} option: {exc.detail}") from None


# --------------------------------------------------------------------------------------------- VQA-RAD
VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
VQA_RAD_SPLITS = {"freeform": "train", "para": "train", "frame": "train", "test_freeform": "test", "test_para": "test"}


def _answer_type(value: Any) -> str | None:
    kind = _text(value).upper()
    return kind if kind in ("CLOSED", "OPEN") else None


def _vqa_fields(row: dict, where: str, image_key: str) -> tuple[str, str, str, str]:
    """(question, answer, CLOSED | OPEN, image name) of a VQA-RAD / SLAKE row; SkipInput when one is missing."""
    _check_scalars(row, where, ("question", "answer"))
    question, answer = _text(row.get("question")), _text(row.get("answer"))
    if not question:
        raise SkipInput("empty question", f"{where}: empty question")
    if not answer:
        raise SkipInput("empty answer", f"{where}: empty answer")
    atype = _answer_type(row.get("answer_type"))
    if atype is None:
        raise SkipInput("bad answer_type", f"{where}: answer_type {row.get('answer_type')!r} is not CLOSED / OPEN")
    name = _name(row.get(image_key))
    if not name:
        raise SkipInput("missing image", f"{where}: no {image_key}")
    return question, answer, atype, name


def _image_folder(path: Path, what: str) -> Path:
    """`path` when it is a folder, else a DomainError naming it and `what` it should hold (every question would be
    counted as a skipped image: an empty conversion)."""
    if not path.is_dir():
        raise DomainError(f"{path}: no such folder ({what})")
    return path


def _unique_id(taken: set[str], base: str, *more: str) -> str:
    """`base`, or `base` with `more` appended one by one until unused (VQA-RAD gives a question and its paraphrase
    one qid): two records with one id would be confused wherever predictions are matched to references by id."""
    rid = base
    for part in more:
        if rid not in taken:
            break
        rid = f"{rid}-{safe_name(part)}"
    taken.add(rid)
    return rid


def _image_once(images: dict, name: str, folder: Path, out: Path, rel_stem: str, report: ConvertReport,
                where: str, pf: Prefetch | None = None) -> tuple:
    """Copy image `name` from `folder` the first time it is asked for (a bad image is counted once, under its own
    file); later rows reuse the result (`images`, by folder and name). SkipInput for a row whose image was skipped."""
    status = images.get((folder, name))
    if status is None:
        try:
            status = _copy_image(inside_root(folder, name), out, rel_stem, pf)
        except SkipInput as exc:
            report.skip(folder / name, exc.reason, exc.detail)
            status = exc
        images[folder, name] = status
    if isinstance(status, SkipInput):
        raise SkipInput("image skipped", f"{where}: {status.reason}: {status.detail}")
    return status


def convert_vqa_rad(src: str | Path, out: str | Path, dataset: str = "vqa_rad", images_dir: str | Path | None = None,
                    workers: int = 1, progress: Progress = True) -> ConvertReport:
    """VQA-RAD -> ``med_vqa`` records (``vqa_rad_train.jsonl``, ``vqa_rad_test.jsonl``).

    `src`: the folder holding ``VQA_RAD Dataset Public.json`` (or the JSON file itself); images from
    `images_dir`, default ``VQA_RAD Image Folder/`` beside it. The official test set is ``phrase_type`` in
    {``test_freeform``, ``test_para``} (451 QA); ``freeform`` / ``para`` / ``frame`` are train; other
    phrase types are skipped (``unknown split``). Record ids are ``vqa_rad/<split>/<qid>``; a qid met again in the
    split (a question and its paraphrase) gets ``-<phrase_type>`` (then ``-row<n>``) appended. ``meta`` keeps ``answer_type`` (CLOSED / OPEN, scored by
    type), ``question_type``, ``organ`` (``image_organ``), ``phrase_type``, ``qid`` and ``image_name``.
    `images_dir`: the folder of the images (default ``VQA_RAD Image Folder/`` beside the JSON file).
    `dataset`: the name of the outputs (``<dataset>_<split>.jsonl``, ``images/<dataset>/``) and the first part of the
    record ids.
    `workers`: processes decoding the images (:mod:`domains.parallel`; output byte-identical to 1). `progress`: a
    bar over the questions (:func:`model.progress.progress_bar`).
    """
    src, out = Path(src), Path(out)
    path = src if src.is_file() else src / VQA_RAD_JSON
    if not path.is_file():
        raise DomainError(f"{src}: no {VQA_RAD_JSON!r} (the VQA-RAD question file)")
    img_dir = _image_folder(Path(images_dir), "images_dir: the VQA-RAD images") if images_dir is not None else \
        _image_folder(path.parent / VQA_RAD_IMAGES, f"the VQA-RAD images, beside {VQA_RAD_JSON!r}; or pass images_dir")
    report = _report(dataset, src, out, img_dir)
    rows = read_json_file(path, report)
    if rows is None:
        return report
    if not isinstance(rows, list):
        report.skip(path, "malformed JSON", f"{path}: expected a list of question objects")
        return report
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    images: dict[tuple[Path, str], tuple[str, tuple[int, int]] | SkipInput] = {}
    ids: set[str] = set()
    stems = _out_stems(_name(row.get("image_name")) for row in rows if isinstance(row, dict))

    def plan():  # every image a row names, in row order (a superset of those converted)
        for row in rows:
            name = _name(row.get("image_name")) if isinstance(row, dict) else ""
            try:
                yield _copy_plan(inside_root(img_dir, name), out, f"images/{dataset}/{stems.get(name)}")
            except SkipInput:
                continue

    with Prefetch(workers, plan) as pf:
        for n, row in enumerate(progress_bar(rows, desc=dataset, unit="question", progress=progress)):
            where = f"{path.name} item {n}"
            try:
                if not isinstance(row, dict):
                    raise SkipInput("malformed record", f"{where}: not an object")
                qid = _text(row.get("qid")) or str(n)
                where = f"{path.name} qid {qid}"
                phrase = _text(row.get("phrase_type"))
                split = VQA_RAD_SPLITS.get(phrase)
                if split is None:
                    raise SkipInput("unknown split", f"{where}: phrase_type {phrase!r} is not one of {sorted(VQA_RAD_SPLITS)}")
                question, answer, atype, name = _vqa_fields(row, where, "image_name")
                status = _image_once(images, name, img_dir, out, f"images/{dataset}/{stems[name]}", report, where,
                                     pf)
            except SkipInput as exc:
                report.skip(where, exc.reason, exc.detail)
                continue
            meta = {"dataset": dataset, "split": split, "qid": qid, "answer_type": atype,
                    "question_type": _text(row.get("question_type")), "organ": _text(row.get("image_organ")),
                    "phrase_type": phrase, "image_name": name}
            rid = _unique_id(ids, f"{dataset}/{split}/{safe_name(qid)}", phrase, f"row{n}")
            splits[split].append(chat_record(rid, status[0], status[1],
                                             f"{question}\n{VQA_INSTRUCTION}", answer, "med_vqa", meta=meta))
    return write_splits(report, out, dataset, splits, keep_empty=False)


# --------------------------------------------------------------------------------------------- SLAKE
SLAKE_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}


def convert_slake(src: str | Path, out: str | Path, dataset: str = "slake", q_lang: str | None = "en",
                  splits: Sequence[str] | str | None = None, workers: int = 1,
                  progress: Progress = True) -> ConvertReport:
    """SLAKE 1.0 -> ``med_vqa`` records (``slake_{train,val,test}.jsonl`` from train / validate / test.json).

    `src`: the ``Slake1.0`` folder or its parent. Images are ``imgs/<img_name>`` (``xmlabN/source.jpg``).
    `q_lang`: ``"en"`` (default: the English benchmark), ``"zh"``, or ``None`` / ``"all"`` for both;
    questions in other languages are dropped without counting (a filter, not bad input); a `q_lang` no question
    has is a :class:`DomainError` naming those the files have. Chinese
    questions get a Chinese answer instruction. `splits`: which of ``train`` / ``val`` / ``test`` (one name or a
    list; default all three). ``meta`` keeps ``answer_type``, ``content_type``,
    ``base_type``, ``location``, ``modality``, ``q_lang``, ``qid`` and ``img_id``.
    `dataset`: the name of the outputs (``<dataset>_<split>.jsonl``, ``images/<dataset>/``) and the first part of the
    record ids.
    `workers`: processes decoding the images (:mod:`domains.parallel`; output byte-identical to 1). `progress`: a
    bar over each split's questions (:func:`model.progress.progress_bar`).
    """
    src, out = Path(src), Path(out)
    root = src / "Slake1.0" if (src / "Slake1.0").is_dir() else src
    if splits is not None and not (isinstance(splits, str) or isinstance(splits, Sequence) and splits
                                   and all(isinstance(s, str) for s in splits)):
        # `splits: [[train]]` from YAML was a raw "unhashable type" at the known-split check; `[]` said "no SLAKE files"
        raise DomainError(f"splits option: expected a SLAKE split name or a list of them ({', '.join(SLAKE_FILES)}), "
                          f"got {splits!r}")
    wanted = [splits] if isinstance(splits, str) else list(splits) if splits is not None else list(SLAKE_FILES)
    bad = [s for s in wanted if s not in SLAKE_FILES]
    if bad:
        raise DomainError(f"unknown SLAKE split(s) {bad}; known: {list(SLAKE_FILES)}")
    found = {s: root / SLAKE_FILES[s] for s in wanted if (root / SLAKE_FILES[s]).is_file()}
    if not found:
        raise DomainError(f"{src}: no SLAKE files ({', '.join(SLAKE_FILES.values())}) in {root}")
    _image_folder(root / "imgs", "the SLAKE images, imgs/xmlabN/source.jpg")
    report = _report(dataset, src, out)
    split_rows: dict[str, list] = {}  # each question file read once; one that cannot be read is counted, not raised
    for split, path in found.items():
        rows = read_json_file(path, report)
        if rows is not None and not isinstance(rows, list):
            report.skip(path, "malformed JSON", f"{path}: expected a list of question objects")
        elif rows is not None:
            split_rows[split] = rows
    objects = [row for rows in split_rows.values() for row in rows if isinstance(row, dict)]
    lang = None if q_lang in (None, "", "all") else str(q_lang)
    if lang is not None:  # a language no question has would drop every question: an empty conversion, unsaid
        langs = {_text(row.get("q_lang")) or "en" for row in objects}
        if langs and lang not in langs:
            raise DomainError(f"{src}: no SLAKE question has q_lang {lang!r}; the files have {sorted(langs)} "
                              "(or q_lang='all' for every question)")
    out_splits: dict[str, list[dict]] = {}
    images: dict[tuple[Path, str], tuple[str, tuple[int, int]] | SkipInput] = {}
    ids: set[str] = set()
    stems = _out_stems(_name(row.get("img_name")) for row in objects)

    def plan():  # every image a row names, in row order (a superset of those converted)
        for rows in split_rows.values():
            for row in rows:
                name = _name(row.get("img_name")) if isinstance(row, dict) else ""
                try:
                    yield _copy_plan(inside_root(root / "imgs", name), out,
                                     f"images/{dataset}/{stems.get(name)}")
                except (SkipInput, ValueError):
                    continue

    with Prefetch(workers, plan) as pf:
        for split, rows in split_rows.items():
            path = found[split]
            records: list[dict] = []
            for n, row in enumerate(progress_bar(rows, desc=f"{dataset} {split}", unit="question", progress=progress)):
                where = f"{path.name} item {n}"
                try:
                    if not isinstance(row, dict):
                        raise SkipInput("malformed record", f"{where}: not an object")
                    qid = _text(row.get("qid")) or str(n)
                    where = f"{path.name} qid {qid}"
                    row_lang = _text(row.get("q_lang")) or "en"
                    if lang is not None and row_lang != lang:
                        continue
                    question, answer, atype, name = _vqa_fields(row, where, "img_name")
                    status = _image_once(images, name, root / "imgs", out, f"images/{dataset}/{stems[name]}", report,
                                         where, pf)
                except SkipInput as exc:
                    report.skip(where, exc.reason, exc.detail)
                    continue
                instruction = VQA_INSTRUCTION_ZH if row_lang == "zh" else VQA_INSTRUCTION
                meta = {"dataset": dataset, "split": split, "qid": qid, "img_id": row.get("img_id"), "answer_type": atype,
                        "content_type": _text(row.get("content_type")), "base_type": _text(row.get("base_type")),
                        "location": _text(row.get("location")), "modality": _text(row.get("modality")), "q_lang": row_lang}
                rid = _unique_id(ids, f"{dataset}/{split}/{safe_name(qid)}", row_lang, f"row{n}")
                records.append(chat_record(rid, status[0], status[1], f"{question}\n{instruction}", answer, "med_vqa",
                                           meta=meta))
            out_splits[split] = records
    return write_splits(report, out, dataset, out_splits, keep_empty=False)


# --------------------------------------------------------------------------------------------- PMC-VQA
PMC_FILES = ("train.csv", "test.csv", "test_clean.csv", "train_2.csv", "test_2.csv")
_PMC_COLUMNS = ("Figure_path", "Question", "Answer")  # every mode's; mc needs "Choice A".."Choice D" too
_CHOICE = re.compile(r"^\s*\(?([A-Da-d])\s*[:.)]\s*(.*?)\s*$", re.DOTALL)


def _choices(row: dict) -> list[str]:
    """``Choice A``..``Choice D`` (``"A:…"``) -> option texts; raises ValueError when malformed."""
    out = []
    for letter in "ABCD":
        raw = row.get(f"Choice {letter}")
        text = "" if raw is None else str(raw)
        m = _CHOICE.match(text)
        if m:
            if m.group(1).upper() != letter:
                raise ValueError(f"Choice {letter} is labelled {m.group(1)!r}: {text.strip()!r}")
            text = m.group(2)
        text = " ".join(text.split())
        if not text:
            raise ValueError(f"Choice {letter} is empty")
        out.append(text)
    return out


def convert_pmc_vqa(src: str | Path, out: str | Path, dataset: str = "pmc_vqa", mode: str = "mc",
                    files: Sequence[str] | str | None = None, images_dir: str | Path | None = None,
                    workers: int = 1, progress: Progress = True) -> ConvertReport:
    """PMC-VQA -> multiple choice (``mode="mc"``, task ``mc``) or open-ended ``med_vqa`` (``mode="open"``).

    `src`: the folder with the CSVs (``Figure_path, Question, Answer, Choice A..D, Answer_label``; the choices
    are ``"A:…"``); `files`: which CSVs, names under `src` (one name or a list; default every one of
    :data:`PMC_FILES` present); each gives the split
    named by its stem (``pmc_vqa_train.jsonl``, ``pmc_vqa_test_clean.jsonl``, ...). `images_dir`: the folder of
    the images, ``<images_dir>/<Figure_path>`` (default ``images/`` under `src`; ``images_2/`` for the ``*_2.csv``
    files when present). `mode`: ``"mc"`` (multiple choice, task ``mc``) or ``"open"`` (open-ended ``med_vqa``), as
    below.
    `dataset`: the name of the outputs (``<dataset>_<split>.jsonl``, ``images/<dataset>/``) and the first part of the
    record ids.

    ``mc``: the question lists the four options (``A. …``) and the answer is ``Answer_label``; ``options``
    holds the texts. A missing / invalid label (anything but one of ``A``-``D``: ``"AB"`` too) is recovered when
    ``Answer`` equals one option's text, else the row is skipped; a CSV without the Choice columns is refused
    (DomainError: convert it with ``open``). ``open``: the answer is ``Answer`` (``meta["answer_type"]`` OPEN).
    ``meta`` keeps ``figure``, ``row`` (0-based data row), ``answer_text`` and ``answer_label``. `workers`: processes
    decoding the images (:mod:`domains.parallel`; output byte-identical to 1). `progress`: a bar over each file's rows
    (:func:`model.progress.progress_bar`).
    """
    src, out = Path(src), Path(out)
    if mode not in ("mc", "open"):
        raise DomainError(f"mode must be 'mc' or 'open', got {mode!r}")
    if not src.is_dir():
        raise DomainError(f"{src}: not a directory (expected the PMC-VQA CSV files)")
    if isinstance(files, str):  # `--option files=train.csv`: one name, not its characters
        files = [files]
    names = list(files) if files is not None else [f for f in PMC_FILES if (src / f).is_file()]
    for name in names if files is not None else ():
        if _option_inside(src, name, "files").is_dir():
            raise DomainError(f"files option: {name!r} is a folder in {src}, not a PMC-VQA CSV file")
    if not names:
        raise DomainError(f"{src}: no PMC-VQA CSV files ({', '.join(PMC_FILES)})")
    if mode == "mc":  # without the choices every row would be skipped, said only in the report
        for name in names:
            header = _csv_header(src / name)
            missing = [f"Choice {letter}" for letter in "ABCD" if f"Choice {letter}" not in header]
            if missing and all(c in header for c in _PMC_COLUMNS):  # a file without these is reported as malformed
                raise DomainError(f"{src / name}: mode 'mc' needs the columns Choice A-D, and this file has no "
                                  f"{', '.join(missing)}; convert it with mode 'open' (--option mode=open), "
                                  "whose answers are the Answer column")
    def image_dir(name: str) -> Path:
        if images_dir is not None:
            return Path(images_dir)
        v2 = Path(name).stem.endswith("_2") and (src / "images_2").is_dir()
        return src / ("images_2" if v2 else "images")

    for name in names:
        _image_folder(image_dir(name), "images_dir: the PMC-VQA images" if images_dir is not None
                      else f"the PMC-VQA images of {name}, beside it; or pass images_dir")
    report = _report(dataset, src, out, Path(images_dir) if images_dir is not None else None)
    out_splits: dict[str, list[dict]] = {}
    images: dict[tuple[Path, str], tuple[str, tuple[int, int]] | SkipInput] = {}
    figures: dict[Path, list[str]] = {}  # the figures each image folder's CSVs name, for their output stems
    for name in names:
        try:
            figures.setdefault(image_dir(name), []).extend(_name(row.get("Figure_path")) for *_, row in
                                                           _read_csv(src / name))
        except (OSError, csv.Error, UnicodeDecodeError, ValueError):  # reported in the loop
            continue
    stems = {folder: _out_stems(found) for folder, found in figures.items()}

    def plan():  # every figure a row names, in row order (a superset of those converted)
        for name in names:
            img_dir = image_dir(name)
            try:
                rows = _read_csv(src / name)
            except (OSError, csv.Error, UnicodeDecodeError, ValueError):
                continue
            for *_lines, row in rows:
                figure = _name(row.get("Figure_path"))
                try:
                    yield _copy_plan(inside_root(img_dir, figure), out,
                                     f"images/{dataset}/{safe_name(img_dir.name)}/{stems[img_dir].get(figure)}")
                except SkipInput:
                    continue

    with Prefetch(workers, plan) as pf:
        for name in names:
            path = src / name
            split = safe_name(Path(name).stem)
            img_dir = image_dir(name)
            try:
                rows = _read_csv(path)
            except FileNotFoundError:
                report.skip(path, "missing file", f"{path}: no such file")
                continue
            except (csv.Error, UnicodeDecodeError, ValueError) as exc:
                report.skip(path, "malformed CSV", f"{path}: {exc}")
                continue
            records: list[dict] = []
            for n, (line, last, row) in enumerate(progress_bar(rows, desc=f"{dataset} {split}", unit="row",
                                                               progress=progress)):
                where = f"{path.name}:{line}"
                try:
                    if last > line:
                        raise SkipInput("malformed row", f"{where}: one row runs over lines {line}-{last} (a line break "
                                        "inside quotes: an unclosed quote swallows the rows after it)")
                    if row.get(None) is not None:
                        raise SkipInput("malformed row", f"{where}: more fields than columns")
                    figure = _name(row.get("Figure_path"))
                    question, answer = _text(row.get("Question")), _text(row.get("Answer"))
                    if not question:
                        raise SkipInput("empty question", f"{where}: empty Question")
                    if not figure:
                        raise SkipInput("missing image", f"{where}: empty Figure_path")
                    if mode == "mc":
                        try:
                            options = _choices(row)
                        except ValueError as exc:
                            raise SkipInput("malformed row", f"{where}: {exc}") from exc
                        label = _text(row.get("Answer_label")).upper().strip("() .:")
                        if label not in ("A", "B", "C", "D"):  # exactly one letter: "AB" is no answer
                            by_text = [k for k, o in enumerate(options) if answer and o.casefold() == answer.casefold()]
                            if len(by_text) != 1:
                                raise SkipInput("malformed row", f"{where}: Answer_label {row.get('Answer_label')!r} is not "
                                                             "A-D and Answer matches no single choice")
                            label = LETTERS[by_text[0]]
                    elif not answer:
                        raise SkipInput("empty answer", f"{where}: empty Answer")
                    status = _image_once(images, figure, img_dir, out,
                                         f"images/{dataset}/{safe_name(img_dir.name)}/{stems[img_dir][figure]}", report,
                                         where, pf)
                except SkipInput as exc:
                    report.skip(where, exc.reason, exc.detail)
                    continue
                meta = {"dataset": dataset, "split": split, "row": n, "figure": figure, "answer_text": answer}
                rid = f"{dataset}/{split}/{n}"
                if mode == "mc":
                    meta["answer_label"] = label
                    records.append(chat_record(rid, status[0], status[1], mc_question(question, options), label, "mc",
                                               options=options, meta=meta))
                else:
                    meta["answer_type"] = "OPEN"
                    records.append(chat_record(rid, status[0], status[1], f"{question}\n{VQA_INSTRUCTION}", answer,
                                               "med_vqa", meta=meta))
            out_splits[split] = records
    return write_splits(report, out, dataset, out_splits, keep_empty=False)


def _csv_header(path: Path) -> list[str]:
    """The stripped column names of a CSV (as :func:`_read_csv` reads them); [] when it cannot be read (the
    conversion reports that file)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _read_csv(path: Path) -> list[tuple[int, int, dict]]:
    """Rows of a CSV with a header as ``(first line, last line, {column: value})``; header names are stripped.
    A row whose last line is past its first holds a line break inside quotes, which PMC-VQA's fields never
    do: an unclosed quote that swallowed the rows after it (the caller refuses such a row)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError("empty file (no header)")
        reader.fieldnames = [(h or "").strip() for h in reader.fieldnames]
        missing = [c for c in _PMC_COLUMNS if c not in reader.fieldnames]
        if missing:
            raise ValueError(f"missing column(s) {missing}; header is {reader.fieldnames}")
        rows = []
        first = reader.line_num + 1
        for row in reader:
            rows.append((first, reader.line_num, row))
            first = reader.line_num + 1
        return rows


# --------------------------------------------------------------------------------------------- classification
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


def _class_files(folder: Path, src: Path, report: ConvertReport) -> list[Path]:
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith("."))
    files = files_inside(src, files, report)  # before is_dicom_file reads a byte: a symlink out of --src is refused
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(p)]


def convert_classification(src: str | Path, out: str | Path, dataset: str = "classification",
                           test_fraction: float = 0.2, window: Any = None, frame: int | None = None,
                           salt: str = "", skip_burned_in: bool = False, redact_burned_in: bool = False,
                           label_fn: Callable[[str], str] = class_label, workers: int = 1,
                           progress: Progress = True) -> ConvertReport:
    """Folder-per-class images (PNG / JPEG / DICOM; class = folder) -> lettered multiple choice (task ``mc``).

    `src` holds one folder per class (files in sub-folders count for their class), or ``train/``, ``val/``,
    ``test/`` folders each holding the class folders (Kermany chest X-ray style), which then give the splits;
    otherwise a stable hash of the path sends `test_fraction` of the images to ``test``. Every record asks::

        <image>\\nWhich of the following best describes this image?\\nA. {class 1}\\nB. {class 2}\\n…
        Answer with the option's letter from the given choices directly.

    over all class labels (sorted; at most 26), answer = the letter, ``options`` = the labels; two class folders
    beside each other giving one label (``Liver_Lesion``, ``liver-lesion``) are a :class:`DomainError`. A class
    folder none of whose files converts (only RT dose grids, say) is left out of the labels and reported (``class
    without images``).

    DICOM files (``.dcm``, ``.dicom``, or any other name but an image suffix whose first bytes say DICOM: files
    without a suffix, files named by their SOPInstanceUID) are rendered with `window` at `frame`; their ids and
    image names are ``deid.pseudonym`` + a keyed hash of the path, and their ``meta`` holds no source path.
    `window`: a preset name, ``[center, width]``, or None = the file's own. `frame`: the frame of a multi-frame
    file (None = the middle frame). `salt`: the secret key of pseudonyms and hashes ('' = this machine's key,
    module notes). Other images (PNG, JPEG, BMP, TIFF) are decoded by :func:`model.tiling.load_image` (upright per
    EXIF orientation) and written as PNG without metadata (no EXIF, no text chunks: a hospital's files may carry
    names there), named by a keyed hash of their path; no record holds a source file name. DICOM files that may
    hold burned-in text (``BurnedInAnnotation`` YES, or undeclared in ultrasound / secondary capture: module notes)
    are kept with a warning unless an option says otherwise. `skip_burned_in`: drop them. `redact_burned_in`:
    render them with their text regions blacked out, the boxes in ``meta["redacted"]`` (module notes).
    `test_fraction`: the share of the images put in ``test`` when `src` has no split folders.
    `dataset`: the name of the outputs (``<dataset>_<split>.jsonl``, ``images/<dataset>/``) and the first part of the
    record ids.
    `workers`: processes decoding / rendering the images (:mod:`domains.parallel`; output byte-identical to 1).
    `progress`: a bar over the files (:func:`model.progress.progress_bar`).
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DomainError(f"{src}: not a directory (expected one folder per class)")
    check_held_out_fraction(test_fraction)
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        # int() read "x" as a raw ValueError and True / 1.7 as frame 1, unsaid
        raise DomainError(f"frame option: expected a frame index (an integer >= 0) or none for the middle frame, got "
                          f"{frame!r}")
    report = _report(dataset, src, out)
    subdirs = [p for p in sorted(src.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    split_dirs = {p: SPLIT_FOLDERS[p.name.lower()] for p in subdirs if p.name.lower() in SPLIT_FOLDERS}
    roots = list(split_dirs.items()) if split_dirs and len(split_dirs) == len(subdirs) else [(src, None)]
    items: list[tuple[str | None, Path, Path, str]] = []  # (split, class dir, file, label)
    for root, split in roots:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        check_distinct_labels(root, [d.name for d in folders], label_fn)
        for d in folders:
            files = _class_files(d, src, report)
            if not files:
                report.skip(d, "empty class folder", f"{d}: no PNG / JPEG / DICOM files")
                continue
            items += [(split, d, f, label_fn(d.name)) for f in files]
    labels = sorted({label for *_, label in items})
    if len(labels) > len(LETTERS):
        raise DomainError(f"{src}: {len(labels)} classes, more than {len(LETTERS)} lettered options")
    if len(labels) < 2:
        raise DomainError(f"{src}: found {len(labels)} class folder(s) with images; need at least 2")
    salt = _secret(salt, report)
    reader: _Dicom | None = None
    win_value, win_tag = None, "file"
    if any(is_dicom_file(f) for _, _, f, _ in items):
        reader = _Dicom(report, out, dataset, salt, skip_burned_in, redact_burned_in)
        win_value, win_tag = _window_option(reader, window)
    out_splits: dict[str, list[dict]] = {}
    made: list[tuple[str, str, str, tuple[int, int], str, dict]] = []  # (split, id, image, size, label, meta)

    def plan():  # every file's step, in the loop's order
        planner = _Dicom(ConvertReport(), out, dataset, salt, skip_burned_in, redact_burned_in) if reader else None
        for _split, d, f, _label in items:
            rel, cls = f.relative_to(src).as_posix(), safe_name(d.name)
            try:
                if planner is not None and is_dicom_file(f):
                    ds = planner.header(f)
                    if planner.dicom.not_an_image(ds) is not None:
                        continue
                    k = planner.dicom.frame_count(ds) // 2 if frame is None else int(frame)
                    key = f"{planner.pseudonym(ds)}_{_hash(salt, rel)}"
                    yield planner.plan(f, f"images/{dataset}/{cls}/{key}_{win_tag}", win_value, k)
                else:
                    dst = out / f"images/{dataset}/{cls}/{_hash(salt, rel, n=16)}.png"
                    yield dst, _clean_step, (f,)
            except SkipInput:
                continue

    with Prefetch(workers, plan) as pf:
        if reader is not None:
            reader.pf = pf
        for split, d, f, label in progress_bar(items, desc=dataset, unit="file", progress=progress):
            rel = f.relative_to(src).as_posix()
            split = split or split_of(rel, test_fraction)
            cls = safe_name(d.name)
            try:
                if reader is not None and is_dicom_file(f):
                    ds = reader.header(f)
                    passed = reader.dicom.not_an_image(ds)
                    if passed is not None:  # DICOMDIR, SR, SEG, ... in a class folder: not a sample, not broken
                        raise SkipInput("passed over: " + passed[0], f"{f}: {passed[1]}")
                    n_frames = reader.dicom.frame_count(ds)
                    k = n_frames // 2 if frame is None else int(frame)
                    if not 0 <= k < n_frames:
                        raise SkipInput("bad frame", f"{f}: frame {k} out of range (the file has {n_frames})")
                    key = f"{reader.pseudonym(ds)}_{_hash(salt, rel)}"
                    image, size = reader.render(f, f"images/{dataset}/{cls}/{key}_{win_tag}", win_value, k)
                    rid = f"{dataset}/{cls}/{key}"
                    meta = {"dataset": dataset, "split": split, "class_dir": d.name, "label": label,
                            "patient": reader.pseudonym(ds), "window": win_tag, "frame": k}
                    boxes = reader.redactions(f, win_value, k)
                    if boxes is not None:
                        meta["redacted"] = [boxes]
                else:
                    name = _hash(salt, rel, n=16)
                    image, size = _clean_image(f, out, f"images/{dataset}/{cls}/{name}.png", pf)
                    rid = f"{dataset}/{cls}/{name}"
                    meta = {"dataset": dataset, "split": split, "class_dir": d.name, "label": label}
            except SkipInput as exc:
                report.skip(f, exc.reason, exc.detail)
                continue
            made.append((split, rid, image, size, label, meta))
    # a class none of whose files gave an image (RT dose grids only, all unreadable, all burned-in and skipped) is no
    # answer any record has: offered as an option it would only teach the model a choice that is never right
    kept = sorted({label for *_, label, _ in made})
    for label in labels:
        if label not in kept:
            folders = sorted({d for _, d, _, name in items if name == label})
            report.skip(folders[0], "class without images",
                        f"{folders[0]}: no file of class {label!r} converted (see the skipped files); left out of "
                        "the options")
    if labels and len(kept) < 2:
        raise DomainError(f"{src}: {len(kept)} of {len(labels)} class folders gave images, need at least 2; the "
                          f"other classes' files were all skipped: {dict(report.skipped)}")
    question = mc_question(CLASSIFICATION_QUESTION, kept)
    for split, rid, image, size, label, meta in made:
        out_splits.setdefault(split, []).append(
            chat_record(rid, image, size, question, LETTERS[kept.index(label)], "mc", options=list(kept), meta=meta))
    order = {s: k for k, s in enumerate(SPLITS)}
    remove_unreferenced_images(report, out, f"images/{dataset}", out_splits)
    return write_splits(report, out, dataset, dict(sorted(out_splits.items(), key=lambda kv: order.get(kv[0], 9))), keep_empty=False)


# --------------------------------------------------------------------------------------------- dicom_qa
QA_TYPES = ("closed", "open", "grounding", "mc")
QA_FILE = "qa.json"


class _Series:
    """One loaded series: its slices in anatomical order, ``(file, frame)`` each (multi-frame files give one
    slice per frame), the patient pseudonym and a salted hash standing for the series UID."""

    def __init__(self, reader: _Dicom, folder: Path, salt: str, select: str | int | None = None):
        dicom = reader.dicom
        passed: list[tuple[Path, str, str | None]] = []
        try:
            series = dicom.load_series(folder, on_pass=lambda *skipped: passed.append(skipped), series=select)
        except dicom.DicomError as exc:
            several = exc.reason.endswith("expected one") or exc.reason.startswith("no series matches") or " series have SeriesNumber" in exc.reason
            pick = " (here: --option series=..., or the question's series_select)" if several else ""
            raise SkipInput("unreadable series", f"{exc}{pick}") from exc
        except ValueError as exc:  # a series_select of the wrong type
            raise SkipInput("malformed record", str(exc)) from exc
        for path, reason, detail in passed:  # DICOMDIR, SR, RT structures, SEG, RT dose, notes: counted
            reader.report.skip(path, "passed over: " + reason, f"{path}: {detail}" if detail else None)
        self.paths = list(series.paths)
        self.slices = list(series.slices)
        self.same_position = series.same_position_note()
        self.n = len(self.slices)
        if not self.n:
            raise SkipInput("unreadable series", f"{folder}: no DICOM slices")
        first = reader.read(self.paths[0], header_only=True)  # the burned-in policy applies per slice used
        self.patient = reader.pseudonym(first)
        self.key = _hash(salt, series.series_uid or folder.as_posix())
        self.modality = str(getattr(first, "Modality", "") or "")
        self._instances: dict[int, int] | None = None
        self._reader = reader

    def slice(self, index: int) -> tuple[Path, int]:
        """(file, frame) of slice `index`."""
        if not 0 <= index < self.n:
            raise SkipInput("bad slice", f"slice {index} out of range (the series has {self.n})")
        return self.slices[index]

    def index_of_instance(self, number: int) -> int:
        if self._instances is None:
            self._instances = {}
            for k, (p, frame) in enumerate(self.slices):
                if frame:
                    continue  # frames of one file share its InstanceNumber: it names the first
                value = getattr(self._reader.read(p, header_only=True), "InstanceNumber", None)
                if value is not None:
                    self._instances.setdefault(int(value), k)
        if number not in self._instances:
            raise SkipInput("bad slice", f"no slice with InstanceNumber {number}")
        return self._instances[number]


def _check_scalars(item: dict, where: str, keys: Sequence[str]) -> None:
    """A question's text fields must be text (or numbers): a list or object would be written as its Python repr."""
    for key in keys:
        value = item.get(key)
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise SkipInput("malformed record", f"{where}: {key} must be text, got {type(value).__name__} {value!r}")


def _series_select(item: dict, default: str | int | None, where: str = "") -> str | int | None:
    """The question's ``series_select`` (a SeriesNumber or SeriesInstanceUID), else the converter's `series`."""
    value = item.get("series_select")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise SkipInput("malformed record", f"{where}: series_select {value!r} must be a SeriesNumber (integer) or "
                        "a SeriesInstanceUID (text)")
    return value.strip() if isinstance(value, str) else value


def _qa_slices(item: dict, series: _Series) -> list[int]:
    if "instances" in item and item["instances"] is not None:
        raw = item["instances"]
        raw = raw if isinstance(raw, list) else [raw]
        if not raw or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            raise SkipInput("bad slice", f"instances {item['instances']!r} must be InstanceNumbers (integers)")
        return [series.index_of_instance(v) for v in raw]
    raw = item.get("slices", item.get("slice"))
    raw = raw if isinstance(raw, list) else [raw]
    if not raw or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise SkipInput("bad slice", f"slices {item.get('slices', item.get('slice'))!r} must be slice indices (integers)")
    return [int(v) for v in raw]


def convert_dicom_qa(src: str | Path, out: str | Path, dataset: str = "dicom_qa", window: Any = None,
                     salt: str = "", skip_burned_in: bool = False, redact_burned_in: bool = False,
                     default_split: str | None = None, series: str | int | None = None,
                     qa_file: str = QA_FILE, workers: int = 1, progress: Progress = True) -> ConvertReport:
    """DICOM series + ``qa.json`` (the layout in the module notes) -> ``med_vqa`` / ``grounding`` / ``mc`` records.

    `window`: used by questions whose ``window`` is null (a preset name, ``[center, width]``, or None = the
    file's own VOI). `salt`: the secret key of pseudonyms and hashes ('' = this machine's key, module notes;
    keep a salt secret: whoever has it can recompute a pseudonym from a guessed patient ID). `skip_burned_in`:
    drop slices that may hold burned-in text (module notes) instead of keeping them with a warning.
    `redact_burned_in`: render such slices with their text regions blacked out instead, the boxes in
    ``meta["redacted"]`` (module notes). `default_split`: the split of questions without one (else they are
    skipped). `series`: of a folder holding several series (a flat export), the one to use -- its SeriesNumber
    or SeriesInstanceUID (quoted); a question's ``series_select`` overrides it (unset: such a folder is skipped,
    the report naming each of its series). `qa_file`: the name of the QA file under `src` (its layout in the
    module notes).
    `dataset`: the name of the outputs (``<dataset>_<split>.jsonl``, ``images/<dataset>/``) and the first part of the
    record ids.

    Records: ``closed`` / ``open`` -> task ``med_vqa`` with ``meta["answer_type"]`` CLOSED / OPEN and the
    answer instruction; ``mc`` -> task ``mc`` with lettered options; ``grounding`` -> task ``grounding``.
    ``meta`` holds ``question_id``, ``question_type``, ``patient`` (pseudonym), ``series`` (a salted hash),
    ``slices``, ``n_slices``, ``window``, ``modality`` and, for grounding, ``bbox`` (pixels) / ``grid_box``.
    `workers`: processes rendering the slices (:mod:`domains.parallel`; output byte-identical to 1). `progress`: a
    bar over the questions (:func:`model.progress.progress_bar`).
    """
    src, out = Path(src), Path(out)
    if src.is_file():  # the QA file itself: "no qa.json" would read as if it were not there
        raise DomainError(f"{src}: not a directory (expected the folder holding {qa_file} and the series folders"
                          f"{f': {src.parent}' if src.name == qa_file else ''})")
    qa_path = _option_inside(src, qa_file, "qa_file")
    if not qa_path.is_file():
        raise DomainError(f"{src}: no {qa_file} (see domains.medical.convert for the dicom_qa layout)")
    if default_split is not None and default_split not in SPLITS:
        raise DomainError(f"default_split must be one of {SPLITS}, got {default_split!r}")
    if series is not None and (isinstance(series, bool) or not isinstance(series, (int, str)) or not str(series).strip()):
        raise DomainError(f"series must be a SeriesNumber (an integer) or a SeriesInstanceUID (text; quote a UID "
                          f"that reads as a number), got {series!r}")
    report = _report(dataset, src, out)
    doc = read_json_file(qa_path, report)
    if doc is None:
        return report
    items = doc.get("questions") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        report.skip(qa_path, "malformed JSON", f"{qa_path}: expected {{'questions': [...]}} or a list")
        return report
    salt = _secret(salt, report)
    reader = _Dicom(report, out, dataset, salt, skip_burned_in, redact_burned_in)
    _window_option(reader, window)  # a bad option fails here, not once per question
    default_window = window
    series_cache: dict[tuple[Path, str | int | None], _Series | SkipInput] = {}
    out_splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    bad_files: set[Path] = set()  # slice files whose pixels could not be rendered, counted once each
    def plan():  # every slice render a question asks for, in question order (a superset of those converted)
        planner = _Dicom(ConvertReport(), out, dataset, salt, skip_burned_in, redact_burned_in)
        cache: dict[tuple[Path, str | int | None], _Series | None] = {}
        for item in items:
            try:
                folder = inside_root(src, _name(item.get("series")))
                key = (folder, _series_select(item, series))
                if key not in cache:
                    try:
                        cache[key] = _Series(planner, key[0], salt, key[1])
                    except SkipInput:
                        cache[key] = None
                loaded = cache[key]
                if loaded is None:
                    continue
                win = item.get("window", None)
                win_value, win_tag = planner.window(default_window if win is None else win)
                for k in _qa_slices(item, loaded):
                    path, frame = loaded.slice(k)
                    stem = f"images/{dataset}/{loaded.patient}/{loaded.key}/s{k:03d}_{win_tag}"
                    yield planner.plan(path, stem, win_value, frame)
            except (SkipInput, AttributeError, TypeError, ValueError):
                continue

    with Prefetch(workers, plan) as pf:
        reader.pf = pf
        for n, item in enumerate(progress_bar(items, desc=dataset, unit="question", progress=progress)):
            where = f"{qa_file} item {n}"
            try:
                if not isinstance(item, dict):
                    raise SkipInput("malformed record", f"{where}: not an object")
                _check_scalars(item, where, ("id",))
                qid = _text(item.get("id")) or str(n)
                where = f"{qa_file} question {qid}"
                _check_scalars(item, where, ("question", "answer", "ref", "split", "type"))
                if qid in seen:
                    raise SkipInput("duplicate id", f"{where}: id used twice")
                seen.add(qid)
                split = _text(item.get("split")) or default_split
                if split not in SPLITS:
                    raise SkipInput("unknown split", f"{where}: split {item.get('split')!r} is not one of {SPLITS}")
                kind = _text(item.get("type")).lower()
                if kind not in QA_TYPES:
                    raise SkipInput("unknown question type", f"{where}: type {item.get('type')!r} is not one of {QA_TYPES}")
                question = str(item.get("question") or "").strip()
                if not question:
                    raise SkipInput("empty question", f"{where}: empty question")
                answer = _text(item.get("answer"))
                if kind in ("closed", "open", "mc") and not answer:
                    raise SkipInput("empty answer", f"{where}: empty answer")
                if not _name(item.get("series")):  # not a path that escapes: no path at all
                    raise SkipInput("malformed record", f"{where}: no series (the folder of its DICOM series)")
                folder = inside_root(src, _name(item.get("series")))
                key = (folder, _series_select(item, series, where))
                loaded = series_cache.get(key)
                if loaded is None:
                    try:
                        loaded = _Series(reader, key[0], salt, key[1])
                    except SkipInput as exc:
                        loaded = exc
                        report.skip(folder, exc.reason, exc.detail)  # once per series
                    else:
                        if loaded.same_position:
                            report.warn(folder, SAME_POSITION_WARNING, loaded.same_position)
                    series_cache[key] = loaded
                if isinstance(loaded, SkipInput):
                    raise SkipInput("series skipped", f"{where}: {loaded.reason}")
                slices = _qa_slices(item, loaded)
                if kind == "grounding" and len(slices) != 1:
                    raise SkipInput("bad slice", f"{where}: a grounding question takes exactly one slice, got {len(slices)}")
                win = item.get("window", None)
                win_value, win_tag = reader.window(default_window if win is None else win)
                images, size, redacted = [], None, []
                for k in slices:
                    path, frame = loaded.slice(k)
                    reader.header(path)  # the burned-in policy
                    stem = f"images/{dataset}/{loaded.patient}/{loaded.key}/s{k:03d}_{win_tag}"
                    try:
                        rel, wh = reader.render(path, stem, win_value, frame)
                    except SkipInput as exc:  # a file counts once, under its name; each question asking for it too
                        if path not in bad_files:
                            bad_files.add(path)
                            report.skip(path, exc.reason, exc.detail)
                        raise SkipInput("slice skipped", f"{where}: slice {k} ({path}): {exc.reason}") from None
                    images.append(rel)
                    redacted.append(reader.redactions(path, win_value, frame))
                    size = size or wh
                labels = [f"slice {k + 1}/{loaded.n}" for k in slices]
                meta: dict[str, Any] = {"dataset": dataset, "split": split, "question_id": qid, "question_type": kind,
                                        "patient": loaded.patient, "series": loaded.key, "slices": slices,
                                        "n_slices": loaded.n, "window": win_tag, "modality": loaded.modality}
                if any(boxes is not None for boxes in redacted):
                    meta["redacted"] = [boxes or [] for boxes in redacted]
                extra: dict[str, Any] = {}
                if kind in ("closed", "open"):
                    task = "med_vqa"
                    meta["answer_type"] = kind.upper()
                    text = f"{question}\n{VQA_INSTRUCTION}"
                elif kind == "mc":
                    task, (text, answer, options) = "mc", _mc(item, question, answer, where)
                    extra["options"] = options
                else:
                    task = "grounding"
                    text, answer, boxes, grid = _grounding(item, question, size, where)
                    meta.update(bbox=boxes, grid_box=grid)
            except SkipInput as exc:
                report.skip(where, exc.reason, exc.detail)
                continue
            image = images[0] if len(images) == 1 else images
            out_splits[split].append(chat_record(f"{dataset}/{split}/{safe_name(qid)}", image, size, text, answer, task,
                                                 prefix=slice_prompt(labels), meta=meta, **extra))
    # a multi-slice question skipped at a later slice leaves its earlier slices' renders unnamed
    remove_unreferenced_images(report, out, f"images/{dataset}", out_splits, made=reader.made)
    return write_splits(report, out, dataset, out_splits, keep_empty=False)


def _mc(item: dict, question: str, answer: str, where: str) -> tuple[str, str, list[str]]:
    options = item.get("options")
    if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
        raise SkipInput("malformed record", f"{where}: mc needs 2-{len(LETTERS)} options, got {options!r}")
    if not all(isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in options):
        raise SkipInput("malformed record", f"{where}: options must be texts, got {options!r}")
    options = [_text(o) for o in options]
    if not all(options):
        raise SkipInput("malformed record", f"{where}: empty option")
    repeated = sorted({o for o in options if [x.casefold() for x in options].count(o.casefold()) > 1})
    if repeated:  # the answer could not say which one, and a letter would pick one of two equal texts
        raise SkipInput("malformed record", f"{where}: option(s) {repeated} given twice")
    hits = [k for k, o in enumerate(options) if o.casefold() == answer.casefold()]
    if len(hits) == 1:
        letter = LETTERS[hits[0]]
    elif len(answer) == 1 and answer.upper() in LETTERS[:len(options)]:
        letter = answer.upper()
    else:
        raise SkipInput("malformed record", f"{where}: answer {answer!r} is neither one option's text nor its letter")
    return mc_question(question, options), letter, options


def _grounding(item: dict, question: str, size: tuple[int, int], where: str) -> tuple[str, str, list, list]:
    ref = _text(item.get("ref")) or "lesion"
    boxes = item.get("boxes")
    if isinstance(boxes, list) and len(boxes) == 4 and all(isinstance(v, (int, float)) for v in boxes):
        boxes = [boxes]
    if not isinstance(boxes, list) or not boxes:
        raise SkipInput("malformed box", f"{where}: grounding needs boxes [[x1, y1, x2, y2], ...]")
    from domains.boxes import MIN_INSIDE, Box, clip_box, to_grid

    try:  # a small overshoot of the border is clipped; a box mostly outside is a wrong box (pixels of another size?)
        pixel = [clip_box(Box(*map(float, b)).checked(), *size, min_inside=MIN_INSIDE) for b in boxes]
        if any(b.width <= 0 or b.height <= 0 for b in pixel):
            raise ValueError("empty box")
        answer = render_ref_box(ref, pixel, *size)
    except (TypeError, ValueError) as exc:
        reason = "box outside image" if "outside" in str(exc) else "malformed box"
        raise SkipInput(reason, f"{where}: {exc}") from exc
    grid = [to_grid(b, *size) for b in pixel]
    return question, answer, [[round(v, 3) for v in b] for b in pixel], grid

