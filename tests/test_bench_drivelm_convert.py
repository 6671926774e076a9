"""bench/bench_drivelm_convert.py (issue 15 item 12): the published section names its command, and a tiny run
checks in the same run that every PNG level decodes to the lossless pixels while JPEG reports its difference."""

from __future__ import annotations

import re
import time
from pathlib import Path

from bench import bench_drivelm_convert as bench
from bench.sections import read_section

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_section_is_generated_and_names_its_command():
    body = read_section(ROOT / "BENCHMARKS.md", bench.SECTION)
    assert "python bench/bench_drivelm_convert.py --write" in body
    rows = [line for line in body.splitlines() if line.startswith("| `") and "s / frame" not in line]
    assert len(rows) == len(bench.VARIANTS)
    assert sum("identical (checked)" in r for r in rows) == 3 and sum("PSNR" in r for r in rows) == 2
    default = next(r for r in rows if "**default**" in r)
    assert float(re.findall(r"\*\*([\d.]+)x\*\*", default)[0]) > 1  # the default is faster than level 6


def test_a_tiny_run_checks_the_png_pixels_and_measures_jpeg():
    command = "python bench/bench_drivelm_convert.py --scenes 1 --frames 1 --repeats 1 --grain 0.0 --write"
    section = bench.run(scenes=1, frames=1, repeats=1, grain=0.0, command=command)
    rows = [line for line in section.splitlines() if line.startswith("| `") and "s / frame" not in line]
    assert len(rows) == len(bench.VARIANTS) and f"- Command: `{command}`" in section
    for row in rows:
        assert ("identical (checked)" in row) == row.startswith("| `png_level")


def test_first_use_costs_are_paid_by_an_untimed_run(monkeypatch):
    """A converter's first call in the process (imports, an encoder's first use) is not timed: it would inflate
    the speed-up of every option against the reference, which runs first."""
    real, calls = bench.convert_drivelm, []

    def slow_first(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            time.sleep(3.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "convert_drivelm", slow_first)
    section = bench.run(scenes=1, frames=1, repeats=1, grain=0.0, command="x")
    reference = next(line for line in section.splitlines() if line.startswith("| `png_level=6`"))
    assert float(reference.split("|")[2]) < 3.0, reference
    assert len(calls) == 2 * len(bench.VARIANTS)
