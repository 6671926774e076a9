"""`PocketVLM.reconfigure_projector` refuses options the vision tower's patch grid cannot feed."""

from __future__ import annotations

import pytest
import torch

import model
from model.errors import ModelConfigError


@pytest.mark.parametrize("options", [{"pool": 3}, {"downsample_ratio": 0.0625}])
def test_reconfigure_to_options_the_patch_grid_cannot_feed_is_refused_untouched(options):
    vlm, _ = model.load("pocket-tiny-scratch")  # 112 px tiles of 14 px patches: an 8x8 grid
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    config_before = dict(vlm.config.projector_options)
    with pytest.raises(ModelConfigError, match=r"8x8 patch grid .*cannot feed the pixel_shuffle_mlp projector"):
        vlm.reconfigure_projector(options)
    assert vlm.config.projector_options == config_before
    after = vlm.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(ModelConfigError, match="8x8 patch grid"):  # the load path says the same
        model.load("pocket-tiny-scratch", projector_options=options)
