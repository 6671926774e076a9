"""An ONNX export's genai_config.json is onnxruntime-genai's file: the runtime here takes the KV cache's shape from
the decoder graph itself, and a context length that is not a number is one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import model

from .deps import require

require("onnx", "the deploy extra: ONNX export")
require("onnxruntime", "the deploy extra: ONNX Runtime")
require("onnxscript", "the deploy extra: torch.onnx's dynamo exporter")

from deploy.hf import export  # noqa: E402
from deploy.onnx.export import GENAI_CONFIG  # noqa: E402
from deploy.onnx.runtime import OnnxRuntimeError, OnnxVLM  # noqa: E402

QUESTION = [{"role": "user", "content": "<image>\nWhat shapes are in the picture?"}]


@pytest.fixture(scope="module")
def folder(native_dir, tmp_path_factory) -> Path:
    vlm, processor = model.load(native_dir)
    return export(vlm, processor, "onnx", tmp_path_factory.mktemp("onnx-genai") / "onnx", progress=False)


def _edited(folder: Path, dest: Path, edit) -> Path:
    shutil.copytree(folder, dest)
    config = json.loads((dest / GENAI_CONFIG).read_text())
    edit(config)
    (dest / GENAI_CONFIG).write_text(json.dumps(config))
    return dest


def _answer(folder: Path, image) -> list[int]:
    with OnnxVLM(folder) as runtime:
        return runtime.chat(QUESTION, [image], max_new_tokens=6, cut_repeats=False).tokens


@pytest.mark.slow
def test_an_edited_genai_config_does_not_change_the_cache_the_graph_takes(folder, tmp_path, example_image):
    """The runtime read the layer count, KV heads and head size from genai_config.json: one edited there (or its
    decoder section gone) fed the graph a cache it does not take, and `adapt chat` ended in onnxruntime's traceback
    ('Required inputs ... are missing', KeyError 'decoder')."""
    expected = _answer(folder, example_image)

    def fewer_layers(config):
        config["model"]["decoder"].update(num_hidden_layers=1, num_key_value_heads=1, head_size=3)

    def no_decoder(config):
        del config["model"]["decoder"]

    for name, edit in (("layers", fewer_layers), ("no-decoder", no_decoder), ("no-model", lambda c: c.pop("model"))):
        assert _answer(_edited(folder, tmp_path / name, edit), example_image) == expected, name


@pytest.mark.slow
@pytest.mark.parametrize("value", ["abc", "4096", 0, True])
def test_a_context_length_that_is_not_a_count_is_named(value, folder, tmp_path):
    edited = _edited(folder, tmp_path / "ctx", lambda c: c["model"].update(context_length=value))
    with pytest.raises(OnnxRuntimeError, match=r"genai_config.json: 'model.context_length' must be a positive whole"):
        OnnxVLM(edited)
