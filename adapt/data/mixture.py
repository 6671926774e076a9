"""Ratio-based mixing of domain and general (replay) sources, resampled every epoch.

By default an epoch holds as many domain samples as the domain sources have records (a ``ratio: 0``
source left out) and general sources fill ``general_ratio`` of the epoch; with no domain ratios
given that is every domain record once. Within each group, samples are shared by explicit ``ratio`` weights when any are
given, else in proportion to size (× InternVL ``repeat``). A source drawn more often than it has
records is repeated (one full permutation per repetition, then a random remainder); one drawn less
often gets a different random subset each epoch, continuing through a random permutation so that
every record is seen before any is seen twice. Everything is deterministic in ``(seed, epoch)``.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .samples import KINDS, DataError, SourceSpec, expand_sources

__all__ = ["MixturePlan", "source_specs"]

RATIO_TOLERANCE = 0.05  # `warnings` names an epoch whose general share misses general_ratio by more than this
OVERSAMPLED = 4  # `warnings` names a source whose records are each drawn this many times per epoch (or more)


class MixturePlan:
    def __init__(
        self,
        sizes: dict[str, int],
        kinds: dict[str, str],
        general_ratio: float,
        ratios: dict[str, float | None] | None = None,
        repeats: dict[str, float | None] | None = None,
        epoch_size: int | None = None,
        seed: int = 0,
    ):
        """``sizes``: records per source; ``kinds``: "domain" | "general" per source;
        ``general_ratio``: the general share of each epoch (0 ≤ r < 1); ``ratios``: optional
        weights within a kind (give all of a kind or none); ``repeats``: InternVL ``repeat_time``
        per source, where a value > 1 multiplies the source's size (its records are seen that many
        times per epoch) and a value ≤ 1 counts as 1, because `read_source` already applied it by
        keeping the first lines (so pass the specs' repeats as they are, with the sizes of what
        was read); ``epoch_size``: samples per epoch (default ``round(n_domain / (1 - general_ratio))``, where
        ``n_domain`` is the effective size of the domain sources with ratio > 0: every domain record once
        when the domain ratios are absent, else that many domain samples shared by ratio); a given ``epoch_size`` >= 2
        keeps at least one domain and one general sample when ``general_ratio`` > 0."""
        ratios = {k: v for k, v in (ratios or {}).items() if v is not None}
        repeats = {k: v for k, v in (repeats or {}).items() if v is not None}
        unknown = sorted((set(kinds) | set(ratios) | set(repeats)) - set(sizes))
        if unknown:
            raise DataError(f"unknown source(s) in kinds/ratios/repeats: {', '.join(unknown)}")
        missing = sorted(set(sizes) - set(kinds))
        if missing:
            raise DataError(f"no kind given for source(s): {', '.join(missing)}")
        for name, kind in kinds.items():
            if kind not in KINDS:
                raise DataError(f"source {name!r}: kind must be one of {KINDS}, got {kind!r}")
        for name, n in sizes.items():
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise DataError(f"source {name!r}: size must be an int >= 0, got {n!r}")
        for field, values in (("ratio", ratios), ("repeat", repeats)):
            for name, r in values.items():  # a string or list would fail the comparison below with a bare TypeError
                if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)):
                    raise DataError(f"source {name!r}: {field} must be a number, got {r!r}")
        if isinstance(general_ratio, bool) or not isinstance(general_ratio, (int, float, np.integer, np.floating)):
            raise DataError(f"general_ratio must be a number in [0, 1), got {general_ratio!r}")
        for name, r in ratios.items():
            if not (r >= 0 and math.isfinite(r)):
                raise DataError(f"source {name!r}: ratio must be >= 0, got {r!r}")
        for name, r in repeats.items():
            if not (r > 0 and math.isfinite(r)):
                raise DataError(f"source {name!r}: repeat must be > 0, got {r!r}")
        if not (0 <= general_ratio < 1):
            raise DataError(f"general_ratio must be in [0, 1), got {general_ratio!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:  # numpy refuses it per epoch
            raise DataError(f"seed must be an int >= 0, got {seed!r}")
        if epoch_size is not None and (isinstance(epoch_size, bool) or not isinstance(epoch_size, (int, np.integer))
                                       or epoch_size < 1):  # numpy's ints too, as sizes and seed take them
            raise DataError(f"epoch_size must be an int >= 1, got {epoch_size!r}")
        epoch_size = None if epoch_size is None else int(epoch_size)

        self.sizes = {k: int(v) for k, v in sizes.items()}
        self.kinds = dict(kinds)
        self.general_ratio = float(general_ratio)
        self.ratios = ratios
        self.repeats = repeats
        self.seed = int(seed)
        self.names = sorted(self.sizes)
        self.effective = {k: self.sizes[k] * max(1.0, self.repeats.get(k, 1.0)) for k in self.names}

        domain = [k for k in self.names if self.kinds[k] == "domain"]
        general = [k for k in self.names if self.kinds[k] == "general"]
        usable = [k for k in general if self.sizes[k] > 0 and self.ratios.get(k, 1.0) > 0]
        if self.general_ratio > 0 and not usable:
            raise DataError(
                f"general_ratio is {self.general_ratio:g} but there is no general source with records "
                f"and ratio > 0 (general sources: {', '.join(general) or 'none'}); add one or set general_ratio to 0"
            )
        # a source with ratio 0 is not drawn, so it adds nothing to the epoch either
        n_domain = round(sum(self.effective[k] for k in domain if self.ratios.get(k, 1.0) > 0))
        sized = epoch_size is not None
        if epoch_size is None:
            if n_domain == 0:
                raise DataError(self._no_domain_message(domain))
            epoch_size = round(n_domain / (1 - self.general_ratio))
            if self.general_ratio > 0 and epoch_size == n_domain:  # rounding left no general sample: keep one
                epoch_size += 1
            domain_target = n_domain  # exactly: every domain record once
        else:
            general_target = round(epoch_size * self.general_ratio)
            if self.general_ratio > 0 and epoch_size >= 2:  # rounding must not drop a whole group: keep one of each
                general_target = min(max(general_target, 1), epoch_size - 1)
            domain_target = epoch_size - general_target
            if domain_target and n_domain == 0:  # named here: _allocate would blame "no records" for ratio 0
                raise DataError(self._no_domain_message(domain, epoch_size, domain_target))
        general_target = epoch_size - domain_target

        self._counts: dict[str, int] = {k: 0 for k in self.names}
        if domain_target:
            self._counts.update(self._allocate(domain, domain_target, "domain"))
        if general_target:
            self._counts.update(self._allocate(general, general_target, "general"))
        self.epoch_size = epoch_size
        # how a too-small epoch grows: a set epoch_size is raised, else domain records (or an epoch_size) added
        self._grow_epoch = ("raise mixing.epoch_size" if sized else
                            "add domain records or set mixing.epoch_size")

    def _no_domain_message(self, domain: list[str], epoch_size: int | None = None, wanted: int = 0) -> str:
        """Why none of the ``wanted`` domain samples of an ``epoch_size`` epoch (None: not given, the domain records
        size it) can be drawn, naming the recipe keys to change."""
        what = ("without mixing.epoch_size an epoch is sized by its domain records" if epoch_size is None else
                f"mixing.epoch_size {epoch_size} with mixing.general_ratio {self.general_ratio:g} wants {wanted} "
                "domain samples per epoch")
        if not domain:
            why = "no data.sources entry has kind: domain"
            fix = "add the field's data as a source with kind: domain"
        elif all(self.ratios.get(k, 1.0) == 0 for k in domain):
            why = f"every domain source has ratio 0 ({', '.join(domain)})"
            fix = ("give at least one of them data.sources[].ratio > 0 (or leave ratio out on all of them to share "
                   "by size)")
        else:
            drawn = [k for k in domain if self.ratios.get(k, 1.0) > 0]
            why = f"no domain source with ratio > 0 has records ({', '.join(drawn)})"
            fix = "fill their annotation files, or see why their records were skipped (skips.md)"
        return f"{what}, but {why}; {fix}"

    def _allocate(self, names: list[str], target: int, kind: str) -> dict[str, int]:
        """Largest-remainder shares of ``target`` by ratio (if any given) or effective size."""
        given = [k for k in names if k in self.ratios]
        if given and len(given) != len(names):
            raise DataError(
                f"ratio given for some {kind} sources ({', '.join(given)}) but not for "
                f"{', '.join(k for k in names if k not in self.ratios)}: give it for all {kind} sources or none"
            )
        if given:
            empty = [k for k in names if self.ratios[k] > 0 and self.sizes[k] == 0]
            if empty:
                raise DataError(f"{kind} source(s) with ratio > 0 but no usable records: {', '.join(empty)}")
            weights = {k: float(self.ratios[k]) for k in names}
        else:
            weights = {k: self.effective[k] for k in names}
        total = sum(weights.values())
        if total <= 0:
            if kind == "general":
                raise DataError(
                    f"general_ratio is {self.general_ratio} but there is no general source with records and "
                    "ratio > 0; add a general source or set general_ratio to 0"
                )
            raise DataError(f"{target} {kind} samples per epoch are wanted but no {kind} source has records")
        exact = {k: target * w / total for k, w in weights.items()}
        counts = {k: math.floor(v) for k, v in exact.items()}
        left = target - sum(counts.values())
        # largest remainder first; ties by name for determinism
        for k in sorted(names, key=lambda k: (-(exact[k] - counts[k]), k))[:left]:
            counts[k] += 1
        return counts

    # ---------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return self.epoch_size

    def counts(self) -> dict[str, int]:
        """Samples per source per epoch."""
        return dict(self._counts)

    def epoch(self, epoch: int) -> list[tuple[str, int]]:
        """``(source, record index)`` in training order for ``epoch``; deterministic in (seed, epoch)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:  # 1.5: numpy's "seed"
            raise DataError(f"epoch must be an int >= 0, got {epoch!r}")
        # .tolist() gives Python ints at C speed: one int() and one numpy scalar index per sample took most of the time
        items = [(name, i) for name in self.names for i in self._source_indices(name, epoch).tolist()]
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(items))
        return list(map(items.__getitem__, order.tolist()))

    def _source_indices(self, name: str, epoch: int) -> np.ndarray:
        n, c = self.sizes[name], self._counts[name]
        if c == 0 or n == 0:
            return np.empty(0, dtype=np.int64)
        full, rest = divmod(c, n)
        tag = zlib.crc32(name.encode("utf-8"))
        parts = [np.random.default_rng([self.seed, epoch, 1, tag, k]).permutation(n) for k in range(full)]
        if rest:
            parts.append(_remainder_stream(n, rest, epoch, [self.seed, 2, tag]))
        return np.concatenate(parts)

    def describe(self) -> str:
        """Markdown table: source | kind | records | repeat | per-epoch samples | share."""
        general = sum(c for k, c in self._counts.items() if self.kinds[k] == "general")
        lines = [
            f"Mixture: {self.epoch_size} samples per epoch, general_ratio {self.general_ratio:g} "
            f"(achieved: {general} general samples, {general / self.epoch_size:.1%})",
            "",
            "| source | kind | records | repeat | per-epoch samples | share |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name in sorted(self.names, key=lambda k: (self.kinds[k] != "domain", k)):
            c = self._counts[name]
            share = c / self.epoch_size if self.epoch_size else 0.0
            rep = self.repeats.get(name)
            repeats = "" if rep is None else f"{rep:g}"
            lines.append(f"| {name} | {self.kinds[name]} | {self.sizes[name]} | {repeats} | {c} | {share:.1%} |")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings()])

    def warnings(self) -> list[str]:
        """The general share of an epoch when it misses ``general_ratio`` by more than 5 points (an epoch too small
        for that ratio), and sources whose records are drawn many times per epoch beyond their ``repeat``."""
        notes = []
        general = sum(c for k, c in self._counts.items() if self.kinds[k] == "general")
        if abs(general / self.epoch_size - self.general_ratio) > RATIO_TOLERANCE:
            notes.append(f"general sources get {general} of the {self.epoch_size} samples per epoch "
                         f"({general / self.epoch_size:.1%}), not general_ratio {self.general_ratio:g}: the epoch is "
                         f"too small for that ratio; {self._grow_epoch}")
        elif self.general_ratio > 0 and general == 0:  # within the tolerance at a small ratio, yet no replay at all
            notes.append(f"no general sample in the {self.epoch_size}-sample epoch (general_ratio "
                         f"{self.general_ratio:g}): raise mixing.epoch_size")
        for name in sorted(self.names, key=lambda k: (self.kinds[k] != "domain", k)):
            times = self._counts[name] / self.effective[name] if self.effective[name] else 0.0
            if times < OVERSAMPLED:
                continue
            kind = self.kinds[name]
            if kind == "general" and name not in self.ratios:
                why, fix = f"to fill general_ratio {self.general_ratio:g}", "lower mixing.general_ratio"
            else:
                why, fix = f"to meet the {kind} ratios", "lower its ratio"
            notes.append(f"{kind} source {name!r}: its {self.sizes[name]} records are drawn {self._counts[name]} "
                         f"times per epoch (each about {times:.0f} times) {why}; add records or {fix}")
        return notes

    @classmethod
    def from_sources(cls, specs: Sequence, records: dict[str, list], general_ratio: float,
                     epoch_size: int | None = None, seed: int = 0) -> MixturePlan:
        """Plan for `SourceSpec`s whose records `read_source` / `measure` returned.

        ``read_source`` already applied ``repeat < 1`` (it kept the first lines); ``repeat > 1``
        multiplies the source's size here.
        """
        return cls(
            sizes={s.name: len(records.get(s.name, [])) for s in specs},
            kinds={s.name: s.kind for s in specs},
            general_ratio=general_ratio,
            ratios={s.name: s.ratio for s in specs},
            repeats={s.name: s.repeat for s in specs},
            epoch_size=epoch_size,
            seed=seed,
        )


def source_specs(sources: Sequence, held_out: bool = False) -> list[SourceSpec]:
    """The recipe's sources as `SourceSpec`s, meta files expanded. ``held_out`` (``data.eval_sources``): every record
    is read, so ``ratio``, ``repeat`` and a meta entry's ``repeat_time`` are not applied."""
    return expand_sources([
        SourceSpec(s.name, Path(s.path), Path(s.root) if s.root else None, s.kind,
                   None if held_out else s.ratio, None if held_out else s.repeat, s.max_tiles)
        for s in sources
    ], repeats=not held_out)


def _remainder_stream(n: int, r: int, epoch: int, key: list[int]) -> np.ndarray:
    """Epoch ``epoch``'s ``r`` (< n) distinct indices from an endless run of random permutations of
    ``range(n)``, ``r`` per epoch: every index comes once before any comes twice.

    When an epoch straddles two permutations, the next one is drawn so that its head avoids the
    indices the current epoch already took, keeping the epoch free of duplicates. Epoch ``e`` is the stream's
    items ``e * r`` to ``e * r + r``; permutation ``c`` fills items ``c * n`` to ``c * n + n``.
    """
    start = int(epoch) * r
    cycle, pos = divmod(start, n)
    # a permutation depends on the one before only through an epoch straddling them: rebuild from the last one that
    # began where an epoch began (at most r / gcd(n, r) - 1 permutations back), not from the first epoch
    period = r // math.gcd(n, r)  # permutation c begins where an epoch begins when c * n % r == 0
    first = cycle // period * period
    if first == 0:
        perm = np.random.default_rng(key + [0]).permutation(n)
    else:
        perm = _next_permutation(n, np.empty(0, dtype=np.int64), r, key + [first])
    for c in range(first, cycle):  # the epoch over the boundary after permutation c begins at item `at` of it
        at = (c + 1) * n // r * r - c * n
        perm = _next_permutation(n, perm[at:], r - (n - at), key + [c + 1])
    take = perm[pos:pos + r]
    if len(take) < r:
        need = r - len(take)
        take = np.concatenate([take, _next_permutation(n, take, need, key + [cycle + 1])[:need]])
    return take


def _next_permutation(n: int, take: np.ndarray, need: int, key: list[int]) -> np.ndarray:
    """The permutation of ``range(n)`` after one whose last items ``take`` began an epoch that `need` more items
    finish: its first `need` items avoid `take`."""
    rng = np.random.default_rng(key)
    taken = np.zeros(n, dtype=bool)
    taken[take] = True
    others = rng.permutation(np.flatnonzero(~taken))
    return np.concatenate([others[:need], rng.permutation(np.concatenate([others[need:], take]))])


ORDER_BYTES_PER_SAMPLE = 128  # one (source, index) of `MixturePlan.epoch` and the dataset's copy (measured: ~115)


def epoch_order_refusal(samples: int, processes: int) -> str:
    """Why an epoch of `samples` cannot have its sample order held by `processes` processes (ranks and data workers)
    in this machine's available memory, or '' when it can (or the memory is unknown). `adapt train` asks it before
    the first epoch is built, `adapt validate` of mixing.epoch_size before any data is read."""
    available = _available_memory()
    need = samples * ORDER_BYTES_PER_SAMPLE * 2 * processes
    if available is None or need <= available:
        return ""
    return (f"an epoch of {samples:,} samples (mixing.epoch_size, or the sources' records x repeat) needs about "
            f"{need / 2**30:.1f} GiB to hold its sample order ({processes} process(es): ranks and data workers), "
            f"more than the {available / 2**30:.1f} GiB of memory available; lower mixing.epoch_size "
            "(training.max_steps sets how long the run trains, whatever the epoch size)")


def _available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux's MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
