"""`adapt distill`: vision-encoder distillation, driven by a recipe with a ``distill:`` section.

A frozen teacher tower and a trained student see the same tiles (the recipe's tiling at the student's tile
size; the teacher gets them in its own normalisation and size). For each paired layer (the last K of each
tower by default) the student's patch features, through a learned linear width projection where the widths
differ, are pulled toward the teacher's:

    loss per tile = mean over pairs of [cosine · (1 − cos(P·s, t)) + mse · ‖P·s − t‖² / C], averaged over patch tokens

(1 − cos is the negative cosine, shifted to 0 at perfect alignment), then averaged over the step's tiles. This
follows Mini-InternVL's description (a negative-cosine feature loss from InternViT-6B into InternViT-300M); its
exact layer pairing and width alignment are unpublished, hence the options.

Everything else is `adapt train`'s machinery (`Trainer`): the domain/general data mixture, checkpoints and
resume after kill -9, DDP / DeepSpeed, the progress bar, train_log.jsonl and loss.png, the skip report. The
result, ``final/``, is a vision-tower folder (`model.checkpoints.tower`) that a training recipe names as
``model.vision``; ``report.md`` / ``report.json`` give the held-out feature cosine before and after.

When a pair joins the block whose output the teacher VLM's projector reads (its ``vision_feature_layer``; -1 for a
bare tower: the tower's output, ``last_hidden_state``) with the student's block of the same feature layer, and the
widths differ, that pair's projection is written into ``final/`` as the tower's vision adapter
(`model.checkpoints.tower.save_vision_adapter`): a training recipe that names ``final/`` as ``model.vision`` on the
teacher's VLM keeps the VLM's trained projector behind it (``model.vision_adapter: auto``).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from model.checkpoints.tower import load_vision, load_vision_feature, save_tower, save_vision_adapter
from model.progress import Progress
from model.tiling import ImageLoadError, TilingConfig, load_image
from model.vision import VISION_CONFIGS, build_vision_tower, layer_features, paired_block

from .checkpointing import atomic_write_text
from .data.augment import build_augment
from .data.dataset import TileDataset, collate_tiles, record_tiles
from .data.samples import UNDECODABLE_IMAGE, DataError, DataQualityError, Record, SkipLog, read_source
from .parts import decayed_names
from .recipe import DistillRecipe, RecipeError
from .recipe import layer_pairs as recipe_layer_pairs
from .train import Trainer, TrainingError, _seed_everything, append_entry, source_specs, staged_folder


class DistillError(TrainingError):
    """Towers that cannot be distilled as asked: layers out of range, different patch grids."""


def layer_pairs(layers: int, pairs: list[tuple[int, int]] | None, teacher_depth: int, student_depth: int) -> list[tuple[int, int]]:
    """``(teacher_layer, student_layer)`` pairs, 1-based block numbers (`adapt.recipe.layer_pairs`)."""
    try:
        return recipe_layer_pairs(layers, pairs, teacher_depth, student_depth)
    except ValueError as err:
        raise DistillError(str(err)) from None


def adapter_pair(pairs: list[tuple[int, int]], feature_layer: int, teacher_depth: int,
                 student_depth: int) -> int | None:
    """Index in `pairs` of the pair whose teacher block is the one a VLM with `feature_layer` feeds its projector and
    whose student block is the student's of the same feature layer (the pair to use as the vision adapter); None if
    none is (`paired_block`)."""
    wanted = (paired_block(teacher_depth, feature_layer), paired_block(student_depth, feature_layer))
    if None in wanted:
        return None
    return next((i for i, pair in enumerate(pairs) if tuple(pair) == wanted), None)


def no_adapter_reason(feature_layer: int, teacher_depth: int, student_depth: int) -> str:
    """Why `adapter_pair` found no pair for `feature_layer` (the report's words)."""
    for who, depth in (("teacher", teacher_depth), ("student", student_depth)):
        if paired_block(depth, feature_layer) is not None:
            continue
        if feature_layer == depth:
            return (f"vision_feature_layer {feature_layer} names the {who}'s last block by its index, so a VLM reads "
                    f"it before the tower's final norm (hidden_states[{feature_layer}]), and distillation pairs the "
                    "tower's output (-1) there")
        return f"vision_feature_layer {feature_layer} is not a layer of the {who}'s {depth} blocks"
    return (f"no pair joins the teacher block its VLM's projector reads (vision_feature_layer {feature_layer}) with "
            "the student's")


def machine_memory() -> int | None:
    """This machine's physical memory in bytes; None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # Windows
        return None


def check_tower_fits(role: str, source: str, config: dict) -> None:
    """A tower config's random-weight tower is built in float32 in this machine's memory: refuse one whose weights
    alone need more than that memory (counted on the meta device), before the allocator stops with a traceback."""
    memory = machine_memory()
    if source not in VISION_CONFIGS or memory is None:
        return
    with torch.device("meta"):
        params = sum(p.numel() for p in build_vision_tower(VISION_CONFIGS[source](**config)).parameters())
    if params * 4 > memory:
        raise DistillError(f"distill.{role}: {source} with config {config} has {params:,} parameters "
                           f"({params * 4 / 2**30:,.1f} GiB in float32), more than this machine's "
                           f"{memory / 2**30:,.1f} GiB of memory; make it smaller (distill.{role}.config)")


@contextmanager
def memory_for(what: str):
    """An allocation that fails while `what` is built or moved is one line naming it, not a traceback."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, (MemoryError, torch.OutOfMemoryError)) and "allocate" not in reason:
            raise
        reason = re.sub(r"^\[enforce fail[^]]*\] (err == 0\. )?", "", reason)  # the CPU allocator's source line
        raise DistillError(f"{what} does not fit in memory ({reason}); make it smaller or use a machine with more "
                           "memory") from None


class FeatureDistiller(nn.Module):
    """Teacher (frozen, always in eval mode) + student + one width projection per pair; `forward` gives the loss
    of each tile."""

    def __init__(self, teacher: nn.Module, student: nn.Module, pairs: list[tuple[int, int]], cosine: float = 1.0,
                 mse: float = 0.0, student_tiling: TilingConfig | None = None, teacher_tiling: TilingConfig | None = None):
        super().__init__()
        self.teacher = teacher.requires_grad_(False)
        self.student = student
        self.pairs = list(pairs)
        self.cosine, self.mse = float(cosine), float(mse)
        ws, wt = student.config.hidden_size, teacher.config.hidden_size
        self.projections = nn.ModuleList(nn.Linear(ws, wt) if ws != wt else nn.Identity() for _ in self.pairs)
        # teacher pixels = student pixels * scale + shift (another normalisation), then resized to its image size
        scale, shift = torch.ones(3), torch.zeros(3)
        if student_tiling is not None and teacher_tiling is not None:
            ms, ss = torch.tensor(student_tiling.mean), torch.tensor(student_tiling.std)
            mt, st = torch.tensor(teacher_tiling.mean), torch.tensor(teacher_tiling.std)
            scale, shift = ss / st, (ms - mt) / st
        self.register_buffer("pixel_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_shift", shift.view(1, 3, 1, 1), persistent=False)
        size = teacher.config.image_size
        self.teacher_size = (size, size) if isinstance(size, int) else tuple(size)

    def train(self, mode: bool = True) -> FeatureDistiller:
        super().train(mode)
        self.teacher.eval()
        return self

    def features(self, pixel_values: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(projected student, teacher)`` patch features `(tiles, tokens, teacher width)` per pair, in float32."""
        with torch.no_grad():
            pixels = pixel_values * self.pixel_scale + self.pixel_shift
            if tuple(pixels.shape[-2:]) != self.teacher_size:
                pixels = F.interpolate(pixels, size=self.teacher_size, mode="bicubic", align_corners=False)
            dtype = next(self.teacher.parameters()).dtype
            teacher = layer_features(self.teacher, pixels.to(dtype), [t for t, _ in self.pairs])
        student = layer_features(self.student, pixel_values.to(next(self.student.parameters()).dtype),
                                 [s for _, s in self.pairs])
        # float32 projections whatever the towers' dtypes (a bfloat16 student's features are cast up first)
        return [(proj(s.float()), t.float()) for proj, s, t in zip(self.projections, student, teacher)]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for s, t in self.features(pixel_values):
            loss = self.cosine * (1 - F.cosine_similarity(s, t, dim=-1)).mean(-1)
            if self.mse:
                loss = loss + self.mse * (s - t).pow(2).mean((-2, -1))
            total = total + loss
        return total / len(self.pairs)

    @torch.no_grad()
    def cosines(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(tiles, pairs)`: each tile's mean cosine over patch tokens, per pair."""
        return torch.stack([F.cosine_similarity(s, t, dim=-1).mean(-1) for s, t in self.features(pixel_values)], -1)


class Distiller(Trainer):
    """`adapt distill`'s run: `Trainer` with a `FeatureDistiller` for the model and tiles for the data."""

    VERB = "distill"
    FIND_UNUSED_PARAMETERS = True  # e.g. a CLIP student's post_layernorm never sees a gradient
    EVAL_LAST_STEP = False  # the report scores the last step's held-out cosine (held_out_after)

    def _setup(self) -> None:
        recipe: DistillRecipe = self.recipe
        d = recipe.distill
        _seed_everything(recipe.seed)
        for role, spec in (("teacher", d.teacher), ("student", d.student)):
            check_tower_fits(role, spec.source, spec.config)
        with memory_for(f"distill.teacher ({d.teacher.source})"):
            teacher, teacher_tiling, self.feature_layer = load_vision_feature(d.teacher.source, d.teacher.config,
                                                                              seed=recipe.seed + 1)
            teacher = teacher.to(getattr(torch, d.teacher.dtype))
        with memory_for(f"distill.student ({d.student.source})"):
            student, student_tiling = load_vision(d.student.source, d.student.config, seed=recipe.seed)
            student = student.to(getattr(torch, d.student.dtype))
        try:  # the recipe checked the towers' config files already, unless it could not read them (hub:)
            self.pairs, self.tiling = recipe.towers_fit(teacher.config, student.config, student_tiling)
        except RecipeError:
            raise
        except ValueError as err:
            raise DistillError(str(err)) from None
        self.adapter_pair = adapter_pair(self.pairs, self.feature_layer, teacher.config.num_hidden_layers,
                                         student.config.num_hidden_layers)
        self.skips = SkipLog()
        specs = source_specs(recipe.data.sources)
        records = {s.name: read_source(s, self.skips) for s in specs}
        self.text_only = {name: sum(1 for r in rs if not r.images) for name, rs in records.items()}
        try:
            self._plan_data(specs, {name: [r for r in rs if r.images] for name, rs in records.items()})
        except DataError as err:  # skips.md does not list the text-only records: say where they went
            left_out = ", ".join(f"{name}: {n} of {len(records[name])}" for name, n in self.text_only.items() if n)
            if not left_out:
                raise
            raise type(err)(f"{err}. adapt distill trains on images only and left out the text-only records "
                            f"({left_out})") from None

        torch.manual_seed(recipe.seed)  # the projections' initial weights
        with memory_for(f"the teacher, student and projections on {self.dist.device}"):
            self.model = FeatureDistiller(teacher, student, self.pairs, d.cosine, d.mse, self.tiling, teacher_tiling)
            self.model = self.model.to(self.dist.device)
        self.model.train()
        self.before = self._held_out_cosine() if self.dist.main else None  # the initial weights, resumed or not
        self._prepare_run(self._param_groups())
        general = [name for name, kind in self.plan.kinds.items() if kind == "general"]
        self.augment = build_augment(recipe.data.augment, recipe.seed, general)  # general sources: never augmented

    def _param_groups(self) -> list[dict]:
        d, decay = self.recipe.distill, self.recipe.training.weight_decay
        groups = []
        for part, module, lr in (("student", self.model.student, d.lr),
                                 ("projection", self.model.projections, d.projection_lr or d.lr)):
            decayed = decayed_names(module)  # adapt train's rule: all but norms and biases (layer scales decay)
            params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            for wd, chosen in ((decay, [p for n, p in params if n in decayed]),
                               (0.0, [p for n, p in params if n not in decayed])):
                if chosen:
                    groups.append({"params": chosen, "lr": lr, "weight_decay": wd, "part": part})
        return groups

    # ------------------------------------------------------------------ data and loss
    def _dataset(self, epoch: int) -> TileDataset:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, TileDataset(self.records, self.plan.epoch(epoch), self.skips, self.tiling,
                                                    augment=self.augment, epoch=epoch))
        return self._epoch_cache[1]

    def _collate(self, items: list[dict]) -> dict:
        return collate_tiles(items)

    def _batch_units(self, batch: dict) -> int:
        """The loss is averaged over tiles."""
        return int(batch["tiles"].sum())

    def _row_losses(self, batch: dict, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        tiles = batch["tiles"]
        with autocast:
            per_tile = (self.engine or self.model)(batch["pixel_values"])
        rows = torch.stack([chunk.sum() for chunk in per_tile.float().split(tiles.tolist())])
        return rows, tiles

    # ------------------------------------------------------------------ held-out cosine
    def _held_out_records(self) -> tuple[dict[str, list[Record]], SkipLog]:
        """The held-out records with images, whole records up to eval.max_images images per source (at least one
        record), and what reading skipped (held to data.max_bad_fraction, as the training sources and `adapt eval`'s
        are: a missing image is never left out of the cosine unsaid); read once per run, for the evaluation before,
        every eval.every steps and after."""
        if getattr(self, "_held_out", None) is not None:
            return self._held_out
        skips = SkipLog()
        out, limit, self._held_out_read = {}, self.recipe.eval.max_images, {}
        for spec in source_specs(self.recipe.data.eval_sources, held_out=True):
            records, images = [], 0
            with_images = [r for r in read_source(spec, skips) if r.images]
            self._held_out_read[spec.name] = len(with_images)  # the skips are of the whole source, not the kept part
            for record in with_images:
                if limit and records and images + len(record.images) > limit:
                    break
                records.append(record)
                images += len(record.images)
            out[spec.name] = records
        self._held_out = out, skips
        self._check_held_out(skips, self._held_out_read)
        return self._held_out

    def _check_held_out(self, skips: SkipLog, kept: dict[str, int]) -> None:
        """Save the held-out skips (``held_out/skips.md``), say them once, and stop past data.max_bad_fraction: of
        each whole source, and of the records the cosine came to (eval.max_images), as `adapt eval` holds those of
        eval.max_samples (every image it came to undecodable left the source out of the cosine unsaid)."""
        if skips.count() <= getattr(self, "_held_out_said", 0):
            return
        self._held_out_said = skips.count()
        folder = self.out_dir / "held_out"
        skips.save(folder)
        try:
            used = {name: len(records) for name, records in self._held_out[0].items()}
            skips.check(kept, self.recipe.data.max_bad_fraction, used=used)
        except DataQualityError as err:
            raise DataQualityError(f"held-out images (data.eval_sources): {err}") from None
        print(f"warning: {skips.count()} held-out record(s) skipped; the cosine leaves them out: see "
              f"{folder / 'skips.md'}", flush=True)

    @torch.no_grad()
    def _held_out_cosine(self) -> dict | None:
        """Mean patch-feature cosine (student through its projection vs teacher) on the held-out images: overall,
        per source and per pair; None without `data.eval_sources`."""
        if not self.recipe.data.eval_sources:
            return None
        records, skips = self._held_out_records()
        was_training = self.model.training
        self.model.eval()
        per_source, undecodable = {}, 0
        try:
            for name, rs in records.items():
                cosines, batch, scored, batch_images = [], [], 0, 0
                for record in rs:
                    try:
                        images = [load_image(p, max_pixels=self.tiling.max_pixels) for p in record.images]
                    except ImageLoadError as err:
                        skips.add_dropped(name, UNDECODABLE_IMAGE, record.where, err.reason)
                        undecodable += 1
                        continue
                    batch.append(record_tiles(record, images, self.tiling))
                    scored += len(images)
                    batch_images += len(images)
                    if batch_images >= self.recipe.eval.batch_size:  # images per forward pass, whole records
                        cosines.append(self.model.cosines(torch.cat(batch).to(self.dist.device)).double().cpu())
                        batch, batch_images = [], 0
                if batch:
                    cosines.append(self.model.cosines(torch.cat(batch).to(self.dist.device)).double().cpu())
                if cosines:
                    cos = torch.cat(cosines)
                    sums, n = cos.sum(0), cos.shape[0]
                    per_source[name] = {"tiles": n, "images": scored, "per_pair": (sums / n).tolist()}
        finally:
            self.model.train(was_training)
        if undecodable:
            self._check_held_out(skips, self._held_out_read)
        if not per_source:
            return None
        tiles = sum(v["tiles"] for v in per_source.values())
        per_pair = [sum(v["per_pair"][i] * v["tiles"] for v in per_source.values()) / tiles for i in range(len(self.pairs))]
        for v in per_source.values():
            v["cosine"] = sum(v["per_pair"]) / len(v["per_pair"])
        return {"cosine": sum(per_pair) / len(per_pair), "per_pair": per_pair, "sources": per_source,
                "skipped": skips.count()}

    def _evaluate_main(self, step: int, writer) -> None:
        result = self._held_out_cosine()
        if result is None:
            return
        append_entry(self.out_dir / "eval_log.jsonl", {"step": step, "eval/cosine": result["cosine"],
                     **{f"eval/cosine/{name}": v["cosine"] for name, v in result["sources"].items()}}, writer)
        tqdm.write(f"held-out cosine at step {step}: {result['cosine']:.4f}")

    # ------------------------------------------------------------------ output
    def adapter(self) -> nn.Linear | None:
        """The projection of the pair the teacher VLM's projector reads (see `adapter_pair`); None without such a
        pair or where the widths are equal (no projection)."""
        if self.adapter_pair is None:
            return None
        projection = self.model.projections[self.adapter_pair]
        return projection if isinstance(projection, nn.Linear) else None

    # ------------------------------------------------------------------ output
    def _write_final(self, final: Path) -> None:
        if not self.dist.main:
            return
        d = self.recipe.distill
        with staged_folder(final) as staging:
            save_tower(self.model.student, self.tiling, staging, {
                "distilled_from": d.teacher.source, "student_start": d.student.source, "pairs": self.pairs,
                "recipe": self.recipe.name, "steps": self.total_steps})
            adapter = self.adapter()
            if adapter is not None:
                save_vision_adapter(adapter, staging, {
                    "vision_feature_layer": self.feature_layer, "pair": list(self.pairs[self.adapter_pair]),
                    "teacher": d.teacher.source})
        from .evaluate import plot_loss_curve

        after = self._held_out_cosine()
        # report.md's before (step 0) and after (the last step) are on the curve too, so it spans the run
        ends = [(step, r["cosine"]) for step, r in ((0, self.before), (self.total_steps, after)) if r is not None]
        plot_loss_curve(self.out_dir / "train_log.jsonl", self.out_dir / "loss.png", self.out_dir / "eval_log.jsonl",
                        eval_keys=("eval/cosine",), extra_scores={"eval/cosine": ends})
        self.skips.save(self.out_dir)
        self._write_report(final, after)

    def _write_report(self, final: Path, after: dict | None) -> None:
        d = self.recipe.distill
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        report = {
            "recipe": self.recipe.name, "teacher": d.teacher.source, "student": d.student.source,
            "teacher_params": count(self.model.teacher), "student_params": count(self.model.student),
            "projection_params": count(self.model.projections), "pairs": self.pairs, "steps": self.total_steps,
"held_out_before": self.before, "held_out_after": after,
            "final": str(final), "skipped_records": self.skips.count(),
            "vision_adapter": None if self.adapter() is None else {
                "pair": list(self.pairs[self.adapter_pair]), "vision_feature_layer": self.feature_layer},
        }
        atomic_write_text(self.out_dir / "report.json", json.dumps(report, indent=1) + "\n")
        lines = [f"# Distillation report: {self.recipe.name}", "",
                 f"Teacher `{d.teacher.source}` ({report['teacher_params']:,} params, frozen) → student "
                 f"`{d.student.source}` ({report['student_params']:,} params); width projection "
                 f"{report['projection_params']:,} params; layer pairs (teacher, student): {self.pairs}; "
                 f"{self.total_steps} steps. Tower: `{final}` (name it as `model.vision` in a training recipe).", "",
                 self._adapter_line(), ""]
        if self.before is None or after is None:
            lines.append("No held-out feature cosine: the recipe has no data.eval_sources with images.")
        else:
            lines += ["Held-out patch-feature cosine, student (through its projection) vs teacher, mean over tiles, "
                      "tokens and layer pairs:", "", "| held-out source | tiles | before | after |",
                      "|---|---:|---:|---:|"]
            for name, v in after["sources"].items():
                b = self.before["sources"].get(name, {}).get("cosine")
                lines.append(f"| {name} | {v['tiles']} | {b:.4f} | {v['cosine']:.4f} |" if b is not None else
                             f"| {name} | {v['tiles']} | – | {v['cosine']:.4f} |")
            lines.append(f"| all | {sum(v['tiles'] for v in after['sources'].values())} | {self.before['cosine']:.4f} "
                         f"| {after['cosine']:.4f} |")
        if self.skips.count():
            lines += ["", f"{self.skips.count()} training records skipped: see skips.md."]
        if after is not None and after.get("skipped"):
            lines += ["", f"{after['skipped']} held-out records skipped (left out of the cosine): see held_out/skips.md."]
        text_only = sum(self.text_only.values())
        if text_only:
            lines += ["", f"{text_only} text-only training records left out (nothing to distil on)."]
        atomic_write_text(self.out_dir / "report.md", "\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)

    def _adapter_line(self) -> str:
        if self.adapter() is not None:
            return (f"Vision adapter: the projection of pair {list(self.pairs[self.adapter_pair])} (the feature the "
                    f"teacher VLM's projector reads, vision_feature_layer {self.feature_layer}) is in final/ "
                    "(vision_adapter.safetensors): on the teacher's VLM the trained projector stays behind it.")
        why = ("the widths are equal (no projection)" if self.adapter_pair is not None else
               no_adapter_reason(self.feature_layer, self.model.teacher.config.num_hidden_layers,
                                 self.model.student.config.num_hidden_layers))
        return f"No vision adapter in final/: {why}."

    def _print_plan(self, start_step: int) -> None:
        m = self.model
        count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
        print(self.plan.describe(), flush=True)
        widths = f"{m.student.config.hidden_size} -> {m.teacher.config.hidden_size}"
        print(f"  teacher  {type(m.teacher).__name__} {count(m.teacher):,} params, frozen\n"
              f"  student  {type(m.student).__name__} {count(m.student):,} params, lr {self.recipe.distill.lr:g}\n"
              f"  pairs (teacher, student layer): {self.pairs}; projection {widths} "
              f"({count(m.projections):,} params)", flush=True)
        if self.before is not None and start_step == 0:
            print(f"  held-out cosine before: {self.before['cosine']:.4f}", flush=True)
        parallel = " with DDP" if self.dist.world > 1 and self.recipe.distributed.strategy != "deepspeed" else ""
        if self.recipe.distributed.strategy == "deepspeed":
            parallel = f" with DeepSpeed ZeRO-{self.engine.zero_optimization_stage()}"
        print(f"  {self.total_steps} steps x {self.samples_per_step} images ({self.steps_per_epoch:.4g} steps/epoch), "
              f"{self.dist.world} process(es){parallel}, output {self.out_dir}", flush=True)
        if self.augment is not None:
            print(f"  {self.augment.summary(self.records)}", flush=True)
        self._print_warmup_note("distill.lr / distill.projection_lr" if self.recipe.distill.projection_lr
                                else "distill.lr")
        if self.skips.count():
            print(self.skips.table(), flush=True)


def distill(recipe: DistillRecipe, progress: Progress = True, stop_after: int | None = None,
            allow_changes: bool = False) -> Path:
    """Distil (or resume) the run a distillation recipe describes; returns the tower folder ``final/`` (or, with
    `stop_after`, the checkpoint written there)."""
    return Distiller(recipe, progress=progress, allow_changes=allow_changes).run(stop_after)
