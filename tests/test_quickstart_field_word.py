"""`adapt quickstart medical`: a field given without --field was taken for a recipe override ("expected
dotted.key=value"; with --data-only "recipe overrides apply to a full quick start"); it is now named as a field."""

from __future__ import annotations

import pytest

from adapt.cli import main


@pytest.mark.parametrize("extra", [["--data-only"], []])
def test_a_field_given_as_a_word_is_told_to_use_field(tmp_path, capsys, extra):
    assert main(["quickstart", "medical", "--out", str(tmp_path / "q"), "--no-progress", *extra]) == 1
    assert "'medical' is a field, not a recipe override (KEY=VALUE): give it with --field medical" in \
        capsys.readouterr().err
    assert not (tmp_path / "q").exists()
