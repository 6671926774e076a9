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


@pytest.mark.parametrize("damaged", ["tiling", "tokenizer"])
@pytest.mark.parametrize("recorded", ["{not json", "[1, 2]"], ids=["not-json", "not-an-object"])
def test_damaged_metadata_is_refused_naming_the_graph(tmp_path, recorded, damaged):
    """Refused by the one `recorded_object` the ExecuTorch runtime uses too: its message, naming graph and key."""
    require("onnx", "the deploy extra: ONNX export")
    from deploy.onnx.export import DECODER, EMBED, TILING_KEY, TOKENIZER_KEY, VISION
    from deploy.onnx.runtime import OnnxExport, OnnxRuntimeError

    graph(tmp_path / VISION, {TILING_KEY: recorded if damaged == "tiling" else "{}"})
    graph(tmp_path / EMBED, {TOKENIZER_KEY: recorded if damaged == "tokenizer" else "{}"})
    graph(tmp_path / DECODER, {TOKENIZER_KEY: "{}"})
    for name in ("genai_config.json", "preprocessor_config.json", "chat_template.json"):
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    with pytest.raises(OnnxRuntimeError) as info:
        OnnxExport.open(tmp_path)
    path, key = (tmp_path / VISION, TILING_KEY) if damaged == "tiling" else (tmp_path / EMBED, TOKENIZER_KEY)
    assert str(info.value) == (f"{path}: the {key} metadata it records is damaged (not the JSON object the export "
                               "writes); export it again")
