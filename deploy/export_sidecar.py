"""The files an export writes beside its graphs or programs, read back and checked: `preprocessor_config.json`
(training's tiling), `chat_template.json` and the tokenizer. ONNX and ExecuTorch exports record the tiling and a
tokenizer fingerprint inside the graphs; opening a folder whose sidecar files no longer match them is refused here,
with the keys that differ, instead of answering with another tiling or tokenizer than the model was trained with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.errors import PocketAdaptError


@dataclass(frozen=True)
class SidecarExport:
    """An opened export folder and training's processor rebuilt from its sidecar files (see `read_processor`)."""

    folder: Path
    processor: object

    @property
    def tiling(self):
        """The tiling the export was made with (training's)."""
        return self.processor.tiling


def not_a_folder(folder: Path, fmt: str) -> str:
    """Why the export folder `folder` (given as a runtime's --model) cannot be opened: the note of a run stopped while
    replacing it (a `final/` left moved aside), or that it is no folder `adapt export --format fmt` wrote."""
    from model.loading import moved_aside_note  # lazily: the runtimes start without the model loaders

    return moved_aside_note(folder) or f"{folder}: not a folder; give the folder `adapt export --format {fmt}` wrote"


def export_folder(folder: str | os.PathLike, fmt: str, what: str, needed: Sequence[str],
                  error: type[PocketAdaptError]) -> Path:
    """`folder` as a Path, checked before anything in it is read: `error` where it is no folder (`not_a_folder`, for
    `fmt`), lacks a file of `needed` ("not an <what> export, missing ...") or holds weights its checksums refuse."""
    from model.checkpoints.checksums import verify_weights  # lazily, as not_a_folder's import

    folder = Path(folder)
    if not folder.is_dir():
        raise error(not_a_folder(folder, fmt))
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise error(f"{folder}: not an {what} export, missing {', '.join(missing)}")
    verify_weights(folder, error)
    return folder


def read_json(path: Path, error: type[PocketAdaptError]) -> dict:
    """A JSON object from `path`, or `error` naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise error(f"{path}: cannot be read as JSON ({err})") from err
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object")
    return value


def recorded_object(value: dict | str, source: Path, what: str, error: type[PocketAdaptError]) -> dict:
    """The JSON object an export recorded in `source` (a graph's metadata, a program's constant) as `what`, given as a
    dict or its JSON text; `error` naming `source` where it is not one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise error(f"{source}: the {what} it records is damaged (not the JSON object the export writes); "
                    "export it again")
    return value


def check_tiling(exported: dict | str, current, config: Path, artefact: str, error: type[PocketAdaptError]) -> None:
    """`error` naming every tiling key of `config` that differs from the one `artefact` (a file beside `config`) was
    exported with: `exported`, the tiling it records (`recorded_object`); `error` naming `artefact` when that is
    damaged."""
    from model.tiling import TilingConfig, TilingError

    source = config.parent / artefact
    try:
        a = TilingConfig.from_dict(recorded_object(exported, source, "tiling", error)).to_dict()
    except TilingError as err:
        raise error(f"{source}: the tiling it records is damaged ({err}); export it again") from None
    b = current.to_dict()
    changed = [f"{k} {a[k]} -> {b[k]}" for k in a if a[k] != b.get(k)]
    if changed:
        raise error(
            f"{config}: tiling differs from the one {artefact} was exported with ({'; '.join(changed)}); "
            "the model was trained and exported with the first values -- restore them, or re-export "
            "(a different tile count for one question: adapt chat --max-tiles)")


def check_tokenizer(want: dict, tokenizer, folder: Path, artefact: str, error: type[PocketAdaptError]) -> None:
    """`error` when the folder's tokenizer is not the one `artefact` was exported with (its fingerprint `want`)."""
    from deploy.onnx.export import tokenizer_fingerprint

    have = tokenizer_fingerprint(tokenizer)
    problems = [what for key, what in (("size", f"{have['size']} tokens, the export's had {want['size']}"),
                                       ("vocab_sha256", "its token -> id map differs"),
                                       ("pipeline_sha256", "its merges or normalisation rules differ"),
                                       ("probe_ids", "it splits a test sentence differently"))
                if want.get(key) is not None and want[key] != have[key]]  # (older exports lack pipeline_sha256)
    if problems:
        raise error(f"{folder}: the tokenizer files are not the tokenizer {artefact} was exported with "
                    f"({'; '.join(problems)}); put the exported tokenizer back or re-export")


_FINGERPRINT_KEYS = ("size", "vocab_sha256", "probe_ids")  # every export recorded these (pipeline_sha256 later)


def _fingerprint(value: dict | str, source: Path, error: type[PocketAdaptError]) -> dict:
    """The tokenizer fingerprint `source` records (`recorded_object`), `error` naming it where it lacks a key every
    export writes (`check_tokenizer` would fail on it with a raw KeyError, or check nothing)."""
    want = recorded_object(value, source, "tokenizer fingerprint", error)
    missing = [key for key in _FINGERPRINT_KEYS if want.get(key) is None]
    if missing:
        raise error(f"{source}: the tokenizer fingerprint it records is damaged (no {', '.join(missing)}); "
                    "export it again")
    return want


def read_processor(folder: Path, error: type[PocketAdaptError],
                   tokenizers: Sequence[tuple[dict | str, str]] = ()) -> tuple:
    """Training's processor rebuilt from the sidecar files (tokenizer, tiling, chat template, image tokens), and
    the preprocessor config it came from (for `check_preprocessor_config`, after the tiling check). `tokenizers`:
    the (fingerprint, artefact) pairs the export recorded (each a dict or its JSON text, `recorded_object`), checked
    (`check_tokenizer`) on the folder's tokenizer as it loads, before an image token the config names and the
    tokenizer lacks is refused (the processor would add it as a new token, which the fingerprint would then blame on
    the tokenizer files)."""
    from deploy.onnx.export import CHAT_TEMPLATE, PREPROCESSOR, image_token_ids
    from model.chat import ChatTemplateError, chat_template_from_dict
    from model.loading import load_tokenizer
    from model.processor import VLMProcessor
    from model.tiling import TilingConfig, TilingError

    tokenizers = [(_fingerprint(want, folder / artefact, error), artefact) for want, artefact in tokenizers]
    pre = read_json(folder / PREPROCESSOR, error)
    try:
        tiling = TilingConfig.from_dict(pre.get("tiling"))
    except TilingError as err:
        raise error(f"{folder / PREPROCESSOR}: 'tiling': {err}") from err
    seq_length = pre.get("image_seq_length")
    if isinstance(seq_length, bool) or not isinstance(seq_length, int) or seq_length < 1:
        raise error(f"{folder / PREPROCESSOR}: 'image_seq_length' must be a positive whole number (image tokens per "
                    f"tile), got {seq_length!r}; restore the exported file or re-export")
    tokens = [pre.get("image_context_token"), pre.get("image_start_token"), pre.get("image_end_token")]
    for key, token in zip(("image_context_token", "image_start_token", "image_end_token"), tokens):
        if not (isinstance(token, str) and token) and (key == "image_context_token" or not isinstance(token, str)
                                                          and token is not None):  # "" / None: no start or end token
            raise error(f"{folder / PREPROCESSOR}: {key!r} must be a token (a non-empty string), got {token!r}; "
                        "restore the exported file or re-export")
    fields = read_json(folder / CHAT_TEMPLATE, error)
    fields.pop("jinja", None)  # written for other tools; the fields are what pocket-adapt renders
    try:
        template = chat_template_from_dict(fields, folder / CHAT_TEMPLATE)
    except ChatTemplateError as err:
        raise error(f"{err}; restore the exported file or re-export") from None
    tokenizer = load_tokenizer(folder)
    for want, artefact in tokenizers:
        check_tokenizer(want, tokenizer, folder, artefact, error)
    vocab = tokenizer.get_vocab()
    for key, token in zip(("image_context_token", "image_start_token", "image_end_token"), tokens):
        if token and token not in vocab:
            raise error(f"{folder / PREPROCESSOR}: {key!r} {token!r} is not a token of the exported tokenizer; "
                        "restore the exported file or re-export")
    processor = VLMProcessor(tokenizer, tiling, template, seq_length, *tokens)
    have = image_token_ids(processor)
    for want, artefact in tokenizers:
        recorded = want.get("image_token_ids")
        if not isinstance(recorded, dict):  # (older exports did not record them)
            continue
        changed = [f"{key} {getattr(processor, key)!r} is id {have[key]}, {artefact} was exported with id "
                   f"{recorded.get(key)}" for key in have if recorded.get(key) != have[key]]
        if changed:
            raise error(f"{folder / PREPROCESSOR}: {'; '.join(changed)} -- the prompt would mark images with other "
                        "tokens than the model was exported with; restore the exported file or re-export")
    return processor, pre


# mirror values exports wrote before they wrote the hf export's (PIL's enum, 3): still the tiling's, not an edit
_FORMER_MIRRORS = {("resample", "bicubic")}


def check_preprocessor_config(processor, pre: dict, folder: Path, error: type[PocketAdaptError]) -> None:
    """`error` when the tokenizer's image-context id is not the one the export was made with, or when the image
    processor keys that mirror the (checked) tiling were edited: pocket-adapt would not use them."""
    from deploy.onnx.export import PREPROCESSOR, mirrored_tiling_keys

    mirrored = mirrored_tiling_keys(processor.tiling)
    edited = [f"{k} {pre[k]!r} (tiling says {v!r})" for k, v in mirrored.items()
              if k in pre and pre[k] != v and (k, pre[k]) not in _FORMER_MIRRORS]
    if edited:
        raise error(f"{folder / PREPROCESSOR}: {'; '.join(edited)} -- these keys only mirror 'tiling' for other "
                    "tools and pocket-adapt does not read them; restore them, or re-export (a different tile "
                    "count for one question: adapt chat --max-tiles)")
    if processor.image_token_id != pre.get("image_token_id"):
        raise error(f"{folder}: the tokenizer gives {processor.image_context_token} id {processor.image_token_id}, "
                    f"the export was made with {pre.get('image_token_id')}")
