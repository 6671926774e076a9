"""Training throughput: `adapt train` against a plain PyTorch loop and a transformers `Trainer`, same run.

    python bench/bench_train.py [--models pocket-tiny,mid] [--precision fp32,bf16] [--steps N] [--batch-size B]
                                [--grad-accum A] [--repeats R] [--threads T] [--adapt-variant NAME=key=value[,...]]
                                [--write]

The data is `adapt quickstart`'s (adapt/quickstart.py prepare_landcover: land-cover + general replay, generated once
into a temporary folder) and the recipe its `quickstart` template, with `training.max_steps`, `batch_size`,
`grad_accum` and `precision` set from the flags. Three runners train the same model from the same weights on the same
micro-batches (the recipe's mixture order, epoch 0 on) with the same trainable parts (the recipe's `parts`: projector +
LLM in full, vision frozen), AdamW with the recipe's per-part learning rates and weight decay, the same schedule,
gradient clipping, batch size, accumulation and max_seq_length:

- `adapt train`: adapt/train.py's `Trainer(recipe).run()`, in process as the CLI runs it; steady-state time is the sum of its
  train_log.jsonl `step_time` entries after the warm-up steps; its end-to-end wall time (model load, data measuring,
  the steps, the final save) is reported apart;
- plain loop: the same dataset and collate (adapt/data/dataset.py), `model(**batch).logits`, a summed
  cross-entropy over the step's supervised tokens, `clip_grad_norm_`, torch's default AdamW, written here;
- transformers `Trainer`: `transformers.Trainer` + `TrainingArguments` over a torch Dataset of the same samples and
  the same collate, in order (a sequential sampler), with the same schedule and the AdamW `Trainer` builds when a
  script names no optimizer (`Trainer.get_optimizer_cls_and_kwargs`: torch's fused kernel from torch 2.8 on) over the
  same per-part groups, passed in; `compute_loss` is overridden only to feed the VLM (the collate's `sources` key)
  and to take the same token-summed loss.

Each run is a fresh process (no runner inherits another's allocator state or heap) and times `--steps`
optimizer steps after 2 warm-up steps; the runners and the precisions are interleaved (fp32 A, B, C, bf16 A, B, C,
fp32 A, B, C, ... `--repeats` times) and the median run is reported: samples/s, supervised tokens/s (labels the loss
is taken over) and tokens/s (non-pad input tokens, image tokens included). `--precision bf16`:
`training.precision=bf16` / `torch.autocast("cpu", torch.bfloat16)` / `TrainingArguments(bf16=True)`. The mean loss
of the last steps is kept per runner and precision (same seed, same data) so that bf16 can be held against fp32.

Achieved GFLOP/s: the FLOPs of one optimizer step's forward + backward counted by `torch.utils.flop_counter.
FlopCounterMode` (fp32, first timed step), scaled to every timed step by its padded token positions, over the step
time; set against the fp32 and bf16 `torch.matmul` peaks (2048 x 2048, best of several, measured in the same run at
the start and the end, same thread count). `--adapt-variant NAME=key=value[,key=value]` adds an `adapt train` runner
with those recipe overrides (e.g. `packed=training.packing=true`); an item `env:NAME=VALUE` sets an environment
variable in that runner's process instead (e.g. `system-malloc=env:POCKET_ADAPT_KEEP_FREED_MEMORY=0`).

`mid`: pocket-tiny's vision tower, projector shape and tokenizer with a Qwen2 language model of ~170 M parameters
(hidden 1024, 14 layers, MLP 2816, 16 heads / 4 KV heads), random weights, saved once into the work folder; nothing is
downloaded. `internvl2-1b`: that preset at its real shapes with seeded random weights and the pocket-tiny tokenizer
(bench_real_sizes.build_checkpoint), for a GPU. `--write` puts the table into BENCHMARKS.md (section
train-throughput).

On a machine where torch sees a CUDA GPU every runner trains there (adapt train picks it on its own): step times are
wall clock with CUDA synchronised at each step's end, the peaks are 8192 x 8192 products on the GPU, and the block
reports TFLOP/s, MFU (against the measured bf16 peak) and each run's peak GPU memory instead of CPU-time ratios
(bench/gpu_train.sh runs it). `--workers N` gives every runner N data-loader workers; `--profile DIR` writes each run's
torch.profiler tables of its timed steps (operators by device and by CPU time, device busy time per step).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTION = "train-throughput"
WARMUP = 2
RUNNERS = ("adapt", "plain", "hf")
LABELS = {"adapt": "adapt train", "plain": "plain PyTorch loop", "hf": "transformers Trainer"}
IGNORE = -100
LAST_K = 4  # steps whose mean loss is compared between precisions

MID_TEXT = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=14, num_attention_heads=16,
                num_key_value_heads=4)


# ---------------------------------------------------------------------------------------------------- setup
def prepare_data(data: Path, n_train: int | None = None, n_test: int = 20) -> Path:
    """`adapt quickstart`'s land-cover data (prepare_landcover); `n_train` makes a smaller copy (tests)."""
    if n_train is None:
        from adapt.quickstart import prepare_landcover

        prepare_landcover(data)
    else:
        from domains.general.world import generate_general, generate_landcover

        generate_general(data / "general", n_train=n_train, n_test=n_test, answer_style="label")
        generate_landcover(data / "landcover", n_train=n_train, n_test=n_test, answer_style="label")
    return data


QWEN2_VOCAB = 151_936  # Qwen2's embedding rows (InternVL2-1B / Mini-InternVL's language model)


def build_mid(out: Path, vocab_size: int | None = None) -> Path:
    """pocket-tiny's vision tower / tokenizer with a ~170 M-parameter Qwen2 text model, random weights, saved;
    ``vocab_size`` widens its embeddings and head (the tokenizer's ids stay pocket-tiny's, all below it)."""
    import torch
    from transformers import Qwen2Config

    import model as model_core
    from model.presets import preset_config
    from model.processor import VLMProcessor
    from model.vlm import PocketVLM

    if (out / "config.json").is_file():
        return out
    _, processor = model_core.load("pocket-tiny")
    config = preset_config("pocket-tiny")
    text = config.text_config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "_name_or_path", "layer_types",
                "max_window_layers"):
        text.pop(key, None)
    text.update(MID_TEXT)
    if vocab_size:
        text["vocab_size"] = vocab_size
    config.text_config = Qwen2Config(**text)
    torch.manual_seed(0)
    vlm = PocketVLM(config)
    model_core.save(vlm, VLMProcessor.from_config(vlm.config, processor.tokenizer), out)
    return out


PRESET_MODELS = ("internvl2-1b",)  # public-model presets at their real shapes, random weights (GPU runs)


def build_preset(preset: str, out: Path) -> Path:
    """The preset with seeded random weights and the pocket-tiny tokenizer (bench_real_sizes.build_checkpoint), built
    in a child process so that this one never holds the model."""
    from bench.bench_real_sizes import build_checkpoint

    if not (out / "config.json").is_file():
        in_fresh_process(build_checkpoint, preset, out)
    return out


@dataclass
class Setup:
    """One model size over the quick-start data: where its recipe lives and the overrides every run shares."""

    name: str
    work: Path
    recipe_path: Path
    base: list[str]
    device: str = "cpu"  # "cuda" where torch sees a GPU: adapt train picks it on its own, the other runners follow
    profile: str | None = None  # --profile: a folder for each run's torch.profiler tables
    records: dict | None = None  # measured records, shared by the plain loop and the Trainer runs
    plan: object = None
    info: dict = field(default_factory=dict)

    def recipe(self, precision: str, out: str, extra: list[str] = (), steps: int | None = None):
        from adapt.recipe import load_recipe, path_override

        overrides = [*self.base, f"training.precision={precision}", *extra,
                     path_override("output.dir", (self.work / "runs" / out).resolve())]
        if steps is not None:
            overrides.append(f"training.max_steps={steps}")
        return load_recipe(self.recipe_path, overrides)


def make_setup(name: str, work: Path, data: Path, steps: int, batch_size: int, grad_accum: int,
               max_seq_length: int | None = None, workers: int = 0) -> Setup:
    from adapt.recipe import path_override
    from model.resources import templates_dir

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    recipe_path = folder / "quickstart.yaml"
    shutil.copyfile(templates_dir() / "recipes" / "quickstart.yaml", recipe_path)
    link = folder / "data"
    if not link.exists():
        link.symlink_to(data.resolve(), target_is_directory=True)
    source = {"pocket-tiny": "pocket-tiny"}.get(name, name)
    if name == "mid":
        source = str(build_mid(work / "mid-model").resolve())
    if name == "mid-qwen2-vocab":  # LoRA on the LLM (r 16), as on a real InternVL2-1B: the 151,936-row head is frozen
        source = str(build_mid(work / "mid-qwen2-vocab-model", QWEN2_VOCAB).resolve())
    if name in PRESET_MODELS:
        source = str(build_preset(name, work / f"{name}-model").resolve())
    base = [path_override("model.source", source), f"training.max_steps={WARMUP + steps}",
            f"training.batch_size={batch_size}",
            f"training.grad_accum={grad_accum}", "output.save_every=1000000", "eval.every=null"]
    if workers:
        base.append(f"training.num_workers={workers}")
    if name == "mid-qwen2-vocab":
        base += ["parts.llm.mode=lora", "parts.llm.lora.r=16", "parts.llm.lora.alpha=32"]
    if max_seq_length:
        base.append(f"training.max_seq_length={max_seq_length}")
    return Setup(name, folder, recipe_path, base, device=default_device())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so that a wall-clock step time counts it (CUDA runs asynchronously)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class StepProfile:
    """torch.profiler over a run's timed steps (after the warm-up), `step()` called at each optimizer step's end;
    `save` writes the operators by device time and by CPU time and the device's busy time per step (--profile)."""

    def __init__(self, setup: Setup, label: str, steps: int):
        import torch

        self.path = Path(setup.profile) / f"{label}.txt" if setup.profile else None
        self.steps = steps - WARMUP
        self.prof = None
        if self.path and self.steps > 0:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if setup.device == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            schedule = torch.profiler.schedule(wait=WARMUP - 1, warmup=1, active=self.steps)
            self.prof = torch.profiler.profile(activities=activities, schedule=schedule)
            self.prof.start()

    def step(self) -> None:
        if self.prof:
            self.prof.step()

    def save(self, step_times: list[float]) -> None:
        if not self.prof:
            return
        self.prof.stop()
        from torch.autograd import DeviceType

        events = self.prof.key_averages()
        # kernels and copies only (device-side events), as the table's own "Self CUDA time total" counts them
        device_us = sum(e.self_device_time_total for e in events
                        if e.device_type == DeviceType.CUDA and not e.is_user_annotation)
        timed = step_times[WARMUP:WARMUP + self.steps]
        lines = [f"timed steps profiled: {len(timed)}; wall per step {1e3 * sum(timed) / max(1, len(timed)):.1f} ms; "
                 f"device busy per step (sum of kernel self times) {device_us / 1e3 / max(1, self.steps):.1f} ms", ""]
        for key in ("self_device_time_total", "self_cpu_time_total"):
            try:
                lines += [f"## by {key}", events.table(sort_by=key, row_limit=40), ""]
            except (KeyError, AttributeError, RuntimeError) as exc:  # no device times on a CPU-only run
                lines.append(f"## by {key}: {exc}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_model(recipe, device: str = "cpu"):
    """The model, processor, tiling and AdamW parameter groups exactly as adapt/train.py's `_setup` makes them."""
    import torch

    import model as model_core
    from adapt.parts import apply_parts, parameter_groups, part_settings

    seed_everything(recipe.seed)
    vlm, processor = model_core.load(recipe.model.source, allow_pickle=recipe.model.allow_pickle,
                                     chat_template=recipe.model.chat_template, projector=recipe.model.projector,
                                     projector_options=recipe.model.projector_options, vision=recipe.model.vision)
    vlm = vlm.to(getattr(torch, recipe.model.dtype))
    tiling = recipe.tiling_for(processor.tiling)
    processor.tiling = tiling
    vlm.config.tiling = tiling.to_dict()
    settings = part_settings(recipe)
    model = apply_parts(vlm, settings).to(device)
    model.train()
    return model, processor, tiling, parameter_groups(model, settings, recipe.training.weight_decay)


def optimizer_and_schedule(recipe, groups, trainer_args=None):
    """AdamW over the per-part groups and the recipe's schedule. With `trainer_args` the AdamW that
    `transformers.Trainer` builds for them when a script names no optimizer (from torch 2.8 on its default
    ``adamw_torch_fused``); without, torch's default implementation, as a script from the PyTorch docs gets."""
    import torch
    from transformers import get_scheduler

    from adapt.schedule import warmup_steps

    t = recipe.training
    if trainer_args is None:
        optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    else:
        from transformers import Trainer

        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(trainer_args)
        if cls is not torch.optim.AdamW:
            raise SystemExit(f"Trainer's default optimizer is {cls.__name__} here, not AdamW: update the bench")
        kwargs.pop("lr", None)  # each part's group has its own
        optimizer = cls(groups, **kwargs)
    scheduler = get_scheduler("constant_with_warmup" if t.schedule == "constant" else t.schedule, optimizer,
                              num_warmup_steps=warmup_steps(t.warmup_ratio, t.max_steps), num_training_steps=t.max_steps)
    return optimizer, scheduler


def optimizer_settings(optimizer) -> dict:
    """The AdamW settings a runner trained with (its kernel included: fused, foreach or per tensor)."""
    return {k: optimizer.defaults.get(k) for k in ("betas", "eps", "fused", "foreach")}


def ensure_records(setup: Setup, recipe, processor, tiling) -> None:
    from adapt.data.mixture import MixturePlan
    from adapt.data.samples import SkipLog
    from adapt.train import load_records, source_specs

    if setup.records is None:
        specs = source_specs(recipe.data.sources)
        setup.records = load_records(specs, processor, recipe.training.max_seq_length, SkipLog(), tiling)
        setup.plan = MixturePlan.from_sources(specs, setup.records, recipe.mixing.general_ratio,
                                              recipe.mixing.epoch_size, recipe.mixing.seed)


class Samples:
    """Sample k of the run (the mixture order, epoch after epoch) -- what adapt train's micro-batches hold."""

    def __init__(self, setup: Setup, recipe, processor, tiling, n: int):
        self.setup, self.recipe, self.processor, self.tiling, self.n = setup, recipe, processor, tiling, n
        self._epoch = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int):
        from adapt.data.dataset import SupervisedDataset
        from adapt.data.samples import SkipLog

        epoch, index = divmod(k, len(self.setup.plan))
        if self._epoch is None or self._epoch[0] != epoch:
            ds = SupervisedDataset(self.setup.records, self.setup.plan.epoch(epoch), self.processor,
                                   self.recipe.training.max_seq_length, SkipLog(), self.tiling, epoch=epoch)
            self._epoch = (epoch, ds)
        return self._epoch[1][index]


def torch_dataset(samples: Samples):
    import torch

    class _Dataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, k):
            return samples[k]

    return _Dataset()


# ---------------------------------------------------------------------------------------------------- stats
def batch_stats(batch: dict) -> dict:
    """Samples (a packed row holds several: `segments` numbers them), supervised tokens (the shifted labels the loss
    is taken over), non-pad tokens, padded positions."""
    labels = batch["labels"]
    mask, segments = batch.get("attention_mask"), batch.get("segments")
    samples = int(segments.max()) + 1 if segments is not None else int(labels.shape[0])
    tokens = int(mask.sum()) if mask is not None else int((segments >= 0).sum()) if segments is not None \
        else int(labels.numel())
    return {"rows": samples, "supervised": int((labels[:, 1:] != IGNORE).sum()), "tokens": tokens,
            "positions": int(batch["input_ids"].numel())}


def step_stats(micro: list[dict]) -> dict:
    return {k: sum(m[k] for m in micro) for k in ("rows", "supervised", "tokens", "positions")}


def ce_sum(logits, labels):
    """Summed next-token cross-entropy in float32 and the number of supervised tokens."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((shift_labels != IGNORE).sum())


def _autocast(precision: str, device: str = "cpu"):
    import torch

    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


# ---------------------------------------------------------------------------------------------------- runners
def run_adapt(setup: Setup, precision: str, extra: list[str] = (), name: str = "adapt",
              steps: int | None = None) -> dict:
    """adapt/train.py's Trainer in this process (its loop as it is; micro-batch sizes read off on the side)."""
    from adapt.train import Trainer

    class _Counting(Trainer):
        def _batch_units(self, batch):
            self.bench_micro.append(batch_stats(batch))
            return super()._batch_units(batch)

        def _log(self, *args, **kwargs):  # once per optimizer step, at its end
            out = super()._log(*args, **kwargs)
            self.bench_cpu.append(time.process_time())
            self.bench_profile.step()
            return out

    recipe = setup.recipe(precision, name, list(extra), steps)
    shutil.rmtree(recipe.output.dir, ignore_errors=True)
    _Counting.bench_micro = []
    started = time.perf_counter()
    trainer = _Counting(recipe, progress=False)
    trainer.bench_micro = []
    trainer.bench_cpu = [time.process_time()]
    trainer.bench_profile = StepProfile(setup, f"{name}-{precision}", recipe.training.max_steps)
    set_up = time.perf_counter() - started
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            trainer.run()
        finally:
            sys.stdout = stdout
    wall = time.perf_counter() - started
    log = [json.loads(line) for line in (Path(recipe.output.dir) / "train_log.jsonl").read_text().splitlines() if line]
    trainer.bench_profile.save([e["step_time"] for e in log])
    accum = recipe.training.grad_accum
    micro = trainer.bench_micro
    cpu = trainer.bench_cpu
    steps_out = [{**step_stats(micro[i * accum:(i + 1) * accum]), "loss": e["loss"], "time": e["step_time"],
                  "cpu": cpu[i + 1] - cpu[i]} for i, e in enumerate(log)]
    del trainer
    gc.collect()
    shutil.rmtree(recipe.output.dir, ignore_errors=True)
    after = wall - set_up - sum(e["step_time"] for e in log)  # tensorboard/log set-up, final save, loss plot
    from adapt import allocator

    return {"steps": steps_out, "wall_s": wall, "setup_s": set_up, "after_s": after,
            "kept_freed_memory": allocator._applied}


def run_plain(setup: Setup, precision: str, steps: int | None = None) -> dict:
    """A plain PyTorch loop over the same data, weights and optimizer."""
    import torch

    from adapt.data.dataset import collate

    recipe = setup.recipe(precision, "plain", steps=steps)
    t = recipe.training
    model, processor, tiling, groups = load_model(recipe, setup.device)
    ensure_records(setup, recipe, processor, tiling)
    optimizer, scheduler = optimizer_and_schedule(recipe, groups)
    params = [p for p in model.parameters() if p.requires_grad]
    samples = Samples(setup, recipe, processor, tiling, t.max_steps * t.grad_accum * t.batch_size)
    loader = iter(torch.utils.data.DataLoader(torch_dataset(samples), batch_size=t.batch_size, shuffle=False,
                                              num_workers=t.num_workers,
                                              collate_fn=partial(collate, processor=processor)))
    out = []
    profile = StepProfile(setup, f"plain-{precision}", t.max_steps)
    last, last_cpu = time.perf_counter(), time.process_time()
    for _ in range(t.max_steps):
        micro = [next(loader) for _ in range(t.grad_accum)]
        stats = [batch_stats(b) for b in micro]
        step_tokens = max(1, sum(s["supervised"] for s in stats))
        loss_total = 0.0
        for batch in micro:
            batch.pop("sources"), batch.pop("n_dropped", None)
            batch = {k: v.to(setup.device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with _autocast(precision, setup.device):
                logits = model(**batch).logits
            loss, _ = ce_sum(logits, labels)
            (loss / step_tokens).backward()
            loss_total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(setup.device)
        now = time.perf_counter()
        now_cpu = time.process_time()
        out.append({**step_stats(stats), "loss": loss_total / step_tokens, "time": now - last,
                    "cpu": now_cpu - last_cpu})
        last, last_cpu = now, now_cpu
        profile.step()
    profile.save([s["time"] for s in out])
    settings = optimizer_settings(optimizer)
    del model, optimizer
    gc.collect()
    return {"steps": out, "optimizer": settings}


def run_hf(setup: Setup, precision: str, steps: int | None = None) -> dict:
    """transformers.Trainer over the same samples, collate, weights, optimizer and schedule."""
    import torch
    import transformers
    from transformers import TrainerCallback, TrainingArguments

    from adapt.data.dataset import collate

    recipe = setup.recipe(precision, "hf", steps=steps)
    t = recipe.training
    model, processor, tiling, groups = load_model(recipe, setup.device)
    ensure_records(setup, recipe, processor, tiling)
    samples = Samples(setup, recipe, processor, tiling, t.max_steps * t.grad_accum * t.batch_size)
    record = {"micro": [], "loss": 0.0, "steps": [], "items": []}

    class _VLMTrainer(transformers.Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            inputs.pop("sources", None), inputs.pop("n_dropped", None)
            record["micro"].append(batch_stats(inputs))
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss, n = ce_sum(outputs.logits, labels)
            record["loss"] += float(loss.detach())
            denominator = num_items_in_batch if num_items_in_batch is not None else n * t.grad_accum
            record["items"].append(int(num_items_in_batch) if num_items_in_batch is not None else None)
            loss = loss / denominator
            return (loss, outputs) if return_outputs else loss

    class _Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            record["last"], record["last_cpu"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(setup.device)
            now = time.perf_counter()
            micro, record["micro"] = record["micro"], []
            stats = step_stats(micro)
            record["steps"].append({**stats, "loss": record["loss"] / max(1, stats["supervised"]),
                                    "time": now - record["last"], "cpu": time.process_time() - record["last_cpu"]})
            record["loss"], record["last"], record["last_cpu"] = 0.0, now, time.process_time()
            profile.step()

    args = TrainingArguments(
        output_dir=str(setup.work / "runs" / "hf"), report_to=[], save_strategy="no", logging_strategy="no",
        max_steps=t.max_steps, per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=recipe.parts.llm.lr, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        dataloader_num_workers=t.num_workers, dataloader_pin_memory=False, use_cpu=setup.device == "cpu",
        bf16=precision == "bf16",
        seed=recipe.seed, disable_tqdm=True, remove_unused_columns=False,
    )
    optimizer, scheduler = optimizer_and_schedule(recipe, groups, trainer_args=args)
    trainer = _VLMTrainer(model=model, args=args, train_dataset=torch_dataset(samples),
                          data_collator=partial(collate, processor=processor), optimizers=(optimizer, scheduler),
                          callbacks=[_Clock()])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    trainer.model_accepts_loss_kwargs = True  # count the step's supervised tokens (labels[..., 1:]) up front
    profile = StepProfile(setup, f"hf-{precision}", t.max_steps)
    trainer.train()
    profile.save([s["time"] for s in record["steps"]])
    settings = optimizer_settings(optimizer)
    del trainer, model, optimizer
    gc.collect()
    return {"steps": record["steps"], "num_items": record["items"], "optimizer": settings}


# ---------------------------------------------------------------------------------------------------- FLOPs, peaks
def matmul_peak(dtype_name: str, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """GFLOP/s of the best of `repeats` torch.matmul calls on n x n random matrices (on a GPU: 8192 x 8192, the
    mean of 10 products after 3 warm-ups, per repeat)."""
    import torch

    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype_name])
    per = 1
    if device == "cuda":
        n, per = 8192, 10
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    for _ in range(3 if device == "cuda" else 1):
        torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(per):
            torch.matmul(a, b)
        synchronize(device)
        best = min(best, (time.perf_counter() - t0) / per)
    return 2 * n ** 3 / best / 1e9


def count_flops(setup: Setup, precision: str = "fp32") -> dict:
    """Forward + backward FLOPs of the first timed step (FlopCounterMode), per padded token position."""
    from torch.utils.flop_counter import FlopCounterMode

    from adapt.data.dataset import collate

    recipe = setup.recipe(precision, "flops")
    t = recipe.training
    model, processor, tiling, _ = load_model(recipe, setup.device)
    ensure_records(setup, recipe, processor, tiling)
    samples = Samples(setup, recipe, processor, tiling, t.max_steps * t.grad_accum * t.batch_size)
    first = WARMUP * t.grad_accum * t.batch_size
    positions = 0
    counter = FlopCounterMode(display=False)
    with counter:
        for m in range(t.grad_accum):
            start = first + m * t.batch_size
            batch = collate([samples[k] for k in range(start, start + t.batch_size)], processor)
            batch.pop("sources"), batch.pop("n_dropped", None)
            batch = {k: v.to(setup.device) for k, v in batch.items()}
            positions += batch["input_ids"].numel()
            labels = batch.pop("labels")
            with _autocast(precision, setup.device):
                loss, n = ce_sum(model(**batch).logits, labels)
            (loss / max(1, n)).backward()
    total = counter.get_total_flops()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    if setup.device == "cuda":  # the runs' processes need the memory this one's allocator keeps
        import torch

        torch.cuda.empty_cache()
    return {"flops_step": total, "positions": positions, "per_position": total / max(1, positions),
            "trainable": trainable, "params": params}


# ---------------------------------------------------------------------------------------------------- driver
def summarise(run: dict, warmup: int = WARMUP) -> dict:
    timed = run["steps"][warmup:]
    secs = sum(s["time"] for s in timed)
    cpu = sum(s["cpu"] for s in timed)
    total = {k: sum(s[k] for s in timed) for k in ("rows", "supervised", "tokens", "positions")}
    losses = [s["loss"] for s in run["steps"]]
    return {"seconds": secs, "samples_s": total["rows"] / secs, "supervised_s": total["supervised"] / secs,
            "tokens_s": total["tokens"] / secs, "positions_s": total["positions"] / secs,
            "cpu_samples_s": total["rows"] / cpu, "cpu_positions_s": total["positions"] / cpu,
            "losses": losses, "wall_s": run.get("wall_s"), "setup_s": run.get("setup_s"), "after_s": run.get("after_s"),
            "gpu_peak_gb": run.get("gpu_peak_gb")}


def parse_variants(items: list[str]) -> dict[str, list[str]]:
    variants = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not rest or "=" not in rest:
            raise SystemExit(f"--adapt-variant {item!r}: expected NAME=key=value[,key=value]")
        variants[name] = rest.split(",")
    return variants


def _run_one(setup: Setup, runner: str, precision: str, variants: dict[str, list[str]], threads: int) -> dict:
    import multiprocessing

    import torch

    torch.set_num_threads(threads)
    # this process was spawned, which made spawn its start method too; its data-loader workers (--workers) fork, as
    # in a script or `adapt train` started from a shell on Linux
    multiprocessing.set_start_method("fork", force=True)
    if runner == "adapt":
        run = run_adapt(setup, precision)
    elif runner == "plain":
        run = run_plain(setup, precision)
    elif runner == "hf":
        run = run_hf(setup, precision)
    else:
        name = runner.split(":", 1)[1]
        overrides = [item for item in variants[name] if not item.startswith("env:")]
        for item in variants[name]:  # env:NAME=VALUE -- this run's process only
            if item.startswith("env:"):
                key, _, value = item[4:].partition("=")
                os.environ[key] = value
        run = run_adapt(setup, precision, overrides, name=f"adapt-{name}")
    if setup.device == "cuda":  # the process is fresh: its peak is this run's
        run["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return run


def run_in_child(setup: Setup, runner: str, precision: str, variants: dict[str, list[str]]) -> dict:
    """One run in a fresh process: no runner inherits another's allocator state (adapt train tunes glibc's malloc,
    adapt/allocator.py), heap or warm caches, as no user's script would."""
    import torch

    # records are read again in the child
    bare = Setup(setup.name, setup.work, setup.recipe_path, setup.base, setup.device, setup.profile)
    return in_fresh_process(_run_one, bare, runner, precision, variants, torch.get_num_threads())


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a new spawned process, its result returned. Not a multiprocessing.Pool: its daemonic
    workers may not start data-loader workers (--workers)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def measure_model(setup: Setup, precisions: list[str], repeats: int, variants: dict[str, list[str]]) -> dict:
    runners = [*RUNNERS, *(f"adapt:{v}" for v in variants)]
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(repeats):  # precisions interleaved as the runners are: drift in machine load hits both alike
        for precision in precisions:
            for runner in runners:
                print(f"[{setup.name}] {precision} repeat {r + 1}/{repeats}: {runner}", file=sys.stderr, flush=True)
                run = run_in_child(setup, runner, precision, variants)
                runs.setdefault((runner, precision), []).append(summarise(run) | {"steps": run["steps"]})
    results = {}
    for (runner, precision), reps in runs.items():
        median = sorted(reps, key=lambda s: s["samples_s"])[len(reps) // 2]
        results[f"{runner}|{precision}"] = {
            **{k: median[k] for k in ("samples_s", "supervised_s", "tokens_s", "positions_s", "seconds")},
            "samples_s_all": [s["samples_s"] for s in reps],
            "cpu_samples_s": statistics.median(s["cpu_samples_s"] for s in reps),
            "cpu_positions_s": statistics.median(s["cpu_positions_s"] for s in reps),
            "losses": reps[0]["losses"],
            "wall_s": statistics.median(s["wall_s"] for s in reps) if reps[0]["wall_s"] is not None else None,
            "setup_s": statistics.median(s["setup_s"] for s in reps) if reps[0]["setup_s"] is not None else None,
            "after_s": statistics.median(s["after_s"] for s in reps) if reps[0]["after_s"] is not None else None,
            "per_step": [{k: s[k] for k in ("rows", "supervised", "tokens", "positions")} for s in reps[0]["steps"]],
            "gpu_peak_gb": max(s["gpu_peak_gb"] for s in reps) if reps[0]["gpu_peak_gb"] is not None else None,
        }
    return results


def noise_verdict(fp32: list[float], bf16: list[float]) -> tuple[float, float, float, bool]:
    """Paired per-step loss differences bf16 - fp32 over the whole run (same batches): their mean, 2 standard errors
    of that mean, the largest relative difference, and whether the mean is within the 2 SE (no systematic shift)."""
    diffs = [b - a for a, b in zip(fp32, bf16)]
    mean = statistics.mean(diffs)
    noise = 2 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    worst = max(abs(d) / abs(a) for a, d in zip(fp32, diffs))
    return mean, noise, worst, abs(mean) <= noise


INTRO = (
    "The quick-start recipe (`adapt quickstart`'s land-cover + 30 % general data, projector + LLM trained in full, "
    "vision frozen, AdamW with the recipe's per-part learning rates, cosine schedule, clip 1.0) run three ways over "
    "the same weights and the same micro-batches (AdamW: `adapt train` and the Trainer script use torch's fused kernel, "
    "the default `Trainer` picks (`adamw_torch_fused`, from torch 2.8 on), the plain loop torch's default "
    "implementation, which a script written from the PyTorch docs gets), "
    "namely `adapt train` (adapt/train.py `Trainer.run()`, in process), a plain "
    "PyTorch loop and a transformers `Trainer` script, both in bench/bench_train.py. Every run is a fresh process (none inherits another's "
    "allocator state or heap: adapt train keeps freed memory mapped, adapt/allocator.py); timed optimizer steps "
    "follow 2 warm-up steps; runners interleaved, median run of the repeats by samples/s (of an even number the "
    "faster of the middle two; all runs' samples/s listed), CPU-time rates the median over the runs. samples/s, "
    "supervised "
    "tokens/s (the labels the loss is taken over) and tokens/s (non-pad input tokens, image tokens included) count the "
    "timed steps, data loading included (DataLoader, the same workers in every runner: none unless the block's "
    "command sets --workers); ratios are against the Trainer and "
    "the plain loop of the same run and precision (bold: adapt train vs Trainer), from wall time and from the process's "
    "CPU time over the same steps (one thread: CPU time is the work done, which other jobs on the machine barely move, "
    "while wall time also counts waiting for a core). GFLOP per CPU-second: FlopCounterMode's forward + backward FLOPs "
    "of the first timed step (fp32), scaled by padded token positions, over the steps' CPU time; peaks: best of 5 "
    "`torch.matmul` 2048 x 2048 at the start and the end of the run, same threads. End-to-end: `Trainer(recipe).run()` "
    "wall time, median run: start-up = `Trainer(recipe)` (model load, reading and measuring every record of the data, "
    "optimizer); after the steps = the rest outside the steps (log and TensorBoard set-up, final save, loss plot). The machine is shared with other jobs (load average noted), so absolute figures are inflated and "
    "noisy; only same-run ratios are meant to be read, and differences of 10-20 % between runners are within the "
    "run-to-run spread shown.")
HEADING = "## Training throughput (adapt train vs plain loop vs transformers Trainer)"


def _label(runner: str) -> str:
    return LABELS.get(runner, f"adapt train [{runner.split(':', 1)[-1]}]")


def model_block(name: str, results: dict, flops: dict, peaks: dict, load: tuple[float, float], command: str,
                args) -> str:
    from bench.sections import machine_line

    if args.device == "cuda":
        return gpu_model_block(name, results, flops, peaks, command, args)
    lines = [
        *_block_head(name, flops, args, f"{flops['flops_step'] / 1e9:.1f} GFLOP"),
        f"- Machine: {machine_line()}; {args.threads} thread(s)",
        f"- Load average before / after the run: {load[0]:.1f} / {load[1]:.1f} (a shared machine: other jobs ran too)",
        f"- Matmul peaks: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s",
        f"- Command: `{command}`",
        "",
        "| precision | runner | samples/s (runs) | supervised tok/s | tokens/s | vs Trainer, wall / CPU "
        "| vs plain loop, wall / CPU | GFLOP per CPU-s | % fp32 peak | % bf16 peak | loss, last steps "
        "| end-to-end s (start-up / after the steps) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def row(res, runner, precision, hf, plain, bold, runs, e2e) -> str:
        gflops = flops["per_position"] * res["cpu_positions_s"] / 1e9
        return (
            f"| {precision} | {_label(runner)} | {res['samples_s']:.2f} ({runs}) | {res['supervised_s']:.1f} "
            f"| {res['tokens_s']:.0f} | {bold}{res['samples_s'] / hf['samples_s']:.2f}x{bold} / "
            f"{res['cpu_samples_s'] / hf['cpu_samples_s']:.2f}x | {res['samples_s'] / plain['samples_s']:.2f}x / "
            f"{res['cpu_samples_s'] / plain['cpu_samples_s']:.2f}x | {gflops:.1f} | {100 * gflops / peaks['fp32']:.0f} % "
            f"| {100 * gflops / peaks['bf16']:.0f} % | {statistics.mean(res['losses'][-LAST_K:]):.4f} | {e2e} |")

    return "\n".join(lines + [row(res, *_row_parts(key, res, results)) for key, res in results.items()]
                     + precision_pairs(results))


def _block_head(name: str, flops: dict, args, work: str, also: str = "") -> list[str]:
    """A block's heading and its model line: sizes, the step's `work` (its FLOPs), batch, steps, repeats, `also`."""
    return [f"### {block_name(name, args.label)}", "",
            f"- Model: {flops['params'] / 1e6:.1f} M parameters, {flops['trainable'] / 1e6:.1f} M trainable; {work} "
            f"per optimizer step (first timed step, {flops['positions']} padded positions); batch {args.batch_size} x "
            f"accumulation {args.grad_accum}, {args.steps} timed steps, {args.repeats} repeat(s){also}"]


def _row_parts(key: str, res: dict, results: dict) -> tuple:
    """What every row of `key` ("runner|precision") shows besides its rates: runner, precision, the Trainer's and
    the plain loop's results of that precision, bold for adapt train, every run's samples/s, end-to-end times."""
    runner, precision = key.split("|")
    runs = ", ".join(f"{x:.1f}" for x in res["samples_s_all"])
    e2e = (f"{res['wall_s']:.1f} ({res['setup_s']:.1f} / {res['after_s']:.1f})" if res["wall_s"] is not None
           else "—")
    return (runner, precision, results[f"hf|{precision}"], results[f"plain|{precision}"],
            "**" if runner == "adapt" else "", runs, e2e)


def gpu_model_block(name: str, results: dict, flops: dict, peaks: dict, command: str, args) -> str:
    """A model's block for a run on a GPU: wall-clock rates (CUDA synchronised at every step's end), achieved TFLOP/s
    and MFU against the bf16 matmul peak measured in the same run, the peak GPU memory of each runner's process."""
    from bench.sections import machine_line

    lines = [
        *_block_head(name, flops, args, f"{flops['flops_step'] / 1e12:.2f} TFLOP",
                     f", {args.workers} data-loader worker(s) in every runner"),
        f"- Machine: {machine_line()}; {args.threads} CPU thread(s)",
        f"- Matmul peaks on the GPU (8192 x 8192): fp32 {peaks['fp32'] / 1e3:.1f} TFLOP/s, bf16 "
        f"{peaks['bf16'] / 1e3:.1f} TFLOP/s; MFU = FLOPs the model's forward + backward count (FlopCounterMode, "
        "scaled by padded positions) per wall second over that bf16 peak",
        f"- Command: `{command}`",
        "",
        "| precision | runner | samples/s (runs) | supervised tok/s | tokens/s | vs Trainer | vs plain loop "
        "| TFLOP/s | MFU | peak GPU memory GiB | loss, last steps | end-to-end s (start-up / after the steps) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def row(res, runner, precision, hf, plain, bold, runs, e2e) -> str:
        tflops = flops["per_position"] * res["positions_s"] / 1e12
        return (
            f"| {precision} | {_label(runner)} | {res['samples_s']:.1f} ({runs}) | {res['supervised_s']:.0f} "
            f"| {res['tokens_s']:.0f} | {bold}{res['samples_s'] / hf['samples_s']:.2f}x{bold} "
            f"| {res['samples_s'] / plain['samples_s']:.2f}x | {tflops:.1f} | {100e3 * tflops / peaks['bf16']:.1f} % "
            f"| {res['gpu_peak_gb']:.1f} | {statistics.mean(res['losses'][-LAST_K:]):.4f} | {e2e} |")

    return "\n".join(lines + [row(res, *_row_parts(key, res, results)) for key, res in results.items()]
                     + precision_pairs(results))


def precision_pairs(results: dict) -> list[str]:
    """bf16 against fp32 for every runner run at both: speed ratio and whether the losses differ beyond noise."""
    lines = []
    pairs = [(k.split("|")[0], res, results[k.replace("|fp32", "|bf16")]) for k, res in results.items()
             if k.endswith("|fp32") and k.replace("|fp32", "|bf16") in results]
    if pairs:
        lines += ["", "bf16 against fp32, same runner, seed and batches: step-speed ratio; loss = mean of the last "
                  f"{LAST_K} steps' (or all) losses; per-step bf16 - fp32 loss differences over the whole run: their "
                  "mean, 2 standard errors of it, the largest relative one; \"within noise\" when the mean is within "
                  "its 2 SE (no systematic shift).", "",
                  "| runner | bf16 / fp32 speed, wall / CPU | loss fp32 | loss bf16 | mean difference | 2 SE | largest | verdict |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for runner, fp, bf in pairs:
            mean, noise, worst, ok = noise_verdict(fp["losses"], bf["losses"])
            lines.append(f"| {_label(runner)} | {bf['samples_s'] / fp['samples_s']:.2f}x / "
                         f"{bf['cpu_samples_s'] / fp['cpu_samples_s']:.2f}x "
                         f"| {statistics.mean(fp['losses'][-LAST_K:]):.4f} "
                         f"| {statistics.mean(bf['losses'][-LAST_K:]):.4f} "
                         f"| {mean:+.5f} | {noise:.5f} | {100 * worst:.2f} % | {'within noise' if ok else 'differs'} |")
    return lines


MODEL_ORDER = ("pocket-tiny", "mid", "mid-qwen2-vocab", *PRESET_MODELS)


def block_name(model: str, label: str | None) -> str:
    """A block's heading: the model, and the run's label where it has one (`--label`)."""
    return f"{model} ({label})" if label else model


def section_text(blocks: dict[str, str], old: str | None = None) -> str:
    """The section: heading, description, one block per model; blocks of models this run did not measure are kept
    from `old` (each with its own command)."""
    kept = {}
    if old:
        for chunk in ("\n" + old).split("\n### ")[1:]:
            kept[chunk.split("\n", 1)[0].strip()] = "### " + chunk.strip()
    kept.update(blocks)

    def position(heading: str) -> tuple[int, str]:
        model = heading.split(" (", 1)[0]
        return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), heading

    order = sorted(kept, key=position)
    return "\n\n".join([HEADING, INTRO, *(kept[m] for m in order)])


def published_command(args: argparse.Namespace) -> str:
    """The command a block names (without ``--write``): every flag that changes the figures, quoted for a shell."""
    command = (f"python bench/bench_train.py --models {args.models} --precision {args.precision} --steps {args.steps} "
               f"--batch-size {args.batch_size} --grad-accum {args.grad_accum} --repeats {args.repeats} "
               f"--threads {args.threads}")
    command += f" --max-seq-length {args.max_seq_length}" if args.max_seq_length else ""
    command += f" --workers {args.workers}" if args.workers else ""
    command += "".join(f" --adapt-variant {shlex.quote(v)}" for v in args.adapt_variant)
    command += f" --label {shlex.quote(args.label)}" if args.label else ""
    command += " --allow-cpu" if args.allow_cpu else ""  # without it the named command refuses to --write a CPU run
    return command


def main(argv=None) -> int:
    from adapt.recipe import MIN_SEQ_LENGTH
    from model.arguments import non_negative_int, positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pocket-tiny",
                        help="comma-separated: pocket-tiny, mid, mid-qwen2-vocab (mid with Qwen2's 151,936-token "
                             "vocabulary, LoRA on the LLM), internvl2-1b (the preset's real shapes, random weights; "
                             "projector + LLM in full: a GPU run)")
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--steps", type=positive_int, default=6,
                        help="timed optimizer steps per run (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--grad-accum", type=positive_int, default=1)
    parser.add_argument("--max-seq-length", type=partial(positive_int, least=MIN_SEQ_LENGTH), default=None,
                        help=f"default: the recipe's (at least {MIN_SEQ_LENGTH})")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads for every runner and the peaks (default 1: on a loaded machine, OpenMP "
                             "with more threads than free cores stalls and makes the timings noise)")
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="data-loader worker processes in every runner (training.num_workers; default 0)")
    parser.add_argument("--adapt-variant", action="append", default=[], metavar="NAME=key=value[,key=value]")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the data and models here (default: a temp folder)")
    parser.add_argument("--label", default=None,
                        help="named beside the model in its block's heading (e.g. another machine): the block sits "
                             "beside the unlabelled one instead of replacing it")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write each run's torch.profiler tables (timed steps) into this folder: "
                             "RUNNER-PRECISION.txt; the profiler slows the runs, so read their timings with that")
    parser.add_argument("--allow-cpu", action="store_true",
                        help=f"let --write publish a CPU run of a GPU model ({', '.join(PRESET_MODELS)})")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.profile and args.write:
        parser.error("--profile slows every run: its timings are not for BENCHMARKS.md (drop --write)")
    if args.label is not None and not args.label.strip():
        parser.error("--label is empty: name the machine the block was measured on, or leave --label out")
    precisions = args.precision.split(",")
    # the plain loop and the Trainer know fp32 and bf16 only: fp16 would be an fp32 run in their rows
    if not set(precisions) <= {"fp32", "bf16"} or len(set(precisions)) < len(precisions):
        parser.error(f"--precision {args.precision}: expected fp32, bf16 or both, comma-separated, each once")
    import torch

    torch.set_num_threads(args.threads)
    args.device = default_device()
    gpu_models = [m for m in args.models.split(",") if m in PRESET_MODELS]
    if args.write and gpu_models and args.device == "cpu" and not args.allow_cpu:
        parser.error(f"--models {','.join(gpu_models)} is a GPU run and torch sees no CUDA device: nothing measured "
                     "(drop --write, or --allow-cpu to publish a CPU run)")
    variants = parse_variants(args.adapt_variant)
    load_before = os.getloadavg()[0]
    peaks = {p: matmul_peak(p, device=args.device) for p in ("fp32", "bf16")}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = args.work or Path(tmp)
        data = work / "data"
        if not (data / "general" / "train.jsonl").is_file():
            print(f"generating the quick-start data in {data}", file=sys.stderr, flush=True)
            prepare_data(data)
        all_results, info = {}, {}
        for name in args.models.split(","):
            setup = make_setup(name, work, data, args.steps, args.batch_size, args.grad_accum, args.max_seq_length,
                               args.workers)
            setup.profile = str(args.profile.resolve()) if args.profile else None
            info[name] = count_flops(setup)
            all_results[name] = measure_model(setup, precisions, args.repeats, variants)
    peaks = {p: max(peaks[p], matmul_peak(p, device=args.device)) for p in peaks}
    command = published_command(args)
    load = (load_before, os.getloadavg()[0])
    blocks = {block_name(name, args.label): model_block(name, res, info[name], peaks, load, command + " --write", args)
              for name, res in all_results.items()}
    print(json.dumps({"peaks": peaks, "info": info, "results": all_results}, indent=1), file=sys.stderr)
    old = None
    if args.write:
        from bench.sections import read_section

        old = read_section(ROOT / "BENCHMARKS.md", SECTION)
    text = section_text(blocks, old)
    print(text)
    if args.write:
        from bench.sections import write_section

        write_section(ROOT / "BENCHMARKS.md", SECTION, text)
    return 0


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
