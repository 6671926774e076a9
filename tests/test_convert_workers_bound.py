"""adapt convert --workers / --option workers: a count above the machine's cores is refused before any process is
spawned (each imports the readers: a mistyped count exhausted memory), and giving both is refused."""

import os
from pathlib import Path

import pytest

from adapt.cli import main


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


@pytest.mark.parametrize("argv", [["--workers", "3"], ["--option", "workers=3"], ["--workers", "99999999999999999999"],
                                  # not read as YAML integers, these passed the check and spawned 1000 / 64 processes
                                  ["--option", "workers=1e3"], ["--option", "workers=64.0"], ["--option", "workers='3'"]])
def test_more_workers_than_cores_is_refused_before_anything(tmp_path: Path, capsys, two_cores, argv):
    (tmp_path / "src").mkdir()
    out = tmp_path / "out"
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(tmp_path / "src"), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 1 and "machine's 2 CPU core(s)" in err and "give at most 2" in err and "Traceback" not in err
    assert not out.exists()


def test_workers_given_twice_is_refused(tmp_path: Path, capsys):
    (tmp_path / "src").mkdir()
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
               "--workers", "1", "--option", "workers=2"])
    assert rc == 1 and "both given; give one" in capsys.readouterr().err
