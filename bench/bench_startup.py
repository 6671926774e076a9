"""Start-up time of the `adapt` command: light verbs, a preset described offline, and the model verbs of issue 16's
goal on pocket-tiny (a one-step `adapt train`, `adapt eval` of two samples, one `adapt chat` answer, an
`adapt export -f hf`), each a whole run.

Each command runs in a fresh interpreter (as a user starts it), from this tree and from the tree before the lazy
imports (`--before`, unpacked with `git archive`), all in turn, `--repeats` rounds; the table gives median wall
times, the speed-up and whether torch was imported (light verbs must not). `import torch` alone is timed beside
them: anything that builds a model pays it.

    python bench/bench_startup.py            # print the section
    python bench/bench_startup.py --write    # also replace the bench_startup section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.sections import command_line, machine_line, positive_int, publish, unpack_revision  # noqa: E402

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

RECIPE = """
name: startup
model: {{source: pocket-tiny}}
parts:
  vision: {{mode: frozen}}
  projector: {{mode: full, lr: 1.0e-3}}
  llm: {{mode: full, lr: 5.0e-4}}
data:
  sources:
    - {{name: general, path: {data}/train.jsonl, kind: domain}}
  eval_sources:
    - {{name: general, path: {data}/test.jsonl, kind: domain}}
mixing: {{general_ratio: 0}}
training: {{max_steps: 1, batch_size: 2, max_seq_length: 512}}
output: {{dir: {out}, save_every: 100}}
"""

# a verb's stdout ends with this line when the probe is asked whether torch was imported
# (the verb's exit status is kept: a failing command must not be timed as a run)
_PROBE_END = "except SystemExit as exc:\n    code = exc.code\n" \
             "print('torch imported:', 'torch' in sys.modules)\nsys.exit(code)"
PROBE = "import sys, runpy; sys.argv = ['adapt', *sys.argv[1:]]\ncode = 0\ntry:\n" \
        "    runpy.run_module('adapt.cli', run_name='__main__')\n" + _PROBE_END
# the same verb through `main(argv)`, as a script calls it: no paused collector (adapt.cli._import_model_stack)
PROBE_COLLECTOR_ON = "import sys\nfrom adapt.cli import main\ncode = 0\ntry:\n    main(sys.argv[1:])\n" + _PROBE_END
COLLECTOR_ON = "collector on"


def _commands(work: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name -> (argv, the versions run besides now: "before" = the code before the lazy imports, COLLECTOR_ON)."""
    python = [sys.executable, "-c", PROBE]
    return {
        "`adapt --help`": ([*python, "--help"], ("before",)),
        "`adapt presets`": ([*python, "presets"], ("before",)),
        "`adapt tiles 2688x896`": ([*python, "tiles", "2688x896"], ("before",)),
        "`adapt inspect --model internvl2-1b` (offline)": ([*python, "inspect", "--model", "internvl2-1b"],
                                                           ("before", COLLECTOR_ON)),
        "`python -c 'import torch'`": ([sys.executable, "-c", "import torch; print('torch imported:', True)"], ()),
        "torch and transformers' model base, imported as `adapt` does for a verb that builds a model (the floor of "
        "such a verb)": ([sys.executable, "-c", "from adapt.cli import _import_model_stack; _import_model_stack(); "
                                                "print('torch imported:', True)"], ()),
        "`adapt train` (pocket-tiny, 1 step, 2 samples; whole run)": (
            [*python, "train", str(work / "startup.yaml"), "--no-progress"], (COLLECTOR_ON,)),
        "`adapt eval` (pocket-tiny, 2 samples; whole run)": (
            [*python, "eval", str(work / "startup.yaml"), "--no-progress"], ()),
        "`adapt chat` (pocket-tiny, 1 image, 4 new tokens; whole run)": (
            [*python, "chat", "--model", "pocket-tiny", "--image", str(_first_image(work / "data")),
             "--max-new-tokens", "4", "What shapes are in the picture?"], ()),
        "`adapt export -f hf` (pocket-tiny; whole run)": (
            [*python, "export", "--model", "pocket-tiny", "--format", "hf"], ()),
    }


def _first_image(data: Path) -> Path:
    return min(p for p in (data / "images").rglob("*") if p.is_file())


def _fresh_output(argv: list[str], out: Path) -> list[str]:
    """`argv` writing into the new folder `out`: each run starts afresh (no resume, no lock, no refused folder)."""
    if "train" in argv or "eval" in argv:
        from adapt.recipe import path_override

        return [*argv, path_override("output.dir", out)]
    if "export" in argv:
        return [*argv, "--out", str(out)]
    return argv


def _run(argv: list[str], out: Path, code: Path) -> tuple[float, bool, str | None]:
    """Seconds, whether torch was imported, and None when it exited 0, else ``"exit N: <its last stderr line>"``;
    `code` is the tree the `adapt` package comes from."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(code)}
    argv = _fresh_output(argv, out)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=code, capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - start
    if done.returncode != 0 and code == ROOT:
        raise SystemExit(f"{' '.join(argv[3:] or argv)} failed:\n{done.stderr[-2000:]}")
    return seconds, "torch imported: True" in done.stdout, _failure(done.returncode, done.stderr)


def _failure(returncode: int, stderr: str) -> str | None:
    """None for exit 0, else the table cell saying how the command failed (its exit status and last error line)."""
    if returncode == 0:
        return None
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    last = last if len(last) <= 100 else last[:99] + "…"
    return f"exit {returncode}" + (f": {last}" if last else "")


def measure(repeats: int, before: str, command: str) -> str:
    from domains.general.world import generate_general

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = unpack_revision(before, work / "before")
        generate_general(work / "data", n_train=8, n_test=2)
        (work / "startup.yaml").write_text(RECIPE.format(data=work / "data", out=work / "out"))
        commands = _commands(work)
        runs = [(name, version) for name, (_, others) in commands.items() for version in ("now", *others)]
        times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
        torch_seen: dict[tuple[str, str], bool] = {}
        failed: dict[tuple[str, str], str | None] = {}
        with tqdm(total=repeats * len(runs), desc="start-up runs") as bar:
            for r in range(repeats):  # interleaved: load drift hits every command alike
                for i, (name, version) in enumerate(runs):
                    argv = commands[name][0]
                    if version == COLLECTOR_ON:
                        argv = [argv[0], "-c", PROBE_COLLECTOR_ON, *argv[3:]]
                    seconds, torch_seen[name, version], failure = _run(
                        argv, work / f"out-{r}-{i}", old if version == "before" else ROOT)
                    failed[name, version] = failed.get((name, version)) or failure  # a failure in any round
                    times[name, version].append(seconds)
                    bar.update()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for name in commands:
        now = statistics.median(times[name, "now"])
        cells = [f"{now:.2f}", f"{min(times[name, 'now']):.2f}", "yes" if torch_seen[name, "now"] else "no"]
        for version in ("before", COLLECTOR_ON):
            if (name, version) not in times:
                cells += ["", ""]
            elif failed[name, version]:
                cells += [str(failed[name, version]).replace("|", "\\|"), ""]
            else:
                then = statistics.median(times[name, version])
                cells += [f"{then:.2f}{' (torch)' if torch_seen[name, version] and version == 'before' else ''}",
                          f"**{then / now:.1f}x**" if version == "before" else f"{then / now:.2f}x"]
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join([
        "## Start-up (`adapt` command)",
        "",
        "Wall time from starting a fresh interpreter to its exit, as a user runs each command (`HF_HUB_OFFLINE=1`), "
        f"for the code now and for `{before}` (before the lazy imports of issue 16), interleaved, {repeats} rounds; "
        "medians, speed-up = before / now. Light verbs import neither torch nor transformers (checked by "
        "`tests/test_startup.py`). Every verb that builds a model first imports torch and transformers' model base "
        "with the garbage collector paused, then freezes what the imports made (`adapt.cli._import_model_stack`), "
        "so that neither the collector's passes during the imports nor its last one at exit walk those objects; no "
        "such verb starts faster than that row. \"Collector on\": the same verb through `adapt.cli.main(argv)`, as "
        "a script calls it, which leaves the collector alone; its ratio is collector on / now.",
        "",
        f"- Machine: {machine_line()}; load average {load:.1f} over the last minute at the end of the run",
        f"- Command: `{command}`",
        "",
        "| command | now, median (s) | now, best (s) | imports torch | before, median (s) | speed-up | "
        "collector on, median (s) | collector on / now |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=3, help="rounds over all commands")
    parser.add_argument("--before", default="8588172~1", help="the git revision to compare with")
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = parser.parse_args(argv)
    publish(measure(args.repeats, args.before, command_line(__file__, parser, args)), BENCHMARKS_MD, "bench_startup", args.write)


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
