"""The recipe: one YAML file that says what to adapt, on which data, and how.

    from adapt.recipe import load_recipe
    recipe = load_recipe("recipe.yaml", ["training.max_steps=20"])
    recipe.training.batch_size, recipe.data.sources[0].path, recipe.tiling_for(processor.tiling)

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an error that names
the file, the dotted key and the closest valid key. Paths in a recipe are relative to the recipe
file's folder and are resolved (made absolute) at load time; ``Recipe.to_yaml()`` writes the
resolved recipe with every default filled in, which loads back to the same recipe from anywhere.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from model.errors import PocketAdaptError, install_hint
from model.limits import MAX_TILES_LIMIT
from model.yaml_io import YAMLContentError, load_yaml, yaml_error_text

if TYPE_CHECKING:
    from model.tiling import TilingConfig

__all__ = [
    "DEEPSPEED_PRESETS",
    "DataSource",
    "DistillRecipe",
    "Recipe",
    "RecipeError",
    "apply_overrides",
    "copy_recipe_template",
    "list_recipe_templates",
    "load_recipe",
    "load_yaml_value",
    "parse_recipe",
    "path_override",
    "recipe_schema",
    "recipe_warnings",
    "resolve_deepspeed_config",
]

DEEPSPEED_PRESETS = ("zero1", "zero2", "zero3")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RecipeError(PocketAdaptError, ValueError):
    """A recipe problem the user can fix; the message names the file and the dotted key."""


# ---------------------------------------------------------------------- helpers for validators
def _context(info: ValidationInfo) -> dict:
    return info.context if isinstance(info.context, dict) else {}


def _base_dir(info: ValidationInfo) -> Path:
    return Path(_context(info).get("base_dir") or Path.cwd()).absolute()


def _resolve(path: str | os.PathLike, base: Path) -> Path:
    p = Path(path).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` — did you mean 'X'?`` for the choice closest to `word` (an error message's tail), or ``""``."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean {match[0]!r}?" if match else ""


# ---------------------------------------------------------------------- the schema
class _Section(BaseModel):
    # subclasses that set their own model_config inherit allow_inf_nan (pydantic merges configs)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1: `batch_size: yes` would train with batch size 1
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kinds = _kinds(cls.model_fields[info.field_name].annotation)
            if kinds & {int, float} and bool not in kinds:
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _kinds(annotation: Any) -> set:
    """The plain types an annotation admits (``int | None`` -> {int, NoneType})."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in args))
    if typing.get_origin(annotation) is typing.Annotated:
        return _kinds(args[0])
    return {annotation}


def _projector_takes(name: str, options: dict[str, Any]) -> bool:
    """Whether projector `name` accepts `options` (names and values; widths and grids are the model's: 5040 divides
    by every shuffle factor and pool to 10)."""
    from model.projectors import projector_tokens

    try:
        projector_tokens(name, 5040, 5040, **options)
    except (TypeError, ValueError):
        return False
    return True


def _hub_tower(value: str, example: str) -> str:
    """`value` (``hub:…``, a vision tower fetched by `model.load_vision`) when it is ``hub:OWNER/NAME``, else a
    ValueError showing `example`."""
    from model.checkpoints.tower import HUB_ID

    if not HUB_ID.fullmatch(value):
        raise ValueError(f"{value!r}: a hub tower is named hub:OWNER/NAME, e.g. {example}")
    return value


class ModelSpec(_Section):
    """Which model to start from."""

    model_config = ConfigDict(extra="forbid")

    source: str = "pocket-tiny"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    chat_template: str | None = None
    allow_pickle: bool = False
    projector: str | None = None
    projector_options: dict[str, Any] = Field(default_factory=dict)
    # another vision tower: a tower folder (adapt distill), a checkpoint, a preset or hub:OWNER/NAME
    vision: str | None = None
    # auto: a distilled tower's vision adapter (its projection into the teacher's features) goes in front of the
    # model's trained projector when it fits; fresh: a tower of another width gets a fresh projector
    vision_adapter: Literal["auto", "fresh"] = "auto"

    @model_validator(mode="after")
    def _projector(self) -> ModelSpec:
        from model.projectors import PROJECTORS, projector_tokens

        if self.projector is None:  # options of the model's own projector, its weights kept (checked at load)
            if self.projector_options and not any(_projector_takes(n, self.projector_options) for n in PROJECTORS):
                raise ValueError(f"projector_options {self.projector_options} fit no projector; with projector null "
                                 "they change the model's own one (e.g. {pool: 2} on pixel_shuffle_mlp)")
            return self
        try:  # names and options only; widths and grids are the model's (5040 divides by every shuffle factor to 10)
            projector_tokens(self.projector, 5040, 5040, **self.projector_options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"projector: {err}") from None
        return self

    @field_validator("source")
    @classmethod
    def _source(cls, value: str, info: ValidationInfo) -> str:
        from model.presets import PRESETS, preset_of_hub_id

        if not value.strip():
            raise ValueError(f"must name a model preset ({', '.join(PRESETS)}) or a checkpoint directory")
        directory = _resolve(value, _base_dir(info))
        if directory.is_dir():  # a directory wins over a preset of the same name, as in model.load
            from model.checkpoints.layouts import detect_layout

            try:  # said now, not after the data is read: a data folder, a run folder, a checkpoint-N, an export
                detect_layout(directory)
            except PocketAdaptError as err:
                raise ValueError(str(err)) from None
            return str(directory)
        if value in PRESETS:
            return value
        if (named := preset_of_hub_id(value)) is not None:  # as model.load says of it
            raise ValueError(f"{value!r} is the hub id of the preset {named.name}, not a checkpoint directory (no "
                             f"folder {directory}); give model.source: {named.name}, which fetches it, or a local "
                             "copy's folder")
        raise ValueError(
            f"{value!r} is neither a model preset nor a checkpoint directory (no folder {directory}); "
            f"presets: {', '.join(PRESETS)}{did_you_mean(value, PRESETS)}"
        )

    @field_validator("vision")
    @classmethod
    def _vision(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        from model.checkpoints.tower import HUB_ID, HUB_PREFIX
        from model.loading import hub_fetch_advice
        from model.presets import PRESETS, preset_of_hub_id

        if value.startswith(HUB_PREFIX):  # a tower repository, fetched as distill.*.source's (`load_vision`)
            return _hub_tower(value, "hub:OpenGVLab/InternViT-300M-448px")
        directory = _resolve(value, _base_dir(info))
        if directory.is_dir():
            return str(directory)
        if value in PRESETS:
            return value
        if (named := preset_of_hub_id(value)) is not None:  # as model.source says of it
            raise ValueError(f"{value!r} is the hub id of the preset {named.name}, not a folder (no folder "
                             f"{directory}); give model.vision: {named.name}, which fetches it, or a local copy's "
                             "folder")
        what = (f"{value!r} is neither a vision-tower folder (such as an `adapt distill` run's final/), a checkpoint "
                f"folder, a preset nor hub:OWNER/NAME (no folder {directory})")
        if HUB_ID.fullmatch(HUB_PREFIX + value):  # OWNER/NAME: a hub tower is named with its prefix
            raise ValueError(f"{what}; give model.vision: {HUB_PREFIX}{value} to fetch that tower from the hub, or "
                             f"{hub_fetch_advice(value, repr(value), 'model.vision: DIR')}; "
                             f"presets: {', '.join(PRESETS)}")
        raise ValueError(f"{what}; presets: {', '.join(PRESETS)}{did_you_mean(value, PRESETS)}")

    @field_validator("chat_template")
    @classmethod
    def _chat_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if value.endswith((".yaml", ".yml")):
            path = _resolve(value, _base_dir(info))
            if not path.is_file():
                raise ValueError(f"chat template file {path} does not exist")
            from model.chat import ChatTemplateError, load_chat_template

            try:  # checked now by the loader training and evaluation use, so the two cannot disagree
                load_chat_template(path)
            except ChatTemplateError as err:
                raise ValueError(str(err)) from None
            return str(path)
        from model.chat import list_chat_templates

        known = list_chat_templates()
        if value not in known:
            raise ValueError(
                f"unknown chat template {value!r}; bundled templates: {', '.join(known)}"
                f"{did_you_mean(value, known)} (or give a path to a .yaml template)"
            )
        return value


_MODULE_NAME = re.compile(r"[^.\s*?+|^$()\[\]{}\\]+(?:\.[^.\s*?+|^$()\[\]{}\\]+)*")


MAX_LORA_RANK = 4096  # wider than any small VLM's layers; a larger r is a typo that would run peft out of memory


class LoraSpec(_Section):
    """LoRA settings of one part (used when the part's mode is ``lora``)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: list[str] | None = None

    @field_validator("r")
    @classmethod
    def _rank(cls, value: int) -> int:
        # the bound that matters, a targeted layer's width, is checked when the model is loaded (adapt.parts)
        if value > MAX_LORA_RANK:
            raise ValueError(f"{value} is above {MAX_LORA_RANK}: a LoRA rank cannot exceed the width of the layers "
                             "it wraps (8 to 64 is usual)")
        return value

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one module name, or be null for the part's default modules")
            if any(not t.strip() for t in value):
                raise ValueError("module names must not be empty")
            # a peft-style regex or a stray space matches no module: found only once adapt train has loaded the model
            odd = [t for t in value if not _MODULE_NAME.fullmatch(t)]
            if odd:
                raise ValueError(f"{', '.join(map(repr, odd))}: targets are module-name suffixes inside the part "
                                 "(q_proj, self_attn.q_proj), dotted names without spaces, not patterns")
        return value


def names_fused_experts(target: str) -> bool:
    """Whether a LoRA target can name only a MoE LM's fused expert parameters (``experts``,
    ``experts.gate_up_proj``): no Linear module is named so (experts kept as Linear modules are ``experts.0.w1``)."""
    *_, parent, last = ["", *target.split(".")]
    return last == "experts" or (parent == "experts" and not last.isdigit())


def expert_lora_refusal(shown: str, dropout: float, lora_parts: Iterable[str], shapes: set[tuple[int, float]]) -> str:
    """Why peft's ``target_parameters`` cannot train the fused MoE experts `shown` names with this LoRA setting (''
    when it can): it has no dropout (the input of the fused expert matmul cannot be factored out), and the experts
    take the config's one default rank and alpha (`shapes`: the (r, alpha) of each part naming them). Shared by
    `adapt validate` (from the targets' names) and `adapt.parts` (from the model's parameters)."""
    if dropout:
        from importlib.metadata import PackageNotFoundError, version

        try:
            peft = f"peft {version('peft')}"
        except PackageNotFoundError:
            peft = "peft"
        return (f"{shown} name fused MoE expert parameters, which {peft} trains with LoRA only without dropout, but "
                f"lora.dropout is {dropout:g}; set lora.dropout: 0 (every LoRA part shares one dropout: "
                f"{', '.join(f'parts.{p}.lora.dropout' for p in lora_parts)})")
    if len(shapes) > 1:
        return f"{shown}: the parts whose experts LoRA trains must share lora.r and lora.alpha"
    return ""


class PartSpec(_Section):
    """How one part (vision tower, projector, language model) is trained."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["frozen", "lora", "full"]
    lr: float = Field(gt=0)
    lora: LoraSpec = Field(default_factory=LoraSpec)


class VisionPart(PartSpec):
    mode: Literal["frozen", "lora", "full"] = "frozen"
    lr: float = Field(2e-5, gt=0)


class ProjectorPart(PartSpec):
    mode: Literal["frozen", "lora", "full"] = "full"
    lr: float = Field(1e-4, gt=0)


class LlmPart(PartSpec):
    mode: Literal["frozen", "lora", "full"] = "lora"
    lr: float = Field(1e-4, gt=0)


class Parts(_Section):
    model_config = ConfigDict(extra="forbid")

    vision: VisionPart = Field(default_factory=VisionPart)
    projector: ProjectorPart = Field(default_factory=ProjectorPart)
    llm: LlmPart = Field(default_factory=LlmPart)

    def items(self) -> list[tuple[str, PartSpec]]:
        return [("vision", self.vision), ("projector", self.projector), ("llm", self.llm)]

    @model_validator(mode="after")
    def _something_to_train(self) -> Parts:
        if all(part.mode == "frozen" for _, part in self.items()):
            raise ValueError("every part is frozen, so nothing would train; set a part's mode to lora or full")
        dropouts = {name: part.lora.dropout for name, part in self.items() if part.mode == "lora"}
        if len(set(dropouts.values())) > 1:
            shown = ", ".join(f"{name}.lora.dropout={d}" for name, d in dropouts.items())
            raise ValueError(f"every LoRA part must use the same lora.dropout (got {shown})")
        lora = {name: part.lora for name, part in self.items() if part.mode == "lora"}
        experts = {name: [t for t in spec.targets or () if names_fused_experts(t)] for name, spec in lora.items()}
        experts = {name: targets for name, targets in experts.items() if targets}
        if experts:  # refused here, not only once `adapt train` has loaded the model
            shown = ", ".join(f"parts.{name}.lora.targets ({', '.join(targets)})" for name, targets in experts.items())
            refusal = expert_lora_refusal(shown, next(iter(lora.values())).dropout, lora,
                                          {(lora[name].r, lora[name].alpha) for name in experts})
            if refusal:
                raise ValueError(refusal)
        return self


class TilingOverrides(_Section):
    """Tiling shared by training, eval, demo and export; null keeps the model's own value."""

    model_config = ConfigDict(extra="forbid")

    tile_size: int | None = Field(None, ge=1)
    min_tiles: int | None = Field(None, ge=1, le=MAX_TILES_LIMIT)
    max_tiles: int | None = Field(None, ge=1, le=MAX_TILES_LIMIT)
    thumbnail: bool | None = None
    max_pixels: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _order(self) -> TilingOverrides:
        if self.min_tiles is not None and self.max_tiles is not None and self.min_tiles > self.max_tiles:
            raise ValueError(f"min_tiles ({self.min_tiles}) must be <= max_tiles ({self.max_tiles})")
        return self


class DataSource(_Section):
    """One annotation file: InternVL chat JSONL, or an InternVL meta .json listing several.

    ``root`` defaults to a JSONL's folder; for a meta .json it is the root of the entries without one of their own
    (left out: each such entry's annotation folder)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path
    root: Path | None = None
    kind: Literal["domain", "general"] = "domain"
    ratio: float | None = Field(None, ge=0)
    repeat: float | None = Field(None, gt=0)
    max_tiles: int | None = Field(None, ge=1, le=MAX_TILES_LIMIT)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a usable name: use letters, digits, '.', '_' or '-'")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: Path, info: ValidationInfo) -> Path:
        if value.suffix not in (".jsonl", ".json"):
            raise ValueError(f"{str(value)!r} must be a .jsonl annotation file or an InternVL meta .json file")
        return _resolve(value, _base_dir(info))

    @field_validator("root")
    @classmethod
    def _root(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, _base_dir(info))

    @field_validator("repeat")
    @classmethod
    def _repeat(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and value != int(value):
            raise ValueError(f"above 1 must be a whole number (InternVL repeat_time), got {value}")
        return value

    @model_validator(mode="after")
    def _finish(self) -> DataSource:
        if self.ratio is not None and self.repeat is not None:
            raise ValueError("give ratio or repeat, not both (ratio: a share of the mix; repeat: passes over the file)")
        if self.root is None and self.path.suffix != ".json":  # a meta file's entries find their own root
            self.root = self.path.parent
        return self


class Augment(_Section):
    """Training-time augmentation (``domains.augment``): random flips, 90° turns and
    colour jitter, boxes in the text moved with the pixels. Training items of domain sources only, never
    eval; records whose text names a direction, stitched six-camera frames and camera pictures (``meta.camera``)
    get colour jitter only (see the module)."""

    model_config = ConfigDict(extra="forbid")

    flips: bool = True
    rot90: bool = True
    color_jitter: float = Field(0.2, ge=0, le=1)


class Data(_Section):
    model_config = ConfigDict(extra="forbid")

    sources: list[DataSource] = Field(default_factory=list)
    eval_sources: list[DataSource] = Field(default_factory=list)
    max_bad_fraction: float = Field(0.05, ge=0, le=1)
    augment: Augment | None = None  # null: no augmentation (the default)

    @field_validator("sources", "eval_sources")
    @classmethod
    def _unique(cls, value: list[DataSource]) -> list[DataSource]:
        seen: set[str] = set()
        for source in value:
            if source.name in seen:
                raise ValueError(f"two sources are named {source.name!r}; names must be unique")
            seen.add(source.name)
        return value

    @field_validator("sources")
    @classmethod
    def _ratios(cls, value: list[DataSource]) -> list[DataSource]:
        for kind in ("domain", "general"):
            with_ratio = [s.name for s in value if s.kind == kind and s.ratio is not None]
            without = [s.name for s in value if s.kind == kind and s.ratio is None]
            if with_ratio and without:
                raise ValueError(f"ratio is given for {kind} source(s) {', '.join(with_ratio)} but not for "
                                 f"{', '.join(without)}: give it to every {kind} source or to none")
            if with_ratio and all(s.ratio == 0 for s in value if s.kind == kind):
                raise ValueError(f"every {kind} source has ratio 0 ({', '.join(with_ratio)}), so none would be "
                                 f"drawn: give one a share above 0, or drop the {kind} sources")
        return value


# Far past any real run, and low enough that steps x micro-batches x samples stay a machine-size integer (a
# mistyped 1e20 was an OverflowError traceback, or a hang, once the data loader started).
_MAX_COUNT = 10**9
_MAX_EPOCHS = 10**6
_MAX_BATCH = 10**5


class Mixing(_Section):
    model_config = ConfigDict(extra="forbid")

    general_ratio: float = Field(0.3, ge=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's and torch's seed range
    epoch_size: int | None = Field(None, ge=1, le=_MAX_COUNT)


MIN_SEQ_LENGTH = 16  # training.max_seq_length's least (bench_train.py's --max-seq-length checks it too)


class Training(_Section):
    model_config = ConfigDict(extra="forbid")

    epochs: float | None = Field(1.0, gt=0, le=_MAX_EPOCHS)
    max_steps: int | None = Field(None, ge=1, le=_MAX_COUNT)
    batch_size: int = Field(4, ge=1, le=_MAX_BATCH)
    grad_accum: int = Field(1, ge=1, le=_MAX_BATCH)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_seq_length: int = Field(4096, ge=MIN_SEQ_LENGTH)
    gradient_checkpointing: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    packing: bool = False
    num_workers: int = Field(0, ge=0, le=1024)  # each a process: a mistyped huge count hangs spawning them
    fused_adamw: bool = True

    @model_validator(mode="after")
    def _length(self) -> Training:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set epochs or max_steps (max_steps wins when both are set)")
        return self


class Distributed(_Section):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["none", "ddp", "deepspeed"] = "none"
    deepspeed: str = "zero1"

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed(cls, value: str, info: ValidationInfo) -> str:
        if value not in DEEPSPEED_PRESETS:
            if not value.endswith(".json"):
                raise ValueError(f"must be one of {', '.join(DEEPSPEED_PRESETS)} or a path to a .json file, "
                                 f"got {value!r}{did_you_mean(value, DEEPSPEED_PRESETS)}")
            value = str(_resolve(value, _base_dir(info)))
        if info.data.get("strategy") == "deepspeed":  # checked on this key, so that an error names where it was set
            resolve_deepspeed_config(value)  # a missing, malformed or unusable file is an error now, not at launch
        return value


class Output(_Section):
    model_config = ConfigDict(extra="forbid")

    dir: Path | None = None  # filled in as <recipe folder>/runs/<name>
    save_every: int = Field(200, ge=1)
    keep_last: int = Field(2, ge=1)
    merge_lora: bool = True

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, _base_dir(info))


class Logging(_Section):
    """``every``: under --no-progress a console line every N optimizer steps (train_log.jsonl and TensorBoard get
    every step whatever it is: the loss plot and a resume read them)."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(10, ge=1)
    tensorboard: bool = True


class Judge(_Section):
    """An OpenAI-compatible chat-completions endpoint that grades free-form answers (DriveLM's ChatGPT term)."""

    model_config = ConfigDict(extra="forbid")

    url: str  # https, or http only to this machine, e.g. http://127.0.0.1:8000/v1/chat/completions
    model: str
    api_key_env: str | None = None  # name of the environment variable holding the key (never the key itself)
    timeout: float = Field(60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from domains.driving.judge import check_judge_url

        return check_judge_url(value)


class EvalSpec(_Section):
    """How `adapt eval` (and eval.every during training) generates and scores.

    ``protocol`` picks the rules of metrics that have a public reference implementation to follow or not:
    ``official`` (default) reproduces it (DriveLM: challenge/evaluation.py's exact accuracy, camera-blind
    match F1, the Java tokenizer's rules, the graph filter); ``pocket`` is this project's more lenient reading.
    ``graph_filter`` switches DriveLM's graph filter on or off; None follows the protocol (official: on).
    """

    model_config = ConfigDict(extra="forbid")

    every: int | None = Field(None, ge=1)
    max_samples: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(8, ge=1)
    protocol: Literal["official", "pocket"] = "official"
    graph_filter: bool | None = None
    judge: Judge | None = None

    def context(self) -> dict:
        """What corpus-level metrics get (`adapt.evaluate.summarize`'s `context`)."""
        return {"judge": self.judge.model_dump() if self.judge else None, "protocol": self.protocol,
                "graph_filter": self.graph_filter}


class _RecipeBase(_Section):
    """What every recipe kind shares: a name, the data and its mixing, tiling, the training schedule, the
    distributed setup, the output folder and logging (fields are declared by each kind, in its own order)."""

    model_config = ConfigDict(extra="forbid")

    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a usable run name: use letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> _RecipeBase:
        base = _base_dir(info)
        self._base_dir = base
        if self.name is None:
            fallback = _context(info).get("name") or "recipe"
            if not _NAME_RE.fullmatch(fallback):  # not starting with '.' either: runs/.x would be a hidden folder
                fallback = re.sub(r"[^A-Za-z0-9._-]", "_", fallback).lstrip("._-") or "recipe"
            self.name = fallback
        if self.output.dir is None:
            self.output.dir = base / "runs" / self.name
        if self.distributed.strategy == "deepspeed":  # its fixed values against the recipe's
            try:
                resolve_deepspeed_config(self.distributed.deepspeed, training=self.training)
            except RecipeError as err:
                raise RecipeError(f"distributed.deepspeed: {err}") from None
        if self.data.sources and self.mixing.general_ratio > 0 and not any(s.kind == "general" for s in self.data.sources):
            raise ValueError(
                f"mixing.general_ratio is {self.mixing.general_ratio:g} but no entry of data.sources has kind: general; "
                "add a general source (general replay keeps the model's general skills) or set mixing.general_ratio: 0")
        domain = any(s.kind == "domain" for s in self.data.sources)
        if self.data.sources and self.mixing.epoch_size is None and not domain:
            # MixturePlan's refusal, said here so that adapt validate does not call a recipe valid that cannot train
            raise ValueError("without mixing.epoch_size an epoch is sized by its domain records, but no data.sources "
                             "entry has kind: domain; add the field's data as a source with kind: domain")
        return self

    @property
    def base_dir(self) -> Path:
        """The folder the recipe's relative paths were resolved against (the recipe file's folder)."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def tiling_for(self, model_tiling: TilingConfig, whose: str = "the model's") -> TilingConfig:
        """The model's own :class:`~model.tiling.TilingConfig` with this recipe's non-null overrides."""
        import dataclasses

        overrides = {k: v for k, v in self.tiling.model_dump().items() if v is not None}
        if overrides.get("tile_size", model_tiling.tile_size) != model_tiling.tile_size:
            # the tower's position embeddings and the projector's token count are fixed by its image size: other tiles
            # would fail at the first image with a token-count mismatch (or be resized to it, wasting pixels)
            raise RecipeError(f"recipe {self.name!r}: tiling.tile_size {overrides['tile_size']} differs from {whose} "
                              f"image size {model_tiling.tile_size} (the size its vision tower takes); leave it null")
        try:
            return dataclasses.replace(model_tiling, **overrides)
        except ValueError as err:
            shown = ", ".join(f"tiling.{k}={v}" for k, v in overrides.items())
            own = (f"{model_tiling.tile_size} px tiles, {model_tiling.min_tiles}-{model_tiling.max_tiles} per image"
                   f"{', thumbnail' if model_tiling.thumbnail else ''}")
            raise RecipeError(f"recipe {self.name!r}: {shown} does not fit the model's tiling ({own}): {err}") from None

    def deepspeed_config(self) -> dict | None:
        """The DeepSpeed config dict when ``distributed.strategy`` is deepspeed, else None."""
        return resolve_deepspeed_config(self.distributed.deepspeed) if self.distributed.strategy == "deepspeed" else None

    def to_yaml(self) -> str:
        """The resolved recipe (absolute paths, every default filled in) as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True, default_flow_style=False)


class Recipe(_RecipeBase):
    """A training recipe (`adapt train`). Build it with :func:`load_recipe` or :func:`parse_recipe` (they resolve paths)."""

    name: str | None = None
    model: ModelSpec = Field(default_factory=ModelSpec)
    parts: Parts = Field(default_factory=Parts)
    tiling: TilingOverrides = Field(default_factory=TilingOverrides)
    data: Data = Field(default_factory=Data)
    mixing: Mixing = Field(default_factory=Mixing)
    training: Training = Field(default_factory=Training)
    distributed: Distributed = Field(default_factory=Distributed)
    output: Output = Field(default_factory=Output)
    logging: Logging = Field(default_factory=Logging)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's and torch's seed range

    @model_validator(mode="after")
    def _tiling_fits_the_model(self) -> Recipe:
        """Refuse tiling overrides the model's own tiling cannot take (tiling.min_tiles above its max_tiles) now, not
        once `adapt train` has loaded, or downloaded, the weights: the model's tiling is read from its config alone.
        A replaced vision tower (model.vision) brings its own tiling, which only loading it tells."""
        if self.model.vision is not None or all(v is None for v in self.tiling.model_dump().values()):
            return self
        from model.loading import load_config
        from model.tiling import TilingConfig

        try:
            model_tiling = TilingConfig.from_dict(load_config(self.model.source).tiling)
        except (PocketAdaptError, OSError, ValueError):  # an unreadable checkpoint: `adapt train` says what is wrong
            return self
        self.tiling_for(model_tiling)
        return self

    @model_validator(mode="after")
    def _projector_fits_the_model(self) -> Recipe:
        """Build the projector at the model's widths on the meta device (no memory): a fresh one (model.projector), or
        with model.projector null the model's own with the options. The schema's check has no widths and knows no
        model, so options they rule out (a resampler's num_heads that does not divide the LLM's width, num_queries for
        a pixel-shuffle projector) passed adapt validate and stopped adapt train once the weights had loaded. A
        replaced vision tower (model.vision) brings its own width, which only loading it tells."""
        if self.model.vision is not None or (self.model.projector is None and not self.model.projector_options):
            return self
        import torch

        from model.checkpoints.io import CONFIG_ERRORS
        from model.loading import load_config
        from model.projectors import build_projector, projector_tokens
        from model.vision import patch_grid

        try:
            config = load_config(self.model.source)
        except (PocketAdaptError, OSError, *CONFIG_ERRORS):  # an unreadable checkpoint: `adapt train` says what
            return self
        width = config.vision_adapter_width or config.vision_config.hidden_size
        name, options = self.model.projector, self.model.projector_options
        if name is None:  # the options go over the model's own, as PocketVLM.reconfigure_projector merges them
            name, options = config.projector_type, {**config.projector_options, **options}
        try:
            with torch.device("meta"):
                build_projector(name, width, config.text_config.hidden_size, **options)
            projector_tokens(name, *patch_grid(config.vision_config), **options)  # the tower's grid, as load checks
        except (TypeError, ValueError) as err:
            grid = "x".join(map(str, patch_grid(config.vision_config)))
            widths = (f"{width}-wide image features on the {grid} patch grid, a {config.text_config.hidden_size}-wide "
                      "language model")
            if self.model.projector is None:
                raise ValueError(f"model.projector_options: {self.model.source}'s own projector {name} ({widths}) does "
                                 f"not take them: {err}") from None
            raise ValueError(f"model.projector_options: {name} does not fit {self.model.source} ({widths}): {err}"
                             ) from None
        return self


class TowerSpec(_Section):
    """A vision tower for distillation: a tower config name (random weights; ``config`` overrides its values), a
    preset or checkpoint folder (its tower), or a vision-tower folder."""

    model_config = ConfigDict(extra="forbid")

    source: str
    config: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str, info: ValidationInfo) -> str:
        from model.checkpoints.tower import HUB_PREFIX
        from model.presets import PRESETS
        from model.vision import VISION_CONFIGS

        if value.startswith(HUB_PREFIX):
            return _hub_tower(value, "hub:OpenGVLab/InternViT-6B-448px-V1-5")
        directory = _resolve(value, _base_dir(info))
        if directory.is_dir():
            return str(directory)
        if value in VISION_CONFIGS or value in PRESETS:
            return value
        known = [*VISION_CONFIGS, *PRESETS]
        raise ValueError(f"{value!r} is not a tower config ({', '.join(VISION_CONFIGS)}), a preset ({', '.join(PRESETS)}), "
                         f"hub:OWNER/NAME nor a folder (no folder {directory}){did_you_mean(value, known)}")

    @model_validator(mode="after")
    def _config(self) -> TowerSpec:
        from model.vision import VISION_CONFIGS

        if self.config and self.source not in VISION_CONFIGS:
            raise ValueError(f"config overrides apply to the tower configs ({', '.join(VISION_CONFIGS)}) only; "
                             f"{self.source!r} brings its own config")
        if self.config:
            known = VISION_CONFIGS[self.source]().to_dict()
            for key in self.config:
                if key not in known:  # transformers configs keep unknown keys silently
                    raise ValueError(f"config: {key!r} is not a key of the {self.source} config{did_you_mean(key, known)}")
            from huggingface_hub.errors import StrictDataclassError

            try:
                VISION_CONFIGS[self.source](**self.config)
            except (TypeError, ValueError, StrictDataclassError) as err:  # transformers 5's configs raise the last
                raise ValueError(f"config: {' '.join(str(err).split())}") from None
        return self

    def check_builds(self, vision_config: Any, role: str) -> None:
        """Build the tower of a tower config with overrides on the meta device (no memory): its shapes (a negative
        width, heads that do not divide it) are checked only there, else `adapt validate` passed them and `adapt
        distill` stopped at them. ValueError naming the overrides."""
        from model.vision import VISION_CONFIGS

        if not self.config or self.source not in VISION_CONFIGS:
            return
        import torch

        from model.quiet import ignoring
        from model.vision import build_vision_tower

        try:
            with torch.device("meta"), ignoring(UserWarning, "Initializing zero-element"):
                build_vision_tower(vision_config)
        except (TypeError, ValueError, RuntimeError, ArithmeticError) as err:
            raise ValueError(f"distill.{role}: config: {_short(self.config)} builds no {self.source} tower: "
                             f"{' '.join(str(err).split())}") from None


class DistillSpec(_Section):
    """What is distilled into what: layer pairs, loss, learning rates (`adapt distill`)."""

    model_config = ConfigDict(extra="forbid")

    teacher: TowerSpec
    student: TowerSpec
    layers: int | None = Field(None, ge=1)  # the last K of each tower paired; 1 when pairs is not given either
    pairs: list[tuple[int, int]] | None = None
    cosine: float = Field(1.0, ge=0)
    mse: float = Field(0.0, ge=0)
    lr: float = Field(1e-4, gt=0)
    projection_lr: float | None = Field(None, gt=0)

    @field_validator("pairs", mode="before")
    @classmethod
    def _no_boolean_layers(cls, value: Any) -> Any:
        # pydantic reads true as layer 1 inside the pairs (the section's check sees only its own fields' types)
        for pair in value if isinstance(value, list) else ():
            if isinstance(pair, (list, tuple)) and any(isinstance(v, bool) for v in pair):
                shown = ", ".join(str(v).lower() if isinstance(v, bool) else repr(v) for v in pair)
                raise ValueError(f"layers are numbers, counted from 1; got [{shown}]")
        return value

    @model_validator(mode="after")
    def _check(self) -> DistillSpec:
        if self.pairs is None and self.layers is None:
            self.layers = 1
        if self.pairs is not None:
            if self.layers is not None:  # null is "not given", as the template writes pairs: null
                raise ValueError("give layers (the last K of each tower paired) or pairs (explicit), not both; to "
                                 "override the one a recipe sets, null it too (distill.layers=null)")
            if not self.pairs:
                raise ValueError("pairs must list at least one [teacher_layer, student_layer]")
            bad = [p for p in self.pairs if min(p) < 1]
            if bad:
                raise ValueError(f"pairs: layers are numbered from 1 (the output of the first block), got {bad[0]}")
        if self.cosine == 0 and self.mse == 0:
            raise ValueError("cosine and mse are both 0, so there is no loss; give either a weight above 0")
        return self


def layer_pairs(layers: int | None, pairs: list[tuple[int, int]] | None, teacher_depth: int,
                student_depth: int) -> list[tuple[int, int]]:
    """``(teacher_layer, student_layer)`` pairs, 1-based block numbers: `pairs` as given, else the last `layers`
    of each tower in order (the two last blocks always paired); ValueError naming the setting that does not fit."""
    if pairs:
        for t, s in pairs:
            if t > teacher_depth or s > student_depth:
                raise ValueError(f"distill.pairs: [{t}, {s}] is out of range: the teacher has {teacher_depth} layers, "
                                 f"the student {student_depth}")
        if max(s for _, s in pairs) < student_depth:
            raise ValueError(f"distill.pairs: no pair ends at the student's last layer ({student_depth}), so the "
                             "layers after the last paired one would stay untrained; pair its last layer")
        return [tuple(p) for p in pairs]
    layers = layers or 1
    if layers > min(teacher_depth, student_depth):
        raise ValueError(f"distill.layers is {layers}, but the teacher has {teacher_depth} layers and the student "
                         f"{student_depth}")
    return [(teacher_depth - layers + i, student_depth - layers + i) for i in range(1, layers + 1)]


class DistillEval(_Section):
    """The held-out feature cosine (on ``data.eval_sources``' images): before and after in the report, and every
    ``every`` steps in eval_log.jsonl."""

    model_config = ConfigDict(extra="forbid")

    every: int | None = Field(None, ge=1)
    max_images: int | None = Field(64, ge=1)
    batch_size: int = Field(8, ge=1)


class DistillRecipe(_RecipeBase):
    """A distillation recipe (`adapt distill`): the section ``distill:`` instead of ``model:`` and ``parts:``."""

    name: str | None = None
    distill: DistillSpec
    tiling: TilingOverrides = Field(default_factory=TilingOverrides)
    data: Data = Field(default_factory=Data)
    mixing: Mixing = Field(default_factory=Mixing)
    training: Training = Field(default_factory=Training)
    distributed: Distributed = Field(default_factory=Distributed)
    output: Output = Field(default_factory=Output)
    logging: Logging = Field(default_factory=Logging)
    eval: DistillEval = Field(default_factory=DistillEval)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's and torch's seed range

    def towers_fit(self, teacher: Any, student: Any, student_tiling: TilingConfig
                   ) -> tuple[list[tuple[int, int]], TilingConfig]:
        """The layer pairs and the tiling for towers of these vision configs; ValueError naming what does not fit
        (patch grids, layers, tiling.tile_size, a projection_lr with no projection)."""
        from model.vision import patch_grid

        for role, config in (("teacher", teacher), ("student", student)):
            sizes = [config.image_size, config.patch_size]
            flat = [v for x in sizes for v in (x if isinstance(x, (list, tuple)) else [x])]
            if not all(isinstance(v, int) and v > 0 for v in flat) or 0 in patch_grid(config):
                raise ValueError(f"distill.{role}: image_size {config.image_size} / patch_size {config.patch_size} "
                                 "give no patch grid (both positive, the patch no larger than the image)")
        if patch_grid(teacher) != patch_grid(student):
            raise ValueError(f"the teacher's patch grid {patch_grid(teacher)} (image_size {teacher.image_size}, "
                             f"patch_size {teacher.patch_size}) differs from the student's {patch_grid(student)} "
                             f"(image_size {student.image_size}, patch_size {student.patch_size}); features are "
                             "compared token by token, so pick towers whose image_size / patch_size give the same grid")
        pairs = layer_pairs(self.distill.layers, self.distill.pairs, teacher.num_hidden_layers,
                            student.num_hidden_layers)
        if self.distill.projection_lr is not None and teacher.hidden_size == student.hidden_size:
            raise ValueError(f"distill.projection_lr is {self.distill.projection_lr:g}, but the teacher and the "
                             f"student are both {student.hidden_size} wide, so there is no width projection to "
                             "train; remove distill.projection_lr (or set it to null)")
        return pairs, self.tiling_for(student_tiling, whose="the student's")

    @model_validator(mode="after")
    def _towers_fit(self) -> DistillRecipe:
        """Refuse towers that cannot be distilled as asked now, from their config files alone, not once `adapt
        distill` has loaded (or downloaded) both; a ``hub:`` tower not in the hub cache is checked once loaded."""
        from model.checkpoints.tower import vision_config_feature

        towers = []
        for role, spec in (("teacher", self.distill.teacher), ("student", self.distill.student)):
            try:
                towers.append(vision_config_feature(spec.source, spec.config))
            except (PocketAdaptError, OSError) as err:  # a folder that is no checkpoint, a broken config.json
                raise ValueError(f"distill.{role}: {err}") from None
            except (ValueError, TypeError, KeyError):  # a config only building the tower judges: adapt distill says
                towers.append(None)
        teacher, student = towers
        if teacher is not None and student is not None:
            self.towers_fit(teacher[0], student[0], student[1])  # first: its patch-grid message says more
        for role, tower in (("teacher", teacher), ("student", student)):
            if tower is not None:
                getattr(self.distill, role).check_builds(tower[0], role)
        return self


def recipe_schema(data: Any) -> type[_RecipeBase]:
    """The recipe kind a document is: a top-level ``distill:`` section makes it a `DistillRecipe`."""
    return DistillRecipe if isinstance(data, dict) and "distill" in data else Recipe


# ---------------------------------------------------------------------- schema walking (for messages)
def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The section model inside an annotation (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is list:
        return True
    return origin in (Union, types.UnionType) and any(_is_list(a) for a in get_args(annotation))


def _model_at(loc: Sequence[str | int], schema: type[BaseModel] | None = None) -> type[BaseModel] | None:
    cls: type[BaseModel] | None = schema or Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if cls is None or part not in cls.model_fields:
            return None
        cls = _submodel(cls.model_fields[part].annotation)
    return cls


def _all_keys(cls: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, str]]:
    """(leaf name, dotted path) for every key of the schema; list items show as ``[]``."""
    out = []
    for name, field in cls.model_fields.items():
        path = f"{prefix}{name}"
        out.append((name, path))
        sub = _submodel(field.annotation)
        if sub is not None:
            out += _all_keys(sub, path + ("[]." if _is_list(field.annotation) else "."))
    return out


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# names other toolkits (HF Trainer, InternVL, LLaMA-Factory, peft) use for our keys
_ALIASES = {
    "rank": "r", "lora_r": "r", "lora_rank": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
    "target_modules": "targets", "lora_target": "targets", "learning_rate": "lr",
    "lr_scheduler_type": "schedule", "scheduler": "schedule", "gradient_accumulation_steps": "grad_accum",
    "per_device_train_batch_size": "batch_size", "num_train_epochs": "epochs", "warmup": "warmup_ratio",
    "model_name_or_path": "source", "save_steps": "save_every", "save_total_limit": "keep_last",
    "logging_steps": "every", "output_dir": "dir", "model_max_length": "max_seq_length",
    "cutoff_len": "max_seq_length", "max_dynamic_patch": "max_tiles", "min_dynamic_patch": "min_tiles",
    "force_image_size": "tile_size", "use_thumbnail": "thumbnail", "repeat_time": "repeat",
    "grad_checkpoint": "gradient_checkpointing", "dataloader_num_workers": "num_workers",
    "bf16": "precision", "fp16": "precision", "torch_dtype": "dtype", "template": "chat_template",
    "conv_style": "chat_template", "annotation": "path", "image_root": "root", "epoch": "epochs",
}


# aliases whose key does not do quite what the other toolkit's does: the hint says what ours does
_ALIAS_NOTES = {
    "logging_steps": ("logging.every", "it only thins the console lines under --no-progress; train_log.jsonl and "
                                       "TensorBoard get every step"),
}


def _unknown_key_message(parent: Sequence[str | int], key: Any, schema: type[BaseModel] | None = None) -> str:
    key = str(key)
    schema = schema or Recipe
    cls = _model_at(parent, schema)
    valid = list(cls.model_fields) if cls is not None else []
    here = _dotted(parent)
    shown = f"'{here}.{key}'" if here else f"'{key}' at top level"
    if key.lower().replace("-", "_") in _ALIAS_NOTES:
        where, note = _ALIAS_NOTES[key.lower().replace("-", "_")]
        return f"unknown key {shown} — did you mean {where!r}? ({note})"
    alias = _ALIASES.get(key.lower().replace("-", "_"))
    if alias in valid:
        return f"unknown key {shown} — did you mean {_dotted([*parent, alias])!r}?"
    if alias is not None:
        key = alias
    elsewhere = [path for leaf, path in _all_keys(schema) if leaf == key and path.rsplit(".", 1)[0] != here]
    if elsewhere:
        hint = " or ".join(repr(p) for p in elsewhere[:3])
        return f"unknown key {shown} — did you mean {hint}?"
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not match:
        match = [v for v in valid if v.lower() == key.lower().replace("-", "_")][:1]
    if match:
        return f"unknown key {shown} — did you mean {_dotted([*parent, match[0]])!r}?"
    return f"unknown key {shown}; valid keys {'in ' + repr(here) if here else 'at top level'}: {', '.join(valid)}"


def _short(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to `limit` characters (a pasted data set should not flood an error)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    shown = short.repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _exponent_text(value: Any) -> float | None:
    """The number in a string such as '1e3', which YAML 1.1 leaves as text (no dot, no sign); else None."""
    if not isinstance(value, str) or "e" not in value.lower():
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _error_lines(err: ValidationError, schema: type[BaseModel] | None = None) -> list[tuple[tuple, str]]:
    lines = []
    for e in err.errors(include_url=False):
        loc, kind, msg = tuple(e["loc"]), e["type"], e["msg"]
        if kind == "extra_forbidden":
            lines.append((loc, _unknown_key_message(loc[:-1], loc[-1], schema)))
            continue
        if kind == "invalid_key" or (kind == "string_type" and loc[-1:] == ("[key]",)):
            # YAML 1.1 reads an unquoted key on / off / yes / no / y / n as a boolean, null / ~ as null, 1 as a number
            parent = loc[:-2] if kind == "string_type" else loc[:-1]
            value = e["input"]
            where_ = f"{_dotted(parent)}: " if parent else ""
            if isinstance(value, (int, float)) and not isinstance(value, bool):  # `1: x`: no YAML 1.1 surprise there
                lines.append((parent, f"{where_}a key that YAML read as the number {value}, not a name: keys here are "
                                      f"names; quote the key ('{value}': …) if it is meant as text, or remove it"))
                continue
            if value is None:  # `~: x`, `null: x`: the on / off example does not fit it
                lines.append((parent, f"{where_}a key that YAML read as null, not a name: YAML reads an unquoted ~ or "
                                      "null as null; quote the key ('~': …) or remove it"))
                continue
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            lines.append((parent, f"{where_}a key that YAML read as {shown} ({type(value).__name__}), not a name: YAML "
                                  "1.1 reads on, off, yes, no, y and n as true / false, and ~ as null; quote the key "
                                  "('on': …) or remove it"))
            continue
        key = _dotted(loc)
        if kind == "missing":
            text = "missing (this key is required)"
        elif kind in ("model_type", "model_attributes_type", "dict_type", "list_type") and e["input"] is None:
            # `training:` with every line below it commented out reads as null
            what = "a list (lines starting with '- ')" if kind == "list_type" else "its keys (key: value lines)"
            text = f"is empty (null): give {what}, or leave the key out for its defaults"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            text = f"expected a mapping of keys (key: value lines), got {type(e['input']).__name__} {_short(e['input'])}"
        elif kind == "list_type":
            text = f"expected a list (lines starting with '- '), got {type(e['input']).__name__} {_short(e['input'])}"
        elif kind == "string_type" and isinstance(e["input"], (bool, int, float)):
            # `name: 2024` (a year, a dataset version): "must be a valid string (got 2024)" read as nonsense
            value = e["input"]
            read = "a boolean (YAML 1.1 reads yes, no, on, off, y and n as true / false)" if isinstance(value, bool) \
                else "a number (0x…, 0… and 1_000 are numbers too)"
            text = f"must be text, but YAML read the value as {read}: {_short(value).lower()}; quote it as written"
        elif kind == "int_parsing" and _exponent_text(e["input"]) is not None:
            number = _exponent_text(e["input"])
            whole = f"write {int(number)}" if number.is_integer() else "give a whole number"
            text = (f"must be a whole number, and YAML read {e['input']} as text, not a number (YAML 1.1 reads an "
                    f"exponent only with a dot and a sign, as 1.0e+3 for a float): {whole} (got {_short(e['input'])})")
        else:
            text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
            text = text.replace("Input should be", "must be", 1)
            if kind not in ("value_error", "assertion_error"):
                text += f" (got {_short(e['input'])})"
        lines.append((loc, f"{key}: {text}" if key else text))
    return lines


# ---------------------------------------------------------------------- loading
def _bounded_load(text: str, where: str) -> tuple[Any, dict[tuple, int]]:
    """`model.yaml_io.load_yaml` and each key's line, YAML syntax errors left to the caller (`yaml.YAMLError`)."""
    try:
        document, node = load_yaml(text, where)
    except YAMLContentError as exc:
        raise RecipeError(str(exc)) from None
    if node is not None:
        _refuse_yaml11_numbers(node, where)
    return document, _line_numbers(node) if node is not None else {}


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_OCTAL = re.compile(r"([-+]?)0([0-7_]+)")


def _refuse_yaml11_numbers(root: yaml.Node, where: str) -> None:
    """`RecipeError` for a plain number YAML 1.1 reads as another one than it shows: a leading 0 makes it octal
    (``seed: 0042`` was 34, ``batch_size=010`` 8, while ``08`` is 8), a colon base 60 (``max_steps: 1:30`` was 90)."""
    several_lines = root.end_mark.line > root.start_mark.line  # a file, not an override's value
    for loc, _, node in _document_nodes(root):
        if not (isinstance(node, yaml.ScalarNode) and node.style is None and node.tag in (_INT_TAG, _FLOAT_TAG)):
            continue
        text = node.value
        octal = _OCTAL.fullmatch(text) if node.tag == _INT_TAG else None
        if octal:
            sign, digits = octal.group(1), octal.group(2).replace("_", "")
            read = int(sign + digits, 8)
            if read == int(sign + digits, 10):  # 07: the same either way
                continue
            fix = f"write {sign}{digits.lstrip('0') or '0'} (or {read} if that is meant)"
            how = f"as the octal number {read} (a leading 0)"
        elif ":" in text:
            fix = "write the number itself"
            how = f"as the base-60 number {yaml.safe_load(text)} (a ':' between digits)"
        else:
            continue
        key = f"{_dotted(loc)}: " if loc else ""
        line = f" (line {node.start_mark.line + 1})" if several_lines else ""
        raise RecipeError(f"{where}: {key}YAML 1.1 reads {text} {how}; {fix}{line}")


def _yaml_load(text: str, where: str) -> tuple[Any, dict[tuple, int]]:
    """The document in `text` and the line of each key, refusing duplicate keys and alias bombs."""
    try:
        return _bounded_load(text, where)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{where}: {yaml_error_text(exc)}") from None


def load_yaml_value(text: str, where: str) -> Any:
    """One YAML value (an override's, an ``--option``'s) with duplicate keys and alias bombs refused
    (`RecipeError` naming `where`); YAML syntax errors are left to the caller (`yaml.YAMLError`). A ``#`` that
    starts a YAML comment is refused: on a command line it is part of the value (``output.dir=runs/exp #2`` read
    as runs/exp, ``name=#1`` as null)."""
    value = _bounded_load(text, where)[0]
    comment = _yaml_comment(text)
    if comment is not None:
        raise RecipeError(f"{where}: YAML reads {comment!r} as a comment, leaving "
                          f"{'null' if value is None else _short(value)}; "
                          "quote the value (KEY='…') to keep the '#'")
    return value


def _yaml_comment(text: str) -> str | None:
    """The first comment in `text`, as YAML's scanner reads it, or None. A comment is a ``#`` outside every token:
    one inside a value (``runs/exp#2``, ``'a #b'``) is inside its scalar's token, where a check of the value's text
    for a ``#`` let ``x#1 #note`` lose its comment unsaid. A block scalar's header line (``| # note``) is no part of
    its text."""
    covered = bytearray(len(text))
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        start, end = token.start_mark.index, token.end_mark.index
        if isinstance(token, yaml.ScalarToken) and token.style in ("|", ">"):
            newline = text.find("\n", start, end)
            start = end if newline < 0 else newline
        covered[start:end] = b"\x01" * (end - start)
    for k, char in enumerate(text):
        if char == "#" and not covered[k]:
            return text[k:].split("\n", 1)[0].strip()
    return None


# A recipe is a few KB (the largest template ~13 KB); a file past this is something else (an annotation .jsonl, an
# image, /dev/zero), and reading it whole could take all the memory before YAML saw its first line.
MAX_RECIPE_BYTES = 1 << 20


def _read_text(path: Path, where: str, what: str, limit: int = MAX_RECIPE_BYTES) -> str:
    """The UTF-8 text of a small config file, read at most `limit` + 1 bytes deep (pipes and devices too)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        hint = " (an annotation file? recipes list those under data.sources)" if path.suffix in (".jsonl", ".json") \
            and what == "recipe" else ""
        raise RecipeError(f"{where}: larger than {limit // 1024:,} KiB, too large to be a {what}{hint}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError(f"{where}: not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {column}; "
                          f"save the {what} as UTF-8") from None


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe | DistillRecipe:
    """Read a recipe file, apply ``dotted.key=value`` overrides, validate and resolve paths.

    A file with a top-level ``distill:`` section is a `DistillRecipe` (`adapt distill`), any other a `Recipe`."""
    path = Path(path)
    where = str(path)
    try:
        text = _read_text(path, where, "recipe")
    except FileNotFoundError:
        raise RecipeError(f"{where}: no such recipe file (list the templates with `adapt recipes`)") from None
    except IsADirectoryError:  # `adapt init NAME DIR`, then DIR given instead of the file it wrote there
        found = sorted(p.name for p in path.glob("*.y*ml") if p.is_file())
        hint = f": {', '.join(str(path / n) for n in found[:5])}" if found else " (`adapt init NAME DIR` writes one)"
        raise RecipeError(f"{where} is a folder, not a recipe file; give the recipe .yaml{' in it' if found else ''}"
                          f"{hint}") from None
    except OSError as exc:
        raise RecipeError(f"{where}: cannot read the recipe ({exc})") from None
    try:
        data, lines = _yaml_load(text, where)
    except RecipeError as err:
        if path.suffix == ".jsonl":  # `adapt train data/train.jsonl`: the data instead of the recipe that lists it
            raise RecipeError(f"{err}\n{where} looks like an annotation file (InternVL chat JSONL), not a recipe: give "
                              "the recipe .yaml, whose data.sources list it (`adapt recipes` lists templates)") from None
        raise
    if data is None:  # a file saved empty by mistake is no recipe of defaults (nothing to train on, nothing to score)
        raise RecipeError(f"{where}: the recipe file holds no settings (it is empty or only comments); write the "
                          "recipe there, or start from a template: adapt init NAME DIR (`adapt recipes` lists them)")
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of sections (model:, data:, training: …), "
                          f"got a {type(data).__name__}")
    try:
        data = apply_overrides(data, overrides)
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from None
    return _validate(data, path.parent, path.stem, where, overrides, lines)


def parse_recipe(data: dict, base_dir: str | os.PathLike, name: str, *, origin: str | None = None,
                 overrides: Sequence[str] = ()) -> Recipe | DistillRecipe:
    """Validate recipe ``data`` (a dict as read from YAML); relative paths resolve against ``base_dir``.

    ``name`` is the run name unless ``data`` has its own; ``origin`` (the file name) prefixes errors.
    """
    return _validate(data, base_dir, name, origin or f"recipe {name!r}", overrides, {})


def _validate(data: Any, base_dir: str | os.PathLike, name: str, where: str, overrides: Sequence[str],
              lines: dict[tuple, int]) -> Recipe | DistillRecipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of sections (model:, data:, training: …), "
                          f"got a {type(data).__name__}")
    base = Path(base_dir).expanduser().absolute()
    try:
        schema = recipe_schema(data)
        recipe = schema.model_validate(data, context={"base_dir": base, "name": name})
    except ValidationError as err:
        set_by = {_absolute_key(_parse_key(o.split("=", 1)[0]), data): o for o in overrides if "=" in o}
        found = []
        for loc, text in _error_lines(err, schema):
            by = [repr(o) for k, o in set_by.items() if loc[:len(k)] == k]
            if not by:  # a check over a whole section (a projector and its options): the overrides of fields it names
                by = [repr(o) for k, o in set_by.items() if len(k) > len(loc) and k[:len(loc)] == loc
                      and any(re.search(rf"\b{re.escape(str(part))}\b", text) for part in k[len(loc):])]
            line = None if by else next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
            note = f" (set by override {', '.join(by)})" if by else (f" (line {line})" if line else "")
            found.append((line or 0, f"{where}: {text}{note}"))
        raise RecipeError("\n".join(text for _, text in sorted(found, key=lambda f: f[0]))) from None
    recipe._base_dir = base
    return recipe


def _absolute_key(key: list[str | int], data: Any) -> tuple:
    """An override's key with its negative list indices counted from the start of the lists in `data`, as error
    locations count them (``data.sources[-1]`` of two sources is ``data.sources[1]``)."""
    out: list[str | int] = []
    node = data
    for part in key:
        if isinstance(part, int) and part < 0 and isinstance(node, list) and -len(node) <= part:
            part += len(node)
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(out)


def _line_numbers(root: yaml.Node) -> dict[tuple, int]:
    """1-based line of every key and list item of a composed YAML document, by its location tuple."""
    lines: dict[tuple, int] = {}
    for loc, marker, _ in _document_nodes(root):
        if loc:
            lines.setdefault(loc, marker.start_mark.line + 1)
    return lines


def _document_nodes(root: yaml.Node) -> Iterator[tuple[tuple, yaml.Node, yaml.Node]]:
    """``(location, node whose line is the location's, node)`` of the root, every value under a scalar key (the key
    gives its line) and every list item of a composed YAML document. A node reached again through an alias is
    given at that place too, but not walked again (the places under it are those of the anchor)."""
    seen: set[int] = set()

    def walk(node: yaml.Node, loc: tuple, marker: yaml.Node) -> Iterator[tuple[tuple, yaml.Node, yaml.Node]]:
        yield loc, marker, node
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    yield from walk(value_node, loc + (key_node.value,), key_node)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                yield from walk(item, loc + (i,), item)

    yield from walk(root, (), root)


# ---------------------------------------------------------------------- overrides
_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)?((?:\[-?\d+\])*)")


def _parse_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for seg in key.strip().split("."):
        if re.fullmatch(r"-?\d+", seg):
            parts.append(int(seg))
            continue
        m = _KEY_PART.fullmatch(seg)
        if not seg or m is None:
            raise RecipeError(f"{key!r} is not a dotted key such as training.max_steps or data.sources[0].ratio")
        if m.group(1):
            parts.append(m.group(1))
        parts += [int(i) for i in re.findall(r"\[(-?\d+)\]", m.group(2))]
    return parts


def apply_overrides(data: dict, overrides: Iterable[str], schema: type[BaseModel] | None = None) -> dict:
    """A copy of ``data`` with each ``dotted.key=value`` set; values are parsed as YAML.

    ``training.max_steps=20``, ``parts.llm.mode=full``, ``tiling.max_tiles=null``,
    ``data.sources[0].ratio=0.5``, ``data.sources=[{name: a, path: a.jsonl}]``. Keys are checked
    against the schema, so a misspelt key fails here with a suggestion.
    """
    data = _unshared_copy(data) if data else {}
    schema = schema or recipe_schema(data)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r}: expected dotted.key=value, e.g. training.max_steps=20")
        key, raw = item.split("=", 1)
        try:
            path = _parse_key(key)
        except RecipeError as err:
            raise RecipeError(f"override {item!r}: {err}") from None
        try:
            value = load_yaml_value(raw, f"override {key.strip()}=…") if raw.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeError(f"override {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)}); "
                              "quote it if it is text") from None
        _set(data, path, value, item, schema)
    return data


def path_override(key: str, path: str | os.PathLike) -> str:
    """``key="path"``: an override that reads back as `path` whatever it holds (unquoted, YAML reads `` #`` in a
    path as a comment and ``: `` as a mapping)."""
    return f"{key}={json.dumps(str(path))}"


def _unshared_copy(value: Any) -> Any:
    """A deep copy in which no two places share a mapping or list: a YAML alias (``llm: *same``) gives one object in
    two places, which `copy.deepcopy` keeps shared, so an override of one place set the other too. Its size is the
    document's expanded one, which `model.yaml_io` bounds."""
    if isinstance(value, dict):
        return {k: _unshared_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared_copy(v) for v in value]
    return copy.deepcopy(value)


def _set(data: dict, path: list[str | int], value: Any, item: str, schema: type[BaseModel]) -> None:
    if not path or isinstance(path[0], int):
        raise RecipeError(f"override {item!r}: the key must start with a section name")
    cls: type[BaseModel] | type[dict] | None = schema
    node: Any = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        here = _dotted(path[:i])
        if isinstance(part, int):
            if not isinstance(node, list):
                raise RecipeError(f"override {item!r}: {here!r} is not a list")
            if not -len(node) <= part < len(node):
                raise RecipeError(f"override {item!r}: {here!r} has {len(node)} item(s), no item [{part}]")
            if last:
                node[part] = value
            else:
                if node[part] is None:
                    node[part] = {}
                node = node[part]
            continue
        if isinstance(node, list):
            raise RecipeError(f"override {item!r}: {here!r} is a list; pick an item, e.g. {here}[0].{part}")
        if cls is dict:  # inside a free-form mapping (projector_options, a tower's config): any key
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r}: {here!r} in the recipe is not a mapping")
            if last:
                node[part] = value
                return
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            continue
        if cls is None:
            raise RecipeError(f"override {item!r}: {here!r} is a value, not a section")
        if part not in cls.model_fields:
            raise RecipeError(f"override {item!r}: {_unknown_key_message(path[:i], part, schema)}")
        if not isinstance(node, dict):
            raise RecipeError(f"override {item!r}: {here!r} in the recipe is not a mapping")
        if last:
            node[part] = value
            return
        annotation = cls.model_fields[part].annotation
        if node.get(part) is None:
            if isinstance(path[i + 1], int):
                raise RecipeError(f"override {item!r}: {_dotted(path[:i + 1])!r} is empty, no item [{path[i + 1]}]")
            node[part] = {}
        node = node[part]
        cls = dict if get_origin(annotation) is dict else _submodel(annotation)


# ---------------------------------------------------------------------- DeepSpeed
def resolve_deepspeed_config(name_or_path: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                             training: Training | None = None, world: int | None = None) -> dict:
    """The DeepSpeed config for ``zero1``/``zero2``/``zero3`` (``templates/deepspeed/``) or a JSON file.

    The bundled configs leave batch sizes, gradient accumulation, clipping and fp16/bf16 on "auto"
    (the trainer fills them from the recipe), give bucket sizes as numbers, and define no optimizer
    or scheduler: the trainer passes its own AdamW with one learning rate per part. A config with an
    optimizer, scheduler or old-style ``bfloat16`` section or ZeRO-Offload is refused, and so, given the recipe's `training`
    (and the process count `world`), is a fixed value of a key the recipe sets that differs from it.
    """
    if str(name_or_path) in DEEPSPEED_PRESETS:
        from model.resources import templates_dir

        path = templates_dir() / "deepspeed" / f"{name_or_path}.json"
    else:
        path = _resolve(name_or_path, Path(base_dir).absolute() if base_dir is not None else Path.cwd())
    if not path.is_file():
        raise RecipeError(f"DeepSpeed config {str(name_or_path)!r}: no such file {path}; "
                          f"use {', '.join(DEEPSPEED_PRESETS)} or a path to a .json file")
    try:
        text = _read_text(path, str(path), "DeepSpeed config")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the DeepSpeed config ({exc})") from None
    try:
        config = json.loads(text, object_pairs_hook=_unique_json_keys)
    except json.JSONDecodeError as exc:
        raise RecipeError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a DeepSpeed config must be a JSON object, got {type(config).__name__}")
    _check_deepspeed_config(config, path, training, world)
    return config


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object, refusing a key given twice: json keeps the last silently (DeepSpeed's own file reader refuses
    it, but the trainer hands DeepSpeed the dict)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RecipeError(f"duplicate key {key!r}; keep one")
        out[key] = value
    return out


# sections pocket-adapt does not pass on to DeepSpeed, and the recipe keys that set what they would
_DEEPSPEED_OWN_SECTIONS = {
    "optimizer": "pocket-adapt trains with its own AdamW, one learning rate per part: set parts.<part>.lr and "
                 "training.weight_decay in the recipe",
    "scheduler": "pocket-adapt runs its own schedule: set training.schedule and training.warmup_ratio in the recipe",
}


# the numbers the trainer fills from the recipe ("auto")
_DEEPSPEED_NUMBERS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                      "gradient_clipping")


def _check_deepspeed_config(config: dict, path: Path, training: Training | None, world: int | None) -> None:
    """Refuse what DeepSpeed would ignore, overwrite or crash on (see `resolve_deepspeed_config`)."""
    for section, where in _DEEPSPEED_OWN_SECTIONS.items():
        if section in config:
            raise RecipeError(f"{path}: its {section!r} section would be ignored ({where}); remove the section")
    if "bfloat16" in config:  # DeepSpeed reads this old name only without a "bf16" section, which the trainer adds
        raise RecipeError(f"{path}: its 'bfloat16' section would be ignored (the trainer writes a \"bf16\" section "
                          "from training.precision, and DeepSpeed reads \"bfloat16\" only without one); rename it "
                          "to \"bf16\"")
    for section in ("fp16", "bf16"):  # the trainer sets <section>.enabled from training.precision
        if section in config and not isinstance(config[section], dict):
            raise RecipeError(f"{path}: {section} is {json.dumps(config[section])}, but DeepSpeed takes a section "
                              f"there: {{\"enabled\": \"auto\"}} (filled from training.precision)")
    zero = config.get("zero_optimization")
    for key in ("offload_optimizer", "offload_param"):
        device = zero.get(key) if isinstance(zero, dict) else None
        if device is not None and not (isinstance(device, dict) and device.get("device", "none") == "none"):
            raise RecipeError(f"{path}: zero_optimization.{key} (ZeRO-Offload) needs DeepSpeed's own CPU optimizer, "
                              "but pocket-adapt trains with torch's AdamW; remove it (or set its device to \"none\")")
    if zero is not None:
        _check_zero_section(zero, path)
    for key in _DEEPSPEED_NUMBERS:  # DeepSpeed reads true as 1, which also equals the recipe's 1 below
        value = config.get(key, "auto")
        batch = key != "gradient_clipping"
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float)) or batch and value < 1):
            raise RecipeError(f"{path}: {key} is {json.dumps(value)}, but DeepSpeed takes a number there"
                              f"{' (at least 1)' if batch else ''}; set it to \"auto\" (filled from the recipe) or "
                              "remove it")
    if training is None:
        return
    per_step = training.batch_size * training.grad_accum
    owned = {  # key: (the recipe's value, where it comes from)
        "train_micro_batch_size_per_gpu": (training.batch_size, "training.batch_size"),
        "gradient_accumulation_steps": (training.grad_accum, "training.grad_accum"),
        "gradient_clipping": (training.max_grad_norm, "training.max_grad_norm"),
        "fp16.enabled": (training.precision == "fp16", f"training.precision {training.precision}"),
        "bf16.enabled": (training.precision == "bf16", f"training.precision {training.precision}"),
    }
    if world is not None:
        owned["train_batch_size"] = (per_step * world, f"training.batch_size x training.grad_accum x {world} "
                                                         "process(es)")
    for key, (want, source) in owned.items():
        section, _, name = key.rpartition(".")
        node = config.get(section) if section else config
        value = node.get(name, "auto") if isinstance(node, dict) else "auto"
        if value != "auto" and value != want:
            raise RecipeError(f"{path}: {key} is {json.dumps(value)}, but the recipe gives {json.dumps(want)} "
                              f"({source}); set it to \"auto\" (filled from the recipe) or remove it")
    given = config.get("train_batch_size", "auto")
    if world is None and given != "auto" and not (isinstance(given, int) and given > 0 and given % per_step == 0):
        raise RecipeError(f"{path}: train_batch_size is {json.dumps(given)}, not a multiple of the recipe's "
                          f"{per_step} samples per process (training.batch_size x training.grad_accum); set it to "
                          "\"auto\" (filled from the recipe) or remove it")


def _check_zero_section(zero: Any, path: Path) -> None:
    """Refuse a ``zero_optimization`` section DeepSpeed would refuse: it checks the section only inside
    ``deepspeed.initialize``, once the model has loaded, and a stage 4 or a misspelt key was a pydantic traceback."""
    if isinstance(zero, bool):  # DeepSpeed's deprecated form (stage 1 when true), which it reads itself
        return
    if not isinstance(zero, dict):
        raise RecipeError(f"{path}: zero_optimization is {json.dumps(zero)}, but DeepSpeed takes a section there: "
                          '{"stage": 2, ...}')
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):  # DeepSpeed reads true as 1 and "2" as 2
        raise RecipeError(f"{path}: zero_optimization.stage is {json.dumps(stage)}; it must be 0, 1, 2 or 3 (a number)")
    if importlib.util.find_spec("deepspeed") is None:
        return  # nothing to check the other keys against (recipe_warnings notes it is missing)
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig  # (the CLI quiets its accelerator line)

    fields = {field.alias or name: field for name, field in DeepSpeedZeroConfig.model_fields.items()}
    for key, value in zero.items():  # its schema reads true as 1 for a number (reduce_bucket_size: true)
        kinds = _kinds(fields[key].annotation) if key in fields else set()
        if isinstance(value, bool) and kinds & {int, float} and bool not in kinds:
            raise RecipeError(f"{path}: zero_optimization.{key} is {json.dumps(value)}, but DeepSpeed takes a number "
                              "there")
    try:
        DeepSpeedZeroConfig(**zero)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            known = [field.alias or name for name, field in DeepSpeedZeroConfig.model_fields.items()]
            raise RecipeError(f"{path}: zero_optimization.{key} is not a DeepSpeed ZeRO setting"
                              f"{did_you_mean(key, known)}") from None
        raise RecipeError(f"{path}: zero_optimization.{key}: {first['msg'].lower()} (got {_short(first['input'])})"
                          ) from None


# ---------------------------------------------------------------------- templates
def _recipe_templates_dir() -> Path:
    from model.resources import templates_dir

    return templates_dir() / "recipes"


def list_recipe_templates() -> dict[str, str]:
    """Template name -> its one-line description (the first sentence of the file's opening comment)."""
    out = {}
    for path in sorted(_recipe_templates_dir().glob("*.yaml")):
        words = []
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if not text and not words:
                continue
            if not text.startswith("#") or not text.lstrip("#").strip():
                break
            words.append(text.lstrip("#").strip())
        # a description wraps over comment lines: cutting at the first line break left half a sentence
        paragraph = " ".join(words)
        end = re.search(r"\.\s+(?=[A-Z])", paragraph)
        out[path.stem] = paragraph[: end.start() + 1] if end else paragraph
    return out


def copy_recipe_template(name: str, dest_dir: str | os.PathLike) -> Path:
    """Copy template ``name`` byte for byte (comments included) to ``dest_dir/<name>.yaml``; never overwrites."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    known = list_recipe_templates()
    if stem not in known:
        raise RecipeError(f"unknown recipe template {name!r}; templates: {', '.join(known)}{did_you_mean(stem, known)}")
    dest_dir = Path(dest_dir)
    target = dest_dir / f"{stem}.yaml"
    if target.exists():
        raise RecipeError(f"{target} already exists; not overwriting it (move it away or choose another folder)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    data = (_recipe_templates_dir() / f"{stem}.yaml").read_bytes()
    try:
        with open(target, "xb") as f:  # "x": fail rather than overwrite a file that appeared meanwhile
            f.write(data)
    except FileExistsError:
        raise RecipeError(f"{target} already exists; not overwriting it") from None
    return target


# ---------------------------------------------------------------------- advice (not errors)
def recipe_warnings(recipe: Recipe | DistillRecipe, for_eval: bool = False) -> list[str]:
    """Things that are allowed but probably not meant (missing data files, an empty general share…). ``for_eval``
    (``adapt validate --eval``): only those that matter to ``adapt eval``, none about training's sources, mixing,
    parts or processes."""
    notes = []
    checked = (("data.eval_sources", recipe.data.eval_sources),) if for_eval else \
        (("data.sources", recipe.data.sources), ("data.eval_sources", recipe.data.eval_sources))
    for key, sources in checked:
        for i, source in enumerate(sources):
            if not source.path.exists():
                notes.append(f"{key}[{i}] ({source.name}): {source.path} does not exist yet")
            elif source.root is not None and not source.root.is_dir():
                notes.append(f"{key}[{i}] ({source.name}): its image root {source.root} does not exist")
    for i, source in enumerate(recipe.data.eval_sources):
        unused = [k for k in ("ratio", "repeat") if getattr(source, k) is not None]
        if unused:
            notes.append(f"data.eval_sources[{i}] ({source.name}): {' and '.join(unused)} unused: evaluation scores "
                         "every record of an eval source (a meta entry's repeat_time too)")
    if isinstance(recipe, Recipe) and recipe.model.trust_remote_code:
        notes.append("model.trust_remote_code is true, but pocket-adapt reads every supported layout without "
                     "running checkpoint code, so it has no effect")
    if for_eval:
        return notes + _uncached_hub_weights(recipe, "eval")
    verb = "distill" if isinstance(recipe, DistillRecipe) else "train"  # the verb that would stop, in these notes
    general = [s for s in recipe.data.sources if s.kind == "general"]
    if general and recipe.mixing.general_ratio == 0:
        notes.append("mixing.general_ratio is 0, so the general source(s) are not used")
    if recipe.eval.every is not None and not recipe.data.eval_sources:
        notes.append(f"eval.every is {recipe.eval.every} but data.eval_sources is empty")
    if isinstance(recipe, DistillRecipe) and not recipe.data.eval_sources:
        notes.append("data.eval_sources is empty: the report will have no held-out feature cosine")
    if isinstance(recipe, DistillRecipe) and recipe.data.augment is not None:
        notes.append("data.augment flips, turns and colour-jitters the images the student and teacher both see")
    if isinstance(recipe, Recipe):
        for name, part in recipe.parts.items():
            # the default block every bundled recipe carries (to switch a mode by one word) is not worth a note
            unused = [f"parts.{name}.lora.{key}" for key, field in LoraSpec.model_fields.items()
                      if part.mode != "lora" and getattr(part.lora, key) != field.default]
            if unused:
                one = len(unused) == 1
                notes.append(f"{' and '.join(unused)} {'is' if one else 'are'} set but parts.{name}.mode is "
                             f"{part.mode}, so {'it is' if one else 'they are'} unused (the {name} part "
                             f"{'trains in full' if part.mode == 'full' else 'stays frozen'}); "
                             f"set parts.{name}.mode: lora to train it with LoRA")
    from model.limits import usable_cores

    cores = usable_cores()
    if recipe.training.num_workers > cores:
        notes.append(f"training.num_workers is {recipe.training.num_workers}, more than this machine's {cores} CPU "
                     "core(s): each worker is a process of its own (memory included) and more than the cores only "
                     "wait for them")
    if recipe.mixing.epoch_size is not None:  # adapt train refuses it only once it has loaded the model and the data
        from adapt.data.mixture import epoch_order_refusal

        refusal = epoch_order_refusal(recipe.mixing.epoch_size, 1 + recipe.training.num_workers)
        if refusal:
            notes.append(f"on this machine adapt {verb} would stop: {refusal}")
    if recipe.training.precision == "fp16":
        import torch

        if not torch.cuda.is_available():  # the trainer's refusal, said before the recipe is taken elsewhere
            notes.append(f"on this machine adapt {verb} would stop: training.precision fp16 needs a CUDA GPU, and "
                         "there is none here; use bf16 or fp32 on CPU")
    if recipe.distributed.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        notes.append(f"distributed.strategy is deepspeed, but deepspeed is not installed here: adapt {verb} would stop "
                     f"only once it has loaded the model and read the data; {install_hint('deepspeed')}")
    # any value but the default is a choice (zero3 to fit a model), which a strategy other than deepspeed ignores
    if recipe.distributed.strategy != "deepspeed" and \
            recipe.distributed.deepspeed != Distributed.model_fields["deepspeed"].default:
        notes.append(f"distributed.deepspeed is {recipe.distributed.deepspeed} but distributed.strategy is "
                     f"{recipe.distributed.strategy!r}, so it is unused; set distributed.strategy: deepspeed to use it")
    return notes + _uncached_hub_weights(recipe, verb)


def _uncached_hub_weights(recipe: Recipe | DistillRecipe, verb: str) -> list[str]:
    """A note per preset or hub:OWNER/NAME source whose weights are not in the local Hugging Face cache (looked up
    on disk only): `adapt <verb>` would stop there without network, after loading nothing."""
    from model.checkpoints.tower import HUB_PREFIX
    from model.loading import hub_fetch_advice, hub_weights_cached
    from model.presets import PRESETS

    if isinstance(recipe, DistillRecipe):
        sources = [("distill.teacher.source", recipe.distill.teacher.source),
                   ("distill.student.source", recipe.distill.student.source)]
    elif verb == "eval":  # the base model adapt eval scores without --model; model.vision only builds one to train
        sources = [("model.source", recipe.model.source)]
    else:
        sources = [("model.source", recipe.model.source), ("model.vision", recipe.model.vision)]
    notes = []
    for key, source in sources:
        if source is None:
            continue
        if source.startswith(HUB_PREFIX):
            hub_id, instead_of = source[len(HUB_PREFIX):], source
            what = f"the weights of {hub_id} are"
        elif source in PRESETS and PRESETS[source].hub_id:
            hub_id, instead_of = PRESETS[source].hub_id, "the preset name"
            what = f"preset {source} needs the weights of {hub_id}, which are"
        else:
            continue
        if not hub_weights_cached(hub_id):
            notes.append(f"{key}: {what} not in the local Hugging Face cache: adapt {verb} downloads them if the hub "
                         f"is reachable; else {hub_fetch_advice(hub_id, instead_of, f'{key}: DIR')}")
    return notes
