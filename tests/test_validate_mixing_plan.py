"""`adapt validate` prints the mixing plan `adapt train` would draw, from the same MixturePlan, without the model."""

import pytest
import yaml

import model
from adapt.cli import main
from domains.general.world import generate_general, generate_landcover


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    assert main(["init", "quickstart", str(tmp_path)]) == 0
    generate_general(tmp_path / "data" / "general", n_train=40, n_test=2, image_size=32, progress=False)
    generate_landcover(tmp_path / "data" / "landcover", n_train=30, n_test=2, image_size=32, progress=False)

    def no_model(*args, **kwargs):
        raise AssertionError("adapt validate loaded the model")

    monkeypatch.setattr(model, "load", no_model)
    capsys.readouterr()
    return tmp_path / "quickstart.yaml"


def test_validate_prints_the_samples_per_source_per_epoch(run, capsys):
    assert main(["validate", str(run)]) == 0
    captured = capsys.readouterr()
    yaml.safe_load(captured.out)  # stdout stays the resolved recipe alone
    err = captured.err
    # 30 domain records once, general_ratio 0.3 of the epoch: 43 samples, 13 of them general
    assert "Mixture: 43 samples per epoch, general_ratio 0.3 (achieved: 13 general samples, 30.2%)" in err
    assert "| landcover | domain | 30 |  | 30 | 69.8% |" in err and "| general | general | 40 |  | 13 | 30.2% |" in err
    assert "longer than training.max_seq_length" in err


def test_validate_plans_with_the_overrides_and_repeats(run, capsys):
    assert main(["validate", str(run), "mixing.epoch_size=100", "data.sources[0].repeat=2"]) == 0
    err = capsys.readouterr().err
    assert "Mixture: 100 samples per epoch" in err and "| landcover | domain | 30 | 2 | 70 | 70.0% |" in err


def test_validate_notes_skipped_records_and_what_would_stop_training(run, capsys):
    with open(run.parent / "data" / "landcover" / "train.jsonl", "a", encoding="utf-8") as f:
        f.write("not json\n")
    assert main(["validate", str(run), "data.max_bad_fraction=0.01"]) == 0
    err = capsys.readouterr().err
    assert "reading skipped 1 record(s)" in err and "adapt train would stop: too many bad records" in err
    assert "| landcover | domain | 30 |" in err


def test_validate_notes_why_there_is_no_plan(run, capsys):
    (run.parent / "data" / "general" / "train.jsonl").unlink()
    assert main(["validate", str(run)]) == 0
    err = capsys.readouterr().err
    assert "note: no mixing plan: source 'general': annotation file not found" in err and "Mixture:" not in err
    generate_general(run.parent / "data" / "general", n_train=4, n_test=2, image_size=32, progress=False)
    (run.parent / "data" / "landcover" / "train.jsonl").write_text("not json\n", encoding="utf-8")
    assert main(["validate", str(run), "mixing.epoch_size=10"]) == 0  # the recipe is valid, its data is not
    err = capsys.readouterr().err
    assert "note: no mixing plan: mixing.epoch_size 10 with mixing.general_ratio 0.3 wants 7 domain samples" in err
    assert "no domain source with ratio > 0 has records (landcover)" in err


def test_validate_notes_an_epoch_sized_by_the_records_that_memory_cannot_hold(run, capsys, monkeypatch):
    # adapt train refuses such an epoch after loading the model; validate only checked a given mixing.epoch_size
    import adapt.data.mixture as mixture

    monkeypatch.setattr(mixture, "_available_memory", lambda: 1000)
    assert main(["validate", str(run)]) == 0
    err = capsys.readouterr().err
    assert "adapt train would stop: an epoch of 43 samples" in err and "| landcover | domain | 30 |" in err


def test_a_distillation_recipe_gets_its_plan_without_the_max_seq_length_caveat(run, capsys):
    # adapt distill plans from the records read (no token measuring): the train-only caveat misled there
    assert main(["init", "distill_pocket-tiny", str(run.parent)]) == 0
    capsys.readouterr()
    assert main(["validate", str(run.parent / "distill_pocket-tiny.yaml")]) == 0
    err = capsys.readouterr().err
    assert "| landcover | domain | 30 |" in err and "max_seq_length" not in err


def test_no_plan_checks_the_recipe_without_reading_a_record(run, capsys, monkeypatch):
    """Very large sets take minutes to read for the plan; --no-plan checks the recipe alone."""
    from adapt.data import samples

    def no_reading(*args, **kwargs):
        raise AssertionError("adapt validate --no-plan read a source")

    monkeypatch.setattr(samples, "read_source", no_reading)
    assert main(["validate", str(run), "--no-plan", "mixing.epoch_size=100"]) == 0
    captured = capsys.readouterr()
    assert "epoch_size: 100" in captured.out and "Mixture:" not in captured.err
    assert "valid recipe 'quickstart'" in captured.err


def test_a_distillation_plan_names_the_text_only_records_it_leaves_out(run, capsys):
    """The plan counted only records with images, and the skip note only bad ones: text-only records vanished from
    both, so read, skipped and planned did not add up."""
    assert main(["init", "distill_pocket-tiny", str(run.parent)]) == 0
    with open(run.parent / "data" / "landcover" / "train.jsonl", "a", encoding="utf-8") as f:
        f.write('{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}\n')
    capsys.readouterr()
    assert main(["validate", str(run.parent / "distill_pocket-tiny.yaml")]) == 0
    err = capsys.readouterr().err
    assert "| landcover | domain | 30 |" in err
    assert "leaves out the text-only records (landcover: 1 of 31)" in err
