"""DriveLM camera files read in the default layout (``../nuscenes/samples/...`` from the JSON's folder, outside
--src) were named in the report by their full paths, the folders around the data included, while under
``--option nuscenes_root`` they read ``<nuscenes_root>/samples/...``; they now read as image_paths write them."""

from __future__ import annotations

import json
from pathlib import Path

from domains.driving.drivelm import convert_drivelm
from domains.driving.synthetic import generate


def _camera(src: Path, camera: str) -> Path:
    data = json.loads((src / "v1_1_train_nus.json").read_text())
    frame = next(iter(next(iter(data.values()))["key_frames"].values()))
    return src / frame["image_paths"][camera]


def test_a_missing_camera_file_is_named_relative_to_the_source(tmp_path):
    paths = generate(tmp_path / "raw", n_scenes=1, n_frames=1, progress=False)
    src = paths["drivelm"]
    gone = _camera(src, "CAM_BACK")
    gone.unlink()
    report = convert_drivelm(src, tmp_path / "out", progress=False)
    (example,) = report.examples["missing camera image"]
    assert example.startswith(f"../nuscenes/samples/CAM_BACK/{gone.name}: no such file"), example
    assert str(tmp_path) not in report.table().split("\n", 1)[1]  # the rows; the title names --src as given
    moved = convert_drivelm(src, tmp_path / "out2", nuscenes_root=paths["nuscenes"], progress=False)
    (example,) = moved.examples["missing camera image"]
    assert example.startswith(f"<nuscenes_root>/samples/CAM_BACK/{gone.name}: no such file"), example
