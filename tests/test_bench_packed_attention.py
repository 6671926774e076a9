"""README's per-span attention figure names a command that runs and reproduces its comparison."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_names_the_command_behind_the_packed_attention_figure(capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(i for i, text in enumerate(readme.splitlines()) if "~3.4x cheaper" in text)
    assert "python bench/bench_packed_attention.py" in "\n".join(readme.splitlines()[line:line + 2])
    spec = importlib.util.spec_from_file_location("bench_packed_attention", ROOT / "bench" / "bench_packed_attention.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--samples", "3", "--length", "8", "--heads", "2", "--head-dim", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 samples x 8 tokens" in out and "per span" in out and out.rstrip().endswith("x")
