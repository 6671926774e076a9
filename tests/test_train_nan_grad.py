"""A step whose loss is finite but whose gradients hold NaN / Inf stops before any weight changes, on every path."""

from __future__ import annotations

import json

import pytest
import torch

from adapt.recipe import load_recipe
from adapt.train import Trainer, TrainingError
from tests.deps import require
from tests.test_train import data_dir, write_recipe  # noqa: F401  (the module fixture)


def _poison_one_grad(trainer: Trainer, value: float) -> str:
    """A hook that puts `value` into one element of one trainable parameter's gradient (the loss stays finite)."""
    name, param = next((n, p) for n, p in trainer.model.named_parameters() if p.requires_grad)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad.view(-1)[0] = value
        return grad

    param.register_hook(hook)
    return name


def _ds_config(tmp_path, stage: int) -> str:
    path = tmp_path / f"ds{stage}.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": stage}, "gradient_clipping": "auto",
                                "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
                                "train_micro_batch_size_per_gpu": "auto"}))
    return str(path)


CASES = [("plain", "fp32", None), ("deepspeed", "fp32", 0), ("deepspeed", "fp32", 1), ("deepspeed", "fp32", 2),
         ("deepspeed", "bf16", 0), ("deepspeed", "bf16", 1), ("deepspeed", "bf16", 2)]


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("strategy,precision,stage", CASES, ids=[f"{s}-{p}-{z}" for s, p, z in CASES])
def test_a_non_finite_gradient_with_a_finite_loss_stops_before_the_weights_change(
        tmp_path, data_dir, strategy, precision, stage, value):  # noqa: F811
    overrides = ["training.grad_accum=2", "training.batch_size=2", "parts.llm.mode=full", "training.warmup_ratio=0",
                 f"training.precision={precision}", "eval.every=1000"]
    if strategy == "deepspeed":
        require("deepspeed")
        overrides += ["distributed.strategy=deepspeed", f"distributed.deepspeed={_ds_config(tmp_path, stage)}"]
    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=2, save_every=1), overrides)
    trainer = Trainer(recipe, progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    _poison_one_grad(trainer, value)
    with pytest.raises(TrainingError, match=r"step 1: the gradient norm is not finite .*saved nothing of that step"):
        trainer.run()
    after = dict(trainer.model.named_parameters())
    changed = [n for n in before if not torch.equal(before[n], after[n].detach())]
    assert not changed, f"weights changed by the non-finite step: {changed[:3]}"
    assert not list((tmp_path / "out").glob("checkpoint-*")) and not (tmp_path / "out" / "final").exists()


def test_a_deepspeed_stage_0_log_leaves_out_the_gradient_norm_it_does_not_measure(tmp_path, data_dir):  # noqa: F811
    """DeepSpeed's stage 0 reports no gradient norm (None): train_log.jsonl said grad_norm 0.0 at every step."""
    require("deepspeed")
    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=1, save_every=1), [
        "distributed.strategy=deepspeed", f"distributed.deepspeed={_ds_config(tmp_path, 0)}", "eval.every=1000"])
    Trainer(recipe, progress=False).run()
    entry = json.loads((tmp_path / "out" / "train_log.jsonl").read_text().splitlines()[0])
    assert "grad_norm" not in entry and entry["loss"] > 0
