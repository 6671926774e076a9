"""domains.driving.nuscenes: nuScenes through the real devkit and the ``nuscenes`` grounding / region converter."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from adapt.data.samples import SkipLog, SourceSpec, read_source
from domains.base import get_domain
from domains.boxes import from_grid, parse_ref_boxes
from domains.driving.layout import DRIVELM_ORDER, STITCH_ORDER
from domains.driving.nuscenes import (
    camera_objects,
    camera_tokens,
    category_phrase,
    convert_nuscenes,
    detect_version,
    frame_sequence,
    open_nuscenes,
    previous_samples,
    require_devkit,
    scene_samples,
)
from domains.driving.synthetic import generate
from tests.deps import require

require("nuscenes")


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nus")
    return generate(out, drivelm=False, progress=False)["nuscenes"]


@pytest.fixture(scope="module")
def nusc(dataroot):
    return open_nuscenes(dataroot)


@pytest.fixture(scope="module")
def converted(dataroot, tmp_path_factory):
    out = tmp_path_factory.mktemp("nus_out")
    report = convert_nuscenes(dataroot, out, progress=False)
    return out, report


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_version_detection_and_loading_errors(dataroot, tmp_path):
    assert detect_version(dataroot) == "v1.0-mini"
    with pytest.raises(ValueError, match="no nuScenes tables found"):
        detect_version(tmp_path)
    two = tmp_path / "two"
    for v in ("v1.0-mini", "v1.0-trainval"):
        (two / v).mkdir(parents=True)
        (two / v / "sample.json").write_text("[]")
    with pytest.raises(ValueError, match="several table versions"):
        detect_version(two)
    broken = tmp_path / "broken"
    shutil.copytree(dataroot / "v1.0-mini", broken / "v1.0-mini")
    (broken / "v1.0-mini" / "scene.json").unlink()
    with pytest.raises(ValueError, match="the nuScenes tables do not load"):
        open_nuscenes(broken)
    # with the version given, a wrong dataroot failed listing its folders (a bare FileNotFoundError)
    for wrong in (tmp_path / "nowhere", dataroot / "v1.0-mini" / "scene.json"):
        with pytest.raises(ValueError, match="no such nuScenes dataroot"):
            open_nuscenes(wrong, "v1.0-mini")


def test_missing_devkit_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "nuscenes.nuscenes", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"install the driving extra.*pocket-adapt\[driving\]"):
        require_devkit()


def test_cameras_in_explicit_orders_and_frame_walks(nusc):
    scene = min(nusc.scene, key=lambda s: s["name"])
    samples = scene_samples(nusc, scene["token"])
    assert len(samples) == 3 and samples[0] == scene["first_sample_token"]
    assert [c for c, _ in camera_tokens(nusc, samples[0])] == list(STITCH_ORDER)
    assert [c for c, _ in camera_tokens(nusc, samples[0], "drivelm")] == list(DRIVELM_ORDER)
    assert previous_samples(nusc, samples[2], 5) == samples[:2]
    assert previous_samples(nusc, samples[0], 2) == []
    seq = frame_sequence(nusc, samples[2], "CAM_FRONT", 1)
    assert seq == [nusc.get("sample", t)["data"]["CAM_FRONT"] for t in samples[1:]]
    assert all(nusc.get("sample_data", t)["channel"] == "CAM_FRONT" for t in seq)


def test_camera_objects_are_devkit_boxes_with_filters(nusc, monkeypatch):
    from nuscenes.scripts import export_2d_annotations_as_json as export

    monkeypatch.setattr(export, "nusc", nusc, raising=False)  # get_2d_boxes reads a module global
    total = 0
    for sample in nusc.sample:
        for cam in STITCH_ORDER:
            sd = sample["data"][cam]
            objs = camera_objects(nusc, sd, min_visibility=1, min_box_px=0)
            exported = {r["sample_annotation_token"]: r["bbox_corners"]
                        for r in export.get_2d_boxes(sd, ["1", "2", "3", "4"])}
            assert {o.annotation: list(o.box) for o in objs} == {  # nuScenes' own 2-D export
                k: [round(float(v), 2) for v in box] for k, box in exported.items()}
            for o in objs:
                assert 0 <= o.box.x1 < o.box.x2 <= 1600 and 0 <= o.box.y1 < o.box.y2 <= 900
                assert o.phrase == category_phrase(o.category) and 1 <= o.visibility <= 4
            assert [o.depth for o in objs] == sorted(o.depth for o in objs)
            total += len(objs)
            vis3 = camera_objects(nusc, sd, min_visibility=3, min_box_px=0)
            assert {o.annotation for o in vis3} == {o.annotation for o in objs if o.visibility >= 3}
            cars = camera_objects(nusc, sd, min_visibility=1, min_box_px=0, categories=["vehicle"])
            assert all(o.category.startswith("vehicle.") for o in cars)
            peds = camera_objects(nusc, sd, min_visibility=1, min_box_px=0, categories=["pedestrian"])
            assert {o.annotation for o in peds} == {o.annotation for o in objs if o.phrase == "pedestrian"}
    assert total > 30
    # one string is one comma-separated list of names, never its letters; an unknown name is refused
    sd = next(s["data"]["CAM_FRONT"] for s in nusc.sample
              if camera_objects(nusc, s["data"]["CAM_FRONT"], min_visibility=1, min_box_px=0, categories=["car"]))
    cars = camera_objects(nusc, sd, min_visibility=1, min_box_px=0, categories=["car"])
    assert camera_objects(nusc, sd, min_visibility=1, min_box_px=0, categories="car") == cars
    assert camera_objects(nusc, sd, min_visibility=1, min_box_px=0, categories=" car, truck") == camera_objects(
        nusc, sd, min_visibility=1, min_box_px=0, categories=["car", "truck"])
    for bad in ("cars", ["car", "spaceship"], [5]):
        with pytest.raises(ValueError, match="categories"):
            camera_objects(nusc, sd, categories=bad)
    with pytest.raises(ValueError, match="box_vis_level must be"):
        camera_objects(nusc, nusc.sample[0]["data"]["CAM_FRONT"], box_vis_level="some")
    # only convert_nuscenes checked it: 5 kept no object, 0 every one, each without a word
    for bad in (0, 5, 2.5, "2", True):
        with pytest.raises(ValueError, match="min_visibility must be a nuScenes visibility token 1-4"):
            camera_objects(nusc, nusc.sample[0]["data"]["CAM_FRONT"], min_visibility=bad)


def test_an_object_beside_the_ego_vehicle_keeps_its_part_in_the_image(dataroot, tmp_path):
    """A car alongside the ego vehicle, its rear corners behind CAM_FRONT: nuScenes' 2-D export keeps its in-image
    part (the hull of the corners in front, clipped); 'all' wants every corner in the image, so drops it."""
    import numpy as np
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points
    from pyquaternion import Quaternion

    root = tmp_path / "nus"
    for part in ("v1.0-mini", "maps"):
        shutil.copytree(dataroot / part, root / part)
    tables = root / "v1.0-mini"
    read = {n: json.loads((tables / f"{n}.json").read_text())
            for n in ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sample_annotation")}
    sample = read["sample"][0]
    sd = next(d for d in read["sample_data"] if d["sample_token"] == sample["token"] and d["is_key_frame"]
              and "/CAM_FRONT/" in d["filename"])
    cs = next(c for c in read["calibrated_sensor"] if c["token"] == sd["calibrated_sensor_token"])
    ep = next(e for e in read["ego_pose"] if e["token"] == sd["ego_pose_token"])
    cam_rot = Quaternion(ep["rotation"]) * Quaternion(cs["rotation"])
    cam_pos = np.array(ep["translation"]) + Quaternion(ep["rotation"]).rotate(np.array(cs["translation"]))
    ann = next(a for a in read["sample_annotation"] if a["sample_token"] == sample["token"])
    # camera frame: 1.5 m right, 0.8 m down, 1 m ahead; the car's 4.6 m length along the camera axis
    ann.update(translation=(cam_pos + cam_rot.rotate(np.array([1.5, 0.8, 1.0]))).tolist(),
               rotation=list((cam_rot * Quaternion(axis=[0, 1, 0], angle=-np.pi / 2)).elements),
               size=[1.9, 4.6, 1.6], visibility_token="4", category_name="vehicle.car")
    (tables / "sample_annotation.json").write_text(json.dumps(read["sample_annotation"]))
    nusc = open_nuscenes(root)
    (obj,) = [o for o in camera_objects(nusc, sd["token"]) if o.annotation == ann["token"]]
    assert obj.box.x1 == pytest.approx(1084.9, abs=0.5) and obj.box.y1 == pytest.approx(433.9, abs=0.5)
    assert (obj.box.x2, obj.box.y2) == (1600.0, 900.0)
    assert ann["token"] not in {o.annotation for o in camera_objects(nusc, sd["token"], box_vis_level="all")}

    # a truck filling the view, every corner in front of the camera but projected outside the image: the devkit's
    # "any corner visible" would drop it; the export's hull clipped to the image keeps it, the whole image
    ann.update(translation=(cam_pos + cam_rot.rotate(np.array([0.0, 0.0, 3.5]))).tolist(),
               rotation=list((cam_rot * Quaternion(axis=[0, 1, 0], angle=-np.pi / 2)).elements),
               size=[20.0, 4.0, 10.0], category_name="vehicle.truck")
    (tables / "sample_annotation.json").write_text(json.dumps(read["sample_annotation"]))
    nusc = open_nuscenes(root)
    assert ann["token"] not in {b.token for b in nusc.get_sample_data(sd["token"], BoxVisibility.ANY)[1]}
    _, boxes, intrinsic = nusc.get_sample_data(sd["token"], BoxVisibility.NONE)
    (truck,) = [b for b in boxes if b.token == ann["token"]]
    corners = view_points(truck.corners(), intrinsic, normalize=True)
    assert (truck.corners()[2] > 0).all()
    assert not ((corners[0] >= 0) & (corners[0] <= 1600) & (corners[1] >= 0) & (corners[1] <= 900)).any()
    (obj,) = [o for o in camera_objects(nusc, sd["token"]) if o.annotation == ann["token"]]
    assert tuple(obj.box) == (0.0, 0.0, 1600.0, 900.0)


def test_category_phrases():
    assert category_phrase("vehicle.car") == "car"
    assert category_phrase("human.pedestrian.adult") == "pedestrian"
    assert category_phrase("movable_object.trafficcone") == "traffic cone"
    assert category_phrase("vehicle.new_thing") == "new thing"


def test_converter_writes_grounding_and_region_per_camera_image(converted, nusc):
    out, report = converted
    assert set(report.outputs) == {"train", "val"} and report.total_skipped == 0
    train, val = _records(out / "nuscenes_train.jsonl"), _records(out / "nuscenes_val.jsonl")
    assert report.written == len(train) + len(val) > 50
    assert {r["meta"]["scene"] for r in val} == {"scene-0103"}  # the official mini_val scene
    assert {r["meta"]["scene"] for r in train} == {"scene-0061", "scene-0553"}
    grounding = [r for r in train + val if r["task"] == "grounding"]
    region = [r for r in train + val if r["task"] == "region"]
    assert grounding and region
    for r in grounding:
        human, gpt = (t["value"] for t in r["conversations"])
        assert human == f"<image>\nWhere is the {r['meta']['phrase']}?" and gpt == r["answer"]
        ((phrase, boxes),) = parse_ref_boxes(r["answer"])
        assert phrase == r["meta"]["phrase"] and boxes == r["meta"]["grid_boxes"]
        assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)  # left to right
        for grid, px in zip(boxes, r["meta"]["boxes"]):
            back = from_grid(grid, r["width"], r["height"])
            assert max(abs(a - b) for a, b in zip(back, px)) <= 1.0  # grid step 1.6 / 0.9 px
        assert (out / r["image"]).is_file() and r["image"].startswith("images/nuscenes/samples/")
    for r in region:
        ((_, (box,)),) = parse_ref_boxes(r["conversations"][0]["value"])
        assert box == r["meta"]["grid_box"] and r["answer"] == r["meta"]["phrase"]
        assert r["meta"]["visibility"] >= 2  # default min_visibility
    # the boxes are the devkit's
    r = grounding[0]
    objs = camera_objects(nusc, r["meta"]["sample_data"], min_box_px=8, min_visibility=2)
    assert sorted(list(o.box) for o in objs if o.phrase == r["meta"]["phrase"]) == sorted(r["meta"]["boxes"])


def test_converter_output_reads_cleanly_in_adapt(converted):
    out, _ = converted
    skips = SkipLog()
    records = read_source(SourceSpec("nuscenes", out / "nuscenes_train.jsonl"), skips)
    assert records and len(skips) == 0
    assert all(rec.images[0].is_file() and rec.image_sizes == [(1600, 900)] for rec in records)


def test_history_makes_frame_sequences(dataroot, tmp_path, nusc):
    report = convert_nuscenes(dataroot, tmp_path, history=2, tasks="grounding", progress=False)
    recs = _records(report.outputs["train"]) + _records(report.outputs["val"])
    by_len = {}
    for r in recs:
        images = r["image"] if isinstance(r["image"], list) else [r["image"]]
        by_len.setdefault(len(images), []).append(r)
        assert r["meta"]["history"] == len(images) - 1
        if len(images) > 1:
            human = r["conversations"][0]["value"]
            prefix = "".join(f"Frame-{i + 1}: <image>\n" for i in range(len(images)))
            assert human == prefix + f"Where is the {r['meta']['phrase']} in Frame-{len(images)}?"
            cams = {Path(p).parent.name for p in images}
            assert cams == {r["meta"]["camera"]}
            stamps = [int(Path(p).stem.rsplit("__", 1)[1]) for p in images]
            assert stamps == sorted(stamps) and stamps[-1] == nusc.get("sample_data", r["meta"]["sample_data"])[
                "timestamp"]
            assert r["width_list"] == [1600] * len(images)
    assert set(by_len) == {1, 2, 3}  # first key frame alone, then 1 and 2 previous frames
    skips = SkipLog()
    assert read_source(SourceSpec("seq", report.outputs["train"]), skips) and len(skips) == 0


def test_options_categories_and_min_visibility(dataroot, tmp_path):
    only_cars = convert_nuscenes(dataroot, tmp_path / "a", categories="vehicle.car", progress=False)
    recs = _records(only_cars.outputs["train"])
    assert recs and {r["meta"]["phrase"] for r in recs} == {"car"}
    strict = convert_nuscenes(dataroot, tmp_path / "b", min_visibility=4, tasks=["region"], split_by="hash",
                              val_fraction=0.34, progress=False)
    recs = _records(strict.outputs["train"]) + _records(strict.outputs["val"])
    assert recs and all(r["meta"]["visibility"] == 4 and r["task"] == "region" for r in recs)
    assert len({r["meta"]["scene"] for r in _records(strict.outputs["val"])}) == 1
    for bad, match in [({"tasks": ["detect"]}, "tasks must be"), ({"history": -1}, "history must be"),
                       ({"min_visibility": 5}, "min_visibility must be"),
                       # int() took them as 1 and 2 without a word
                       ({"history": 1.5}, "history must be a whole number"), ({"history": "x"}, "history must be"),
                       ({"min_visibility": 2.5}, "min_visibility must be"),
                       ({"cameras": "ring"}, "unknown camera order"),
                       ({"split_by": "random"}, "split_by must be"),
                       # each was taken: val_fraction ignored unless split_by=hash, a negative min_box_px kept all
                       ({"val_fraction": 1.0}, "val_fraction must be"), ({"val_fraction": "x"}, "val_fraction must be"),
                       ({"min_box_px": -1}, "min_box_px must be"), ({"min_box_px": True}, "min_box_px must be"),
                       # a misspelt category filtered out every object: an empty output and no word why
                       ({"categories": "car,cars"}, r"categories 'cars' match no nuScenes category.*traffic cone")]:
        with pytest.raises(ValueError, match=match):
            convert_nuscenes(dataroot, tmp_path / "c", progress=False, **bad)


def test_tasks_take_a_comma_separated_string_as_categories_do(dataroot, tmp_path):
    """tasks="grounding,region" (as `--option tasks=grounding,region` gives it) was refused as one unknown task,
    while categories="car,truck" was read as two names."""
    both = convert_nuscenes(dataroot, tmp_path / "a", tasks="grounding, region", progress=False)
    assert {r["task"] for r in _records(both.outputs["train"])} == {"grounding", "region"}
    listed = convert_nuscenes(dataroot, tmp_path / "b", tasks=["grounding", "region"], progress=False)
    assert _records(both.outputs["train"]) == _records(listed.outputs["train"])
    with pytest.raises(ValueError, match="tasks must be"):
        convert_nuscenes(dataroot, tmp_path / "c", tasks="grounding,detect", progress=False)
    with pytest.raises(ValueError, match="tasks must be"):
        convert_nuscenes(dataroot, tmp_path / "c", tasks=" , ", progress=False)


def test_missing_camera_file_is_skipped_and_counted(dataroot, tmp_path, nusc):
    root = tmp_path / "nus"
    shutil.copytree(dataroot, root)
    sample = min(nusc.scene, key=lambda s: s["name"])["first_sample_token"]
    gone = root / nusc.get("sample_data", nusc.get("sample", sample)["data"]["CAM_FRONT"])["filename"]
    gone.unlink()
    report = convert_nuscenes(root, tmp_path / "out", history=1, progress=False)
    assert report.skipped["missing camera image"] == 1
    # named relative to the data root: a full path would name the folders around the data
    assert report.examples["missing camera image"][0].startswith(gone.relative_to(root).as_posix() + ": ")
    sd = nusc.get("sample", sample)["data"]["CAM_FRONT"]
    assert report.examples["missing camera image"][0].endswith(f"(sample_data {sd} of sample {sample})")
    assert str(tmp_path) not in report.table().split("\n", 1)[1]  # the title names --src and --out as given
    # the frame itself and the next frame's sequence (which needs it) are skipped; the rest converts
    assert report.skipped["camera image skipped"] == 2
    assert all(e.endswith(f"a camera image of the sequence is missing ({gone.relative_to(root).as_posix()})")
               for e in report.examples["camera image skipped"]), report.examples["camera image skipped"]
    recs = _records(report.outputs["train"])
    assert recs and all(r["meta"]["sample"] != sample or r["meta"]["camera"] != "CAM_FRONT" for r in recs)


def test_reruns_are_idempotent(dataroot, tmp_path):
    first = convert_nuscenes(dataroot, tmp_path, link="copy", progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    data = {p: p.read_bytes() for p in first.outputs.values()}
    second = convert_nuscenes(dataroot, tmp_path, link="copy", progress=False)
    assert second.written == first.written
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps
    assert {p: p.read_bytes() for p in second.outputs.values()} == data


def test_plugin_converter_and_reader(dataroot, tmp_path):
    plugin = get_domain("driving")
    report = plugin.convert("nuscenes", dataroot, tmp_path, tasks="region", progress=False)
    assert report.written > 0
    image = plugin.read(next((tmp_path / "images").rglob("*.jpg")))
    assert image.mode == "RGB" and image.size == (1600, 900)


def test_plugin_registry_does_not_import_the_devkit():
    import subprocess

    code = ("import sys, domains.driving as d; assert d.PLUGIN.converters and 'drivelm' in d.PLUGIN.metrics; "
            "assert 'nuscenes' not in sys.modules, 'devkit imported at plugin load'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_sample_data_file_names_leaving_the_dataroot_are_skipped_not_read(dataroot, tmp_path, nusc):
    """Issue 15 item 10: the table's file names go through the shared guard (domains.files.inside_root)."""
    root = tmp_path / "data" / "nus"
    shutil.copytree(dataroot, root, copy_function=shutil.copy)
    table = root / "v1.0-mini" / "sample_data.json"
    rows = json.loads(table.read_text())
    sample = min(nusc.scene, key=lambda s: s["name"])["first_sample_token"]
    tokens = nusc.get("sample", sample)["data"]
    outside = tmp_path / "data" / "outside.jpg"  # a real image, so only the guard can keep it out
    shutil.copy(root / nusc.get("sample_data", tokens["CAM_FRONT"])["filename"], outside)
    bad = {tokens["CAM_FRONT"]: "../outside.jpg", tokens["CAM_BACK"]: str(outside)}
    for row in rows:
        if row["token"] in bad:
            row["filename"] = bad[row["token"]]
    table.write_text(json.dumps(rows))
    report = convert_nuscenes(root, tmp_path / "out", link="copy", progress=False)
    assert report.skipped["path escapes data root"] == 2
    assert report.skipped["camera image skipped"] == 2
    assert all("outside" not in p.name for p in (tmp_path / "out").rglob("*"))
    assert report.written > 0



def test_samples_linked_in_from_another_disk_are_read_but_links_inside_them_still_may_not_leave(dataroot, tmp_path,
                                                                                                 nusc):
    """A dataroot whose samples/ is a symlink (nuScenes kept on another disk) converts like a plain one; a file
    link below samples/ that leads out of it is still skipped."""
    plain = convert_nuscenes(dataroot, tmp_path / "plain", link="copy", progress=False)
    root, disk = tmp_path / "nus", tmp_path / "disk2"
    shutil.copytree(dataroot, root, copy_function=shutil.copy)
    shutil.move(root / "samples", disk / "samples")
    (root / "samples").symlink_to(disk / "samples", target_is_directory=True)
    linked = convert_nuscenes(root, tmp_path / "linked", link="copy", progress=False)
    assert "path escapes data root" not in linked.skipped
    assert linked.written == plain.written > 0
    assert sorted(p.name for p in (tmp_path / "linked").rglob("*.jsonl")) == sorted(
        p.name for p in (tmp_path / "plain").rglob("*.jsonl"))

    sample = min(nusc.scene, key=lambda s: s["name"])["first_sample_token"]
    front = nusc.get("sample_data", nusc.get("sample", sample)["data"]["CAM_FRONT"])["filename"]
    secret = tmp_path / "secret.jpg"  # a real image outside both folders: only the guard keeps it out
    shutil.copy(disk / front, secret)
    (disk / front).unlink()
    (disk / front).symlink_to(secret)
    escaped = convert_nuscenes(root, tmp_path / "escaped", link="copy", progress=False)
    assert escaped.skipped["path escapes data root"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_truncated_camera_file_is_skipped_not_linked(dataroot, tmp_path, nusc, workers):
    """A camera JPEG cut short keeps a whole header: it is decoded before it is linked, and skipped."""
    root = tmp_path / "nus"
    shutil.copytree(dataroot, root)
    sample = min(nusc.scene, key=lambda s: s["name"])["first_sample_token"]
    cut = root / nusc.get("sample_data", nusc.get("sample", sample)["data"]["CAM_FRONT"])["filename"]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    report = convert_nuscenes(root, tmp_path / "out", progress=False, workers=workers)
    assert report.skipped["unreadable camera image"] == 1
    assert report.examples["unreadable camera image"][0].startswith(cut.relative_to(root).as_posix() + ": ")
    assert "truncated" in report.examples["unreadable camera image"][0]
    sd = nusc.get("sample", sample)["data"]["CAM_FRONT"]  # which sample lost its picture, as a missing one says
    assert report.examples["unreadable camera image"][0].endswith(f"(sample_data {sd} of sample {sample})")
    # the frame losing it said the image was missing although the file is there: it now says it does not decode,
    # with the image reader's error
    (frame,) = report.examples["camera image skipped"]
    assert f"sample {sample} CAM_FRONT: a camera image of the sequence does not decode (" in frame, frame
    assert f"({cut.relative_to(root).as_posix()}: " in frame and "truncated" in frame and "missing" not in frame
    recs = [r for split in report.outputs.values() for r in _records(split)]
    assert recs and not any(r["image"].endswith(cut.name) for r in recs if isinstance(r.get("image"), str))
    assert not any(cut.name in str(r.get("image")) for r in recs)


def test_a_camera_file_of_another_size_is_skipped_before_it_is_linked(dataroot, tmp_path, nusc):
    """The size check came after the file was linked into out/: the skipped record left an image nothing used."""
    from PIL import Image

    root = tmp_path / "nus"
    shutil.copytree(dataroot, root)
    sample = min(nusc.scene, key=lambda s: s["name"])["first_sample_token"]
    sd = nusc.get("sample_data", nusc.get("sample", sample)["data"]["CAM_FRONT"])
    small = root / sd["filename"]
    with Image.open(small) as im:
        im.resize((sd["width"] // 2, sd["height"] // 2)).save(small)
    report = convert_nuscenes(root, tmp_path / "out", progress=False)
    assert report.skipped["image size mismatch"] == 1
    assert not (tmp_path / "out" / "images" / "nuscenes" / sd["filename"]).exists()
    shown = report.examples["image size mismatch"][0]
    assert shown.startswith(small.relative_to(root).as_posix() + ": file is 800x450")
    recs = [r for split in report.outputs.values() for r in _records(split)]
    assert recs and not any(r["meta"]["sample_data"] == sd["token"] for r in recs)
