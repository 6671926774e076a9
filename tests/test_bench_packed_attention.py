"""README's per-span attention figure names a command that runs and reproduces its comparison."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_names_the_command_behind_the_packed_attention_figure(capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(i for i, text in enumerate(readme.splitlines()) if "~3.4x cheaper" in text)
    assert "python bench/bench_packed_attention.py" in "\n".join(readme.splitlines()[line:line + 2])
    spec = importlib.util.spec_from_file_location("bench_packed_attention",
                                                  ROOT / "bench" / "bench_packed_attention.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--samples", "3", "--length", "8", "--heads", "2", "--head-dim", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 samples x 8 tokens" in out and "per span" in out and out.rstrip().endswith("x")


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_packed_attention",
                                                  ROOT / "bench" / "bench_packed_attention.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_two_paths_are_timed_in_turn(monkeypatch, capsys):
    """Every masked run came first, then every per-span run: a change in machine load between the two halves went
    into the ratio."""
    bench = _load_bench()
    calls: list[str] = []
    for name, tag in (("sdpa_attention_forward", "masked"), ("packed_sdpa_attention", "span")):
        inner = getattr(bench, name)
        monkeypatch.setattr(bench, name, lambda *a, _inner=inner, _tag=tag, **k: calls.append(_tag) or _inner(*a, **k))
    assert bench.main(["--samples", "2", "--length", "4", "--heads", "1", "--head-dim", "2", "--repeats", "3"]) == 0
    # the output check, one warm-up each, then the timed runs taking turns
    assert calls == ["masked", "span"] * 5


def test_a_count_below_one_is_a_usage_error(capsys):
    """`--repeats 0` ended in a StatisticsError traceback (median of no runs) after the set-up."""
    with pytest.raises(SystemExit) as stop:
        _load_bench().main(["--repeats", "0"])
    assert stop.value.code == 2 and "--repeats: must be at least 1" in capsys.readouterr().err
