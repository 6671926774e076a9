"""`PocketVLM.generate` runs a batch's common prompt prefix (the system prompt) once and shares its KV cache."""

from __future__ import annotations

import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def tiny():
    from model import load

    return load("pocket-tiny")


def _batch(processor, questions: list[tuple[str, Image.Image | None]]) -> dict[str, torch.Tensor]:
    encoded = [processor([{"role": "user", "content": ("<image>\n" if image else "") + q}],
                         images=[image] if image else [], add_generation_prompt=True) for q, image in questions]
    return processor.pad(encoded, padding_side="left")


def _one_by_one(vlm, batch: dict[str, torch.Tensor], **options) -> tuple[list[list[int]], torch.Tensor]:
    """Each row alone through transformers' own generate (no padding, nothing shared): its tokens, and the scores of
    every step (steps, rows, vocabulary)."""
    embeds, _ = vlm.embed(batch["input_ids"], batch.get("pixel_values"))
    tokens, scores = [], []
    for row, mask in zip(embeds, batch["attention_mask"].bool()):
        out = vlm.language_model.generate(inputs_embeds=row[mask][None], attention_mask=mask[mask].long()[None],
                                          output_scores=True, return_dict_in_generate=True, **options)
        tokens.append(out.sequences[0].tolist())
        scores.append(torch.stack(out.scores)[:, 0])
    return tokens, torch.stack(scores, dim=1)


def _batched(vlm, batch: dict[str, torch.Tensor], **options) -> tuple[list[list[int]], torch.Tensor]:
    out = vlm.generate(**batch, output_scores=True, return_dict_in_generate=True, **options)
    return out.sequences.tolist(), torch.stack(out.scores)


def _forward_lengths(vlm, monkeypatch) -> list[tuple[int, int]]:
    """(rows, tokens) of every forward pass of the language model, recorded."""
    seen: list[tuple[int, int]] = []
    forward = vlm.language_model.forward

    def recording(*args, **kwargs):
        seen.append(tuple(kwargs["inputs_embeds"].shape[:2]) if kwargs.get("inputs_embeds") is not None
                    else tuple(kwargs["input_ids"].shape[:2]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(vlm.language_model, "forward", recording)
    return seen


def test_a_shared_system_prompt_runs_once_and_every_answer_is_transformers_own(tiny, monkeypatch):
    """Four prompts of different lengths (three with an image, one without): the batch's prefill covers
    only what follows the common system prompt, and each row's tokens equal transformers' generate on that row alone.
    Rows laid out wrongly (a shifted position, another row's cache or embeddings) change these scores."""
    vlm, processor = tiny
    red, green = Image.new("RGB", (120, 90), (200, 30, 40)), Image.new("RGB", (300, 100), (20, 160, 40))
    # left padding of none, of fewer tokens than the shared prefix, and of more
    batch = _batch(processor, [("Which scene?\nA. desert\nB. forest", red), ("Which scene?", red),
                               ("Describe the colours, please.", green), ("Name a colour.", None)])
    options = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=processor.pad_token_id,
                   suppress_tokens=processor.tokenizer.all_special_ids)  # text, so that equal answers mean something
    expected, expected_scores = _one_by_one(vlm, batch, **options)
    seen = _forward_lengths(vlm, monkeypatch)
    got, scores = _batched(vlm, batch, **options)
    assert got == expected
    # every step's scores too: a row that attends to another's tokens or at shifted positions scores otherwise
    torch.testing.assert_close(scores, expected_scores, rtol=1e-4, atol=1e-4)
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    texts = [row[m].tolist() for row, m in zip(ids, mask)]
    shared = 0  # the system prompt and the user turn's start: the last row has no <img>
    while len({t[shared] for t in texts}) == 1:
        shared += 1
    assert shared > 10 and vlm.config.image_token_id not in texts[0][:shared]
    pads = (~mask).sum(1).tolist()
    assert pads[0] == 0 and 0 < pads[1] < shared < pads[2]
    assert seen[0] == (1, shared)  # the prefix, once
    assert seen[1] == (4, ids.shape[1] - shared)  # then the rows' rest: the prefix is not run again
    assert all(s == (4, 1) for s in seen[2:])


def test_a_batch_with_nothing_in_common_or_beams_is_generated_as_before(tiny, monkeypatch):
    """Rows that differ from their first token, a right-padded batch, and beam search (whose cache transformers
    repeats itself) are left whole: one prefill over the whole padded batch."""
    vlm, processor = tiny
    tok = processor.tokenizer
    rows = [tok("red green blue")["input_ids"], tok("a cat")["input_ids"]]
    assert rows[0][0] != rows[1][0]
    width = max(map(len, rows))
    batch = {"input_ids": torch.tensor([[processor.pad_token_id] * (width - len(r)) + r for r in rows]),
             "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])}
    options = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=processor.pad_token_id,
                   suppress_tokens=tok.all_special_ids)
    expected, expected_scores = _one_by_one(vlm, batch, **options)
    seen = _forward_lengths(vlm, monkeypatch)
    got, scores = _batched(vlm, batch, **options)
    assert got == expected
    torch.testing.assert_close(scores, expected_scores, rtol=1e-4, atol=1e-4)
    assert seen[0] == (2, width)

    # right padded (as training pads): read as left padded, these rows would share 9 tokens at the wrong places
    right = {"input_ids": torch.tensor([[500] * 10 + [700, 800]] * 2),
             "attention_mask": torch.tensor([[1] * 12, [1] * 11 + [0]])}
    seen.clear()
    vlm.generate(**right, **options)
    assert seen[0] == (2, 12)

    same = {name: t.repeat(2, 1) for name, t in _batch(processor, [("Name a colour.", None)]).items()}
    seen.clear()
    vlm.generate(**same, **options, num_beams=2)
    assert seen[0][1] == same["input_ids"].shape[1]  # beams: the whole prompt in one prefill
