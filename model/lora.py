"""peft LoRA wrappers, asked about without importing peft: it is imported only where a part trains with LoRA."""

from __future__ import annotations

import sys

from torch import nn


def is_peft_model(model: nn.Module) -> bool:
    """Whether `model` is a peft wrapper (no PeftModel can exist unless peft was imported: importing it to ask costs
    a quarter second)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def merge_lora(model: nn.Module) -> nn.Module:
    """The model with LoRA folded into its weights (vision and language alike) and the wrappers dropped; other
    models as they are."""
    return model.merge_and_unload() if is_peft_model(model) else model
