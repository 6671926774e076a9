"""Generated sections of README.md / BENCHMARKS.md: the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`.

Every published figure lives in such a section, written only by the command named inside it.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from model.arguments import positive_int  # noqa: F401  (the bench scripts' count type, as the CLI's)

ROOT = Path(__file__).resolve().parents[1]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_section(path: Path, name: str) -> str:
    """The body of section `name` in `path` (without its markers)."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{path}: expected one {start} … {end} pair")
    return text[text.index(start) + len(start): text.index(end)].strip("\n")


def write_section(path: Path, name: str, body: str) -> None:
    """Replace section `name` in `path` with `body` (atomically); other text is left as it is."""
    # here, not at the top: run_script must import under bench/mobilevlm_v433_check.py's transformers 4.33
    from model.checkpoints.io import atomic_write_bytes

    path = Path(path)
    read_section(path, name)  # exactly one well-formed section, or a clear error
    text = path.read_text(encoding="utf-8")
    start, end = markers(name)
    text = text[: text.index(start)] + f"{start}\n{body.strip()}\n{end}" + text[text.index(end) + len(end):]
    atomic_write_bytes(path, text.encode("utf-8"))


def publish(section: str, doc: Path, name: str, write: bool) -> None:
    """Print a bench script's section and, with `write`, put it into `doc` as section `name`."""
    print(section)
    if write:
        write_section(doc, name, section)
        print(f"\nwrote {doc}")


def unpack_revision(revision: str, folder: Path) -> Path:
    """The tree of git `revision` of this repository, unpacked into the new folder `folder` (benches that compare
    the code now with an earlier version run that version from there)."""
    import subprocess

    done = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True)
    if done.returncode:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise SystemExit(f"cannot compare with revision {revision!r} of {ROOT}: "
                         f"{message[-1] if message else f'git archive exited {done.returncode}'}")
    folder.mkdir()
    archive = done.stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU as /proc/cpuinfo names it, with its x86 family and model (a virtual machine often shows only
    "AMD EPYC", which covers generations whose bf16 matmul rates differ twofold) and its bf16 matmul instructions."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block describes them all
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if fields.get("cpu family") and fields.get("model"):
        name += f", family {fields['cpu family']} model {fields['model']}"
    flags = set(fields.get("flags", "").split())
    bf16 = [label for flag, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16")) if flag in flags]
    return name + (f", {' + '.join(bf16)}" if bf16 else "")


def machine_line() -> str:
    """The machine and the versions that matter, for a table's caption."""
    import numpy as np
    import PIL
    import torch
    import transformers

    from model.limits import usable_cores

    cores = usable_cores()
    return (f"{cores}-core CPU ({cpu_name()}), {gpu_name()}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, Pillow {PIL.__version__}, "
            f"numpy {np.__version__}")


def gpu_name() -> str:
    """The CUDA devices torch sees, e.g. "1x NVIDIA H200 (CUDA 13.0)", or "no GPU"."""
    import torch

    if not torch.cuda.is_available():
        return "no GPU"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    counted = ", ".join(f"{names.count(n)}x {n}" for n in dict.fromkeys(names))
    return f"{counted} (CUDA {torch.version.cuda})"


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall seconds of `repeats` timed calls of each of `fns`, after `warmup` untimed calls of each (first-use
    costs: lazy imports, caches, allocator growth); the timed calls take turns, so drift in machine load hits every
    side alike."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: at least one timed call is needed for a median")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of `repeats` calls of `fn` after `warmup` untimed ones (:func:`interleaved_medians`)."""
    return interleaved_medians({"": fn}, repeats, warmup)[""]


def available_gib() -> float:
    """GiB of memory the system can give without swapping (`adapt`'s reading of MemAvailable); inf where unknown, so
    a bench's guard against running out lets through a run it cannot judge."""
    from adapt.data.mixture import _available_memory

    available = _available_memory()
    return float("inf") if available is None else available / 2**30


def paired_difference(a: dict, b: dict) -> tuple[float, float, int]:
    """Mean of ``a[k] - b[k]`` over the keys both score (the same held-out answers), two standard errors of that
    mean, and the number of pairs. Pairing removes the variance the two runs share (which questions are hard)."""
    import statistics

    diffs = [a[k] - b[k] for k in sorted(a.keys() & b.keys())]
    if len(diffs) < 2:
        raise ValueError(f"{len(diffs)} answers in common: at least two are needed for a paired difference")
    return statistics.fmean(diffs), 2 * statistics.stdev(diffs) / len(diffs) ** 0.5, len(diffs)


def command_line(script: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                 skip: tuple[str, ...] = ()) -> str:
    """The exact command a section names: ``python bench/SCRIPT.py``, every option whose value differs from its
    default, ``--write``. `skip`: options (by dest, e.g. a work folder) that do not change the figures."""
    words = ["python", f"bench/{Path(script).name}"]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "write", *skip) or action.help == argparse.SUPPRESS:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        option = max(action.option_strings, key=len)
        if action.nargs == 0:  # a flag
            words.append(option)
        elif isinstance(action, argparse._AppendAction):
            words += [word for item in value for word in (option, str(item))]
        elif isinstance(value, (list, tuple)):
            words += [option, *map(str, value)]
        else:
            words += [option, str(value)]
    return shlex.join(words) + " --write"


def helpers_of_tests(module: str):
    """The tests module `module` (``"tests.test_gguf"``), whose tiny-model builders and comparisons a bench script
    shares. Its `tests.deps.require` calls skip (under CI: fail) the module where an optional package is missing,
    which outside pytest is a traceback; here it is a one-line `MissingExtraError`, as is pytest itself missing
    (the tests modules import it; only the dev extra brings it)."""
    import importlib

    from model.errors import MissingExtraError

    where = f"{module.replace('.', '/')}.py, whose helpers this uses,"
    try:
        import pytest
    except ModuleNotFoundError as err:
        if err.name != "pytest":
            raise
        raise MissingExtraError(f"{where} needs 'pytest', which is not installed: pip install pytest (the dev extra; "
                                "a checkout's `make setup` installs it)") from None
    try:
        return importlib.import_module(module)
    except (pytest.skip.Exception, pytest.fail.Exception) as err:
        raise MissingExtraError(f"{where} {err.msg}") from None


def run_script(main: Callable[[], int | None]) -> None:
    """Exit with `main()`'s status; an error the user can fix ends in its one-line message and status 1 instead of a
    traceback: what `adapt` reports so (`model.errors.user_error_message`: a `PocketAdaptError` such as llama.cpp
    not built, a missing package of an extra, a missing file, a file in the way, a full disk). Bugs keep theirs.
    Ctrl-C ends as `adapt`'s does: ``interrupted``, status 130."""
    from model.errors import user_error_message

    try:
        status = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        status = 1
    raise SystemExit(status)


def section_script(measure, description: str, argv: list[str] | None = None) -> int:
    """The command line of a bench script whose `measure(write)` returns its section text (and writes it with
    ``write``): ``python bench/SCRIPT.py [--write]`` prints the text."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", action="store_true", help="also replace the section in README.md")
    args = parser.parse_args(argv)
    print(measure(args.write))
    return 0
