"""Reproduce pocket-tiny's shipped weights: pre-train it from scratch on the synthetic general world.

    python -m adapt.pretrain_tiny --out runs/pocket-tiny-pretrain [--steps 5000] [--install]
    python -m adapt.pretrain_tiny --check           # rebuild in full (~20 min, 2 cores): same weights, bit for bit?
    python -m adapt.pretrain_tiny --check-prefix    # the first 50 steps only (seconds): same losses as the record?

The general world (shapes, colours, counts, positions; `domains.general.world`) is asked as
multiple choice with the candidates listed and the answer given as the label, the style the quick
start scores (a model this small, trained from scratch, learns to see long before it learns to copy
option letters).
`--install` copies the result to `model/assets/pocket-tiny/model.safetensors`, where the `pocket-tiny`
preset loads it from, and writes `rebuild.json` beside it: the run's settings, a digest of the weights,
its general-set accuracy and the losses of its first steps. `--check` rebuilds and compares digests;
`--check-prefix` (what the test suite runs) replays the first steps of the same schedule and compares
their losses, so a change in data, model or training code that would no longer rebuild the shipped
weights is seen in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from domains.general.world import generate_general
from model.errors import PocketAdaptError
from model.resources import assets_dir

from .checkpointing import atomic_write_text
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
training: {{max_steps: {steps}, batch_size: 16, warmup_ratio: 0.03, weight_decay: 0.01, schedule: cosine, max_seq_length: 1024,
           fused_adamw: false}}
output: {{dir: train, save_every: 500, keep_last: 1, merge_lora: true}}
logging: {{every: 10, tensorboard: true}}
eval: {{max_new_tokens: 8, batch_size: 32}}
seed: 0
"""


PREFIX_STEPS = 50  # replayed by --check-prefix; losses are logged every 10 steps


def record_path() -> Path:
    return assets_dir() / "pocket-tiny" / "rebuild.json"


def weights_digest(path: Path) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes, in name order (independent of file layout)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def logged_losses(train_dir: Path, up_to: int) -> dict[int, float]:
    log = (train_dir / "train_log.jsonl").read_text(encoding="utf-8")
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    return {e["step"]: e["loss"] for e in entries if e["step"] <= up_to}


class PretrainFolderError(PocketAdaptError, ValueError):
    """The run folder holds work a pre-training run did not write (it would be replaced)."""


def _refuse_other_work(out_dir: Path, recipe_path: Path) -> None:
    """A rebuild replaces ``data/general`` and empties ``train/``: only in an empty folder or an earlier run's."""
    ours = recipe_path.is_file() and recipe_path.read_text(encoding="utf-8", errors="replace").startswith(
        RECIPE.splitlines()[0])
    if not ours and out_dir.is_dir() and any(out_dir.iterdir()):
        raise PretrainFolderError(f"{out_dir} is not a pocket-tiny pre-training folder (no pretrain.yaml written by "
                                  "python -m adapt.pretrain_tiny) and is not empty; a rebuild would replace its "
                                  "data/general and empty its train/: choose another --out")


def pretrain_tiny(out_dir: Path, steps: int = 5000, lr: float = 1e-3, install: bool = False, progress: bool = True,
                  stop_after: int | None = None) -> tuple[Path, dict | None]:
    """Pre-train from scratch; returns the final folder and its general-set summary. With `stop_after`,
    only the first steps of the same schedule run: the checkpoint there is returned, unscored."""
    out_dir = Path(out_dir)
    recipe_path = out_dir / "pretrain.yaml"
    _refuse_other_work(out_dir, recipe_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the recipe first: it marks the folder as a pre-training one, so a run stopped in the data can be rerun
    recipe_path.write_text(RECIPE.format(steps=steps, lr=lr), encoding="utf-8")
    generate_general(out_dir / "data" / "general", n_train=8000, n_test=200, answer_style="label")
    recipe = load_recipe(recipe_path)
    shutil.rmtree(recipe.output.dir, ignore_errors=True)  # a rebuild always starts from scratch
    final = train(recipe, progress=progress, stop_after=stop_after)
    if stop_after:
        return final, None
    summary = evaluate_model(recipe, final, "pretrained", out_dir / "eval", progress)
    print(json.dumps(summary["groups"], indent=1))
    if install:
        install_run(Path(recipe.output.dir), steps, lr, summary["groups"]["general"]["main"])
    return final, summary


def install_run(train_dir: Path, steps: int, lr: float, general_accuracy: float) -> Path:
    """Ship a finished pre-training run as pocket-tiny: its weights, and rebuild.json describing them. Both are made
    beside the shipped pair and each renamed into place, weights first, so a failure leaves the old pair (killed
    between the two renames: the new weights, whose sha256 the old record does not give, which ``--check`` names)."""
    folder = assets_dir() / "pocket-tiny"
    target = folder / "model.safetensors"
    staged = folder / f".{target.name}.{os.getpid()}.tmp"
    previous = folder / f".{target.name}.{os.getpid()}.old"
    try:
        shutil.copyfile(train_dir / "final" / "model.safetensors", staged)
        record = {
            "command": f"python -m adapt.pretrain_tiny --install --steps {steps} --lr {lr}",
            "steps": steps, "lr": lr, "weights_sha256": weights_digest(staged),
            "general_accuracy": general_accuracy,
            "prefix_losses": logged_losses(train_dir, PREFIX_STEPS),
            "made_with": {"python": platform.python_version(), "torch": torch.__version__,
                          "transformers": transformers.__version__, "machine": platform.machine()},
        }
        text = json.dumps(record, indent=1) + "\n"
        with open(staged, "rb+") as fh:  # on disk before it replaces the shipped file
            os.fsync(fh.fileno())
        had_weights = target.exists()
        if had_weights:
            shutil.copyfile(target, previous)  # put back if the record cannot be written
        os.replace(staged, target)
        try:
            atomic_write_text(record_path(), text)
        except BaseException:
            if had_weights:
                os.replace(previous, target)
            else:
                target.unlink(missing_ok=True)
            raise
    finally:
        staged.unlink(missing_ok=True)
        previous.unlink(missing_ok=True)
    print(f"installed {target} ({target.stat().st_size / 2**20:.1f} MiB) and {record_path().name}")
    return target


def check_prefix(out_dir: Path, progress: bool = False, rel_tol: float = 1e-6) -> list[str]:
    """Replay the recorded run's first steps; returns the differences (empty: the same run)."""
    record = json.loads(record_path().read_text(encoding="utf-8"))
    checkpoint, _ = pretrain_tiny(out_dir, record["steps"], record["lr"], progress=progress, stop_after=PREFIX_STEPS)
    got = logged_losses(checkpoint.parent, PREFIX_STEPS)
    want = {int(step): loss for step, loss in record["prefix_losses"].items()}
    problems = []
    if set(got) != set(want):
        problems.append(f"logged steps {sorted(got)} != recorded {sorted(want)}")
    for step in sorted(set(got) & set(want)):
        if not math.isclose(got[step], want[step], rel_tol=rel_tol, abs_tol=0.0):
            problems.append(f"step {step}: loss {got[step]!r}, recorded {want[step]!r}")
    return problems


def check_full(out_dir: Path, progress: bool = True) -> tuple[list[str], dict]:
    """Rebuild in full and compare with the record and the shipped file; returns (differences, summary)."""
    record = json.loads(record_path().read_text(encoding="utf-8"))
    final, summary = pretrain_tiny(out_dir, record["steps"], record["lr"], progress=progress)
    rebuilt = weights_digest(final / "model.safetensors")
    shipped = weights_digest(assets_dir() / "pocket-tiny" / "model.safetensors")
    problems = []
    if shipped != record["weights_sha256"]:
        problems.append(f"the shipped weights ({shipped[:12]}) are not the recorded run's ({record['weights_sha256'][:12]})")
    if rebuilt != record["weights_sha256"]:
        problems.append(f"the rebuild ({rebuilt[:12]}) differs from the recorded run ({record['weights_sha256'][:12]})")
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    from model.arguments import positive_int

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/pocket-tiny-pretrain; "
                        "a temporary folder for the checks)")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default 5000)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    parser.add_argument("--install", action="store_true", help="copy the weights into model/assets/pocket-tiny/")
    checks = parser.add_mutually_exclusive_group()
    checks.add_argument("--check", action="store_true", help="rebuild in full and compare with the shipped weights "
                        "(the recorded run's settings: no --steps, --lr or --install)")
    checks.add_argument("--check-prefix", action="store_true", help=f"replay the first {PREFIX_STEPS} steps only")
    args = parser.parse_args(argv)
    if args.check or args.check_prefix:
        given = [flag for flag, value in (("--steps", args.steps), ("--lr", args.lr), ("--install", args.install))
                 if value not in (None, False)]
        if given:
            parser.error(f"{'--check' if args.check else '--check-prefix'} replays the recorded run's own settings "
                         f"({record_path().name}) and installs nothing: drop {', '.join(given)}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    args.steps = 5000 if args.steps is None else args.steps
    args.lr = 1e-3 if args.lr is None else args.lr
    try:
        return _run(args)
    except (PocketAdaptError, OSError) as err:
        from model.errors import user_error_message  # the CLI's messages: a file in the way, permission, disk full

        message = user_error_message(err, args.out)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.check or args.check_prefix:
        with tempfile.TemporaryDirectory(prefix="pocket-tiny-check-") as tmp:
            out = args.out or Path(tmp)
            problems = check_full(out)[0] if args.check else check_prefix(out, progress=True)
        what = "a full rebuild" if args.check else f"the first {PREFIX_STEPS} steps"
        if problems:
            print(f"pocket-tiny does not rebuild ({what}): " + "; ".join(problems)
                  + ". If the change is meant, rebuild: python -m adapt.pretrain_tiny --install", file=sys.stderr)
            return 1
        print(f"pocket-tiny rebuilds ({what}) as recorded in {record_path()}")
        return 0
    pretrain_tiny(args.out or Path("runs/pocket-tiny-pretrain"), args.steps, args.lr, args.install)
    return 0


if __name__ == "__main__":
    sys.exit(main())
