"""A run's `final/` left moved aside (`.final.replaced`) by a run stopped between the two renames that replace it:
the commands that read it say what happened and how to restore it, rather than that it does not exist."""

from __future__ import annotations

import pytest

from adapt.cli import main
from tests.test_eval_sources_checked_first import write_eval_files


@pytest.fixture
def half_replaced(tmp_path):
    run = tmp_path / "run"
    (run / ".final.replaced").mkdir(parents=True)
    (run / ".final.replaced" / "config.json").write_text("{}")
    return run


@pytest.mark.parametrize("argv", [
    ["inspect", "--model", "{final}"],
    ["export", "--model", "{final}", "--format", "pocket", "--out", "{out}"],
    ["chat", "--model", "pocket-tiny", "--vision", "{final}"],
    ["chat", "--runtime", "onnx", "--model", "{final}"],  # the export runtimes said only "not a folder"
    ["chat", "--runtime", "executorch", "--model", "{final}"],
    ["chat", "--runtime", "llamacpp", "--model", "{final}"],
])
def test_a_half_replaced_final_says_how_to_restore_it(half_replaced, tmp_path, capsys, argv):
    final = half_replaced / "final"
    rc = main([a.format(final=final, out=tmp_path / "out") for a in argv])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{final}: missing: a run stopped while replacing it" in err
    assert str(half_replaced / ".final.replaced") in err and "adapt train" in err and "mv " in err
    assert not final.exists() and (half_replaced / ".final.replaced").is_dir()  # said, not undone: a run may be live


def test_eval_names_the_half_replaced_model_before_scoring(half_replaced, tmp_path, capsys):
    assert main(["init", "quickstart", str(tmp_path / "r")]) == 0
    write_eval_files(tmp_path / "r" / "quickstart.yaml")  # checked first
    capsys.readouterr()
    rc = main(["eval", str(tmp_path / "r" / "quickstart.yaml"), "--model", f"adapted={half_replaced / 'final'}",
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and ".final.replaced" in err and "adapt train" in err


def test_a_missing_folder_with_nothing_moved_aside_keeps_the_plain_message(tmp_path, capsys):
    assert main(["inspect", "--model", str(tmp_path / "run" / "final")]) == 1
    assert "not a checkpoint directory nor a preset" in capsys.readouterr().err


def test_a_half_replaced_tower_is_named_by_the_config_only_check(half_replaced):
    """`adapt validate` of a distillation reads a tower's config alone (`vision_config_feature`)."""
    from model.checkpoints.io import CheckpointError
    from model.checkpoints.tower import vision_config_feature

    with pytest.raises(CheckpointError, match="missing: a run stopped while replacing it"):
        vision_config_feature(half_replaced / "final")


def test_eval_without_models_refuses_a_half_replaced_final_rather_than_score_the_base_alone(tmp_path, monkeypatch,
                                                                                            capsys):
    """It said "no adapted model ...; train first" and scored the base model alone, the trained one beside it."""
    import adapt.run_eval as run_eval

    assert main(["init", "quickstart", str(tmp_path / "r")]) == 0
    write_eval_files(tmp_path / "r" / "quickstart.yaml")  # checked first
    (tmp_path / "r" / "train" / ".final.replaced").mkdir(parents=True)
    scored = []
    monkeypatch.setattr(run_eval, "evaluate_model", lambda recipe, source, label, *a, **k: scored.append(label) or {})
    capsys.readouterr()
    rc = main(["eval", str(tmp_path / "r" / "quickstart.yaml"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and scored == [] and ".final.replaced" in err and "train first" not in err
