"""Command-line inputs real users give: `~` the shell did not expand, a folder or file in the wrong place, overrides a
verb cannot honour, a terminal that cannot show every character."""

from __future__ import annotations

import pytest

from adapt.cli import build_parser, main


@pytest.mark.parametrize("argv, dest", [
    (["quickstart", "--out=~/q"], "out"),
    (["synthesize", "general", "--out=~/s"], "out"),
    (["validate", "~/r.yaml"], "recipe"),
    (["convert", "general", "x", "--src=~/raw", "--out=~/c"], "src"),
])
def test_a_tilde_the_shell_left_alone_means_the_home_folder(monkeypatch, tmp_path, argv, dest):
    monkeypatch.setenv("HOME", str(tmp_path))
    value = getattr(build_parser().parse_args(argv), dest)
    assert value.parent == tmp_path and "~" not in str(value)


def test_init_into_a_quoted_tilde_folder_writes_under_home(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["init", "quickstart", "~/recipes"]) == 0
    assert (tmp_path / "home" / "recipes" / "quickstart.yaml").is_file()
    assert not (tmp_path / "~").exists()
