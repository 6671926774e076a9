"""The generation loop the ONNX and ExecuTorch runtimes share (`adapt chat --runtime onnx|executorch`).

An export of either format is three callables: a vision encoder (normalised tiles -> image features), a token
embedding and a text decoder with a KV cache. `ExportedVLM` turns them into answers as `adapt chat` gives them on
the PyTorch model: training's prompt and tiles (the folder's `VLMProcessor`), image features written over the
image-context rows of the prompt's embeddings (`PocketVLM.embed`), the prompt in one pass, then one token at a time,
greedy or sampled, stop tokens and repeats as `adapt chat` cuts them. A runtime's subclass opens its folder and says
how each callable runs (`encode_images`, `embed`, `prefill`, `decode`) and how many positions its decoder holds.
Arrays crossing this interface are numpy.
"""

from __future__ import annotations

import numbers
import time

import numpy as np

from deploy.runtimes import Answer, BadLogitsError, pick_token
from model.errors import PocketAdaptError


class ExportedVLM:
    """An export folder opened in a runtime: the processor it was exported with and its generation loop."""

    error: type[PocketAdaptError] = PocketAdaptError
    processor: object
    image_token_id: int
    max_positions: int | None = None  # positions the decoder holds (prompt + answer); None: no fixed limit

    # ------------------------------------------------------------------ what a runtime provides
    def encode_images(self, pixel_values) -> np.ndarray:
        """(tiles, tokens_per_tile, hidden) image features of normalised tiles."""
        raise NotImplementedError

    def embed(self, ids) -> np.ndarray:
        """(1, len(ids), hidden) token embeddings."""
        raise NotImplementedError

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        """Feed the prompt's (1, n, hidden) embeddings at positions 0.. into an empty cache; last-position logits."""
        raise NotImplementedError

    def decode(self, embeds: np.ndarray, position: int) -> np.ndarray:
        """Feed one (1, 1, hidden) embedding at `position` after what the cache holds; its logits (vocab,)."""
        raise NotImplementedError

    def too_long(self, positions: int) -> str:
        """The message for a prompt of `positions` that the decoder cannot hold."""
        return (f"the prompt takes {positions} positions, more than the {self.max_positions} the model holds; ask "
                "with fewer tiles (--max-tiles) or a shorter question")

    # ------------------------------------------------------------------ shared
    def close(self) -> None:
        self.vision = self.embedding = self.decoder = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def prompt_embeddings(self, ids: list[int], pixel_values) -> np.ndarray:
        """The prompt's embeddings with image features written over the image-context rows (`PocketVLM.embed`)."""
        embeds = np.array(self.embed(ids), dtype=np.float32)  # a copy: runtimes may hand out their own buffers
        where = np.flatnonzero(np.asarray(ids) == self.image_token_id)
        n_tiles = 0 if pixel_values is None else len(pixel_values)
        if not len(where) and not n_tiles:
            return embeds
        features = (np.asarray(self.encode_images(pixel_values)).reshape(-1, embeds.shape[-1]) if n_tiles
                    else embeds[0, :0])
        if len(where) != len(features):
            raise self.error(f"image tokens and image features disagree: {len(where)} tokens, "
                             f"{len(features)} features from {n_tiles} tiles")
        embeds[0, where] = features
        return embeds

    def generate(self, ids: list[int], pixel_values=None, max_new_tokens: int = 64, stop_ids=(),
                 temperature: float = 0.0, seed: int = 0, on_logits=None) -> tuple[list[int], dict]:
        """New tokens for prompt `ids` (tiles `pixel_values`), stop token excluded, and timings (ms). Greedy at
        temperature 0; `on_logits(logits)` sees each step's logits (parity checks). A prompt the decoder cannot
        hold is refused; an answer that fills the decoder's last position just ends there."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
            raise self.error(f"max_new_tokens must be a whole number of at least 1, got {max_new_tokens!r}")
        if not len(ids):
            raise self.error("the prompt is empty (no token ids): the decoder needs at least one position to answer")
        if self.max_positions and len(ids) > self.max_positions:
            raise self.error(self.too_long(len(ids)))
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        embeds = self.prompt_embeddings(ids, pixel_values)
        t1 = time.perf_counter()
        logits = self.prefill(embeds)
        t2 = time.perf_counter()
        tokens: list[int] = []
        stops = set(stop_ids)
        while True:
            if on_logits is not None:
                on_logits(logits)
            try:
                token = pick_token(logits, temperature, rng)
            except BadLogitsError as exc:
                step = "the prompt pass" if not tokens else f"decoding token {len(tokens) + 1}"
                # its own type, not self.error: `except NonFiniteScoresError` catches it as on PyTorch's path
                raise BadLogitsError(f"{step}: {exc}") from exc
            if token in stops:
                break
            tokens.append(token)
            position = len(ids) + len(tokens) - 1
            if len(tokens) >= max_new_tokens or (self.max_positions and position >= self.max_positions):
                break
            logits = self.decode(self.embed([token]), position)
        t3 = time.perf_counter()
        timings = {"prompt_tokens": len(ids), "image_encode_ms": (t1 - t0) * 1e3, "prompt_ms": (t2 - t1) * 1e3,
                   "decode_tokens": len(tokens), "decode_ms": (t3 - t2) * 1e3}
        return tokens, timings

    def chat(self, conversation: list[dict], images=(), max_new_tokens: int = 64, temperature: float = 0.0,
             system: str | None = None, tiling=None, seed: int = 0, cut_repeats: bool = True) -> Answer:
        """Answer the last user turn (as `adapt chat` does: training's prompt and tiles, stop tokens, repeats cut)."""
        from model.generation import cut_at_repetition

        encoded = self.processor(conversation, images=list(images), tiling=tiling, system_message=system)
        pixels = None if encoded.pixel_values is None else encoded.pixel_values.numpy()
        ids = encoded.input_ids.tolist()
        tokens, timings = self.generate(ids, pixels, max_new_tokens, self.processor.stop_token_ids, temperature, seed)
        # generate ends an answer at the decoder's last position without a stop token: the context ended it
        full = bool(self.max_positions) and len(tokens) < max_new_tokens and len(ids) + len(tokens) > self.max_positions
        cut = cut_at_repetition(tokens, self.processor.tokenizer.decode) if cut_repeats else None
        if cut is not None:
            tokens = tokens[:cut]
        return Answer(self.processor.decode(tokens), tokens, self.processor.show_prompt(ids), cut is not None, timings,
                      context_full=full and cut is None)
