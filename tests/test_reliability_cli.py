"""Issue 14: `adapt` reports every anticipated failure in one line (exit 1; Ctrl-C exit 130), keeps the traceback of
anything else, validates its numbers and options, and exits non-zero when a converter wrote nothing."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest

from adapt.cli import build_parser, main
from domains.base import ConvertReport, DomainPlugin, SkipInput, register_domain, unregister_domain
from domains.files import write_splits
from model.errors import PocketAdaptError


def _raising(exc: BaseException):
    def convert(src: Path, out: Path, limit: int = 2, progress: bool = True) -> ConvertReport:
        raise exc

    return convert


def _writes_nothing(src: Path, out: Path, progress: bool = True) -> ConvertReport:
    report = ConvertReport(dataset="toy", source=src, out=out)
    report.skip(src / "a.tif", "unreadable image", "truncated")
    return write_splits(report, out, "toy", {"train": [], "test": []})


def _writes_one(src: Path, out: Path, limit: int = 2, progress: bool = True) -> ConvertReport:
    report = ConvertReport(dataset="toy", source=src, out=out)
    return write_splits(report, out, "toy", {"train": [{"id": "a"}]})


@pytest.fixture
def toy(tmp_path):
    """Register domain `toy_rel` whose converters are set per test; returns (register, src, out)."""
    src = tmp_path / "raw"
    src.mkdir()

    def register(**converters) -> None:
        register_domain(DomainPlugin(name="toy_rel", converters=converters), overwrite=True)

    yield register, src, tmp_path / "out"
    unregister_domain("toy_rel")


def _convert(src: Path, out: Path, *extra: str, dataset: str = "toy") -> int:
    return main(["convert", "toy_rel", dataset, "--src", str(src), "--out", str(out), *extra])


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------------- one-line errors
@pytest.mark.parametrize("exc,needles", [
    (PocketAdaptError("data/x.json: bad layout; fix the file"), ["data/x.json: bad layout; fix the file"]),
    (SkipInput("unreadable image", "raw/a.tif: truncated"), ["raw/a.tif: truncated"]),
    (OSError(errno.ENOSPC, "No space left on device", "out/images/a.png"), ["out/images/a.png", "disk full", "free"]),
    (OSError("Not enough free space to write 17432576 bytes after offset 2308249856"),  # numpy's tofile
     ["Not enough free space", "disk full", "free some space"]),
    (PermissionError(errno.EACCES, "Permission denied", "out/toy_train.jsonl"),
     ["out/toy_train.jsonl", "permission denied", "writable"]),
    (OSError(errno.EROFS, "Read-only file system", "out/a.png"), ["out/a.png", "read-only"]),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "raw/labels.csv"), ["raw/labels.csv", "no such file"]),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "raw/labels.csv"), ["raw/labels.csv", "is a folder"]),
])
def test_anticipated_failures_are_one_line(toy, capsys, exc, needles):
    register, src, out = toy
    register(toy=_raising(exc))
    assert _convert(src, out) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("adapt convert: error: ")
    for needle in needles:
        assert needle in line


def test_disk_full_without_a_file_name_names_the_output_folder(toy, capsys):
    register, src, out = toy
    register(toy=_raising(OSError(errno.ENOSPC, "No space left on device")))
    assert _convert(src, out) == 1
    line = _one_line(capsys.readouterr().err)
    assert str(out) in line and "disk full" in line


def test_ctrl_c_is_one_line_and_exit_130(toy, capsys):
    register, src, out = toy
    register(toy=_raising(KeyboardInterrupt()))
    assert _convert(src, out) == 130
    assert _one_line(capsys.readouterr().err) == "adapt convert: interrupted"


@pytest.mark.parametrize("exc", [ValueError("a bug, not a user mistake"), TypeError("a bug"), KeyError("k"),
                                 OSError(errno.EIO, "Input/output error")])
def test_unexpected_errors_keep_their_traceback(toy, exc):
    register, src, out = toy
    register(toy=_raising(exc))
    with pytest.raises(type(exc)):
        _convert(src, out)


@pytest.mark.parametrize("where,name,args", [
    ("adapt.recipe", "RecipeError", ["r.yaml: training.lr: must be > 0"]),
    ("adapt.data.samples", "DataQualityError", ["r.yaml: training.lr: must be > 0"]),
    ("model.checkpoints.io", "CheckpointError", ["r.yaml: training.lr: must be > 0"]),
    ("model.tiling", "ImageLoadError", ["r.yaml", "training.lr: must be > 0"]),
    ("model.processor", "SampleTooLongError", ["r.yaml: training.lr: must be > 0"]),
    ("deploy.demo.uploads", "UploadError", ["r.yaml: training.lr: must be > 0"]),
])
def test_the_other_packages_user_errors_are_one_line(toy, capsys, where, name, args):
    """They were ValueErrors the CLI caught as a whole; now they are PocketAdaptErrors, which it names."""
    import importlib

    cls = getattr(importlib.import_module(where), name)
    register, src, out = toy
    register(toy=_raising(cls(*args)))
    assert _convert(src, out) == 1
    assert "r.yaml: training.lr: must be > 0" in _one_line(capsys.readouterr().err)


def test_domain_errors_derive_from_the_package_root():
    from domains.base import DomainError
    from domains.driving.judge import JudgeError
    from domains.driving.layout import CTagError
    from domains.medical.dicom import DicomError
    from domains.remote_sensing.raster import RasterError

    for cls, old_base in [(RasterError, ValueError), (DicomError, ValueError), (CTagError, ValueError),
                          (JudgeError, RuntimeError), (DomainError, ValueError), (SkipInput, Exception)]:
        assert issubclass(cls, PocketAdaptError) and issubclass(cls, old_base), cls


def test_unknown_domain_and_data_set_are_one_line(toy, capsys):
    register, src, out = toy
    register(toy=_writes_one)
    assert main(["convert", "nope", "toy", "--src", str(src), "--out", str(out)]) == 1
    assert "unknown domain 'nope'" in _one_line(capsys.readouterr().err)
    assert _convert(src, out, dataset="nope") == 1
    assert "no converter for data set 'nope' (known: toy)" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------- paths
def test_output_path_that_is_a_file(toy, capsys):
    register, src, out = toy
    register(toy=_writes_nothing)  # refused before converting, not reported as "nothing converted"
    out.write_text("not a folder")
    assert _convert(src, out) == 1
    line = _one_line(capsys.readouterr().err)
    assert str(out) in line and "not a folder" in line
    register(toy=_writes_one)
    assert _convert(src, out / "sub") == 1  # a file in the way further up
    line = _one_line(capsys.readouterr().err)
    assert str(out) in line and "not a folder" in line
    assert out.read_text() == "not a folder"


def test_read_only_output_folder(toy, capsys, monkeypatch):
    """The test runs as root, for whom chmod does not bite: the refusal the kernel gives a user is simulated."""
    import domains.files as files

    register, src, out = toy
    register(toy=_writes_one)
    real_open = files.os.open

    def refuse(path, flags, mode=0o777, *, dir_fd=None):
        if str(path).startswith(str(out)) and flags & files.os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(files.os, "open", refuse)
    assert _convert(src, out) == 1
    line = _one_line(capsys.readouterr().err)
    assert "permission denied" in line and str(out) in line
    assert not list(out.rglob("*.part"))


def test_missing_src_is_one_line(toy, capsys, tmp_path):
    register, src, out = toy
    register(toy=_writes_one)
    assert _convert(tmp_path / "missing", out) == 1
    assert f"--src {tmp_path / 'missing'} does not exist" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------- options
def test_unknown_option_names_the_known_ones(toy, capsys):
    register, src, out = toy
    register(toy=_raising(AssertionError("the converter must not run")))
    assert _convert(src, out, "--option", "colour=red") == 1
    line = _one_line(capsys.readouterr().err)
    assert "no option 'colour'" in line and "options: limit" in line


def test_unknown_option_of_a_lazily_imported_built_in_converter(tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(src), "--out", str(tmp_path / "o"),
               "--option", "colour=red"])
    assert rc == 1
    line = _one_line(capsys.readouterr().err)
    assert "no option 'colour'" in line and "bands" in line and "resize" in line
    assert "dataset" not in line.split("options:")[1]  # fixed by the data set's name, not settable


@pytest.mark.parametrize("value", ["abc", "0", "2.5", "[1, 2]"])
def test_a_bad_option_value_of_a_built_in_converter_is_one_line(tmp_path, capsys, value):
    src = tmp_path / "raw"
    src.mkdir()
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(src), "--out", str(tmp_path / "o"),
               "--option", f"resize={value}"])
    line = _one_line(capsys.readouterr().err)
    # a value of the wrong type is refused by the option check (before any work), a bad integer by the converter
    want = "resize must be a positive longer-side length in pixels" if value == "0" else \
        {"abc": "option resize='abc'", "2.5": "option resize=2.5", "[1, 2]": "option resize=[1, 2]"}[value] \
        + " is not an integer or null"
    assert rc == 1 and want in line


# a billion laughs: 9 levels of 9 aliases, a few hundred characters that expand to 9**9 values
BOMB = "[&a [1,1,1,1,1,1,1,1,1], " + ", ".join(
    f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefg", "bcdefgh")) + ", [" + ", ".join(["*h"] * 9) + "]]"


@pytest.mark.parametrize("argv,needle", [
    (["--option", "novalue"], "--option 'novalue' is not KEY=VALUE"),
    (["--option", "=3"], "--option '=3' is not KEY=VALUE"),
    (["--option", "limit=[1,"], "--option 'limit=[1,': the value is not valid YAML"),
    (["--option", "limit=" + BOMB], "YAML aliases expand to more than"),  # expanded later (output_key) it hung
    (["--option", "limit=0", "--option", "limit=1"], "--option limit is given twice"),  # the last one won, unsaid
])
def test_malformed_options(toy, capsys, argv, needle):
    register, src, out = toy
    register(toy=_writes_one)
    assert _convert(src, out, *argv) == 1
    assert needle in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_synthesize_option_without_equals_and_unknown_option(tmp_path, capsys):
    assert main(["synthesize", "general", "--out", str(tmp_path / "g"), "--option", "n"]) == 1
    assert "--option 'n' is not KEY=VALUE" in _one_line(capsys.readouterr().err)
    assert main(["synthesize", "remote_sensing", "--out", str(tmp_path / "g"), "--option", "colour=red"]) == 1
    assert "no option 'colour'" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "g").exists()


def test_a_read_option_is_named_as_such_in_its_messages(tmp_path, capsys):
    """`adapt chat --read-option` shares --option's parsing; its messages named the wrong flag."""
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    argv = ["chat", "--model", "pocket-tiny", "--image", str(image), "--domain", "medical"]
    assert main([*argv, "--read-option", "window=lung", "--read-option", "window=bone"]) == 1
    assert "--read-option window is given twice" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("argv,needle", [
    (["chat", "--max-tiles", "0"], "--max-tiles"),
    (["chat", "--max-tiles", "-3"], "--max-tiles"),
    (["chat", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["chat", "--temperature", "-1"], "--temperature"),
    (["chat", "--temperature", "nan"], "--temperature"),
    (["chat", "--temperature", "inf"], "--temperature"),
    # logits divided by it overflow: torch.multinomial's inf / nan traceback
    (["chat", "--temperature", "1e-45"], "argument --temperature: must be 0 (greedy) or at least 0.001, got 1e-45"),
    (["tiles", "800x600", "--max-tiles", "0"], "--max-tiles"),
    (["tiles", "800x600", "--min-tiles", "0"], "--min-tiles"),
    (["tiles", "800x600", "--tokens-per-tile", "0"], "--tokens-per-tile"),
    (["train", "r.yaml", "--nproc-per-node", "0"], "--nproc-per-node"),
    # past the bound of 40: the flag is named, not the TilingConfig.max_tiles it becomes (which said so at status 1)
    (["chat", "--example-image", "--max-tiles", "41"], "argument --max-tiles: must be at most 40"),
    (["tiles", "1600x900", "--max-tiles", "41"], "argument --max-tiles: must be at most 40"),
    (["tiles", "1600x900", "--min-tiles", "41"], "argument --min-tiles: must be at most 40"),
    # adapt demo takes chat's type: a usage error before the model loads (it loaded it, then failed with status 1)
    (["demo", "--max-new-tokens", "0"], "argument --max-new-tokens: must be at least 1"),
])
def test_cli_numbers_are_validated(capsys, argv, needle):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_pick_token_is_greedy_below_the_smallest_temperature():
    """The export runtimes' sampler raised 'Probabilities contain NaN' at temperature 1e-310."""
    import numpy as np

    from deploy.runtimes import pick_token

    logits = np.array([0.5, 3.0, -1.0, 2.9])
    rng = np.random.default_rng(0)
    assert [pick_token(logits, t, rng) for t in (0.0, 1e-310, 1e-45, 1e-4)] == [1, 1, 1, 1]
    assert {pick_token(logits, 1.0, rng) for _ in range(50)} >= {1, 3}


def test_valid_numbers_still_parse():
    args = build_parser().parse_args(["chat", "--max-tiles", "6", "--temperature", "0.7", "--max-new-tokens", "5"])
    assert (args.max_tiles, args.temperature, args.max_new_tokens) == (6, 0.7, 5)
    assert build_parser().parse_args(["chat", "--temperature", "0"]).temperature == 0.0
    assert build_parser().parse_args(["chat", "--temperature", "0.001"]).temperature == 0.001
    assert not math.isnan(build_parser().parse_args(["chat"]).temperature)


@pytest.mark.parametrize("argv,needle", [
    (["tiles", "0x600"], "0x600"),
    (["tiles", "800x600", "--min-tiles", "7", "--max-tiles", "6"], "--min-tiles 7"),
])
def test_tiles_sizes_and_ranges_are_one_line(capsys, argv, needle):
    assert main(argv) == 1
    assert needle in _one_line(capsys.readouterr().err)


def test_tiles_of_a_file_that_is_not_an_image(tmp_path, capsys):
    bad = tmp_path / "scene.png"
    bad.write_bytes(b"not a png")
    assert main(["tiles", str(bad)]) == 1
    assert str(bad) in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------- nothing written
def test_a_converter_that_wrote_nothing_exits_1_with_the_skip_table(toy, capsys):
    register, src, out = toy
    register(toy=_writes_nothing)
    assert _convert(src, out) == 1
    captured = capsys.readouterr()
    assert "| written | 0 | |" in captured.out and "| skipped: unreadable image | 1 |" in captured.out
    line = _one_line(captured.err)
    assert "nothing converted" in line and str(src) in line
    assert not out.exists() or not list(out.rglob("*.jsonl"))  # no empty outputs to train on


def test_a_run_that_converts_nothing_keeps_the_previous_outputs(toy, capsys):
    register, src, out = toy
    register(toy=_writes_one)
    assert _convert(src, out) == 0
    kept = (out / "toy_train.jsonl").read_bytes()
    register(toy=_writes_nothing)
    assert _convert(src, out) == 1
    assert (out / "toy_train.jsonl").read_bytes() == kept


# ------------------------------------------------------------------------- user mistakes of the model and training
@pytest.mark.parametrize("argv, needle", [
    (["inspect", "--model", "pocket-tinyy"],
     "pocket-tinyy: not a checkpoint directory nor a preset (did you mean pocket-tiny?); presets: pocket-tiny"),
    (["chat", "--example-image", "--max-new-tokens", "1", "<image> <image> two placeholders, one image"],
     "2 <image> placeholders but 1 images"),
    (["demo", "--port", "70000"], "--port must be in 1..65535"),
    (["demo", "--host", "not a host!", "--port", "7931"], "--host not a host!: not a host name or address"),
    (["demo", "--device", "cuda:99", "--port", "7932"], "device 'cuda:99': this machine's torch"),
])
def test_model_and_demo_mistakes_are_one_line(capsys, argv, needle):
    assert main(argv) == 1
    assert needle in _one_line(capsys.readouterr().err)


def test_a_demo_port_in_use_is_one_line_before_the_model_loads(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 1
    err = _one_line(capsys.readouterr().err)
    assert f"--port {port}: already in use on 127.0.0.1" in err and "loading" not in err


@pytest.mark.parametrize("file, runtime", [("m-f16.gguf", "llamacpp"), ("model.onnx", "onnx"), ("model.pte", "executorch")])
def test_an_export_folder_given_as_a_checkpoint_names_the_runtime_that_runs_it(tmp_path, capsys, file, runtime):
    (tmp_path / file).write_bytes(b"")
    assert main(["chat", "--model", str(tmp_path), "hi"]) == 1
    assert f"export, not a checkpoint; run it with --runtime {runtime}" in _one_line(capsys.readouterr().err)


def test_a_recipe_whose_lora_targets_match_nothing_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.jsonl").write_text('{"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Yes."}]}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {source: pocket-tiny}\n"
        "parts: {llm: {mode: lora, lora: {targets: [no_such_proj]}}}\n"
        "data: {sources: [{name: d, path: data/t.jsonl}]}\n"
        "mixing: {general_ratio: 0}\n"
        "training: {max_steps: 1, batch_size: 1}\n")
    assert main(["train", str(recipe), "--no-progress"]) == 1
    assert "LoRA targets ['no_such_proj'] match no Linear module in the llm part" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("module, name", [
    ("model.errors", "ModelConfigError"), ("model.chat", "ChatTemplateError"), ("model.processor", "ConversationError"),
    ("adapt.parts", "PartsError"), ("deploy.demo.page", "DemoError"),
])
def test_setting_errors_are_pocket_adapt_errors(module, name):
    import importlib

    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, PocketAdaptError) and issubclass(cls, ValueError)


def test_sigterm_unwinds_as_ctrl_c_does(tmp_path):
    """kill (SIGTERM) used to end `adapt` on the spot: an export's staging folder stayed behind, gigabytes for a
    real model. It now unwinds like Ctrl-C: exit 143, one line."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "import sys; from adapt.cli import main; sys.exit(main())", "chat",
                             "--model", "pocket-tiny-scratch", "--example-image", "--max-new-tokens", "3000",
                             "--keep-repeats"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    seen = ""
    deadline = time.monotonic() + 120
    while "[pocket-tiny-scratch:" not in seen and time.monotonic() < deadline:  # generation has begun
        seen += proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    err = seen + proc.stderr.read()
    assert proc.wait(timeout=60) == 143, err
    assert "adapt chat: terminated" in err and "Traceback" not in err


def test_an_export_clears_staging_folders_of_dead_exports(tmp_path):
    import os
    import subprocess
    import sys

    from deploy.hf import export
    from model import load

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from domains.files import HOST_TAG

    dead = tmp_path / f".ck.export-{int(gone.stdout)}@{HOST_TAG}-0123abcd"
    live = tmp_path / f".ck.export-{os.getpid()}@{HOST_TAG}-4567cdef"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
    export(*load("pocket-tiny"), "pocket", tmp_path / "ck")
    assert not dead.exists() and live.exists()  # a live export's staging is never touched
    assert (tmp_path / "ck" / "model.safetensors").is_file()


def test_convert_help_into_a_closed_pipe_is_quiet():
    """`adapt convert --help | head -1` printed a BrokenPipeError traceback and exited 1: the help is printed while
    the arguments are parsed, outside main()'s handler."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "adapt", "convert", "--help"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
