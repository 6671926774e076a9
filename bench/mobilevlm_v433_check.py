"""Does MobileVLM's own loading path read `adapt export --format mobilevlm`? Checked under transformers 4.33.1, the
version MobileVLM pins, with its loading steps as ../shared/reference/mobilevlm.md describes them (not its code).

    python bench/mobilevlm_v433_check.py export WORK      # pocket-adapt's venv: a tiny adapted V2, exported, + references
    python -m venv /tmp/mv433 && /tmp/mv433/bin/pip install transformers==4.33.1 tokenizers==0.13.3 torch
    /tmp/mv433/bin/python bench/mobilevlm_v433_check.py check WORK   # MobileVLM's loading path on the export

`export` writes the tiny MobileVLM V2 of tests/test_checkpoints.py (LDPv2 on a 3-layer CLIP at 336 px, a 2-layer
Llama), every weight moved (as an adaptation of all three parts would), exported to WORK/export, and the prompt's
ids, pixels, image features and logits from pocket-adapt in WORK/ref.safetensors. `check` registers a
`MobileVLMConfig(LlamaConfig)` as model_type "mobilevlm", builds the tower with
`CLIPVisionModel.from_pretrained(mm_vision_tower)` and its `CLIPImageProcessor` from the same folder, LDPv2 under
`model.mm_projector`, loads the export with `from_pretrained`, and prints the missing / unexpected keys and the
largest differences from pocket-adapt's pixels (expand2square + the CLIP processor), image features and logits.
The tokenizer is not checked: the tiny model uses pocket-tiny's Qwen2 tokenizer, which transformers 4.33 lacks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import shutil

    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    import model
    from bench.sections import helpers_of_tests
    from deploy.hf import export as export_model
    from model.resources import assets_dir

    write_mobilevlm_v2 = helpers_of_tests("tests.test_checkpoints").write_mobilevlm_v2

    shutil.rmtree(work / "src", ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(assets_dir() / "pocket-tiny"))
    vlm, processor = model.load(write_mobilevlm_v2(work / "src", tokenizer, tie=False).directory)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in vlm.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    out = export_model(vlm, processor, "mobilevlm", work / "export", force=True)
    image = Image.open(assets_dir() / "example.png").convert("RGB")
    enc = processor([{"role": "user", "content": "What is in this image?"}], images=[image])
    with torch.no_grad():
        logits = vlm(**enc.to_model_inputs()).logits
        features = vlm.get_image_features(enc.pixel_values)
    save_file({"input_ids": enc.input_ids.contiguous(), "pixel_values": enc.pixel_values.contiguous(),
               "features": features.contiguous(), "logits": logits.contiguous(),
               "image_token_id": torch.tensor([processor.image_token_id])}, str(work / "ref.safetensors"))
    print(f"wrote {out} and {work / 'ref.safetensors'}")


def check(work: Path) -> None:
    import torch
    import transformers
    from PIL import Image
    from safetensors.torch import load_file
    from torch import nn
    from transformers import AutoConfig, CLIPImageProcessor, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, LlamaModel

    class MobileVLMConfig(LlamaConfig):
        model_type = "mobilevlm"

    AutoConfig.register("mobilevlm", MobileVLMConfig)

    class Tower(nn.Module):  # the CLIP model sits under `.vision_tower`, its processor comes from the same folder
        def __init__(self, path: str):
            super().__init__()
            self.vision_tower = CLIPVisionModel.from_pretrained(path)
            self.image_processor = CLIPImageProcessor.from_pretrained(path)

    class Named(nn.Module):
        def __init__(self, name: str, module: nn.Module):
            super().__init__()
            setattr(self, name, module)

    class LDPv2(nn.Module):  # mlp.mlp: Linear-GELU-Linear; dwn: 12x12 average pool; peg.peg: depthwise conv + x
        def __init__(self, inc: int, ouc: int):
            super().__init__()
            self.mlp = Named("mlp", nn.Sequential(nn.Linear(inc, ouc), nn.GELU(), nn.Linear(ouc, ouc)))
            self.dwn = nn.AdaptiveAvgPool2d((12, 12))
            self.peg = Named("peg", nn.Sequential(nn.Conv2d(ouc, ouc, 3, 1, 1, bias=True, groups=ouc)))

        def forward(self, x):
            x = self.mlp.mlp(x)
            b, n, c = x.shape
            side = int(n ** 0.5)
            x = self.dwn(x.permute(0, 2, 1).reshape(b, c, side, side))
            return (self.peg.peg(x) + x).flatten(2).transpose(1, 2)

    class MobileLlamaModel(LlamaModel):
        config_class = MobileVLMConfig

        def __init__(self, config):
            super().__init__(config)
            self.vision_tower = Tower(config.mm_vision_tower)
            self.mm_projector = LDPv2(config.mm_hidden_size, config.hidden_size)

    class MobileLlamaForCausalLM(LlamaForCausalLM):
        config_class = MobileVLMConfig

        def __init__(self, config):
            super().__init__(config)
            self.model = MobileLlamaModel(config)
            self.post_init()

    export_dir = work / "export"
    vlm, info = MobileLlamaForCausalLM.from_pretrained(str(export_dir), output_loading_info=True)
    vlm.eval()
    config = json.loads((export_dir / "config.json").read_text())
    ref = load_file(str(work / "ref.safetensors"))
    tower = vlm.model.vision_tower
    _, tower_info = CLIPVisionModel.from_pretrained(config["mm_vision_tower"], output_loading_info=True)
    image = Image.open(ROOT / "model" / "assets" / "example.png").convert("RGB")
    background = tuple(int(m * 255) for m in tower.image_processor.image_mean)
    side = max(image.size)
    square = Image.new("RGB", (side, side), background)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    pixels = tower.image_processor(square, return_tensors="pt").pixel_values
    with torch.no_grad():
        hidden = tower.vision_tower(pixels, output_hidden_states=True).hidden_states[config["mm_vision_select_layer"]]
        features = vlm.model.mm_projector(hidden[:, 1:])
        ids = ref["input_ids"].reshape(1, -1)
        mask = ids == int(ref["image_token_id"])
        embeds = vlm.model.embed_tokens(ids.masked_fill(mask, 0))
        embeds[mask] = features.reshape(-1, features.shape[-1])
        logits = vlm(inputs_embeds=embeds).logits
    print(f"transformers {transformers.__version__}")
    print(f"checkpoint: missing {info['missing_keys']}, unexpected {info['unexpected_keys']}; tower folder: missing "
          f"{tower_info['missing_keys']}, unexpected {tower_info['unexpected_keys']}")
    print(f"pixels max |diff| {(pixels - ref['pixel_values']).abs().max().item():.1e}; image features "
          f"{(features - ref['features']).abs().max().item():.1e}; logits {(logits - ref['logits']).abs().max().item():.1e} "
          f"(largest logit {ref['logits'].abs().max().item():.2f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["export", "check"],
                        help="export: in pocket-adapt's venv; check: in a transformers 4.33.1 venv")
    parser.add_argument("work", type=Path, help="folder of the export and the references")
    args = parser.parse_args(argv)
    (export if args.step == "export" else check)(args.work.resolve())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.sections import run_script

    run_script(main)
