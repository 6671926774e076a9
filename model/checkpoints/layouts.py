"""Which layout a checkpoint directory is in, from its `config.json` alone."""

from __future__ import annotations

from pathlib import Path

from .io import CheckpointError, read_json

LAYOUTS = {
    "pocket": "pocket-adapt's own (`model_type: pocket_vlm`)",
    "native": "transformers-native InternVL (`model_type: internvl`)",
    "original": "original OpenGVLab InternVL chat (`model_type: internvl_chat`)",
    "mobilevlm": "MobileVLM / MobileVLM V2 (`model_type: mobilevlm`)",
}


# an `adapt export` folder's telltale files -> (what it is, the --runtime that runs it)
_EXPORT_FILES = (("*.gguf", ("a GGUF (llama.cpp)", "llamacpp")), ("*.onnx", ("an ONNX", "onnx")),
                 ("*.pte", ("an ExecuTorch", "executorch")))


def export_kind(directory: Path) -> tuple[str, str] | None:
    """(what it is, the ``--runtime`` that runs it) of an `adapt export` folder (GGUF, ONNX, ExecuTorch); None for any
    other folder."""
    for pattern, kind in _EXPORT_FILES:
        if directory.is_dir() and next(directory.glob(pattern), None) is not None:
            return kind
    return None


def detect_layout(directory: Path) -> str:
    path = Path(directory) / "config.json"
    if not path.is_file():
        if (Path(directory) / "trainable.safetensors").is_file():
            raise CheckpointError(
                f"{directory}: a training checkpoint (only the weights being trained, to resume from), not a model; "
                "use the run's final/ folder, which `adapt train` writes when it ends (resume an unfinished run "
                "with the same `adapt train` command)")
        export = export_kind(Path(directory))
        if export:
            raise CheckpointError(f"{directory}: {export[0]} export, not a checkpoint; run it with --runtime {export[1]} "
                                  f"(adapt chat), or give the checkpoint it was exported from (adapt eval --runtime "
                                  f"{export[1]} exports a checkpoint itself, then scores that export)")
        raise CheckpointError(f"{directory}: no config.json (not a checkpoint directory)")
    raw = read_json(path)
    model_type = raw.get("model_type")
    if model_type == "pocket_vlm":
        return "pocket"
    if model_type == "internvl":
        return "native"
    if model_type == "internvl_chat" or "llm_config" in raw:
        return "original"
    if model_type == "mobilevlm" or "mm_projector_type" in raw:
        return "mobilevlm"
    if "text_config" not in raw and model_type is not None and "vision" in str(model_type):
        raise CheckpointError(f"{directory}: a vision tower alone (model_type {model_type!r}), not a whole model; "
                              "give it as the tower of a model: model.vision in a recipe, --vision on the command line")
    raise CheckpointError(
        f"{path}: model_type {model_type!r} is not a layout pocket-adapt reads; known layouts: "
        + "; ".join(LAYOUTS.values())
    )
