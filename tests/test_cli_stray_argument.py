"""A stray argument is reported by the verb it was given to; a checkpoint given where --model is wanted is pointed there."""

from __future__ import annotations

import pytest

from adapt.cli import main


@pytest.mark.parametrize("argv", [["inspect", "runs/x/final"], ["export", "runs/x/final", "-f", "hf", "--out", "o"]])
def test_a_model_given_without_model_is_pointed_at_the_flag(argv, capsys):
    """It was `adapt: error: unrecognized arguments: runs/x/final`, from the top-level usage, with no hint."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"adapt {argv[0]}: error: unrecognized arguments: runs/x/final" in err
    assert "--model runs/x/final" in err and f"usage: adapt {argv[0]}" in err


def test_a_stray_flag_names_the_verb_without_a_model_hint(capsys):
    with pytest.raises(SystemExit):
        main(["validate", "r.yaml", "--no-plann"])
    err = capsys.readouterr().err
    assert "adapt validate: error: unrecognized arguments: --no-plann" in err and "--model" not in err


@pytest.mark.parametrize("flag", [["--set", "model.projector=mlp2x_gelu"], ["--set=model.projector=mlp2x_gelu"],
                                  ["-o", "model.projector=mlp2x_gelu"]])
def test_an_override_behind_a_flag_is_pointed_at_the_plain_form(flag, capsys):
    """`--set KEY=VALUE` (other tools' spelling) got only "unrecognized arguments"."""
    with pytest.raises(SystemExit):
        main(["validate", "r.yaml", *flag])
    err = capsys.readouterr().err
    assert "recipe overrides take no flag: give KEY=VALUE after the recipe, e.g. model.projector=mlp2x_gelu" in err
