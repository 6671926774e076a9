"""The three ONNX graphs of a PocketVLM, each exported on its own (reused by the TensorRT bundle).

- vision: ``pixel_values (tiles, 3, S, S)`` -> ``image_features (tiles, tokens_per_tile, hidden)``: the tower, the
  feature layer, CLS dropped, the projector -- `PocketVLM.get_image_features`. The tile count is dynamic, or fixed
  (`tiles=N`, what TensorRT profiles want).
- embed: ``input_ids (batch, seq)`` -> ``inputs_embeds``; image-context ids read row 0, as `PocketVLM.embed` does
  (MobileVLM's context token lies beyond the table).
- decoder: ``inputs_embeds``, ``attention_mask (batch, past + seq)``, ``position_ids`` and the KV cache
  ``past_key_values.%d.key/value (batch, kv_heads, past, head_dim)`` -> ``logits`` of the last position
  ``(batch, 1, vocab)`` and ``present.%d.key/value`` (onnxruntime-genai's names).

Exported with torch.onnx's dynamo exporter (torch.export, opset 18): torch.export proves that the dynamic axes stay
symbolic (it raises where the model would bake a traced size in, which the TorchScript exporter does silently), and
the cache goes through transformers' own `DynamicCache`, so an empty cache (past 0) is the same graph. Attention is
exported in its eager form (the SDPA / flash paths do not translate).

An export that fails names the submodule whose operator the exporter could not translate (`OnnxExportError`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from model.errors import PocketAdaptError
from model.vision import patch_grid

OPSET = 18
PAST_KEY, PAST_VALUE = "past_key_values.%d.key", "past_key_values.%d.value"
PRESENT_KEY, PRESENT_VALUE = "present.%d.key", "present.%d.value"


class OnnxExportError(PocketAdaptError, RuntimeError):
    """A graph could not be exported to ONNX (the message names the submodule and operator)."""


def eager_attention(vlm) -> contextlib.AbstractContextManager[None]:
    """Every sub-config's attention set to ``eager`` for the export, restored afterwards."""
    return attention_implementation(vlm, "eager")


@contextlib.contextmanager
def attention_implementation(module, name: str) -> Iterator[None]:
    """Every sub-config's attention implementation set to `name` (a transformers name, or one registered with
    `transformers.AttentionInterface`), restored afterwards."""
    configs = [m.config for m in module.modules() if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")]
    configs = list({id(c): c for c in configs}.values())
    saved = [c._attn_implementation for c in configs]
    for c in configs:
        c._attn_implementation = name
    try:
        yield
    finally:
        for c, value in zip(configs, saved):
            c._attn_implementation = value


class VisionGraph(nn.Module):
    """Tiles -> projected image features (`PocketVLM.get_image_features`)."""

    def __init__(self, vlm):
        super().__init__()
        self.vlm = vlm

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vlm.get_image_features(pixel_values)


class EmbedGraph(nn.Module):
    """Token ids -> embeddings; the image-context id reads row 0 (its rows are replaced by image features)."""

    def __init__(self, vlm):
        super().__init__()
        self.table = vlm.get_input_embeddings()
        self.image_token_id = int(vlm.config.image_token_id)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table(input_ids.masked_fill(input_ids == self.image_token_id, 0))


class DecoderGraph(nn.Module):
    """The causal LM on embeddings with a flat KV cache (two tensors per layer), last-position logits."""

    def __init__(self, language_model):
        super().__init__()
        self.lm = language_model
        self.n_layers = language_model.config.num_hidden_layers
        params = inspect.signature(language_model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.24

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.n_layers)],
                             config=self.lm.config)
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=True, logits_to_keep=1, **{self.cache_arg: cache})
        present = []
        for layer in cache.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def model_device(module: nn.Module) -> torch.device:
    """The device of `module`'s weights, where the example inputs of its export go."""
    return next(module.parameters()).device


def float32_on_cpu(module: nn.Module, always_copy: bool = False) -> nn.Module:
    """`module` itself where its weights are float32 on the CPU (unless `always_copy`), else a float32 CPU copy (the
    original untouched): what a CPU runtime's references and example inputs (made on the CPU) meet, whatever
    --device loaded it on."""
    weight = next(module.parameters())
    if not always_copy and weight.dtype == torch.float32 and weight.device.type == "cpu":
        return module
    return copy_as(module, torch.device("cpu"), torch.float32)


def copy_as(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A copy of `module` whose floating-point parameters and buffers are `dtype` on `device`, each made there
    directly: deepcopy-then-convert first duplicates every weight where it lies (a second bfloat16 model on the GPU)
    and only then converts it."""
    memo: dict[int, object] = {}
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) in memo:  # tied
            continue
        moved = tensor.detach().to(device, dtype if tensor.is_floating_point() else tensor.dtype, copy=True)
        memo[id(tensor)] = nn.Parameter(moved, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else moved
    return copy.deepcopy(module, memo)


def kv_shape(text_config) -> tuple[int, int]:
    """(kv heads, head dim) of the LM's cache."""
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return getattr(text_config, "num_key_value_heads", None) or heads, head_dim


def export_vision(vlm, path: str | Path, tiles: int | None = None, metadata: dict[str, str] | None = None) -> Path:
    """vision graph to `path`; `tiles=None`: any tile count (dynamic axis ``tiles``), else exactly `tiles`."""
    if tiles is not None and (isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1):
        # 0 (falsy) wrote a graph fixed at the 2-tile example's count
        raise OnnxExportError(f"{Path(path).name}: tiles must be None (any count) or a whole number >= 1, "
                              f"got {tiles!r}")
    size = _tile_size(vlm)
    # 2: torch.export specialises a dimension of size 1; on the model's device (a model loaded with --device cuda)
    example = torch.randn(tiles or 2, 3, size, size, device=model_device(vlm))
    dynamic = None
    if tiles is None:  # all images of a prompt in one call: no upper bound
        dynamic = {"pixel_values": {0: torch.export.Dim("tiles", min=1)}}
    return export_graph(VisionGraph(vlm), (example,), path, ["pixel_values"], ["image_features"], dynamic, metadata)


def export_embed(vlm, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    ids = torch.zeros(2, 3, dtype=torch.long, device=model_device(vlm))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    return export_graph(EmbedGraph(vlm), (ids,), path, ["input_ids"], ["inputs_embeds"],
                        {"input_ids": {0: batch, 1: seq}}, metadata)


def decoder_names(n_layers: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of the decoder graph."""
    past = [n % i for i in range(n_layers) for n in (PAST_KEY, PAST_VALUE)]
    present = [n % i for i in range(n_layers) for n in (PRESENT_KEY, PRESENT_VALUE)]
    return ["inputs_embeds", "attention_mask", "position_ids", *past], ["logits", *present]


def export_decoder(vlm, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    lm = vlm.language_model
    cfg = lm.config
    heads, head_dim = kv_shape(cfg)
    batch, seq, past_len, total = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    b, s, p = 2, 3, 4
    dtype, device = next(lm.parameters()).dtype, model_device(lm)
    args = (torch.randn(b, s, cfg.hidden_size, dtype=dtype, device=device),
            torch.ones(b, p + s, dtype=torch.long, device=device),
            torch.arange(p, p + s, device=device).expand(b, s).contiguous(),
            *(torch.randn(b, heads, p, head_dim, dtype=dtype, device=device) for _ in range(2 * cfg.num_hidden_layers)))
    inputs, outputs = decoder_names(cfg.num_hidden_layers)
    dynamic = {"inputs_embeds": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: total},
               "position_ids": {0: batch, 1: seq}, "past": tuple({0: batch, 2: past_len} for _ in inputs[3:])}
    return export_graph(DecoderGraph(lm), args, path, inputs, outputs, dynamic, metadata)


def export_graph(module: nn.Module, args: tuple, path: str | Path, input_names: list[str], output_names: list[str],
                 dynamic_shapes: dict | None = None, metadata: dict[str, str] | None = None) -> Path:
    """One module to one ONNX file (weights beside it in ``<file>.data``), eager attention; `metadata` goes to the
    model's metadata_props. Any exporter failure is an `OnnxExportError` naming the submodule that ran the op.
    The module is exported in eval mode; each submodule's own train/eval mode is restored afterwards."""
    import warnings

    # the dynamo exporter's packages, imported here so that a missing one is a ModuleNotFoundError naming it (`adapt`
    # names the extra to install), not '<file>: the ONNX exporter failed (No module named ...)'
    import onnx  # noqa: F401
    import onnxscript  # noqa: F401

    path = Path(path)
    modes = [(m, m.training) for m in module.modules()]  # per submodule: a model may hold frozen parts in eval
    module.eval()
    owner = next((m for m in module.modules() if hasattr(m, "get_image_features")), None)
    context = eager_attention(owner if owner is not None else module)
    try:
        with context, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=input_names,
                                        output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False,
                                        external_data=True, optimize=True, report=False)
    except Exception as err:  # noqa: BLE001 - every exporter failure becomes one error naming where it happened
        raise OnnxExportError(describe_failure(module, args, err, path.name)) from err
    finally:
        for m, training in modes:
            m.training = training
    for key, value in (metadata or {}).items():
        program.model.metadata_props[key] = value
    program.save(str(path), external_data=True)
    return path


_OP_PATTERNS = (
    re.compile(r"torch\.ops\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)"),  # any namespace: torch.ops.transformers.grouped_mm_...
    re.compile(r"(?<![A-Za-z0-9_.])(aten)[.:]{1,2}([A-Za-z0-9_]+)"),
)


def _operators(text: str) -> list[str]:
    """The operators `text` names, as 'namespace.op' (aten.histc, transformers.grouped_mm_fallback)."""
    return [f"{m.group(1)}.{m.group(2)}" for p in _OP_PATTERNS for m in p.finditer(text)]


def describe_failure(module: nn.Module, args: tuple, err: BaseException, what: str) -> str:
    """'<what>: cannot export <op> (from <module path> (<class>)): <first line>' -- the module found by replaying the
    forward eagerly and noting which submodule called the operator the exporter names."""
    text = _strip_ansi(str(err))
    ops = _operators(text)
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[")), type(err).__name__)
    cause = err.__cause__ or err.__context__
    if cause is not None:
        detail = _strip_ansi(str(cause)).strip().splitlines()
        first = detail[0] if detail else first
        ops += _operators(_strip_ansi(str(cause)))
    # the exporter's pointer to a stack trace that `adapt` does not print
    first = re.sub(r"\s*See the stack trace for more information\.?", "", first)
    where = operator_owners(module, args, set(_base_op(o) for o in ops)) if ops else {}
    if where:
        op, owners = next(iter(where.items()))
        named = next(o for o in ops if _base_op(o) == op)
        return (f"{what}: cannot export operator {named} called by {', '.join(owners)}; replace that operation in "
                f"the module or leave the module out of the export ({first[:300]})")
    return f"{what}: the ONNX exporter failed ({first[:400]})"


def _base_op(name: str) -> str:
    return name.split(".")[-1]


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def operator_owners(module: nn.Module, args: tuple, ops: set[str]) -> dict[str, list[str]]:
    """For each aten operator name in `ops`: the submodules (dotted path and class) whose forward called it, found by
    running `module` eagerly under a dispatch mode while `ModuleTracker` follows the module stack."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.module_tracker import ModuleTracker

    names = {id(m): n for n, m in module.named_modules()}
    found: dict[str, list[str]] = {}
    tracker = ModuleTracker()

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            op = func.__name__.split(".")[0] if hasattr(func, "__name__") else str(func)
            if op in ops:
                innermost = _innermost(tracker, module, names)
                if innermost and innermost not in found.setdefault(op, []):
                    found[op].append(innermost)
            return func(*args, **(kwargs or {}))

    try:
        with torch.no_grad(), tracker, Spy():
            module(*args)
    except Exception:  # noqa: BLE001 - the replay is best effort; the op's owners seen so far still help
        pass
    return {op: owners for op, owners in found.items() if owners}


def _innermost(tracker, root: nn.Module, names: dict[int, str]) -> str | None:
    """The deepest module on the tracker's stack, as 'path (Class)'."""
    by_name = dict(root.named_modules())
    best = None
    for fqn in tracker.parents:
        # ModuleTracker names modules '<RootClass>.<path>'; strip the root
        path = fqn.split(".", 1)[1] if "." in fqn else ""
        if path in by_name and (best is None or path.count(".") >= best.count(".")) and path:
            best = path
    if best is None:
        return None
    return f"{best} ({type(by_name[best]).__name__})"


def _tile_size(vlm) -> int:
    rows, cols = patch_grid(vlm.config.vision_config)
    patch = vlm.config.vision_config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    if rows != cols:
        raise OnnxExportError(f"vision tower grid {rows}x{cols} is not square; square tiles only")
    return rows * patch
