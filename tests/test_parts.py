"""Per-part training modes (`adapt.parts`): settings that would train nothing are refused, naming the part."""

from __future__ import annotations

import pytest
from torch import nn

from adapt.parts import PartsError, PartSetting, apply_parts


class _Tiny(nn.Module):
    """A VLM's three parts, the projector parameter-free (an identity, as a tower already of the LM's width)."""

    def __init__(self) -> None:
        super().__init__()
        self.vision_tower = nn.Linear(4, 4)
        self.multi_modal_projector = nn.Identity()
        self.language_model = nn.Linear(4, 4)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_training_a_part_without_parameters_is_refused(mode):
    with pytest.raises(PartsError, match=rf"parts.projector.*mode {mode}.*no parameters.*frozen"):
        apply_parts(_Tiny(), {"projector": PartSetting(mode=mode), "llm": PartSetting(mode="full")})


def test_a_frozen_part_without_parameters_is_fine():
    model = apply_parts(_Tiny(), {"projector": PartSetting(mode="frozen"), "llm": PartSetting(mode="full")})
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["language_model.weight",
                                                                           "language_model.bias"]


def test_a_misspelt_part_or_mode_is_refused():
    with pytest.raises(PartsError, match="unknown part 'lm'"):
        apply_parts(_Tiny(), {"lm": PartSetting(mode="full")})
    with pytest.raises(PartsError, match="mode 'ful' is not one of"):
        apply_parts(_Tiny(), {"llm": PartSetting(mode="ful")})
