"""Reading what a converter wrote: the records of one JSONL output, or of all a report's outputs."""

from __future__ import annotations

import json
from pathlib import Path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_records(report) -> list[dict]:
    return [r for p in report.outputs.values() for r in records(p)]
