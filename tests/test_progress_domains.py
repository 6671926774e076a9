"""Progress of the domains' converters and generators and of the CLI verbs that run them (model.progress)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from domains.base import ConvertReport, DomainError, DomainPlugin, get_domain, list_domains, option_names
from model.progress import LINES

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("driving", "general", "medical", "remote_sensing")


def test_every_registered_converter_and_generator_takes_progress():
    assert set(BUILTIN) <= set(list_domains())
    missing = []
    for name in list_domains():
        plugin = get_domain(name)
        callables = [(f"{name}/{ds}", fn, 2) for ds, fn in plugin.converters.items()]
        if plugin.synthetic is not None:
            callables.append((f"{name} generator", plugin.synthetic, 1))
        for label, fn, positional in callables:
            known, open_ended = option_names(fn, positional)
            if "progress" not in known and not open_ended:
                missing.append(label)
    assert missing == []


def test_a_converter_without_progress_is_refused_with_its_name(tmp_path):
    def silent(src: Path, out: Path) -> ConvertReport:
        return ConvertReport("toy")

    plugin = DomainPlugin(name="toy_silent", converters={"toy": silent}, synthetic=lambda out: {})
    with pytest.raises(DomainError, match=r"converter toy_silent/toy takes no 'progress' keyword"):
        plugin.convert("toy", tmp_path, tmp_path / "out")
    with pytest.raises(DomainError, match=r"the toy_silent generator takes no 'progress' keyword"):
        plugin.synthesize(tmp_path / "synth")


def test_convert_and_synthesize_pass_the_progress_setting_on(tmp_path):
    seen = []

    def convert(src: Path, out: Path, progress=True) -> ConvertReport:
        seen.append(progress)
        return ConvertReport("toy")

    def generate(out: Path, progress=True) -> dict:
        seen.append(progress)
        return {}

    plugin = DomainPlugin(name="toy_progress", converters={"toy": convert}, synthetic=generate)
    plugin.convert("toy", tmp_path, tmp_path / "out", show_progress=LINES)
    plugin.convert("toy", tmp_path, tmp_path / "out", show_progress=False)
    plugin.convert("toy", tmp_path, tmp_path / "out", show_progress=False, progress=True)  # the option wins
    plugin.synthesize(tmp_path / "synth", show_progress=LINES)
    assert seen == [LINES, False, True, LINES]


def test_remote_sensing_converter_prints_lines_over_its_images(tmp_path, capfd):
    rs = get_domain("remote_sensing")
    raw = rs.synthesize(tmp_path / "raw", kinds=["eurosat_ms"], n=3, show_progress=False)
    capfd.readouterr()
    report = rs.convert("eurosat_ms", raw["eurosat_ms"], tmp_path / "out", show_progress=LINES)
    err = capfd.readouterr().err
    assert report.written > 0
    assert f"eurosat_ms: {report.written}/{report.written} image (100%)" in err
    assert "\r" not in err


def _run_piped(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "adapt", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)


def test_synthesize_into_a_log_prints_progress_lines(tmp_path):
    run = _run_piped("synthesize", "general", "--out", str(tmp_path / "out"), "--option", "n_train=20",
                     "--option", "n_test=10", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "synthetic general: 30/30 image (100%)" in run.stderr
    assert "synthetic general: 3/30 image (10%)" in run.stderr
    assert "\r" not in run.stderr


def test_synthesize_no_progress_into_a_log_prints_none(tmp_path):
    run = _run_piped("synthesize", "general", "--out", str(tmp_path / "out"), "--option", "n_train=20",
                     "--option", "n_test=10", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "synthetic general" not in run.stderr
