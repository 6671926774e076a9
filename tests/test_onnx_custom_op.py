"""An operator outside aten that the ONNX exporter cannot translate (a library's custom op, as transformers' MoE
experts bring) is named with its namespace and the submodule that called it, without the exporter's pointer to a
stack trace `adapt` does not print."""

from __future__ import annotations

import pytest
import torch

from .deps import require

require("onnx", "the deploy extra: ONNX export")
require("onnxscript", "the deploy extra: torch.onnx's dynamo exporter")

from deploy.onnx.graphs import OnnxExportError, export_graph  # noqa: E402


@torch.library.custom_op("pocket_test::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x):
    return torch.empty_like(x)


class _Twice(torch.nn.Module):
    def forward(self, x):
        return twice(x)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.head = _Twice()

    def forward(self, x):
        return self.head(self.proj(x))


def test_a_custom_operator_is_named_with_its_namespace_and_module(tmp_path):
    """Such a failure was 'the ONNX exporter failed (Error when translating node ... See the stack trace for more
    information.)': no module named, and a stack trace the user never sees."""
    with pytest.raises(OnnxExportError) as caught:
        export_graph(_Net(), (torch.randn(2, 4),), tmp_path / "net.onnx", ["x"], ["y"])
    message = str(caught.value)
    assert message.startswith("net.onnx: cannot export operator pocket_test.twice called by head (_Twice)")
    assert "stack trace" not in message
    assert not (tmp_path / "net.onnx").exists()
