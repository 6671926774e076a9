"""Export a model to checkpoint formats other tools load.

- `hf`: transformers-native InternVL (`AutoModelForImageTextToText.from_pretrained` loads it).
- `internvl`: the original OpenGVLab layout (InternVL's own scripts, with its remote-code files).
- `pocket`: pocket-adapt's own layout (any model, any projector).
- `gguf`: llama.cpp's text-model GGUF and mmproj GGUF (`deploy.gguf`), f32 / f16 / q8_0 / q4_k_m.
- `onnx`: vision, embedding and decoder graphs for ONNX Runtime, fp32 or int8 (`deploy.onnx.export`).
- `executorch`: one `.pte` (vision encoder, token embedding, static-KV-cache decoder; XNNPACK) for ExecuTorch, fp32
  or int8 (`deploy.executorch.export`).
- `tensorrt`: the Jetson Orin bundle (`deploy.tensorrt`): the ONNX graphs with TensorRT profiles for the tiling
  (`tiling`: a recipe's), build commands, reference inputs and outputs, an fp16 check and `verify.py`.
- `mobilevlm`: the MobileVLM V2 layout (MobileVLM's own scripts), plus the CLIP tower as a folder `vision_tower/`
  that its `mm_vision_tower` names by absolute path (`model.checkpoints.mobilevlm.export_mobilevlm`).

Every format exports the model with its LoRA merged (a `PeftModel` is merged first, once, here). A vision adapter
(a distilled tower's projection in front of the trained projector, `model.vision_adapter: auto`) goes with the
projector into pocket, onnx, executorch and tensorrt; hf, internvl, gguf and mobilevlm have no slot for it, so it is
folded into the projector where that starts with a per-token Linear (linear, mlp2x_gelu, ldp, ldpv2) and refused
otherwise (InternVL's pixel_shuffle_mlp: a LayerNorm follows the pixel shuffle).

An export is written into a staging folder beside the target and moved in only once complete, so a failed
export changes nothing. Every export lists its files with their SHA-256 in `SHA256SUMS`
(`model.checkpoints.checksums`: ``sha256sum -c SHA256SUMS`` checks a copy; pocket-adapt checks the weight files
whenever it opens the folder). A target that is not empty is refused unless `force`, which replaces the files an
export owns (configs, weights, tokenizer, a MobileVLM export's `vision_tower/`; stale shards and indexes of an
earlier export included; edge files and the TensorRT bundle's README.md only where the earlier export's
`SHA256SUMS` lists them with the digest they still have) and keeps everything else (a README.md of the user's
that the export would replace is refused).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

from domains.files import HOST_TAG, kept_warning, writer_state
from model import PocketVLM, VLMProcessor, save
from model.checkpoints.checksums import CHECKSUMS, file_sha256, read_checksums, write_checksums
from model.checkpoints.io import honour_umask
from model.checkpoints.mobilevlm import TOWER_FOLDER, check_exportable, export_mobilevlm
from model.checkpoints.native import SIDECAR, export_native, native_config
from model.checkpoints.original import export_original, original_config
from model.errors import ModelConfigError, PocketAdaptError
from model.loading import ADAPTER_FOLDER
from model.lora import merge_lora
from model.tiling import IMAGENET_MEAN, IMAGENET_STD
from model.vision import check_tile_size

FORMATS = {
    "hf": "transformers-native InternVL (InternVLForConditionalGeneration)",
    "internvl": "original OpenGVLab InternVL chat layout",
    "pocket": "pocket-adapt's own layout",
    "gguf": "llama.cpp GGUF (text model) + mmproj GGUF (vision)",
    "onnx": "ONNX Runtime: vision.onnx + embed.onnx + decoder.onnx (KV cache), genai_config.json",
    "mobilevlm": "MobileVLM V2 layout (LDPv2, CLIP tower, MobileLLaMA)",
    "tensorrt": "Jetson Orin bundle: the ONNX graphs, TensorRT profiles and build commands, references, verify.py",
    "executorch": "ExecuTorch model.pte (XNNPACK) + tokenizer and preprocessing",
}

# What an export owns in its folder: any of these left from an earlier export would be mixed with the new one
# (a stale `model.safetensors.index.json` makes loaders look for shards that are gone).
OWNED = (
    "config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json", SIDECAR,
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "*.tiktoken", "chat_template.jinja", "chat_template.json",
    "genai_config.json", "profiles.json", "bundle.json", "fp16_check.json", "verify.py", CHECKSUMS,
)  # fmt: skip
# Edge files are named by the user (`--name`) or sit beside other exports: one is removed only where the earlier
# export's SHA256SUMS lists it with the digest it still has (its own, unchanged), never for its suffix alone (a
# hand-quantised .gguf stays), and only an edge file: a SHA256SUMS lists any file (a release folder's .iso).
EDGE_SUFFIXES = (".gguf", ".onnx", ".onnx.data", ".pte")
# Notes an export writes under names a user's own file may have (the TensorRT bundle's README.md): by the same rule,
# the earlier export's only where its SHA256SUMS lists it with the digest it still has; a user's is never replaced.
EXPORT_NOTES = ("README.md",)
# folders an export writes whole (MobileVLM's CLIP tower, TensorRT's references), and a run's final/adapter/: loading
# a folder merges the LoRA adapter it holds, so one left from an earlier final/ would change the exported model
OWNED_FOLDERS = (TOWER_FOLDER, "references", ADAPTER_FOLDER)


class ExportError(PocketAdaptError, ValueError):
    """The export target or format cannot be used."""


def export(vlm: PocketVLM, processor: VLMProcessor, fmt: str, out_dir: str | Path, force: bool = False,
           **options) -> Path:
    """Write `vlm` (and its processor) to `out_dir` in format `fmt`; see the module docstring for `force`.
    `options` go to the format's writer (gguf: `qtype`, `name`; onnx: `quantize`; tensorrt: `tiling`, `source`)."""
    out = Path(out_dir)
    writer = _writer(fmt, out, **options)
    vlm = merge_lora(vlm)
    if fmt in FIXED_LAYOUTS:
        _check_layout(vlm, fmt)  # a projector or tower the layout has no place for is the first thing said
        fold_vision_adapter(vlm, fmt)
    check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = out.resolve() if out.is_symlink() else out  # a linked folder is swapped where it is, the link kept
    _remove_dead_staging(target)
    staging = target.parent / f".{target.name}.export-{os.getpid()}@{HOST_TAG}-{uuid.uuid4().hex[:8]}"
    try:
        os.mkdir(staging)  # not mkdtemp: the folder gets the umask's mode, as the files do
    except OSError as err:  # name the folder the user gave, not the staging folder beside it
        err.filename = str(out)
        raise
    try:
        writer(vlm, processor, staging)
        write_checksums(staging)
        for f in staging.iterdir():
            if f.is_file():
                honour_umask(f)
        _move_in(staging, target)
    finally:
        if not _journal(staging).exists():  # else the user's files may be in it: left for the next run to restore
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _remove_dead_staging(out: Path) -> None:
    """Remove the staging folders of exports to `out` whose process is gone (killed by a signal it could not
    catch, or by a power cut): each holds a whole export's worth of weights. A live export's is left alone.
    A swap into `out` that was cut short (a journal beside its staging folder) is first undone or finished
    (`_finish_swap`), so the user's files set aside in it are never removed.

    A staging folder is named ``.<out>.export-<pid>@<host>-<token>``; by the rule of every such clean-up
    (:func:`domains.files.writer_state`), only one whose `host` is this machine, boot and container is judged
    by its pid. Any other -- another container's sharing the folder, an earlier version's without a tag -- is kept,
    and a warning names it for the user to delete."""
    unknown = []
    for journal in out.parent.glob(f".{glob.escape(out.name)}.export-*.swap"):
        state = _staging_state(journal)
        if journal.is_file() and state == "gone":
            _finish_swap(journal.with_suffix(""), out)
        elif journal.is_file() and state == "unknown":
            unknown.append(journal)
    for folder in out.parent.glob(f".{glob.escape(out.name)}.export-*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        state = _staging_state(folder)
        if state == "gone":
            shutil.rmtree(folder, ignore_errors=True)
        elif state == "unknown":
            unknown.append(folder)
    if unknown:
        warnings.warn(kept_warning(sorted(unknown), "export staging folder(s)", f"beside {out}", "export", "export"),
                      stacklevel=3)


def _staging_state(path: Path) -> str:
    """:func:`domains.files.writer_state` of the export that named staging folder (or journal) `path`; "alive" for
    one removed meanwhile (nothing left to do)."""
    owner = path.name.rsplit(".export-", 1)[1].split("-")[0]
    pid, _, host = owner.partition("@")
    try:
        mtime_ns = path.lstat().st_mtime_ns
    except OSError:
        return "alive"
    return writer_state(pid, host, mtime_ns)


# Formats written in float32 whatever dtype the model was loaded in (their runtimes' kernels; int8 is --quantize)
FLOAT32_FORMATS = ("onnx", "executorch", "tensorrt")


def check_dtype(fmt: str, dtype: str | None) -> None:
    """`ExportError` for a load dtype (`--dtype`) a float32 format would only round the weights to: the files are
    float32 all the same, so bfloat16 / float16 there is precision lost without a smaller file."""
    if fmt in FLOAT32_FORMATS and dtype not in (None, "float32"):
        raise ExportError(f"--dtype {dtype}: the {fmt} export is float32 whatever the model is loaded in, so {dtype} "
                          "would only round its weights before they are widened again; leave --dtype out (a "
                          f"{dtype} checkpoint is widened as it is){'; smaller: --quantize int8' if fmt != 'tensorrt' else ''}")


def check_target(out: Path, force: bool, source: str | os.PathLike | None = None) -> None:
    """Refuse a target that is a file, the model folder `source` itself or a non-empty folder inside it (even with
    `force`: the export would replace the checkpoint it is made from), or a non-empty folder without `force`
    (`ExportError` naming it)."""
    same = source is not None and os.path.realpath(os.path.normpath(out)) == os.path.realpath(source)
    if same and Path(source).is_dir():
        raise ExportError(f"{out}: the folder of the model being exported; an export there would replace that "
                          "checkpoint (--force too): export into another folder")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose a folder to export into")
    inside = source is not None and Path(source).is_dir() and Path(os.path.realpath(out)).is_relative_to(
        os.path.realpath(source))
    if inside and force and out.is_dir() and any(out.iterdir()):  # e.g. MODEL/adapter: --force would replace its weights
        raise ExportError(f"{out}: a folder of the model being exported, with files in it; --force would replace that "
                          "model's own files: export into an empty or another folder")
    if out.is_dir() and not force:
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            shown = ", ".join(entries[:4]) + (", …" if len(entries) > 4 else "")
            raise ExportError(
                f"{out}: not empty ({shown}); export into a new or empty folder, or pass --force to replace the "
                "files an export writes there (configs, weights, tokenizer) and keep the rest"
            )


# Formats whose projector keys are fixed by another tool: a vision adapter (`AdaptedProjector`) has no slot there,
# so it is folded into the projector's first Linear or the export is refused.
FIXED_LAYOUTS = ("hf", "internvl", "gguf", "mobilevlm")


def _check_layout(vlm: PocketVLM, fmt: str) -> None:
    """The layout's own refusal of the model's tower, projector or template (`ExportError`), before anything else."""
    check = {"mobilevlm": check_exportable, "internvl": original_config, "hf": native_config}.get(fmt)
    try:
        if check is not None:
            check(vlm.config)
    except PocketAdaptError as err:
        raise ExportError(f"cannot export to {fmt}: {err}") from None
    if fmt in ("hf", "internvl"):  # one size for both there (and pocket-adapt refuses to read them back otherwise)
        check_tile_size(vlm.config.tiling_config.tile_size, vlm.config.vision_config, f"cannot export to {fmt}",
                        ExportError)
    if fmt == "internvl":
        _check_original_tiling(vlm.config.tiling_config)
    if fmt == "hf" and vlm.config.tiling_config.mode not in ("dynamic", "resize"):  # said before the weights are
        raise ExportError(f"cannot export to hf: transformers' InternVL image processor (GotOcr2) cuts dynamic tiles "
                          f"or resizes to one tile, not tiling mode {vlm.config.tiling_config.mode!r}; export this "
                          "model as pocket or onnx")


def _check_original_tiling(tiling) -> None:
    """The original layout's config says tile size, tile counts, thumbnail and whether tiles are cut at all; its
    normalisation is always ImageNet's and an image is otherwise squashed to one tile. A tiling outside that would be
    read back (by InternVL's scripts and by pocket-adapt) as another preprocessing: refused, naming what differs."""
    lost = []
    if tiling.mode not in ("dynamic", "resize"):
        lost.append(f"tiling mode {tiling.mode!r} (the layout has dynamic tiles or one squashed tile)")
    if not (_close(tiling.mean, IMAGENET_MEAN) and _close(tiling.std, IMAGENET_STD)):
        lost.append(f"normalisation mean {list(tiling.mean)} / std {list(tiling.std)} (the layout's is ImageNet's, "
                    f"{list(IMAGENET_MEAN)} / {list(IMAGENET_STD)})")
    if lost:
        raise ExportError(f"cannot export to internvl: the original InternVL layout has no place for this model's "
                          f"{' and '.join(lost)}, so the export would be read with other pixels; export it as hf or "
                          "pocket, which keep the tiling")


def _close(a, b) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b))


def fold_vision_adapter(vlm: PocketVLM, fmt: str) -> None:
    """Fold a distilled tower's vision adapter into the projector (`PocketVLM.fold_vision_adapter`, same outputs;
    in place) for format `fmt`, or an `ExportError` saying why it cannot be."""
    try:
        vlm.fold_vision_adapter()
    except ModelConfigError as err:
        raise ExportError(f"cannot export to {fmt}: {err}") from None


def _writer(fmt: str, target: Path, **options) -> Callable[[PocketVLM, VLMProcessor, Path], Path]:
    """The function that writes format `fmt` into a staging folder, for an export that ends up in `target`."""
    if fmt == "gguf":
        from deploy.gguf import check_supported, write_gguf

        def write(vlm, processor, out):
            check_supported(vlm, processor, options.get("qtype", "f16"))
            return write_gguf(vlm, processor, out, **options)

        return write
    if fmt == "onnx":
        from deploy.onnx.export import write_onnx

        return lambda vlm, processor, out: write_onnx(vlm, processor, out, **options)
    if fmt == "tensorrt":
        from deploy.tensorrt import write_tensorrt

        return lambda vlm, processor, out: write_tensorrt(vlm, processor, out, **options)
    if fmt == "executorch":
        from deploy.executorch.export import write_executorch

        return lambda vlm, processor, out: write_executorch(vlm, processor, out, **options)
    if options:
        raise ExportError(f"format {fmt!r} takes no options ({', '.join(options)})")
    if fmt == "hf":
        return lambda vlm, processor, out: export_native(vlm, processor, out)
    if fmt == "internvl":
        return lambda vlm, processor, out: export_original(vlm, processor, out)
    if fmt == "pocket":
        return lambda vlm, processor, out: save(vlm, processor, out)
    if fmt == "mobilevlm":
        tower = (target / TOWER_FOLDER).resolve()  # where the staged tower folder will be
        return lambda vlm, processor, out: export_mobilevlm(vlm, processor, out, tower_path=tower)
    raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")


def _move_in(staging: Path, out: Path) -> None:
    """Put the staged export in `out`, keeping the user's files there and dropping what an earlier export left that
    this one did not write: the edge files and notes its SHA256SUMS lists (:data:`EDGE_SUFFIXES`,
    :data:`EXPORT_NOTES`, digest unchanged), and checkpoint files (:data:`OWNED`) of any origin. The files removed
    that this export did not replace are named on stderr. A note of the user's (not listed so) that this export would
    replace is refused before anything moves (`ExportError`).

    The folder is swapped whole (`_swap`), so a kill never leaves the new text model beside the old projector: the
    user's files move into the staging folder, `out` is set aside, the staging folder takes its name. A mount point
    cannot be renamed: there the files are moved one at a time."""
    if not out.exists():
        os.replace(staging, out)
        return
    try:
        listed = read_checksums(out) or {}
    except PocketAdaptError:
        listed = {}
    earlier = {name for name in listed if name.endswith(EDGE_SUFFIXES) or name in EXPORT_NOTES}
    written = {f.name for f in staging.iterdir()}
    for name in EXPORT_NOTES:
        there = out / name
        if name in written and (there.exists() or there.is_symlink()) and not (
                name in earlier and there.is_file() and file_sha256(there) == listed[name]):
            raise ExportError(f"{there}: not written by an earlier export (the folder's {CHECKSUMS} does not list it "
                              f"as it is now), so --force keeps it, and this export writes its own {name}; move yours "
                              "aside and export again, or export into another folder (nothing was changed)")
    removed, keep = [], []
    for f in sorted(out.iterdir()):
        if f.name in written:
            continue
        if f.is_file() and (any(f.match(pattern) for pattern in OWNED)
                            or (f.name in earlier and file_sha256(f) == listed[f.name])):
            removed.append(f.name)
        elif f.is_dir() and not f.is_symlink() and f.name in OWNED_FOLDERS:
            removed.append(f.name + "/")
        else:
            keep.append(f.name)
    if os.path.ismount(out):
        _move_files(staging, out, removed)
    else:
        _swap(staging, out, keep)
    if removed:
        print(f"note: removed the earlier export's files this one did not write: {', '.join(removed)}", file=sys.stderr)


def _journal(staging: Path) -> Path:
    """The file beside a staging folder that says a swap is under way and which of the user's entries it moves."""
    return staging.with_name(staging.name + ".swap")


def _aside(staging: Path) -> Path:
    """Where the earlier export's folder waits, during a swap, until the new one has taken its name."""
    return staging.with_name(staging.name + ".old")


def _swap(staging: Path, out: Path, keep: list[str]) -> None:
    """Replace folder `out` by `staging`, moving `out`'s entries named in `keep` across first. Committed by the one
    rename of `staging` to `out`; before it, a failure (here) or a kill (the next export's `_finish_swap`) puts
    everything back."""
    journal = _journal(staging)
    journal.write_text(json.dumps({"keep": keep}), encoding="utf-8")
    try:
        os.chmod(staging, stat.S_IMODE(os.stat(out).st_mode))  # the folder keeps its mode (a group's, say)
        for name in keep:
            os.replace(out / name, staging / name)
        os.replace(out, _aside(staging))
        os.replace(staging, out)
    except BaseException as err:
        restored = _finish_swap(staging, out)  # where it cannot put things back it raises; the journal stays
        if isinstance(err, FileNotFoundError) and (restored or not out.exists()):  # `out` removed mid-swap
            where = (f"the files of yours it was keeping ({', '.join(restored)}) are back in a new {out}" if restored
                     else "nothing of yours was left in it to put back")
            raise ExportError(f"{out}: removed while the export was moving into it; {where}, and nothing was "
                              "exported: export again") from err
        raise
    _finish_swap(staging, out)


def _finish_swap(staging: Path, out: Path) -> list[str]:
    """Settle the swap of `staging` into `out` that its journal describes: done (`staging` renamed to `out`) -> the
    earlier folder set aside is removed; not done -> the user's entries go back and `out` is as it was. Then the
    journal is removed. Returns the user's entries put back into a new `out` because `out` itself was removed
    (by the user) mid-swap; otherwise empty."""
    journal, aside = _journal(staging), _aside(staging)
    recreated: list[str] = []
    if staging.exists():  # not committed: undo
        try:
            keep = json.loads(journal.read_text(encoding="utf-8"))["keep"]
        except (OSError, ValueError, KeyError, TypeError):  # not written whole: nothing was moved after it
            keep = []
        home = aside if aside.exists() else out
        back = [name for name in keep if (staging / name).exists() or (staging / name).is_symlink()]
        if back and not home.exists():  # `out` was removed while set apart from the user's entries: they still go back
            os.mkdir(out)
            recreated = back
        for name in back:
            os.replace(staging / name, home / name)
        if home == aside:
            os.replace(aside, out)
        shutil.rmtree(staging, ignore_errors=True)
    else:
        shutil.rmtree(aside, ignore_errors=True)
    journal.unlink(missing_ok=True)
    return recreated


def _move_files(staging: Path, out: Path, removed: list[str]) -> None:
    """Move the staged files into `out` one at a time (a mount point, which cannot be swapped whole), then remove
    the earlier export's entries `removed` names."""
    for f in staging.iterdir():
        if f.is_dir() and (out / f.name).is_dir():  # an earlier export's folder: set aside, then removed
            old = out / f".{f.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out / f.name, old)
            os.replace(f, out / f.name)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(f, out / f.name)
    for name in removed:
        if name.endswith("/"):
            shutil.rmtree(out / name[:-1])
        else:
            (out / name).unlink()
