"""bench/bench_startup.py: a failing command is neither timed as a run nor given a made-up cause."""

from __future__ import annotations

import sys

import pytest

from bench import bench_startup as bench


def test_the_probe_keeps_the_verbs_exit_status(tmp_path):
    """The probe caught SystemExit to print its torch line, so every failing verb exited 0 and was timed."""
    argv = [sys.executable, "-c", bench.PROBE, "no-such-verb"]
    with pytest.raises(SystemExit, match="no-such-verb"):
        bench._run(argv, tmp_path / "out", bench.ROOT)
    seconds, torch_seen, failure = bench._run([sys.executable, "-c", bench.PROBE, "--help"], tmp_path / "o", bench.ROOT)
    assert failure is None and torch_seen is False and seconds > 0
    on = [sys.executable, "-c", bench.PROBE_COLLECTOR_ON, "no-such-verb"]
    with pytest.raises(SystemExit, match="no-such-verb"):
        bench._run(on, tmp_path / "out", bench.ROOT)


def test_a_failure_of_the_before_tree_says_what_it_was():
    """Any failure of the older tree was labelled "exit 1 (reached for the hub)"."""
    stderr = "Traceback (most recent call last):\n  ...\nImportError: cannot import name 'x'\n"
    assert bench._failure(1, stderr) == "exit 1: ImportError: cannot import name 'x'"
    assert bench._failure(2, "") == "exit 2"
    assert bench._failure(0, "warning") is None
    assert len(bench._failure(1, "E" * 500)) < 120


def test_the_model_verbs_of_the_goal_are_timed_each_into_a_fresh_folder(tmp_path):
    """Issue 16's goal names train, eval, chat and export on pocket-tiny; only train was timed. Each run that
    writes gets a folder of its own (a second export into the same folder would be refused)."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "a.png").touch()
    names = " ".join(bench._commands(tmp_path))
    assert all(f"`adapt {verb}" in names for verb in ("train", "eval", "chat", "export"))
    out = tmp_path / "o"
    assert bench._fresh_output(["py", "train", "r.yaml"], out) == ["py", "train", "r.yaml", f"output.dir=\"{out}\""]
    assert bench._fresh_output(["py", "eval", "r.yaml"], out) == ["py", "eval", "r.yaml", f"output.dir=\"{out}\""]
    assert bench._fresh_output(["py", "export", "-f", "hf"], out) == ["py", "export", "-f", "hf", "--out", str(out)]
    assert bench._fresh_output(["py", "presets"], out) == ["py", "presets"]
