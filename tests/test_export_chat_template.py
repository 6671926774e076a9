"""The Jinja chat template every export embeds (GGUF `tokenizer.chat_template`, the tokenizer folder's
`chat_template.jinja`, ONNX / ExecuTorch `chat_template.json`) renders the prompt our own builder does
(`place_images` then `ChatTemplate.render`), the `image_first` rule of MobileVLM's vicuna_v1 included."""

from __future__ import annotations

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import AutoTokenizer

from model.chat import chat_template_jinja, get_chat_template, list_chat_templates
from model.processor import VLMProcessor, place_images
from model.tiling import TilingConfig

# (messages as a user would send them, the same conversation as plain strings for our builder, image count)
CONVERSATIONS = [
    ([{"role": "user", "content": "What is it?\n<image>"}], None, 1),
    ([{"role": "user", "content": "Look: <image> what is it? "}], None, 1),
    ([{"role": "user", "content": "<image>"}], None, 1),
    ([{"role": "user", "content": "<image>\nWhat is it?"}], None, 1),
    ([{"role": "user", "content": "Image-1: <image>\nWhat is it?"}], None, 1),  # vicuna_v1: the label goes too
    ([{"role": "user", "content": "<image> and <image>?"}], None, 2),  # several: left as they are
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
      {"role": "assistant", "content": "an answer"}, {"role": "user", "content": "and this? <image>"}], None, 1),
    ([{"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "image"}]}],
     [{"role": "user", "content": "What is it?<image>\n"}], 1),
    ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
     [{"role": "user", "content": "<image>\nWhat is it?"}], 1),
    ([{"role": "user", "content": [{"type": "text", "text": "q"}]}, {"role": "assistant", "content": "a"},
      {"role": "user", "content": [{"type": "text", "text": "Now: "}, {"type": "image"},
                                   {"type": "text", "text": "?"}]}],
     [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
      {"role": "user", "content": "Now: <image>\n?"}], 1),
]


def _built(template, messages: list[dict], n_images: int) -> str:
    return template.render(place_images(messages, n_images, template))


@pytest.mark.parametrize("name", list_chat_templates())
def test_jinja_places_images_as_the_prompt_builder_does(name):
    """A turn's `<image>` goes first for vicuna_v1 (`image_first`) in the Jinja too, for plain-string and
    list-of-parts contents; other templates leave it where it is. The Jinja kept a trailing `<image>` last, so
    llama.cpp / transformers prompted MobileVLM `USER: What is it?\\n<image>` where training had
    `<image>\\nWhat is it?`."""
    template = get_chat_template(name)
    jinja = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        chat_template_jinja(template))  # transformers' environment
    for messages, as_strings, n_images in CONVERSATIONS:
        expected = _built(template, as_strings or messages, n_images)
        for generation_prompt in (True, False):
            rendered = jinja.render(messages=messages, add_generation_prompt=generation_prompt)
            assert rendered == template.render(place_images(as_strings or messages, n_images, template),
                                               add_generation_prompt=generation_prompt), (name, messages)
        if template.image_first and n_images == 1:
            user = [m for m in place_images(as_strings or messages, n_images, template) if m["role"] == "user"][-1]
            assert user["content"].startswith("<image>") and f"USER: {user['content']} ASSISTANT:" in expected


def test_saved_tokenizer_prompts_mobilevlm_as_the_processor(tiny_tokenizer, tmp_path):
    """The tokenizer folder an export writes (`chat_template.jinja`) gives transformers' `apply_chat_template` the
    same text, and so the same tokens, as our builder for a question with its image last."""
    template = get_chat_template("vicuna_v1")
    processor = VLMProcessor(tiny_tokenizer, TilingConfig(), template, image_seq_length=4,
                             image_start_token=None, image_end_token=None)
    processor.save_pretrained(tmp_path)
    saved = AutoTokenizer.from_pretrained(str(tmp_path))
    messages = [{"role": "user", "content": "What is it?\n<image>"}]
    text = saved.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = saved.bos_token or ""
    assert text == bos + _built(template, messages, 1)
    ids = saved.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert list(ids) == saved(bos + _built(template, messages, 1), add_special_tokens=False)["input_ids"]


def test_a_saved_fast_tokenizer_names_a_class_transformers_4_knows(tiny_tokenizer, tmp_path):
    """transformers 5 wrote ``"tokenizer_class": "TokenizersBackend"`` for a generic fast tokenizer; transformers 4
    (InternVL's and MobileVLM's scripts) has no such class. The folder names PreTrainedTokenizerFast, which 5 reads
    as the same class."""
    import json

    processor = VLMProcessor(tiny_tokenizer, TilingConfig(), get_chat_template("internvl2_5"), image_seq_length=4)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    saved = AutoTokenizer.from_pretrained(str(tmp_path))
    assert saved("a red square").input_ids == tiny_tokenizer("a red square").input_ids
    assert "chat_template" not in config or config["chat_template"]  # the rest of the file is kept
