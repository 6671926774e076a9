"""`adapt demo --share`: refused in words, never a public link."""

from __future__ import annotations

import pytest


def test_share_is_refused_saying_why_and_what_to_do(capsys):
    from deploy.demo.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--share"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--share: the demo makes no public share links" in err and "--host 0.0.0.0" in err
    assert "unrecognized arguments" not in err


@pytest.mark.parametrize(("raised", "code", "said"), [
    (PermissionError(13, "Permission denied", "/models/m/model.safetensors"), 1,
     "adapt demo: error: /models/m/model.safetensors: permission denied; make it writable (readable for inputs)"),
    (ModuleNotFoundError("No module named 'pydicom'", name="pydicom"), 1,
     "adapt demo: error: this needs the pydicom package, which is not installed"),
    (KeyboardInterrupt(), 130, "adapt demo: interrupted"),
])
def test_python_m_deploy_demo_says_failures_as_adapt_demo_does(raised, code, said, monkeypatch, capsys):
    """`python -m deploy.demo` caught only ValueError / FileNotFoundError: an unreadable model file, a missing extra
    or Ctrl+C during the load ended in a traceback, where `adapt demo` says one line."""
    from deploy.demo import app, cli

    def build_demo(*args, **kwargs):
        raise raised

    monkeypatch.setattr(app, "build_demo", build_demo)
    monkeypatch.setattr(cli, "check_address", lambda host, port: None)
    assert cli.main(["--model", "pocket-tiny"]) == code
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
