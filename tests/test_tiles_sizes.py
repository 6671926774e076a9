"""`adapt tiles SIZE`: sizes past any image a file can hold, and a missing image file, get messages that say so."""

from __future__ import annotations

from adapt.cli import main


def test_a_side_past_what_an_image_can_have_is_refused_not_planned_wrong(capsys):
    """10000000000000000000x9 (past int64) was planned as a 2x6 grid, a wide image cut as a tall one."""
    assert main(["tiles", "10000000000000000000x9"]) == 1
    assert "at most 2147483647 pixels" in capsys.readouterr().err
    assert main(["tiles", "2147483647x9"]) == 0
    assert "grid 12x1" in capsys.readouterr().out


def test_a_missing_image_file_is_named_as_missing(tmp_path, capsys):
    assert main(["tiles", str(tmp_path / "photo.jpg")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_the_pool_refusal_says_where_the_tokens_per_tile_came_from(capsys):
    assert main(["tiles", "448x448", "--pool", "3", "--model", "pocket-tiny"]) == 1
    assert "16 image tokens per tile (pocket-tiny's)" in capsys.readouterr().err
