"""`adapt eval --model a=X --model b=Y`: a source that is no checkpoint nor preset is named before any model is scored."""

from __future__ import annotations

import adapt.run_eval as run_eval
from adapt.cli import main
from tests.test_eval_sources_checked_first import write_eval_files


def _init_with_eval_files(tmp_path) -> None:
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    write_eval_files(tmp_path / "quickstart.yaml")


def test_a_mistyped_second_model_stops_eval_before_the_first_is_scored(tmp_path, monkeypatch, capsys):
    """The base model was scored in full (minutes to hours) before the typo in adapted=… was reported."""
    _init_with_eval_files(tmp_path)
    scored = []
    monkeypatch.setattr(run_eval, "evaluate_model", lambda recipe, source, label, *a, **k: scored.append(label) or {})
    capsys.readouterr()
    rc = main(["eval", str(tmp_path / "quickstart.yaml"), "--model", "base=pocket-tiny", "--model",
               f"adapted={tmp_path / 'trian' / 'final'}", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and scored == [] and not (tmp_path / "out").exists()
    assert "--model adapted=" in err and "trian" in err and "not a checkpoint directory nor a preset" in err
    rc = main(["eval", str(tmp_path / "quickstart.yaml"), "--model", "pocket-tyni", "--out", str(tmp_path / "out"),
               "--no-progress"])
    assert rc == 1 and "did you mean pocket-tiny" in capsys.readouterr().err and scored == []


def test_a_runtime_type_given_twice_is_exported_and_scored_once(tmp_path, monkeypatch, capsys):
    """`--gguf-type f16 --gguf-type f16` exported and scored each model twice under one label (minutes each)."""
    import adapt.evaluate as evaluate

    _init_with_eval_files(tmp_path)
    scored = []
    monkeypatch.setattr(run_eval, "evaluate_model", lambda recipe, source, label, *a, **k: scored.append(label) or {})
    monkeypatch.setattr(evaluate, "write_report", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc = main(["eval", str(tmp_path / "quickstart.yaml"), "--model", "base=pocket-tiny", "--runtime", "llamacpp",
               "--gguf-type", "f16", "--gguf-type", "q8_0", "--gguf-type", "f16", "--out", str(tmp_path / "out"),
               "--no-progress"])
    assert rc == 130 and scored == ["base-f16", "base-q8_0"]


def test_a_type_flag_of_another_runtime_is_refused_before_any_note(tmp_path, capsys):
    """`--runtime onnx --gguf-type f16` printed "no adapted model ...; scoring the base model only" and then refused."""
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    capsys.readouterr()
    rc = main(["eval", str(tmp_path / "quickstart.yaml"), "--runtime", "onnx", "--gguf-type", "f16", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == "adapt eval: error: --gguf-type applies to --runtime llamacpp"
