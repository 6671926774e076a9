"""Process-pool prefetch for converters: ``adapt convert ... --workers N``.

A converter stays one serial loop: it walks its records in order, reports skips, checks freshness, guards paths
(:func:`domains.files.inside_root`) and writes every file itself (atomically, ``.part`` then rename), exactly as
with one worker. Only its *expensive, pure* step -- decode / render / resize / encode of one image, returning
the encoded bytes and the size -- goes through :meth:`Prefetch.get`. With ``workers > 1`` that step runs ahead
of the loop in a :class:`concurrent.futures.ProcessPoolExecutor` (spawn start method: the step is a module-level
function with picklable arguments), in the order of a *plan*: the list of steps the converter expects to ask
for, made by a cheap pass over the metadata before the loop.

Why output is byte-identical to one worker: the loop is the same code in both cases and consumes results in its own
order; a step computes bytes and writes nothing, so a step the loop never asks for (the plan may be a superset) leaves
no trace; a step the plan missed (or planned with other arguments), or one whose worker failed with anything but
:class:`~domains.base.SkipInput`, is computed again in the loop's process (so an error is raised where and as one worker
raises it). A ``SkipInput`` raised in a worker is raised again by :meth:`Prefetch.get` with the same reason and detail,
at the point of the loop where one worker would raise it, so skip reports are the same.

While the pool is still starting (spawned workers import the readers first: a second or more) the loop does not
wait for it: a step whose result is not ready before any result of the pool is computed in the loop's process
(the pool's copy is dropped), so a small set converts about as fast as with one worker instead of waiting out the
start-up; once the pool has delivered, the loop waits for its results.

With ``workers == 1`` (the default) there is no pool and no plan: :meth:`Prefetch.get` calls the step inline.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from domains.base import DomainError, SkipInput
from model.limits import usable_cores

__all__ = ["STATS", "Prefetch", "check_workers"]

STATS = {"prefetched": 0, "skipped_in_worker": 0, "inline": 0}  # this process's totals, for tests and benchmarks
Step = tuple[Hashable, Callable[..., Any], tuple]  # (key, module-level function, its arguments)


def check_workers(workers: Any) -> int:
    """`workers` as a whole number from 1 to the usable CPU cores (at least 2); DomainError otherwise. Each spawned
    process imports the readers: a mistyped count exhausted memory, and more than the cores convert no faster."""
    try:
        ok = not isinstance(workers, bool) and float(workers).is_integer() and float(workers) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DomainError(f"workers must be a whole number >= 1, got {workers!r}")
    cores = usable_cores()
    if float(workers) > max(cores, 2):
        raise DomainError(f"workers={workers}: more processes than this machine's {cores} CPU core(s) convert no "
                          f"faster and each holds its own readers in memory; give at most {max(cores, 2)}")
    return int(float(workers))


def _exit_with_parent(parent: int) -> None:
    """In a worker, at start: exit as soon as the converter's process `parent` is gone. A killed converter
    (``kill -9``, the OOM killer) runs no shutdown, and its idle workers would otherwise wait for work forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run(fn: Callable[..., Any], args: tuple) -> tuple:
    """In a worker: ``("ok", value)``, ``("skip", reason, detail)`` or ``("error", text)``."""
    try:
        return ("ok", fn(*args))
    except SkipInput as exc:
        return ("skip", exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - recomputed in the loop's process, which raises it as one worker does
        return ("error", f"{type(exc).__name__}: {exc}")


class Prefetch:
    """Results of a converter's expensive steps, computed ahead in `workers` processes (see the module notes).

    `plan`: a callable returning the steps ``(key, fn, args)`` in the order the loop will probably ask for them
    (called only when ``workers > 1``; an exception in it just disables prefetching). `window`: how many steps
    may be computed ahead of the loop (default ``4 * workers``), which bounds the memory held in results.
    Use as a context manager (the pool is shut down on exit).
    """

    wait_while_starting = False  # True: wait for the pool's first results instead of computing them here

    def __init__(self, workers: Any = 1, plan: Callable[[], Iterable[Step]] | None = None, window: int | None = None):
        self.workers = check_workers(workers)
        self.window = max(1, int(window or 4 * self.workers))
        self.steps: list[Step] = []
        self.position: dict[Hashable, int] = {}
        self.cursor = 0
        self.pending: OrderedDict[Hashable, tuple[int, Future]] = OrderedDict()
        self.pool: ProcessPoolExecutor | None = None
        self.started = False  # the pool has delivered a result
        self.stats = {"prefetched": 0, "inline": 0}
        if self.workers > 1 and plan is not None:
            try:
                for key, fn, args in plan():
                    if key not in self.position:
                        self.position[key] = len(self.steps)
                        self.steps.append((key, fn, tuple(args)))
            except Exception:  # noqa: BLE001 - a plan is only a hint: the loop computes what it misses
                pass
        if self.steps:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_exit_with_parent, initargs=(os.getpid(),))
            self._top_up()

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self.pending.clear()

    # ------------------------------------------------------------------ use
    def get(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: taken from the pool when planned under `key`, else computed here. A ``SkipInput``
        raised by the step is raised here with the same reason and detail."""
        outcome = self._take(key)
        if outcome is not None and not self._planned_as(key, fn, args):
            outcome = None  # planned with another function or arguments: the pool's value is not this step's
        if outcome is not None and outcome[0] == "ok":
            self._count("prefetched")
            return outcome[1]
        if outcome is not None and outcome[0] == "skip":
            self._count("prefetched")
            self._count("skipped_in_worker")
            raise SkipInput(outcome[1], outcome[2])
        self._count("inline")
        return fn(*args)  # no pool, not planned, or failed in the worker: as one worker does

    def _planned_as(self, key: Hashable, fn: Callable[..., Any], args: tuple) -> bool:
        _, planned_fn, planned_args = self.steps[self.position[key]]
        try:
            return planned_fn == fn and bool(planned_args == tuple(args))
        except Exception:  # noqa: BLE001 - arguments that do not compare (arrays): computed here, as one worker does
            return False

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1
        STATS[what] += 1

    def _take(self, key: Hashable) -> tuple | None:
        if self.pool is None:
            return None
        at = self.position.get(key)
        if key not in self.pending and at is not None and at >= self.cursor:
            self._drop(len(self.steps))  # the loop jumped ahead of the plan: follow it
            self.cursor = at
            self._top_up()
        got = self.pending.pop(key, None)
        if got is None:
            self._top_up()
            return None
        self._drop(got[0])  # steps planned before this one were not asked for: the loop skipped them
        self._top_up()
        self.started = self.started or got[1].done() or any(f.done() for _, f in self.pending.values())
        if not self.started and not self.wait_while_starting:
            got[1].cancel()  # still starting: do this one here (a running copy's result is dropped)
            return None
        try:
            return got[1].result()
        except Exception:  # noqa: BLE001 - a broken pool: compute here
            return None

    def _drop(self, before: int) -> None:
        for key in [k for k, (i, _) in self.pending.items() if i < before]:
            self.pending.pop(key)[1].cancel()

    def _top_up(self) -> None:
        while self.pool is not None and len(self.pending) < self.window and self.cursor < len(self.steps):
            key, fn, args = self.steps[self.cursor]
            try:
                self.pending[key] = (self.cursor, self.pool.submit(_run, fn, args))
            except Exception:  # noqa: BLE001 - a broken pool (a worker killed): the loop computes the rest itself
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
                return
            self.cursor += 1
