"""`adapt eval` on the quick-start recipe writes its report into OUT/train/eval (the recipe's <output.dir>/eval);
a later `adapt quickstart` or `adapt train` on that folder must not take that report for files of the user's."""

from __future__ import annotations

import shutil

import pytest

import adapt.quickstart as qs
from adapt.checkpointing import LOCK_NAME, check_run_folder
from adapt.cli import main
from domains.general.world import generate_general, generate_landcover
from model.resources import templates_dir

TEMPLATE = templates_dir() / "recipes" / "quickstart.yaml"


def _quickstart_folder_after_eval(tmp_path, capsys):
    """OUT as `adapt quickstart --data-only` + `adapt init quickstart` + `adapt eval` leave it (few records)."""
    out = tmp_path / "qs"
    generate_general(out / "data" / "general", n_train=2, n_test=2, answer_style="label", progress=False)
    generate_landcover(out / "data" / "landcover", n_train=2, n_test=2, answer_style="label", progress=False)
    qs._stamp_data(out, "landcover")
    shutil.copyfile(TEMPLATE, out / "quickstart.yaml")
    assert main(["eval", str(out / "quickstart.yaml"), "--no-progress", "eval.max_new_tokens=2"]) == 0
    capsys.readouterr()
    assert (out / "train" / "eval" / "eval.md").is_file()
    return out


def test_train_and_quickstart_go_ahead_after_eval_wrote_its_report(tmp_path, capsys, monkeypatch):
    """Both refused: "train holds files no `adapt train` run wrote (eval/)" and a quick start asked for --force."""
    out = _quickstart_folder_after_eval(tmp_path, capsys)
    run_dir = out / "train"
    check_run_folder(run_dir)  # adapt train scoring after a base-only eval
    qs._refuse_to_lose(out / "quickstart.yaml", TEMPLATE, run_dir)
    (run_dir / LOCK_NAME).touch()  # as after a run: final/ and the eval report of it
    (run_dir / "final").mkdir()
    (run_dir / "eval" / "gguf" / "adapted-f16").mkdir(parents=True)  # `adapt eval --runtime llamacpp`'s export
    qs._refuse_to_lose(out / "quickstart.yaml", TEMPLATE, run_dir)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setitem(qs.FIELDS, "landcover", ("quickstart", lambda data, progress=True: None))
    monkeypatch.setattr(qs, "evaluate_model", stop)
    with pytest.raises(Stop):
        qs.quickstart(out, progress=False)
    assert not (run_dir / "eval").exists()  # starting over: the scores of the model it replaces go with it
    assert "eval" in capsys.readouterr().out


def test_a_file_of_the_users_in_the_eval_folder_is_still_refused_by_name(tmp_path):
    run_dir = tmp_path / "train"
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "eval" / "eval.md").write_text("| metric |\n")
    (run_dir / "eval" / "my_notes.txt").write_text("precious")
    with pytest.raises(qs.QuickstartError) as err:
        qs._refuse_to_lose(tmp_path / "quickstart.yaml", TEMPLATE, run_dir)
    message = str(err.value)
    assert "eval/my_notes.txt" in message and "--force" in message and "eval.md" not in message
    (run_dir / LOCK_NAME).touch()
    with pytest.raises(qs.QuickstartError, match="eval/my_notes.txt"):
        qs._refuse_to_lose(tmp_path / "quickstart.yaml", TEMPLATE, run_dir)
    assert (run_dir / "eval" / "my_notes.txt").read_text() == "precious"
