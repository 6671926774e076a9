"""Learning-rate schedules: linear warm-up, then cosine or linear decay to 0, or constant.

The factors are transformers' `get_scheduler("cosine" | "linear" | "constant_with_warmup")`'s, float for float
(`tests/test_schedule.py` compares every step), built here because `transformers.optimization` imports peft
through `transformers.trainer_utils` -- seconds at the start of every run, LoRA or not.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, *, schedule: str, warmup: int, total: int) -> float:
    """The multiplier of each base learning rate at optimizer step `step`."""
    if schedule not in SCHEDULES:  # checked first: a warm-up step returned its factor for any name
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if schedule == "constant":
        return float(step) / float(max(1.0, warmup)) if step < warmup else 1.0
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if schedule == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    progress = float(step - warmup) / float(max(1, total - warmup))  # cosine: half a period, as num_cycles=0.5
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress)))


def warmup_steps(warmup_ratio: float, total: int) -> int:
    """Warm-up steps for `warmup_ratio` of `total` steps, rounded up as transformers'
    `TrainingArguments.get_warmup_steps` rounds them (20 steps at 0.03: 1 step, not 0)."""
    return math.ceil(total * warmup_ratio)


def make_scheduler(optimizer: Optimizer, schedule: str, warmup: int, total: int) -> LambdaLR:
    """A `LambdaLR` over every parameter group of `optimizer` (what checkpoints save and resume)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    return LambdaLR(optimizer, partial(lr_factor, schedule=schedule, warmup=warmup, total=total))
