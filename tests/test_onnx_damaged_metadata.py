"""An ONNX export whose graphs' pocket-adapt metadata (the tiling, the tokenizer's fingerprint) is not the JSON object
the export writes was opened with a raw JSONDecodeError traceback (or an AttributeError further on); it is refused
naming the graph and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deps import require


def graph(path: Path, metadata: dict[str, str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


@pytest.mark.parametrize("recorded", ["{not json", "[1, 2]"], ids=["not-json", "not-an-object"])
def test_damaged_tokenizer_metadata_is_refused_naming_the_graph(tmp_path, recorded):
    require("onnx", "the deploy extra: ONNX export")
    from deploy.onnx.export import DECODER, EMBED, TILING_KEY, TOKENIZER_KEY, VISION
    from deploy.onnx.runtime import OnnxExport, OnnxRuntimeError

    graph(tmp_path / VISION, {TILING_KEY: "{}"})
    graph(tmp_path / EMBED, {TOKENIZER_KEY: recorded})
    graph(tmp_path / DECODER, {TOKENIZER_KEY: "{}"})
    for name in ("genai_config.json", "preprocessor_config.json", "chat_template.json"):
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    with pytest.raises(OnnxRuntimeError) as info:
        OnnxExport.open(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / EMBED}: its {TOKENIZER_KEY} metadata is not the JSON object")
    assert "export it again" in str(info.value)
