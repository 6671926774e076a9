"""adapt.schedule gives transformers' get_scheduler factors float for float (runs keep their learning rates)."""

from __future__ import annotations

import pytest
import torch
from transformers import get_scheduler

from adapt.schedule import lr_factor, make_scheduler, warmup_steps

HF_NAME = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@pytest.mark.parametrize("schedule", sorted(HF_NAME))
@pytest.mark.parametrize("warmup, total", [(0, 1), (0, 7), (3, 40), (10, 10), (1, 333)])
def test_factors_equal_transformers(schedule: str, warmup: int, total: int) -> None:
    hf = get_scheduler(HF_NAME[schedule], torch.optim.SGD([torch.zeros(1)], lr=1.0), num_warmup_steps=warmup,
                       num_training_steps=total).lr_lambdas[0]
    for step in range(total + 3):
        assert lr_factor(step, schedule=schedule, warmup=warmup, total=total) == hf(step), step


def test_scheduler_steps_and_resumes_like_transformers() -> None:
    def run(make, steps: int = 12, state=None):
        opt = torch.optim.AdamW([{"params": [torch.zeros(1)], "lr": 1e-3}, {"params": [torch.zeros(1)], "lr": 5e-4}])
        sched = make(opt)
        if state is not None:
            sched.load_state_dict(state)
        lrs = []
        for _ in range(steps):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr())
        return lrs, sched.state_dict()

    ours, state = run(lambda o: make_scheduler(o, "cosine", 3, 20), steps=8)
    theirs, _ = run(lambda o: get_scheduler("cosine", o, num_warmup_steps=3, num_training_steps=20), steps=8)
    assert ours == theirs
    resumed, _ = run(lambda o: make_scheduler(o, "cosine", 3, 20), steps=4, state=state)
    whole, _ = run(lambda o: make_scheduler(o, "cosine", 3, 20), steps=12)
    assert resumed == whole[8:]
    with pytest.raises(ValueError, match="unknown schedule"):
        make_scheduler(torch.optim.SGD([torch.zeros(1)], lr=1.0), "polynomial", 0, 1)


def test_warmup_steps_are_rounded_up_as_transformers_rounds_them(tmp_path) -> None:
    # int() truncated them: 20 steps at 0.03 warmed up for 0 steps (transformers: 1), 179 for 5 (transformers: 6)
    from transformers import TrainingArguments

    for ratio in (0.0, 0.03, 0.05, 0.1, 0.5):
        args = TrainingArguments(output_dir=str(tmp_path), warmup_steps=ratio, report_to=[])
        for total in (1, 10, 20, 57, 100, 179, 1000):
            assert warmup_steps(ratio, total) == args.get_warmup_steps(total), (ratio, total)
    assert (warmup_steps(0.03, 20), warmup_steps(0.03, 179)) == (1, 6)


def test_an_unknown_schedule_is_refused_during_warmup_too() -> None:
    # a warm-up step returned step / warmup for any name: lr_factor(0, schedule="cosin", ...) was 0.0, not an error
    for step in (0, 2, 5, 9):
        with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
            lr_factor(step, schedule="cosin", warmup=5, total=10)
