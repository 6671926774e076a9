"""The sidecar files of an ONNX / ExecuTorch export (`chat_template.json`, `preprocessor_config.json`), read back by
`deploy.export_sidecar.read_processor`: an edited or incomplete file is one error naming the file and the key."""

from __future__ import annotations

import json

import pytest

from deploy.export_sidecar import read_processor
from deploy.onnx.export import CHAT_TEMPLATE, PREPROCESSOR, _template, preprocessor_config
from deploy.onnx.runtime import OnnxRuntimeError
from model.chat import get_chat_template
from model.processor import VLMProcessor
from model.tiling import TilingConfig


@pytest.fixture()
def sidecar(tiny_tokenizer, tmp_path):
    """A folder with the sidecar files an export writes (no graphs: reading them back needs none)."""
    processor = VLMProcessor(tiny_tokenizer, TilingConfig(tile_size=112), get_chat_template("pocket-tiny"), 16)
    processor.save_pretrained(tmp_path)
    (tmp_path / CHAT_TEMPLATE).write_text(json.dumps(_template(processor)), encoding="utf-8")
    (tmp_path / PREPROCESSOR).write_text(json.dumps(preprocessor_config(processor)), encoding="utf-8")
    return tmp_path


def _edit(path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_the_sidecar_files_read_back_as_the_exported_processor(sidecar):
    processor, _ = read_processor(sidecar, OnnxRuntimeError)
    assert processor.chat_template == get_chat_template("pocket-tiny")
    assert processor.image_seq_length == 16 and processor.image_context_token == "<IMG_CONTEXT>"
    _edit(sidecar / PREPROCESSOR, lambda d: d.update(image_start_token=None, image_end_token=""))  # MobileVLM's
    processor, _ = read_processor(sidecar, OnnxRuntimeError)
    assert processor.image_tokens(1) == [processor.image_token_id] * 16


@pytest.mark.parametrize(("file", "change", "said"), [
    (CHAT_TEMPLATE, lambda d: d.pop("stop_strings"), "chat_template.json: missing field 'stop_strings'"),
    (CHAT_TEMPLATE, lambda d: d.update(sep_style="three"), "chat_template.json: field 'sep_style' must be one of"),
    (CHAT_TEMPLATE, lambda d: d.update(stop_strings="<|im_end|>"), "'stop_strings' must be a non-empty list"),
    (CHAT_TEMPLATE, lambda d: d.update(system_prompt="Hi"), "chat_template.json: unknown field(s) 'system_prompt'"),
    (PREPROCESSOR, lambda d: d.pop("image_seq_length"), "preprocessor_config.json: 'image_seq_length' must be a pos"),
    (PREPROCESSOR, lambda d: d.update(image_seq_length="16"), "'image_seq_length' must be a positive whole number"),
    (PREPROCESSOR, lambda d: d.update(image_seq_length=0), "'image_seq_length' must be a positive whole number"),
    (PREPROCESSOR, lambda d: d.pop("image_context_token"), "'image_context_token' must be a token"),
    (PREPROCESSOR, lambda d: d.update(image_start_token=5), "'image_start_token' must be a token"),
])
def test_an_edited_sidecar_file_is_one_error_naming_the_file_and_key(sidecar, file, change, said):
    """A key missing or of the wrong type was a KeyError / TypeError / ValueError traceback from `adapt chat
    --runtime onnx|executorch` (`int(pre['image_seq_length'])`, `ChatTemplate(**fields)`)."""
    _edit(sidecar / file, change)
    with pytest.raises(OnnxRuntimeError) as caught:
        read_processor(sidecar, OnnxRuntimeError)
    assert said in str(caught.value) and str(sidecar / file) in str(caught.value)


@pytest.mark.parametrize("key", ["image_context_token", "image_start_token", "image_end_token"])
def test_an_image_token_the_tokenizer_lacks_is_refused_naming_the_key(sidecar, key):
    """An image token edited to a string the tokenizer lacks was added to the tokenizer as a new token, and the
    load then blamed the tokenizer files (its fingerprint no longer matched); it is refused naming file and key."""
    from deploy.onnx.export import tokenizer_fingerprint
    from model.loading import load_tokenizer

    recorded = tokenizer_fingerprint(load_tokenizer(sidecar))
    _edit(sidecar / PREPROCESSOR, lambda d: d.update({key: "<NOT_A_TOKEN>"}))
    with pytest.raises(OnnxRuntimeError) as caught:
        read_processor(sidecar, OnnxRuntimeError, [(recorded, "embed.onnx")])
    said = str(caught.value)
    assert str(sidecar / PREPROCESSOR) in said and f"{key!r} '<NOT_A_TOKEN>' is not a token" in said, said


def test_the_tokenizer_is_compared_before_it_is_read_for_image_tokens(sidecar):
    """A recorded fingerprint that differs is the tokenizer's error, whatever the image tokens."""
    from deploy.onnx.export import tokenizer_fingerprint
    from model.loading import load_tokenizer

    recorded = {**tokenizer_fingerprint(load_tokenizer(sidecar)), "size": 7}
    _edit(sidecar / PREPROCESSOR, lambda d: d.update(image_context_token="<NOT_A_TOKEN>"))
    with pytest.raises(OnnxRuntimeError, match="not the tokenizer embed.onnx was exported with"):
        read_processor(sidecar, OnnxRuntimeError, [(recorded, "embed.onnx")])


@pytest.mark.parametrize("key, other", [("image_start_token", "</img>"), ("image_end_token", "<img>"),
                                        ("image_start_token", "")])
def test_an_image_token_edited_to_another_token_is_refused(sidecar, tiny_tokenizer, key, other):
    """An image start/end token edited to another token the tokenizer has (or to none) changed every prompt without
    a word: the graphs do not hold the image tokens. Their ids are recorded at export and checked at load."""
    from deploy.onnx.export import export_fingerprint

    exported = VLMProcessor(tiny_tokenizer, TilingConfig(tile_size=112), get_chat_template("pocket-tiny"), 16)
    recorded = export_fingerprint(exported)
    assert recorded["image_token_ids"][key] == tiny_tokenizer.convert_tokens_to_ids(getattr(exported, key))
    read_processor(sidecar, OnnxRuntimeError, [(recorded, "embed.onnx")])  # as exported: loads
    _edit(sidecar / PREPROCESSOR, lambda d: d.update({key: other}))
    read_processor(sidecar, OnnxRuntimeError, [({k: v for k, v in recorded.items() if k != "image_token_ids"},
                                                "embed.onnx")])  # an older export, which recorded no ids: loads
    with pytest.raises(OnnxRuntimeError) as caught:
        read_processor(sidecar, OnnxRuntimeError, [(recorded, "embed.onnx")])
    said = str(caught.value)
    assert said.startswith(f"{sidecar / PREPROCESSOR}: {key} {other!r} is id "), said
    assert "embed.onnx was exported with id" in said


@pytest.mark.parametrize("recorded", ['{"tile_size": 112, "max_tiles": 99}', '{"tile_size": ', {"mode": "tiles"},
                                      {"tiles": 6}])
def test_a_damaged_recorded_tiling_is_refused_naming_the_graph(tmp_path, recorded):
    """A tiling record damaged in a graph's metadata (ONNX) or a program's constant (ExecuTorch, JSON text) was a raw
    TilingError / JSONDecodeError naming neither the graph nor the folder; it is the runtime's error naming the file."""
    from deploy.export_sidecar import check_tiling

    with pytest.raises(OnnxRuntimeError) as caught:
        check_tiling(recorded, TilingConfig(tile_size=112), tmp_path / PREPROCESSOR, "vision.onnx", OnnxRuntimeError)
    said = str(caught.value)
    assert said.startswith(f"{tmp_path / 'vision.onnx'}: the tiling it records is damaged ("), said
    check_tiling('{"tile_size": 112}', TilingConfig(tile_size=112), tmp_path / PREPROCESSOR, "vision.onnx",
                 OnnxRuntimeError)  # an intact record that matches: no error


@pytest.mark.parametrize("fingerprint", ['{"size": ', '["size"]', "null", "{}", '{"vocab_sha256": "0f", "size": 9}'])
def test_a_damaged_recorded_tokenizer_fingerprint_is_refused_naming_the_program(sidecar, fingerprint):
    """ExecuTorch's program records the tokenizer fingerprint as JSON text: a damaged one was a raw JSONDecodeError
    (or an AttributeError on a list) from `adapt chat --runtime executorch`, and an object lacking a key every export
    writes a raw KeyError 'size' (or no check at all); it is the runtime's error naming it."""
    with pytest.raises(OnnxRuntimeError) as caught:
        read_processor(sidecar, OnnxRuntimeError, [(fingerprint, "model.pte")])
    said = str(caught.value)
    assert said.startswith(f"{sidecar / 'model.pte'}: the tokenizer fingerprint it records is damaged"), said
