"""The plan's warning for an epoch too small for general_ratio names the fix that applies: a set mixing.epoch_size
is raised (telling the user to 'set' the key they set sent them looking for another), else records are added."""

from __future__ import annotations

from adapt.data.mixture import MixturePlan

KINDS = {"d": "domain", "g": "general"}


def test_a_set_epoch_size_too_small_for_the_ratio_asks_to_raise_it():
    (warning,) = MixturePlan({"d": 100, "g": 100}, KINDS, 0.5, epoch_size=3).warnings()
    assert "not general_ratio 0.5" in warning and warning.endswith("the epoch is too small for that ratio; "
                                                                   "raise mixing.epoch_size")


def test_an_epoch_sized_by_few_domain_records_asks_for_records_or_an_epoch_size():
    (warning,) = MixturePlan({"d": 1, "g": 100}, KINDS, 0.3).warnings()  # 1 + 1: 50 %
    assert warning.endswith("add domain records or set mixing.epoch_size"), warning
