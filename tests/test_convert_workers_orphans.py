"""``--workers N``: the spawned workers end when the converter's process is killed outright (``kill -9``, the OOM
killer), which runs no shutdown (they used to wait for work forever); a step is the one the loop asks for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domains.files import process_alive

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys, time
from domains.parallel import Prefetch

if __name__ == "__main__":
    Prefetch.wait_while_starting = True
    steps = [(i, time.sleep, (0.2,)) for i in range(1000)]
    pf = Prefetch(2, lambda: steps)
    pf.get(0, time.sleep, 0.2)
    print(" ".join(str(pid) for pid in pf.pool._processes), flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_workers_end_when_the_converter_is_killed(tmp_path: Path):
    script = tmp_path / "convert.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    workers: list[int] = []
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(process_alive(pid) and not _zombie(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if process_alive(pid) and not _zombie(pid)], "orphaned workers"
    finally:
        parent.kill()
        parent.wait(10)
        for pid in workers:  # only the workers this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def test_a_step_asked_with_other_arguments_than_planned_is_computed_as_asked(monkeypatch):
    """The pool's result is the planned step's: a loop that asks under the same key with other arguments (a plan
    that read a size or an option differently) got the planned step's value, not one worker's."""
    import math

    from domains import parallel

    monkeypatch.setattr(parallel.Prefetch, "wait_while_starting", True)
    with parallel.Prefetch(2, lambda: [(k, math.factorial, (k,)) for k in range(4)]) as pf:
        assert pf.get(0, math.factorial, 0) == 1  # as planned
        assert pf.get(1, math.factorial, 5) == 120  # planned with 1
        assert pf.get(2, math.factorial, 2) == 2
        assert pf.get(3, math.comb, 3, 1) == 3  # planned as another function
