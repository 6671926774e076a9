"""The model behind the demo: loaded once, asked one question at a time, answers streamed as they grow."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import TextIteratorStreamer

from model.processor import IMAGE_PLACEHOLDER

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "Answer", "ModelSession", "compose_question"]

DEFAULT_MAX_NEW_TOKENS = 128  # the demo's answers: a few sentences; a looping answer is cut long before this


class Answer(str):
    """The answer text; ``repeated`` is True when generation was stopped because the answer had begun
    repeating itself (:class:`model.generation.RepetitionStop`)."""

    repeated: bool = False

    def __new__(cls, text: str, repeated: bool = False):
        self = super().__new__(cls, text)
        self.repeated = repeated
        return self


def compose_question(question: str, n_images: int, prompt: str | None = None) -> str:
    """The user turn sent to the model.

    A question that already holds ``<image>`` placeholders places the images itself. Otherwise a domain's
    `prompt` (one ``<image>`` per image, e.g. ``"slice 3/12: <image>\\n..."``) goes before it; with neither,
    the processor adds the placeholders where InternVL puts them.
    """
    question = question.strip()
    if IMAGE_PLACEHOLDER in question or not prompt or n_images == 0:
        return question
    if prompt.count(IMAGE_PLACEHOLDER) != n_images:
        raise ValueError(f"the domain prompt has {prompt.count(IMAGE_PLACEHOLDER)} <image> placeholders "
                         f"for {n_images} image(s)")
    return prompt.rstrip("\n") + "\n" + question


class ModelSession:
    """A loaded model and processor (:func:`model.load`) with a streaming :meth:`stream`.

    Generation runs in a worker thread; one question is answered at a time (a lock), and a consumer that
    stops reading (the page was closed) stops the generation too. An answer that starts looping is cut
    (:class:`model.generation.RepetitionStop`, the rule ``adapt chat`` uses too).
    """

    def __init__(self, source: str | Path, *, dtype: str | None = None, device: str | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, allow_pickle: bool = False):
        import model

        self.source = str(source)
        self.name = Path(self.source).name if Path(self.source).is_dir() else self.source
        self.max_new_tokens = int(max_new_tokens)
        self.vlm, self.processor = model.load(source, dtype=dtype, device=device, allow_pickle=allow_pickle)
        self._lock = threading.Lock()

    def stream(self, question: str, images: Sequence[Any] = (), *, prompt: str | None = None,
               max_new_tokens: int | None = None, stop_repetition: bool = True) -> Iterator[Answer]:
        """Yield the answer so far each time it grows (the last value is the whole answer, with
        ``repeated`` set when a looping answer was cut; `stop_repetition=False` lets it run).

        Raises ValueError for an empty question or placeholders that do not match the images.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from model.generation import RepetitionStop, answer_room

        if not question or not question.strip():
            raise ValueError("type a question first")
        images = list(images)
        content = compose_question(question, len(images), prompt)
        encoded = self.processor([{"role": "user", "content": content}], images=images)
        room = answer_room(self.vlm, len(encoded.input_ids), int(max_new_tokens or self.max_new_tokens))
        inputs = {k: v.to(self.vlm.device) for k, v in encoded.to_model_inputs().items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.vlm.dtype)
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = _StopStreamer(self.processor)
        repeating = RepetitionStop(decode=self.processor.tokenizer.decode)
        criteria = StoppingCriteriaList([_Cancelled(), *([repeating] if stop_repetition else [])])
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.vlm.generate(
                        **inputs, max_new_tokens=room, do_sample=False, pad_token_id=self.processor.pad_token_id,
                        streamer=streamer, stopping_criteria=criteria, **self.processor.stop_kwargs())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
                failure.append(exc)
                streamer.end()

        with self._lock:
            thread = threading.Thread(target=work, name="demo-generate", daemon=True)
            thread.start()
            text = ""
            try:
                for piece in streamer:
                    if piece:
                        text += piece
                        yield Answer(text)
            finally:
                cancel.set()
                thread.join()
        if failure:
            raise failure[0]
        if repeating.fired:
            yield Answer(text, repeated=True)
        elif not text:
            yield Answer("")

    def answer(self, question: str, images: Sequence[Any] = (), **options: Any) -> Answer:
        """The whole answer at once (:meth:`stream` to the end)."""
        text = Answer("")
        for text in self.stream(question, images, **options):
            pass
        return text


class _StopStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that skips the prompt, ends the text at the first stop token, and hands on text
    after every token (HF's streamer waits for a space, so answers without spaces would arrive at once), decoded as
    `processor.decode` decodes: control tokens dropped, grounding markup (``<ref>``, ``<box>``) kept."""

    def __init__(self, processor):
        super().__init__(processor.tokenizer, skip_prompt=True)
        self._decode = processor.decode
        self._stops = set(processor.stop_token_ids)
        self._stopped = False

    def put(self, value) -> None:
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        if self._stopped:
            return
        ids = value.flatten().tolist()
        cut = next((k for k, i in enumerate(ids) if i in self._stops), None)
        if cut is not None:
            self._stopped = True
            ids = ids[:cut]
        if not ids:
            return
        self.token_cache.extend(ids)
        text = self._decode(self.token_cache)
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return
        printable = text[self.print_len:]
        if text.endswith("\n"):  # start a fresh cache, so decoding stays cheap on long answers
            self.token_cache, self.print_len = [], 0
        else:
            self.print_len = len(text)
        if printable:
            self.on_finalized_text(printable)
