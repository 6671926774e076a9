"""`adapt eval --runtime executorch`: score an ExecuTorch export with exactly the prompts PyTorch is scored with.

`ExecuTorchEvalModel` stands in for the PyTorch model inside `adapt.evaluate.predict`: it receives the same
left-padded batch (token ids from our processor, normalised tiles) and answers each row through ExecuTorch, so the
scores differ from PyTorch's only by what the export computes (int8 weights, XNNPACK's float rounding), never by
prompt or tiling.
"""

from __future__ import annotations

import torch

from . import ExecuTorchError
from .runtime import ExecuTorchVLM


class ExecuTorchEvalModel(torch.nn.Module):
    """The `generate` side of a PocketVLM, run by ExecuTorch on an export folder."""

    def __init__(self, folder, processor):
        super().__init__()
        self.runtime = ExecuTorchVLM(folder)
        self.processor = processor
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # device / dtype for predict()
        self.timings: list[dict] = []
        if processor.image_token_id != self.runtime.image_token_id:
            raise ExecuTorchError(f"{folder}: the export's image token id {self.runtime.image_token_id} is not the "
                                  f"evaluated processor's {processor.image_token_id}")

    def close(self) -> None:
        self.runtime.close()

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, pixel_values=None, max_new_tokens: int = 32,
                 eos_token_id=None, pad_token_id=None, do_sample: bool = False, **_) -> torch.LongTensor:
        if do_sample:
            raise ExecuTorchError("ExecuTorch evaluation is greedy")
        stops = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        pixels = pixel_values.float().cpu() if pixel_values is not None and pixel_values.shape[0] else None
        per_tile = self.processor.image_seq_length
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows, used = [], 0
        for row, keep in zip(input_ids.tolist(), mask.tolist()):
            ids = [i for i, m in zip(row, keep) if m]
            n_tiles = sum(i == self.processor.image_token_id for i in ids) // per_tile
            tiles = pixels[used : used + n_tiles] if n_tiles else None
            used += n_tiles
            tokens, timings = self.runtime.generate(ids, tiles, max_new_tokens, stops)
            self.timings.append(timings)
            rows.append(tokens)
        width = max(1, max(len(r) for r in rows))
        pad = pad_token_id if pad_token_id is not None else (stops[0] if stops else 0)
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
