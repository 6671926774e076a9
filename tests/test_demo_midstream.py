"""The model failing mid-answer: the page keeps what was said, says the model failed (not "Could not ask"), and
shows none of an unexpected exception's text (which may quote inputs), only a PocketAdaptError's message (written
for users); the next question works."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from tests.deps import require

require("gradio")


@pytest.fixture(scope="module")
def session():
    from deploy.demo.session import ModelSession

    return ModelSession("pocket-tiny", max_new_tokens=6)


@pytest.mark.parametrize("error", [ValueError, RuntimeError])
def test_a_model_failing_mid_answer_is_said_as_such(session, monkeypatch, error):
    from deploy.demo.hooks import default_draw_answer
    from deploy.demo.panels import medical
    from deploy.demo.panels.generic import answer_stream

    ids = session.processor.tokenizer.encode("red circle and blue square", add_special_tokens=False)
    real = session.vlm.generate

    def failing(*args, streamer, **kwargs):
        streamer.put(torch.tensor([[1, 2]]))
        for i in ids:
            streamer.put(torch.tensor([i]))
        raise error("probability tensor contains inf in /secret/path/patient_DOE")

    monkeypatch.setattr(session.vlm, "generate", failing)
    steps = list(answer_stream(session, default_draw_answer, "What is shown?", None))
    text, drawn, note = steps[-1]
    assert text.startswith("red circle")  # what was said before the failure stays
    assert drawn is None and note.startswith("**Could not answer:**") and "secret" not in note, note
    assert "Could not ask" not in note
    assert f"\\({error.__name__}\\)" in note  # the model's own error named, its message in the server log only

    class Study:  # a loaded PNG, as medical.ask sees it
        staged = None

        def model_inputs(self, index, n, window):
            return [Image.new("RGB", (32, 32), (90, 90, 90))], ["upload 1"], None

    *_, (text, drawn, labels, note) = medical.ask(session, "What is shown?", Study())
    assert text.startswith("red circle") and drawn is None and labels == ["upload 1"]
    assert note.startswith("**Could not answer:**") and "secret" not in note and f"\\({error.__name__}\\)" in note

    monkeypatch.setattr(session.vlm, "generate", real)
    assert session._lock.acquire(blocking=False)  # the failed question let go of the model
    session._lock.release()
    assert threading.active_count() < 50
    *_, (text, drawn, note) = answer_stream(session, default_draw_answer, "What is shown?", None)
    assert text and note == "" or "no image" in note


def test_a_model_with_broken_weights_says_why(session):
    """NonFiniteScoresError (a PocketAdaptError, written for users) reached both pages as its type name alone, with
    "see the server log": the page now says what it says (NaN / inf scores: broken weights or an overflowing dtype)."""
    from deploy.demo.hooks import default_draw_answer
    from deploy.demo.panels import medical
    from deploy.demo.panels.generic import answer_stream

    class Study:
        staged = None

        def model_inputs(self, index, n, window):
            return [Image.new("RGB", (32, 32), (90, 90, 90))], ["upload 1"], None

    head = session.vlm.get_output_embeddings().weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.fill_(float("nan"))
        *_, (text, drawn, note) = answer_stream(session, default_draw_answer, "What is shown?", None)
        *_, (_, _, _, medical_note) = medical.ask(session, "What is shown?", Study())
    finally:
        with torch.no_grad():
            head.copy_(saved)
    for shown in (note, medical_note):
        assert shown.startswith("**Could not answer:**"), shown
        assert "NaN or infinite" in shown and "float16" in shown, shown
        assert "server log" not in shown, shown
