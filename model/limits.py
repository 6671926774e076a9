"""Bounds on what one image may cost, shared by tiling and by recipe validation (which must not import torch)."""

from __future__ import annotations

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
