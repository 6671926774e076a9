"""Training checkpoints and the run folder: safetensors + JSON, written atomically, verified, locked.

A checkpoint is a folder `checkpoint-<step>/` holding the trainable weights, the optimizer state,
the scheduler, the RNG states, the step, the resolved recipe (`recipe.yaml`) and, written last, a
`manifest.json` of every file's size. It is written as `checkpoint-<step>.partial/`, every file and
the folder are flushed to disk (`fsync`), and only then renamed. `usable_checkpoint` picks the newest
checkpoint that verifies (every file present at its manifest size, safetensors headers readable,
`trainer_state.json` parseable, holding what resuming reads and the step its folder is named for) and
says why it passed over any newer one.

`RunLock` keeps a second run out of an output folder while one is using it: an OS file lock
(`flock`) that the system releases when the holder dies, even by kill -9. Its file, `.adapt-train.lock`, stays
behind and marks the folder as a run's: `check_run_folder` refuses a folder that holds files but no such mark.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import re
import shutil
import socket
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.errors import PocketAdaptError
from model.loading import moved_aside

from .data.samples import SKIP_FILES
from .evaluate import COMPARISON_PNG, EVAL_JSON, EVAL_MD, PREDICTIONS

_NAME = re.compile(r"^checkpoint-(\d+)$")
_FOLDER = re.compile(r"^checkpoint-(\d+)(?:\.partial)?$")  # a checkpoint's folder, whole or being written
_RANDOM_KEYS = ("python_random", "numpy_random")
_STATE_KEYS = ("optimizer", "scheduler", *_RANDOM_KEYS)  # what `load_checkpoint` reads from trainer_state.json
_RESERVED_KEYS = ("step", "checkpoint_format", *_STATE_KEYS, "rank_random")  # what `extra` may not replace
MANIFEST = "manifest.json"
STATE = "trainer_state.json"
RECIPE = "recipe.yaml"
FORMAT = 2  # trainer_state.json "checkpoint_format": 2 = written with a manifest (older ones have none)
LOCK_NAME = ".adapt-train.lock"


class CheckpointDamaged(PocketAdaptError):
    """No checkpoint of a run folder can be resumed from, or one does not fit the model."""


class RunFolderBusy(PocketAdaptError):
    """Another run holds the output folder."""


class RunFolderForeign(PocketAdaptError):
    """The output folder holds files, but no run of `adapt train` / `adapt distill` made it."""


class RunFolderUnusable(RunFolderBusy):
    """The output folder cannot be made or its lock file written (no permission, a read-only file system, a file
    where a folder should be). A `RunFolderBusy`: the other ranks of a run learn that rank 0 could not lock it."""


# ---------------------------------------------------------------------- files
def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` through a temporary file, flushed to disk, then renamed over `path`; the new file
    gets the mode any `open()` would give it (0666 less the umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def honour_umask(path: Path) -> None:
    """Give a file written by a library that creates it 0600 (safetensors does) the mode `open()` would give."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:  # Linux shows it without changing it; os.umask() would change it for every thread for a moment
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename or a new file) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- the run lock
def check_run_folder(out_dir: Path, verb: str = "train") -> None:
    """Refuse (`RunFolderForeign`) an `out_dir` that is a file, or a folder holding files but no `LOCK_NAME`:
    a run there would replace its ``final/``, ``train_log.jsonl``, ``loss.png``, ``skips.*``. A missing or empty
    folder, one holding only an `adapt eval` report in eval/, or one a run made (it has the lock file, whether or
    not it holds a checkpoint yet), is fine."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderForeign(f"output.dir {out_dir} is a file, not a folder; set output.dir to a folder")
    found = foreign_files(out_dir)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise RunFolderForeign(
            f"{out_dir} holds files no `adapt {verb}` run wrote ({shown}); a run there would replace final/, "
            "train_log.jsonl and loss.png: set output.dir to a new or empty folder, or move those files out")


def foreign_files(out_dir: Path) -> list[str]:
    """The entries of a folder no run made (no `LOCK_NAME`), folders marked with ``/``; empty for a missing or empty
    folder and for a run's."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or (out_dir / LOCK_NAME).exists():
        return []
    return _entries(out_dir, ())


def _entries(out_dir: Path, ours: tuple[str, ...]) -> list[str]:
    """`out_dir`'s entries but those matching `ours`, folders marked with ``/``; inside ``eval/`` (`adapt eval`'s
    default report folder, scoring base before training or the run after it) those `EVAL_OUTPUTS` does not match."""
    from deploy.runtimes import RUNTIMES

    found = []
    for p in out_dir.iterdir():
        if p.name == EVAL_DIR and p.is_dir() and not p.is_symlink():
            evals = (*EVAL_OUTPUTS, *(r.export_format for r in RUNTIMES.values()))
            found += [f"{EVAL_DIR}/{q.name}" + ("/" if q.is_dir() else "") for q in p.iterdir()
                      if not any(fnmatch.fnmatchcase(q.name, pattern) for pattern in evals)]
        elif not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in ours):
            found.append(p.name + ("/" if p.is_dir() else ""))
    return sorted(found)


EVAL_DIR = "eval"  # `adapt eval`'s default --out, <output.dir>/eval
# What `adapt eval` writes into it: the names its writers use (with --runtime also a folder per export format)
EVAL_OUTPUTS = (EVAL_JSON, EVAL_MD, COMPARISON_PNG, PREDICTIONS.format(label="*"), *SKIP_FILES)

MIXTURE_JSON = "mixture.json"  # the data mix a run trains on (`adapt.train.mixture_summary`)
# What a run writes into its output.dir (adapt/train.py, adapt/distill.py), and its hidden staging files
RUN_OUTPUTS = (LOCK_NAME, "final", "checkpoint-*", "train_log.jsonl", "eval_log.jsonl", "eval_during_training", "loss.png",
               MIXTURE_JSON, *SKIP_FILES, "tensorboard", "held_out", "report.json", "report.md", ".*")


def not_run_outputs(out_dir: Path) -> list[str]:
    """The entries of a run's folder no run writes (`RUN_OUTPUTS`: a note of the user's), folders marked with ``/``,
    and those of ``eval/`` no `adapt eval` writes as ``eval/NAME``; for a folder no run made, `foreign_files`."""
    out_dir = Path(out_dir)
    if not (out_dir / LOCK_NAME).exists():
        return foreign_files(out_dir)
    return _entries(out_dir, RUN_OUTPUTS)


class RunLock:
    """An exclusive OS lock on `out_dir/.adapt-train.lock`, holding the owner's pid and host.

    Raises `RunFolderBusy` naming the holder when another process has it, and `RunFolderUnusable` naming the folder
    when it cannot be made or written. One run takes it once (its rank 0), so the ranks of a data-parallel run never
    block each other.
    """

    def __init__(self, out_dir: Path):
        out_dir = Path(out_dir)
        where = out_dir.absolute()
        self._made = [d for d in (where, *where.parents) if not d.exists()]  # what `discard` may remove
        self.path = out_dir / LOCK_NAME
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._made_file = not self.path.exists()
            self._found = {p.name for p in out_dir.iterdir()}  # what `discard` leaves alone
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            self._fd = None
            self._remove_made()
            why = err.strerror or type(err).__name__
            raise RunFolderUnusable(
                f"output.dir {out_dir}: cannot {'make the folder' if self._made else 'write its lock file'} "
                f"({why}{f': {err.filename}' if err.filename else ''}); set output.dir to a folder you can write to, "
                "or fix its permissions") from err
        if not _try_lock(self._fd):
            os.close(self._fd)
            self._fd = None
            try:
                holder = self.path.read_text(encoding="utf-8").strip() or "pid unknown"
            except OSError:
                holder = "pid unknown"
            raise RunFolderBusy(
                f"{out_dir} is in use by another run ({holder}); wait for it to finish or stop it, "
                "or set output.dir to another folder")
        self._owner = os.getpid()
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"pid {self._owner} on {socket.gethostname()}\n".encode())
        except OSError as err:  # a full disk, a quota: the run could not write there either
            self.discard()
            raise RunFolderUnusable(f"output.dir {out_dir}: cannot write its lock file ({err.strerror or err}); free "
                                    "space there or set output.dir to another folder") from err

    def release(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is None:
            return
        # a forked data worker shares the lock (flock belongs to the open file, not the process): only the
        # process that took it unlocks it; the others just close their copy
        if getattr(self, "_owner", None) == os.getpid():
            _unlock(fd)
        os.close(fd)

    def discard(self) -> None:
        """Release, and remove the lock file and the folders the lock made if nothing else went in: a run that
        failed to start leaves nothing behind. A start that wrote files (the skips.md of a run stopped for bad
        records) keeps the lock file, so the folder stays a run's and the same command can go on in it."""
        owner = getattr(self, "_owner", None) == os.getpid()
        self.release()
        if not owner:
            return
        if self._made_file and not self._wrote_since():
            self.path.unlink(missing_ok=True)
        self._remove_made()

    def _wrote_since(self) -> bool:
        """Whether the folder holds entries besides the lock file that were not there when the lock was taken."""
        try:
            return bool({p.name for p in self.path.parent.iterdir()} - self._found - {self.path.name})
        except OSError:
            return False

    def _remove_made(self) -> None:
        for folder in self._made:
            try:
                folder.rmdir()
            except FileNotFoundError:  # never made, or removed already
                continue
            except OSError:  # something else was written there: keep it
                return

    def __del__(self) -> None:
        self.release()


try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # Windows: lock the first byte
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


# ---------------------------------------------------------------------- writing
def rng_state() -> dict:
    """This process's random number generators: torch's CPU one, the current CUDA device's, Python's and numpy's."""
    state = {"torch": torch.get_rng_state(), "python_random": _jsonable(random.getstate()),
             "numpy_random": _jsonable(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(out_dir: Path, step: int, model: torch.nn.Module, optimizer, scheduler, extra: dict, keep_last: int,
                    recipe_yaml: str | None = None, rank_rng: list[dict] | None = None,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """`optimizer=None` leaves the optimizer state out (DeepSpeed's ZeRO state holds objects, not just tensors).
    `recipe_yaml`: the resolved recipe, kept as `recipe.yaml` so a resume can tell what was edited since.
    `rank_rng`: every rank's `rng_state()` (a data-parallel run), so that each rank resumes with its own.
    `weights`: the trainable weights to store instead of the model's (DeepSpeed's fp32 master copies).
    `extra`: more trainer state, returned by `load_checkpoint`; it may not hold the keys this function writes."""
    clash = [k for k in extra if k in _RESERVED_KEYS]
    if clash:  # else `extra` replaced them: a checkpoint named for one step that resumed at another, or not at all
        raise ValueError(f"save_checkpoint: extra holds {', '.join(map(repr, clash))}, which the checkpoint writes "
                         f"itself ({', '.join(_RESERVED_KEYS)}); give them other names")
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step}"
    partial = out_dir / f"checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    trainable = weights if weights is not None else {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(partial / "trainable.safetensors"), metadata={"format": "pt"})
    meta = None
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(partial / "optimizer.safetensors"), metadata={"format": "pt"})
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    rank_random = None
    if rank_rng:  # rank r's generators under "rank<r>.…": ranks draw apart (dropout masks of other shapes, GPUs)
        for r, own in enumerate(rank_rng):
            rng.update({f"rank{r}.{k}": own[k] for k in ("torch", "cuda") if k in own})
        rank_random = [{k: own[k] for k in ("python_random", "numpy_random")} for own in rank_rng]
    save_file(rng, str(partial / "rng.safetensors"))
    state = {
        "step": step,
        "checkpoint_format": FORMAT,
        "optimizer": meta,
        "scheduler": scheduler.state_dict(),
        "python_random": _jsonable(random.getstate()),
        "numpy_random": _jsonable(np.random.get_state()),
        **({"rank_random": rank_random} if rank_random else {}),
        **extra,
    }
    (partial / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    if recipe_yaml is not None:
        (partial / RECIPE).write_text(recipe_yaml, encoding="utf-8")
    files = {p.name: p.stat().st_size for p in sorted(partial.iterdir())}
    for name in files:
        if name.endswith(".safetensors"):
            honour_umask(partial / name)
        fsync_file(partial / name)
    (partial / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf-8")
    fsync_file(partial / MANIFEST)
    fsync_dir(partial)
    # an older checkpoint-<step> is moved aside, not deleted, until the new one has its name: a kill in between
    # leaves one whole checkpoint-<step> or the means to restore it (`settle_saves`)
    aside = _aside(final)
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
    try:
        partial.rename(final)
    except BaseException:
        if aside.exists() and not final.exists():
            aside.rename(final)
        raise
    fsync_dir(out_dir)
    shutil.rmtree(aside, ignore_errors=True)
    _prune(out_dir, keep_last)
    return final


def _aside(final: Path) -> Path:
    """Where `save_checkpoint` keeps the older `final` while the new one takes its name (hidden: a run's own file)."""
    return final.with_name(f".{final.name}.old")


# ---------------------------------------------------------------------- finding and verifying
def checkpoints(out_dir: Path) -> list[Path]:
    """Every `checkpoint-<step>` folder of a run, newest first."""
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("checkpoint-*") if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint folder by step, verified or not (see `usable_checkpoint`)."""
    found = checkpoints(out_dir)
    return found[0] if found else None


def usable_checkpoint(out_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and ``(folder, what is wrong)`` for each newer one passed over.

    Raises `CheckpointDamaged` when checkpoints exist but none verifies.
    """
    damaged = []
    for path in checkpoints(out_dir):
        problem = verify_checkpoint(path)
        if problem is None:
            return path, damaged
        damaged.append((path, problem))
    if damaged:
        shown = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
        raise CheckpointDamaged(
            f"{out_dir}: no checkpoint can be resumed from ({shown}); move the damaged folder(s) away to train "
            "from scratch, or set output.dir to another folder")
    return None, []


def settle_saves(out_dir: Path) -> list[str]:
    """Finish or undo what a run stopped while saving (`save_checkpoint`) left behind; returns a note of each.

    A `checkpoint-<step>.partial/` that verifies whole and has no whole `checkpoint-<step>` beside it is the step's
    checkpoint (the run died as it took its name): renamed into place, a damaged `checkpoint-<step>` set aside. Any
    other is removed (after a change of output.save_every a later save would never clear it). A moved-aside older
    checkpoint (`.checkpoint-<step>.old`) is restored where no whole `checkpoint-<step>` replaced it, else removed; so
    is a moved-aside `final/` (`.final.replaced`, `adapt.train.staged_folder`) where no `final/` replaced it."""
    out_dir = Path(out_dir)
    notes = []
    final_dir = out_dir / "final"
    replaced = moved_aside(final_dir)
    if replaced.is_dir() and not final_dir.exists():
        replaced.rename(final_dir)
        notes.append("restored final/, moved aside by a run stopped while replacing it")
    for leftover in (replaced, out_dir / ".final.staging"):  # a new final/ took its place, or was never finished
        shutil.rmtree(leftover, ignore_errors=True)
    for partial in sorted(p for p in out_dir.glob("checkpoint-*.partial") if p.is_dir()):
        final = partial.with_name(partial.name.removesuffix(".partial"))
        problem = verify_checkpoint(final) if final.exists() else None
        whole = verify_checkpoint(partial) is None
        if _NAME.match(final.name) and whole and (problem is not None or not final.exists()):
            _into_place(partial, final, problem, notes,
                        f"{partial.name} was written whole by a run stopped as it renamed it: kept as {final.name}")
        else:
            shutil.rmtree(partial, ignore_errors=True)
            notes.append(f"removed {partial.name}, a checkpoint a stopped run did not finish writing")
    for aside in sorted(p for p in out_dir.glob(".checkpoint-*.old") if p.is_dir()):
        final = aside.with_name(aside.name[1:].removesuffix(".old"))
        if not _NAME.match(final.name):
            continue
        problem = verify_checkpoint(final) if final.exists() else None
        if final.exists() and problem is None:
            shutil.rmtree(aside, ignore_errors=True)
        else:
            _into_place(aside, final, problem, notes,
                        f"restored {final.name}, moved aside by a run stopped while replacing it")
    fsync_dir(out_dir)
    return notes


def _into_place(source: Path, final: Path, problem: str | None, notes: list[str], note: str) -> None:
    """Rename `source` to `final`; a damaged `final` (`problem`: what `verify_checkpoint` said) is set aside first,
    not deleted."""
    if problem is not None:
        notes.append(f"{final.name} is damaged ({problem}): set aside as {set_aside(final).name}")
    source.rename(final)
    notes.append(note)


def verify_checkpoint(path: Path) -> str | None:
    """None when the checkpoint folder is whole, else what is wrong with it (naming the file)."""
    path = Path(path)
    state_path = path / STATE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            return f"{state_path} holds no step"
        if not isinstance(state.get("checkpoint_format", 1), int):
            return f"{state_path}: checkpoint_format is not a whole number ({state['checkpoint_format']!r})"
        problem = _state_problem(state)
        if problem:
            return f"{state_path}: {problem}"
        named = _FOLDER.match(path.name)
        if named and int(named.group(1)) != state["step"]:  # it would resume at one step and be pruned as the other
            return (f"{state_path} holds step {state['step']} but its folder is named {path.name} (step "
                    f"{named.group(1)}): renamed or copied from another checkpoint")
    except FileNotFoundError:
        return f"{state_path} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{state_path} cannot be read ({exc})"
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        try:
            files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
            sizes = {str(k): int(v) for k, v in files.items()}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return f"{manifest_path} cannot be read ({exc})"
        for name, size in sizes.items():
            file = path / name
            if not file.is_file():
                return f"{file} is missing"
            if file.stat().st_size != size:
                return f"{file} has {file.stat().st_size} bytes, {manifest_path.name} says {size}"
    elif state.get("checkpoint_format", 1) >= FORMAT:
        return f"{manifest_path} is missing"
    needed = ["trainable.safetensors", "rng.safetensors"] + (["optimizer.safetensors"] if state.get("optimizer") else [])
    for name in needed:
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        problem = _safetensors_problem(file)
        if problem:
            return f"{file}: {problem}"
    return None


def _state_problem(state: dict) -> str | None:
    """The keys `load_checkpoint` reads that `trainer_state.json` (`state`) lacks, named; None when it has them."""
    missing = [k for k in _STATE_KEYS if k not in state]
    rank_random = state.get("rank_random") or []
    if not isinstance(rank_random, list):
        return f"rank_random is not a list ({type(rank_random).__name__})"
    for rank, own in enumerate(rank_random):
        missing += [f"rank_random[{rank}].{k}" for k in _RANDOM_KEYS if not isinstance(own, dict) or k not in own]
    return f"lacks {', '.join(missing)}" if missing else None


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read in full (its header and the data it promises), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > size - 8:
                return f"header of {length} bytes in a {size}-byte file"
            header = json.loads(fh.read(length))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError,
            TypeError, ValueError) as exc:
        return f"unreadable header ({exc})"
    if 8 + length + end != size:
        return f"{size} bytes, its header describes {8 + length + end}"
    return None


# ---------------------------------------------------------------------- reading
def read_trainer_state(path: Path) -> dict:
    """`trainer_state.json` of a checkpoint folder; a damaged file is a `CheckpointDamaged` naming it."""
    file = Path(path) / STATE
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointDamaged(f"{file}: cannot be read ({exc})") from None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore everything `save_checkpoint` wrote; returns the trainer state (step and extras). `rank`: whose random
    number generators to restore where the checkpoint holds every rank's (else rank 0's, as a one-process run's)."""
    path = Path(path)
    weights = _load_tensors(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise CheckpointDamaged(f"{path}: checkpoint holds weights this model does not have: {unknown[:5]} "
                                "(did parts.*.mode or the LoRA settings change since it was written?)")
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in weights)
    if missing:  # else they would go on from their initial values, with nothing said
        raise CheckpointDamaged(f"{path}: checkpoint lacks trainable weights of this model: {missing[:5]} "
                                "(did parts.*.mode or the LoRA settings change since it was written?)")
    try:
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
    except RuntimeError as exc:
        raise CheckpointDamaged(f"{path}: its weights do not fit this model ({exc})") from None
    state = read_trainer_state(path)
    problem = _state_problem(state) if isinstance(state, dict) else "holds no JSON object"
    if problem:
        raise CheckpointDamaged(f"{path / STATE}: {problem}")
    try:
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(_unflatten_optimizer(_load_tensors(path / "optimizer.safetensors"), state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError) as exc:
        raise CheckpointDamaged(f"{path}: its optimizer or scheduler state does not fit this run ({exc}); "
                                "did the parts being trained change since it was written?") from None
    rng = _load_tensors(path / "rng.safetensors")
    rank_random = state.get("rank_random") or []
    saved = rank if rank < len(rank_random) else 0  # a rank more than were saved (--allow-changes): rank 0's
    own = f"rank{saved}."
    if own + "torch" in rng and rank_random:
        torch.set_rng_state(rng[own + "torch"])
        if torch.cuda.is_available() and own + "cuda" in rng:
            torch.cuda.set_rng_state(rng[own + "cuda"])
        mine = rank_random[saved]
        random.setstate(_tuples(mine["python_random"]))
        np.random.set_state(_tuples(mine["numpy_random"]))
        return state
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(min(torch.cuda.device_count(),
                                                                         sum(k.startswith("cuda") for k in rng)))])
    random.setstate(_tuples(state["python_random"]))
    np.random.set_state(_tuples(state["numpy_random"]))
    return state


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointDamaged(f"{path}: cannot be read ({exc})") from None


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


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to `<name>.damaged[-k]`: out of the way of resuming and pruning, not deleted."""
    target = path.with_name(path.name + ".damaged")
    k = 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.damaged-{k}")
    path.rename(target)
    return target


def _prune(out_dir: Path, keep_last: int) -> None:
    found = sorted((int(m.group(1)), p) for p in out_dir.glob("checkpoint-*") if (m := _NAME.match(p.name)))
    for _, path in found[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
