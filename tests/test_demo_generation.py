"""The repetition cut shared by the demo and `adapt chat` (model/generation.py)."""

from __future__ import annotations

import re

import pytest
import torch

from model.generation import RepetitionStop, repetition_at_end


@pytest.mark.parametrize("ids, expected", [
    ([7] * 8, (1, 8)),                       # one token 8 times in a row
    ([5, 7, 7, 7, 7, 7, 7, 7], None),         # 7 times is not yet a loop ("1000000", "!!!!!!!")
    ([1, 2] * 4, (2, 4)),                     # "square green square green …"
    ([9, 1, 2] + [3, 4, 5] * 3, (3, 3)),      # the same 3-gram 3 times at the end
    ([3, 4, 5] * 2, None),                    # twice is a phrase said twice, not a loop
    ([3, 4, 5] * 3 + [6], None),              # only the end counts: a loop that was left is fine
    (list(range(40)), None),
    ([], None),
])
def test_repetition_at_end(ids, expected):
    assert repetition_at_end(ids) == expected


def test_the_stopping_criterion_stops_each_looping_row_and_remembers():
    stop = RepetitionStop(start=6)
    rows = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 1, 2, 1, 2],   # loops after the prompt
                         [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]])  # 8 generated 3s: a loop of its own
    assert stop(rows, None).tolist() == [True, True] and stop.fired
    prompt_loop = torch.tensor([[3, 3, 3, 3, 3, 3, 3, 3]])  # the prompt's repeats do not count
    assert not RepetitionStop(start=6)(prompt_loop, None).any() and RepetitionStop()(prompt_loop, None).all()
    assert not RepetitionStop()(torch.tensor([[1, 2, 3, 4]]), None).any()


@pytest.mark.parametrize("keep", [False, True], ids=["cut", "keep-repeats"])
def test_adapt_chat_cuts_a_looping_answer(monkeypatch, capsys, keep):
    """`adapt chat` with pocket-tiny forced to answer 60 tokens: it loops ("blue4444…") and is cut (a digit's
    repeats at NUMBER_SPAN tokens); with --keep-repeats it runs to 60 tokens."""
    import model
    from adapt.cli import main

    real_load = model.load
    lengths = []

    def load(*args, **kwargs):
        vlm, processor = real_load(*args, **kwargs)
        generate = vlm.generate

        def forced(*a, **kw):  # never stop at an end token: only the repetition rule can
            out = generate(*a, **kw, min_new_tokens=kw["max_new_tokens"])
            lengths.append(out.shape[-1])
            return out

        monkeypatch.setattr(vlm, "generate", forced)
        return vlm, processor

    monkeypatch.setattr(model, "load", load)
    assert main(["chat", "What is shown?", "--example-image", "--max-new-tokens", "60"] + ["--keep-repeats"] * keep) == 0
    out, err = capsys.readouterr()
    if keep:
        assert "repeating itself" not in err and lengths and lengths[0] >= 60, lengths
        return
    assert "[stopped: the answer had begun repeating itself]" in err
    answer = out.strip()
    assert lengths and lengths[0] < 40, lengths  # cut within a few repeats, not run to 60 tokens
    assert re.search(r"(.+?)\1{2,}$", answer), answer  # and it ends in the loop that stopped it


def test_cut_at_repetition_is_where_the_stopping_rule_fires():
    """Runtimes outside transformers cut a finished answer where `RepetitionStop` would have stopped it."""
    from model.generation import cut_at_repetition

    loop = [5, 6, 7] + [9, 4] * 6
    stop = RepetitionStop()
    fired_at = next(k for k in range(1, len(loop) + 1) if bool(stop(torch.tensor([loop[:k]]))[0]))
    assert cut_at_repetition(loop) == fired_at == 3 + 8  # the 2-gram's 4th repeat
    assert cut_at_repetition([1, 2, 3, 4, 5, 6]) is None


def test_pick_token_is_greedy_at_zero_and_samples_the_softmax_above():
    import numpy as np

    from deploy.runtimes import pick_token

    logits = np.array([0.0, 3.0, 1.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert pick_token(logits, 0.0, rng) == 1 and pick_token(torch.from_numpy(logits), 0.0, rng) == 1
    draws = np.bincount([pick_token(logits, 1.0, rng) for _ in range(4000)], minlength=3) / 4000
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.abs(draws - expected).max() < 0.03, draws


@pytest.mark.parametrize("text", ["Values: 0.000000001 m", "About 1,000,000,000 people.", "The image is 1000000000 pixels.",
                                  "A grid: | --- | --- | --- | --- |", "Coordinates 111111111"])
def test_numbers_and_tables_are_no_loop(text):
    """A unit of digits, punctuation and whitespace repeated is a number or a table, not a loop: 'Values:
    0.000000001 m' was cut to 'Values: 0.00000000' (a changed value), '| --- | --- | --- |' was cut."""
    from transformers import AutoTokenizer

    from model.generation import cut_at_repetition
    from model.presets import POCKET_TINY_TOKENIZER
    from model.resources import assets_dir

    tokenizer = AutoTokenizer.from_pretrained(str(assets_dir() / POCKET_TINY_TOKENIZER))
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert cut_at_repetition(ids, tokenizer.decode) is None
    assert not RepetitionStop(decode=tokenizer.decode)(torch.tensor([ids]), None).any()
    digits = [ord(c) for c in text]  # a tokenizer with one token per character (digit-per-token)
    assert cut_at_repetition(digits, lambda ids: "".join(map(chr, ids))) is None
    loop = tokenizer.encode("Values: left lung, left lung, left lung, left lung, left lung", add_special_tokens=False)
    assert cut_at_repetition(loop, tokenizer.decode) is not None  # words still loop
    assert cut_at_repetition([ord(c) for c in "nononononononono"], lambda ids: "".join(map(chr, ids))) is not None
    assert cut_at_repetition([ord(c) for c in "4" * 40], lambda ids: "".join(map(chr, ids))) == 32  # run on: a loop


def test_demo_streamer_keeps_grounding_markup():
    """The demo's streamer decoded with skip_special_tokens and dropped '<ref>' / '<box>': the answer the page showed
    lost its markup, while processor.decode (and adapt chat) keep it."""
    import torch

    import model
    from model.generation import StopStreamer

    _, processor = model.load("pocket-tiny")
    ids = processor.tokenizer.encode("<ref>red circle</ref><box>[[10, 20, 300, 400]]</box>\nnext<|im_end|>after",
                                     add_special_tokens=False)
    streamer = StopStreamer(processor)  # the one the demo streams with
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    text = "".join(streamer)
    assert text == processor.decode(ids) == "<ref>red circle</ref><box>[[10, 20, 300, 400]]</box>\nnext"
