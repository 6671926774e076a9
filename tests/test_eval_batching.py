"""How `adapt.evaluate.predict` forms its batches: by the length of the prompts it pads, not of the samples."""

from __future__ import annotations

import pytest

from adapt.data.samples import Record, SkipLog, measure
from adapt.evaluate import predict


@pytest.fixture(scope="module")
def tiny():
    from model import load

    return load("pocket-tiny")


def test_batches_hold_prompts_of_one_length_whatever_their_answers(tiny, monkeypatch):
    """`record.n_tokens` counts the answer: sorted by it, a short question with a long answer (a grounding box) was
    batched with a long question with a short answer, and the short prompt padded to the long one's length. Sorted by
    the prompt, each batch here is two prompts of one length: no padding."""
    vlm, processor = tiny
    short_q, long_q = "Name it.", "Name the thing that is shown in this long question, in one short word, please."

    def rec(line: int, question: str, answer: str) -> Record:
        return Record("s", line, [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], [], [])

    records = [rec(1, short_q, "a much longer answer " * 8), rec(2, long_q, "yes"),
               rec(3, short_q, "a longer answer"), rec(4, long_q, "no")]
    measure(records, processor, 1024, SkipLog())
    by_samples = sorted(records, key=lambda r: -r.n_tokens)
    assert [r.line for r in by_samples] == [1, 2, 4, 3]  # sorted by n_tokens, both batches of two mix the prompts
    masks = []
    generate = vlm.generate

    def spy(**batch):
        masks.append(batch["attention_mask"])
        return generate(**batch)

    monkeypatch.setattr(vlm, "generate", spy)
    preds = predict(vlm, processor, records, max_new_tokens=2, batch_size=2, progress=False)
    assert [p.line for p in preds] == [1, 2, 3, 4] and [p.prompt for p in preds] == [short_q, long_q] * 2
    assert len(masks) == 2 and all(bool(m.all()) for m in masks)
    assert [m.shape[1] for m in masks] == sorted((m.shape[1] for m in masks), reverse=True)  # longest first
