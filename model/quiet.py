"""Silencing a warning for a moment, safely for threads (the demo reads images in several at once).

`warnings.catch_warnings` saves the process-wide filter list on entry and puts it back on exit (Python < 3.14): two
threads inside at once undo each other, so the warning of one shows (the other restored the list it entered with)
and the other's "ignore" filter stays behind for the rest of the process. `ignoring` holds one lock around it, so
the blocks that silence warnings, every reader's, run one at a time.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.RLock()  # re-entrant: a block may call another that silences a warning


def _new_lock() -> None:  # a forked child (a DataLoader worker) has none of the parent's threads, so no holder
    global _LOCK
    _LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


@contextmanager
def ignoring(category: type[Warning] = Warning, message: str = "") -> Iterator[None]:
    """Ignore warnings of `category` (whose text starts with the regex `message`) inside the block, in this thread
    only as far as the other threads silence theirs through this function too."""
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield
