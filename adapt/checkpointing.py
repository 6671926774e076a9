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
    """`optimizer=None` leaves the optimizer state out (DeepSpeed's ZeRO state holds objects, not just tensors)."""
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step}"
    partial = out_dir / f"checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(partial / "trainable.safetensors"), metadata={"format": "pt"})
    meta = None
    if optimizer is not None:
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
    if optimizer is not None and state["optimizer"] is not None:
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
    """Split any optimizer state (torch's, DeepSpeed ZeRO's) into tensors and a JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def split(obj, path: str):
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__items__": [[split(k, f"{path}.k{n}"), split(v, f"{path}.{n}")] for n, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, (list, tuple)):
            items = [split(v, f"{path}.{n}") for n, v in enumerate(obj)]
            return {"__tuple__": items} if isinstance(obj, tuple) else items
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"optimizer state holds a {type(obj).__name__} at {path!r}, which a safetensors checkpoint cannot store")

    return tensors, split(state_dict, "opt")


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta) -> dict:
    def join(obj):
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            if "__tuple__" in obj:
                return tuple(join(v) for v in obj["__tuple__"])
            return {join(k): join(v) for k, v in obj["__items__"]}
        if isinstance(obj, list):
            return [join(v) for v in obj]
        return obj

    return join(meta)


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
