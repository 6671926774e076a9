"""Training: per-part modes, checkpoints and resume, multi-process runs, the quick start's training path."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import model
from adapt.parts import PartSetting, apply_parts, parameter_groups, trainable_summary
from adapt.recipe import load_recipe
from adapt.train import Trainer, TrainingError, train
from domains.general.world import generate_general, generate_landcover
from tests.conftest import printed_plan
from tests.deps import require

RECIPE = """
name: tiny
model: {{source: pocket-tiny-scratch}}
parts:
  vision: {{mode: {vision}, lr: 1.0e-3}}
  projector: {{mode: full, lr: 1.0e-3}}
  llm: {{mode: lora, lr: 1.0e-3, lora: {{r: 4, alpha: 8, dropout: 0.1}}}}
data:
  sources:
    - {{name: landcover, path: data/landcover/train.jsonl, kind: domain}}
    - {{name: general, path: data/general/train.jsonl, kind: general}}
  eval_sources:
    - {{name: landcover, path: data/landcover/test.jsonl, kind: domain}}
    - {{name: general, path: data/general/test.jsonl, kind: general}}
mixing: {{general_ratio: 0.5, seed: 3}}
training: {{max_steps: {steps}, batch_size: 4, warmup_ratio: 0.1, max_seq_length: 512}}
output: {{dir: out, save_every: {save_every}, keep_last: 2}}
logging: {{tensorboard: true}}
eval: {{max_new_tokens: 24, batch_size: 8}}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_general(root / "data" / "general", n_train=48, n_test=8)
    generate_landcover(root / "data" / "landcover", n_train=32, n_test=8)
    return root


def write_recipe(folder: Path, data_dir: Path, steps: int = 6, save_every: int = 3, vision: str = "frozen") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").exists() or (folder / "data").symlink_to(data_dir / "data")
    path = folder / "tiny.yaml"
    path.write_text(RECIPE.format(steps=steps, save_every=save_every, vision=vision))
    return path


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_lora_trains_only_the_chosen_part():
    vlm, _ = model.load("pocket-tiny-scratch")
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    settings = {"vision": PartSetting("frozen"), "projector": PartSetting("frozen"), "llm": PartSetting("lora", lr=1e-2, r=4)}
    peft_model = apply_parts(vlm, settings)
    summary = trainable_summary(peft_model)
    assert summary["vision"][0] == 0 and summary["projector"][0] == 0 and summary["llm"][0] > 0
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".language_model." in n for n in trainable)
    # the vision tower also has q_proj/k_proj/v_proj: none of them may be wrapped
    assert not any("vision_tower" in n and "lora_" in n for n, _ in peft_model.named_parameters())
    optimizer = torch.optim.AdamW(parameter_groups(peft_model, settings, 0.0))
    ids = torch.tensor([[20, 30, 40, 50, 60]])
    out = peft_model(input_ids=ids)
    out.logits.float().pow(2).mean().backward()
    optimizer.step()
    merged = peft_model.merge_and_unload()
    after = merged.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("language_model.") for k in changed)


@pytest.mark.parametrize("projector", ["qformer", "resampler"])
def test_projector_lora_wraps_only_linears_that_train(projector):
    # nn.MultiheadAttention reads out_proj.weight directly: a LoRA on it would sit in the summary and never train
    vlm, _ = model.load("pocket-tiny", projector=projector, projector_options={"num_queries": 4})
    settings = {"vision": PartSetting("frozen"), "projector": PartSetting("lora", r=4, dropout=0.0),
                "llm": PartSetting("frozen")}
    peft_model = apply_parts(vlm, settings)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_()  # so that lora_A gets a gradient too
    peft_model.base_model.model.get_image_features(torch.randn(2, 3, 112, 112)).pow(2).sum().backward()
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(p.grad is not None and p.grad.abs().max() > 0 for p in trainable.values())
    assert trainable_summary(peft_model)["projector"][0] == sum(p.numel() for p in trainable.values())
    with pytest.raises(ValueError, match="inside nn.MultiheadAttention .* cannot reach"):
        apply_parts(model.load("pocket-tiny", projector=projector, projector_options={"num_queries": 4})[0],
                    {"projector": PartSetting("lora", targets=("out_proj",))})


@pytest.mark.parametrize("projector", [None, "qformer"])
def test_weight_decay_spares_norms_and_biases_only_as_transformers_trainer_does(projector):
    # the rule skipped every name with "embeddings" (the vision patch embedding) and decayed embed_tokens / lm_head
    from transformers import Trainer

    vlm, _ = model.load("pocket-tiny-scratch", **({"projector": projector} if projector else {}))
    settings = {"vision": PartSetting("full"), "projector": PartSetting("full"), "llm": PartSetting("lora", r=4)}
    for net in (vlm, apply_parts(vlm, settings)):
        names = {n for n, _ in net.named_parameters()}
        expected = set(Trainer.get_decay_parameter_names(None, net)) & names
        decayed = {id(p) for g in parameter_groups(net, settings, 0.1) if g["weight_decay"] for p in g["params"]}
        assert {n for n, p in net.named_parameters() if id(p) in decayed} == expected & {
            n for n, p in net.named_parameters() if p.requires_grad}
    assert "base_model.model.vision_tower.embeddings.patch_embeddings.projection.weight" in expected
    assert any("embed_tokens" in n for n in expected) and not any(".bias" in n or "norm" in n for n in expected)


def test_the_summary_counts_a_zero3_partitioned_parameter_at_its_full_size():
    vlm, _ = model.load("pocket-tiny-scratch")
    sizes = {n: p.numel() for n, p in vlm.named_parameters()}
    expected = trainable_summary(vlm)
    for name, param in vlm.named_parameters():  # as deepspeed.initialize leaves them under ZeRO-3
        param.data = torch.empty(0, dtype=param.dtype)
        param.ds_numel = sizes[name]
    assert trainable_summary(vlm) == expected and expected["projector"][1] > 0


def test_per_part_learning_rates_and_targets():
    vlm, _ = model.load("pocket-tiny-scratch")
    settings = {"vision": PartSetting("lora", lr=1e-5, r=2, targets=("fc1",)), "projector": PartSetting("full", lr=1e-4),
                "llm": PartSetting("lora", lr=1e-3, r=8, targets=("q_proj", "v_proj"))}
    peft_model = apply_parts(vlm, settings)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_A" in n]
    assert all(n.split(".lora_A")[0].endswith(("mlp.fc1", "self_attn.q_proj", "self_attn.v_proj")) for n in names)
    assert any("vision_tower" in n for n in names) and any("language_model" in n for n in names)
    lrs = {g["part"]: g["lr"] for g in parameter_groups(peft_model, settings, 0.01)}
    assert lrs == {"vision": 1e-5, "projector": 1e-4, "llm": 1e-3}
    with pytest.raises(ValueError, match="match no Linear"):
        apply_parts(model.load("pocket-tiny-scratch")[0], {"llm": PartSetting("lora", targets=("nope",))})


@pytest.mark.parametrize("part, targets, typo, near", [
    ("vision", ("fc1", "fc_2"), "fc_2", "fc2"), ("projector", ("linear_1", "linear2"), "linear2", "linear_2"),
    ("llm", ("q_proj", "v_prj"), "v_prj", "v_proj")])
def test_a_misspelt_lora_target_beside_a_correct_one_is_refused(part, targets, typo, near):
    # it was dropped without a word: only the correct target was wrapped
    vlm, _ = model.load("pocket-tiny-scratch")
    with pytest.raises(ValueError) as caught:
        apply_parts(vlm, {part: PartSetting("lora", targets=targets)})
    message = str(caught.value)
    assert message.startswith(f"parts.{part}.lora.targets: LoRA targets [{typo!r}] match no Linear module in the {part}")
    assert f"{typo!r} — did you mean {near!r}?" in message and "\n" not in message


def test_training_run_writes_checkpoints_logs_and_a_merged_model(tmp_path, data_dir, example_image):
    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=6, save_every=2))
    final = train(recipe, progress=False)
    out = Path(recipe.output.dir)
    log = read_log(out)
    assert [e["step"] for e in log] == list(range(1, 7))
    from adapt import allocator

    assert allocator._applied is sys.platform.startswith("linux")  # the run kept freed memory (tests/test_allocator.py)
    assert all("loss/landcover" in e or "loss/general" in e for e in log)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]  # keep_last 2
    ckpt = out / "checkpoint-6"
    assert {p.name for p in ckpt.iterdir()} == {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors",
                                               "trainer_state.json", "recipe.yaml", "manifest.json"}
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    assert (out / "loss.png").is_file() and list((out / "tensorboard").iterdir())
    from adapt.checkpointing import not_run_outputs

    assert not_run_outputs(out) == []  # a quick start may start such a folder over (RUN_OUTPUTS names all of it)
    trained = load_file(str(ckpt / "trainable.safetensors"))
    assert any("lora_A" in k for k in trained) and not any("vision_tower" in k for k in trained)
    # the final model is merged: plain PocketVLM weights, loadable and usable
    vlm, processor = model.load(final)
    assert not any("lora" in k for k in vlm.state_dict())
    enc = processor([{"role": "user", "content": "Which class?"}], images=[example_image])
    assert vlm.generate(**enc.to_model_inputs(), max_new_tokens=3).shape[1] <= 3


def test_the_run_folder_records_the_mixture_it_trains_on(tmp_path, data_dir):
    """The mixture plan was only printed: a finished run folder did not say which data mix trained it."""
    from adapt.checkpointing import not_run_outputs

    path = write_recipe(tmp_path, data_dir, steps=2, save_every=1)
    recipe = load_recipe(path, ["mixing.epoch_size=40", "mixing.general_ratio=0.25"])
    Trainer(recipe, progress=False).run(stop_after=1)
    out = Path(recipe.output.dir)
    mix = json.loads((out / "mixture.json").read_text())
    assert mix["epoch_size"] == 40 and mix["general_ratio"] == 0.25 and mix["achieved_general_ratio"] == 0.25
    assert {k: (v["kind"], v["records"], v["per_epoch"]) for k, v in mix["sources"].items()} == {
        "landcover": ("domain", 32, 30), "general": ("general", 48, 10)}
    assert mix["warnings"] == [] and not_run_outputs(out) == []
    with pytest.raises(TrainingError, match="mixing.general_ratio"):  # a refused edit: the run's own mix is kept
        Trainer(load_recipe(path, ["mixing.epoch_size=40", "mixing.general_ratio=0.5"]), progress=False)
    assert json.loads((out / "mixture.json").read_text()) == mix


def test_an_unmerged_lora_run_writes_base_weights_and_an_adapter_that_load_merges(tmp_path, data_dir):
    """output.merge_lora: false -- final/ holds the base weights under their own names and the LoRA adapter in
    final/adapter/; loading final/ gives the same model as the merged run. Finishing the same run merged
    removes that adapter (else it would be applied twice)."""
    from adapt.cli import main

    path = write_recipe(tmp_path, data_dir, steps=2, save_every=2)
    assert main(["train", str(path), "--no-progress", "output.merge_lora=false"]) == 0
    final = tmp_path / "out" / "final"
    keys = load_file(str(final / "model.safetensors")).keys()
    assert not [k for k in keys if "lora" in k or "base_layer" in k]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (final / "adapter").iterdir()}
    unmerged, _ = model.load(final)
    base, _ = model.load("pocket-tiny-scratch")
    assert any(not torch.equal(a, b) for a, b in zip(unmerged.language_model.parameters(),
                                                      base.language_model.parameters()))
    assert main(["train", str(path), "--no-progress"]) == 0  # resumes at its last step and writes final/ merged
    assert not (final / "adapter").exists()
    merged, _ = model.load(final)
    for (name, a), b in zip(unmerged.state_dict().items(), merged.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, data_dir):
    steps, save_every = 30, 10
    reference = load_recipe(write_recipe(tmp_path / "reference", data_dir, steps, save_every))
    train(reference, progress=False)
    expected = read_log(Path(reference.output.dir))

    path = write_recipe(tmp_path / "killed", data_dir, steps, save_every)
    out = path.parent / "out"
    proc = subprocess.Popen([sys.executable, "-m", "adapt.cli", "train", str(path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        log = out / "train_log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 15:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert (out / "checkpoint-10").is_dir() and not (out / "final").exists()
    resumed = subprocess.run([sys.executable, "-m", "adapt.cli", "train", str(path), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "checkpoint-10" in resumed.stdout
    got = read_log(out)
    assert [e["step"] for e in got] == list(range(1, steps + 1))
    for a, b in zip(got, expected):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]


# Data-parallel runs must be the one-process run over the same global batch: 8 samples per optimizer step,
# split 1 x 8, 2 ranks x 4, or 2 ranks x 2 micro-batches x 2. LoRA dropout is off, as its masks are
# drawn per rank and per batch shape and could not agree.
EQUIVALENT = ["parts.llm.lora.dropout=0"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, data_dir) -> Path:
    """The reference: one process, the whole global batch of 8 in one micro-batch."""
    path = write_recipe(tmp_path_factory.mktemp("one_process"), data_dir, steps=4, save_every=2)
    recipe = load_recipe(path, [*EQUIVALENT, "training.batch_size=8"])
    train(recipe, progress=False)
    return Path(recipe.output.dir)


def run_cli(folder: Path, data_dir: Path, nproc: int, *overrides: str) -> tuple[Path, str]:
    """`adapt train` on the tiny recipe (4 steps, checkpoints at 2 and 4); the output folder and stdout."""
    path = write_recipe(folder, data_dir, steps=4, save_every=2)
    cmd = [sys.executable, "-m", "adapt.cli", "train", str(path), "--nproc-per-node", str(nproc), "--no-progress",
           *EQUIVALENT, *overrides]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{nproc} process(es)" in run.stdout
    return path.parent / "out", run.stdout


def assert_same_run(out: Path, reference: Path, world: int) -> None:
    """Same losses (whole step, every source) and gradient norms step by step as `reference`, the same
    final weights, and, with several ranks, every rank holding exactly those weights at every checkpoint."""
    got, want = read_log(out), read_log(reference)
    assert [e["step"] for e in got] == [e["step"] for e in want] == [1, 2, 3, 4]
    # fp32 throughout: the runs differ only in summation order and padding (seen: 3e-7 relative). Gradients
    # summed or not reduced, one shard read by both ranks, or reduced in bf16 were off by 3e-5 to 100 %.
    for a, b in zip(got, want):
        assert {k for k in a if k.startswith("loss")} == {k for k in b if k.startswith("loss")}, a["step"]
        for key in (k for k in b if k.startswith("loss") or k == "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    ckpt = {step: out / f"checkpoint-{step}" for step in (2, 4)}
    if world > 1:
        digests = {step: json.loads((c / "trainer_state.json").read_text())["rank_weights_sha256"] for step, c in ckpt.items()}
        assert all(len(d) == world and len(set(d)) == 1 for d in digests.values()), digests
        assert digests[2] != digests[4]  # the digest follows the weights
    weights = load_file(str(ckpt[4] / "trainable.safetensors"))
    expected = load_file(str(reference / "checkpoint-4" / "trainable.safetensors"))
    halfway = load_file(str(reference / "checkpoint-2" / "trainable.safetensors"))
    assert weights.keys() == expected.keys()
    # in norm over all trainable weights, against how far the reference's last two steps moved them (seen:
    # under 1e-4 of it). Not element by element: Adam divides each gradient element by its own RMS, so an
    # element whose gradient is ~0 turns summation-order noise into a visible update.
    moved, off = (torch.cat([(a[k] - b[k]).flatten() for k in expected]).norm().item()
                  for a, b in ((expected, halfway), (weights, expected)))
    assert moved > 1e-3 and off < 1e-3 * moved, (off, moved)


@pytest.mark.slow
def test_two_processes_accumulating_two_micro_batches_each_give_the_same_run(tmp_path, data_dir, one_process_run):
    """grad_accum under DDP: the gradients are all-reduced once per step (`gradient_syncs`), after each rank has
    accumulated both micro-batches: the run is still the one-process run's."""
    out, _ = run_cli(tmp_path, data_dir, 2, "training.batch_size=2", "training.grad_accum=2")
    assert_same_run(out, one_process_run, world=2)


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path, data_dir, one_process_run):
    out, stdout = run_cli(tmp_path, data_dir, 2)
    assert "with DDP" in stdout
    assert_same_run(out, one_process_run, world=2)
    rng = load_file(str(out / "checkpoint-4" / "rng.safetensors"))  # each rank resumes with its own generators
    assert {"rank0.torch", "rank1.torch"} <= rng.keys()
    assert len(json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["rank_random"]) == 2
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_packed_run_is_the_padded_run(tmp_path, data_dir, one_process_run):
    """training.packing puts the step's 8 samples in fewer rows; losses, gradients and weights stay the padded run's."""
    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=4, save_every=2),
                         [*EQUIVALENT, "training.batch_size=8", "training.packing=true"])
    trainer = Trainer(recipe, progress=False)
    batch = trainer._collate([trainer._dataset(0)[i] for i in range(8)])
    assert batch["input_ids"].shape[0] < 8 and batch["segments"].max() == 7  # several samples share a row
    assert trainer.model.language_model.config._attn_implementation == "pocket_packed_sdpa"  # SDPA per span
    trainer.run()
    assert_same_run(Path(recipe.output.dir), one_process_run, world=1)
    final = Path(recipe.output.dir) / "final"
    assert "pocket_packed_sdpa" not in (final / "config.json").read_text()  # a training detail, not the model's
    assert model.load(final)[0].language_model.config._attn_implementation == "sdpa"


def test_the_run_warms_up_for_the_steps_transformers_would(tmp_path, data_dir):
    # int(0.03 * 20) = 0: the first update ran at the full learning rate; transformers warms up for ceil = 1 step
    trainer = Trainer(load_recipe(write_recipe(tmp_path, data_dir, steps=20), ["training.warmup_ratio=0.03"]),
                      progress=False)
    try:
        assert trainer.scheduler.get_last_lr() == [0.0] * len(trainer.optimizer.param_groups)
    finally:
        trainer.close()


def test_the_logged_lr_is_the_one_its_step_trained_with(tmp_path, data_dir):
    # the lr was read after scheduler.step(): each step logged the next one's (warm-up step 1 trains at 0, logged 0.5)
    from adapt.schedule import lr_factor

    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=3, save_every=3),
                         ["training.warmup_ratio=0.6", "logging.tensorboard=false"])
    trainer = Trainer(recipe, progress=False)
    base = trainer.optimizer.param_groups[0]["initial_lr"]
    trainer.run()
    logged = [entry["lr"] for entry in read_log(Path(recipe.output.dir))]
    expected = [base * lr_factor(step, schedule=recipe.training.schedule, warmup=2, total=3) for step in range(3)]
    assert logged == pytest.approx(expected) and logged[0] == 0.0, logged


@pytest.mark.parametrize("steps, said",
                         [(1, "its only step trains at learning rate 0"), (2, "never reaches"), (20, None)])
def test_a_run_that_is_all_warm_up_says_so(tmp_path, data_dir, capsys, steps, said):
    """max_steps 1 with the default warmup_ratio: warm-up rounds up to the one step, which trains at learning rate 0,
    and the run reported success with the weights it started from, without a word. The plan now says so."""
    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=steps), ["training.warmup_ratio=0.6"])
    out = printed_plan(Trainer(recipe, progress=False), capsys)
    if said is None:
        assert "warmup_ratio" not in out, out
    else:
        assert f"training.warmup_ratio 0.6 warms up over every one of the {steps} step(s)" in out and said in out, out


@pytest.mark.parametrize("existed", [False, True])
def test_a_run_that_cannot_load_its_weights_leaves_no_run_folder(tmp_path, data_dir, monkeypatch, existed):
    # the lock made output.dir (and runs/) before the weights were found missing; an empty folder kept its own
    from huggingface_hub import constants

    from model.checkpoints.io import CheckpointError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "runs" / "tiny"
    if existed:
        out.mkdir(parents=True)
    recipe = load_recipe(write_recipe(tmp_path, data_dir), ["model.source=internvl2-1b", f"output.dir={out}"])
    with pytest.raises(CheckpointError, match="OpenGVLab/InternVL2-1B"):
        Trainer(recipe, progress=False)
    assert (out.is_dir() and not any(out.iterdir())) if existed else not (tmp_path / "runs").exists()


def test_the_optimizer_is_torchs_fused_adamw_and_steps_as_the_reference_does(tmp_path, data_dir):
    """The fused kernel (a 7x faster optimizer step on CPU at mid size) takes the step the per-op AdamW takes."""
    trainer = Trainer(load_recipe(write_recipe(tmp_path, data_dir, steps=1)), progress=False)
    assert trainer.optimizer.defaults["fused"]
    groups = [{**g, "params": [p.detach().clone().requires_grad_() for p in g["params"]]}
              for g in trainer.optimizer.param_groups]
    reference = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    for ours, theirs in zip(trainer.optimizer.param_groups, reference.param_groups):
        for p, q in zip(ours["params"], theirs["params"]):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
    trainer.optimizer.step()
    reference.step()
    for ours, theirs in zip(trainer.optimizer.param_groups, reference.param_groups):
        for p, q in zip(ours["params"], theirs["params"]):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    # training.fused_adamw false: the per-op loop, which runs recorded before it (pocket-tiny's) replay bit for bit
    unfused = Trainer(load_recipe(write_recipe(tmp_path / "unfused", data_dir, steps=1), ["training.fused_adamw=false"]),
                      progress=False)
    assert not unfused.optimizer.defaults["fused"]


def test_bad_data_fraction_stops_the_run(tmp_path, data_dir):
    path = write_recipe(tmp_path, data_dir)
    broken = tmp_path / "broken.jsonl"
    lines = (data_dir / "data" / "landcover" / "train.jsonl").read_text().splitlines()
    broken.write_text("\n".join(lines[:10] + ["{not json"] * 5) + "\n")
    recipe = load_recipe(path, [f"data.sources=[{{name: broken, path: {broken}, root: {data_dir / 'data' / 'landcover'}}}]",
                                "mixing.general_ratio=0"])
    with pytest.raises(ValueError, match="broken"):
        Trainer(recipe, progress=False)


def test_data_workers_and_checkpointing_give_the_same_run_and_eval_runs_during_training(tmp_path, data_dir):
    plain = load_recipe(write_recipe(tmp_path / "plain", data_dir, steps=4, save_every=10))
    train(plain, progress=False)
    workers = load_recipe(write_recipe(tmp_path / "workers", data_dir, steps=4, save_every=10),
                          ["training.num_workers=2", "training.gradient_checkpointing=true", "eval.every=2",
                           "eval.max_samples=2"])
    train(workers, progress=False)
    a, b = read_log(Path(plain.output.dir)), read_log(Path(workers.output.dir))
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], abs=1e-6)
    evals = [json.loads(line) for line in (Path(workers.output.dir) / "eval_log.jsonl").read_text().splitlines()]
    # every multiple of eval.every, and the last step
    assert [e["step"] for e in evals] == [2, 4] and "eval/domain" in evals[0] and "eval/general" in evals[0]
    from adapt.checkpointing import not_run_outputs

    assert not_run_outputs(Path(workers.output.dir)) == []


def test_spawned_data_workers_get_the_data_not_the_weights_and_give_the_same_run(tmp_path, data_dir):
    """Where data workers start by spawn or forkserver (macOS; Linux from Python 3.14) the Trainer reaches them
    pickled: its records and processor, not the model, the optimizer or the run folder's lock."""
    import io
    import multiprocessing
    import pickle

    from adapt.checkpointing import RunLock
    from adapt.train import _MicroBatches

    plain = load_recipe(write_recipe(tmp_path / "plain", data_dir, steps=2, save_every=10))
    train(plain, progress=False)
    spawned = load_recipe(write_recipe(tmp_path / "spawned", data_dir, steps=2, save_every=10),
                          ["training.num_workers=1"])
    trainer = Trainer(spawned, progress=False)
    heavy = []

    class Spy(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, (torch.nn.Module, torch.nn.Parameter, torch.optim.Optimizer, RunLock)):
                heavy.append(type(obj).__name__)
            return None

    Spy(io.BytesIO()).dump(_MicroBatches(trainer, 0))
    assert heavy == []
    old = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        trainer.run()
    finally:
        multiprocessing.set_start_method(old, force=True)
    a, b = read_log(Path(plain.output.dir)), read_log(Path(spawned.output.dir))
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], abs=1e-6)


def test_train_and_eval_verbs(tmp_path, data_dir, capsys):
    from adapt.cli import main

    path = write_recipe(tmp_path, data_dir, steps=2, save_every=10)
    assert main(["train", str(path), "--no-progress", "eval.max_samples=3"]) == 0
    assert "final model:" in capsys.readouterr().out
    for bad in (["--model", "a=pocket-tiny", "--model", "a=pocket-tiny-scratch"], ["--model", "=pocket-tiny"],
                ["--model", "adapted="]):  # one model's results would be lost, or a file named predictions_.jsonl
        assert main(["eval", str(path), *bad]) == 1 and "give" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["eval", str(path), "--out", str(tmp_path / "a-file")]) == 1  # refused before any scoring
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "evaluating" not in err
    assert main(["eval", str(path), "eval.max_samples=3", "output.dir=nowhere"]) == 0  # no run there: said so
    assert "note: no adapted model at" in capsys.readouterr().err
    assert main(["eval", str(path), "eval.max_samples=3"]) == 0
    printed = capsys.readouterr().out
    assert "Δ (adapted − base)" in printed and "landcover" in printed and "general" in printed
    report = json.loads((path.parent / "out" / "eval" / "eval.json").read_text())
    assert report["runs"]["adapted"]["sources"]["landcover"]["n"] == 3
    assert (path.parent / "out" / "eval" / "comparison.png").is_file()
    # another evaluation into the same folder: its report replaces this one, and says which files it leaves out
    assert main(["eval", str(path), "eval.max_samples=2", "--model", "other=pocket-tiny"]) == 0
    err = capsys.readouterr().err
    assert "also holds predictions_adapted.jsonl, predictions_base.jsonl from an earlier evaluation" in err


def test_resuming_over_changed_data_is_refused_unless_allowed(tmp_path, data_dir, capsys):
    """Records deleted from a source between a kill and the resume: refused naming the source and the counts
    (the run went on over other data in another order without a word); --allow-changes goes on, said."""
    import shutil

    from adapt.cli import main

    shutil.copytree(data_dir / "data", tmp_path / "data")
    path = write_recipe(tmp_path, data_dir, steps=2, save_every=1)
    assert main(["train", str(path), "--no-progress"]) == 0
    out = tmp_path / "out"
    shutil.rmtree(out / "checkpoint-2")
    shutil.rmtree(out / "final")  # as if killed after step 1
    train_file = tmp_path / "data" / "landcover" / "train.jsonl"
    lines = train_file.read_text().splitlines()
    train_file.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"the training data changed since checkpoint-1 was written (landcover: {len(lines)} -> {len(lines) // 2} " \
           "records)" in err and "--allow-changes" in err
    assert main(["train", str(path), "--no-progress", "--allow-changes"]) == 0
    assert "warning: the training data changed since checkpoint-1" in capsys.readouterr().out


def test_the_printed_next_step_keeps_the_overrides(tmp_path, data_dir, capsys):
    """`adapt train RECIPE output.dir=X` prints `next: adapt eval ...`: run as printed, it scores the run in X
    (it used to drop the overrides and look for the run in the recipe's own output.dir)."""
    import shlex

    from adapt.cli import main

    path = write_recipe(tmp_path / "recipe folder", data_dir, steps=1, save_every=10)
    elsewhere = tmp_path / "runs elsewhere"
    assert main(["train", str(path), "--no-progress", f"output.dir={elsewhere}", "eval.max_samples=2"]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("next: adapt eval "))
    argv = shlex.split(hint.removeprefix("next: adapt ").split("   |   ")[0])
    chat = shlex.split(hint.split("   |   ")[1])  # the folder holds a space: the chat command quotes it too
    assert chat == ["adapt", "chat", "--model", str(elsewhere / "final"), "--image", "IMAGE"]
    assert main(argv) == 0
    assert "adapted" in capsys.readouterr().out and (elsewhere / "eval" / "eval.json").is_file()


def test_model_commands_keep_library_noise_off_stderr(tmp_path, data_dir):
    """What a user sees on stderr is ours: no torchao kernel-load failures, no torch deprecation warnings from
    torchao's import, and with --no-progress no library progress bar (transformers' shard writer)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "adapt.cli"]
    chat = subprocess.run([*cli, "chat", "--example-image", "--max-new-tokens", "2"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert chat.returncode == 0 and [line for line in chat.stderr.splitlines() if not line.startswith("[pocket-tiny:")] == []
    path = write_recipe(tmp_path, data_dir, steps=1, save_every=10)
    run = subprocess.run([*cli, "train", str(path), "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0 and run.stderr == ""
    assert "Setting accelerator" not in run.stdout  # DeepSpeed, imported by transformers, on a CPU-only machine
    # piped into a log without --no-progress: no bars (they were \r-joined frames), the step lines instead
    piped = subprocess.run([*cli, "train", str(path), "output.dir=piped", "logging.every=1"], capture_output=True,
                           text=True, env=env, timeout=600)
    assert piped.returncode == 0 and "\r" not in piped.stdout + piped.stderr and "%|" not in piped.stderr
    assert "step 1/1 loss" in piped.stdout


def test_the_readme_python_snippet_prints_nothing_but_its_answer(tmp_path):
    """README's `import model; model.load(...)` snippet printed torchao's kernel-load failures and torch deprecation
    warnings on stderr (the command line quieted them, library use did not)."""
    from model.resources import assets_dir

    snippet = f"""
import model
vlm, processor = model.load("pocket-tiny")
enc = processor([{{"role": "user", "content": "What is in the image?"}}], images=[{str(assets_dir() / 'example.png')!r}])
new_tokens = vlm.generate(**enc.to_model_inputs(), max_new_tokens=4, eos_token_id=processor.stop_token_ids)
print(processor.decode(new_tokens[0]))
"""
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and run.stdout.strip() and run.stderr == "", run.stderr[-2000:]


def test_our_warnings_print_as_lines_on_the_command_line(tmp_path, data_dir):
    """`adapt eval` with an image whose pixels do not decode: 'warning: skipped 1 of ...', not Python's
    'evaluate.py:197: UserWarning: ...' with the source line under it."""
    import shutil

    shutil.copytree(data_dir / "data", tmp_path / "data")
    path = write_recipe(tmp_path, data_dir)
    first = json.loads((tmp_path / "data" / "landcover" / "test.jsonl").read_text().splitlines()[0])
    image = tmp_path / "data" / "landcover" / first["image"]
    image.write_bytes(image.read_bytes()[:100])  # the header reads, the pixels do not
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "adapt.cli", "eval", str(path), "--model", "base=pocket-tiny-scratch",
                          "data.max_bad_fraction=0.5"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "warning: skipped 1 of" in run.stderr and "UserWarning" not in run.stderr


@pytest.mark.parametrize("verb", ["eval", "train"])
def test_an_empty_source_stops_the_run_naming_the_file(tmp_path, data_dir, capsys, verb):
    """An eval (or training) source whose file is empty used to be scored as nothing at all: no row in the
    report, and skips.md said nothing was skipped. It is a one-line error naming the file."""
    import shutil

    from adapt.cli import main

    shutil.copytree(data_dir / "data", tmp_path / "data")
    path = write_recipe(tmp_path, data_dir)
    empty = tmp_path / "data" / "landcover" / ("test.jsonl" if verb == "eval" else "train.jsonl")
    empty.write_text("\n")
    extra = ["--model", "base=pocket-tiny-scratch"] if verb == "eval" else ["--no-progress"]
    assert main([verb, str(path), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"adapt {verb}: error:") and f"{empty} holds no records" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("stage,nproc", [("zero1", 2), ("zero2", 2), ("zero2", 1), ("zero3", 2)],
                         ids=["zero1", "zero2", "zero2-no-launcher", "zero3"])
def test_deepspeed_zero_run_on_cpu(tmp_path, data_dir, one_process_run, stage, nproc):
    """ZeRO-1 / 2 / 3 over 2 gloo processes with gradient accumulation (2 x 2 x 2 samples) trains exactly like one
    plain process (1 x 8); one process started without a launcher (no RANK, no MASTER_ADDR) runs too."""
    require("deepspeed", "the distributed extra (deepspeed) is part of the dev install")
    out, stdout = run_cli(tmp_path, data_dir, nproc, "distributed.strategy=deepspeed", f"distributed.deepspeed={stage}",
                          f"training.batch_size={8 // nproc // 2}", "training.grad_accum=2")
    assert f"with DeepSpeed ZeRO-{stage[-1]}" in stdout
    assert_same_run(out, one_process_run, world=nproc)
    assert (out / "checkpoint-4" / "trainable.safetensors").is_file() and (out / "final" / "model.safetensors").is_file()
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))
    model.load(out / "final")


def test_a_data_error_in_a_data_parallel_run_is_one_line(tmp_path, data_dir):
    """Every rank met the missing file and said so, then torchrun added a traceback of its own and a "Root Cause"
    table: now rank 0 says it once and the launcher exits 1."""
    path = write_recipe(tmp_path, data_dir, steps=1, save_every=1)
    run = subprocess.run([sys.executable, "-m", "adapt.cli", "train", str(path), "--nproc-per-node", "2",
                          "--no-progress", "data.sources[0].path=nope.jsonl"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("adapt train: error: source") and "nope.jsonl" in errors[0]
    assert not [word for word in ("Traceback", "ChildFailedError", "Root Cause", "OMP_NUM_THREADS")
                if word in run.stderr], run.stderr


def test_epochs_are_trained_in_full_when_an_epoch_is_no_whole_number_of_steps(tmp_path, data_dir):
    """7 samples an epoch at 4 a step: 2 epochs are 14 samples, 4 steps (16). The step count was rounded down
    per epoch (1 step an epoch: 8 samples, 1.1 passes) and each step logged as a whole epoch."""
    from adapt.train import Trainer

    path = write_recipe(tmp_path, data_dir, steps=1, save_every=10)
    recipe = load_recipe(path, ["training.max_steps=null", "training.epochs=2", "mixing.epoch_size=7",
                                "training.batch_size=4", "training.grad_accum=1"])
    trainer = Trainer(recipe, progress=False)
    try:
        assert trainer.steps_per_epoch == 7 / 4 and trainer.total_steps == 4
    finally:
        trainer.close()
    even = Trainer(load_recipe(path, ["training.max_steps=null", "training.epochs=2", "mixing.epoch_size=8",
                                      "training.batch_size=4", "training.grad_accum=1", "output.dir=even"]),
                   progress=False)
    try:
        assert even.total_steps == 4  # a whole number of steps an epoch: exactly that
    finally:
        even.close()


@pytest.mark.parametrize("script,said", [
    ("import os, sys, time\nif os.environ['RANK'] == '0':\n    print('boom', file=sys.stderr); sys.exit(3)\n"
     "time.sleep(60)\n", "boom"),
    ("import os, signal, time\nif os.environ['RANK'] == '1':\n    os.kill(os.getpid(), signal.SIGKILL)\n"
     "time.sleep(60)\n", "adapt: the process of local rank 1 was killed by SIGKILL"),
    # the out-of-memory killer took rank 1 and rank 0's collective failed for want of it (gloo: connection reset by
    # peer): rank 0 exits PEER_LOST without a word, and the killed worker is named (it was rank 0's traceback)
    ("import os, signal, sys, time\nfrom pathlib import Path\nfrom adapt.cli import PEER_LOST\n"
     "pid = Path(sys.argv[1])\nif os.environ['RANK'] == '1':\n    pid.write_text(str(os.getpid())); time.sleep(60)\n"
     "while not pid.exists() or not pid.read_text():\n    time.sleep(0.01)\n"
     "os.kill(int(pid.read_text()), signal.SIGKILL); sys.exit(PEER_LOST)\n",
     "adapt: the process of local rank 1 was killed by SIGKILL"),
])
def test_the_data_parallel_launcher_says_what_failed_once(tmp_path, script, said):
    """A worker that failed has said why; one killed by a signal could not, so the launcher names it (not the peer
    torchrun then stopped with SIGTERM), and torchrun's own traceback never shows (it crashed, naming a field
    ProcessFailure does not have, when a peer was killed before it could say anything)."""
    from adapt.cli import _TORCHRUN

    worker = tmp_path / "worker.py"
    worker.write_text(script)
    run = subprocess.run([sys.executable, "-c", _TORCHRUN, "--standalone", "--nproc_per_node=2", str(worker),
                          str(tmp_path / "pid")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == (3 if said == "boom" else 1)
    assert run.stderr.strip() == said, run.stderr


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_stopped_data_parallel_run_stops_its_workers_and_says_what_is_kept(tmp_path, data_dir, how):
    """kill (SIGTERM) on `adapt train --nproc-per-node 2` exited 143 at once while torchrun's workers trained on to
    the end, orphaned (subprocess.call SIGKILLed torchrun); Ctrl-C said 'interrupted' once per process. Now the
    signal reaches the workers, rank 0 says which checkpoint holds the run, and the stop is said once."""
    path = write_recipe(tmp_path, data_dir, steps=200, save_every=2)
    out = path.parent / "out"
    proc = subprocess.Popen([sys.executable, "-m", "adapt.cli", "train", str(path), "--nproc-per-node", "2",
                             "--no-progress", "training.batch_size=1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint-2").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)  # the adapt process alone, as kill PID does
    else:
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches every process of the group
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == (143 if how == "SIGTERM" else 130), err
    steps = len(read_log(out))
    time.sleep(3)
    assert len(read_log(out)) == steps and not (out / "final").exists()  # no worker trains on
    assert subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout == b""
    assert err.count("stopped after step") == 1 and "checkpoint-" in err, err
    assert err.count("adapt train: terminated" if how == "SIGTERM" else "adapt train: interrupted") == 1, err
    assert "Traceback" not in err, err


def test_a_resume_with_another_global_batch_goes_on_from_the_samples_trained(tmp_path, data_dir):
    """A resume with another process count was taken without a word, and with another batch size (--allow-changes)
    the data went on at step x the new global batch: after 2 steps of 2 samples, 4 a step went on at sample 8, and
    samples 4-7 were never trained. The process count is now recorded and its change refused like a recipe edit;
    allowed, the data goes on from the samples trained."""
    from adapt.train import TrainingError

    path = write_recipe(tmp_path, data_dir, steps=4, save_every=2)
    train(load_recipe(path, ["training.batch_size=2"]), progress=False, stop_after=2)
    state_path = path.parent / "out" / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    assert state["world_size"] == 1 and state["samples_seen"] == 4
    text = state_path.read_text()  # as if 2 processes wrote it (same size, so the manifest still holds)
    state_path.write_text(text.replace('"world_size": 1', '"world_size": 2'))
    with pytest.raises(TrainingError, match=r"processes: 2 -> 1 .*--nproc-per-node 2"):
        Trainer(load_recipe(path, ["training.batch_size=2"]), progress=False)
    trainer = Trainer(load_recipe(path, ["training.batch_size=4"]), progress=False, allow_changes=True)
    try:
        taken: list[int] = []
        trainer._take = lambda k, items, dropped: (taken.append(k), items.append(k))
        trainer._collate = lambda items: {}
        trainer.micro_batch_at(trainer.start_step, 0)
        assert trainer.start_step == 2 and taken == [4, 5, 6, 7]
    finally:
        trainer.close()


def test_a_run_with_augmentation_says_what_it_holds_back(tmp_path, data_dir, capsys):
    """The general (replay) source is never flipped or turned, and the run's plan says how many records are held back."""
    path = write_recipe(tmp_path, data_dir, steps=1, save_every=10)
    path.write_text(path.read_text().replace("mixing:", "  augment: {flips: true, rot90: true, color_jitter: 0.2}\nmixing:"))
    trainer = Trainer(load_recipe(path), progress=False)
    assert trainer.augment.general_sources == {"general"}
    trainer._print_plan(0)
    line, = [line for line in capsys.readouterr().out.splitlines() if "augment (" in line]
    assert "of 80 records flipped / turned" in line and "48 from general sources (untouched)" in line


def test_a_run_that_stops_closes_its_bar_before_the_message(tmp_path, data_dir, capsys, monkeypatch):
    """A non-finite loss (or Ctrl-C) ends the bar's line before the stop message is printed: it landed on the
    bar's line, and a stale bar with a running ETA was drawn again after it."""
    from adapt.train import TrainingError

    def stop(self, step, sums, grad_norm, gradients):
        if step == 2:
            raise TrainingError("step 2: the loss is not finite")

    monkeypatch.setattr(Trainer, "_stop_if_not_finite", stop)
    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=4, save_every=10))
    with pytest.raises(TrainingError) as stopped:  # (holds the run's frames, as the CLI's error path does)
        train(recipe, progress=True)
    err = capsys.readouterr().err
    assert stopped.value and "train:" in err and err.endswith("\n"), err[-200:]


def test_progress_lines_give_step_lines_not_a_bar(tmp_path, data_dir, capsys):
    """`adapt quickstart` into a log hands training progress="lines"; the Trainer read it as true ("lines" and
    rank 0) and drew tqdm frames joined by carriage returns into the log."""
    from model.progress import LINES

    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=2, save_every=10), ["logging.every=1"])
    train(recipe, progress=LINES)
    out, err = capsys.readouterr()
    assert "train:" not in err and "step 2/2" in out, err[-500:]  # (transformers' own save bar: the CLI turns it off)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="the launcher's parent-death signal is Linux's prctl")
def test_the_launcher_stops_when_the_adapt_process_is_killed(tmp_path):
    """kill -9 of `adapt train --nproc-per-node 2` left torchrun and its workers training on, orphaned, holding the
    run folder's lock: torchrun now gets SIGTERM when the adapt process dies, and stops its workers as on kill."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\nfrom adapt.cli import _launch\n"
         "child = _launch([sys.executable, '-c', 'import time; time.sleep(60)'], env=dict(os.environ))\n"
         "print(child.pid, flush=True); time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the launcher outlived the adapt process"


def test_ddp_all_reduces_once_per_optimizer_step(tmp_path):
    """With grad_accum micro-batches DDP all-reduced the gradients after every backward (grad_accum times the
    traffic an optimizer step needs); gradient_syncs leaves all but the last micro-batch's unsynced, and the
    accumulated gradient is the same."""
    import torch.distributed as torch_dist

    from adapt.train import gradient_syncs

    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 2)
        plain = torch.nn.Linear(4, 2)
        plain.load_state_dict(layer.state_dict())
        engine = torch.nn.parallel.DistributedDataParallel(layer)
        reduces = []

        def count(state, bucket):
            reduces.append(1)
            future = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        engine.register_comm_hook(None, count)
        inputs = [torch.randn(3, 4) for _ in range(3)]
        for x, sync in zip(inputs, gradient_syncs(engine, len(inputs))):
            with sync:
                engine(x).sum().backward()
        for x in inputs:
            plain(x).sum().backward()
        assert len(reduces) == 1
        assert torch.allclose(layer.weight.grad, plain.weight.grad) and torch.allclose(layer.bias.grad, plain.bias.grad)
        assert all(isinstance(c, contextlib.nullcontext) for c in gradient_syncs(plain, 3))
    finally:
        torch_dist.destroy_process_group()


def test_the_last_step_is_evaluated_once_when_eval_every_does_not_divide_the_steps(tmp_path, data_dir, monkeypatch):
    """5 steps with eval.every 2 evaluated at 2 and 4 only: the final eval line was not the model the run gives."""
    evaluated = []
    monkeypatch.setattr(Trainer, "_evaluate_main", lambda self, step, writer: evaluated.append(step))
    train(load_recipe(write_recipe(tmp_path / "odd", data_dir, steps=5, save_every=10), ["eval.every=2"]),
          progress=False)
    assert evaluated == [2, 4, 5]
    evaluated.clear()
    train(load_recipe(write_recipe(tmp_path / "even", data_dir, steps=4, save_every=10), ["eval.every=2"]),
          progress=False)
    assert evaluated == [2, 4]  # the last step once


def test_a_run_stopped_after_n_steps_evaluates_step_n(tmp_path, data_dir, monkeypatch):
    """`run(stop_after=3)` with eval.every 2 evaluated step 2 only: the checkpoint it returns was never scored,
    though a full run scores its last step. The stop point is scored (once), as the end of a full run is."""
    evaluated = []
    monkeypatch.setattr(Trainer, "_evaluate_main", lambda self, step, writer: evaluated.append(step))
    path = write_recipe(tmp_path, data_dir, steps=5, save_every=10)
    train(load_recipe(path, ["eval.every=2"]), progress=False, stop_after=3)
    assert evaluated == [2, 3]
    evaluated.clear()
    train(load_recipe(path, ["eval.every=2"]), progress=False)  # resumed from checkpoint-3: step 3 not again
    assert evaluated == [4, 5]
    evaluated.clear()
    train(load_recipe(write_recipe(tmp_path / "even", data_dir, steps=5, save_every=10), ["eval.every=2"]),
          progress=False, stop_after=4)
    assert evaluated == [2, 4]  # the stop point once


def test_a_killed_rank_0_is_named_with_the_checkpoint_to_resume_from(tmp_path, data_dir):
    """Rank 0 says which checkpoint holds the run; killed (kill -9, the out-of-memory killer) it could not, and the
    launcher's line named the rank alone."""
    from adapt.cli import _TORCHRUN, RUN_FOLDER_ENV

    recipe = load_recipe(write_recipe(tmp_path, data_dir, steps=6, save_every=2))
    Trainer(recipe, progress=False).run(stop_after=3)  # checkpoints 2 and 3
    worker = tmp_path / "worker.py"
    worker.write_text("import os, signal, time\nif os.environ['RANK'] == '0':\n"
                      "    os.kill(os.getpid(), signal.SIGKILL)\ntime.sleep(60)\n")
    run = subprocess.run([sys.executable, "-c", _TORCHRUN, "--standalone", "--nproc_per_node=2", str(worker)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1", RUN_FOLDER_ENV: str(recipe.output.dir)})
    assert run.returncode == 1
    assert run.stderr.strip() == ("adapt: the process of local rank 0 was killed by SIGKILL; checkpoint-3 holds "
                                  "step 3: run the same command to resume from it"), run.stderr
