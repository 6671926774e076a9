"""Mixing domain and general data: what an epoch holds at small or extreme ratios, as the plan says."""

from __future__ import annotations

import pytest

from adapt.data.mixture import MixturePlan

KINDS = {"d": "domain", "g": "general"}


@pytest.mark.parametrize("ratio, epoch_size", [(0.01, 40), (0.99, 10), (0.02, 2), (0.98, 2)])
def test_a_set_epoch_size_never_rounds_a_group_away(ratio, epoch_size):
    # general_ratio 0.01 at epoch_size 40 rounded to 0 general samples (no replay at all), 0.99 at 10 to 0 domain
    # samples (the field never trained): both silently, as each missed the ratio by less than 5 points
    plan = MixturePlan({"d": 100, "g": 100}, KINDS, ratio, epoch_size=epoch_size)
    counts = plan.counts()
    assert counts["d"] >= 1 and counts["g"] >= 1 and sum(counts.values()) == epoch_size
    order = plan.epoch(0)
    assert {s for s, _ in order} == {"d", "g"}


def test_a_one_sample_epoch_says_which_group_it_leaves_out():
    plan = MixturePlan({"d": 100, "g": 100}, KINDS, 0.01, epoch_size=1)
    assert plan.counts() == {"d": 1, "g": 0}
    assert any("no general sample" in w for w in plan.warnings())
    assert "warning: " in plan.describe()


def test_ratio_0_and_plain_rounding_are_unchanged():
    assert MixturePlan({"d": 100, "g": 100}, KINDS, 0.0, epoch_size=40).counts() == {"d": 40, "g": 0}
    assert MixturePlan({"d": 100, "g": 100}, KINDS, 0.3, epoch_size=40).counts() == {"d": 28, "g": 12}
    assert MixturePlan({"d": 100, "g": 100}, KINDS, 0.0, epoch_size=1).warnings() == []


def test_a_llava_style_json_array_source_is_told_to_become_jsonl(tmp_path):
    # LLaVA-665k and ShareGPT4V ship as one JSON array in a .json file; read as an InternVL meta JSON it was refused
    # with "must be a JSON object of named entries", which points at the meta format, not at the one-line fix
    import json

    from adapt.data.samples import DataError, SourceSpec, expand_sources

    path = tmp_path / "llava_v1_5_mix665k.json"
    path.write_text(json.dumps([{"id": "0", "image": "coco/1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A bus."}]}]))
    with pytest.raises(DataError) as err:
        expand_sources([SourceSpec(name="llava", path=path, kind="general")])
    message = str(err.value)
    assert "source 'llava'" in message and "JSON array of records" in message and "JSON Lines" in message
    assert f"jq -c '.[]' {path} > {path.with_suffix('.jsonl')}" in message


def test_the_templates_say_which_seed_sets_the_data_order():
    # every template said the top-level seed sets "model initialisation, dropout and data order", but the order
    # is MixturePlan's, seeded by mixing.seed alone: a seed sweep over `seed` trained every run on the same order
    from model.resources import templates_dir

    for path in sorted((templates_dir() / "recipes").glob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# seed:") and "data order" in line:
                assert "mixing.seed" in line, f"{path.name}: {line}"


def test_reproduce_without_a_field_says_to_name_one(capsys):
    # only overrides, no field: it said "unknown field(s) []", as if an empty name had been given
    from bench.reproduce import main

    with pytest.raises(SystemExit) as exit_:
        main(["training.max_steps=2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "[]" not in err
    assert "name a field" in err and "landcover" in err


@pytest.mark.parametrize("which", ["general", "landcover"])
def test_a_generation_the_disk_cannot_hold_is_refused_before_drawing(tmp_path, monkeypatch, which):
    # n_train=100000000 (a typo for 10000) drew and wrote ~20 KB PNGs for days until the disk was full, holding
    # every JSONL line in memory meanwhile; now refused up front when the free space is clearly too small
    import shutil

    from domains.base import DomainError
    from domains.general import world

    generate = {"general": world.generate_general, "landcover": world.generate_landcover}[which]
    free = 50 * 2**20
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * free, 9 * free, free))
    out = tmp_path / "data" / which
    def drawing(*args, **kwargs):
        raise AssertionError("the generator started drawing and writing")

    with monkeypatch.context() as m:
        m.setattr(world, "_write", drawing)  # a regression fails here at once instead of filling the disk
        with pytest.raises(DomainError, match=r"n_train \+ n_test = 100,000,200 images .* 50 MiB free"):
            generate(out, n_train=100_000_000, progress=False)
    assert not out.exists()
    generate(out, n_train=8, n_test=2, progress=False)  # a set that fits is written as before
    assert len(list((out / "images").iterdir())) == 10
