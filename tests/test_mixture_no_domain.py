"""MixturePlan names the recipe keys to change when no domain sample can be drawn."""

import pytest

from adapt.data.mixture import MixturePlan
from adapt.data.samples import DataError

KINDS = {"a": "domain", "b": "domain", "g": "general"}
SIZES = {"a": 5, "b": 3, "g": 5}


@pytest.mark.parametrize("epoch_size", [None, 10])
def test_every_domain_ratio_zero_names_the_ratio_key(epoch_size):
    # with epoch_size it said "no domain source has records" (they had records), without it "give epoch_size",
    # which only led to that message
    with pytest.raises(DataError) as err:
        MixturePlan(SIZES, KINDS, 0.3, ratios={"a": 0, "b": 0}, epoch_size=epoch_size)
    message = str(err.value)
    assert "every domain source has ratio 0 (a, b)" in message
    assert "data.sources[].ratio > 0" in message and "has records" not in message
    assert "give epoch_size" not in message
    if epoch_size:
        assert "mixing.epoch_size 10 with mixing.general_ratio 0.3 wants 7 domain samples per epoch" in message


def test_no_domain_source_and_empty_domain_sources_are_told_apart():
    with pytest.raises(DataError, match="no data.sources entry has kind: domain"):
        MixturePlan({"g": 5}, {"g": "general"}, 0.3, epoch_size=10)
    with pytest.raises(DataError, match=r"no domain source with ratio > 0 has records \(a\)"):
        MixturePlan({"a": 0, "g": 5}, {"a": "domain", "g": "general"}, 0.3, epoch_size=10)


def test_a_one_sample_general_epoch_still_needs_no_domain_source():
    assert MixturePlan({"g": 5}, {"g": "general"}, 0.6, epoch_size=1).counts() == {"g": 1}


def test_only_the_sources_meant_to_be_drawn_are_named_as_empty():
    with pytest.raises(DataError, match=r"no domain source with ratio > 0 has records \(a\);"):
        MixturePlan({"a": 0, "b": 5, "g": 5}, KINDS, 0.3, ratios={"a": 1, "b": 0}, epoch_size=10)
