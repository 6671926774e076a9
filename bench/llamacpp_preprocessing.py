"""How llama.cpp's own image preprocessing differs from training's, measured with llama.cpp itself.

    python bench/llamacpp_preprocessing.py [--write]

`adapt chat/eval --runtime llamacpp` cut tiles exactly as training did and hand llama.cpp one encoder input per tile
(tests/test_gguf.py: identical embeddings), so none of this applies to them. It applies to llama.cpp's own front
ends (llama-mtmd-cli, llama-server) given the whole image. For each model family the script counts, over a sweep
of image sizes, how often llama.cpp's tile grid (hence its image token count) differs from InternVL's, and for the
bundled example image compares the embeddings and pocket-tiny's answer both ways. `--write` puts the table into
README.md (section llamacpp_preprocessing). Needs `make llama-cpp`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = [(w, h) for w in (64, 100, 112, 200, 333, 448, 500, 640, 800, 1024, 1600) for h in (64, 90, 112, 240, 448, 480, 600, 900)]


def _internvl_448():
    """A tiny random InternViT with InternVL2's 448 px tiles (32x32 patches, 256 tokens a tile): grid logic only."""
    import torch
    from transformers import Qwen2Config

    import model
    from model.processor import VLMProcessor
    from model.tiling import TilingConfig
    from model.vision import internvit_config
    from model.vlm import PocketVLM, PocketVLMConfig

    _, tiny = model.load("pocket-tiny")
    tok = tiny.tokenizer
    config = PocketVLMConfig(
        vision_config=internvit_config("300m", hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=64),
        text_config=Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id),
        image_token_id=tiny.image_token_id, projector_options={"downsample_ratio": 0.5, "ps_version": "v2"},
        chat_template="pocket-tiny", tiling=TilingConfig(max_tiles=12, thumbnail=True).to_dict(),
    )
    torch.manual_seed(0)
    vlm = PocketVLM(config).eval()
    return vlm, VLMProcessor.from_config(config, tok)


def _ldpv2_336():
    """A tiny random MobileVLM V2 (CLIP 336 px, LDPv2, pad-to-square preprocessing)."""
    import torch
    from transformers import LlamaConfig

    import model
    from model.processor import VLMProcessor
    from model.tiling import CLIP_MEAN, CLIP_STD, TilingConfig
    from model.vision import clip_vit_l14_336_config
    from model.vlm import PocketVLM, PocketVLMConfig

    _, tiny = model.load("pocket-tiny")
    tok = tiny.tokenizer
    config = PocketVLMConfig(
        vision_config=clip_vit_l14_336_config(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=4),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                num_attention_heads=4, num_key_value_heads=4, eos_token_id=tok.eos_token_id),
        image_token_id=tiny.image_token_id, vision_feature_layer=-2, projector_type="ldpv2", chat_template="vicuna_v1",
        image_start_token=None, image_end_token=None,
        tiling=TilingConfig(tile_size=336, mode="pad", max_tiles=1, thumbnail=False, mean=CLIP_MEAN, std=CLIP_STD).to_dict(),
    )
    torch.manual_seed(0)
    vlm = PocketVLM(config).eval()
    return vlm, VLMProcessor.from_config(config, tok)


def _stock(llama, image) -> np.ndarray:
    rgb = llama.scratch / "stock.rgb"
    rgb.write_bytes(image.convert("RGB").tobytes())
    return llama.embed({"rgb": str(rgb), "width": image.width, "height": image.height})


def measure(write: bool) -> str:
    from PIL import Image

    import model
    from deploy.hf import export
    from deploy.llamacpp import PocketLlama, tiles_of
    from deploy.llamacpp.runtime import ExportFolder, LlamaCppVLM
    from model.resources import assets_dir
    from model.tiling import count_tiles

    example = Image.open(assets_dir() / "example.png").convert("RGB")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        families = [("pocket-tiny (112 px, 1-6 tiles + thumbnail)", model.load("pocket-tiny")),
                    ("InternVL2 tiling (448 px, 1-12 tiles + thumbnail)", _internvl_448()),
                    ("MobileVLM V2 (336 px, pad to square)", _ldpv2_336())]
        for k, (label, (vlm, processor)) in enumerate(families):
            folder = export(vlm, processor, "gguf", Path(tmp) / f"m{k}", qtype="f32", name="m")
            files = ExportFolder.open(folder)
            tiling = processor.tiling.for_images(1)
            per_tile = processor.image_seq_length
            with PocketLlama(files.model, files.mmproj, kv_f32=True) as llama:
                differ = 0
                for w, h in SIZES:
                    theirs = _stock(llama, Image.new("RGB", (w, h), (90, 140, 200))).shape[0] // per_tile
                    differ += theirs != count_tiles(w, h, tiling)
                ours = llama.embed(llama.tiles_file(tiles_of(example, tiling)))
                stock = _stock(llama, example)
                square = example.resize((tiling.tile_size, tiling.tile_size))
                same_square = np.array_equal(_stock(llama, square), llama.embed(llama.tiles_file(tiles_of(square, tiling))))
            if ours.shape == stock.shape:
                diff = f"{np.linalg.norm(ours - stock) / np.linalg.norm(ours):.3f}"
            else:
                diff = f"— ({ours.shape[0] // per_tile} vs {stock.shape[0] // per_tile} tiles)"
            answers = ""
            if k == 0:
                with LlamaCppVLM(folder) as runtime:
                    q = [{"role": "user", "content": "What shapes are in the picture?"}]
                    a = runtime.chat(q, [example], max_new_tokens=32).text
                    b = runtime.chat(q, [example], max_new_tokens=32, preprocess="llamacpp").text
                answers = f"{'same' if a == b else 'different'} (“{a}” / “{b}”)"
            rows.append(f"| {label} | {differ} of {len(SIZES)} | {diff} | {'yes' if same_square else 'no'} | {answers or '—'} |")
    lines = [
        "| model family | sizes where llama.cpp's tile count differs from training's | example image (640×480): "
        "embedding difference, stock vs training tiles (relative) | tile-sized image: identical embeddings | "
        "pocket-tiny's answer, training tiles / llama.cpp's |",
        "|---|---:|---:|---|---|",
        *rows,
        "",
        f"Sizes: widths {sorted({w for w, _ in SIZES})} × heights {sorted({h for _, h in SIZES})} px. Regenerate with "
        "`python bench/llamacpp_preprocessing.py --write` (needs `make llama-cpp`).",
    ]
    text = "\n".join(lines)
    if write:
        from bench.sections import write_section

        write_section(ROOT / "README.md", "llamacpp_preprocessing", text)
    return text


def main(argv=None) -> int:
    from bench.sections import section_script

    return section_script(measure, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
