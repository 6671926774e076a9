"""Edge exports and the device the model was loaded on: the example inputs of every ONNX graph are made on the
model's device (they were made on the CPU, so a model loaded with --device cuda failed inside the exporter),
ExecuTorch captures a CPU float32 copy (XNNPACK runs on the CPU), and asking for CUDA on a machine without it is one
clear line before anything loads."""

from __future__ import annotations

import pytest
import torch

import model
from adapt.cli import main
from deploy.executorch.export import export_model
from deploy.onnx import graphs


def test_onnx_example_inputs_are_on_the_models_device(monkeypatch, tmp_path):
    seen = []

    def capture(module, args, path, *rest, **kwargs):
        seen.append((path.name, {a.device.type for a in args}))
        return path

    monkeypatch.setattr(graphs, "export_graph", capture)
    on_meta = model.load("pocket-tiny-scratch")[0].to("meta")  # a device other than the CPU, allocating nothing
    for export in (graphs.export_vision, graphs.export_embed, graphs.export_decoder):
        export(on_meta, tmp_path / f"{export.__name__}.onnx")
    assert seen == [(f"{name}.onnx", {"meta"}) for name in ("export_vision", "export_embed", "export_decoder")]


@pytest.mark.parametrize("export_model", [export_model, graphs.float32_on_cpu], ids=["executorch", "tensorrt"])
def test_cpu_runtimes_export_a_cpu_float32_model(export_model):
    """ExecuTorch captures, and TensorRT's references are computed on, what this returns."""
    vlm, _ = model.load("pocket-tiny-scratch")
    assert export_model(vlm) is vlm  # float32 on the CPU: no copy
    half, _ = model.load("pocket-tiny-scratch", dtype="bfloat16")
    copied = export_model(half)
    assert copied is not half and next(copied.parameters()).dtype == torch.float32
    assert next(half.parameters()).dtype == torch.bfloat16  # the caller's model untouched
    # a float32 model off the CPU is copied to the CPU; a meta one cannot be (no values), which shows the copy is made
    with pytest.raises(NotImplementedError, match="meta"):
        export_model(vlm.to("meta"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_export_on_cuda_without_cuda_is_one_clear_line(fmt, tmp_path, capsys):
    assert main(["export", "-f", fmt, "--device", "cuda", "--out", str(tmp_path / fmt)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt export: error: device 'cuda': this machine's torch") and "no cuda device" in err
    assert "Traceback" not in err and not (tmp_path / fmt).exists()
