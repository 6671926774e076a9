"""InternVL's tile-grid rule, written out again from its documentation and nothing else.

This is the generator of the ``REFERENCE`` table in ``tests/test_tiling.py``, and the oracle the tests
hold ``model.tiling`` to. It is deliberately independent of ``model/tiling.py`` (it imports nothing from
the project) and is transcribed from ``/work/shared/reference/internvl.md`` §1 (InternVL
``internvl_chat/internvl/train/dataset.py``: ``dynamic_preprocess`` / ``find_closest_aspect_ratio`` at
OpenGVLab/InternVL 2410d1d):

1. ``a = W / H`` as a float.
2. Candidates are every ``(cols, rows)`` with ``min <= cols*rows <= max``, put in a Python ``set`` by a
   generator that walks ``n = min..max``, then ``cols = 1..n``, then ``rows = 1..n``; the set is then
   stable-sorted by ``cols*rows``. Equal products therefore keep CPython's set-iteration order, which
   depends on the order keys were *first* inserted, so that order is reproduced here.
3. Walking the sorted candidates from ``best = (1, 1)``, ``best_diff = inf``: ``d = |a - cols/rows|``;
   ``d < best_diff`` takes the candidate; ``d == best_diff`` (float equality) takes it only if
   ``W*H > 0.5 * size**2 * cols * rows``. Here that walk is restated as a selection: among the
   candidates at the minimum ``d``, the first one, unless a later one meets the area condition, in which
   case the last such later one.
4. Tiles = ``cols*rows``, plus one thumbnail when the thumbnail is on and ``cols*rows > 1``.

Run it to print the table (and to see that it reproduces the documented candidate orders)::

    python -m tests.internvl_tiling_rule
"""

from __future__ import annotations

# internvl.md §1, rule 2: the published candidate orders (max 6 in full; max 12: count, head, tail)
DOCUMENTED_ORDER_MAX6 = [
    (1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (4, 1), (1, 4),
    (2, 2), (1, 5), (5, 1), (6, 1), (2, 3), (1, 6), (3, 2),
]  # fmt: skip
DOCUMENTED_MAX12_COUNT = 35
DOCUMENTED_MAX12_HEAD = [(1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (2, 2), (4, 1), (1, 4)]
DOCUMENTED_MAX12_TAIL = [(3, 4), (4, 3), (1, 12), (6, 2), (2, 6)]

# internvl.md §1 "Test vectors" (thumbnail on): image sizes whose grids the table lists, at max 6 and 12
DOCUMENTED_SIZES = [
    (448, 448), (500, 500), (224, 224), (1000, 1000), (800, 600), (640, 480), (1024, 768),
    (1920, 1080), (1600, 900), (2688, 896), (100, 1000),
]  # fmt: skip


def first_insertion_order(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """Grids in the order InternVL's generator first yields them (later repeats change nothing)."""
    seen: dict[tuple[int, int], None] = {}
    for n in range(min_tiles, max_tiles + 1):
        for cols in range(1, n + 1):
            for rows in range(1, n + 1):
                if min_tiles <= cols * rows <= max_tiles:
                    seen.setdefault((cols, rows), None)
    return list(seen)


def candidates(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """Rule 2: the candidate grids in InternVL's order."""
    as_set = set(first_insertion_order(min_tiles, max_tiles))  # CPython's iteration order decides ties
    return sorted(as_set, key=lambda grid: grid[0] * grid[1])


def grid(width: int, height: int, min_tiles: int = 1, max_tiles: int = 12, size: int = 448
         ) -> tuple[int, int]:
    """Rules 1 and 3: the ``(cols, rows)`` InternVL picks for a ``width`` x ``height`` image."""
    aspect = width / height
    grids = candidates(min_tiles, max_tiles)
    if not grids:
        return (1, 1)
    diffs = [abs(aspect - cols / rows) for cols, rows in grids]
    closest = min(diffs)
    tied = [g for g, d in zip(grids, diffs) if d == closest]
    area = width * height
    roomy = [(c, r) for c, r in tied[1:] if area > 0.5 * size * size * c * r]
    return roomy[-1] if roomy else tied[0]


def tiles(width: int, height: int, min_tiles: int = 1, max_tiles: int = 12, size: int = 448,
          thumbnail: bool = True) -> int:
    """Rule 4: tiles produced, thumbnail included."""
    cols, rows = grid(width, height, min_tiles, max_tiles, size)
    n = cols * rows
    return n + 1 if thumbnail and n > 1 else n


def reference_row(size: tuple[int, int]) -> tuple:
    """``(size, grid at max 6, tiles at max 6, grid at max 12, tiles at max 12)``, thumbnail on."""
    w, h = size
    return (size, grid(w, h, 1, 6), tiles(w, h, 1, 6), grid(w, h, 1, 12), tiles(w, h, 1, 12))


def check_documented_orders() -> list[str]:
    """Differences between :func:`candidates` and the orders internvl.md publishes (empty: none)."""
    problems = []
    if candidates(1, 6) != DOCUMENTED_ORDER_MAX6:
        problems.append(f"max 6 order {candidates(1, 6)} != documented {DOCUMENTED_ORDER_MAX6}")
    max12 = candidates(1, 12)
    if len(max12) != DOCUMENTED_MAX12_COUNT:
        problems.append(f"max 12 has {len(max12)} grids, documented {DOCUMENTED_MAX12_COUNT}")
    if max12[:8] != DOCUMENTED_MAX12_HEAD or max12[-5:] != DOCUMENTED_MAX12_TAIL:
        problems.append(f"max 12 order {max12} does not start/end as documented")
    return problems


def main() -> int:
    problems = check_documented_orders()
    for problem in problems:
        print("MISMATCH:", problem)
    print("REFERENCE = [")
    for row in map(reference_row, DOCUMENTED_SIZES):
        print(f"    {row!r},")
    print("]")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
