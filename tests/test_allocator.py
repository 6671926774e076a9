"""adapt/allocator.py: freed training memory stays mapped for the next step instead of being faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc tuning is Linux-only")

# eight 4 MiB blocks allocated, written and freed, five times over: the churn of a training step in small
_CHURN = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from adapt.allocator import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [np.ones(2**20, dtype=np.float32) for _ in range(8)]
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del blocks
    print(sum(faults[1:]))  # after a round of warm-up
""")
PAGES = 4 * 8 * 2**22 // 4096  # what the four rounds after it touch


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_blocks_are_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    assert default > PAGES // 4, f"glibc's defaults no longer return these blocks ({default} faults): rethink the test"
    assert kept < PAGES // 20, kept


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])  # only "0" opted out: "false" tuned it anyway
def test_opting_out_leaves_the_allocator_alone(monkeypatch, value):
    import adapt.allocator as allocator

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("POCKET_ADAPT_KEEP_FREED_MEMORY", value)
    assert allocator.keep_freed_memory() is False
