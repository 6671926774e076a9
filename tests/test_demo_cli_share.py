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
