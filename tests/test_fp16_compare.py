"""The fp16 check's comparison: an fp16 output that overflowed to inf / NaN gave a RuntimeWarning (All-NaN slice)
and a NaN error, which `max` then skipped when naming the worst output. Non-finite values are counted apart and
named in the report's summary; the error is over the values both outputs hold finite."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from deploy.fp16_check import compare


def test_an_all_nan_output_is_reported_as_nonfinite_not_as_a_nan_error():
    ref = np.array([1.0, -2.0, 4.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compare(np.full(3, np.nan, np.float32), ref)
    assert stats == {"max_abs_error": 0.0, "relative_error": 0.0, "max_abs_fp32": 4.0, "nonfinite": 3}


def test_an_overflow_is_counted_and_the_finite_values_compared():
    stats = compare(np.array([1.5, np.inf, 4.0]), np.array([1.0, 70000.0, 4.0]))
    assert stats["nonfinite"] == 1 and stats["max_abs_error"] == 0.5 and stats["max_abs_fp32"] == 70000.0


def test_the_summary_names_outputs_that_hold_inf_or_nan_in_fp16():
    from tests.deps import require

    require("onnxruntime")
    from deploy.tensorrt import fp16_report

    empty = {"overflow": [], "norm_sum_of_squares_over_fp16": []}
    ok = compare(np.ones(2), np.ones(2)) | {"nonfinite_fp16": 0, "within_tolerance": True}
    bad = compare(np.full(2, np.nan), np.ones(2)) | {"nonfinite_fp16": 2, "within_tolerance": False}
    report = fp16_report({"vision": {"outputs": {"image_features": ok}, "magnitudes": empty},
                          "decoder": {"outputs": {"logits": bad}, "magnitudes": empty}})
    assert report["summary"].startswith("fp16 check: OUTSIDE tolerance; inf or NaN in fp16 in decoder/logits (2)")


def test_the_fp16_check_does_not_serialise_the_whole_model(tmp_path, monkeypatch):
    """onnxruntime's converter ran onnx's in-memory shape inference on the loaded graph, weights included, which
    protobuf refuses past 2 GB ('exceeds maximum protobuf size'): the fp16 check of a 2B model's fp32 decoder failed.
    Shapes are now inferred from the file (`infer_shapes_path`, no size limit); the in-memory one is made to fail
    here as it does on such a model."""
    from tests.deps import require

    require("onnx")
    require("onnxruntime")
    import onnx
    import onnxruntime.transformers.float16 as float16
    from onnx import TensorProto, helper, numpy_helper

    from deploy.fp16_check import compare_fp16

    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="g.onnx.data", size_threshold=0)

    def too_large(*_, **__):
        raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")

    monkeypatch.setattr(float16, "infer_shapes", too_large)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", too_large)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    stats = compare_fp16(path, {"x": x})["y"]
    assert stats["max_abs_fp32"] == pytest.approx(float(np.abs(np.maximum(x @ weight, 0)).max()), rel=1e-5)
    assert 0 < stats["relative_error"] < 1e-2 and stats["nonfinite_fp16"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx", "g.onnx.data"]  # nothing left beside it
