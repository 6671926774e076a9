"""Run an ExecuTorch export in ExecuTorch's Python runtime: `adapt chat --runtime executorch` and friends.

The folder's tokenizer, chat template and tiling make the same `VLMProcessor` training used, so prompts and tiles are
training's. `ExecuTorchVLM.generate` is the generation loop: tiles -> `vision_encoder` (in calls of at most the
exported tile count) -> `token_embedding` -> image features written over the image-context rows -> `text_decoder`,
prompt in chunks of at most the exported prefill length, then one token at a time; the KV cache stays inside the
loaded program. Loading refuses a folder whose tiling or tokenizer is not the one the program was exported with.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deploy.export_sidecar import (
    SidecarExport,
    check_preprocessor_config,
    check_tiling,
    check_tokenizer,
    read_processor,
)
from deploy.runtimes import Answer, pick_token
from model.checkpoints.checksums import verify_weights

from . import DECODER_METHOD, EMBED_METHOD, PTE, TILING_METHOD, TOKENIZER_METHOD, VISION_METHOD, ExecuTorchError


@dataclass(frozen=True)
class ExecuTorchExport(SidecarExport):
    """An export folder, checked against its program: the processor (tokenizer + tiling + template), the program."""

    program: object
    constants: dict

    @classmethod
    def open(cls, folder: str | os.PathLike) -> ExecuTorchExport:
        from deploy.onnx.export import CHAT_TEMPLATE, PREPROCESSOR

        from . import require_executorch

        folder = Path(folder)
        if not folder.is_dir():
            raise ExecuTorchError(f"{folder}: not a folder; give the folder `adapt export --format executorch` wrote")
        missing = [n for n in (PTE, PREPROCESSOR, CHAT_TEMPLATE) if not (folder / n).is_file()]
        if missing:
            raise ExecuTorchError(f"{folder}: not an ExecuTorch export, missing {', '.join(missing)}")
        verify_weights(folder, ExecuTorchError)
        require_executorch()
        from executorch.runtime import Runtime

        try:
            program = Runtime.get().load_program(folder / PTE)
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file: say which
            raise ExecuTorchError(f"{folder / PTE}: ExecuTorch cannot load it ({err})") from err
        names = set(program.method_names)
        needed = [VISION_METHOD, EMBED_METHOD, DECODER_METHOD, TILING_METHOD, TOKENIZER_METHOD, "get_max_seq_len",
                  "get_max_prefill_len", "get_max_tiles"]
        if not set(needed) <= names:
            raise ExecuTorchError(f"{folder / PTE}: not written by `adapt export --format executorch` (no "
                                  f"{', '.join(sorted(set(needed) - names))})")
        constants = {n: program.load_method(n).execute([])[0] for n in needed[3:]}
        processor, pre = read_processor(folder, ExecuTorchError)
        check_tiling(json.loads(constants[TILING_METHOD]), processor.tiling, folder / PREPROCESSOR, PTE, ExecuTorchError)
        check_tokenizer(json.loads(constants[TOKENIZER_METHOD]), processor.tokenizer, folder, PTE, ExecuTorchError)
        check_preprocessor_config(processor, pre, folder, ExecuTorchError)
        return cls(folder, processor, program, constants)


class ExecuTorchVLM:
    """An export loaded in ExecuTorch's runtime: its three methods and the generation loop."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        self.export = ExecuTorchExport.open(folder)
        if threads:  # XNNPACK's thread pool is process-wide; the default is one thread per core
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(int(threads))
        self.processor = self.export.processor
        program = self.export.program
        self.vision, self.embedding, self.decoder = (program.load_method(n)
                                                     for n in (VISION_METHOD, EMBED_METHOD, DECODER_METHOD))
        self.max_seq_len = int(self.export.constants["get_max_seq_len"])
        self.max_prefill_len = int(self.export.constants["get_max_prefill_len"])
        self.max_tiles = int(self.export.constants["get_max_tiles"])
        self.image_token_id = self.processor.image_token_id

    def close(self) -> None:
        self.vision = self.embedding = self.decoder = None

    def __enter__(self) -> ExecuTorchVLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(tiles, tokens_per_tile, hidden) image features of normalised tiles, at most `max_tiles` per call."""
        pixels = torch.as_tensor(pixel_values, dtype=torch.float32).contiguous()
        parts = [self.vision.execute([pixels[k : k + self.max_tiles].contiguous()])[0]
                 for k in range(0, len(pixels), self.max_tiles)]
        return torch.cat(parts)

    def embed(self, ids) -> torch.Tensor:
        return self.embedding.execute([torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)])[0]

    def prompt_embeddings(self, ids: list[int], pixel_values: torch.Tensor | None) -> torch.Tensor:
        """The prompt's embeddings with image features written over the image-context rows (`PocketVLM.embed`)."""
        self._check_fits(len(ids))
        embeds = self.embed(ids).clone()
        where = torch.as_tensor(ids) == self.image_token_id
        n_tiles = 0 if pixel_values is None else len(pixel_values)
        if not bool(where.any()) and not n_tiles:
            return embeds
        features = self.encode_images(pixel_values).reshape(-1, embeds.shape[-1]) if n_tiles else embeds[0, :0]
        if int(where.sum()) != len(features):
            raise ExecuTorchError(f"image tokens and image features disagree: {int(where.sum())} tokens, "
                                  f"{len(features)} features from {n_tiles} tiles")
        embeds[0, where] = features
        return embeds

    def step(self, embeds: torch.Tensor, start: int) -> torch.Tensor:
        """Feed `embeds` (1, n, hidden) at positions start.. (in prefill-sized chunks); the last position's logits."""
        n = embeds.shape[1]
        self._check_fits(start + n)
        logits = None
        for k in range(0, n, self.max_prefill_len):
            chunk = embeds[:, k : k + self.max_prefill_len].contiguous()
            positions = torch.arange(start + k, start + k + chunk.shape[1], dtype=torch.long)
            logits = self.decoder.execute([chunk, positions])[0]
        return logits.reshape(-1)

    def _check_fits(self, positions: int) -> None:
        if positions > self.max_seq_len:
            raise ExecuTorchError(f"{positions} positions do not fit the exported KV cache of {self.max_seq_len}; "
                                  "ask with fewer tiles (--max-tiles) or a shorter question, or re-export with a larger "
                                  "--max-seq-len if the model's context allows one")

    def generate(self, ids: list[int], pixel_values: torch.Tensor | None = None, max_new_tokens: int = 64,
                 stop_ids=(), temperature: float = 0.0, seed: int = 0, on_logits=None) -> tuple[list[int], dict]:
        """New tokens for prompt `ids` (tiles `pixel_values`), stop token excluded, and timings (ms). Greedy at
        temperature 0; `on_logits(logits)` sees each step's logits (parity checks). Ends early, without error, when
        the KV cache is full."""
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        embeds = self.prompt_embeddings(ids, pixel_values)
        t1 = time.perf_counter()
        logits = self.step(embeds, 0)
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
            position = len(ids) + len(tokens) - 1
            if len(tokens) >= max_new_tokens or position >= self.max_seq_len:
                break
            logits = self.step(self.embed([token]), position)
        t3 = time.perf_counter()
        timings = {"prompt_tokens": len(ids), "image_encode_ms": (t1 - t0) * 1e3, "prompt_ms": (t2 - t1) * 1e3,
                   "decode_tokens": len(tokens), "decode_ms": (t3 - t2) * 1e3}
        return tokens, timings

    def chat(self, conversation: list[dict], images=(), max_new_tokens: int = 64, temperature: float = 0.0,
             system: str | None = None, tiling=None, seed: int = 0, cut_repeats: bool = True):
        """Answer the last user turn (as `adapt chat` does: training's prompt and tiles, stop tokens, repeats cut)."""
        from model.generation import cut_at_repetition

        encoded = self.processor(conversation, images=list(images), tiling=tiling, system_message=system)
        ids = encoded.input_ids.tolist()
        tokens, timings = self.generate(ids, encoded.pixel_values, max_new_tokens, self.processor.stop_token_ids,
                                        temperature, seed)
        cut = cut_at_repetition(tokens) if cut_repeats else None
        if cut is not None:
            tokens = tokens[:cut]
        prompt = self.processor.tokenizer.decode(ids, skip_special_tokens=False)
        return Answer(self.processor.decode(tokens), tokens, prompt, cut is not None, timings)
