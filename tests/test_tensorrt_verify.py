"""The bundle's verify.py (deploy/tensorrt_verify.py) on a hand-made two-check bundle: fast, no export.

TensorRT is not installable here, so its runner is exercised through stand-ins for the `tensorrt` and polygraphy
modules that behave as the real ones do where it matters (polygraphy refuses a feed whose dtype is not the engine's).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from .deps import require

require("onnx", "the deploy extra: ONNX export")
require("onnxruntime", "the deploy extra: ONNX Runtime")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from deploy import tensorrt_verify  # noqa: E402


def _graph(path: Path, name: str, dtype: int) -> None:
    """y = x + 1 (int64 or float32), opset 18."""
    one = helper.make_tensor("one", dtype, [], [1])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], name,
                              [helper.make_tensor_value_info("x", dtype, [1, 3])],
                              [helper.make_tensor_value_info("y", dtype, [1, 3])], [one])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


@pytest.fixture
def bundle(tmp_path) -> Path:
    """Two checks: `ids` (an int64 graph, as embed/decoder take token ids) and `vision` (float32)."""
    (tmp_path / "references").mkdir()
    checks = []
    for name, dtype, np_dtype in (("ids", TensorProto.INT64, np.int64), ("vision", TensorProto.FLOAT, np.float32)):
        _graph(tmp_path / f"{name}.onnx", name, dtype)
        x = np.array([[1, 2, 3]], np_dtype)
        np.save(tmp_path / "references" / f"{name}.x.npy", x, allow_pickle=False)
        np.save(tmp_path / "references" / f"{name}.y.npy", (x + 1).astype(np.float32), allow_pickle=False)
        checks.append({"name": name, "onnx": f"{name}.onnx", "engine": f"{name}.plan", "required": True,
                       "build": "trtexec ...", "inputs": {"x": {"file": f"references/{name}.x.npy"}},
                       "outputs": {"y": {"file": f"references/{name}.y.npy"}}})
    tolerance = {"tensorrt": {"rtol": 1e-2, "atol": 1e-4}, "onnxruntime": {"rtol": 1e-4, "atol": 1e-6}}
    (tmp_path / "bundle.json").write_text(json.dumps({"tolerance": tolerance, "checks": checks}))
    return tmp_path


def run(bundle: Path, runtime: str) -> tuple[int, str]:
    out = io.StringIO()
    return tensorrt_verify.verify(bundle, runtime, out=out), out.getvalue()


def test_a_graph_that_does_not_load_fails_its_check_and_the_others_still_run(bundle):
    code, text = run(bundle, "onnxruntime")
    assert code == 0 and "PASS ids/y" in text and "PASS vision/y" in text, text
    (bundle / "ids.onnx").write_bytes(b"not an onnx graph, e.g. a copy cut short")
    code, text = run(bundle, "onnxruntime")
    assert code == 1
    assert "FAIL ids: ids.onnx did not run (" in text and "PASS vision/y" in text and "1 check(s) failed" in text

