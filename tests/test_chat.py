"""Chat templates (templates/chat/*.yaml, model/chat.py): byte-exact prompts, segments, errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from model.chat import (
    ChatTemplate,
    ConversationError,
    chat_template_jinja,
    get_chat_template,
    list_chat_templates,
    load_chat_template,
    normalize_messages,
)
from model.resources import templates_dir

BUNDLED = ["Hermes-2", "internlm2-chat", "internvl2_5", "phi3-chat", "pocket-tiny", "vicuna_v1"]

# Written out independently of the YAML files (see internvl.md §7 and mobilevlm.md §7).
SYS_INTERNVL2 = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
SYS_INTERNVL2_5 = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
SYS_VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SYS_POCKET = "You are Pocket, a small vision-language assistant."

Q1, A1 = "<image>\nWhat shape is at the top-left?", "A red circle."
Q2, A2 = "How many shapes are there?", "3"
TWO_TURNS = [
    {"role": "user", "content": Q1},
    {"role": "assistant", "content": A1},
    {"role": "user", "content": Q2},
    {"role": "assistant", "content": A2},
]
ASKING = TWO_TURNS[:3]  # ends with a user turn: the generation prompt applies

CHATML_NO_NL = (
    "<|im_start|>system\n{sys}<|im_end|>"
    "<|im_start|>user\n" + Q1 + "<|im_end|>"
    "<|im_start|>assistant\n" + A1 + "<|im_end|>"
    "<|im_start|>user\n" + Q2 + "<|im_end|>"
    "<|im_start|>assistant\n"
)
EXPECTED_PROMPT = {
    "Hermes-2": CHATML_NO_NL.format(sys=SYS_INTERNVL2),
    "internlm2-chat": CHATML_NO_NL.format(sys=SYS_INTERNVL2),
    "pocket-tiny": CHATML_NO_NL.format(sys=SYS_POCKET),
    "phi3-chat": (
        "<|system|>\n" + SYS_INTERNVL2 + "<|end|>"
        "<|user|>\n" + Q1 + "<|end|>"
        "<|assistant|>\n" + A1 + "<|end|>"
        "<|user|>\n" + Q2 + "<|end|>"
        "<|assistant|>\n"
    ),
    "internvl2_5": (
        "<|im_start|>system\n" + SYS_INTERNVL2_5 + "<|im_end|>\n"
        "<|im_start|>user\n" + Q1 + "<|im_end|>\n"
        "<|im_start|>assistant\n" + A1 + "<|im_end|>\n"
        "<|im_start|>user\n" + Q2 + "<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "vicuna_v1": SYS_VICUNA + " USER: " + Q1 + " ASSISTANT: " + A1 + "</s>USER: " + Q2 + " ASSISTANT:",
}
# The full two-turn conversation (training text): prompt without the generation prompt, plus the answer.
END = {"Hermes-2": "<|im_end|>", "internlm2-chat": "<|im_end|>", "pocket-tiny": "<|im_end|>",
       "phi3-chat": "<|end|>", "internvl2_5": "<|im_end|>", "vicuna_v1": "</s>"}
EXPECTED_FULL = {
    "Hermes-2": EXPECTED_PROMPT["Hermes-2"] + A2 + "<|im_end|>",
    "internlm2-chat": EXPECTED_PROMPT["internlm2-chat"] + A2 + "<|im_end|>",
    "pocket-tiny": EXPECTED_PROMPT["pocket-tiny"] + A2 + "<|im_end|>",
    "phi3-chat": EXPECTED_PROMPT["phi3-chat"] + A2 + "<|end|>",
    "internvl2_5": EXPECTED_PROMPT["internvl2_5"] + A2 + "<|im_end|>\n",
    "vicuna_v1": EXPECTED_PROMPT["vicuna_v1"] + " " + A2 + "</s>",
}


def test_list_chat_templates():
    assert list_chat_templates() == sorted(BUNDLED)
    for name in BUNDLED:
        assert (templates_dir() / "chat" / f"{name}.yaml").is_file()


@pytest.mark.parametrize("name", BUNDLED)
def test_yaml_fields(name):
    data = yaml.safe_load((templates_dir() / "chat" / f"{name}.yaml").read_text(encoding="utf-8"))
    assert data["name"] == name
    assert set(data) == {f.name for f in dataclasses.fields(ChatTemplate)}
    assert data["sep_style"] == ("two" if name == "vicuna_v1" else "mpt")
    assert isinstance(data["description"], str) and data["description"].strip()
    assert "\n" not in data["description"]


@pytest.mark.parametrize("name", BUNDLED)
def test_generation_prompt_exact(name):
    t = get_chat_template(name)
    assert t.name == name
    assert t.render(ASKING) == EXPECTED_PROMPT[name]
    assert t.render(ASKING, add_generation_prompt=True) == EXPECTED_PROMPT[name]


@pytest.mark.parametrize("name", BUNDLED)
def test_full_conversation_exact(name):
    t = get_chat_template(name)
    assert t.render(TWO_TURNS, add_generation_prompt=False) == EXPECTED_FULL[name]
    # A conversation that ends with an answer gets no generation prompt.
    assert t.render(TWO_TURNS) == EXPECTED_FULL[name]


@pytest.mark.parametrize("name", BUNDLED)
def test_no_generation_prompt(name):
    t = get_chat_template(name)
    text = t.render(ASKING, add_generation_prompt=False)
    role = "ASSISTANT:" if name == "vicuna_v1" else t.assistant_role
    assert EXPECTED_PROMPT[name] == text + role


def test_system_messages_verbatim():
    assert get_chat_template("Hermes-2").system_message == SYS_INTERNVL2
    assert get_chat_template("internlm2-chat").system_message == SYS_INTERNVL2
    assert get_chat_template("phi3-chat").system_message == SYS_INTERNVL2
    assert get_chat_template("internvl2_5").system_message == SYS_INTERNVL2_5
    assert get_chat_template("vicuna_v1").system_message == SYS_VICUNA
    assert get_chat_template("pocket-tiny").system_message == SYS_POCKET


def test_separators_and_stop_strings():
    for name in ("Hermes-2", "internlm2-chat", "pocket-tiny"):
        t = get_chat_template(name)
        assert (t.sep, t.sep2) == ("<|im_end|>", None)
        assert "<|im_end|>\n" not in t.render(TWO_TURNS)
    assert get_chat_template("phi3-chat").sep == "<|end|>"
    assert get_chat_template("internvl2_5").sep == "<|im_end|>\n"
    vic = get_chat_template("vicuna_v1")
    assert (vic.sep, vic.sep2, vic.roles) == (" ", "</s>", ("USER", "ASSISTANT"))

    assert get_chat_template("Hermes-2").stop_strings == ("<|im_end|>", "<|endoftext|>")
    assert get_chat_template("pocket-tiny").stop_strings == ("<|im_end|>", "<|endoftext|>")
    assert get_chat_template("internlm2-chat").stop_strings == ("<|im_end|>",)
    assert get_chat_template("internvl2_5").stop_strings == ("<|im_end|>",)
    assert get_chat_template("phi3-chat").stop_strings == ("<|end|>",)
    assert get_chat_template("vicuna_v1").stop_strings == ("</s>",)
    assert {n: get_chat_template(n).eos_string for n in BUNDLED} == END


def test_hermes_and_internlm2_render_identically():
    for msgs in (ASKING, TWO_TURNS):
        assert get_chat_template("Hermes-2").render(msgs) == get_chat_template("internlm2-chat").render(msgs)


def test_internvl_1b_example_prompt():
    """internvl.md §7, example prompt for the 1B model (Hermes-2), after image-token expansion."""
    tiles, question = 2, "Describe the image."
    image = "<img>" + "<IMG_CONTEXT>" * (256 * tiles) + "</img>"
    expected = (
        "<|im_start|>system\n" + SYS_INTERNVL2 + "<|im_end|><|im_start|>user\n"
        + image + "\n" + question + "<|im_end|><|im_start|>assistant\n"
    )
    prompt = get_chat_template("Hermes-2").render([{"role": "user", "content": image + "\n" + question}])
    assert prompt == expected
    assert prompt.count("<IMG_CONTEXT>") == 512


def test_vicuna_inference_prompt():
    """mobilevlm.md §7: `{system} USER: <image>\\n{question} ASSISTANT:`."""
    prompt = get_chat_template("vicuna_v1").render([{"role": "user", "content": "<image>\nWhat is it?"}])
    assert prompt == SYS_VICUNA + " USER: <image>\nWhat is it? ASSISTANT:"
    assert prompt.endswith("ASSISTANT:")


@pytest.mark.parametrize("name", BUNDLED)
def test_jinja_renders_transformers_style_content_and_bos(name):
    """The Jinja template exports carry renders a list of content items as transformers' InternVL template does (an
    image item: the placeholder and a newline; a video item likewise where the export has one; text verbatim), equal
    to the string prompt; `bos` puts `bos_token` first exactly where the template trains with BOS. It took only string
    content (`TypeError: can only concatenate list (not "str") to list` on an image item)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    t = get_chat_template(name)
    items = [{"role": "system", "content": [{"type": "text", "text": "Sys."}]},
             {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Q?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
             {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Both?"}]}]
    text = [{"role": "system", "content": "Sys."}, {"role": "user", "content": "<IMG_CONTEXT>\n<video>\nQ?"},
            {"role": "assistant", "content": "A."}, {"role": "user", "content": "<IMG_CONTEXT>\n<IMG_CONTEXT>\nBoth?"}]

    def render(jinja: str, messages: list[dict], **kwargs) -> str:
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=jinja, add_generation_prompt=True,
                                            **kwargs)
        return rendered[0]

    native = chat_template_jinja(t, image_token="<IMG_CONTEXT>", video_token="<video>", bos=True)
    bos = "<s>" if t.add_bos else ""
    assert render(native, items, bos_token="<s>") == render(native, text, bos_token="<s>") == bos + t.render(text)
    assert render(native, items, bos_token=None) == t.render(text)  # a tokenizer without BOS
    plain = chat_template_jinja(t)  # GGUF's: <image>, no video items, no BOS (llama.cpp adds it)
    assert render(plain, items[1:2], bos_token="<s>") == t.render([{"role": "user", "content": "<image>\nQ?"}])


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("label", ["Frame-1: ", "Frame1: ", "Image-1: "])
def test_a_one_frame_video_prompts_as_its_family_does(name, label):
    """A one-frame video is ``Frame-1: <image>\\nQ`` (InternVL's `video_get_item`; its inference docs write
    ``Frame1:``), kept so by InternVL templates. Templates that put the image first (LLaVA / MobileVLM, which have no
    frame labels) moved only the placeholder: ``<image>\\nFrame-1:\\nQ``, a label naming no frame. They now prompt
    it as one image, ``<image>\\nQ``, in our builder, the exports' Jinja and llama.cpp's (marker) Jinja alike;
    several frames keep their labels everywhere. A hand-written ``Image-1: <image>`` with one image (a label our own
    prompts give only to several images) is such a label too: vicuna_v1 kept ``<image>\\nImage-1:\\nQ``."""
    import jinja2

    from model.processor import place_images

    t = get_chat_template(name)
    video = [{"role": "user", "content": f"{label}<image>\nWhat moves?"}]
    built = t.render(place_images(video, 1, t))
    if t.image_first:
        assert built == t.render([{"role": "user", "content": "<image>\nWhat moves?"}])
        assert label[:5] not in built  # "Frame", "Image"
    else:
        assert f"{label}<image>\nWhat moves?" in built
    two = [{"role": "user", "content": "Frame-1: <image>\nFrame-2: <image>\nWhat moves?"}]
    assert "Frame-1: <image>\nFrame-2: <image>\nWhat moves?" in t.render(place_images(two, 2, t))
    env = jinja2.Environment()
    for messages in (video, [{"role": "user", "content": [{"type": "text", "text": label}, {"type": "image"},
                                                           {"type": "text", "text": "What moves?"}]}]):
        assert env.from_string(chat_template_jinja(t)).render(messages=messages, add_generation_prompt=True) == built
    marked = env.from_string(chat_template_jinja(t, markers=("<__media__>",)))
    assert marked.render(messages=video, add_generation_prompt=True) == built.replace("<image>", "<__media__>")


def test_image_placeholder_is_plain_text():
    for name in BUNDLED:
        assert get_chat_template(name).render(ASKING).count("<image>") == 1


def test_system_message_override():
    t = get_chat_template("Hermes-2")
    with_sys = [{"role": "system", "content": "Be brief."}] + ASKING
    assert t.render(with_sys) == EXPECTED_PROMPT["Hermes-2"].replace(SYS_INTERNVL2, "Be brief.")
    assert t.render(ASKING, system_message="Custom.") == EXPECTED_PROMPT["Hermes-2"].replace(SYS_INTERNVL2, "Custom.")
    # A system message in the conversation wins over the argument.
    assert t.render(with_sys, system_message="Custom.") == t.render(with_sys)
    # An empty system message still renders the system block (as InternVL does).
    assert t.render(ASKING, system_message="").startswith("<|im_start|>system\n<|im_end|><|im_start|>user\n")
    vic = get_chat_template("vicuna_v1")
    assert vic.render([{"role": "system", "content": "S."}] + ASKING) == EXPECTED_PROMPT["vicuna_v1"].replace(SYS_VICUNA, "S.")


def _conversations():
    sys = [{"role": "system", "content": "Sys."}]
    one = TWO_TURNS[:2]
    return {
        "one_turn": one,
        "two_turns": TWO_TURNS,
        "asking": ASKING,
        "with_system": sys + TWO_TURNS,
        "with_system_asking": sys + ASKING,
        "empty_answer": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}],
        "multiline": [{"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "line 1\nline 2\n"}],
    }


# Each published template written out literally, per turn: (text, trained) pieces, where "{}" stands for the
# message content. Only an assistant answer and its stripped end separator are trained.
TURNS: dict[str, dict[str, list[tuple[str, bool]]]] = {
    chatml: {
        "system": [("<|im_start|>system\n{}<|im_end|>", False)],
        "user": [("<|im_start|>user\n{}<|im_end|>", False)],
        "assistant": [("<|im_start|>assistant\n", False), ("{}<|im_end|>", True)],
        "prompt": [("<|im_start|>assistant\n", False)],
    }
    for chatml in ("Hermes-2", "internlm2-chat", "pocket-tiny")
} | {
    "internvl2_5": {
        "system": [("<|im_start|>system\n{}<|im_end|>\n", False)],
        "user": [("<|im_start|>user\n{}<|im_end|>\n", False)],
        "assistant": [("<|im_start|>assistant\n", False), ("{}<|im_end|>", True), ("\n", False)],
        "prompt": [("<|im_start|>assistant\n", False)],
    },
    "phi3-chat": {
        "system": [("<|system|>\n{}<|end|>", False)],
        "user": [("<|user|>\n{}<|end|>", False)],
        "assistant": [("<|assistant|>\n", False), ("{}<|end|>", True)],
        "prompt": [("<|assistant|>\n", False)],
    },
    "vicuna_v1": {
        "system": [("{} ", False)],
        "user": [("USER: {} ", False)],
        "assistant": [("ASSISTANT: ", False), ("{}</s>", True)],
        "prompt": [("ASSISTANT:", False)],
    },
}
DEFAULT_SYSTEM = {"Hermes-2": SYS_INTERNVL2, "internlm2-chat": SYS_INTERNVL2, "phi3-chat": SYS_INTERNVL2,
                  "internvl2_5": SYS_INTERNVL2_5, "vicuna_v1": SYS_VICUNA, "pocket-tiny": SYS_POCKET}


def expected_chars(name: str, msgs: list[dict], gen: bool) -> tuple[str, list[bool]]:
    """The literal render of `msgs` under template `name`, and for each character whether it is trained."""
    turns = list(msgs) if msgs[0]["role"] == "system" else [{"role": "system", "content": DEFAULT_SYSTEM[name]}, *msgs]
    pieces = [(text.replace("{}", m["content"]), trained) for m in turns for text, trained in TURNS[name][m["role"]]]
    if gen and msgs[-1]["role"] == "user":
        pieces += TURNS[name]["prompt"]
    return "".join(t for t, _ in pieces), [trained for t, trained in pieces for _ in t]


@pytest.mark.parametrize("name", BUNDLED)
def test_literal_turns_match_the_published_renders(name):
    """The per-turn table above reproduces the byte-exact published prompts it is built from."""
    assert expected_chars(name, ASKING, True)[0] == EXPECTED_PROMPT[name]
    assert expected_chars(name, TWO_TURNS, False)[0] == EXPECTED_FULL[name]


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("conv", sorted(_conversations()))
@pytest.mark.parametrize("gen", [False, True])
def test_segments_mark_exactly_the_assistant_spans(name, conv, gen):
    """Every character of the segments is the literal render's, and trained exactly where it belongs to an
    assistant answer or its end token: a shifted boundary or a wrong flag fails here."""
    msgs = _conversations()[conv]
    text, trained = expected_chars(name, msgs, gen)
    segs = get_chat_template(name).segments(msgs, add_generation_prompt=gen)
    assert "".join(t for t, _ in segs) == text
    got = [flag for t, flag in segs for _ in t]
    wrong = [k for k, (a, b) in enumerate(zip(got, trained)) if a != b]
    assert not wrong, f"trained flag wrong from character {wrong[0]}: {text[max(wrong[0] - 20, 0):wrong[0] + 20]!r}"
    assert all(t for t, _ in segs)
    flags = [f for _, f in segs]
    assert all(a != b for a, b in zip(flags, flags[1:])), "adjacent pieces with the same flag are merged"


@pytest.mark.parametrize("name", BUNDLED)
def test_trained_segments_exact(name):
    segs = get_chat_template(name).segments(TWO_TURNS)
    assert [text for text, trained in segs if trained] == [A1 + END[name], A2 + END[name]]
    untrained = "".join(text for text, trained in segs if not trained)
    assert A1 not in untrained and A2 not in untrained


def test_segments_examples():
    segs = get_chat_template("Hermes-2").segments(TWO_TURNS[:2], system_message="S")
    assert segs == [
        ("<|im_start|>system\nS<|im_end|><|im_start|>user\n" + Q1 + "<|im_end|><|im_start|>assistant\n", False),
        (A1 + "<|im_end|>", True),
    ]
    segs = get_chat_template("internvl2_5").segments(TWO_TURNS[:2], system_message="S")
    assert segs == [
        ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n" + Q1 + "<|im_end|>\n<|im_start|>assistant\n", False),
        (A1 + "<|im_end|>", True),
        ("\n", False),  # masked, as in InternVL's preprocess_internvl2_5
    ]
    segs = get_chat_template("vicuna_v1").segments(TWO_TURNS, system_message="S")
    assert segs == [
        ("S USER: " + Q1 + " ASSISTANT: ", False),
        (A1 + "</s>", True),
        ("USER: " + Q2 + " ASSISTANT: ", False),
        (A2 + "</s>", True),
    ]
    segs = get_chat_template("pocket-tiny").segments(ASKING, add_generation_prompt=True)
    assert segs[-1] == ("<|im_start|>user\n" + Q2 + "<|im_end|><|im_start|>assistant\n", False)


@pytest.mark.parametrize(
    "msgs, match",
    [
        ([], "no user message"),
        ([{"role": "system", "content": "S"}], "no user message"),
        ([{"role": "assistant", "content": "A"}], "message 0: expected role 'user', got 'assistant'"),
        ([{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}], "message 1: expected role 'assistant', got 'user'"),
        ([{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}], "message 1: a system message"),
        ([{"role": "user", "content": "Q"}, {"role": "bot", "content": "A"}], "message 1: unknown role 'bot'"),
        ([{"role": "user", "content": None}], "message 0 \\(user\\): content must be a string"),
        ([{"role": "user"}], "message 0: expected a dict with 'role' and 'content'"),
        (["hello"], "message 0"),
        ("hello", "list of dicts"),
    ],
)
def test_bad_messages(msgs, match):
    """A misordered or malformed conversation is the data's fault, not the template's: a `ConversationError` (which
    evaluation skips, naming the record) rather than a `ChatTemplateError` (a model-config error)."""
    with pytest.raises(ConversationError, match=match):
        get_chat_template("Hermes-2").render(msgs)


def test_unknown_template_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_chat_template("chatml-nope")
    msg = str(err.value)
    assert "chatml-nope" in msg
    for name in BUNDLED:
        assert name in msg


def _write(tmp_path, text, name="t.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _good_yaml() -> dict:
    return get_chat_template("pocket-tiny").to_dict()


def test_load_from_path(tmp_path):
    data = _good_yaml() | {"name": "mine", "system_message": "Hi."}
    p = _write(tmp_path, yaml.safe_dump(data, allow_unicode=True), "mine.yaml")
    t = load_chat_template(p)
    assert t.name == "mine" and t.system_message == "Hi."
    assert get_chat_template(str(p)) == t
    assert t.render(ASKING) == EXPECTED_PROMPT["pocket-tiny"].replace(SYS_POCKET, "Hi.")


def test_malformed_yaml_names_file(tmp_path):
    p = _write(tmp_path, "name: [unclosed\n  sep: :\n", "broken.yaml")
    with pytest.raises(ValueError, match="broken.yaml.*malformed YAML"):
        load_chat_template(p)
    p = _write(tmp_path, "- just\n- a list\n", "list.yaml")
    with pytest.raises(ValueError, match="list.yaml.*mapping"):
        load_chat_template(p)
    with pytest.raises(ValueError, match="missing.yaml"):
        load_chat_template(tmp_path / "missing.yaml")


def test_malformed_yaml_is_one_line_with_its_place(tmp_path):
    """As a recipe's: the file, the line and column, the problem; not PyYAML's lines naming "<unicode string>"."""
    p = _write(tmp_path, "name: mine\nsep: [unclosed\nroles: x\n", "broken.yaml")
    with pytest.raises(ValueError) as err:
        load_chat_template(p)
    message = str(err.value)
    assert message.startswith(f"{p}: malformed YAML at line ") and "column" in message
    assert "\n" not in message and "<unicode string>" not in message
    p = _write(tmp_path, "name: mine\n\tsep: x\n", "tabbed.yaml")
    with pytest.raises(ValueError, match="tabbed.yaml: malformed YAML at line 2.*no tab there"):
        load_chat_template(p)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ChatTemplate) if f.name not in ("add_bos", "strip_messages", "image_first")])
def test_missing_field_names_file_and_field(tmp_path, field):
    data = _good_yaml()
    del data[field]
    p = _write(tmp_path, yaml.safe_dump(data, allow_unicode=True), "nofield.yaml")
    with pytest.raises(ValueError, match=f"nofield.yaml: missing field '{field}'"):
        load_chat_template(p)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"sep_style": "chatml"}, "'sep_style'"),
        ({"sep": 3}, "'sep' must be a string"),
        ({"sep": ""}, "'sep' must not be empty"),
        ({"system_template": "<|im_start|>system\n"}, "'system_template'"),
        ({"stop_strings": []}, "'stop_strings'"),
        ({"stop_strings": "<|im_end|>"}, "'stop_strings'"),
        ({"sep2": "</s>"}, "'sep2' must be null"),
        ({"sep_style": "two"}, "'sep2'"),
        # white space alone as the end of an answer: training strips it, so the model never learnt to stop
        ({"sep": "\n"}, "'sep' .*ends each assistant answer.*more than white space"),
        ({"sep_style": "two", "sep": " ", "sep2": "\n\n"}, "'sep2' .*ends each assistant answer"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_invalid_field_values(tmp_path, change, match):
    p = _write(tmp_path, yaml.safe_dump(_good_yaml() | change, allow_unicode=True), "bad.yaml")
    with pytest.raises(ValueError, match=match) as err:
        load_chat_template(p)
    assert "bad.yaml" in str(err.value)


def test_template_is_frozen():
    t = get_chat_template("Hermes-2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.sep = "x"  # type: ignore[misc]
    assert isinstance(t.stop_strings, tuple)


def test_normalize_internvl_jsonl_turns():
    conv = [
        {"from": "system", "value": "Sys."},
        {"from": "human", "value": "<image>\nQ?"},
        {"from": "gpt", "value": "A."},
    ]
    assert normalize_messages(conv) == [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "<image>\nQ?"},
        {"role": "assistant", "content": "A."},
    ]
    rendered = get_chat_template("internvl2_5").render(normalize_messages(conv))
    assert rendered.startswith("<|im_start|>system\nSys.<|im_end|>\n<|im_start|>user\n<image>\nQ?")


def test_normalize_role_content_messages():
    msgs = [{"role": "user", "content": "Q", "extra": 1}, {"role": "assistant", "content": "A"}]
    assert normalize_messages(msgs) == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert normalize_messages([]) == []
    assert normalize_messages(tuple(msgs)) == normalize_messages(msgs)


@pytest.mark.parametrize(
    "conv, match",
    [
        ([{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}], "turn 1: unknown 'from' value 'bot'"),
        ([{"role": "user", "content": "Q"}, {"role": "gpt", "content": "A"}], "turn 1: unknown role 'gpt'"),
        ([{"from": "human"}], "turn 0: missing 'value'"),
        ([{"role": "user"}], "turn 0: missing 'content'"),
        ([{"from": "human", "value": "Q"}, {"text": "A"}], "turn 1: expected 'from'/'value' or 'role'/'content'"),
        ([{"from": "human", "value": ["Q"]}], "turn 0: content must be a string"),
        (["Q"], "turn 0: expected a dict"),
        ({"from": "human", "value": "Q"}, "list of turns"),
    ],
)
def test_normalize_errors(conv, match):
    with pytest.raises(ConversationError, match=match):
        normalize_messages(conv)


def test_stop_ids_follow_the_processors_chat_template_and_vocabulary():
    """The processor works its stop / dropped ids out once, but anew when the template or the vocabulary changes."""
    import model

    _, processor = model.load("pocket-tiny-scratch")
    before = processor.stop_token_ids
    processor.chat_template = dataclasses.replace(processor.chat_template,
                                                  stop_strings=(*processor.chat_template.stop_strings, "<|halt|>"))
    assert processor.stop_token_ids == before  # not a token of this vocabulary (yet)
    processor.tokenizer.add_tokens(["<|halt|>"], special_tokens=True)
    halt = processor.tokenizer.convert_tokens_to_ids("<|halt|>")
    assert halt in processor.stop_token_ids and halt not in before
    hello = processor.tokenizer.encode("hello there", add_special_tokens=False)
    assert processor.decode([*hello, halt, *hello]) == "hello there"


@pytest.mark.parametrize("damage, message", [
    (lambda text: text + "sep: '###'\n", r"duplicate key 'sep'"),
    (lambda text: text.replace("description:", "description: caf\xe9 #", 1).encode("latin-1"), r"is not UTF-8"),
])
def test_a_template_file_with_a_duplicate_key_or_non_utf8_bytes_is_one_error(tmp_path, damage, message):
    """load_chat_template used yaml.safe_load (a second `sep:` silently won) and raised a bare UnicodeDecodeError for
    a Latin-1 file; both now one ChatTemplateError naming the file, as a recipe reads them."""
    from model.chat import ChatTemplateError, _chat_dir, load_chat_template

    text = (_chat_dir() / "pocket-tiny.yaml").read_text(encoding="utf-8")
    path = tmp_path / "mine.yaml"
    out = damage(text)
    path.write_bytes(out) if isinstance(out, bytes) else path.write_text(out, encoding="utf-8")
    with pytest.raises(ChatTemplateError, match=message) as err:
        load_chat_template(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("text", ["", " \n "])
def test_an_empty_user_turn_is_a_conversation_error(name, text):
    """An empty question (no text, no image) rendered as ``USER:  ASSISTANT:``: a prompt of nothing, which neither
    InternVL nor LLaVA renders so (their templates read an empty message as the bare role)."""
    t = get_chat_template(name)
    with pytest.raises(ConversationError, match="message 0 \\(user\\): no text"):
        t.render([{"role": "user", "content": text}])
    later = [{"role": "system", "content": "S"}, *TWO_TURNS[:2], {"role": "user", "content": text}]
    with pytest.raises(ConversationError, match="message 3 \\(user\\): no text"):
        t.render(later)
    # an empty answer is history as the model gave it (it may stop at once): rendered, not refused
    assert t.render([{"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}], False)


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("msgs", [
    [{"role": "assistant", "content": "A"}],
    [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}],
    [{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}],
    [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q"}],
], ids=["assistant-first", "two-users", "late-system", "system-then-assistant"])
def test_jinja_refuses_what_render_refuses(name, msgs):
    """The exported Jinja template rendered a misordered conversation silently (a late system message as an
    assistant turn, two user turns in a row), where `render` refuses it: another runtime got a prompt the model
    never saw. It now raises, as HF templates do, with `render`'s rule."""
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    t = get_chat_template(name)
    with pytest.raises(ValueError, match="expected role|only allowed as the first"):
        t.render(msgs)
    for jinja in (chat_template_jinja(t), chat_template_jinja(t, markers=("<__media__>",))):
        with pytest.raises(TemplateError, match="must alternate user/assistant"):
            render_jinja_template(conversations=[msgs], chat_template=jinja, add_generation_prompt=True)
    fine = [{"role": "system", "content": "S"}, *TWO_TURNS, {"role": "user", "content": "Q3"}]
    rendered, _ = render_jinja_template(conversations=[fine], chat_template=chat_template_jinja(t),
                                        add_generation_prompt=True)
    assert rendered[0] == t.render(fine)
