"""Chat (conversation) templates, stored as data in ``templates/chat/<name>.yaml``.

Two separator styles cover every supported model:

``mpt`` (InternVL ``SeparatorStyle.MPT``)
    ``system_template(sys) + sep``, then ``role + message + sep`` for every turn, then the bare
    assistant role as the generation prompt.  Used by ``Hermes-2``, ``internlm2-chat``,
    ``phi3-chat``, ``internvl2_5`` and ``pocket-tiny``.

``two`` (LLaVA / MobileVLM ``SeparatorStyle.TWO``)
    ``system_template(sys) + sep``, then ``role + ": " + message`` followed by ``sep`` after user
    turns and ``sep2`` after assistant turns; the generation prompt is ``role + ":"``.  Used by
    ``vicuna_v1``.

``ChatTemplate.segments`` cuts the rendered text into pieces flagged ``True`` where the text is
trained on: each assistant answer plus its end separator (the separator with trailing
whitespace removed, e.g. ``answer<|im_end|>``; the ``\\n`` that ``internvl2_5`` puts after
``<|im_end|>`` stays untrained, as in InternVL's ``preprocess_internvl2_5``).

The ``<image>`` placeholder is ordinary text here; image-token expansion happens elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from model.errors import ModelConfigError, PocketAdaptError
from model.resources import templates_dir
from model.yaml_io import YAMLContentError, load_yaml, yaml_error_text

IMAGE_PLACEHOLDER = "<image>"
MARKER_RUN = 16  # `chat_template_jinja` gives training's prefix to a user turn of up to this many leading markers


class ConversationError(PocketAdaptError, ValueError):
    """A conversation that does not fit its images (placeholder count, no user turn), an empty user turn, or messages
    a template cannot render (misordered roles, a late system message, a turn that is not a role and a string)."""


def image_prefix(found: int, n_images: int) -> str:
    """What to prepend to the first user turn so that `n_images` images have `found` placeholders to fill.

    The one rule for training data, evaluation and chat: equal counts need nothing; one image and no
    placeholder gets `<image>\\n` (InternVL); several images and none get `Image-1: <image>\\nImage-2: <image>\\n…`
    (InternVL's multi-image prompts). Any other disagreement is a `ConversationError`.
    """
    if found == n_images:
        return ""
    if found == 0:
        if n_images == 1:
            return f"{IMAGE_PLACEHOLDER}\n"
        return "".join(f"Image-{k + 1}: {IMAGE_PLACEHOLDER}\n" for k in range(n_images))
    raise ConversationError(f"the conversation has {found} <image> placeholders but {n_images} images were given")


# a lone image's label at a line's start: a one-frame video's (InternVL training's `Frame-1: `, its inference docs'
# `Frame1: `) or a hand-written `Image-1: ` (`image_prefix` labels several images only)
ONE_IMAGE_LABELS = ("Frame-1: ", "Frame1: ", "Image-1: ")


def image_first(content: str) -> str:
    """`content` with its one ``<image>`` moved to the front, as LLaVA / MobileVLM train and prompt: the placeholder
    removed, the text stripped, ``<image>\\n`` prepended (``Q\\n<image>`` and ``<image>\\nQ`` both become the latter).
    A lone image's label before it (:data:`ONE_IMAGE_LABELS` at a line's start: a one-frame video's, a hand-written
    ``Image-1: ``) goes with it: ``Frame-1: <image>\\nQ`` becomes ``<image>\\nQ``, LLaVA's one-image prompt, not
    ``<image>\\nFrame-1:\\nQ``, a label naming no frame.
    Text with no placeholder or several is returned as it is (LLaVA would merge several into one; a video's
    ``Frame-k: <image>`` lines stay, as InternVL writes them)."""
    if content.count(IMAGE_PLACEHOLDER) != 1:
        return content
    content = "\n" + content  # the text's start is a line start too; strip() drops the "\n"
    for label in ONE_IMAGE_LABELS:
        content = content.replace(f"\n{label}{IMAGE_PLACEHOLDER}", f"\n{IMAGE_PLACEHOLDER}")
    return f"{IMAGE_PLACEHOLDER}\n{content.replace(IMAGE_PLACEHOLDER, '').strip()}".strip()


__all__ = [
    "ChatTemplate",
    "chat_template_from_dict",
    "chat_template_jinja",
    "get_chat_template",
    "list_chat_templates",
    "load_chat_template",
    "normalize_messages",
    "SEP_STYLES",
]

SEP_STYLES = ("mpt", "two")
SYSTEM_PLACEHOLDER = "{system_message}"
_REQUIRED_FIELDS = (
    "name",
    "description",
    "sep_style",
    "system_template",
    "system_message",
    "user_role",
    "assistant_role",
    "sep",
    "sep2",
    "stop_strings",
)
_OPTIONAL_FIELDS = {"add_bos": False, "strip_messages": False, "image_first": False}
_ROLES = ("system", "user", "assistant")


class ChatTemplateError(ModelConfigError):
    """A chat template (name, file or field) that cannot be used; a conversation it cannot render is a
    `ConversationError`."""


@dataclass(frozen=True)
class ChatTemplate:
    """A conversation template (see the module docstring for the two separator styles)."""

    name: str
    description: str
    sep_style: str
    system_template: str
    system_message: str
    user_role: str
    assistant_role: str
    sep: str
    sep2: str | None
    stop_strings: tuple[str, ...]
    add_bos: bool = False  # the tokenizer's BOS goes first when the model was trained with it
    strip_messages: bool = False  # training strips each turn's text (InternVL's preprocess_internlm)
    image_first: bool = False  # a turn's one <image> goes first, as "<image>\n" + text (LLaVA's preprocess_multimodal)

    # ------------------------------------------------------------------ helpers
    @property
    def roles(self) -> tuple[str, str]:
        """(user role string, assistant role string)."""
        return (self.user_role, self.assistant_role)

    @property
    def eos_string(self) -> str:
        """The string that ends an assistant turn (the stripped end separator), e.g. ``<|im_end|>``."""
        return self._assistant_end().strip()

    def _assistant_end(self) -> str:
        return self.sep if self.sep_style == "mpt" else (self.sep2 or "")

    def _user_end(self) -> str:
        return self.sep

    def _role_prefix(self, role: str) -> str:
        text = self.user_role if role == "user" else self.assistant_role
        return text + ": " if self.sep_style == "two" else text

    def _generation_prompt(self) -> str:
        return self.assistant_role + ":" if self.sep_style == "two" else self.assistant_role

    def _system_prompt(self, system_message: str) -> str:
        return self.system_template.replace(SYSTEM_PLACEHOLDER, system_message)

    # ------------------------------------------------------------------ rendering
    def segments(
        self,
        messages: list[dict],
        add_generation_prompt: bool = False,
        system_message: str | None = None,
    ) -> list[tuple[str, bool]]:
        """The text of :meth:`render` cut into consecutive ``(text, trained)`` pieces.

        ``trained`` is True exactly for each assistant answer plus its end separator (trailing
        whitespace of the separator excluded).  Adjacent pieces with the same flag are merged, so
        the flags alternate, and ``"".join(t for t, _ in pieces) == render(...)``.

        System message precedence: a leading ``system`` message in ``messages``, else the
        ``system_message`` argument, else the template's own message.  The generation prompt (the
        bare assistant role) is appended only when ``add_generation_prompt`` is true and the
        conversation ends with a user turn.
        """
        system, turns = _split_system(messages, self.name)
        if system is None:
            system = self.system_message if system_message is None else system_message
        if not isinstance(system, str):
            raise ChatTemplateError(f"chat template {self.name!r}: system message must be a string, got {type(system).__name__}")

        pieces: list[tuple[str, bool]] = [(self._system_prompt(system) + self.sep, False)]
        for role, content in turns:
            pieces.append((self._role_prefix(role), False))
            if role == "user":
                pieces.append((content + self._user_end(), False))
            else:
                end = self._assistant_end()
                trained_end = end.rstrip()
                pieces.append((content + trained_end, True))
                pieces.append((end[len(trained_end):], False))
        if add_generation_prompt and turns and turns[-1][0] == "user":
            pieces.append((self._generation_prompt(), False))
        return _merge(pieces)

    def render(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        system_message: str | None = None,
    ) -> str:
        """The prompt text for ``messages`` (see :meth:`segments` for the rules)."""
        return "".join(text for text, _ in self.segments(messages, add_generation_prompt, system_message))

    def to_dict(self) -> dict[str, Any]:
        """The template as a plain dict: every YAML field, so `chat_template_from_dict` reads back this template."""
        return {
            "name": self.name,
            "description": self.description,
            "sep_style": self.sep_style,
            "system_template": self.system_template,
            "system_message": self.system_message,
            "user_role": self.user_role,
            "assistant_role": self.assistant_role,
            "sep": self.sep,
            "sep2": self.sep2,
            "stop_strings": list(self.stop_strings),
            "add_bos": self.add_bos,
            "strip_messages": self.strip_messages,
            "image_first": self.image_first,
        }


def chat_template_jinja(template: ChatTemplate, image_token: str = IMAGE_PLACEHOLDER, video_token: str | None = None,
                        bos: bool = False, markers: tuple[str, ...] = ()) -> str:
    """A Jinja chat template (HF / llama.cpp style: `messages`, `add_generation_prompt`) rendering exactly as
    :meth:`ChatTemplate.render` does; a leading system message replaces the template's default one.

    A message's content is a string or, transformers-style, a list of items: ``{"type": "text", "text": …}`` renders
    its text, ``{"type": "image"}`` renders `image_token` and a newline (``<IMG_CONTEXT>`` for transformers'
    InternVLProcessor, which expands it; ``<image>``, our placeholder, elsewhere), ``{"type": "video"}`` renders
    `video_token` and a newline where one is given; other items render nothing, as in transformers' InternVL template.
    Where the template puts images first (``image_first``), a user turn's text with one `image_token` is rearranged as
    :func:`image_first` does, so ``Q\n<image>`` and ``[text, image]`` prompt as `place_images` makes them; `markers`
    (a runtime's own media marker in the text, llama.cpp's ``<__media__>``) are moved first the same way.
    With `markers`, `image_token` renders as the first marker (a runtime that places images as `place_images` does
    sends placeholders), and a user turn that is up to :data:`MARKER_RUN` markers and then text with neither, not
    starting with white space (what llama-mtmd-cli sends: ``<__media__>Q``), gets the placeholders training adds for
    that many images (:func:`image_prefix`: ``<__media__>\nQ``), so the stock tool prompts as training did.
    With `bos`, a template trained with a leading BOS (``add_bos``) starts with ``bos_token`` (transformers tokenises
    a rendered chat without adding special tokens; llama.cpp adds BOS itself, so GGUF leaves it out).

    Every export embeds it (GGUF `tokenizer.chat_template`, ONNX `chat_template.json`, the tokenizer's
    `chat_template.jinja` through `VLMProcessor.save_pretrained`) so that other runtimes prompt the model as training
    did. String literals are JSON literals, which Jinja reads as its own. A conversation `render` refuses for its
    order (not starting with user, two turns of one role in a row, a system message after the first) calls
    ``raise_exception``, as Hugging Face templates do.
    """
    def js(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    prefix, suffix = template.system_template.split(SYSTEM_PLACEHOLDER)
    user, assistant = template._role_prefix("user"), template._role_prefix("assistant")
    video = ("{%- elif item['type'] == 'video' -%}"
             f"{{%- set text.value = text.value + {js(video_token + chr(10))} -%}}" if video_token else "")
    content = (  # sets `text.value` to `message`'s content as one string
        "{%- set text = namespace(value='') -%}"
        "{%- if message['content'] is string -%}{%- set text.value = message['content'] -%}"
        "{%- else -%}{%- for item in message['content'] -%}"
        f"{{%- if item['type'] == 'image' -%}}{{%- set text.value = text.value + {js(image_token + chr(10))} -%}}"
        f"{video}"
        "{%- elif item['type'] == 'text' -%}{%- set text.value = text.value + item['text'] -%}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
    )
    if markers:  # a user turn of k markers, then text without any: training's prefix for k images
        marker = markers[0]
        bare = f"(text.value | replace({js(marker)}, '') | replace({js(image_token)}, ''))"
        # a text that starts with a space or newline after the markers placed them itself: kept as it is
        unspaced = f"(({bare} + 'x') | trim) == {bare} + 'x'"
        content += "{%- if message['role'] == 'user' and " + unspaced + " -%}" + "".join(
            f"{{%- {'if' if k == 1 else 'elif'} text.value == {js(marker * k)} + {bare} -%}}"
            f"{{%- set text.value = {js(image_prefix(0, k).replace(IMAGE_PLACEHOLDER, marker))} + {bare} -%}}"
            for k in range(1, MARKER_RUN + 1)
        ) + "{%- endif -%}{%- endif -%}"
    if template.image_first:  # `image_first` on the user turn's text: its one image token (or marker) goes first
        tokens = list(dict.fromkeys((image_token, *markers)))

        def rest(token: str) -> str:
            return f"(text.value | replace({js(token)}, ''))"

        def only(token: str) -> str:  # `token` once in the text, no other image token
            absent = "".join(f" and ({rest(other)} | length) == (text.value | length)" for other in tokens
                             if other != token)
            return f"(text.value | length) - ({rest(token)} | length) == {len(token)}{absent}"

        def unlabelled(token: str) -> str:  # `image_first`'s ONE_IMAGE_LABELS rule; the trim below drops the "\n"
            return f"({js(chr(10))} + text.value)" + "".join(
                f" | replace({js(chr(10) + label + token)}, {js(chr(10) + token)})" for label in ONE_IMAGE_LABELS)

        content += "{%- if message['role'] == 'user' -%}" + "".join(
            f"{{%- {'if' if k == 0 else 'elif'} {only(token)} -%}}"
            f"{{%- set text.value = {unlabelled(token)} -%}}"
            f"{{%- set text.value = ({js(token)} + {js(chr(10))} + ({rest(token)} | trim)) | trim -%}}"
            for k, token in enumerate(tokens)
        ) + "{%- endif -%}{%- endif -%}"
    if markers:  # a runtime's own path sends placeholders, placed as `place_images` places them
        content += f"{{%- set text.value = text.value | replace({js(image_token)}, {js(markers[0])}) -%}}"
    return (
        ("{%- if bos_token -%}{{- bos_token -}}{%- endif -%}" if bos and template.add_bos else "")
        + "{%- if messages and messages[0]['role'] == 'system' -%}{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}{%- set loop_messages = messages -%}"
        f"{{{{- {js(prefix + template.system_message + suffix + template.sep)} -}}}}{{%- endif -%}}"
        "{%- for message in loop_messages -%}"  # `render`'s order rule, else another runtime prompts silently wrong
        "{%- if message['role'] != ['user', 'assistant'][loop.index0 % 2] -%}"
        "{{- raise_exception('messages must alternate user/assistant, starting with user, after an optional system "
        "message; message ' ~ (loop.index0 + messages|length - loop_messages|length) ~ ' is ' ~ message['role']) -}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- for message in messages -%}" + content
        + "{%- if loop.first and message['role'] == 'system' -%}"
        f"{{{{- {js(prefix)} + text.value + {js(suffix + template.sep)} -}}}}"
        f"{{%- elif message['role'] == 'user' -%}}{{{{- {js(user)} + text.value + {js(template._user_end())} -}}}}"
        f"{{%- else -%}}{{{{- {js(assistant)} + text.value + {js(template._assistant_end())} -}}}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt and loop_messages and loop_messages[-1]['role'] == 'user' -%}"
        f"{{{{- {js(template._generation_prompt())} -}}}}"
        "{%- endif -%}"
    )


def _merge(pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for text, trained in pieces:
        if not text:
            continue
        if out and out[-1][1] == trained:
            out[-1] = (out[-1][0] + text, trained)
        else:
            out.append((text, trained))
    return out


def _split_system(messages: list[dict], template_name: str) -> tuple[str | None, list[tuple[str, str]]]:
    """Validate ``messages``; return (leading system content or None, [(role, content), ...])."""
    if isinstance(messages, (str, bytes)) or not hasattr(messages, "__iter__"):
        raise ConversationError(f"chat template {template_name!r}: messages must be a list of dicts")
    messages = list(messages)
    system: str | None = None
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ConversationError(f"message {i}: expected a dict with 'role' and 'content', got {msg!r}")
        role, content = msg["role"], msg["content"]
        if role not in _ROLES:
            raise ConversationError(f"message {i}: unknown role {role!r} (expected one of {', '.join(_ROLES)})")
        if not isinstance(content, str):
            raise ConversationError(f"message {i} ({role}): content must be a string, got {type(content).__name__}")
        if role == "system":
            if i != 0:
                raise ConversationError(f"message {i}: a system message is only allowed as the first message")
            system = content
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ConversationError(
                f"message {i}: expected role {expected!r}, got {role!r} "
                "(messages must alternate user/assistant, starting with user, after an optional system message)"
            )
        if role == "user" and not content.strip():  # images are placed by now: a placeholder counts as text
            raise ConversationError(f"message {i} (user): no text and no image; a user turn must ask something")
        turns.append((role, content))
    if not turns:
        raise ConversationError(f"chat template {template_name!r}: the conversation has no user message")
    return system, turns


# ---------------------------------------------------------------------- loading
def _chat_dir() -> Path:
    return templates_dir() / "chat"


def list_chat_templates() -> list[str]:
    """Names of the bundled chat templates (the ``templates/chat/*.yaml`` file stems), sorted."""
    return sorted(p.stem for p in _chat_dir().glob("*.yaml"))


MAX_TEMPLATE_BYTES = 1 << 20  # a template is a few hundred bytes; a recipe has the same cap


def load_chat_template(path: str | Path) -> ChatTemplate:
    """Load and validate one template YAML file; errors name the file and the field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # at most the limit + 1 bytes: a huge file, a pipe or /dev/zero is not slurped
            data = f.read(MAX_TEMPLATE_BYTES + 1)
        if len(data) > MAX_TEMPLATE_BYTES:
            raise ChatTemplateError(f"{path}: larger than {MAX_TEMPLATE_BYTES // 1024:,} KiB, too large to be a "
                                    "chat template")
        text = data.decode("utf-8")
    except OSError as exc:
        raise ChatTemplateError(f"{path}: cannot read chat template ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ChatTemplateError(f"{path}: byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8; "
                                "save the template as UTF-8") from None
    try:
        data, _ = load_yaml(text, str(path))  # duplicate keys refused, as in a recipe
    except yaml.YAMLError as exc:
        raise ChatTemplateError(f"{path}: {yaml_error_text(exc)}") from None
    except YAMLContentError as exc:
        raise ChatTemplateError(str(exc)) from None
    return chat_template_from_dict(data, path)


def chat_template_from_dict(data: Any, path: str | Path) -> ChatTemplate:
    """A template from its fields (a YAML file's, an export's `chat_template.json`), validated; errors name `path`
    (where the fields came from) and the field."""
    if not isinstance(data, dict):
        raise ChatTemplateError(f"{path}: expected a mapping of template fields, got {type(data).__name__}")

    for field in _REQUIRED_FIELDS:
        if field not in data:
            raise ChatTemplateError(f"{path}: missing field {field!r}")
    unknown = sorted(set(data) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise ChatTemplateError(f"{path}: unknown field(s) {', '.join(map(repr, unknown))}")

    def need_str(field: str, allow_empty: bool = True) -> str:
        value = data[field]
        if not isinstance(value, str):
            raise ChatTemplateError(f"{path}: field {field!r} must be a string, got {type(value).__name__}")
        if not allow_empty and not value:
            raise ChatTemplateError(f"{path}: field {field!r} must not be empty")
        return value

    name = need_str("name", allow_empty=False)
    description = need_str("description")
    sep_style = need_str("sep_style")
    if sep_style not in SEP_STYLES:
        raise ChatTemplateError(f"{path}: field 'sep_style' must be one of {', '.join(SEP_STYLES)}, got {sep_style!r}")
    system_template = need_str("system_template")
    if system_template.count(SYSTEM_PLACEHOLDER) != 1:
        raise ChatTemplateError(f"{path}: field 'system_template' must contain {SYSTEM_PLACEHOLDER} exactly once")
    system_message = need_str("system_message")
    user_role = need_str("user_role", allow_empty=False)
    assistant_role = need_str("assistant_role", allow_empty=False)
    sep = need_str("sep", allow_empty=False)
    sep2 = data["sep2"]
    if sep_style == "two":
        sep2 = need_str("sep2", allow_empty=False)
    elif sep2 is not None:
        raise ChatTemplateError(f"{path}: field 'sep2' must be null for sep_style 'mpt'")
    end = "sep" if sep_style == "mpt" else "sep2"
    if not (sep if end == "sep" else sep2).strip():  # `segments` trains the end stripped: nothing to learn to stop
        raise ChatTemplateError(f"{path}: field {end!r} ends each assistant answer and must hold more than white space "
                                "(training teaches the answer's end without its trailing white space, e.g. "
                                "<|im_end|>, so the model learns to stop)")
    stops = data["stop_strings"]
    if not isinstance(stops, list) or not stops or not all(isinstance(s, str) and s for s in stops):
        raise ChatTemplateError(f"{path}: field 'stop_strings' must be a non-empty list of non-empty strings")

    data = {**_OPTIONAL_FIELDS, **data}
    for flag in _OPTIONAL_FIELDS:
        if not isinstance(data[flag], bool):
            raise ChatTemplateError(f"{path}: field {flag!r} must be true or false")

    return ChatTemplate(
        name=name,
        description=description,
        sep_style=sep_style,
        system_template=system_template,
        system_message=system_message,
        user_role=user_role,
        assistant_role=assistant_role,
        sep=sep,
        sep2=sep2,
        stop_strings=tuple(stops),
        add_bos=data["add_bos"],
        strip_messages=data["strip_messages"],
        image_first=data["image_first"],
    )


@lru_cache(maxsize=None)
def _load_bundled(name: str) -> ChatTemplate:
    path = _chat_dir() / f"{name}.yaml"
    template = load_chat_template(path)
    if template.name != name:
        raise ChatTemplateError(f"{path}: field 'name' is {template.name!r}, expected {name!r} (the file name)")
    return template


def get_chat_template(name: str) -> ChatTemplate:
    """The bundled template ``templates/chat/<name>.yaml``; a path to a ``.yaml``/``.yml`` file also works."""
    if not isinstance(name, str) or not name:
        raise ChatTemplateError(f"chat template name must be a non-empty string, got {name!r}")
    if name.endswith((".yaml", ".yml")):
        return load_chat_template(name)
    known = list_chat_templates()
    if name not in known:
        raise ChatTemplateError(f"unknown chat template {name!r}; known templates: {', '.join(known)}")
    return _load_bundled(name)


# ---------------------------------------------------------------------- conversation formats
_FROM_TO_ROLE = {"human": "user", "gpt": "assistant", "system": "system"}


def normalize_messages(conversation: list[dict]) -> list[dict]:
    """Convert InternVL/LLaVA JSONL turns (``{"from": "human"|"gpt"|"system", "value": ...}``) or
    role/content messages (``{"role": "user"|"assistant"|"system", "content": str}``) into
    ``[{"role": ..., "content": ...}, ...]``.  Turn order is not checked here (``render`` does)."""
    if isinstance(conversation, (str, bytes, dict)) or not hasattr(conversation, "__iter__"):
        raise ConversationError(f"conversation must be a list of turns, got {type(conversation).__name__}")
    out: list[dict] = []
    for i, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise ConversationError(f"turn {i}: expected a dict, got {type(turn).__name__}")
        if "from" in turn:
            source = turn["from"]
            if source not in _FROM_TO_ROLE:
                raise ConversationError(f"turn {i}: unknown 'from' value {source!r} (expected human, gpt or system)")
            if "value" not in turn:
                raise ConversationError(f"turn {i}: missing 'value'")
            role, content = _FROM_TO_ROLE[source], turn["value"]
        elif "role" in turn:
            role = turn["role"]
            if role not in _ROLES:
                raise ConversationError(f"turn {i}: unknown role {role!r} (expected user, assistant or system)")
            if "content" not in turn:
                raise ConversationError(f"turn {i}: missing 'content'")
            content = turn["content"]
        else:
            raise ConversationError(f"turn {i}: expected 'from'/'value' or 'role'/'content' keys, got {sorted(turn)}")
        if not isinstance(content, str):
            raise ConversationError(f"turn {i}: content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out
