"""The ONNX graphs are float32 (onnxruntime's CPU kernels). A bfloat16 / float16 model (a --dtype, a bfloat16
checkpoint, on a GPU) was deep-copied in its own dtype where it lay (a second model on the GPU) and only then widened;
the float32 copy is now made directly, once, on the model's device, and a float32 model is not copied at all. The
same holds for the CPU copies that ExecuTorch and TensorRT take (`float32_on_cpu`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import model
from deploy.executorch.export import export_model
from deploy.onnx import export as onnx_export
from deploy.onnx import graphs


@pytest.fixture
def no_same_dtype_duplicate(monkeypatch):
    """Fail any deepcopy of a weight: what a deepcopy-then-convert does first, on the model's own device."""
    def refuse(self, memo):
        raise AssertionError(f"a {self.dtype} {tuple(self.shape)} weight was deep-copied before its conversion")

    monkeypatch.setattr(nn.Parameter, "__deepcopy__", refuse)
    monkeypatch.setattr(torch.Tensor, "__deepcopy__", refuse)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_onnx_exports_a_float32_copy_made_directly(dtype, no_same_dtype_duplicate):
    half, _ = model.load("pocket-tiny-scratch", dtype=dtype)
    wide = onnx_export.onnx_model(half)
    assert wide is not half and {p.dtype for p in wide.parameters()} == {torch.float32}
    assert {p.dtype for p in half.parameters()} == {getattr(torch, dtype)}  # the caller's model untouched
    assert not wide.training
    assert (wide.get_input_embeddings().weight.data_ptr() == wide.language_model.get_output_embeddings().weight.data_ptr()
            ) == (half.get_input_embeddings().weight.data_ptr()
                  == half.language_model.get_output_embeddings().weight.data_ptr())  # tying kept
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(wide.get_input_embeddings()(ids), half.get_input_embeddings()(ids).float())


def test_a_float32_model_is_exported_as_it_is():
    vlm, _ = model.load("pocket-tiny-scratch")
    assert onnx_export.onnx_model(vlm) is vlm


def test_write_onnx_hands_the_graphs_the_float32_model(monkeypatch, tmp_path, no_same_dtype_duplicate):
    seen = []

    def capture(vlm, path, metadata=None):
        seen.append(next(vlm.parameters()).dtype)
        path.write_bytes(b"")
        return path

    for name in ("export_vision", "export_embed", "export_decoder"):
        monkeypatch.setattr(onnx_export, name, capture)
    half, processor = model.load("pocket-tiny-scratch", dtype="bfloat16")
    onnx_export.write_onnx(half, processor, tmp_path, progress=False)
    assert seen == [torch.float32] * 3


@pytest.mark.parametrize("take", [export_model, graphs.float32_on_cpu, lambda m: export_model(m, "int8")],
                         ids=["executorch", "tensorrt", "executorch-int8"])
def test_cpu_copies_are_made_directly(take, no_same_dtype_duplicate):
    half, _ = model.load("pocket-tiny-scratch", dtype="bfloat16")
    copied = take(half)
    assert copied is not half and {p.dtype for p in copied.parameters()} == {torch.float32}
    assert {p.device.type for p in copied.parameters()} == {"cpu"}


def test_write_onnx_leaves_the_callers_train_and_eval_modes(monkeypatch, tmp_path):
    """`write_onnx` used to put a float32 model in eval mode and leave it there: a model being trained came back from
    an export in eval mode (dropout off). Each submodule's own mode is what it was (a frozen tower stays in eval)."""
    def stub(vlm, path, metadata=None):
        path.write_bytes(b"")
        return path

    for name in ("export_vision", "export_embed", "export_decoder"):
        monkeypatch.setattr(onnx_export, name, stub)
    vlm, processor = model.load("pocket-tiny-scratch")
    vlm.train()
    vlm.vision_tower.eval()
    before = {name: m.training for name, m in vlm.named_modules()}
    onnx_export.write_onnx(vlm, processor, tmp_path, progress=False)
    assert {name: m.training for name, m in vlm.named_modules()} == before
    assert vlm.training and not vlm.vision_tower.training


def test_write_tensorrt_leaves_the_callers_train_and_eval_modes(monkeypatch, tmp_path):
    """The bundle's references are made in eval mode; a float32 CPU model was switched to eval itself and left so."""
    from deploy import tensorrt

    class Stop(Exception):
        pass

    def references(folder):
        raise Stop  # the graphs and references are not needed: the mode is set before them

    monkeypatch.setattr(tensorrt, "write_onnx", lambda *a, **k: None)
    monkeypatch.setattr(tensorrt, "convert_opset", lambda *a: None)
    monkeypatch.setattr(tensorrt, "clamp_fp16_constants", lambda *a: [])
    monkeypatch.setattr(tensorrt, "References", references)
    vlm, processor = model.load("pocket-tiny-scratch")
    vlm.train()
    vlm.vision_tower.eval()
    before = {name: m.training for name, m in vlm.named_modules()}
    with pytest.raises(Stop):
        tensorrt.write_tensorrt(vlm, processor, tmp_path, progress=False)
    assert {name: m.training for name, m in vlm.named_modules()} == before
