"""Stopping rules for answers, shared by ``adapt chat`` and the demo: the model's context, and repetition.

A small or barely trained model easily falls into a loop ("blacksquaresquaresquare…", "left lung, left lung,
left lung, …"). :class:`RepetitionStop` is a transformers ``StoppingCriteria`` that ends a sequence as soon
as its newest tokens are one n-gram repeated degenerately, so such an answer stops after a few repeats instead
of running to ``max_new_tokens``. The rule (:func:`repetition_at_end`) is deliberately loose enough for real
text: a single token must repeat :data:`MIN_SPAN` times in a row, a 2-gram 4 times, any longer n-gram 3 times, and
given the tokenizer's ``decode``, a unit whose text is only digits, punctuation and whitespace must cover
:data:`NUMBER_SPAN` tokens (a number's zeros "1,000,000,000", "0.000000001" or a table rule "| --- | --- |" are no
loop; "4444…" run on for 32 tokens is).

:class:`StopStreamer` hands on an answer as it grows, ended where the chat template says.
"""

from __future__ import annotations

import math
import queue
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence

import torch
from transformers import LogitsProcessor, StoppingCriteria

from .errors import NonFiniteScoresError, PocketAdaptError
from .limits import check_seed, check_temperature, check_top_p

__all__ = ["MAX_NGRAM", "MIN_REPEATS", "MIN_SPAN", "NUMBER_SPAN", "FiniteScores", "NonFiniteScoresError",
           "PromptTooLongError", "RepetitionStop",
           "StopStreamer", "answer_room", "check_seed", "check_temperature", "check_top_p", "cut_at_repetition",
           "repetition_at_end", "sampling_options"]

MAX_NGRAM = 12  # longest repeating unit looked for, in tokens
MIN_REPEATS = 3  # a unit must occur at least this many times in a row ...
MIN_SPAN = 8  # ... and the repeats must cover at least this many tokens (1-gram: 8 times, 2-gram: 4 times)
NUMBER_SPAN = 32  # ... this many for a unit of digits and punctuation (numbers, table rules), which repeat in real text


class PromptTooLongError(PocketAdaptError, ValueError):
    """A prompt that fills the model's context: no room left for an answer."""


class FiniteScores(LogitsProcessor):
    """Refuses next-token scores holding NaN or +inf (``-inf`` is a masked token) with a
    :class:`NonFiniteScoresError`: greedy decoding would pick the NaN's token as if it were the likeliest, and
    sampling fails inside ``torch.multinomial``. Pass it as ``generate(logits_processor=[...])``."""

    def __init__(self, start: int = 0):
        self.start = int(start)  # ids before the answer in `input_ids` (none when generating from embeddings)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if bool((torch.isnan(scores) | (scores == float("inf"))).any()):
            raise NonFiniteScoresError(
                f"the model's scores for answer token {input_ids.shape[-1] - self.start + 1} are NaN or infinite: its "
                "weights hold NaN / inf (a diverged training run?) or overflow in the dtype it runs in (float16?)")
        return scores


def answer_room(vlm, prompt_tokens: int, max_new_tokens: int) -> int:
    """How many new tokens to ask for: `max_new_tokens`, or fewer where the model's context
    (``text_config.max_position_embeddings``) ends first; `PromptTooLongError` when the prompt is longer
    (past its context a model answers noise, or nothing). The answer's last token comes from the context's last
    position and is never fed back, so prompt + answer may be one more than the context, as llama.cpp
    (`pocket-llama`) and the exported runtimes count. A `max_new_tokens` below 1 is a ValueError."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    context = getattr(vlm.config.text_config, "max_position_embeddings", None)
    if not context:
        return max_new_tokens
    if prompt_tokens > context:  # a prompt of exactly `context` still gets the one token its last position gives
        raise PromptTooLongError(f"the prompt takes {prompt_tokens} tokens, more than the model's context of {context}; "
                                 "ask with fewer tiles (adapt chat --max-tiles), fewer images or a shorter question")
    return min(max_new_tokens, context - prompt_tokens + 1)


def sampling_options(temperature: float, top_p: float = 1.0) -> dict:
    """`generate` options for `temperature`: greedy below :data:`~model.limits.MIN_TEMPERATURE` (0 included), else a
    draw at that temperature from the whole softmax (`top_p` 1, as the export runtimes' ``pick_token`` draws) or from
    its likeliest tokens that hold `top_p` of it. Sampling says ``top_k=0``: left unset, transformers fills in its
    default ``top_k=50`` and only the 50 likeliest tokens could ever be drawn. A negative or non-finite temperature,
    or a `top_p` outside (0, 1], is a ValueError."""
    from .limits import MIN_TEMPERATURE

    top_p = check_top_p(top_p)
    if isinstance(temperature, (int, float)) and 0 <= temperature < MIN_TEMPERATURE:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": check_temperature(temperature), "top_k": 0, "top_p": top_p}


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


_END = object()  # the queue's end-of-answer mark
# a last word this short may still change with the next token: clean_up_tokenization_spaces rewrites " n't", " 're",
# " ' " and " ." into "n't", "'re", "'" and "." (a space and up to 3 characters), so "do n" may become "don't"
_UNSETTLED_WORD = 3


def _settled(text: str) -> str:
    """`text` without what the next token may still rewrite: trailing whitespace, and a last word of at most
    :data:`_UNSETTLED_WORD` characters together with the whitespace before it."""
    text = text.rstrip()
    last = re.search(r"\s(\S*)$", text)
    if last and len(last.group(1)) <= _UNSETTLED_WORD:
        text = text[:last.start()].rstrip()
    return text


class StopStreamer:
    """A ``generate`` streamer that hands on the answer as `processor.decode` gives it (control tokens dropped,
    grounding markup ``<ref>``, ``<box>`` kept) up to the first stop token or text stop string
    (``processor.text_stop_strings``), cut exactly however the tokens split it: an end that may be the start of a
    stop string, half a character (byte fallback's ``"\ufffd"``), trailing spaces, or a last word short enough
    that the next token may still rewrite it (``clean_up_tokenization_spaces`` makes ``"do n"`` ``"don't"``) is
    held back until it is known, so the text handed on is always a prefix of the final answer. An answer cut
    inside a character ends before it. The first ``put`` (the prompt) is skipped.

    Each new piece of text goes to `on_text`; without one, iterating the streamer yields the pieces (generation
    in another thread; `timeout` seconds per piece). Afterwards ``tokens`` are the answer's ids, ``text`` its
    text and ``stopped`` whether a stop ended it.
    """

    def __init__(self, processor, on_text: Callable[[str], None] | None = None, timeout: float | None = None):
        self._processor = processor
        self._stops = set(processor.stop_token_ids)
        self._text_stops = tuple(processor.text_stop_strings)
        self._on_text = on_text
        self._queue: queue.Queue | None = queue.Queue() if on_text is None else None
        self._timeout = timeout
        self._prompt = True
        self._ended = False
        self._handed = ""
        self.tokens: list[int] = []
        self.text = ""
        self.stopped = False

    def put(self, value) -> None:
        if self._prompt:  # generate hands on the prompt first
            self._prompt = False
            return
        if self.stopped:
            return
        for i in value.flatten().tolist():
            if i in self._stops:
                self.stopped = True
                break
            self.tokens.append(i)
        self._hand_on(self._decode(), final=False)

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        text = self._decode()
        if text.endswith("\ufffd"):  # cut (max_new_tokens) between the bytes of a character: end before it
            self.text = text = text.rstrip("\ufffd").rstrip()
        self._hand_on(text, final=True)
        if self._queue is not None:
            self._queue.put(_END)

    def __iter__(self) -> Iterator[str]:
        if self._queue is None:
            raise TypeError("a StopStreamer with on_text hands its text there; it cannot be iterated")
        return self

    def __next__(self) -> str:
        piece = self._queue.get(timeout=self._timeout)  # type: ignore[union-attr]
        if piece is _END:
            raise StopIteration
        return piece

    def _decode(self) -> str:
        text = self._processor.decode(self.tokens, cut_text_stops=False)  # cut here, to know that it stopped
        cut = min((k for k in (text.find(stop) for stop in self._text_stops) if k >= 0), default=None)
        if cut is not None:
            self.stopped, text = True, text[:cut].rstrip()
        self.text = text
        return text

    def _hand_on(self, text: str, final: bool) -> None:
        if not final:
            text = text.rstrip("\ufffd")  # a character split across tokens: wait for the rest
            if not self.stopped:  # hold back an end that may be the start of a stop string
                hold = max((k for stop in self._text_stops for k in range(1, len(stop)) if text.endswith(stop[:k])),
                           default=0)
                text = text[:len(text) - hold]
            text = _settled(text)
        if not text.startswith(self._handed):  # unforeseen rewrite of text handed on: nothing can take it back
            return
        piece, self._handed = text[len(self._handed):], text
        if not piece:
            return
        if self._on_text is not None:
            self._on_text(piece)
        else:
            self._queue.put(piece)  # type: ignore[union-attr]
