"""Training checkpoints: safetensors + JSON, written atomically, resumable bit for bit.

A checkpoint is a folder `checkpoint-<step>/` holding the trainable weights, the optimizer state,
the scheduler, the RNG states and the step. It is written as `checkpoint-<step>.partial/` and
renamed when complete, so after a kill -9 the newest `checkpoint-*` folder is always whole.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_NAME = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("checkpoint-*") if (m := _NAME.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def save_checkpoint(out_dir: Path, step: int, model: torch.nn.Module, optimizer, scheduler, extra: dict, keep_last: int) -> Path:
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step}"
    partial = out_dir / f"checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(partial / "trainable.safetensors"), metadata={"format": "pt"})
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(partial / "optimizer.safetensors"), metadata={"format": "pt"})
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(partial / "rng.safetensors"))
    state = {
        "step": step,
        "optimizer": meta,
        "scheduler": scheduler.state_dict(),
        "python_random": _jsonable(random.getstate()),
        "numpy_random": _jsonable(np.random.get_state()),
        **extra,
    }
    (partial / "trainer_state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    _prune(out_dir, keep_last)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler) -> dict:
    """Restore everything `save_checkpoint` wrote; returns the trainer state (step and extras)."""
    path = Path(path)
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise ValueError(f"{path}: checkpoint holds weights this model does not have: {unknown[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    state = json.loads((path / "trainer_state.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count())])
    random.setstate(_tuples(state["python_random"]))
    np.random.set_state(_tuples(state["numpy_random"]))
    return state


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: v for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _tuples(value):
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"])
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _prune(out_dir: Path, keep_last: int) -> None:
    found = sorted((int(m.group(1)), p) for p in out_dir.glob("checkpoint-*") if (m := _NAME.match(p.name)))
    for _, path in found[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
