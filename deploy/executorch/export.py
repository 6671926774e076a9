"""`adapt export --format executorch [--quantize int8] [--max-seq-len N]`: model.pte + tokenizer + configs.

Each part is captured with `torch.export` (float32; eager attention in the vision tower, ExecuTorch's KV-cache
kernels in the decoder, see `KVCacheDecoder`) and lowered with ExecuTorch's
`to_edge_transform_and_lower` and the XNNPACK partitioner into one program with three methods (see the package
docstring). Dynamic sizes are bounded, because ExecuTorch plans memory for the largest shape: the vision encoder takes
up to the tiling's tile count per call (max tiles + thumbnail; the runtime splits more), the decoder up to
`max_prefill_len` new positions per call (the runtime prefills a long prompt in chunks) into a static KV cache of
`max_seq_len` positions.

`--quantize int8`: torchao's int8 dynamic-activation, int8 per-channel weight quantisation of every Linear (vision
tower, projector, decoder, LM head) -- the form XNNPACK runs as int8 GEMMs; the token embedding stays float32.

The tiling, a fingerprint of the tokenizer and the image tokens' ids are written into the program itself (constant
methods), so the runtime refuses a folder whose preprocessor_config.json or tokenizer files were changed after export.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import numbers
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from model.progress import Progress, progress_bar
from model.tiling import most_tiles_per_image
from model.vision import check_tile_size

from . import (
    DECODER_METHOD,
    EMBED_METHOD,
    PTE,
    QUANTIZE,
    TILING_METHOD,
    TOKENIZER_METHOD,
    VISION_METHOD,
    ExecuTorchError,
    require_executorch,
)

DEFAULT_MAX_SEQ_LEN = 4096  # 12 InternVL tiles + thumbnail (3328 image tokens) and a conversation around them
DEFAULT_MAX_PREFILL_LEN = 512


class KVCacheDecoder(nn.Module):
    """inputs_embeds + cache positions -> last-position logits, attending only to the filled part of a static KV cache.

    The cache is a (1, max_seq_len, kv_heads, head_dim) buffer pair per layer, written in place by ExecuTorch's LLM
    kernel ``llama::update_cache``; attention is ``llama::custom_sdpa`` over positions ``0 .. start + n`` (causal,
    grouped-query), so a decode step costs the same whatever `max_seq_len` is. (Eager attention over a static cache
    reads, masks and softmaxes all `max_seq_len` positions at every step and ran 4x slower at 1,024 positions than at
    128.) Only the last position's logits are kept, so a long prefill does not materialise (seq, vocab) logits."""

    def __init__(self, language_model, max_seq_len: int):
        super().__init__()
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401 - registers the llama:: operators
        from transformers import AttentionInterface

        AttentionInterface.register(CUSTOM_SDPA, _custom_sdpa)
        cfg = language_model.config
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.model, self.max_seq_len = language_model, max_seq_len
        for i in range(cfg.num_hidden_layers):
            self.register_buffer(f"k{i}", torch.zeros(1, max_seq_len, kv_heads, head_dim), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(1, max_seq_len, kv_heads, head_dim), persistent=False)
        params = inspect.signature(language_model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.24

    def forward(self, inputs_embeds: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        start = cache_position[0].item()
        torch._check(start >= 0)
        torch._check(start + inputs_embeds.shape[1] <= self.max_seq_len)
        from deploy.onnx.graphs import attention_implementation

        # masks are skipped for an implementation transformers has no mask function for
        with attention_implementation(self.model, CUSTOM_SDPA):
            out = self.model(inputs_embeds=inputs_embeds, position_ids=cache_position[None], use_cache=False,
                             logits_to_keep=1, pocket_start=start, **{self.cache_arg: _Cache(self, start)})
        return out.logits


CUSTOM_SDPA = "pocket_executorch_sdpa"


class _Cache:
    """What a transformers attention layer calls ``cache.update(...)`` on: writes the new keys and values into the
    decoder's buffers at `start` and hands the whole buffers to the attention (which reads up to start + n)."""

    def __init__(self, decoder: KVCacheDecoder, start):
        self.decoder, self.start = decoder, start

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        k, v = getattr(self.decoder, f"k{layer_idx}"), getattr(self.decoder, f"v{layer_idx}")
        torch.ops.llama.update_cache(key_states.transpose(1, 2).contiguous(), k, self.start)
        torch.ops.llama.update_cache(value_states.transpose(1, 2).contiguous(), v, self.start)
        return k, v


def _custom_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, pocket_start=None, **kwargs):
    """transformers' attention-function signature over `_Cache`'s buffers: (batch, seq, heads, head_dim) out."""
    out = torch.ops.llama.custom_sdpa(query.transpose(1, 2).contiguous(), key, value, pocket_start, None, 0.0, True,
                                      scaling)
    return out, None


def kv_cache_decoder(language_model, max_seq_len: int) -> nn.Module:
    """`KVCacheDecoder`, or `StaticCacheDecoder` for a language model whose attention is windowed below the cache
    length (ExecuTorch's custom_sdpa attends to every earlier position)."""
    cfg = language_model.config
    window, layer_types = getattr(cfg, "sliding_window", None), getattr(cfg, "layer_types", None)
    windowed = bool(window) and window < max_seq_len and (layer_types is None or "sliding_attention" in layer_types)
    return (StaticCacheDecoder if windowed else KVCacheDecoder)(language_model, max_seq_len)


class StaticCacheDecoder(nn.Module):
    """`KVCacheDecoder`'s interface over transformers' static cache (`TorchExportableModuleWithStaticCache` builds and
    registers it) and eager attention with masks: for sliding-window attention, which custom_sdpa does not do."""

    def __init__(self, language_model, max_seq_len: int):
        super().__init__()
        from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

        with _static_generation_config(language_model):
            self.wrapped = TorchExportableModuleWithStaticCache(language_model, batch_size=1, max_cache_len=max_seq_len)
        params = inspect.signature(language_model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.24

    def forward(self, inputs_embeds: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        cache = self.wrapped.static_cache
        for layer in cache.layers:  # the cache's fill level is the first new position (a new prompt restarts at 0)
            layer.cumulative_length.copy_(cache_position[0])
        out = self.wrapped.model(inputs_embeds=inputs_embeds, attention_mask=None, use_cache=True, logits_to_keep=1,
                                 **{self.cache_arg: cache})
        return out.logits


@contextlib.contextmanager
def _static_generation_config(language_model) -> Iterator[None]:
    """The LM's generation config asks for a static cache while the wrapper is built (it checks), then is restored."""
    saved = language_model.generation_config
    config = copy.deepcopy(saved)
    config.cache_implementation, config.use_cache = "static", True
    language_model.generation_config = config
    try:
        yield
    finally:
        language_model.generation_config = saved


def default_max_seq_len(vlm) -> int:
    """The static cache length when none is asked for: the LM's context, at most `DEFAULT_MAX_SEQ_LEN`."""
    context = int(getattr(vlm.config.text_config, "max_position_embeddings", DEFAULT_MAX_SEQ_LEN) or DEFAULT_MAX_SEQ_LEN)
    return min(context, DEFAULT_MAX_SEQ_LEN)


def least_seq_len(processor) -> int:
    """The fewest cache positions a program can answer an image question in: a prompt of one image at one tile
    (what --max-tiles 1 asks for) and a one-character question, no system message, and one answer token."""
    return len(processor.encode_tokens([{"role": "user", "content": "?"}], [1], system_message="").input_ids) + 1


def write_executorch(vlm, processor, out_dir: Path, quantize: str | None = None, max_seq_len: int | None = None,
                     max_prefill_len: int | None = None, progress: Progress = True) -> Path:
    """Write the ExecuTorch export of `vlm` (LoRA already merged) into `out_dir` (an empty staging folder).

    The tracing's own notes -- torch.export's side-effect warnings, the deprecations torch and ExecuTorch raise in
    their code -- are kept off stderr: nothing in them is for a user to act on."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|executorch|torchao)(\.|$)")
        return _write_executorch(vlm, processor, out_dir, quantize, max_seq_len, max_prefill_len, progress)


def _write_executorch(vlm, processor, out_dir: Path, quantize: str | None, max_seq_len: int | None,
                      max_prefill_len: int | None, progress: Progress) -> Path:
    from deploy.onnx.export import CHAT_TEMPLATE, PREPROCESSOR, _template, export_fingerprint, preprocessor_config
    from deploy.onnx.graphs import EmbedGraph, VisionGraph, eager_attention

    if quantize not in (None, *QUANTIZE):
        raise ExecuTorchError(f"unknown ExecuTorch quantisation {quantize!r}; known: {', '.join(QUANTIZE)}")
    # the sizes before executorch is required: a wrong one is said whether or not it is installed
    context = int(getattr(vlm.config.text_config, "max_position_embeddings", 0) or 0)
    max_seq_len = default_max_seq_len(vlm) if max_seq_len is None else _whole("max_seq_len", max_seq_len)
    least = least_seq_len(processor)
    if max_seq_len < least or (context and max_seq_len > context):
        raise ExecuTorchError(
            f"max_seq_len {max_seq_len}: must be {least} .. the model's context ({context or '?'}); {least}: a prompt "
            f"of one image at one tile ({processor.image_seq_length} image tokens) with a one-character question "
            "and no system message, and one answer token")
    # a prefill length below 1 made a program whose runtime fed the decoder nothing and failed on the first prompt
    max_prefill_len = DEFAULT_MAX_PREFILL_LEN if max_prefill_len is None else _whole("max_prefill_len", max_prefill_len)
    if max_prefill_len < 1:
        raise ExecuTorchError(f"max_prefill_len {max_prefill_len}: must be at least 1 (positions per decoder call)")
    max_prefill_len = min(max_prefill_len, max_seq_len)
    require_executorch()
    out_dir = Path(out_dir)
    tiling = processor.tiling
    check_tile_size(tiling.tile_size, vlm.config.vision_config, "cannot export to executorch", ExecuTorchError)
    vlm = export_model(vlm, quantize)
    if quantize == "int8":
        quantize_int8(vlm)

    # stages of unequal cost (the lowering takes most of the time): the stage and the time so far, no ETA
    with progress_bar(total=4, desc="ExecuTorch export", unit="stages", progress=progress, stages=True) as steps:
        max_tiles = most_tiles_per_image(tiling)  # one in pad / crop / resize, whatever max_tiles and thumbnail say
        hidden = vlm.config.text_config.hidden_size
        with eager_attention(vlm), torch.no_grad():
            programs = {}
            steps.set_postfix_str(VISION_METHOD)
            # two tiles even where the tiling makes one (MobileVLM): an example of one would fix the tile axis at 1
            pixels = torch.randn(2, 3, tiling.tile_size, tiling.tile_size)
            tiles = torch.export.Dim("tiles", min=1, max=max(2, max_tiles))
            vision = VisionGraph(vlm)
            # one eager call first: a tower read below its last layer (MobileVLM's -2) makes transformers install its
            # hidden-state hooks on the first call, under a threading lock that strict tracing cannot enter
            vision(pixels[:1])
            programs[VISION_METHOD] = _capture(vision, (pixels,), ({0: tiles},), VISION_METHOD)
            steps.update()
            steps.set_postfix_str(EMBED_METHOD)
            ids = torch.zeros(1, 3, dtype=torch.long)
            programs[EMBED_METHOD] = _capture(EmbedGraph(vlm), (ids,), ({1: torch.export.Dim("tokens", min=1,
                                                                                              max=max_seq_len)},),
                                              EMBED_METHOD)
            steps.update()
            steps.set_postfix_str(DECODER_METHOD)
            decoder = kv_cache_decoder(vlm.language_model, max_seq_len).eval()
            seq = torch.export.Dim("seq", min=1, max=max(2, max_prefill_len))
            programs[DECODER_METHOD] = _capture(decoder, (torch.randn(1, 3, hidden), torch.arange(3)),
                                                ({1: seq}, {0: seq}), DECODER_METHOD)
            steps.update()
        steps.set_postfix_str("XNNPACK lowering")
        constants = {
            "get_max_seq_len": max_seq_len, "get_max_context_len": max_seq_len, "get_max_prefill_len": max_prefill_len,
            "get_max_tiles": max(2, max_tiles), "get_vocab_size": int(vlm.config.text_config.vocab_size),
            "get_hidden_size": int(hidden), "get_image_seq_length": int(processor.image_seq_length),
            "use_kv_cache": True, "enable_dynamic_shape": True, "get_quantize": quantize or "fp32",
            TILING_METHOD: json.dumps(tiling.to_dict()),
            TOKENIZER_METHOD: json.dumps(export_fingerprint(processor), ensure_ascii=False),
        }
        (out_dir / PTE).write_bytes(lower(programs, constants))
        steps.update()
    processor.save_pretrained(out_dir)
    (out_dir / CHAT_TEMPLATE).write_text(json.dumps(_template(processor), indent=1, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (out_dir / PREPROCESSOR).write_text(json.dumps(preprocessor_config(processor), indent=1) + "\n", encoding="utf-8")
    return out_dir


def _whole(name: str, value) -> int:
    """`value` as a whole number, else an ExecuTorchError naming the setting (True, 2.5 and "64" are not counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ExecuTorchError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def export_model(vlm: nn.Module, quantize: str | None = None) -> nn.Module:
    """The model the program is captured from: `vlm` itself where it is float32 on the CPU, else a float32 CPU copy
    (XNNPACK runs on the CPU with float32 kernels: a model loaded with --device cuda or in bfloat16 is exported from
    a copy, so the example inputs, made on the CPU, meet weights there); int8 always quantises a copy. In eval mode."""
    from deploy.onnx.graphs import float32_on_cpu

    return float32_on_cpu(vlm, always_copy=bool(quantize)).eval()


def quantize_int8(vlm: nn.Module) -> None:
    """torchao int8 dynamic activations + int8 per-output-channel weights for every Linear, in place."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    quantize_(vlm, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)))


def _capture(module: nn.Module, args: tuple, dynamic_shapes: tuple, method: str):
    """`torch.export` of one part. strict (TorchDynamo) tracing: the non-strict tracer sees the static cache's tensors
    both as module buffers and as lifted constants, and torch 2.13 then fails to decompose the program."""
    try:
        return torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes, strict=True)
    except Exception as err:  # noqa: BLE001 - every capture failure becomes one error naming the method
        raise ExecuTorchError(f"{method}: torch.export failed ({_first_line(err)})") from err


def lower(programs: dict, constants: dict) -> bytes:
    """The captured programs lowered to XNNPACK and serialised as one .pte (ExecuTorch's bytes).

    The decoder's KV cache (its mutable buffers) is planned into an arena of its own (memory id 2), not among the
    methods' working values: ExecuTorch's Python runtime gives all of a program's methods one set of arenas, so
    token_embedding -- planned for up to max_seq_len tokens, more than the decoder's max_prefill_len -- wrote over the
    cache between two decode steps."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    try:
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()], constant_methods=constants)
        planning = MemoryPlanningPass(share_mutable_buffers=True)
        return edge.to_executorch(ExecutorchBackendConfig(memory_planning_pass=planning)).buffer
    except Exception as err:  # noqa: BLE001 - an operator ExecuTorch cannot lower is named in the message
        raise ExecuTorchError(f"ExecuTorch lowering failed ({_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:400]
