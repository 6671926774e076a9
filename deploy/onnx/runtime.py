"""Run an ONNX export (`adapt export --format onnx`) in onnxruntime: `adapt chat --runtime onnx` and friends.

The export folder is opened as a whole (`OnnxExport.open`): the tokenizer, chat template and tiling written beside
the graphs make the same `VLMProcessor` training used, so prompts and tiles are training's; `OnnxVLM` runs the three
graphs (vision, embed, decoder with its KV cache passed in and out) in `deploy.export_runtime`'s generation loop.
Loading refuses an export whose files no longer agree: tiling edited in preprocessor_config.json after export, or a
tokenizer other than the one the graphs were exported with.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.export_runtime import ExportedVLM
from deploy.export_sidecar import (
    SidecarExport,
    check_preprocessor_config,
    check_tiling,
    export_folder,
    read_json,
    read_processor,
    recorded_object,
)
from model.errors import MissingExtraError, PocketAdaptError, install_hint

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


def import_extra(name: str):
    """Module `name` (onnx, onnxruntime), or a `MissingExtraError` in one line naming it and the extra that brings
    it, where it is missing or cannot be imported (a broken install raises a plain ImportError)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingExtraError(f"the ONNX export needs the {name} package, which cannot be imported ({err}); "
                                f"install it: {install_hint(name)}") from None


def _metadata(path: Path) -> dict[str, str]:
    onnx = import_extra("onnx")

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends: a damaged file, said as one
        raise OnnxRuntimeError(f"{path}: not a readable ONNX model, truncated or damaged? ({type(err).__name__}: "
                               f"{err}); export it again") from None
    return {p.key: p.value for p in model.metadata_props}


def _recorded(path: Path, key: str) -> dict:
    """The JSON object the export wrote under metadata `key` of the graph at `path`, or an `OnnxRuntimeError` naming
    the graph and the key where there is none or it is not one (`recorded_object`)."""
    value = _metadata(path).get(key)
    if value is None:
        raise OnnxRuntimeError(f"{path}: not written by `adapt export --format onnx` (no {key})")
    return recorded_object(value, path, f"{key} metadata", OnnxRuntimeError)


@dataclass(frozen=True)
class OnnxExport(SidecarExport):
    """An export folder, checked: its processor (tokenizer + tiling + template) and its genai_config."""

    genai: dict

    @classmethod
    def open(cls, folder: str | os.PathLike) -> OnnxExport:
        needed = (VISION, EMBED, DECODER, GENAI_CONFIG, PREPROCESSOR, CHAT_TEMPLATE)
        folder = export_folder(folder, "onnx", "ONNX", needed, OnnxRuntimeError)
        exported = _recorded(folder / VISION, TILING_KEY)
        fingerprints = [(_recorded(folder / graph, TOKENIZER_KEY), graph) for graph in (EMBED, DECODER)]
        processor, pre = read_processor(folder, OnnxRuntimeError, fingerprints)
        check_tiling(exported, processor.tiling, folder / PREPROCESSOR, VISION, OnnxRuntimeError)
        check_preprocessor_config(processor, pre, folder, OnnxRuntimeError)
        return cls(folder, processor, read_json(folder / GENAI_CONFIG, OnnxRuntimeError))


def session(path: Path, threads: int | None = None):
    ort = import_extra("onnxruntime")
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


def cache_shape(decoder, path: Path) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of the KV cache `decoder` (an onnxruntime session) takes, read off its inputs."""
    past = {i.name: i.shape for i in decoder.get_inputs() if i.name.startswith("past_key_values.")}
    layers = sum(1 for name in past if name.endswith(".key"))
    names, _ = decoder_names(layers)
    first = past.get(names[3]) if layers else None
    if not layers or set(names[3:]) != set(past) or len(first) != 4 or not all(
            isinstance(d, int) for d in (first[1], first[3])):
        raise OnnxRuntimeError(f"{path}: its inputs are not the KV cache `adapt export --format onnx` writes "
                               f"(past_key_values.N.key / .value, (batch, kv_heads, past, head_dim)); export it again")
    return layers, int(first[1]), int(first[3])


def context_length(genai: dict, path: Path) -> int | None:
    """genai_config.json's model.context_length (the positions the decoder may hold; None where it says none), or an
    `OnnxRuntimeError` naming the file and the key where it is not a positive whole number."""
    model = genai.get("model")
    value = model.get("context_length") if isinstance(model, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OnnxRuntimeError(f"{path}: 'model.context_length' must be a positive whole number (the positions the "
                               f"model holds), got {value!r}; restore the exported file or re-export")
    return value


class OnnxVLM(ExportedVLM):
    """An export loaded in onnxruntime: three sessions behind the shared generation loop."""

    error = OnnxRuntimeError

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        self.export = OnnxExport.open(folder)
        self.processor = self.export.processor
        folder = self.export.folder
        self.vision = self.embedding = self.decoder = None
        try:
            self.vision, self.embedding, self.decoder = (session(folder / n, threads)
                                                         for n in (VISION, EMBED, DECODER))
            self._check(folder)
        except BaseException as err:  # the sessions (weights in memory) go now, not with the error's traceback
            self.close()
            if isinstance(err, OnnxRuntimeError):  # a refusal: its frames' locals (a session among them) go too
                traceback.clear_frames(err.__traceback__)
            raise

    def _check(self, folder: Path) -> None:
        """The cache's shape, tokens per tile and context read off the loaded graphs, or an `OnnxRuntimeError`."""
        # the cache's shape from the graph itself: genai_config.json is for onnxruntime-genai, and an edit there
        # (a user's, for that tool) must not make the feeds disagree with the graph
        self.n_layers, self.kv_heads, self.head_dim = cache_shape(self.decoder, folder / DECODER)
        self.input_names, self.output_names = decoder_names(self.n_layers)
        per_tile = self.vision.get_outputs()[0].shape[1]  # a fixed size in the graph: the tower's tokens per tile
        if isinstance(per_tile, int) and per_tile != self.processor.image_seq_length:
            raise OnnxRuntimeError(f"{folder / PREPROCESSOR}: 'image_seq_length' {self.processor.image_seq_length}, "
                                   f"but {VISION} makes {per_tile} image features per tile; restore the exported "
                                   "file or re-export")
        self.image_token_id = self.processor.image_token_id
        self.max_positions = context_length(self.export.genai, folder / GENAI_CONFIG)
        self._past: list[np.ndarray] = []

    def encode_images(self, pixel_values) -> np.ndarray:
        """(tiles, tokens_per_tile, hidden) image features of normalised tiles."""
        return self.vision.run(None, {"pixel_values": np.ascontiguousarray(pixel_values, dtype=np.float32)})[0]

    def embed(self, ids) -> np.ndarray:
        return self.embedding.run(None, {"input_ids": np.asarray(ids, dtype=np.int64).reshape(1, -1)})[0]

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        logits, self._past = self.step(embeds, self.empty_cache(), 0)
        return logits

    def decode(self, embeds: np.ndarray, position: int) -> np.ndarray:
        logits, self._past = self.step(embeds, self._past, position)
        return logits

    def step(self, embeds: np.ndarray, past: list[np.ndarray], start: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decoder call: last-position logits (vocab,) and the new cache."""
        n = embeds.shape[1]
        feeds = {"inputs_embeds": np.ascontiguousarray(embeds, dtype=np.float32),
                 "attention_mask": np.ones((1, start + n), dtype=np.int64),
                 "position_ids": np.arange(start, start + n, dtype=np.int64)[None]}
        feeds.update(zip(self.input_names[3:], past))
        out = self.decoder.run(None, feeds)
        return out[0][0, -1], out[1:]

    def empty_cache(self) -> list[np.ndarray]:
        return [np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32) for _ in range(2 * self.n_layers)]

    def close(self) -> None:
        super().close()
        self._past = []

    def too_long(self, positions: int) -> str:
        return (f"the prompt takes {positions} positions, more than the model's context of {self.max_positions}; ask "
                "with fewer tiles (--max-tiles) or a shorter question")
