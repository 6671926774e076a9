"""llama.cpp's own media marker in the GGUF's embedded chat template (deploy/gguf.py, model/chat.py).

llama-mtmd-cli puts ``<__media__>`` before the prompt for each image (``<__media__>Q``, no newline) and renders the
conversation with the embedded template. A template that trains images first (``image_first``: MobileVLM's
vicuna_v1, ``<image>\\nQ``) rearranged only our own ``<image>``, so the stock CLI prompted ``<__media__>Q``: other
tokens than training and `adapt chat --runtime llamacpp`. The marker is now placed as ``<image>`` is.

Templates that keep the image where the text has it (InternVL's, pocket-tiny's) rendered the stock ``<__media__>Q``
as it came, where training adds ``<image>\n`` before a question with no placeholder: the stock CLI prompted
``<__media__>Q``, training ``<image>\nQ``. Our own path sent the same ``<__media__>Q`` for a typed ``<image>Q``, so the
template could not tell the two apart: it now sends placeholders (the template renders them as the marker), and a
user turn of bare leading markers gets training's prefix (``Image-1: <__media__>\n...`` for several).
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import model
from model.chat import chat_template_jinja, get_chat_template, list_chat_templates

from .deps import require

require("gguf", "the deploy extra: GGUF export")

from deploy.hf import export  # noqa: E402
from deploy.llamacpp import MARKER, binary  # noqa: E402
from deploy.llamacpp.runtime import LlamaCppVLM  # noqa: E402

from .test_gguf import llama_cpp  # noqa: E402,F401 - the built llama.cpp, or a skip

QUESTION = "What shapes are in the picture?"


@pytest.mark.parametrize("content", [f"{MARKER}{QUESTION}", f"{QUESTION} {MARKER}", f"{QUESTION}\n{MARKER}"])
def test_the_media_marker_goes_first_as_the_placeholder_does(content):
    import jinja2

    t = get_chat_template("vicuna_v1")
    jinja = jinja2.Environment().from_string(chat_template_jinja(t, markers=(MARKER,)))
    rendered = jinja.render(messages=[{"role": "user", "content": content}], add_generation_prompt=True)
    trained = t.render([{"role": "user", "content": f"<image>\n{QUESTION}"}], add_generation_prompt=True)
    assert rendered == trained.replace("<image>", MARKER)


@pytest.mark.parametrize("template", list_chat_templates())
def test_markers_leave_the_placed_prompt_as_it_was(template):
    """What `--runtime llamacpp` sends (placeholders placed) renders as training's prompt, with the marker for
    ``<image>``: a typed ``<image>Q`` stays ``<__media__>Q``."""
    import jinja2

    from model.processor import place_images

    t = get_chat_template(template)
    plain = jinja2.Environment().from_string(chat_template_jinja(t))
    marked = jinja2.Environment().from_string(chat_template_jinja(t, markers=(MARKER,)))
    for content in (f"<image>\n{QUESTION}", f"{QUESTION}\n<image>", f"Image-1: <image>\nImage-2: <image>\n{QUESTION}",
                    f"<image>{QUESTION}", QUESTION):
        placed = place_images([{"role": "user", "content": content}], max(1, content.count("<image>")), t)
        assert marked.render(messages=placed, add_generation_prompt=True) == plain.render(
            messages=placed, add_generation_prompt=True).replace("<image>", MARKER)


@pytest.mark.parametrize("template", list_chat_templates())
@pytest.mark.parametrize("n_images", [1, 2, 3])
def test_the_stock_leading_markers_render_as_training_prompts(template, n_images):
    """llama-mtmd-cli's ``<__media__>`` x N + Q renders as training's prompt for Q and N images (``<image>\nQ``,
    ``Image-1: <image>\nImage-2: <image>\nQ``), whatever the template."""
    import jinja2

    from model.processor import place_images

    t = get_chat_template(template)
    marked = jinja2.Environment().from_string(chat_template_jinja(t, markers=(MARKER,)))
    stock = marked.render(messages=[{"role": "user", "content": MARKER * n_images + QUESTION}],
                          add_generation_prompt=True)
    trained = t.render(place_images([{"role": "user", "content": QUESTION}], n_images, t), add_generation_prompt=True)
    assert stock == trained.replace("<image>", MARKER)
    # a marker the user placed with its own newline (as training does) gets no second one
    placed = marked.render(messages=[{"role": "user", "content": f"{MARKER}\n{QUESTION}"}], add_generation_prompt=True)
    assert placed == t.render([{"role": "user", "content": f"<image>\n{QUESTION}"}],
                              add_generation_prompt=True).replace("<image>", MARKER)


@pytest.fixture(scope="module", params=["vicuna_v1", "pocket-tiny"])
def vicuna_export(request, tmp_path_factory) -> tuple[Path, Image.Image]:
    """An export with an image-first template (vicuna_v1) and one that keeps the image in place (pocket-tiny's)."""
    vlm, processor = model.load("pocket-tiny")
    processor = copy.copy(processor)
    processor.chat_template = get_chat_template(request.param)
    folder = export(vlm, processor, "gguf", tmp_path_factory.mktemp("marker") / "out", qtype="f16", name="v",
                    progress=False)
    size = processor.tiling.tile_size
    return folder, Image.new("RGB", (size, size), (200, 40, 40))


def test_the_stock_path_tokenises_the_prompt_as_ours(vicuna_export, llama_cpp):  # noqa: F811
    """llama.cpp rendering and tokenising ``<__media__>Q`` (what llama-mtmd-cli sends) gives our prompt's ids."""
    folder, image = vicuna_export
    with LlamaCppVLM(folder) as runtime:
        entries = runtime.image_entries([image], preprocess="llamacpp")
        ours = runtime.llama.generate(1, messages=runtime.messages([{"role": "user", "content": QUESTION}], 1),
                                      images=entries)
        entries = runtime.image_entries([image], preprocess="llamacpp")
        stock = runtime.llama.generate(1, messages=[{"role": "user", "content": MARKER + QUESTION}], images=entries)
    assert f"{MARKER}\n{QUESTION}" in ours["prompt"]
    assert stock["prompt"] == ours["prompt"]
    assert stock["prompt_ids"] == ours["prompt_ids"]


def test_llama_mtmd_cli_renders_our_prompt(vicuna_export, tmp_path, llama_cpp):  # noqa: F811
    """The stock CLI itself (its debug log shows the prompt it formatted from the embedded template)."""
    folder, image = vicuna_export
    image.save(tmp_path / "tile.png")
    with LlamaCppVLM(folder) as runtime:
        ours = runtime.llama.request(op="render", messages=runtime.messages([{"role": "user", "content": QUESTION}], 1),
                                     add_generation_prompt=True)["prompt"]
        model_file, mmproj = runtime.export.model, runtime.export.mmproj
    proc = subprocess.run([str(binary("llama-mtmd-cli")), "-m", str(model_file), "--mmproj", str(mmproj), "--image",
                           str(tmp_path / "tile.png"), "-p", QUESTION, "--temp", "0", "-n", "1", "--jinja", "-lv", "5",
                           "-t", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a log line starts with its time stamp (0.00.036.019 D ...); the prompt runs up to the next one
    said = re.search(r"formatted_chat\.prompt: (.*?)\n\d+\.\d+\.\d+\.\d+ ", proc.stdout + proc.stderr, re.S)
    assert said is not None, (proc.stdout + proc.stderr)[-3000:]
    assert said[1].rstrip() == ours.rstrip()


def test_the_marker_in_a_question_with_an_image_is_named():
    """llama.cpp reads every <__media__> in the prompt as an image: one typed in the text was "more media markers
    than images" from inside llama.cpp; it is now refused up front, naming the message."""
    from types import SimpleNamespace

    from deploy.llamacpp import LlamaCppError

    runtime = SimpleNamespace(export=SimpleNamespace(template=get_chat_template("pocket-tiny")), placeholders=True)
    with pytest.raises(LlamaCppError, match=r"message 0 \(user\) contains <__media__>"):
        LlamaCppVLM.messages(runtime, [{"role": "user", "content": f"What is {MARKER}?"}], 1)
    with pytest.raises(LlamaCppError, match=r"message 0 \(system\)"):
        LlamaCppVLM.messages(runtime, [{"role": "user", "content": "What is it?"}], 1, system=MARKER)
    assert LlamaCppVLM.messages(runtime, [{"role": "user", "content": f"What is {MARKER}?"}], 0)  # no image: text


def test_a_typed_placeholder_keeps_its_place_in_llamacpp(llama_cpp):  # noqa: F811
    """A typed ``<image>Q`` is prompted as PyTorch prompts it (no newline added), while the stock marker alone gets
    training's ``<image>\n``: the same ids as the processor's, image rows aside."""
    import tempfile

    vlm, processor = model.load("pocket-tiny")
    size = processor.tiling.tile_size
    image = Image.new("RGB", (size, size), (200, 40, 40))
    with tempfile.TemporaryDirectory() as tmp:
        folder = export(vlm, processor, "gguf", Path(tmp) / "out", qtype="f16", name="t", progress=False)
        with LlamaCppVLM(folder) as runtime:
            assert runtime.placeholders
            for content in (f"<image>{QUESTION}", QUESTION):
                conversation = [{"role": "user", "content": content}]
                ids = processor(conversation, images=[image]).input_ids.tolist()
                answer = runtime.llama.generate(1, messages=runtime.messages(conversation, 1),
                                                images=runtime.image_entries([image]))
                assert answer["prompt_ids"] == [-1 if i == processor.image_token_id else i for i in ids], content


def test_an_export_whose_template_takes_markers_still_gets_them(tmp_path, monkeypatch, llama_cpp):  # noqa: F811
    """An export written before its template rendered ``<image>`` as the marker: the runtime sees that (one render)
    and sends markers, not placeholders llama.cpp would take as text."""
    import model.chat

    plain = model.chat.chat_template_jinja
    monkeypatch.setattr(model.chat, "chat_template_jinja", lambda t, **kw: plain(t))
    vlm, processor = model.load("pocket-tiny")
    size = processor.tiling.tile_size
    image = Image.new("RGB", (size, size), (200, 40, 40))
    folder = export(vlm, processor, "gguf", tmp_path / "out", qtype="f16", name="t", progress=False)
    monkeypatch.undo()
    conversation = [{"role": "user", "content": QUESTION}]
    ids = processor(conversation, images=[image]).input_ids.tolist()
    with LlamaCppVLM(folder) as runtime:
        assert not runtime.placeholders
        answer = runtime.llama.generate(1, messages=runtime.messages(conversation, 1),
                                        images=runtime.image_entries([image]))
    assert answer["prompt_ids"] == [-1 if i == processor.image_token_id else i for i in ids]


def test_llamacpps_jinja_renders_the_marker_rules_as_jinja2(vicuna_export, llama_cpp):  # noqa: F811
    """llama.cpp's own Jinja engine reads the template's marker rules as jinja2 does (placed markers, a marker
    with its own newline or space, several, more than the rule covers, a typed placeholder)."""
    import jinja2

    folder, _ = vicuna_export
    with LlamaCppVLM(folder) as runtime:
        jinja = jinja2.Environment().from_string(chat_template_jinja(runtime.export.template, markers=(MARKER,)))
        for content in (MARKER + QUESTION, f"{MARKER}\n{QUESTION}", f"{MARKER} {QUESTION}", MARKER * 2 + QUESTION,
                        QUESTION + MARKER, f"<image>{QUESTION}", f"{MARKER}<image>{QUESTION}", MARKER * 17 + QUESTION):
            messages = [{"role": "user", "content": content}]
            got = runtime.llama.request(op="render", messages=messages, add_generation_prompt=True)["prompt"]
            assert got == jinja.render(messages=messages, add_generation_prompt=True), content
