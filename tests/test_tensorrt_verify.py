"""The bundle's verify.py (deploy/tensorrt_verify.py) on a hand-made two-check bundle: fast, no export.

TensorRT is not installable here, so its runner is exercised through stand-ins for the `tensorrt` and polygraphy
modules that behave as the real ones do where it matters (polygraphy refuses a feed whose dtype is not the engine's).
"""

from __future__ import annotations

import io
import json
import sys
import types
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


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """`tensorrt` whose engines take int32 where the graph says int64 (TensorRT 8.x), and polygraphy's TrtRunner,
    which refuses a feed of another dtype than the engine's, as polygraphy does; the engine adds one."""

    class Engine:
        def get_tensor_dtype(self, name):
            return self.dtypes[name]

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            engine = Engine()
            engine.dtypes = {"x": "int32" if data == b"ids" else "float32"}
            return engine

    class Logger:
        WARNING = 0

        def __init__(self, level):
            pass

    class PolyRunner:
        def __init__(self, engine):
            self.engine = engine

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def infer(self, feeds):
            for name, array in feeds.items():
                if array.dtype != np.dtype(self.engine.get_tensor_dtype(name)):
                    raise RuntimeError(f"Input tensor: {name} | Received unexpected dtype: {array.dtype}")
            return {"y": (feeds["x"] + 1).astype(np.float32)}

    trt = types.SimpleNamespace(Runtime=Runtime, Logger=Logger, nptype=np.dtype)
    backend = types.ModuleType("polygraphy.backend.trt")
    backend.TrtRunner = PolyRunner
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name in ("polygraphy", "polygraphy.backend"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", backend)


def test_engine_inputs_are_fed_in_the_engines_own_dtype(bundle, fake_tensorrt):
    """TensorRT 8.x engines take the int64 token ids / mask / positions as int32; verify.py feeds them so."""
    (bundle / "ids.plan").write_bytes(b"ids")
    (bundle / "vision.plan").write_bytes(b"vision")
    code, text = run(bundle, "tensorrt")
    assert code == 0 and "PASS ids/y" in text and "PASS vision/y" in text, text


def test_a_missing_or_damaged_reference_fails_its_output_naming_the_file_and_the_others_still_run(bundle):
    """A bundle copied to the Orin in part (rsync cut short) or damaged: a FAIL naming the file, not numpy's
    traceback (which calls any non-.npy file 'pickled data') with the remaining checks never run."""
    (bundle / "references" / "ids.y.npy").unlink()
    (bundle / "references" / "vision.x.npy").write_bytes(b"cut short")
    code, text = run(bundle, "onnxruntime")
    assert code == 1 and "2 check(s) failed" in text, text
    assert f"FAIL ids/y: expected output {bundle / 'references' / 'ids.y.npy'} is missing" in text
    assert f"FAIL vision: reference input {bundle / 'references' / 'vision.x.npy'} is not a .npy array file" in text
    assert "sha256sum -c SHA256SUMS" in text and "pickle" not in text  # numpy's advice to load it unsafely: not given
    np.save(bundle / "references" / "ids.y.npy", np.array([[2, 3, 4]], np.float32), allow_pickle=False)
    (bundle / "references" / "vision.x.npy").write_bytes(
        (bundle / "references" / "ids.y.npy").read_bytes()[:-4])  # a .npy cut short
    code, text = run(bundle, "onnxruntime")
    assert code == 1 and "PASS ids/y" in text and "vision.x.npy is not a readable .npy array" in text, text


@pytest.mark.parametrize("manifest", [None, "{not json", json.dumps({"checks": []})])
def test_a_folder_without_a_readable_manifest_is_said_not_a_traceback(tmp_path, manifest, capsys):
    if manifest is not None:
        (tmp_path / "bundle.json").write_text(manifest)
    assert tensorrt_verify.main(["--bundle", str(tmp_path), "--runtime", "onnxruntime"]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith(f"verify.py: {tmp_path / 'bundle.json'} ")
    assert ("--bundle must be the folder" if manifest is None else "is not a bundle manifest") in printed


@pytest.mark.parametrize("flag, value", [("--rtol", "-0.1"), ("--atol", "nan"), ("--atol", "inf"), ("--rtol", "x")])
def test_a_tolerance_that_would_fail_or_pass_every_check_is_refused(flag, value, tmp_path, capsys):
    """A negative tolerance FAILed every check and an infinite or NaN one PASSed every check, damaged engines too."""
    with pytest.raises(SystemExit) as exit_:
        tensorrt_verify.main(["--bundle", str(tmp_path), flag, value])
    assert exit_.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["no outputs", "not an object", "inputs a list", "checks an object",
                                    "input without file", "output without file"])
def test_a_check_cut_short_in_the_manifest_is_said_not_a_traceback(bundle, damage, capsys):
    """A bundle.json whose check lacked a key (a hand edit, a copy cut short) ended in a KeyError traceback."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    if damage == "no outputs":
        del manifest["checks"][1]["outputs"]
    elif damage == "not an object":
        manifest["checks"][0] = "vision"
    elif damage == "inputs a list":
        manifest["checks"][1]["inputs"] = ["x"]
    elif damage == "input without file":  # a KeyError traceback from feeds_for
        manifest["checks"][1]["inputs"]["x"] = {"zeros": [1, 3]}
    elif damage == "output without file":  # a KeyError traceback from verify's output loop
        manifest["checks"][0]["outputs"]["y"] = "references/ids.y.npy"
    else:
        manifest["checks"] = {"vision": manifest["checks"][1]}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    assert tensorrt_verify.main(["--bundle", str(bundle), "--runtime", "onnxruntime"]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith(f"verify.py: {bundle / 'bundle.json'}") and "export the bundle again" in printed, printed
    said = {"no outputs": "check 2 (vision) lacks outputs", "not an object": "check 1 (?) lacks name",
            "inputs a list": "check 2 (vision) lacks inputs / outputs as objects",
            "checks an object": "checks is a dict, not a list",
            "input without file": "check 2 (vision) lacks input 'x' as {'file': ...} or {'zeros': [...], 'dtype': ...}",
            "output without file": "check 1 (ids) lacks output 'y' as {'file': ...}"}[damage]
    assert said in printed, printed


@pytest.mark.parametrize("where", ["input", "output", "onnx", "engine"])
def test_a_manifest_naming_a_file_outside_the_bundle_is_refused(bundle, tmp_path, where, capsys):
    """bundle.json's file names were joined to the bundle as they came: an absolute path or ../ read (or ran) a
    file anywhere on the device."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    check = manifest["checks"][1]
    outside = {"input": "../elsewhere/x.npy", "output": "/etc/passwd", "onnx": "../../vision.onnx",
               "engine": "/tmp/vision.plan"}[where]
    if where == "input":
        check["inputs"]["x"]["file"] = outside
    elif where == "output":
        check["outputs"]["y"]["file"] = outside
    else:
        check[where] = outside
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    assert tensorrt_verify.main(["--bundle", str(bundle), "--runtime", "onnxruntime"]) == 1
    printed = capsys.readouterr().out
    assert f"check 2 (vision) names {outside!r}, not a file inside the bundle" in printed, printed


def test_engines_with_onnxruntime_is_refused_not_ignored(bundle, tmp_path, capsys):
    """--engines was ignored with --runtime onnxruntime: the ONNX graphs ran and passed, no engine was looked at."""
    argv = ["--bundle", str(bundle), "--runtime", "onnxruntime", "--engines", str(tmp_path)]
    assert tensorrt_verify.main(argv) == 1
    printed = capsys.readouterr().out
    assert "--engines names TensorRT engines; --runtime onnxruntime" in printed and "PASS" not in printed, printed


@pytest.mark.parametrize("make, said", [(None, "no such folder"), ("file", "not a folder")])
def test_an_engines_folder_that_is_not_there_is_one_line_naming_it(bundle, tmp_path, capsys, make, said):
    """--engines /missing/dir FAILed each required check as "<engine> not found", never saying the folder is not
    there."""
    engines = tmp_path / "elsewhere" / "engines"
    if make:
        engines.parent.mkdir()
        engines.write_bytes(b"")
    assert tensorrt_verify.main(["--bundle", str(bundle), "--engines", str(engines)]) == 1
    printed = capsys.readouterr().out
    assert printed == f"verify.py: --engines {engines}: {said} (give the folder that holds the built *.plan files)\n"


@pytest.mark.parametrize("absent, said", [
    ("tensorrt", "sudo apt install python3-libnvinfer"),
    ("runner", "pip install polygraphy"),
    ("onnxruntime", "pip install onnxruntime"),
])
def test_a_runtime_not_installed_is_said_once_up_front(bundle, fake_tensorrt, monkeypatch, absent, said):
    """Without TensorRT's bindings every check FAILed on its own with the same ImportError, naming nothing to install."""
    (bundle / "ids.plan").write_bytes(b"ids")
    (bundle / "vision.plan").write_bytes(b"vision")
    blocked = {"tensorrt": ["tensorrt"], "onnxruntime": ["onnxruntime"],
               "runner": ["polygraphy.backend.trt", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"]}
    for name in blocked[absent]:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    code, text = run(bundle, "onnxruntime" if absent == "onnxruntime" else "tensorrt")
    assert code == 1 and text.startswith("verify.py: ") and said in text, text
    assert "FAIL" not in text and text.count("\n") == 1, text
