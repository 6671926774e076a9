"""DriveLM JSON variants: the early v1.0 layout is named as such, and QA lists under keys other than the four
v1.1 categories are said, never dropped unseen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from domains.driving.drivelm import convert_drivelm
from domains.driving.synthetic import generate


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    generate(root, n_scenes=2, n_frames=2, progress=False)
    return root


def _copy(raw: Path, dst: Path) -> tuple[Path, dict]:
    shutil.copytree(raw, dst)
    path = dst / "drivelm" / "v1_1_train_nus.json"
    return path, json.loads(path.read_text())


V1_0 = {"b789de07180846cc972118ee6d1fb027": {"scene_description": "", "key_frame": {"1537295990612404": {
    "Perception": {"q": ["Q: What are important objects to the back right of the ego car?"],
                   "a": ["A: There are one truck."], "description": {}},
    "Prediction and Planning": {"q": ["Q: Is <c1,CAM_BACK,1190.5,826.5> a traffic sign?"], "a": ["A: No."]}}}}}


def test_a_v1_0_file_is_named_as_the_v1_0_layout(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "v1_0_train_demo.json").write_text(json.dumps(V1_0))
    report = convert_drivelm(tmp_path / "src", tmp_path / "out", progress=False)
    assert report.skipped == {"DriveLM v1.0 layout": 1}
    detail = " ".join(report.examples["DriveLM v1.0 layout"])
    assert "key_frame" in detail and "v1_1_train_nus.json" in detail


def test_qa_lists_under_unknown_keys_are_said(raw, tmp_path):
    path, data = _copy(raw, tmp_path / "raw")
    scene = next(iter(data))
    frames = list(data[scene]["key_frames"])
    qa = data[scene]["key_frames"][frames[0]]["QA"]
    qa["Prediction"] = qa.pop("prediction")  # a QA list under a key of another spelling
    data[scene]["key_frames"][frames[1]]["QA"] = {"Perception": data[scene]["key_frames"][frames[1]]["QA"]["perception"]}
    path.write_text(json.dumps(data))
    report = convert_drivelm(path, tmp_path / "out", progress=False)
    assert report.warnings.get("unknown QA category") == 1
    assert "['Prediction']" in " ".join(report.warning_examples["unknown QA category"])
    assert report.skipped.get("frame without QA") == 1
    assert "it holds only ['Perception']" in " ".join(report.examples["frame without QA"])


def test_absolute_image_paths_are_refused_as_such_and_read_with_nuscenes_root(raw, tmp_path):
    path, data = _copy(raw, tmp_path / "raw")
    scene = next(iter(data))
    frame = next(iter(data[scene]["key_frames"]))
    paths = data[scene]["key_frames"][frame]["image_paths"]
    for cam in paths:  # as a user's rewrite of the DriveLM paths to where the images really are
        paths[cam] = str((path.parent / paths[cam]).resolve())
    path.write_text(json.dumps(data))
    report = convert_drivelm(path, tmp_path / "out", progress=False)
    assert "missing camera image" not in report.skipped  # the files exist: never said to be missing
    assert report.skipped.get("path escapes data root") == 1
    assert "absolute path" in " ".join(report.examples["path escapes data root"])
    assert "nuscenes_root" in " ".join(report.examples["path escapes data root"])
    with_root = convert_drivelm(path, tmp_path / "out2", nuscenes_root=tmp_path / "raw" / "nuscenes", progress=False)
    assert not with_root.skipped


def test_a_nuscenes_root_without_samples_is_refused_before_converting(raw, tmp_path):
    from domains.base import DomainError

    with pytest.raises(DomainError, match=r"has no samples/ folder.*its parent") as err:
        convert_drivelm(raw / "drivelm", tmp_path / "out", nuscenes_root=raw / "nuscenes" / "samples", progress=False)
    assert str(raw / "nuscenes") in str(err.value)
    with pytest.raises(DomainError, match="has no samples/ folder"):
        convert_drivelm(raw / "drivelm", tmp_path / "out", nuscenes_root=raw / "drivelm", progress=False)
    assert not (tmp_path / "out").exists()
