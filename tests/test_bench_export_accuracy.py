"""bench/export_accuracy.py: a quick check's overrides reach the run it makes; --from-results without results."""

from __future__ import annotations

import pytest

from bench import export_accuracy as ea
from bench.reproduce import FIELDS


def test_overrides_reach_the_quickstart_that_makes_the_run(tmp_path, monkeypatch):
    import adapt.quickstart

    calls = []

    def quickstart(run, overrides, progress, field):
        calls.append(list(overrides))
        final = run / "train" / "final"
        final.mkdir(parents=True)
        (run / "quickstart.yaml").write_text("")
        (run / "report").mkdir()
        (run / "report" / "predictions_adapted.jsonl").write_text("")

    monkeypatch.setattr(adapt.quickstart, "quickstart", quickstart)
    run = tmp_path / "run"
    assert ea.ensure_run(run, False, ["eval.max_samples=4"]) == run / "train" / "final"
    variant = FIELDS["landcover"].variants[0]
    assert calls == [[*variant.overrides, "eval.max_samples=4"]]
    assert ea.ensure_run(run, False, ["eval.max_samples=2"]) == run / "train" / "final"  # another quick check
    with pytest.raises(SystemExit, match="made for a quick check with overrides"):
        ea.ensure_run(run, False)  # a full measurement does not take the quick check's model
    assert len(calls) == 1


def test_from_results_without_results_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        ea.main(["--from-results", "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "results.json does not exist" in err and "Traceback" not in err
