"""Bounds on what one image may cost, shared by tiling and by recipe validation, and the sampling settings' bounds
and checks, shared by generation and the command lines' argument types: none of them may import torch."""

from __future__ import annotations

import math
import os

# InternVL models use at most 12 tiles (40 is generous); more only costs memory and time.
MAX_TILES_LIMIT = 40
# Decoded pixels per image: a 48 MP phone photo fits, a 13000x13000 scan (169 MP, ~800 MB to decode) does not.
DEFAULT_MAX_PIXELS = 50_000_000
# Images in one question (chat, the demo, the TensorRT bundle's profiles): more would not fit a small model's context.
MAX_IMAGES = 16
# Sampling temperatures below this are greedy: logits divided by less overflow float32 (1e-45: inf, nan in softmax).
MIN_TEMPERATURE = 1e-3
# Sampling seeds: llama.cpp's helper reads the seed as uint32, so a larger one would wrap onto a smaller one's draw.
MAX_SEED = 2**32 - 1


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity where the OS tells it (a container's or taskset's cpuset,
    which os.cpu_count ignores), else the machine's; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_temperature(value: float) -> float:
    """`value` as a sampling temperature (0 = greedy), else ValueError saying what it must be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0 (0 = greedy), got {_shown(value)}")
    if 0 < value < MIN_TEMPERATURE:  # logits divided by it overflow
        raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {_shown(value)}")
    return float(value)


def check_top_p(value: float) -> float:
    """`value` as nucleus sampling's top-p, in (0, 1] (1 = the whole softmax), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:  # nan fails too
        raise ValueError(f"must be above 0 and at most 1 (1 = the whole softmax), got {_shown(value)}")
    return float(value)


def check_seed(value: int) -> int:
    """`value` as a sampling seed every runtime reads alike (0 to :data:`MAX_SEED`), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"must be 0 to {MAX_SEED}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
