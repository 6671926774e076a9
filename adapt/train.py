"""`adapt train`: one explicit training loop, driven by a recipe.

Flow: load the model → set each part frozen / LoRA / full → read, validate and measure the data →
plan the domain/general mixture → train with AdamW and per-part learning rates (single process,
torch DDP under torchrun, or DeepSpeed) → atomic safetensors checkpoints → final model (LoRA merged).
Losses are logged per data source, so forgetting of general skills shows while training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_scheduler

import model as model_core
from model.processor import IGNORE_INDEX

from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from .data.augment import build_augment
from .data.dataset import SupervisedDataset, collate
from .data.mixture import MixturePlan
from .data.samples import SkipLog, SourceSpec, expand_sources, measure, read_source
from .parts import PartSetting, apply_parts, base_model, merge_lora, parameter_groups, trainable_summary
from .recipe import Recipe, resolve_deepspeed_config


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over every rank (float64 on the CPU; unchanged with one process)."""
        values = values.to(torch.float64)
        if self.world > 1:
            values = values.to(self.device)
            torch.distributed.all_reduce(values)
        return values.cpu()


def setup_distributed(group: bool = False) -> Distributed:
    """Join the process group torchrun / deepspeed launched us in (gloo on CPU, nccl on GPUs).

    `group=True` makes a one-process group when no launcher started us (DeepSpeed needs one, and
    would otherwise look for MPI).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if (world > 1 or group) and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "RANK" in os.environ:  # a launcher's rendezvous (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)
            torch.distributed.init_process_group(backend)
        else:  # a lone process: an in-memory store, no port to pick
            torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Distributed(int(os.environ.get("RANK", "0")), world, local_rank, device)


def part_settings(recipe: Recipe) -> dict[str, PartSetting]:
    out = {}
    for part in ("vision", "projector", "llm"):
        p = getattr(recipe.parts, part)
        targets = tuple(p.lora.targets) if p.lora.targets else None
        out[part] = PartSetting(p.mode, p.lr, p.lora.r, p.lora.alpha, p.lora.dropout, targets)
    return out


def source_specs(sources) -> list[SourceSpec]:
    return expand_sources([
        SourceSpec(s.name, Path(s.path), Path(s.root) if s.root else None, s.kind, s.ratio, s.repeat, s.max_tiles)
        for s in sources
    ])


def load_records(specs: list[SourceSpec], processor, max_seq_length: int, skips: SkipLog, tiling) -> dict[str, list]:
    records = {}
    for spec in specs:
        read = read_source(spec, skips)
        records[spec.name] = measure(read, processor, max_seq_length, skips, tiling=tiling)
    return records


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed cross-entropy and supervised-token counts (shifted for next-token prediction)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    mask = shift_labels != IGNORE_INDEX
    return (ce * mask).sum(1), mask.sum(1)


class Trainer:
    """Holds the run's state; `run()` trains from the last complete checkpoint (or from scratch)."""

    def __init__(self, recipe: Recipe, dist: Distributed | None = None, progress: bool = True):
        self.recipe = recipe
        self.dist = dist or setup_distributed(group=recipe.distributed.strategy == "deepspeed")
        self.progress = progress and self.dist.main
        self.out_dir = Path(recipe.output.dir)
        t = recipe.training
        if t.precision == "fp16" and self.dist.device.type != "cuda":
            raise ValueError("training.precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
        _seed_everything(recipe.seed)
        dtype = recipe.model.dtype
        vlm, processor = model_core.load(recipe.model.source, dtype=dtype, allow_pickle=recipe.model.allow_pickle,
                                         chat_template=recipe.model.chat_template)
        self.tiling = recipe.tiling_for(processor.tiling)
        processor.tiling = self.tiling
        vlm.config.tiling = self.tiling.to_dict()
        self.processor = processor

        self.skips = SkipLog()
        specs = source_specs(recipe.data.sources)
        self.records = load_records(specs, processor, t.max_seq_length, self.skips, self.tiling)
        self.skips.check({k: len(v) for k, v in self.records.items()}, recipe.data.max_bad_fraction)
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.skips.save(self.out_dir)
        self.plan = MixturePlan.from_sources(specs, self.records, recipe.mixing.general_ratio,
                                             recipe.mixing.epoch_size, recipe.mixing.seed)
        self.source_names = sorted(self.records)
        self.micro_batch = t.batch_size
        self.samples_per_step = t.batch_size * t.grad_accum * self.dist.world
        self.steps_per_epoch = max(1, len(self.plan) // self.samples_per_step)
        self.total_steps = t.max_steps or max(1, math.ceil((t.epochs or 1) * self.steps_per_epoch))

        if t.gradient_checkpointing:
            vlm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.settings = part_settings(recipe)
        self.model = apply_parts(vlm, self.settings).to(self.dist.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, self.settings, t.weight_decay), betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = get_scheduler(
            "constant_with_warmup" if t.schedule == "constant" else t.schedule, self.optimizer,
            num_warmup_steps=int(t.warmup_ratio * self.total_steps), num_training_steps=self.total_steps,
        )
        # resume before any wrapper copies the weights (DeepSpeed keeps its own fp32 master copy)
        self.start_step = self._resume()
        self.engine = None
        if recipe.distributed.strategy == "deepspeed":
            self.engine = self._deepspeed()
        elif self.dist.world > 1:
            self.engine = torch.nn.parallel.DistributedDataParallel(self.model)
        self._epoch_cache: tuple[int, SupervisedDataset] | None = None
        self.augment = build_augment(recipe.data.augment, recipe.seed)

    # ------------------------------------------------------------------ data
    def _dataset(self, epoch: int) -> SupervisedDataset:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            order = self.plan.epoch(epoch)
            ds = SupervisedDataset(self.records, order, self.processor, self.recipe.training.max_seq_length, self.skips,
                                   self.tiling, augment=self.augment, epoch=epoch)
            self._epoch_cache = (epoch, ds)
        return self._epoch_cache[1]

    def micro_batch_at(self, step: int, micro: int) -> dict:
        """The micro-batch of this rank: a pure function of (step, micro), so a resumed run sees the same data."""
        t = self.recipe.training
        start = ((step * t.grad_accum + micro) * self.dist.world + self.dist.rank) * self.micro_batch
        items = []
        for k in range(start, start + self.micro_batch):
            epoch, index = divmod(k, len(self.plan))
            items.append(self._dataset(epoch)[index])
        return collate(items, self.processor)

    # ------------------------------------------------------------------ loop
    def run(self, stop_after: int | None = None) -> Path:
        """Train to the end of the schedule, or only its first `stop_after` steps (the schedule is the
        recipe's either way, so those steps are exactly a full run's); returns `final/` or, when
        stopped early, the checkpoint written there."""
        start_step = self.start_step
        end_step = min(stop_after, self.total_steps) if stop_after else self.total_steps
        log_path = self.out_dir / "train_log.jsonl"
        writer = self._tensorboard()
        if self.dist.main:
            self._print_plan(start_step)
        bar = tqdm(total=self.total_steps, initial=start_step, desc="train", disable=not self.progress, dynamic_ncols=True)
        t = self.recipe.training
        autocast = torch.autocast(self.dist.device.type, dtype=_AUTOCAST[t.precision], enabled=t.precision != "fp32")
        scaler = torch.amp.GradScaler(self.dist.device.type, enabled=t.precision == "fp16")
        batches = iter(torch.utils.data.DataLoader(
            _MicroBatches(self, start_step), batch_size=None, num_workers=t.num_workers,
            prefetch_factor=2 if t.num_workers else None,
            # its own generator: drawing a worker seed from the global RNG would shift dropout after a resume
            generator=torch.Generator().manual_seed(self.recipe.seed)))
        deepspeed = self.recipe.distributed.strategy == "deepspeed"
        # DDP and ZeRO average gradients over ranks, DeepSpeed also over micro-batches: undo both, so that
        # the gradient is the mean over the step's supervised tokens, whatever the split across ranks,
        # micro-batches and padding
        grad_scale = self.dist.world * (t.grad_accum if deepspeed else 1)
        for step in range(start_step, end_step):
            started = time.perf_counter()
            micro_batches = [next(batches) for _ in range(t.grad_accum)]  # the step's token count comes first
            step_tokens = self.dist.all_sum(torch.tensor(sum(_supervised_tokens(b["labels"]) for b in micro_batches)))
            loss_scale = grad_scale / max(1.0, step_tokens.item())
            sums = torch.zeros(len(self.source_names), 3, dtype=torch.float64)  # loss sum, tokens, rows
            for batch in micro_batches:
                sources = batch.pop("sources")
                batch.pop("n_dropped", None)
                batch = {k: v.to(self.dist.device) for k, v in batch.items()}
                labels = batch.pop("labels")
                with autocast:
                    logits = (self.engine or self.model)(**batch).logits
                row_loss, row_tokens = token_losses(logits, labels)
                loss = row_loss.sum() * loss_scale
                for src, l, n in zip(sources, row_loss.tolist(), row_tokens.tolist()):
                    sums[self.source_names.index(src)] += torch.tensor([l, n, 1], dtype=torch.float64)
                if deepspeed:
                    self.engine.backward(loss)
                    self.engine.step()
                else:
                    scaler.scale(loss).backward()
            if not deepspeed:
                scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], t.max_grad_norm)
                scaler.step(self.optimizer)
                scaler.update()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            else:
                grad_norm = torch.tensor(float(self.engine.get_global_grad_norm() or 0.0))
            sums = self.dist.all_sum(sums).tolist()  # the logged losses are the whole step's, every rank's rows
            total_loss = sum(v[0] for v in sums) / max(1, sum(v[1] for v in sums))
            entry = {"step": step + 1, "epoch": round((step + 1) / self.steps_per_epoch, 4), "loss": total_loss,
                     "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                     "step_time": round(time.perf_counter() - started, 4)}
            entry.update({f"loss/{src}": v[0] / max(1, v[1]) for src, v in zip(self.source_names, sums) if v[2]})
            if self.dist.main:
                self._log(entry, log_path, writer, bar)
            bar.update(1)
            if self.recipe.eval.every and (step + 1) % self.recipe.eval.every == 0 and step + 1 < self.total_steps:
                self._evaluate(step + 1, writer)
            if (step + 1) % self.recipe.output.save_every == 0 and step + 1 < self.total_steps:
                self._save(step + 1)
        bar.close()
        stopped = end_step < self.total_steps
        if not stopped or end_step % self.recipe.output.save_every:  # not saved by the loop already
            self._save(end_step)
        result = self.out_dir / f"checkpoint-{end_step}" if stopped else self._finish()
        if writer:
            writer.close()
        return result

    # ------------------------------------------------------------------ pieces
    def _log(self, entry: dict, log_path: Path, writer, bar) -> None:
        with log_path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        if writer:
            for key, value in entry.items():
                if key != "step":
                    writer.add_scalar(key, value, entry["step"])
        losses = {k.removeprefix("loss/"): f"{v:.3f}" for k, v in entry.items() if k.startswith("loss")}
        bar.set_postfix(losses, refresh=False)
        if not self.progress and entry["step"] % self.recipe.logging.every == 0:
            print(f"step {entry['step']}/{self.total_steps} " + " ".join(f"{k} {v}" for k, v in losses.items())
                  + f" lr {entry['lr']:.3g}", flush=True)

    def _evaluate(self, step: int, writer) -> None:
        """Score the model being trained on the eval sources (main process; others wait)."""
        if self.dist.main and self.recipe.data.eval_sources:
            from .evaluate import predict, summarize

            specs = source_specs(self.recipe.data.eval_sources)
            records = load_records(specs, self.processor, self.recipe.training.max_seq_length, SkipLog(), self.tiling)
            limit = self.recipe.eval.max_samples
            flat = [r for rs in records.values() for r in (rs[:limit] if limit else rs)]
            summary = summarize(predict(base_model(self.model), self.processor, flat, self.recipe.eval.max_new_tokens,
                                        self.recipe.eval.batch_size, progress=False), {s.name: s.kind for s in specs},
                                self.recipe.eval.context())
            self.model.train()
            line = {"step": step, **{f"eval/{g}": v["main"] for g, v in summary["groups"].items()},
                    **{f"eval/{s}": v["main"] for s, v in summary["sources"].items()}}
            with (self.out_dir / "eval_log.jsonl").open("a") as fh:
                fh.write(json.dumps(line) + "\n")
            if writer:
                for key, value in line.items():
                    if key != "step":
                        writer.add_scalar(key, value, step)
            print(f"eval at step {step}: " + ", ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in line.items() if k != "step"), flush=True)
        self.dist.barrier()

    def _resume(self) -> int:
        latest = latest_checkpoint(self.out_dir)
        if latest is None:
            if self.dist.main:
                (self.out_dir / "train_log.jsonl").unlink(missing_ok=True)
            return 0
        deepspeed = self.recipe.distributed.strategy == "deepspeed"
        state = load_checkpoint(latest, self.model, None if deepspeed else self.optimizer, self.scheduler)
        if deepspeed and self.dist.main:
            print("note: DeepSpeed resume restores weights, schedule, RNG and data position; the optimizer "
                  "moments restart (ZeRO optimizer state is not stored in safetensors checkpoints)", flush=True)
        step = int(state["step"])
        if self.dist.main:
            _truncate_log(self.out_dir / "train_log.jsonl", step)
            print(f"resuming from {latest} (step {step} of {self.total_steps})", flush=True)
        return step

    def _gathered(self, params):
        """Whole parameters on every rank for the duration (ZeRO-3 partitions them; a no-op otherwise)."""
        if self.recipe.distributed.strategy == "deepspeed":
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)
        return contextlib.nullcontext()

    def _save(self, step: int) -> None:
        with self._gathered(p for p in self.model.parameters() if p.requires_grad):
            extra = {"recipe": self.recipe.name, "total_steps": self.total_steps}
            if self.dist.world > 1:
                extra["rank_weights_sha256"] = digests = self._rank_digests()
                if len(set(digests)) > 1 and self.dist.main:
                    print(f"warning: at step {step} the ranks hold different trainable weights (sha256 per rank: "
                          f"{[d[:12] for d in digests]}); data-parallel training has diverged", flush=True)
            if self.dist.main:
                optimizer = None if self.recipe.distributed.strategy == "deepspeed" else self.optimizer
                save_checkpoint(self.out_dir, step, self.model, optimizer, self.scheduler, extra, self.recipe.output.keep_last)
        self.dist.barrier()

    def _rank_digests(self) -> list[str]:
        """Every rank's sha256 of its trainable weights: DDP and ZeRO keep them identical, bit for bit."""
        digest = hashlib.sha256()
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                digest.update(name.encode())
                digest.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        digests: list[str] = [""] * self.dist.world
        torch.distributed.all_gather_object(digests, digest.hexdigest())
        return digests

    def _finish(self) -> Path:
        final = self.out_dir / "final"
        with self._gathered(self.model.parameters()):
            self._write_final(final)
        self.dist.barrier()
        return final

    def _write_final(self, final: Path) -> None:
        if self.dist.main:
            if self.recipe.output.merge_lora:
                merged = merge_lora(self.model)
            else:
                merged = base_model(self.model)
                if merged is not self.model:
                    self.model.save_pretrained(str(self.out_dir / "adapter"))
            model_core.save(merged, self.processor, final)
            from .evaluate import plot_loss_curve

            plot_loss_curve(self.out_dir / "train_log.jsonl", self.out_dir / "loss.png")
            self.skips.save(self.out_dir)

    def _print_plan(self, start_step: int) -> None:
        summary = trainable_summary(self.model)
        print(self.plan.describe(), flush=True)
        for part, (trainable, total) in summary.items():
            print(f"  {part:<9} {self.settings[part].mode:<6} lr {self.settings[part].lr:<8g} {trainable:,} of {total:,} params trainable")
        if self.recipe.distributed.strategy == "deepspeed":
            parallel = f" with DeepSpeed ZeRO-{self.engine.zero_optimization_stage()}"
        else:
            parallel = " with DDP" if self.dist.world > 1 else ""
        print(f"  {self.total_steps} steps x {self.samples_per_step} samples ({self.steps_per_epoch} steps/epoch), "
              f"{self.dist.world} process(es){parallel}, output {self.out_dir}", flush=True)
        if self.skips.count():
            print(self.skips.table(), flush=True)

    def _tensorboard(self):
        if not (self.recipe.logging.tensorboard and self.dist.main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard is not installed: pip install tensorboard (or set logging.tensorboard: false)", flush=True)
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _deepspeed(self):
        import deepspeed

        t = self.recipe.training
        config = resolve_deepspeed_config(self.recipe.distributed.deepspeed)
        config = _fill_auto(config, {
            "train_micro_batch_size_per_gpu": t.batch_size, "gradient_accumulation_steps": t.grad_accum,
            "train_batch_size": self.samples_per_step, "gradient_clipping": t.max_grad_norm,
        })
        config.setdefault("bf16", {})["enabled"] = t.precision == "bf16"
        config.setdefault("fp16", {})["enabled"] = t.precision == "fp16"
        os.environ.setdefault("LOCAL_RANK", str(self.dist.local_rank))  # DeepSpeed asserts a launcher set it
        engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=config)
        return engine


class _MicroBatches(torch.utils.data.Dataset):
    """Micro-batch k of the run from `first_step` on; workers may build them ahead (images decode in parallel)."""

    def __init__(self, trainer: Trainer, first_step: int):
        self.trainer = trainer
        self.first = first_step * trainer.recipe.training.grad_accum
        self.total = trainer.total_steps * trainer.recipe.training.grad_accum

    def __len__(self) -> int:
        return self.total - self.first

    def __getitem__(self, k: int) -> dict:
        step, micro = divmod(self.first + k, self.trainer.recipe.training.grad_accum)
        return self.trainer.micro_batch_at(step, micro)


_AUTOCAST = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def train(recipe: Recipe, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) the run a recipe describes; returns the final model folder (see `Trainer.run`)."""
    return Trainer(recipe, progress=progress).run(stop_after)


def _fill_auto(config: dict, values: dict, top: bool = True) -> dict:
    """Replace DeepSpeed "auto" values with the recipe's; top-level keys the config lacks are added."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = _fill_auto(value, values, top=False)
        elif value == "auto" and key in values:
            out[key] = values[key]
        else:
            out[key] = value
    if top:
        for key, value in values.items():
            out.setdefault(key, value)
    return out


def _supervised_tokens(labels: torch.Tensor) -> int:
    """Tokens a batch's loss is taken over (the same shift as `token_losses`)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines a killed run wrote after its last complete checkpoint."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
