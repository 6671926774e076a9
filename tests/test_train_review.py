"""Training-loop defects found in review: a MoE LM's router loss, stale partial checkpoints, huge epochs."""

from __future__ import annotations

import json
import os

import pytest
import torch

import model
from adapt.recipe import load_recipe
from adapt.train import Trainer, TrainingError
from model.presets import preset_config
from model.vlm import PocketVLM
from tests.deps import require
from tests.test_train import data_dir, write_recipe  # noqa: F401  (the module fixture)


def _moe_vlm(coef: float = 0.5) -> PocketVLM:
    from transformers import Qwen2MoeConfig

    config = preset_config("pocket-tiny-scratch")
    old = config.text_config
    config.text_config = Qwen2MoeConfig(
        vocab_size=old.vocab_size, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, output_router_logits=True, router_aux_loss_coef=coef,
        eos_token_id=old.eos_token_id, pad_token_id=old.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    return PocketVLM(config)


def test_a_moe_lms_router_loss_is_in_the_training_loss():
    """The training forward (loss_only) took its own cross-entropy from the logits and dropped the load-balancing
    loss transformers returns as `aux_loss`: the router was never kept balanced. It is now in `loss`, as in the
    LM's own loss, and given apart as `router_loss` for the training loop."""
    vlm = _moe_vlm()
    ids = torch.tensor([[20, 30, 40, 50, 60, 70], [21, 31, 41, 51, 61, 71]])
    labels = ids.clone()
    labels[:, :2] = -100
    own = vlm(input_ids=ids, labels=labels)
    ours = vlm(input_ids=ids, labels=labels, loss_only=True)
    assert ours.router_loss is not None and float(ours.router_loss.detach()) > 0
    torch.testing.assert_close(ours.loss, own.loss)
    assert ours.router_loss.requires_grad


def test_a_moe_run_trains_and_logs_the_router_loss(tmp_path, data_dir):  # noqa: F811
    _, processor = model.load("pocket-tiny-scratch")
    model.save(_moe_vlm(), processor, tmp_path / "moe")  # the experts written one by one, as the hub's files are
    path = write_recipe(tmp_path, data_dir, steps=1, save_every=1)
    recipe = load_recipe(path, ["parts.llm.mode=full", f"model.source={tmp_path / 'moe'}"])
    Trainer(recipe, progress=False).run()
    entry = json.loads((tmp_path / "out" / "train_log.jsonl").read_text().splitlines()[0])
    assert entry["router_loss"] > 0
    trained, _ = model.load(tmp_path / "out" / "final")
    assert trained.config.text_config.model_type == "qwen2_moe"


def test_a_deepspeed_step_with_a_nan_loss_stops_before_the_weights_change(tmp_path, data_dir, monkeypatch):  # noqa: F811
    """DeepSpeed's step ran inside the micro-batch loop, before the non-finite check: a NaN loss was stepped into the
    weights first (the plain path checks first). Now both check, then step."""
    require("deepspeed")
    path = write_recipe(tmp_path, data_dir, steps=2, save_every=10)
    # stage 0 (a user's JSON): ZeRO 1-3 skip a step whose gradients overflow themselves, DeepSpeed's plain path does not
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 0}, "gradient_clipping": "auto",
                                                  "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
                                                  "train_micro_batch_size_per_gpu": "auto"}))
    recipe = load_recipe(path, ["distributed.strategy=deepspeed", f"distributed.deepspeed={tmp_path / 'ds.json'}",
                                "training.grad_accum=2",
                                "training.batch_size=2", "parts.llm.mode=full", "training.warmup_ratio=0"])
    real = Trainer._row_losses

    def poisoned(self, batch, autocast):
        row_loss, row_tokens = real(self, batch, autocast)
        return row_loss * float("nan"), row_tokens

    monkeypatch.setattr(Trainer, "_row_losses", poisoned)
    trainer = Trainer(recipe, progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    with pytest.raises(TrainingError, match="step 1: the loss is not finite"):
        trainer.run()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[n], after[n].detach()) for n in before)


def test_a_partial_checkpoint_left_by_a_stopped_run_is_removed_on_resume(tmp_path, data_dir, capsys):  # noqa: F811
    """A `checkpoint-N.partial/` (a run killed while saving) was only cleared by a later save of the same step: after
    an edit of output.save_every it stayed in the run folder for good (at full model size). Resume removes it."""
    path = write_recipe(tmp_path, data_dir, steps=2, save_every=1)
    recipe = load_recipe(path, ["eval.every=1000"])
    Trainer(recipe, progress=False).run(stop_after=1)
    out = tmp_path / "out"
    (out / "checkpoint-1").rename(out / "checkpoint-3.partial")  # as a run saving every 3 steps left it
    (out / "checkpoint-3.partial" / "manifest.json").unlink()
    Trainer(load_recipe(path, ["eval.every=1000", "output.save_every=2"]), progress=False).run()
    assert not list(out.glob("*.partial"))
    assert "removed checkpoint-3.partial" in capsys.readouterr().out


@pytest.mark.parametrize("epoch_size", [10_000_000, 1_000_000_000])
def test_an_epoch_too_large_to_hold_is_refused_before_it_is_built(tmp_path, data_dir, monkeypatch, epoch_size):  # noqa: F811
    """mixing.epoch_size near the schema's maximum built a list of every sample of the epoch (~115 bytes each: 1e9
    is over 100 GiB) at the first step; now the run stops at the start, saying why and what to lower."""
    import adapt.data.mixture as mixture

    monkeypatch.setattr(mixture, "_available_memory", lambda: 2**30, raising=False)  # 1 GiB, whatever this machine has
    monkeypatch.setattr(mixture.MixturePlan, "epoch", lambda *a: pytest.fail("an epoch was built"))
    path = write_recipe(tmp_path, data_dir, steps=2, save_every=10)
    with pytest.raises(TrainingError, match=f"an epoch of {epoch_size:,} samples .* GiB .* lower mixing.epoch_size"):
        Trainer(load_recipe(path, [f"mixing.epoch_size={epoch_size}"]), progress=False)
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def test_a_deepspeed_bf16_checkpoint_holds_and_resumes_the_fp32_master_weights(tmp_path, data_dir):  # noqa: F811
    """Under DeepSpeed bf16 the module's weights are bf16 and the fp32 master copy sits in its optimizer: checkpoints
    held the bf16 ones only, and a resume rebuilt the master copy from them, rounded. Both are fp32 now."""
    require("deepspeed")
    from deepspeed.utils import safe_get_full_fp32_param
    from safetensors.torch import load_file

    path = write_recipe(tmp_path, data_dir, steps=2, save_every=1)
    overrides = ["distributed.strategy=deepspeed", "training.precision=bf16", "eval.every=1000", "training.warmup_ratio=0"]
    first = Trainer(load_recipe(path, overrides), progress=False)
    first.run(stop_after=1)
    saved = load_file(str(tmp_path / "out" / "checkpoint-1" / "trainable.safetensors"))
    masters = {n: safe_get_full_fp32_param(p).cpu() for n, p in first.model.named_parameters() if p.requires_grad}
    assert {v.dtype for v in saved.values()} == {torch.float32}
    assert all(torch.equal(saved[n], masters[n]) for n in masters)
    assert any(not torch.equal(v, v.bfloat16().float()) for v in saved.values())  # not bf16 values in fp32
    resumed = Trainer(load_recipe(path, overrides), progress=False)
    try:
        for name, p in resumed.model.named_parameters():
            if p.requires_grad:
                assert torch.equal(safe_get_full_fp32_param(p).cpu(), saved[name]), name
    finally:
        resumed.close()


def test_a_one_process_deepspeed_run_leaves_no_launcher_variable_behind(tmp_path, data_dir, monkeypatch):  # noqa: F811
    """DeepSpeed asserts a launcher set LOCAL_RANK, so a run without one sets it, and left it set: a later
    `adapt.cli.main()` in the same process took itself for a data-parallel worker and no longer said 'interrupted'
    on Ctrl-C, and every child process inherited it. It is removed when the run ends; a launcher's stays."""
    require("deepspeed")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    path = write_recipe(tmp_path, data_dir, steps=1, save_every=10)
    recipe = load_recipe(path, ["distributed.strategy=deepspeed", "distributed.deepspeed=zero2"])
    Trainer(recipe, progress=False).run()
    assert "LOCAL_RANK" not in os.environ
    monkeypatch.setenv("LOCAL_RANK", "0")  # as torchrun / deepspeed's launcher set it
    recipe = load_recipe(path, ["distributed.strategy=deepspeed", "distributed.deepspeed=zero2",
                                f"output.dir={tmp_path / 'second'}"])
    Trainer(recipe, progress=False).run()
    assert os.environ.get("LOCAL_RANK") == "0"


def test_stop_after_behind_a_resumed_run_is_refused_not_saved_under_the_wrong_step(tmp_path, data_dir):  # noqa: F811
    """`run(stop_after=N)` on a run already past step N trained nothing and saved its later weights as
    checkpoint-N (a step-3 model under step 1's name), then returned that folder. It is refused now, naming both;
    and stopping where the run already is no longer deletes and rewrites the checkpoint it resumed from."""
    path = write_recipe(tmp_path, data_dir, steps=6, save_every=10)
    Trainer(load_recipe(path), progress=False).run(stop_after=3)
    out = tmp_path / "out"
    trainer = Trainer(load_recipe(path), progress=False)
    with pytest.raises(TrainingError, match=r"stop_after 1:.*at step 3"):
        trainer.run(stop_after=1)
    assert not (out / "checkpoint-1").exists() and (out / "checkpoint-3").is_dir()
    # stopping where it resumed trains nothing: checkpoint-3 is returned as it is, not deleted and written again
    written = (out / "checkpoint-3" / "trainable.safetensors").stat().st_mtime_ns
    assert Trainer(load_recipe(path), progress=False).run(stop_after=3) == out / "checkpoint-3"
    assert (out / "checkpoint-3" / "trainable.safetensors").stat().st_mtime_ns == written


@pytest.mark.parametrize("stop_after", [0, -1, 1.5])
def test_a_stop_after_that_is_no_step_count_is_refused_before_training(tmp_path, data_dir, stop_after):  # noqa: F811
    """`run(stop_after=0)` trained the whole schedule (0 read as no stop), and -1 was refused as "at step 0 already"."""
    path = write_recipe(tmp_path, data_dir, steps=2, save_every=10)
    with pytest.raises(TrainingError, match=rf"stop_after must be a step count of at least 1, got {stop_after}"):
        Trainer(load_recipe(path), progress=False).run(stop_after=stop_after)
    assert not (tmp_path / "out" / "final").exists() and not list((tmp_path / "out").glob("checkpoint-*"))
