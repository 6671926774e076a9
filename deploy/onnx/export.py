"""`adapt export --format onnx [--quantize int8]`: the folder an ONNX Runtime app loads.

    vision.onnx   (+ .data)   pixel_values (tiles, 3, S, S) -> image_features (tiles, tokens_per_tile, hidden)
    embed.onnx    (+ .data)   input_ids -> inputs_embeds
    decoder.onnx  (+ .data)   inputs_embeds, attention_mask, position_ids, past KV -> last logits, present KV
    tokenizer.json, tokenizer_config.json, ...   the model's tokenizer
    chat_template.json        the training chat template (fields and an equivalent Jinja template)
    preprocessor_config.json  tiling (tile size, min/max tiles, thumbnail, mode, mean/std) and image tokens
    genai_config.json         onnxruntime-genai's description of the three graphs and the search defaults

`--quantize int8`: onnxruntime's dynamic quantisation (int8 weights, activations quantised per batch at run time)
of every MatMul in vision.onnx and decoder.onnx; the embedding table stays float32.

What the runtime checks at load (deploy/onnx/runtime.py) is written into the graphs' own metadata: vision.onnx
holds the tiling it was exported for, embed.onnx and decoder.onnx a fingerprint of the tokenizer and the image
tokens' ids (`export_fingerprint`), so an edited preprocessor_config.json or a swapped tokenizer is refused instead
of silently answering differently.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from model.errors import PocketAdaptError
from model.progress import Progress, progress_bar
from model.vision import check_tile_size

from .graphs import (
    PAST_KEY,
    PAST_VALUE,
    PRESENT_KEY,
    PRESENT_VALUE,
    copy_as,
    export_decoder,
    export_embed,
    export_vision,
    kv_shape,
)

VISION, EMBED, DECODER = "vision.onnx", "embed.onnx", "decoder.onnx"
GENAI_CONFIG, PREPROCESSOR, CHAT_TEMPLATE = "genai_config.json", "preprocessor_config.json", "chat_template.json"
QUANTIZE = ("int8",)
# a fixed text tokenised at export and again at load: a tokenizer that splits it differently is not the export's
PROBE = "What shapes are in the picture? A red circle, 12 squares; naïve café — 東京 ✓ <img></img>\n"
TILING_KEY, TOKENIZER_KEY = "pocket_adapt.tiling", "pocket_adapt.tokenizer"


class OnnxWriteError(PocketAdaptError, ValueError):
    """The model or an option cannot be written as an ONNX export."""


def tokenizer_fingerprint(tokenizer) -> dict:
    """What identifies a tokenizer for the export: vocabulary size, a hash of the token->id map, a hash of the
    whole pipeline (merges, normaliser, pre-tokeniser: tokenizers' JSON; fast tokenizers only) and the probe's ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pipeline = None
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None), spec.pop("padding", None)  # call settings, not the tokenizer
        pipeline = hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"size": len(tokenizer), "vocab_sha256": digest, "pipeline_sha256": pipeline,
            "probe_ids": tokenizer.encode(PROBE, add_special_tokens=False)}


def image_token_ids(processor) -> dict:
    """The ids `processor`'s tokenizer gives its image start, context and end tokens (None: no such token), by their
    preprocessor_config.json keys: recorded beside the tokenizer's fingerprint, since the graphs do not hold them."""
    tokens = {"image_start_token": processor.image_start_token, "image_context_token": processor.image_context_token,
              "image_end_token": processor.image_end_token}
    return {key: processor.tokenizer.convert_tokens_to_ids(token) if token else None for key, token in tokens.items()}


def export_fingerprint(processor) -> dict:
    """What an export records of its processor's tokens: the tokenizer's fingerprint and the image token ids."""
    return {**tokenizer_fingerprint(processor.tokenizer), "image_token_ids": image_token_ids(processor)}


def write_onnx(vlm, processor, out_dir: Path, quantize: str | None = None, progress: Progress = True) -> Path:
    """Write the ONNX export of `vlm` (LoRA already merged) into `out_dir` (an empty staging folder); `progress`:
    a bar over the graphs (vision, embedding, decoder; then int8 quantisation)."""
    if quantize not in (None, *QUANTIZE):
        raise OnnxWriteError(f"unknown ONNX quantisation {quantize!r}; known: {', '.join(QUANTIZE)}")
    if quantize == "int8":
        import onnxruntime  # noqa: F401 - missing, named before the graphs are exported, not after
    out_dir = Path(out_dir)
    tiling = processor.tiling
    check_tile_size(tiling.tile_size, vlm.config.vision_config, "cannot export to onnx", OnnxWriteError)
    vlm = onnx_model(vlm)
    fingerprint = json.dumps(export_fingerprint(processor), ensure_ascii=False)
    # stages of unequal cost (the decoder and int8 take most of the time): the stage and the time so far, no ETA
    with progress_bar(total=3 + (2 if quantize == "int8" else 0), desc="ONNX export", unit="graphs",
                      progress=progress, stages=True) as bar:
        for name, export, metadata in ((VISION, export_vision, {TILING_KEY: json.dumps(tiling.to_dict())}),
                                       (EMBED, export_embed, {TOKENIZER_KEY: fingerprint}),
                                       (DECODER, export_decoder, {TOKENIZER_KEY: fingerprint})):
            bar.set_postfix_str(name)
            export(vlm, out_dir / name, metadata=metadata)
            bar.update()
        if quantize == "int8":
            for name in (VISION, DECODER):
                bar.set_postfix_str(f"int8 {name}")
                quantize_int8(out_dir / name)
                bar.update()
    processor.save_pretrained(out_dir)
    (out_dir / CHAT_TEMPLATE).write_text(json.dumps(_template(processor), indent=1, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (out_dir / PREPROCESSOR).write_text(json.dumps(preprocessor_config(processor), indent=1) + "\n", encoding="utf-8")
    (out_dir / GENAI_CONFIG).write_text(json.dumps(genai_config(vlm, processor), indent=1) + "\n", encoding="utf-8")
    return out_dir


def onnx_model(vlm):
    """The model the graphs are exported from: `vlm` itself where it is float32 (its train/eval modes untouched:
    `export_graph` exports each graph in eval mode and restores them), else one float32 copy in eval mode on its own
    device (onnxruntime's CPU kernels are float32; int8 is --quantize), made without a second copy in the model's own
    dtype there first."""
    weight = next(vlm.parameters())
    if weight.dtype != torch.float32:
        return copy_as(vlm, weight.device, torch.float32).eval()
    return vlm


def quantize_int8(path: Path) -> None:
    """onnxruntime's dynamic int8 quantisation of every MatMul's weight, in place (metadata kept)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    tmp = path.with_name(f"int8-{path.name}")
    with _without_preprocessing_note():
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         use_external_data_format=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    for stale in (path, path.with_name(path.name + ".data"), tmp, tmp.with_name(tmp.name + ".data")):
        stale.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")


@contextlib.contextmanager
def _without_preprocessing_note() -> Iterator[None]:
    """Keep off stderr onnxruntime's "Please consider to run pre-processing before quantization" (once per graph,
    printed on the progress bar's line): a note on its root logger, so no logger level can quiet it, and nothing for
    the user to act on. The handler that logging.warning sets up on the root logger is taken away again."""
    root = logging.getLogger()
    handlers = list(root.handlers)

    def other(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root.addFilter(other)
    try:
        yield
    finally:
        root.removeFilter(other)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)


def _template(processor) -> dict:
    from model.chat import chat_template_jinja

    fields = processor.chat_template.to_dict()
    try:
        fields["jinja"] = chat_template_jinja(processor.chat_template)
    except PocketAdaptError:  # a template Jinja cannot express: the fields still render it (model.chat)
        pass
    return fields


def preprocessor_config(processor) -> dict:
    """The tiling and image tokens, as pocket-adapt reads them back (`tiling`) and with the usual HF-style names."""
    t = processor.tiling
    return {
        "tiling": t.to_dict(),
        "image_seq_length": processor.image_seq_length,
        "image_context_token": processor.image_context_token,
        "image_start_token": processor.image_start_token,
        "image_end_token": processor.image_end_token,
        "image_token_id": processor.image_token_id,
        **mirrored_tiling_keys(t),
    }


def mirrored_tiling_keys(t) -> dict:
    """`tiling`'s values under the names image processors use, for readers other than pocket-adapt (which loads
    `tiling`; `deploy.export_sidecar.read_processor` refuses a file where the two disagree): what the hf export
    writes for a dynamic tiling with a thumbnail (GotOcr2ImageProcessor) and the mobilevlm export for crop
    (CLIPImageProcessor), so transformers' AutoImageProcessor loads the file and cuts the same tiles; a tiling no
    transformers processor cuts (pad, resize, no thumbnail) gets the same names without `image_processor_type`."""
    from model.checkpoints.mobilevlm import clip_preprocessor_config
    from model.checkpoints.native import gotocr2_preprocessor_config

    if t.mode == "crop":
        return clip_preprocessor_config(t)
    keys = {**gotocr2_preprocessor_config(t), "crop_to_patches": t.mode == "dynamic", "use_thumbnail": t.thumbnail}
    if t.mode != "dynamic" or not t.thumbnail:
        del keys["image_processor_type"]
    return keys


def genai_config(vlm, processor) -> dict:
    """onnxruntime-genai's genai_config.json layout for a vision + embedding + decoder model (parsed by
    onnxruntime-genai 0.18.0, which has no key of its own for extra fields: the image token id is its only addition)."""
    cfg = vlm.config.text_config
    heads, head_dim = kv_shape(cfg)
    eos = processor.stop_token_ids
    return {
        "model": {
            "type": _model_type(cfg),
            "bos_token_id": _first_int(processor.tokenizer.bos_token_id, processor.pad_token_id, 0),
            "eos_token_id": eos if len(eos) != 1 else eos[0],
            "pad_token_id": processor.pad_token_id,
            "context_length": int(getattr(cfg, "max_position_embeddings", 4096)),
            "vocab_size": int(cfg.vocab_size),
            "image_token_id": processor.image_token_id,
            "decoder": {
                "filename": DECODER, "head_size": head_dim, "hidden_size": int(cfg.hidden_size),
                "num_attention_heads": int(cfg.num_attention_heads), "num_key_value_heads": heads,
                "num_hidden_layers": int(cfg.num_hidden_layers), "session_options": {"provider_options": []},
                "inputs": {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": PAST_KEY, "past_value_names": PAST_VALUE},
                "outputs": {"logits": "logits", "present_key_names": PRESENT_KEY,
                            "present_value_names": PRESENT_VALUE},
            },
            "embedding": {"filename": EMBED, "inputs": {"input_ids": "input_ids"},
                          "outputs": {"inputs_embeds": "inputs_embeds"}},
            "vision": {"filename": VISION, "inputs": {"pixel_values": "pixel_values"},
                       "outputs": {"image_features": "image_features"}},
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "top_k": 1, "top_p": 1.0,
                   "temperature": 1.0, "repetition_penalty": 1.0, "early_stopping": True,
                   "max_length": int(getattr(cfg, "max_position_embeddings", 4096)), "min_length": 0,
                   "past_present_share_buffer": False},
    }


def _first_int(*values) -> int:
    return next(int(v) for v in values if v is not None)  # onnxruntime-genai's parser wants a number


def _model_type(text_config) -> str:
    return str(getattr(text_config, "model_type", "decoder"))

