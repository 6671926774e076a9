"""Light verbs start without the heavy libraries: `adapt --help`, `adapt presets` and `adapt tiles` import no torch,
transformers, peft, matplotlib, gradio, rasterio or pydicom (issue 16 item 2: start-up). A behaviour test, not a
timing one: each verb runs in a fresh interpreter and the modules it loaded are listed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "matplotlib", "gradio", "rasterio", "pydicom", "scipy")

PROBE = """
import contextlib, gc, io, json, sys
from adapt.cli import main
command_line, *argv = sys.argv[1:]
if command_line == "yes":  # as the `adapt` script calls it: main() reads sys.argv
    sys.argv, argv = ["adapt", *argv], None
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(argv)
    except SystemExit as stop:  # --help exits through argparse
        code = stop.code
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(m for m in sys.modules if "." not in m),
                  "frozen": gc.get_freeze_count(), "gc": gc.isenabled()}))
"""


def _run(*argv: str, command_line: bool = False) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, "yes" if command_line else "no", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "shows"),
    [
        (["--help"], "usage: adapt"),
        (["--version"], "pocket-adapt "),
        (["train", "--help"], "usage: adapt train"),
        (["presets"], "OpenGVLab/InternVL2-1B"),
        (["tiles", "2688x896"], "grid 6x2"),
    ],
)
def test_light_verbs_import_no_heavy_library(argv: list[str], shows: str) -> None:
    result = _run(*argv)
    assert result["code"] in (0, None) and shows in result["out"]
    assert not set(HEAVY) & set(result["modules"]), f"{argv} imported {sorted(set(HEAVY) & set(result['modules']))}"


def test_the_probe_sees_heavy_imports() -> None:
    # the same probe on a verb that needs torch lists it, so an empty list above means something
    result = _run("inspect", "--model", "pocket-tiny")
    assert result["code"] == 0 and "torch" in result["modules"]


def test_a_model_verb_on_the_command_line_freezes_the_import_objects_and_collects_again() -> None:
    """`adapt inspect` (like every verb that builds a model) imports torch and transformers with the garbage
    collector paused and freezes what they made (adapt.cli._import_model_stack); the collector runs again after."""
    result = _run("inspect", "--model", "pocket-tiny", command_line=True)
    assert result["code"] == 0 and "pocket-tiny" in result["out"]
    assert result["frozen"] > 100_000 and result["gc"]


@pytest.mark.parametrize("argv, command_line", [(["presets"], True), (["inspect", "--model", "pocket-tiny"], False)])
def test_light_verbs_and_library_calls_leave_the_collector_alone(argv: list[str], command_line: bool) -> None:
    # a light verb has nothing to freeze; a test or script calling main(argv) keeps its own collector state
    result = _run(*argv, command_line=command_line)
    assert result["code"] == 0 and result["frozen"] == 0 and result["gc"]


RECIPE = """
name: startup
model: {{source: pocket-tiny}}
parts:
  vision: {{mode: frozen}}
  projector: {{mode: full}}
  llm: {{mode: {llm}}}
data:
  sources:
    - {{name: general, path: {data}/train.jsonl, kind: domain}}
mixing: {{general_ratio: 0}}
training: {{max_steps: 1, batch_size: 2, max_seq_length: 512}}
output: {{dir: {out}, save_every: 100}}
"""


@pytest.mark.parametrize("llm, peft", [("full", False), ("lora", True)])
def test_a_run_without_lora_never_imports_peft(llm: str, peft: bool, tmp_path) -> None:
    """peft costs seconds to import (transformers' schedulers pull it in too): only a LoRA run loads it."""
    from domains.general.world import generate_general

    generate_general(tmp_path / "data", n_train=4, n_test=2)
    recipe = tmp_path / "startup.yaml"
    recipe.write_text(RECIPE.format(llm=llm, data=tmp_path / "data", out=tmp_path / "out"))
    result = _run("train", str(recipe), "--no-progress")
    assert result["code"] in (0, None), result["out"][-2000:]
    assert ("peft" in result["modules"]) is peft


@pytest.mark.parametrize("fmt", ["hf", "pocket"])
def test_exporting_a_model_without_lora_never_imports_peft(fmt: str, tmp_path) -> None:
    """An export imported peft (a quarter second) to ask whether the model was a PeftModel, which it cannot be
    unless peft was loaded already (a LoRA adapter is applied through it)."""
    result = _run("export", "--model", "pocket-tiny", "--format", fmt, "--out", str(tmp_path / "out"))
    assert result["code"] == 0 and (tmp_path / "out" / "config.json").is_file(), result["out"][-2000:]
    assert "peft" not in result["modules"]
