"""The one stop-aware streamer (model.generation.StopStreamer) that `adapt chat` and the demo share."""

from __future__ import annotations

import torch

from tests.test_chat_generation import _template_with_stops

ANSWER = "red ## blue ###Human: hi"  # "###" is a text stop string of several tokens


def _processor(tmp_path):
    import model

    return model.load("pocket-tiny", chat_template=_template_with_stops(tmp_path, "###"))


def test_streamed_text_is_the_cut_answer_when_a_stop_string_arrives_split(tmp_path):
    """Text that may begin a stop string ("#", "##") is held back until it is known: streamed pieces only ever add
    to a prefix of the final answer, which ends exactly before the stop string."""
    from model.generation import StopStreamer

    _, processor = _processor(tmp_path)
    ids = processor.tokenizer.encode(ANSWER, add_special_tokens=False)
    pieces: list[str] = []
    streamer = StopStreamer(processor, on_text=pieces.append)
    streamer.put(torch.tensor([[]], dtype=torch.long))  # the prompt
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(pieces) == streamer.text == processor.decode(ids) == "red ## blue"
    assert streamer.stopped

    queued = StopStreamer(processor)  # iterated instead, as the demo reads it from another thread
    queued.put(torch.tensor([[]], dtype=torch.long))
    for i in processor.tokenizer.encode("red ## blue #", add_special_tokens=False):  # cut by max_new_tokens
        queued.put(torch.tensor([i]))
    queued.end()
    assert "".join(queued) == queued.text == "red ## blue #" and not queued.stopped


def test_demo_stream_never_shows_part_of_a_stop_string(tmp_path, monkeypatch):
    """The demo's streamer did not hold back the start of a stop string: "red ## blue ##" reached the page before
    the third "#" made it a stop, and stayed there as the answer."""
    from deploy.demo.session import ModelSession

    vlm, processor = _processor(tmp_path)
    ids = processor.tokenizer.encode(ANSWER, add_special_tokens=False)

    def generate(*a, streamer, **kw):
        streamer.put(torch.tensor([[]], dtype=torch.long))
        for i in ids:
            streamer.put(torch.tensor([i]))
        streamer.end()

    monkeypatch.setattr(vlm, "generate", generate)
    session = object.__new__(ModelSession)
    session.vlm, session.processor, session.max_new_tokens = vlm, processor, 30
    session._lock = __import__("threading").Lock()
    shown = [str(answer) for answer in session.stream("Colours?")]
    assert shown[-1] == "red ## blue"
    assert all(shown[-1].startswith(text) for text in shown), shown
