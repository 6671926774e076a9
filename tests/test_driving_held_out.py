"""domains.driving.nuscenes: scenes held out by DriveLM stay out of the nuScenes training split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domains.base import DomainError
from domains.driving.drivelm import convert_drivelm
from domains.driving.nuscenes import convert_nuscenes
from domains.driving.synthetic import generate


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("raw"), n_scenes=3, n_frames=1, progress=False)


def _scenes(path: Path, key: str = "scene") -> set[str]:
    return {json.loads(line)["meta"][key] for line in path.read_text().splitlines()}


def test_drivelm_val_scenes_are_held_out_of_nuscenes_train(raw, tmp_path):
    """The README's flow (DriveLM with val_fraction, then nuScenes into the same folder): the DriveLM val scene is
    a nuScenes training scene, so its six camera pictures were trained on (grounding, region) while its DriveLM
    questions were scored. With ``held_out`` its nuScenes samples go to val."""
    out = tmp_path / "data"
    drivelm = convert_drivelm(raw["drivelm"], out, view_mode="multi", val_fraction=0.5, progress=False)
    held = _scenes(drivelm.outputs["val"])
    names = {s["token"]: s["name"] for s in json.loads((raw["nuscenes"] / "v1.0-mini/scene.json").read_text())}
    plain = convert_nuscenes(raw["nuscenes"], tmp_path / "plain", progress=False)
    assert {names[s] for s in held} <= _scenes(plain.outputs["train"])  # the leak this option closes

    report = convert_nuscenes(raw["nuscenes"], out, held_out=str(drivelm.outputs["val"]), progress=False)
    train, val = _scenes(report.outputs["train"]), _scenes(report.outputs["val"])
    assert not {names[s] for s in held} & train and {names[s] for s in held} <= val
    assert train | val == _scenes(plain.outputs["train"]) | _scenes(plain.outputs["val"])
    assert "1 training scene moved to val" in report.inputs["held_out drivelm_multi_val.jsonl"]
    # several files, comma-separated, as the CLI passes them; a test file's scenes count as well
    both = ",".join(str(p) for p in (drivelm.outputs["val"], drivelm.outputs["test"]))
    again = convert_nuscenes(raw["nuscenes"], tmp_path / "both", held_out=both, progress=False)
    assert {names[s] for s in held | _scenes(drivelm.outputs["test"])} <= _scenes(again.outputs["val"])
    one = convert_nuscenes(raw["nuscenes"], tmp_path / "one", held_out=Path(drivelm.outputs["val"]), progress=False)
    assert _scenes(one.outputs["val"]) == val


def test_held_out_errors_name_the_file(raw, tmp_path):
    with pytest.raises(DomainError, match="nope.jsonl"):
        convert_nuscenes(raw["nuscenes"], tmp_path / "a", held_out=str(tmp_path / "nope.jsonl"), progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"meta": {"scene": "x"}}\nnot json\n')
    with pytest.raises(DomainError, match=r"bad.jsonl line 2"):
        convert_nuscenes(raw["nuscenes"], tmp_path / "b", held_out=str(bad), progress=False)
