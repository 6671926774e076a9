"""Keep freed memory in the process for reuse during training (glibc only).

Each CPU training step frees and allocates the same large tensors again: activations, and under bf16 autocast a
fresh fp32 gradient for every weight (autograd casts the bf16 gradient back). glibc returns freed heap tops above
its trim threshold to the kernel and serves mid-sized blocks with `mmap`, so the next step faults those pages in
again (tests/test_allocator.py shows the pattern). Raising the trim threshold and the mmap threshold keeps them
mapped; the peak resident memory is what the step needed anyway, but up to 2 GiB of it is not given back until the
process ends. bench/bench_train.py's `system-malloc` variant runs without it: at the 164 M-parameter bench size the
step time did not change beyond the run-to-run spread.

``POCKET_ADAPT_KEEP_FREED_MEMORY=0`` (or ``false``, ``no``, ``off``) leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for it on 64-bit; larger blocks are still mmapped
TOP_PAD = 64 * 2**20  # grow the heap in steps of this much, not page by page
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (see the module's docstring); False where it does not apply."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    opted_out = os.environ.get("POCKET_ADAPT_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off")
    if not sys.platform.startswith("linux") or opted_out:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only (musl has no mallopt tunables)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, TOP_PAD)))
    return _applied
