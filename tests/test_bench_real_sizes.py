"""bench/bench_real_sizes.py's --previous: the earlier run's rows reach the table, or the run stops before measuring."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench.bench_real_sizes as rs  # noqa: E402

ROW_1B = {"preset": "internvl2-1b", "skipped": "kept from the first run"}
ROW_4B = {"preset": "mini-internvl-4b", "skipped": "this run"}


@pytest.fixture
def ran(monkeypatch):
    calls = []

    def run_all(args):
        calls.append(args.models)
        return [ROW_4B]

    monkeypatch.setattr(rs, "run_all", run_all)
    return calls


def test_previous_rows_in_the_work_folder_are_kept(tmp_path, ran, capsys):
    """`--previous WORK/rows.json` (the first run's file, where it was written) was overwritten by this run's rows
    before it was read: the first preset's rows vanished from the published table."""
    (tmp_path / "rows.json").write_text(json.dumps([ROW_1B]))
    assert rs.main(["--models", "mini-internvl-4b", "--work", str(tmp_path),
                    "--previous", str(tmp_path / "rows.json")]) == 0
    section = (tmp_path / "section.md").read_text()
    assert "kept from the first run" in section and "this run" in section
    assert json.loads((tmp_path / "rows.json").read_text()) == [ROW_4B]  # this run's own rows, for the next one


def test_a_missing_previous_file_stops_the_run_before_it_measures(tmp_path, ran, capsys):
    with pytest.raises(SystemExit):
        rs.main(["--models", "mini-internvl-4b", "--work", str(tmp_path), "--previous", str(tmp_path / "nope.json")])
    assert "nope.json" in capsys.readouterr().err
    assert ran == []


def test_published_command_is_shell_quoted(tmp_path, ran):
    """The section joined argv with spaces: a --work path with a space gave a command that does not run."""
    work = tmp_path / "my runs"
    work.mkdir()
    rs.main(["--models", "mini-internvl-4b", "--work", str(work)])
    text = (work / "section.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("- Command: "))
    import shlex

    assert shlex.split(line[len("- Command: `"):-1])[-1] == str(work)


def test_the_section_describes_the_images_and_threads_of_its_run(tmp_path, ran, monkeypatch):
    """The text said "one 448 px tile, 256 image tokens" and "two threads ... on this 2-core machine" whatever
    --image-size, --max-tiles and --threads the run had."""
    import model.limits

    monkeypatch.setattr(model.limits, "usable_cores", lambda: 8)
    rs.main(["--models", "mini-internvl-4b", "--work", str(tmp_path), "--image-size", "896", "--threads", "3"])
    text = " ".join((tmp_path / "section.md").read_text().split())
    assert "max_tiles 4: 5 448 px tiles (thumbnail included), 1280 image tokens, per image" in text
    assert "own 3 thread(s) make a load of about 3 on this 8-core machine" in text
    rs.main(["--models", "mini-internvl-4b", "--work", str(tmp_path)])
    assert "max_tiles 4: one 448 px tile, 256 image tokens, per image" in (tmp_path / "section.md").read_text()
