"""bench/bench_executorch.py takes the KV-cache length of README's decode figures, and its table says it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.deps import require

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_names_the_cache_length_and_the_command_that_measured_it(monkeypatch, capsys):
    require("executorch")
    spec = importlib.util.spec_from_file_location("bench_executorch", ROOT / "bench" / "bench_executorch.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seen = {}

    def run_model(name, threads, work, max_seq_len=bench.MAX_SEQ_LEN):
        seen[name] = max_seq_len
        row = {"encode_1_ms": 1.0, "encode_13_ms": 2.0, "decode_tps": 3.0}
        return {"pytorch": row, "fp32": {**row, "files_mb": 1.0}}

    monkeypatch.setattr(bench, "run_model", run_model)
    assert bench.main(["--models", "pocket-tiny", "--max-seq-len", "128"]) == 0
    out = capsys.readouterr().out
    assert seen == {"pocket-tiny": 128}
    assert "static KV cache of 128 positions" in out
    assert "`python bench/bench_executorch.py --models pocket-tiny --threads 1 --max-seq-len 128 --write`" in out
    default = bench.table({}, 1, (0.0, 0.0), "pocket-tiny")
    assert "of 1024 positions" in default and "--threads 1 --write`" in default
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--models pocket-tiny --threads 1 --max-seq-len 128`" in readme
