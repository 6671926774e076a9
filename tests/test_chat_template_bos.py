"""internvl2_5 prepends the tokenizer's BOS where it has one, as InternVL's preprocess_internvl2_5 does (InternLM2.5
LLMs: InternVL2.5-2B/8B/26B); a tokenizer without one (Qwen2.5: InternVL2.5-1B/4B, InternVL3) gets none."""

from __future__ import annotations

import copy

import pytest

import model as model_core
from model.chat import get_chat_template
from model.processor import IGNORE_INDEX

CONV = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]


@pytest.fixture(scope="module")
def processor():
    _, processor = model_core.load("pocket-tiny")
    processor.chat_template = get_chat_template("internvl2_5")
    return processor


def test_an_internlm_tokenizer_gets_its_bos_first(processor):
    with_bos = copy.copy(processor)
    with_bos.tokenizer = copy.deepcopy(processor.tokenizer)
    with_bos.tokenizer.bos_token = "<|endoftext|>"  # stands in for InternLM2.5's <s>
    bos = with_bos.tokenizer.bos_token_id
    assert bos is not None
    encoded = with_bos.encode_tokens(CONV, with_labels=True, add_generation_prompt=False)
    plain = processor.encode_tokens(CONV, with_labels=True, add_generation_prompt=False)
    assert encoded.input_ids[0].item() == bos and encoded.input_ids[1:].tolist() == plain.input_ids.tolist()
    assert encoded.labels[0].item() == IGNORE_INDEX  # masked, as InternVL masks it


def test_a_tokenizer_without_bos_gets_none(processor):
    assert processor.tokenizer.bos_token_id is None  # as Qwen2.5's
    encoded = processor.encode_tokens(CONV[:1], add_generation_prompt=True)
    text = processor.tokenizer.decode(encoded.input_ids.tolist())
    assert text == get_chat_template("internvl2_5").render(CONV[:1])
