"""Wall time of the README's first command on a fresh clone: `make quickstart`, set-up from the lock included.

Clones this repository (its committed HEAD) into a temporary folder, so nothing of this checkout's `.venv` or
`runs/` is reused, and times `make quickstart` there: a new virtual environment from `requirements/dev.lock`
(pip's wheel cache and the machine's local wheel folders are what a fresh machine of this project has too),
then `adapt quickstart` (data generation, training, evaluation of base and adapted models). The goal is
under 10 minutes on 2 cores. The load average before and after is printed, since other work on the machine
slows both phases.

    python bench/bench_quickstart.py            # print the markdown section
    python bench/bench_quickstart.py --write    # also replace this benchmark's section in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.sections import machine_line, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "bench_quickstart"
GOAL_MIN = 10.0


def _timed(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    took = time.perf_counter() - start
    if done.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}) in {cwd}:\n{tail}")
    return took


def measure(keep: bool = False) -> tuple[dict, str]:
    """Seconds for set-up and for the quick start on a fresh clone of HEAD, and the quick start's summary table."""
    work = Path(tempfile.mkdtemp(prefix="bench_quickstart_"))
    clone = work / "pocket-adapt"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True, capture_output=True,
                                text=True).stdout.strip()
        load_before = os.getloadavg()[0]
        env_setup = _timed(["make", "setup"], clone, work / "setup.log")
        run = _timed(["make", "quickstart"], clone, work / "quickstart.log")  # setup is a no-op now
        load_after = os.getloadavg()[0]
        text = (work / "quickstart.log").read_text(errors="replace")
        table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
        return {"commit": commit, "setup": env_setup, "quickstart": run, "load": (load_before, load_after)}, table
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def section(result: dict) -> str:
    total = (result["setup"] + result["quickstart"]) / 60
    verdict = "under" if total < GOAL_MIN else "**over**"
    return "\n".join([
        "## Quick start from a fresh clone (`make quickstart`)",
        "",
        "Wall time of the README's first command on a fresh clone of the repository (commit "
        f"`{result['commit']}`): a new `.venv` installed from `requirements/dev.lock`, then `adapt quickstart` "
        "(synthetic data, training pocket-tiny, evaluating base and adapted models on the domain and general sets).",
        "",
        "| phase | minutes |",
        "|---|---:|",
        f"| set-up from the lock (`make setup`) | {result['setup'] / 60:.1f} |",
        f"| `adapt quickstart` | {result['quickstart'] / 60:.1f} |",
        f"| **total** (goal < {GOAL_MIN:g}) | **{total:.1f}** ({verdict} the goal) |",
        "",
        f"- Machine: {machine_line()}; load average {result['load'][0]:.1f} before, {result['load'][1]:.1f} after",
        "- Regenerate: `python bench/bench_quickstart.py --write`",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="also replace the section in BENCHMARKS.md")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its logs (path printed)")
    args = parser.parse_args(argv)
    result, table = measure(args.keep)
    text = section(result)
    print(table)
    print(text)
    if args.write:
        write_section(BENCHMARKS_MD, SECTION, text)
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
