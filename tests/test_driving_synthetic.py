"""domains.driving.synthetic: a rendered nuScenes in the real table layout that the real devkit loads, with labels
that match the pixels, plus DriveLM QA in the v1.1 layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domains.driving.layout import CAMERA_SIZE, STITCH_ORDER, iter_ctags
from domains.driving.synthetic import CAMERA_RIG, MINI_SCENES, generate
from tests.deps import require

require("nuscenes")  # the devkit is part of the driving extra

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log", "scene",
          "sample", "sample_data", "sample_annotation", "map")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, progress=False)
    return out


@pytest.fixture(scope="module")
def nusc(synth):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-mini", str(synth / "nuscenes"), verbose=False)


def _table(root: Path, name: str) -> list[dict]:
    return json.loads((root / "nuscenes" / "v1.0-mini" / f"{name}.json").read_text())


def test_tables_follow_the_nuscenes_schema(synth):
    for name in TABLES:
        rows = _table(synth, name)
        assert isinstance(rows, list) and rows, name
        if name != "visibility":
            assert all(HEX32.match(r["token"]) for r in rows), name
    assert [v["token"] for v in _table(synth, "visibility")] == ["1", "2", "3", "4"]
    samples = {s["token"]: s for s in _table(synth, "sample")}
    scenes = _table(synth, "scene")
    assert [s["name"] for s in scenes] == [n for n, _ in MINI_SCENES[:3]]
    for scene in scenes:  # prev/next chains from first to last sample
        chain, tok = [], scene["first_sample_token"]
        while tok:
            chain.append(tok)
            assert samples[tok]["scene_token"] == scene["token"]
            tok = samples[tok]["next"]
        assert len(chain) == scene["nbr_samples"] == 3 and chain[-1] == scene["last_sample_token"]
        assert samples[chain[0]]["prev"] == "" and samples[chain[1]]["prev"] == chain[0]
        assert samples[chain[1]]["timestamp"] - samples[chain[0]]["timestamp"] == 500_000
    sd = _table(synth, "sample_data")
    assert {r["fileformat"] for r in sd} == {"jpg", "pcd"}
    for row in sd:
        assert (synth / "nuscenes" / row["filename"]).is_file()
        if row["fileformat"] == "jpg":
            cam = row["filename"].split("/")[1]
            assert re.fullmatch(rf"samples/{cam}/n015-[0-9-]+[+-]\d{{4}}__{cam}__\d{{16}}\.jpg", row["filename"])
            assert (row["width"], row["height"]) == CAMERA_SIZE
    annotations = {a["token"]: a for a in _table(synth, "sample_annotation")}
    for inst in _table(synth, "instance"):
        first, last = annotations[inst["first_annotation_token"]], annotations[inst["last_annotation_token"]]
        assert first["prev"] == "" and last["next"] == "" and inst["nbr_annotations"] == 3
        assert annotations[first["next"]]["prev"] == first["token"]
    calib = [c for c in _table(synth, "calibrated_sensor") if c["camera_intrinsic"]]
    assert len(calib) == 6 * 3
    for c in calib:
        k = np.array(c["camera_intrinsic"])
        assert k.shape == (3, 3) and 700 < k[0, 0] < 1400 and 700 < k[0, 2] < 900 and 400 < k[1, 2] < 550
        assert np.isclose(np.linalg.norm(c["rotation"]), 1.0)
    for m in _table(synth, "map"):
        assert (synth / "nuscenes" / m["filename"]).is_file()


def test_real_devkit_loads_and_cameras_sit_in_the_real_yaw_layout(nusc):
    assert len(nusc.scene) == 3 and len(nusc.sample) == 9
    sample = nusc.sample[0]
    assert set(sample["data"]) == {*STITCH_ORDER, "LIDAR_TOP"} and sample["anns"]
    from pyquaternion import Quaternion

    for cam, (yaw, *_rest) in CAMERA_RIG.items():
        cs = nusc.get("calibrated_sensor", nusc.get("sample_data", sample["data"][cam])["calibrated_sensor_token"])
        optical_axis = Quaternion(cs["rotation"]).rotate([0.0, 0.0, 1.0])  # camera z in the ego frame
        assert np.degrees(np.arctan2(optical_axis[1], optical_axis[0])) == pytest.approx(yaw, abs=1e-6) or \
            abs(yaw) == 180
        assert abs(optical_axis[2]) < 1e-9  # level
    from nuscenes.utils.data_classes import LidarPointCloud

    pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sample["data"]["LIDAR_TOP"]))
    assert pc.points.shape[0] == 4 and pc.points.shape[1] > 1000


def _projected(nusc, sd_token):
    """[(annotation token, clipped box, depth)] from the devkit, as a user would compute them."""
    from nuscenes.scripts.export_2d_annotations_as_json import post_process_coords
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    _, boxes, k = nusc.get_sample_data(sd_token, box_vis_level=BoxVisibility.ANY)
    out = []
    for b in boxes:
        uv = view_points(b.corners(), k, normalize=True)[:2]
        box = post_process_coords(uv.T.tolist())  # convex hull of the corners within the 1600x900 canvas
        out.append((b.token, box, float(b.center[2]), uv.mean(axis=1)))
    return out


def test_drawn_objects_are_where_the_devkit_projects_them(nusc):
    checked = 0
    for sample in nusc.sample:
        for cam in STITCH_ORDER:
            sd = sample["data"][cam]
            img = np.asarray(Image.open(nusc.get_sample_data_path(sd)).convert("RGB")).astype(int)
            found = _projected(nusc, sd)
            assert found or cam.startswith("CAM_BACK") or cam == "CAM_FRONT_RIGHT"
            for token, box, depth, centre in found:
                nearer = [b for t, b, d, _ in found if t != token and d < depth]
                if any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in nearer):
                    continue  # partly hidden by a nearer object
                if box[2] - box[0] < 12 or box[3] - box[1] < 12:
                    continue
                cx, cy = int(np.clip(centre[0], box[0] + 3, box[2] - 4)), int(np.clip(centre[1], box[1] + 3, box[3] - 4))
                colour = np.median(img[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3), axis=0)
                # pixels of that colour in a window 12 px wider than the box on every side
                wx, wy = int(max(0, box[0] - 12)), int(max(0, box[1] - 12))
                window = img[wy:int(box[3]) + 12, wx:int(box[2]) + 12]
                ys, xs = np.nonzero(np.all(np.abs(window - colour) <= 30, axis=-1))
                got = (wx + xs.min(), wy + ys.min(), wx + xs.max() + 1, wy + ys.max() + 1)
                assert np.allclose(got, box, atol=3), (cam, token, got, box)
                checked += 1
    assert checked >= 20


def test_visibility_is_measured(nusc):
    vis = [a["visibility_token"] for a in nusc.sample_annotation]
    assert set(vis) <= {"1", "2", "3", "4"} and vis.count("4") > len(vis) // 3
    seen = {b[0] for s in nusc.sample for c in STITCH_ORDER for b in _projected(nusc, s["data"][c])}
    for ann in nusc.sample_annotation:
        if ann["token"] not in seen:
            assert ann["visibility_token"] == "1"  # not visible in any camera


def test_drivelm_json_layout_and_ctags_from_projected_boxes(synth, nusc):
    train = json.loads((synth / "drivelm" / "v1_1_train_nus.json").read_text())
    q_only = json.loads((synth / "drivelm" / "v1_1_val_nus_q_only.json").read_text())
    scene_split = {s["token"]: dict(MINI_SCENES)[s["name"]] for s in nusc.scene}
    assert {scene_split[s] for s in train} == {"train"} and {scene_split[s] for s in q_only} == {"val"}
    n_frames = 0
    for scene, body in train.items():
        assert isinstance(body["scene_description"], str)
        for frame, fr in body["key_frames"].items():
            n_frames += 1
            assert nusc.get("sample", frame)["scene_token"] == scene
            assert set(fr) == {"key_object_infos", "QA", "image_paths"}
            assert list(fr["QA"]) == ["perception", "prediction", "planning", "behavior"]
            assert all(set(qa) == {"Q", "A", "C", "con_up", "con_down", "cluster", "layer"} and qa["A"]
                       for items in fr["QA"].values() for qa in items)
            assert 1 <= len(fr["key_object_infos"]) <= 5
            for cam, rel in fr["image_paths"].items():
                assert rel.startswith(f"../nuscenes/samples/{cam}/")
                assert (synth / "drivelm" / rel).resolve() == Path(nusc.get_sample_data_path(
                    nusc.get("sample", frame)["data"][cam])).resolve()
            for key, info in fr["key_object_infos"].items():
                (tag,) = list(iter_ctags(key))
                x1, y1, x2, y2 = info["2d_bbox"]
                assert (tag.x, tag.y) == pytest.approx(((x1 + x2) / 2, (y1 + y2) / 2), abs=0.051)
                boxes = [b for _, b, _, _ in _projected(nusc, nusc.get("sample", frame)["data"][tag.camera])]
                assert any(np.allclose(b, info["2d_bbox"], atol=0.051) for b in boxes)
                assert set(info) == {"Category", "Status", "Visual_description", "2d_bbox"}
            tags_in_qa = {(t.camera, t.x, t.y) for items in fr["QA"].values() for qa in items
                          for t in iter_ctags(qa["Q"] + qa["A"])}
            assert tags_in_qa == {(t.camera, t.x, t.y) for k in fr["key_object_infos"] for t in iter_ctags(k)}
    assert n_frames == 6
    for body in q_only.values():
        for fr in body["key_frames"].values():
            qas = [qa for items in fr["QA"].values() for qa in items]
            assert all(qa["A"] == "" and isinstance(qa["tag"], list) for qa in qas)
            assert any("Please select the correct answer from the following options: A." in qa["Q"] for qa in qas)


def test_deterministic_by_seed(tmp_path, synth):
    a = generate(tmp_path / "a", n_scenes=1, n_frames=2, progress=False)
    b = generate(tmp_path / "b", n_scenes=1, n_frames=2, progress=False)
    c = generate(tmp_path / "c", n_scenes=1, n_frames=2, seed=1, progress=False)
    for name in ("sample_annotation.json", "sample_data.json"):
        assert (a["nuscenes"] / "v1.0-mini" / name).read_bytes() == (b["nuscenes"] / "v1.0-mini" / name).read_bytes()
        assert (a["nuscenes"] / "v1.0-mini" / name).read_bytes() != (c["nuscenes"] / "v1.0-mini" / name).read_bytes()
    ja = sorted((a["nuscenes"] / "samples").rglob("*.jpg"))
    jb = sorted((b["nuscenes"] / "samples").rglob("*.jpg"))
    assert len(ja) == 12 and [p.read_bytes() for p in ja] == [p.read_bytes() for p in jb]
    assert (a["drivelm"] / "v1_1_train_nus.json").read_bytes() == (b["drivelm"] / "v1_1_train_nus.json").read_bytes()


def test_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="n_scenes must be 1-10"):
        generate(tmp_path, n_scenes=11)
    with pytest.raises(ValueError, match="n_frames must be >= 1"):
        generate(tmp_path, n_frames=0)
    for quality in (-5, 0, 200, 2.5, "high"):
        with pytest.raises(ValueError, match=r"quality \(JPEG\) must be a whole number 1-95"):
            generate(tmp_path, quality=quality)
    for bad in ({"seed": 1.5}, {"seed": "x"}, {"n_scenes": "2"}, {"n_frames": None}, {"n_scenes": True}):
        name, value = next(iter(bad.items()))
        with pytest.raises(ValueError, match=rf"{name} must be a whole number, got {value!r}"):
            generate(tmp_path, **bad)
    assert not any(tmp_path.iterdir())  # refused before writing
