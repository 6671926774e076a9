"""LoRA on a MoE LM's fused experts (`experts.gate_up_proj` / `experts.down_proj`, 3-D parameters in transformers 5),
opted into by naming them in `parts.llm.lora.targets`; built on peft's `target_parameters`."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import model
from adapt.parts import PartsError, PartSetting, apply_parts
from adapt.recipe import load_recipe
from adapt.train import Trainer
from model.lora import merge_lora
from tests.test_moe_checkpoints import IDS, _moe_vlm
from tests.test_train import RECIPE, data_dir  # noqa: F401  (the module fixture)

EXPERTS = ("q_proj", "experts.gate_up_proj", "experts.down_proj")


def _apply(vlm, targets=EXPERTS, dropout=0.0, **before):
    """LoRA on the LLM with `targets`, after the parts in `before` (in the trainer's order: vision first)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llm = PartSetting("lora", lr=1e-2, r=4, alpha=8, dropout=dropout, targets=targets)
        peft_model = apply_parts(vlm, {**before, "llm": llm})
    return peft_model, [str(w.message) for w in caught]


def _train(peft_model, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        peft_model(input_ids=IDS, labels=IDS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("kind", ["qwen2_moe", "mixtral"])
def test_naming_the_experts_trains_them_with_lora_and_merges_to_the_same_logits(kind):
    vlm = _moe_vlm(kind)
    base = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    with torch.no_grad():
        before = vlm(input_ids=IDS).logits
    peft_model, messages = _apply(vlm)
    assert not [m for m in messages if "MoE" in m or "fused" in m]  # nothing left frozen that was asked for
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for layer in (0, 1):  # both fused parameters of every layer (peft nests one wrapper in the other)
        experts = f"language_model.model.layers.{layer}.mlp.experts."
        assert sum(experts in n for n in trainable) == 4, trainable
    _train(peft_model)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=IDS).logits
    merged = merge_lora(peft_model)
    after = dict(merged.named_parameters())
    assert after.keys() == base.keys()  # the wrappers are gone: the plain fused experts again
    for layer in (0, 1):
        for param in ("gate_up_proj", "down_proj"):
            name = f"language_model.model.layers.{layer}.mlp.experts.{param}"
            assert not torch.equal(after[name], base[name]), name  # the expert delta trained
    assert torch.equal(after["language_model.model.layers.0.mlp.gate.weight"],  # the router stays as it was
                       base["language_model.model.layers.0.mlp.gate.weight"])
    with torch.no_grad():
        assert not torch.allclose(adapted, before)
        torch.testing.assert_close(merged(input_ids=IDS).logits, adapted, atol=1e-5, rtol=1e-5)


def test_lora_dropout_with_expert_targets_is_an_error_saying_what_to_set():
    """peft's ParamWrapper has no dropout (the input of the fused matmul cannot be factored out) and raised a bare
    ValueError from inside peft; the recipe's default dropout is 0.05."""
    with pytest.raises(PartsError, match=r"parts\.llm\.lora\.targets.*mlp\.experts\.gate_up_proj.*peft \d.*"
                                         r"lora\.dropout is 0\.05; set lora\.dropout: 0"):
        _apply(_moe_vlm(), dropout=0.05)


def test_the_experts_rank_and_alpha_are_their_parts_beside_another_lora_part():
    """peft takes a wrapped parameter's rank from the config's default (a rank_pattern key for it only warns that it
    matched no module), so the default must be the experts' part's, not the first LoRA part's."""
    vision = PartSetting("lora", r=2, alpha=3, targets=("fc1",), dropout=0.0)
    peft_model, messages = _apply(_moe_vlm(), vision=vision)
    assert not [m for m in messages if "rank_pattern" in m or "alpha_pattern" in m]
    layer = peft_model.base_model.model.language_model.model.layers[0].mlp.experts
    assert layer.r["default"] == 4 and layer.scaling["default"] == 2.0
    assert layer.lora_A["default"].weight.shape[0] == 4 * 4  # rank x experts
    fc1 = peft_model.base_model.model.vision_tower.encoder.layer[0].mlp.fc1
    assert fc1.r["default"] == 2


def test_expert_targets_that_leave_some_experts_out_say_so():
    """`down_proj` picks the shared expert's Linear modules only, not the fused `experts.down_proj`."""
    _, messages = _apply(_moe_vlm(), targets=("q_proj", "gate_up_proj", "down_proj"))
    (message,) = [m for m in messages if "fused experts" in m]
    assert "mlp.experts.gate_up_proj but not mlp.experts.down_proj" in message


def test_the_router_as_a_target_is_an_error_naming_what_lora_can_reach():
    with pytest.raises(PartsError, match=r"\['mlp\.gate'\] name the router.*mlp\.experts\.gate_up_proj.*mode 'full'"):
        _apply(_moe_vlm(), targets=("q_proj", "mlp.gate"))


def test_a_misspelt_expert_target_is_an_error_with_a_suggestion():
    with pytest.raises(PartsError, match=r"'experts\.gate_up_prj'.*did you mean 'experts\.gate_up_proj'.*"
                                         r"fused expert parameters: mlp\.experts\.gate_up_proj"):
        _apply(_moe_vlm(), targets=("q_proj", "experts.gate_up_prj"))


def test_without_expert_targets_the_warning_names_the_opt_in():
    _, messages = _apply(_moe_vlm(), targets=None, dropout=0.05)
    (message,) = [m for m in messages if "MoE" in m]
    assert "leaves them frozen" in message and "mode full" in message
    assert "parts.llm.lora.targets (mlp.experts.gate_up_proj, mlp.experts.down_proj; with lora.dropout 0)" in message


def _moe_recipe(tmp_path, data_dir, steps: int, save_every: int):  # noqa: F811
    _, processor = model.load("pocket-tiny-scratch")
    model.save(_moe_vlm(), processor, tmp_path / "moe")
    (tmp_path / "data").symlink_to(data_dir / "data")
    llm = "llm: {mode: lora, lr: 1.0e-2, lora: {r: 4, alpha: 8, dropout: 0, targets: [q_proj, experts.gate_up_proj, experts.down_proj]}}"
    text = RECIPE.format(steps=steps, save_every=save_every, vision="frozen")
    text = text.replace("model: {source: pocket-tiny-scratch}", f"model: {{source: {tmp_path / 'moe'}}}")
    text = "\n".join(f"  {llm}" if line.strip().startswith("llm:") else line for line in text.splitlines())
    (tmp_path / "moe.yaml").write_text(text.replace("tensorboard: true", "tensorboard: false"))
    return tmp_path / "moe.yaml"


def test_a_run_with_expert_lora_resumes_as_it_would_have_gone_and_saves_the_adapter(tmp_path, data_dir):  # noqa: F811
    path = _moe_recipe(tmp_path, data_dir, steps=4, save_every=2)
    out = tmp_path / "out"
    Trainer(load_recipe(path, ["output.merge_lora=false"]), progress=False).run()
    expected = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    adapter = json.loads((out / "final" / "adapter" / "adapter_config.json").read_text())
    assert len(adapter["target_parameters"]) == 4
    unmerged, _ = model.load(out / "final")  # base weights + adapter/, merged on load

    shutil.rmtree(out / "final")  # as if stopped after checkpoint-2: steps 3 and 4 again, from its expert LoRA
    shutil.rmtree(out / "checkpoint-4")
    trainer = Trainer(load_recipe(path), progress=False)
    trainer.run()
    got = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert got == pytest.approx(expected, abs=1e-6)
    merged, _ = model.load(out / "final")
    base, _ = model.load(tmp_path / "moe")
    name = "language_model.model.layers.1.mlp.experts.down_proj"
    assert not torch.equal(merged.get_parameter(name), base.get_parameter(name))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=IDS).logits, unmerged(input_ids=IDS).logits)


def test_the_experts_module_as_a_target_wraps_both_fused_parameters():
    """`mlp.experts` (the module holding them) was taken for the router in the error message."""
    peft_model, messages = _apply(_moe_vlm(), targets=("q_proj", "mlp.experts"))
    assert not [m for m in messages if "fused" in m]
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert sum("layers.0.mlp.experts." in n for n in trainable) == 4
