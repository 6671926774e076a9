"""`adapt tiles`: a negative or malformed SIZE, and a --tile-size no InternVL tower takes, are refused in words."""

from __future__ import annotations

import pytest

from adapt.cli import main


@pytest.mark.parametrize("size,expected", [
    ("-5x10", "size '-5x10': width and height must be at least 1 pixel"),  # was: "arguments are required: size"
    ("-5x10 --model pocket-tiny", "size '-5x10': width and height must be at least 1 pixel"),
    ("0x10", "size '0x10': width and height must be at least 1 pixel"),
    ("10x-5", "size '10x-5': width and height must be at least 1 pixel"),
    ("10x", "size '10x' is neither WIDTHxHEIGHT"),
    ("axb", "size 'axb' is neither WIDTHxHEIGHT"),
    ("4294967296x10", "at most 2147483647 pixels"),
])
def test_a_bad_size_is_named_as_a_size(capsys, size, expected):
    assert main(["tiles", *size.split()]) == 1
    err = capsys.readouterr().err
    assert expected in err and "required" not in err


