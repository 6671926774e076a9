"""`adapt eval --runtime llamacpp`: score a GGUF export with exactly the prompts PyTorch is scored with.

`LlamaCppEvalModel` stands in for the PyTorch model inside `adapt.evaluate.predict`: it receives the same
left-padded batch (token ids from our processor, normalised tiles) and answers through llama.cpp -- the text
model GGUF at the chosen type and the mmproj -- so the scores differ from PyTorch's only by what the export and
llama.cpp compute (quantisation, float16 activations), never by prompt or tiling.
"""

from __future__ import annotations

import numpy as np
import torch

from . import LlamaCppError, PocketLlama
from .runtime import ExportFolder


class LlamaCppEvalModel(torch.nn.Module):
    """The `generate` side of a PocketVLM, run by llama.cpp on an export folder."""

    def __init__(self, folder, processor, n_ctx: int = 8192):
        super().__init__()
        self.export = ExportFolder.open(folder)
        self.processor = processor
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # device / dtype for predict()
        self.llama = PocketLlama(self.export.model, self.export.mmproj, n_ctx=n_ctx, kv_f32=self.export.file_type == 0)
        self.timings: list[dict] = []

    def close(self) -> None:
        self.llama.close()

    def _tiles(self, pixels: torch.Tensor) -> list[np.ndarray]:
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
                    raise LlamaCppError("image tokens and tiles disagree")
                segments.append(self.llama.tiles_file(tiles[used : used + n]))
                used += n
            else:
                segments.append({"ids": ids[k:end]})
            k = end
        return segments

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, pixel_values=None, max_new_tokens: int = 32,
                 eos_token_id=None, pad_token_id=None, do_sample: bool = False, **_) -> torch.LongTensor:
        if do_sample:
            raise LlamaCppError("llama.cpp evaluation is greedy")
        stops = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        tiles = self._tiles(pixel_values) if pixel_values is not None and pixel_values.shape[0] else []
        per_tile = self.processor.image_seq_length
        rows, used = [], 0
        for row, mask in zip(input_ids.tolist(), (attention_mask if attention_mask is not None else
                                                  torch.ones_like(input_ids)).tolist()):
            ids = [i for i, m in zip(row, mask) if m]
            n_tiles = sum(i == self.processor.image_token_id for i in ids) // per_tile
            answer = self.llama.request(op="generate", segments=self._segments(ids, tiles[used : used + n_tiles]),
                                        n_predict=max_new_tokens, stop_ids=stops)
            used += n_tiles
            self.timings.append(answer["timings"])
            rows.append(answer["tokens"])
        width = max(1, max(len(r) for r in rows))
        pad = pad_token_id if pad_token_id is not None else (stops[0] if stops else 0)
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
