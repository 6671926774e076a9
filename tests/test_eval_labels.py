"""`adapt eval --model LABEL=SOURCE`: the label names files and folders under --out, so it must stay there."""

import pytest

from adapt.cli import main


@pytest.mark.parametrize("item", ["../../escaped=pocket-tiny", "a/b=pocket-tiny", "a\\b=pocket-tiny", "..=pocket-tiny",
                                  "..", "new\nline=pocket-tiny"])
def test_a_label_that_would_leave_out_is_refused_before_loading(item, tmp_path, capsys):
    main(["init", "quickstart", str(tmp_path)])
    capsys.readouterr()
    rc = main(["eval", str(tmp_path / "quickstart.yaml"), "--model", item, "--out", str(tmp_path / "out"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "a label names files under --out" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.parent.parent.glob("escaped*"))
