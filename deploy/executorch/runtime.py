"""Run an ExecuTorch export in ExecuTorch's Python runtime: `adapt chat --runtime executorch` and friends.

The folder's tokenizer, chat template and tiling make the same `VLMProcessor` training used, so prompts and tiles are
training's. `ExecuTorchVLM` runs the program's methods in `deploy.export_runtime`'s generation loop: tiles ->
`vision_encoder` (in calls of at most the exported tile count) -> `token_embedding` -> image features written over
the image-context rows -> `text_decoder`, prompt in chunks of at most the exported prefill length, then one token at a
time; the KV cache stays inside the loaded program. Loading refuses a folder whose tiling or tokenizer is not the one the program was exported with.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from deploy.export_runtime import ExportedVLM
from deploy.export_sidecar import (
    SidecarExport,
    check_preprocessor_config,
    check_tiling,
    export_folder,
    read_processor,
)

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

        folder = export_folder(folder, "executorch", "ExecuTorch", (PTE, PREPROCESSOR, CHAT_TEMPLATE), ExecuTorchError)
        require_executorch()
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401 - the decoder's KV-cache kernels
        from executorch.runtime import Runtime

        try:
            program = Runtime.get().load_program(folder / PTE)
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file: say which
            raise ExecuTorchError(f"{folder / PTE}: ExecuTorch cannot load it ({err})") from err
        try:
            names = set(program.method_names)
            needed = [VISION_METHOD, EMBED_METHOD, DECODER_METHOD, TILING_METHOD, TOKENIZER_METHOD, "get_max_seq_len",
                      "get_max_prefill_len", "get_max_tiles"]
            if not set(needed) <= names:
                raise ExecuTorchError(f"{folder / PTE}: not written by `adapt export --format executorch` (no "
                                      f"{', '.join(sorted(set(needed) - names))})")
            constants = {n: program.load_method(n).execute([])[0] for n in needed[3:]}
            processor, pre = read_processor(folder, ExecuTorchError,
                                            [(constants[TOKENIZER_METHOD], PTE)])
            check_tiling(constants[TILING_METHOD], processor.tiling, folder / PREPROCESSOR, PTE,
                         ExecuTorchError)
            check_preprocessor_config(processor, pre, folder, ExecuTorchError)
            if "get_image_seq_length" in names:
                per_tile = program.load_method("get_image_seq_length").execute([])[0]
                if per_tile != processor.image_seq_length:
                    raise ExecuTorchError(f"{folder / PREPROCESSOR}: 'image_seq_length' {processor.image_seq_length}, "
                                          f"but {PTE} was exported with {per_tile} image features per tile; restore "
                                          "the exported file or re-export")
        except BaseException:
            del program  # the refusal's traceback holds this frame: the loaded program must not stay alive in it
            raise
        return cls(folder, processor, program, constants)


@contextmanager
def _without_cpu_probe_log():
    """Drop the lines ExecuTorch's cpuinfo_utils logs (through Python's sys.stderr) when XNNPACK's thread pool starts:
    ARM probes such as "Failed to open midr file ..." on every x86 machine. Anything else written meanwhile is kept."""
    real, caught = sys.stderr, io.StringIO()
    sys.stderr = caught
    try:
        yield
    finally:
        sys.stderr = real
        kept = [line for line in caught.getvalue().splitlines(keepends=True) if "cpuinfo_utils.cpp" not in line]
        if kept:
            real.write("".join(kept))


class ExecuTorchVLM(ExportedVLM):
    """An export loaded in ExecuTorch's runtime: its three methods behind the shared generation loop."""

    error = ExecuTorchError

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        export = ExecuTorchExport.open(folder)
        try:
            with _without_cpu_probe_log():  # the first method load (or reset) starts XNNPACK's thread pool
                if threads:  # XNNPACK's thread pool is process-wide; the default is one thread per core
                    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

                    _unsafe_reset_threadpool(int(threads))
                methods = [export.program.load_method(n) for n in (VISION_METHOD, EMBED_METHOD, DECODER_METHOD)]
        except BaseException:
            del export  # nothing loaded stays on the half-made runtime that the traceback holds
            raise
        self.export = export
        self.processor = export.processor
        self.vision, self.embedding, self.decoder = methods
        self.max_positions = int(self.export.constants["get_max_seq_len"])
        self.max_prefill_len = int(self.export.constants["get_max_prefill_len"])
        self.max_tiles = int(self.export.constants["get_max_tiles"])
        self.image_token_id = self.processor.image_token_id

    def close(self) -> None:
        """Drop the methods and the loaded program (the folder and processor stay readable)."""
        super().close()
        self.export = dataclasses.replace(self.export, program=None)

    def encode_images(self, pixel_values) -> np.ndarray:
        """(tiles, tokens_per_tile, hidden) image features of normalised tiles, at most `max_tiles` per call."""
        pixels = torch.as_tensor(pixel_values, dtype=torch.float32).contiguous()
        parts = [self.vision.execute([pixels[k : k + self.max_tiles].contiguous()])[0]
                 for k in range(0, len(pixels), self.max_tiles)]
        return torch.cat(parts).numpy()

    def embed(self, ids) -> np.ndarray:
        return self.embedding.execute([torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)])[0].numpy()

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        return self._feed(embeds, 0)

    def decode(self, embeds: np.ndarray, position: int) -> np.ndarray:
        return self._feed(embeds, position)

    def _feed(self, embeds: np.ndarray, start: int) -> np.ndarray:
        """`embeds` (1, n, hidden) at positions start.. (in prefill-sized chunks); the last position's logits. The
        KV cache is the program's own: positions from `start` on are overwritten."""
        embeds = torch.from_numpy(np.ascontiguousarray(embeds, dtype=np.float32))
        if embeds.ndim != 3 or embeds.shape[1] == 0:
            raise ExecuTorchError(f"{self.export.folder / PTE}: {DECODER_METHOD} needs (1, positions, hidden) "
                                  f"embeddings of at least one position, got shape {tuple(embeds.shape)}")
        for k in range(0, embeds.shape[1], self.max_prefill_len):
            chunk = embeds[:, k : k + self.max_prefill_len].contiguous()
            positions = torch.arange(start + k, start + k + chunk.shape[1], dtype=torch.long)
            logits = self.decoder.execute([chunk, positions])[0]
        return logits.reshape(-1).numpy().copy()  # the program may reuse its output buffer

    def too_long(self, positions: int) -> str:
        return (f"{positions} positions do not fit the exported KV cache of {self.max_positions}; ask with fewer "
                "tiles (--max-tiles) or a shorter question, or re-export with a larger --max-seq-len if the model's "
                "context allows one")
