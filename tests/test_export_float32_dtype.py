"""`adapt export -f onnx|executorch|tensorrt --dtype bfloat16|float16` wrote float32 files ("(fp32)") from weights
rounded to the asked dtype first: precision lost for nothing, and not the dtype asked for. Refused in one line
before the model is loaded; float32 (or no --dtype) and the formats that keep a dtype (hf, pocket) go on."""

from __future__ import annotations

import pytest

from adapt.cli import main
from deploy.hf import ExportError, check_dtype


@pytest.mark.parametrize("fmt", ["onnx", "executorch", "tensorrt"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_load_dtype_for_a_float32_export_is_refused(fmt, dtype, tmp_path, capsys):
    assert main(["export", "-f", fmt, "--dtype", dtype, "--out", str(tmp_path / fmt)]) == 1
    err = capsys.readouterr().err
    assert f"--dtype {dtype}: the {fmt} export is float32 whatever the model is loaded in" in err
    assert "leave --dtype out" in err and "Traceback" not in err and not (tmp_path / fmt).exists()


def test_what_goes_on():
    for fmt in ("onnx", "executorch", "tensorrt"):
        check_dtype(fmt, None), check_dtype(fmt, "float32")
    for fmt in ("hf", "internvl", "pocket", "mobilevlm"):
        check_dtype(fmt, "bfloat16")
    with pytest.raises(ExportError):
        check_dtype("onnx", "float16")
