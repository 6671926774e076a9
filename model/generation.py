"""Stopping rules for answers, shared by ``adapt chat`` and the demo: the model's context, and repetition.

A small or barely trained model easily falls into a loop ("blacksquaresquaresquare…", "left lung, left lung,
left lung, …"). :class:`RepetitionStop` is a transformers ``StoppingCriteria`` that ends a sequence as soon
as its newest tokens are one n-gram repeated degenerately, so such an answer stops after a few repeats instead
of running to ``max_new_tokens``. The rule (:func:`repetition_at_end`) is deliberately loose enough for real
text: a single token must repeat :data:`MIN_SPAN` times in a row, a 2-gram 4 times, any longer n-gram 3 times, and
given the tokenizer's ``decode``, a unit whose text is only digits, punctuation and whitespace must cover
:data:`NUMBER_SPAN` tokens (a number's zeros "1,000,000,000", "0.000000001" or a table rule "| --- | --- |" are no
loop; "4444…" run on for 32 tokens is).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence

import torch
from transformers import StoppingCriteria

from .errors import PocketAdaptError

__all__ = ["MAX_NGRAM", "MIN_REPEATS", "MIN_SPAN", "NUMBER_SPAN", "PromptTooLongError", "RepetitionStop", "answer_room",
           "cut_at_repetition", "repetition_at_end", "sampling_options"]

MAX_NGRAM = 12  # longest repeating unit looked for, in tokens
MIN_REPEATS = 3  # a unit must occur at least this many times in a row ...
MIN_SPAN = 8  # ... and the repeats must cover at least this many tokens (1-gram: 8 times, 2-gram: 4 times)
NUMBER_SPAN = 32  # ... this many for a unit of digits and punctuation (numbers, table rules), which repeat in real text


class PromptTooLongError(PocketAdaptError, ValueError):
    """A prompt that fills the model's context: no room left for an answer."""


def answer_room(vlm, prompt_tokens: int, max_new_tokens: int) -> int:
    """How many new tokens to ask for: `max_new_tokens`, or fewer where the model's context
    (``text_config.max_position_embeddings``) ends first; `PromptTooLongError` when the prompt leaves none
    (past its context a model answers noise, or nothing)."""
    context = getattr(vlm.config.text_config, "max_position_embeddings", None)
    if not context:
        return max_new_tokens
    if prompt_tokens >= context:
        raise PromptTooLongError(f"the prompt takes {prompt_tokens} tokens, more than the model's context of {context}; "
                                 "ask with fewer tiles (adapt chat --max-tiles), fewer images or a shorter question")
    return min(max_new_tokens, context - prompt_tokens)


def sampling_options(temperature: float) -> dict:
    """`generate` options for `temperature`: greedy below :data:`~model.limits.MIN_TEMPERATURE` (0 included), else a
    draw from the whole softmax at that temperature, as the export runtimes' ``pick_token`` draws. Sampling says
    ``top_k=0, top_p=1.0``: left unset, transformers fills in its default ``top_k=50`` and only the 50 likeliest
    tokens could ever be drawn."""
    from .limits import MIN_TEMPERATURE

    if temperature < MIN_TEMPERATURE:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": float(temperature), "top_k": 0, "top_p": 1.0}


def _is_number_like(text: str) -> bool:
    """Only digits, punctuation, math / currency signs and whitespace: repeated, these are a number or a table."""
    return all(ch.isspace() or unicodedata.category(ch)[0] in "NP" or unicodedata.category(ch) in ("Sm", "Sc", "Sk")
               for ch in text)


def repetition_at_end(ids: Sequence[int], *, max_ngram: int = MAX_NGRAM, min_repeats: int = MIN_REPEATS,
                      min_span: int = MIN_SPAN, decode: Callable[[list[int]], str] | None = None
                      ) -> tuple[int, int] | None:
    """``(n, repeats)`` when `ids` ends with an n-gram repeated at least ``max(min_repeats, ceil(min_span / n))``
    times in a row (the shortest such n), else None. With `decode` (the tokenizer's), an n-gram whose text is only
    digits, punctuation and whitespace must cover :data:`NUMBER_SPAN` tokens."""
    ids = list(ids)
    for n in range(1, max_ngram + 1):
        need = max(min_repeats, math.ceil(min_span / n))
        if n * need > len(ids):
            break
        unit = ids[-n:]
        repeats = 1
        while repeats < need and ids[-(repeats + 1) * n:len(ids) - repeats * n] == unit:
            repeats += 1
        if repeats < need:
            continue
        if decode is not None and _is_number_like(decode(unit)):
            need = max(need, math.ceil(NUMBER_SPAN / n))  # a number's zeros, a table's "| --- |": a loop only if long
            while repeats < need and ids[-(repeats + 1) * n:len(ids) - repeats * n] == unit:
                repeats += 1
        if repeats >= need:
            return n, repeats
    return None


def cut_at_repetition(ids: Sequence[int], decode: Callable[[list[int]], str] | None = None) -> int | None:
    """The length at which a finished answer would have been stopped by :class:`RepetitionStop` (the first
    prefix that ends in a degenerate repetition), or None: for runtimes that generate outside transformers."""
    ids = list(ids)
    return next((k for k in range(1, len(ids) + 1) if repetition_at_end(ids[:k], decode=decode) is not None), None)


class RepetitionStop(StoppingCriteria):
    """Stops each sequence whose generated tokens (those after the first `start`) end in a degenerate
    repetition (:func:`repetition_at_end`, with the tokenizer's `decode` so numbers are no loop). ``fired`` tells
    afterwards whether it stopped anything."""

    def __init__(self, start: int = 0, decode: Callable[[list[int]], str] | None = None, **rule: int):
        self.start = int(start)
        self.rule = {**rule, "decode": decode}
        rule = {"max_ngram": MAX_NGRAM, "min_repeats": MIN_REPEATS, "min_span": MIN_SPAN, **rule}  # type: ignore[dict-item]
        # enough for any n-gram's repeats
        self._tail = rule["max_ngram"] * rule["min_repeats"] + max(rule["min_span"], NUMBER_SPAN)
        self.fired = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs) -> torch.BoolTensor:
        begin = max(self.start, input_ids.shape[-1] - self._tail)
        done = [repetition_at_end(row[begin:].tolist(), **self.rule) is not None for row in input_ids]
        self.fired = self.fired or any(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
