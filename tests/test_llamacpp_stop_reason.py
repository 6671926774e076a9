"""Why a llama.cpp answer ended (deploy/llamacpp, pocket_llama.cpp's ``stop``): an end-of-generation token drawn from
the context's last position is an answer that ended, and an answer the context cut is marked as cut.

The reason was read from the token count (fewer than asked and prompt + answer filling the context), which is the
same for both: `adapt chat --runtime llamacpp` told the user an answer that had ended was cut by the context.
A pocket-tiny export answers a question whose greedy answer ends with an end token; the context is then set so
that the end token is drawn from its last position, and one position shorter.

A context of n positions holds a prompt of P tokens and n - P answer tokens, and the last position's logits give
one more: an answer of n - P + 1 tokens fills it. pocket-llama stopped one token earlier, with the last position
unused, and said "context" (these tests asked for prompt + answer == n; they now ask for n + 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import model

from .deps import require

require("gguf", "the deploy extra: GGUF export")

from deploy.hf import export  # noqa: E402
from deploy.llamacpp import PocketLlama  # noqa: E402
from deploy.llamacpp.runtime import ExportFolder, LlamaCppVLM  # noqa: E402

from .test_gguf import llama_cpp  # noqa: E402,F401 - the built llama.cpp, or a skip

MESSAGES = [{"role": "user", "content": "What is <x>?"}]  # "greenpink" and an end token: 3 tokens


@pytest.fixture(scope="module")
def answered(tmp_path_factory, llama_cpp) -> tuple[Path, int, list[int], list[int]]:  # noqa: F811
    """(the export folder, prompt tokens, the answer's tokens up to its end token, the stop ids)."""
    vlm, processor = model.load("pocket-tiny")
    folder = export(vlm, processor, "gguf", tmp_path_factory.mktemp("stop") / "out", qtype="f32", name="s",
                    progress=False)
    with LlamaCppVLM(folder, n_ctx=512) as runtime:
        answer = runtime.llama.generate(200, messages=MESSAGES, stop_ids=runtime.stop_ids)
        stops = runtime.stop_ids
    # the question is chosen so that the answer ends on its own, after more tokens than the end token and one more
    assert answer["stop"] == "eog" and len(answer["tokens"]) >= 3, answer
    return folder, answer["timings"]["prompt_tokens"], answer["tokens"], stops


def _generate(folder: Path, n_ctx: int, stops: list[int]) -> dict:
    # the model's context is n_ctx: nothing to grow into, as at a model's trained context
    with PocketLlama(ExportFolder.open(folder).model, n_ctx=n_ctx, kv_f32=True, max_ctx=n_ctx) as llama:
        return llama.generate(200, messages=MESSAGES, stop_ids=stops)


def test_an_end_token_at_the_last_position_is_not_a_cut(answered, llama_cpp):  # noqa: F811
    folder, prompt, tokens, stops = answered
    answer = _generate(folder, prompt + len(tokens) - 1, stops)  # the end token: drawn from the last position
    assert answer["tokens"] == tokens and answer["tokens"][-1] in stops
    assert answer["stop"] == "eog" and not answer["context_full"]


def test_an_answer_the_context_cuts_is_marked(answered, llama_cpp):  # noqa: F811
    folder, prompt, tokens, stops = answered
    answer = _generate(folder, prompt + len(tokens) - 2, stops)
    assert answer["tokens"] == tokens[:-1]
    assert answer["stop"] == "context" and answer["context_full"]


def test_an_end_token_llamacpp_stops_on_is_no_part_of_the_answer(answered, llama_cpp):  # noqa: F811
    """llama.cpp also ends on its vocabulary's end tokens (eos, eot, <|endoftext|>, ...), not only the template's
    stop ids: such a token stayed in the answer's tokens, so an answer that ended at --max-new-tokens tokens read as
    cut there. Here the template's stop ids are not given, so only llama.cpp's own end tokens end the answer."""
    folder, _, tokens, _ = answered
    with LlamaCppVLM(folder, n_ctx=512) as runtime:
        runtime.stop_ids = []
        answer = runtime.chat(MESSAGES, max_new_tokens=len(tokens), cut_repeats=False)
    assert answer.tokens == tokens[:-1] and not answer.context_full


def test_a_stop_string_of_several_tokens_ends_the_answer_as_in_pytorch(tmp_path, llama_cpp):  # noqa: F811
    """A template stop string that is no single token (a custom template's "###") cuts PyTorch's answer as text
    (`VLMProcessor.decode`); llama.cpp's answer ran on past it. pocket-tiny answers "greenpink" here; "npi" spans
    two of its tokens."""
    import copy
    import dataclasses

    vlm, processor = model.load("pocket-tiny")
    processor = copy.copy(processor)
    processor.chat_template = dataclasses.replace(processor.chat_template,
                                                  stop_strings=(*processor.chat_template.stop_strings, "npi"))
    folder = export(vlm, processor, "gguf", tmp_path / "out", qtype="f32", name="s", progress=False)
    question = [{"role": "user", "content": "What is <x>?"}]
    with LlamaCppVLM(folder, n_ctx=512) as runtime:
        assert "npi" in runtime.text_stops
        runtime.text_stops = []
        whole = runtime.chat(question, max_new_tokens=12, cut_repeats=False)
        runtime.text_stops = ["npi"]
        answer = runtime.chat(question, max_new_tokens=len(whole.tokens), cut_repeats=False)
    assert whole.text == "greenpink"
    assert answer.text == "gree" == processor.decode(processor.tokenizer.encode("greenpink"))
    assert len(answer.tokens) < len(whole.tokens) and not answer.context_full


def test_given_stop_ids_are_the_whole_stop_set_as_in_pytorch(answered, llama_cpp):  # noqa: F811
    """PyTorch's generate stops on its ``eos_token_id`` list only; pocket-llama also stopped on every end token
    llama.cpp guesses from the vocabulary (``<|endoftext|>``, ``<|im_end|>``, ...), so a model that drew one of those
    (not the template's stop, not EOS) ended its answer in llama.cpp and went on in PyTorch. With stop ids given,
    they are now the whole set: here an id the answer never draws, so the answer runs past its end token."""
    folder, _, tokens, stops = answered
    unrelated = max(stops) + 1
    assert unrelated not in tokens
    with PocketLlama(ExportFolder.open(folder).model, n_ctx=512, kv_f32=True) as llama:
        answer = llama.generate(len(tokens) + 4, messages=MESSAGES, stop_ids=[unrelated])
    assert answer["tokens"][:len(tokens)] == tokens and len(answer["tokens"]) == len(tokens) + 4, answer
    assert answer["stop"] == "length"


def test_the_runtime_stops_on_the_exports_eos_as_pytorch_does(answered, llama_cpp):  # noqa: F811
    """The processor's stop ids are the template's stop tokens plus EOS; the runtime's are the same set, EOS read
    from the GGUF (tokenizer.ggml.eos_token_id)."""
    folder, *_ = answered
    vlm, processor = model.load("pocket-tiny")
    export_folder = ExportFolder.open(folder)
    assert export_folder.eos == processor.tokenizer.eos_token_id
    with LlamaCppVLM(folder, n_ctx=512) as runtime:
        assert runtime.stop_ids == sorted(set(processor.stop_token_ids))
