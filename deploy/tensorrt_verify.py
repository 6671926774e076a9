#!/usr/bin/env python3
"""Check TensorRT engines (or the bundle's ONNX graphs) against the reference outputs shipped in this bundle.

    python3 verify.py                          # the engines (*.plan) built on this device, TensorRT
    python3 verify.py --engines DIR            # engines elsewhere (TensorRT only)
    python3 verify.py --runtime onnxruntime    # the fp32 ONNX graphs in onnxruntime (no GPU needed)

Every check in bundle.json names an ONNX graph, the engine built from it, the reference inputs (.npy) and the
expected outputs (.npy, PyTorch fp32). An output passes when its shape matches, it is finite, and
max|got - expected| <= atol + rtol * max|expected| (tolerances per runtime in bundle.json: fp16 engines get a
looser one than the fp32 graphs). One line per output, PASS or FAIL; a check whose engine is missing FAILs when it
is required (the fixed-profile vision engines) and is reported as SKIP otherwise (the single vision engine for any
tile count, the language-model engines built with trtexec). Exit status 0 when everything checked passes, 1 otherwise.

Needs numpy, and: TensorRT's Python bindings with polygraphy, or with the CUDA Python bindings (`cuda-python`);
or onnxruntime for --runtime onnxruntime (a missing one is named before any check runs). Nothing else; it does
not import pocket-adapt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


CHECK_KEYS = ("name", "onnx", "engine", "required", "build", "inputs", "outputs")  # what verify() reads of a check


class BundleError(Exception):
    """The bundle's manifest or a reference file is missing or unreadable."""


def load_array(path: Path) -> np.ndarray:
    """A reference .npy (never pickled objects); a missing or damaged file is a BundleError naming it."""
    if not path.is_file():
        raise BundleError(f"{path} is missing (copy the whole bundle; `sha256sum -c SHA256SUMS` lists what is "
                          "missing or changed)")
    with open(path, "rb") as file:
        header = file.read(6)
    if header != b"\x93NUMPY":  # numpy would call it "pickled (object) data" and suggest loading it unsafely
        raise BundleError(f"{path} is not a .npy array file (no .npy header); `sha256sum -c SHA256SUMS` shows "
                          "whether it changed since the export")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise BundleError(f"{path} is not a readable .npy array ({' '.join(str(error).split())[:200]}); "
                          "`sha256sum -c SHA256SUMS` shows whether it changed since the export") from None


def feeds_for(check: dict, bundle: Path) -> dict[str, np.ndarray]:
    """The check's inputs: a reference .npy, or zeros of a stated shape (an empty KV cache)."""
    feeds = {}
    for name, spec in check["inputs"].items():
        if "file" in spec:
            feeds[name] = load_array(bundle / spec["file"])
        else:
            feeds[name] = np.zeros(spec["zeros"], dtype=spec["dtype"])
    return feeds


def load_manifest(bundle: Path, runtime: str) -> tuple[dict, dict]:
    """bundle.json and its tolerance for `runtime`; BundleError when the folder holds no readable manifest."""
    path = bundle / "bundle.json"
    if not path.is_file():
        raise BundleError(f"{path} not found: --bundle must be the folder `adapt export --format tensorrt` wrote "
                          "(default: the folder of this verify.py)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        tolerance = manifest["tolerance"][runtime]
        checks = manifest["checks"]
        if not isinstance(checks, list):
            raise TypeError(f"checks is a {type(checks).__name__}, not a list")
    except (ValueError, KeyError, TypeError) as error:
        raise BundleError(f"{path} is not a bundle manifest with tolerances for {runtime} and checks "
                          f"({type(error).__name__}: {error}); export the bundle again") from None
    for k, check in enumerate(checks):  # a check cut short failed in the loop below with a KeyError traceback
        missing = [key for key in CHECK_KEYS if not isinstance(check, dict) or key not in check]
        if not missing and not all(isinstance(check[key], dict) for key in ("inputs", "outputs")):
            missing = ["inputs / outputs as objects"]
        if not missing:  # feeds_for / verify read spec["file"] (or "zeros" and "dtype") of each: a KeyError there
            bad = [f"{kind} {name!r} as {{'file': ...}}"
                   + (" or {'zeros': [...], 'dtype': ...}" if kind == "input" else "")
                   for kind, specs in (("input", check["inputs"]), ("output", check["outputs"]))
                   for name, spec in specs.items()
                   if not (isinstance(spec, dict) and ("file" in spec or kind == "input" and "zeros" in spec
                                                       and "dtype" in spec))]
            missing = bad[:1]
        if missing:
            name = check.get("name", "?") if isinstance(check, dict) else "?"
            raise BundleError(f"{path}: check {k + 1} ({name}) lacks {', '.join(missing)}; export the bundle again")
        named = [check["onnx"], check["engine"]] + [spec.get("file") for spec in
                                                    list(check["inputs"].values()) + list(check["outputs"].values())
                                                    if isinstance(spec, dict) and "file" in spec]
        outside = next((name for name in named if not _inside(bundle, name)), None)
        if outside is not None:  # the manifest names the bundle's own files: nothing else is read or run
            raise BundleError(f"{path}: check {k + 1} ({check['name']}) names {outside!r}, not a file inside the "
                              "bundle; export the bundle again")
    return manifest, tolerance


def _inside(bundle: Path, name: object) -> bool:
    """`name` is a relative path that stays inside `bundle` (no absolute path, no ``..`` out of it)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        return False
    root = bundle.resolve()
    try:
        (root / name).resolve().relative_to(root)
    except ValueError:
        return False
    return True


def judge(got: np.ndarray | None, expected: np.ndarray, rtol: float, atol: float) -> tuple[bool, str]:
    """(passed, detail) for one output."""
    if got is None:
        return False, "no such output"
    got = np.asarray(got)
    if tuple(got.shape) != tuple(expected.shape):
        return False, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    got64, exp64 = got.astype(np.float64), expected.astype(np.float64)
    if not np.isfinite(got64).all():
        return False, f"{int((~np.isfinite(got64)).sum())} values not finite"
    err = float(np.abs(got64 - exp64).max()) if got.size else 0.0
    limit = atol + rtol * (float(np.abs(exp64).max()) if exp64.size else 0.0)
    return err <= limit, f"max_abs_err={err:.3g} limit={limit:.3g}"


class OrtRunner:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feeds)))


class TrtRunner:
    """One engine run through TensorRT's Python API (10.x tensor API): polygraphy's runner when installed,
    else device buffers from the CUDA Python bindings."""

    def __init__(self, path: Path):
        import tensorrt as trt

        self.trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT could not load the engine (built on another device or version?)")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # the engine's own input types: TensorRT 8.x has no int64 and imports the graphs' int64 inputs as int32,
        # and polygraphy refuses a feed whose dtype differs from the engine's
        feeds = {name: np.ascontiguousarray(array.astype(self.trt.nptype(self.engine.get_tensor_dtype(name))))
                 for name, array in feeds.items()}
        try:
            from polygraphy.backend.trt import TrtRunner as PolyRunner
        except ImportError:
            return self._run_cuda(feeds)
        with PolyRunner(self.engine) as runner:
            return {k: np.array(v) for k, v in runner.infer(feeds).items()}

    def _run_cuda(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart

        def ok(result):
            err, *rest = result if isinstance(result, tuple) else (result,)
            if int(err) != 0:
                raise RuntimeError(f"CUDA error {err}")
            return rest[0] if rest else None

        trt, engine = self.trt, self.engine
        context = engine.create_execution_context()
        stream = ok(cudart.cudaStreamCreate())
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        buffers, outputs = [], {}
        try:
            for name in inputs:
                array = np.ascontiguousarray(feeds[name].astype(trt.nptype(engine.get_tensor_dtype(name))))
                context.set_input_shape(name, array.shape)
                ptr = ok(cudart.cudaMalloc(max(array.nbytes, 1)))
                buffers.append(ptr)
                if array.nbytes:
                    ok(cudart.cudaMemcpy(ptr, array.ctypes.data, array.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
                context.set_tensor_address(name, ptr)
            for name in names:
                if name in inputs:
                    continue
                shape = tuple(context.get_tensor_shape(name))
                array = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
                ptr = ok(cudart.cudaMalloc(max(array.nbytes, 1)))
                buffers.append(ptr)
                context.set_tensor_address(name, ptr)
                outputs[name] = (array, ptr)
            if not context.execute_async_v3(stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            ok(cudart.cudaStreamSynchronize(stream))
            for array, ptr in outputs.values():
                if array.nbytes:
                    ok(cudart.cudaMemcpy(array.ctypes.data, ptr, array.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        finally:
            for ptr in buffers:
                cudart.cudaFree(ptr)
            cudart.cudaStreamDestroy(stream)
        return {name: array for name, (array, _) in outputs.items()}


def missing_runtime(runtime: str) -> str | None:
    """What to install for `runtime` when its Python modules do not import here, else None."""
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            return f"--runtime onnxruntime needs onnxruntime ({error}): pip install onnxruntime"
        return None
    try:
        import tensorrt  # noqa: F401
    except ImportError as error:
        return (f"--runtime tensorrt needs TensorRT's Python bindings ({error}): on Jetson `sudo apt install "
                "python3-libnvinfer` (JetPack's package, for the system python3; a virtual environment sees it only "
                "with --system-site-packages), elsewhere `pip install tensorrt`; or check the ONNX graphs with "
                "--runtime onnxruntime")
    for module in ("polygraphy.backend.trt", "cuda.bindings.runtime", "cuda.cudart"):  # TrtRunner's ways to run
        try:
            __import__(module)
            return None
        except ImportError:
            continue
    return ("--runtime tensorrt needs polygraphy or the CUDA Python bindings besides TensorRT's: "
            "pip install polygraphy (or pip install cuda-python)")


def verify(bundle: Path, runtime: str, engines: Path | None = None, rtol: float | None = None,
           atol: float | None = None, out=None) -> int:
    """Run every check of the bundle in `runtime`; print one line per output; 0 when all pass, else 1.
    `engines` (TensorRT only) is the folder of the *.plan files, default the bundle."""
    out = out or sys.stdout  # at call time: a redirected stdout is honoured
    if engines is not None and runtime != "tensorrt":  # it was ignored: the ONNX graphs ran, not the engines
        print(f"verify.py: --engines names TensorRT engines; --runtime {runtime} runs the bundle's ONNX graphs "
              "and reads no engine (leave out --engines, or use --runtime tensorrt)", file=out)
        return 1
    if engines is not None and not engines.is_dir():  # each check then FAILed on its own, "<engine> not found"
        print(f"verify.py: --engines {engines}: {'not a folder' if engines.exists() else 'no such folder'} (give "
              "the folder that holds the built *.plan files)", file=out)
        return 1
    try:
        manifest, tolerance = load_manifest(bundle, runtime)
    except BundleError as error:
        print(f"verify.py: {error}", file=out)
        return 1
    rtol = tolerance["rtol"] if rtol is None else rtol
    atol = tolerance["atol"] if atol is None else atol
    engines = engines or bundle
    # the same graph and references as another check, differing only as an engine: not run in onnxruntime
    checks = [(check, bundle / check["onnx"] if runtime == "onnxruntime" else engines / check["engine"])
              for check in manifest["checks"] if runtime == "tensorrt" or not check.get("engine_only")]
    missing = missing_runtime(runtime) if any(path.is_file() for _, path in checks) else None
    if missing:  # every check would fail on its own with the same import error
        print(f"verify.py: {missing}", file=out)
        return 1
    failed = 0
    print(f"{runtime}: rtol={rtol:g} atol={atol:g} (max|got - expected| <= atol + rtol * max|expected|)", file=out)
    for check, path in checks:
        if not path.is_file():
            if check["required"]:
                failed += 1
                print(f"FAIL {check['name']}: {path} not found ({check['build']})", file=out)
            else:
                print(f"SKIP {check['name']}: {path.name} not built (optional)", file=out)
            continue
        try:
            feeds = feeds_for(check, bundle)
        except BundleError as error:
            failed += len(check["outputs"])
            print(f"FAIL {check['name']}: reference input {error}", file=out)
            continue
        try:
            runner = OrtRunner(path) if runtime == "onnxruntime" else TrtRunner(path)
            got = runner.run(feeds)
        except Exception as error:  # a broken or foreign engine fails its check; the others still run
            failed += len(check["outputs"])
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
            print(f"FAIL {check['name']}: {path.name} did not run ({reason})", file=out)
            continue
        for name, spec in check["outputs"].items():
            try:
                expected = load_array(bundle / spec["file"])
            except BundleError as error:
                failed += 1
                print(f"FAIL {check['name']}/{name}: expected output {error}", file=out)
                continue
            passed, detail = judge(got.get(name), expected, rtol, atol)
            failed += not passed
            print(f"{'PASS' if passed else 'FAIL'} {check['name']}/{name}: {detail}", file=out)
    print("all checks passed" if not failed else f"{failed} check(s) failed", file=out)
    return 0 if not failed else 1


def tolerance(text: str) -> float:
    """A finite tolerance >= 0 (a negative one fails every check, an infinite or NaN one passes every check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=HERE, help="the bundle folder (default: this script's)")
    parser.add_argument("--runtime", choices=["tensorrt", "onnxruntime"], default="tensorrt")
    parser.add_argument("--engines", type=Path,
                        help="folder of the built *.plan files (default: the bundle; --runtime tensorrt only)")
    parser.add_argument("--rtol", type=tolerance, help="override the bundle's relative tolerance for this runtime")
    parser.add_argument("--atol", type=tolerance, help="override the bundle's absolute tolerance for this runtime")
    args = parser.parse_args(argv)
    return verify(args.bundle.resolve(), args.runtime, args.engines, args.rtol, args.atol)


if __name__ == "__main__":
    sys.exit(main())
