"""Per-part training modes (`adapt.parts`): settings that would train nothing are refused, naming the part."""

from __future__ import annotations

import pytest
from torch import nn

from adapt.parts import PartsError, PartSetting, apply_parts, part_of


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


@pytest.mark.parametrize("name, part", [
    ("vision_tower.embeddings.patch_embedding.weight", "vision"),
    ("multi_modal_projector.0.weight", "projector"),
    ("language_model.lm_head.weight", "llm"),
    # wrappers' prefixes: peft, DDP / DeepSpeed, torch.compile
    ("base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "llm"),
    ("module.vision_tower.encoder.layers.0.mlp.fc1.weight", "vision"),
    ("_orig_mod.multi_modal_projector.mlp1.weight", "projector"),
    # a part's own module named like another part: the outermost part module decides, not the order of the checks
    ("language_model.model.vision_tower.weight", "llm"),
    ("base_model.model.language_model.model.layers.0.vision_tower.lora_B.default.weight", "llm"),
    ("multi_modal_projector.vision_tower.weight", "projector"),
])
def test_part_of_reads_the_outermost_part_module(name, part):
    assert part_of(name) == part


@pytest.mark.parametrize("name", ["vision_tower_extra.weight", "my_language_model.weight", "lm_head.weight",
                                  "model.vision_towers.0.weight"])
def test_part_of_refuses_a_name_that_only_looks_like_a_part(name):
    with pytest.raises(PartsError, match="belongs to no part"):
        part_of(name)


def test_train_and_export_merge_lora_through_one_helper():
    """Training's final/ and every export fold LoRA in with `model.lora.merge_lora` (deploy may not import adapt):
    the merged model computes what the wrapped one did, and a plain model comes back as it is."""
    import torch

    import adapt.train
    import deploy.hf
    import model.lora

    assert deploy.hf.merge_lora is model.lora.merge_lora and adapt.train.merge_lora is model.lora.merge_lora
    torch.manual_seed(0)
    tiny = _Tiny()
    tiny.language_model = nn.Sequential(nn.Linear(4, 4))
    assert model.lora.merge_lora(tiny) is tiny and not model.lora.is_peft_model(tiny)
    wrapped = apply_parts(tiny, {"llm": PartSetting(mode="lora", r=2, dropout=0.0)})
    assert model.lora.is_peft_model(wrapped)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)  # peft starts B at zero: make the adapter change the output
        x = torch.randn(3, 4)
        expected = wrapped.base_model.model.language_model(x)
        merged = model.lora.merge_lora(wrapped)
        assert not model.lora.is_peft_model(merged) and isinstance(merged.language_model[0], nn.Linear)
        assert torch.allclose(merged.language_model(x), expected, atol=1e-6)


def test_a_lora_rank_above_a_targeted_layer_width_is_refused_naming_it():
    """A rank above a wrapped layer's smaller width passed to peft, which built an adapter no smaller than the layer
    (and, for a huge r, ran out of memory); it is refused naming the part, the layer and r."""
    def tiny() -> nn.Module:
        model = _Tiny()
        model.language_model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3))  # a wide layer and a narrow gate
        return model

    with pytest.raises(PartsError, match=r"parts\.llm\.lora\.r: 4 is larger than language_model\.1 allows "
                                         r"\(widths 8 and 3\).*lower r to 3"):
        apply_parts(tiny(), {"llm": PartSetting(mode="lora", r=4, targets=("0", "1"))})
    with pytest.raises(PartsError, match=r"parts\.llm\.lora\.r: 4096 is larger than language_model\.0 allows "
                                         r"\(widths 8 and 8\).*lower r to 8"):
        apply_parts(tiny(), {"llm": PartSetting(mode="lora", r=4096)})
    # the default targets (every Linear): the narrow gate does not rule out a rank the wide layer can take
    wrapped = apply_parts(tiny(), {"llm": PartSetting(mode="lora", r=4)})
    assert any("language_model.0.lora_A" in n for n, _ in wrapped.named_parameters())


@pytest.mark.parametrize("field, value, message", [
    ("r", 0, r"parts\.llm\.lora\.r: 0 is not a whole number of at least 1"),
    ("r", -2, r"parts\.llm\.lora\.r: -2 is not"),
    ("r", 2.5, r"parts\.llm\.lora\.r: 2\.5 is not"),
    ("alpha", 0.0, r"parts\.llm\.lora\.alpha: 0\.0 is not above 0"),
    ("alpha", float("nan"), r"parts\.llm\.lora\.alpha: nan"),
    ("dropout", 1.0, r"parts\.llm\.lora\.dropout: 1\.0 is not in \[0, 1\)"),
    ("dropout", -0.1, r"parts\.llm\.lora\.dropout: -0\.1"),
    ("targets", (), r"parts\.llm\.lora\.targets: \(\) is not a non-empty tuple of module names"),
    ("targets", "0", r"parts\.llm\.lora\.targets: '0' is not"),
    ("targets", ("0", ""), r"parts\.llm\.lora\.targets: \('0', ''\) is not"),
])
def test_lora_values_the_recipe_schema_refuses_are_refused_from_code_too(field, value, message):
    """A recipe's r, alpha and dropout are checked by its schema; `PartSetting` built in code went to peft unchecked:
    r 0 a raw peft error, a negative r a LoRA that trained nothing. Refused naming the part and the field."""
    model = _Tiny()
    model.language_model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(PartsError, match=message):
        apply_parts(model, {"llm": PartSetting(**{"mode": "lora", "r": 2, "dropout": 0.0, field: value})})
