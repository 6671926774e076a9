"""The remote-sensing converters' resize option: a longer side whose square output exceeds the image reader's
pixel limit is refused before any image is enlarged (a mistyped 100000 allocated tens of GB)."""

from pathlib import Path

import pytest

from adapt.cli import main
from domains.base import DomainError
from domains.remote_sensing.convert import _resize_option
from model.limits import DEFAULT_MAX_PIXELS


def test_the_largest_square_within_the_limit_is_taken():
    side = int(DEFAULT_MAX_PIXELS ** 0.5)
    assert _resize_option(side) == side and _resize_option(224) == 224
    with pytest.raises(DomainError, match=f"resize must be at most {side} pixels"):
        _resize_option(side + 1)


def test_a_huge_resize_is_one_line_before_anything(tmp_path: Path, capsys):
    (tmp_path / "src" / "forest").mkdir(parents=True)
    out = tmp_path / "out"
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(tmp_path / "src"), "--out", str(out),
               "--option", "resize=100000"])
    err = capsys.readouterr().err
    assert rc == 1 and "resize must be at most" in err and "Traceback" not in err
    assert not out.exists()
