"""A converter option typed as a Python function (label_fn) given on the command line is refused in one line
naming it, not called (a TypeError traceback after the run began)."""

from pathlib import Path

import pytest

from adapt.cli import main
from domains.base import DomainError, check_options
from domains.remote_sensing.convert import convert_classification


@pytest.mark.parametrize("value", ["x", "null", "[a]"])
def test_a_text_for_a_function_option_is_refused(tmp_path: Path, capsys, value):
    (tmp_path / "src" / "forest").mkdir(parents=True)
    out = tmp_path / "out"
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(tmp_path / "src"), "--out", str(out),
               "--option", f"label_fn={value}"])
    err = capsys.readouterr().err
    assert rc == 1 and "option label_fn=" in err and "is not a Python function" in err and "Traceback" not in err
    assert not out.exists()


def test_a_function_is_still_taken_from_python():
    check_options(convert_classification, {"label_fn": str.upper}, "x", positional=2)
    with pytest.raises(DomainError, match="not a Python function"):
        check_options(convert_classification, {"label_fn": "upper"}, "x", positional=2)


def test_a_path_option_takes_a_python_path_and_a_text_option_does_not():
    """`held_out: str | Path | Sequence[...]` refused the Path a Python caller passes (the driving quick start did)."""
    from domains.driving.nuscenes import convert_nuscenes

    check_options(convert_nuscenes, {"held_out": Path("val.jsonl")}, "x", positional=2)
    check_options(convert_nuscenes, {"held_out": "val.jsonl"}, "x", positional=2)
    with pytest.raises(DomainError, match="option dataset=PosixPath"):
        check_options(convert_nuscenes, {"dataset": Path("name")}, "x", positional=2)
