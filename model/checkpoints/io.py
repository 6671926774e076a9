"""Reading and writing checkpoint files: safetensors (single or sharded), JSON, strict state-dict loading."""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers.initialization import no_init_weights

from ..errors import PocketAdaptError

if TYPE_CHECKING:
    from ..vlm import PocketVLM, PocketVLMConfig

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
PICKLE_INDEX = "pytorch_model.bin.index.json"

# The pair transformers ties in every causal LM pocket-adapt loads (Qwen2/3, Llama, Phi-3, Mistral: their
# `_tied_weights_keys` is {"lm_head.weight": "model.embed_tokens.weight"}), under PocketVLM's names.
HEAD_KEY = "language_model.lm_head.weight"
EMBEDDING_KEY = "language_model.model.embed_tokens.weight"


class CheckpointError(PocketAdaptError, ValueError):
    """A checkpoint directory cannot be read as the layout it claims to be."""


# What building a transformers config from a checkpoint's fields raises for a bad field: transformers 5's configs
# are strict dataclasses, which raise their own error (not a ValueError) for a field of the wrong type.
CONFIG_ERRORS = (KeyError, ValueError, TypeError, ArithmeticError, StrictDataclassError)


def read_json(path: Path) -> dict:
    """A JSON file holding an object; anything else is a `CheckpointError` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a UTF-8 text file, so not JSON") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {_json_kind(data)}, but must hold a JSON object ({{...}})")
    return data


# Keys inside a checkpoint's `vision_config` / `text_config` that transformers' `save_pretrained` (ours included)
# always writes, and whose class defaults (InternViT-300M / Qwen2-7B geometry) would silently build another model
# than the weights'
SUB_CONFIG_KEYS = (
    "vision_config.hidden_size", "vision_config.num_hidden_layers", "vision_config.image_size",
    "vision_config.patch_size", "text_config.model_type", "text_config.hidden_size", "text_config.num_hidden_layers",
)


# The language model's geometry in a config (the original layout's `llm_config`, MobileVLM's top level): a class
# default (Qwen2-7B, Llama-7B) taken for one builds another model than the weights'
LLM_GEOMETRY_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def require_config_keys(path: Path, raw: dict, paths: tuple[str, ...]) -> None:
    """A `CheckpointError` naming the key paths of `paths` (``"image_token_id"``, ``"vision_config.hidden_size"``)
    that `raw`, read from `path`, lacks; a section that is missing or no JSON object is named once, as itself."""
    missing: list[str] = []
    for key_path in paths:
        section, _, key = key_path.rpartition(".")
        node = raw.get(section) if section else raw
        name = key_path if isinstance(node, dict) else section
        if (not isinstance(node, dict) or key not in node) and name not in missing:
            missing.append(name)
    if missing:
        raise CheckpointError(f"{path}: no {', '.join(missing)}; transformers' save_pretrained writes each, and "
                              "taking its defaults would build another geometry than these weights': add them")


def _json_kind(value) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (`/proc/self/status`)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def honour_umask(path: Path) -> None:
    """Give `path` the mode an ordinary `open()` would have: 0666 less the umask (`mkstemp` makes files 0600,
    and safetensors writes through such files too)."""
    os.chmod(path, 0o666 & ~current_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file; the umask is honoured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        honour_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state_dict(directory: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: `model.safetensors`, a sharded index, or the `*.safetensors` there
    (a tensor in two of them is an error: no index says which copy to read).

    PyTorch pickle files are refused unless `allow_pickle`; even then only the model's (`pytorch_model*.bin`, or
    those `pytorch_model.bin.index.json` lists) are read, with `torch.load(weights_only=True)`, which rebuilds
    tensors only and runs no code.
    """
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return _read_sharded(index)
    if (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    else:
        files = sorted(directory.glob("*.safetensors"))
    if files:
        return _merge(files, _load_safetensors)
    pickles = sorted(p for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES) if directory.is_dir() else []
    if pickles and allow_pickle:
        files = _pickle_weights(directory, pickles)
        if (directory / PICKLE_INDEX).is_file():
            return _read_sharded(directory / PICKLE_INDEX, _load_pickle)
        return _merge(files, _load_pickle)
    if pickles:
        raise CheckpointError(
            f"{directory}: only PyTorch pickle weights ({', '.join(p.name for p in pickles)}); pocket-adapt reads "
            "safetensors by default. Pass allow_pickle=True (CLI: --allow-pickle) to read them with "
            "torch.load(weights_only=True), which loads tensors only and runs no code."
        )
    raise CheckpointError(f"{directory}: no weights found (expected model.safetensors or a sharded index)")


def _merge(files: list[Path], load: Callable[[Path], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors of weight files read without an index. A tensor in two of them is an error naming both: with
    no index to say which copy is the model's, the last file read would silently win (a stale export or an
    adapter file left beside the weights)."""
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for f in files:
        tensors = load(f)
        both = sorted(tensors.keys() & origin.keys())
        if both:
            more = f" (and {len(both) - 1} more)" if len(both) > 1 else ""
            raise CheckpointError(f"{f.parent}: tensor {both[0]!r}{more} is in both {origin[both[0]].name} and "
                                  f"{f.name}, and no index says which is the model's; move the file that is not out "
                                  "of the folder")
        state.update(tensors)
        origin.update(dict.fromkeys(tensors, f))
    return state


def _weight_map(index: Path) -> dict[str, str]:
    """A `*.index.json`'s tensor name -> shard file name; a shard must be a file beside the index (no path)."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: no 'weight_map' of tensor names to shard files")
    escaping = next((v for v in weight_map.values() if not v or Path(v).name != v or v in (".", "..")), None)
    if escaping is not None:  # an index must not make us read files outside the checkpoint
        raise CheckpointError(f"{index}: shard {escaping!r} is not a file name beside the index")
    return weight_map


def _shards(index: Path) -> list[Path]:
    """The shard files a `*.index.json` maps tensor names to, beside it."""
    return [index.parent / s for s in sorted(set(_weight_map(index).values()))]


def _read_sharded(index: Path, load: Callable[[Path], dict[str, torch.Tensor]] | None = None
                  ) -> dict[str, torch.Tensor]:
    """The tensors an index maps, each read from the shard the index names (as transformers does) with `load`
    (safetensors by default): a tensor a shard holds but the index places elsewhere (a stray copy) is not read; one
    the index places in a shard that lacks it is an error."""
    load = load or _load_safetensors
    wanted: dict[str, set[str]] = {}
    for key, shard in _weight_map(index).items():
        wanted.setdefault(shard, set()).add(key)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(wanted):
        path = index.parent / shard
        if not path.is_file():
            raise CheckpointError(f"{path}: shard listed in {index.name} is missing")
        tensors = load(path)
        absent = sorted(wanted[shard] - tensors.keys())
        if absent:
            raise CheckpointError(f"{path}: lacks {len(absent)} tensor(s) {index.name} places in it ({absent[:3]}"
                                  f"{' …' if len(absent) > 3 else ''}); the shard and the index are from different "
                                  "versions: download them again")
        state.update((k, tensors[k]) for k in wanted[shard])
    return state


def _pickle_weights(directory: Path, pickles: list[Path]) -> list[Path]:
    """The model's weights among a folder's pickle files: those `pytorch_model.bin.index.json` lists, else
    `pytorch_model*.bin`. The others (a Trainer's `training_args.bin`, MobileVLM's `mm_projector.bin` /
    `non_lora_trainables.bin`) are not the model's weights: left unread, and named in a warning."""
    index = directory / PICKLE_INDEX
    if index.is_file():
        files = _shards(index)  # a missing one: `_read_sharded` names it
    else:
        files = [p for p in pickles if p.name.startswith("pytorch_model") and p.suffix == ".bin"]
    if not files:
        raise CheckpointError(
            f"{directory}: no pytorch_model.bin (or {PICKLE_INDEX}) among its pickle files "
            f"({', '.join(p.name for p in pickles)}); pocket-adapt reads no other pickle file as model weights")
    ignored = [p.name for p in pickles if p not in files]
    if ignored:
        warnings.warn(f"{directory}: read {', '.join(f.name for f in files)}; left unread (not model weights): "
                      f"{', '.join(ignored)}", stacklevel=3)
    return files


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A pickle weights file read with `torch.load(weights_only=True)`; it must hold a dict of tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds; all mean the same to the user
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not a weights file torch.load(weights_only=True) can read ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        held = type(state).__name__ if not isinstance(state, dict) else "a dict whose values are not all tensors"
        raise CheckpointError(f"{path}: holds {held}, not a state dict of tensor names to tensors "
                              "(a training checkpoint? save model.state_dict() instead)")
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({err}); it may be truncated: download or export it again"
        ) from None


def write_state_dict(directory: Path, state: dict[str, torch.Tensor], name: str = "model.safetensors") -> Path:
    """Save tensors as safetensors, atomically, honouring the umask. Shared storage is cloned (safetensors refuses
    aliases)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    clean = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        clean[key] = tensor.clone().contiguous() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    target = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    os.close(fd)
    try:
        save_file(clean, tmp, metadata={"format": "pt"})
        honour_umask(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def build_empty(model_cls, config, dtype: torch.dtype = torch.float32):
    """Instantiate without spending time on random initialisation (weights are loaded right after), with the
    floating-point parameters made in `dtype` (as transformers' ``from_pretrained(dtype=...)`` does), so that a
    bfloat16 checkpoint never passes through a float32 copy of the whole model."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            return model_cls(config)
    finally:
        torch.set_default_dtype(previous)


_WRAPPER_PREFIXES = {"module.": "a DDP / DeepSpeed wrapper", "_orig_mod.": "torch.compile"}


def wrapper_hint(keys: Iterable[str]) -> str:
    """For key names that carry a training wrapper's prefix (``module.``, ``_orig_mod.``): a sentence saying so and
    what to do; else ``""``."""
    for prefix, wrapper in _WRAPPER_PREFIXES.items():
        if any(k.startswith(prefix) for k in keys):
            return (f"; the key names start with {prefix!r}: the weights were saved from {wrapper} around the model — "
                    f"save the unwrapped model, or strip {prefix!r} from every key")
    return ""


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, tied: Iterable[str] = (),
                assign: bool = False) -> None:
    """Load `state` into `model`; anything missing or left over is an error naming the keys.

    Keys in `tied` (e.g. an `lm_head.weight` tied to the input embeddings) may be absent. With `assign` the
    model's parameters become `state`'s tensors (no copy: loading then holds the weights once, not twice).
    A tensor whose shape differs from the one the config gives is an error naming the key and both shapes.
    """
    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (config: {tuple(expected[k].shape)})"
             for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:  # torch would raise a RuntimeError listing every one
        raise CheckpointError(
            f"{source}: {len(wrong)} weight(s) have other shapes than the model built from its config — "
            f"{'; '.join(wrong[:4])}{' …' if len(wrong) > 4 else ''}; the config does not describe these weights")
    result = model.load_state_dict(state, strict=False, assign=assign)
    missing = [k for k in result.missing_keys if k not in set(tied)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the model built from its config — "
            f"missing {len(missing)} {missing[:6]}{' …' if len(missing) > 6 else ''}, "
            f"unexpected {len(unexpected)} {unexpected[:6]}{' …' if len(unexpected) > 6 else ''}"
            f"{wrapper_hint(unexpected)}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def resolve_head_tying(tie: bool, state: dict[str, torch.Tensor], source: str) -> bool:
    """Whether the LM head ends up tied to the input embeddings, decided as transformers' `from_pretrained` does.

    `tie` is the flag of the config that owns the head in that layout. Mirrors
    `PreTrainedModel.tie_weights(missing_keys=...)` (transformers 5.x): with tying on, a head absent from the
    checkpoint (what `save_pretrained` writes) or equal to the embeddings is tied; a head that differs stays
    untied, with a warning; a head without embeddings becomes the embeddings. `state` (PocketVLM key names)
    is edited to match: a tied head is dropped, so only the embeddings are loaded.
    """
    if not tie:
        return False
    head, embedding = state.get(HEAD_KEY), state.get(EMBEDDING_KEY)
    if head is not None and embedding is not None and not torch.equal(head, embedding):
        warnings.warn(
            f"{source}: the config ties the LM head to the input embeddings, but the checkpoint holds a different "
            "head; it is kept untied, as transformers does",
            stacklevel=3,
        )
        return False
    if head is not None and embedding is None:
        state[EMBEDDING_KEY] = head
    state.pop(HEAD_KEY, None)
    return True


def head_is_tied(model: torch.nn.Module) -> bool:
    """Whether `model`'s output embeddings share their weight with its input embeddings."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def stored_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The floating-point dtype that holds most of `state`'s values (float32 when none is floating-point)."""
    sizes: dict[torch.dtype, int] = {}
    for tensor in state.values():
        if tensor.is_floating_point():
            sizes[tensor.dtype] = sizes.get(tensor.dtype, 0) + tensor.numel()
    return max(sizes, key=sizes.__getitem__) if sizes else torch.float32


def _own_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` fit to become parameters as they are: contiguous, and no tensor under two keys (two parameters
    must never share their values unless tied on purpose)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    owned = {}
    for key, tensor in state.items():
        tensor = tensor.contiguous()
        where = (tensor.data_ptr(), tuple(tensor.shape))
        owned[key] = tensor.clone() if where in seen and tensor.numel() else tensor
        seen.add(where)
    return owned


def convert_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """`state` (the model's key names) with transformers' checkpoint conversions for `model` applied, as its
    `from_pretrained` applies them: a MoE LM's per-expert weights (``experts.0.gate_proj.weight``, ...: the hub's
    layout, and what `save_pretrained` writes) are fused into the ``experts.gate_up_proj`` / ``experts.down_proj``
    parameters transformers 5 builds. The same list `save_pretrained` reverts, so save then load is exact. A key the
    model already has is kept as it is (fused weights load unchanged). `state` is emptied as its tensors move over,
    so each layer's per-expert tensors are freed once fused (not all kept beside their fused copies)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        PrefixChange,
        WeightConverter,
        WeightRenaming,
        dot_natural_key,
        rename_source_key,
    )

    # save_pretrained drops PrefixChange for a model not made by from_pretrained (ours never are): so do we
    transforms = [t for t in get_model_conversion_mapping(model, add_legacy=False) if not isinstance(t, PrefixChange)]
    if not transforms:
        return state
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    by_pattern = {pattern: c for c in converters for pattern in c.source_patterns}
    expected = set(model.state_dict())
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, WeightConverter] = {}
    for key in sorted(state, key=dot_natural_key):  # experts in numeric order: 0, 1, ..., 10
        tensor = state.pop(key)
        renamed, pattern = rename_source_key(key, renamings, converters)
        if key in expected and renamed not in expected:
            renamed, pattern = key, None
        if pattern is None:
            out[renamed] = tensor
            continue
        converter = pending.setdefault(renamed, _fresh(by_pattern[pattern]))
        converter.add_tensor(renamed, key, pattern, tensor)
    for target, converter in pending.items():
        _check_experts(target, converter, source)
        try:
            converted = converter.convert(target, model=model, config=model.config)
        except (RuntimeError, ValueError, IndexError) as err:
            raise CheckpointError(f"{source}: the weights for {target} cannot be combined ({err})") from None
        out.update({k: v[0] if isinstance(v, list) else v for k, v in converted.items()})
    return out


def _fresh(converter):
    from copy import deepcopy

    return deepcopy(converter)  # each target collects its own tensors


def _check_experts(target: str, converter, source: str) -> None:
    """Every numbered (``*``) source pattern of `converter` must have collected experts 0..n-1, the same n for each:
    stacking a gap would shift every later expert into another's slot, silently."""
    counts = {}
    for pattern, tensors in converter.collected_tensors.items():
        if "*" not in pattern:
            continue
        regex = re.compile(re.escape(pattern).replace(r"\*", r"(\d+)") + "$")
        found = sorted(int(m.group(1)) for key in converter.layer_targets[target] if (m := regex.search(key)))
        counts[pattern] = len(tensors)
        gap = next((i for i, n in enumerate(found) if i != n), None)
        if gap is not None:
            raise CheckpointError(f"{source}: {target}: no weight for expert {gap} ({pattern.replace('*', str(gap))})")
    if counts and len(set(counts.values())) > 1:
        most = max(counts.values())
        short = next(p for p, n in counts.items() if n < most)
        raise CheckpointError(f"{source}: {target}: {short} has {counts[short]} of {most} experts; no weight for "
                              f"expert {counts[short]} ({short.replace('*', str(counts[short]))})")


def load_vlm(
    config: PocketVLMConfig, state: dict[str, torch.Tensor], source: str, tie: bool, dtype: torch.dtype | None = None
) -> PocketVLM:
    """Build a PocketVLM from `config` and load `state` (PocketVLM key names) into it, strictly.

    `tie` is the layout's tying flag; `resolve_head_tying` turns it into the tying transformers would end up
    with, which is written into the LLM's config so that saving and exporting the model keep it. `dtype`, when
    given, is the dtype the model ends up in; otherwise it is the one the weights are stored in
    (:func:`stored_dtype`), so a bfloat16 checkpoint loads as bfloat16.
    """
    from ..errors import ModelConfigError
    from ..vision import feature_block
    from ..vlm import PocketVLM

    tied = resolve_head_tying(tie, state, source)
    config.text_config.tie_word_embeddings = tied
    config.tie_word_embeddings = tied
    target = dtype or stored_dtype(state)
    try:
        depth = getattr(config.vision_config, "num_hidden_layers", None)
        if isinstance(depth, int):  # else the first image would end in an IndexError
            feature_block(depth, config.vision_feature_layer)
        vlm = build_empty(PocketVLM, config, target)  # parameters allocated but never written: assign replaces them
    except ModelConfigError as err:  # a projector option, a feature layer the config gives
        raise CheckpointError(f"{source}: {err}") from None
    state = convert_weights(vlm, state, source)
    load_strict(vlm, _own_tensors(state), source, tied=[HEAD_KEY] if tied else [], assign=True)
    if head_is_tied(vlm) != tied:
        raise CheckpointError(
            f"{source}: the {type(vlm.language_model).__name__} head is {'not ' if tied else ''}tied to its "
            f"embeddings after loading, but the checkpoint asks for the opposite"
        )
    return vlm.to(target)  # buffers too, as before
