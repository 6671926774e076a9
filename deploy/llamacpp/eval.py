"""`adapt eval --runtime llamacpp`: a GGUF export scored on PyTorch's prompts (`deploy.export_eval`) -- the text
model GGUF at the chosen type and the mmproj, so the scores differ from PyTorch's only by what the export and
llama.cpp compute (quantisation, float16 activations), never by prompt or tiling.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from deploy.export_eval import ExportEvalModel

from . import LlamaCppError, PocketLlama
from .runtime import ExportFolder


class LlamaCppEvalModel(ExportEvalModel):
    """The `generate` side of a PocketVLM, run by llama.cpp on an export folder."""

    runtime_title = "llama.cpp"
    error = LlamaCppError

    def __init__(self, folder, processor, n_ctx: int = 8192):
        """`n_ctx`: the context to start with; a longer sample reopens llama.cpp with a longer one, up to the
        model's trained context."""
        super().__init__(processor)
        self.export = ExportFolder.open(folder)
        self.llama = PocketLlama(self.export.model, self.export.mmproj, n_ctx=self.export.n_ctx(n_ctx),
                                 kv_f32=self.export.file_type == 0, max_ctx=self.export.context)

    def close(self) -> None:
        self.llama.close()

    def prepare_tiles(self, pixels: torch.Tensor) -> list[np.ndarray]:
        """Normalised float tiles back to the uint8 pixels they were made from (exact: one rounding)."""
        mean = torch.tensor(self.processor.tiling.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.processor.tiling.std).view(1, 3, 1, 1)
        values = (pixels.float().cpu() * std + mean) * 255
        rounded = values.round()
        if float((values - rounded).abs().max()) > 0.05:
            raise LlamaCppError("pixel values are not normalised uint8 tiles; cannot hand them to llama.cpp")
        return list(rounded.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())

    def _segments(self, ids: list[int], tiles: list[np.ndarray]) -> list[dict]:
        per_tile = self.processor.image_seq_length
        image_id = self.processor.image_token_id
        segments, k, used = [], 0, 0
        while k < len(ids):
            end = k
            is_image = ids[k] == image_id
            while end < len(ids) and (ids[end] == image_id) == is_image:
                end += 1
            if is_image:
                n = (end - k) // per_tile
                if n * per_tile != end - k or used + n > len(tiles):
                    raise LlamaCppError(
                        f"image tokens and tiles disagree in a prompt of {len(ids)} tokens: {end - k} image-context "
                        f"tokens at position {k} ({per_tile} per tile, so {(end - k) / per_tile:g} tiles), but "
                        f"{len(tiles) - used} of the sample's {len(tiles)} tiles are left for them; the processor's "
                        "image_seq_length and the tiles it cut must come from the same export")
                segments.append(self.llama.tiles_file(tiles[used : used + n]))
                used += n
            else:
                segments.append({"ids": ids[k:end]})
            k = end
        return segments

    def answer_row(self, ids, tiles, max_new_tokens, stops):
        self.llama.fit(len(ids), max_new_tokens)  # before the tiles are written and encoded
        answer = self.llama.generate(max_new_tokens, segments=self._segments(ids, tiles or []), stop_ids=stops)
        if answer["context_full"]:
            warnings.warn(f"an answer was cut at {len(answer['tokens'])} tokens: its prompt of {len(ids)} tokens and "
                          f"the answer fill the model's context of {self.llama.n_ctx}", stacklevel=2)
        return answer["tokens"], answer["timings"]
