"""`load(path_or_preset)` → `(vlm, processor)`, whatever the checkpoint layout; `save` writes ours."""

from __future__ import annotations

import dataclasses
import os
import shlex
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from .checkpoints.checksums import verify_weights
from .checkpoints.io import CheckpointError, honour_umask, write_json
from .checkpoints.layouts import detect_layout
from .errors import ModelConfigError, PocketAdaptError
from .presets import POCKET_TINY_TOKENIZER, PRESETS, get_preset, preset_of_hub_id
from .processor import VLMProcessor
from .projectors import projector_tokens
from .quiet import ignoring
from .resources import assets_dir
from .tiling import TilingConfig
from .vision import patch_grid
from .vlm import PocketVLM, PocketVLMConfig


class DeviceError(PocketAdaptError, ValueError):
    """A torch device that is no device name, or that this machine lacks."""


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch device present on this machine; `DeviceError` otherwise (torch's own errors are an
    assertion deep inside the first `.to()`, or a parser message listing every backend)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device {str(device)!r}: not a torch device name (cpu, cuda, cuda:1, mps, ...)") from None
    count = {"cuda": torch.cuda.device_count, "mps": lambda: int(torch.backends.mps.is_available())}.get(dev.type)
    if count is not None:
        have = count()
        if have == 0 or (dev.index or 0) >= have:
            found = f"{have} {dev.type} device(s)" if have else f"no {dev.type} device"
            raise DeviceError(f"device {str(device)!r}: this machine's torch ({torch.__version__}) finds {found}; "
                              "use cpu")
    return dev


def load(
    source: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    allow_pickle: bool = False,
    chat_template: str | None = None,
    seed: int = 0,
    projector: str | None = None,
    projector_options: dict | None = None,
    vision: str | os.PathLike | None = None,
    vision_adapter: str = "auto",
) -> tuple[PocketVLM, VLMProcessor]:
    """Load a local checkpoint directory (any supported layout) or build a preset.

    Presets are configs: `pocket-tiny` comes with its bundled tokenizer and pre-trained weights
    (`python -m adapt.pretrain_tiny` reproduces them), `pocket-tiny-scratch` with seeded random
    weights; the public-model presets are fetched from their hub id (needs network or the hub
    cache, never used in tests; without either, a `CheckpointError` names the hub id and says to pass a local
    copy as `source`). No checkpoint code is ever executed.

    `projector` (a registry name, options in `projector_options`) replaces the projector with a freshly
    initialised one (torch seed `seed`), e.g. to train a `qformer` or `resampler` connector from scratch.
    `projector_options` without `projector` change the model's own projector's options and keep its weights
    (``{"pool": 2}``: pooled pixel shuffle with the trained MLP); options that change a weight's shape are refused.

    `dtype`: the dtype the model is returned in; by default the one its weights are stored in (a bfloat16
    checkpoint loads as bfloat16; presets built from their config are float32).

    `vision` puts another vision tower in place of the model's: a tower folder (what `adapt distill` writes), a
    checkpoint folder or a preset (their tower); its tile size and normalisation come with it, and a tower of
    another width or grid gets a fresh projector (see `PocketVLM.replace_vision_tower`). `vision_adapter`:
    ``"auto"`` (default): where the tower folder carries a vision adapter (`adapt distill`'s projection into its
    teacher's features) that maps into the features this model's projector reads, the trained projector is kept
    behind it; ``"fresh"``: the adapter is ignored (a tower of another width gets a fresh projector).

    A checkpoint folder with a LoRA adapter in `adapter/` (`adapt train` with `output.merge_lora: false`) loads
    with the adapter merged into its base weights.

    Weights are read from safetensors in every layout; PyTorch pickle files (`.bin`, `.pt`, ...) only with
    `allow_pickle`, and then with `torch.load(weights_only=True)`. Anything unreadable (a corrupt file, a
    `config.json` that is not an object, a missing tokenizer) is a `CheckpointError` naming the file.
    """
    if device is not None:
        device = check_device(device)  # before any weight is read
    path = Path(source)
    if path.is_dir():
        vlm, tokenizer = _load_dir(path, allow_pickle)
    elif path.is_file():
        raise CheckpointError(f"{source}: is a file, not a checkpoint folder; give the folder that holds config.json")
    elif str(source) in PRESETS:
        vlm, tokenizer = _load_preset(str(source), allow_pickle, seed)
    else:
        raise _unknown_source(source)
    if path.is_dir() and (path / ADAPTER_FOLDER).is_dir():
        vlm = apply_lora_adapter(vlm, path / ADAPTER_FOLDER, allow_pickle)
    if chat_template:
        vlm.config.chat_template = chat_template
    if vision is not None:
        from .checkpoints.tower import load_vision

        tower, tiling = load_vision(vision, seed=seed, allow_pickle=allow_pickle)
        torch.manual_seed(seed)
        try:
            vlm.replace_vision_tower(tower, tiling, _fitting_adapter(vlm, tower, vision, vision_adapter))
            projector_tokens(vlm.config.projector_type, *patch_grid(tower.config), **vlm.config.projector_options)
        except ModelConfigError as err:  # the projector cannot read the tower's grid: say whose grid it is
            rows, cols = patch_grid(tower.config)
            raise ModelConfigError(f"{err} — the vision tower {vision} gives a {rows}x{cols} patch grid per tile"
                                   ) from None
    if projector is not None:
        torch.manual_seed(seed)
        vlm.replace_projector(projector, projector_options)
    elif projector_options:
        vlm.reconfigure_projector(projector_options)
    if dtype is not None:
        vlm = vlm.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    if device is not None:
        vlm = vlm.to(device)
    vlm.eval()
    return vlm, VLMProcessor.from_config(vlm.config, tokenizer)


ADAPTER_FOLDER = "adapter"  # a checkpoint's own LoRA adapter, kept apart from its base weights


@contextmanager
def peft_quietly():
    """peft 0.x reads transformers' deprecated `is_gradient_checkpointing` (a FutureWarning per wrap that the
    user can do nothing about); everything else it warns about still shows."""
    with ignoring(FutureWarning, "`is_gradient_checkpointing` is deprecated"):
        yield


def check_lora_adapter(folder: Path, allow_pickle: bool = False, model: str | Path | None = None) -> None:
    """A peft LoRA adapter folder whose weights pass the same pickle gate as a model's (peft would torch.load
    `adapter_model.bin`), or a `CheckpointError` saying why not. With `model` (the folder it is merged into): not
    that folder's own ``adapter/``, which loading the model merges already (a second merge doubles the update)."""
    own = Path(model) / ADAPTER_FOLDER if model is not None else None
    if own is not None and own.is_dir() and folder.is_dir() and _same_adapter(folder, own):
        raise CheckpointError(
            f"{folder}: is the adapter {model} carries in {ADAPTER_FOLDER}/, which loading {model} merges already; "
            "merging it again would add its update twice. Drop --adapter (or give the base model as --model)")
    if not (folder / "adapter_config.json").is_file():
        raise CheckpointError(f"{folder}: not a LoRA adapter folder (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        if not (folder / "adapter_model.bin").is_file():
            raise CheckpointError(f"{folder}: no adapter weights (adapter_model.safetensors)")
        if not allow_pickle:
            raise CheckpointError(
                f"{folder}: only PyTorch pickle weights (adapter_model.bin); pocket-adapt reads safetensors by "
                "default. Pass --allow-pickle to read them with torch.load(weights_only=True), which loads "
                "tensors only and runs no code.")


def _same_adapter(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    weights = [(a / name, b / name) for name in ("adapter_model.safetensors", "adapter_model.bin")]
    return any(x.is_file() and y.is_file() and x.read_bytes() == y.read_bytes() for x, y in weights)


def apply_lora_adapter(vlm: PocketVLM, folder: Path, allow_pickle: bool = False) -> PocketVLM:
    """`vlm` with the LoRA adapter in `folder` merged into its weights (a `CheckpointError` where it does not fit)."""
    check_lora_adapter(folder, allow_pickle)
    from peft import PeftModel

    try:
        with peft_quietly():
            return PeftModel.from_pretrained(vlm, str(folder)).merge_and_unload()
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{folder}: the LoRA adapter does not fit this model: {err}") from None


VISION_ADAPTER_MODES = ("auto", "fresh")


def _fitting_adapter(vlm: PocketVLM, tower, vision: str | os.PathLike, mode: str):
    """The vision adapter of tower folder `vision` when `mode` is auto and it fits `vlm` (else None, with a warning
    where the folder has one that does not fit)."""
    from .checkpoints.tower import load_vision_adapter

    if mode not in VISION_ADAPTER_MODES:
        raise CheckpointError(f"vision_adapter must be one of {', '.join(VISION_ADAPTER_MODES)}, got {mode!r}")
    found = load_vision_adapter(vision) if mode == "auto" and Path(vision).is_dir() else None
    if found is None:
        return None
    adapter, info = found
    layer = info.get("vision_feature_layer")
    if not vlm.adapter_fits(tower, adapter):
        warnings.warn(f"{vision}: its vision adapter maps {adapter.in_features} -> {adapter.out_features} wide "
                      f"features (teacher {info.get('teacher')}), but this model's projector reads "
                      f"{vlm.projector_width}-wide ones: not used", stacklevel=3)
        return None
    if not vlm.adapter_fits(tower, adapter, layer):
        warnings.warn(f"{vision}: its vision adapter maps the features of vision_feature_layer {layer} (teacher "
                      f"{info.get('teacher')}), but this model's projector reads vision_feature_layer "
                      f"{vlm.config.vision_feature_layer}: not used", stacklevel=3)
        return None
    return adapter


def save(vlm: PocketVLM, processor: VLMProcessor, out_dir: str | os.PathLike) -> Path:
    """Our own layout: `config.json` (tiling and chat template included), safetensors weights in the model's dtype,
    tokenizer, and a `preprocessor_config.json` naming the transformers image processor that reproduces the tiling
    (for tools outside pocket-adapt; `load` reads the tiling from `config.json`)."""
    out_dir = Path(out_dir)
    vlm.save_pretrained(str(out_dir), safe_serialization=True)
    processor.save_pretrained(out_dir)
    image_processor = image_processor_config(processor.tiling)
    if image_processor is not None:
        write_json(out_dir / "preprocessor_config.json", image_processor)
    for weights in out_dir.glob("model*.safetensors"):  # safetensors writes them 0600
        honour_umask(weights)
    return out_dir


def image_processor_config(tiling: TilingConfig) -> dict | None:
    """`preprocessor_config.json` for transformers' GotOcr2 image processor, whose output equals our tiling in
    the InternVL mode with a thumbnail (tiles) and in the resize mode (one squashed tile); None for the others
    (no thumbnail; pad, whose square padding MobileVLM does before its CLIP processor)."""
    from .checkpoints.native import _preprocessor_config

    if tiling.mode == "dynamic":
        return _preprocessor_config(tiling) if tiling.thumbnail else None
    if tiling.mode == "resize":
        return {**_preprocessor_config(dataclasses.replace(tiling, mode="dynamic", min_tiles=1, max_tiles=1)),
                "crop_to_patches": False}
    return None


def _load_dir(path: Path, allow_pickle: bool):
    verify_weights(path, CheckpointError)  # an export's SHA256SUMS; checkpoints from elsewhere have none
    layout = detect_layout(path)
    tokenizer = load_tokenizer(path)
    if layout == "pocket":
        from .checkpoints.pocket import load_pocket

        return load_pocket(path, allow_pickle=allow_pickle), tokenizer
    if layout == "native":
        from .checkpoints.native import load_native

        return load_native(path, allow_pickle=allow_pickle), tokenizer
    if layout == "original":
        from .checkpoints.original import load_original

        return load_original(path, tokenizer, allow_pickle=allow_pickle), tokenizer
    from .checkpoints.mobilevlm import load_mobilevlm

    return load_mobilevlm(path, tokenizer, allow_pickle=allow_pickle), tokenizer


def load_config(source: str | os.PathLike) -> PocketVLMConfig:
    """The config of a checkpoint folder (any layout) or a preset, as :func:`load` would build the model from it,
    without reading weights or the tokenizer, nor fetching anything: for what the config alone tells (tiling,
    image tokens per tile). The image-token id, which the tokenizer gives in the original and MobileVLM layouts,
    is left at 0 there."""
    path = Path(source)
    if path.is_dir():
        layout = detect_layout(path)
        if layout == "pocket":
            from .checkpoints.pocket import config_from_pocket

            return config_from_pocket(path / "config.json")
        if layout == "native":
            from .checkpoints.native import config_from_native, read_native_config

            return config_from_native(read_native_config(path), path)
        from .checkpoints.io import read_json

        raw = read_json(path / "config.json")
        if layout == "original":
            from .checkpoints.original import config_from_original

            return config_from_original(raw, 0, path / "config.json")
        from .checkpoints.mobilevlm import config_from_mobilevlm

        return config_from_mobilevlm(raw, path, 0)
    if path.is_file():
        raise CheckpointError(f"{source}: is a file, not a checkpoint folder; give the folder that holds config.json")
    if str(source) in PRESETS:
        return get_preset(str(source)).build()
    raise _unknown_source(source)


def _unknown_source(source: str | os.PathLike) -> CheckpointError:
    """What a source that is neither a folder nor a preset gets; a preset's hub id (what `adapt inspect` and
    `adapt presets` show next to it) is pointed at its preset, since hub ids are never fetched as such."""
    named = preset_of_hub_id(str(source))
    if named is not None:
        return CheckpointError(
            f"{source}: is the hub id of the preset {named.name}, not a checkpoint folder; give the preset name "
            f"(--model {named.name}), which fetches it, or a local copy: "
            f"{hub_fetch_advice(named.hub_id, str(source))}")
    if (moved := moved_aside_note(source)) is not None:
        return CheckpointError(moved)
    import difflib

    close = difflib.get_close_matches(str(source).lower(), list(PRESETS), n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return CheckpointError(f"{source}: not a checkpoint directory nor a preset{hint}; presets: {', '.join(PRESETS)}")


def moved_aside(folder: Path) -> Path:
    """Where a folder being replaced waits while its new version is renamed into place (`adapt.train.staged_folder`):
    `.<name>.replaced` beside it."""
    return folder.with_name(f".{folder.name}.replaced")


def moved_aside_note(source: str | os.PathLike) -> str | None:
    """Why a missing folder `source` is missing when a run stopped between the two renames that replace it
    (`adapt.train.staged_folder`) left only the earlier one, moved aside (:func:`moved_aside`); None otherwise.
    Said, not undone here: the run may still be live and about to rename its new folder into place."""
    path = Path(source)
    aside = moved_aside(path) if path.name else None
    if aside is None or path.exists() or not aside.is_dir():
        return None
    return (f"{source}: missing: a run stopped while replacing it and left the earlier one as {aside}; run that "
            f"run's `adapt train` (or `adapt distill`) command again, which restores it first, or, when no run is "
            f"training in {path.parent}, rename it back: mv {shlex.quote(str(aside))} {shlex.quote(str(path))}")


def _load_preset(name: str, allow_pickle: bool, seed: int):
    preset = get_preset(name)
    if preset.hub_id is None:
        with torch.random.fork_rng(devices=[]):  # the same random init each time, the caller's RNG untouched
            torch.manual_seed(seed)
            vlm = PocketVLM(preset.build())
        if preset.weights:
            from .checkpoints.io import load_strict, read_state_dict

            weights = assets_dir() / preset.weights
            if not weights.is_file():  # else the trained preset would be the scratch one, without a word
                scratch = [p.name for p in PRESETS.values() if p.build is preset.build and not p.weights]
                raise CheckpointError(
                    f"preset {name}: its bundled weights {weights} are missing (an install without model/assets?); "
                    "reinstall pocket-adapt, or rebuild them with python -m adapt.pretrain_tiny --out DIR --install"
                    + (f"; for seeded random weights, use the preset {scratch[0]}" if scratch else ""))
            load_strict(vlm, read_state_dict(weights.parent), str(weights))
        return vlm, AutoTokenizer.from_pretrained(str(assets_dir() / POCKET_TINY_TOKENIZER))
    return _load_dir(hub_snapshot(preset.hub_id, f"preset {name}", allow_pickle=allow_pickle), allow_pickle)


def hub_snapshot(hub_id: str, needed_by: str, *, allow_pickle: bool = False, instead_of: str = "the preset name",
                 where: str = "--model DIR; in a recipe, model.source: DIR") -> Path:
    """The local folder of `hub_id` (downloaded, or from the hub cache); without network and without a cached
    copy, a `CheckpointError` naming what needs it (`needed_by`), the hub id and how to pass a local folder instead
    (`hub_fetch_advice`). Pickle weights (`*.bin`, what MobileVLM releases ship) are fetched only with `allow_pickle`."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
        folder = Path(snapshot_download(hub_id, allow_patterns=patterns + (["*.bin"] if allow_pickle else [])))
    except LocalEntryNotFoundError as err:  # what the hub client raises offline when the cache has no copy
        cause = err.__cause__ or err
        why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
               else f"the hub is not reachable ({type(cause).__name__}: {_first_line(cause)})")
        raise CheckpointError(f"{needed_by} needs the weights of {hub_id} from the Hugging Face hub, and {why} "
                              f"with no copy in the hub cache; {hub_fetch_advice(hub_id, instead_of, where)}") from None
    if not allow_pickle and not any(folder.glob("*.safetensors")):
        # the pickle files were not fetched: without this, the load fails on "no weights found" in the hub cache
        raise CheckpointError(
            f"{needed_by}: {hub_id} on the Hugging Face hub has no safetensors weights, only its config and tokenizer "
            "came; where it ships PyTorch pickle weights (pytorch_model*.bin, as the MobileVLM releases do), pass "
            "--allow-pickle (in a recipe, model.allow_pickle: true) to fetch them and read them with "
            "torch.load(weights_only=True), which loads tensors only and runs no code")
    return folder


def hub_fetch_advice(hub_id: str, instead_of: str = "the preset name",
                     where: str = "--model DIR; in a recipe, model.source: DIR") -> str:
    """How to get `hub_id`'s weights onto a machine that cannot reach the hub, and use them."""
    return (f"fetch them where there is network (`hf download {hub_id} --local-dir DIR`) and pass the folder "
            f"instead of {instead_of} ({where})")


HUB_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json")


def hub_weights_cached(hub_id: str) -> bool:
    """Whether the local Hugging Face cache holds `hub_id`: its config.json and a weights file or index (a config
    alone is what a load that stopped short, e.g. at the pickle gate, leaves); looks at the disk only."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(hub_id, name), str)

    return cached("config.json") and any(cached(name) for name in HUB_WEIGHT_FILES)


@contextmanager
def _quiet_transformers():
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# Files a tokenizer is read from (sentencepiece, BPE, WordPiece, tiktoken); tokenizer_config.json alone is not one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "*.tiktoken")


def load_tokenizer(path: Path):
    """The checkpoint's tokenizer, without running its code. Remote-code tokenizers (InternLM2) are
    read through their sentencepiece model as a Llama tokenizer."""
    if not any(any(path.glob(pattern)) for pattern in TOKENIZER_FILES):
        raise CheckpointError(
            f"{path}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json + merges.txt); "
            "copy the tokenizer of the model it was trained from into this folder"
        )
    try:
        # AutoTokenizer peeks at config.json, which for remote-code layouts only draws a warning
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as err:  # remote-code tokenizer classes (InternLM2Tokenizer) fail here
        if not (path / "tokenizer.model").is_file():
            raise CheckpointError(f"{path}: tokenizer could not be loaded ({_first_line(err)})") from err
        from transformers import LlamaTokenizer

        try:  # the sentencepiece model behind the remote-code class, read as the Llama tokenizer it is
            with _quiet_transformers():
                tokenizer = LlamaTokenizer.from_pretrained(str(path))
        except Exception as inner:
            reason = _sentencepiece_problem(path / "tokenizer.model") or _first_line(inner)
            raise CheckpointError(f"{path}: tokenizer could not be read without remote code ({reason})") from err
    _check_vocabulary(tokenizer, path)
    return tokenizer


def _check_vocabulary(tokenizer, path: Path) -> None:
    """CheckpointError when the tokenizer came out without a vocabulary: transformers turns a ``tokenizer.model``
    it cannot read (sentencepiece missing, a damaged file) into a tokenizer of only its special tokens, which
    encodes every word as nothing and would train on empty text without a word."""
    special = set(tokenizer.all_special_ids)
    probe = tokenizer.encode("The quick brown fox jumps over the lazy dog.", add_special_tokens=False)
    if [i for i in probe if i not in special]:
        return
    model_file = path / "tokenizer.model"
    source = "tokenizer.model" if model_file.is_file() else "the tokenizer files"
    hint = (_sentencepiece_problem(model_file) if model_file.is_file() else None) or \
        "copy the tokenizer of the model it came from"
    raise CheckpointError(f"{path}: the tokenizer read from {source} has no vocabulary ({len(tokenizer)} tokens, "
                          f"every word encodes to nothing); {hint}")


def _sentencepiece_problem(model_file: Path) -> str | None:
    """Why `model_file` cannot be read as a sentencepiece model (the package missing, the file damaged), or None."""
    try:
        import sentencepiece
    except ImportError:
        return "reading a tokenizer.model needs the sentencepiece package: pip install sentencepiece"
    try:
        sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    except Exception:  # noqa: BLE001 - whatever sentencepiece says of a file it cannot parse
        return "tokenizer.model is not a sentencepiece model (damaged?)"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
