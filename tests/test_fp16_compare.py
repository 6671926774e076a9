"""The fp16 check's comparison: an fp16 output that overflowed to inf / NaN gave a RuntimeWarning (All-NaN slice)
and a NaN error, which `max` then skipped when naming the worst output. Non-finite values are counted apart and
named in the report's summary; the error is over the values both outputs hold finite."""

from __future__ import annotations

import warnings

import numpy as np

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
