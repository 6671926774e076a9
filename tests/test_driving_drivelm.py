"""domains.driving.drivelm: DriveLM-nuScenes v1.1 -> stitched / multi-image records with exact c-tag coordinates."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from adapt.data.samples import SkipLog, SourceSpec, read_source
from domains.base import DomainError
from domains.driving.drivelm import (
    BEHAVIOR_CHOICES,
    MOVING_STATUS_CHOICES,
    QA_CATEGORIES,
    choice_question,
    convert_drivelm,
    drivelm_tag,
    parse_options,
)
from domains.driving.layout import (
    DRIVELM_ORDER,
    STITCH_ORDER,
    STITCHED_PREFIX,
    from_camera_grid,
    from_stitched,
    iter_ctags,
    multi_view_prefix,
    stitch_cameras,
)
from domains.driving.metrics import aggregate_drivelm, score_drivelm
from domains.driving.synthetic import generate

TRAIN = "v1_1_train_nus.json"
Q_ONLY = "v1_1_val_nus_q_only.json"


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """``raw/nuscenes`` and ``raw/drivelm`` as the synthetic generator writes them."""
    root = tmp_path_factory.mktemp("raw")
    generate(root, progress=False)
    return root


@pytest.fixture(scope="module")
def stitched(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("stitched")
    return out, convert_drivelm(raw / "drivelm", out, val_fraction=0.5, progress=False)


@pytest.fixture(scope="module")
def multi(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi")
    return out, convert_drivelm(raw / "drivelm", out, view_mode="multi", camera_order="drivelm", progress=False)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _source_qas(raw: Path) -> dict[str, tuple[str, dict]]:
    """qa_id -> (category, source QA) over both DriveLM files."""
    out = {}
    for name in (TRAIN, Q_ONLY):
        data = json.loads((raw / "drivelm" / name).read_text())
        for scene, body in data.items():
            for frame, fr in body["key_frames"].items():
                qas = [(c, qa) for c in QA_CATEGORIES for qa in fr["QA"][c]]
                out.update({f"{scene}_{frame}_{i}": qa for i, qa in enumerate(qas)})
    return out


def _assert_round_trip(records: list[dict], sources: dict, inverse) -> int:
    """Every c-tag of every record, mapped back to camera pixels, is the source's within 0.1 px."""
    n = 0
    for r in records:
        category, src = sources[r["meta"]["qa_id"]]
        assert r["meta"]["category"] == category
        for grid_text, pixel_text, source_text in (
                (r["answer"], r["meta"]["answer_pixels"], src["A"]),
                (r["conversations"][0]["value"], r["meta"]["question_pixels"], src["Q"])):
            assert pixel_text == source_text.strip()
            got, want = list(iter_ctags(grid_text)), list(iter_ctags(source_text))
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert (g.obj, g.camera) == (w.obj, w.camera)
                x, y = inverse(g.x, g.y, g.camera)
                assert abs(x - w.x) <= 0.1 and abs(y - w.y) <= 0.1, (g, w)
                n += 1
    return n


def test_stitched_records_and_exact_round_trip(raw, stitched):
    out, report = stitched
    assert set(report.outputs) == {"train", "val", "test"} and report.total_skipped == 0
    records = {s: _records(out / f"drivelm_{s}.jsonl") for s in ("train", "val", "test")}
    assert report.written == sum(map(len, records.values()))
    sources = _source_qas(raw)
    n_tags = 0
    for split, recs in records.items():
        n_tags += _assert_round_trip(recs, sources, from_stitched)
        for r in recs:
            assert r["task"] == "drivelm" and r["id"] == r["meta"]["qa_id"]
            assert r["image"].startswith("images/drivelm/stitch/") and (r["width"], r["height"]) == (2688, 896)
            assert r["conversations"][0]["value"].startswith(STITCHED_PREFIX)
            assert r["conversations"][0]["value"].count("<image>") == 1
            assert r["meta"]["view_mode"] == "stitched" and r["meta"]["camera_order"] == "stitch"
            assert r["meta"]["split"] == split and r["meta"]["drivelm_tag"] in (0, 1, 2, 3)
            assert all(t.x == round(t.x, 2) for t in iter_ctags(r["answer"]))
            if split == "test":
                assert r["answer"] == "" and r["conversations"][1]["value"] == ""
            else:
                assert r["answer"] and r["conversations"][1]["value"] == r["answer"]
    assert n_tags > 200
    # scenes do not straddle train and val
    scenes = {s: {r["meta"]["scene"] for r in recs} for s, recs in records.items()}
    assert len(scenes["train"]) == len(scenes["val"]) == 1 and not scenes["train"] & scenes["val"]
    # train + val records read cleanly in adapt (the answer-less test questions are not training data)
    for split in ("train", "val"):
        skips = SkipLog()
        assert len(read_source(SourceSpec(split, out / f"drivelm_{split}.jsonl"), skips)) == len(records[split])
        assert len(skips) == 0


def test_stitched_image_is_written_once_and_matches_the_cameras(raw, stitched):
    out, _ = stitched
    r = _records(out / "drivelm_train.jsonl")[0]
    source = json.loads((raw / "drivelm" / TRAIN).read_text())
    frame = source[r["meta"]["scene"]]["key_frames"][r["meta"]["frame"]]
    cams = {c: Image.open(raw / "drivelm" / p) for c, p in frame["image_paths"].items()}
    expected = np.asarray(stitch_cameras(cams))
    assert np.array_equal(np.asarray(Image.open(out / r["image"]).convert("RGB")), expected)
    pngs = list((out / "images" / "drivelm" / "stitch").glob("*.png"))
    assert len(pngs) == 9  # one per key frame (3 scenes x 3 frames), shared by all its QAs


def test_multi_view_records_and_exact_round_trip(raw, multi):
    out, report = multi
    assert report.total_skipped == 0
    recs = _records(out / "drivelm_multi_train.jsonl") + _records(out / "drivelm_multi_test.jsonl")
    assert _assert_round_trip(recs, _source_qas(raw), from_camera_grid) > 200
    source = json.loads((raw / "drivelm" / TRAIN).read_text())
    for r in recs:
        assert r["conversations"][0]["value"].startswith(multi_view_prefix("drivelm"))
        assert [Path(p).parent.name for p in r["image"]] == list(DRIVELM_ORDER)
        assert r["width_list"] == [1600] * 6 and r["height_list"] == [900] * 6
        assert r["meta"]["view_mode"] == "multi" and r["meta"]["camera_order"] == "drivelm"
        frame = source.get(r["meta"]["scene"], {}).get("key_frames", {}).get(r["meta"]["frame"])
        if frame:
            for cam, rel in zip(DRIVELM_ORDER, r["image"]):
                assert (out / rel).read_bytes() == (raw / "drivelm" / frame["image_paths"][cam]).read_bytes()
    skips = SkipLog()
    assert read_source(SourceSpec("multi", out / "drivelm_multi_train.jsonl"), skips) and len(skips) == 0


def test_reruns_reuse_images_and_rewrite_nothing(raw, tmp_path):
    first = convert_drivelm(raw / "drivelm" / TRAIN, tmp_path, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    second = convert_drivelm(raw / "drivelm" / TRAIN, tmp_path, progress=False)
    assert second.written == first.written and set(first.outputs) == {"train"}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps


def test_tag_rules():
    assert drivelm_tag("behavior", "Predict the behavior of the ego vehicle.", "x") == 0
    assert drivelm_tag("perception", "What is the moving status of object <c1,CAM_BACK,1,2>?", "Stopped.") == 0
    assert drivelm_tag("perception", "What are the important objects in the current scene?", "There is") == 2
    assert drivelm_tag("prediction", "Would <c1,CAM_BACK,1,2> be in the moving direction?", "Yes.") == 0
    assert drivelm_tag("prediction", "What object should the ego vehicle notice first?",
                       "Firstly notice that <c1,CAM_BACK,1,2>.") == 3
    assert drivelm_tag("prediction", "What is the future state of <c1,CAM_BACK,1,2>?", "Keep going straight.") == 1
    assert drivelm_tag("prediction", "Is it safe?", "Nothing noteworthy.") == 1  # "no" must be a word
    assert drivelm_tag("planning", "What actions could the ego vehicle take?", "Slow down.") == 1


def test_given_tags_are_kept(raw, stitched):
    out, _ = stitched
    sources = _source_qas(raw)
    for r in _records(out / "drivelm_test.jsonl"):
        assert r["meta"]["drivelm_tag"] == sources[r["meta"]["qa_id"]][1]["tag"][0]


def test_a_qa_with_several_tags_keeps_them_all_and_is_scored_under_each(raw, tmp_path):
    data = json.loads((raw / "drivelm" / Q_ONLY).read_text())
    scene = next(iter(data))
    frame = next(iter(data[scene]["key_frames"]))
    body = data[scene]["key_frames"][frame]
    body["QA"]["perception"][0]["tag"] = [3, 2, 3]  # evaluation.py scores it as language and as match
    body["QA"]["perception"][1]["tag"] = [1]
    (tmp_path / "qa").mkdir()
    (tmp_path / "qa" / Q_ONLY).write_text(json.dumps({scene: {"scene_description": "", "key_frames": {frame: body}}}))
    report = convert_drivelm(tmp_path / "qa", tmp_path / "out", nuscenes_root=raw / "nuscenes", view_mode="multi",
                             progress=False)
    first, second = _records(report.outputs["test"])[:2]
    assert first["meta"]["drivelm_tag"] == [2, 3] and second["meta"]["drivelm_tag"] == 1
    meta = {**first["meta"], "answer_pixels": "A car <c1,CAM_FRONT,800.0,450.0>."}  # q_only: no answer to score
    pred = SimpleNamespace(prediction="<c1,CAM_FRONT,800.0,450.0>", reference=first["answer"], meta=meta,
                           task="drivelm", scores={})
    assert set(score_drivelm(pred.prediction, pred, pred.reference)) == {"ROUGE_L", "match_f1"}
    out = aggregate_drivelm([pred], {"progress": False})
    assert out["match_f1"] is not None and out["ROUGE_L"] is not None


def test_options_are_parsed_and_kept(stitched):
    q = ("Predict the behavior of the ego vehicle. Please select the correct answer from the following options: "
         "A. The ego vehicle is going straight. The ego vehicle is driving fast. B. The ego vehicle is steering to "
         "the left. The ego vehicle is driving slowly. C. The ego vehicle is going straight. The ego vehicle is not "
         "moving. D. The ego vehicle is slightly steering to the right. The ego vehicle is driving very fast.")
    assert parse_options(q) == [
        "The ego vehicle is going straight. The ego vehicle is driving fast.",
        "The ego vehicle is steering to the left. The ego vehicle is driving slowly.",
        "The ego vehicle is going straight. The ego vehicle is not moving.",
        "The ego vehicle is slightly steering to the right. The ego vehicle is driving very fast."]
    assert parse_options("What is the moving status of object <c1,CAM_FRONT,1,2>?") is None
    out, _ = stitched
    with_options = [r for r in _records(out / "drivelm_test.jsonl") if "options" in r]
    assert with_options and all(len(r["options"]) == 4 for r in with_options)
    assert {r["meta"]["category"] for r in with_options} == {"perception", "behavior"}


def test_mc_option_makes_deterministic_four_way_choices(raw, tmp_path):
    reports = [convert_drivelm(raw / "drivelm" / TRAIN, tmp_path / k, mc=True, view_mode="multi", progress=False)
               for k in "ab"]
    a, b = (_records(rep.outputs["train"]) for rep in reports)
    assert [r["conversations"] for r in a] == [r["conversations"] for r in b]
    mcs = [r for r in a if "options" in r]
    assert {r["meta"]["category"] for r in mcs} == {"perception", "behavior"}
    for r in mcs:
        assert r["answer"] in "ABCD" and len(r["answer"]) == 1 and len(set(r["options"])) == 4
        assert r["options"]["ABCD".index(r["answer"])] == r["meta"]["answer_text"]
        pool = MOVING_STATUS_CHOICES if r["meta"]["category"] == "perception" else BEHAVIOR_CHOICES
        assert set(r["options"]) <= set(pool)
        assert "Please select the correct answer from the following options: A. " in r["conversations"][0]["value"]
        assert r["meta"]["answer_pixels"] == r["answer"]  # DriveLM's test form: the letter
    q, letter, options = choice_question("Q?", "Stopped.", MOVING_STATUS_CHOICES, "k")
    assert choice_question("Q?", "Stopped.", MOVING_STATUS_CHOICES, "k") == (q, letter, options)
    assert parse_options(q) == options
    for i in range(20):  # an answer written unlike its choice ("stopped") never sits next to that choice
        _, letter, options = choice_question("Q?", "stopped", MOVING_STATUS_CHOICES, f"k{i}")
        assert options["ABCD".index(letter)] == "stopped" and "Stopped." not in options


# --------------------------------------------------------------------------------------------- bad input
def _copy_raw(raw: Path, dst: Path) -> Path:
    shutil.copytree(raw / "drivelm", dst / "drivelm")
    shutil.copytree(raw / "nuscenes", dst / "nuscenes", copy_function=os.link)  # hard links: cheap, not symlinks
    return dst / "drivelm"


def test_bad_input_is_skipped_and_counted(raw, tmp_path):
    drivelm = _copy_raw(raw, tmp_path)
    data = json.loads((drivelm / TRAIN).read_text())
    s0, s1 = list(data)
    f0, f1, f2 = list(data[s0]["key_frames"])
    f3 = next(iter(data[s1]["key_frames"]))
    qa = data[s0]["key_frames"][f0]["QA"]
    qa["perception"][0]["A"] += " Also <c9,CAM_ROOF,10.0,10.0>."  # unknown camera
    qa["perception"][1]["Q"] = "Where is <c8,CAM_FRONT,1700.0,10.0>?"  # outside the image
    del qa["prediction"][0]["Q"]  # missing field
    qa["planning"][0]["A"] = ""  # no answer in a training file
    data[s0]["key_frames"][f1]["image_paths"]["CAM_BACK"] = "../nuscenes/samples/CAM_BACK/missing.jpg"
    data[s0]["key_frames"][f2]["image_paths"]["CAM_FRONT"] = "../../../../etc/passwd"
    del data[s1]["key_frames"][f3]["QA"]
    data["bad-scene"] = ["not", "a", "scene"]
    data["empty-scene"] = {"scene_description": "", "key_frames": {}}
    (drivelm / TRAIN).write_text(json.dumps(data))
    (drivelm / "broken.json").write_text("{not json")
    report = convert_drivelm(drivelm, tmp_path / "out", view_mode="multi", progress=False)
    assert report.skipped == {"bad c-tag": 2, "malformed QA": 1, "missing answer": 1, "missing camera image": 1,
                              "path escapes data root": 1, "malformed frame": 1, "malformed scene": 1,
                              "scene without key frames": 1, "malformed JSON": 1}
    assert "empty-scene" in report.examples["scene without key frames"][0]
    assert "CAM_ROOF" in " ".join(report.examples["bad c-tag"]) and "1700" in " ".join(report.examples["bad c-tag"])
    assert "missing.jpg" in report.examples["missing camera image"][0]
    assert "broken.json" in report.examples["malformed JSON"][0]
    train = _records(report.outputs["train"])
    frames_out = {r["meta"]["frame"] for r in train}
    assert f0 in frames_out and f1 not in frames_out and f2 not in frames_out and f3 not in frames_out
    n_f0 = sum(len(v) for v in data[s0]["key_frames"][f0]["QA"].values())
    assert sum(r["meta"]["frame"] == f0 for r in train) == n_f0 - 4


def test_unknown_sample_tokens_with_a_dataroot(raw, tmp_path):
    drivelm = _copy_raw(raw, tmp_path)
    data = json.loads((drivelm / TRAIN).read_text())
    scene = next(iter(data))
    frames = data[scene]["key_frames"]
    first = next(iter(frames))
    frames["f" * 32] = frames.pop(first)
    (drivelm / TRAIN).write_text(json.dumps(data))
    report = convert_drivelm(drivelm / TRAIN, tmp_path / "out", dataroot=raw / "nuscenes", view_mode="multi",
                             progress=False)
    assert report.skipped == {"unknown sample token": 1}
    assert "f" * 32 in report.examples["unknown sample token"][0]
    without = convert_drivelm(drivelm / TRAIN, tmp_path / "out2", view_mode="multi", progress=False)
    assert without.total_skipped == 0 and without.written > report.written


def test_a_frame_in_two_files_is_converted_once(raw, tmp_path):
    """A second file holding the same frames (DriveLM's train_sample.json next to the full set) would write every
    QA id twice, and into two splits if the files' names say different ones."""
    drivelm = _copy_raw(raw, tmp_path)
    shutil.copy(drivelm / TRAIN, drivelm / "v1_1_val_nus.json")  # read after v1_1_train_nus.json, split val
    n_frames = sum(len(s["key_frames"]) for s in json.loads((drivelm / TRAIN).read_text()).values())
    alone = convert_drivelm(drivelm / TRAIN, tmp_path / "one", view_mode="multi", progress=False)
    report = convert_drivelm(drivelm, tmp_path / "out", view_mode="multi", progress=False)
    assert report.skipped == {"duplicate frame": n_frames}
    assert "v1_1_val_nus.json scene" in report.examples["duplicate frame"][0]
    assert "already read from v1_1_train_nus.json" in report.examples["duplicate frame"][0]
    assert "val" not in report.outputs  # no training frame leaks into val
    ids = [r["id"] for r in _records(report.outputs["train"])]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(r["id"] for r in _records(alone.outputs["train"]))


def test_a_repeated_question_in_a_frame(raw, tmp_path):
    """The same question twice in a frame: a training copy with the same answer is dropped, another answer is kept
    with a warning; answer-less test files keep every QA id (the submission needs them all)."""
    drivelm = _copy_raw(raw, tmp_path)
    asked, n_test = {}, 0
    for name in (TRAIN, Q_ONLY):
        data = json.loads((drivelm / name).read_text())
        token, frame = next(iter(next(iter(data.values()))["key_frames"].items()))
        first = frame["QA"]["perception"][0]
        frame["QA"]["behavior"].append(dict(first))
        frame["QA"]["behavior"].append({**first, "A": "Ein grünes Auto, 車."} if name == TRAIN else dict(first))
        (drivelm / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        asked[name] = (token, first["Q"])
        n_test = sum(len(v) for v in frame["QA"].values())  # Q_ONLY's frame, read last
    report = convert_drivelm(drivelm, tmp_path / "out", view_mode="multi", progress=False)
    assert report.skipped == {"duplicate QA": 1}
    assert "same question and answer as QA 0" in report.examples["duplicate QA"][0]
    assert report.warnings == {"conflicting answers": 1}
    assert "車" in report.warning_examples["conflicting answers"][0]
    train = _records(report.outputs["train"])
    answers = [r["answer"] for r in train if (r["meta"]["frame"], r["meta"]["question_pixels"]) == asked[TRAIN]]
    assert len(answers) == 2 and answers[-1] == "Ein grünes Auto, 車."
    test = _records(report.outputs["test"])
    assert sum(r["meta"]["frame"] == asked[Q_ONLY][0] for r in test) == n_test  # both repeats kept


@pytest.mark.parametrize("view_mode", ["stitched", "multi"])
def test_an_image_path_of_another_camera_is_refused(raw, tmp_path, view_mode):
    """Two cameras' paths swapped in image_paths stitched CAM_BACK into CAM_FRONT's cell (or linked it as
    CAM_FRONT), so every c-tag of the frame pointed at the wrong view."""
    drivelm = _copy_raw(raw, tmp_path)
    data = json.loads((drivelm / TRAIN).read_text())
    scene = next(iter(data))
    token, frame = next(iter(data[scene]["key_frames"].items()))
    paths = frame["image_paths"]
    paths["CAM_FRONT"], paths["CAM_BACK"] = paths["CAM_BACK"], paths["CAM_FRONT"]
    (drivelm / TRAIN).write_text(json.dumps(data))
    report = convert_drivelm(drivelm / TRAIN, tmp_path / "out", view_mode=view_mode, progress=False)
    assert report.skipped == {"camera mismatch": 1}
    assert token in report.examples["camera mismatch"][0] and "a picture of CAM_BACK" in report.examples[
        "camera mismatch"][0]
    assert not any(r["meta"]["frame"] == token for r in _records(report.outputs["train"]))


def test_nuscenes_root_option(raw, tmp_path):
    (tmp_path / "qa").mkdir()
    shutil.copy(raw / "drivelm" / TRAIN, tmp_path / "qa" / TRAIN)
    # without the root the official relative paths point nowhere
    missing = convert_drivelm(tmp_path / "qa" / TRAIN, tmp_path / "a", progress=False)
    assert missing.written == 0 and missing.skipped["missing camera image"] == 6
    report = convert_drivelm(tmp_path / "qa" / TRAIN, tmp_path / "b", nuscenes_root=raw / "nuscenes",
                             view_mode="multi", progress=False)
    assert report.total_skipped == 0 and report.written > 0
    r = _records(report.outputs["train"])[0]
    assert [Path(p).parent.name for p in r["image"]] == list(STITCH_ORDER)  # multi mode's default order


@pytest.mark.parametrize("name, split", [(TRAIN, "train"), (Q_ONLY, "test"), ("test_eval.json", "test"),
                                         ("drivelm_nus_latest.json", "train"), ("v1_1_val_nus.json", "val"),
                                         ("interval-2024.json", "train"), ("contest.json", "train")])
def test_a_file_goes_to_the_split_its_whole_name_tokens_say(raw, tmp_path, name, split):
    (tmp_path / "qa").mkdir()
    shutil.copy(raw / "drivelm" / TRAIN, tmp_path / "qa" / name)  # a training file with answers, renamed
    report = convert_drivelm(tmp_path / "qa", tmp_path / "out", nuscenes_root=raw / "nuscenes", view_mode="multi",
                             val_fraction=0.5 if split == "train" else 0.0, progress=False)
    assert set(report.outputs) == ({"train", "val"} if split == "train" else {split})
    assert report.inputs[name].startswith(f"{split} file by its name")
    assert f"| read: {name} | | {split} file by its name" in report.table()


def test_symlinks_leaving_the_root_are_refused_and_nuscenes_root_trusts_its_folder(raw, tmp_path):
    """Issue 15 item 10: one guard (domains.files.inside_root) for every name read from a data file."""
    shutil.copytree(raw / "drivelm", tmp_path / "drivelm")
    (tmp_path / "nuscenes").symlink_to(raw / "nuscenes", target_is_directory=True)
    linked = convert_drivelm(tmp_path / "drivelm" / TRAIN, tmp_path / "a", view_mode="multi", progress=False)
    n_frames = sum(len(s["key_frames"]) for s in json.loads((raw / "drivelm" / TRAIN).read_text()).values())
    assert linked.written == 0 and linked.skipped == {"path escapes data root": n_frames}
    assert "symlink" in linked.examples["path escapes data root"][0]
    assert "nuscenes_root" in linked.examples["path escapes data root"][0]
    # the user names the folder: trusted as given, even through the link
    ok = convert_drivelm(tmp_path / "drivelm" / TRAIN, tmp_path / "b", view_mode="multi", progress=False,
                         nuscenes_root=tmp_path / "nuscenes")
    assert ok.total_skipped == 0 and ok.written > 0
    # ... but a camera file inside samples/ that links outside it is not read
    data = json.loads((raw / "drivelm" / TRAIN).read_text())
    scene = next(iter(data))
    frame = next(iter(data[scene]["key_frames"]))
    cam_path = data[scene]["key_frames"][frame]["image_paths"]["CAM_FRONT"]
    own = tmp_path / "own_nuscenes"
    shutil.copytree(raw / "nuscenes" / "samples", own / "samples", copy_function=os.link)
    target = own / "samples" / cam_path.split("samples/", 1)[1]
    target.unlink()
    secret = tmp_path / "secret.jpg"
    shutil.copy(raw / "nuscenes" / "samples" / cam_path.split("samples/", 1)[1], secret)
    target.symlink_to(secret)
    report = convert_drivelm(tmp_path / "drivelm" / TRAIN, tmp_path / "c", view_mode="multi", progress=False,
                             nuscenes_root=own)
    assert report.skipped == {"path escapes data root": 1}
    assert not (tmp_path / "c" / "images" / "nuscenes" / "samples" / "CAM_FRONT" / target.name).exists()


def test_argument_errors(raw, tmp_path):
    with pytest.raises(ValueError, match="view_mode must be"):
        convert_drivelm(raw / "drivelm", tmp_path, view_mode="grid")
    with pytest.raises(ValueError, match="unknown camera order"):
        convert_drivelm(raw / "drivelm", tmp_path, view_mode="multi", camera_order="clockwise")
    with pytest.raises(ValueError, match="camera_order applies to view_mode=multi"):  # was silently ignored
        convert_drivelm(raw / "drivelm", tmp_path, camera_order="drivelm")
    with pytest.raises(ValueError, match="expected a DriveLM JSON file"):
        convert_drivelm(tmp_path / "nothing", tmp_path)


def test_cli_wrong_root_exits_1_with_the_skip_table_and_keeps_outputs(raw, tmp_path, capsys):
    """Issue 14 (15): QA whose camera paths lead nowhere converted nothing yet exited 0 over empty JSONL."""
    from adapt.cli import main

    out = tmp_path / "out"
    assert main(["convert", "driving", "drivelm", "--src", str(raw / "drivelm"), "--out", str(out),
                 "--option", "progress=false"]) == 0
    kept = {p: p.read_bytes() for p in out.glob("*.jsonl")}
    capsys.readouterr()
    (tmp_path / "qa").mkdir()
    shutil.copy(raw / "drivelm" / TRAIN, tmp_path / "qa" / TRAIN)
    rc = main(["convert", "driving", "drivelm", "--src", str(tmp_path / "qa"), "--out", str(out),
               "--option", "progress=false"])
    captured = capsys.readouterr()
    assert rc == 1 and "| written | 0 | |" in captured.out and "skipped: missing camera image" in captured.out
    assert "nothing converted" in captured.err and "Traceback" not in captured.err
    assert {p: p.read_bytes() for p in out.glob("*.jsonl")} == kept


def test_cli_an_unreadable_split_file_exits_1_after_converting_the_rest(raw, tmp_path, capsys):
    """The train JSON with the wrong top level (a list) was one skip row and exit 0, the test split converted and
    the train split silently missing."""
    from adapt.cli import main

    src = tmp_path / "qa"
    shutil.copytree(raw / "drivelm", src)
    data = json.loads((src / TRAIN).read_text())
    (src / TRAIN).write_text(json.dumps(list(data.values())))
    rc = main(["convert", "driving", "drivelm", "--src", str(src), "--out", str(tmp_path / "out"),
               "--option", f"nuscenes_root={raw / 'nuscenes'}", "--option", "progress=false"])
    captured = capsys.readouterr()
    assert rc == 1 and "skipped: malformed JSON | 1 |" in captured.out and "top level is a list" in captured.out
    assert "1 annotation file(s) could not be read at all" in captured.err and "Traceback" not in captured.err
    assert list((tmp_path / "out").glob("*test*.jsonl"))  # the readable split was converted


# --------------------------------------------------------------------------------------------- stitched encodings
def _one_frame(raw: Path, dst: Path) -> tuple[Path, dict]:
    """The training JSON cut to its first frame (fast), and that frame."""
    data = json.loads((raw / "drivelm" / TRAIN).read_text())
    scene = next(iter(data))
    frame = next(iter(data[scene]["key_frames"]))
    data = {scene: {**data[scene], "key_frames": {frame: data[scene]["key_frames"][frame]}}}
    dst.mkdir(parents=True, exist_ok=True)
    (dst / TRAIN).write_text(json.dumps(data))
    return dst / TRAIN, data[scene]["key_frames"][frame]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def test_readme_says_jpeg_is_not_smaller_on_the_synthetic_renders(raw, tmp_path):
    """The flat synthetic cameras compress better as PNG than as JPEG (quality 95): README's JPEG option must not
    promise the user of `adapt synthesize driving` smaller frames (its sizes hold for grainy, real pictures)."""
    src, _ = _one_frame(raw, tmp_path / "qa")
    sizes = {}
    for image_format in ("png", "jpeg"):
        convert_drivelm(src, tmp_path / image_format, nuscenes_root=raw / "nuscenes", image_format=image_format,
                        progress=False)
        sizes[image_format] = sum(f.stat().st_size for f in (tmp_path / image_format / "images").rglob("*.*"))
    assert sizes["jpeg"] > sizes["png"] > 0
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    claim = re.search(r"`--option image_format=jpeg` \(.*?\)[^.;]*", readme).group(0)
    assert "adapt synthesize driving` are smaller as PNG" in claim, claim


def test_png_levels_decode_to_the_same_pixels_and_jpeg_is_close(raw, tmp_path):
    """Issue 15 item 12: a faster PNG level changes the file, never the pixels (so the eval is the same);
    JPEG is lossy, by a bounded amount."""
    src, frame = _one_frame(raw, tmp_path / "qa")
    cams = {c: Image.open(raw / "drivelm" / p) for c, p in frame["image_paths"].items()}
    expected = np.asarray(stitch_cameras(cams)).astype(np.int16)
    runs = {}
    for name, options in (("default", {}), ("level6", {"png_level": 6}), ("level0", {"png_level": 0}),
                          ("jpeg", {"image_format": "jpeg"}), ("jpeg80", {"image_format": "jpeg", "jpeg_quality": 80})):
        out = tmp_path / name
        report = convert_drivelm(src, out, nuscenes_root=raw / "nuscenes", progress=False, **options)
        recs = _records(report.outputs["train"])
        runs[name] = (out, recs, _pixels(out / recs[0]["image"]), (out / recs[0]["image"]).stat().st_size)
    for name in ("default", "level6", "level0"):
        out, recs, pixels, _ = runs[name]
        assert recs[0]["image"].endswith(".png") and np.array_equal(pixels, expected), name
        assert recs == runs["default"][1]  # same records, same image path
    sizes = {k: v[3] for k, v in runs.items()}
    assert sizes["level0"] > sizes["default"] > sizes["level6"]  # the level only trades size for time
    for name, mean_limit, max_limit in (("jpeg", 0.5, 48), ("jpeg80", 1.5, 96)):  # 4:4:4 chroma keeps labels sharp
        out, recs, pixels, _ = runs[name]
        assert all(r["image"].endswith(".jpg") for r in recs)
        assert [{**r, "image": r["image"][:-4]} for r in recs] == [{**r, "image": r["image"][:-4]}
                                                                    for r in runs["default"][1]]
        diff = np.abs(pixels - expected)
        assert 0 < diff.mean() < mean_limit and diff.max() < max_limit, (name, diff.mean(), diff.max())
    assert np.abs(runs["jpeg"][2] - expected).mean() < np.abs(runs["jpeg80"][2] - expected).mean()


def test_stitched_encoding_reruns_and_option_errors(raw, tmp_path):
    src, _ = _one_frame(raw, tmp_path / "qa")
    out = tmp_path / "out"
    jpg = lambda: next((out / "images" / "drivelm" / "stitch").glob("*.jpg"))  # noqa: E731
    convert_drivelm(src, out, nuscenes_root=raw / "nuscenes", image_format="jpeg", progress=False)
    first = jpg().stat().st_ino  # a written file is a new one renamed into place (its time is the cameras')
    convert_drivelm(src, out, nuscenes_root=raw / "nuscenes", image_format="jpeg", progress=False)
    assert jpg().stat().st_ino == first  # same quality: reused
    convert_drivelm(src, out, nuscenes_root=raw / "nuscenes", image_format="jpeg", jpeg_quality=70, progress=False)
    assert jpg().stat().st_ino != first  # another quality: rewritten
    with Image.open(jpg()) as im:
        assert b"quality=70" in im.info["comment"]
    for options, needle in (({"jpeg_quality": 90}, "applies to image_format=jpeg"),
                            ({"image_format": "jpeg", "png_level": 3}, "applies to image_format=png"),
                            ({"image_format": "webp"}, "image_format must be"),
                            ({"png_level": 10}, "png_level must be a whole number 0-9"),
                            ({"image_format": "jpeg", "jpeg_quality": 0}, "jpeg_quality must be"),
                            ({"view_mode": "multi", "image_format": "jpeg"}, "apply to view_mode=stitched")):
        with pytest.raises(DomainError, match=needle):
            convert_drivelm(src, tmp_path / "x", nuscenes_root=raw / "nuscenes", progress=False, **options)


@pytest.mark.parametrize("view_mode", ["stitched", "multi"])
def test_a_truncated_camera_file_is_skipped_in_every_view_mode(raw, tmp_path, view_mode):
    """A camera JPEG cut short keeps a whole header; stitching decodes it, and multi mode decodes it before linking."""
    drivelm = _copy_raw(raw, tmp_path)
    cam = sorted((tmp_path / "nuscenes" / "samples" / "CAM_FRONT").glob("*.jpg"))[0]
    data = cam.read_bytes()
    cam.unlink()  # a hard link to the module's raw data: replace it, never write through it
    cam.write_bytes(data[: len(data) // 3])
    report = convert_drivelm(drivelm, tmp_path / "out", view_mode=view_mode, progress=False, workers=2)
    assert report.skipped["unreadable camera image"] >= 1
    # named as image_paths write it, not by the folders around the data
    assert report.examples["unreadable camera image"][0].startswith(f"../{cam.relative_to(tmp_path).as_posix()}: ")
    frames = [f for name in (TRAIN, Q_ONLY) for body in json.loads((drivelm / name).read_text()).values()
              for f, fr in body["key_frames"].items() if fr["image_paths"]["CAM_FRONT"].endswith(cam.name)]
    assert frames and f"(CAM_FRONT of frame {frames[0]})" in report.examples["unreadable camera image"][0]
    recs = [json.loads(line) for path in report.outputs.values() for line in path.read_text().splitlines()]
    assert recs and not any(cam.name in json.dumps(r["image"]) for r in recs)


@pytest.mark.parametrize("view_mode", ["stitched", "multi"])
def test_a_camera_replaced_by_an_older_file_is_converted_again(raw, tmp_path, view_mode):
    """A camera file replaced by another picture carrying an older time (``tar x`` / ``cp -p`` of an earlier
    download) was taken as converted: the output was newer than every source."""
    drivelm = _copy_raw(raw, tmp_path)
    src, frame = _one_frame(raw, drivelm)
    out = tmp_path / "out"
    order = "drivelm" if view_mode == "multi" else None
    convert_drivelm(src, out, view_mode=view_mode, camera_order=order, progress=False)
    cam = drivelm / frame["image_paths"]["CAM_BACK"]
    times = [(drivelm / p).stat().st_mtime_ns for p in frame["image_paths"].values()]
    with Image.open(cam) as im:
        flipped = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    cam.unlink()  # a hard link to the module's raw data: replace it, never write through it
    flipped.save(cam, format="JPEG", quality=90)
    os.utime(cam, ns=(min(times) - 10**9, min(times) - 10**9))  # older than every camera and every output
    report = convert_drivelm(src, out, view_mode=view_mode, camera_order=order, progress=False)
    rec = _records(report.outputs["train"])[0]
    if view_mode == "stitched":
        cams = {c: Image.open(drivelm / p) for c, p in frame["image_paths"].items()}
        assert np.array_equal(_pixels(out / rec["image"]), np.asarray(stitch_cameras(cams)).astype(np.int16))
    else:
        back = next(rel for rel in rec["image"] if Path(rel).parent.name == "CAM_BACK")
        assert (out / back).read_bytes() == cam.read_bytes()


def test_a_scene_pasted_twice_in_one_file_is_said(raw, tmp_path):
    """A file holding one scene key twice (two exports concatenated by hand): json kept the last copy and the first
    one's frames were gone without a word."""
    drivelm = _copy_raw(raw, tmp_path)
    text = (drivelm / TRAIN).read_text(encoding="utf-8")
    data = json.loads(text)
    scene, body = next(iter(data.items()))
    pasted = "{" + json.dumps(scene) + ": " + json.dumps(body) + ", " + text.strip()[1:]
    (drivelm / TRAIN).write_text(pasted, encoding="utf-8")
    report = convert_drivelm(drivelm / TRAIN, tmp_path / "out", view_mode="multi", progress=False)
    assert report.warnings == {"repeated key": 1}
    assert f"key {scene!r} appears more than once" in report.warning_examples["repeated key"][0]


def test_report_names_cameras_under_nuscenes_root_by_its_label(raw, tmp_path):
    """A camera file under nuscenes_root (outside --src) was named by its full path in the report."""
    drivelm = _copy_raw(raw, tmp_path)
    data = json.loads((drivelm / TRAIN).read_text())
    s0 = next(iter(data))
    f0 = next(iter(data[s0]["key_frames"]))
    data[s0]["key_frames"][f0]["image_paths"]["CAM_BACK"] = "../nuscenes/samples/CAM_BACK/missing.jpg"
    (drivelm / TRAIN).write_text(json.dumps(data))
    report = convert_drivelm(drivelm, tmp_path / "out", view_mode="multi", nuscenes_root=tmp_path / "nuscenes",
                             progress=False)
    assert report.examples["missing camera image"][0].startswith("<nuscenes_root>/samples/CAM_BACK/missing.jpg")
    assert str(tmp_path) not in report.table().split("\n", 1)[1], report.table()


def test_an_answer_letter_past_the_listed_options_is_skipped(raw, tmp_path):
    """A lettered answer the question's options do not reach would be scored against no option."""
    src, _ = _one_frame(raw, tmp_path / "in")
    data = json.loads(src.read_text())
    (body,) = data.values()
    (qa,) = (fr["QA"] for fr in body["key_frames"].values())
    listed = " Please select the correct answer from the following options: A. Going ahead. B. Stopped. C. Turn left."
    qa["behavior"] = [{"Q": "Predict the behavior of the ego vehicle." + listed, "A": "D"},
                      {"Q": "What does the ego vehicle do next?" + listed, "A": "B"}]
    src.write_text(json.dumps(data))
    report = convert_drivelm(src, tmp_path / "out", view_mode="multi", nuscenes_root=raw / "nuscenes",
                             progress=False)
    assert report.skipped == {"answer not an option": 1}
    assert "'D'" in report.examples["answer not an option"][0] and "A-C" in report.examples["answer not an option"][0]
    kept = [r for r in _records(report.outputs["train"]) if "options" in r]
    assert [(r["answer"], len(r["options"])) for r in kept] == [("B", 3)]


@pytest.mark.parametrize("where", ["drivelm", "drivelm/sub"])
def test_a_json_named_from_its_own_folder_or_below_reads_its_images(raw, tmp_path, monkeypatch, where):
    """``convert drivelm v1_1_train_nus.json`` (or ``..``) from the data folder: the JSON's folder is "." or "..",
    which has no name to put ``../nuscenes/...`` under; every image was refused as an absolute path."""
    src, _ = _one_frame(raw, tmp_path / "drivelm")
    (tmp_path / "nuscenes").symlink_to(raw / "nuscenes", target_is_directory=True)
    (tmp_path / "drivelm" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / where)
    name = TRAIN if where == "drivelm" else ".."
    report = convert_drivelm(name, tmp_path / "out", view_mode="multi", progress=False)
    assert report.skipped == {"path escapes data root": 1}  # the nuscenes symlink: refused, as from anywhere
    assert "leads through a symlink" in report.examples["path escapes data root"][0]
    (tmp_path / "nuscenes").unlink()
    shutil.copytree(raw / "nuscenes", tmp_path / "nuscenes", copy_function=os.link)
    report = convert_drivelm(name, tmp_path / "out", view_mode="multi", progress=False)
    assert report.total_skipped == 0 and report.written > 0


def test_a_lone_surrogate_in_a_qa_is_skipped_not_a_crash_at_writing(raw, tmp_path):
    """JSON reads ``"\\ud800"`` as a lone surrogate, which UTF-8 cannot write: the whole run broke off at writing."""
    src, _ = _one_frame(raw, tmp_path / "in")
    data = json.loads(src.read_text())
    (body,) = data.values()
    (qa,) = (fr["QA"] for fr in body["key_frames"].values())
    qa["perception"][0]["A"] += "\ud800"
    qa["perception"][1]["Q"] = "Straße, 路口 — what is ahead?"  # real unicode is kept
    src.write_text(json.dumps(data))  # ensure_ascii: the file holds the \\ud800 escape
    report = convert_drivelm(src, tmp_path / "out", view_mode="multi", nuscenes_root=raw / "nuscenes",
                             progress=False)
    assert report.skipped == {"malformed QA": 1} and "'\\ud800'" in report.examples["malformed QA"][0]
    recs = _records(report.outputs["train"])
    assert any(r["meta"]["question_pixels"] == "Straße, 路口 — what is ahead?" for r in recs)


def test_a_lone_surrogate_in_a_scene_or_frame_token_is_skipped(raw, tmp_path):
    src, _ = _one_frame(raw, tmp_path / "in")
    (scene, body), = json.loads(src.read_text()).items()
    (frame, fbody), = body["key_frames"].items()
    good = {"a" * 32: {**body, "key_frames": {"b" * 32: fbody}}}
    src.write_text(json.dumps({scene + "\ud800": body, scene: {**body, "key_frames": {frame + "\udc00": fbody}},
                               **good}))
    report = convert_drivelm(src, tmp_path / "out", view_mode="multi", nuscenes_root=raw / "nuscenes",
                             val_fraction=0.5, progress=False)  # the val draw hashes the scene tokens
    assert report.skipped == {"malformed scene": 1, "malformed frame": 1}
    assert "'\\ud800'" in report.examples["malformed scene"][0]
    assert "'\\udc00'" in report.examples["malformed frame"][0]
    assert report.written == sum(len(v) for v in fbody["QA"].values())


def test_two_frames_whose_tokens_join_alike_get_their_own_stitched_image(raw, tmp_path):
    """``a_b`` + ``c`` and ``a`` + ``b_c`` both made ``stitch/a_b_c.png``: the first frame's records showed the
    second frame's cameras. nuScenes' hex tokens keep Mini-InternVL's ``{scene}_{frame}`` name."""
    data = json.loads((raw / "drivelm" / TRAIN).read_text())
    (s1, b1), (s2, b2) = list(data.items())[:2]
    f1, f2 = next(iter(b1["key_frames"].items())), next(iter(b2["key_frames"].items()))
    src = tmp_path / "drivelm"
    src.mkdir()
    (src / TRAIN).write_text(json.dumps({
        "a_b": {**b1, "key_frames": {"c": f1[1]}}, "a": {**b2, "key_frames": {"b_c": f2[1]}},
        s1: {**b1, "key_frames": {f1[0]: f1[1]}}}))
    report = convert_drivelm(src, tmp_path / "out", nuscenes_root=raw / "nuscenes", progress=False)
    images = {}
    for r in _records(report.outputs["train"]):
        images.setdefault((r["meta"]["scene"], r["meta"]["frame"]), set()).add(r["image"])
    assert len(images) == 3 and all(len(v) == 1 for v in images.values())
    assert len({next(iter(v)) for v in images.values()}) == 3  # one stitched file per frame
    assert images[(s1, f1[0])] == {f"images/drivelm/stitch/{s1}_{f1[0]}.png"}
    a = Image.open(tmp_path / "out" / next(iter(images[("a_b", "c")])))
    assert np.array_equal(np.asarray(a), np.asarray(Image.open(tmp_path / "out" / next(iter(images[(s1, f1[0])])))))


@pytest.mark.parametrize("same_bytes", [False, True])
def test_two_camera_files_of_one_name_in_multi_mode(raw, tmp_path, same_bytes):
    """Multi mode keeps only a camera file's name under ``samples/CAM_X/``: a second frame's CAM_FRONT of the same
    name in another folder overwrote the first one, whose records then showed the second frame's picture. A
    different file is skipped by name; a copy of the same bytes is one picture and kept."""
    drivelm = _copy_raw(raw, tmp_path)
    data = json.loads((drivelm / TRAIN).read_text())
    frames = [f for body in data.values() for f in body["key_frames"].values()]
    first, second = (tmp_path / "drivelm" / f["image_paths"]["CAM_FRONT"] for f in frames[:2])
    other = tmp_path / "nuscenes2" / "samples" / "CAM_FRONT" / first.name
    other.parent.mkdir(parents=True)
    shutil.copyfile(first if same_bytes else second, other)
    frames[1]["image_paths"]["CAM_FRONT"] = f"../nuscenes2/samples/CAM_FRONT/{first.name}"
    (drivelm / TRAIN).write_text(json.dumps(data))
    report = convert_drivelm(drivelm / TRAIN, tmp_path / "out", view_mode="multi", progress=False)
    assert (tmp_path / "out" / "images/nuscenes/samples/CAM_FRONT" / first.name).read_bytes() == first.read_bytes()
    if same_bytes:
        assert "camera name clash" not in report.skipped
    else:
        assert report.skipped.get("camera name clash") == 1
        assert f"../{other.relative_to(tmp_path).as_posix()}" in report.examples["camera name clash"][0]
        assert str(tmp_path) not in report.examples["camera name clash"][0]
