"""domains.driving.drivelm: scene-level splits that hold across files, and key frames that hold no QA."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from domains.driving.drivelm import convert_drivelm
from domains.driving.synthetic import generate

TRAIN = "v1_1_train_nus.json"


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    generate(root, n_scenes=2, n_frames=2, progress=False)
    return root


def _copy_raw(raw: Path, dst: Path) -> Path:
    shutil.copytree(raw / "drivelm", dst / "drivelm")
    shutil.copytree(raw / "nuscenes", dst / "nuscenes", copy_function=os.link)
    return dst / "drivelm"


def _many_scenes(data: dict, copies: int) -> dict:
    """`copies` renamed copies of every scene (new scene and frame tokens, the same camera files)."""
    def tok(*parts: object) -> str:
        return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()

    return {tok(s, k): {**b, "key_frames": {tok(f, k): fb for f, fb in b["key_frames"].items()}}
            for k in range(copies) for s, b in data.items()}


def _scene_splits(report) -> dict[str, set[str]]:
    got: dict[str, set[str]] = {}
    for split, path in report.outputs.items():
        for line in Path(path).read_text().splitlines():
            got.setdefault(json.loads(line)["meta"]["scene"], set()).add(split)
    return got


def test_a_scene_keeps_one_split_across_training_files(raw, tmp_path):
    """DriveLM's ``train_sample.json`` (a few frames of two training scenes) next to the full training file: the
    val share was drawn per file, so a scene could go to val in one file and to train in the other -- its other
    frames then trained on while it is scored."""
    drivelm = _copy_raw(raw, tmp_path)
    full = _many_scenes(json.loads((drivelm / TRAIN).read_text()), 5)
    (drivelm / "v1_1_val_nus_q_only.json").unlink()
    (drivelm / TRAIN).write_text(json.dumps(full))
    alone = _scene_splits(convert_drivelm(drivelm, tmp_path / "alone", view_mode="multi", val_fraction=0.2,
                                          progress=False))
    sample = {s: {**full[s], "key_frames": dict(list(full[s]["key_frames"].items())[:1])} for s in list(full)[:2]}
    for name in ("train_sample.json", "v1_2_train_sample.json"):  # read before and after the full file
        (drivelm / name).write_text(json.dumps(sample))
        report = convert_drivelm(drivelm, tmp_path / name, view_mode="multi", val_fraction=0.2, progress=False)
        got = _scene_splits(report)
        assert {s: sorted(v) for s, v in got.items() if len(v) > 1} == {}
        assert got == alone  # the sample file changes no scene's split
        assert report.skipped == {"duplicate frame": 2}
        (drivelm / name).unlink()


def test_a_scene_in_files_of_two_splits_is_said(raw, tmp_path):
    """A training scene whose other frames sit in a val-named file: both are converted as their files say, with a
    warning naming the scene, since it leaks into evaluation."""
    drivelm = _copy_raw(raw, tmp_path)
    (drivelm / "v1_1_val_nus_q_only.json").unlink()
    data = json.loads((drivelm / TRAIN).read_text())
    scene = next(iter(data))
    (drivelm / "v1_1_val_nus.json").write_text(json.dumps(_many_scenes({scene: data[scene]}, 1) | {
        scene: {**data[scene], "key_frames": {"f" * 32: next(iter(data[scene]["key_frames"].values()))}}}))
    report = convert_drivelm(drivelm, tmp_path / "out", view_mode="multi", progress=False)
    assert report.warnings == {"scene in two splits": 1}
    (example,) = report.warning_examples["scene in two splits"]
    assert f"v1_1_val_nus.json scene {scene}: its frames here go to val, those of {TRAIN} to train" in example
    assert set(report.outputs) == {"train", "val"}


@pytest.mark.parametrize("view_mode", ["stitched", "multi"])
def test_a_key_frame_without_qa_is_counted_and_writes_no_image(raw, tmp_path, view_mode):
    """A key frame whose QA lists are all empty gave no record and no report line, yet its stitched image (or
    camera links) was written."""
    drivelm = _copy_raw(raw, tmp_path)
    data = json.loads((drivelm / TRAIN).read_text())
    scene = next(iter(data))
    frame = next(iter(data[scene]["key_frames"]))
    data[scene]["key_frames"][frame]["QA"] = {"perception": [], "prediction": [], "planning": [], "behavior": []}
    (drivelm / TRAIN).write_text(json.dumps(data))
    report = convert_drivelm(drivelm / TRAIN, tmp_path / "out", view_mode=view_mode, progress=False)
    assert report.skipped == {"frame without QA": 1}
    assert f"scene {scene} frame {frame}" in report.examples["frame without QA"][0]
    assert not list((tmp_path / "out").rglob(f"*{frame}*"))  # no stitched image for it
    if view_mode == "multi":
        cams = {Path(p).name for p in data[scene]["key_frames"][frame]["image_paths"].values()}
        others = {Path(p).name for f, fb in data[scene]["key_frames"].items() if f != frame
                  for p in fb["image_paths"].values()}
        assert not {p.name for p in (tmp_path / "out").rglob("*.jpg")} & (cams - others)


@pytest.mark.parametrize("view_mode", ["stitched", "multi"])
def test_a_camera_picture_of_another_shape_is_refused(raw, tmp_path, view_mode):
    """DriveLM's c-tags are measured in the 1600x900 camera frame: a picture of another shape (a padded 1600x928,
    a 4:3 camera) was stretched into the cell and every point of the frame landed off its object. A copy of the
    same shape at another scale maps the same and is kept."""
    from PIL import Image

    drivelm = _copy_raw(raw, tmp_path)
    data = json.loads((drivelm / TRAIN).read_text())
    frames = [(s, f, fb) for s, b in data.items() for f, fb in b["key_frames"].items()]
    shapes = {"CAM_BACK": (1600, 928), "CAM_FRONT": (800, 450)}
    for (scene, frame, fb), (camera, size) in zip(frames, shapes.items()):
        path = (drivelm / fb["image_paths"][camera]).resolve()
        path.unlink()  # a hard link to the raw set: replace, not rewrite
        Image.new("RGB", size, (90, 90, 90)).save(path)
    report = convert_drivelm(drivelm / TRAIN, tmp_path / "out", view_mode=view_mode, progress=False)
    assert report.skipped == {"camera size mismatch": 1}
    (example,) = report.examples["camera size mismatch"]
    assert "CAM_BACK" in example and "1600x928" in example and "1600x900" in example
    assert f"(CAM_BACK of frame {frames[0][1]})" in example  # the sample token, as a missing camera's skip says
    scenes_frames = {(r["meta"]["scene"], r["meta"]["frame"]) for p in report.outputs.values()
                     for r in map(json.loads, Path(p).read_text().splitlines())}
    assert scenes_frames == {(s, f) for s, f, _ in frames} - {frames[0][:2]}  # the 800x450 frame is converted
    written = {p.name for p in (tmp_path / "out").rglob("*.jpg")}
    assert not written & {Path(p).name for p in frames[0][2]["image_paths"].values()}  # no camera of it linked


def test_val_fraction_help_says_val_is_not_the_official_test_subset():
    """Where a user picks the split (`adapt convert driving drivelm --help`), nothing said that the val split drawn
    from the training scenes is not DriveLM's official test subset, so its scores looked like the challenge's."""
    from adapt.cli import convert_options_help

    text = " ".join(convert_options_help("driving", "drivelm").split())
    val = text[text.index("val_fraction=0.0:"):text.index("dataset (default")]
    assert "not the official test questions" in val and "not comparable" in val
