"""The model behind the demo: loaded once, asked one question at a time, answers streamed as they grow."""

from __future__ import annotations

import numbers
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from model.errors import PocketAdaptError
from model.processor import IMAGE_PLACEHOLDER

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "Answer", "GenerationError", "ModelSession", "QuestionError",
           "check_max_new_tokens", "check_sampling", "compose_question"]

DEFAULT_MAX_NEW_TOKENS = 128  # the demo's answers: a few sentences; a looping answer is cut long before this


class QuestionError(PocketAdaptError, ValueError):
    """A question or setting the session refuses (empty, placeholders that do not match the images, a bad
    sampling value), worded for the page, which shows a PocketAdaptError's text (any other error's by type only)."""


class GenerationError(PocketAdaptError, RuntimeError):
    """The model failed while answering (the error it raised is the ``__cause__``): not a ValueError, so a page
    does not take it for a refused question, whatever the model raised."""


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
        raise QuestionError(f"the domain prompt has {prompt.count(IMAGE_PLACEHOLDER)} <image> placeholders "
                         f"for {n_images} image(s)")
    return prompt.rstrip("\n") + "\n" + question


class ModelSession:
    """A loaded model and processor (:func:`model.load`) with a streaming :meth:`stream`.

    Generation runs in a worker thread; one question is answered at a time (a lock), and a consumer that
    stops reading (the page was closed) stops the generation too. An answer that starts looping is cut
    (:class:`model.generation.RepetitionStop`, the rule ``adapt chat`` uses too).

    Answers are greedy (`temperature` 0) unless a `temperature` is given: then drawn as ``adapt chat
    --temperature`` draws (:func:`model.generation.sampling_options`), from the likeliest tokens holding `top_p`
    of the probability, with the random generator set to `seed` for each question, so the same question with the
    same images gets the same answer again. Invalid values are a ValueError naming the setting.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __init__(self, source: str | Path, *, dtype: str | None = None, device: str | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, allow_pickle: bool = False, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0):
        import model

        self.set_sampling(temperature, top_p, seed)  # before the model loads: a bad value fails at once
        self.max_new_tokens = check_max_new_tokens(max_new_tokens)
        self.source = str(source)
        self.name = Path(self.source).name if Path(self.source).is_dir() else self.source
        self.vlm, self.processor = model.load(source, dtype=dtype, device=device, allow_pickle=allow_pickle)
        self._lock = threading.Lock()

    def set_sampling(self, temperature: float | None = None, top_p: float | None = None, seed: int | None = None) -> None:
        """Change how answers are drawn (None keeps a setting); ValueError naming a value that cannot work."""
        self.temperature, self.top_p, self.seed = check_sampling(
            self.temperature if temperature is None else temperature, self.top_p if top_p is None else top_p,
            self.seed if seed is None else seed)

    @property
    def sampling_note(self) -> str:
        """How answers are drawn, in words for the page."""
        if not self.sampling_options()["do_sample"]:
            return "greedy answers"
        return f"sampled answers (temperature {self.temperature:g}, top-p {self.top_p:g}, seed {self.seed})"

    def sampling_options(self) -> dict:
        from model.generation import sampling_options

        return sampling_options(self.temperature, self.top_p)

    def stream(self, question: str, images: Sequence[Any] = (), *, prompt: str | None = None,
               max_new_tokens: int | None = None, stop_repetition: bool = True) -> Iterator[Answer]:
        """Yield the answer so far each time it grows (the last value is the whole answer, with
        ``repeated`` set when a looping answer was cut; `stop_repetition=False` lets it run).

        Raises :class:`QuestionError` (a ValueError) for an empty question, placeholders that do not match the images
        or a bad `max_new_tokens` (None: the session's; before anything is yielded), and :class:`GenerationError`
        when the model fails while answering (after the text so far).
        """
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        from model.generation import FiniteScores, RepetitionStop, StopStreamer, answer_room

        if not question or not question.strip():
            raise QuestionError("type a question first")
        images = list(images)
        content = compose_question(question, len(images), prompt)
        encoded = self.processor([{"role": "user", "content": content}], images=images)
        longest = self.max_new_tokens if max_new_tokens is None else check_max_new_tokens(max_new_tokens)
        room = answer_room(self.vlm, len(encoded.input_ids), longest)
        inputs = {k: v.to(self.vlm.device) for k, v in encoded.to_model_inputs().items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.vlm.dtype)
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        sampling = self.sampling_options()  # adapt chat's rule and distribution
        seed = self.seed
        streamer = StopStreamer(self.processor)  # the stop rules `adapt chat` streams by
        repeating = RepetitionStop(decode=self.processor.tokenizer.decode)
        criteria = StoppingCriteriaList([_Cancelled(), *([repeating] if stop_repetition else [])])
        failure: list[BaseException] = []

        def work() -> None:
            try:
                if sampling["do_sample"]:
                    torch.manual_seed(seed)  # each question drawn afresh: asked again, it gets the same answer
                with torch.inference_mode():
                    self.vlm.generate(
                        **inputs, max_new_tokens=room, pad_token_id=self.processor.pad_token_id, streamer=streamer,
                        stopping_criteria=criteria, logits_processor=LogitsProcessorList([FiniteScores()]),
                        **self.processor.stop_kwargs(), **sampling)
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
            if not isinstance(failure[0], Exception):  # KeyboardInterrupt, SystemExit: as they are
                raise failure[0]
            raise GenerationError(f"the model failed while answering ({type(failure[0]).__name__})") from failure[0]
        if repeating.fired or streamer.text != text or not text:
            yield Answer(streamer.text, repeated=repeating.fired)

    def answer(self, question: str, images: Sequence[Any] = (), **options: Any) -> Answer:
        """The whole answer at once (:meth:`stream` to the end)."""
        text = Answer("")
        for text in self.stream(question, images, **options):
            pass
        return text



def check_max_new_tokens(value: int) -> int:
    """`value` as the longest answer in tokens: a whole number >= 1, else a ValueError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise QuestionError(f"max_new_tokens must be a whole number >= 1, got {value!r}")
    return int(value)


def check_sampling(temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> tuple[float, float, int]:
    """The checks of ``adapt chat --temperature / --seed`` (and top-p's), a ValueError naming the setting."""
    from model.limits import check_seed, check_temperature, check_top_p

    checked = []
    for name, check, value in (("temperature", check_temperature, temperature), ("top_p", check_top_p, top_p),
                               ("seed", check_seed, seed)):
        try:
            checked.append(check(value))
        except ValueError as err:
            raise QuestionError(f"{name} {err}") from None
    return checked[0], checked[1], checked[2]
