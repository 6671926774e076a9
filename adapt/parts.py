"""Per-part training modes: each of vision / projector / llm is `frozen`, `lora` or `full`.

LoRA targets are resolved to full module names inside their part before peft sees them, so the
vision tower and the LLM sharing names such as `q_proj` can never wrap the wrong part.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from adapt.recipe import did_you_mean, expert_lora_refusal
from model.errors import PocketAdaptError
from model.loading import peft_quietly
from model.lora import is_peft_model

if TYPE_CHECKING:
    from adapt.recipe import Recipe

PART_PREFIXES = {"vision": "vision_tower.", "projector": "multi_modal_projector.", "llm": "language_model."}
MODES = ("frozen", "lora", "full")


class PartsError(PocketAdaptError, ValueError):
    """A part setting (mode, LoRA targets) that does not fit the model."""


@dataclass(frozen=True)
class PartSetting:
    mode: str = "frozen"
    lr: float = 1e-4
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] | None = None  # module-name suffixes inside the part; None = every Linear


_PART_OF_MODULE = {prefix.rstrip("."): part for part, prefix in PART_PREFIXES.items()}


def part_of(name: str) -> str:
    """Which part a parameter or module name (with or without a wrapper's prefix: peft's ``base_model.model.``,
    DDP's ``module.``) belongs to: its outermost module that is one of the model's part attributes, so an LLM's own
    submodule named ``vision_tower`` stays in the llm part."""
    for component in name.split("."):
        if component in _PART_OF_MODULE:
            return _PART_OF_MODULE[component]
    raise PartsError(f"{name!r} belongs to no part ({', '.join(PART_PREFIXES)})")


def _attention_linears(model: nn.Module) -> set[str]:
    """Full names of the Linear modules inside an ``nn.MultiheadAttention`` (its ``out_proj``)."""
    return {f"{name}.{child}" for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)
            for child, sub in module.named_modules() if isinstance(sub, nn.Linear)}


def _unwrappable(model: nn.Module, prefix: str) -> list[str]:
    """Names (under `prefix`) of a MoE LM's weights LoRA cannot wrap: transformers 5 keeps the experts as fused 3-D
    parameters (``mlp.experts.gate_up_proj``) and the router as a bare weight, not as Linear modules. Empty for a
    model without fused experts."""
    names = []
    for name, module in model.named_modules():
        # by module kind, not by shape: a vision tower's position embeddings are 3-D too (1, patches, width)
        if name.startswith(prefix) and type(module).__name__.endswith(("Experts", "Router")):
            names += [f"{name}.{param}" for param, _ in module.named_parameters(recurse=False)]
    return names if any(model.get_parameter(n).ndim == 3 for n in names) else []


def _tails(names: list[str]) -> list[str]:
    """`names` without their layer numbers (``mlp.experts.gate_up_proj``), each once."""
    return list(dict.fromkeys(re.sub(r"^.*?\.\d+\.", "", n) for n in names))


def lora_targets(model: nn.Module, part: str, suffixes: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """Full names of the Linear modules of `part` that LoRA wraps (never the LM head, never a Linear inside an
    ``nn.MultiheadAttention``: its forward reads ``out_proj.weight`` directly, past peft's wrapper, so a LoRA
    there would never train; the ``qformer`` / ``resampler`` projectors' attention trains only with mode full),
    and of the fused MoE expert parameters it wraps: only those `suffixes` name (``experts.gate_up_proj``)."""
    prefix = PART_PREFIXES[part]
    linears = [
        name for name, module in model.named_modules()
        if name.startswith(prefix) and isinstance(module, nn.Linear) and not name.endswith("lm_head")
    ]
    unreachable = _attention_linears(model)
    names = [n for n in linears if n not in unreachable]
    fused = _unwrappable(model, prefix)  # a MoE LM's experts and router
    experts = [n for n in fused if model.get_parameter(n).ndim == 3]  # what peft's target_parameters wraps
    params: list[str] = []
    if suffixes:
        def chosen(found: list[str], wanted: tuple[str, ...] = suffixes) -> list[str]:
            return [n for n in found if any(n == prefix + s or n.endswith("." + s) for s in wanted)]

        # every target must wrap something: a misspelt one beside a correct one would otherwise train less, silently
        unreached = [s for s in suffixes if not chosen(names, (s,))]
        inside_attention = [s for s in unreached if chosen(linears, (s,))]
        if inside_attention:
            raise PartsError(
                f"parts.{part}.lora.targets: LoRA targets {inside_attention} match only Linear modules inside nn.MultiheadAttention in the {part} "
                f"part ({', '.join(chosen(linears, tuple(inside_attention))[:3])}), which LoRA cannot reach (the "
                "attention reads their weights directly); target other modules or use mode 'full'")
        def of(found: list[str], wanted: str) -> list[str]:  # a parameter by its name or by its module's
            return chosen(found, (wanted,)) + [n for n in found if chosen([n.rpartition(".")[0]], (wanted,))]

        expert_targets = [s for s in unreached if of(experts, s)]
        params = [n for n in experts if any(n in of(experts, s) for s in expert_targets)]
        unreached = [s for s in unreached if s not in expert_targets]
        router = [s for s in unreached if of(fused, s)]
        if router:
            raise PartsError(
                f"parts.{part}.lora.targets: {router} name the router of a MoE LM, a bare weight LoRA does not wrap "
                f"here (LoRA reaches the fused experts: {', '.join(_tails(experts))}); "
                "train the router with mode 'full'")
        if unreached and (names or experts):
            raise PartsError(f"parts.{part}.lora.targets: LoRA targets {unreached} match no Linear module in the "
                             f"{part} part: {_near_targets(unreached, names, prefix, experts)}")
        names = chosen(names)
        left = [n for n in experts if n not in params]
        if params and left:  # `down_proj` picks the shared expert's Linear, not the fused experts.down_proj
            warnings.warn(
                f"parts.{part}: LoRA trains the fused experts' {', '.join(_tails(params))} but not "
                f"{', '.join(_tails(left))}; name them in parts.{part}.lora.targets to train them too", stacklevel=4)
    if not names and not params:
        raise PartsError(f"the {part} part has no Linear module for LoRA; use mode 'full' or 'frozen'")
    if fused and not params:
        warnings.warn(
            f"parts.{part}: this MoE LM keeps its experts and router in fused parameters "
            f"({', '.join(_tails(fused))}), not Linear modules, so LoRA leaves them frozen; it trains "
            f"{', '.join(_tails(names))}. To train the experts use mode full, or name them in "
            f"parts.{part}.lora.targets ({', '.join(_tails(experts))}; with lora.dropout 0)", stacklevel=4)
    return names, params


def _near_targets(unreached: list[str], names: list[str], prefix: str, experts: list[str] = ()) -> str:
    """Close matches for each target that matched nothing, and the part's LoRA-able module (and fused expert
    parameter) names."""
    tails = [n[len(prefix):] for n in [*names, *experts]]
    hints = []
    for target in unreached:
        depth = target.count(".") + 1  # compare `mlp.fc1` with two-part tails, `fc1` with the last part
        hints.append(f"{target!r}{did_you_mean(target, dict.fromkeys('.'.join(t.split('.')[-depth:]) for t in tails))}")
    known = ", ".join(dict.fromkeys(n[len(prefix):].split(".")[-1] for n in names))
    fused = f"; the fused expert parameters: {', '.join(_tails(experts))}" if experts else ""
    return f"{'; '.join(hints)} (the Linear modules LoRA can wrap there: {known}{fused})"


def check_parts(model: nn.Module,
                settings: dict[str, PartSetting]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Refuse (`PartsError`) what `apply_parts` cannot do with `settings` on `model`, before anything is wrapped: a
    mode, a part without parameters, LoRA values, targets that match no module (`lora_targets`), a rank above a
    wrapped layer's width. Works on a skeleton on the meta device too. Returns each LoRA part's Linear module names
    and the fused MoE expert parameter names of the parts that wrap some."""
    for part, setting in settings.items():
        if part not in PART_PREFIXES:
            raise PartsError(f"unknown part {part!r}; parts are {', '.join(PART_PREFIXES)}")
        if setting.mode not in MODES:
            raise PartsError(f"part {part}: mode {setting.mode!r} is not one of {', '.join(MODES)}")
        # a parameter-free part (an identity projector) would train nothing, silently
        if setting.mode != "frozen" and not any(n.startswith(PART_PREFIXES[part]) for n, _ in model.named_parameters()):
            raise PartsError(f"parts.{part}: mode {setting.mode} but the {part} part has no parameters, so it would "
                             f"train nothing; set parts.{part}.mode: frozen")
        if setting.mode == "lora":
            _check_lora_values(part, setting)
    lora_parts = {p: s for p, s in settings.items() if s.mode == "lora"}
    modules: dict[str, list[str]] = {}
    params: dict[str, list[str]] = {}
    for part, setting in lora_parts.items():
        names, part_params = lora_targets(model, part, setting.targets)
        _check_rank(model, part, setting, names, part_params)
        modules[part] = names
        if part_params:
            params[part] = part_params
    dropouts = {s.dropout for s in lora_parts.values()}
    if len(dropouts) > 1:
        raise PartsError(f"LoRA dropout must be the same for every LoRA part (got {sorted(dropouts)})")
    if params:
        _expert_setting(params, lora_parts)
    return modules, params


def apply_parts(model: nn.Module, settings: dict[str, PartSetting]) -> nn.Module:
    """Freeze, LoRA-wrap or unfreeze each part. Returns the model to train (a PeftModel if any LoRA)."""
    modules, params = check_parts(model, settings)
    lora_parts = {p: s for p, s in settings.items() if s.mode == "lora"}
    if lora_parts:
        from peft import LoraConfig, get_peft_model  # only when a part trains with LoRA: seconds to import

        targets = [n for names in modules.values() for n in names]
        ranks = {n: lora_parts[p].r for p, names in modules.items() for n in names}
        alphas = {n: lora_parts[p].alpha for p, names in modules.items() for n in names}
        # the experts take the config's default rank and alpha: their part's (`_expert_setting`)
        first = lora_parts[next(iter(params))] if params else next(iter(lora_parts.values()))
        config = LoraConfig(
            r=first.r, lora_alpha=first.alpha, lora_dropout=first.dropout, target_modules=targets,
            rank_pattern=_exact(ranks), alpha_pattern=_exact(alphas), bias="none",
            target_parameters=[n for names in params.values() for n in names] or None,
        )
        with peft_quietly():
            model = get_peft_model(model, config)
    for name, param in model.named_parameters():
        mode = settings.get(part_of(name), PartSetting()).mode
        param.requires_grad = mode == "full" or (mode == "lora" and "lora_" in name)
    return model


def part_settings(recipe: Recipe) -> dict[str, PartSetting]:
    """Each part's recipe section (`recipe.parts`) as the `PartSetting` that `apply_parts` takes."""
    out = {}
    for part in ("vision", "projector", "llm"):
        p = getattr(recipe.parts, part)
        targets = tuple(p.lora.targets) if p.lora.targets else None
        out[part] = PartSetting(p.mode, p.lr, p.lora.r, p.lora.alpha, p.lora.dropout, targets)
    return out


def check_recipe_parts(recipe: Recipe) -> list[str]:
    """`check_parts` for `adapt validate`: on the model's skeleton, built on the meta device from its config alone
    (nothing read nor fetched), so that a misspelt LoRA target is refused before `adapt train` loads the weights.
    Raises `PartsError` as train would; returns notes: the warnings train would give, and the parts left unchecked
    (a config that cannot be read, a replaced vision tower, which only loading it tells) and why."""
    import torch

    from model.checkpoints.io import CONFIG_ERRORS
    from model.loading import load_config
    from model.vlm import PocketVLM

    settings_all = {p: s for p, s in part_settings(recipe).items() if s.mode != "frozen"}
    unchecked = [p for p in ("vision", "projector") if p in settings_all] if recipe.model.vision is not None else []
    settings = {p: s for p, s in settings_all.items() if p not in unchecked}

    def not_checked(parts: list[str], why: str) -> list[str]:  # said of LoRA parts: a full part's check is slight
        parts = [p for p in parts if settings_all[p].mode == "lora"]
        shown = " and ".join(f"parts.{p}" for p in parts)
        them = "them" if len(parts) > 1 else "it"
        return [f"{shown} not checked against the model ({why}): adapt train checks {them} once it has loaded the "
                "model"] if parts else []

    notes = not_checked(unchecked, f"model.vision {recipe.model.vision} brings its own tower, known once loaded")
    if not settings:
        return notes
    try:
        config = load_config(recipe.model.source)
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the model's own init warnings; the weights are never made
            vlm = PocketVLM(config)
            if recipe.model.projector is not None:
                vlm.replace_projector(recipe.model.projector, recipe.model.projector_options)
            elif recipe.model.projector_options:
                vlm.reconfigure_projector(recipe.model.projector_options)
    except (PocketAdaptError, OSError, ImportError, RuntimeError, *CONFIG_ERRORS) as err:  # adapt train says why
        return notes + not_checked(list(settings), f"{recipe.model.source}'s config builds no model here: "
                                                   f"{' '.join(str(err).split())}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_parts(vlm, settings)
    return notes + [str(w.message) for w in caught if str(w.message).startswith("parts.")]


def _check_lora_values(part: str, setting: PartSetting) -> None:
    """Refuse what the recipe schema (`adapt.recipe.LoraSpec`) refuses, for settings built in code: peft raises a
    raw error for r 0 and builds adapters that train nothing, or diverge, for a negative r, alpha or dropout."""
    if isinstance(setting.r, bool) or not isinstance(setting.r, int) or setting.r < 1:
        raise PartsError(f"parts.{part}.lora.r: {setting.r!r} is not a whole number of at least 1 (8 to 64 is usual)")
    if not setting.alpha > 0:  # NaN too
        raise PartsError(f"parts.{part}.lora.alpha: {setting.alpha!r} is not above 0")
    if not 0 <= setting.dropout < 1:
        raise PartsError(f"parts.{part}.lora.dropout: {setting.dropout!r} is not in [0, 1)")
    targets = setting.targets
    # a bare string would be read letter by letter; an empty tuple as None, every Linear
    if targets is not None and (isinstance(targets, str) or not targets
                                or not all(isinstance(t, str) and t.strip() for t in targets)):
        raise PartsError(f"parts.{part}.lora.targets: {targets!r} is not a non-empty tuple of module names "
                         "(('q_proj', 'v_proj')), nor None for every Linear of the part")


def _check_rank(model: nn.Module, part: str, setting: PartSetting, modules: list[str], params: list[str]) -> None:
    """Refuse a LoRA rank above the smaller width of a layer it wraps (a Linear's in / out features, a fused expert
    parameter's last two dimensions): such an adapter is no smaller than the layer, and a huge r runs out of memory.
    With the default targets (every Linear) only an r above every layer's is refused: a narrow gate (a MoE LM's
    ``shared_expert_gate``, 1 wide) must not rule out the rank the other layers train with."""
    widths = {n: (model.get_submodule(n).in_features, model.get_submodule(n).out_features) for n in modules}
    for n in params:  # a DeepSpeed ZeRO-3 parameter keeps its full shape in ds_shape
        param = model.get_parameter(n)
        widths[n] = tuple(getattr(param, "ds_shape", param.shape)[-2:])
    narrow = {n: (a, b) for n, (a, b) in widths.items() if setting.r > min(a, b)}
    if narrow and (setting.targets or len(narrow) == len(widths)):
        name, (a, b) = max(narrow.items(), key=lambda item: min(item[1]))
        where = f"parts.{part}.lora.targets" if setting.targets else f"parts.{part}.lora.targets (every Linear now)"
        raise PartsError(f"parts.{part}.lora.r: {setting.r} is larger than {name} allows (widths {a} and {b}): a "
                         f"LoRA rank is at most the smaller width of each layer it wraps; lower r to {min(a, b)} or "
                         f"less, or leave that layer out of {where}")


def _expert_setting(params: dict[str, list[str]], lora_parts: dict[str, PartSetting]) -> PartSetting:
    """The LoRA setting of the part(s) whose fused expert parameters LoRA wraps, refusing what peft's
    ``target_parameters`` cannot do: it has no dropout (the input of the fused expert matmul cannot be factored out).
    The experts take the config's default rank and alpha, so the default is their part's (peft warns that a
    ``rank_pattern`` key naming a parameter matched no module); the other parts' modules get theirs by pattern."""
    shown = ", ".join(f"parts.{p}.lora.targets ({', '.join(_tails(n))})" for p, n in params.items())
    setting = lora_parts[next(iter(params))]
    refusal = expert_lora_refusal(shown, next(iter(lora_parts.values())).dropout, lora_parts,
                                  {(lora_parts[p].r, lora_parts[p].alpha) for p in params})
    if refusal:
        raise PartsError(refusal)
    return setting


def base_model(model: nn.Module) -> nn.Module:
    """The PocketVLM inside a PeftModel (or the model itself)."""
    return model.get_base_model() if is_peft_model(model) else model


# transformers' Trainer.get_decay_parameter_names: no decay inside an nn.LayerNorm nor for these (lower-cased) names
_NO_DECAY = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


def decayed_names(model: nn.Module) -> set[str]:
    """Names of the parameters AdamW decays: all but norms and biases, the rule of transformers' Trainer (which the
    public InternVL and MobileVLM fine-tuning scripts run on), so embeddings, the LM head and the patch embedding
    decay too."""
    in_layernorm = {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
                    if isinstance(module, nn.LayerNorm) for name, _ in module.named_parameters()}
    return {name for name, _ in model.named_parameters() if name not in in_layernorm and not _NO_DECAY.search(name.lower())}


def parameter_groups(model: nn.Module, settings: dict[str, PartSetting], weight_decay: float) -> list[dict]:
    """AdamW groups: one per (part, decay / no decay: `decayed_names`), each with its part's learning rate."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    decayed = decayed_names(model)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        groups.setdefault((part_of(name), name in decayed), []).append(param)
    return [
        {"params": params, "lr": settings[part].lr, "weight_decay": weight_decay if decay else 0.0, "part": part}
        for (part, decay), params in sorted(groups.items())
    ]


def trainable_summary(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(trainable, total) parameter counts per part; a DeepSpeed ZeRO-3 parameter counts its full size."""
    counts = {p: [0, 0] for p in PART_PREFIXES}
    for name, param in model.named_parameters():
        part = part_of(name)
        # ZeRO-3 leaves each rank an empty tensor after deepspeed.initialize; ds_numel is the whole, unpartitioned size
        size = getattr(param, "ds_numel", param.numel())
        counts[part][1] += size
        if param.requires_grad:
            counts[part][0] += size
    return {p: (t, n) for p, (t, n) in counts.items()}


def _exact(mapping: dict[str, float]) -> dict[str, float]:
    # peft matches pattern keys as regexes against the module-name tail; anchor full names exactly
    return {"^" + name.replace(".", r"\.") + "$": value for name, value in mapping.items()}
