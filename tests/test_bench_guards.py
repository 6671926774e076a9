"""Bench scripts refuse, in one line and before measuring anything, a run whose published figures would be wrong."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_train_sh_stops_without_a_cuda_device(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"  # the script calls python3: this interpreter, whose torch sees no CUDA
    python3.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python3.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    proc = subprocess.Popen(["bash", str(ROOT / "bench" / "gpu_train.sh"), "--work", str(tmp_path / "work")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # bench_train.py would go on training internvl2-1b on the CPU
        proc.communicate()
        pytest.fail("gpu_train.sh went on without a CUDA device")
    assert proc.returncode != 0
    assert err.strip().splitlines()[-1] == "no CUDA device"
    assert "bench_train" not in out + err


@pytest.fixture
def bench_train(monkeypatch):
    """bench/bench_train.py whose measuring stops at once: a run the checks let through fails, measuring nothing."""
    from bench import bench_train

    def measured(*args, **kwargs):
        raise AssertionError("the run went on to measure")

    monkeypatch.setattr(bench_train, "matmul_peak", measured)
    monkeypatch.setattr(bench_train, "prepare_data", measured)
    return bench_train


def test_bench_train_refuses_an_empty_label(capsys, bench_train):
    with pytest.raises(SystemExit) as stop:
        bench_train.main(["--models", "pocket-tiny", "--label", "", "--write"])
    assert stop.value.code == 2 and "--label is empty" in capsys.readouterr().err


def test_bench_train_refuses_to_publish_a_gpu_model_measured_on_cpu(capsys, monkeypatch, bench_train):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        bench_train.main(["--models", "pocket-tiny,internvl2-1b", "--label", "x", "--write"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--models internvl2-1b is a GPU run" in err and "--allow-cpu" in err


@pytest.mark.parametrize("argv, error", [
    (["--precision", "fp32,fp16"], "--precision fp32,fp16: expected fp32, bf16 or both"),
    (["--precision", "bf16,bf16"], "--precision bf16,bf16: expected fp32, bf16 or both"),
    (["--repeats", "0"], "--repeats: "),
    (["--steps", "0"], "--steps: "),
    (["--workers", "-1"], "--workers: must be at least 0, got -1"),
    (["--max-seq-length", "0"], "--max-seq-length: must be at least 16, got 0"),
    (["--max-seq-length", "15"], "--max-seq-length: must be at least 16, got 15"),
])
def test_bench_train_refuses_a_precision_or_count_it_cannot_measure(capsys, bench_train, argv, error):
    """fp16 on a GPU ran adapt train in fp16 but the plain loop and the Trainer in fp32, all labelled fp16 (on a CPU:
    adapt train's error after the data and the FLOP count); `--repeats 0` made an empty table, `--steps 0` divided by
    zero after every run; `--workers -1` was refused by the recipe only after the data was generated, and
    `--max-seq-length 0` silently ran the recipe's length; 1 to 15 passed here and the recipe (training.max_seq_length
    >= 16) refused them only after the data was generated."""
    with pytest.raises(SystemExit) as stop:
        bench_train.main(["--models", "pocket-tiny", *argv])
    assert stop.value.code == 2 and error in capsys.readouterr().err


def test_bench_train_takes_the_recipes_shortest_max_seq_length(bench_train):
    """16, the recipe's minimum, passes the argument checks and goes on to measure."""
    with pytest.raises(AssertionError, match="the run went on to measure"):
        bench_train.main(["--models", "pocket-tiny", "--max-seq-length", "16"])


def test_mobilevlm_v433_check_help_is_argparse_help():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "mobilevlm_v433_check.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage:") and "{export,check}" in done.stdout


def test_a_script_needing_llama_cpp_says_it_is_missing_in_one_line(tmp_path):
    env = {**os.environ, "POCKET_LLAMA_CPP": str(tmp_path / "none"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "llamacpp_preprocessing.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: llama.cpp is not built here")


@pytest.mark.parametrize("script, measure, argv", [
    ("bench_tiling", "run", ["--repeats", "0"]),
    ("bench_drivelm_convert", "run", ["--repeats", "0"]),
    ("bench_drivelm_convert", "run", ["--frames", "0"]),
    ("bench_convert", "run", ["--repeats", "-1"]),
    ("bench_convert", "run", ["--scenes", "0"]),
    ("bench_convert", "run", ["--rs-size", "0"]),
    ("bench_startup", "measure", ["--repeats", "0"]),
    ("bench_eval", "measure", ["--repeats", "0"]),
    ("bench_load", "measure", ["--repeats", "0"]),
    ("bench_onnx", "run_model", ["--threads", "0"]),
    ("bench_executorch", "run_model", ["--threads", "0"]),
    ("bench_real_sizes", "run_all", ["--threads", "0"]),
    ("bench_real_sizes", "run_all", ["--steps", "0"]),
    ("bench_llamacpp", "bandwidth_gbs", ["--threads", "0"]),
    ("bench_llamacpp", "bandwidth_gbs", ["--models", "pocket-tiny,internvl2-1b"]),
    ("bench_onnx", "run_model", ["--models", "pocket-tiny,internvl2-1b"]),
    ("bench_executorch", "run_model", ["--models", "tiny"]),
    ("bench_distill", "measure", ["--seeds", "0"]),
    ("bench_distill", "measure", ["--train-steps", "0"]),
    ("bench_token_budget", "measure", ["--steps", "0"]),
    ("bench_token_budget", "measure", ["--batch-size", "0"]),
    ("bench_token_budget", "measure", ["--eval-samples", "-1"]),
    ("bench_token_budget", "measure", ["--max-new-tokens", "0"]),
    ("bench_token_budget", "measure", ["--probe-train", "0", "--set", "probe"]),
])
def test_a_count_below_one_is_refused_before_measuring(monkeypatch, capsys, script, measure, argv):
    """`--repeats 0` ran the whole set-up (unpacking revisions, generating data) and then ended in a
    StatisticsError (median of no runs) or a ZeroDivisionError traceback; `--frames 0` divided by zero frames."""
    import importlib

    module = importlib.import_module(f"bench.{script}")
    monkeypatch.setattr(module, measure, lambda *a, **k: pytest.fail(f"{script} measured with {argv}"))
    with pytest.raises(SystemExit) as stop:
        module.main(argv)
    assert stop.value.code == 2 and f"{argv[0]}: " in capsys.readouterr().err


def _measuring_fails(monkeypatch, module, *names: str) -> None:
    for name in names:
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail(f"{module.__name__}.{name} measured"))


def test_bench_onnx_refuses_an_unknown_vision_only_model(monkeypatch, capsys):
    from bench import bench_onnx

    _measuring_fails(monkeypatch, bench_onnx, "run_model", "run_vision_only")
    with pytest.raises(SystemExit) as stop:
        bench_onnx.main(["--models", "pocket-tiny", "--vision-only", "pocket_tiny"])
    assert stop.value.code == 2 and "--vision-only: unknown bench model(s) 'pocket_tiny'" in capsys.readouterr().err


def test_bench_llamacpp_says_llama_cpp_is_not_built_before_measuring(monkeypatch, tmp_path):
    """Without a llama.cpp build it measured the memory bandwidth, ran PyTorch and exported the model first."""
    from bench import bench_llamacpp
    from deploy.llamacpp import LlamaCppError

    monkeypatch.setenv("POCKET_LLAMA_CPP", str(tmp_path / "none"))
    _measuring_fails(monkeypatch, bench_llamacpp, "bandwidth_gbs", "run_model")
    with pytest.raises(LlamaCppError, match="llama.cpp is not built here"):
        bench_llamacpp.main(["--models", "pocket-tiny"])


@pytest.mark.parametrize("script, module, error", [
    ("bench_onnx", "onnxruntime", "onnxruntime package"),
    ("bench_onnx", "onnx", "onnx package"),
    ("bench_executorch", "executorch", "executorch package, which is not installed"),
])
def test_a_missing_runtime_is_named_before_measuring(monkeypatch, script, module, error):
    """Without onnxruntime (executorch) the bench ran PyTorch and exported first, then ended in a
    ModuleNotFoundError traceback (bench_onnx: only where its table imported onnxruntime, after every model)."""
    import importlib

    from model.errors import PocketAdaptError

    bench = importlib.import_module(f"bench.{script}")
    _measuring_fails(monkeypatch, bench, "run_model")
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as a missing package does
    with pytest.raises(PocketAdaptError, match=error):
        bench.main(["--models", "pocket-tiny"])


@pytest.mark.parametrize("script", ["bench_onnx.py", "bench_executorch.py", "onnx_parity.py", "executorch_parity.py"])
def test_a_user_error_ends_in_one_line(tmp_path, script):
    """A PocketAdaptError (a missing runtime, an export refused) ended in a traceback: these scripts ran main()
    without bench.sections.run_script (the parity scripts: pytest's Skipped, raised where they import the tests'
    helpers, whose modules `require` the runtime)."""
    site = tmp_path / "site"
    site.mkdir()
    for module in ("onnxruntime", "executorch"):  # shadow the installed package with one that cannot import
        (site / module).mkdir()
        (site / module / "__init__.py").write_text("raise ModuleNotFoundError('gone', name=__name__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    argv = ["--models", "pocket-tiny"] if script.startswith("bench_") else []
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *argv], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_ctrl_c_in_a_bench_script_ends_as_adapts_does():
    """Ctrl-C in a bench script ended in a KeyboardInterrupt traceback; `adapt` prints `interrupted`, status 130.
    In a child process: an escaping KeyboardInterrupt would stop this test session."""
    code = "from bench.sections import run_script\n\ndef main():\n    raise KeyboardInterrupt\n\nrun_script(main)\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


@pytest.mark.parametrize("script, missing", [("onnx_parity.py", "gguf"), ("executorch_parity.py", "onnxscript")])
def test_a_package_the_shared_test_helpers_need_is_named_in_one_line(tmp_path, script, missing):
    """The parity scripts build their models with tests/test_gguf.py's (and compare with tests/test_onnx.py's)
    helpers: a package those modules `require` (gguf, onnxscript) ended in pytest's Skipped traceback."""
    site = tmp_path / "site"
    (site / missing).mkdir(parents=True)
    (site / missing / "__init__.py").write_text("raise ModuleNotFoundError('gone', name=__name__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("CI", None)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tests/test_") and f"needs {missing!r}" in last


def test_bench_convert_names_the_cores_of_its_machine(monkeypatch):
    """The section said "The machine has 2 cores" (and "load above 2") on any machine."""
    import types

    import domains.base
    import model.limits
    from bench import bench_convert

    class Plugin:
        def synthetic(self, root, **kwargs):
            return {dataset: root for _, dataset, _ in bench_convert.CASES}

        def convert(self, dataset, src, out, workers, **options):
            out.mkdir(parents=True, exist_ok=True)
            (out / "records.jsonl").write_text(dataset)
            return types.SimpleNamespace(written=10)

    monkeypatch.setattr(domains.base, "get_domain", lambda name: Plugin())
    monkeypatch.setattr(model.limits, "usable_cores", lambda: 16)
    text = bench_convert.run(8, 16, 2, 1, 1, 1, "python bench/bench_convert.py --write")
    assert "The machine has 16 core(s)" in text and "load above 16 means" in text and "2 cores" not in text


@pytest.mark.parametrize("script, argv", [
    ("bench_real_sizes.py", ["--models", "internvl2-1b", "--work", "{file}/work"]),
    ("bench_distill.py", ["--out", "{file}/out"]),
    ("bench_token_budget_time.py", ["--out", "{file}/out"]),
])
def test_a_path_blocked_by_a_file_ends_in_one_line(tmp_path, script, argv):
    """A work folder a file stands in the way of ended in a NotADirectoryError traceback: these scripts ran main()
    without bench.sections.run_script, which reports what `adapt` reports in one line (a missing or blocked path)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [arg.format(file=blocker) for arg in argv]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *argv], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {blocker}/{'work' if script == 'bench_real_sizes.py' else 'out/data'}: not a folder (a file is in "
        "the way on this path); move it away or choose another path")


def test_importing_bench_sections_loads_no_torch():
    """mobilevlm_v433_check.py runs its `check` step under run_script in a transformers 4.33 venv, where
    model.checkpoints.io (which bench.sections imported at the top) does not import."""
    code = "import sys, bench.sections; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


@pytest.mark.parametrize("script, argv, helpers", [
    ("onnx_parity.py", [], "test_onnx"),
    ("executorch_parity.py", [], "test_executorch"),
    ("mobilevlm_v433_check.py", ["export", "{tmp}/work"], "test_checkpoints"),
])
def test_the_parity_scripts_name_a_missing_pytest_in_one_line(tmp_path, script, argv, helpers):
    """The tests modules whose tiny-model builders the parity scripts share import pytest, which only the dev extra
    installs: without it these scripts ended in a ModuleNotFoundError traceback."""
    site = tmp_path / "site"
    (site / "pytest").mkdir(parents=True)
    (site / "pytest" / "__init__.py").write_text("raise ModuleNotFoundError('gone', name='pytest')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *(a.format(tmp=tmp_path) for a in argv)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: tests/{helpers}.py, whose helpers this uses, needs 'pytest', which is not installed: pip install "
        "pytest (the dev extra; a checkout's `make setup` installs it)")


def test_every_bench_script_runs_main_under_run_script():
    """A bench script whose entry point calls main() itself ends a user's error (bad path, Ctrl-C) in a traceback;
    every script's `if __name__ == "__main__":` block goes through bench.sections.run_script."""
    import ast

    bare = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                if "run_script" not in calls:
                    bare.append(path.name)
    assert not bare, bare
