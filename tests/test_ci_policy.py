"""Under CI a missing optional dependency or any skipped test fails the run; elsewhere skips are listed."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NEEDS_MISSING = """
from tests.deps import require
require("pocket_adapt_no_such_module", "part of no extra")

def test_never_runs():
    pass
"""
SKIPS = """
import pytest

def test_skips():
    pytest.skip("no data here")
"""
PASSES = """
def test_ok():
    pass
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, **files: str):
    pytester.makepyfile(**files)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the suite's own `tests.deps` and `tests.skip_policy`
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-p", "tests.skip_policy", "-p", "no:cacheprovider")


def test_missing_dependency_skips_outside_ci_and_is_listed(pytester, monkeypatch):
    result = run(pytester, monkeypatch, None, test_needs_missing=NEEDS_MISSING, test_passes=PASSES)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skip summary: 1 skipped*", "*pocket_adapt_no_such_module*part of no extra*"])


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_dependency_fails_under_ci(pytester, monkeypatch, ci):
    result = run(pytester, monkeypatch, ci, test_needs_missing=NEEDS_MISSING, test_passes=PASSES)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*pocket_adapt_no_such_module*CI is set, so a missing dependency is an error*"])


def test_a_skipped_test_fails_the_run_under_ci(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "true", test_skips=SKIPS, test_passes=PASSES)
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skip summary: 1 skipped*", "*no data here*", "*CI is set: a skipped test fails the run*"])


def test_nothing_skipped_is_said_and_passes_under_ci(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "true", test_passes=PASSES)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skip summary: nothing skipped*"])


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("false", False), ("no", False),
                                                  ("true", True), ("1", True), ("yes", True)])
def test_ci_values(monkeypatch, value, expected):
    from tests.deps import in_ci

    monkeypatch.setenv("CI", value)
    assert in_ci() is expected
