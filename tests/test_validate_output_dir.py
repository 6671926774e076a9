"""`adapt validate` says when adapt train would refuse the recipe's output.dir (a file, a folder of other files)."""

from __future__ import annotations

from adapt.cli import main


def test_validate_notes_an_output_dir_train_would_refuse(tmp_path, capsys):
    """It printed "valid recipe" for output.dir=<a file>, which adapt train then refused."""
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    recipe = str(tmp_path / "quickstart.yaml")
    capsys.readouterr()
    assert main(["validate", recipe, "--no-plan", f"output.dir={recipe}"]) == 0
    assert "adapt train would stop: output.dir" in capsys.readouterr().err
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    assert main(["validate", recipe, "--no-plan", f"output.dir={tmp_path / 'elsewhere'}"]) == 0
    err = capsys.readouterr().err
    assert "adapt train would stop" in err and "notes.txt" in err
    assert main(["validate", recipe, "--no-plan"]) == 0  # train/ missing: fine
    assert "would stop" not in capsys.readouterr().err
