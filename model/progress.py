"""Progress of long work, the one way pocket-adapt shows it: a tqdm bar with ETA, or plain lines for logs.

``progress`` arguments take three values: ``True`` a bar (tqdm.auto: a terminal or a notebook), `LINES` a plain
line on stderr every tenth of the work or `LINE_EVERY_S` seconds, whichever comes first (for logs, where a bar's
frames would be joined by carriage returns), ``False`` nothing (a library caller's or a nested step's choice).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

LINES = "lines"
LINE_EVERY_S = 30.0
Progress = bool | Literal["lines"]
# stages of unequal cost (an export's graphs): the stage at work and the time so far, no rate, no ETA
STAGES_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]"


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 progress: Progress = True, stages: bool = False, **tqdm_kwargs: Any):
    """A tqdm bar, a `LineProgress` or a disabled tqdm for `progress` (see the module docstring). `stages`: the
    steps are of unequal cost, so no percentage, rate or ETA is shown, only the stage count, the stage set with
    ``set_postfix_str`` and the elapsed time. Use it as a context manager (or close it in a ``finally``) so that a
    message after an error or Ctrl-C does not land on the bar's line."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if progress == LINES:
        return LineProgress(iterable, total=total, desc=desc, unit=unit, stages=stages,
                            initial=tqdm_kwargs.get("initial", 0))
    from tqdm.auto import tqdm

    if stages:
        tqdm_kwargs.setdefault("bar_format", STAGES_FORMAT)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True, **tqdm_kwargs)


def shows_bar(progress: Progress) -> bool:
    """Whether `progress` draws a bar (and a message should go through ``tqdm.write``)."""
    return progress is True


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m:02d}:{s:02d}"


class LineProgress:
    """The part of tqdm's interface pocket-adapt uses, printing ``desc: n/total unit (p%), elapsed, ETA`` lines to
    stderr: at every tenth of `total` (every stage, for `stages`), after `LINE_EVERY_S` seconds without one, and
    once at the end."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", stages: bool = False, initial: int = 0):
        self.iterable, self.total, self.desc, self.unit, self.stages = iterable, total, desc, unit, stages
        self.n = self._shown = self._first = initial
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.stages or (self.total and self._tenth(self.n) > self._tenth(self._shown)) \
                or now - self._last >= LINE_EVERY_S:
            self._print(now)

    def _tenth(self, n: int) -> int:
        return 10 * n // self.total

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    @staticmethod
    def write(s: str, file: Any = None, end: str = "\n") -> None:
        print(s, file=file or sys.stderr, end=end, flush=True)

    def close(self) -> None:
        if not self._closed and self.n != self._shown:
            self._print(time.monotonic(), done=True)
        self._closed = True

    def _print(self, now: float, done: bool = False) -> None:
        elapsed = now - self._start
        counted = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {counted} {self.unit}"]
        if self.total and not self.stages:
            parts[0] += f" ({100 * self.n // self.total}%)"
        parts.append(f"{_clock(elapsed)} elapsed")
        run = self.n - self._first  # the rate of this run's work (not a resumed run's earlier steps)
        if self.total and not self.stages and not done and 0 < run < self.total - self._first:
            parts.append(f"ETA {_clock(elapsed / run * (self.total - self.n))}")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=sys.stderr, flush=True)
        self._shown, self._last = self.n, now
