"""ExecuTorch export (`adapt export --format executorch`) and its runtime (`adapt chat|eval --runtime executorch`).

The folder follows ExecuTorch's LLaVA example (one `.pte`, one method per part) where it fits:

    model.pte                 methods (XNNPACK delegate):
                                vision_encoder   pixel_values (tiles, 3, S, S) -> image features (tiles, tokens, hidden)
                                token_embedding  input_ids (1, seq) -> inputs_embeds (1, seq, hidden)
                                text_decoder     inputs_embeds (1, seq), cache_position (seq) -> logits (1, 1, vocab)
                                                 of the last position; the static KV cache lives in the program
                                                 and is updated in place (ExecuTorch's llama::update_cache and
                                                 llama::custom_sdpa kernels: a runner links its custom_ops)
                              constants: get_max_seq_len, get_max_prefill_len, get_max_tiles, get_vocab_size, ...
    tokenizer.json, ...       the model's tokenizer
    chat_template.json        the training chat template (fields and an equivalent Jinja template)
    preprocessor_config.json  tiling (tile size, min/max tiles, thumbnail, mode, mean/std) and image tokens

Differences from the LLaVA example: preprocessing (InternVL tiling) stays on the host, so `vision_encoder` takes
normalised tiles, not a raw image; the decoder is the model's own transformers module with ExecuTorch's KV-cache
attention kernels in place of its attention (`export.KVCacheDecoder`), not ExecuTorch's Llama rewrite.

The ExecuTorch wheel (`executorch`, with `torchao`) is imported only by these modules' functions, so the rest of
pocket-adapt works without it.
"""

from __future__ import annotations

from model.errors import PocketAdaptError, install_hint

PTE = "model.pte"
VISION_METHOD, EMBED_METHOD, DECODER_METHOD = "vision_encoder", "token_embedding", "text_decoder"
TILING_METHOD, TOKENIZER_METHOD = "get_pocket_adapt_tiling", "get_pocket_adapt_tokenizer"
QUANTIZE = ("int8",)


class ExecuTorchError(PocketAdaptError, RuntimeError):
    """An ExecuTorch export cannot be written, or an export folder cannot be run as asked."""


def require_executorch():
    """The `executorch` package, or an `ExecuTorchError` saying how to get it."""
    try:
        import executorch  # noqa: F401
        from executorch.runtime import Runtime  # noqa: F401  (the compiled runtime, the part that can fail to load)
    except ModuleNotFoundError as err:
        name = (err.name or "executorch").split(".")[0]
        raise ExecuTorchError(f"ExecuTorch export and its runtime need the {name} package, which is not installed: "
                              f"{install_hint(name) or install_hint('executorch')}") from err
    except ImportError as err:  # installed, but its compiled runtime does not load (built for another torch)
        raise ExecuTorchError(f"the executorch package does not load ({err}); it is built for one torch, so "
                              f"install the pinned one: {install_hint('executorch')}") from err
    return executorch
