"""`adapt train`: one explicit training loop, driven by a recipe.

Flow: lock the output folder → load the model → set each part frozen / LoRA / full → read, validate
and measure the data → plan the domain/general mixture → train with AdamW and per-part learning rates
(single process, torch DDP under torchrun, or DeepSpeed) → atomic safetensors checkpoints → final
model (LoRA merged). Losses are logged per data source, so forgetting of general skills shows while
training.

What a run that reports success promises: it trained on the data the recipe names (records dropped
while training, such as images that do not decode, count against ``data.max_bad_fraction`` like those
skipped while reading), its losses, gradient norms and saved weights are finite (a non-finite step stops
the run before anything of it is saved), and its output folder was its alone (`RunLock`). A resumed run
continues the recipe its checkpoint was written with: edits since are listed, and refused unless they
are harmless (logging, eval, checkpoint cadence) or the caller allows them (``--allow-changes``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from tqdm.auto import tqdm

import model as model_core
from model.errors import PocketAdaptError, os_error_of
from model.loading import ADAPTER_FOLDER, moved_aside
from model.lora import is_peft_model, merge_lora
from model.processor import IGNORE_INDEX
from model.progress import Progress, progress_bar, shows_bar
from model.yaml_io import YAMLContentError, load_yaml

from .allocator import keep_freed_memory
from .checkpointing import (
    MIXTURE_JSON,
    RECIPE,
    CheckpointDamaged,
    RunFolderBusy,
    RunFolderForeign,
    RunFolderUnusable,
    RunLock,
    atomic_write_text,
    check_run_folder,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_aside,
    settle_saves,
    usable_checkpoint,
)
from .data.augment import build_augment
from .data.dataset import SupervisedDataset, collate
from .data.mixture import MixturePlan, epoch_order_refusal, source_specs
from .data.samples import (
    DataQualityError,
    MissingDataError,
    SkipLog,
    SourceSpec,
    measure,
    missing_annotation_file,
    read_source,
)
from .parts import apply_parts, base_model, parameter_groups, part_settings, trainable_summary
from .recipe import Recipe, RecipeError, _read_text, resolve_deepspeed_config
from .schedule import make_scheduler, warmup_steps


class TrainingError(PocketAdaptError):
    """A run that cannot go on as asked: a non-finite step, an edited recipe on resume, a damaged log."""


def check_training_sources(recipe: Recipe, verb: str = "train") -> None:
    """Refuse a recipe with no `data.sources` (`adapt train` / `distill` as they start, and `adapt validate`)."""
    if not recipe.data.sources:  # a recipe may list only data.eval_sources, for `adapt eval`
        raise TrainingError(f"recipe {recipe.name!r}: data.sources is empty, so there is nothing to {verb} on; list "
                            "the training data there (data.eval_sources only serve scoring)")


# Recipe keys whose edits leave the steps of a resumed run as they were: reporting, evaluation, checkpoint
# cadence, data loading speed. Any other edit changes what is trained and needs allow_changes.
SAFE_TO_EDIT = ("name", "logging", "eval", "data.eval_sources", "data.max_bad_fraction", "output.dir",
                "output.save_every", "output.keep_last", "output.merge_lora", "training.num_workers",
                "training.gradient_checkpointing", "training.fused_adamw")

# Recipe keys that shape the model's weights (which parts exist, which train, the LoRA layers' shapes): a checkpoint
# holds weights for the setup it was written with, so these cannot change on resume, not even with allow_changes.
# (A part's LoRA shape counts only where that part trains with LoRA.)
FIXED_ON_RESUME = ("model.source", "model.projector", "model.projector_options", "model.vision",
                   "model.vision_adapter", "parts.vision.mode", "parts.projector.mode", "parts.llm.mode")
LORA_SHAPE = ("lora.r", "lora.targets")


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


def sample_limit(max_seq_length: int, vlm, say: bool = True) -> int:
    """The most tokens a training sample may have: `max_seq_length`, or the language model's context where that is
    shorter (a longer sample would train positions the model never learnt; it is skipped as too long, and said)."""
    context = getattr(vlm.config.text_config, "max_position_embeddings", None)
    if not context or context >= max_seq_length:
        return max_seq_length
    if say:
        print(f"note: training.max_seq_length {max_seq_length} is more than the language model's context of {context} "
              f"tokens (text_config.max_position_embeddings): samples longer than {context} are skipped as too long",
              flush=True)
    return int(context)


def load_records(specs: list[SourceSpec], processor, max_seq_length: int, skips: SkipLog, tiling) -> dict[str, list]:
    records = {}
    for spec in specs:
        read = read_source(spec, skips)
        records[spec.name] = measure(read, processor, max_seq_length, skips, tiling=tiling)
    return records


def sample_losses(token_losses: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and supervised-token count of each sample of a batch, from the model's per-position losses
    (`PocketVLM.forward` with labels) and which sample each position holds (`collate`'s ``segments``)."""
    targets = segments[:, 1:]
    mask = labels[:, 1:] != IGNORE_INDEX
    n = int(segments.max()) + 1
    sums = torch.zeros(n, dtype=token_losses.dtype, device=token_losses.device)
    return sums.index_add(0, targets[mask], token_losses[mask]), torch.bincount(targets[mask], minlength=n)


class Trainer:
    """Holds the run's state; `run()` trains from the last complete checkpoint (or from scratch).

    `adapt distill` (`adapt.distill.Distiller`) is this class with another model and loss: it overrides `_setup`,
    the micro-batch pieces (`_dataset`, `_collate`, `_batch_units`, `_row_losses`) and what is written at the end.
    """

    VERB = "train"  # the command that runs it, for messages
    FIND_UNUSED_PARAMETERS = False  # DDP: every trainable weight gets a gradient every step
    # with eval.every, the last step too (the model the run gives, or the stop point of `run(stop_after=N)`),
    # where every does not divide it
    EVAL_LAST_STEP = True

    def __init__(self, recipe: Recipe, dist: Distributed | None = None, progress: Progress = True,
                 allow_changes: bool = False):
        """`allow_changes`: resume even though the recipe was edited since the checkpoint (the new values apply)."""
        self.recipe = recipe
        self.dist = dist or setup_distributed(group=recipe.distributed.strategy == "deepspeed")
        self.progress = progress if self.dist.main else False  # ("lines" and True would be True: a bar)
        self.out_dir = Path(recipe.output.dir)
        self.allow_changes = allow_changes
        if recipe.training.precision == "fp16" and self.dist.device.type != "cuda":
            raise TrainingError("training.precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
        check_training_sources(recipe, self.VERB)
        self._lock = self._lock_run_folder()  # before anything is written there
        try:
            self._setup()
        except BaseException:
            self.close(discard=True)  # e.g. the weights are not there: no empty run folder left behind
            raise

    # A data-loader worker started by spawn or forkserver (macOS; Linux from Python 3.14) gets the Trainer pickled:
    # `micro_batch_at` needs its data, not the weights, the optimizer or the lock on the run folder.
    WORKER_OMITS = ("model", "optimizer", "scheduler", "engine", "_lock")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self.WORKER_OMITS}

    def close(self, discard: bool = False) -> None:
        """Let go of the output folder (`run` does so when it ends, however it ends); `discard`: and remove it when
        this run made it and wrote nothing else there (a start that failed)."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.discard() if discard else lock.release()
        if getattr(self, "_set_local_rank", False):  # else a later run in this process takes itself for a worker
            os.environ.pop("LOCAL_RANK", None)
            self._set_local_rank = False

    def _lock_run_folder(self) -> RunLock | None:
        """Rank 0 checks that the output folder is new, empty or a run's (`check_run_folder`) and locks it for the
        whole run; every rank stops when it could not."""
        lock, refused = None, None
        if self.dist.main:
            try:
                check_run_folder(self.out_dir, self.VERB)
                lock = RunLock(self.out_dir)
            except (RunFolderBusy, RunFolderForeign) as exc:  # RunFolderUnusable is a RunFolderBusy
                refused = exc
        # 1 busy, 2 not a run's, 3 cannot be made or written
        code = 0.0 if refused is None else (3.0 if isinstance(refused, RunFolderUnusable) else
                                            1.0 + isinstance(refused, RunFolderForeign))
        code = self.dist.all_sum(torch.tensor([code])).item()  # rank 0 alone decides; the others learn what it found
        if refused is not None:
            raise refused
        if code == 3:
            raise RunFolderUnusable(f"{self.out_dir} cannot be made or its lock file written (rank 0 refused it; "
                                    "its error says why)")
        if code == 2:
            raise RunFolderForeign(f"{self.out_dir} holds files no `adapt {self.VERB}` run wrote (rank 0 refused it)")
        if code:
            raise RunFolderBusy(f"{self.out_dir} is in use by another run (rank 0 could not lock it)")
        return lock

    def _setup(self) -> None:
        recipe = self.recipe
        t = recipe.training
        _seed_everything(recipe.seed)
        # Weights train in model.dtype (float32 by default: fp32 master weights whatever the checkpoint holds);
        # final/ is written in the dtype the checkpoint is stored in, so a bfloat16 model stays bfloat16 on disk.
        vlm, processor = model_core.load(recipe.model.source, allow_pickle=recipe.model.allow_pickle,
                                         chat_template=recipe.model.chat_template,
                                         projector=recipe.model.projector,
                                         projector_options=recipe.model.projector_options, vision=recipe.model.vision,
                                         vision_adapter=recipe.model.vision_adapter)
        self.final_dtype = vlm.dtype
        vlm = vlm.to(getattr(torch, recipe.model.dtype))
        if t.packing:
            _check_packable(vlm)
            from model.packed_attention import use_packed_attention

            use_packed_attention(vlm.language_model)  # SDPA per sample span instead of a row-long mask
        self.tiling = recipe.tiling_for(processor.tiling)
        processor.tiling = self.tiling
        vlm.config.tiling = self.tiling.to_dict()
        self.processor = processor

        self.skips = SkipLog()
        self.max_length = sample_limit(t.max_seq_length, vlm, say=self.dist.main)
        specs = source_specs(recipe.data.sources)
        self._plan_data(specs, load_records(specs, processor, self.max_length, self.skips, self.tiling))
        if recipe.eval.every and recipe.data.eval_sources:  # missing now, the first evaluation would end the run
            for spec in source_specs(recipe.data.eval_sources, held_out=True):
                if (missing := missing_annotation_file(spec.path)) is not None:
                    raise MissingDataError(f"data.eval_sources: source {spec.name!r}: {missing} (eval.every "
                                           f"{recipe.eval.every} evaluates on it during training)")

        if t.gradient_checkpointing:
            vlm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.settings = part_settings(recipe)
        self.model = apply_parts(vlm, self.settings).to(self.dist.device)
        self.model.train()
        self._prepare_run(parameter_groups(self.model, self.settings, t.weight_decay))
        general = [name for name, kind in self.plan.kinds.items() if kind == "general"]
        self.augment = build_augment(recipe.data.augment, recipe.seed, general)  # general sources: never augmented

    def _plan_data(self, specs: list[SourceSpec], records: dict[str, list]) -> None:
        """Hold the records read, stop on too many bad ones, plan the domain/general mixture and the step count."""
        recipe, t = self.recipe, self.recipe.training
        self.records = records
        self.kept_at_load = {k: len(v) for k, v in self.records.items()}
        if self.dist.main:  # written first: a run stopped for too many bad records lists them there too
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.skips.save(self.out_dir)
        self.skips.check(self.kept_at_load, recipe.data.max_bad_fraction)
        self.plan = MixturePlan.from_sources(specs, self.records, recipe.mixing.general_ratio,
                                             recipe.mixing.epoch_size, recipe.mixing.seed)
        self._check_epoch_fits()
        self.source_names = sorted(self.records)
        self.micro_batch = t.batch_size
        self.samples_per_step = t.batch_size * t.grad_accum * self.dist.world
        # a fraction where the epoch is no whole number of steps: `epochs` of the mixture are then trained in full
        # (the step count rounded up, never down), and the logged epoch is samples seen / epoch size
        self.steps_per_epoch = len(self.plan) / self.samples_per_step
        self.total_steps = t.max_steps or max(1, math.ceil((t.epochs or 1) * self.steps_per_epoch - 1e-9))

    def _check_epoch_fits(self) -> None:
        """Refuse an epoch whose sample order cannot be held in memory: each process (every rank and data worker)
        builds the whole order of an epoch, two of them while the next replaces the last, and a mistyped
        mixing.epoch_size (the schema allows ~1e9) would take GBs each before the first step, then the OOM killer."""
        refusal = epoch_order_refusal(len(self.plan), self.dist.world * (1 + self.recipe.training.num_workers))
        if refusal:
            raise TrainingError(refusal)

    def _prepare_run(self, param_groups: list[dict]) -> None:
        """AdamW over `param_groups` and the schedule, the resume from the newest checkpoint, the DDP / DeepSpeed
        wrapper (`self.model` must be built and on its device)."""
        t = self.recipe.training
        self.optimizer = _adamw(param_groups, t.fused_adamw)
        self.scheduler = make_scheduler(self.optimizer, t.schedule, warmup_steps(t.warmup_ratio, self.total_steps),
                                        self.total_steps)
        # where the data stream stands at start_step: a resume with another global batch (process count, batch size,
        # accumulation) goes on from the samples trained, not from step x the new batch (that skipped or repeated some)
        self.data_start = 0
        # resume before any wrapper copies the weights (DeepSpeed keeps its own fp32 master copy)
        self.start_step = self._resume()
        self.steps_done = self.start_step  # optimizer steps taken, for what an interrupted run says it kept
        self.engine = None
        if self.recipe.distributed.strategy == "deepspeed":
            self.engine = self._deepspeed()
            if self.start_step:
                self._restore_master_weights(self._resumed_from)
        elif self.dist.world > 1:
            self.engine = torch.nn.parallel.DistributedDataParallel(
                self.model, find_unused_parameters=self.FIND_UNUSED_PARAMETERS)
        self._epoch_cache: tuple[int, SupervisedDataset] | None = None

    # ------------------------------------------------------------------ data
    def _dataset(self, epoch: int) -> SupervisedDataset:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            order = self.plan.epoch(epoch)
            ds = SupervisedDataset(self.records, order, self.processor, self.max_length, self.skips,
                                   self.tiling, augment=self.augment, epoch=epoch)
            self._epoch_cache = (epoch, ds)
        return self._epoch_cache[1]

    def micro_batch_at(self, step: int, micro: int) -> dict:
        """The micro-batch of this rank: a pure function of (step, micro), so a resumed run sees the same data.

        A sample that cannot be loaded (its image does not decode) is left out and listed under
        ``"dropped"`` as ``(source, reason, where, detail)``, so that the main process counts it even
        when a data worker found it. When no sample of the micro-batch loads, the next loadable ones of
        the stream stand in (at most one epoch further on); when none does, ``"sources"`` is empty.
        """
        t = self.recipe.training
        start = self.data_start + (((step - self.start_step) * t.grad_accum + micro) * self.dist.world
                                   + self.dist.rank) * self.micro_batch
        items: list[dict] = []
        dropped: list[tuple] = []
        for k in range(start, start + self.micro_batch):
            self._take(k, items, dropped)
        k = start + self.micro_batch
        while not items and k < start + self.micro_batch + len(self.plan):
            self._take(k, items, dropped)
            k += 1
        if not items:
            return {"sources": [], "dropped": dropped}
        batch = self._collate(items)
        batch["n_dropped"], batch["dropped"] = len(dropped), dropped
        return batch

    def _collate(self, items: list[dict]) -> dict:
        t = self.recipe.training
        return collate(items, self.processor, pack_to=t.max_seq_length if t.packing else None)

    def _batch_units(self, batch: dict) -> int:
        """What the step's loss is averaged over: supervised tokens."""
        return _supervised_tokens(batch["labels"])

    def _row_losses(self, batch: dict, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and unit counts of each sample of a micro-batch on the device, in the order of its
        `sources` (already taken out)."""
        segments = batch.pop("segments")
        with autocast:
            out = (self.engine or self.model)(**batch, loss_only=True)
        self._router_loss = out.router_loss  # a MoE LM's load-balancing term, trained beside the token losses
        return sample_losses(out.token_losses, batch["labels"], segments)

    def _take(self, k: int, items: list, dropped: list) -> None:
        epoch, index = divmod(k, len(self.plan))
        dataset = self._dataset(epoch)
        item = dataset[index]
        if item is None:
            dropped.append(dataset.dropped_entry(index))
        else:
            items.append(item)

    # ------------------------------------------------------------------ loop
    def run(self, stop_after: int | None = None) -> Path:
        """Train to the end of the schedule, or only its first `stop_after` steps (the schedule is the
        recipe's either way, so those steps are exactly a full run's); returns `final/` or, when
        stopped early, the checkpoint written there. The output folder is let go of at the end."""
        try:
            with _write_errors(self.out_dir):  # a full disk met by a plain write (a log line, TensorBoard) names it
                return self._run(stop_after)
        except BaseException as exc:
            # Ctrl-C or SIGTERM, or another process of the run is gone (killed): say what was kept
            if (not isinstance(exc, Exception) or lost_peer(exc)) and self.dist.main:
                self._say_what_is_kept()
            raise
        finally:
            self.close()

    def _say_what_is_kept(self) -> None:
        """Print which steps are kept; never raises: it runs while an interrupt or a lost process is on its way up."""
        done = self.steps_done
        try:
            latest, _ = usable_checkpoint(self.out_dir)
        except (CheckpointDamaged, OSError) as exc:
            why = exc if isinstance(exc, CheckpointDamaged) else f"its checkpoints cannot be read ({exc})"
            print(f"stopped after step {done} of {self.total_steps}; {why}", file=sys.stderr, flush=True)
            return
        saved = int(latest.name.rsplit("-", 1)[1]) if latest is not None else 0
        lost = f"; the {done - saved} step(s) since are not kept" if done > saved else ""
        if latest is not None:
            kept = f"{latest.name} holds step {saved}{lost}: run the same command to resume from it"
        else:
            kept = (f"no checkpoint was written yet (every {self.recipe.output.save_every} steps, output.save_every)"
                    f"{lost}: the same command starts over")
        print(f"stopped after step {done} of {self.total_steps}; {kept}", file=sys.stderr, flush=True)

    def _run(self, stop_after: int | None) -> Path:
        keep_freed_memory()  # steps free and allocate the same tensors again: don't fault their pages in each time
        start_step = self.start_step
        if stop_after is not None and (not isinstance(stop_after, int) or isinstance(stop_after, bool)
                                       or stop_after < 1):
            # 0 read as "no stop" and trained the whole schedule; a negative one was "at step 0 already"
            raise TrainingError(f"stop_after must be a step count of at least 1, got {stop_after!r}")
        end_step = min(stop_after, self.total_steps) if stop_after else self.total_steps
        if end_step < start_step:  # else nothing trains and the later weights are saved under step end_step's name
            raise TrainingError(f"stop_after {stop_after}: the run in {self.out_dir} is at step {start_step} already; "
                                "stop after a later step, or set output.dir to start a new run")
        log_path = self.out_dir / "train_log.jsonl"
        writer = self._tensorboard()
        if self.dist.main:
            # the console plan scrolls away: the run folder says what data mix trains it (written once the resume
            # took the recipe, so a refused edit leaves the run's own)
            atomic_write_text(self.out_dir / MIXTURE_JSON, json.dumps(mixture_summary(self.plan), indent=2) + "\n")
            self._print_plan(start_step)
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
        bar = progress_bar(total=self.total_steps, initial=start_step, desc="train", progress=shows_bar(self.progress))
        # DeepSpeed steps inside engine.step(), where its grad norm comes too late (or never: stage 0 gives none) and
        # where ZeRO checks overflow only in some precisions: the gradients are watched as backward makes them
        watch = _GradientWatch(self.model) if deepspeed and t.precision != "fp16" else None
        try:
            for step in range(start_step, end_step):
                started = time.perf_counter()
                micro_batches = [next(batches) for _ in range(t.grad_accum)]  # the step's token count comes first
                dropped = [tuple(d) for b in micro_batches for d in b.pop("dropped", ())]
                empty = sum(1 for b in micro_batches if not b["sources"])
                tokens = sum(self._batch_units(b) for b in micro_batches if b["sources"])
                step_tokens, n_dropped, n_empty = self.dist.all_sum(torch.tensor([tokens, len(dropped), empty])).tolist()
                if n_dropped:  # on every rank at once, so that all stop together
                    self._count_dropped(dropped)
                if n_empty:
                    self._stop_for_data(DataQualityError(
                        f"step {step + 1}: not one sample of the next epoch's worth could be loaded (an image that does "
                        f"not decode, or longer than max_seq_length); see {self.out_dir / 'skips.md'} for each one's "
                        "reason"))
                loss_scale = grad_scale / max(1.0, step_tokens)
                sums = torch.zeros(len(self.source_names), 3, dtype=torch.float64)  # loss sum, tokens, rows
                router_sum = None
                for i, (batch, sync) in enumerate(zip(micro_batches, gradient_syncs(self.engine, len(micro_batches)))):
                    sources = batch.pop("sources")
                    batch.pop("n_dropped", None)
                    batch = {k: v.to(self.dist.device) for k, v in batch.items()}
                    with sync:
                        self._router_loss = None
                        row_loss, row_tokens = self._row_losses(batch, autocast)
                        loss = row_loss.sum() * loss_scale
                        if self._router_loss is not None:  # its mean over the step's micro-batches and ranks
                            loss = loss + self._router_loss * (grad_scale / (self.dist.world * t.grad_accum))
                            router_sum = (router_sum or 0.0) + float(self._router_loss.detach())
                        if deepspeed:
                            self.engine.backward(loss)
                            if i < len(micro_batches) - 1:  # not the step's last: DeepSpeed only counts it
                                self.engine.step()
                        else:
                            scaler.scale(loss).backward()
                    for src, l, n in zip(sources, row_loss.tolist(), row_tokens.tolist()):
                        sums[self.source_names.index(src)] += torch.tensor([l, n, 1], dtype=torch.float64)
                sums = self.dist.all_sum(sums).tolist()  # the logged losses are the whole step's, every rank's rows
                # this update's lr: the scheduler steps (also in DeepSpeed's step) after it
                lr = self.scheduler.get_last_lr()[0]
                if not deepspeed:
                    scaler.unscale_(self.optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], t.max_grad_norm)
                else:
                    # the loss is checked before DeepSpeed's step updates the weights, as the plain path checks it
                    # before its own; DeepSpeed measures the gradient norm only within that step
                    self._stop_if_not_finite(step + 1, sums, 0.0, gradients=False)
                    if watch is not None:
                        bad_norm, bad_params = watch.collect(self.dist)
                        if bad_params:
                            self._stop_if_not_finite(step + 1, sums, bad_norm, gradients=True, params=bad_params)
                    self.engine.step()
                    if watch is not None and not self.engine.was_step_applied():  # it found an overflow itself
                        self._stop_if_not_finite(step + 1, sums, math.nan, gradients=True)
                    grad_norm = self.engine.get_global_grad_norm()  # None where DeepSpeed measures none (stage 0)
                # fp16 loss scaling overflows now and then by design: the scaler skips those updates itself
                self._stop_if_not_finite(step + 1, sums, 0.0 if grad_norm is None else float(grad_norm),
                                         gradients=t.precision != "fp16")
                if not deepspeed:
                    scaler.step(self.optimizer)
                    scaler.update()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                total_loss = sum(v[0] for v in sums) / max(1, sum(v[1] for v in sums))
                self.steps_done = step + 1
                entry = {"step": step + 1, "epoch": round((step + 1) / self.steps_per_epoch, 4), "loss": total_loss,
                         "lr": lr,
                         # not measured (DeepSpeed stage 0): left out, as a 0.0 would read as a vanished gradient
                         **({} if grad_norm is None else {"grad_norm": float(grad_norm)}),
                         "step_time": round(time.perf_counter() - started, 4)}
                entry.update({f"loss/{src}": v[0] / max(1, v[1]) for src, v in zip(self.source_names, sums) if v[2]})
                if router_sum is not None:  # every rank has one: the same model
                    entry["router_loss"] = self.dist.all_sum(torch.tensor([router_sum])).item() / (
                        self.dist.world * t.grad_accum)
                if self.dist.main:
                    self._log(entry, log_path, writer, bar)
                bar.update(1)
                every = self.recipe.eval.every
                if every and ((step + 1) % every == 0 or self.EVAL_LAST_STEP and step + 1 == end_step):
                    self._evaluate(step + 1, writer)
                if (step + 1) % self.recipe.output.save_every == 0 and step + 1 < self.total_steps:
                    self._save(step + 1)
        finally:  # before any message: a stop or error said after it must not land on the bar's line
            bar.close()
            if watch is not None:
                watch.close()
        stopped = end_step < self.total_steps
        # not saved by the loop already, nor the checkpoint this run resumed from (nothing trained since)
        if end_step > start_step and (not stopped or end_step % self.recipe.output.save_every):
            self._save(end_step)
        result = self.out_dir / f"checkpoint-{end_step}" if stopped else self._finish()
        if writer:
            writer.close()
        return result

    # ------------------------------------------------------------------ pieces
    def _count_dropped(self, dropped: list[tuple]) -> None:
        """Merge every rank's (and data worker's) dropped samples into the skip log; stop past the limit."""
        if self.dist.world > 1:
            gathered: list[list[tuple]] = [[] for _ in range(self.dist.world)]
            torch.distributed.all_gather_object(gathered, dropped)
            dropped = [d for part in gathered for d in part]
        for entry in dropped:
            self.skips.add_dropped(*entry)
        try:
            self.skips.check(self.kept_at_load, self.recipe.data.max_bad_fraction)
        except DataQualityError as exc:
            self._stop_for_data(exc)

    def _stop_for_data(self, error: DataQualityError) -> None:
        if self.dist.main:
            self.skips.save(self.out_dir)
        raise error

    def _stop_if_not_finite(self, step: int, sums: list[list[float]], grad_norm: float, gradients: bool,
                            params: list[str] | None = None) -> None:
        """Raise `TrainingError` when a source's loss (or the gradient norm) of this step is NaN or infinite;
        `params`: the trainable parameters whose gradients are (named in the message).

        The values are summed over ranks already, so every rank decides alike.
        """
        bad = [(src, v[0] / max(1.0, v[1])) for src, v in zip(self.source_names, sums) if v[2] and not math.isfinite(v[0])]
        if not bad and (math.isfinite(grad_norm) or not gradients):
            return
        if bad:
            what = "the loss is not finite on " + ", ".join(f"{src} ({loss})" for src, loss in bad)
        else:
            loss = sum(v[0] for v in sums) / max(1.0, sum(v[1] for v in sums))
            what = f"the gradient norm is not finite ({grad_norm}; loss {loss:.4g})"
            if params:
                more = f" and {len(params) - 1} more" if len(params) > 1 else ""
                what += f"; non-finite gradients in {params[0]}{more}"
        last = latest_checkpoint(self.out_dir)
        kept = f"the newest checkpoint, {last.name}, holds finite weights" if last else "no checkpoint was written"
        raise TrainingError(
            f"step {step}: {what}. The run stopped there and saved nothing of that step; {kept}. Lower the "
            "learning rates (parts.*.lr) or raise training.warmup_ratio, or check the data, then run again "
            "(with --allow-changes after editing the recipe) to resume from the newest checkpoint.")

    def _log(self, entry: dict, log_path: Path, writer, bar) -> None:
        append_entry(log_path, entry, writer)
        losses = {k.removeprefix("loss/"): f"{v:.3f}" for k, v in entry.items() if k.startswith("loss")}
        bar.set_postfix(losses, refresh=False)
        if not shows_bar(self.progress) and entry["step"] % self.recipe.logging.every == 0:
            print(f"step {entry['step']}/{self.total_steps} " + " ".join(f"{k} {v}" for k, v in losses.items())
                  + f" lr {entry['lr']:.3g}", flush=True)

    def _evaluate(self, step: int, writer) -> None:
        """Score the model being trained on the eval sources (main process; others wait).

        Skipped eval records are counted in ``<output.dir>/eval_during_training/skips.md``, logged as
        ``eval/skipped`` and held to ``data.max_bad_fraction`` as `adapt eval` does: past it every rank stops.
        """
        error = None
        if self.dist.main and self.recipe.data.eval_sources:
            try:
                self._evaluate_main(step, writer)
            except PocketAdaptError as exc:
                error = exc
        if self.dist.all_sum(torch.tensor([error is not None])).item():  # also the barrier the other ranks wait at
            if error is not None:
                raise error
            raise DataQualityError(f"step {step}: the evaluation on rank 0 stopped the run (see its message)")

    def _evaluate_main(self, step: int, writer) -> None:
        from .run_eval import score_eval_sources

        folder = self.out_dir / "eval_during_training"
        tiling, self.processor.tiling = self.processor.tiling, self.tiling
        try:
            summary, _ = score_eval_sources(base_model(self.model), self.processor, self.recipe, folder, progress=False)
        finally:
            self.processor.tiling = tiling
            self.model.train()
        scores = {**{f"eval/{g}": v["main"] for g, v in summary["groups"].items()},
                  **{f"eval/{s}": v["main"] for s, v in summary["sources"].items()}}
        scores = {k: v for k, v in scores.items() if v is not None}
        append_entry(self.out_dir / "eval_log.jsonl", {"step": step, **scores, "eval/skipped": summary["skipped"]},
                     writer)
        skipped = f" ({summary['skipped']} records skipped; see {folder / 'skips.md'})" if summary["skipped"] else ""
        line = f"eval at step {step}: " + ", ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in scores.items())
        tqdm.write(line + skipped, file=sys.stdout)  # above the bar, not on its line

    def _resume(self) -> int:
        if self.dist.main:
            for note in settle_saves(self.out_dir):
                print(f"note: {note}", flush=True)
        self.dist.barrier()  # a checkpoint rank 0 finished renaming is there for every rank to choose
        latest, damaged = usable_checkpoint(self.out_dir)
        if latest is None:
            if self.dist.main:
                for log in RUN_LOGS:
                    (self.out_dir / log).unlink(missing_ok=True)
            return 0
        self.dist.barrier()  # every rank has chosen before the damaged ones move
        if self.dist.main:
            for path, problem in damaged:
                moved = set_aside(path)
                print(f"warning: {path.name} is damaged ({problem}); set aside as {moved.name}, resuming from "
                      f"{latest.name} instead", flush=True)
        self._check_recipe_edits(latest)
        self._resumed_from = latest
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        deepspeed = self.recipe.distributed.strategy == "deepspeed"
        state = load_checkpoint(latest, self.model, None if deepspeed else self.optimizer, self.scheduler,
                                rank=self.dist.rank)
        if self.allow_changes:
            self._apply_hyperparameters(fresh)
        self._check_data_changes(latest, state.get("records_per_source"))
        step = int(state["step"])
        self._check_world_size(latest, state.get("world_size"))
        self.data_start = int(state.get("samples_seen", step * self.samples_per_step))
        for entry in state.get("dropped_records", []):
            self.skips.add_dropped(*entry)
        if deepspeed and self.dist.main:
            print("note: DeepSpeed resume restores weights, schedule, RNG and data position; the optimizer "
                  "moments restart (ZeRO optimizer state is not stored in safetensors checkpoints)", flush=True)
        if step > self.total_steps:  # only after --allow-changes: an edit of the step count is refused otherwise
            raise TrainingError(
                f"{latest.name} is at step {step}, past the {self.total_steps} step(s) the recipe now asks for "
                "(training.max_steps / training.epochs); raise them to go on, or set output.dir to start a new run")
        if self.dist.main:
            for log in RUN_LOGS:  # a killed run's evaluations past the checkpoint would be drawn twice too
                _truncate_log(self.out_dir / log, step)
            print(f"resuming from {latest} (step {step} of {self.total_steps})", flush=True)
        return step

    def _check_data_changes(self, checkpoint: Path, before: dict[str, int] | None) -> None:
        """Refuse (unless --allow-changes) a resume over sources whose usable record counts changed since
        `checkpoint`: the run would go on over other data, in another order, without a word."""
        now = getattr(self, "kept_at_load", None)
        if not before or now is None or before == now:
            return
        changes = [f"{name}: {before.get(name, 0)} -> {now.get(name, 0)} records"
                   for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)]
        message = f"the training data changed since {checkpoint.name} was written ({'; '.join(changes)})"
        if not self.allow_changes:
            raise TrainingError(
                f"{self.out_dir}: {message}. Resuming would go on over other data in another order. Put the data "
                f"back to go on as before, resume with `adapt {self.VERB} RECIPE --allow-changes` to go on over "
                "the data as it is now, or set output.dir to start a new run.")
        if self.dist.main:
            print(f"warning: {message}; going on over the data as it is now (--allow-changes)", flush=True)

    def _check_world_size(self, checkpoint: Path, before: int | None) -> None:
        """Refuse (unless --allow-changes) a resume with another number of processes: each step would train another
        number of samples, as an edit of training.batch_size would."""
        if before is None or before == self.dist.world:
            return
        message = f"processes: {before} -> {self.dist.world} since {checkpoint.name} was written"
        if not self.allow_changes:
            raise TrainingError(
                f"{self.out_dir}: {message}, so each step would train {self.samples_per_step} samples instead of "
                f"{self.samples_per_step * before // self.dist.world}. Resume with --nproc-per-node {before} to go on "
                f"as before, with `adapt {self.VERB} RECIPE --allow-changes` to go on with the new global batch (from "
                "the samples trained so far), or set output.dir to start a new run.")
        if self.dist.main:
            print(f"warning: {message}; going on with {self.samples_per_step} samples a step from the samples trained "
                  "so far (--allow-changes)", flush=True)

    def _check_recipe_edits(self, checkpoint: Path) -> None:
        """List the edits made to the recipe since `checkpoint` was written; refuse those that change training."""
        path = checkpoint / RECIPE
        if not path.is_file():
            if self.dist.main:
                print(f"note: {checkpoint.name} does not record its recipe (written by an older pocket-adapt), so "
                      "edits to the recipe since cannot be shown", flush=True)
            return
        try:  # bounded and alias-checked as a recipe is: a checkpoint may come from elsewhere
            before, _ = load_yaml(_read_text(path, str(path), "recipe"), str(path))
        except (OSError, yaml.YAMLError) as exc:
            raise TrainingError(f"{path}: cannot be read ({exc})") from None
        except (RecipeError, YAMLContentError) as exc:
            raise TrainingError(str(exc)) from None
        if not isinstance(before, dict):
            raise TrainingError(f"{path}: holds no recipe (a YAML mapping), but {type(before).__name__}; the "
                                "checkpoint is damaged or not one adapt train wrote")
        before = self._follow_move(before, checkpoint)
        after = yaml.safe_load(self.recipe.to_yaml())
        edits = recipe_edits(before, after)
        lora_parts = {part for recipe in (before, after) for part, spec in (recipe.get("parts") or {}).items()
                      if isinstance(spec, dict) and spec.get("mode") == "lora"}
        shaping = FIXED_ON_RESUME + tuple(f"parts.{part}.{key}" for part in sorted(lora_parts) for key in LORA_SHAPE)
        fixed = [line for key, line in edits if _key_under(key, shaping)]
        if fixed:
            raise TrainingError(
                f"{self.out_dir}: {checkpoint.name} holds weights for the model as the recipe set it up then; these "
                "edits change which weights exist or train, so no resume can apply them (not even with "
                "--allow-changes):\n  " + "\n  ".join(fixed)
                + "\nUndo them to go on with this run, or set output.dir to start a new run with them.")
        refused = [line for key, line in edits if not _safe_to_edit(key)]
        if refused and not self.allow_changes:
            raise TrainingError(
                f"{self.out_dir}: the recipe (file or command-line overrides) differs from the one {checkpoint.name} "
                "was written with:\n  " + "\n  ".join(refused)
                + "\nResuming would silently train on with a different setup. Undo the edits (or give the same "
                "overrides as before) to go on as before, "
                f"resume with `adapt {self.VERB} RECIPE --allow-changes` to go on with the new values, or set output.dir "
                "to start a new run.")
        if edits and self.dist.main:
            verb = "applying" if refused else "harmless"
            print(f"recipe edits since {checkpoint.name} ({verb}):\n  " + "\n  ".join(line for _, line in edits), flush=True)

    def _follow_move(self, before: Any, checkpoint: Path) -> Any:
        """`before` (a checkpoint's recipe, paths absolute) with the paths under the folder the run has moved out of
        given under the one it is in now, so that moving or renaming a project folder is no recipe edit. The move
        is read off the output folder: the one recorded and the one the checkpoint was found in, less the tail of
        folder names they share (``/a/proj/runs/x`` -> ``/b/proj2/runs/x``: ``/a/proj`` -> ``/b/proj2``)."""
        recorded = (before.get("output") or {}).get("dir") if isinstance(before, dict) else None
        if not isinstance(recorded, str) or Path(recorded) == self.out_dir:
            return before
        old, new = list(Path(recorded).parts), list(self.out_dir.parts)
        while old and new and old[-1] == new[-1]:
            old.pop(), new.pop()
        if len(old) < 2 or not new:  # moved out of the file system's root: every path is under it, none told moved
            return before
        old_root, new_root = str(Path(*old)), str(Path(*new))

        def moved(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: moved(v) for k, v in value.items()}
            if isinstance(value, list):
                return [moved(v) for v in value]
            if isinstance(value, str) and (value == old_root or value.startswith(old_root.rstrip("/") + "/")):
                return str(Path(new_root, value[len(old_root):].lstrip("/")))  # to the root: no "//data"
            return value

        if self.dist.main:
            print(f"note: the run moved from {old_root} to {new_root} since {checkpoint.name} was written; paths "
                  "under it are compared as moved", flush=True)
        return moved(before)

    def _apply_hyperparameters(self, fresh: list[dict]) -> None:
        """After loading a checkpoint, use the recipe's learning rates and weight decay (not the checkpoint's)."""
        for i, (group, new) in enumerate(zip(self.optimizer.param_groups, fresh)):
            group["weight_decay"] = new["weight_decay"]
            group["initial_lr"] = new["initial_lr"]
            self.scheduler.base_lrs[i] = new["initial_lr"]
        lrs = [base * fn(self.scheduler.last_epoch) for base, fn in zip(self.scheduler.base_lrs, self.scheduler.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.scheduler._last_lr = lrs

    def _master_weights(self) -> dict[str, torch.Tensor] | None:
        """DeepSpeed's fp32 master copy of the trainable weights (in bf16 / fp16 its module holds them rounded to half
        precision), whole on every rank; None without DeepSpeed."""
        if self.engine is None or self.recipe.distributed.strategy != "deepspeed":
            return None
        from deepspeed.utils import safe_get_full_fp32_param

        out = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                master = safe_get_full_fp32_param(p)  # a collective: every rank asks for every parameter
                out[name] = (p if master is None else master).detach().cpu().contiguous()
        return out

    def _restore_master_weights(self, checkpoint: Path) -> None:
        """Give DeepSpeed's fp32 master copy the checkpoint's weights: it made its copy from the module after rounding
        it to bf16 / fp16, so a resume would go on from rounded weights (and not as the run would have)."""
        from deepspeed.utils import safe_set_full_fp32_param
        from safetensors.torch import load_file

        weights = load_file(str(checkpoint / "trainable.safetensors"))
        for name, p in self.model.named_parameters():
            if p.requires_grad and name in weights:
                safe_set_full_fp32_param(p, weights[name].to(device=p.device, dtype=torch.float32))

    def _gathered(self, params):
        """Whole parameters on every rank for the duration (ZeRO-3 partitions them; a no-op otherwise)."""
        if self.recipe.distributed.strategy == "deepspeed":
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)
        return contextlib.nullcontext()

    def _save(self, step: int) -> None:
        with self._gathered(p for p in self.model.parameters() if p.requires_grad):
            bad = [n for n, p in self.model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
            if bad:  # every rank holds the same weights, so every rank stops here
                raise TrainingError(f"step {step}: trainable weights hold NaN or infinite values ({bad[0]}"
                                    f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); not saving them")
            extra = {"recipe": self.recipe.name, "total_steps": self.total_steps, "world_size": self.dist.world,
                     "samples_seen": self.data_start + (step - self.start_step) * self.samples_per_step,
                     "dropped_records": self.skips.dropped_entries(),
                     "records_per_source": getattr(self, "kept_at_load", None)}
            rank_rng, master = None, self._master_weights()
            if self.dist.world > 1:
                rank_rng = [{}] * self.dist.world
                torch.distributed.all_gather_object(rank_rng, rng_state())
                extra["rank_weights_sha256"] = digests = self._rank_digests()
                if len(set(digests)) > 1 and self.dist.main:
                    print(f"warning: at step {step} the ranks hold different trainable weights (sha256 per rank: "
                          f"{[d[:12] for d in digests]}); data-parallel training has diverged", flush=True)
            if self.dist.main:
                optimizer = None if self.recipe.distributed.strategy == "deepspeed" else self.optimizer
                partial = self.out_dir / f"checkpoint-{step}.partial"
                try:
                    with _write_errors(partial):
                        save_checkpoint(self.out_dir, step, self.model, optimizer, self.scheduler, extra,
                                        self.recipe.output.keep_last, recipe_yaml=self.recipe.to_yaml(),
                                        rank_rng=rank_rng, weights=master)
                except BaseException:
                    shutil.rmtree(partial, ignore_errors=True)  # a full disk: give its space back at once
                    raise
                self.skips.save(self.out_dir)
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
        """Write `final` whole or not at all: into a staging folder beside it, renamed into place when complete
        (a run killed while writing left a `final/` with a config and no weights)."""
        if self.dist.main:
            with staged_folder(final) as staging:
                if self.recipe.output.merge_lora or not is_peft_model(self.model):
                    merged = merge_lora(self.model)
                else:  # base weights under their own names, the adapter beside them (model.load merges it back)
                    self.model.save_pretrained(str(staging / ADAPTER_FOLDER))
                    merged = self.model.unload()
                # in place: training is over, and the adapter (if any) was saved above in the training dtype
                model_core.save(merged.to(self.final_dtype), self.processor, staging)
            from .evaluate import plot_loss_curve

            plot_loss_curve(self.out_dir / "train_log.jsonl", self.out_dir / "loss.png", self.out_dir / "eval_log.jsonl")
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
        print(f"  {self.total_steps} steps x {self.samples_per_step} samples ({self.steps_per_epoch:.4g} steps/epoch), "
              f"{self.dist.world} process(es){parallel}, output {self.out_dir}", flush=True)
        if self.augment is not None:
            print(f"  {self.augment.summary(self.records)}", flush=True)
        self._print_warmup_note("parts.*.lr")
        if self.skips.count():
            print(self.skips.table(), flush=True)

    def _print_warmup_note(self, lr_setting: str) -> None:
        """Say so when warm-up covers every step: the learning rate never reaches `lr_setting` (the recipe key)."""
        ratio = self.recipe.training.warmup_ratio
        if ratio and warmup_steps(ratio, self.total_steps) >= self.total_steps:
            only = "; its only step trains at learning rate 0, so nothing changes" if self.total_steps == 1 else ""
            print(f"note: training.warmup_ratio {ratio:g} warms up over every one of the {self.total_steps} step(s) "
                  f"(rounded up, as transformers rounds it), so the learning rate never reaches {lr_setting}{only}; "
                  "lower training.warmup_ratio or train more steps", flush=True)

    def _tensorboard(self):
        if not (self.recipe.logging.tensorboard and self.dist.main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard is not installed: pip install tensorboard (or set logging.tensorboard: false)", flush=True)
            return None
        # steps a stopped run logged after its last checkpoint (every step, where it wrote none) are trained again, and
        # without a purge TensorBoard would draw both (train_log.jsonl drops them in `_truncate_log` / `_resume`)
        _quiet_tensorboard_thread()
        return SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.start_step + 1)

    def _deepspeed(self):
        import deepspeed

        t = self.recipe.training
        config = resolve_deepspeed_config(self.recipe.distributed.deepspeed, training=t, world=self.dist.world)
        config = _fill_auto(config, {
            "train_micro_batch_size_per_gpu": t.batch_size, "gradient_accumulation_steps": t.grad_accum,
            "train_batch_size": self.samples_per_step, "gradient_clipping": t.max_grad_norm,
        })
        config.setdefault("bf16", {})["enabled"] = t.precision == "bf16"
        config.setdefault("fp16", {})["enabled"] = t.precision == "fp16"
        if "LOCAL_RANK" not in os.environ:  # DeepSpeed asserts a launcher set it; ours goes when the run ends (close)
            os.environ["LOCAL_RANK"] = str(self.dist.local_rank)
            self._set_local_rank = True
        engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=config)
        return engine


def mixture_summary(plan: MixturePlan) -> dict:
    """What `plan.describe` prints, as data: the epoch size, the general ratio asked for and achieved, and each
    source's kind, records, repeat, ratio and samples per epoch."""
    counts = {name: int(c) for name, c in plan.counts().items()}
    general = sum(c for name, c in counts.items() if plan.kinds[name] == "general")
    number = lambda v: None if v is None else float(v)  # noqa: E731
    return {
        "epoch_size": int(plan.epoch_size), "general_ratio": plan.general_ratio,
        "achieved_general_ratio": general / plan.epoch_size if plan.epoch_size else 0.0,
        "sources": {name: {"kind": plan.kinds[name], "records": plan.sizes[name],
                           "repeat": number(plan.repeats.get(name)), "ratio": number(plan.ratios.get(name)),
                           "per_epoch": counts[name]} for name in plan.names},
        "warnings": plan.warnings(),
    }


@contextlib.contextmanager
def staged_folder(final: Path):
    """Yield a staging folder beside `final` (`.<name>.staging`) to write it in, renamed over `final` once the block
    ends without an error and removed on any error: `final` is whole or not at all (a run killed while writing it
    left a config and no weights), and holds no file of an earlier one. Write errors name the staging folder."""
    staging = final.with_name(f".{final.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)  # a killed run's
    try:
        with _write_errors(staging):
            yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = moved_aside(final)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _quiet_tensorboard_thread() -> None:
    """Keep Python from printing a traceback when TensorBoard's writer thread fails to write (a full disk): the
    writer raises the same error again in the training thread, which reports it in one line."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def hook(args) -> None:
        if not (type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError)):
            previous(args)

    hook.quiet_tensorboard = True
    threading.excepthook = hook


@contextlib.contextmanager
def _write_errors(folder: Path):
    """A failed safetensors write raised as the OSError it is, naming `folder`, so that the command says
    "disk full" instead of a traceback; a plain write's OSError that names no file (a full disk met by write())
    names `folder` too."""
    try:
        yield
    except SafetensorError as exc:
        if (err := os_error_of(exc, folder)) is None:
            raise
        raise err from exc
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc


class _GradientWatch:
    """Whether the gradients backward computes for each trainable parameter hold NaN or infinite values, from tensor
    hooks: they see every rank's every micro-batch, before any wrapper (DeepSpeed, ZeRO) reduces, partitions or
    steps with them. A NaN or Inf there is one in the reduced gradient too. The flags stay on the device until read."""

    def __init__(self, model: torch.nn.Module):
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in params]
        device = params[0][1].device if params else torch.device("cpu")
        self.flags = torch.zeros(len(params), 2, dtype=torch.int32, device=device)  # NaN seen, Inf seen
        self.handles = [p.register_hook(self._watcher(i)) for i, (_, p) in enumerate(params)]

    def _watcher(self, i: int):
        def see(grad: torch.Tensor) -> None:
            self.flags[i, 0] += grad.isnan().any().to(torch.int32)
            self.flags[i, 1] += grad.isinf().any().to(torch.int32)

        return see

    def collect(self, dist: Distributed) -> tuple[float, list[str]]:
        """The gradient norm as far as the flags tell (NaN, Inf or 0.0 when all are finite) and the parameters with
        non-finite gradients, over every rank (a collective); the flags restart for the next step."""
        flags = dist.all_sum(self.flags.to(torch.float64)).to(torch.float64)
        self.flags.zero_()
        bad = [self.names[i] for i in flags.sum(1).nonzero().flatten().tolist()]
        norm = math.nan if flags[:, 0].any() else math.inf if bad else 0.0
        return norm, bad

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _adamw(param_groups: list[dict], fused: bool = True) -> torch.optim.AdamW:
    """AdamW; `fused` (``training.fused_adamw``): torch's fused kernel (one vectorised pass per tensor; ~7x the
    per-op loop on CPU at 160 M parameters) where the parameters' device has one. Both take the same step up to
    rounding; the per-op loop is what runs recorded before it (pocket-tiny's pre-training) replay bit for bit."""
    if fused:
        try:
            return torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8, fused=True)
        except RuntimeError:  # a device or dtype without the fused kernel
            pass
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8)


def append_entry(path: Path, entry: dict, writer) -> None:
    """Append one log entry (``step`` and its values) to a JSONL log and, with a writer, to TensorBoard."""
    with path.open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
    if writer:
        for key, value in entry.items():
            if key != "step":
                writer.add_scalar(key, value, entry["step"])


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


def gradient_syncs(engine, n: int) -> list:
    """One context per micro-batch of an optimizer step: under DDP, ``engine.no_sync()`` for all but the last, so
    the gradients are all-reduced once per step (accumulated locally until then), not once per micro-batch;
    otherwise (one process, DeepSpeed: it accumulates itself) nothing."""
    if not isinstance(engine, torch.nn.parallel.DistributedDataParallel):
        return [contextlib.nullcontext() for _ in range(n)]
    return [engine.no_sync() for _ in range(n - 1)] + [contextlib.nullcontext()]


def train(recipe: Recipe, progress: Progress = True, stop_after: int | None = None, allow_changes: bool = False) -> Path:
    """Train (or resume) the run a recipe describes; returns the final model folder (see `Trainer.run`).
    `allow_changes`: resume with the recipe's new values even though it was edited since the checkpoint."""
    return Trainer(recipe, progress=progress, allow_changes=allow_changes).run(stop_after)


def recipe_edits(before: dict, after: dict) -> list[tuple[str, str]]:
    """``(dotted key, "key: old -> new")`` for every value that differs between two resolved recipes."""
    old, new = _flatten(before), _flatten(after)
    keys = list(dict.fromkeys([*new, *old]))
    shown = lambda k, d: _shown(d[k]) if k in d else "(absent)"  # noqa: E731
    return [(k, f"{k}: {shown(k, old)} -> {shown(k, new)}") for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


_ABSENT = object()


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}.{key}" if prefix else str(key)).items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _key_under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith((p + ".", p + "[")) for p in prefixes)


def _safe_to_edit(key: str) -> bool:
    return _key_under(key, SAFE_TO_EDIT)


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


def lost_peer(err: BaseException) -> bool:
    """Whether `err` is a collective that failed because another process of the run is gone (gloo: connection
    reset by peer; NCCL: a backend error)."""
    return isinstance(err, getattr(torch.distributed, "DistBackendError", ())) or (
        isinstance(err, RuntimeError) and "gloo/transport/" in str(err))


def _check_packable(vlm: torch.nn.Module) -> None:
    """Packed rows rely on transformers' causal-mask builder reading sample boundaries off `position_ids`;
    a language model from remote code may build its own mask and let samples see each other."""
    lm = vlm.language_model
    if not type(lm).__module__.startswith("transformers.models."):
        raise TrainingError(
            f"training.packing: the language model {type(lm).__name__} ({type(lm).__module__}) is not one of "
            "transformers' own, so packed samples could attend to each other; set training.packing=false")


def _supervised_tokens(labels: torch.Tensor) -> int:
    """Tokens a batch's loss is taken over (the same shift as `model.loss.supervised_token_losses`)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines a killed run wrote after its last complete checkpoint, and a last line it was
    killed while writing; any other unreadable line is an error naming it."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry_step = int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if n == len(lines):
                print(f"note: {path}:{n}: dropped an incomplete last line (the run stopped while writing it)", flush=True)
                continue
            raise TrainingError(f"{path}:{n}: not a training log line ({exc}); delete that line, or the whole file, "
                                "and run again") from None
        if entry_step <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


RUN_LOGS = ("train_log.jsonl", "eval_log.jsonl")  # one line per step logged, cut back to the checkpoint on resume

def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
