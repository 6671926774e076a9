"""Reproduce pocket-tiny's shipped weights: pre-train it from scratch on the synthetic general world.

    python -m adapt.pretrain_tiny --out runs/pocket-tiny-pretrain [--steps 5000] [--install]

The general world (shapes, colours, counts, positions; `domains.general.world`) is asked as
multiple choice with the candidates listed and the answer given as the label, the style the quick
start scores (a model this small, trained from scratch, learns to see long before it learns to copy
option letters).
`--install` copies the result to `model/assets/pocket-tiny/model.safetensors`, where the `pocket-tiny`
preset loads it from.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from domains.general.world import generate_general
from model.resources import assets_dir

from .recipe import load_recipe
from .run_eval import evaluate_model
from .train import train

RECIPE = """# pocket-tiny pre-training on the synthetic general world (written by python -m adapt.pretrain_tiny)
name: pocket-tiny-pretrain
model: {{source: pocket-tiny-scratch}}
parts:
  vision: {{mode: full, lr: {lr}}}
  projector: {{mode: full, lr: {lr}}}
  llm: {{mode: full, lr: {lr}}}
data:
  sources:
    - {{name: general, path: data/general/train.jsonl, kind: domain}}
  eval_sources:
    - {{name: general, path: data/general/test.jsonl, kind: general}}
mixing: {{general_ratio: 0.0, seed: 0}}
training: {{max_steps: {steps}, batch_size: 16, warmup_ratio: 0.03, weight_decay: 0.01, schedule: cosine, max_seq_length: 1024}}
output: {{dir: train, save_every: 500, keep_last: 1, merge_lora: true}}
logging: {{every: 10, tensorboard: true}}
eval: {{max_new_tokens: 8, batch_size: 32}}
seed: 0
"""


def pretrain_tiny(out_dir: Path, steps: int = 5000, lr: float = 1e-3, install: bool = False, progress: bool = True) -> Path:
    out_dir = Path(out_dir)
    general = out_dir / "data" / "general"
    generate_general(general, n_train=8000, n_test=200, answer_style="label")
    recipe_path = out_dir / "pretrain.yaml"
    recipe_path.write_text(RECIPE.format(steps=steps, lr=lr))
    recipe = load_recipe(recipe_path)
    final = train(recipe, progress=progress)
    summary = evaluate_model(recipe, final, "pretrained", out_dir / "eval", progress)
    print(json.dumps(summary["groups"], indent=1))
    if install:
        target = assets_dir() / "pocket-tiny" / "model.safetensors"
        shutil.copyfile(final / "model.safetensors", target)
        print(f"installed {target} ({target.stat().st_size / 2**20:.1f} MiB)")
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pocket-tiny-pretrain"))
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--install", action="store_true", help="copy the weights into model/assets/pocket-tiny/")
    args = parser.parse_args()
    pretrain_tiny(args.out, args.steps, args.lr, args.install)


if __name__ == "__main__":
    main()
