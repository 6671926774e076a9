"""A pytest plugin: every skip is listed at the end of the run, and under CI any skip fails the run.

`make test` installs everything the suite needs, so in CI a skip can only mean a broken install or a
test that stopped testing; either must turn the run red.
"""

from __future__ import annotations

import pytest

from tests.deps import in_ci

_SKIPS: list[tuple[str, str]] = []  # (test or file, reason)


def pytest_collectreport(report):
    if report.skipped:
        _SKIPS.append((report.nodeid or "collection", _skip_reason(report)))


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS.append((report.nodeid, _skip_reason(report)))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _SKIPS:
        terminalreporter.write_line("skip summary: nothing skipped")
        return
    terminalreporter.section(f"skip summary: {len(_SKIPS)} skipped")
    for where, reason in _SKIPS:
        terminalreporter.write_line(f"{where}: {reason}")
    if in_ci():
        terminalreporter.write_line("CI is set: a skipped test fails the run (make test installs everything the suite needs)",
                                    red=True)


def pytest_sessionfinish(session, exitstatus):
    if in_ci() and _SKIPS and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
