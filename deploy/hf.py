"""Export a model to checkpoint formats other tools load.

- `hf`: transformers-native InternVL (`AutoModelForImageTextToText.from_pretrained` loads it).
- `internvl`: the original OpenGVLab layout (InternVL's own scripts, with its remote-code files).
- `pocket`: pocket-adapt's own layout (any model, any projector).
"""

from __future__ import annotations

from pathlib import Path

from model import PocketVLM, VLMProcessor, save
from model.checkpoints.native import export_native
from model.checkpoints.original import export_original

FORMATS = {
    "hf": "transformers-native InternVL (InternVLForConditionalGeneration)",
    "internvl": "original OpenGVLab InternVL chat layout",
    "pocket": "pocket-adapt's own layout",
}


def export(vlm: PocketVLM, processor: VLMProcessor, fmt: str, out_dir: str | Path) -> Path:
    if fmt == "hf":
        return export_native(vlm, processor, Path(out_dir))
    if fmt == "internvl":
        return export_original(vlm, processor, Path(out_dir))
    if fmt == "pocket":
        return save(vlm, processor, out_dir)
    raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
