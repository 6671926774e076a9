"""bench/bench_token_budget_time.py: warm-up steps are not timed, and speed-ups are against the same run's baseline."""

from __future__ import annotations

import json

import pytest

from bench import bench_token_budget_time as bench


def test_only_steps_after_the_warm_up_are_timed(tmp_path):
    log = tmp_path / "train_log.jsonl"
    entries = [{"step": 1, "step_time": 9.0}, {"step": 2, "step_time": 8.0}, {"step": 3, "step_time": 1.5},
               {"step": 4, "loss": 2.0}, {"step": 4, "step_time": 1.0}]
    log.write_text("\n".join(json.dumps(e) for e in entries) + "\n\n", encoding="utf-8")
    assert bench.step_times(log, warmup=2) == [1.5, 1.0]
    with pytest.raises(ValueError, match="no optimizer step after the 4 warm-up steps"):
        bench.step_times(log, warmup=4)


def test_speed_ups_are_the_baselines_time_over_the_rows():
    shape = {"tiles": 13, "tokens": 208, "tokens_per_tile": 16, "mini_internvl_tokens": 3328}
    rounds = {
        "baseline": [{"steps": [2.0, 2.2], "prefill_ms": 100.0, "answer_ms": 300.0, **shape},
                     {"steps": [2.1, 9.9], "prefill_ms": 120.0, "answer_ms": 320.0, **shape}],
        "tiles2": [{"steps": [1.0, 1.1], "prefill_ms": 50.0, "answer_ms": 200.0, **shape},
                   {"steps": [1.0, 1.0], "prefill_ms": 60.0, "answer_ms": 240.0, **shape}],
    }
    medians = bench.summarise(rounds)
    assert medians["baseline"]["step_s"] == pytest.approx(2.15)  # every timed step of every round
    assert medians["baseline"]["step_s_speedup"] == pytest.approx(1.0)
    assert medians["tiles2"]["step_s_speedup"] == pytest.approx(2.15 / 1.0)
    assert medians["tiles2"]["prefill_ms_speedup"] == pytest.approx(110.0 / 55.0)
    assert medians["tiles2"]["answer_ms_speedup"] == pytest.approx(310.0 / 220.0)
    assert bench.summarise({"tiles2": rounds["tiles2"]})["tiles2"]["step_s_speedup"] is None
