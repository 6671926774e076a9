"""llama.cpp's context for `adapt chat/eval --runtime llamacpp` (deploy/llamacpp): chosen from what a prompt and its
answer need, up to the GGUF's context_length; a prompt past that is one error naming both numbers, and an answer
the context ended is marked, not cut quietly.

A pocket-tiny export whose trained context is 1024, opened with a context of 256: the same growth as the runtime's
default 4096 / 8192 against a long-context model, at sizes a CPU runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import model

from .deps import require

require("gguf", "the deploy extra: GGUF export")

from deploy.hf import export  # noqa: E402
from deploy.llamacpp import LlamaCppError  # noqa: E402
from deploy.llamacpp.runtime import LlamaCppVLM  # noqa: E402

from .test_gguf import llama_cpp  # noqa: E402,F401 - the built llama.cpp, or a skip

TRAINED = 1024  # the export's context_length
START = 256  # the context the runtime opens with here


@pytest.fixture(scope="module")
def long_export(tmp_path_factory) -> Path:
    vlm, processor = model.load("pocket-tiny")
    vlm.config.text_config.max_position_embeddings = TRAINED
    return export(vlm, processor, "gguf", tmp_path_factory.mktemp("ctx") / "long", qtype="f16", name="long",
                  progress=False)


def ask(words: int) -> list[dict]:
    return [{"role": "user", "content": "red " * words}]  # one token a word


def test_a_prompt_past_the_opening_context_answers_in_a_longer_one(long_export, llama_cpp):  # noqa: F811
    """A prompt (image tokens included) past the runtime's fixed context (4096 in chat, 8192 in eval) was refused
    ("does not fit the context of 4096") though the model's own context holds it; llama.cpp now reopens with room
    for the prompt and the answer."""
    with LlamaCppVLM(long_export, n_ctx=START) as runtime:
        assert runtime.n_ctx == START
        answer = runtime.chat(ask(400), max_new_tokens=8, cut_repeats=False)
        assert answer.timings["prompt_tokens"] > START and len(answer.tokens) == 8 and not answer.context_full
        assert answer.timings["prompt_tokens"] + 8 <= runtime.n_ctx <= TRAINED


def test_an_answer_the_opening_context_would_end_gets_a_longer_one(long_export, llama_cpp):  # noqa: F811
    """A prompt that fits but leaves less room than --max-new-tokens: the answer was cut quietly at the context;
    it now runs to --max-new-tokens where the model's context allows."""
    with LlamaCppVLM(long_export, n_ctx=START) as runtime:
        answer = runtime.chat(ask(200), max_new_tokens=100, cut_repeats=False)
    assert len(answer.tokens) == 100 and not answer.context_full


def test_an_answer_the_models_context_ends_is_marked(long_export, llama_cpp, capsys):  # noqa: F811
    """pocket-llama stops quietly when the prompt and the answer fill the context: `adapt chat` said nothing of a
    cut answer. The answer is marked context_full and `adapt chat` names the cut."""
    from adapt.cli import main

    with LlamaCppVLM(long_export, n_ctx=START) as runtime:
        answer = runtime.chat(ask(TRAINED - 60), max_new_tokens=64, cut_repeats=False)
        assert runtime.n_ctx == TRAINED
    # every position holds a token, and the last one's logits gave the answer's last token
    assert answer.context_full and answer.timings["prompt_tokens"] + len(answer.tokens) == TRAINED + 1
    assert 0 < len(answer.tokens) < 64
    capsys.readouterr()
    assert main(["chat", "--runtime", "llamacpp", "--model", str(long_export), "--max-new-tokens", "64",
                 "--keep-repeats", "red " * (TRAINED - 60)]) == 0
    err = capsys.readouterr().err
    assert f"[cut at {len(answer.tokens)} tokens: the model's context is full]" in err, err


def test_a_prompt_past_the_models_context_names_both_numbers(long_export, llama_cpp, capsys):  # noqa: F811
    """A prompt longer than the model's trained context: one error naming the prompt's tokens and the model's
    context (not the runtime's opening one)."""
    from adapt.cli import main

    with LlamaCppVLM(long_export, n_ctx=START) as runtime:
        with pytest.raises(LlamaCppError, match=rf"takes 10\d\d tokens .*does not fit the model's context of {TRAINED}"):
            runtime.chat(ask(TRAINED), max_new_tokens=4)
    capsys.readouterr()
    assert main(["chat", "--runtime", "llamacpp", "--model", str(long_export), "red " * TRAINED]) == 1
    err = capsys.readouterr().err
    assert f"the model's context of {TRAINED}" in err and "Traceback" not in err, err


def test_a_huge_max_new_tokens_does_not_allocate_the_whole_context(long_export, llama_cpp):  # noqa: F811
    """llama.cpp allocates its whole context up front: the answer's room grows by at most the current context per
    step, so --max-new-tokens 3000000000 on a short answer does not open the trained context."""
    with LlamaCppVLM(long_export, n_ctx=START) as runtime:
        runtime.llama.fit(300, 3_000_000_000)
        assert runtime.n_ctx == 768  # 300 + 256, in steps of 256


def test_eval_of_a_sample_past_the_opening_context(long_export, llama_cpp):  # noqa: F811
    """`adapt eval --runtime llamacpp` opened llama.cpp with 8192 positions whatever the sample: a longer sample
    failed. It now answers in a longer context, and one past the model's is an error naming both numbers."""
    from deploy.llamacpp.eval import LlamaCppEvalModel

    processor = model.load("pocket-tiny")[1]
    runtime = LlamaCppEvalModel(long_export, processor, n_ctx=START)
    try:
        ids = processor.tokenizer("red " * 400)["input_ids"]
        tokens, timings = runtime.answer_row(ids, None, 8, [])
        assert len(tokens) == 8 and timings["prompt_tokens"] == len(ids) and runtime.llama.n_ctx > START
        ids = processor.tokenizer("red " * TRAINED)["input_ids"]
        with pytest.raises(LlamaCppError, match=rf"takes {len(ids)} tokens .*model's context of {TRAINED}"):
            runtime.answer_row(ids, None, 8, [])
    finally:
        runtime.close()


def test_tile_files_do_not_pile_up_over_an_eval(long_export, example_image, llama_cpp):  # noqa: F811
    """Every answer wrote its tiles to a new scratch file, kept until the runtime closed: an `adapt eval` of
    thousands of multi-tile samples filled the temp folder (13 InternVL tiles are 7.8 MB a sample), and naming the
    next file listed them all. They are removed once the answer is in."""
    with LlamaCppVLM(long_export) as runtime:
        for _ in range(2):
            assert runtime.chat(ask(3), [example_image], max_new_tokens=2).tokens
            assert list(runtime.llama.scratch.iterdir()) == []
