"""MixturePlan used as a library: a non-number ratio / repeat / general_ratio is a DataError naming the field."""

import re

import pytest

from adapt.data.mixture import MixturePlan
from adapt.data.samples import DataError

SIZES = {"a": 4, "g": 4}
KINDS = {"a": "domain", "g": "general"}


@pytest.mark.parametrize("field", ["ratios", "repeats"])
@pytest.mark.parametrize("value", ["2", [1], True])
def test_non_number_ratio_or_repeat_names_source_and_field(field, value):
    with pytest.raises(DataError, match=rf"source 'a': {field[:-1]} must be a number"):
        MixturePlan(SIZES, KINDS, 0.5, **{field: {"a": value}})


@pytest.mark.parametrize("value", ["0.3", None, False])
def test_non_number_general_ratio(value):
    with pytest.raises(DataError, match="general_ratio must be a number"):
        MixturePlan(SIZES, KINDS, value)


def test_numbers_still_accepted():
    import numpy as np

    plan = MixturePlan(SIZES, KINDS, np.float32(0.5), ratios={"a": 1, "g": np.float64(2.0)}, repeats={"a": 2})
    assert plan.general_ratio == 0.5


def test_a_numpy_int_epoch_size_is_taken_as_sizes_and_seed_are():
    """It was refused as 'epoch_size must be an int >= 1, got 6': a message naming a valid-looking value."""
    import numpy as np

    plan = MixturePlan(SIZES, KINDS, 0.5, epoch_size=np.int64(6))
    assert plan.epoch_size == 6 and type(plan.epoch_size) is int


@pytest.mark.parametrize("value", ["0.5", True, [1], -1.0, float("inf")])
def test_a_source_spec_ratio_that_is_not_a_number_ge_0_is_named(value):
    """SourceSpec(ratio="0.5") failed with a bare TypeError from its own check; ratio=True was taken as 1."""
    from adapt.data.samples import SourceSpec

    with pytest.raises(DataError, match=r"source 'a': ratio must be a number >= 0, got "):
        SourceSpec("a", "a.jsonl", ratio=value)
    import numpy as np

    assert SourceSpec("a", "a.jsonl", ratio=np.float32(0.5)).ratio == 0.5


@pytest.mark.parametrize("epoch", [1.5, "1", True, -1])
def test_an_epoch_that_is_not_an_int_ge_0_is_named(epoch):
    """epoch(1.5) failed inside numpy with 'TypeError: seed must be integer'; epoch(True) was read as epoch 1."""
    import numpy as np

    plan = MixturePlan(SIZES, KINDS, 0.5)
    with pytest.raises(DataError, match=r"epoch must be an int >= 0, got "):
        plan.epoch(epoch)
    assert plan.epoch(np.int64(1)) == plan.epoch(1)


def test_the_plan_and_source_specs_take_the_one_list_of_kinds():
    """mixture kept its own copy of samples.KINDS: a kind added to one would be refused by the other."""
    from adapt.data import mixture, samples

    refused = re.escape(f"kind must be one of {samples.KINDS!r}, got 'replay'")
    assert getattr(mixture, "KINDS", None) is samples.KINDS
    with pytest.raises(DataError, match=refused):
        MixturePlan(SIZES, {"a": "domain", "g": "replay"}, 0.5)
    with pytest.raises(DataError, match=refused):
        samples.SourceSpec("g", "g.jsonl", kind="replay")


@pytest.mark.parametrize("value", [0, 5000, 2.0, True])
def test_a_source_spec_max_tiles_is_bounded_as_a_recipe_and_a_meta_entry_bound_it(value):
    """SourceSpec(max_tiles=5000) was taken (a recipe's max_tiles and a meta's max_dynamic_patch stop at 40)."""
    from adapt.data.samples import SourceSpec
    from model.limits import MAX_TILES_LIMIT

    with pytest.raises(DataError, match=rf"source 'a': max_tiles must be a whole number from 1 to {MAX_TILES_LIMIT}"):
        SourceSpec("a", "a.jsonl", max_tiles=value)
    assert SourceSpec("a", "a.jsonl", max_tiles=MAX_TILES_LIMIT).max_tiles == MAX_TILES_LIMIT
