"""The runtimes `adapt chat --runtime` and `adapt eval --runtime` can run an export in, besides PyTorch.

Each runtime runs the folder of one `adapt export` format. Its chat class is opened on an export folder (a context
manager whose ``chat(conversation, images, max_new_tokens=, temperature=, system=, tiling=, cut_repeats=)`` returns
an `Answer`, its ``export.tiling`` the exported tiling), and its eval class stands in for the PyTorch model inside
`adapt.evaluate.predict` (``cls(folder, processor)``, a ``generate`` like `PocketVLM.generate`, ``close()``).
A variant is what `adapt eval` exports per run (a GGUF type, an ONNX precision); ``export_options(variant, name, progress)``
turns it into the export's options. Classes are named as ``module:attribute`` and imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from model.errors import NonFiniteScoresError, PocketAdaptError


class BadLogitsError(NonFiniteScoresError, ValueError):
    """Logits no token can be picked from: NaN, +inf, or every one -inf (an export runtime's numpy logits; PyTorch
    generation raises the parent, `NonFiniteScoresError`)."""


def pick_token(logits, temperature: float, rng) -> int:
    """The next token from last-position `logits` (numpy or torch, 1-D): greedy at a temperature below
    :data:`~model.limits.MIN_TEMPERATURE` (0 included), else sampled from the softmax at that temperature with numpy
    generator `rng`. Logits with a NaN or +inf, or all -inf, raise `BadLogitsError` (argmax would pick a garbage
    token, sampling fail inside numpy)."""
    import numpy as np

    from model.limits import MIN_TEMPERATURE

    z = np.asarray(logits, dtype=np.float64)
    nan, posinf = int(np.isnan(z).sum()), int(np.isposinf(z).sum())
    if nan or posinf or not np.isfinite(z).any():
        what = (", ".join(f"{n} {name}" for n, name in ((nan, "NaN"), (posinf, "+inf")) if n) + f" of {z.size}"
                if nan or posinf else f"all {z.size} are -inf")
        raise BadLogitsError(f"the model produced unusable logits ({what}): a quantised or float16 "
                             "export that overflows gives these; check it against fp32")
    if temperature < MIN_TEMPERATURE:  # dividing by less overflows (1e-310: 'Probabilities contain NaN')
        return int(np.argmax(z))
    z = z / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


class RuntimeChoiceError(PocketAdaptError, ValueError):
    """An unknown runtime or variant."""


@dataclass
class Answer:
    """One answer from an export runtime: text, token ids, the prompt as rendered, whether a repeat was cut,
    timings (ms: image_encode_ms, prompt_ms, decode_ms; counts: prompt_tokens, decode_tokens), and whether the
    model's context ended it (before a stop token or --max-new-tokens)."""

    text: str
    tokens: list[int]
    prompt: str
    repeated: bool
    timings: dict
    context_full: bool = False


@dataclass(frozen=True)
class Runtime:
    name: str
    title: str  # how reports name it ("llama.cpp f16")
    export_format: str
    variants: tuple[str, ...]
    default_variant: str
    chat_class: str
    eval_class: str
    export_options: Callable[[str, str, bool], dict]
    help: str
    context: str = "the model's context"  # what a context_full answer filled, as adapt chat names it

    def load(self, which: str):
        module, attr = (self.chat_class if which == "chat" else self.eval_class).split(":")
        return getattr(importlib.import_module(module), attr)

    def check_variant(self, variant: str) -> str:
        if variant not in self.variants:
            raise RuntimeChoiceError(f"runtime {self.name}: unknown variant {variant!r}; known: {', '.join(self.variants)}")
        return variant


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("llamacpp", "llama.cpp", "gguf", ("f32", "f16", "q8_0", "q4_k_m"), "f16",
                "deploy.llamacpp.runtime:LlamaCppVLM", "deploy.llamacpp.eval:LlamaCppEvalModel",
                lambda variant, name, progress: {"qtype": variant, "name": name, "progress": progress},
                "run a GGUF export folder (adapt export --format gguf) in llama.cpp (python -m deploy.llamacpp builds it)"),
        Runtime("onnx", "ONNX Runtime", "onnx", ("fp32", "int8"), "fp32",
                "deploy.onnx.runtime:OnnxVLM", "deploy.onnx.eval:OnnxEvalModel",
                lambda variant, name, progress: {"quantize": None if variant == "fp32" else variant,
                                                 "progress": progress},
                "run an ONNX export folder (adapt export --format onnx) in onnxruntime"),
        Runtime("executorch", "ExecuTorch", "executorch", ("fp32", "int8"), "fp32",
                "deploy.executorch.runtime:ExecuTorchVLM", "deploy.executorch.eval:ExecuTorchEvalModel",
                lambda variant, name, progress: {"quantize": None if variant == "fp32" else variant,
                                                 "progress": progress},
                "run an ExecuTorch export folder (adapt export --format executorch) in ExecuTorch's runtime",
                "the exported cache (adapt export --max-seq-len)"),
    )
}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise RuntimeChoiceError(f"unknown runtime {name!r}; pytorch or {', '.join(RUNTIMES)}") from None
