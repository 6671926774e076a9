"""nuScenes frame sequences over a key frame that lacks a camera: skipped and named, never a KeyError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from domains.driving.nuscenes import convert_nuscenes
from domains.driving.synthetic import generate
from tests.deps import require

require("nuscenes")


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nus")
    return generate(out, n_scenes=2, n_frames=2, drivelm=False, progress=False)["nuscenes"]


def _drop_camera(dataroot: Path, camera: str) -> str:
    """Make `camera`'s key-frame row of the first scene's first sample a sweep, so that sample has no `camera`."""
    tables = dataroot / "v1.0-mini"
    first = json.loads((tables / "scene.json").read_text())[0]["first_sample_token"]
    channel = {s["token"]: s["channel"] for s in json.loads((tables / "sensor.json").read_text())}
    sensor = {c["token"]: channel[c["sensor_token"]]
              for c in json.loads((tables / "calibrated_sensor.json").read_text())}
    rows = json.loads((tables / "sample_data.json").read_text())
    for row in rows:
        if row["sample_token"] == first and sensor[row["calibrated_sensor_token"]] == camera:
            row["is_key_frame"] = False
    (tables / "sample_data.json").write_text(json.dumps(rows))
    return first


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sequence_over_a_key_frame_without_the_camera_is_skipped(dataroot, tmp_path, workers):
    root = tmp_path / "nuscenes"
    shutil.copytree(dataroot, root)
    first = _drop_camera(root, "CAM_FRONT")
    report = convert_nuscenes(root, tmp_path / "out", history=1, progress=False, workers=workers)
    details = " ".join(report.examples["missing camera"])
    assert report.skipped["missing camera"] == 2  # the key frame itself and the next one, whose sequence needs it
    assert f"its previous key frame {first} has no CAM_FRONT" in details
    records = [json.loads(line) for p in sorted((tmp_path / "out").glob("*.jsonl"))
               for line in p.read_text().splitlines()]
    assert records and all(r["meta"]["camera"] != "CAM_FRONT" or r["meta"]["sample"] != first for r in records)


def test_the_table_folder_given_as_the_dataroot_is_named_with_its_parent(dataroot):
    from domains.base import DomainError
    from domains.driving.nuscenes import detect_version

    with pytest.raises(DomainError, match="table folder") as err:
        detect_version(dataroot / "v1.0-mini")
    assert f"give the dataroot holding it, {dataroot}" in str(err.value)
    with pytest.raises(DomainError, match="no nuScenes tables found"):
        detect_version(dataroot / "samples")
