"""`adapt eval --runtime NAME`: score an export with exactly the prompts PyTorch is scored with.

An `ExportEvalModel` stands in for the PyTorch model inside `adapt.evaluate.predict`: it receives the same
left-padded batch (token ids from our processor, normalised tiles) and answers each row through the export's
runtime, so the scores differ from PyTorch's only by what the export computes (quantised weights, float rounding),
never by prompt or tiling. A runtime's subclass says how one row is answered (`answer_row`).
"""

from __future__ import annotations

import torch

from model.errors import NonFiniteScoresError, PocketAdaptError


class ExportEvalModel(torch.nn.Module):
    """The `generate` side of a PocketVLM, run by an export runtime on an export folder (greedy only)."""

    runtime_title = "this runtime"
    error: type[PocketAdaptError] = PocketAdaptError
    names_samples = True  # adapt.evaluate.predict passes `samples` (source:line per row) to generate

    def __init__(self, processor):
        super().__init__()
        self.processor = processor
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # device / dtype for predict()
        self.timings: list[dict] = []

    def close(self) -> None:
        """Release the runtime (a subprocess, sessions, programs)."""

    def check_processor(self, folder, exported) -> None:
        """Refuse (closing the runtime first) an export whose processor `exported` (read from its folder) is not the
        evaluated one: image token, image tokens per tile, tiling or tokenizer. Such a folder holds another model's
        export, and its answers would be scored as this model's."""
        from deploy.onnx.export import tokenizer_fingerprint

        mine, differ = self.processor, []
        if exported.image_token_id != mine.image_token_id:
            differ.append(f"image token id {exported.image_token_id}, not {mine.image_token_id}")
        if exported.image_seq_length != mine.image_seq_length:
            differ.append(f"{exported.image_seq_length} image tokens per tile, not {mine.image_seq_length}")
        theirs, ours = exported.tiling.to_dict(), mine.tiling.to_dict()
        changed = [f"{k} {theirs[k]} (evaluated: {ours.get(k)})" for k in theirs if theirs[k] != ours.get(k)]
        if changed:
            differ.append(f"tiling {'; '.join(changed)}")
        if tokenizer_fingerprint(exported.tokenizer) != tokenizer_fingerprint(mine.tokenizer):
            differ.append("another tokenizer")
        if differ:
            self.close()
            raise self.error(f"{folder}: not an export of the evaluated model's processor ({'; '.join(differ)}); "
                             "export this model into it again")

    def prepare_tiles(self, pixel_values: torch.Tensor):
        """The batch's tiles in the form `answer_row` takes (indexable by tile)."""
        return pixel_values.float().cpu()

    def answer_row(self, ids: list[int], tiles, max_new_tokens: int, stops: list[int]) -> tuple[list[int], dict]:
        """Generated token ids and timings for one unpadded prompt and its tiles (None without images)."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, pixel_values=None, max_new_tokens: int = 32,
                 eos_token_id=None, pad_token_id=None, do_sample: bool = False, samples: list[str] | None = None,
                 **_) -> torch.LongTensor:
        """New tokens per row, as `PocketVLM.generate`; a runtime's error names the row's sample (`samples`: one
        name per row, e.g. ``source:line``; else the row's number in the batch)."""
        if do_sample:
            raise self.error(f"evaluation through {self.runtime_title} is greedy")
        stops = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        tiles = self.prepare_tiles(pixel_values) if pixel_values is not None and pixel_values.shape[0] else None
        per_tile = self.processor.image_seq_length
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows, used = [], 0
        for k, (row, keep) in enumerate(zip(input_ids.tolist(), mask.tolist())):
            ids = [i for i, m in zip(row, keep) if m]
            n_tiles = sum(i == self.processor.image_token_id for i in ids) // per_tile
            try:
                tokens, timings = self.answer_row(ids, tiles[used : used + n_tiles] if n_tiles else None,
                                                  max_new_tokens, stops)
            except PocketAdaptError as exc:
                name = f"sample {samples[k]}" if samples else f"row {k + 1} of the batch"
                kind = type(exc) if isinstance(exc, NonFiniteScoresError) else self.error  # still caught as one
                raise kind(f"{self.runtime_title}, {name}: {exc}") from exc
            used += n_tiles
            self.timings.append(timings)
            rows.append(tokens)
        width = max(1, max(len(r) for r in rows))
        pad = pad_token_id if pad_token_id is not None else (stops[0] if stops else 0)
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
