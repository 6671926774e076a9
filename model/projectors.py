"""Vision -> language projectors, behind a small registry.

Every projector takes patch features ``(N, L, C_in)`` -- ``L = grid_h * grid_w`` patch tokens in row-major
order, CLS already dropped -- and returns ``(N, L_out, D)``.  Every projector class has
``num_tokens(grid_h, grid_w)``; the built-in ones also have a classmethod ``count_tokens(grid_h, grid_w, **options)``
so :func:`projector_tokens` can answer without building weights.

Built-in projectors (state-dict keys match the upstream checkpoints so they load with ``strict=True``):

- ``pixel_shuffle_mlp``: InternVL ``mlp1`` / transformers ``InternVLMultiModalProjector``; g x g grid -> ``(g*ratio)**2``
  tokens (32x32 -> 256); ``pool=p`` average-pools the grid p x p first: ``(g*ratio/p)**2`` (p=2: 64), same weights;
  ``downsample_ratio=0.25`` shuffles 4x4 patches into one token (64), wider weights (``load_widened`` starts them from
  a trained ratio-0.5 projector).
- ``ldp``: MobileVLM v1 ``LDPNetProjector`` (``mm_projector_type="ldpnet"``); ``ceil(g/2)**2`` (24x24 -> 144).
- ``ldpv2``: MobileVLM V2 ``LDPNetV2Projector`` (``"ldpnetv2"``); ``pooled_grid**2``, default ``(g//2)**2`` (24 -> 144).
- ``mlp2x_gelu`` (any ``mlp{N}x_gelu`` name is accepted): LLaVA MLP; ``g_h*g_w`` tokens.
- ``linear``: a plain ``nn.Linear``; ``g_h*g_w`` tokens.
- ``qformer``: BLIP-2 Q-Former (query branch); ``num_queries`` tokens (default 32) for any grid.
- ``resampler``: Qwen-VL position-aware cross-attention adapter; ``num_queries`` tokens (default 256) for any square
  grid (its keys carry the grid's 2-D positions).

``AdaptedProjector`` (not registered: a projector with a vision adapter in front) is any of them behind an
``nn.Linear`` from a distilled student tower's width to its teacher's (the width the projector was trained on).

Only ``pixel_shuffle_mlp`` with ``ps_version="v2"`` is what transformers' native InternVL computes; ``"v1"`` (the
original ``InternVLChatConfig`` default, used by some 1.5-era checkpoints) emits the same tokens on a transposed grid.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ModelConfigError

__all__ = [
    "PROJECTORS",
    "register_projector",
    "build_projector",
    "projector_tokens",
    "projector_from_mobilevlm_type",
    "pixel_shuffle",
    "make_divisible",
    "PixelShuffleMLPProjector",
    "AdaptedProjector",
    "first_linear",
    "LDPProjector",
    "LDPv2Projector",
    "MLPGeluProjector",
    "LinearProjector",
    "QFormerProjector",
    "ResamplerProjector",
    "sincos_2d",
    "grid_positions",
]

PROJECTORS: dict[str, type[nn.Module]] = {}

_MLP_GELU_RE = re.compile(r"^mlp(\d+)x_gelu$")
# Constructor arguments that build_projector supplies itself; never user options.
_POSITIONAL = ("vision_hidden", "text_hidden")


# --------------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------------


def register_projector(name: str, *, overwrite: bool = False) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a projector to :data:`PROJECTORS` under ``name``.

    The class must be an ``nn.Module`` built as ``cls(vision_hidden, text_hidden, **options)`` and must define
    ``num_tokens(self, grid_h, grid_w) -> int``.  Define a classmethod ``count_tokens(grid_h, grid_w, **options)``
    too if :func:`projector_tokens` should work without building weights.  Registering a different class under a
    taken name raises ``ValueError`` unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelConfigError(f"projector name must be a non-empty string, got {name!r}")

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_projector({name!r}) expects an nn.Module subclass, got {cls!r}")
        if not callable(getattr(cls, "num_tokens", None)):
            raise TypeError(f"projector class {cls.__name__} must define num_tokens(self, grid_h, grid_w) -> int")
        existing = PROJECTORS.get(name)
        if existing is not None and existing is not cls and not overwrite:
            raise ModelConfigError(
                f"projector name {name!r} is already registered to {existing.__module__}.{existing.__qualname__}; "
                "pass overwrite=True to replace it"
            )
        PROJECTORS[name] = cls
        return cls

    return decorator


def _known_names() -> str:
    return ", ".join(sorted(PROJECTORS)) + ", mlp<N>x_gelu"


def _resolve(name: str) -> tuple[type[nn.Module], dict[str, Any]]:
    """Registry class for ``name`` plus the options the name itself implies (the depth of ``mlp3x_gelu``)."""
    if not isinstance(name, str):
        raise ModelConfigError(f"projector name must be a string, got {name!r}; known projectors: {_known_names()}")
    match = _MLP_GELU_RE.match(name)
    if name in PROJECTORS:
        cls = PROJECTORS[name]
        implied = {"depth": int(match.group(1))} if match and issubclass(cls, MLPGeluProjector) else {}
        return cls, implied
    if match:
        return MLPGeluProjector, {"depth": int(match.group(1))}
    raise ModelConfigError(f"unknown projector {name!r}; known projectors: {_known_names()}")


def _accepted_options(cls: type[nn.Module]) -> tuple[list[str], bool]:
    """Keyword options ``cls.__init__`` accepts besides the two widths, and whether it takes ``**kwargs``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    names, var_kw = [], False
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind is not inspect.Parameter.VAR_POSITIONAL and p.name not in _POSITIONAL:
            names.append(p.name)
    return names, var_kw


def _merge_options(name: str, cls: type[nn.Module], implied: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    accepted, var_kw = _accepted_options(cls)
    unknown = sorted(k for k in options if k not in accepted)
    if unknown and not var_kw:
        raise TypeError(
            f"projector {name!r} got unknown option(s) {unknown}; accepted options: {sorted(accepted) or 'none'}"
        )
    for key, value in implied.items():
        if key in options and options[key] != value:
            raise ModelConfigError(f"projector {name!r} implies {key}={value!r}, but {key}={options[key]!r} was passed")
    return {**options, **implied}


def build_projector(name: str, vision_hidden: int, text_hidden: int, **options: Any) -> nn.Module:
    """Build the projector registered as ``name`` mapping width ``vision_hidden`` to ``text_hidden``.

    Unknown names raise ``ValueError`` listing the known ones; unknown options raise ``TypeError``; bad option
    values raise ``ValueError``.  ``mlp{N}x_gelu`` names are accepted for any N >= 1.
    """
    cls, implied = _resolve(name)
    for label, width in (("vision_hidden", vision_hidden), ("text_hidden", text_hidden)):
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise ModelConfigError(f"{label} must be a positive int, got {width!r}")
    return cls(vision_hidden, text_hidden, **_merge_options(name, cls, implied, options))


def projector_tokens(name: str, grid_h: int, grid_w: int, **options: Any) -> int:
    """Tokens the projector ``name`` emits for a ``grid_h x grid_w`` feature grid, without building weights.

    Options are those of :func:`build_projector`; the built-in projectors check even those that do not change the
    count (``hidden_act``, ``layer_norm_eps``) as building does, so a recipe fails validation, not loading.
    """
    cls, implied = _resolve(name)
    merged = _merge_options(name, cls, implied, options)
    count = getattr(cls, "count_tokens", None)
    if count is None:
        raise TypeError(
            f"projector {name!r} ({cls.__name__}) has no count_tokens classmethod; build it and call num_tokens()"
        )
    return int(count(grid_h, grid_w, **merged))


def projector_from_mobilevlm_type(mm_projector_type: str) -> str:
    """Registry name for a MobileVLM ``mm_projector_type`` string (same precedence as MobileVLM's builder)."""
    t = mm_projector_type
    if not isinstance(t, str):
        raise ModelConfigError(f"mm_projector_type must be a string, got {t!r}")
    if t == "linear":
        return "linear"
    if _MLP_GELU_RE.match(t):
        return t
    if t.startswith("ldpnetv2"):  # checked before the v1 prefix, which it also matches
        return "ldpv2"
    if t.startswith("ldpnet"):
        return "ldp"
    raise ModelConfigError(
        f"unknown MobileVLM mm_projector_type {t!r}; expected 'linear', 'mlp<N>x_gelu', 'ldpnetv2*' or 'ldpnet*'"
    )


# --------------------------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------------------------


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` the way MobileNet does (never down by more than 10%)."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _check_grid(grid_h: int, grid_w: int, who: str) -> None:
    for label, v in (("grid_h", grid_h), ("grid_w", grid_w)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{who}: {label} must be a positive int, got {v!r}")


def _square_grid(grid_h: int, grid_w: int, who: str) -> int:
    _check_grid(grid_h, grid_w, who)
    if grid_h != grid_w:
        raise ValueError(f"{who} needs a square feature grid, got {grid_h}x{grid_w}")
    return grid_h


def _check_features(x: Tensor, width: int, who: str) -> None:
    """(N, L, width) patch features, else one line naming both widths (not a matmul's shape error)."""
    if x.dim() != 3:
        raise ValueError(f"{who} expects patch features of shape (N, L, C), got {tuple(x.shape)}")
    if x.shape[-1] != width:
        raise ValueError(
            f"{who} was built for features of width {width}, got {x.shape[-1]} (shape {tuple(x.shape)}): "
            "the vision tower's hidden size must be the projector's vision_hidden"
        )


def _side_from_tokens(x: Tensor, who: str, width: int | None = None) -> int:
    if width is not None:
        _check_features(x, width, who)
    if x.dim() != 3:
        raise ValueError(f"{who} expects patch features of shape (N, L, C), got {tuple(x.shape)}")
    n_tokens = x.shape[1]
    side = math.isqrt(n_tokens)
    if side * side != n_tokens or side == 0:
        raise ValueError(
            f"{who} needs a square grid of patch tokens (CLS dropped), but L={n_tokens} is not a perfect square"
        )
    return side


def _shuffle_factor(ratio: float) -> int:
    """The integer k with ratio == 1/k (0.5 -> 2); ValueError otherwise."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 < ratio <= 1):
        raise ModelConfigError(f"downsample ratio must be in (0, 1] and equal to 1/k for an integer k, got {ratio!r}")
    k = round(1 / ratio)
    if abs(k * ratio - 1) > 1e-6:
        raise ModelConfigError(f"downsample ratio must be 1/k for an integer k (0.5, 0.25, ...), got {ratio!r}")
    return k


def _tokens_to_map(x: Tensor, side: int) -> Tensor:
    """(N, side*side, C) row-major tokens -> (N, C, side, side)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def _map_to_tokens(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H*W, C), row-major."""
    return x.flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------------------------------------------------
# pixel shuffle (InternVL)
# --------------------------------------------------------------------------------------------------------------------


def pixel_shuffle(x: Tensor, ratio: float = 0.5, version: str = "v2") -> Tensor:
    """InternVL's pixel shuffle (a space-to-depth "unshuffle"): ``(N, rows, cols, C) -> (N, rows*r, cols*r, C/r^2)``.

    With ``k = 1/ratio``, output cell (i, j) of ``"v2"`` concatenates the k x k input block in row-major order;
    for k=2 that is ``[x(2i,2j), x(2i,2j+1), x(2i+1,2j), x(2i+1,2j+1)]``.  ``"v1"`` holds the same blocks on a
    transposed grid -- ``v1[:, i, j] == v2[:, j, i]``, shape ``(N, cols*r, rows*r, C/r^2)`` -- which is what
    InternVL's ``ps_version='v1'`` (and its flattened, column-major token order) computes.
    """
    if version not in ("v1", "v2"):
        raise ModelConfigError(f"pixel_shuffle version must be 'v1' or 'v2', got {version!r}")
    if x.dim() != 4:
        raise ValueError(f"pixel_shuffle expects (N, rows, cols, C), got shape {tuple(x.shape)}")
    k = _shuffle_factor(ratio)
    n, rows, cols, c = x.shape
    if rows % k or cols % k:
        raise ValueError(f"pixel_shuffle with ratio {ratio} needs rows and cols divisible by {k}, got {rows}x{cols}")
    out = x.reshape(n, rows // k, k, cols // k, k, c).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(n, rows // k, cols // k, k * k * c)
    if version == "v1":
        out = out.transpose(1, 2)
    return out.contiguous()


def _check_act(hidden_act: Any) -> None:
    from transformers.activations import ACT2FN

    if not isinstance(hidden_act, str) or hidden_act not in ACT2FN:  # a YAML list is unhashable: no bare TypeError
        raise ModelConfigError(f"pixel_shuffle_mlp: unknown hidden_act {hidden_act!r}; known: {sorted(ACT2FN)}")


@register_projector("pixel_shuffle_mlp")
class PixelShuffleMLPProjector(nn.Module):
    """InternVL ``mlp1``: pixel shuffle, then LayerNorm(C*k^2) -> Linear -> act -> Linear.

    Submodule names equal transformers' ``InternVLMultiModalProjector`` (``layer_norm``, ``linear_1``, ``act``,
    ``linear_2``), so its state dict loads strictly.  The original InternVL ``mlp1.{0,1,3}`` keys map to
    ``layer_norm``, ``linear_1``, ``linear_2``.  32x32 grid -> 256 tokens at ratio 0.5.

    ``pool=p`` (not InternVL's; for token budgets) average-pools the patch grid p x p before the shuffle: 32x32 ->
    16x16 -> 64 tokens at p=2.  The weights keep their shapes, so a trained ``mlp1`` loads and runs pooled.
    """

    def __init__(
        self,
        vision_hidden: int,
        text_hidden: int,
        downsample_ratio: float = 0.5,
        ps_version: str = "v2",
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-5,
        pool: int = 1,
    ) -> None:
        super().__init__()
        if ps_version not in ("v1", "v2"):
            raise ModelConfigError(f"ps_version must be 'v1' or 'v2', got {ps_version!r}")
        factor = _shuffle_factor(downsample_ratio)
        self.pool = _positive_int(pool, "pool", "pixel_shuffle_mlp")
        _layer_norm_eps(layer_norm_eps, "pixel_shuffle_mlp")
        from transformers.activations import ACT2FN

        _check_act(hidden_act)
        self.vision_hidden, self.text_hidden = vision_hidden, text_hidden
        self.downsample_ratio, self.ps_version, self.factor = downsample_ratio, ps_version, factor
        in_width = vision_hidden * factor * factor
        self.layer_norm = nn.LayerNorm(in_width, eps=layer_norm_eps)
        self.linear_1 = nn.Linear(in_width, text_hidden)
        self.act = ACT2FN[hidden_act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden)

    @classmethod
    def count_tokens(
        cls, grid_h: int, grid_w: int, downsample_ratio: float = 0.5, ps_version: str = "v2", pool: int = 1,
        layer_norm_eps: float = 1e-5, hidden_act: str = "gelu", **_: Any
    ) -> int:
        if ps_version not in ("v1", "v2"):
            raise ModelConfigError(f"ps_version must be 'v1' or 'v2', got {ps_version!r}")
        _layer_norm_eps(layer_norm_eps, "pixel_shuffle_mlp")
        _check_act(hidden_act)  # what building checks, so a recipe naming an unknown one fails validation
        side = _square_grid(grid_h, grid_w, "pixel_shuffle_mlp")
        k = _shuffle_factor(downsample_ratio)
        pool = _positive_int(pool, "pool", "pixel_shuffle_mlp")
        if side % (k * pool):
            raise ModelConfigError(
                f"pixel_shuffle_mlp: grid {side}x{side} is not divisible by {k * pool} (ratio {downsample_ratio}"
                + (f", pool {pool})" if pool > 1 else ")")
            )
        return (side // (k * pool)) ** 2

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.count_tokens(grid_h, grid_w, downsample_ratio=self.downsample_ratio, pool=self.pool)

    @torch.no_grad()
    def load_widened(self, trained: PixelShuffleMLPProjector) -> None:
        """Start from `trained`, whose shuffle factor k divides this one's K = k*m: each of its LayerNorm / linear_1
        input columns is spread over the m x m patches it would have seen pooled (weight / m^2, norm weight and bias
        copied), linear_2 copied.  The projector then computes ``trained`` on m x m-averaged patches (what ``pool=m``
        does) except that the LayerNorm's scale comes from all K x K patches rather than the averaged ones; unlike
        pooling, no patch is averaged away, so training can use the detail."""
        k, big = trained.factor, self.factor
        if big % k or (trained.vision_hidden, trained.text_hidden) != (self.vision_hidden, self.text_hidden) \
                or trained.ps_version != self.ps_version or trained.pool != self.pool:
            raise ModelConfigError(
                f"pixel_shuffle_mlp: cannot widen a factor-{k} projector ({trained.vision_hidden} -> "
                f"{trained.text_hidden}) to factor {big} ({self.vision_hidden} -> {self.text_hidden}): the factor must "
                "be a multiple, the widths, ps_version and pool the same")
        m, c = big // k, self.vision_hidden
        # new input column (row Kr, col Kc of the K x K block, channel ch) <- old column (Kr // m, Kc // m, ch)
        block = torch.arange(big)
        source = ((block[:, None] // m) * k + block[None, :] // m).reshape(-1)  # (K*K,) old sub-position
        columns = (source[:, None] * c + torch.arange(c)[None, :]).reshape(-1)  # (K*K*C,) old column
        self.layer_norm.weight.copy_(trained.layer_norm.weight[columns])
        self.layer_norm.bias.copy_(trained.layer_norm.bias[columns])
        self.layer_norm.eps = trained.layer_norm.eps
        self.linear_1.weight.copy_(trained.linear_1.weight[:, columns] / (m * m))
        self.linear_1.bias.copy_(trained.linear_1.bias)
        self.linear_2.load_state_dict(trained.linear_2.state_dict())

    def project(self, shuffled: Tensor) -> Tensor:
        """The MLP alone, on already pixel-shuffled tokens ``(N, L', C*k^2)``."""
        return self.linear_2(self.act(self.linear_1(self.layer_norm(shuffled))))

    def forward(self, x: Tensor) -> Tensor:
        side = _side_from_tokens(x, "pixel_shuffle_mlp", self.vision_hidden)
        self.num_tokens(side, side)  # divisibility check
        n, _, c = x.shape
        if self.pool > 1:  # average p x p neighbouring patches: the MLP sees the same widths, 1/p^2 of the tokens
            x = _map_to_tokens(F.avg_pool2d(_tokens_to_map(x, side), self.pool))
            side //= self.pool
        grid = pixel_shuffle(x.reshape(n, side, side, c), self.downsample_ratio, self.ps_version)
        return self.project(grid.reshape(n, -1, grid.shape[-1]))


# --------------------------------------------------------------------------------------------------------------------
# MobileVLM LDP (v1)
# --------------------------------------------------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW map (timm ``LayerNormAct2d`` with no activation; eps 1e-5)."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class _SqueezeExcite(nn.Module):
    """Channel gate: global avg pool -> fc1 (1x1 conv) -> ReLU -> fc2 (1x1 conv) -> Hardsigmoid -> scale."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = self.scale_activation(self.fc2(self.activation(self.fc1(gate))))
        return x * gate


class _InvertedResidual(nn.Module):
    """MobileNetV3 inverted residual with expanded == in == out width (so no expansion conv).

    ``block`` = [depthwise 3x3 (no bias) + LayerNorm2d + Hardswish, SE, pointwise 1x1 (no bias) + LayerNorm2d];
    residual only when ``stride == 1``.
    """

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.use_res_connect = stride == 1
        self.block = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
                LayerNorm2d(channels, eps=1e-5),
                nn.Hardswish(),
            ),
            _SqueezeExcite(channels, make_divisible(channels // 4, 8)),
            nn.Sequential(
                nn.Conv2d(channels, channels, 1, bias=False),
                LayerNorm2d(channels, eps=1e-5),
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class _LDPBlock(nn.Module):
    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__()
        # The leading Identity layers keep MobileVLM's parameter indices (mlp.1 / mlp.3, mb_block.1 / mb_block.2).
        self.mlp = nn.Sequential(
            nn.Identity(), nn.Linear(vision_hidden, text_hidden), nn.GELU(), nn.Linear(text_hidden, text_hidden)
        )
        self.mb_block = nn.Sequential(
            nn.Identity(), _InvertedResidual(text_hidden, stride=1), _InvertedResidual(text_hidden, stride=2)
        )

    def forward(self, x: Tensor) -> Tensor:
        side = _side_from_tokens(x, "ldp", self.mlp[1].in_features)
        y = _tokens_to_map(self.mlp(x), side)
        return _map_to_tokens(self.mb_block(y))


@register_projector("ldp")
class LDPProjector(nn.Module):
    """MobileVLM v1 ``LDPNetProjector``: token MLP, then a stride-1 and a stride-2 MobileNetV3 block.

    Keys: ``model.mlp.{1,3}.*``, ``model.mb_block.{1,2}.block.{0.0,0.1,1.fc1,1.fc2,2.0,2.1}.*``.
    24x24 -> 12x12 = 144 tokens; in general a side g becomes ``ceil(g / 2)``.
    """

    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__()
        self.vision_hidden, self.text_hidden = vision_hidden, text_hidden
        self.model = _LDPBlock(vision_hidden, text_hidden)

    @classmethod
    def count_tokens(cls, grid_h: int, grid_w: int, **_: Any) -> int:
        side = _square_grid(grid_h, grid_w, "ldp")
        out = (side + 2 * 1 - 3) // 2 + 1  # 3x3 conv, stride 2, padding 1
        return out * out

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.count_tokens(grid_h, grid_w)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


# --------------------------------------------------------------------------------------------------------------------
# MobileVLM V2 LDPv2
# --------------------------------------------------------------------------------------------------------------------


class _TokenMLP(nn.Module):
    """MobileVLM V2 ``FeatureIRLayer``: token-wise Linear -> GELU -> Linear under ``.mlp``."""

    def __init__(self, in_width: int, out_width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class _TokenPool(nn.Module):
    """MobileVLM V2 ``TokenDownLayer`` on an NCHW map: adaptive average pool to ``pooled`` (or half the input)."""

    def __init__(self, pooled: tuple[int, int] | None) -> None:
        super().__init__()
        self.pooled = pooled

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        if self.pooled is not None:
            return self.pooled
        if h < 2 or w < 2:
            raise ModelConfigError(f"ldpv2: cannot halve a {h}x{w} grid; pass pooled_grid")
        return h // 2, w // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size(x.shape[-2], x.shape[-1]))


class _PosInject(nn.Module):
    """MobileVLM V2 ``PosInjectLayer`` (Twins PEG): depthwise 3x3 conv with bias, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.peg = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=1, padding=1, groups=channels, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.peg(x) + x


def _pooled_pair(pooled_grid: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if pooled_grid is None:
        return None
    # a YAML float (12.0) or mapping would otherwise end in tuple()'s TypeError, which names no option
    pair = (pooled_grid, pooled_grid) if isinstance(pooled_grid, int) else (
        tuple(pooled_grid) if isinstance(pooled_grid, (list, tuple)) else ())
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in pair):
        raise ModelConfigError(f"ldpv2: pooled_grid must be a positive int or a pair of them, got {pooled_grid!r}")
    return pair  # type: ignore[return-value]


@register_projector("ldpv2")
class LDPv2Projector(nn.Module):
    """MobileVLM V2 ``LDPNetV2Projector``: token MLP -> adaptive avg pool -> PEG (depthwise conv + residual).

    Keys: ``mlp.mlp.{0,2}.*``, ``peg.peg.0.{weight,bias}`` (``dwn`` has no parameters).  MobileVLM pools to a fixed
    12x12; here ``pooled_grid=None`` (default) pools to half the input grid (floor), the same 12x12 for the 24x24
    CLIP-L/336 grid.  Both are adaptive average pools: on an even grid to half its side that is exactly a 2x2,
    stride-2 average pool (llama.cpp's), but on an odd grid (25 -> 12) some windows span 3 cells, and a
    ``pooled_grid`` larger than the grid repeats cells, as ``AdaptiveAvgPool2d`` does in MobileVLM.  Pass
    ``pooled_grid=12`` for MobileVLM's fixed-output behaviour at other resolutions.
    """

    def __init__(
        self, vision_hidden: int, text_hidden: int, pooled_grid: int | tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.vision_hidden, self.text_hidden = vision_hidden, text_hidden
        self.pooled_grid = _pooled_pair(pooled_grid)
        self.mlp = _TokenMLP(vision_hidden, text_hidden)
        self.dwn = _TokenPool(self.pooled_grid)
        self.peg = _PosInject(text_hidden)

    @classmethod
    def count_tokens(
        cls, grid_h: int, grid_w: int, pooled_grid: int | tuple[int, int] | None = None, **_: Any
    ) -> int:
        side = _square_grid(grid_h, grid_w, "ldpv2")
        ph, pw = _TokenPool(_pooled_pair(pooled_grid)).output_size(side, side)
        return ph * pw

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.count_tokens(grid_h, grid_w, pooled_grid=self.pooled_grid)

    def forward(self, x: Tensor) -> Tensor:
        side = _side_from_tokens(x, "ldpv2", self.vision_hidden)
        y = _tokens_to_map(self.mlp(x), side)
        return _map_to_tokens(self.peg(self.dwn(y)))


# --------------------------------------------------------------------------------------------------------------------
# token-preserving projectors (LLaVA)
# --------------------------------------------------------------------------------------------------------------------


def _same_tokens(grid_h: int, grid_w: int, who: str) -> int:
    _check_grid(grid_h, grid_w, who)
    return grid_h * grid_w


def _mlp_depth(depth: Any) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ModelConfigError(f"mlp_gelu depth must be an int >= 1, got {depth!r}")
    return depth


@register_projector("mlp2x_gelu")
class MLPGeluProjector(nn.Sequential):
    """LLaVA ``mlp{depth}x_gelu``: Linear, then (GELU, Linear) x (depth-1); keys ``0.*``, ``2.*``, ...

    Registered as ``mlp2x_gelu``; :func:`build_projector` accepts any ``mlp{N}x_gelu`` name and sets ``depth=N``.
    """

    def __init__(self, vision_hidden: int, text_hidden: int, depth: int = 2) -> None:
        _mlp_depth(depth)
        layers: list[nn.Module] = [nn.Linear(vision_hidden, text_hidden)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(text_hidden, text_hidden)]
        super().__init__(*layers)
        self.vision_hidden, self.text_hidden, self.depth = vision_hidden, text_hidden, depth

    @classmethod
    def count_tokens(cls, grid_h: int, grid_w: int, depth: int = 2, **_: Any) -> int:
        _mlp_depth(depth)
        return _same_tokens(grid_h, grid_w, "mlp_gelu")

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.count_tokens(grid_h, grid_w)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.vision_hidden, f"mlp{self.depth}x_gelu")
        return super().forward(x)


@register_projector("linear")
class LinearProjector(nn.Linear):
    """A plain ``nn.Linear(vision_hidden, text_hidden)`` (keys ``weight``, ``bias``)."""

    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__(vision_hidden, text_hidden)
        self.vision_hidden, self.text_hidden = vision_hidden, text_hidden

    @classmethod
    def count_tokens(cls, grid_h: int, grid_w: int, **_: Any) -> int:
        return _same_tokens(grid_h, grid_w, "linear")

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.count_tokens(grid_h, grid_w)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.vision_hidden, "linear")
        return super().forward(x)


# --------------------------------------------------------------------------------------------------------------------
# query-based connectors: a fixed number of output tokens whatever the grid (BLIP-2 Q-Former, Qwen-VL resampler)
# --------------------------------------------------------------------------------------------------------------------


def _positive_int(value: Any, label: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelConfigError(f"{who}: {label} must be a positive int, got {value!r}")
    return value


def _layer_norm_eps(value: Any, who: str) -> float:
    # a YAML "1e-5" is a string (YAML 1.1 floats need a dot): LayerNorm would keep it and fail at the first forward
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ModelConfigError(f"{who}: layer_norm_eps must be a positive number, got {value!r}")
    return float(value)


def _check_heads(width: int, heads: int, who: str, label: str = "hidden width") -> None:
    _positive_int(heads, "num_heads", who)
    if width % heads:
        raise ModelConfigError(f"{who}: {label} {width} is not divisible by num_heads={heads}")


def _query_tokens(grid_h: int, grid_w: int, num_queries: int, who: str) -> int:
    _check_grid(grid_h, grid_w, who)
    return _positive_int(num_queries, "num_queries", who)


def _qformer_options(
    width: int | None, num_queries: Any, num_layers: Any, num_heads: Any, intermediate_size: Any,
    cross_attention_freq: Any, dropout: Any,
) -> None:
    """The Q-Former's option checks; `width` None (the vision width, before a model exists) skips the head split."""
    who = "qformer"
    if width is not None:
        _positive_int(width, "hidden_size", who)
    _positive_int(num_queries, "num_queries", who)
    _positive_int(num_layers, "num_layers", who)
    _positive_int(cross_attention_freq, "cross_attention_freq", who)
    if width is None:
        _positive_int(num_heads, "num_heads", who)
    else:
        _check_heads(width, num_heads, who)
    if intermediate_size is not None:
        _positive_int(intermediate_size, "intermediate_size", who)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ModelConfigError(f"{who}: dropout must be in [0, 1), got {dropout!r}")


class _QFormerLayer(nn.Module):
    """One BERT-style (post-LayerNorm) Q-Former layer on the queries: self-attention, optional cross-attention to
    the vision features (keys/values projected from the vision width inside the attention, as BLIP-2's
    ``crossattention`` does), feed-forward; each sub-block is ``LayerNorm(x + sublayer(x))``."""

    def __init__(
        self, width: int, vision_hidden: int, heads: int, ffn: int, cross: bool, eps: float, dropout: float
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attn = (
            nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True, kdim=vision_hidden, vdim=vision_hidden)
            if cross
            else None
        )
        self.cross_norm = nn.LayerNorm(width, eps=eps) if cross else None
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.GELU(), nn.Linear(ffn, width), nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: Tensor, vision: Tensor) -> Tensor:
        q = self.self_norm(q + self.dropout(self.self_attn(q, q, q, need_weights=False)[0]))
        if self.cross_attn is not None:
            q = self.cross_norm(q + self.dropout(self.cross_attn(q, vision, vision, need_weights=False)[0]))
        return self.ffn_norm(q + self.ffn(q))


@register_projector("qformer")
class QFormerProjector(nn.Module):
    """BLIP-2 Q-Former (query branch only): ``num_queries`` learnable queries -> LayerNorm -> ``num_layers``
    post-LN layers (self-attention over the queries, cross-attention to the patch features every
    ``cross_attention_freq``-th layer starting with the first, feed-forward) -> ``Linear(hidden_size, text_hidden)``.

    Always ``num_queries`` tokens, whatever the grid (any number of patch tokens is accepted).  BLIP-2's sizes are
    ``hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, cross_attention_freq=2``; the defaults
    here are small (``hidden_size`` = the vision width, 2 layers, cross-attention in each).  There is no text branch
    (word embeddings, text feed-forwards): BLIP-2 uses it only for its stage-1 losses, not to feed the LLM.
    """

    def __init__(
        self,
        vision_hidden: int,
        text_hidden: int,
        num_queries: int = 32,
        hidden_size: int | None = None,
        num_layers: int = 2,
        num_heads: int = 8,
        intermediate_size: int | None = None,
        cross_attention_freq: int = 1,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        width = vision_hidden if hidden_size is None else hidden_size
        _qformer_options(width, num_queries, num_layers, num_heads, intermediate_size, cross_attention_freq, dropout)
        _layer_norm_eps(layer_norm_eps, "qformer")
        ffn = 4 * width if intermediate_size is None else intermediate_size
        self.vision_hidden, self.text_hidden, self.num_queries, self.hidden_size = (
            vision_hidden, text_hidden, num_queries, width
        )
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, width) * 0.02)
        self.query_norm = nn.LayerNorm(width, eps=layer_norm_eps)
        self.query_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            _QFormerLayer(width, vision_hidden, num_heads, ffn, i % cross_attention_freq == 0, layer_norm_eps, dropout)
            for i in range(num_layers)
        )
        self.language_projection = nn.Linear(width, text_hidden)

    @classmethod
    def count_tokens(
        cls,
        grid_h: int,
        grid_w: int,
        num_queries: int = 32,
        hidden_size: int | None = None,
        num_layers: int = 2,
        num_heads: int = 8,
        intermediate_size: int | None = None,
        cross_attention_freq: int = 1,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.0,
        **_: Any,
    ) -> int:
        # what building checks (but the width, unknown without the model), so a recipe fails validation, not training
        _qformer_options(hidden_size, num_queries, num_layers, num_heads, intermediate_size, cross_attention_freq,
                         dropout)
        _layer_norm_eps(layer_norm_eps, "qformer")
        return _query_tokens(grid_h, grid_w, num_queries, "qformer")

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.count_tokens(grid_h, grid_w, num_queries=self.num_queries)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.vision_hidden, "qformer")
        q = self.query_dropout(self.query_norm(self.query_tokens.expand(x.shape[0], -1, -1)))
        for layer in self.layers:
            q = layer(q, x)
        return self.language_projection(q)


def sincos_2d(width: int, rows: Tensor, cols: Tensor, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings ``(len(rows), width)`` for positions ``(rows[i], cols[i])``.

    The first half of the channels encodes the column, the second half the row (MAE's layout); each half is
    ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = temperature ** (-k / (width / 4))``.  Positions may be fractional.
    """
    if width % 4:
        raise ModelConfigError(f"2-D sin-cos positions need a width divisible by 4, got {width}")
    quarter = width // 4
    freqs = temperature ** (-torch.arange(quarter, dtype=torch.float64, device=rows.device) / quarter)

    def one_axis(pos: Tensor) -> Tensor:
        angles = pos.to(torch.float64)[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1).float()


def grid_positions(side: int, query_side: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """Row and column coordinates of a ``side x side`` grid (row-major) on the scale of a ``query_side`` grid.

    Cell centres are aligned (``(i + 0.5) * query_side / side - 0.5``), so a key and a query covering the same part of
    the image get the same position; for ``side == query_side`` they are the integers ``0 .. side-1``.
    """
    coord = (torch.arange(side, dtype=torch.float64, device=device) + 0.5) * (query_side / side) - 0.5
    rows, cols = torch.meshgrid(coord, coord, indexing="ij")
    return rows.flatten(), cols.flatten()


def _query_side(num_queries: Any) -> int:
    """Side of the resampler's square query grid."""
    _positive_int(num_queries, "num_queries", "resampler")
    side = math.isqrt(num_queries)
    if side * side != num_queries:
        raise ModelConfigError(f"resampler: num_queries must be a perfect square (a query grid), got {num_queries}")
    return side


@register_projector("resampler")
class ResamplerProjector(nn.Module):
    """Qwen-VL's position-aware adapter: ``num_queries`` learnable queries, one cross-attention layer at the LLM
    width, then ``LayerNorm`` and a bias-free ``Linear`` (Qwen-VL's ``attn_pool``, ``ln_post``, ``proj``).

    ``kv_proj`` (bias-free) maps the patch features to the LLM width, then ``ln_kv``; the queries go through
    ``ln_q``.  Keys (not values) get 2-D sin-cos positions of the input's own square grid, queries those of their
    ``sqrt(num_queries)`` grid, both on the query grid's scale (:func:`grid_positions`) -- Qwen-VL bicubically resizes
    its query table instead; the two agree at the query grid's size.  Always ``num_queries`` tokens (a perfect
    square, 256 in Qwen-VL); ``num_heads`` defaults to ``text_hidden // 128`` (32 at width 4096), at least 1.
    """

    def __init__(
        self,
        vision_hidden: int,
        text_hidden: int,
        num_queries: int = 256,
        num_heads: int | None = None,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        who = "resampler"
        side = _query_side(num_queries)
        heads = max(1, text_hidden // 128) if num_heads is None else num_heads
        _check_heads(text_hidden, heads, who, "text_hidden")
        _layer_norm_eps(layer_norm_eps, who)
        if text_hidden % 4:
            raise ModelConfigError(f"{who}: 2-D sin-cos positions need text_hidden divisible by 4, got {text_hidden}")
        self.vision_hidden, self.text_hidden, self.num_queries, self.query_side = (
            vision_hidden, text_hidden, num_queries, side
        )
        self.query = nn.Parameter(torch.randn(num_queries, text_hidden) * 0.02)
        self.kv_proj = nn.Linear(vision_hidden, text_hidden, bias=False) if vision_hidden != text_hidden else nn.Identity()
        self.ln_q = nn.LayerNorm(text_hidden, eps=layer_norm_eps)
        self.ln_kv = nn.LayerNorm(text_hidden, eps=layer_norm_eps)
        self.attn = nn.MultiheadAttention(text_hidden, heads, batch_first=True)
        self.ln_post = nn.LayerNorm(text_hidden, eps=layer_norm_eps)
        self.proj = nn.Linear(text_hidden, text_hidden, bias=False)

    @classmethod
    def count_tokens(
        cls, grid_h: int, grid_w: int, num_queries: int = 256, num_heads: int | None = None,
        layer_norm_eps: float = 1e-6, **_: Any
    ) -> int:
        _square_grid(grid_h, grid_w, "resampler")
        _query_side(num_queries)  # what building checks, so a recipe naming a non-square count fails validation
        if num_heads is not None:  # its split of text_hidden is checked once the model (the width) is known
            _positive_int(num_heads, "num_heads", "resampler")
        _layer_norm_eps(layer_norm_eps, "resampler")
        return _query_tokens(grid_h, grid_w, num_queries, "resampler")

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.count_tokens(grid_h, grid_w, num_queries=self.num_queries)

    def positions(self, side: int, device: Any = None) -> Tensor:
        """Sin-cos positions ``(side*side, text_hidden)`` of a ``side x side`` grid on the query grid's scale."""
        return sincos_2d(self.text_hidden, *grid_positions(side, self.query_side, device))

    def forward(self, x: Tensor) -> Tensor:
        side = _side_from_tokens(x, "resampler", self.vision_hidden)
        kv = self.ln_kv(self.kv_proj(x))
        key_pos = self.positions(side, x.device).to(kv.dtype)
        q = self.ln_q(self.query) + self.positions(self.query_side, x.device).to(kv.dtype)
        q = q.unsqueeze(0).expand(x.shape[0], -1, -1)
        out = self.attn(q, kv + key_pos, kv, need_weights=False)[0]
        return self.proj(self.ln_post(out))


# --------------------------------------------------------------------------------------------------------------------
# a projector behind a vision adapter (a distilled student's projection into its teacher's feature space)
# --------------------------------------------------------------------------------------------------------------------


class AdaptedProjector(nn.Module):
    """``projector(adapter(x))``: student features -> ``adapter`` (``nn.Linear``, student width -> teacher width) ->
    teacher-space features -> the VLM's own trained ``projector``. Keys ``adapter.*`` and ``projector.*``."""

    def __init__(self, adapter: nn.Linear, projector: nn.Module) -> None:
        super().__init__()
        self.adapter, self.projector = adapter, projector

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.adapter(x))

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        return self.projector.num_tokens(grid_h, grid_w)


def first_linear(projector: nn.Module) -> nn.Linear | None:
    """The projector's first op where it is an ``nn.Linear`` on each token (``linear``, ``mlp{N}x_gelu``, ``ldp``,
    ``ldpv2``), which a Linear in front of it folds into exactly; None for the others (``pixel_shuffle_mlp`` starts
    with a pixel shuffle and a LayerNorm, ``qformer`` with attention over the tokens, ``resampler`` with a LayerNorm
    after its ``kv_proj``)."""
    if isinstance(projector, LinearProjector):
        return projector
    if isinstance(projector, MLPGeluProjector):
        return projector[0]
    if isinstance(projector, LDPProjector):
        return projector.model.mlp[1]  # mlp[0] is an Identity kept for MobileVLM's key indices
    if isinstance(projector, LDPv2Projector):
        return projector.mlp.mlp[0]
    return None
