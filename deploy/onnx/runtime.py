"""Run an ONNX export (`adapt export --format onnx`) in onnxruntime: `adapt chat --runtime onnx` and friends.

The export folder is opened as a whole (`OnnxExport.open`): the tokenizer, chat template and tiling written beside
the graphs make the same `VLMProcessor` training used, so prompts and tiles are training's; `OnnxVLM.generate` is the
small generation loop (vision -> embed -> image features written over the image-context rows -> decoder with its KV
cache, one token at a time, greedy or sampled). Loading refuses an export whose files no longer agree: tiling edited
in preprocessor_config.json after export, or a tokenizer other than the one the graphs were exported with.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.export_sidecar import (
    SidecarExport,
    check_preprocessor_config,
    check_tiling,
    check_tokenizer,
    read_json,
    read_processor,
)
from deploy.runtimes import Answer, pick_token
from model.checkpoints.checksums import verify_weights
from model.errors import PocketAdaptError

from .export import (
    CHAT_TEMPLATE,
    DECODER,
    EMBED,
    GENAI_CONFIG,
    PREPROCESSOR,
    TILING_KEY,
    TOKENIZER_KEY,
    VISION,
)
from .graphs import decoder_names


class OnnxRuntimeError(PocketAdaptError, RuntimeError):
    """An ONNX export folder is incomplete, inconsistent, or cannot answer a request."""


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends: a damaged file, said as one
        raise OnnxRuntimeError(f"{path}: not a readable ONNX model, truncated or damaged? ({type(err).__name__}: "
                               f"{err}); export it again") from None
    return {p.key: p.value for p in model.metadata_props}


@dataclass(frozen=True)
class OnnxExport(SidecarExport):
    """An export folder, checked: its processor (tokenizer + tiling + template) and its genai_config."""

    genai: dict

    @classmethod
    def open(cls, folder: str | os.PathLike) -> OnnxExport:
        folder = Path(folder)
        if not folder.is_dir():
            raise OnnxRuntimeError(f"{folder}: not a folder; give the folder `adapt export --format onnx` wrote")
        missing = [n for n in (VISION, EMBED, DECODER, GENAI_CONFIG, PREPROCESSOR, CHAT_TEMPLATE)
                   if not (folder / n).is_file()]
        if missing:
            raise OnnxRuntimeError(f"{folder}: not an ONNX export, missing {', '.join(missing)}")
        verify_weights(folder, OnnxRuntimeError)
        exported = _metadata(folder / VISION).get(TILING_KEY)
        if exported is None:
            raise OnnxRuntimeError(f"{folder / VISION}: not written by `adapt export --format onnx` (no {TILING_KEY})")
        processor, pre = read_processor(folder, OnnxRuntimeError)
        check_tiling(json.loads(exported), processor.tiling, folder / PREPROCESSOR, VISION, OnnxRuntimeError)
        for graph in (EMBED, DECODER):
            recorded = _metadata(folder / graph).get(TOKENIZER_KEY)
            if recorded is None:
                raise OnnxRuntimeError(f"{folder / graph}: not written by `adapt export --format onnx` "
                                       f"(no {TOKENIZER_KEY})")
            check_tokenizer(json.loads(recorded), processor.tokenizer, folder, graph, OnnxRuntimeError)
        check_preprocessor_config(processor, pre, folder, OnnxRuntimeError)
        return cls(folder, processor, read_json(folder / GENAI_CONFIG, OnnxRuntimeError))


def session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnnxRuntimeError(f"{path}: onnxruntime cannot load it, its weights ({path.name}.data) truncated or "
                               f"damaged? ({first}); export it again") from None


class OnnxVLM:
    """An export loaded in onnxruntime: three sessions and the generation loop."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        self.export = OnnxExport.open(folder)
        self.processor = self.export.processor
        folder = self.export.folder
        self.vision, self.embedding, self.decoder = (session(folder / n, threads) for n in (VISION, EMBED, DECODER))
        dec = self.export.genai["model"]["decoder"]
        self.n_layers, self.kv_heads, self.head_dim = dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]
        self.input_names, self.output_names = decoder_names(self.n_layers)
        self.image_token_id = self.processor.image_token_id

    def close(self) -> None:
        self.vision = self.embedding = self.decoder = None

    def __enter__(self) -> OnnxVLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        """(tiles, tokens_per_tile, hidden) image features of normalised tiles."""
        return self.vision.run(None, {"pixel_values": np.ascontiguousarray(pixel_values, dtype=np.float32)})[0]

    def embed(self, ids) -> np.ndarray:
        return self.embedding.run(None, {"input_ids": np.asarray(ids, dtype=np.int64).reshape(1, -1)})[0]

    def prompt_embeddings(self, ids: list[int], pixel_values: np.ndarray | None) -> np.ndarray:
        """The prompt's embeddings with image features written over the image-context rows (`PocketVLM.embed`)."""
        embeds = self.embed(ids)
        where = np.flatnonzero(np.asarray(ids) == self.image_token_id)
        n_tiles = 0 if pixel_values is None else len(pixel_values)
        if not len(where) and not n_tiles:
            return embeds
        features = self.encode_images(pixel_values).reshape(-1, embeds.shape[-1]) if n_tiles else embeds[0, :0]
        if len(where) != len(features):
            raise OnnxRuntimeError(f"image tokens and image features disagree: {len(where)} tokens, "
                                   f"{len(features)} features from {n_tiles} tiles")
        embeds[0, where] = features
        return embeds

    def step(self, embeds: np.ndarray, past: list[np.ndarray], start: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decoder call: last-position logits (vocab,) and the new cache."""
        n = embeds.shape[1]
        feeds = {"inputs_embeds": embeds, "attention_mask": np.ones((1, start + n), dtype=np.int64),
                 "position_ids": np.arange(start, start + n, dtype=np.int64)[None]}
        feeds.update(zip(self.input_names[3:], past))
        out = self.decoder.run(None, feeds)
        return out[0][0, -1], out[1:]

    def empty_cache(self) -> list[np.ndarray]:
        return [np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32) for _ in range(2 * self.n_layers)]

    def generate(self, ids: list[int], pixel_values: np.ndarray | None = None, max_new_tokens: int = 64,
                 stop_ids=(), temperature: float = 0.0, seed: int = 0, on_logits=None) -> tuple[list[int], dict]:
        """New tokens for prompt `ids` (tiles `pixel_values`), stop token excluded, and timings (ms). Greedy at
        temperature 0; `on_logits(logits)` sees each step's logits (parity checks)."""
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        embeds = self.prompt_embeddings(ids, pixel_values)
        t1 = time.perf_counter()
        logits, past = self.step(embeds, self.empty_cache(), 0)
        t2 = time.perf_counter()
        tokens: list[int] = []
        stops = set(stop_ids)
        while True:
            if on_logits is not None:
                on_logits(logits)
            token = pick_token(logits, temperature, rng)
            if token in stops:
                break
            tokens.append(token)
            if len(tokens) >= max_new_tokens:
                break
            logits, past = self.step(self.embed([token]), past, len(ids) + len(tokens) - 1)
        t3 = time.perf_counter()
        timings = {"prompt_tokens": len(ids), "image_encode_ms": (t1 - t0) * 1e3, "prompt_ms": (t2 - t1) * 1e3,
                   "decode_tokens": len(tokens), "decode_ms": (t3 - t2) * 1e3}
        return tokens, timings

    def chat(self, conversation: list[dict], images=(), max_new_tokens: int = 64, temperature: float = 0.0,
             system: str | None = None, tiling=None, seed: int = 0, cut_repeats: bool = True):
        """Answer the last user turn (as `adapt chat` does: training's prompt and tiles, stop tokens, repeats cut)."""
        from model.generation import cut_at_repetition

        encoded = self.processor(conversation, images=list(images), tiling=tiling, system_message=system)
        pixels = None if encoded.pixel_values is None else encoded.pixel_values.numpy()
        ids = encoded.input_ids.tolist()
        context = int(self.export.genai["model"].get("context_length", 0) or 0)
        if context and len(ids) >= context:
            raise OnnxRuntimeError(f"the prompt takes {len(ids)} positions, more than the model's context of "
                                   f"{context}; ask with fewer tiles (--max-tiles) or a shorter question")
        if context:
            max_new_tokens = min(max_new_tokens, context - len(ids))
        tokens, timings = self.generate(ids, pixels, max_new_tokens, self.processor.stop_token_ids, temperature, seed)
        cut = cut_at_repetition(tokens) if cut_repeats else None
        if cut is not None:
            tokens = tokens[:cut]
        token = self.processor.image_context_token  # the prompt as `adapt chat --show-prompt` shows it
        prompt = re.sub(f"(?:{re.escape(token)})+", lambda m: f"{token}×{len(m.group(0)) // len(token)}",
                        self.processor.tokenizer.decode(ids, skip_special_tokens=False))
        return Answer(self.processor.decode(tokens), tokens, prompt, cut is not None, timings)
