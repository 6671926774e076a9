"""`adapt quickstart`: the whole adaptation story on CPU in minutes, on generated data.

pocket-tiny (pre-trained on a synthetic "general" world of shapes, colours, counts and positions)
is adapted to a synthetic specialist field — land-cover scenes as multiple choice, plus grounding —
mixed with general data. Base and adapted models are scored on held-out domain and general sets,
side by side. `mixing.general_ratio=0` shows the forgetting that mixing prevents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import yaml

from domains.files import HOST_TAG, STALE_PART_SECONDS, atomic_write, kept_warning, writer_state
from domains.general.world import generate_general, generate_landcover
from model.errors import PocketAdaptError
from model.progress import Progress
from model.resources import templates_dir
from model.yaml_io import load_yaml

from .checkpointing import EVAL_DIR, RunFolderBusy, RunFolderUnusable, RunLock, not_run_outputs
from .evaluate import COMPARISON_PNG, plot_comparison, write_report
from .recipe import _parse_key, _read_text, load_recipe, load_yaml_value, path_override
from .run_eval import eval_kinds, evaluate_model
from .train import train

RS_SAMPLES = 24  # per class / image in the synthetic remote-sensing sets
# candidates listed, answers given as labels: the style pocket-tiny was pre-trained on
GENERAL_OPTIONS = {"answer_style": "label"}
GENERAL_STAMP = ".quickstart-general.json"  # in data/general: the options it was made with, the digest of its files
# prepare_general's staging folders in data/: .general-<pid>@<host>-<random> (a new set), .general-old-<pid>@<host>-
# <random> (the set it replaces, being deleted); <host> is domains.files.HOST_TAG; earlier versions' carry no host or
# no pid
_STAGING = re.compile(r"^\.general-(?:old-)?(?:(?P<pid>\d+)(?:@(?P<host>[0-9a-f]+))?-)?[^/]+$")


class QuickstartError(PocketAdaptError, ValueError):
    """Starting over would lose something the user made."""


def _digest(folder: Path) -> str:
    """SHA-256 of the relative names and bytes of the files under `folder`, its stamp left out."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != GENERAL_STAMP):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _unchanged_general(folder: Path) -> bool:
    """Whether `folder` holds the set its stamp describes: made with :data:`GENERAL_OPTIONS`, no file changed since."""
    try:
        stamp = json.loads((folder / GENERAL_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("options") == GENERAL_OPTIONS and stamp.get("digest") == _digest(folder)


def remove_stale_staging(data: Path) -> list[Path]:
    """Delete the staging folders of :func:`prepare_general` that a killed run (kill -9, power loss) left in `data`;
    returns them, sorted. One is stale when the process its name carries is gone (or is this one, started after it
    was made), judged by :func:`domains.files.writer_state` as every clean-up is; one whose owner cannot be told
    there (no pid or no tag: an earlier version's; another machine's or container's) after a day, and until then it
    is kept and named in a warning. A live run's folder is kept."""
    removed, unknown = [], []
    now = time.time_ns()
    for folder in sorted(data.glob(".general-*")) if data.is_dir() else ():
        m = _STAGING.match(folder.name)
        try:
            st = folder.lstat()
        except OSError:
            continue
        if not m or not folder.is_dir() or folder.is_symlink():
            continue
        state = writer_state(m["pid"], m["host"], st.st_mtime_ns)
        if state == "unknown" and now - st.st_mtime_ns <= STALE_PART_SECONDS * 10**9:
            unknown.append(folder)
        elif state != "alive":
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if unknown:
        warnings.warn(kept_warning(unknown, "staging folder(s)", f"in {data}", "quick start", "quick start"),
                      stacklevel=2)
    return removed


def prepare_general(data: Path, progress: Progress = True, force: bool = False) -> None:
    """``data/general``, the general set every field's quick start mixes in, shared by the quick starts of one OUT:
    a run of another field may be training or scoring on it, so it is never rewritten in place. A set unchanged since
    a quick start made it is reused; otherwise a new one is generated beside it and takes the folder where that is
    empty, or holds an incomplete set (an interrupted generation); an identical one is kept (and stamped). A complete
    set that differs (edited, or an older version's) is refused with :class:`QuickstartError`, unless `force`.
    Staging folders a killed run left behind are removed first (:func:`remove_stale_staging`)."""
    folder = data / "general"
    remove_stale_staging(data)
    if _unchanged_general(folder):
        return
    data.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".general-{os.getpid()}@{HOST_TAG}-", dir=data))
    try:
        generate_general(staging, **GENERAL_OPTIONS, progress=progress)
        digest = _digest(staging)
        complete = all((folder / f"{split}.jsonl").is_file() for split in ("train", "test"))
        if complete and _digest(folder) != digest and not force:
            raise QuickstartError(f"{folder} differs from the general set this quick start generates (edited, or an "
                                  "earlier version's) and runs of this folder may have used it, so it is not "
                                  "rewritten: choose another --out, move it, or pass --force to replace it")
        if not (complete and _digest(folder) == digest):
            if folder.exists():
                old = Path(tempfile.mkdtemp(prefix=f".general-old-{os.getpid()}@{HOST_TAG}-", dir=data))
                os.replace(folder, old / "general")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, folder)
        stamp = json.dumps({"options": GENERAL_OPTIONS, "digest": digest}) + "\n"
        atomic_write(folder / GENERAL_STAMP, lambda f: f.write(stamp), binary=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_general(data: Path, progress: Progress, force: bool) -> None:
    """With `force`, a general set that :func:`prepare_general` would refuse is replaced (the fields' own data
    preparation then finds it ready)."""
    if force and (data / "general").exists() and not _unchanged_general(data / "general"):
        prepare_general(data, progress, force=True)


def prepare_landcover(data: Path, progress: Progress = True) -> None:
    prepare_general(data, progress)
    folder = data / "landcover"
    # the callers have refused a data/landcover a quick start did not write, unless --force: a set an earlier
    # version wrote with other options (which generate_landcover refuses to overwrite) is the quick start's to replace
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").unlink(missing_ok=True)
    generate_landcover(folder, **GENERAL_OPTIONS, progress=progress)


def prepare_remote_sensing(data: Path, progress: Progress = True) -> None:
    """Synthetic GeoTIFF / RSVQA / DIOR-RSVG sets in their public layouts, converted by the plugin."""
    from domains.base import get_domain

    plugin = get_domain("remote_sensing")
    prepare_general(data, progress)  # first: a refusal comes before any other data is written
    raw = plugin.synthesize(data.parent / "raw", n=RS_SAMPLES, show_progress=progress, force=True)
    for dataset in ("ucmerced", "rsvqa_lr", "dior_rsvg"):
        plugin.convert(dataset, raw[dataset], data / "rs", show_progress=progress)


def prepare_driving(data: Path, progress: Progress = True) -> None:
    """Synthetic nuScenes (read through the devkit) and DriveLM QA, converted by the driving plugin."""
    from domains.base import get_domain

    plugin = get_domain("driving")
    prepare_general(data, progress)  # first: a refusal comes before any other data is written
    raw = plugin.synthesize(data.parent / "raw", n_scenes=6, n_frames=4, show_progress=progress, force=True)
    plugin.convert("drivelm", raw["drivelm"], data / "driving", view_mode="stitched", val_fraction=0.34,
                   show_progress=progress)
    # DriveLM's val scenes are nuScenes training scenes: keep their camera pictures out of training
    plugin.convert("nuscenes", raw["nuscenes"], data / "driving", held_out=data / "driving" / "drivelm_val.jsonl",
                   show_progress=progress)


def prepare_medical(data: Path, progress: Progress = True) -> None:
    """Synthetic DICOM CT series with questions, converted (de-identified) by the medical plugin."""
    from domains.base import get_domain

    plugin = get_domain("medical")
    prepare_general(data, progress)  # first: a refusal comes before any other data is written
    raw = plugin.synthesize(data.parent / "raw", n=12, show_progress=progress, force=True)
    for dataset in ("dicom_qa", "vqa_rad", "slake", "pmc_vqa"):
        plugin.convert(dataset, raw[dataset], data / "med", show_progress=progress)


# field -> (recipe template, data preparation)
FIELDS = {
    "landcover": ("quickstart", prepare_landcover),
    "remote_sensing": ("remote-sensing_pocket-tiny_full", prepare_remote_sensing),
    "driving": ("driving_pocket-tiny_full", prepare_driving),
    "medical": ("medical_pocket-tiny_full", prepare_medical),
}


# the folders under out_dir each field's data preparation (re)writes whole
DATA_FOLDERS = {
    "landcover": ("data/general", "data/landcover"),
    "remote_sensing": ("raw", "data/rs", "data/general"),
    "driving": ("raw", "data/driving", "data/general"),
    "medical": ("raw", "data/med", "data/general"),
}
DATA_STAMP = ".quickstart-data.json"  # in out_dir: the folders earlier quick starts wrote there


def _recipe_values(path: Path) -> str | None:
    """The values of the recipe at `path` in a canonical form (keys sorted, comments and layout dropped, 1 and 1.0
    told apart), None where it cannot be read as a small YAML mapping (so it counts as edited)."""
    try:
        document, _ = load_yaml(_read_text(path, str(path), "recipe"), str(path))
        return json.dumps(document, sort_keys=True, default=repr)
    except (OSError, ValueError, TypeError, yaml.YAMLError):  # RecipeError, YAMLContentError: ValueErrors
        return None


def _same_recipe(recipe_path: Path, template: Path) -> bool:
    """Whether `recipe_path` holds the template's values: a copy of an older version of the template, whose
    comments or key order differ, is the same recipe; a changed value is an edit."""
    if recipe_path.read_bytes() == template.read_bytes():
        return True
    values = _recipe_values(recipe_path)
    return values is not None and values == _recipe_values(template)


def _differing_keys(a, b, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two canonical recipe documents (a whole list counts as one)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix]
    return [key for k in sorted(a.keys() | b.keys())
            for key in _differing_keys(a.get(k, ...), b.get(k, ...), f"{prefix}{k}.")]


def _edits(recipe_path: Path, template: Path) -> str:
    """What differs in `recipe_path` from `template`, for the refusal: some keys, or that it does not read."""
    values = _recipe_values(recipe_path)
    document = None if values is None else json.loads(values)
    if not isinstance(document, dict):
        return "it does not read as a recipe"
    keys = [k.rstrip(".") for k in _differing_keys(document, json.loads(_recipe_values(template)))]
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "") + \
        (" differs" if len(keys) == 1 else " differ")


def _refuse_to_lose(recipe_path: Path, template: Path, run_dir: Path) -> None:
    """QuickstartError when starting over would replace an edited recipe or empty a folder of other files."""
    if recipe_path.is_file() and not _same_recipe(recipe_path, template):
        raise QuickstartError(f"{recipe_path} differs from the {template.stem} template (edited?): "
                              f"{_edits(recipe_path, template)}; a quick start would replace it: train it with "
                              f"`adapt train {recipe_path}`, move it, or pass --force to replace it")
    others = not_run_outputs(run_dir)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise QuickstartError(f"{run_dir} holds files `adapt train` did not write ({shown}); a quick start empties "
                              "that folder (its run and `adapt eval` report in eval/ are replaced): move them out, or "
                              "pass --force to delete them too")


def _refuse_live_run(run_dir: Path) -> None:
    """QuickstartError, even with --force, when a run still trains in `run_dir` (another quick start, `adapt train`
    on its recipe): starting over there deleted its checkpoints from under it."""
    if not run_dir.is_dir():
        return
    try:
        RunLock(run_dir).discard()  # taken and let go of at once: only a live holder refuses it
    except RunFolderUnusable:
        return  # the run's own start names what is wrong with the folder
    except RunFolderBusy as err:
        raise QuickstartError(f"{err}; a quick start would delete that run's folder") from None


def _refuse_output_dir(overrides: Sequence[str]) -> None:
    """QuickstartError for an override of output.dir, which a quick start sets to OUT/train (it would be ignored)."""
    for item in overrides:
        key, _, raw = item.partition("=")
        path = _parse_key(key)
        if path[:2] == ["output", "dir"] or (path == ["output"] and isinstance(
                value := load_yaml_value(raw, f"override {key.strip()}=…"), dict) and "dir" in value):
            raise QuickstartError(f"override {item!r}: a quick start trains into OUT/train, so output.dir cannot be "
                                  "set; choose OUT with --out")


def _written_before(out_dir: Path) -> set[str]:
    try:
        return set(json.loads((out_dir / DATA_STAMP).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return set()


def _refuse_to_replace_data(out_dir: Path, field: str) -> None:
    """QuickstartError when a folder the field's data preparation rewrites holds something an earlier quick start
    did not write there (a real data set under ``raw/``, the user's own ``data/general``)."""
    earlier = _written_before(out_dir)
    taken = [out_dir / rel for rel in DATA_FOLDERS[field]
             if rel not in earlier and (out_dir / rel).is_dir() and any((out_dir / rel).iterdir())]
    if taken:
        raise QuickstartError(f"{', '.join(map(str, taken))}: not written by a quick start, and a quick start "
                              "replaces what it holds with synthetic data: choose another --out, move it, or pass --force")


def _stamp_data(out_dir: Path, field: str) -> None:
    # through a temporary file: a stamp cut off by a kill or a full disk made the next quick start refuse its own data
    stamp = json.dumps(sorted(_written_before(out_dir) | set(DATA_FOLDERS[field]))) + "\n"
    atomic_write(out_dir / DATA_STAMP, lambda f: f.write(stamp), binary=False)


def prepare_data(out_dir: Path, field: str = "landcover", progress: Progress = True, force: bool = False) -> Path:
    """Only the data of `field`'s quick start, in ``out_dir/data`` (where its recipe template, copied into
    `out_dir` by `adapt init`, looks for it); returns that folder. Without `force`, folders holding data an
    earlier quick start did not write are refused, not replaced."""
    if field not in FIELDS:
        raise ValueError(f"unknown quick-start field {field!r}; known: {', '.join(FIELDS)}")
    out_dir = Path(out_dir)
    if not force:
        _refuse_to_replace_data(out_dir, field)
    data = out_dir / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    _stamp_data(out_dir, field)  # before writing: a run stopped half-way must not make its rerun refuse its own data
    _replace_general(data, progress, force)
    FIELDS[field][1](data, progress)
    return data


def quickstart(out_dir: Path = Path("runs/quickstart"), overrides: list[str] = (), progress: Progress = True,
               field: str = "landcover", force: bool = False) -> dict:
    """`field`: "landcover" (the default story), or a domain plugin's synthetic raw data, converters and
    recipe template end to end: "remote_sensing", "driving", "medical".

    A quick start starts over: it writes the template as ``out_dir/<template>.yaml``, its synthetic data over the
    folders :data:`DATA_FOLDERS` names (``data/general``, which every field shares, as :func:`prepare_general`
    says: reused where unchanged) and empties ``out_dir/train``. Without `force` it refuses (before writing
    anything) to replace a recipe there whose values differ from the template's (an edited one; comments and key
    order do not count), data folders an earlier quick start did not write, or a ``train`` folder that ``adapt
    train`` did not make."""
    if field not in FIELDS:
        raise ValueError(f"unknown quick-start field {field!r}; known: {', '.join(FIELDS)}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = out_dir / "data"
    template, prepare = FIELDS[field]
    recipe_path = out_dir / f"{template}.yaml"
    source = templates_dir() / "recipes" / f"{template}.yaml"
    run_dir = (out_dir / "train").resolve()
    train_into = path_override("output.dir", run_dir)  # unquoted, `--out "runs/exp #2"` emptied runs/exp
    # overrides are checked before anything is written: a typo costs seconds and loses nothing
    load_recipe(source, [*overrides, train_into])
    _refuse_output_dir(overrides)
    _refuse_live_run(run_dir)
    if not force:
        _refuse_to_lose(recipe_path, source, run_dir)
        _refuse_to_replace_data(out_dir, field)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, recipe_path)
    recipe = load_recipe(recipe_path, [*overrides, train_into])
    print(f"[1/4] generating data in {data}", flush=True)
    _stamp_data(out_dir, field)  # before writing: a run stopped half-way must not make its rerun refuse its own data
    _replace_general(data, progress, force)
    prepare(data, progress)
    earlier_eval = Path(recipe.output.dir) / EVAL_DIR
    if earlier_eval.is_dir():  # the scores of the model this quick start replaces
        print(f"note: removing {earlier_eval}, the `adapt eval` report of the earlier run", flush=True)
    shutil.rmtree(recipe.output.dir, ignore_errors=True)  # a quick start always starts over
    reports = out_dir / "report"

    print(f"[2/4] scoring the base model ({recipe.model.source})", flush=True)
    base = evaluate_model(recipe, recipe.model.source, "base", reports, progress)
    print(f"[3/4] adapting: {recipe.training.max_steps or recipe.training.epochs} "
          f"{'steps' if recipe.training.max_steps else 'epochs'}, general ratio {recipe.mixing.general_ratio}", flush=True)
    final = train(recipe, progress=progress)
    print("[4/4] scoring the adapted model", flush=True)
    adapted = evaluate_model(recipe, final, "adapted", reports, progress)

    runs = {"base": base, "adapted": adapted}
    kinds = eval_kinds(recipe)
    json_path, md_path = write_report(reports, runs, kinds)
    plot_comparison(runs, kinds, reports / COMPARISON_PNG)
    print(md_path.read_text(encoding="utf-8"), flush=True)
    minutes = (time.perf_counter() - started) / 60
    print(f"done in {minutes:.1f} min — report {md_path}, loss curve {Path(recipe.output.dir) / 'loss.png'}, "
          f"model {final}", flush=True)
    return {"base": base, "adapted": adapted, "minutes": minutes, "final": final, "report": md_path}
