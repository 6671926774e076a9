"""`MixturePlan.epoch` keeps the exact training order it had before it was made fast: a resumed or repeated run must
draw the same samples in the same order. `_frozen_epoch` is a verbatim copy of the algorithm as it was (one numpy
generator per repetition of a source, one Python tuple per sample), kept here to compare against."""

import math
import zlib

import numpy as np
import pytest

from adapt.data.mixture import MixturePlan, _remainder_stream


def _frozen_remainder_stream(n: int, r: int, epoch: int, key: list[int]) -> np.ndarray:
    cycle = 0
    perm = np.random.default_rng(key + [cycle]).permutation(n)
    pos = 0
    for e in range(epoch + 1):
        take = perm[pos:pos + r]
        pos += len(take)
        if len(take) < r:
            need = r - len(take)
            cycle += 1
            rng = np.random.default_rng(key + [cycle])
            taken = np.zeros(n, dtype=bool)
            taken[take] = True
            others = rng.permutation(np.flatnonzero(~taken))
            tail = rng.permutation(np.concatenate([others[need:], take]))
            perm = np.concatenate([others[:need], tail])
            take = np.concatenate([take, perm[:need]])
            pos = need
        if e == epoch:
            return take
    raise AssertionError("unreachable")


def _frozen_source_indices(plan: MixturePlan, name: str, epoch: int) -> np.ndarray:
    n, c = plan.sizes[name], plan.counts()[name]
    if c == 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    full, rest = divmod(c, n)
    tag = zlib.crc32(name.encode("utf-8"))
    parts = [np.random.default_rng([plan.seed, epoch, 1, tag, k]).permutation(n) for k in range(full)]
    if rest:
        parts.append(_frozen_remainder_stream(n, rest, epoch, [plan.seed, 2, tag]))
    return np.concatenate(parts)


def _frozen_epoch(plan: MixturePlan, epoch: int) -> list[tuple[str, int]]:
    items: list[tuple[str, int]] = []
    for name in plan.names:
        idx = _frozen_source_indices(plan, name, epoch)
        items.extend((name, int(i)) for i in idx)
    order = np.random.default_rng([plan.seed, epoch, 0]).permutation(len(items))
    return [items[i] for i in order]


# (sizes, kinds, general_ratio, ratios, repeats, epoch_size)
PLANS = [
    # a tiny general set repeated many times to fill its share (one permutation per repetition)
    ({"d": 3000, "g": 50}, {"d": "domain", "g": "general"}, 0.4, None, None, None),
    # a source larger than its count (a random subset per epoch, straddling permutations) beside a repeated one
    ({"d": 10, "small": 4, "large": 100}, {"d": "domain", "small": "general", "large": "general"}, 0.5,
     {"small": 1, "large": 1}, None, None),
    ({"drive": 70, "med": 30, "coco": 500, "gqa": 50},
     {"drive": "domain", "med": "domain", "coco": "general", "gqa": "general"}, 0.3, None, {"med": 3}, None),
    ({"a": 7, "b": 1, "g": 13, "off": 5}, {"a": "domain", "b": "domain", "g": "general", "off": "general"}, 0.6,
     {"g": 2, "off": 0}, None, 97),  # a 1-record source, a ratio-0 one, a set epoch_size
    ({"d": 1000, "g": 3}, {"d": "domain", "g": "general"}, 0.0, None, None, 37),  # fewer samples than records
    ({"d": 5, "ü-naïve/set": 2}, {"d": "domain", "ü-naïve/set": "general"}, 0.9, None, None, None),
]


@pytest.mark.parametrize("spec", PLANS, ids=[f"plan{k}" for k in range(len(PLANS))])
@pytest.mark.parametrize("seed", [0, 1, 7, 123456, 2**32 + 5, 2**70 + 3])
def test_epoch_order_is_the_frozen_algorithms(spec, seed):
    sizes, kinds, ratio, ratios, repeats, epoch_size = spec
    plan = MixturePlan(sizes, kinds, ratio, ratios=ratios, repeats=repeats, epoch_size=epoch_size, seed=seed)
    for epoch in (0, 1, 2, 5, 11, 40):
        got = plan.epoch(epoch)
        assert got == _frozen_epoch(plan, epoch), (seed, epoch)
        assert all(type(s) is str and type(i) is int for s, i in got[:50])  # plain ints, as before


@pytest.mark.parametrize("n, r", [(7, 3), (10, 4), (12, 8), (13, 12), (100, 37), (6, 5), (9, 1)])
def test_the_remainder_stream_is_the_frozen_one_at_every_epoch_without_replaying_them(n, r, monkeypatch):
    """`_remainder_stream` replayed every earlier epoch, its cost growing with the epoch number; it now rebuilds at
    most r / gcd(n, r) permutations (from the last one an epoch began with), in the frozen order at every epoch,
    those after permutations rebuilt around straddling epochs (epoch 3 and later) included."""
    key = [5, 2, 77]
    late = 10**4 + 3
    for epoch in [*range(3 * n), late]:
        assert np.array_equal(_remainder_stream(n, r, epoch, key), _frozen_remainder_stream(n, r, epoch, key)), epoch
    drawn: list = []
    real = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda seed: drawn.append(seed) or real(seed))
    for epoch in (late, 10**12 + 1):
        drawn.clear()
        take = _remainder_stream(n, r, epoch, key).tolist()
        assert len(drawn) <= r // math.gcd(n, r) + 1 and len(set(take)) == len(take) == r
