"""`python -m adapt.pretrain_tiny --out DIR` starts over in its own folder only, never in one holding other work."""

from __future__ import annotations

from pathlib import Path

import pytest

import adapt.pretrain_tiny as pt
from model.errors import PocketAdaptError


@pytest.fixture
def fake_run(monkeypatch):
    """The data generator and the training stubbed: only what pretrain_tiny writes and removes is under test."""
    def generate(out: Path, **_):
        out.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            (out / f"{split}.jsonl").write_text("synthetic\n")

    def train(recipe, **_):
        final = Path(recipe.output.dir) / "final"
        final.mkdir(parents=True)
        return final

    monkeypatch.setattr(pt, "generate_general", generate)
    monkeypatch.setattr(pt, "train", train)


def test_pretraining_refuses_a_folder_holding_other_work(tmp_path, fake_run):
    """--out pointing at a quick start's folder emptied its train/ (the adapted model) and replaced its general set."""
    out = tmp_path / "quickstart"
    (out / "train" / "final").mkdir(parents=True)
    (out / "train" / "final" / "model.safetensors").write_text("my adapted model")
    (out / "data" / "general").mkdir(parents=True)
    (out / "data" / "general" / "train.jsonl").write_text("my general set\n")
    with pytest.raises(PocketAdaptError, match="not a pocket-tiny pre-training folder"):
        pt.pretrain_tiny(out, steps=1, progress=False, stop_after=1)
    assert (out / "train" / "final" / "model.safetensors").read_text() == "my adapted model"
    assert (out / "data" / "general" / "train.jsonl").read_text() == "my general set\n"
    assert sorted(p.name for p in out.iterdir()) == ["data", "train"]


def test_pretraining_starts_over_in_its_own_folder(tmp_path, fake_run):
    out = tmp_path / "pretrain"
    (out / "data").mkdir(parents=True)
    (out / "pretrain.yaml").write_text(pt.RECIPE.format(steps=1, lr=1e-3))  # a run stopped after writing its recipe
    for _ in range(2):  # a rerun, and a rerun of a finished run
        final, _ = pt.pretrain_tiny(out, steps=1, progress=False, stop_after=1)
        assert final == out.resolve() / "train" / "final"


def test_an_unwritable_out_is_one_line_not_a_traceback(tmp_path, fake_run, capsys):
    """A file where --out's folder should be (or a full disk, a read-only one) ended in an OSError traceback."""
    out = tmp_path / "taken"
    out.write_text("a file")
    assert pt.main(["--out", str(out), "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out) in err and "Traceback" not in err


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A pocket-tiny asset folder holding an old pair, and a finished run with new weights and its log."""
    import json

    import torch
    from safetensors.torch import save_file

    assets = tmp_path / "assets"
    (assets / "pocket-tiny").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(assets / "pocket-tiny" / "model.safetensors"))
    (assets / "pocket-tiny" / "rebuild.json").write_text('{"old": true}\n')
    monkeypatch.setattr(pt, "assets_dir", lambda: assets)
    run = tmp_path / "train"
    (run / "final").mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(run / "final" / "model.safetensors"))
    (run / "train_log.jsonl").write_text(json.dumps({"step": 10, "loss": 1.5}) + "\n")
    return assets / "pocket-tiny", run


def _state(folder: Path) -> tuple[bytes, str, list[str]]:
    return ((folder / "model.safetensors").read_bytes(), (folder / "rebuild.json").read_text(),
            sorted(p.name for p in folder.iterdir()))


@pytest.mark.parametrize("failing", ["the log", "the record"])
def test_a_failed_install_leaves_the_shipped_pair_as_it_was(shipped, monkeypatch, failing):
    """install_run overwrote model.safetensors before writing rebuild.json: a failure between (no train_log.jsonl,
    a record that cannot be written) left new weights under the old record."""
    folder, run = shipped
    before = _state(folder)
    if failing == "the log":
        (run / "train_log.jsonl").unlink()
    else:
        monkeypatch.setattr(pt, "record_path", lambda: folder / "missing" / "rebuild.json")
    with pytest.raises(OSError):
        pt.install_run(run, steps=10, lr=1e-3, general_accuracy=0.5)
    assert _state(folder) == before


def test_an_install_ships_the_weights_and_their_record(shipped):
    import json

    folder, run = shipped
    pt.install_run(run, steps=10, lr=1e-3, general_accuracy=0.5)
    record = json.loads((folder / "rebuild.json").read_text())
    assert (folder / "model.safetensors").read_bytes() == (run / "final" / "model.safetensors").read_bytes()
    assert record["weights_sha256"] == pt.weights_digest(folder / "model.safetensors")
    assert record["prefix_losses"] == {"10": 1.5}
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "rebuild.json"]


@pytest.mark.parametrize("argv, dropped", [
    (["--check", "--steps", "10"], "--steps"),
    (["--check-prefix", "--lr", "0.01"], "--lr"),
    (["--check", "--install"], "--install"),
    (["--check-prefix", "--steps", "10", "--install"], "--steps, --install"),
])
def test_a_check_refuses_settings_it_would_ignore(argv, dropped, monkeypatch, capsys):
    """--check / --check-prefix replay the recorded run's settings and install nothing, yet took --steps, --lr and
    --install without a word: a user asking for a 100-step check waited for the full rebuild."""
    monkeypatch.setattr(pt, "check_full", lambda *a, **k: pytest.fail("ran the check"))
    monkeypatch.setattr(pt, "check_prefix", lambda *a, **k: pytest.fail("ran the check"))
    with pytest.raises(SystemExit) as exc:
        pt.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"drop {dropped}" in err and "recorded run's own settings" in err and "Traceback" not in err


def test_the_two_checks_are_not_given_together(monkeypatch, capsys):
    """--check --check-prefix ran the full rebuild only, saying nothing of the prefix check asked for."""
    monkeypatch.setattr(pt, "check_full", lambda *a, **k: pytest.fail("ran the check"))
    with pytest.raises(SystemExit):
        pt.main(["--check", "--check-prefix"])
    assert "not allowed with argument --check" in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["--steps", "0"], "--steps"), (["--steps", "-5"], "--steps"), (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"),
])
def test_bad_steps_or_lr_are_refused_before_any_work(tmp_path, argv, named, monkeypatch, capsys):
    """--steps 0 or --lr 0 generated the 8000-sample general set first, then failed naming pretrain.yaml's
    training.max_steps / parts.vision.lr, not the flag given."""
    monkeypatch.setattr(pt, "generate_general", lambda *a, **k: pytest.fail("generated data"))
    with pytest.raises(SystemExit) as exc:
        pt.main(["--out", str(tmp_path / "run"), *argv])
    assert exc.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
