"""bench/bench_drivelm_convert.py (issue 15 item 12): the published section names its command, and a tiny run
checks in the same run that every PNG level decodes to the lossless pixels while JPEG reports its difference."""

from __future__ import annotations

import re
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
