"""Will a graph survive fp16? Two checks, run at export time on the reference inputs.

- `compare_fp16`: the ONNX graph converted to fp16 (onnxruntime's own `convert_float_to_float16`, inputs and
  outputs kept fp32) and run in onnxruntime next to the fp32 graph: max abs error and error relative to the
  output's largest magnitude, per output.
- `scan_magnitudes`: the PyTorch module run in fp32 with every aten operator watched (a dispatch mode, the module
  stack followed by `ModuleTracker`): the largest magnitude each operator produced, per owning module. A value
  above fp16's largest finite number (65504) becomes inf in fp16; for normalisations (layer / RMS norm) the
  largest per-row sum of squares of the input is reported too, since an fp16 reduction of it overflows first. An
  RMSNorm module that computes its norm from pow and mean (transformers' Qwen2RMSNorm, LlamaRMSNorm: no norm
  operator is dispatched) is found by its class name and reported under the reduction, `mean`.
  Masking constants (float32's lowest, filled into attention masks) are listed apart: they become -inf in fp16,
  which softmax handles unless a whole row is masked.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

FP16_MAX = 65504.0
MASK_FILL = 1e30  # magnitudes this large are masking constants (finfo.min): -inf in fp16, as intended
_NORMS = ("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm")
# operators that move or copy values without computing new ones (their magnitudes repeat their input's)
_MOVES = {"view", "_unsafe_view", "clone", "expand", "permute", "transpose", "t", "slice", "select", "unsqueeze",
          "squeeze", "detach", "alias", "_to_copy", "reshape", "cat", "split", "split_with_sizes", "unbind", "copy_",
          "lift_fresh", "contiguous", "index", "new_empty", "empty", "zeros", "ones", "arange", "full"}


def compare_fp16(graph: Path, feeds: dict[str, np.ndarray]) -> dict[str, dict]:
    """{output: {max_abs_error, relative_error, max_abs_fp32, nonfinite, nonfinite_fp16}} of the fp16 graph against
    fp32 (`compare`; nonfinite_fp16: every inf or NaN the fp16 output holds)."""
    from deploy.onnx.runtime import import_extra

    onnx, ort = import_extra("onnx"), import_extra("onnxruntime")
    from onnx.external_data_helper import load_external_data_for_model
    convert_float_to_float16 = import_extra("onnxruntime.transformers.float16").convert_float_to_float16

    graph = Path(graph)
    fp32 = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in fp32.get_outputs()], fp32.run(None, feeds)))
    with tempfile.TemporaryDirectory(prefix="fp16-", dir=graph.parent) as tmp:
        # shape inference from the file: the converter's own (onnx.shape_inference.infer_shapes on the loaded model)
        # serialises the model, weights included, which protobuf refuses past 2 GB (a 2B model's fp32 decoder)
        inferred = Path(tmp) / f"shapes-{graph.name}"
        onnx.shape_inference.infer_shapes_path(str(graph), str(inferred))
        model = onnx.load(str(inferred), load_external_data=False)
        load_external_data_for_model(model, str(graph.parent))
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        del model
        path = Path(tmp) / graph.name
        onnx.save(half, str(path), save_as_external_data=True, location=graph.name + ".data")
        del half
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        del session
    return {name: compare(got[name], ref) | {"nonfinite_fp16": int((~np.isfinite(got[name])).sum())}
            for name, ref in expected.items()}


def compare(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Max abs error and that error relative to the reference's largest magnitude, over the values both hold finite;
    `nonfinite`: the values `got` holds inf or NaN where `ref` is finite (an fp16 overflow), counted apart so that
    they are reported as such rather than as a NaN error."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    finite = np.isfinite(got) & np.isfinite(ref)
    err = float(np.abs(got - ref)[finite].max()) if finite.any() else 0.0
    scale = float(np.abs(ref[np.isfinite(ref)]).max()) if np.isfinite(ref).any() else 0.0
    return {"max_abs_error": err, "relative_error": err / scale if scale else err, "max_abs_fp32": scale,
            "nonfinite": int((~np.isfinite(got) & np.isfinite(ref)).sum())}


def scan_magnitudes(module: torch.nn.Module, args: tuple, top: int = 5) -> dict:
    """Largest fp32 magnitudes per (module, operator) in one forward of `module`: what overflows fp16 and the `top`
    operators with the least headroom."""
    from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
    from torch.utils.module_tracker import ModuleTracker

    from deploy.onnx.graphs import _innermost

    names = {id(m): n for n, m in module.named_modules()}
    peaks: dict[tuple[str, str], float] = {}
    squares: dict[tuple[str, str], float] = {}
    tracker = ModuleTracker()

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            op = func.__name__.split(".")[0]
            if op in _MOVES:
                return out
            key = (_innermost(tracker, module, names) or type(module).__name__, op)
            first = out[0] if isinstance(out, (tuple, list)) and out else out
            if isinstance(first, torch.Tensor) and first.is_floating_point() and first.numel():
                peaks[key] = max(peaks.get(key, 0.0), float(first.detach().abs().max()))
            if op in _NORMS and args and isinstance(args[0], torch.Tensor) and args[0].numel():
                x = args[0].detach().double()
                squares[key] = max(squares.get(key, 0.0), float((x * x).sum(-1).max()))
            return out

    def rms_input(inputs: tuple, path: str) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].is_floating_point() and inputs[0].numel():
            with _disable_current_modes():  # this measurement's own operators are not the module's
                x = inputs[0].detach().double()
                rms[path] = max(rms.get(path, 0.0), float((x * x).sum(-1).max()))

    rms: dict[str, float] = {}
    hooks = [m.register_forward_pre_hook(lambda m, i, path=f"{n} ({type(m).__name__})": rms_input(i, path))
             for n, m in module.named_modules() if n and type(m).__name__.endswith("RMSNorm")]
    try:
        with torch.no_grad(), tracker, Watch():
            module(*args)
    finally:
        for hook in hooks:
            hook.remove()
    for path, total in rms.items():  # an RMSNorm that ran a norm operator was measured there already
        if not any(m == path for m, _ in squares):
            squares[(path, "mean")] = total
    rows = [{"module": m, "op": op, "max_abs": peak, "headroom": FP16_MAX / peak if peak else None}
            for (m, op), peak in peaks.items()]
    rows.sort(key=lambda r: -r["max_abs"])
    masks = [r for r in rows if r["max_abs"] >= MASK_FILL]
    rows = [r for r in rows if r["max_abs"] < MASK_FILL]
    norms = [{"module": m, "op": op, "max_row_sum_of_squares": s} for (m, op), s in squares.items()]
    norms.sort(key=lambda r: -r["max_row_sum_of_squares"])
    return {
        "overflow": [r for r in rows if r["max_abs"] > FP16_MAX],
        "norm_sum_of_squares_over_fp16": [r for r in norms if r["max_row_sum_of_squares"] > FP16_MAX],
        "largest": rows[:top],
        "mask_fill": [{"module": r["module"], "op": r["op"]} for r in masks],
        "operators_watched": len(rows),
    }
