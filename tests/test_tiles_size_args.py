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


@pytest.mark.parametrize("tile", ["1", "13", "14", "100", "7084", "100000000"])
def test_a_tile_size_no_internvl_tower_takes_is_refused_naming_the_bound(capsys, tile):
    """--tile-size 1 planned 2304 image tokens of 1 px tiles."""
    assert main(["tiles", "1600x900", "--tile-size", tile]) == 1
    assert f"--tile-size {tile}: InternVL2's tiles are a multiple of 28 px" in capsys.readouterr().err


def test_a_tile_size_sets_the_tokens_per_tile_it_gives(capsys):
    """896 px tiles were counted at 448 px tiles' 256 tokens; InternViT gives (896/28)^2 = 1024."""
    assert main(["tiles", "1600x900", "--tile-size", "896"]) == 0
    assert "3 tiles incl. thumbnail, 3072 image tokens (896 px tiles)" in capsys.readouterr().out
    assert main(["tiles", "1600x900", "--tile-size", "896", "--tokens-per-tile", "16"]) == 0
    assert "48 image tokens" in capsys.readouterr().out


def test_a_models_tile_size_is_its_towers_as_in_recipes(capsys):
    assert main(["tiles", "1600x900", "--model", "pocket-tiny", "--tile-size", "224"]) == 1
    assert "--tile-size 224 differs from pocket-tiny's image size 112" in capsys.readouterr().err
    assert main(["tiles", "1600x900", "--model", "pocket-tiny", "--tile-size", "112"]) == 0


@pytest.mark.parametrize("count", ["257", "100000", str(10**18)])
def test_an_image_count_past_any_context_is_refused_naming_the_bound(capsys, count):
    """--images 100000 (a shell glob's count) planned 100000 one-tile images without a word."""
    with pytest.raises(SystemExit) as stop:
        main(["tiles", "1600x900", "--images", count])
    assert stop.value.code == 2
    assert "--images: must be at most 256 " in capsys.readouterr().err


def test_an_image_count_within_the_bound_is_planned(capsys):
    assert main(["tiles", "448x448", "--images", "256"]) == 0
    assert "256 images: 256 tiles, 65536 image tokens" in capsys.readouterr().out
