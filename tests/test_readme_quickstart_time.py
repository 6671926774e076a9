"""README's quick-start time quotes BENCHMARKS.md's bench_quickstart section, not an older run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _minutes(text: str, row: str) -> str:
    found = re.search(rf"^\| {re.escape(row)} \| \**([\d.]+)\**", text, re.M)
    assert found, f"BENCHMARKS.md's bench_quickstart table has no {row!r} row"
    return found.group(1)


def test_readme_quick_start_minutes_equal_the_benchmark_table():
    benchmarks = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    table = benchmarks.split("## Quick start from a fresh clone", 1)[1].split("<!-- bench_quickstart:end -->", 1)[0]
    setup = _minutes(table, "set-up from the lock (`make setup`)")
    run = _minutes(table, "`adapt quickstart`")
    total = _minutes(table, "**total** (goal < 10)")
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    quoted = re.search(r"the first command takes ([\d.]+) minutes .*?\(([\d.]+) \+ ([\d.]+);", readme)
    assert quoted, "README no longer quotes the quick start's time"
    assert quoted.groups() == (total, setup, run)
