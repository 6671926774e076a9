"""Fault campaign (issue 14): replay every reliability defect end to end and print what happened.

    python bench/fault_campaign.py                      # run every case, print the table (exit 1 if any fails)
    python bench/fault_campaign.py --only yaml-bomb,lr-inf
    python bench/fault_campaign.py --list
    python bench/fault_campaign.py --write              # and replace README.md's `fault_campaign` section

Each case does what a user would: it runs the real `adapt` command line (``python -m adapt.cli``) in a fresh
temporary folder, on small inputs it makes itself (noise PNGs, a tiny recipe on pocket-tiny with a few steps,
synthetic converter inputs from `adapt synthesize`, a pocket checkpoint from `adapt export`), then checks the
exit status, the key phrase of the message, that a promised one-line error has no traceback, and the files
left behind. Nothing is downloaded and nothing is written outside the temporary folder. The children import
this checkout's code (PYTHONPATH), so a copy of the repository tests itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's bench.sections and model.tiling, also when run as a script
README = ROOT / "README.md"
SECTION = "fault_campaign"
COMMAND = "python bench/fault_campaign.py --write"
TIMEOUT = 240  # seconds any one command may take before the case fails as a hang

N = 8  # records per data source
RECIPE = """\
name: tiny
model: {source: pocket-tiny}
parts:
  projector: {mode: full, lr: 1.0e-3}
  llm: {mode: lora, lr: 1.0e-3, lora: {r: 2, alpha: 4, dropout: 0.0}}
data:
  sources:
    - {name: field, path: FIELD, kind: domain}
    - {name: general, path: GENERAL, kind: general}
  max_bad_fraction: 0.05
mixing: {general_ratio: 0.5, seed: 1}
training: {max_steps: 3, batch_size: 2, warmup_ratio: 0.0, max_seq_length: 256, schedule: constant}
output: {dir: out, save_every: 1, keep_last: 5}
logging: {tensorboard: false}
"""


class Failed(Exception):
    """A case's outcome differs from what it expects; the message is the observed outcome."""


def expect(condition: bool, observed: str) -> None:
    if not condition:
        raise Failed(observed)


def last_line(text: str, width: int = 150) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no output)"
    return line if len(line) <= width else line[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------- running adapt
@dataclass
class Ran:
    """One finished command: exit status (None: killed after the timeout), output and seconds."""

    argv: list[str]
    cwd: Path
    rc: int | None
    out: str
    err: str
    seconds: float

    def status(self) -> str:
        return f"timed out after {self.seconds:.0f} s" if self.rc is None else f"exit {self.rc} in {self.seconds:.1f} s"

    def error(self, verb: str) -> str:
        """The message after ``adapt VERB: error:`` (to the end of stderr), or ''."""
        marker = f"adapt {verb}: error: "
        at = self.err.find(marker)
        return self.err[at + len(marker):].strip() if at >= 0 else ""

    def failed(self) -> Failed:
        return Failed(f"{self.status()}: {self.local(last_line(self.err or self.out))}")

    def local(self, text: str) -> str:
        """`text` with the temporary folders left out: paths as the user typed them."""
        return text.replace(f"{self.cwd}{os.sep}", "").replace(str(self.cwd.parents[1]), "…")


def child_env() -> dict[str, str]:
    """This checkout's code first, no network, no GPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg",
               PYTHONUNBUFFERED="1")
    return env


def python(args: list[str], cwd: Path, timeout: float = TIMEOUT, umask: int = -1) -> Ran:
    """Run ``python ARGS`` in `cwd`; a command still running after `timeout` is killed (rc None). What it printed
    is kept in `cwd`/commands.log (see --keep)."""
    argv = [sys.executable, *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout,
                              umask=umask, errors="replace")
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        out, err = (x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
    ran = Ran(argv, cwd, rc, out, err, time.perf_counter() - start)
    with open(cwd / "commands.log", "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(args)}\n{ran.status()}\n--- stdout\n{out}\n--- stderr\n{err}\n\n")
    return ran


def adapt(*args: str, cwd: Path, timeout: float = TIMEOUT, umask: int = -1) -> Ran:
    """Run ``adapt ARGS`` (the real command line) in `cwd`."""
    return python(["-m", "adapt.cli", *args], cwd, timeout, umask)


def excerpt(message: str, phrase: str, width: int = 110) -> str:
    """The line of `message` holding `phrase`, cut to about `width` characters around it at word boundaries."""
    line = next((x for x in message.splitlines() if phrase in x), message.splitlines()[0]).strip()
    if len(line) <= width:
        return line
    start = max(0, min(line.find(phrase) - width // 3, len(line) - width))
    if start:
        start = line.find(" ", start) + 1 or start
    end = line.rfind(" ", start, start + width)
    end = len(line) if start + width >= len(line) else (end if end > start else start + width)
    return ("…" if start else "") + line[start:end].strip() + ("…" if end < len(line) else "")


def refused(ran: Ran, verb: str, *phrases: str, one_line: bool = True, within: float | None = None) -> str:
    """Check a command that must fail cleanly: exit 1, ``adapt VERB: error:`` holding every phrase, no traceback,
    the message on one line (when promised) and, with `within`, in that many seconds. Returns the outcome."""
    message = ran.error(verb)
    ok = (ran.rc == 1 and message and "Traceback" not in ran.err and all(p in message for p in phrases)
          and (not one_line or "\n" not in message) and (within is None or ran.seconds < within))
    if not ok:
        raise ran.failed()
    shown = excerpt(ran.local(message), phrases[0])
    return f"{ran.status()}{', one line' if one_line else ''}: \"{shown}\""


def succeeded(ran: Ran) -> None:
    if ran.rc != 0:
        raise ran.failed()


# ---------------------------------------------------------------------------------------------- inputs
def noise_png(path: Path, seed: int, size: int = 112) -> None:
    """Incompressible pixels: cutting the file in half leaves a readable header and a body that fails to decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_recipe(folder: Path, data: Path, name: str = "tiny.yaml") -> Path:
    """The tiny recipe in `folder` over the data sources in `data` (output: `folder`/out)."""
    text = RECIPE.replace("FIELD", json.dumps(str(data / "field" / "train.jsonl")))
    path = folder / name
    path.write_text(text.replace("GENERAL", json.dumps(str(data / "general" / "train.jsonl"))))
    return path


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG claiming `width` x `height` grey pixels that holds one row: cheap to open, huge to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


def log_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- shared inputs
class Workspace:
    """The campaign's temporary folder: one fresh folder per case, and inputs several cases read (made once,
    on first use, and only ever copied or read by the cases)."""

    def __init__(self, root: Path):
        self.root = root
        self.shared = root / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path | Failed] = {}

    def case_folder(self, name: str) -> Path:
        folder = self.root / "cases" / name
        folder.mkdir(parents=True)
        return folder

    def _once(self, key: str, make: Callable[[Path], None]) -> Path:
        if key not in self._made:
            target = self.shared / key
            try:
                make(target)
                self._made[key] = target
            except Failed as exc:
                self._made[key] = Failed(f"setup of {key} failed: {exc}")
        made = self._made[key]
        if isinstance(made, Failed):
            raise made
        return made

    def data(self) -> Path:
        """`field` and `general` sources of 8 noise PNGs each, one question per image."""
        def make(root: Path) -> None:
            for source, question in (("field", "Which field?"), ("general", "Which shape?")):
                lines = []
                for k in range(N):
                    noise_png(root / source / f"{k}.png", seed=k + (100 if source == "general" else 0))
                    lines.append(json.dumps({"image": f"{k}.png", "conversations": [
                        {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": f"answer {k % 3}"}]}))
                (root / source / "train.jsonl").write_text("\n".join(lines) + "\n")

        return self._once("data", make)

    def data_copy(self, folder: Path) -> Path:
        """A copy of the data in `folder`/data, for a case that damages it."""
        return Path(shutil.copytree(self.data(), folder / "data"))

    def base_run(self) -> Path:
        """The `out` folder of a finished 3-step run of the tiny recipe (checkpoint-1..3 and final/)."""
        def make(folder: Path) -> None:
            folder.mkdir()
            succeeded(adapt("train", str(write_recipe(folder, self.data())), "--no-progress", cwd=folder))

        return self._once("run", make) / "out"

    def resumable(self, folder: Path, drop: tuple[str, ...] = ("checkpoint-3", "final")) -> Path:
        """A copy of the base run in `folder`/out without `drop` (a run stopped after checkpoint-2), and the
        recipe beside it (same data; only output.dir differs, an edit resuming allows). Returns the recipe."""
        out = Path(shutil.copytree(self.base_run(), folder / "out"))
        for name in drop:
            shutil.rmtree(out / name)
        return write_recipe(folder, self.data())

    def pocket(self) -> Path:
        """pocket-tiny exported in the pocket layout (`adapt export --format pocket`)."""
        def make(target: Path) -> None:
            succeeded(adapt("export", "--format", "pocket", "--model", "pocket-tiny", "--out", target.name,
                            cwd=target.parent))

        return self._once("ck", make)

    def pocket_copy(self, folder: Path, name: str = "ck") -> Path:
        return Path(shutil.copytree(self.pocket(), folder / name))

    def raw(self) -> Path:
        """Synthetic UC Merced and EuroSAT-MS raw folders (`adapt synthesize remote_sensing`, one image a class)."""
        def make(target: Path) -> None:
            succeeded(adapt("synthesize", "remote_sensing", "--out", target.name, "--option", "n=1",
                            "--option", "kinds=[ucmerced, eurosat_ms]", cwd=target.parent))

        return self._once("raw", make)


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    defects: tuple[int, ...]
    title: str
    expected: str
    run: Callable[[Workspace, Path], str]  # returns the observed outcome; raises Failed


CASES: list[Case] = []


def case(name: str, defects: tuple[int, ...], title: str, expected: str):
    def register(run: Callable[[Workspace, Path], str]) -> Callable[[Workspace, Path], str]:
        CASES.append(Case(name, defects, title, expected, run))
        return run

    return register


# ----------------------------------------------------------------- 1: images that fail only at decode time
@case("undecodable-images", (1,), "`adapt train` with all 8 field images truncated (headers intact), 2 data workers",
      "exit 1, 'too many bad records' … 'do not decode'; out/skips.md lists 'image does not decode'; no final/")
def _undecodable_images(ws: Workspace, folder: Path) -> str:
    data = ws.data_copy(folder)
    for k in range(N):
        cut(data / "field" / f"{k}.png")
    ran = adapt("train", str(write_recipe(folder, data)), "--no-progress", "training.num_workers=2", cwd=folder)
    outcome = refused(ran, "train", "too many bad records", "do not decode", one_line=False)
    out = folder / "out"
    expect((out / "skips.md").is_file() and "image does not decode" in (out / "skips.md").read_text(),
           f"{ran.status()}, but out/skips.md does not list 'image does not decode'")
    expect(not (out / "final").exists(), f"{ran.status()}, but out/final/ was written")
    return f"{outcome}; skips.md lists the decode failures; no final/"


@case("eval-undecodable", (1,), "`adapt eval` over an eval source with 2 of 8 images truncated",
      "exit 1, 'field: 2 of 8'; eval skips.md lists 'image does not decode'")
def _eval_undecodable(ws: Workspace, folder: Path) -> str:
    data = ws.data_copy(folder)
    for k in range(2):
        cut(data / "field" / f"{k}.png")
    source = f"data.eval_sources=[{{name: field, path: {json.dumps(str(data / 'field' / 'train.jsonl'))}}}]"
    ran = adapt("eval", str(write_recipe(folder, data)), source, "eval.max_new_tokens=2", "--out", "ev", cwd=folder)
    outcome = refused(ran, "eval", "field: 2 of 8", one_line=False)
    skips = folder / "ev" / "skips.md"
    expect(skips.is_file() and "image does not decode" in skips.read_text(),
           f"{ran.status()}, but ev/skips.md does not list 'image does not decode'")
    return f"{outcome}; ev/skips.md lists both"


# ----------------------------------------------------------------- 2: YAML alias bombs
@case("yaml-bomb", (2,), "`adapt validate` on a recipe of 9 levels of 9 aliases (a billion laughs)",
      "exit 1 in < 30 s (it hung before), one line 'YAML aliases expand to more than 100,000 values'")
def _yaml_bomb(ws: Workspace, folder: Path) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    (folder / "bomb.yaml").write_text("\n".join(lines) + "\n")
    ran = adapt("validate", "bomb.yaml", cwd=folder, timeout=60)
    return refused(ran, "validate", "YAML aliases expand to more than 100,000 values", within=30)


# ----------------------------------------------------------------- 3: one pickle gate
@case("pickle-pocket", (3,), "`adapt inspect` a pocket checkpoint holding only pytorch_model.bin",
      "exit 1, one line naming --allow-pickle; with --allow-pickle exit 0")
def _pickle_pocket(ws: Workspace, folder: Path) -> str:
    import torch
    from safetensors.torch import load_file

    ck = ws.pocket_copy(folder)
    torch.save(load_file(str(ck / "model.safetensors")), ck / "pytorch_model.bin")
    (ck / "model.safetensors").unlink()
    outcome = refused(adapt("inspect", "--model", "ck", cwd=folder), "inspect", "--allow-pickle")
    allowed = adapt("inspect", "--model", "ck", "--allow-pickle", cwd=folder)
    succeeded(allowed)
    expect("language model" in allowed.out, f"--allow-pickle: {allowed.status()} but no description printed")
    return f"{outcome}; --allow-pickle: {allowed.status()}"


# ----------------------------------------------------------------- 4: non-finite numbers
@case("lr-inf", (4,), "`adapt validate tiny.yaml parts.llm.lr=.inf`",
      "exit 1, one line 'must be a finite number'")
def _lr_inf(ws: Workspace, folder: Path) -> str:
    ran = adapt("validate", str(write_recipe(folder, ws.data())), "parts.llm.lr=.inf", cwd=folder)
    return refused(ran, "validate", "must be a finite number", "parts.llm.lr")


@case("nan-loss", (4,), "`adapt train` with learning rates of 1e30",
      "exit 1, 'not finite' at a named step; no final/; every checkpoint written holds finite weights")
def _nan_loss(ws: Workspace, folder: Path) -> str:
    from safetensors.numpy import load_file

    ran = adapt("train", str(write_recipe(folder, ws.data())), "--no-progress", "parts.projector.lr=1.0e+30",
                "parts.llm.lr=1.0e+30", cwd=folder)
    outcome = refused(ran, "train", "not finite", "step ")
    out = folder / "out"
    expect(not (out / "final").exists(), f"{ran.status()}, but out/final/ was written")
    checkpoints = sorted(out.glob("checkpoint-*"))
    for checkpoint in checkpoints:
        weights = load_file(str(checkpoint / "trainable.safetensors"))
        expect(all(np.isfinite(w).all() for w in weights.values()), f"{checkpoint.name} holds non-finite weights")
    return f"{outcome}; no final/, {len(checkpoints)} checkpoint(s), all finite"


# ----------------------------------------------------------------- 5: one image reader
def _chat_reads(folder: Path, image: str) -> Ran:
    ran = adapt("chat", "--image", image, "--max-new-tokens", "1", cwd=folder)
    succeeded(ran)
    expect("1 image(s)" in ran.err, f"{ran.status()}, but no '1 image(s)' line")
    return ran


def _load_image(path: Path) -> np.ndarray:
    """The pixels of the one image reader of training, eval, chat and the demo."""
    from model.tiling import load_image

    return np.asarray(load_image(path))


@case("png-16bit", (5,), "a 12-bit scan in a 16-bit PNG: `adapt chat --image`, then the shared reader's pixels",
      "chat exit 0; pixels stretched to 8 bit, under 10 % white (94 % before)")
def _png_16bit(ws: Workspace, folder: Path) -> str:
    values = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 2).astype(np.uint16)  # 0..4094
    Image.fromarray(values).save(folder / "ct16.png")
    ran = _chat_reads(folder, "ct16.png")
    px = _load_image(folder / "ct16.png")
    white, levels = float((px == 255).mean()), len(np.unique(px))
    expect(white < 0.1 and levels > 200, f"{white:.0%} white, {levels} grey levels")
    return f"chat {ran.status()}; {white:.0%} white, {levels} grey levels"


@case("tiff-float", (5,), "a float32 reflectance TIFF (0..1, one NaN): `adapt chat --image`, then the reader's pixels",
      "chat exit 0; pixels stretched over 0..255 (all 0 or 1 before), the NaN pixel black")
def _tiff_float(ws: Workspace, folder: Path) -> str:
    values = np.linspace(0.0, 1.0, 40 * 20, dtype=np.float32).reshape(20, 40)
    values[0, 0] = np.nan
    Image.fromarray(values, mode="F").save(folder / "reflectance.tif")
    ran = _chat_reads(folder, "reflectance.tif")
    px = _load_image(folder / "reflectance.tif")[..., 0]
    levels = len(np.unique(px))
    expect(px.max() == 255 and levels > 200 and px[0, 0] == 0, f"max {px.max()}, {levels} levels, NaN -> {px[0, 0]}")
    return f"chat {ran.status()}; max 255, {levels} levels, NaN pixel black"


@case("exif-phone", (5,), "a phone JPEG stored sideways with EXIF orientation 6: `adapt chat --image`, then the reader",
      "chat exit 0; the image comes out upright (30x60, red on top)")
def _exif_phone(ws: Workspace, folder: Path) -> str:
    upright = Image.new("RGB", (30, 60), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 30, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show"
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "phone.jpg", quality=95, exif=exif)
    ran = _chat_reads(folder, "phone.jpg")
    px = _load_image(folder / "phone.jpg")
    height, width = px.shape[:2]
    r, _, b = (int(v) for v in px[5, 15])
    expect((width, height) == (30, 60) and r > 200 and b < 60, f"{width}x{height}, top pixel rgb {tuple(px[5, 15])}")
    return f"chat {ran.status()}; {width}x{height}, red on top"


# ----------------------------------------------------------------- 6: bounded tile counts
@case("max-tiles", (6,), "`adapt tiles 100x100 --max-tiles 5000`; `adapt validate … tiling.max_tiles=5000`",
      "in seconds (the tile search was cubic): tiles a usage error (exit 2) naming --max-tiles and the bound of 40, "
      "validate exit 1, one line naming tiling.max_tiles and 40")
def _max_tiles(ws: Workspace, folder: Path) -> str:
    tiles = adapt("tiles", "100x100", "--max-tiles", "5000", cwd=folder, timeout=60)
    expect(tiles.rc == 2 and "--max-tiles: must be at most 40" in tiles.err and "Traceback" not in tiles.err
           and tiles.seconds < 30, f"tiles: {tiles.status()}: {last_line(tiles.err)}")
    outcome = f"{tiles.status()}, usage error naming --max-tiles and 40"
    recipe = adapt("validate", str(write_recipe(folder, ws.data())), "tiling.max_tiles=5000", cwd=folder, timeout=60)
    refused(recipe, "validate", "tiling.max_tiles", "40", within=30)
    return f"tiles: {outcome}; validate: {recipe.status()}, one line naming tiling.max_tiles and 40"


# ----------------------------------------------------------------- 7: one run per output folder
@case("two-runs", (7,), "a second `adapt train` on the output folder of one that is running",
      "the second exits 1, one line 'is in use by another run (pid <first>'; the first finishes (exit 0, final/)")
def _two_runs(ws: Workspace, folder: Path) -> str:
    recipe = write_recipe(folder, ws.data())
    argv = ["train", str(recipe), "--no-progress", "training.max_steps=300", "output.save_every=1000"]
    log = folder / "out" / "train_log.jsonl"
    with open(folder / "first.out", "w") as out, open(folder / "first.err", "w") as err:
        first = subprocess.Popen([sys.executable, "-m", "adapt.cli", *argv], cwd=folder, env=child_env(),
                                 stdout=out, stderr=err)
    try:
        deadline = time.time() + TIMEOUT
        while first.poll() is None and not log.is_file() and time.time() < deadline:
            time.sleep(0.1)
        expect(first.poll() is None and log.is_file(),
               f"the first run did not start training: {last_line((folder / 'first.err').read_text())}")
        second = adapt(*argv, cwd=folder)
        expect(first.poll() is None, "the first run ended before the second was refused; raise its max_steps")
        outcome = refused(second, "train", f"is in use by another run (pid {first.pid}")
        # the first run is long on purpose (it must outlive the second's start-up): on a slow or busy machine its
        # 300 steps take many times one command's hang limit, so a hang here is no new logged step within the limit
        rc, logged = None, -1
        while rc is None:
            try:
                rc = first.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                lines = log.read_text().count("\n")  # complete lines (a step being written is not counted yet)
                expect(lines > logged, f"second: {outcome}; but the first logged no step in {TIMEOUT} s (a hang)")
                logged = lines
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    expect(rc == 0 and (folder / "out" / "final").is_dir(),
           f"second: {outcome}; but the first: exit {rc}, {last_line((folder / 'first.err').read_text())}")
    outcome = outcome.replace(f"pid {first.pid} on {socket.gethostname()}", "pid N on HOST")
    return f"second: {outcome}; first: exit 0, {log_steps(log.parent)[-1]} steps, final/"


# ----------------------------------------------------------------- 8 and 10: damaged files in the run folder
@case("torn-log", (8,), "resume (`adapt train`) a run whose train_log.jsonl ends in a torn line",
      "exit 0: the torn line is dropped with a note, the run resumes from checkpoint-2 and finishes")
def _torn_log(ws: Workspace, folder: Path) -> str:
    recipe = ws.resumable(folder)
    log = folder / "out" / "train_log.jsonl"
    lines = log.read_text().splitlines()[:2]
    log.write_text("\n".join(lines) + '\n{"step": 3, "epoch": 0.375, "lo')  # killed while writing
    ran = adapt("train", str(recipe), "--no-progress", cwd=folder)
    succeeded(ran)
    expect("dropped an incomplete last line" in ran.out and "checkpoint-2 (step 2 of 3)" in ran.out,
           f"{ran.status()}, but no note on the torn line or no resume")
    steps = log_steps(folder / "out")
    expect(steps == [1, 2, 3] and (folder / "out" / "final").is_dir(), f"{ran.status()}, log steps {steps}")
    return f"{ran.status()}: torn line dropped with a note, resumed at step 2, log steps 1-3, final/"


@case("corrupt-trainer-state", (8,), "resume a run whose only checkpoint has a torn trainer_state.json",
      "exit 1, one line naming checkpoint-2/trainer_state.json; the checkpoint is kept")
def _corrupt_trainer_state(ws: Workspace, folder: Path) -> str:
    recipe = ws.resumable(folder, drop=("checkpoint-1", "checkpoint-3", "final"))
    cut(folder / "out" / "checkpoint-2" / "trainer_state.json")
    ran = adapt("train", str(recipe), "--no-progress", cwd=folder)
    outcome = refused(ran, "train", str(Path("checkpoint-2") / "trainer_state.json"), "no checkpoint can be resumed")
    expect((folder / "out" / "checkpoint-2").is_dir(), f"{outcome}, but checkpoint-2 is gone")
    return outcome


# ----------------------------------------------------------------- 9: recipe edited before resuming
@case("recipe-edit", (9,), "resume after changing parts.llm.lr; then again with --allow-changes",
      "exit 1 listing 'parts.llm.lr: 0.001 -> 0.002' and --allow-changes; with it exit 0 and the run finishes")
def _recipe_edit(ws: Workspace, folder: Path) -> str:
    recipe = ws.resumable(folder)
    edited = ["train", str(recipe), "--no-progress", "parts.llm.lr=2.0e-3"]
    outcome = refused(adapt(*edited, cwd=folder), "train", "parts.llm.lr: 0.001 -> 0.002", "--allow-changes",
                      one_line=False)
    allowed = adapt(*edited, "--allow-changes", cwd=folder)
    succeeded(allowed)
    steps = log_steps(folder / "out")
    expect(steps == [1, 2, 3] and (folder / "out" / "final").is_dir(), f"--allow-changes: log steps {steps}")
    return f"{outcome}; --allow-changes: {allowed.status()}, resumed and finished"


@case("damaged-newest-ckpt", (10,), "resume a run whose newest checkpoint (3) has a torn trainer_state.json",
      "exit 0 with a warning; resumes from checkpoint-2; the damaged one kept as checkpoint-3.damaged")
def _damaged_newest(ws: Workspace, folder: Path) -> str:
    recipe = ws.resumable(folder, drop=("final",))
    out = folder / "out"
    cut(out / "checkpoint-3" / "trainer_state.json")
    ran = adapt("train", str(recipe), "--no-progress", cwd=folder)
    succeeded(ran)
    expect("checkpoint-3 is damaged" in ran.out and "resuming from checkpoint-2" in ran.out,
           f"{ran.status()}, but no warning naming checkpoint-3 and checkpoint-2")
    expect((out / "checkpoint-3.damaged" / "trainer_state.json").is_file() and (out / "final").is_dir(),
           f"{ran.status()}, but checkpoint-3.damaged or final/ is missing")
    return f"{ran.status()}: warning, resumed from checkpoint-2, checkpoint-3.damaged kept, final/"


# ----------------------------------------------------------------- 11: export into a non-empty folder
@case("export-nonempty", (11, 14), "`adapt export --format pocket` into an earlier export (plus a stale shard index "
      "and a file of the user's); then with --force under umask 027",
      "exit 1 'not empty' … '--force', nothing touched; --force: exit 0, stale index gone, user's file kept, "
      "files 0640")
def _export_nonempty(ws: Workspace, folder: Path) -> str:
    ck = ws.pocket_copy(folder)
    (ck / "model.safetensors.index.json").write_text('{"weight_map": {"x": "model-00001-of-00002.safetensors"}}')
    (ck / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    argv = ["export", "--format", "pocket", "--model", "pocket-tiny", "--out", "ck"]
    outcome = refused(adapt(*argv, cwd=folder), "export", "not empty", "--force")
    expect({p.name: p.read_bytes() for p in ck.iterdir()} == before, f"{outcome}, but the folder was changed")
    forced = adapt(*argv, "--force", cwd=folder, umask=0o027)
    succeeded(forced)
    expect(not (ck / "model.safetensors.index.json").exists() and (ck / "notes.txt").read_text() == "mine",
           f"--force: {forced.status()}, but the stale index is still there or notes.txt changed")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ck.iterdir() if p.name != "notes.txt"}
    expect(set(modes.values()) == {0o640}, f"--force: modes {sorted({oct(m) for m in modes.values()})}")
    return f"{outcome}; --force: {forced.status()}, stale index removed, notes.txt kept, files 0640"


# ----------------------------------------------------------------- 12: stale converted images
@case("stale-images", (12,), "`adapt convert remote_sensing eurosat_ms`, then again with --option bands=[8,4,3]",
      "both exit 0; the second rewrites every PNG (they kept the first bands before)")
def _stale_images(ws: Workspace, folder: Path) -> str:
    argv = ["convert", "remote_sensing", "eurosat_ms", "--src", str(ws.raw() / "eurosat_ms"), "--out", "e"]
    succeeded(adapt(*argv, cwd=folder))
    first = {p: p.read_bytes() for p in sorted((folder / "e").rglob("*.png"))}
    ran = adapt(*argv, "--option", "bands=[8, 4, 3]", cwd=folder)
    succeeded(ran)
    second = {p: p.read_bytes() for p in sorted((folder / "e").rglob("*.png"))}
    changed = sum(first[p] != second.get(p) for p in first)
    expect(first and first.keys() == second.keys() and changed == len(first),
           f"{changed} of {len(first)} PNGs rewritten")
    return f"{ran.status()}; {changed} of {len(first)} PNGs rewritten"


# ----------------------------------------------------------------- 13: one-line errors, Ctrl-C
@case("out-is-file", (13,), "`adapt convert remote_sensing ucmerced --out f` where f is a file",
      "exit 1, one line 'is a file, not a folder'; f unchanged")
def _out_is_file(ws: Workspace, folder: Path) -> str:
    (folder / "f").write_text("not a folder")
    ran = adapt("convert", "remote_sensing", "ucmerced", "--src", str(ws.raw() / "ucmerced"), "--out", "f", cwd=folder)
    outcome = refused(ran, "convert", "is a file, not a folder")
    expect((folder / "f").read_text() == "not a folder", f"{outcome}, but f was changed")
    return outcome


DISK_FULL = """\
import errno, os, sys
import domains.files
real = domains.files.os.replace
def full(src, dst, *args, **kwargs):
    if os.path.abspath(dst).startswith(os.path.abspath("o")):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))
    return real(src, dst, *args, **kwargs)
domains.files.os.replace = full
from adapt.cli import main
sys.exit(main(sys.argv[1:]))
"""


@case("disk-full", (13,), "`adapt convert` while the disk is full (os.replace fails with ENOSPC, simulated)",
      "exit 1, one line 'disk full'; no .part file left")
def _disk_full(ws: Workspace, folder: Path) -> str:
    ran = python(["-c", DISK_FULL, "convert", "remote_sensing", "ucmerced", "--src", str(ws.raw() / "ucmerced"),
                  "--out", "o"], folder)
    outcome = refused(ran, "convert", "disk full")
    parts = list((folder / "o").rglob("*.part"))
    expect(not parts, f"{outcome}, but {len(parts)} .part file(s) left")
    return f"{outcome}; no .part left"


@case("unknown-option", (13,), "`adapt convert remote_sensing ucmerced --option colour=red`",
      "exit 1, one line 'no option 'colour'' naming the known ones; nothing written")
def _unknown_option(ws: Workspace, folder: Path) -> str:
    ran = adapt("convert", "remote_sensing", "ucmerced", "--src", str(ws.raw() / "ucmerced"), "--out", "o",
                "--option", "colour=red", cwd=folder)
    outcome = refused(ran, "convert", "no option 'colour'", "bands")
    expect(not (folder / "o").exists(), f"{outcome}, but o/ was written")
    return outcome


@case("option-without-equals", (13,), "`adapt synthesize general --option n`",
      "exit 1, one line ''n' is not KEY=VALUE'; nothing written")
def _option_without_equals(ws: Workspace, folder: Path) -> str:
    ran = adapt("synthesize", "general", "--out", "g", "--option", "n", cwd=folder)
    outcome = refused(ran, "synthesize", "--option 'n' is not KEY=VALUE")
    expect(not (folder / "g").exists(), f"{outcome}, but g/ was written")
    return outcome


@case("ctrl-c", (13,), "Ctrl-C (SIGINT) during a long `adapt chat` answer (pocket-tiny-scratch, 3000 tokens)",
      "exit 130 within seconds, the one line 'adapt chat: interrupted', no traceback")
def _ctrl_c(ws: Workspace, folder: Path) -> str:
    argv = [sys.executable, "-m", "adapt.cli", "chat", "--model", "pocket-tiny-scratch", "--example-image",
            "--max-new-tokens", "3000", "--keep-repeats"]  # a random model may loop; the answer must still be running
    err_path = folder / "chat.err"
    with open(folder / "chat.out", "w") as out, open(err_path, "w") as err:
        chat = subprocess.Popen(argv, cwd=folder, env=child_env(), stdout=out, stderr=err)
    try:
        deadline = time.time() + TIMEOUT
        while chat.poll() is None and "tile(s)" not in err_path.read_text() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # well into the answer
        expect(chat.poll() is None, f"chat ended before Ctrl-C: exit {chat.returncode}, {last_line(err_path.read_text())}")
        chat.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        rc = chat.wait(timeout=60)
        seconds = time.perf_counter() - sent
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    text = err_path.read_text()
    words = len((folder / "chat.out").read_text().split())
    expect(rc == 130 and "Traceback" not in text and last_line(text) == "adapt chat: interrupted",
           f"exit {rc}: {last_line(text)}")
    return f"exit 130 {seconds:.1f} s after SIGINT ({words} words answered), 'adapt chat: interrupted'"


@case("corrupt-safetensors", (13, 15), "`adapt inspect` a pocket checkpoint without SHA256SUMS (as training's final/) "
      "whose model.safetensors is cut to 200 bytes", "exit 1, one line naming ck/model.safetensors")
def _corrupt_safetensors(ws: Workspace, folder: Path) -> str:
    ck = ws.pocket_copy(folder)
    (ck / "SHA256SUMS").unlink()
    cut_to = (ck / "model.safetensors").read_bytes()[:200]
    (ck / "model.safetensors").write_bytes(cut_to)
    ran = adapt("inspect", "--model", "ck", cwd=folder)
    return refused(ran, "inspect", str(Path("ck") / "model.safetensors"), "not a readable safetensors file")


@case("damaged-export", (13, 15), "`adapt inspect` an exported checkpoint whose model.safetensors has 64 bytes flipped "
      "in place (same size, header intact)", "exit 1, one line naming ck/model.safetensors and its SHA-256 mismatch")
def _damaged_export(ws: Workspace, folder: Path) -> str:
    ck = ws.pocket_copy(folder)
    weights = ck / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    weights.write_bytes(bytes(data))
    ran = adapt("inspect", "--model", "ck", cwd=folder)
    return refused(ran, "inspect", str(Path("ck") / "model.safetensors"), "do not match the SHA-256")


@case("ckpt-is-file", (13, 15), "`adapt inspect --model ck/model.safetensors` (a file, not the checkpoint folder)",
      "exit 1, one line 'is a file, not a checkpoint folder'")
def _ckpt_is_file(ws: Workspace, folder: Path) -> str:
    ws.pocket_copy(folder)
    ran = adapt("inspect", "--model", str(Path("ck") / "model.safetensors"), cwd=folder)
    return refused(ran, "inspect", "is a file, not a checkpoint folder")


@case("config-list", (13, 15), "`adapt inspect` a checkpoint whose config.json holds [1, 2]",
      "exit 1, one line naming ck/config.json and 'must hold a JSON object'")
def _config_list(ws: Workspace, folder: Path) -> str:
    ck = ws.pocket_copy(folder)
    (ck / "config.json").write_text("[1, 2]")
    ran = adapt("inspect", "--model", "ck", cwd=folder)
    return refused(ran, "inspect", str(Path("ck") / "config.json"), "JSON object")


@case("no-tokenizer", (13, 15), "`adapt inspect` a checkpoint without its tokenizer files",
      "exit 1, one line 'no tokenizer files' (not blamed on sentencepiece)")
def _no_tokenizer(ws: Workspace, folder: Path) -> str:
    ck = ws.pocket_copy(folder)
    for f in ck.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "merges", "special_tokens", "added_tokens", "chat_template")):
            f.unlink()
    ran = adapt("inspect", "--model", "ck", cwd=folder)
    outcome = refused(ran, "inspect", "no tokenizer files")
    expect("sentencepiece" not in ran.error("inspect"), f"{outcome}, but it mentions sentencepiece")
    return outcome


# ----------------------------------------------------------------- 14: files follow the umask
@case("umask", (14,), "`adapt train` (1 step) under umask 027", "exit 0; every file in out/ is 0640")
def _umask(ws: Workspace, folder: Path) -> str:
    ran = adapt("train", str(write_recipe(folder, ws.data())), "--no-progress", "training.max_steps=1", cwd=folder,
                umask=0o027)
    succeeded(ran)
    out = folder / "out"
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    wrong = {k: oct(m) for k, m in modes.items() if m != 0o640}
    expect(modes and not wrong, f"{ran.status()}, but {len(wrong)} file(s) not 0640, e.g. {next(iter(wrong.items()), '')}")
    return f"{ran.status()}; all {len(modes)} files 0640"


# ----------------------------------------------------------------- 15: odd inputs
@case("non-utf8-jsonl", (15,), "`adapt train` on a JSONL with a Latin-1 line (byte 0xe9)",
      "exit 0; the line skipped and counted as 'not UTF-8' in out/skips.json, never trained on as mojibake")
def _non_utf8(ws: Workspace, folder: Path) -> str:
    data = ws.data_copy(folder)
    record = {"image": "0.png", "conversations": [{"from": "human", "value": "<image>\nCafé?"},
                                                  {"from": "gpt", "value": "Oui."}]}
    with open(data / "field" / "train.jsonl", "ab") as fh:
        fh.write(json.dumps(record, ensure_ascii=False).encode("latin-1") + b"\n")
    ran = adapt("train", str(write_recipe(folder, data)), "--no-progress", "training.max_steps=1",
                "data.max_bad_fraction=0.2", cwd=folder)
    succeeded(ran)
    skips = json.loads((folder / "out" / "skips.json").read_text())
    found = [(s["source"], s["reason"], s["count"]) for s in skips]
    expect(found == [("field", "not UTF-8", 1)], f"{ran.status()}, skips {found}")
    return f"{ran.status()}; skips.json: field, 'not UTF-8', 1"


@case("cli-numbers", (15,), "`adapt chat --max-tiles 0`, `--temperature -1`, `--temperature nan`",
      "each a usage error: exit 2 naming the flag, no traceback")
def _cli_numbers(ws: Workspace, folder: Path) -> str:
    for flag, value in (("--max-tiles", "0"), ("--temperature", "-1"), ("--temperature", "nan")):
        ran = adapt("chat", flag, value, cwd=folder, timeout=60)
        expect(ran.rc == 2 and flag in ran.err and "usage:" in ran.err and "Traceback" not in ran.err,
               f"{flag} {value}: {ran.status()}: {last_line(ran.err)}")
    return "all three: exit 2, usage error naming the flag"


@case("stale-part", (15,), "`adapt convert` into a folder holding a .part file of a dead process, one of a live one "
      "and one without this machine's tag (another container's, an earlier version's)",
      "exit 0; the dead process's .part removed, the live one's and the untagged one kept")
def _stale_part(ws: Workspace, folder: Path) -> str:
    from domains.files import HOST_TAG

    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    out = folder / "o"
    out.mkdir()
    dead = out / f".ucmerced_train.jsonl.{gone.pid}@{HOST_TAG}-deadbeef.part"
    live = out / f".notes.txt.{os.getpid()}@{HOST_TAG}-cafef00d.part"  # this campaign: alive
    other = out / f".old.txt.{gone.pid}-0badc0de.part"  # its pid means nothing here: never judged by it
    for part, text in ((dead, "half a file"), (live, "being written"), (other, "someone's")):
        part.write_text(text)
    ran = adapt("convert", "remote_sensing", "ucmerced", "--src", str(ws.raw() / "ucmerced"), "--out", "o", cwd=folder)
    succeeded(ran)
    state = ", ".join(f"{what} .part {'kept' if p.exists() else 'removed'}"
                      for what, p in (("dead", dead), ("live", live), ("untagged", other)))
    expect(not dead.exists() and live.exists() and other.exists(), f"{ran.status()}; {state}")
    return f"{ran.status()}; dead .part removed, live and untagged .part kept"


@case("wrote-nothing", (15,), "`adapt convert remote_sensing ucmerced --src <the parent of the data set>` into a "
      "folder holding an earlier conversion", "exit 1 after the skip table ('written | 0'), one line 'nothing "
      "converted'; the earlier outputs unchanged")
def _wrote_nothing(ws: Workspace, folder: Path) -> str:
    argv = ["convert", "remote_sensing", "ucmerced", "--out", "o", "--src"]
    succeeded(adapt(*argv, str(ws.raw() / "ucmerced"), cwd=folder))
    before = {p: p.read_bytes() for p in (folder / "o").rglob("*") if p.is_file()}
    ran = adapt(*argv, str(ws.raw()), cwd=folder)
    outcome = refused(ran, "convert", "nothing converted")
    expect("| written | 0 |" in ran.out, f"{outcome}, but no skip table with 'written | 0'")
    after = {p: p.read_bytes() for p in (folder / "o").rglob("*") if p.is_file()}
    expect(after == before, f"{outcome}, but the earlier outputs changed")
    return f"{outcome}; skip table printed; {len(before)} earlier files unchanged"


# ----------------------------------------------------------------- 16: bounded pixels and memory
@case("pixel-cap", (16,), "`adapt chat --image huge.png`, a PNG whose header claims 13000x13000 pixels",
      "exit 1 in seconds, one line '13000x13000 … above the limit', nothing decoded")
def _pixel_cap(ws: Workspace, folder: Path) -> str:
    png_header_only(folder / "huge.png", 13000, 13000)
    ran = adapt("chat", "--image", "huge.png", cwd=folder, timeout=120)
    return refused(ran, "chat", "13000x13000", "above the limit", within=60)


PEAK_GROWTH = """\
import sys
from pathlib import Path
from domains.remote_sensing.raster import iter_chips
def peak_mb():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(x.split()[1]) for x in status if x.startswith("VmHWM")) // 1024
chips = iter_chips(sys.argv[1], size=448, overlap=64, stretch=None)
next(chips)
before = peak_mb()
n = 1 + sum(1 for _ in chips)
print(n, peak_mb() - before)
"""
SCENE = 4000
GROWTH_BOUND_MB = 28


@case("gdal-cache", (16,), f"chip a {SCENE}x{SCENE} 3-band GeoTIFF (46 MB of pixels) in a fresh process",
      f"peak memory grows by < {GROWTH_BOUND_MB} MB while chipping (GDAL's cache kept the whole scene before)")
def _gdal_cache(ws: Workspace, folder: Path) -> str:
    import warnings

    import rasterio

    if not Path("/proc/self/status").is_file():
        raise Failed("needs Linux (/proc/self/status) to measure the peak")
    row = (np.arange(SCENE) % 251).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no georeferencing: not needed to chip
        with rasterio.open(folder / "scene.tif", "w", driver="GTiff", width=SCENE, height=SCENE, count=3,
                           dtype="uint8") as dst:
            dst.write(np.stack([np.broadcast_to(row, (SCENE, SCENE))] * 3))
    ran = python(["-W", "ignore", "-c", PEAK_GROWTH, "scene.tif"], folder)
    succeeded(ran)
    chips, grew = map(int, ran.out.split())
    expect(grew < GROWTH_BOUND_MB, f"{chips} chips, peak grew by {grew} MB")
    return f"{chips} chips, peak grew by {grew} MB"


# ---------------------------------------------------------------------------------------------- the campaign
@dataclass
class Result:
    case: Case
    passed: bool
    observed: str
    seconds: float


def select(only: str | None) -> list[Case]:
    if not only:
        return list(CASES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {c.name: c for c in CASES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; see --list")
    return [known[n] for n in names]


def run(cases: list[Case], keep: bool = False, progress: bool = True) -> list[Result]:
    """Run `cases` one after the other, each in its own folder of one temporary workspace."""
    root = Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    ws = Workspace(root)
    results = []
    try:
        for k, c in enumerate(cases, 1):
            if progress:
                print(f"[{k}/{len(cases)}] {c.name} …", end=" ", flush=True, file=sys.stderr)
            start = time.perf_counter()
            try:
                observed, passed = c.run(ws, ws.case_folder(c.name)), True
            except Failed as exc:
                observed, passed = str(exc), False
            except Exception as exc:  # noqa: BLE001 - a campaign bug or an unexpected state: that case fails
                observed, passed = f"campaign error: {type(exc).__name__}: {exc}", False
            results.append(Result(c, passed, observed, time.perf_counter() - start))
            if progress:
                print(f"{'PASS' if passed else 'FAIL'} ({results[-1].seconds:.0f} s)", file=sys.stderr)
    finally:
        if keep:
            print(f"workspace kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return results


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(results: list[Result]) -> str:
    rows = ["| # | case | defect | expected | outcome |", "|---:|---|---|---|---|"]
    for k, r in enumerate(results, 1):
        c = r.case
        rows.append(f"| {k} | **{c.name}**: {_cell(c.title)} | {', '.join(map(str, c.defects))} | {_cell(c.expected)} "
                    f"| {'PASS' if r.passed else '**FAIL**'}: {_cell(r.observed)} |")
    return "\n".join(rows)


def summary(results: list[Result], seconds: float) -> str:
    failed = [r.case.name for r in results if not r.passed]
    defects = sorted({d for r in results for d in r.case.defects})
    text = (f"{len(results) - len(failed)} of {len(results)} cases pass, covering defects "
            f"{', '.join(map(str, defects))}; {seconds:.0f} s in all.")
    return text + (f" Failed: {', '.join(failed)}." if failed else "")


def section(results: list[Result], seconds: float) -> str:
    from bench.sections import machine_line

    intro = textwrap.fill(
        "Every defect of issue 14, replayed end to end: each case runs the real `adapt` command line in a fresh "
        "temporary folder on inputs it makes itself, and checks the exit status, the message (one line, no "
        "traceback, where that is promised) and the files left behind.", width=120)
    return (f"{intro}\nRegenerate with `{COMMAND}` (about {seconds / 60:.0f} minutes); "
            f"machine: {machine_line()}.\n\n{table(results)}\n\n{summary(results, seconds)}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run these cases only (see --list)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--write", action="store_true", help="replace the README's fault_campaign section")
    parser.add_argument("--readme", type=Path, default=README, help="the file --write edits (default: README.md)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace, for a closer look")
    args = parser.parse_args(argv)
    if args.list:
        for c in CASES:
            print(f"{c.name:<24} {','.join(map(str, c.defects)):<6} {c.title}")
        return 0
    if args.write and args.only:
        parser.error("--write publishes the whole campaign; drop --only")
    cases = select(args.only)
    start = time.perf_counter()
    results = run(cases, keep=args.keep)
    seconds = time.perf_counter() - start
    print(table(results))
    print()
    print(summary(results, seconds))
    if args.write:
        from bench.sections import write_section

        write_section(args.readme, SECTION, section(results, seconds))
        print(f"wrote the {SECTION} section of {args.readme}", file=sys.stderr)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
