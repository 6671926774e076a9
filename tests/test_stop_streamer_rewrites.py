"""StopStreamer with a tokenizer whose decode rewrites earlier text as tokens arrive (HF's
clean_up_tokenization_spaces, sentencepiece's leading space, byte fallback's partial UTF-8): what it hands on is
always a prefix of the final answer, it keeps streaming, and no half character ("\ufffd") is ever handed on."""

from __future__ import annotations

import threading

import torch
from transformers import PreTrainedTokenizerBase

# sentencepiece pieces ("▁" = a space) and byte-fallback tokens; id 0 ends the answer
VOCAB = ["</s>", "▁I", "▁do", "▁n", "'", "t", "▁know", "▁,", "▁he", "▁said", "▁'", "▁hi", "▁.", "▁caf",
         "<0xC3>", "<0xA9>", "▁", "<0xE2>", "<0x82>", "<0xAC>", "▁ok"]
ANSWER = ["▁I", "▁do", "▁n", "'", "t", "▁know", "▁,", "▁he", "▁said", "▁'", "▁hi", "▁'", "▁.", "▁caf", "<0xC3>",
          "<0xA9>", "▁", "<0xE2>", "<0x82>", "<0xAC>", "▁ok"]


class RewritingProcessor:
    """The parts of model.processor.Processor that StopStreamer uses, over a decode that rewrites earlier text."""

    stop_token_ids = [0]
    text_stop_strings: list[str] = []

    def decode(self, ids, skip_special_tokens: bool = True, cut_text_stops: bool = True) -> str:
        out, pending = "", b""
        for i in ids:
            piece = VOCAB[i]
            if piece.startswith("<0x"):
                pending += bytes([int(piece[3:5], 16)])
                continue
            out += pending.decode("utf-8", errors="replace") + piece.replace("▁", " ")
            pending = b""
        out += pending.decode("utf-8", errors="replace")  # an incomplete character: "\ufffd"
        out = out[1:] if out.startswith(" ") else out  # sentencepiece drops the first piece's space
        return PreTrainedTokenizerBase.clean_up_tokenization(None, out).strip()  # " n't" -> "n't", " ," -> ","


def _feed(streamer, ids):
    streamer.put(torch.tensor([[5, 6]]))  # the prompt: skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()


def test_streamed_text_stays_a_prefix_of_the_answer_when_decode_rewrites_it():
    from model.generation import StopStreamer

    processor = RewritingProcessor()
    ids = [VOCAB.index(p) for p in ANSWER]
    final = processor.decode(ids)
    assert final == "I don't know, he said'hi '. café € ok"  # the rewrites this test is about
    pieces: list[str] = []
    streamer = StopStreamer(processor, on_text=pieces.append)
    _feed(streamer, ids)
    assert streamer.text == final
    assert "".join(pieces) == final, pieces  # nothing lost, nothing handed on that was later rewritten
    assert not any("\ufffd" in piece for piece in pieces)
    assert len(pieces) > 3  # it streamed as it went, not all at the end
    shown = ""
    for piece in pieces:
        shown += piece
        assert final.startswith(shown)


def test_an_answer_cut_inside_a_character_ends_before_it():
    """max_new_tokens may end an answer between the bytes of one character: the answer ends before it."""
    from model.generation import StopStreamer

    processor = RewritingProcessor()
    ids = [VOCAB.index(p) for p in ["▁caf", "<0xC3>", "<0xA9>", "▁", "<0xE2>", "<0x82>"]]
    streamer = StopStreamer(processor)
    _feed(streamer, ids)
    assert "".join(streamer) == streamer.text == "café"


def test_demo_page_shows_only_prefixes_of_the_answer():
    """The demo (ModelSession.stream) shows the answer growing, each value a prefix of the last, no "\ufffd"."""
    from deploy.demo.session import ModelSession

    ids = [VOCAB.index(p) for p in ANSWER]

    class Encoded:
        input_ids = [5, 6]

        def to_model_inputs(self):
            return {"input_ids": torch.tensor([[5, 6]])}

    class Processor(RewritingProcessor):
        pad_token_id = 0

        def __init__(self):
            self.tokenizer = type("Tokenizer", (), {"decode": staticmethod(self.decode)})()

        def __call__(self, messages, images=(), **kwargs):
            return Encoded()

        def stop_kwargs(self):
            return {}

    class VLM:
        device, dtype = "cpu", torch.float32
        config = type("Config", (), {"text_config": type("Text", (), {"max_position_embeddings": 512})()})()

        def generate(self, *args, streamer, **kwargs):
            _feed(streamer, ids)

    session = object.__new__(ModelSession)
    session.vlm, session.processor, session.max_new_tokens, session._lock = VLM(), Processor(), 30, threading.Lock()
    shown = [str(answer) for answer in session.stream("What?")]
    assert shown[-1] == RewritingProcessor().decode(ids)
    assert len(shown) > 3 and all(shown[-1].startswith(text) for text in shown), shown
    assert not any("\ufffd" in text for text in shown)
