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


def test_a_folder_given_as_the_recipe_names_the_recipe_in_it(tmp_path, capsys):
    assert main(["init", "quickstart", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "is a folder, not a recipe file" in err and str(tmp_path / "r" / "quickstart.yaml") in err
    assert "Errno" not in err
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty")]) == 1
    assert "is a folder, not a recipe file" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["output.dir=elsewhere", "output={dir: elsewhere, keep_last: 1}"])
def test_a_quickstart_refuses_an_output_dir_it_would_ignore(monkeypatch, tmp_path, capsys, override):
    import adapt.quickstart

    def started(*args):
        raise AssertionError("the quick start began writing")

    monkeypatch.setattr(adapt.quickstart.shutil, "copyfile", started)
    out = tmp_path / "q"
    assert main(["quickstart", "--out", str(out), "--no-progress", override]) == 1
    err = capsys.readouterr().err
    assert "output.dir cannot be set" in err and "--out" in err
    assert not out.exists() and not (tmp_path / "elsewhere").exists()


def test_other_output_overrides_are_left_to_the_quickstart():
    from adapt.quickstart import _refuse_output_dir

    _refuse_output_dir(["output.save_every=5", "output={keep_last: 1}", "training.max_steps=3"])


@pytest.mark.parametrize("data_only", [["--data-only"], []])
@pytest.mark.parametrize("under", ["", "sub"])
def test_a_quickstart_out_that_is_a_file_names_it(tmp_path, capsys, data_only, under):
    (tmp_path / "taken").write_text("mine\n")
    out = tmp_path / "taken" / under if under else tmp_path / "taken"
    assert main(["quickstart", "--out", str(out), "--no-progress", *data_only]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'taken'} is a file, not a folder" in err and "images" not in err and "raw" not in err
    assert (tmp_path / "taken").read_text() == "mine\n"


def test_a_non_utf8_locale_prints_what_it_cannot_show_as_escapes(tmp_path):
    import os
    import subprocess
    import sys

    main(["init", "quickstart", str(tmp_path)])
    recipe = tmp_path / "quickstart.yaml"
    recipe.write_text(recipe.read_text(encoding="utf-8").replace("data/landcover/train", "données/train"),
                      encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    proc = subprocess.run([sys.executable, "-m", "adapt", "validate", str(recipe)], cwd=tmp_path, env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"donn\\xe9es/train.jsonl" in proc.stdout and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("override, key", [
    ("training.max_steps=99999999999999999999999", "training.max_steps"),
    ("training.epochs=1.0e+30", "training.epochs"),
    ("training.grad_accum=99999999999999999999", "training.grad_accum"),
    ("training.batch_size=99999999999999999999", "training.batch_size"),
    ("mixing.epoch_size=99999999999999999999", "mixing.epoch_size"),
    ("training.num_workers=99999999999999999999", "training.num_workers"),
])
def test_a_count_no_run_could_reach_is_refused_by_validate(tmp_path, capsys, override, key):
    """Such a count validated, then ended adapt train in an OverflowError traceback (or a hang) in the data loader."""
    main(["init", "quickstart", str(tmp_path)])
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "quickstart.yaml"), override]) == 1
    err = capsys.readouterr().err
    assert f"{key}: must be less than or equal to" in err and "Traceback" not in err


def test_large_but_machine_sized_counts_still_validate(tmp_path):
    from adapt.recipe import load_recipe

    main(["init", "quickstart", str(tmp_path)])
    recipe = load_recipe(tmp_path / "quickstart.yaml", ["training.max_steps=1000000000", "training.grad_accum=1000",
                                                         "mixing.epoch_size=5000000", "training.epochs=1000"])
    assert recipe.training.max_steps == 10**9


def test_the_default_gguf_name_is_a_stem_that_name_would_take(tmp_path):
    """The default --name (the model folder's) kept non-ASCII letters and a leading '.', which --name itself refuses:
    `.x` gave the hidden files .x-f16.gguf."""
    import re

    from adapt.cli import _model_name

    for folder, stem in ((".hidden", "hidden"), ("модель", "model"), ("ct-модель v2", "ct--------v2"),
                         ("runs", "runs")):
        (tmp_path / folder).mkdir()
        assert _model_name(str(tmp_path / folder)) == stem
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem)
    (tmp_path / "my run" / "final").mkdir(parents=True)
    assert _model_name(str(tmp_path / "my run" / "final")) == "my-run"
