"""Each record is tokenised once: `measure` keeps its tokens (`Record.token_plan`) and the training dataset reuses
them, giving batches identical to encoding every item afresh (issue 16 item 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import model
from adapt.data import SkipLog, SourceSpec, SupervisedDataset, collate, measure, read_source
from adapt.data.samples import record_to_dict
from domains.general.world import generate_general


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    generate_general(root / "general", n_train=12, n_test=2)
    _, processor = model.load("pocket-tiny")
    skips = SkipLog()
    records = {"general": measure(read_source(SourceSpec("general", root / "general" / "train.jsonl"), skips),
                                  processor, 512, skips)}
    return records, processor


def _without_plans(records: dict) -> dict:
    return {name: [dataclasses.replace(r, token_plan=None) for r in rs] for name, rs in records.items()}


class _CountingProcessor:
    """The processor, counting the encodings it makes (whole samples, or tokens alone)."""

    def __init__(self, processor):
        self._processor, self.encodes = processor, 0

    def __call__(self, *args, **kwargs):
        self.encodes += 1
        return self._processor(*args, **kwargs)

    def encode_tokens(self, *args, **kwargs):
        self.encodes += 1
        return self._processor.encode_tokens(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._processor, name)


def _batches(records: dict, processor, order, augment=None) -> list[dict]:
    dataset = SupervisedDataset(records, order, processor, 512, SkipLog(), augment=augment)
    return [collate([dataset[i] for i in range(k, min(k + 4, len(order)))], processor)
            for k in range(0, len(order), 4)]


def _assert_same(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
            assert same, key


def test_measure_keeps_the_tokens_and_the_dataset_reuses_them(measured) -> None:
    records, processor = measured
    assert all(r.token_plan is not None and len(r.token_plan.input_ids) == r.n_tokens for r in records["general"])
    order = [("general", i) for i in range(len(records["general"]))]
    counting = _CountingProcessor(processor)
    with_plans = _batches(records, counting, order)
    assert counting.encodes == 0  # tokenised once, in measure()
    counting.encodes = 0
    fresh = _batches(_without_plans(records), counting, order)
    assert counting.encodes == len(order)
    _assert_same(with_plans, fresh)


def test_a_plan_for_other_tile_counts_or_an_augmented_record_is_not_used(measured) -> None:
    records, processor = measured
    order = [("general", i) for i in range(len(records["general"]))]
    expected = _batches(_without_plans(records), processor, order)
    stale = {"general": [dataclasses.replace(r, token_plan=dataclasses.replace(r.token_plan, num_tiles=(99,)))
                         for r in records["general"]]}
    counting = _CountingProcessor(processor)
    _assert_same(_batches(stale, counting, order), expected)
    assert counting.encodes == len(order)
    counting.encodes = 0

    def augment(image, record, key):  # hands back a copy (with the plan copied along): must not be trusted
        return image, dataclasses.replace(record)

    _assert_same(_batches(records, counting, order, augment=augment), expected)
    assert counting.encodes == len(order)


def test_record_to_dict_leaves_the_plan_out(measured) -> None:
    records, _ = measured
    d = record_to_dict(records["general"][0])
    assert "token_plan" not in d and isinstance(d["images"][0], str) and Path(d["images"][0]).is_file()
