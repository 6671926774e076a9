"""GGUF export for llama.cpp: the text model `<name>-<type>.gguf` and the vision part `mmproj-<name>-f16.gguf`.

Written with the `gguf` package (its writer and its quantisers; q4_k_m, which that package cannot quantise, goes
through llama.cpp's own `llama-quantize`, see `deploy.llamacpp`). Tensor names and metadata keys are the ones
llama.cpp's loaders read (`tools/mtmd/clip-impl.h`, `src/llama-arch.cpp`, as in `shared/reference/edge_export.md`).

Supported (anything else is refused up front, naming what is supported):

- language models: Qwen2 (`qwen2`) and Llama (`llama`; MobileLLaMA, and InternLM2 once loaded as a Llama), with a
  byte-level BPE tokenizer (GPT-2, Qwen2 or Llama-3 pre-tokenisation; pocket-tiny's own tokenizer is GPT-2 style)
  or a sentencepiece-style BPE tokenizer with byte fallback (LLaMA's, MobileLLaMA's: GGUF vocabulary `llama`);
- projectors: InternVL pixel shuffle + MLP (`internvl`, InternViT tower, ps_version v2) and MobileVLM's LDP (`ldp`)
  and LDPv2 (`ldpv2`) on a CLIP tower with a 24x24 patch grid (336 px, patch 14: llama.cpp hard-codes the grid).

What the export does so that llama.cpp computes what PyTorch computes (each checked by tests/test_gguf.py against a
real llama.cpp):

- the vision tower is the model's own (adapted weights), LoRA merged beforehand (`deploy.hf.export`);
- llama.cpp appends the CLS token *after* the patches, so the position embeddings are written in that order
  (patches first, CLS last); InternVL's layer scales go to `ls1`/`ls2`;
- the LDP graphs run `block_count - 1` encoder layers and read the last one's output, so for PyTorch's feature
  layer (MobileVLM: -2, the output of layer L-1 of L) `block_count` is written as (layers to run) + 1;
- Llama's q/k rows are permuted from transformers' rotate-half layout to the interleaved layout llama.cpp's `llama`
  rope uses (Qwen2 uses the rotate-half rope in llama.cpp too, so it is written as is);
- the chat template the model was trained with is embedded as Jinja (`tokenizer.chat_template`), so llama.cpp
  renders the same prompt; BOS is added exactly when the template says so (`tokenizer.ggml.add_bos_token`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.errors import PocketAdaptError
from model.progress import Progress, shows_bar
from model.tiling import warn_if_thumbnail_added

TYPES = ("f32", "f16", "q8_0", "q4_k_m")
LANGUAGE_MODELS = {"qwen2": "qwen2", "llama": "llama"}
PROJECTORS = {"pixel_shuffle_mlp": "internvl", "ldp": "ldp", "ldpv2": "ldpv2"}
LDP_GRID = 24  # llama.cpp's LDP graphs hard-code a 24x24 patch grid (336 px, patch 14)

# Pre-tokenizer regexes llama.cpp knows (llama-vocab.cpp), by the name `tokenizer.ggml.pre` gives them.
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_BY_REGEX = {_QWEN2_REGEX: "qwen2", _LLAMA3_REGEX: "llama-bpe"}


class GGUFExportError(PocketAdaptError, ValueError):
    """A model (architecture, tokenizer, projector, settings) that cannot be written for llama.cpp."""


@dataclass(frozen=True)
class GGUFFiles:
    model: Path
    mmproj: Path


def file_names(name: str, qtype: str) -> tuple[str, str]:
    """(`<name>-<type>.gguf`, `mmproj-<name>-<f16|f32>.gguf`)."""
    return f"{name}-{qtype}.gguf", f"mmproj-{name}-{'f32' if qtype == 'f32' else 'f16'}.gguf"


def check_supported(vlm, processor, qtype: str = "f16") -> None:
    """Raise `GGUFExportError` for anything llama.cpp cannot run as PyTorch does (before any file is written)."""
    if qtype not in TYPES:
        raise GGUFExportError(f"unknown GGUF type {qtype!r}; choose one of {', '.join(TYPES)}")
    _lm_arch(vlm.config.text_config)
    _vocab(processor.tokenizer, _n_vocab(vlm))
    _projector_facts(vlm)
    from model.chat import chat_template_jinja

    chat_template_jinja(processor.chat_template)


def write_gguf(vlm, processor, out_dir: Path, qtype: str = "f16", name: str = "model",
               quantize: Callable[[Path, Path, str], None] | None = None, progress: Progress = True) -> GGUFFiles:
    """Write both files into `out_dir` (an existing folder). `quantize(src_f32, dst, type)` makes q4_k_m.
    `progress`: gguf's bar over the tensors written (only a bar: it has no plain-line form)."""
    check_supported(vlm, processor, qtype)
    if qtype == "q4_k_m" and quantize is None:
        from deploy.llamacpp import binary
        from deploy.llamacpp import quantize as quantize  # noqa: PLW0127 - llama.cpp's llama-quantize

        binary("llama-quantize")  # a missing build is said before the files are written, not after
    model_name, mmproj_name = file_names(name, qtype)
    out_dir = Path(out_dir)
    vision = vision_fingerprint(vlm)  # one hash of the vision weights, written into both files
    bar = shows_bar(progress)
    write_mmproj(vlm, processor, out_dir / mmproj_name, "f32" if qtype == "f32" else "f16", name, vision, bar)
    if qtype == "q4_k_m":
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            full = Path(tmp) / "full-f32.gguf"
            write_text_model(vlm, processor, full, "f32", name, vision, bar)
            quantize(full, out_dir / model_name, "Q4_K_M")
    else:
        write_text_model(vlm, processor, out_dir / model_name, qtype, name, vision, bar)
    return GGUFFiles(out_dir / model_name, out_dir / mmproj_name)


# ----------------------------------------------------------------------------------------------------------------
# text model
# ----------------------------------------------------------------------------------------------------------------


def _lm_arch(text_config) -> str:
    kind = getattr(text_config, "model_type", None)
    if kind not in LANGUAGE_MODELS:
        raise GGUFExportError(
            f"llama.cpp export supports Qwen2 and Llama language models (InternVL2-1B/Mini-InternVL-1B, MobileVLM's "
            f"MobileLLaMA, pocket-tiny; InternLM2 loads as a Llama); this model's is {kind!r}"
        )
    act = getattr(text_config, "hidden_act", "silu")
    if act != "silu":
        raise GGUFExportError(f"the language model uses hidden_act={act!r}; llama.cpp's {kind} runs SiLU")
    rope = _rope_parameters(text_config)
    if rope.get("rope_type", "default") not in ("default", None):
        raise GGUFExportError(f"rope scaling {rope.get('rope_type')!r} is not exported; only plain RoPE")
    if kind == "llama" and getattr(text_config, "mlp_bias", False):
        raise GGUFExportError("a Llama with mlp_bias=True is not exported (llama.cpp's llama has no FFN biases)")
    return LANGUAGE_MODELS[kind]


def _rope_parameters(cfg) -> dict:
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope = dict(rope)
    if "rope_theta" not in rope:
        rope["rope_theta"] = getattr(cfg, "rope_theta", 10000.0)
    return rope


def _n_vocab(vlm) -> int:
    return int(vlm.language_model.get_input_embeddings().weight.shape[0])


def _tensor_type(kind: str, array: np.ndarray, name: str):
    """(data, raw_dtype) for one tensor under export type `kind` ("f32" / "f16" / "q8_0")."""
    import gguf
    from gguf import GGMLQuantizationType as T

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim == 4 and name.startswith("mm."):
        # the projector's depthwise convolutions (ggml_conv_2d_dw): ggml's CPU backend multiplies a float16 im2col
        # only with a float16 kernel, so these are float16 even in an f32 export (as llama.cpp's converter writes)
        return _float16(array, name, "in every export type"), T.F16
    if array.ndim <= 1 or kind == "f32" or name.endswith("position_embd.weight") or name == "v.class_embd":
        return array, T.F32
    if kind == "q8_0" and array.ndim == 2 and array.shape[-1] % gguf.GGML_QUANT_SIZES[T.Q8_0][0] == 0:
        return gguf.quants.quantize(array, T.Q8_0), T.Q8_0
    return _float16(array, name, "use --type f32"), T.F16


FP16_MAX = 65504.0  # float16's largest finite value


def _float16(array: np.ndarray, name: str, way_out: str) -> np.ndarray:
    """`array` as float16; a weight beyond float16's range (it would become inf) is a `GGUFExportError`."""
    peak = float(np.abs(array).max()) if array.size else 0.0
    if not peak <= FP16_MAX:  # NaN too
        raise GGUFExportError(f"tensor {name}: a weight of magnitude {peak:g} does not fit float16 (largest "
                              f"{FP16_MAX:g}) and would become inf in the GGUF, which stores it as float16 "
                              f"({way_out})")
    return array.astype(np.float16)


def _add(writer, name: str, tensor: torch.Tensor | np.ndarray, kind: str) -> None:
    array = tensor.detach().float().cpu().numpy() if isinstance(tensor, torch.Tensor) else tensor
    data, dtype = _tensor_type(kind, array, name)
    writer.add_tensor(name, data, raw_dtype=dtype)


def _permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """transformers' rotate-half q/k rows -> the interleaved pairs llama.cpp's `llama` rope rotates."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _file_type(kind: str) -> int:
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]


def write_text_model(vlm, processor, path: Path, kind: str, name: str, vision: str | None = None,
                     progress: bool = False) -> None:
    """The text model GGUF; `vision`: the export's `vision_fingerprint` (computed when not given)."""
    import gguf

    cfg = vlm.config.text_config
    arch = _lm_arch(cfg)
    lm = vlm.language_model
    n_vocab = _n_vocab(vlm)
    n_head, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_file_type(_file_type(kind))
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(cfg.num_hidden_layers))
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(int(n_head))
    w.add_head_count_kv(int(n_kv))
    w.add_rope_freq_base(float(_rope_parameters(cfg)["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(n_vocab)
    if head_dim * n_head != cfg.hidden_size:
        w.add_key_length(int(head_dim))
        w.add_value_length(int(head_dim))
    if arch == "llama":
        w.add_rope_dimension_count(int(head_dim))
    _write_vocab(w, processor, n_vocab)
    w.add_string(VISION_KEY, vision or vision_fingerprint(vlm))  # which mmproj belongs to this text model

    sd = {k: v for k, v in lm.state_dict().items()}
    tied = "lm_head.weight" not in sd or sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
    tied = tied or bool(getattr(cfg, "tie_word_embeddings", False))
    _add(w, "token_embd.weight", sd["model.embed_tokens.weight"], kind)
    _add(w, "output_norm.weight", sd["model.norm.weight"], kind)
    if not tied:
        _add(w, "output.weight", sd["lm_head.weight"], kind)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = _permute_rope(q, n_head), _permute_rope(k, n_kv)
        parts = {
            "attn_norm.weight": sd[p + "input_layernorm.weight"],
            "attn_q.weight": q,
            "attn_k.weight": k,
            "attn_v.weight": sd[p + "self_attn.v_proj.weight"],
            "attn_output.weight": sd[p + "self_attn.o_proj.weight"],
            "ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
            "ffn_gate.weight": sd[p + "mlp.gate_proj.weight"],
            "ffn_up.weight": sd[p + "mlp.up_proj.weight"],
            "ffn_down.weight": sd[p + "mlp.down_proj.weight"],
        }
        for proj, short in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output")):
            bias = sd.get(p + f"self_attn.{proj}_proj.bias")
            if bias is not None:
                if arch == "llama" and proj in "qk":
                    bias = _permute_rope(bias, n_head if proj == "q" else n_kv)
                parts[f"{short}.bias"] = bias
        for suffix, tensor in parts.items():
            _add(w, f"blk.{i}.{suffix}", tensor, kind)
    _finish(w, progress)


def _finish(writer, progress: bool = False) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=progress)
    writer.close()


# ----------------------------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Vocab:
    model: str  # "gpt2" (byte-level BPE) or "llama" (sentencepiece-style BPE with byte fallback)
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str | None
    scores: list[float] | None = None
    add_space_prefix: bool = False


def _backend_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise GGUFExportError(
            f"the tokenizer ({type(tokenizer).__name__}) has no `tokenizers` backend; llama.cpp export needs a fast "
            "BPE tokenizer (tokenizer.json)"
        )
    return json.loads(backend.to_str())


def _pre_type(spec: dict) -> str:
    pre = spec.get("pre_tokenizer") or {}
    levels = [pre] if pre.get("type") == "ByteLevel" else [p for p in pre.get("pretokenizers", []) or []
                                                            if p.get("type") == "ByteLevel"]
    norm = spec.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm] if norm else []
    if any(step.get("type") != "NFC" for step in steps):
        # llama.cpp's byte-level BPE applies no normaliser (Qwen2's NFC leaves normalised text as it is)
        raise GGUFExportError(f"the tokenizer normalises text ({', '.join(str(st.get('type')) for st in steps)}), "
                              "which llama.cpp's byte-level BPE does not; it would tokenise prompts differently")
    if any(level.get("add_prefix_space") for level in levels):
        # llama.cpp's byte-level BPE never puts a space before the text: every prompt would start with other ids
        raise GGUFExportError("the tokenizer's ByteLevel pre-tokeniser adds a prefix space (add_prefix_space), which "
                              "llama.cpp's byte-level BPE does not; it would tokenise every prompt differently")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # GPT-2's own regex inside ByteLevel (pocket-tiny)
    if pre.get("type") == "Sequence":
        items = pre.get("pretokenizers", [])
        splits = [p for p in items if p.get("type") == "Split"]
        levels = [p for p in items if p.get("type") == "ByteLevel"]
        if len(splits) == 1 and len(levels) == 1 and not levels[0].get("use_regex", True):
            regex = splits[0].get("pattern", {}).get("Regex")
            if regex in _PRE_BY_REGEX:
                return _PRE_BY_REGEX[regex]
    raise GGUFExportError(
        "the tokenizer's pre-tokenisation is not one llama.cpp reproduces here; supported: byte-level BPE with "
        "GPT-2 (pocket-tiny), Qwen2 or Llama-3 splitting, and sentencepiece-style BPE (LLaMA / MobileLLaMA)"
    )


def _space_prefix(spec: dict) -> bool:
    """Whether a sentencepiece-style tokenizer puts "▁" before the text (LLaMA's, hence llama.cpp's, default)."""
    norm, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    steps = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm] if norm else []
    kinds = [step.get("type") for step in steps]
    if pre and pre.get("type") == "Metaspace" and not steps:
        return pre.get("prepend_scheme", "always") in ("first", "always")
    if not pre and kinds in (["Prepend", "Replace"], ["Replace"]):
        replace = steps[-1]
        if replace.get("pattern", {}).get("String") == " " and replace.get("content") == "\u2581":
            return kinds[0] == "Prepend" and steps[0].get("prepend") == "\u2581"
    raise GGUFExportError(
        "a sentencepiece-style tokenizer whose normaliser is not LLaMA's (prepend ▁, spaces to ▁) is not exported"
    )


def _vocab(tokenizer, n_vocab: int) -> _Vocab:
    import gguf

    spec = _backend_json(tokenizer)
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise GGUFExportError(
            "llama.cpp export supports BPE tokenizers (byte-level: Qwen2, GPT-2 style, pocket-tiny; sentencepiece-style "
            f"with byte fallback: LLaMA, MobileLLaMA); this one is {model.get('type')}"
        )
    spm = bool(model.get("byte_fallback"))
    pre = None if spm else _pre_type(spec)
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    beyond = sorted(i for i in by_id if i >= n_vocab)
    needed = {i for i in (tokenizer.eos_token_id, tokenizer.bos_token_id) if i is not None}
    if needed & set(beyond):
        raise GGUFExportError(f"tokens {sorted(needed & set(beyond))} lie beyond the LLM's {n_vocab} embeddings")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    scores = None
    if spm:
        # llama.cpp's sentencepiece tokenizer merges the adjacent pair whose result scores highest; scoring each
        # piece by minus the rank of the first merge that makes it replays the BPE merge order
        rank: dict[str, int] = {}
        for r, merge in enumerate(merges):
            rank.setdefault(merge.replace(" ", "", 1), r)  # "a b" makes "ab"
        # a tokenizer read from tokenizer.model alone leaves the backend model's unk_token unset: its id says it
        unk = tokenizer.unk_token_id
        for i, (token, kind) in list(by_id.items()):
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                by_id[i] = (token, gguf.TokenType.BYTE)
            elif i == unk:
                by_id[i] = (token, gguf.TokenType.UNKNOWN)
    tokens, types, score_list = [], [], []
    for i in range(n_vocab):  # ids the tokenizer lacks pad the table (never produced); ids beyond it are dropped
        token, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))
        if spm:
            score_list.append(-float(rank[token]) if kind == gguf.TokenType.NORMAL and token in rank else 0.0)
    if spm:
        scores = score_list
        return _Vocab("llama", tokens, types, [], None, scores, _space_prefix(spec))
    return _Vocab("gpt2", tokens, types, merges, pre)


def _write_vocab(writer, processor, n_vocab: int) -> None:
    from deploy.llamacpp import MARKER
    from model.chat import chat_template_jinja

    tok = processor.tokenizer
    vocab = _vocab(tok, n_vocab)
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(vocab.add_space_prefix)
        unk = tok.unk_token_id
        if unk is not None and unk < n_vocab:
            writer.add_unk_token_id(int(unk))
    else:
        writer.add_token_merges(vocab.merges)
    stops = [i for i in processor.stop_token_ids if i < n_vocab]
    eos = tok.eos_token_id if tok.eos_token_id is not None else (stops[0] if stops else None)
    if eos is not None:
        writer.add_eos_token_id(int(eos))
    if tok.bos_token_id is not None:
        writer.add_bos_token_id(int(tok.bos_token_id))
    if tok.pad_token_id is not None and tok.pad_token_id < n_vocab:
        writer.add_pad_token_id(int(tok.pad_token_id))
    # the template's stop tokens end generation in llama.cpp too: it stops on EOS, EOT and EOM (and on a fixed list
    # of token texts), and reads no list of stop ids, so two besides EOS fit its keys
    extra = [stop for stop in stops if stop != eos]
    for add, stop in zip((writer.add_eot_token_id, writer.add_eom_token_id), extra):
        add(int(stop))
    if len(extra) > 2:
        names = ", ".join(repr(tok.convert_ids_to_tokens(i)) for i in extra[2:])
        warnings.warn(f"chat template {processor.chat_template.name!r} has {len(extra) + 1} stop tokens, and a GGUF "
                      f"holds three (EOS, EOT, EOM): llama.cpp's own tools may not stop on {names} (`adapt chat "
                      "--runtime llamacpp` does)", stacklevel=2)
    add_bos = bool(processor.chat_template.add_bos and tok.bos_token_id is not None)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(False)
    # llama.cpp's media marker is what its own CLI and server put in a user turn for an image: the template gives
    # bare leading markers training's <image> prefix and places them as training places <image> (image_first), and
    # renders <image> (what `--runtime llamacpp` sends) as the marker, so the stock tools prompt as training does
    writer.add_chat_template(chat_template_jinja(processor.chat_template, markers=(MARKER,)))
    # pocket-adapt's own key (llama.cpp ignores it): the template's fields, for `--runtime llamacpp`
    writer.add_string("pocket_adapt.chat_template", json.dumps(processor.chat_template.to_dict()))


# ----------------------------------------------------------------------------------------------------------------
# mmproj
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Projector:
    kind: str  # internvl | ldp | ldpv2
    layers_to_run: int  # encoder layers PyTorch runs before the projector
    post_norm: bool  # whether the tower's final norm is applied (InternVL feature layer -1 with a LayerNorm)


def _side(value) -> int:
    """One side of a square size (configs give an int or a pair); llama.cpp's encoders take square tiles."""
    if isinstance(value, int):
        return value
    height, width = (int(v) for v in value)
    if height != width:
        raise GGUFExportError(f"llama.cpp's vision encoders take square tiles; this tower's size is {height}x{width}")
    return height


def _tower_kind(vlm) -> str:
    return getattr(vlm.config.vision_config, "model_type", None)


def _projector_facts(vlm) -> _Projector:
    cfg = vlm.config
    vc = cfg.vision_config
    ptype = cfg.projector_type
    if ptype not in PROJECTORS:
        raise GGUFExportError(
            f"projector {ptype!r} has no llama.cpp counterpart exported here; supported: InternVL pixel shuffle MLP "
            "(pixel_shuffle_mlp), MobileVLM LDP (ldp) and LDPv2 (ldpv2)"
        )
    kind = PROJECTORS[ptype]
    tower = _tower_kind(vlm)
    n_layers = int(vc.num_hidden_layers)
    layer = int(cfg.vision_feature_layer)
    run = n_layers + 1 + layer if layer < 0 else layer
    if not 1 <= run <= n_layers:
        raise GGUFExportError(f"vision_feature_layer {layer} is outside the tower's {n_layers} layers")
    opts = cfg.projector_options or {}
    if kind == "internvl":
        if tower != "internvl_vision":
            raise GGUFExportError(f"the InternVL projector is exported with an InternViT tower, not {tower!r}")
        if getattr(vc, "use_qk_norm", False) or getattr(vc, "norm_type", "layer_norm") != "layer_norm":
            raise GGUFExportError("InternViT-6B (RMS norm, q/k norm) is not exported; InternViT-300M-style towers are")
        if _side(vc.image_size) != processor_tile(vlm):
            raise GGUFExportError("the tiling's tile_size differs from the tower's image_size")
        if opts.get("ps_version", "v2") != "v2":
            raise GGUFExportError("pixel shuffle ps_version v1 is not what llama.cpp computes; only v2 is exported")
        if opts.get("pool", 1) != 1:
            raise GGUFExportError(f"pooled pixel shuffle (pool {opts['pool']}) is not what llama.cpp computes")
        if abs(float(opts.get("layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
            raise GGUFExportError("llama.cpp's InternVL projector LayerNorm uses eps 1e-5")
        if opts.get("hidden_act", "gelu") != "gelu" or vc.hidden_act != "gelu":
            raise GGUFExportError("llama.cpp's InternVL graph uses GELU in the tower and the projector")
        post = layer == -1 and not isinstance(vlm.vision_tower.layernorm, torch.nn.Identity)
        return _Projector(kind, run, post)
    if tower != "clip_vision_model":
        raise GGUFExportError(f"MobileVLM projectors are exported with a CLIP tower, not {tower!r}")
    grid = _side(vc.image_size) // _side(vc.patch_size)
    if grid != LDP_GRID or _side(vc.image_size) % _side(vc.patch_size):
        raise GGUFExportError(
            f"llama.cpp's LDP graphs hard-code a {LDP_GRID}x{LDP_GRID} patch grid (336 px tiles, 14 px patches); "
            f"this tower gives {grid}x{grid}"
        )
    if kind == "ldpv2" and opts.get("pooled_grid") not in (None, 12, (12, 12), [12, 12]):
        raise GGUFExportError("llama.cpp's LDPv2 pools 2x2 (24 -> 12); pooled_grid must be unset or 12")
    if vc.hidden_act not in ("quick_gelu", "gelu"):
        raise GGUFExportError(f"CLIP hidden_act {vc.hidden_act!r} is not exported (quick_gelu or gelu)")
    if abs(float(vc.layer_norm_eps) - 1e-5) > 1e-12:
        raise GGUFExportError("llama.cpp's LDP LayerNorms use the tower's eps; it must be 1e-5 as in PyTorch's LDP")
    if run == n_layers:  # -1 and +L alike: the graph would need one more block than the tower has
        raise GGUFExportError(f"LDP export needs a feature layer before the last (MobileVLM uses -2); "
                              f"vision_feature_layer {layer} is the last of the tower's {n_layers} layers")
    return _Projector(kind, run, False)


def processor_tile(vlm) -> int:
    return int(vlm.config.tiling_config.tile_size)


VISION_KEY = "pocket_adapt.vision_sha256"


def vision_fingerprint(vlm) -> str:
    """sha256 of the vision tower's and projector's weights (float32, by name): written into both files of an
    export, so `--runtime llamacpp` refuses an mmproj of another model beside a text model (an f16 and an f32
    mmproj of one model share it)."""
    digest = hashlib.sha256()
    for prefix, module in (("vision", vlm.vision_tower), ("projector", vlm.multi_modal_projector)):
        for key, value in sorted(module.state_dict().items()):
            digest.update(f"{prefix}.{key}".encode())
            digest.update(value.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _vision_state(vlm) -> dict[str, torch.Tensor]:
    sd = vlm.vision_tower.state_dict()
    return {k.removeprefix("vision_model."): v for k, v in sd.items()}


def write_mmproj(vlm, processor, path: Path, kind: str, name: str, vision: str | None = None,
                 progress: bool = False) -> None:
    """The mmproj GGUF; `vision`: the export's `vision_fingerprint` (computed when not given)."""
    import gguf

    facts = _projector_facts(vlm)
    vc = vlm.config.vision_config
    tiling = processor.tiling
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name(f"{name} vision")
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_file_type(_file_type(kind))
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type(facts.kind)
    # the LDP graphs run block_count - 1 layers; InternVL's build_vit runs all of them
    blocks = facts.layers_to_run + 1 if facts.kind != "internvl" else facts.layers_to_run
    w.add_vision_image_size(_side(vc.image_size))
    w.add_vision_patch_size(_side(vc.patch_size))
    w.add_vision_embedding_length(int(vc.hidden_size))
    w.add_vision_feed_forward_length(int(vc.intermediate_size))
    w.add_vision_block_count(blocks)
    w.add_vision_projection_dim(int(vlm.config.text_config.hidden_size))
    w.add_vision_head_count(int(vc.num_attention_heads))
    w.add_vision_attention_layernorm_eps(float(vc.layer_norm_eps))
    w.add_vision_image_mean([float(m) for m in tiling.mean])
    w.add_vision_image_std([float(s) for s in tiling.std])
    if vc.hidden_act == "gelu":
        w.add_vision_use_gelu(True)
    # pocket-adapt's own keys (llama.cpp ignores them): how training cut images, for `--runtime llamacpp`
    w.add_string("pocket_adapt.tiling", json.dumps(tiling.to_dict()))
    w.add_string(VISION_KEY, vision or vision_fingerprint(vlm))
    sd = _vision_state(vlm)
    if facts.kind == "internvl":
        warn_if_thumbnail_added(tiling, "llama.cpp's own InternVL preprocessing (llama-mtmd-cli; the mmproj records "
                                        "the tile counts only)")
        ratio = (vlm.config.projector_options or {}).get("downsample_ratio", 0.5)
        w.add_vision_projector_scale_factor(int(round(1 / ratio)))
        w.add_vision_preproc_min_tiles(int(tiling.min_tiles))
        w.add_vision_preproc_max_tiles(int(tiling.max_tiles))
        tensors = _internvit_tensors(sd, facts, vlm)
    else:
        w.add_bool("clip.has_llava_projector", True)
        tensors = _clip_tensors(sd, facts, vc)
    tensors = [*tensors, *_projector_tensors(vlm, facts)]
    for tname, tensor in tensors:
        _add(w, tname, tensor, kind)
    _finish(w, progress)


def _patches_first(pos: torch.Tensor) -> torch.Tensor:
    """[CLS, p0, p1, ...] position rows -> [p0, p1, ..., CLS], the order llama.cpp concatenates tokens in."""
    pos = pos.reshape(-1, pos.shape[-1])
    return torch.cat([pos[1:], pos[:1]])


def _internvit_tensors(sd, facts: _Projector, vlm) -> Iterator[tuple[str, torch.Tensor]]:
    yield "v.patch_embd.weight", sd["embeddings.patch_embeddings.projection.weight"]
    yield "v.patch_embd.bias", sd["embeddings.patch_embeddings.projection.bias"]
    yield "v.class_embd", sd["embeddings.cls_token"].reshape(-1)
    yield "v.position_embd.weight", _patches_first(sd["embeddings.position_embeddings"])
    for i in range(facts.layers_to_run):
        p = f"encoder.layer.{i}."
        for src, dst in (("attention.q_proj", "attn_q"), ("attention.k_proj", "attn_k"), ("attention.v_proj", "attn_v"),
                         ("attention.projection_layer", "attn_out"), ("layernorm_before", "ln1"),
                         ("layernorm_after", "ln2"), ("mlp.fc1", "ffn_up"), ("mlp.fc2", "ffn_down")):
            for part in ("weight", "bias"):
                if p + f"{src}.{part}" in sd:
                    yield f"v.blk.{i}.{dst}.{part}", sd[p + f"{src}.{part}"]
        yield f"v.blk.{i}.ls1.weight", sd[p + "lambda_1"]
        yield f"v.blk.{i}.ls2.weight", sd[p + "lambda_2"]
    if facts.post_norm:
        yield "v.post_ln.weight", sd["layernorm.weight"]
        yield "v.post_ln.bias", sd["layernorm.bias"]


def _clip_tensors(sd, facts: _Projector, vc) -> Iterator[tuple[str, torch.Tensor]]:
    yield "v.patch_embd.weight", sd["embeddings.patch_embedding.weight"]
    yield "v.class_embd", sd["embeddings.class_embedding"].reshape(-1)
    yield "v.position_embd.weight", _patches_first(sd["embeddings.position_embedding.weight"])
    yield "v.pre_ln.weight", sd["pre_layrnorm.weight"]
    yield "v.pre_ln.bias", sd["pre_layrnorm.bias"]
    # llama.cpp swaps ffn_up/ffn_down of LDP towers whose ffn_down has n_embd inputs (the legacy converter wrote
    # them swapped); with n_ff == n_embd that test cannot tell, so the legacy (swapped) names are written then.
    legacy = int(vc.intermediate_size) == int(vc.hidden_size)
    up, down = ("ffn_down", "ffn_up") if legacy else ("ffn_up", "ffn_down")
    # the graph reads the output of layer (block_count - 1); one more layer is loaded but never run
    for i in range(min(facts.layers_to_run + 1, int(vc.num_hidden_layers))):
        p = f"encoder.layers.{i}."
        for src, dst in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                         ("self_attn.out_proj", "attn_out"), ("layer_norm1", "ln1"), ("layer_norm2", "ln2"),
                         ("mlp.fc1", up), ("mlp.fc2", down)):
            for part in ("weight", "bias"):
                yield f"v.blk.{i}.{dst}.{part}", sd[p + f"{src}.{part}"]


def _projector_tensors(vlm, facts: _Projector) -> Iterator[tuple[str, torch.Tensor]]:
    sd = vlm.multi_modal_projector.state_dict()
    if facts.kind == "internvl":
        for src, idx in (("layer_norm", 0), ("linear_1", 1), ("linear_2", 3)):  # InternVL's mlp1.{0,1,3}
            for part in ("weight", "bias"):
                yield f"mm.model.mlp.{idx}.{part}", sd[f"{src}.{part}"]
        return
    if facts.kind == "ldpv2":
        for src, dst in (("mlp.mlp.0", "mm.model.mlp.0"), ("mlp.mlp.2", "mm.model.mlp.2"), ("peg.peg.0", "mm.model.peg.0")):
            for part in ("weight", "bias"):
                yield f"{dst}.{part}", sd[f"{src}.{part}"]
        return
    for key, tensor in sd.items():  # ldp: model.mlp.{1,3}, model.mb_block.{1,2}.block.{0.0,0.1,1.fc1,1.fc2,2.0,2.1}
        if ".fc1.weight" in key or ".fc2.weight" in key or key.endswith("block.2.0.weight"):
            tensor = tensor.reshape(tensor.shape[0], -1)  # 1x1 convolutions are matrix products in llama.cpp
        yield f"mm.{key}", tensor


__all__ = [
    "TYPES", "GGUFExportError", "GGUFFiles", "check_supported", "file_names", "write_gguf", "write_text_model",
    "write_mmproj",
]  # fmt: skip
